"""What a finished run reports: `TrainResult`, summary.json (losses, steps, tokens, time, data) and log_history.json.

    from tunesmith.train.summary import finished_run
    result = finished_run(Path("runs/libai"), step=300)     # the result a run that ended at step 300 left, or None
    result.summary["best_dev_loss"], result.adapter_dir

`build_summary` turns the Trainer's state after training into the summary.json mapping; `finished_run`
reads it back, which is how resuming a finished run returns its result without training.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.fsio import atomic_write
from tunesmith.train.progress import dev_losses, metric_series, reward_metrics_logged, train_losses, window_mean

if TYPE_CHECKING:
    from tunesmith.train.config import TrainConfig
    from tunesmith.train.run import RunSetup, Trained


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    summary_path: Path
    summary: dict[str, Any] = field(default_factory=dict)


def finished_run(out: Path, step: int) -> TrainResult | None:
    """The result a run that ended at `step` left (summary.json of that very step + the adapter), or None
    when it was stopped between its last checkpoint and writing them."""
    summary_path, adapter_dir = out / "summary.json", out / "adapter"
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("steps") != step \
            or not (adapter_dir / "adapter_model.safetensors").is_file():
        return None
    return TrainResult(output_dir=out, adapter_dir=adapter_dir, summary_path=summary_path, summary=summary)


def build_summary(cfg: TrainConfig, *, setup: RunSetup, trained: Trained, adapter_dir: Path,
                  adapter_check: dict[str, Any], threads: int | None, peak_memory_mb: float | None) -> dict[str, Any]:
    """The summary.json mapping of a run. `cfg`: the TrainConfig; `setup`: the recipe's RunSetup (runtime,
    model, data); `trained`: its Trained (the Trainer after training, tokens, seconds)."""
    state = trained.trainer.state
    losses = [v for _, v in train_losses(state.log_history)]
    dev = dev_losses(state.log_history)
    best = min(dev, key=lambda x: x[1]) if dev else None
    keep_best = bool(trained.trainer.args.load_best_model_at_end)
    rt, tuned, data = setup.runtime, setup.model, setup.data
    return {
        "model": str(cfg.model),
        "model_path": tuned.model_path,
        "adapter": str(adapter_dir),
        "adapter_is": ("best" if keep_best and state.best_model_checkpoint else "last"),
        "best_checkpoint": state.best_model_checkpoint,
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "epochs": round(float(state.epoch or 0), 4),
        "first_train_loss": losses[0] if losses else None,
        "final_train_loss": window_mean(losses, cfg.logging_steps) if losses else None,
        "final_train_loss_window": min(cfg.logging_steps, len(losses)),
        "initial_dev_loss": dev[0][1] if dev else None,
        "final_dev_loss": dev[-1][1] if dev else None,
        "best_dev_loss": best[1] if best else None,
        "best_dev_step": best[0] if best else None,
        "dev_losses": [{"step": s, "loss": v} for s, v in dev],
        "train_tokens": trained.tokens,
        "train_seconds": round(trained.seconds, 2),
        "tokens_per_second": round(trained.tokens / trained.seconds, 2) if trained.seconds > 0 else None,
        "total_seconds": round(time.perf_counter() - rt.started, 2),
        "peak_memory_mb": peak_memory_mb,
        "resumed_from": str(setup.resume_from) if setup.resume_from else None,
        "processes": trained.trainer.args.world_size,
        "dtype": rt.dtype,
        "device": rt.device,
        "threads": threads,
        "packing": tuned.packing,
        "shared_prefixes": tuned.share_prefixes,
        "loss_weighting": cfg.loss_weighting,
        "lora": {"rank": cfg.lora.rank, "alpha": cfg.lora.alpha, "target_modules": cfg.lora.target_modules,
                 "trainable_parameters": tuned.trainable},
        "data": {"train": data.train_stats.to_dict(), "dev": data.dev_stats.to_dict() if data.dev_stats else None},
        "adapter_check": adapter_check,
        "samples": trained.progress.samples,
        "train_runtime_reported": getattr(trained.output, "metrics", {}).get("train_runtime"),
        "method": cfg.method,
        "init_adapter": cfg.init_adapter,
        "preference": preference_summary(cfg, state.log_history, best[0] if best else None),
    }


def preference_summary(cfg: TrainConfig, log_history: list[dict], best_step: int | None) -> dict[str, Any] | None:
    """A preference run's settings and its dev rewards: every eval, and the values at the start, at the best
    checkpoint (the saved adapter with keep_best) and at the end. None for SFT."""
    if cfg.method == "sft":
        return None
    p = cfg.preference
    out: dict[str, Any] = {"beta": p.beta}
    if cfg.method == "dpo":
        out.update(loss_type=p.loss_type, sft_weight=p.sft_weight, precompute_ref=p.precompute_ref)
    if cfg.method == "kto":
        out.update(desirable_weight=p.desirable_weight, undesirable_weight=p.undesirable_weight)
    out["reference"] = None if cfg.method == "orpo" else ("init_adapter (frozen copy)" if cfg.init_adapter
                                                            else "base model")
    for name in reward_metrics_logged(log_history):
        key = "dev_" + name.replace("rewards/", "reward_")
        dev = metric_series(log_history, f"eval_{name}")
        if not dev:
            continue
        at = dict(dev)
        out[key] = {"initial": dev[0][1], "best_checkpoint": at.get(best_step), "final": dev[-1][1],
                    "per_eval": [{"step": s, "value": v} for s, v in dev]}
    return out


def write_summary(out: Path, summary: dict[str, Any], log_history: list[dict]) -> Path:
    """summary.json and log_history.json in `out`; returns the summary's path."""
    summary_path = out / "summary.json"
    atomic_write(summary_path, json.dumps(summary, ensure_ascii=False, indent=2))
    atomic_write(out / "log_history.json", json.dumps(log_history, ensure_ascii=False, indent=1))
    return summary_path


def saved_line(adapter_dir: Path, summary_path: Path, summary: dict[str, Any]) -> str:
    """The line a run ends with: where the adapter went, its check, and the dev loss it reached."""
    stats = summary["adapter_check"]
    best = (summary["best_dev_step"], summary["best_dev_loss"]) if summary["best_dev_loss"] is not None else None
    return (f"saved adapter to {adapter_dir} ({stats['tensors']} tensors, |lora_B| {stats['lora_B_norm']:.3g}, "
            f"reload max |logit diff| {stats['reload_max_logit_diff']:.2g}); summary in {summary_path}"
            + (f"; dev loss {summary['initial_dev_loss']:.4f} -> best {best[1]:.4f} at step {best[0]}" if best else ""))
