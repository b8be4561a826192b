"""The LoRA phase of a run: a loaded base model -> a PEFT model whose only trainable weights are the adapter's.

    from tunesmith.train.lora import attach_lora, start_adapter
    model = attach_lora(model, cfg)          # cfg.lora.rank / alpha / dropout / target_modules, cfg.quantization
    model = start_adapter(model, cfg)        # cfg.init_adapter given: that trained adapter, trainable, instead

A quantized base (QLoRA) is prepared with peft's prepare_model_for_kbit_training first. A target module name
the model does not have is a ConfigError that lists the model's linear layers.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import set_seed

from tunesmith.errors import ConfigError


def start_adapter(model, cfg):
    """The adapter a run trains: cfg.init_adapter (a saved adapter, e.g. an SFT run's, loaded trainable; its
    own rank and targets win over cfg.lora) or else a fresh LoRA from cfg.lora."""
    if not cfg.init_adapter:
        return attach_lora(model, cfg)
    from tunesmith.model import load_adapter

    if cfg.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        model = load_adapter(model, cfg.init_adapter, is_trainable=True)
    except (RuntimeError, ValueError, KeyError) as e:  # shapes or module names of another base model
        raise ConfigError(f"init_adapter={cfg.init_adapter}: it does not fit the model {cfg.model} "
                          f"({str(e).splitlines()[0][:200]})") from None
    model.config.use_cache = False
    return model


def attach_lora(model, cfg):
    """Wrap `model` with a fresh LoRA adapter as `cfg` (a TrainConfig) says, seeded with cfg.seed."""
    if cfg.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    set_seed(cfg.seed)
    targets = cfg.lora.target_modules
    lora = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules="all-linear" if targets == ["all-linear"] else list(targets),
                      task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as e:
        names = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"lora.target_modules={targets}: {str(e).splitlines()[0]} "
                          f"(linear layers of this model: {', '.join(names)})") from None
    model.config.use_cache = False
    return model
