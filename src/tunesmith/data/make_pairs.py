"""Preference pairs from a dataset and a model: chosen = the reference answer, rejected = what the model says.

    from tunesmith.data.make_pairs import MakePairsConfig, make_pairs
    rep = make_pairs(MakePairsConfig(data="data/libai/train.jsonl", out="data/libai/pairs.jsonl",
                                     model="default", adapter="runs/libai-sft/adapter"))
    rep.summary()   # 'wrote 412 pair(s) to data/libai/pairs.jsonl; 3 skipped: the model's answer equals ...'

then `tunesmith train RECIPE.yaml method=dpo data.train=data/libai/pairs.jsonl`.

Every conversation of the data (any format the data readers load) that ends with an assistant answer gives
one pair (tunesmith.preference's contract): the prompt is everything before that final answer, the chosen
answer is the reference, the rejected one the model's greedy answer to the same prompt, generated in
batches by the Engine with the adapter's saved template (the prompt it was trained on).  An answer equal to
the reference is no preference: it is skipped and counted.

Resumable: each batch's pairs are appended to OUT and flushed to disk before the next batch starts; a rerun
reads OUT back and skips every (prompt, reference) already there, keyed on a stable hash of the prompt
(`meta.prompt_id`, tunesmith.eval.testset.prompt_id); only prompts whose answer was skipped as equal to
the reference (they leave nothing in OUT) are asked again.  A torn last line (the run was killed mid-write) is
dropped with a note.  At the end OUT is rewritten atomically in the order of the data, so an interrupted run
continued to the end gives the same file as one uninterrupted run.  Pairs made with other settings (model,
adapter, template, max_new_tokens, dtype: `meta.made_by`) are refused, not mixed in.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.data.formats import load
from tunesmith.data.records import strict_loads
from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write_lines
from tunesmith.preference import PAIR, PLAIN, kind_of, make_pair, rejected

DEFAULT_MAX_NEW_TOKENS = 256


@dataclass
class MakePairsConfig:
    data: str | Path | Sequence[str | Path]
    out: str | Path
    model: str = "default"
    adapter: str | None = None  # a LoRA adapter folder (or NAME=PATH); None: the base model answers
    batch_size: int = 16
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    limit: int | None = None  # the first N conversations of the data only (after the role filter)
    roles: Sequence[str] | None = None  # only conversations of these roles (meta.role)
    fmt: str | None = None  # the data's format; None: detected
    dtype: str = "auto"
    device: str = "auto"
    template: str | None = None  # the base model's template (an adapter uses its own template.json)
    threads: int | None = None  # torch CPU threads (None: the cores free now, tunesmith.threads)


@dataclass
class MakePairsReport:
    path: Path
    written: int = 0  # pairs in OUT at the end
    generated: int = 0  # prompts the model answered in this run
    resumed: int = 0  # pairs found in OUT from an earlier run, not generated again
    skipped_equal: int = 0  # the model's answer equals the reference: no preference
    skipped_empty: int = 0  # the model answered nothing (a pair's rejected answer must be text)
    duplicates: int = 0  # conversations that repeat an earlier one (same prompt and reference): written once
    kept_other: int = 0  # pairs already in OUT whose prompt is not in this data (kept at the end)

    def summary(self) -> str:
        parts = [f"wrote {self.written} pair(s) to {self.path}",
                 f"{self.skipped_equal} skipped: the model's answer equals the reference",
                 f"{self.resumed} resumed from the file (not generated again)"]
        if self.skipped_empty:
            parts.append(f"{self.skipped_empty} skipped: the model's answer was empty")
        if self.duplicates:
            parts.append(f"{self.duplicates} repeated conversation(s) written once")
        if self.kept_other:
            parts.append(f"{self.kept_other} earlier pair(s) of prompts not in this data kept at the end")
        return "; ".join(parts)


@dataclass
class _Item:
    key: tuple[str, str]  # (prompt id, reference answer)
    prompt_id: str
    system: str | None
    prompt: list[Message]
    reference: str
    meta: dict[str, Any]


def _note(msg: str) -> None:
    print(f"[make-pairs] {msg}", file=sys.stderr, flush=True)


def _items(convs: Sequence[Conversation], where: str) -> list[_Item]:
    """The (prompt, reference) of each conversation, in data order; a DataError names one with no answer."""
    from tunesmith.eval.testset import prompt_id

    out = []
    for i, conv in enumerate(convs):
        at = f"{where} conversation {i + 1}"
        if conv.answer is None or len(conv.messages) < 2:
            raise DataError("must end with the assistant's reference answer after a user message (it becomes the "
                            "chosen answer; the model answers everything before it)", at)
        if not conv.answer.strip():
            raise DataError("the final assistant answer is empty (expected the reference answer)", at)
        if kind_of(conv, at) != PLAIN:
            raise DataError("is already a preference record (meta has rejected or label); make-pairs reads plain "
                            "prompt + reference conversations", at)
        prompt = list(conv.messages[:-1])
        pid = prompt_id(conv.system, prompt)
        out.append(_Item((pid, conv.answer), pid, conv.system, prompt, conv.answer, dict(conv.meta)))
    return out


def read_pairs(path: Path) -> list[Conversation]:
    """The pairs an earlier run left in `path`; a torn last line is cut off (with a note), any other bad line
    is a DataError naming PATH:LINE."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    out: list[Conversation] = []
    offset = 0  # byte offset of the current line
    for i, line in enumerate(lines):
        if line.strip():
            where = f"{path}:{i + 1}"
            try:
                conv = Conversation.from_dict(strict_loads(line.decode("utf-8")), where)
                if kind_of(conv, where) != PAIR or "prompt_id" not in conv.meta or "made_by" not in conv.meta:
                    raise DataError("not a pair written by make-pairs (expected meta rejected, prompt_id, made_by)",
                                    where)
            except (ValueError, UnicodeDecodeError, DataError) as e:
                if any(rest.strip() for rest in lines[i + 1:]):
                    msg = e.detail if isinstance(e, DataError) else f"not valid JSON ({e})"
                    raise DataError(f"{msg}; fix or delete {path.name}, or write to another -o file", where) from None
                _note(f"{where}: dropped a torn last line (an earlier run was stopped while writing it)")
                with open(path, "r+b") as f:
                    f.truncate(offset)
                return out
            out.append(conv)
        offset += len(line) + 1
    if raw and not raw.endswith(b"\n"):
        with open(path, "ab") as f:
            f.write(b"\n")
    return out


def _append(path: Path, convs: Sequence[Conversation]) -> None:
    """Add finished pairs to OUT and put them on disk before the next batch (what a kill can lose)."""
    if not convs:
        return
    text = "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in convs)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _check_config(cfg: MakePairsConfig) -> dict[str, str]:
    """The adapter as {name: folder} (empty for the base), after the cheap checks of every option."""
    from tunesmith.adapter_spec import parse_adapter_specs
    from tunesmith.infer.adapters import adapter_folders

    for name in ("batch_size", "max_new_tokens"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: expected an integer >= 1 (got {v!r})")
    for name in ("limit", "threads"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"--{name}: expected an integer >= 1 (got {v!r})")
    out = Path(cfg.out)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder (expected the .jsonl file to write the pairs to)")
    adapters = parse_adapter_specs([cfg.adapter] if cfg.adapter else None)
    return {n: str(p) for n, p in adapter_folders(adapters).items()}  # a missing adapter: ModelError, exit 2


def _made_by(cfg: MakePairsConfig, adapters: dict[str, str], template: Any) -> str:
    """What produced the rejected answers; pairs from other settings are not mixed into one file."""
    from tunesmith.eval.predictions import signature

    adapter = next(iter(adapters.values()), None)
    return signature({"model": str(cfg.model), "adapter": str(Path(adapter).resolve()) if adapter else None,
                      "template": template.to_dict(), "max_new_tokens": cfg.max_new_tokens, "dtype": cfg.dtype})


def make_pairs(cfg: MakePairsConfig, engine: Any = None) -> MakePairsReport:
    """Write OUT: one pair per conversation of the data whose reference the model does not reproduce.

    `engine`: an Engine already loaded with the adapter (tests, scripts); else the model is loaded here.
    """
    adapters = _check_config(cfg)
    convs = load(cfg.data, cfg.fmt, roles=list(cfg.roles) if cfg.roles else None, limit=cfg.limit)
    where = str(cfg.data) if isinstance(cfg.data, (str, Path)) else "the data"
    items = _items(convs, where)
    if not items:
        raise DataError("no conversations to make pairs from", where)
    out = Path(cfg.out)
    earlier = read_pairs(out)  # before loading a model for minutes: a broken OUT is refused at once
    if engine is None:
        from tunesmith.infer.engine import Engine
        from tunesmith.model import resolve_device
        from tunesmith.threads import choose_threads

        threads = choose_threads(cfg.threads, resolve_device(cfg.device))
        threads.apply()
        _note(threads.line())
        _note(f"loading {cfg.model}" + (f" with adapter {next(iter(adapters.values()))}" if adapters else ""))
        engine = Engine.load(cfg.model, adapters=adapters, dtype=cfg.dtype, device=cfg.device,
                             template=cfg.template, max_batch_size=cfg.batch_size)
    adapter = next(iter(adapters), "base")
    made_by = _made_by(cfg, adapters, engine.template_for(adapter))
    other = [c for c in earlier if c.meta["made_by"] != made_by]
    if other:
        raise ConfigError(f"{out} holds pairs made with other settings (model, adapter, template, max_new_tokens or "
                          "dtype changed); write to another -o file, or delete it to start over")
    report = MakePairsReport(out)
    done = {(c.meta["prompt_id"], c.answer): c for c in earlier}
    answered = {c.meta["prompt_id"]: rejected(c) for c in earlier}  # a prompt's answer, for its other references
    todo: dict[tuple[str, str], _Item] = {}
    for it in items:
        if it.key in done:
            report.resumed += 1
        elif it.key in todo:
            report.duplicates += 1
        else:
            todo[it.key] = it
    if report.resumed:
        _note(f"{report.resumed} pair(s) already in {out}: not generated again")
    out.parent.mkdir(parents=True, exist_ok=True)
    if adapter != "base":
        # folded into the weights, the adapter decodes at the base's speed (fp32 only; see Engine.merge)
        engine.merge(adapter)
    try:
        _generate(engine, adapter, cfg, list(todo.values()), answered, done, made_by, report)
    finally:
        engine.unmerge()
    _finish(out, items, done, earlier, report)
    return report


def _generate(engine: Any, adapter: str, cfg: MakePairsConfig, todo: list[_Item], answered: dict[str, str],
              done: dict[tuple[str, str], Conversation], made_by: str, report: MakePairsReport) -> None:
    """Answer the prompts not answered yet, a batch at a time; append each batch's pairs to OUT."""
    from tunesmith.infer.options import GenerationOptions

    opts = GenerationOptions(max_new_tokens=cfg.max_new_tokens, do_sample=False)
    need = list({it.prompt_id: it for it in todo if it.prompt_id not in answered}.values())
    if need:
        _note(f"{len(need)} prompt(s) to answer with {'the base model' if adapter == 'base' else adapter}")
    # Longest prompts first: similar lengths share a batch (little padding) and the slowest come first.
    need.sort(key=lambda it: len(it.system or "") + sum(len(m.content) for m in it.prompt), reverse=True)
    waiting = {}
    for it in todo:
        waiting.setdefault(it.prompt_id, []).append(it)
    # One pass more than there are batches when none is needed: references of prompts answered by an earlier
    # run still become pairs.
    for start in range(0, len(need) + 1, cfg.batch_size):
        batch = need[start:start + cfg.batch_size]
        if batch:
            replies = engine.generate([(it.system, it.prompt) for it in batch], adapter=adapter, options=opts,
                                      batch_size=cfg.batch_size)
            answered.update({it.prompt_id: reply for it, reply in zip(batch, replies)})
            report.generated += len(batch)
        # every waiting (prompt, reference) whose prompt is now answered: its pair, or a skip
        ready = [pid for pid in waiting if pid in answered]
        pairs = []
        for pid in ready:
            for it in waiting.pop(pid):
                pair = _pair(it, answered[pid], made_by)
                if pair is None:
                    if answered[pid].strip():
                        report.skipped_equal += 1
                    else:
                        report.skipped_empty += 1
                else:
                    done[it.key] = pair
                    pairs.append(pair)
        _append(report.path, pairs)
        if batch:
            _note(f"{min(start + len(batch), len(need))}/{len(need)} prompts answered")


def _pair(it: _Item, answer: str, made_by: str) -> Conversation | None:
    """The pair of one reference and the model's answer; None when they are equal (nothing to prefer, also when
    they differ only in surrounding white space) or the answer is empty."""
    if answer.strip() == it.reference.strip() or not answer.strip():
        return None
    meta = {k: v for k, v in it.meta.items() if k not in ("rejected", "label")}
    return make_pair(it.prompt, it.reference, answer, system=it.system, **meta, prompt_id=it.prompt_id,
                     made_by=made_by)


def _finish(out: Path, items: Sequence[_Item], done: dict[tuple[str, str], Conversation],
            earlier: Sequence[Conversation], report: MakePairsReport) -> None:
    """Rewrite OUT atomically in the data's order (then earlier pairs of prompts not in this data)."""
    seen: set[tuple[str, str]] = set()
    final: list[Conversation] = []
    for it in items:
        if it.key in done and it.key not in seen:
            seen.add(it.key)
            final.append(done[it.key])
    for c in earlier:
        key = (c.meta["prompt_id"], c.answer)
        if key not in seen:
            seen.add(key)
            final.append(c)
            report.kept_other += 1
    report.written = len(final)
    if not final:  # nothing was appended either: no empty file left behind
        raise DataError(f"no pairs to write: the model's answer equals the reference (or is empty) for every "
                        f"conversation ({report.skipped_equal} equal, {report.skipped_empty} empty)", str(out))
    atomic_write_lines(out, (json.dumps(c.to_dict(), ensure_ascii=False) for c in final))


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "MakePairsConfig", "MakePairsReport", "make_pairs", "read_pairs"]
