"""LoRA fine-tuning: YAML recipe -> data -> transformers Trainer -> verified PEFT adapter.

    from tunesmith.train import train_from_config
    result = train_from_config("configs/rolebench_libai.yaml", ["max_steps=50"])
    print(result.adapter_dir, result.summary["best_dev_loss"])

See docs/training.md.  Importing this package is light; torch/transformers load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunesmith.train.config import TrainConfig, load_config

if TYPE_CHECKING:
    from tunesmith.train.summary import TrainResult


def train_from_config(config_or_path: Any, overrides=(), **kwargs: Any) -> TrainResult:
    """Train as the recipe says (see tunesmith.train.run.train_from_config)."""
    from tunesmith.train.run import train_from_config as run

    return run(config_or_path, overrides, **kwargs)


__all__ = ["TrainConfig", "load_config", "train_from_config"]
