"""OpenAI chat `{"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}` JSONL <-> Conversations.

    tunesmith data convert --from messages chat.jsonl out.jsonl
    tunesmith data convert --from conversation out.jsonl openai.jsonl --to messages

`make_converter` is also the reader of our own `conversation` JSONL (see
tunesmith.data.conversation_jsonl). OpenAI's `weight: 0` on an
assistant turn maps to loss=False and back. Content given as a list of `{"type": "text", "text": ...}`
parts is joined; tool calls and tool turns make the record an error (not representable).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.data.fields import check_options, require_object, type_name
from tunesmith.data.format import Format
from tunesmith.errors import DataError

NAME = "messages"
EXPECTED = '{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}'
OPTIONS = {"system": "system prompt for records without one (default: none)"}


def detect(rec: dict) -> bool:
    return isinstance(rec.get("messages"), list)


def _content(v: Any, i: int) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list):
        parts = []
        for j, p in enumerate(v):
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                raise DataError(f"messages[{i}].content[{j}] is not a text part "
                                f"(expected {{\"type\": \"text\", \"text\": str}})")
        return "".join(parts)
    raise DataError(f"messages[{i}].content must be a string (got {type_name(v)})")


def make_converter(source: str | None, require_answer: bool,
                   default_system: str | None) -> Callable[[Any], list[Conversation]]:
    def convert(rec: Any) -> list[Conversation]:
        require_object(rec, EXPECTED)
        raw = rec.get("messages")
        if not isinstance(raw, list):
            raise DataError(f'field "messages" must be a list (got {type_name(raw)}; expected {EXPECTED})')
        system = rec.get("system")
        if system is not None and not isinstance(system, str):
            raise DataError(f'field "system" must be a string (got {type_name(system)})')
        msgs: list[Message] = []
        for i, m in enumerate(raw):
            if not isinstance(m, dict):
                raise DataError(f"messages[{i}] must be an object (got {type_name(m)}; "
                                f"expected {{\"role\", \"content\"}})")
            role = m.get("role")
            if m.get("tool_calls") or role in ("tool", "function"):
                raise DataError(f"messages[{i}]: tool calls are not supported "
                                "(expected only system/user/assistant text)")
            content = _content(m.get("content"), i)
            if role in ("system", "developer"):
                if msgs:
                    raise DataError(f"messages[{i}]: a system message may only come first")
                system = content
                continue
            if role not in ("user", "assistant"):
                raise DataError(f"messages[{i}].role is {role!r} (expected 'system', 'user' or 'assistant')")
            # user first, or one opening assistant message (a character's greeting); then they alternate
            want = role if not msgs else ("user" if msgs[-1].role == "assistant" else "assistant")
            if role != want:
                raise DataError(f"messages[{i}]: expected role {want!r} (user and assistant must alternate, "
                                f"user first or after one opening greeting), got {role!r}")
            if role == "assistant" and not content.strip():
                raise DataError(f"messages[{i}]: empty assistant answer (expected a non-empty text)")
            loss = m.get("loss", True)
            if "weight" in m:
                loss = m["weight"] not in (0, False)
            msgs.append(Message(role, content, loss=bool(loss)))
        if not msgs:
            raise DataError(f'field "messages" has no user/assistant messages (expected {EXPECTED})')
        if require_answer and msgs[-1].role != "assistant":
            raise DataError("the last message is from the user "
                            "(expected the conversation to end with an assistant answer)")
        meta = rec.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise DataError(f'field "meta" must be an object (got {type_name(meta)})')
        meta = dict(meta) if meta else {}
        if source:
            meta.setdefault("source", source)
        return [Conversation(msgs, system or default_system, meta)]

    return convert


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    # A conversation may end with the user: prompt-only data for eval/generation. Training skips those.
    return make_converter(NAME, require_answer=False, default_system=opts.get("system") or None)


def export(conv: Conversation) -> dict:
    out: list[dict[str, Any]] = []
    if conv.system:
        out.append({"role": "system", "content": conv.system})
    for m in conv.messages:
        d: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.role == "assistant" and not m.loss:
            d["weight"] = 0
        out.append(d)
    return {"messages": out}


FORMAT = Format(NAME, EXPECTED, converter, export, detect, OPTIONS, aliases=("openai",))
