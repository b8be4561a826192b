"""Which of a recipe's settings cost training time: the recipe as shipped against itself with one setting changed.

    python bench/bench_recipe_settings.py                                   # configs/ie_cls.yaml, 3 repeats
    python bench/bench_recipe_settings.py --recipe configs/rolebench_libai.yaml --steps 8 --repeats 3 --append

Each variant is `tunesmith train RECIPE` with overrides (the same data, seed and batches: none of the settings
changes which records a step holds), run for --steps steps in a process of its own, variants interleaved
(A, B, C, A, B, C, ...) so that load from other processes on a shared machine hits all alike. `compile=false`
for every variant: `compile: auto` would compile some and not others. Reported: the median seconds of a step
after the first (the first pays warm-up), the median over repeats and their spread, and each variant's time as a
ratio of the recipe's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _env import append_section, cpu_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VARIANTS = {
    "recipe": [],
    "lora.dropout=0": ["lora.dropout=0.0"],
    "lora.rank=8": ["lora.rank=8", "lora.alpha=16"],
    "loss_weighting=token": ["loss_weighting=token"],
    # the speed bench's LoRA and loss (bench_vs_llamafactory.py): r8 / alpha 16, no dropout, loss per token
    "all three": ["lora.dropout=0.0", "lora.rank=8", "lora.alpha=16", "loss_weighting=token"],
}

CHILD = r"""
import json, sys, time
from transformers import TrainerCallback
from tunesmith.train import train_from_config

class StepTimes(TrainerCallback):
    def __init__(self):
        self.ends = []
    def on_step_begin(self, args, state, control, **kw):
        if not self.ends:
            self.ends.append(time.perf_counter())
    def on_step_end(self, args, state, control, **kw):
        self.ends.append(time.perf_counter())

timer = StepTimes()
train_from_config(sys.argv[1], json.loads(sys.argv[2]), callbacks=[timer])
steps = [b - a for a, b in zip(timer.ends, timer.ends[1:])]
print("STEP_TIMES " + json.dumps(steps))
"""


def run_variant(recipe: str, overrides: list[str], steps: int, threads: int, out: Path) -> list[float]:
    """Seconds of each training step of one run (dev evals and saving fall outside the steps)."""
    args = [f"output_dir={out}", f"max_steps={steps}", f"eval_steps={steps}", "compile=false", f"threads={threads}",
            "sample_tokens=0", "overwrite=true", *overrides]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-c", CHILD, recipe, json.dumps(args)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("STEP_TIMES ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"variant {overrides} failed:\n{done.stderr[-3000:]}")
    return json.loads(line.split(" ", 1)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="configs/ie_cls.yaml")
    ap.add_argument("--steps", type=int, default=8, help="training steps per run (the first is not timed)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="names from: " + ", ".join(DEFAULT_VARIANTS))
    ap.add_argument("--append", action="store_true", help="append the table to BENCHMARKS.md")
    a = ap.parse_args()
    names = a.variants.split(",")
    load_before = os.getloadavg()
    per_step: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            for n in names:
                times = run_variant(a.recipe, DEFAULT_VARIANTS[n], a.steps, a.threads, Path(tmp) / n)
                per_step[n].append(statistics.median(times[1:]))
                print(f"repeat {r + 1}: {n}: {per_step[n][-1]:.2f} s/step", flush=True)
    base = statistics.median(per_step[names[0]])
    import torch
    import transformers

    lines = ["", f"## Recipe settings and training time: {a.recipe} ({time.strftime('%Y-%m-%d')})", "",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- CPU: {cpu_name()}, shared machine; load average before the run "
             f"{load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}",
             f"- versions: torch {torch.__version__}, transformers {transformers.__version__}",
             f"- command: `python bench/bench_recipe_settings.py --recipe {a.recipe} --steps {a.steps} "
             f"--repeats {a.repeats} --threads {a.threads} --variants {a.variants}`",
             f"- {a.steps} steps a run, compile off, {a.threads} thread(s); a run's time is the median of its steps "
             "after the first", "",
             "| variant | s/step, median of runs | spread (min-max) | time vs the recipe |", "|---|---|---|---|"]
    for n in names:
        xs = per_step[n]
        lines.append(f"| {n} | {statistics.median(xs):.2f} | {min(xs):.2f}-{max(xs):.2f} | "
                     f"{statistics.median(xs) / base:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if a.append:
        append_section(text)


if __name__ == "__main__":
    main()
