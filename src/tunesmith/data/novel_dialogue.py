"""Novel dialogue `{"context", "chat", "speaker"?, "chapter"?}` JSONL (the cosplay format) <-> Conversations.

    tunesmith data convert --from novel-dialogue sanguo_dialogue.jsonl sanguo.jsonl

A record is the narrative up to the speaker and speech verb, and the quoted utterance:
    {"context": "曹仁回城中，与众商议。曹洪曰：", "chat": "“目今失了彝陵，势已危急……”"}
user = context, assistant = chat, both as in the data: the quotes “…” around the utterance are kept
(so the model learns to open and close the quote, and the chat UI shows what the book shows).
meta.role = meta.speaker when the record names the speaker; chapter and any other plain fields
(book, id, ...) are copied into meta.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.data.fields import check_options, get_str, require_object, type_name
from tunesmith.data.format import Format
from tunesmith.errors import DataError

NAME = "novel-dialogue"
EXPECTED = '{"context": str, "chat": str, "speaker"?: str, "chapter"?: str | int}'
OPTIONS = {"system": "system prompt to add to every conversation (default: none)"}


def detect(rec: dict) -> bool:
    return "context" in rec and "chat" in rec


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    system = opts.get("system") or None

    def convert(rec: Any) -> list[Conversation]:
        require_object(rec, EXPECTED)
        context = get_str(rec, "context", EXPECTED)
        chat = get_str(rec, "chat", EXPECTED)
        # The miner writes speaker "" when it cannot name one: the utterance is still good data.
        speaker = get_str(rec, "speaker", EXPECTED, required=False, allow_empty=True)
        chapter = rec.get("chapter")
        if chapter is not None and not isinstance(chapter, (str, int)):
            raise DataError(f'field "chapter" must be a string or an integer (got {type_name(chapter)})')
        meta: dict[str, Any] = {"source": NAME}
        if speaker:
            meta["role"] = speaker
            meta["speaker"] = speaker
        for k, v in rec.items():
            if k not in ("context", "chat", "speaker") and isinstance(v, (str, int, float, bool)):
                meta[k] = v
        return [Conversation([Message("user", context), Message("assistant", chat)], system, meta)]

    return convert


def export(conv: Conversation) -> dict:
    if len(conv.messages) != 2 or conv.answer is None:
        raise DataError("novel-dialogue holds one context and one utterance; this conversation has "
                        f"{len(conv.messages)} messages "
                        "(expected exactly user + assistant)")
    d: dict[str, Any] = {"context": conv.messages[0].content, "chat": conv.messages[1].content}
    for k in ("speaker", "chapter"):
        if conv.meta.get(k) is not None:
            d[k] = conv.meta[k]
    return d


FORMAT = Format(NAME, EXPECTED, converter, export, detect, OPTIONS, aliases=("novel_dialogue", "cosplay"))
