"""Training speed: tunesmith's trainer (packed batches, head on answer positions) vs a stock
transformers Trainer + peft run that pads every batch to its longest sample.

    python bench/bench_train_speed.py                       # 3 repeats each, prints the table
    python bench/bench_train_speed.py --repeats 3 --append  # ... and appends it to BENCHMARKS.md

Both sides train the same LoRA (rank, alpha, all-linear) on the same model ("default" =
SmolLM2-135M-Instruct), in the same dtype, for the same steps, on the same conversations in the same
order (RoleBench 李白 answers: short samples of very different lengths), with the same labels (loss on
answers only).  Runs alternate (ours, reference, ours, ...) so that load from other processes on a
shared machine hits both alike.

Reported per run: real (non-padding) training tokens per second, measured from the end of step 1 to
the end of the last step (so model loading, warm-up and saving are not counted), and the mean loss of
the last steps.  Also the fraction of the machine's matmul peak, in bf16 and in the training dtype (fp32
where bf16 is slower, as dtype=auto decides), each measured with a large torch.matmul, where the work
is counted as 4 x parameters x tokens (forward 2PT, backward through the frozen weights 2PT; LoRA's own
matmuls and attention are left out, so the fraction is a lower bound).
"""

from __future__ import annotations

import os

# Both sides run in this process; passive OpenMP waiting keeps a busy shared machine from stalling either.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _env import append_section, cpu_name, prepare_training_bench

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "datasets" / "rolebench-zh" / "general" / "train.jsonl"


def matmul_peak_gflops(dtype_name: str, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` GFLOP/s of an n x n matmul in the training dtype (the machine's practical peak)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


class StepClock:
    """TrainerCallback recording (time, tokens so far, loss) at the end of every step."""

    def __init__(self, tokens_of):
        from transformers import TrainerCallback

        clock = self
        self.tokens_of = tokens_of
        self.marks: list[tuple[float, int]] = []
        self.losses: list[float] = []

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.marks.append((time.perf_counter(), clock.tokens_of()))

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    clock.losses.append(float(logs["loss"]))

        self.callback = _CB()

    def tokens_per_second(self) -> float:
        (t0, k0), (t1, k1) = self.marks[0], self.marks[-1]
        return (k1 - k0) / (t1 - t0)


def recipe(args, out: Path) -> dict:
    return {
        "model": "default", "output_dir": str(out), "template": "auto", "dtype": args.dtype, "device": "cpu",
        "data": {"train": {"path": str(DATA), "format": "rolebench", "roles": "李白"}, "max_samples": args.samples,
                 "max_source_len": 256, "max_target_len": 256, "packing": True},
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["all-linear"]},
        "batch_size": args.batch_size, "lr": 1e-3, "warmup": 0, "scheduler": "constant", "max_steps": args.steps,
        "logging_steps": args.steps, "save_steps": 10_000, "seed": 42, "plot": False, "sample_tokens": 0,
        "threads": args.threads,  # the same thread count as the reference (never the idle-core guess)
    }


def run_ours(args, work: Path, i: int) -> dict:
    import os

    from tunesmith.train.run import train_from_config

    trainer = {}
    clock = StepClock(lambda: trainer["t"].tokens_seen)
    clock.callback.bind_trainer = lambda t: trainer.update(t=t)
    with open(os.devnull, "w") as quiet:
        train_from_config(recipe(args, work / f"ours{i}"), callbacks=[clock.callback], stream=quiet)
    return {"tok_s": clock.tokens_per_second(), "loss": statistics.mean(clock.losses[-args.loss_window:]),
            "tokens": clock.marks[-1][1] - clock.marks[0][1]}


def run_reference(args, work: Path, i: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    from tunesmith.model import load_tokenizer, resolve_model_path
    from tunesmith.template import resolve_template
    from tunesmith.train.config import build_config
    from tunesmith.train.dataset import ListDataset, encode_all
    from tunesmith.train.training_data import load_conversations

    cfg = build_config(recipe(args, work / f"ref{i}"))
    path = resolve_model_path("default")
    tok = load_tokenizer(path)
    convs, _ = load_conversations(cfg)  # the same conversations in the same order as ours
    samples, _ = encode_all(convs, tok, resolve_template("auto", tok), max_source_len=256, max_target_len=256)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    set_seed(42)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    seen = {"tokens": 0}

    class CountingTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen["tokens"] += int(inputs["attention_mask"].sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    clock = StepClock(lambda: seen["tokens"])
    targs = TrainingArguments(
        output_dir=str(work / f"ref{i}"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=1e-3, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, remove_unused_columns=False, bf16=args.dtype == "bf16", use_cpu=True,
        seed=42, dataloader_num_workers=0,
    )
    collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
    trainer = CountingTrainer(model=model, args=targs, train_dataset=ListDataset(samples), data_collator=collator,
                              callbacks=[clock.callback])
    trainer.train()
    return {"tok_s": clock.tokens_per_second(), "loss": statistics.mean(clock.losses[-args.loss_window:]),
            "tokens": clock.marks[-1][1] - clock.marks[0][1]}


def summarize(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--samples", type=int, default=400, help="conversations drawn from (after the seeded shuffle)")
    ap.add_argument("--dtype", default="fp32", choices=["bf16", "fp32"],
                    help="training dtype of both sides (fp32: what dtype=auto picks on CPUs without fast bf16)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--loss-window", type=int, default=3, help="final loss = mean of the last N steps")
    ap.add_argument("--append", action="store_true", help="append the result table to BENCHMARKS.md")
    args = ap.parse_args()

    import peft
    import torch
    import transformers

    prepare_training_bench(args.threads)
    peak = matmul_peak_gflops(args.dtype)
    peak_bf16 = peak if args.dtype == "bf16" else matmul_peak_gflops("bf16")
    n_params = None
    ours, ref = [], []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        for i in range(args.repeats):
            for name, fn, acc in (("ours", run_ours, ours), ("reference", run_reference, ref)):
                r = fn(args, work, i)
                acc.append(r)
                print(f"repeat {i + 1}/{args.repeats} {name:9s}: {r['tok_s']:8.1f} tok/s  loss {r['loss']:.4f}  "
                      f"({r['tokens']:,} tokens)", flush=True)
        from transformers import AutoConfig, AutoModelForCausalLM

        from tunesmith.model import default_model_dir

        cfg = AutoConfig.from_pretrained(default_model_dir())
        with torch.device("meta"):
            n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())

    def row(name: str, rs: list[dict]) -> str:
        med, lo, hi = summarize([r["tok_s"] for r in rs])
        loss = statistics.median([r["loss"] for r in rs])
        flops = 4 * n_params * med
        runs = ", ".join(f"{r['tok_s']:.1f}" for r in rs)
        return (f"| {name} | {med:.1f} | {lo:.1f} - {hi:.1f} | {runs} | {loss:.4f} | "
                f"{100 * flops / (peak * 1e9):.1f}% | {100 * flops / (peak_bf16 * 1e9):.1f}% |")

    speedups = [o["tok_s"] / r["tok_s"] for o, r in zip(ours, ref)]
    loss_gap = statistics.median([abs(o["loss"] - r["loss"]) / r["loss"] for o, r in zip(ours, ref)])
    cmd = "python bench/bench_train_speed.py " + " ".join(sys.argv[1:])
    lines = [
        f"## Training speed: packed tunesmith trainer vs pad-to-longest Trainer + peft ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"- CPU: {cpu_name()} ({torch.get_num_threads()} torch threads); shared with other jobs, so compare ratios",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}",
        f"- model: default (SmolLM2-135M-Instruct, {n_params / 1e6:.1f}M parameters), LoRA r=16 alpha=32 all-linear, "
        f"{args.dtype}, batch {args.batch_size}, {args.steps} steps (tokens/s over steps 2..{args.steps}), "
        f"data: RoleBench 李白 general train (answers only learned)",
        f"- matmul peak measured on this machine (2048x2048 torch.matmul, best of 5): {args.dtype} {peak:.1f} GFLOP/s"
        + ("" if args.dtype == "bf16" else f", bf16 {peak_bf16:.1f} GFLOP/s")
        + f"; peak fraction = 4 x {n_params / 1e6:.1f}M params x tokens/s / peak (a lower bound: LoRA and attention "
        "matmuls are not counted)",
        f"- command: `{cmd}`",
        "",
        "| trainer | real tokens/s (median) | min - max | runs | final loss (median, last "
        f"{args.loss_window} steps) | of {args.dtype} matmul peak | of bf16 matmul peak |",
        "|---|---|---|---|---|---|---|",
        row("tunesmith (packed, head on answers)", ours),
        row("reference (pad to longest)", ref),
        "",
        f"Speed-up per repeat (ours / reference): {', '.join(f'{s:.2f}x' for s in speedups)}; "
        f"median {statistics.median(speedups):.2f}x. Median relative final-loss gap: {100 * loss_gap:.2f}%.",
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if args.append:
        print(f"appended to {append_section(text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
