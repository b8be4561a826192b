"""The rules between config keys and the Trainer's arguments, without a model or a training step."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.errors import ConfigError
from tunesmith.train.arguments import training_arguments
from tunesmith.train.config import load_config


def _args(*overrides: str, has_dev: bool = True, resuming: bool = False, dtype: str = "fp32", device: str = "cpu",
          world: int = 1) -> dict:
    cfg = load_config(None, ["data.train=train.jsonl", *overrides])
    return training_arguments(cfg, checkpoints_dir=Path("out/checkpoints"), has_dev=has_dev, resuming=resuming,
                              dtype=dtype, device=device, world=world)


def test_constant_schedule_with_warmup_is_constant_with_warmup():
    assert _args("scheduler=constant", "warmup=5")["lr_scheduler_type"] == "constant_with_warmup"
    assert _args("scheduler=constant", "warmup=0")["lr_scheduler_type"] == "constant"
    assert _args("scheduler=cosine", "warmup=5")["lr_scheduler_type"] == "cosine"


def test_warmup_below_one_is_a_ratio_and_above_a_step_count():
    ratio = _args("warmup=0.1")["warmup_steps"]
    steps = _args("warmup=20")["warmup_steps"]
    assert ratio == 0.1 and isinstance(ratio, float)
    assert steps == 20 and isinstance(steps, int)


def test_keep_best_needs_save_steps_a_multiple_of_eval_steps():
    with pytest.raises(ConfigError, match="save_steps=30 must be a multiple of eval_steps=20 when keep_best=true"):
        _args("eval_steps=20", "save_steps=30")
    assert _args("eval_steps=20", "save_steps=40")["load_best_model_at_end"] is True
    # without keep_best, or without dev data (nothing to pick the best by), any interval is fine
    assert _args("eval_steps=20", "save_steps=30", "keep_best=false")["load_best_model_at_end"] is False
    assert _args("eval_steps=20", "save_steps=30", has_dev=False)["load_best_model_at_end"] is False


def test_save_steps_default_to_eval_steps():
    assert _args("eval_steps=25")["save_steps"] == 25


def test_eval_at_start_only_when_not_resuming():
    assert _args()["eval_on_start"] is True
    assert _args(resuming=True)["eval_on_start"] is False


def test_no_dev_data_no_evaluation_and_no_best_checkpoint():
    a = _args(has_dev=False)
    assert a["eval_strategy"] == "no" and a["eval_steps"] is None and a["eval_on_start"] is False
    assert a["load_best_model_at_end"] is False and a["metric_for_best_model"] is None
    b = _args(has_dev=True)
    assert b["eval_strategy"] == "steps" and b["metric_for_best_model"] == "eval_loss"
    assert b["greater_is_better"] is False


def test_ddp_backend_is_gloo_on_cpu_only_with_several_processes():
    assert _args(world=2, device="cpu")["ddp_backend"] == "gloo"
    assert _args(world=2, device="cuda")["ddp_backend"] is None
    assert _args(world=1, device="cpu")["ddp_backend"] is None
    assert _args(world=2)["ddp_find_unused_parameters"] is False and _args()["ddp_find_unused_parameters"] is None


def test_length_grouped_batches_only_without_packing():
    assert _args("data.packing=true")["train_sampling_strategy"] == "random"
    assert _args("data.packing=false")["train_sampling_strategy"] == "group_by_length"
    assert _args("data.packing=false", "data.group_by_length=false")["train_sampling_strategy"] == "random"


def test_file_order_when_shuffle_is_off():
    assert _args("data.shuffle=false")["train_sampling_strategy"] == "sequential"
    assert _args("data.shuffle=false", "data.packing=false")["train_sampling_strategy"] == "sequential"


def test_dtype_device_steps_and_batches_map_to_the_trainer_names():
    a = _args("batch_size=4", "grad_accum=2", "lr=1e-4", dtype="bf16", device="cuda")
    assert a["bf16"] is True and a["fp16"] is False and a["use_cpu"] is False
    assert a["per_device_train_batch_size"] == 4 and a["per_device_eval_batch_size"] == 4
    assert a["gradient_accumulation_steps"] == 2 and a["learning_rate"] == 1e-4
    assert _args("eval_batch_size=16")["per_device_eval_batch_size"] == 16
    assert _args()["max_steps"] == -1 and _args("max_steps=30")["max_steps"] == 30
    assert _args()["logging_steps"] == 1  # every step is logged; the display windows over logging_steps
    assert _args()["use_cpu"] is True and _args()["output_dir"] == str(Path("out/checkpoints"))
    g = _args("gradient_checkpointing=true")
    assert g["activation_checkpointing"] is True and g["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    assert _args()["torch_compile"] is False and _args("compile=true")["torch_compile"] is False


def test_the_trainer_accepts_the_arguments(tmp_path):
    from transformers import TrainingArguments

    args = TrainingArguments(**training_arguments(
        load_config(None, ["data.train=train.jsonl", "scheduler=constant", "warmup=3", "max_steps=10"]),
        checkpoints_dir=tmp_path / "checkpoints", has_dev=True, resuming=False, dtype="fp32", device="cpu", world=1))
    assert args.lr_scheduler_type == "constant_with_warmup" and args.warmup_steps == 3 and args.max_steps == 10


def test_conversations_keep_file_order_when_shuffle_is_off(tmp_path):
    from tests.support import write_conversations
    from tunesmith.conversation import Conversation
    from tunesmith.train.training_data import load_conversations

    convs = [Conversation.single_turn(f"问题{i}", f"答案{i}") for i in range(30)]
    train = write_conversations(tmp_path / "train.jsonl", convs)
    questions = [f"问题{i}" for i in range(30)]

    def order(*overrides):
        got, _ = load_conversations(load_config(None, [f"data.train={train}", *overrides]))
        return [c.prompt_messages[-1].content for c in got]

    assert order("data.shuffle=false") == questions
    assert order("data.shuffle=false", "data.max_samples=5") == questions[:5]
    assert sorted(order()) == sorted(questions) and order() != questions  # the seeded shuffle
