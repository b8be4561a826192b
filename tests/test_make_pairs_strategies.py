"""`tunesmith data make-pairs --strategy rank|negatives` on the tiny Qwen2: the scorer on fixed answers, every
negative kind, rank's scores, margin rule, reproducibility and resume, strategies mixed in one file, stats, and
bad options exiting 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import write_conversations
from tunesmith.adapter_spec import parse_adapter_specs
from tunesmith.cli import main
from tunesmith.conversation import Conversation, Message
from tunesmith.data import load
from tunesmith.data.make_pairs import MakePairsConfig, make_pairs
from tunesmith.data.pair_negatives import (
    KINDS,
    OtherRoleAnswers,
    disclaimer_negative,
    load_disclaimers,
    loop_negative,
    truncated_negative,
)
from tunesmith.data.pair_scores import LOOP_PENALTY, OOC_PENALTY, PARSE_WEIGHT, AnswerScorer
from tunesmith.eval.in_character import verdict
from tunesmith.eval.repetition import loops
from tunesmith.infer.options import GenerationOptions
from tunesmith.preference import PAIR, kind_of_dataset, rejected

TOKENS = 8
IE_TARGET = ('```json\n[{"predicate": "主演", "object_type": "人物", "subject_type": "影视作品", "object": "周星驰", '
             '"subject": "喜剧之王"}, {"predicate": "导演", "object_type": "人物", "subject_type": "影视作品", '
             '"object": "李力持", "subject": "喜剧之王"}]\n```')
ONE_TRIPLE = ('[{"predicate": "主演", "object_type": "人物", "subject_type": "影视作品", "object": "周星驰", '
              '"subject": "喜剧之王"}]')


def _libai_records(rolebench_dir: Path, n: int) -> list[dict]:
    out = []
    for line in (rolebench_dir / "general" / "train.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["role"] == "李白":
            out.append(rec)
            if len(out) == n:
                break
    return out


def _convs(rolebench_dir: Path) -> list[Conversation]:
    """Six 李白 questions of RoleBench's general set (other roles answered them too), one asked twice with a
    second reference, an IE and a classification record, and a question no RoleBench role was asked."""
    out = []
    for i, rec in enumerate(_libai_records(rolebench_dir, 6)):
        meta = {"role": "李白", "question": rec["question"], "n": i}
        out.append(Conversation([Message("user", rec["question"]), Message("assistant", rec["generated"][0])],
                                system="你是李白", meta=meta))
        if i == 1:
            out.append(Conversation([Message("user", rec["question"]), Message("assistant", rec["generated"][1])],
                                    system="你是李白", meta={**meta, "n": 1.5}))
    out.append(Conversation([Message("user", "抽取SPO：《喜剧之王》由周星驰主演，李力持导演。")],
                            meta={"n": "ie"}))
    out[-1].messages.append(Message("assistant", IE_TARGET))
    out.append(Conversation([Message("user", "这条评论说的是什么？苹果挺甜的。"), Message("assistant", '["水果"]')],
                            meta={"n": "cls"}))
    out.append(Conversation([Message("user", "剑在何方？"), Message("assistant", "剑在吾心，亦在天涯。")],
                            system="你是李白", meta={"role": "李白", "n": "own"}))
    return out


@pytest.fixture(scope="module")
def setup(tiny_qwen2, libai_adapter, rolebench_dir, tmp_path_factory):
    from tunesmith.infer.engine import Engine

    name = next(iter(parse_adapter_specs([str(libai_adapter)])))
    engine = Engine.load(str(tiny_qwen2), {name: str(libai_adapter)}, device="cpu", dtype="fp32")
    convs = _convs(rolebench_dir)
    data = write_conversations(tmp_path_factory.mktemp("mps-data") / "libai.jsonl", convs)
    yield {"engine": engine, "name": name, "data": data, "convs": convs, "model": tiny_qwen2,
           "adapter": libai_adapter, "rolebench": rolebench_dir}
    engine.close()


def _cfg(setup, out: Path, **kw) -> MakePairsConfig:
    base = dict(data=setup["data"], out=out, model=str(setup["model"]), adapter=str(setup["adapter"]),
                batch_size=6, max_new_tokens=TOKENS, dtype="fp32", device="cpu", rolebench=setup["rolebench"])
    return MakePairsConfig(**{**base, **kw})


def _rank(setup, out: Path, engine=None, **kw):
    # with the references as candidates: a tiny model's samples are noise that scores 0 on IE/CLS, so only the
    # references give those tasks pairs (samples-only ranking: test_rank_pairs_are_the_models_own_samples...)
    kw.setdefault("with_reference", True)
    return make_pairs(_cfg(setup, out, strategy="rank", samples=3, **kw), engine=engine or setup["engine"])


def _cli(setup, out: Path, *extra: str) -> list[str]:
    return ["data", "make-pairs", str(setup["data"]), "-o", str(out), "--rolebench", str(setup["rolebench"]),
            "--batch-size", "6", *extra]


def _model_args(setup) -> list[str]:
    return ["--model", str(setup["model"]), "--adapter", str(setup["adapter"]), "--device", "cpu", "--dtype", "fp32",
            "--max-new-tokens", str(TOKENS)]


# -- the scorer on fixed answers -----------------------------------------------------------------------------
def test_scorer_terms_are_hand_checkable():
    scorer = AnswerScorer(None)  # no classifier: the role term is 0 and the score says so
    plain = scorer.score("举杯邀明月", ["举杯邀明月"], role="李白")
    assert plain == {"task": "role", "rouge_l": 1.0, "loops": False, "loop_penalty": 0.0, "verdict": "keeps_role",
                     "ooc_penalty": 0.0, "role_p": None, "role_known": False, "total": 1.0}
    # a looping answer with the same ROUGE-L scores exactly the loop penalty lower
    looped = "举杯邀明月，举杯邀明月，举杯邀明月"
    s = scorer.score(looped, [looped], role="李白")
    assert s["rouge_l"] == 1.0 and s["loops"] and s["total"] == pytest.approx(1.0 - LOOP_PENALTY)
    # an AI disclaimer is out of character: the OOC penalty
    ai = "作为一个人工智能语言模型，我无法回答这个问题。"
    s = scorer.score(ai, [ai], role="李白")
    assert s["verdict"] == "claims_ai" and s["total"] == pytest.approx(1.0 - OOC_PENALTY)
    # half the characters of the reference: ROUGE-L F = 2 * 1 * 0.5 / 1.5
    assert scorer.score("举杯", ["举杯邀明月明"])["rouge_l"] == pytest.approx(0.5, abs=1e-4)


def test_scorer_role_classifier_term(rolebench_dir):
    from tunesmith.eval.attribution import train_classifier

    scorer = AnswerScorer(train_classifier(rolebench_dir))
    answers = ["举杯邀明月，对影成三人，吾乃李白，诗酒趁年华。", "俺老孙一个筋斗云十万八千里！"]
    libai, monkey = scorer.score_many(answers, ["吾乃李白。"], role="李白")
    assert 0 <= monkey["role_p"] < libai["role_p"] <= 1 and libai["role_known"]
    assert libai["total"] == pytest.approx(libai["rouge_l"] + 0.25 * libai["role_p"], abs=1e-3)
    unknown = scorer.score("吾乃李白。", ["吾乃李白。"], role="无名氏")
    assert unknown["role_p"] is None and not unknown["role_known"] and unknown["total"] == 1.0


def test_scorer_ie_and_cls():
    scorer = AnswerScorer(None)
    assert scorer.score('["水果"]', ['["水果"]'], task="cls") == {"task": "cls", "exact": 1.0, "parses": True,
                                                                  "total": 1.0 + PARSE_WEIGHT}
    assert scorer.score('["洗浴"]', ['["水果"]'], task="cls")["total"] == pytest.approx(PARSE_WEIGHT)
    assert scorer.score("水果", ['["水果"]'], task="cls") == {"task": "cls", "exact": 0.0, "parses": False,
                                                              "total": 0.0}
    half = scorer.score(ONE_TRIPLE, [IE_TARGET], task="ie")  # P = 1, R = 1/2
    assert half["f1"] == pytest.approx(2 / 3, abs=1e-4) and half["parses"]
    assert half["total"] == pytest.approx(2 / 3 + PARSE_WEIGHT, abs=1e-4)
    assert scorer.score(IE_TARGET, [IE_TARGET], task="ie")["total"] == pytest.approx(1 + PARSE_WEIGHT)
    assert scorer.score("[{broken", [IE_TARGET], task="ie") == {"task": "ie", "f1": 0.0, "parses": False,
                                                                 "total": 0.0}


# -- negatives, one kind at a time ---------------------------------------------------------------------------
def test_loop_negatives_are_flagged_by_the_loop_measure(rolebench_dir):
    answers = [a for rec in _libai_records(rolebench_dir, 20) for a in rec["generated"][:2]]
    answers += ["吾乃李白", "Hello there, I am Li Bai. I like wine!", "好"]
    made = 0
    for a in answers:
        neg = loop_negative(a)
        if loops(a):
            assert neg is None
            continue
        assert neg is not None and loops(neg) and len(neg) >= 1.5 * len(a) and neg != a, a
        assert neg.startswith(a.strip()[:2])  # it opens like the answer
        made += 1
    assert made >= 30 and loop_negative("😀") is None and loop_negative(answers[0]) == loop_negative(answers[0])


def test_truncated_negatives_stop_early_on_a_sentence_end(rolebench_dir):
    assert truncated_negative("吾乃李白，好饮酒，亦好作诗。") == "吾乃李白。"  # no sentence fits: clauses, full stop
    answer = "哈哈，此乃简单数算。五月初至六月初，正好过了一轮月。所以这两日之间，便是三十日。"
    assert truncated_negative(answer) == "哈哈，此乃简单数算。"  # whole sentences while they fit in half
    assert truncated_negative("Hello there, I am Li Bai, I like wine.") == "Hello there."
    assert truncated_negative("一句话而已。") is None and truncated_negative("好") is None
    made = 0
    for a in (a for rec in _libai_records(rolebench_dir, 20) for a in rec["generated"][:2]):
        neg = truncated_negative(a)
        if neg is None:
            continue
        assert neg and len(neg) <= 0.5 * len(a.strip()) and neg[-1] in "。！？!?.…”」\n", (a, neg)
        assert a.strip().startswith(neg[:-1])  # the answer's own opening, only its last mark may change
        made += 1
    assert made >= 20


def test_truncated_negatives_are_made_only_when_named(setup, tmp_path, capsys):
    out = tmp_path / "neg.jsonl"
    assert main(_cli(setup, out, "--strategy", "negatives")) == 0
    assert "truncated" not in {p.meta["negative"] for p in load(out)}  # not one of the defaults
    out = tmp_path / "trunc.jsonl"
    assert main(_cli(setup, out, "--strategy", "negatives", "--negatives", "loop,truncated")) == 0
    pairs = load(out)
    by_kind = {k: [p for p in pairs if p.meta["negative"] == k] for k in ("loop", "truncated")}
    assert set(by_kind) == {p.meta["negative"] for p in pairs} and by_kind["truncated"]
    for p in by_kind["truncated"]:
        assert rejected(p) == truncated_negative(p.answer) and len(rejected(p)) < len(p.answer)
    assert "skipped: truncated: the reference's first clause" in capsys.readouterr().out  # e.g. the CLS label


def test_every_disclaimer_is_out_of_character_in_the_answers_language():
    table = load_disclaimers()
    for entry in table["zh"] + table["en"]:
        assert verdict(entry, "李白")[0] == "claims_ai", entry
    assert disclaimer_negative("吾乃李白。", "00ff") in table["zh"]
    assert disclaimer_negative("I am Li Bai.", "00ff") in table["en"]
    assert disclaimer_negative("吾乃李白。", "00ff") == disclaimer_negative("别的答案", "00ff")  # fixed by the key
    assert len({disclaimer_negative("吾乃李白。", f"{k:04x}") for k in range(20)}) > 1


def test_other_role_answers_the_same_question(rolebench_dir):
    others = OtherRoleAnswers(rolebench_dir)
    rec = _libai_records(rolebench_dir, 1)[0]
    role, answer = others.answer(rec["question"], "李白", "abcd")
    assert role != "李白" and answer.strip()
    assert others.answer("剑在何方？", "李白", "abcd") is None


def test_negatives_without_a_model_load_none(setup, tmp_path, monkeypatch, capsys):
    from tunesmith.infer import engine as engine_mod

    def no_model(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(engine_mod.Engine, "load", no_model)
    out = tmp_path / "neg.jsonl"
    assert main(_cli(setup, out, "--strategy", "negatives")) == 0  # default kinds: no --model, so no base
    printed = capsys.readouterr()
    pairs = load(out)
    assert kind_of_dataset(pairs) == PAIR
    by_kind: dict[str, list[Conversation]] = {}
    for p in pairs:
        assert p.meta["strategy"] == "negatives" and p.answer in {c.answer for c in setup["convs"]}
        by_kind.setdefault(p.meta["negative"], []).append(p)
    n = len(setup["convs"])
    assert len(by_kind["loop"]) == n and all(loops(rejected(p)) for p in by_kind["loop"])
    assert len(by_kind["disclaimer"]) == n
    assert all(verdict(rejected(p), "李白")[0] == "claims_ai" for p in by_kind["disclaimer"])
    # the seven RoleBench conversations (six questions) have another role's answer; IE, CLS and 剑在何方 do not
    assert len(by_kind["other_role"]) == 7 and "base" not in by_kind
    assert all(p.meta["other_role"] != "李白" for p in by_kind["other_role"])
    assert "2 skipped: other_role: no meta.role" in printed.out  # the IE and CLS records
    assert "1 skipped: other_role: no other role answered" in printed.out  # 剑在何方
    # a rerun makes nothing new and gives the same file
    before = out.read_bytes()
    assert main(_cli(setup, out, "--strategy", "negatives")) == 0
    assert "0 new" in capsys.readouterr().out and out.read_bytes() == before


def test_base_negatives_are_the_base_models_greedy_answer(setup, tmp_path):
    out = tmp_path / "base.jsonl"
    rep = make_pairs(_cfg(setup, out, strategy="negatives", negatives="base"), engine=setup["engine"])
    eng, name = setup["engine"], setup["name"]
    convs = setup["convs"]
    expected = eng.generate([(c.system, c.messages[:-1]) for c in convs], adapter="base",
                            options=GenerationOptions(max_new_tokens=TOKENS, do_sample=False),
                            template=eng.template_for(name))
    want = [(c.answer, e) for c, e in zip(convs, expected) if e.strip() and e.strip() != c.answer.strip()]
    pairs = load(out)
    assert [(p.answer, rejected(p)) for p in pairs] == want and rep.made == len(want)
    assert {p.meta["negative"] for p in pairs} == {"base"}


# -- rank ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rank_run(setup, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("mps-rank") / "rank.jsonl"
    _rank(setup, out)
    return out.read_bytes()


def test_rank_pairs_record_their_scores(setup, rank_run):
    pairs = [Conversation.from_dict(json.loads(line)) for line in rank_run.decode().splitlines()]
    prompts = {json.dumps([c.system, [m.content for m in c.messages[:-1]]]) for c in setup["convs"]}
    assert 0 < len(pairs) <= len(prompts)  # one pair per prompt (the question asked twice gives one)
    for p in pairs:
        s = p.meta["scores"]
        assert p.meta["strategy"] == "rank" and s["chosen"]["total"] - s["rejected"]["total"] == \
            pytest.approx(s["margin"], abs=1e-3) and s["margin"] >= 0.1
        assert s["rejected"]["from"].startswith("sample") and rejected(p) != p.answer
        task = s["chosen"]["task"]
        if task == "role":
            assert {"rouge_l", "loops", "verdict", "role_p", "role_known"} <= set(s["chosen"])
            assert s["chosen"]["role_known"] and s["chosen"]["role_p"] is not None
        else:
            assert task in ("ie", "cls") and "parses" in s["chosen"]
    assert {p.meta["scores"]["chosen"]["task"] for p in pairs} >= {"role", "ie", "cls"}


def test_rank_reproduces_and_resumes_after_an_interruption(setup, rank_run, tmp_path):
    out = tmp_path / "rank.jsonl"
    _rank(setup, out)
    assert out.read_bytes() == rank_run  # seeded per batch: the same samples

    class Dying:
        def __init__(self, engine):
            self.engine, self.calls = engine, 0

        def __getattr__(self, name):
            return getattr(self.engine, name)

        def generate(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.engine.generate(*args, **kwargs)

    out2 = tmp_path / "rank2.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _rank(setup, out2, engine=Dying(setup["engine"]))
    assert 0 < len(out2.read_text(encoding="utf-8").splitlines()) <= 4  # two batches of 2 prompts
    rep = _rank(setup, out2)
    assert rep.resumed > 0 and out2.read_bytes() == rank_run


def test_rank_batches_prompts_of_like_length_longest_first(setup, tmp_path):
    # a batch is padded to its longest prompt: prompts of like length in one batch pad least
    class Recording:
        def __init__(self, engine):
            self.engine, self.batches = engine, []

        def __getattr__(self, name):
            return getattr(self.engine, name)

        def generate(self, prompts, **kwargs):
            self.batches.append([len(system or "") + sum(len(m.content) for m in turns) for system, turns in prompts])
            return self.engine.generate(prompts, **kwargs)

    rec = Recording(setup["engine"])
    _rank(setup, tmp_path / "rank.jsonl", engine=rec)
    lengths = [n for batch in rec.batches for n in batch]
    assert len(rec.batches) > 1 and len(lengths) == len({(c.system, c.messages[0].content) for c in setup["convs"]})
    assert lengths == sorted(lengths, reverse=True)


def test_rank_skips_prompts_under_the_margin(setup, rank_run, tmp_path, capsys):
    margins = sorted(json.loads(line)["meta"]["scores"]["margin"] for line in rank_run.decode().splitlines())
    cut = margins[len(margins) // 2]
    keep = sum(m >= cut for m in margins)
    assert 0 < keep < len(margins)
    out = tmp_path / "cut.jsonl"
    rep = _rank(setup, out, min_margin=cut)
    assert len(load(out)) == keep and sum(rep.skipped.values()) >= len(margins) - keep
    assert all(p.meta["scores"]["margin"] >= cut for p in load(out))
    assert main(_cli(setup, tmp_path / "none.jsonl", "--strategy", "rank", "--samples", "3", "--min-margin", "99",
                     *_model_args(setup))) == 2
    err = capsys.readouterr().err
    assert "no pairs to write by --strategy rank" in err and "under --min-margin 99" in err
    assert not (tmp_path / "none.jsonl").exists()


def test_rank_pair_prefers_a_clean_sample_over_a_looping_reference():
    from tunesmith.data.pair_file import Item
    from tunesmith.data.pair_strategies import rank_pair

    ref = "举杯邀明月，举杯邀明月，举杯邀明月"
    it = Item(("p", ref), "0abc", None, [Message("user", "饮酒否？")], ref, {"role": "李白"})
    samples = ["举杯邀明月，举杯邀明月", "", "不知道"]
    pair, why = rank_pair([it], samples, AnswerScorer(None), "mb", 0.1, with_reference=True)
    s = pair.meta["scores"]
    # the reference: ROUGE-L 1 - the loop penalty = 0.5; sample 1 (two repeats: no loop): P = 1, R = 10/15,
    # ROUGE-L F = 0.8
    assert pair.answer == samples[0] and s["chosen"]["from"] == "sample 1" and not s["chosen"]["loops"]
    assert s["chosen"]["total"] == pytest.approx(0.8)
    # the empty sample cannot be rejected (a pair's rejected answer is text): the worst of the others
    assert rejected(pair) == "不知道" and s["rejected"]["total"] == 0.0 and s["margin"] == pytest.approx(0.8)
    assert rank_pair([it], samples, AnswerScorer(None), "mb", 0.9, True) == (None, "best - worst score under "
                                                                              "--min-margin 0.9")
    assert rank_pair([it], ["", ref], AnswerScorer(None), "mb", 0.1, True)[0] is None  # nothing but the reference


def test_rank_pairs_are_the_models_own_samples_unless_the_reference_is_asked_for():
    from tunesmith.data.pair_file import Item
    from tunesmith.data.pair_strategies import rank_pair

    ref = "吾乃李白，好饮酒。"
    it = Item(("p", ref), "0abc", None, [Message("user", "你是谁？")], ref, {"role": "李白"})
    samples = ["吾乃李白。", "不知道", "吾乃李白，好饮酒。"[:4]]
    on_policy, _ = rank_pair([it], samples, AnswerScorer(None), "mb", 0.1)
    # chosen: the sample closest to the reference (punctuation aside "吾乃李白" against "吾乃李白好饮酒":
    # P = 1, R = 4/7, F = 2 * 4/7 / (1 + 4/7) = 8/11)
    assert on_policy.answer == "吾乃李白。" and on_policy.meta["scores"]["chosen"]["from"] == "sample 1"
    assert on_policy.meta["scores"]["chosen"]["total"] == pytest.approx(8 / 11, abs=1e-4)
    assert rejected(on_policy) == "不知道"
    off_policy, _ = rank_pair([it], samples, AnswerScorer(None), "mb", 0.1, with_reference=True)
    assert off_policy.answer == ref and off_policy.meta["scores"]["chosen"]["from"] == "reference"


# -- strategies in one file ----------------------------------------------------------------------------------
def test_strategies_mix_in_one_file_and_stats_show_the_mix(setup, rank_run, tmp_path, capsys):
    out = tmp_path / "mix.jsonl"
    make_pairs(_cfg(setup, out), engine=setup["engine"])
    n_reference = len(load(out))
    out.write_bytes(out.read_bytes() + rank_run)  # as a rank run on the same file appends its pairs
    make_pairs(_cfg(setup, out, strategy="negatives", negatives="loop,disclaimer", model=None, adapter=None))
    first = out.read_bytes()
    # the reference strategy again: nothing new, the file (data order, every strategy kept) unchanged
    make_pairs(_cfg(setup, out), engine=setup["engine"])
    assert out.read_bytes() == first
    n_rank = len(rank_run.decode().splitlines())
    n = len(setup["convs"])
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["pair_mix"] == {"reference": n_reference, "rank": n_rank, "negatives/loop": n,
                                 "negatives/disclaimer": n}
    assert main(["data", "stats", str(out)]) == 0
    assert "negatives/loop" in capsys.readouterr().out
    # in data order: the first conversation's pairs come first, reference, rank, then its negatives
    groups = [(p.meta.get("strategy", "reference"), p.meta.get("negative")) for p in load(out)[:4]]
    assert groups == [("reference", None), ("rank", None), ("negatives", "loop"), ("negatives", "disclaimer")]
    # pairs of one strategy made with other settings are refused, the file left as it was
    assert main(_cli(setup, out, "--strategy", "rank", "--samples", "3", "--seed", "7", *_model_args(setup))) == 2
    assert "holds rank pairs made with other settings" in capsys.readouterr().err and out.read_bytes() == first


def test_bad_options_exit_2_with_a_clear_message(setup, tmp_path, capsys):
    out = tmp_path / "bad.jsonl"
    model = _model_args(setup)
    cases = [
        (["--strategy", "negatives", "--negatives", "loop,typo"], "--negatives: unknown kind typo"),
        (["--strategy", "rank", "--samples", "1", *model], "--samples: expected an integer >= 2"),
        (["--strategy", "best", *model], "--strategy: expected one of reference, rank, negatives"),
        (["--strategy", "rank"], "--model: required for --strategy rank"),
        ([], "--model: required for --strategy reference"),
        (["--negatives", "loop", *model], "--negatives: only with --strategy negatives"),
        (["--strategy", "negatives", "--negatives", "base"], "--negatives base: needs --model"),
        (["--strategy", "rank", "--temperature", "0", *model], "--temperature: expected a number > 0"),
        (["--strategy", "rank", "--top-p", "1.5", *model], "--top-p: expected a number in (0, 1]"),
        (["--strategy", "rank", "--min-margin", "-1", *model], "--min-margin: expected a number >= 0"),
    ]
    for extra, message in cases:
        assert main(_cli(setup, out, *extra)) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
        assert not out.exists()


def test_help_documents_every_option(capsys):
    assert main(["data", "make-pairs", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for opt in ("--strategy", "--samples", "--temperature", "--top-p", "--seed", "--min-margin", "--negatives",
                "--rolebench", *KINDS):
        assert opt in text, opt
