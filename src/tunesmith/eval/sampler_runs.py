"""`eval --sampler`: the same models answering under several samplers, as columns of one report.

    tunesmith eval -a 李白=runs/libai/adapter -d test.jsonl -o report/ --sampler greedy --sampler recommended
    tunesmith eval ... --sampler greedy --sampler "dry=dry_multiplier=0.8,dry_allowed_length=4"

A sampler is one of:
  greedy          the eval's own generation settings (its flags; greedy decoding unless --do-sample)
  recommended     each adapter's recommended sampler (its generation.json) over those settings; a model that has
                  none (the base, an adapter trained without a `generation:` key) is not asked again, since its
                  answers would repeat its greedy ones
  NAME=k=v,...    these generation fields over the eval's settings, for every model (NAME labels the column)

The answer length stays the eval's (`max_new_tokens` and `n` of a generation.json are not taken), so every
column answers under the same limit.  A sampler that samples and names no seed gets seed 0: a rerun
reproduces its answers, and resuming works as for greedy ones.  Columns are named after the model, with
" @NAME" for every sampler but greedy (whose columns keep the plain names, as without --sampler).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError

GREEDY = "greedy"
RECOMMENDED = "recommended"
# Fields of a recommended sampler that would make one column answer under another length than the others.
NOT_FROM_RECOMMENDED = ("max_new_tokens", "n")
_LABEL = re.compile(r"[\w.-]+")
# "k=v,k=v": a comma starts a new field only where a key and '=' follow (a breaker list may hold commas).
_FIELD_SPLIT = re.compile(r",(?=\s*[A-Za-z_]\w*\s*=)")


@dataclass(frozen=True)
class Sampler:
    label: str  # greedy, recommended, or the NAME of NAME=k=v,...
    changes: Mapping[str, Any] = field(default_factory=dict)  # generation fields over the eval's settings


@dataclass(frozen=True)
class Column:
    """One report column: a model answering under one sampler."""

    name: str  # the column's name: the model's, plus " @label" unless greedy
    model: str  # base or an adapter name
    sampler: str  # the sampler's label
    changes: Mapping[str, Any] = field(default_factory=dict)


def parse_sampler(spec: str) -> Sampler:
    """One --sampler value -> Sampler (ConfigError naming the value when it is not one of the three forms)."""
    text = spec.strip()
    if text in (GREEDY, RECOMMENDED):
        return Sampler(text)
    label, sep, body = text.partition("=")
    label = label.strip()
    if not sep or not _LABEL.fullmatch(label) or not body.strip():
        raise ConfigError(f"--sampler {spec!r}: expected greedy, recommended or NAME=key=value,... "
                          "(e.g. dry=dry_multiplier=0.8,dry_allowed_length=4)")
    if label in (GREEDY, RECOMMENDED):
        raise ConfigError(f"--sampler {spec!r}: {label!r} is a built-in sampler; give yours another NAME")
    changes: dict[str, str] = {}
    for part in _FIELD_SPLIT.split(body):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--sampler {spec!r}: {part!r} is not key=value")
        changes[key.strip()] = value.strip()
    return Sampler(label, changes)


def parse_samplers(specs: Sequence[str] | None) -> list[Sampler]:
    """Every --sampler value, in order (default: greedy alone); a label given twice is refused."""
    samplers = [parse_sampler(s) for s in (specs or [GREEDY])]
    labels = [s.label for s in samplers]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ConfigError(f"--sampler: {', '.join(twice)} given twice (each sampler is one set of columns)")
    return samplers


def recommended_of(folder: str | Path) -> dict[str, Any]:
    """An adapter's recommended sampler for eval: its generation.json less the length fields ({} when none)."""
    from tunesmith.infer.options import load_generation

    found = load_generation(folder) or {}
    return {k: v for k, v in found.items() if k not in NOT_FROM_RECOMMENDED}


def columns(samplers: Sequence[Sampler], models: Sequence[str], adapters: Mapping[str, str]) -> list[Column]:
    """The report's columns: each sampler's models in order (recommended: only the adapters that have one)."""
    out: list[Column] = []
    for s in samplers:
        for m in models:
            if s.label == GREEDY:
                out.append(Column(m, m, GREEDY))
                continue
            changes = s.changes if s.label != RECOMMENDED else (recommended_of(adapters[m]) if m in adapters else {})
            if s.label == RECOMMENDED and not changes:
                continue
            out.append(Column(f"{m} @{s.label}", m, s.label, dict(changes)))
    return out


def column_options(base_options, column: Column):
    """The GenerationOptions a column answers with: `base_options` (the eval's) with the column's changes; a
    sampling one without a seed gets seed 0.  ConfigError names the sampler and the field."""
    if not column.changes:
        return base_options
    try:
        opts = base_options.updated(column.changes)
    except ConfigError as e:
        where = "recommended (generation.json of adapter " + repr(column.model) + ")" \
            if column.sampler == RECOMMENDED else repr(column.sampler)
        raise ConfigError(f"--sampler {where}: {e}") from None
    if opts.sampling and opts.seed is None:
        opts = opts.updated({"seed": 0})
    if opts.n != 1:
        raise ConfigError(f"--sampler {column.sampler!r}: eval scores one answer per prompt, n must be 1")
    return opts


def sampler_note(cols) -> list[str]:
    """The report's note on which columns answered under which sampler (none when all are greedy)."""
    other = [c for c in cols if c.sampler != GREEDY]
    if not other:
        return []
    fields = {}
    for c in other:
        fields.setdefault(c.sampler, []).append(
            f"{c.model}: " + ", ".join(f"{k}={v}" for k, v in c.changes.items()))
    return ["samplers: columns named 'MODEL @NAME' answered with the eval's generation settings changed as "
            "follows (a sampling one seeded with 0 unless it names a seed); the plain columns decoded with the "
            "eval's settings: " + "; ".join(f"@{label} ({' | '.join(v)})" for label, v in fields.items())]
