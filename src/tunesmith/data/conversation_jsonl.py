"""Our own JSONL, `Conversation.to_dict()` per line: `{"system"?, "messages": [...], "meta"?}` <-> Conversations.

    tunesmith data convert --from rolebench datasets/rolebench-zh/general/train.jsonl out.jsonl   # writes it
    tunesmith data stats out.jsonl                                                              # detects it

The record is OpenAI's `messages` plus a top-level `system` and `meta`, and `loss: false` on assistant turns
that carry no training loss, so it is read by the `messages` reader; it is the default output of every
command. A conversation may end with a user message (prompt-only data for evaluation).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data import messages
from tunesmith.data.fields import check_options
from tunesmith.data.format import Format

NAME = "conversation"
EXPECTED = ('{"system"?: str, "messages": [{"role": "user"|"assistant", "content": str, "loss"?: bool}], '
            '"meta"?: {}}')
OPTIONS: dict[str, str] = {}


def is_own_format(rec: dict) -> bool:
    """Our own JSONL (Conversation.to_dict()) rather than OpenAI's: it has meta or a top-level system."""
    return "meta" in rec or "system" in rec


def detect(rec: dict) -> bool:
    return messages.detect(rec) and is_own_format(rec)


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    return messages.make_converter(None, require_answer=False, default_system=None)


def export(conv: Conversation) -> dict:
    return conv.to_dict()


FORMAT = Format(NAME, EXPECTED, converter, export, detect, OPTIONS, aliases=("jsonl",))
