"""Checkpoints and the rules of an output folder: which checkpoint a run resumes from, and when it must not start.

    from tunesmith.train.checkpoints import resume_point, checkpoint_problem
    start = resume_point(cfg)        # start.resume_from: checkpoint-N or None; start.finished: a finished run's result
    checkpoint_problem(Path("runs/x/checkpoints/checkpoint-60"))   # "optimizer.pt is cut short", or None

The rules (docs/training.md, "Resume"): `resume=true` continues from the newest *complete* checkpoint and
fails when there is none; a fresh run into a folder that holds complete checkpoints fails unless
`overwrite=true`; incomplete checkpoints (what a run stopped while saving leaves) are moved aside, never
resumed from; resuming a run already at max_steps trains nothing and returns what that run left.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from tunesmith.errors import ConfigError
from tunesmith.train.runtime import dist_env, log
from tunesmith.train.summary import TrainResult, finished_run

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# A half-written checkpoint is renamed to this prefix + its name: no longer "checkpoint-N", so neither this
# module nor the Trainer's rotation of old checkpoints counts it, and the Trainer can save that step afresh.
INCOMPLETE_PREFIX = "incomplete-"


def checkpoints_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _torch_file_problem(path: Path) -> str | None:
    """Why a torch.save file cannot be loaded, or None. torch.save writes a zip archive whose index comes
    last, so a file cut short has none; the pickle that describes the tensors is read to check its CRC."""
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


def move_aside(ckpt: Path) -> Path:
    """Rename an incomplete checkpoint out of the Trainer's way; its files stay for whoever wants to look."""
    dest = ckpt.with_name(INCOMPLETE_PREFIX + ckpt.name)
    n = 2
    while dest.exists():
        dest = ckpt.with_name(f"{INCOMPLETE_PREFIX}{ckpt.name}-{n}")
        n += 1
    ckpt.rename(dest)
    return dest


def set_incomplete_aside(incomplete: list[tuple[Path, str]], then: str, rank: int, stream) -> None:
    """Move incomplete checkpoints aside (main process) and say so, then what happens instead."""
    for ckpt, why in incomplete:
        if rank == 0:
            dest = move_aside(ckpt)
            log(f"warning: {ckpt.name} is incomplete ({why}; what a run stopped while saving leaves): "
                 f"moved aside to {dest.name}", stream)
    if incomplete:
        log(then, stream)


@dataclass
class ResumePoint:
    """Where a run starts: from scratch (resume_from None), from a checkpoint, or not at all (finished)."""

    resume_from: Path | None = None
    finished: TrainResult | None = None  # resume=true on a run already at max_steps: what it left


def resume_point(cfg, stream=None) -> ResumePoint:
    """Apply the output-folder rules for `cfg` (a TrainConfig) to OUT/checkpoints; ConfigError when the run
    must not start. Moves incomplete checkpoints aside (main process only) and says so on `stream`."""
    rank = dist_env()[1]
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    if cfg.resume:
        return _resume(cfg, out, ckpt_dir, rank, stream)
    if checkpoints_in(ckpt_dir):
        if cfg.overwrite:
            if rank == 0:
                for p in checkpoints_in(ckpt_dir):
                    shutil.rmtree(p, ignore_errors=True)
        else:
            done, incomplete = pick_checkpoint(ckpt_dir)
            if done is not None:
                raise ConfigError(f"{ckpt_dir} already holds checkpoints of an earlier run: pass --resume to "
                                  "continue it, overwrite=true to start over, or another output_dir")
            # Only checkpoints that a run stopped while saving: nothing to resume, so the folder counts as empty.
            set_incomplete_aside(incomplete, f"{ckpt_dir} holds no complete checkpoint; starting from the "
                                 "beginning", rank, stream)
    return ResumePoint()


def _resume(cfg, out: Path, ckpt_dir: Path, rank: int, stream) -> ResumePoint:
    resume_from, incomplete = pick_checkpoint(ckpt_dir)
    if resume_from is None and incomplete:
        raise ConfigError(f"resume=true but {ckpt_dir} holds no complete checkpoint to resume from: "
                          + "; ".join(f"{c.name}: {why}" for c, why in incomplete)
                          + " (what a run stopped while saving leaves); run without --resume to start over "
                          "(incomplete checkpoints are then moved aside)")
    if resume_from is None:
        raise ConfigError(f"resume=true but {ckpt_dir} holds no checkpoint to resume from "
                          "(expected checkpoint-N folders with trainer_state.json written by an earlier run)")
    set_incomplete_aside(incomplete, f"resuming from {resume_from.name}, the newest complete checkpoint",
                         rank, stream)
    step = json.loads((resume_from / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    # The stock Trainer would train one step past max_steps from a checkpoint taken at max_steps.
    # Epoch-based runs learn their step count only in the Trainer: TunesmithTrainer stops those.
    if cfg.max_steps is not None and step >= cfg.max_steps:
        finished = finished_run(out, step)
        if finished is not None:
            log(f"the run is complete: {resume_from.name} is at step {step} and max_steps={cfg.max_steps}; "
                "nothing to train (resume with a larger max_steps to train on)", stream)
            return ResumePoint(resume_from, finished)
    return ResumePoint(resume_from)
