"""Load any supported dataset format into Conversations, and save Conversations in any of them.

    from tunesmith.data import load, save
    convs = load("datasets/rolebench-zh/general/train.jsonl", "rolebench")
    convs = load("data/*.jsonl")                       # format detected from each file's first record
    convs = load("bad.jsonl", "alpaca", on_error="skip")   # bad records reported on stderr, then dropped
    save(convs, "out/train.jsonl")                     # our own JSONL (Conversation.to_dict())
    save(convs, "out/train.json", "sharegpt")          # a .json path writes a JSON array

The formats are the `FORMAT` objects of the modules in FORMAT_MODULES (see tunesmith.data.format);
`tunesmith data formats` lists them with their options, docs/data.md describes each one, and the
package docstring of tunesmith.data says how a new one is added.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data import (
    alpaca,
    card,
    context_target,
    conversation_jsonl,
    kto,
    messages,
    novel_dialogue,
    novel_text,
    rolebench_format,
    sharegpt,
    sillytavern,
    trl,
)
from tunesmith.data.format import Format
from tunesmith.data.records import expand_paths, read_records
from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write
from tunesmith.preference import kind_of

ON_ERROR = ("fail", "skip")
# Shown when skipping bad records: enough to see the pattern without flooding the terminal.
SHOW_FIRST_ERRORS = 5

# Every format, in the order `tunesmith data formats` lists them: each module exports its FORMAT.
FORMAT_MODULES = (rolebench_format, novel_text, novel_dialogue, context_target, alpaca, sharegpt, messages,
                  conversation_jsonl, trl, kto, card, sillytavern)
FORMATS: dict[str, Format] = {m.FORMAT.name: m.FORMAT for m in FORMAT_MODULES}
ALIASES: dict[str, str] = {alias: f.name for f in FORMATS.values() for alias in f.aliases}
# Shapes that contain other shapes are tried first: our own JSONL is a superset of OpenAI messages. A format
# with a detect that is not named here is tried after these, in FORMAT_MODULES order.
DETECT_FIRST = ("conversation", "messages", "sharegpt", "alpaca", "rolebench", "context-target", "novel-dialogue")
DETECT_ORDER = (*DETECT_FIRST,
                *(n for n, f in FORMATS.items() if f.detect is not None and n not in DETECT_FIRST))


def readable_formats() -> list[str]:
    """Formats of JSON records, most specific first (the order detection tries them in); a novel's plain text
    is read through its own format, `novel`, and is not among them."""
    return [n for n in DETECT_ORDER if FORMATS[n].read_file is None]


def writable_formats() -> list[str]:
    """Formats Conversations can be written as, our own `conversation` JSONL first."""
    names = [n for n, f in FORMATS.items() if f.export is not None]
    return sorted(names, key=lambda n: n != "conversation")


def claimed_by(path: Path) -> str | None:
    """The whole-file format (novel, card) that reads `path` when no format is named, or None: JSON records."""
    return next((n for n, f in FORMATS.items() if f.claims is not None and f.claims(path)), None)


def get_format(name: str) -> Format:
    key = ALIASES.get(name, name)
    if key not in FORMATS:
        raise ConfigError(f"unknown format {name!r} (expected one of: {', '.join(FORMATS)})")
    return FORMATS[key]


def detect_format(record: Any, where: str | None = None) -> str:
    """The format name whose shape matches one record (the first of a file), or DataError."""
    if isinstance(record, dict):
        for name in DETECT_ORDER:
            if FORMATS[name].detect(record):
                return name
        keys = ", ".join(sorted(record)) or "none"
        msg = f"cannot tell the format from this record (its keys: {keys})"
    else:
        msg = f"cannot tell the format: the record is a {type(record).__name__}, not a JSON object"
    shapes = "; ".join(f"{n}: {FORMATS[n].record}" for n in DETECT_ORDER)
    raise DataError(f"{msg} (expected one of {shapes}); pass the format explicitly (--from FORMAT)", where)


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error={on_error!r} (expected 'fail' or 'skip')")


def report_skipped(skipped: list[DataError], what: str) -> None:
    if not skipped:
        return
    shown = min(len(skipped), SHOW_FIRST_ERRORS)
    lines = [f"warning: skipped {len(skipped)} bad record(s) in {what}; the first {shown}:"]
    lines += [f"  {e}" for e in skipped[:SHOW_FIRST_ERRORS]]
    print("\n".join(lines), file=sys.stderr)


def load(path: str | os.PathLike | list, fmt: str | None = None, *, on_error: str = "fail", encoding: str = "auto",
         roles: Iterable[str] | str | None = None, limit: int | None = None, errors: list[DataError] | None = None,
         quiet: bool = False, **opts: Any) -> list[Conversation]:
    """Read a file, folder, glob or list of them into Conversations.

    fmt: a name from FORMATS, or None to detect it from each file's first record.
    on_error: "fail" raises DataError("FILE:LINE: what is wrong (expected ...)") at the first bad record;
        "skip" drops bad records, prints how many and the first few to stderr (unless quiet) and appends
        them to `errors` when a list is given.
    roles: keep only conversations whose meta.role is one of these (RoleBench roles, novel speakers).
    limit: keep at most this many conversations (after the role filter).
    opts: options of the format (see FORMATS[fmt].options), e.g. profiles=..., persona_template=...
    """
    _check_on_error(on_error)
    skip = on_error == "skip"
    fixed = get_format(fmt).name if fmt else None
    files = expand_paths(path)
    if isinstance(roles, str):
        roles = [roles]
    role_set = set(roles) if roles else None
    out: list[Conversation] = []
    skipped: list[DataError] = []
    for f in files:
        # Without a format, a file a whole-file format claims is read by it (a .txt: a novel; a .png: a card).
        whole = fixed or claimed_by(f)
        if whole and FORMATS[whole].read_file is not None:
            convs = FORMATS[whole].read_file(f, encoding=encoding, **opts)
        else:
            convs = _read_record_file(f, fixed, encoding, skipped if skip else None, opts)
        out.extend(c for c in convs if role_set is None or c.meta.get("role") in role_set)
    if skip and skipped:
        if errors is not None:
            errors.extend(skipped)
        if not quiet:
            report_skipped(skipped, str(path) if not isinstance(path, list) else ", ".join(map(str, path)))
    if limit is not None:
        out = out[: int(limit)]
    return out


def _read_record_file(f: Path, fixed: str | None, encoding: str, skipped: list[DataError] | None,
                      opts: dict[str, Any]) -> list[Conversation]:
    """The Conversations of one JSON-records file, its format fixed or detected from its first record.

    skipped: None to raise at the first bad record, or the list bad records are appended to (then skipped).
    """
    skip = skipped is not None
    records = read_records(f, encoding, errors=skipped)
    try:
        first = next(records)
    except StopIteration:  # every line was unparseable (already recorded in skip mode)
        return []
    except DataError as e:
        if skip:
            skipped.append(e)
            return []
        raise
    name = fixed or detect_format(first[1], first[0])
    form = FORMATS[name]
    if form.converter is None:  # pragma: no cover - every format reads
        raise ConfigError(f"format {name!r} cannot be read")
    convert = form.converter(f, **opts)
    out: list[Conversation] = []
    file_kind: str | None = None  # plain, pair or judged: the kind of this file's first good record
    try:
        for where, rec in itertools.chain([first], records):
            try:
                convs = convert(rec)
                file_kind = _same_kind(convs, file_kind)
                out.extend(convs)
            except DataError as e:
                err = DataError(e.detail, where)
                if not skip:
                    raise err from None
                skipped.append(err)
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                err = DataError(f"cannot read this record as {name} ({type(e).__name__}: {e}) "
                                f"(expected {form.record})", where)
                if not skip:
                    raise err from None
                skipped.append(err)
    except DataError as e:  # a broken JSON array cannot be resumed: skip the rest of this file
        if not skip or e in skipped:
            raise
        skipped.append(e)
    return out


def _same_kind(convs: list[Conversation], file_kind: str | None) -> str | None:
    """The file's kind after these conversations; DataError when one is of another kind than those before it.

    A file is all plain rows, all pairs or all judged answers: a mix is a mistake (a pair that lost its
    rejected answer trains as SFT without a word), so it is refused at the record that breaks the pattern.
    """
    for c in convs:
        k = kind_of(c)
        if file_kind is None:
            file_kind = k
        elif k != file_kind:
            raise DataError(f"this record is {k!r} but the ones before it in this file are {file_kind!r} (expected "
                            "one kind per file: all plain, all pairs or all judged answers)")
    return file_kind


def to_records(convs: Iterable[Conversation], fmt: str = "conversation") -> list[dict]:
    """Conversations -> records of a format (dicts), raising DataError naming the conversation that does not fit."""
    form = get_format(fmt)
    if form.export is None:
        writable = ", ".join(n for n, f in FORMATS.items() if f.export)
        raise ConfigError(f"cannot write format {form.name!r} (writable formats: {writable})")
    out = []
    for i, c in enumerate(convs):
        try:
            out.append(form.export(c))
        except DataError as e:
            # Name the conversation by position and, when known, by where it came from.
            label = " ".join(str(c.meta[k]) for k in ("source", "role", "question") if c.meta.get(k))
            hint = f" ({label[:60]})" if label else ""
            raise DataError(e.detail, f"conversation {i + 1}{hint}") from None
    return out


# One encoder for every line: json.dumps would build a new one per call (measurable on 30k+ lines).
_encode_line = json.JSONEncoder(ensure_ascii=False).encode


def dumps_records(records: Iterable[dict], as_array: bool = False) -> str:
    lines = [_encode_line(r) for r in records]
    if as_array:
        return "[\n" + ",\n".join(lines) + "\n]\n"
    return "".join(line + "\n" for line in lines)


def save(convs: Iterable[Conversation], path: str | os.PathLike, fmt: str = "conversation") -> Path:
    """Write Conversations as JSONL (a `.json` path writes one JSON array), atomically (temp file + os.replace)."""
    records = to_records(convs, fmt)  # convert everything first: a bad conversation must not leave a partial file
    p = Path(path)
    return atomic_write(p, dumps_records(records, as_array=p.suffix == ".json"))
