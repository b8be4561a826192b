"""The pairs file of `data make-pairs`: what it holds, how a rerun reads it back, how it is written.

One file may hold the pairs of several strategies (a rerun with another --strategy adds its pairs to the
same OUT).  A pair is known by its key, (strategy, kind, prompt id, reference):
    reference   ("reference", "", prompt id, the reference)  no meta.strategy: pairs made before there were
                                                              strategies read as these, byte for byte the same
    rank        ("rank", "", prompt id, "")                  one pair per prompt, whatever its references
    negatives   ("negatives", kind, prompt id, the reference) meta.negative = kind
Pairs of one (strategy, kind) made with other settings (meta.made_by) are refused, not mixed; pairs of the
other strategies are kept.  The final file is written atomically in the data's order (per conversation: its
reference pair, its prompt's rank pair, then its negatives in KINDS order), then the pairs of prompts that
are not in this data, in their earlier order.
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
from tunesmith.data.pair_negatives import KINDS
from tunesmith.data.records import strict_loads
from tunesmith.errors import DataError
from tunesmith.fsio import atomic_write_lines
from tunesmith.preference import PAIR, PLAIN, kind_of

REFERENCE, RANK, NEGATIVES = "reference", "rank", "negatives"
STRATEGIES = (REFERENCE, RANK, NEGATIVES)
# Every (strategy, kind) a pair can have, in the order the final file lists them per conversation.
GROUPS = ((REFERENCE, ""), (RANK, ""), *((NEGATIVES, k) for k in KINDS))

Key = tuple[str, str, str, str]


@dataclass
class Item:
    key: tuple[str, str]  # (prompt id, reference answer)
    prompt_id: str
    system: str | None
    prompt: list[Message]
    reference: str
    meta: dict[str, Any]


def prompt_chars(it: Item) -> int:
    """How long an item's prompt is (system + turns, in characters): what a padded batch pads to."""
    return len(it.system or "") + sum(len(m.content) for m in it.prompt)


def note(msg: str) -> None:
    print(f"[make-pairs] {msg}", file=sys.stderr, flush=True)


def items_of(convs: Sequence[Conversation], where: str) -> list[Item]:
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
        out.append(Item((pid, conv.answer), pid, conv.system, prompt, conv.answer, dict(conv.meta)))
    return out


def group_of(conv: Conversation) -> tuple[str, str]:
    """(strategy, kind) of a pair in the file (no meta.strategy: a reference pair)."""
    return str(conv.meta.get("strategy", REFERENCE)), str(conv.meta.get("negative", ""))


def pair_key(conv: Conversation) -> Key:
    strategy, kind = group_of(conv)
    return (strategy, kind, conv.meta["prompt_id"], "" if strategy == RANK else conv.answer)


def item_key(it: Item, strategy: str, kind: str = "") -> Key:
    return (strategy, kind, it.prompt_id, "" if strategy == RANK else it.reference)


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
                if group_of(conv) not in GROUPS:
                    raise DataError(f"unknown meta strategy/negative {group_of(conv)} (expected one of "
                                    f"{', '.join(STRATEGIES)}; negatives: {', '.join(KINDS)})", where)
            except (ValueError, UnicodeDecodeError, DataError) as e:
                if any(rest.strip() for rest in lines[i + 1:]):
                    msg = e.detail if isinstance(e, DataError) else f"not valid JSON ({e})"
                    raise DataError(f"{msg}; fix or delete {path.name}, or write to another -o file", where) from None
                note(f"{where}: dropped a torn last line (an earlier run was stopped while writing it)")
                with open(path, "r+b") as f:
                    f.truncate(offset)
                return out
            out.append(conv)
        offset += len(line) + 1
    if raw and not raw.endswith(b"\n"):
        with open(path, "ab") as f:
            f.write(b"\n")
    return out


def append(path: Path, convs: Sequence[Conversation]) -> None:
    """Add finished pairs to OUT and put them on disk before the next batch (what a kill can lose)."""
    if not convs:
        return
    text = "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in convs)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def finish(out: Path, items: Sequence[Item], done: dict[Key, Conversation], earlier: Sequence[Conversation],
           report: Any, nothing: str) -> None:
    """Rewrite OUT atomically in the data's order (then earlier pairs of prompts not in this data); `nothing`:
    the DataError's message when there is no pair at all."""
    seen: set[Key] = set()
    final: list[Conversation] = []
    for it in items:
        for strategy, kind in GROUPS:
            key = item_key(it, strategy, kind)
            if key in done and key not in seen:
                seen.add(key)
                final.append(done[key])
    for c in earlier:
        key = pair_key(c)
        if key not in seen:
            seen.add(key)
            final.append(c)
            report.kept_other += 1
    report.written = len(final)
    if not final:  # nothing was appended either: no empty file left behind
        raise DataError(nothing, str(out))
    atomic_write_lines(out, (json.dumps(c.to_dict(), ensure_ascii=False) for c in final))


__all__ = ["REFERENCE", "RANK", "NEGATIVES", "STRATEGIES", "GROUPS", "Item", "items_of", "group_of", "pair_key",
           "item_key", "read_pairs", "append", "finish", "note"]
