"""Long conversations: the scripts, the drift on fixed answers, turn-by-turn answering on the model's own
history, and the set in an eval run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.errors import DataError
from tunesmith.eval.drift import (
    DRIFT,
    LONG_SET,
    answer_conversations,
    depth_of,
    drift_scores,
    load_conversations,
    transcripts,
)
from tunesmith.eval.predictions import PredictionStore
from tunesmith.eval.runner import EvalConfig, run_eval


def test_depth_is_the_third_of_the_conversation():
    assert [depth_of(k, 12) for k in range(12)] == ["early"] * 4 + ["middle"] * 4 + ["late"] * 4
    assert [depth_of(k, 3) for k in range(3)] == ["early", "middle", "late"]


def test_bundled_scripts_have_probes_early_middle_and_late():
    scripts = load_conversations()
    assert {s["lang"] for s in scripts} == {"zh", "en"} and sum(s["lang"] == "zh" for s in scripts) >= 4
    for s in scripts:
        n = len(s["turns"])
        probes = [k for k, t in enumerate(s["turns"]) if t["probe"] == "identity"]
        assert n >= 12, s["id"]
        assert any(k <= 1 for k in probes) and any(k >= n - 2 for k in probes), s["id"]
        assert {depth_of(k, n) for k in probes} == {"early", "middle", "late"}, s["id"]
    assert len(load_conversations(limit=2)) == 2


def test_bad_scripts_are_data_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"turns": [{"user": "hi", "probe": "other"}, {"user": "x"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="turns"):
        load_conversations(bad)


def _script(cid: str, n: int = 6) -> dict:
    probes = {0: "identity", n // 2: "identity", n - 1: "identity"}
    return {"id": cid, "lang": "zh", "turns": [{"user": f"{cid}问{k}", "probe": probes.get(k)} for k in range(n)]}


class StubEngine:
    """Answers "<conversation> 答<turn>" unless `answer` says otherwise; records every generate call."""

    tokenizer = None

    def __init__(self, answer=None):
        self.calls: list[list[tuple]] = []
        self.answer = answer or (lambda msgs: f"{msgs[-1].content}的答")

    def resolve_batching(self, batching, options):
        return "padded"

    def generate(self, conversations, **kw):
        self.calls.append([(system, list(msgs)) for system, msgs in conversations])
        return [self.answer(msgs) for _system, msgs in conversations]


def _answer(engine, tmp_path, scripts, persona="你是李白"):
    store = PredictionStore(tmp_path / "predictions.jsonl")
    stats = answer_conversations(engine, store, "m", "base", None, "sig", scripts, "李白", persona, None, 4)
    return store, stats


def test_history_is_the_models_own_answers_one_call_per_turn(tmp_path):
    scripts = [_script("a", 6), _script("b", 4)]
    engine = StubEngine()
    store, stats = _answer(engine, tmp_path, scripts)
    assert len(engine.calls) == 6 and [len(c) for c in engine.calls] == [2, 2, 2, 2, 1, 1]
    assert stats["answered"] == 10
    for k, call in enumerate(engine.calls):
        for system, msgs in call:
            assert system == "你是李白" and len(msgs) == 2 * k + 1
            cid = msgs[-1].content[0]
            assert msgs[-1].content == f"{cid}问{k}"
            # every earlier turn: the scripted user text, then this model's own answer to it
            assert [m.content for m in msgs[:-1]] == [x for j in range(k) for x in (f"{cid}问{j}", f"{cid}问{j}的答")]
            assert [m.role for m in msgs[:-1]] == ["user", "assistant"] * k
    rows = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 10 and {r["set"] for r in rows} == {LONG_SET}
    assert [r["turn"] for r in rows if r["conversation"] == "a"] == [1, 2, 3, 4, 5, 6]
    assert [r["probe"] for r in rows if r["conversation"] == "b"] == ["identity", None, "identity", "identity"]
    # run again: every turn is found in predictions.jsonl, nothing is generated
    again = StubEngine()
    _store, stats = _answer(again, tmp_path, scripts)
    assert again.calls == [] and stats["answered"] == 0
    turns = transcripts(scripts, "你是李白", store.done("m", "sig"))
    assert [len(t) for t in turns] == [6, 4] and turns[0][2]["answer"] == "a问2的答"


class StubClassifier:
    roles = ["李白", "张飞"]

    def predict(self, texts):
        return ["李白" if "酒" in t else "张飞" for t in texts]


def test_drift_is_late_minus_early_on_fixed_answers(tmp_path):
    scripts = [_script("a", 6), _script("b", 6)]

    def fading(msgs):  # in character early, an AI late; the voice (酒) fades after the first two turns
        k = len(msgs) // 2
        if k >= 4:
            return "我是一个人工智能助手。"
        return "吾乃李白，饮酒去也！" if k < 2 else "今日天气不错。"

    store, _ = _answer(StubEngine(fading), tmp_path, scripts)
    block = drift_scores(scripts, "李白", "你是李白", store.done("m", "sig"), StubClassifier())
    assert block["n"] == block["n_total"] == 12 and block["conversations"] == 2
    assert block["probes_early"] == block["probes_middle"] == block["probes_late"] == 2
    assert block["in_character_early"] == 1.0 and block["in_character_middle"] == 1.0
    assert block["in_character_late"] == 0.0 and block["in_character_drift"] == -100.0
    assert block["verdicts"]["late"] == {"claims_ai": 2} and block["verdicts"]["early"] == {"names_role": 2}
    assert block["attribution_early"] == 1.0 and block["attribution_late"] == 0.0
    assert block["attribution_drift"] == -100.0
    # without a classifier: no attribution; with half the answers missing: the drift of what was answered
    assert "attribution_drift" not in drift_scores(scripts, "李白", "你是李白", store.done("m", "sig"))
    part = drift_scores(scripts, "李白", "你是李白", {})
    assert part["n"] == 0 and part["in_character_early"] is None and part["in_character_drift"] is None


# -- in an eval run (tiny model) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def libai_test(rolebench_dir, tmp_path_factory) -> Path:
    lines = (rolebench_dir / "general" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("libai") / "rolebench-zh"
    (folder / "profiles-zh").mkdir(parents=True)
    (folder / "profiles-zh" / "desc.json").write_bytes((rolebench_dir / "profiles-zh" / "desc.json").read_bytes())
    path = folder / "test.jsonl"
    path.write_text("\n".join([ln for ln in lines if json.loads(ln)["role"] == "李白"][:2]) + "\n", encoding="utf-8")
    return path


class Recorder:
    """The real engine, with every generate call's conversations recorded."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, conversations, **kw):
        self.calls.append([list(msgs) for _system, msgs in conversations])
        return self.engine.generate(conversations, **kw)


def _cfg(out, data, scripts_file, **kw) -> EvalConfig:
    probe = Path(out).parent / "probe.jsonl"
    probe.write_text(json.dumps({"question": "4*5等于多少？", "accept": ["20"]}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    return EvalConfig(out=out, data=[data], model="tiny", adapters={}, task="rolebench", probe_file=probe,
                      generation={"max_new_tokens": 5}, batch_size=4, in_character=False, attribution=False,
                      role_breaking=False, long_conversations_file=scripts_file, **kw)


def test_eval_reports_drift_on_a_tiny_model(engine_with_adapter, libai_test, tmp_path):
    scripts_file = tmp_path / "scripts.jsonl"
    scripts_file.write_text("".join(json.dumps(_script(c, 6), ensure_ascii=False) + "\n" for c in "xyz"),
                            encoding="utf-8")
    engine = Recorder(engine_with_adapter)
    out = tmp_path / "r"
    result = run_eval(_cfg(out, libai_test, scripts_file, long_conversations_limit=2), engine=engine)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    block = metrics["metrics"]["base"][DRIFT]
    assert block["n"] == block["n_total"] == 12 and block["conversations"] == 2
    assert {"in_character_early", "in_character_late", "in_character_drift"} <= block.keys()
    assert metrics["set_order"][-1] == DRIFT and metrics["long_conversations"]["ids"] == ["x", "y"]
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    mine = {(r["conversation"], r["turn"]): r["prediction"] for r in rows if r["set"] == LONG_SET}
    assert len(mine) == 12
    # turn k of a conversation was asked with the model's own answers to turns < k
    turn_calls = [c for c in engine.calls if any(m.content.startswith(("x问", "y问")) for m in c[0][-1:])]
    assert len(turn_calls) == 6
    for k, call in enumerate(turn_calls):
        for msgs in call:
            cid = msgs[-1].content[0]
            assert [m.content for m in msgs[1:-1:2]] == [mine[(cid, j + 1)] for j in range(k)]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Persona drift over 2 scripted conversations" in md and "drift in-character drift (points)" in md
    assert "Persona drift" in (out / "report.html").read_text(encoding="utf-8")
    assert "x, turn 6 of 6 (late): x问5" in md and "after its own answers to turns 1-5" in md  # the probe answers
    assert result["models"]["base"]["answered"] >= 12


def test_long_conversations_switch_off(engine_with_adapter, libai_test, tmp_path):
    out = tmp_path / "off"
    engine = Recorder(engine_with_adapter)
    run_eval(_cfg(out, libai_test, None, long_conversations=False), engine=engine)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert DRIFT not in metrics["metrics"]["base"] and metrics["long_conversations"] is None
    assert DRIFT not in metrics["set_order"] and all(len(c[0]) == 1 for c in engine.calls)
