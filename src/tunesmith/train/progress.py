"""What a training run shows and leaves behind: progress lines, dev loss, a sample answer, loss.png.

    step 40/200 (20.0%) | epoch 0.35 | loss 1.842 (last 10) | lr 1.95e-04 | 512 tok/s | 0:01:10 | ETA 0:04:40
    dev loss 1.7310 (ppl 5.65) at step 40 | best 1.7310 at step 40
    sample> 吾乃李白，今日与君共饮……

A preference run (dpo, orpo, kto) shows its rewards too: the train line their mean over the same window, the
dev line the dev set's reward accuracy (share of pairs whose chosen answer out-scores the rejected one) and
margin (chosen minus rejected reward), and loss.png gets a second panel with them.

    step 40/200 (20.0%) | ... | loss 0.412 (last 10) | reward acc 0.81 | margin 1.35 | ... | ETA 0:04:40
    dev loss 0.4021 | reward accuracy 0.844 | margin 1.520 (chosen -0.41, rejected -1.93) at step 40 | best ...

The loss shown is the mean of the last `logging_steps` optimizer steps (each one a token-weighted mean
over its answer tokens), never a running mean since step 0.  The Trainer is told to log every step,
so `state.log_history` (kept in checkpoints, hence across resumes) holds the whole curve that
`loss.png` is drawn from.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tunesmith.fonts import chart_rc
from tunesmith.fsio import atomic_file
from tunesmith.model import eval_mode


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def train_losses(log_history: list[dict]) -> list[tuple[int, float]]:
    return [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]


def dev_losses(log_history: list[dict]) -> list[tuple[int, float]]:
    seen: dict[int, float] = {}
    for e in log_history:
        if "eval_loss" in e and "step" in e:
            seen[int(e["step"])] = float(e["eval_loss"])
    return sorted(seen.items())


# TRL's reward metrics (DPO/ORPO: accuracies and margins; KTO: chosen/rejected rewards and the KL estimate).
REWARD_METRICS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "kl")
SHORT_NAMES = {"rewards/accuracies": "reward acc", "rewards/margins": "margin", "rewards/chosen": "chosen",
               "rewards/rejected": "rejected", "kl": "kl"}


def metric_series(log_history: list[dict], name: str) -> list[tuple[int, float]]:
    """(step, value) of one logged metric, e.g. "rewards/margins" (train) or "eval_rewards/margins" (dev)."""
    seen: dict[int, float] = {}
    for e in log_history:
        if name in e and "step" in e and isinstance(e[name], (int, float)):
            seen[int(e["step"])] = float(e[name])
    return sorted(seen.items())


def reward_metrics_logged(log_history: list[dict]) -> list[str]:
    """Which of REWARD_METRICS this run logged (none for SFT)."""
    return [m for m in REWARD_METRICS if any(m in e or f"eval_{m}" in e for e in log_history)]


def dev_reward_text(metrics: dict[str, float]) -> str:
    """'reward accuracy 0.844 | margin 1.520 (chosen -0.41, rejected -1.93)' from eval metrics ('' for SFT)."""
    get = {m: metrics.get(f"eval_{m}") for m in REWARD_METRICS}
    parts = []
    if get["rewards/accuracies"] is not None:
        parts.append(f"reward accuracy {get['rewards/accuracies']:.3f}")
    if get["rewards/margins"] is not None:
        parts.append(f"margin {get['rewards/margins']:.3f}")
    if get["rewards/chosen"] is not None and get["rewards/rejected"] is not None:
        both = f"chosen {get['rewards/chosen']:.2f}, rejected {get['rewards/rejected']:.2f}"
        if parts:
            parts[-1] += f" ({both})"
        else:
            parts.append(f"rewards {both}")
    if get["kl"] is not None:
        parts.append(f"kl {get['kl']:.3f}")
    return " | ".join(parts)


def window_mean(values: list[float], n: int) -> float:
    tail = values[-n:]
    return sum(tail) / len(tail) if tail else float("nan")


def plot_losses(log_history: list[dict], path: Path, window: int, title: str = "") -> Path | None:
    """Train loss per step (faint), its moving mean over `window` steps, and dev loss points -> PNG."""
    train = train_losses(log_history)
    dev = dev_losses(log_history)
    if not train and not dev:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rc, _ = chart_rc()  # a model folder in the title may be Chinese
    with plt.rc_context(rc):
        rewards = reward_metrics_logged(log_history)
        if rewards:
            fig, (ax, ax_r) = plt.subplots(1, 2, figsize=(13, 4.5), dpi=100)
            plot_rewards(ax_r, log_history, rewards, window)
        else:
            fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        if train:
            steps = [s for s, _ in train]
            losses = [v for _, v in train]
            ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
            smooth = [window_mean(losses[: i + 1], window) for i in range(len(losses))]
            ax.plot(steps, smooth, color="tab:blue", linewidth=1.8, label=f"train (mean of last {window})")
        if dev:
            ax.plot([s for s, _ in dev], [v for _, v in dev], "o-", color="tab:orange", linewidth=1.8, label="dev")
            best = min(dev, key=lambda x: x[1])
            ax.annotate(f"best {best[1]:.3f}", best, textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("preference loss" if rewards else "loss (answer tokens)")
        if title:
            ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        try:
            with atomic_file(path, "wb") as f:
                fig.savefig(f, format="png")
        finally:
            plt.close(fig)
    return path


def plot_rewards(ax, log_history: list[dict], names: list[str], window: int) -> None:
    """The reward panel of a preference run: each reward metric, train (windowed mean) and dev (points)."""
    colors = dict(zip(REWARD_METRICS, ("tab:green", "tab:purple", "tab:blue", "tab:red", "tab:gray"), strict=True))
    for name in names:
        train = metric_series(log_history, name)
        if train:
            values = [v for _, v in train]
            ax.plot([s for s, _ in train], [window_mean(values[: i + 1], window) for i in range(len(values))],
                    color=colors[name], linewidth=1.5, label=f"train {SHORT_NAMES[name]}")
        dev = metric_series(log_history, f"eval_{name}")
        if dev:
            ax.plot([s for s, _ in dev], [v for _, v in dev], "o--", color=colors[name], linewidth=1,
                    label=f"dev {SHORT_NAMES[name]}")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward (accuracy: share of pairs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


class ProgressCallback(TrainerCallback):
    """Progress lines every `logging_steps`, dev loss and a sample generation at each eval, loss.png."""

    def __init__(self, *, logging_steps: int, out_dir: Path, tokenizer=None, template=None, sample_prompt=None,
                 sample_tokens: int = 0, plot: bool = True, title: str = "", stream=None):
        self.logging_steps = logging_steps
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.template = template
        self.sample_prompt = sample_prompt  # (system, messages) of the first dev conversation
        self.sample_tokens = sample_tokens
        self.plot = plot
        self.title = title
        self.stream = stream or sys.stdout
        self.trainer = None  # bind_trainer: token counts come from the Trainer
        self.start_time = 0.0
        self.start_step = 0
        self.start_tokens = 0
        self.tokens_total = 0  # all processes
        self.samples: list[dict[str, Any]] = []

    # -- helpers ------------------------------------------------------------------------------------
    def _print(self, state, text: str) -> None:
        if state.is_world_process_zero:
            print(text, file=self.stream, flush=True)

    def bind_trainer(self, trainer) -> None:
        """Called by the recipe once the Trainer exists, like any callback with this method."""
        self.trainer = trainer

    def tokens_seen(self) -> int:
        """Input tokens (no padding) trained on so far by this run, summed over all processes."""
        local = getattr(self.trainer, "tokens_seen", 0) if self.trainer is not None else 0
        try:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                t = torch.tensor([local], dtype=torch.float64, device=self.trainer.args.device)
                dist.all_reduce(t)
                return int(t.item())
        except (RuntimeError, ValueError):
            pass
        return local

    # -- events -------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time = time.perf_counter()
        self.start_step = state.global_step
        self.start_tokens = 0
        what = f"resuming at step {state.global_step}" if state.global_step else "training"
        self._print(state, f"{what}: {state.max_steps} steps, {args.world_size} process(es), "
                           f"batch {args.per_device_train_batch_size} x accum {args.gradient_accumulation_steps}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        self.tokens_total = self.tokens_seen()
        step = state.global_step
        if step % self.logging_steps and step != state.max_steps:
            return
        losses = [v for _, v in train_losses(state.log_history)]
        elapsed = time.perf_counter() - self.start_time
        done = step - self.start_step
        eta = elapsed / done * (state.max_steps - step) if done > 0 else float("nan")
        tok_s = self.tokens_total / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * step / max(1, state.max_steps)
        lr = logs.get("learning_rate")
        parts = [
            f"step {step}/{state.max_steps} ({pct:.1f}%)",
            f"epoch {state.epoch:.2f}" if state.epoch is not None else "",
            f"loss {window_mean(losses, self.logging_steps):.4f} (last {min(self.logging_steps, len(losses))})",
            *self.train_reward_parts(state.log_history, logs),
            f"lr {lr:.2e}" if isinstance(lr, (int, float)) else "",
            f"{tok_s:,.0f} tok/s",
            format_duration(elapsed),
            f"ETA {format_duration(eta)}",
        ]
        self._print(state, " | ".join(p for p in parts if p))

    def train_reward_parts(self, log_history: list[dict], logs: dict) -> list[str]:
        """'reward acc 0.81', 'margin 1.35' (means over the logging window) when the run logs rewards."""
        parts = []
        for name in ("rewards/accuracies", "rewards/margins", "kl"):
            if name in logs:
                values = [v for _, v in metric_series(log_history, name)]
                parts.append(f"{SHORT_NAMES[name]} {window_mean(values, self.logging_steps):.2f}")
        return parts

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        if "eval_loss" not in metrics:
            return
        dev = dev_losses(state.log_history)
        best = min(dev, key=lambda x: x[1]) if dev else (state.global_step, metrics["eval_loss"])
        rewards = dev_reward_text(metrics)
        head = f"dev loss {metrics['eval_loss']:.4f}" + (
            f" | {rewards}" if rewards else f" (ppl {metrics.get('eval_ppl', float('nan')):.2f})")
        self._print(state, f"{head} at step {state.global_step} | best {best[1]:.4f} at step {best[0]}")
        if state.is_world_process_zero:
            model = kwargs.get("model")
            if self.sample_tokens > 0 and self.sample_prompt is not None and model is not None:
                text = self.generate_sample(model)
                self.samples.append({"step": state.global_step, "text": text})
                self._print(state, f"sample> {text}")
            if self.plot:
                plot_losses(state.log_history, self.out_dir / "loss.png", self.logging_steps, self.title)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.plot:
            plot_losses(state.log_history, self.out_dir / "loss.png", self.logging_steps, self.title)

    # -- sample generation --------------------------------------------------------------------------
    def generate_sample(self, model) -> str:
        """Greedy answer to the first dev prompt, built with the same template as training."""
        import torch

        from tunesmith.template import encode_prompt, stop_token_ids

        system, messages = self.sample_prompt
        ids = encode_prompt(self.tokenizer, self.template, system, messages)
        device = next(model.parameters()).device
        with eval_mode(model):
            out = model.generate(
                input_ids=torch.tensor([ids], device=device),
                attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                max_new_tokens=self.sample_tokens, do_sample=False,
                eos_token_id=stop_token_ids(self.tokenizer, self.template, getattr(model, "generation_config", None)),
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[0, len(ids):].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        # The token limit can cut a character's UTF-8 bytes in two: drop the half character at the end.
        return text.rstrip("\ufffd").strip().replace("\n", " ⏎ ")
