"""The training recipe, top to bottom: config -> data -> model + LoRA -> Trainer -> adapter + summary.

    tunesmith train configs/rolebench_libai.yaml max_steps=50
    torchrun --nproc_per_node 2 -m tunesmith.cli train configs/ie_cls.yaml      # DDP, unchanged

    from tunesmith.train import train_from_config
    result = train_from_config("configs/ie_cls.yaml", ["max_steps=20"])
    result.adapter_dir, result.summary["best_dev_loss"]

Output folder (output_dir):
    adapter/          PEFT adapter + template.json + tokenizer + train_config.yaml (the best checkpoint by
                      dev loss when keep_best and a dev set are on, else the last)
    checkpoints/      Trainer checkpoints (optimizer, scheduler, RNG states: what `resume=true` continues from);
                      one a kill left half-written is renamed incomplete-checkpoint-N and never resumed from
    loss.png          train (per step and windowed) and dev loss curves
    summary.json      losses, steps, tokens, time, tokens/s, data statistics
    train_config.yaml the resolved config
    log_history.json  every logged value
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write
from tunesmith.train.config import TrainConfig, dump_config, load_config

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# A half-written checkpoint is renamed to this prefix + its name: no longer "checkpoint-N", so neither this
# module nor the Trainer's rotation of old checkpoints counts it, and the Trainer can save that step afresh.
INCOMPLETE_PREFIX = "incomplete-"


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    summary_path: Path
    summary: dict[str, Any] = field(default_factory=dict)


# -- small helpers ----------------------------------------------------------------------------------
def _dist_env() -> tuple[int, int, int]:
    return (int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
            int(os.environ.get("LOCAL_RANK", "0")))


def _log(msg: str, stream=None) -> None:
    if _dist_env()[1] == 0:
        print(msg, file=stream or sys.stdout, flush=True)


def checkpoints_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _torch_file_problem(path: Path) -> str | None:
    """Why a torch.save file cannot be loaded, or None. torch.save writes a zip archive whose index comes
    last, so a file cut short has none; the pickle that describes the tensors is read to check its CRC."""
    import zipfile

    try:
        size = path.stat().st_size
        if size == 0:
            return "is empty"
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if any(i.header_offset + i.compress_size > size for i in infos):
                return "is cut short"
            pickles = [i for i in infos if i.filename.endswith("/data.pkl")]
            if not pickles:
                return "is not a torch.save file (no data.pkl)"
            z.read(pickles[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        return f"is cut short or damaged ({e})"
    return None


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why `ckpt` cannot be resumed from (its first missing or unreadable file), or None when it is complete.

    The Trainer writes a checkpoint file by file (trainer_state.json last), none of them atomically, so a
    run killed while saving leaves a folder that looks like a checkpoint: an empty one, or one whose last
    file is cut short. Resuming from it crashes inside the Trainer or would load half a state. Checked here:
    every file the Trainer reads back (trainer state, adapter config and weights, optimizer, scheduler, RNG
    states, and the scaler and training arguments where written) is there and parses."""
    try:
        names = {f.name for f in ckpt.iterdir()}
    except OSError as e:
        return f"the folder cannot be read ({e.strerror})"
    if not names:
        return "the folder is empty"
    if "trainer_state.json" not in names:
        return "trainer_state.json is missing"
    try:
        text = (ckpt / "trainer_state.json").read_text(encoding="utf-8")
        state = json.loads(text)
    except json.JSONDecodeError as e:
        return f"trainer_state.json is cut short or damaged ({e.msg} at line {e.lineno} column {e.colno})" if text \
            else "trainer_state.json is empty"
    except (OSError, UnicodeDecodeError) as e:
        return f"trainer_state.json cannot be read ({e})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    # DeepSpeed and FSDP keep weights and optimizer in sharded folders of their own, which they check on loading.
    sharded = any(n.startswith(("global_step", "pytorch_model_fsdp", "optimizer_")) and (ckpt / n).is_dir()
                  for n in names)
    if not sharded:
        if "adapter_config.json" not in names:
            return "adapter_config.json is missing"
        try:
            cfg = json.loads((ckpt / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            return f"adapter_config.json is cut short or damaged ({e})"
        if not isinstance(cfg, dict):
            return "adapter_config.json is not a JSON object"
        if "adapter_model.safetensors" in names:
            from safetensors import SafetensorError, safe_open

            try:  # the header must parse and the file must hold every byte it lists
                with safe_open(str(ckpt / "adapter_model.safetensors"), framework="np") as f:
                    f.keys()
            except (SafetensorError, OSError) as e:
                return f"adapter_model.safetensors is cut short or damaged ({e})"
        elif "adapter_model.bin" in names:
            why = _torch_file_problem(ckpt / "adapter_model.bin")
            if why:
                return f"adapter_model.bin {why}"
        else:
            return "the adapter weights (adapter_model.safetensors) are missing"
        for name in ("optimizer.pt", "scheduler.pt"):
            if name not in names:
                return f"{name} is missing"
    rng = sorted(n for n in names if re.fullmatch(r"rng_state(_\d+)?\.pth", n))
    if not rng:
        return "rng_state.pth is missing"
    for name in sorted(names & {"optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin"}) + rng:
        why = _torch_file_problem(ckpt / name)
        if why:
            return f"{name} {why}"
    return None


def pick_checkpoint(folder: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint in `folder` (or None), and the incomplete ones newer than it, each with
    what is wrong with it."""
    incomplete = []
    for ckpt in reversed(checkpoints_in(folder)):
        why = checkpoint_problem(ckpt)
        if why is None:
            return ckpt, incomplete
        incomplete.append((ckpt, why))
    return None, incomplete


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder` (see checkpoint_problem)."""
    return pick_checkpoint(folder)[0]


def _move_aside(ckpt: Path) -> Path:
    """Rename an incomplete checkpoint out of the Trainer's way; its files stay for whoever wants to look."""
    dest = ckpt.with_name(INCOMPLETE_PREFIX + ckpt.name)
    n = 2
    while dest.exists():
        dest = ckpt.with_name(f"{INCOMPLETE_PREFIX}{ckpt.name}-{n}")
        n += 1
    ckpt.rename(dest)
    return dest


def _set_incomplete_aside(incomplete: list[tuple[Path, str]], then: str, rank: int, stream) -> None:
    """Move incomplete checkpoints aside (main process) and say so, then what happens instead."""
    for ckpt, why in incomplete:
        if rank == 0:
            dest = _move_aside(ckpt)
            _log(f"warning: {ckpt.name} is incomplete ({why}; what a run stopped while saving leaves): "
                 f"moved aside to {dest.name}", stream)
    if incomplete:
        _log(then, stream)


def _finished_run(out: Path, step: int) -> TrainResult | None:
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


def cpu_bf16_speedup(n: int = 1024, repeats: int = 3) -> float:
    """How much faster a bf16 matmul is than an fp32 one on this CPU (best of `repeats`, ~0.1 s)."""
    import torch

    best = {}
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        a @ b
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best[dt] = min(times)
    return best[torch.float32] / best[torch.bfloat16]


def resolve_train_dtype(dtype: str, device: str) -> str:
    """'auto' -> bf16 on GPUs that have it (else fp16); on CPU bf16 only where it measures faster than fp32."""
    if dtype != "auto":
        if dtype == "fp16" and device == "cpu":
            raise ConfigError("dtype=fp16 needs a GPU (fp16 training on CPU is not supported); use bf16 or fp32")
        return dtype
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "cpu":
        # Many CPUs emulate bf16 matmuls (slower than fp32); use it only where it really is faster.
        return "bf16" if cpu_bf16_speedup() >= 1.3 else "fp32"
    return "fp32"


def resolve_threads(threads: int | None, device: str) -> int | None:
    """CPU threads: as asked, else as many as there are idle cores (busy cores make OpenMP threads wait)."""
    if threads:
        return threads
    if device != "cpu":
        return None
    import torch

    idle = max(1, (os.cpu_count() or 1) - round(busy_cores()))
    return min(torch.get_num_threads(), idle)


def busy_cores(window_s: float = 0.3, samples: int = 3) -> float:
    """How many cores other work keeps busy right now: the least of a few short samples taken while this
    process waits (a job that lasts shows in every sample; a command that runs for a moment does not).

    Not the load average: its 1-minute mean still counts this process's own setup work (installing,
    converting the model, tokenizing) for a minute after it ended, which made a run started right after
    setup train on one thread of an idle 2-core machine."""
    import psutil

    busy = min(psutil.cpu_percent(interval=window_s) for _ in range(samples))
    return busy / 100 * (psutil.cpu_count() or 1)


def _as_config(config_or_path: TrainConfig | str | os.PathLike | dict | None, overrides) -> TrainConfig:
    overrides = list(overrides or [])
    if isinstance(config_or_path, TrainConfig):
        if not overrides:
            return config_or_path
        return load_config(None, overrides, base=config_or_path.to_dict())
    if isinstance(config_or_path, dict):
        return load_config(None, overrides, base=config_or_path)
    return load_config(config_or_path, overrides)


# -- data -------------------------------------------------------------------------------------------
def load_conversations(cfg: TrainConfig):
    from tunesmith.data import resolve_dataset, split_conversations

    train = resolve_dataset(cfg.data.train, purpose="train")
    if not train:
        raise DataError("no training conversations (the dataset is empty)", str(cfg.data.train))
    dev = resolve_dataset(cfg.data.dev) if cfg.data.dev is not None else []
    if not dev and cfg.data.dev_ratio > 0:
        train, dev = split_conversations(train, cfg.data.dev_ratio, seed=cfg.seed)
    rng = random.Random(cfg.seed)
    train = list(train)
    rng.shuffle(train)
    if cfg.data.max_samples is not None:
        train = train[: cfg.data.max_samples]
    if dev and cfg.data.max_dev_samples and len(dev) > cfg.data.max_dev_samples:
        # a fixed, spread-out subset: the same dev set at every eval and across resumes
        pick = sorted(random.Random(0).sample(range(len(dev)), cfg.data.max_dev_samples))
        dev = [dev[i] for i in pick]
    return train, dev


# -- the run ----------------------------------------------------------------------------------------
def train_from_config(config_or_path: TrainConfig | str | os.PathLike | dict | None, overrides=(), *,
                      callbacks: list | None = None, stream=None) -> TrainResult:
    """Train a LoRA adapter as the config says; returns where the adapter and summary.json are.

    `config_or_path`: a TrainConfig, a mapping of keys, or a YAML recipe path; `overrides`: "key=value"
    strings applied on top (e.g. ["max_steps=50", "lora.rank=16"]).  `callbacks`: extra
    transformers TrainerCallbacks (one with a `bind_trainer(trainer)` method is handed the Trainer).
    `stream`: where progress lines go (default stdout).
    """
    cfg = _as_config(config_or_path, overrides)
    world, rank, local_rank = _dist_env()
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    resume_from = None
    if cfg.resume:
        resume_from, incomplete = pick_checkpoint(ckpt_dir)
        if resume_from is None and incomplete:
            raise ConfigError(f"resume=true but {ckpt_dir} holds no complete checkpoint to resume from: "
                              + "; ".join(f"{c.name}: {why}" for c, why in incomplete)
                              + " (what a run stopped while saving leaves); run without --resume to start over "
                              "(incomplete checkpoints are then moved aside)")
        if resume_from is None:
            raise ConfigError(f"resume=true but {ckpt_dir} holds no checkpoint to resume from "
                              "(expected checkpoint-N folders with trainer_state.json written by an earlier run)")
        _set_incomplete_aside(incomplete, f"resuming from {resume_from.name}, the newest complete checkpoint",
                              rank, stream)
        step = json.loads((resume_from / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
        # The stock Trainer would train one step past max_steps from a checkpoint taken at max_steps.
        # Epoch-based runs learn their step count only in the Trainer: TunesmithTrainer stops those.
        if cfg.max_steps is not None and step >= cfg.max_steps:
            finished = _finished_run(out, step)
            if finished is not None:
                _log(f"the run is complete: {resume_from.name} is at step {step} and max_steps={cfg.max_steps}; "
                     "nothing to train (resume with a larger max_steps to train on)", stream)
                return finished
    elif checkpoints_in(ckpt_dir):
        if cfg.overwrite:
            if rank == 0:
                import shutil

                for p in checkpoints_in(ckpt_dir):
                    shutil.rmtree(p, ignore_errors=True)
        else:
            done, incomplete = pick_checkpoint(ckpt_dir)
            if done is not None:
                raise ConfigError(f"{ckpt_dir} already holds checkpoints of an earlier run: pass --resume to "
                                  "continue it, overwrite=true to start over, or another output_dir")
            # Only checkpoints that a run stopped while saving: nothing to resume, so the folder counts as empty.
            _set_incomplete_aside(incomplete, f"{ckpt_dir} holds no complete checkpoint; starting from the "
                                  "beginning", rank, stream)

    import torch
    import transformers
    from transformers import TrainingArguments, set_seed

    from tunesmith.model import load_model, resolve_device, resolve_model_path
    from tunesmith.template import resolve_template
    from tunesmith.train.adapter import save_adapter, verify_adapter
    from tunesmith.train.attention import PACKING_TOLERANCE, check_packing, use_packed_attention
    from tunesmith.train.dataset import ListDataset, PackedCollator, PaddedCollator, encode_all
    from tunesmith.train.progress import ProgressCallback, dev_losses, train_losses, window_mean
    from tunesmith.train.trainer import TunesmithTrainer, head_loss_supported, output_head

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*", category=FutureWarning)
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    threads = resolve_threads(cfg.threads, device)
    if threads:
        torch.set_num_threads(threads)
    dtype = resolve_train_dtype(cfg.dtype, device)
    model_path = resolve_model_path(cfg.model)

    # -- model + tokenizer + template ---------------------------------------------------------------
    model, tokenizer = load_model(model_path, dtype=dtype, device=device, quantization=cfg.quantization,
                                  trust_remote_code=cfg.trust_remote_code)
    tpl = resolve_template(cfg.template, tokenizer, default_system=cfg.system)

    # -- data ---------------------------------------------------------------------------------------
    train_convs, dev_convs = load_conversations(cfg)
    enc = dict(max_source_len=cfg.data.max_source_len, max_target_len=cfg.data.max_target_len,
               train_on_prompt=cfg.data.train_on_prompt, last_turn_only=cfg.data.last_turn_only)
    systems = {c.system for c in train_convs}
    if cfg.system is None and len(systems) == 1 and None not in systems:
        # Every conversation carries the same system prompt (a persona): save it as the template's default,
        # so that chat/serve without --system prompt the model exactly as it was trained.
        tpl.default_system = systems.pop()
    train_samples, train_stats = encode_all(train_convs, tokenizer, tpl, **enc)
    dev_samples, dev_stats = encode_all(dev_convs, tokenizer, tpl, **enc) if dev_convs else ([], None)
    if not train_samples:
        raise DataError(f"none of the {len(train_convs)} training conversations has an answer token to learn "
                        "after the cutoffs (check data.max_target_len and that conversations end with an answer)",
                        str(cfg.data.train))
    _log(f"data: {train_stats.samples} training samples ({train_stats.tokens:,} tokens, {train_stats.loss_tokens:,} "
         f"answer tokens), {len(dev_samples)} dev samples; prompts at the {cfg.data.max_source_len}-token cutoff: "
         f"{train_stats.source_cut}, answers at the {cfg.data.max_target_len}-token cutoff: {train_stats.target_cut}"
         + (f", dropped with nothing to learn: {train_stats.dropped_no_loss}" if train_stats.dropped_no_loss else ""),
         stream)

    # -- packing: prove the model keeps packed conversations apart ----------------------------------
    packing_mode = "off"
    if cfg.data.packing:
        vocab = model.config.get_text_config().vocab_size
        attn = use_packed_attention(model)
        diff = check_packing(model, vocab, model.device, varlen_kwargs=True)
        packing_mode = f"varlen ({attn})"
        if diff > PACKING_TOLERANCE:
            diff = check_packing(model, vocab, model.device, varlen_kwargs=False)
            packing_mode = "block-diagonal mask from position ids"
            if diff > PACKING_TOLERANCE:
                raise ConfigError(f"data.packing=true, but this model ({model_path}) lets packed conversations "
                                  f"attend to each other (logit difference {diff:.3g}); set data.packing=false")

    # -- LoRA ---------------------------------------------------------------------------------------
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

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
    head = output_head(model) if head_loss_supported(model, model.device) else None
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    _log(f"model: {model_path} ({dtype}, {device}{f' x{threads} threads' if device == 'cpu' else ''}"
         f"{', ' + cfg.quantization if cfg.quantization != 'none' else ''}); "
         f"LoRA rank {cfg.lora.rank} on {targets}: {n_train:,} trainable of {n_all:,} parameters; "
         f"template {tpl.name}; packing {packing_mode}; "
         f"loss head {'answer positions only' if head is not None else 'full logits'}; "
         f"loss weighted per {'conversation' if cfg.loss_weighting == 'sample' else 'token'}",
         stream)

    # -- Trainer ------------------------------------------------------------------------------------
    has_dev = bool(dev_samples)
    save_steps = cfg.save_steps or cfg.eval_steps
    keep_best = cfg.keep_best and has_dev
    if keep_best and save_steps % cfg.eval_steps:
        raise ConfigError(f"save_steps={save_steps} must be a multiple of eval_steps={cfg.eval_steps} when "
                          "keep_best=true (the best checkpoint is chosen among evaluated ones)")
    warmup = cfg.warmup if cfg.warmup < 1 else int(cfg.warmup)
    scheduler = cfg.scheduler
    if scheduler == "constant" and cfg.warmup > 0:
        scheduler = "constant_with_warmup"
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=scheduler,
        warmup_steps=warmup,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        logging_steps=1,  # every step goes to log_history; the display windows over logging_steps
        eval_strategy="steps" if has_dev else "no",
        eval_steps=cfg.eval_steps if has_dev else None,
        eval_on_start=has_dev and resume_from is None,
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
        train_sampling_strategy="group_by_length" if (not cfg.data.packing and cfg.data.group_by_length) else "random",
        save_only_model=False,
    )
    per_sample = cfg.loss_weighting == "sample"
    collator = PackedCollator(varlen_kwargs=packing_mode.startswith("varlen"), sample_weights=per_sample) \
        if cfg.data.packing else PaddedCollator(tokenizer.pad_token_id, sample_weights=per_sample)
    sample_prompt = None
    if dev_convs:
        first = dev_convs[0]
        sample_prompt = (first.system, first.prompt_messages) if first.prompt_messages and \
            first.prompt_messages[-1].role == "user" else None
    progress = ProgressCallback(logging_steps=cfg.logging_steps, out_dir=out, tokenizer=tokenizer, template=tpl,
                                sample_prompt=sample_prompt, sample_tokens=cfg.sample_tokens, plot=cfg.plot,
                                title=f"{Path(str(cfg.model)).name} LoRA r={cfg.lora.rank} lr={cfg.lr:g}",
                                stream=stream)
    trainer = TunesmithTrainer(
        model=model, args=args, train_dataset=ListDataset(train_samples),
        eval_dataset=ListDataset(dev_samples) if has_dev else None, data_collator=collator,
        processing_class=tokenizer, callbacks=[progress, *(callbacks or [])], head=head,
    )
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as HFProgress

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgress)
    progress.trainer = trainer
    for cb in callbacks or []:
        if callable(getattr(cb, "bind_trainer", None)):  # callbacks that need the Trainer itself (token counts)
            cb.bind_trainer(trainer)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "train_config.yaml", dump_config(cfg))

    t_train = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - t_train
    tokens_total = progress._global_tokens()
    state = trainer.state
    if trainer.resumed_finished:
        finished = _finished_run(out, state.global_step)
        done = f"the run is complete: {resume_from.name} is at step {state.global_step} of {state.max_steps}"
        if finished is not None:
            _log(f"{done}; nothing to train (resume with more epochs or a larger max_steps to train on)", stream)
            return finished
        _log(f"{done}; writing the adapter and summary.json that the stopped run did not write", stream)

    # -- save + verify the adapter (main process) -----------------------------------------------------
    adapter_dir = out / "adapter"
    summary_path = out / "summary.json"
    summary: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        peft_model = trainer.model
        save_adapter(peft_model, tokenizer, tpl, adapter_dir, config_yaml=dump_config(cfg))
        probe = torch.tensor([train_samples[0]["input_ids"][:64]], device=next(peft_model.parameters()).device)
        with trainer.accelerator.autocast():
            stats = verify_adapter(peft_model, adapter_dir, trained=state.global_step > 0, probe_ids=probe,
                                   atol=1e-4 if dtype == "fp32" else 5e-2)
        losses = [v for _, v in train_losses(state.log_history)]
        dev = dev_losses(state.log_history)
        best = min(dev, key=lambda x: x[1]) if dev else None
        summary = {
            "model": str(cfg.model),
            "model_path": model_path,
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
            "train_tokens": tokens_total,
            "train_seconds": round(train_seconds, 2),
            "tokens_per_second": round(tokens_total / train_seconds, 2) if train_seconds > 0 else None,
            "total_seconds": round(time.perf_counter() - t_start, 2),
            "peak_memory_mb": _peak_memory_mb(device),
            "resumed_from": str(resume_from) if resume_from else None,
            "processes": args.world_size,
            "dtype": dtype,
            "device": device,
            "threads": torch.get_num_threads() if device == "cpu" else None,
            "packing": packing_mode,
            "loss_weighting": cfg.loss_weighting,
            "lora": {"rank": cfg.lora.rank, "alpha": cfg.lora.alpha, "target_modules": targets,
                     "trainable_parameters": n_train},
            "data": {"train": train_stats.to_dict(), "dev": dev_stats.to_dict() if dev_stats else None},
            "adapter_check": stats,
            "samples": progress.samples,
            "train_runtime_reported": getattr(train_output, "metrics", {}).get("train_runtime"),
        }
        atomic_write(summary_path, json.dumps(summary, ensure_ascii=False, indent=2))
        atomic_write(out / "log_history.json", json.dumps(state.log_history, ensure_ascii=False, indent=1))
        _log(f"saved adapter to {adapter_dir} ({stats['tensors']} tensors, |lora_B| {stats['lora_B_norm']:.3g}, "
             f"reload max |logit diff| {stats['reload_max_logit_diff']:.2g}); summary in {summary_path}"
             + (f"; dev loss {dev[0][1]:.4f} -> best {best[1]:.4f} at step {best[0]}" if best else ""), stream)
    release_process_group()
    return TrainResult(output_dir=out, adapter_dir=adapter_dir, summary_path=summary_path, summary=summary)


def release_process_group() -> None:
    """Close the process group the Trainer opened under torchrun, every rank together: a rank that exits with
    gloo's threads still running can abort ("terminate called without an active exception"), seen on a
    loaded machine."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _peak_memory_mb(device: str) -> float | None:
    """Peak GPU memory on CUDA, else this process's peak resident memory."""
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    except (ImportError, OSError):
        return None

