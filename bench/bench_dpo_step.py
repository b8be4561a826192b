"""DPO training speed: `tunesmith train method=dpo` (our chat-template encoding, TRL's DPOTrainer underneath)
vs TRL's DPOTrainer with its defaults on the same pairs, model and LoRA; plus our run with the reference
log-probs precomputed (`preference.precompute_ref`).

    python bench/bench_dpo_step.py                       # 3 repeats each, prints the table
    python bench/bench_dpo_step.py --repeats 3 --append  # ... and appends it to BENCHMARKS.md

The pairs: RoleBench 李白 general train questions with the persona system prompt; chosen = the reference
answer, rejected = the answer of another question (real answer lengths, which is what the cost depends on).
Every variant trains one epoch over `steps x batch` pairs, the same pairs in the same order, LoRA r=16
alpha=32 all-linear, no dropout, constant lr.  Variants alternate within each repeat, so load from other
processes hits all of them alike.

Reported per run: pairs/s over steps 2..N (the steady step cost) and the wall time from loading the model to
the end of training (saving and the adapter check are left out), which includes what a variant does before
its first step (tokenizing; with precompute_ref, scoring every pair with the reference once), so the
precomputation is paid for in the number it is judged by.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _env import DATASETS, append_section, cpu_name, prepare_training_bench

LORA = {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["all-linear"]}


def make_pairs(n: int, seed: int = 0):
    """n pairs (Conversations) of 李白's RoleBench general train: chosen = its answer, rejected = another's."""
    from tunesmith.data import load
    from tunesmith.preference import make_pair

    convs = load(DATASETS / "rolebench-zh" / "general" / "train.jsonl", "rolebench", roles=["李白"], answers="first")
    rng = random.Random(seed)
    rng.shuffle(convs)
    convs = convs[:n]
    others = [c.messages[-1].content for c in convs]
    rng.shuffle(others)
    return [make_pair(c.prompt_messages, c.messages[-1].content, other, system=c.system)
            for c, other in zip(convs, others)]


class StepClock:
    """A TrainerCallback recording the time at the end of every step."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self
        self.marks: list[float] = []
        self.ended = 0.0

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.marks.append(time.perf_counter())

            def on_train_end(self, args, state, control, **kwargs):
                clock.ended = time.perf_counter()

        self.callback = _CB()

    def pairs_per_second(self, batch: int) -> float:
        return (len(self.marks) - 1) * batch / (self.marks[-1] - self.marks[0])


def run_ours(args, pairs_file: Path, out: Path, precompute: bool) -> dict:
    from tunesmith.train.run import train_from_config

    recipe = {
        "model": "default", "output_dir": str(out), "template": "auto", "dtype": args.dtype, "device": "cpu",
        "method": "dpo", "preference": {"beta": 0.1, "precompute_ref": precompute},
        "data": {"train": str(pairs_file), "max_source_len": 256, "max_target_len": 256, "group_by_length": False},
        "lora": LORA, "batch_size": args.batch_size, "lr": 5e-5, "warmup": 0, "scheduler": "constant",
        "epochs": 1, "logging_steps": args.steps, "eval_steps": 10_000, "save_steps": 10_000, "seed": 42,
        "plot": False, "sample_tokens": 0, "threads": args.threads,
    }
    clock = StepClock()
    t = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        train_from_config(recipe, callbacks=[clock.callback], stream=quiet)
    return {"pairs_s": clock.pairs_per_second(args.batch_size), "wall": clock.ended - t, "steps": len(clock.marks)}


def run_trl_defaults(args, pairs, out: Path) -> dict:
    """TRL's documented path: a conversational {prompt, chosen, rejected} dataset and peft_config."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, set_seed
    from trl import DPOConfig, DPOTrainer

    from datasets import Dataset
    from tunesmith.model import load_tokenizer, resolve_model_path

    def as_messages(conv):
        head = [{"role": "system", "content": conv.system}] if conv.system else []
        return head + [{"role": m.role, "content": m.content} for m in conv.prompt_messages]

    rows = [{"prompt": as_messages(c), "chosen": [{"role": "assistant", "content": c.messages[-1].content}],
             "rejected": [{"role": "assistant", "content": c.meta["rejected"]}]} for c in pairs]
    t = time.perf_counter()
    path = resolve_model_path("default")
    tok = load_tokenizer(path)
    set_seed(42)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    config = DPOConfig(output_dir=str(out), per_device_train_batch_size=args.batch_size, num_train_epochs=1,
                       learning_rate=5e-5, lr_scheduler_type="constant", warmup_steps=0, logging_steps=args.steps,
                       save_strategy="no", report_to="none", disable_tqdm=True, bf16=args.dtype == "bf16",
                       use_cpu=True, seed=42, dataloader_num_workers=0)
    lora = LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    clock = StepClock()
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora, callbacks=[clock.callback])
    trainer.train()
    return {"pairs_s": clock.pairs_per_second(args.batch_size), "wall": clock.ended - t, "steps": len(clock.marks)}


def summarize(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} | {min(xs):.2f} - {max(xs):.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps (one epoch of steps x batch pairs)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--dtype", default="fp32", choices=["bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=2, help="torch threads for every variant")
    ap.add_argument("--append", action="store_true", help="append the result table to BENCHMARKS.md")
    args = ap.parse_args()

    import peft
    import torch
    import transformers
    import trl

    prepare_training_bench(args.threads)
    pairs = make_pairs(args.steps * args.batch_size)
    names = ("TRL DPOTrainer, defaults", "tunesmith method=dpo", "tunesmith method=dpo, precompute_ref")
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        work = Path(tmp)
        pairs_file = work / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in pairs),
                              encoding="utf-8")
        for i in range(args.repeats):
            for name in names:
                if name == names[0]:
                    r = run_trl_defaults(args, pairs, work / f"trl{i}")
                else:
                    r = run_ours(args, pairs_file, work / f"ours{i}-{names.index(name)}", precompute=name == names[2])
                results[name].append(r)
                print(f"repeat {i + 1}/{args.repeats} {name:38s}: {r['pairs_s']:6.2f} pairs/s  "
                      f"wall {r['wall']:6.1f} s  ({r['steps']} steps)", flush=True)

    ref = results[names[0]]
    lines = [
        f"## DPO step: tunesmith method=dpo vs TRL DPOTrainer defaults ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"- CPU: {cpu_name()} ({args.threads} torch threads); shared with other jobs, so compare ratios",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
        f"trl {trl.__version__}",
        f"- model: default (SmolLM2-135M-Instruct), LoRA r=16 alpha=32 all-linear, {args.dtype}, batch "
        f"{args.batch_size} pairs, one epoch of {args.steps} steps; pairs from RoleBench 李白 general train "
        "(chosen: its answer, rejected: another question's answer)",
        f"- command: `python bench/bench_dpo_step.py {' '.join(sys.argv[1:])}`",
        "",
        "| variant | pairs/s, steps 2..N (median) | min - max | load + train wall s (median) | min - max | "
        "wall ratio to TRL defaults (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        rs = results[name]
        ratios = [r["wall"] / t["wall"] for r, t in zip(rs, ref)]
        lines.append(f"| {name} | {summarize([r['pairs_s'] for r in rs])} | {summarize([r['wall'] for r in rs])} | "
                     f"{statistics.median(ratios):.2f}x |")
    lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    if args.append:
        print(f"appended to {append_section(text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
