"""Peak memory of a preference step against an SFT step on the same sequences: SFT (8 conversations a step)
vs DPO (4 pairs = 8 sequences), DPO with the reference precomputed, ORPO (4 pairs) and KTO (8 judged answers).

    python bench/bench_preference_memory.py --quick            # 1 repeat, 2 steps, short answers: a smoke run
    python bench/bench_preference_memory.py --append           # 3 repeats of 4 steps, table appended to BENCHMARKS.md

The sequences: RoleBench 李白 general train questions with the persona system prompt; for pair i, chosen = its
reference answer, rejected = another question's answer (no generation needed). Every method sees the same
token sequences in the same order: SFT trains on prompt+chosen and prompt+rejected of the same 4 pairs per step
(batch 8, its defaults: packed, answer-only loss head); DPO and ORPO on the 4 pairs; KTO on the 8 answers, the
chosen ones labelled good and the rejected ones bad. Default model, LoRA r=16 alpha=32 all-linear, no dropout,
device and dtype auto (CPU: fp32; a CUDA GPU: bf16), data in file order, no eval, no checkpoint.

Each run is its own process (`--worker`), the variants interleaved within a repeat. Measured per run:
- peak RSS of the whole process (os.wait4's ru_maxrss: model loading included);
- peak RSS during training (the kernel's high-water mark reset when training starts, read when it ends);
- on CUDA, torch.cuda.max_memory_allocated during training;
- sequences/s over steps 2..N (a pair is 2 sequences).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _env import append_section, cpu_name, prepare_training_bench

LORA = {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["all-linear"]}
PAIRS_PER_STEP = 4
# name -> (method, recipe keys); each reads the file its method needs
VARIANTS = {
    "sft": ("sft", {}),
    "dpo": ("dpo", {}),
    "dpo+precompute_ref": ("dpo", {"preference": {"precompute_ref": True}}),
    "orpo": ("orpo", {}),
    "kto": ("kto", {}),
}


def write_data(work: Path, n_pairs: int) -> dict[str, Path]:
    """The pairs file (dpo, orpo), the same sequences as plain conversations (sft) and as judged answers (kto)."""
    from bench_dpo_step import make_pairs

    from tunesmith.conversation import Conversation, Message

    pairs = make_pairs(n_pairs)

    def answered(conv, answer: str, meta: dict) -> Conversation:
        return Conversation(messages=[*conv.prompt_messages, Message("assistant", answer)], system=conv.system,
                            meta=meta)

    def jsonl(path: Path, convs) -> Path:
        path.write_text("".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in convs), encoding="utf-8")
        return path

    plain, judged = [], []
    for c in pairs:
        chosen, rejected = c.messages[-1].content, c.meta["rejected"]
        plain += [answered(c, chosen, {}), answered(c, rejected, {})]
        judged += [answered(c, chosen, {"label": True}), answered(c, rejected, {"label": False})]
    return {"dpo": jsonl(work / "pairs.jsonl", pairs), "orpo": work / "pairs.jsonl",
            "sft": jsonl(work / "sft.jsonl", plain), "kto": jsonl(work / "kto.jsonl", judged)}


def recipe(variant: str, data: Path, out: Path, args) -> dict:
    method, extra = VARIANTS[variant]
    batch = PAIRS_PER_STEP if method in ("dpo", "orpo") else 2 * PAIRS_PER_STEP
    cfg = {
        "model": "default", "output_dir": str(out), "template": "auto", "dtype": "auto", "device": "auto",
        "method": method, "preference": {"beta": 0.1},
        "data": {"train": str(data), "max_source_len": 256, "max_target_len": args.max_target_len,
                 "shuffle": False, "group_by_length": False},
        "lora": LORA, "batch_size": batch, "lr": 5e-5, "warmup": 0, "scheduler": "constant",
        "max_steps": args.steps, "logging_steps": 10_000, "eval_steps": 10_000, "save_steps": 10_000,
        "seed": 42, "plot": False, "sample_tokens": 0, "threads": args.threads,
        "gradient_checkpointing": args.gradient_checkpointing,
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class MemoryClock:
    """A TrainerCallback: step end times; the RSS high-water mark (and CUDA's peak) reset when training starts
    and read when it ends, so model loading is left out of the training peak."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self
        self.marks: list[float] = []
        self.start_rss_kb = self.train_peak_kb = 0
        self.cuda_peak = None

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                import torch

                try:  # "5": reset the peak RSS (VmHWM) to the current RSS
                    Path("/proc/self/clear_refs").write_text("5")
                except OSError:
                    pass
                clock.start_rss_kb = _rss_kb("VmRSS")
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()

            def on_step_end(self, args, state, control, **kwargs):
                clock.marks.append(time.perf_counter())

            def on_train_end(self, args, state, control, **kwargs):
                import torch

                clock.train_peak_kb = _rss_kb("VmHWM")
                if torch.cuda.is_available():
                    clock.cuda_peak = torch.cuda.max_memory_allocated()

        self.callback = _CB()


def worker(args) -> int:
    """One run in this process: setup, train for --steps, print one JSON line (no adapter saved)."""
    from tunesmith.train.run import as_config, build_trainer, setup_run, train

    prepare_training_bench(args.threads)
    cfg = as_config(json.loads(args.worker), [])
    clock = MemoryClock()
    with open(os.devnull, "w") as quiet:
        setup = setup_run(cfg, None, quiet)
        trainer = build_trainer(setup, [clock.callback], quiet)
        train(setup, trainer)
    seqs = (2 if cfg.method in ("dpo", "orpo") else 1) * cfg.batch_size
    steady = (len(clock.marks) - 1) * seqs / (clock.marks[-1] - clock.marks[0]) if len(clock.marks) > 1 else 0.0
    print(json.dumps({"seq_s": steady, "steps": len(clock.marks), "start_rss_mb": clock.start_rss_kb / 1024,
                      "train_peak_mb": clock.train_peak_kb / 1024, "device": setup.runtime.device,
                      "dtype": setup.runtime.dtype,
                      "cuda_peak_mb": None if clock.cuda_peak is None else clock.cuda_peak / 2**20}))
    return 0


def run_variant(variant: str, data: Path, out: Path, args) -> dict:
    """The variant in a child process; its own peak RSS from os.wait4."""
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--worker",
           json.dumps(recipe(variant, data, out, args))]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: exit {proc.returncode}\n{text[-4000:]}")
    result = json.loads(text.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def spread(xs: list[float], fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def table(results: dict[str, list[dict]]) -> list[str]:
    cuda = any(r["cuda_peak_mb"] is not None for rs in results.values() for r in rs)
    head = "| variant | peak RSS MB | x SFT | RSS at train start MB | training peak RSS MB | x SFT |"
    rule = "|---|---|---|---|---|---|"
    if cuda:
        head += " CUDA max allocated MB | x SFT |"
        rule += "---|---|"
    head += " sequences/s, steps 2..N | pairs/s |"
    rule += "---|---|"
    lines = [head, rule]
    base = results.get("sft")

    def ratio(rs: list[dict], key: str) -> str:
        if not base:
            return "–"
        return f"{statistics.median([r[key] for r in rs]) / statistics.median([b[key] for b in base]):.2f}x"

    for name, rs in results.items():
        row = (f"| {name} | {spread([r['peak_rss_mb'] for r in rs])} | {ratio(rs, 'peak_rss_mb')} | "
               f"{spread([r['start_rss_mb'] for r in rs])} | {spread([r['train_peak_mb'] for r in rs])} | "
               f"{ratio(rs, 'train_peak_mb')} |")
        if cuda:
            row += f" {spread([r['cuda_peak_mb'] for r in rs])} | {ratio(rs, 'cuda_peak_mb')} |"
        seq = [r["seq_s"] for r in rs]
        pairs = spread([s / 2 for s in seq], "{:.2f}") if VARIANTS[name][0] in ("dpo", "orpo") else "–"
        lines.append(row + f" {spread(seq, '{:.2f}')} | {pairs} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per run")
    ap.add_argument("--max-target-len", type=int, default=256, help="answer tokens kept (data.max_target_len)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for every run")
    ap.add_argument("--quick", action="store_true", help="1 repeat of 2 steps, answers cut at 64 tokens")
    ap.add_argument("--append", action="store_true", help="append the result table to BENCHMARKS.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.repeats, args.steps, args.max_target_len = 1, 2, 64
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")

    import peft
    import torch
    import transformers
    import trl

    prepare_training_bench(args.threads)  # converts the default model once, before any run
    load = os.getloadavg()
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-pref-mem-") as tmp:
        work = Path(tmp)
        files = write_data(work, PAIRS_PER_STEP * args.steps)
        for i in range(args.repeats):
            for name in names:
                r = run_variant(name, files[VARIANTS[name][0]], work / f"run{i}-{names.index(name)}", args)
                results[name].append(r)
                cuda = f"  CUDA {r['cuda_peak_mb']:.0f} MB" if r["cuda_peak_mb"] is not None else ""
                print(f"repeat {i + 1}/{args.repeats} {name:22s}: peak RSS {r['peak_rss_mb']:6.0f} MB  training "
                      f"{r['start_rss_mb']:5.0f} -> {r['train_peak_mb']:6.0f} MB{cuda}  {r['seq_s']:.2f} seq/s",
                      flush=True)

    first = next(iter(results.values()))[0]
    lines = [
        f"## Preference tuning: peak memory of SFT vs DPO / ORPO / KTO, same sequences per step "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M UTC})",
        "",
        f"- CPU: {cpu_name()} ({args.threads} torch threads); load average before the run {load[0]:.2f} / "
        f"{load[1]:.2f} / {load[2]:.2f}; shared with another long measurement, so the speeds are upper bounds on "
        "time (lower bounds on sequences/s); the memory numbers do not depend on load",
        f"- device {first['device']}, {first['dtype']}"
        + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""),
        f"- torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
        f"trl {trl.__version__}",
        f"- model: default (SmolLM2-135M-Instruct, vocabulary 49,152), LoRA r=16 alpha=32 all-linear; "
        f"{args.steps} steps of 8 sequences (SFT: 8 conversations, packed; DPO/ORPO: 4 pairs; KTO: 8 judged "
        f"answers), prompts ≤ 256 tokens, answers ≤ {args.max_target_len}; RoleBench 李白 general train "
        f"(chosen: its answer, rejected: another question's); gradient checkpointing "
        f"{'on' if args.gradient_checkpointing else 'off'}; {args.repeats} repeat(s), each run its own process, "
        "variants interleaved; median (min–max)",
        f"- command: `python bench/bench_preference_memory.py {' '.join(sys.argv[1:])}`",
        "",
        *table(results),
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    if args.append:
        print(f"appended to {append_section(text)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
