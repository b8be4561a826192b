"""Samplers against loops (infer/samplers.py): DRY and the presence/frequency penalties against hand-computed
values, transformers' min_p and no-repeat n-grams changing a tiny model's replies as defined, the options'
checks, and the recommended sampler (generation.json) that chat and the web chat start from."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError
from tunesmith.infer.engine import Engine
from tunesmith.infer.history import OWN_SEPARATOR
from tunesmith.infer.options import GenerationOptions, check_generation, load_generation, save_generation
from tunesmith.infer.runners import continuous_blocker
from tunesmith.infer.samplers import DRYPenalty, PresenceFrequencyPenalty, breaker_ids, dry_penalties, logits_processors

NONE: frozenset[int] = frozenset()


# -- DRY, by hand ------------------------------------------------------------------------------------
def test_dry_penalizes_the_token_that_would_extend_the_longest_repeat():
    # ... 1 2 3 4 ... 1 2 3: "1 2 3" (n = 3) was followed by 4 -> 4 loses 1 * 2 ** (3 - 2) = 2
    assert dry_penalties([1, 2, 3, 4, 1, 2, 3], 1.0, 2.0, 2, NONE) == {4: 2.0}
    # two earlier occurrences of the last token: each follower gets the length of its own match
    # seq: 1 2 5 3 2 6 1 2 -> "1 2" then 5 (n = 2), "2" then 6 (n = 1); allowed 1: 2 ** 1 and 2 ** 0
    assert dry_penalties([1, 2, 5, 3, 2, 6, 1, 2], 1.0, 2.0, 1, NONE) == {5: 2.0, 6: 1.0}


def test_dry_allowed_length_is_the_boundary():
    seq = [5, 6, 7, 5, 6]  # "5 6" repeats (n = 2); 7 followed it
    assert dry_penalties(seq, 0.8, 1.75, 2, NONE) == {7: pytest.approx(0.8)}  # n == allowed: multiplier * base ** 0
    assert dry_penalties(seq, 0.8, 1.75, 3, NONE) == {}                       # n < allowed: free
    assert dry_penalties(seq, 0.8, 1.75, 1, NONE) == {7: pytest.approx(0.8 * 1.75)}


def test_dry_sequence_breakers_end_matches_and_are_never_penalized():
    seq = [7, 9, 3, 4, 5, 8, 9, 3, 4]
    # without breakers: "9 3 4" matches (n = 3; 7 != 8 stops it) -> 5 loses 2 ** 1
    assert dry_penalties(seq, 1.0, 2.0, 2, NONE) == {5: 2.0}
    # 9 a breaker: the match stops before it (n = 2) -> 2 ** 0
    assert dry_penalties(seq, 1.0, 2.0, 2, frozenset({9})) == {5: 1.0}
    # the last token a breaker: nothing is penalized right after it
    assert dry_penalties([3, 4, 9, 3, 4, 9], 1.0, 2.0, 1, frozenset({9})) == {}
    # a breaker would extend the repeat: it is not penalized
    assert dry_penalties([3, 4, 9, 3, 4], 1.0, 2.0, 1, frozenset({9})) == {}


def test_dry_processor_subtracts_per_row_within_its_range():
    ids = torch.tensor([[1, 2, 3, 4, 1, 2, 3], [8, 8, 8, 8, 8, 8, 8]])
    scores = torch.zeros(2, 10)
    out = DRYPenalty(1.0, 2.0, 2, NONE)(ids, scores.clone())
    assert out[0, 4] == -2.0 and out[0].abs().sum() == 2.0
    # row 2: "8 8 8 8 8 8" repeats itself (n = 6) -> 8 loses 2 ** 4
    assert out[1, 8] == -16.0 and out[1].abs().sum() == 16.0
    # a range of 4 sees "4 1 2 3" only: no repeat
    assert DRYPenalty(1.0, 2.0, 2, NONE, range_=4)(ids[:1], torch.zeros(1, 10)).abs().sum() == 0


def test_dry_reply_scope_leaves_quoting_the_prompt_free():
    # prompt "1 2 3 4", reply "1 2 3": in the context scope the reply repeats the prompt (4 loses 2 ** 1);
    # in the reply scope (start = 4) nothing in the reply repeats yet
    ids = torch.tensor([[1, 2, 3, 4, 1, 2, 3]])
    assert DRYPenalty(1.0, 2.0, 2, NONE)(ids, torch.zeros(1, 10))[0, 4] == -2.0
    assert DRYPenalty(1.0, 2.0, 2, NONE, start=4)(ids, torch.zeros(1, 10)).abs().sum() == 0
    # the reply repeating itself is penalized in either scope: reply "5 6 7 5 6" -> 7 loses 2 ** 0
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 5, 6]])
    assert DRYPenalty(1.0, 2.0, 2, NONE, start=4)(ids, torch.zeros(1, 10))[0, 7] == -1.0
    opts = GenerationOptions().updated({"dry_multiplier": "1", "dry_scope": "reply"})
    assert opts.dry_scope == "reply"


def test_dry_own_scope_adds_the_characters_earlier_replies_and_no_repeat_crosses_them():
    # prompt "1 2 3 4" (left out of the scan), earlier replies "5 6 7" and "8 9" (OWN_SEPARATOR after each), reply
    # "5 6": it repeats the first earlier reply, so 7 loses 2 ** 0
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    before = [[5, 6, 7, OWN_SEPARATOR, 8, 9, OWN_SEPARATOR]]
    out = DRYPenalty(1.0, 2.0, 2, NONE, start=4, before=before)(ids, torch.zeros(1, 10))
    assert out[0, 7] == -1.0 and out[0].abs().sum() == 1.0
    assert DRYPenalty(1.0, 2.0, 2, NONE, start=4)(ids, torch.zeros(1, 10)).abs().sum() == 0  # the reply scope
    # "6 8" only occurs across the separator: no match runs over it (without one, 9 would lose 2 ** 0)
    ids = torch.tensor([[1, 2, 3, 4, 6, 8]])
    assert DRYPenalty(1.0, 2.0, 2, NONE, start=4, before=before)(ids, torch.zeros(1, 10)).abs().sum() == 0
    assert DRYPenalty(1.0, 2.0, 2, NONE, start=4, before=[[5, 6, 8, 9]])(ids, torch.zeros(1, 10))[0, 9] == -1.0


def test_own_scope_prompts_carry_the_assistants_replies(engine):
    history = [Message("user", "你好"), Message("assistant", "吾乃李白。"), Message("user", "再说一遍")]
    own = GenerationOptions(dry_multiplier=0.8, dry_scope="own")
    prompt = engine.prompt_ids(history, options=own)
    expected = engine.tokenizer("吾乃李白。", add_special_tokens=False)["input_ids"] + [OWN_SEPARATOR]
    assert prompt.own == expected and list(prompt) == engine.prompt_ids(history)
    assert engine.prompt_ids(history, options=GenerationOptions(dry_multiplier=0.8, dry_scope="reply")).own is None
    # max_history_turns=0 drops the earlier turn from the prompt: its reply is not the character's to repeat
    assert engine.prompt_ids(history, options=own, max_history_turns=0).own == []
    req = engine.enqueue(prompt, options=own.updated({"max_new_tokens": 2}))
    assert req.own_ids == expected and req.future.result(timeout=60)


def test_own_scope_reaches_the_dry_processor_of_each_batch_row(engine, monkeypatch):
    """The runner hands each row's earlier replies to DRY (the processor itself is checked by hand above)."""
    import tunesmith.infer.runners as runners

    built = []

    def spy(opts, tokenizer, prompt_len, own=()):
        procs = logits_processors(opts, tokenizer, prompt_len, own)
        built.extend(p for p in procs if isinstance(p, DRYPenalty))
        return procs

    monkeypatch.setattr(runners, "logits_processors", spy)
    history = [*Q, Message("assistant", "吾乃李白，斗酒诗百篇。"), *Q]
    opts = GenerationOptions(max_new_tokens=4, dry_multiplier=3.0, dry_scope="own")
    engine.chat(history, options=opts)
    mine = engine.tokenizer("吾乃李白，斗酒诗百篇。", add_special_tokens=False)["input_ids"] + [OWN_SEPARATOR]
    assert built[-1].before == [mine] and built[-1].start > 0
    engine.generate([(None, history), (None, Q)], options=opts, batching="padded")  # eval's long conversations
    assert sorted(built[-1].before) == [[], mine]
    engine.chat(history, options=opts.updated({"dry_scope": "context"}))
    assert built[-1].before == [] and built[-1].start == 0


def test_breakers_are_the_tokens_whose_text_contains_one(tiny_qwen2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    ids = breaker_ids(tok, ["\n", "："])
    assert ids and all("\n" in tok.decode([i]) or "：" in tok.decode([i]) for i in ids)
    assert set(tok.encode("\n", add_special_tokens=False)) <= ids
    assert set(tok.encode("天地", add_special_tokens=False)).isdisjoint(ids)


# -- presence / frequency, by hand ---------------------------------------------------------------------
def test_presence_and_frequency_penalties_count_the_reply_only():
    # prompt [3, 5] (width 2), reply 5 5 7: count 5 -> 2, 7 -> 1; the prompt's 3 does not count
    ids = torch.tensor([[3, 5, 5, 5, 7]])
    out = PresenceFrequencyPenalty(0.5, 0.25, prompt_len=2)(ids, torch.zeros(1, 10))
    assert out[0, 5] == pytest.approx(-(0.5 + 2 * 0.25))
    assert out[0, 7] == pytest.approx(-(0.5 + 1 * 0.25))
    assert out[0, 3] == 0 and out[0].abs().sum() == pytest.approx(1.0 + 0.75)
    # a negative penalty encourages repeats, as in OpenAI's API
    assert PresenceFrequencyPenalty(-1.0, 0.0, 2)(ids, torch.zeros(1, 10))[0, 7] == 1.0


# -- through the engine on a tiny model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_qwen2):
    eng = Engine.load(str(tiny_qwen2), device="cpu")
    yield eng
    eng.close()


Q = [Message("user", "你好，请问你是谁？")]


def _reply_ids(engine, opts: GenerationOptions) -> list[int]:
    """The generated ids of one padded batch, by the engine's own generation config and processors."""
    from tunesmith.infer.runners import _generation_config
    from tunesmith.infer.samplers import logits_processors

    prompt = engine.prompt_ids(Q, options=opts)
    stops = engine.stop_ids(engine.template_for("base"))
    config = _generation_config(engine.model, opts, stops, engine._pad_id(stops), opts.max_new_tokens)
    if opts.seed is not None:
        torch.manual_seed(opts.seed)
    with torch.inference_mode():
        out = engine.model.generate(input_ids=torch.tensor([prompt]), generation_config=config,
                                    logits_processor=logits_processors(opts, engine.tokenizer, len(prompt)))
    return out[0, len(prompt):].tolist()


def _bigrams(ids: list[int]) -> list[tuple[int, int]]:
    return list(zip(ids, ids[1:]))


def test_no_repeat_ngram_size_leaves_no_bigram_twice(engine):
    greedy = _reply_ids(engine, GenerationOptions(max_new_tokens=40))
    assert len(set(_bigrams(greedy))) < len(_bigrams(greedy))  # the tiny model loops
    ids = _reply_ids(engine, GenerationOptions(max_new_tokens=40, no_repeat_ngram_size=2))
    assert len(set(_bigrams(ids))) == len(_bigrams(ids))
    text = engine.chat(Q, options=GenerationOptions(max_new_tokens=40, no_repeat_ngram_size=2))
    assert text != engine.chat(Q, options=GenerationOptions(max_new_tokens=40))


def test_min_p_one_keeps_only_the_top_token(engine):
    hot = dict(max_new_tokens=24, do_sample=True, temperature=2.0, top_p=1.0, top_k=0, seed=3)
    greedy = engine.chat(Q, options=GenerationOptions(max_new_tokens=24))
    assert engine.chat(Q, options=GenerationOptions(**hot)) != greedy
    assert engine.chat(Q, options=GenerationOptions(**hot, min_p=1.0)) == greedy


def test_dry_and_penalties_break_the_tiny_models_loop(engine):
    greedy = _reply_ids(engine, GenerationOptions(max_new_tokens=40))
    dry = _reply_ids(engine, GenerationOptions(max_new_tokens=40, dry_multiplier=2.0, dry_allowed_length=2))
    assert dry != greedy and len(set(_bigrams(dry))) > len(set(_bigrams(greedy)))
    # a repeat of 4 tokens would have cost its last token 2 * 1.75 ** 1 or more: on this model none occurs
    fours = list(zip(dry, dry[1:], dry[2:], dry[3:]))
    assert len(set(fours)) == len(fours)
    pen = _reply_ids(engine, GenerationOptions(max_new_tokens=40, frequency_penalty=2.0, presence_penalty=2.0))
    assert pen != greedy


def test_served_requests_with_samplers_run_padded_and_say_why(engine):
    opts = GenerationOptions(dry_multiplier=0.8)
    why = continuous_blocker(engine.model, opts, sampling_ok=True)
    assert why and "DRY" in why
    assert engine.served_batching(opts) == f"padded ({why})"
    assert engine.served_batching(GenerationOptions()) == "continuous"
    # min_p acts on sampling only: a greedy request with it still runs continuously
    assert continuous_blocker(engine.model, GenerationOptions(min_p=0.1)) is None


# -- options ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("min_p", 1.5, "min_p: expected a number in [0, 1]"),
    ("presence_penalty", 3.0, "presence_penalty: expected a number in [-2, 2]"),
    ("frequency_penalty", -2.5, "frequency_penalty: expected a number in [-2, 2]"),
    ("no_repeat_ngram_size", -1, "no_repeat_ngram_size: expected an integer in [0, 64]"),
    ("dry_multiplier", -0.1, "dry_multiplier: expected a number in [0, 100]"),
    ("dry_base", 1.0, "dry_base: expected a number in (1, 16]"),
    ("dry_allowed_length", 0, "dry_allowed_length: expected an integer in [1, 1000]"),
    ("dry_sequence_breakers", ["\n", ""], "dry_sequence_breakers: expected a list of at most 64 non-empty strings"),
    ("dry_range", -1, "dry_range: expected an integer >= 0"),
    ("dry_scope", "prompt", "dry_scope: expected 'context', 'reply' or 'own'"),
])
def test_bad_sampler_values_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        GenerationOptions(**{field: value}).validate()


def test_strings_are_parsed_for_the_sampler_options():
    opts = GenerationOptions().updated({"min_p": "0.05", "no_repeat_ngram_size": "3", "dry_multiplier": "0.8",
                                        "dry_allowed_length": "3", "dry_sequence_breakers": '["\\n", ":", "*"]'})
    assert (opts.min_p, opts.no_repeat_ngram_size, opts.dry_multiplier, opts.dry_allowed_length) == (0.05, 3, 0.8, 3)
    assert opts.dry_sequence_breakers == ["\n", ":", "*"]
    piped = GenerationOptions().updated({"dry_sequence_breakers": "\\n|「|」"})
    assert piped.dry_sequence_breakers == ["\n", "「", "」"]
    with pytest.raises(ConfigError, match="dry_sequence_breakers: expected a JSON list"):
        GenerationOptions().updated({"dry_sequence_breakers": "[oops"})
    assert GenerationOptions().dry_sequence_breakers == ["\n", ":", '"', "*"]  # the reference defaults


def test_generation_json_round_trip_and_checks(tmp_path):
    save_generation({"dry_multiplier": 0.8, "min_p": "0.05"}, tmp_path)
    assert json.loads((tmp_path / "generation.json").read_text()) == {"dry_multiplier": 0.8, "min_p": 0.05}
    assert load_generation(tmp_path) == {"dry_multiplier": 0.8, "min_p": 0.05}
    assert load_generation(tmp_path / "nothing") is None
    (tmp_path / "generation.json").write_text('{"dry_base": 0.5}')
    with pytest.raises(ConfigError, match="generation.json: dry_base: expected"):
        load_generation(tmp_path)
    with pytest.raises(ConfigError, match="generation: unknown generation option 'dry_bse'"):
        check_generation({"dry_bse": 1.0})


def test_dry_never_penalizes_inside_a_character(default_model_path):
    """SmolLM2 spells 白 in two byte tokens: the one that completes it is never penalized; the next character's
    first token is, with the whole repeat counted."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_path)
    ids = tok.encode("我李白喝酒。我李白", add_special_tokens=False)
    inside = ids[:-1]  # ends between the two bytes of the second 白
    assert tok.decode(inside[-1:]) == "\ufffd"
    plain = DRYPenalty(1.0, 2.0, 2, NONE)
    guarded = DRYPenalty(1.0, 2.0, 2, NONE, tokenizer=tok)
    vocab = len(tok)
    assert plain(torch.tensor([inside]), torch.zeros(1, vocab)).abs().sum() > 0
    assert guarded(torch.tensor([inside]), torch.zeros(1, vocab)).abs().sum() == 0
    # after the whole 白: the first token of 喝 (what followed "我李白" before) loses 2 ** (n - 2), n = len("我李白")
    after = guarded(torch.tensor([ids]), torch.zeros(1, vocab))
    n = len(tok.encode("我李白", add_special_tokens=False))
    drink = tok.encode("我李白喝", add_special_tokens=False)[n]
    assert after[0, drink] == -(2.0 ** (n - 2))
