"""The generation engine on a tiny Qwen2 with two random LoRA adapters: sharing, decoding modes, history, batching."""

from __future__ import annotations

import threading

import pytest
import torch

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError, DataError
from tunesmith.infer.engine import Engine, GenerationOptions, PromptTooLongError, UnknownAdapterError
from tunesmith.template import encode_prompt


@pytest.fixture(scope="session")
def tiny_adapters(tiny_qwen2, make_adapter) -> dict[str, str]:
    return {
        "libai": str(make_adapter(tiny_qwen2, seed=1, default_system="你是李白")),
        "ie": str(make_adapter(tiny_qwen2, seed=2, template="plain")),
    }


@pytest.fixture(scope="module")
def engine(tiny_qwen2, tiny_adapters) -> Engine:
    eng = Engine.load(str(tiny_qwen2), tiny_adapters, device="cpu")
    yield eng
    eng.close()


Q = [Message("user", "你好，请问你是谁？")]
GREEDY = GenerationOptions(max_new_tokens=12)


def _reference_ids(model_dir, adapter_dir, prompt, n):
    """Greedy continuation by plain transformers/peft, no engine involved."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if adapter_dir:
        model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=[-1])
    return out[0, len(prompt):].tolist()


def test_adapters_share_one_base_in_memory(engine):
    assert engine.adapter_names == ["base", "libai", "ie"]
    model = engine.model
    base_weights = {n: p for n, p in model.named_parameters() if "lora_" not in n}
    lora_weights = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert any(".libai." in n for n in lora_weights) and any(".ie." in n for n in lora_weights)
    # every base matrix exists once: distinct storages == number of base parameters, none duplicated per adapter
    ptrs = [p.data_ptr() for p in base_weights.values()]
    assert len(set(ptrs)) == len(ptrs)
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(engine.model.peft_config["libai"].base_model_name_or_path)
    assert len(base_weights) == len(list(plain.parameters()))
    lora_numel = sum(p.numel() for p in lora_weights.values())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters()) + lora_numel


def test_each_adapter_matches_plain_peft_and_base_is_unadapted(engine, tiny_qwen2, tiny_adapters):
    for name, folder in [("base", None), ("libai", tiny_adapters["libai"]), ("ie", tiny_adapters["ie"])]:
        tpl = engine.template_for(name)
        prompt = encode_prompt(engine.tokenizer, tpl, None, Q)
        want = _reference_ids(tiny_qwen2, folder, prompt, 12)
        comp = engine.complete(Q, adapter=name, options=GenerationOptions(max_new_tokens=12, stop=[]))[0]
        stop = set(engine.stop_ids(tpl))
        cut = next((i for i, t in enumerate(want) if t in stop), len(want))
        # the reply is the decode of the generated ids only
        assert comp.text == engine.tokenizer.decode(want[:cut], skip_special_tokens=True)
    replies = {a: engine.chat(Q, adapter=a, options=GREEDY) for a in engine.adapter_names}
    assert len(set(replies.values())) == 3  # the adapters really change the model


def test_adapter_template_json_is_used(engine, tiny_adapters):
    assert engine.template_for("ie").name == "plain"
    assert engine.template_for("libai").default_system == "你是李白"
    ids = engine.prompt_ids(Q, adapter="libai")
    assert engine.tokenizer.decode(ids).startswith("<|im_start|>system\n你是李白<|im_end|>")
    assert engine.tokenizer.decode(engine.prompt_ids(Q, adapter="ie")) == Q[0].content
    with pytest.raises(UnknownAdapterError):
        engine.chat(Q, adapter="../etc")


def test_batched_generate_equals_one_by_one(engine):
    convs = [(None, [Message("user", q)]) for q in ["你好", "4*5等于多少", "曹洪曰：目今失了彝陵，势已危急", "hi"]]
    batched = engine.generate(convs, adapter="libai", options=GREEDY, batch_size=4)
    single = [engine.generate([c], adapter="libai", options=GREEDY, batch_size=1)[0] for c in convs]
    assert batched == single and len(set(batched)) > 1


def test_beam_search_works_and_returns_n_best(engine):
    opts = GenerationOptions(max_new_tokens=8, num_beams=4, n=2)
    out = engine.generate([(None, Q), (None, [Message("user", "hi")])], adapter="libai", options=opts)
    assert len(out) == 2 and all(len(x) == 2 for x in out)
    assert all(isinstance(t, str) for x in out for t in x)
    streamed = list(engine.stream(Q, adapter="libai", options=GenerationOptions(max_new_tokens=8, num_beams=4)))
    assert "".join(streamed) == out[0][0]
    with pytest.raises(ConfigError, match="num_beams"):
        engine.chat(Q, options=GenerationOptions(num_beams=2, n=3))


def test_sampling_seed_is_reproducible(engine):
    opts = GenerationOptions(max_new_tokens=16, do_sample=True, temperature=1.5, top_p=1.0, top_k=0, seed=7)
    a = engine.chat(Q, options=opts)
    b = engine.chat(Q, options=opts)
    others = {engine.chat(Q, options=GenerationOptions(**{**opts.__dict__, "seed": s})) for s in range(1, 6)}
    assert a == b and len(others) > 1
    several = engine.complete(Q, options=GenerationOptions(**{**opts.__dict__, "n": 3}))
    assert len(several) == 3 and len({c.text for c in several}) > 1


def test_max_new_tokens_and_stop_strings_cut_at_token_level(engine):
    full = engine.complete(Q, adapter="libai", options=GenerationOptions(max_new_tokens=20))[0]
    assert full.completion_tokens == 20 and full.finish_reason == "length"
    assert len(full.text) > 4
    stop = full.text[3:5]
    cut = engine.complete(Q, adapter="libai", options=GenerationOptions(max_new_tokens=20, stop=[stop]))[0]
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"
    # generation stopped right after the stop string: far fewer tokens than the full reply
    assert cut.completion_tokens < full.completion_tokens
    assert "".join(engine.stream(Q, adapter="libai",
                                 options=GenerationOptions(max_new_tokens=20, stop=[stop]))) == cut.text


def test_stream_equals_chat(engine):
    for adapter in ("base", "libai"):
        assert ("".join(engine.stream(Q, adapter=adapter, options=GREEDY))
                == engine.chat(Q, adapter=adapter, options=GREEDY))


def _history(turns: int) -> list[Message]:
    msgs = []
    for i in range(turns):
        msgs += [Message("user", f"问题{i}"), Message("assistant", f"回答{i}")]
    return msgs + [Message("user", "最后的问题")]


def test_max_history_counts_turns(engine):
    msgs = _history(12)
    text = engine.tokenizer.decode(engine.prompt_ids(msgs, system="你是李白", max_history_turns=10))
    kept = [i for i in range(12) if f"问题{i}<" in text]
    assert kept == list(range(2, 12))  # ten turns, not five
    assert all(f"回答{i}<" in text for i in range(2, 12)) and "最后的问题" in text
    text0 = engine.tokenizer.decode(engine.prompt_ids(msgs, system="你是李白", max_history_turns=0))
    assert "问题" not in text0.replace("最后的问题", "")


def test_token_budget_drops_oldest_turns_keeps_system(engine):
    msgs = []
    for i in range(40):
        msgs += [Message("user", f"问题{i}" + "很长的话" * 20), Message("assistant", f"回答{i}" + "答" * 20)]
    msgs.append(Message("user", "最后的问题"))
    opts = GenerationOptions(max_new_tokens=1800)  # leaves 248 of the 2048-token context for the prompt
    ids = engine.prompt_ids(msgs, system="你是李白", options=opts)
    text = engine.tokenizer.decode(ids)
    assert len(ids) <= 248 and text.startswith("<|im_start|>system\n你是李白")
    assert "问题39" in text and "问题0" not in text and text.endswith("最后的问题<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(PromptTooLongError, match="only 248 fit"):
        engine.prompt_ids([Message("user", "长" * 2000)], options=opts)


def test_bad_message_order_is_a_data_error(engine):
    with pytest.raises(DataError, match="expected 'user'"):
        engine.chat([Message("assistant", "hi"), Message("assistant", "again")])
    with pytest.raises(DataError, match="last message"):  # a greeting alone: nothing to answer yet
        engine.chat([Message("assistant", "hi")])
    with pytest.raises(DataError, match="last message"):
        engine.chat([Message("user", "a"), Message("assistant", "b")])


def test_concurrent_requests_are_batched_and_correct(engine, monkeypatch):
    questions = [f"问题{i}" for i in range(6)]
    want = [engine.chat([Message("user", q)], adapter="libai", options=GREEDY) for q in questions]
    sizes: list[int] = []
    real = engine.scheduler.run_batch

    def spy(reqs, take_more=None):
        sizes.append(len(reqs))

        def more(fits, room):  # requests that join a running continuous session count as sharing it
            joined = take_more(fits, room)
            sizes[-1] += len(joined)
            return joined
        return real(reqs, more if take_more else None)

    monkeypatch.setattr(engine.scheduler, "run_batch", spy)
    got: dict[int, str] = {}
    start = threading.Barrier(len(questions))

    def ask(i):
        start.wait()
        got[i] = "".join(engine.stream([Message("user", questions[i])], adapter="libai", options=GREEDY))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [got[i] for i in range(len(questions))] == want
    assert max(sizes) > 1 and len(sizes) < len(questions)


def test_template_override_and_template_folder(engine, tiny_qwen2, tiny_adapters):
    plain = engine.template_for("ie")
    convs = [(None, [Message("user", "Instruction: 抽取\nInput: 句子\nAnswer: ")])]
    with_plain = engine.generate(convs, adapter="base", options=GREEDY, template=plain)
    from tunesmith.template import ChatTemplate

    fresh_equal = ChatTemplate.from_dict(plain.to_dict())  # an equal template object gives the same result
    assert engine.generate(convs, adapter="base", options=GREEDY, template=fresh_equal) == with_plain
    other = Engine.load(str(tiny_qwen2), template=tiny_adapters["ie"], device="cpu")  # a folder with template.json
    try:
        assert other.template_for("base") == plain
        assert other.generate(convs, options=GREEDY) == with_plain
    finally:
        other.close()
    with pytest.raises(ConfigError, match="template"):
        Engine.load(str(tiny_qwen2), template="nonsense", device="cpu")


def test_adapter_names_may_be_chinese_but_never_paths(tiny_qwen2, tmp_path):
    from tunesmith.infer.engine import ADAPTER_NAME_RE

    assert ADAPTER_NAME_RE.fullmatch("李白") and ADAPTER_NAME_RE.fullmatch("libai-v2_1")
    for bad in ("../x", "a/b", "a b", "a.b", ""):
        assert not ADAPTER_NAME_RE.fullmatch(bad)


def test_merged_adapter_answers_like_unmerged_and_unmerges_for_others(tiny_qwen2, tiny_adapters):
    """merge() folds one adapter into the fp32 weights; every adapter and the base still answer exactly as
    before, in any order, and the base weights come back to rounding."""
    eng = Engine.load(str(tiny_qwen2), tiny_adapters, device="cpu")
    try:
        convs = [(None, [Message("user", q)]) for q in ["你好", "4*5等于多少", "hi"]]
        want = {a: eng.generate(convs, adapter=a, options=GREEDY) for a in eng.adapter_names}
        assert len({tuple(v) for v in want.values()}) == 3
        base_before = {n: p.detach().clone() for n, p in eng.model.named_parameters() if "lora_" not in n}
        q_proj = eng.model.base_model.model.model.layers[0].self_attn.q_proj

        assert eng.merge("libai") and q_proj.merged
        assert not torch.equal(q_proj.base_layer.weight,
                               base_before[next(n for n in base_before if "layers.0.self_attn.q_proj" in n)])
        assert eng.generate(convs, adapter="libai", options=GREEDY) == want["libai"]
        assert q_proj.merged  # still folded in after answering
        for a in ["ie", "base", "libai"]:  # another adapter or the base unmerges first
            assert eng.generate(convs, adapter=a, options=GREEDY) == want[a]
        assert not q_proj.merged
        eng.merge("ie")
        assert eng.generate(convs, adapter="base", options=GREEDY) == want["base"]
        for n, p in eng.model.named_parameters():
            if n in base_before:
                torch.testing.assert_close(p, base_before[n], rtol=0, atol=1e-6)
        assert not eng.merge("base")
        with pytest.raises(UnknownAdapterError):
            eng.merge("nope")
    finally:
        eng.close()
    half = Engine.load(str(tiny_qwen2), tiny_adapters, device="cpu", dtype="bf16")
    try:  # half precision: unmerging would not restore the base exactly, so merging is not offered
        assert not half.can_merge() and not half.merge("libai")
    finally:
        half.close()


def test_continuous_batching_answers_like_padded_batches(engine):
    """Continuous batching (a reply slot is refilled as soon as a reply ends) gives the padded path's greedy
    replies, per adapter, with more prompts than slots, stop tokens, the length limit and stop strings."""
    qs = ["你好", "4*5等于多少", "曹洪曰：目今失了彝陵，势已危急", "hi", "床前明月光", "请用一句话介绍你自己", "1+1=?"]
    convs = [(None, [Message("user", q)]) for q in qs]
    opts = GenerationOptions(max_new_tokens=24)
    inner = engine.model.get_base_model()
    calls = []
    original = inner.generate_batch
    for adapter in ("base", "libai", "ie"):
        padded = engine.generate(convs, adapter=adapter, options=opts, batch_size=3, batching="padded")
        with pytest.MonkeyPatch.context() as mp:  # count that the continuous path really ran
            mp.setattr(inner, "generate_batch", lambda *a, **k: calls.append(len(a[0])) or original(*a, **k))
            cont = engine.generate(convs, adapter=adapter, options=opts, batch_size=3, batching="continuous")
        assert cont == padded and len(set(cont)) > 1
    assert calls == [len(convs)] * 3  # one generate_batch call per adapter, none for the padded runs
    full = engine.generate(convs[:2], adapter="libai", options=opts, batching="continuous")
    stop = full[0][2:4]
    cut = engine.generate(convs[:2], adapter="libai", options=GenerationOptions(max_new_tokens=24, stop=[stop]),
                          batching="continuous")
    assert cut[0] == full[0][: full[0].find(stop)]
    # auto picks continuous for greedy options; sampling, beams and the repetition penalty stay padded
    sampled = GenerationOptions(max_new_tokens=8, do_sample=True, temperature=1.0, seed=3)
    assert engine.continuous_ok(opts) and not engine.continuous_ok(sampled)
    assert not engine.continuous_ok(GenerationOptions(repetition_penalty=1.2))
    assert not engine.continuous_ok(GenerationOptions(num_beams=2))
    assert engine.generate(convs[:2], options=sampled, batching="auto") == engine.generate(convs[:2], options=sampled)
    with pytest.raises(ConfigError, match="greedily"):
        engine.generate(convs[:2], options=sampled, batching="continuous")
    with pytest.raises(ConfigError, match="batching"):
        engine.generate(convs[:2], options=opts, batching="paged")
    # afterwards the model still answers as before through the ordinary (padded, streamed) path
    assert engine.chat(Q, adapter="libai", options=GREEDY) == "".join(engine.stream(Q, adapter="libai", options=GREEDY))
    assert (engine.generate([(None, Q)], adapter="libai", options=GREEDY, batching="continuous")[0]
            == engine.chat(Q, adapter="libai", options=GREEDY))


@pytest.mark.parametrize("arch", ["llama", "glm"])
def test_continuous_batching_on_other_architectures(tiny_model_factory, arch):
    eng = Engine.load(str(tiny_model_factory(arch)), device="cpu")
    try:
        convs = [(None, [Message("user", q)]) for q in ["你好", "4*5等于多少", "曹洪曰：目今失了彝陵，势已危急", "hi"]]
        opts = GenerationOptions(max_new_tokens=16)
        padded = eng.generate(convs, options=opts, batch_size=2, batching="padded")
        assert eng.generate(convs, options=opts, batch_size=2, batching="continuous") == padded
    finally:
        eng.close()


def test_models_outside_transformers_attention_interface_stay_padded(engine, monkeypatch):
    inner = engine.model.get_base_model()
    monkeypatch.setattr(type(inner), "_supports_attention_backend", False)
    assert not engine.continuous_ok(GREEDY)
    with pytest.raises(ConfigError, match="attention interface"):
        engine.generate([(None, Q)], options=GREEDY, batching="continuous")
    assert engine.generate([(None, Q)], options=GREEDY, batching="auto") == [engine.chat(Q, options=GREEDY)]


def test_continuous_batching_splits_prompts_longer_than_one_forward(engine, monkeypatch):
    """A prompt longer than the tokens one forward may take is prefilled in pieces, with the same answer."""
    import tunesmith.infer.runners as runners_module

    convs = [(None, [Message("user", "曹洪曰：目今失了彝陵，势已危急，请丞相早发救兵")]),
             (None, [Message("user", "hi")])]
    padded = engine.generate(convs, adapter="libai", options=GREEDY, batching="padded")
    monkeypatch.setattr(runners_module, "CB_MAX_BATCH_TOKENS", 16)
    assert len(engine.prompt_ids(convs[0][1], adapter="libai")) > 16
    assert engine.generate(convs, adapter="libai", options=GREEDY, batching="continuous") == padded
