"""`{"context": ..., "target": ...}` JSONL (information extraction / classification) <-> Conversations.

    tunesmith data convert --from context-target datasets/chatglm-mixed-ie-cls/mixed_train_dataset.jsonl ie.jsonl

user = context and assistant = target, both byte-for-byte: the context ends with "Answer: " (with the
trailing space) and training must see exactly what inference will send, so nothing is stripped.
meta.task is a guess used by eval and stats: "ie" when the target holds a ```json block, "cls" when the
target is a JSON list of strings, otherwise "text".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.data.fields import check_options, get_str, require_object
from tunesmith.data.format import Format
from tunesmith.data.records import strict_loads
from tunesmith.errors import DataError

NAME = "context-target"
EXPECTED = '{"context": str, "target": str}'
OPTIONS = {"system": "system prompt to add to every conversation (default: none)"}


def detect(rec: dict) -> bool:
    return "context" in rec and "target" in rec


def guess_task(target: str) -> str:
    if "```json" in target:
        return "ie"
    s = target.strip()
    if s.startswith("["):
        try:
            v = strict_loads(s)  # a target may hold anything, e.g. JSON nested thousands deep
        except ValueError:
            return "text"
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return "cls"
    return "text"


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    system = opts.get("system") or None

    def convert(rec: Any) -> list[Conversation]:
        require_object(rec, EXPECTED)
        context = get_str(rec, "context", EXPECTED)
        target = get_str(rec, "target", EXPECTED)
        meta = {"source": NAME, "task": guess_task(target)}
        return [Conversation([Message("user", context), Message("assistant", target)], system, meta)]

    return convert


def export(conv: Conversation) -> dict:
    if len(conv.messages) != 2 or conv.answer is None:
        raise DataError("context-target holds one prompt and one answer; this conversation has "
                        f"{len(conv.messages)} messages "
                        "(expected exactly user + assistant; use --to conversation or sharegpt for multi-turn data)")
    if conv.system:
        raise DataError("context-target has no system prompt field and this conversation has one "
                        "(expected no system text; use --to alpaca, sharegpt or messages to keep it)")
    return {"context": conv.messages[0].content, "target": conv.messages[1].content}


FORMAT = Format(NAME, EXPECTED, converter, export, detect, OPTIONS, aliases=("context_target",))
