"""`torchrun --nproc_per_node 2` (gloo, CPU) runs the same training code as DDP; both ranks end with the same
weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tunesmith.conversation import Conversation


def _write_toy(path: Path, n: int) -> Path:
    convs = [Conversation.single_turn(f"第{i}问" + "天地人" * (i % 7), f"吾乃李白，答第{i}问。", system="你是李白")
             for i in range(n)]
    path.write_text("".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in convs), encoding="utf-8")
    return path

SCRIPT = """
import sys, torch
from transformers import TrainerCallback
from tunesmith.train import train_from_config

cfg, out = sys.argv[1], sys.argv[2]

class DumpWeights(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        weights = {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}
        torch.save({"weights": weights, "rank": args.process_index, "world": args.world_size}, \
f"{out}/rank{args.process_index}.pt")

train_from_config(cfg, [f"output_dir={out}"], callbacks=[DumpWeights()])
"""


def test_torchrun_two_processes_hold_identical_weights(tiny_qwen2, tmp_path):
    train = _write_toy(tmp_path / "train.jsonl", 32)
    dev = _write_toy(tmp_path / "dev.jsonl", 4)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {tiny_qwen2}\ndata:\n  train: {train}\n  dev: {dev}\ndtype: fp32\ndevice: cpu\n"
                      "batch_size: 2\nmax_steps: 4\neval_steps: 2\nlr: 5e-3\nwarmup: 0\nsample_tokens: 4\n"
                      "lora:\n  dropout: 0.1\n", encoding="utf-8")
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--standalone", str(script), str(recipe), str(out)],
                          capture_output=True, text=True, timeout=420, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert r0["weights"].keys() == r1["weights"].keys() and len(r0["weights"]) == 28
    for k, w in r0["weights"].items():
        assert torch.equal(w, r1["weights"][k]), k
    assert any(w.abs().sum() > 0 for k, w in r0["weights"].items() if "lora_B" in k)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["processes"] == 2 and summary["steps"] == 4
    # 2 processes x batch 2 x 4 steps: each step learned from 4 different conversations
    assert summary["epochs"] == 0.5
    assert proc.stdout.count("saved adapter to") == 1  # only the main process writes the adapter
