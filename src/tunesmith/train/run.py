"""The training recipe, top to bottom: config -> data -> model + LoRA -> Trainer -> adapter + summary.

    tunesmith train configs/rolebench_libai.yaml max_steps=50
    torchrun --nproc_per_node 2 -m tunesmith.cli train configs/ie_cls.yaml      # DDP, unchanged

    from tunesmith.train import train_from_config
    result = train_from_config("configs/ie_cls.yaml", ["max_steps=20"])
    result.adapter_dir, result.summary["best_dev_loss"]

The phases, each one function (`train_from_config` calls them in this order):
    resume_point      output folder and resume rules               (checkpoints.py)
    setup_run         device/dtype/threads, base model + template, data, packing probe, LoRA  -> RunSetup
    build_trainer     TrainingArguments (arguments.py), collator, callbacks -> the Trainer
    train             trainer.train                                  -> Trained
    save_and_verify   adapter written and reloaded, summary.json     (summary.py)

Output folder (output_dir):
    adapter/          PEFT adapter + template.json + tokenizer + train_config.yaml (the best checkpoint by
                      dev loss when keep_best and a dev set are on, else the last); character.json when the run
                      trains a character (the `character:` card, or the card the data came from)
    checkpoints/      Trainer checkpoints (optimizer, scheduler, RNG states: what `resume=true` continues from);
                      one a kill left half-written is renamed incomplete-checkpoint-N and never resumed from
    loss.png          train (per step and windowed) and dev loss curves
    summary.json      losses, steps, tokens, time, tokens/s, data statistics
    train_config.yaml the resolved config
    log_history.json  every logged value
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_callback import ProgressCallback as PrintedProgressBar

from tunesmith.fsio import atomic_write
from tunesmith.model import load_model, resolve_model_path
from tunesmith.template import resolve_template
from tunesmith.threads import spinning, wait_policy_line
from tunesmith.train.adapter import CheckpointAdapterFiles, save_adapter, verify_adapter
from tunesmith.train.arguments import training_arguments
from tunesmith.train.attention import PACKED_ATTENTION, PACKING_TOLERANCE, check_shared_prefixes, choose_packing
from tunesmith.train.checkpoints import resume_point
from tunesmith.train.compiling import CompileCallback
from tunesmith.train.config import TrainConfig, dump_config, load_config
from tunesmith.train.dataset import ListDataset, PackedCollator, PaddedCollator
from tunesmith.train.lora import start_adapter
from tunesmith.train.preference_data import first_sequence
from tunesmith.train.preference_trainers import preference_trainer
from tunesmith.train.progress import ProgressCallback
from tunesmith.train.runtime import Runtime, log, peak_memory_mb, release_process_group, setup_runtime
from tunesmith.train.shared_prefix import saving_line
from tunesmith.train.summary import TrainResult, build_summary, finished_run, saved_line, write_summary
from tunesmith.train.thread_guard import OtherWorkGuard
from tunesmith.train.trainer import TunesmithTrainer, head_loss_supported, output_head
from tunesmith.train.training_data import TrainingData, explicit_character, load_training_data, run_character

__all__ = ["TrainResult", "train_from_config"]


# -- the state the phases pass on -----------------------------------------------------------------------
@dataclass
class TunedModel:
    """The base model with its LoRA adapter attached, and how it is fed."""

    model: Any  # the PEFT model
    tokenizer: Any
    template: Any  # tunesmith.template.Template, saved with the adapter
    model_path: str  # the resolved base model folder
    packing: str  # "off", "varlen (IMPL)" or "block-diagonal mask from position ids"
    head: Any  # the frozen output head applied to answer positions only, or None (the model's full logits)
    trainable: int  # trainable parameters (the adapter's)
    share_prefixes: bool = False  # packed rows lay a prompt prefix that conversations share once


@dataclass
class RunSetup:
    """Everything a run needs before the Trainer exists."""

    cfg: TrainConfig
    out: Path
    resume_from: Path | None
    runtime: Runtime
    model: TunedModel
    data: TrainingData
    character: Any = None  # tunesmith.character.Character saved as character.json next to the adapter, or None


@dataclass
class Trained:
    """What training left: the Trainer (its state holds the log history), the progress display, and counts."""

    trainer: TunesmithTrainer
    progress: ProgressCallback
    output: Any  # trainer.train's TrainOutput
    seconds: float
    tokens: int  # input tokens trained on, all processes


# -- the run ------------------------------------------------------------------------------------------
def train_from_config(config_or_path: TrainConfig | str | os.PathLike | dict | None, overrides=(), *,
                      callbacks: list | None = None, stream=None) -> TrainResult:
    """Train a LoRA adapter as the config says; returns where the adapter and summary.json are.

    `config_or_path`: a TrainConfig, a mapping of keys, or a YAML recipe path; `overrides`: "key=value"
    strings applied on top (e.g. ["max_steps=50", "lora.rank=16"]).  `callbacks`: extra
    transformers TrainerCallbacks (one with a `bind_trainer(trainer)` method is handed the Trainer).
    `stream`: where progress lines go (default stdout).
    """
    cfg = as_config(config_or_path, overrides)
    start = resume_point(cfg, stream)
    if start.finished is not None:
        return start.finished
    setup = setup_run(cfg, start.resume_from, stream)
    trainer = build_trainer(setup, callbacks or [], stream)
    if setup.runtime.rank == 0:
        setup.out.mkdir(parents=True, exist_ok=True)
        atomic_write(setup.out / "train_config.yaml", dump_config(cfg))
    trained = train(setup, trainer)
    if trainer.resumed_finished:
        finished = finished_after_resume(setup, trained, stream)
        if finished is not None:
            return finished
    result = save_and_verify(setup, trained, stream)
    release_process_group()
    return result


def as_config(config_or_path: TrainConfig | str | os.PathLike | dict | None, overrides) -> TrainConfig:
    """A TrainConfig from any of the forms train_from_config takes, overrides applied."""
    overrides = list(overrides or [])
    if isinstance(config_or_path, TrainConfig):
        if not overrides:
            return config_or_path
        return load_config(None, overrides, base=config_or_path.to_dict())
    if isinstance(config_or_path, dict):
        return load_config(None, overrides, base=config_or_path)
    return load_config(config_or_path, overrides)


# -- setup: runtime, model, data, LoRA ------------------------------------------------------------------
def setup_run(cfg: TrainConfig, resume_from: Path | None, stream=None) -> RunSetup:
    """Resolve where the run computes, load the base model, its template and the data, attach LoRA."""
    runtime = setup_runtime(cfg)
    if runtime.device == "cpu":
        policy = wait_policy_line()
        log(f"threads: {runtime.threads} ({runtime.thread_reason})" + (f"; {policy}" if policy else ""), stream)
    named = explicit_character(cfg)  # before the model: a bad card fails in a second
    model_path = resolve_model_path(cfg.model)
    model, tokenizer = load_model(model_path, dtype=runtime.dtype, device=runtime.device,
                                  quantization=cfg.quantization, trust_remote_code=cfg.trust_remote_code)
    template = run_template(cfg, tokenizer)
    if named is not None and cfg.system is None and template.default_system is None:
        template.default_system = named.persona  # conversations without a system text train as the character
    data = load_training_data(cfg, tokenizer, template, stream)
    character = run_character(cfg, data.train_convs, named, stream)
    if character is not None:
        log(f"character: {character.name} ({len(character.greetings)} greeting(s)), saved as character.json with "
            "the adapter", stream)
    tuned = tune_model(cfg, runtime, model, tokenizer, template, model_path, stream)
    return RunSetup(cfg=cfg, out=Path(cfg.output_dir), resume_from=resume_from, runtime=runtime, model=tuned,
                    data=data, character=character)


def run_template(cfg: TrainConfig, tokenizer):
    """The chat template: the starting adapter's own (template: auto with init_adapter: the prompts a preference
    run learns after are the ones its SFT adapter was trained on and is served with), else cfg.template."""
    from tunesmith.template import load_template

    saved = load_template(cfg.init_adapter) if cfg.init_adapter and cfg.template == "auto" else None
    if saved is None:
        return resolve_template(cfg.template, tokenizer, default_system=cfg.system)
    if cfg.system is not None:
        saved.default_system = cfg.system
    return saved


def tune_model(cfg: TrainConfig, runtime: Runtime, model, tokenizer, template, model_path: str,
               stream=None) -> TunedModel:
    """Prove packing works on this model (data.packing), attach LoRA, probe the answer-only loss head;
    prints the model line."""
    sft = cfg.method == "sft"
    # dpo/kto: TRL's padded batches run packed inside the fused LM head (tunesmith.train.fused_head)
    packing = choose_packing(model, model_path) if cfg.data.packing and cfg.method != "orpo" else "off"
    share = packing == f"varlen ({PACKED_ATTENTION})" and cfg.data.share_prefixes and \
        check_shared_prefixes(model, model.config.get_text_config().vocab_size, model.device) <= PACKING_TOLERANCE
    model = start_adapter(model, cfg)
    head = output_head(model) if sft and head_loss_supported(model, model.device) else None
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    dtype, device = runtime.dtype, runtime.device
    lora = f"adapter {cfg.init_adapter}" if cfg.init_adapter else \
        f"LoRA rank {cfg.lora.rank} on {cfg.lora.target_modules}"
    loss = (f"loss head {'answer positions only' if head is not None else 'full logits'}; "
            f"loss weighted per {'conversation' if cfg.loss_weighting == 'sample' else 'token'}") if sft else \
        f"method {cfg.method} (beta {cfg.preference.beta:g})"
    log(f"model: {model_path} ({dtype}, {device}"
        f"{', ' + cfg.quantization if cfg.quantization != 'none' else ''}); "
        f"{lora}: {n_train:,} trainable of {n_all:,} parameters; template {template.name}; packing {packing}"
        f"{' with shared prompt prefixes' if share else ''}; "
        f"{loss}", stream)
    return TunedModel(model=model, tokenizer=tokenizer, template=template, model_path=model_path, packing=packing,
                      head=head, trainable=n_train, share_prefixes=share)


# -- the Trainer --------------------------------------------------------------------------------------
def build_trainer(setup: RunSetup, callbacks: list, stream=None) -> TunesmithTrainer:
    """The Trainer for supervised fine-tuning: its arguments, the collator (packed or padded batches), the
    progress display and the caller's callbacks (each one with `bind_trainer(trainer)` is handed the Trainer).

    This is the one place that knows the training method: `method: dpo | orpo | kto` gets TRL's trainer for it
    (tunesmith.train.preference_trainers) on the same arguments and callbacks; the phases before and after
    stay as they are.
    """
    cfg, rt, tuned, data = setup.cfg, setup.runtime, setup.model, setup.data
    has_dev = bool(data.dev_samples)
    # every checkpoint an adapter folder in its own right: template.json and the rest beside PEFT's files
    callbacks = [CheckpointAdapterFiles(tuned.template, config_yaml=dump_config(cfg), character=setup.character,
                                        generation=cfg.generation), *callbacks]
    training_kwargs = training_arguments(
        cfg, checkpoints_dir=setup.out / "checkpoints", has_dev=has_dev, resuming=setup.resume_from is not None,
        dtype=rt.dtype, device=rt.device, world=rt.world)
    progress = ProgressCallback(logging_steps=cfg.logging_steps, out_dir=setup.out, tokenizer=tuned.tokenizer,
                                template=tuned.template, sample_prompt=data.sample_prompt,
                                sample_tokens=cfg.sample_tokens, plot=cfg.plot,
                                title=f"{Path(str(cfg.model)).name} LoRA r={cfg.lora.rank} lr={cfg.lr:g}",
                                stream=stream)
    # spinning OpenMP threads give their cores up to other work while the run trains (train/thread_guard.py)
    guard = [OtherWorkGuard(rt.threads, stream)] if rt.device == "cpu" and rt.threads and rt.world == 1 \
        and spinning() else []
    if cfg.method == "sft":
        per_sample = cfg.loss_weighting == "sample"
        collator = PackedCollator(varlen_kwargs=tuned.packing.startswith("varlen"), sample_weights=per_sample,
                                  share_prefixes=tuned.share_prefixes) \
            if cfg.data.packing else PaddedCollator(tuned.tokenizer.pad_token_id, sample_weights=per_sample)
        if tuned.share_prefixes:
            log("shared prompt prefixes: " + saving_line(data.train_samples, cfg.batch_size), stream)
        blocked = "gradient checkpointing is on" if cfg.gradient_checkpointing else \
            f"{cfg.quantization} quantized layers" if cfg.quantization != "none" else None
        compiling = [CompileCallback(cfg.compile, rt.device, stream, blocked)] if cfg.compile != "false" else []
        trainer = TunesmithTrainer(
            model=tuned.model, args=TrainingArguments(**training_kwargs), train_dataset=ListDataset(data.train_samples),
            eval_dataset=ListDataset(data.dev_samples) if has_dev else None, data_collator=collator,
            processing_class=tuned.tokenizer, callbacks=[progress, *compiling, *guard, *callbacks], head=tuned.head,
        )
        if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:  # sharded parameters: leave the model alone
            for cb in compiling:
                trainer.remove_callback(cb)
    else:
        trainer = preference_trainer(cfg, model=tuned.model, tokenizer=tuned.tokenizer, training_kwargs=training_kwargs,
                                     train_rows=data.train_samples, dev_rows=data.dev_samples,
                                     callbacks=[progress, *guard, *callbacks],
                                     packing=("shared" if tuned.share_prefixes else "varlen")
                                     if tuned.packing.startswith("varlen") else None)
    # The progress callback prints its own lines; the stock ones would print dicts and bars besides.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(PrintedProgressBar)
    for cb in [progress, *callbacks]:
        if callable(getattr(cb, "bind_trainer", None)):  # callbacks that need the Trainer itself (token counts)
            cb.bind_trainer(trainer)
    return trainer


def progress_of(trainer: TunesmithTrainer) -> ProgressCallback:
    """The ProgressCallback build_trainer gave `trainer`."""
    return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback))


# -- training -----------------------------------------------------------------------------------------
def train(setup: RunSetup, trainer: TunesmithTrainer) -> Trained:
    """Run the Trainer (from the checkpoint `setup.resume_from`, if any); every process counts its tokens."""
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(setup.resume_from) if setup.resume_from else None)
    seconds = time.perf_counter() - started
    progress = progress_of(trainer)
    return Trained(trainer=trainer, progress=progress, output=output, seconds=seconds, tokens=progress.tokens_seen())


def finished_after_resume(setup: RunSetup, trained: Trained, stream=None) -> TrainResult | None:
    """A resumed run that was already at its end trained nothing: the result it left, or None when its adapter
    and summary.json are missing (stopped after the last checkpoint), which save_and_verify then writes."""
    state = trained.trainer.state
    done = f"the run is complete: {setup.resume_from.name} is at step {state.global_step} of {state.max_steps}"
    finished = finished_run(setup.out, state.global_step)
    if finished is not None:
        log(f"{done}; nothing to train (resume with more epochs or a larger max_steps to train on)", stream)
        return finished
    log(f"{done}; writing the adapter and summary.json that the stopped run did not write", stream)
    return None


# -- save + verify the adapter (main process) ---------------------------------------------------------
def save_and_verify(setup: RunSetup, trained: Trained, stream=None) -> TrainResult:
    """Write the adapter, check it reloads to the same logits, write summary.json and log_history.json."""
    out, cfg, rt, tuned = setup.out, setup.cfg, setup.runtime, setup.model
    adapter_dir, summary_path = out / "adapter", out / "summary.json"
    trainer = trained.trainer
    summary: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        peft_model = trainer.model
        save_adapter(peft_model, tuned.tokenizer, tuned.template, adapter_dir, config_yaml=dump_config(cfg),
                     character=setup.character, generation=cfg.generation)
        first = setup.data.train_samples[0]
        probe = torch.tensor([(first["input_ids"] if "input_ids" in first else first_sequence(first))[:64]],
                             device=next(peft_model.parameters()).device)
        with trainer.accelerator.autocast():
            check = verify_adapter(peft_model, adapter_dir, trained=trainer.state.global_step > 0, probe_ids=probe,
                                   atol=1e-4 if rt.dtype == "fp32" else 5e-2)
        summary = build_summary(cfg, setup=setup, trained=trained, adapter_dir=adapter_dir, adapter_check=check,
                                threads=torch.get_num_threads() if rt.device == "cpu" else None,
                                peak_memory_mb=peak_memory_mb(rt.device))
        write_summary(out, summary, trainer.state.log_history)
        log(saved_line(adapter_dir, summary_path, summary), stream)
    return TrainResult(output_dir=out, adapter_dir=adapter_dir, summary_path=summary_path, summary=summary)
