"""The README's main job, end to end on a tiny model: data -> LoRA training -> eval vs base -> report."""

import json

from tunesmith.cli import main


def test_demo_runs_the_whole_road_on_a_tiny_model(tiny_qwen2, tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--model", str(tiny_qwen2), "--steps", "2", "--eval-limit", "2",
               "--max-new-tokens", "4", "--device", "cpu", "--dtype", "fp32"])
    assert rc == 0
    captured = capsys.readouterr()
    printed = captured.out
    # what a person watches while it runs: a progress bar per answering call and a line with the ETA
    assert "Answering" in captured.err or "Solving" in captured.err
    assert "answered," in captured.err and ", ETA " in captured.err
    assert "tuned minus base" in printed and "Δ 李白" in printed
    assert "CUS ROUGE-L (speaking style, by character, 2 held-out questions): base " in printed
    assert "general-ability probe: base " in printed
    assert "in character on identity questions (你是谁？ ...): base " in printed
    assert "CUS answers the role classifier attributes to the role: base " in printed
    assert "persona drift, long conversations (late - early): base " in printed
    assert "role-breaking probes answered in character: base " in printed
    adapter = out / "train" / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0 and (adapter / "template.json").is_file()
    metrics = json.loads((out / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["model_order"]) >= {"base", "李白", "RoleGPT"}
    # the role-play sets, cut to size for the demo: 2 conversations, 2 probes of each category
    assert metrics["long_conversations"]["conversations"] == 2 and metrics["role_breaking"]["probes"] == 8
    assert "drift" in metrics["metrics"]["李白"] and "drop_role" in metrics["metrics"]["李白"]["role_breaking"]
    # the demo never trains on test questions
    with (out / "data" / "train.jsonl").open(encoding="utf-8") as f:
        train_q = {json.loads(line)["meta"]["question"] for line in f}
    with (out / "data" / "test_general.jsonl").open(encoding="utf-8") as f:
        test_q = {json.loads(line)["meta"]["question"] for line in f}
    assert len(test_q) == 289 and not (train_q & test_q)
    for name in ("report.md", "report.html", "predictions.jsonl"):
        assert (out / "report" / name).is_file()


def test_demo_rejects_bad_options(capsys):
    assert main(["demo", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
