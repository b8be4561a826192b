"""The miner's records written out: cosplay JSONL, or Conversations as `--from novel-dialogue` reads them.

    from tunesmith.data.novel.output import extract_dialogue_file, write_dialogue
    write_dialogue(records, "out/sanguo.jsonl")                          # cosplay JSONL, written atomically
    extract_dialogue_file("西游记.txt", "out/xiyou.jsonl", fmt="conversation")   # the whole command
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.data.novel.extract import DEFAULT_CONTEXT_CHARS, extract_dialogue
from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write_lines

if TYPE_CHECKING:  # the importer is loaded lazily: extraction alone needs no data-layer import
    from tunesmith.conversation import Conversation

FORMATS = ("cosplay", "conversation")


def records_to_conversations(records: list[dict[str, Any]], book: str | None = None) -> list[Conversation]:
    """user = context, assistant = chat, exactly as `tunesmith data convert --from novel-dialogue` reads the
    cosplay JSONL: meta has source "novel-dialogue", role and speaker (when named), chapter, line, book."""
    from tunesmith.data.novel_dialogue import converter

    convert = converter(Path(book or "novel"))
    out = []
    for r in records:
        rec = {k: v for k, v in r.items() if not (k == "speaker" and not v)}  # the importer wants a name or no key
        if book:
            rec["book"] = book
        out.extend(convert(rec))
    return out


def write_jsonl_atomic(rows: Iterable[dict[str, Any]], out: str | os.PathLike) -> int:
    """Write JSON lines to `out` in one step (never a half-written file); returns how many."""
    out = Path(out)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise DataError("output folder does not exist", str(folder))
    if out.is_dir():
        raise DataError("output is a directory (expected a .jsonl file name)", str(out))
    return atomic_write_lines(out, (json.dumps(row, ensure_ascii=False) for row in rows))


def write_dialogue(
    records: list[dict[str, Any]], out: str | os.PathLike, fmt: str = "cosplay", book: str | None = None
) -> int:
    """Write records as cosplay JSONL ({context, chat, speaker, chapter, line}) or Conversation JSONL."""
    if fmt == "cosplay":
        return write_jsonl_atomic(records, out)
    if fmt == "conversation":
        return write_jsonl_atomic((c.to_dict() for c in records_to_conversations(records, book)), out)
    raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")


def extract_dialogue_file(
    novel: str | os.PathLike,
    out: str | os.PathLike,
    *,
    context_chars: int = DEFAULT_CONTEXT_CHARS,
    encoding: str = "auto",
    fmt: str = "cosplay",
    speaker: str | None = None,
) -> dict[str, Any]:
    """`tunesmith data extract-dialogue`: mine `novel`, write `out`, return the counts for the summary line."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    folder = Path(out).parent
    if str(folder) and not folder.is_dir():
        raise DataError("output folder does not exist", str(folder))
    stats: dict[str, Any] = {}
    records = extract_dialogue(
        Path(novel), context_chars=context_chars, encoding=encoding, speaker=speaker, stats=stats
    )
    stats["written"] = write_dialogue(records, out, fmt, book=Path(novel).stem)
    stats["written_with_speaker"] = sum(1 for r in records if r["speaker"])
    return stats
