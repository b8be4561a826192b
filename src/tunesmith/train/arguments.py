"""A TrainConfig -> the keyword arguments of transformers' `TrainingArguments`, and the rules between the keys.

    from tunesmith.train.arguments import training_arguments
    kwargs = training_arguments(cfg, checkpoints_dir=Path("runs/x/checkpoints"), has_dev=True, resuming=False,
                                dtype="fp32", device="cpu", world=1)
    TrainingArguments(**kwargs)

Pure: no model, no data, no torch, so each rule has a unit test (tests/test_train_arguments.py):
- `scheduler: constant` with warmup > 0 is transformers' constant_with_warmup (plain constant ignores warmup);
- `warmup` below 1 is a ratio of all steps, 1 or more a number of steps;
- without dev data there is no evaluation and no best checkpoint; with it, dev loss at step 0 too, except when
  resuming (the checkpoint's history already holds it);
- `keep_best` needs save_steps to be a multiple of eval_steps (ConfigError): the best is picked among evaluated
  checkpoints;
- several processes on CPU talk over gloo; length-grouped batches only without packing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError


def save_steps_of(cfg) -> int:
    """Checkpoint interval: save_steps, by default eval_steps."""
    return cfg.save_steps or cfg.eval_steps


def scheduler_of(cfg) -> str:
    """transformers' scheduler name: plain "constant" would ignore the warmup steps."""
    return "constant_with_warmup" if cfg.scheduler == "constant" and cfg.warmup > 0 else cfg.scheduler


def warmup_of(cfg) -> float | int:
    """A ratio (< 1) stays a float; 1 or more is a number of steps."""
    return cfg.warmup if cfg.warmup < 1 else int(cfg.warmup)


def sampling_strategy(cfg) -> str:
    """How the Trainer draws batches: in file order (data.shuffle false), length-grouped (without packing), or
    shuffled."""
    if not cfg.data.shuffle:
        return "sequential"
    return "group_by_length" if (not cfg.data.packing and cfg.data.group_by_length) else "random"


def training_arguments(cfg, *, checkpoints_dir: str | Path, has_dev: bool, resuming: bool, dtype: str, device: str,
                       world: int) -> dict[str, Any]:
    """TrainingArguments keywords for `cfg` (a TrainConfig); `dtype`/`device` as resolved for this machine,
    `world` the number of processes. ConfigError when keep_best cannot pick among the saved checkpoints."""
    save_steps = save_steps_of(cfg)
    keep_best = cfg.keep_best and has_dev
    if keep_best and save_steps % cfg.eval_steps:
        raise ConfigError(f"save_steps={save_steps} must be a multiple of eval_steps={cfg.eval_steps} when "
                          "keep_best=true (the best checkpoint is chosen among evaluated ones)")
    return dict(
        output_dir=str(checkpoints_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=scheduler_of(cfg),
        warmup_steps=warmup_of(cfg),
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        logging_steps=1,  # every step goes to log_history; the display windows over logging_steps
        eval_strategy="steps" if has_dev else "no",
        eval_steps=cfg.eval_steps if has_dev else None,
        eval_on_start=has_dev and not resuming,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=keep_best,
        metric_for_best_model="eval_loss" if keep_best else None,
        greater_is_better=False if keep_best else None,
        seed=cfg.seed,
        bf16=dtype == "bf16",
        fp16=dtype == "fp16",
        use_cpu=device == "cpu",
        torch_compile=False,  # tunesmith compiles layer by layer itself (tunesmith.train.compiling)
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        dataloader_num_workers=0,
        ddp_backend=("gloo" if device == "cpu" else None) if world > 1 else None,
        ddp_find_unused_parameters=False if world > 1 else None,
        train_sampling_strategy=sampling_strategy(cfg),
        save_only_model=False,
    )
