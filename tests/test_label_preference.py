"""A labeling project's corrections and judgements as preference data: the store, the CLI, the page, training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.conversation import Message
from tunesmith.data import load
from tunesmith.label.samples import LabelError
from tunesmith.label.store import LabelStore
from tunesmith.preference import JUDGED, PAIR, kind_of_dataset, label, rejected


def _args(model: Path, out: Path, train: Path, *extra: str) -> list[str]:
    """`tunesmith train` on a tiny model for two steps (as tests/test_train_preference.py runs it)."""
    return ["train", f"model={model}", f"output_dir={out}", f"data.train={train}", "dtype=fp32", "device=cpu",
            "batch_size=4", "lr=5e-3", "max_steps=2", "logging_steps=1", "eval_steps=2", "sample_tokens=4",
            "warmup=0", *extra]


def _ask(store: LabelStore, answer: str, question: str = "你是谁？", system: str = "你是李白", **kw) -> int:
    return store.log_generation(adapter="libai", system=system, messages=[{"role": "user", "content": question}],
                                answer=answer, elapsed_s=0.1, user="ann", **kw)


@pytest.fixture()
def store(tmp_path):
    s = LabelStore(tmp_path / "proj")
    yield s
    s.close()


@pytest.fixture()
def labeled(store):
    """Every way a model answer can end up: corrected, accepted as is, edited later, re-prompted, judged."""
    ids = {}
    # corrected when accepted, and judged wrong first
    ids["fixed"] = _ask(store, "我是一个AI助手。")
    store.judge(ids["fixed"], "wrong", note="out of character", user="ann")
    store.accept_generation(ids["fixed"], output="吾乃李白，字太白。", user="ann")
    # accepted as it was, and judged right: no pair, but a desirable KTO answer
    ids["as_is"] = _ask(store, "举杯邀明月。", question="写一句诗")
    store.judge(ids["as_is"], "right", user="ann")
    store.accept_generation(ids["as_is"], user="ann")
    # accepted as it was, then edited in the Label tab: a pair with the edit as the chosen answer
    ids["edited_later"] = _ask(store, "好。", question="饮酒否？")
    s = store.accept_generation(ids["edited_later"], user="ann")
    store.update_sample(s.id, expected_revision=s.revision, user="bob",
                        messages=[{"role": "user", "content": "饮酒否？"},
                                  {"role": "assistant", "content": "会须一饮三百杯！"}])
    # corrected, then its prompt was rewritten: the model never answered that prompt, so it is left out
    ids["reprompted"] = _ask(store, "不知道。", question="家在何处？")
    s = store.accept_generation(ids["reprompted"], output="吾家在蜀中。", user="ann")
    store.update_sample(s.id, expected_revision=s.revision, user="bob",
                        messages=[{"role": "user", "content": "故乡在哪里？"},
                                  {"role": "assistant", "content": "吾家在蜀中。"}])
    # corrected, but the sample was rejected: only exported when rejected samples are asked for
    ids["rejected_sample"] = _ask(store, "嗯。", question="月亮呢？")
    s = store.accept_generation(ids["rejected_sample"], output="床前明月光。", status="rejected", user="ann")
    # an instruction sample (alpaca prompt format), corrected
    ids["single"] = store.log_generation(adapter="base", instruction="翻译", input="moon", kind="single",
                                         messages=[{"role": "user", "content": "翻译\nmoon"}], answer="moon",
                                         elapsed_s=0.1, user="ann")
    store.accept_generation(ids["single"], output="月亮", user="ann")
    # judged, never accepted; judged twice (the latest verdict counts)
    ids["wrong_only"] = _ask(store, "我不会写诗。", question="作诗一首")
    store.judge(ids["wrong_only"], "wrong", user="ann")
    ids["changed_mind"] = _ask(store, "天生我材必有用。", question="自评")
    store.judge(ids["changed_mind"], "right", user="ann")
    store.judge(ids["changed_mind"], "wrong", note="too proud", user="bob")
    _ask(store, "未评判的回答。", question="未评判")  # logged, never judged: in neither export
    return ids


# -- the store ---------------------------------------------------------------------------------------
def test_corrected_answers_become_pairs(store, labeled, tmp_path):
    rep = store.export_preference(tmp_path / "pairs.jsonl", "pairs")
    assert rep.count == 3 and rep.unchanged == 1 and rep.prompt_edited == 1
    assert "wrote 3 pair(s)" in rep.summary() and "1 accepted answer(s) left out as not corrected" in rep.summary()
    convs = load(rep.path)
    assert kind_of_dataset(convs) == PAIR
    got = {c.meta["generation_id"]: c for c in convs}
    assert list(got) == [labeled["fixed"], labeled["edited_later"], labeled["single"]]  # oldest sample first
    fixed = got[labeled["fixed"]]
    assert fixed.system == "你是李白" and [(m.role, m.content) for m in fixed.messages] == [
        ("user", "你是谁？"), ("assistant", "吾乃李白，字太白。")]
    assert rejected(fixed) == "我是一个AI助手。" and fixed.meta["adapter"] == "libai"
    later = got[labeled["edited_later"]]
    assert later.answer == "会须一饮三百杯！" and rejected(later) == "好。"
    single = got[labeled["single"]]
    assert single.system is None and single.messages[0].content == "翻译\nmoon"  # the prompt the model saw
    assert single.answer == "月亮" and rejected(single) == "moon"
    # every line is Conversation.to_dict()
    lines = rep.path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == fixed.to_dict()
    # rejected samples only when asked for; the tag filter of an SFT export applies too
    both = store.export_preference(tmp_path / "all.jsonl", "pairs", statuses=("accepted", "rejected"))
    assert both.count == 4 and "床前明月光。" in [c.answer for c in load(both.path)]
    with pytest.raises(LabelError, match="no pairs to export"):
        store.export_preference(tmp_path / "none.jsonl", "pairs", tag="nope")
    assert not (tmp_path / "none.jsonl").exists()


def test_judged_answers_become_kto_records(store, labeled, tmp_path):
    rep = store.export_preference(tmp_path / "kto.jsonl", "kto")
    convs = load(rep.path)
    assert kind_of_dataset(convs) == JUDGED and rep.count == len(convs) == 4
    verdicts = {c.meta["generation_id"]: label(c) for c in convs}
    assert verdicts == {labeled["fixed"]: False, labeled["as_is"]: True, labeled["wrong_only"]: False,
                        labeled["changed_mind"]: False}
    fixed = next(c for c in convs if c.meta["generation_id"] == labeled["fixed"])
    # the model's own answer is what was judged, not the correction accepted later
    assert fixed.answer == "我是一个AI助手。" and fixed.system == "你是李白"
    assert fixed.meta["note"] == "out of character"
    assert fixed.messages[:-1] == [Message("user", "你是谁？")]
    with pytest.raises(TypeError):
        store.export_preference(tmp_path / "x.jsonl")  # the kind is required


def test_nothing_to_export_writes_nothing(store, tmp_path):
    _ask(store, "never judged nor accepted")
    for kind, message in (("pairs", "no pairs to export"), ("kto", "no judged answers to export")):
        with pytest.raises(LabelError, match=message):
            store.export_preference(tmp_path / f"{kind}.jsonl", kind)
        assert not (tmp_path / f"{kind}.jsonl").exists()


# -- the command line ----------------------------------------------------------------------------------
def test_cli_exports_each_kind(store, labeled, tmp_path, capsys):
    proj = str(store.project_dir)
    assert main(["label", "export", proj, "-o", str(tmp_path / "p.jsonl"), "--kind", "pairs"]) == 0
    assert "wrote 3 pair(s)" in capsys.readouterr().out
    assert load(tmp_path / "p.jsonl") == load(store.export_preference(tmp_path / "p2.jsonl", "pairs").path)
    assert main(["label", "export", proj, "-o", str(tmp_path / "k.jsonl"), "--kind", "kto"]) == 0
    assert kind_of_dataset(load(tmp_path / "k.jsonl")) == JUDGED
    # the default kind is the samples, as an SFT file
    assert main(["label", "export", proj, "-o", str(tmp_path / "s.jsonl")]) == 0
    assert "wrote 5 sample(s)" in capsys.readouterr().out
    assert (tmp_path / "s.jsonl").read_text(encoding="utf-8") == \
        store.export(tmp_path / "s2.jsonl").path.read_text(encoding="utf-8")
    assert main(["label", "export", proj, "-o", str(tmp_path / "ct.jsonl"), "--format", "alpaca",
                 "--status", "rejected"]) == 0
    assert len(load(tmp_path / "ct.jsonl", "alpaca")) == 1


@pytest.mark.parametrize("args, message", [
    (["--kind", "pairs"], "no pairs to export"),
    (["--kind", "kto"], "no judged answers to export"),
    (["--kind", "dpo"], "expected one of sft, pairs, kto"),
    (["--kind", "pairs", "--format", "alpaca"], "always written as conversation JSONL"),
    (["--kind", "kto", "--status", "draft"], "leave --status out"),
    (["--kind", "kto", "--tag", "x"], "leave them empty"),
])
def test_cli_refuses_with_exit_2_and_writes_nothing(store, tmp_path, capsys, args, message):
    s = store.add_sample(instruction="q", output="a", user="ann")  # samples, but no model answers
    assert s.id == 1
    out = tmp_path / "out.jsonl"
    assert main(["label", "export", str(store.project_dir), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


def test_cli_export_never_creates_a_project(tmp_path, capsys):
    assert main(["label", "export", str(tmp_path / "nope"), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "no labeling project here" in capsys.readouterr().err and not (tmp_path / "nope").exists()


def test_label_still_opens_the_page_by_default(tmp_path, capsys):
    # `tunesmith label PROJECT` is the page, as before `label export` existed (an argument error proves it ran)
    assert main(["label", str(tmp_path / "proj"), "--port", "0"]) == 2
    assert "expected 1..65535" in capsys.readouterr().err
    assert main(["label", "--help"]) == 0 and "--model" in capsys.readouterr().out
    assert main(["label", "export", "--help"]) == 0 and "--kind" in capsys.readouterr().out


# -- the page ----------------------------------------------------------------------------------------
def test_page_exports_pairs_and_judged_answers(store, labeled):
    pytest.importorskip("gradio")
    from tunesmith.label.ui import LabelApp

    app = LabelApp(store.project_dir, store=store)
    msg, path = app.export_dataset("conversation", ["accepted"], "", "", "pairs")
    assert "wrote 3 pair(s)" in msg and "method=dpo" in msg
    assert kind_of_dataset(load(path)) == PAIR and Path(path).name.startswith(f"{store.project_dir.name}-pairs-")
    msg, path = app.export_dataset("conversation", ["accepted"], "", "", "kto")
    assert "wrote 4 judged answer(s)" in msg and "method=kto" in msg and kind_of_dataset(load(path)) == JUDGED
    assert "choose one of sft, pairs, kto" in app.export_dataset("conversation", ["accepted"], "", "", "x")[0]
    assert "no pairs to export" in app.export_dataset("conversation", ["draft"], "", "", "pairs")[0]


# -- and the pairs train ---------------------------------------------------------------------------------
def test_a_labeling_projects_exported_pairs_train_for_two_steps(tiny_qwen2, store, tmp_path):
    for i in range(8):
        gid = _ask(store, "我是一个AI助手。" * (i % 3 + 1), question=f"第{i}问：你是谁？")
        store.accept_generation(gid, output=f"吾乃李白，第{i}答。", user="ann")
    pairs = tmp_path / "pairs.jsonl"
    assert main(["label", "export", str(store.project_dir), "-o", str(pairs), "--kind", "pairs"]) == 0
    out = tmp_path / "dpo"
    assert main(_args(tiny_qwen2, out, pairs, "method=dpo")) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["method"] == "dpo" and s["steps"] == 2
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
