"""`tunesmith eval` end to end on a tiny model with a random LoRA adapter: report files, fairness, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.eval.rouge import rouge_l_zh
from tunesmith.eval.testset import build_sets, match_key


@pytest.fixture(scope="module")
def random_adapter(tiny_qwen2, make_adapter) -> Path:
    """A LoRA adapter with random (non-zero) weights and a saved template, as training would leave it."""
    return make_adapter(tiny_qwen2, seed=1, template="chatml")


@pytest.fixture(scope="module")
def libai_data(rolebench_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A few 李白 records of the real general and role_specific test files (raw RoleBench format)."""
    folder = tmp_path_factory.mktemp("rb")
    out = []
    for subset in ("general", "role_specific"):
        lines = (rolebench_dir / subset / "test.jsonl").read_text(encoding="utf-8").splitlines()
        libai = [ln for ln in lines if json.loads(ln)["role"] == "李白"][:4]
        d = folder / "rolebench-zh" / subset
        d.mkdir(parents=True)
        (d / "test.jsonl").write_text("\n".join(libai) + "\n", encoding="utf-8")
        out.append(d / "test.jsonl")
    prof = folder / "rolebench-zh" / "profiles-zh"
    prof.mkdir()
    (prof / "desc.json").write_bytes((rolebench_dir / "profiles-zh" / "desc.json").read_bytes())
    return out[0], out[1]


def _args(model, adapter, cus, spe, out, *extra):
    return ["eval", "--model", str(model), "--adapter", f"rnd={adapter}", "--data", str(cus), "--data2", str(spe),
            "--task", "rolebench", "--max-new-tokens", "6", "--batch-size", "4", "--show", "3", "-o", str(out), *extra]


class GenerateSpy:
    """Wraps Engine.generate: records (adapter, template name, prompts) and can fail on the k-th call."""

    def __init__(self, monkeypatch, fail_on_call: int | None = None):
        from tunesmith.infer.engine import Engine

        self.calls: list[tuple[str, str, int]] = []
        self.modes: list[str] = []  # the batching of each call
        self.fail_on_call = fail_on_call
        original = getattr(Engine.generate, "unwrapped", Engine.generate)  # never wrap an earlier spy
        spy = self

        def generate(engine, conversations, adapter="base", options=None, batch_size=16, template=None, **kwargs):
            if spy.fail_on_call is not None and len(spy.calls) + 1 == spy.fail_on_call:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C during this batch
            tpl = template or engine.template_for(adapter)
            spy.calls.append((adapter, tpl.name, len(conversations)))
            spy.modes.append(kwargs.get("batching", "padded"))
            return original(engine, conversations, adapter=adapter, options=options, batch_size=batch_size,
                            template=template, **kwargs)

        generate.unwrapped = original
        monkeypatch.setattr(Engine, "generate", generate)

    def prompts(self, adapter: str | None = None) -> int:
        return sum(n for a, _, n in self.calls if adapter is None or a == adapter)


def test_eval_end_to_end_writes_every_report_file(tiny_qwen2, random_adapter, libai_data, tmp_path, monkeypatch):
    cus, spe = libai_data
    out = tmp_path / "report"
    spy = GenerateSpy(monkeypatch)
    assert main(_args(tiny_qwen2, random_adapter, cus, spe, out)) == 0
    for name in ("report.md", "report.html", "metrics.json", "metrics.png", "predictions.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "rolebench"
    assert metrics["model_order"] == ["base", "rnd"]
    # identity questions, role-breaking probes and long conversations: asked with the probe
    assert metrics["set_order"] == ["CUS", "SPE", "probe", "identity", "role_breaking", "drift"]
    # the fp32 adapter answered folded into the weights (as fast as the base), the base did not
    assert metrics["models"]["rnd"]["merged"] is True and metrics["models"]["base"]["merged"] is False
    n_probe, n_identity = metrics["set_sizes"]["probe"], metrics["set_sizes"]["identity"]
    n_breaking = metrics["set_sizes"]["role_breaking"]
    for model in ("base", "rnd"):
        m = metrics["metrics"][model]
        assert m["CUS"]["n"] == 4 and m["SPE"]["n"] == 4 and m["probe"]["n"] == n_probe
        assert 0.0 <= m["CUS"]["rouge_l_chars"] <= 1.0 and 0.0 <= m["probe"]["accuracy"] <= 1.0
    # every (model, prompt) answered exactly once, by batched calls
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len({(r["model"], r["id"]) for r in rows})
    assert sum(r["set"] != "long_conversation" for r in rows) == 2 * (8 + n_probe + n_identity + n_breaking)
    assert spy.prompts() == len(rows)
    # greedy answers go through continuous batching, several batches of 4 per call (finished rows refilled)
    assert set(spy.modes) == {"continuous"} and metrics["models"]["rnd"]["batching"] == "continuous"
    assert max(n for _, _, n in spy.calls) == 16  # one call takes a window of 4 batches of 4 (the 26 probe questions)

    # the reported CUS score is the mean best-reference ROUGE-L of the saved answers
    _, items = build_sets([cus], [spe], "rolebench")
    refs = {i.id: i.references for i in items}
    cus_rows = [r for r in rows if r["model"] == "rnd" and r["set"] == "CUS"]
    expected = sum(rouge_l_zh(r["prediction"], refs[r["id"]]) for r in cus_rows) / len(cus_rows)
    assert metrics["metrics"]["rnd"]["CUS"]["rouge_l_chars"] == pytest.approx(expected)

    md = (out / "report.md").read_text(encoding="utf-8")
    assert "tunesmith eval" in md and "--adapter" in md and "took" in md and "continuous batching" in md
    assert "| base |" in md and "| rnd |" in md and "each CJK character is one token" in md
    assert "Answers side by side" in md and "| reference |" in md
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert "<table>" in html_text and "data:image/png;base64," in html_text


def test_base_is_prompted_with_the_adapters_template(tiny_qwen2, random_adapter, libai_data, tmp_path, monkeypatch):
    import shutil

    from tunesmith.template import ChatTemplate, save_template

    plain = tmp_path / "plain_adapter"
    shutil.copytree(random_adapter, plain)
    save_template(ChatTemplate("plain"), plain)  # the tokenizer's own template is chatml: they differ
    cus, spe = libai_data
    spy = GenerateSpy(monkeypatch)
    args = ["eval", "--model", str(tiny_qwen2), "--adapter", f"rnd={plain}", "--data", str(cus), "--task", "rolebench",
            "--limit", "2", "--no-probe", "--max-new-tokens", "4"]
    assert main(args + ["-o", str(tmp_path / "a")]) == 0
    assert {(a, t) for a, t, _ in spy.calls} == {("base", "plain"), ("rnd", "plain")}
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text(encoding="utf-8"))
    assert "template saved with adapter 'rnd'" in metrics["fairness"]

    spy.calls.clear()
    assert main(args + ["--base-template", "chatml", "-o", str(tmp_path / "b")]) == 0
    assert {(a, t) for a, t, _ in spy.calls} == {("base", "chatml"), ("rnd", "plain")}


@pytest.mark.parametrize("batching,fail_on_call", [("padded", 3), ("continuous", 2)])
def test_interrupted_eval_resumes_without_recomputing(tiny_qwen2, random_adapter, libai_data, tmp_path, monkeypatch,
                                                      batching, fail_on_call):
    cus, spe = libai_data
    out = tmp_path / "report"
    args = _args(tiny_qwen2, random_adapter, cus, spe, out, "--no-probe", "--batching", batching)
    spy = GenerateSpy(monkeypatch, fail_on_call=fail_on_call)
    assert main(args) == 130  # interrupted during the third batch of 4 (padded), the second call of 8 (continuous)
    assert set(spy.modes) == {batching}
    pred = out / "predictions.jsonl"
    first = [json.loads(line) for line in pred.read_text(encoding="utf-8").splitlines()]
    assert len(first) == spy.prompts() == 8  # what was answered before the interruption is saved
    assert not (out / "report.md").exists()
    with open(pred, "a", encoding="utf-8") as f:
        f.write('{"model": "rnd", "sig": "x", "id": "y", "pre')  # and the last write was torn

    spy = GenerateSpy(monkeypatch)
    assert main(args) == 0
    assert spy.prompts() == 2 * 8 - 8  # only what was missing
    rows = [json.loads(line) for line in pred.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 16 == len({(r["model"], r["id"]) for r in rows})
    assert rows[:8] == first

    spy = GenerateSpy(monkeypatch)
    assert main(args) == 0 and spy.prompts() == 0  # all done: the report is rebuilt from the file

    # other generation settings in the same folder are refused rather than mixed in
    assert main(args + ["--max-new-tokens", "7"]) == 2
    assert main(args + ["--batching", "paged"]) == 2


def test_score_file_matches_rolegpt_baseline_by_role_and_question(rolebench_dir, tmp_path):
    rb = rolebench_dir
    out = tmp_path / "rolegpt"
    args = ["eval", "--no-base", "--score-file", f"rolegpt={rb / 'general' / 'rolegpt_baseline.jsonl'}",
            "--score-file", f"rolegpt={rb / 'role_specific' / 'rolegpt_baseline.jsonl'}",
            "--data", str(rb / "general" / "test.jsonl"), "--data2", str(rb / "role_specific" / "test.jsonl"),
            "--role", "李白", "--task", "rolebench", "-o", str(out)]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["metrics"]["rolegpt"]
    # every 李白 test question has a RoleGPT answer: 289 general and 50 role-specific ones
    assert m["CUS"]["n"] == m["CUS"]["n_total"] == 289
    assert m["SPE"]["n"] == m["SPE"]["n_total"] == 50
    # recompute CUS independently from the raw files
    tests = [json.loads(x) for x in (rb / "general" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    base = {match_key(r["role"], r["question"]): r["generated"][0].strip() for r in
            map(json.loads, (rb / "general" / "rolegpt_baseline.jsonl").read_text(encoding="utf-8").splitlines())}
    scores = [rouge_l_zh(base[match_key(r["role"], r["question"].strip())], [g.strip() for g in r["generated"]])
              for r in tests if r["role"] == "李白"]
    assert m["CUS"]["rouge_l_chars"] == pytest.approx(sum(scores) / len(scores))
    assert 0.2 < m["CUS"]["rouge_l_chars"] < 0.8  # Chinese text scored as Chinese, not ~0


def test_raw_references_and_html_escaping(tiny_qwen2, random_adapter, tmp_path):
    data = tmp_path / "qa.jsonl"
    def conv(question, *answers):  # our own JSONL with every reference in meta, as rolebench-prepare writes it
        return {"system": "你是李白。", "messages": [{"role": "user", "content": question},
                                                   {"role": "assistant", "content": answers[0]}],
                "meta": {"role": "李白", "question": question, "references": list(answers)}}

    rows = [conv("<b>4*5</b>|等于多少", "二十|<i>矣</i>", "二十也"), conv("你好", "幸会幸会")]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"role": "李白", "question": "<b>4*5</b>|等于多少", "answer": "20"}) + "\n",
                   encoding="utf-8")
    out = tmp_path / "r"
    assert main(["eval", "--model", str(tiny_qwen2), "--adapter", f"rnd={random_adapter}", "--data", str(data),
                 "--task", "rolebench", "--raw-refs", str(raw), "--no-probe",
                 "--max-new-tokens", "4", "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["set_order"] == ["CUS", "RAW"]
    assert metrics["metrics"]["base"]["RAW"]["n"] == 1 and metrics["metrics"]["base"]["CUS"]["n"] == 2
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;4*5&lt;/b&gt;" in html_text and "<b>4*5</b>" not in html_text
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "&lt;b&gt;4*5&lt;/b&gt;\\|等于多少" in md


@pytest.mark.parametrize("args, expected", [
    (["--data", "nope/missing.jsonl", "-o", "{tmp}/o"], "missing.jsonl"),
    (["--data", "{cus}", "--task", "poetry", "-o", "{tmp}/o"], "--task 'poetry'"),
    (["--data", "{cus}", "--adapter", "=no-name", "-o", "{tmp}/o"], "NAME=PATH"),
    (["--data", "{cus}", "--adapter", "x={tmp}/not-an-adapter", "-o", "{tmp}/o"], "not a LoRA adapter folder"),
    (["--data", "{cus}", "--no-base", "-o", "{tmp}/o"], "nothing to evaluate"),
    (["--data", "{cus}", "--limit", "0", "-o", "{tmp}/o"], "--limit"),
])
def test_cli_errors_exit_2_without_traceback(args, expected, libai_data, tiny_qwen2, tmp_path, capsys):
    cus, _ = libai_data
    filled = [a.format(tmp=tmp_path, cus=cus) for a in args]
    assert main(["eval", "--model", str(tiny_qwen2), *filled]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_chart_without_a_cjk_font_still_renders(tmp_path, monkeypatch, capsys):
    """A broken install (the bundled font package gone, no system CJK font): the chart renders, a warning says
    how to fix it. With the font present, tests/test_fonts.py checks the glyphs are real."""
    from tunesmith import fonts
    from tunesmith.eval import report

    result = {"task": "rolebench", "model_order": ["base", "李白"], "set_order": ["CUS"],
              "metrics": {"base": {"CUS": {"n": 1, "rouge_l_chars": 0.2}},
                          "李白": {"CUS": {"n": 1, "rouge_l_chars": 0.4}}}}
    assert report.draw_chart(result, tmp_path / "ok.png") == {"font": "Noto Sans SC"}
    assert "no CJK font" not in capsys.readouterr().err
    monkeypatch.setattr(fonts, "bundled_font_path", lambda: None)
    monkeypatch.setattr(fonts, "find_system_cjk_font", lambda: None)
    with pytest.warns(UserWarning, match="missing from font"):  # the boxes the warning below announces
        assert report.draw_chart(result, tmp_path / "c.png") == {"font": None}
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    err = capsys.readouterr().err
    assert "no CJK font" in err and "pylopdf-fonts-zh-cn" in err and "pip install -r requirements.txt" in err


def test_iecls_on_real_dev_records_reports_ie_and_classification(tiny_qwen2, random_adapter, datasets_dir, tmp_path):
    lines = (datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl").read_text(encoding="utf-8").splitlines()
    ie = [ln for ln in lines if "```json" in json.loads(ln)["target"]][:2]
    cls = [ln for ln in lines if "```json" not in json.loads(ln)["target"]][:2]
    data = tmp_path / "dev_slice.jsonl"
    data.write_text("\n".join(ie + cls) + "\n", encoding="utf-8")
    out = tmp_path / "r"
    assert main(["eval", "--model", str(tiny_qwen2), "--adapter", f"rnd={random_adapter}", "--data", str(data),
                 "--max-new-tokens", "6", "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "iecls" and metrics["set_order"] == ["dev_slice"]  # auto-detected; no probe
    for model in ("base", "rnd"):
        m = metrics["metrics"][model]["dev_slice"]
        assert m["n"] == 4 and m["ie_n"] == 2 and m["cls_n"] == 2
        for key in ("parse_rate", "ie_parse_rate", "ie_f1", "ie_typed_f1", "cls_accuracy", "cls_macro_f1"):
            assert 0.0 <= m[key] <= 1.0, key
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "IE triple F1" in md and "CLS accuracy" in md and "JSON parse rate" in md
