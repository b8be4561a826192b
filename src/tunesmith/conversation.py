"""The one data type that crosses stages: a `Conversation`.

Every importer returns Conversations, the template turns them into token ids and labels, the engine
formats chat history with the same template, eval compares their answers and the labeling store
exports them.  On disk a Conversation is one JSON line:

    {"system": "你是李白...", "messages": [{"role": "user", "content": "..."},
     {"role": "assistant", "content": "...", "loss": true}], "meta": {"source": "rolebench", "role": "李白"}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("user", "assistant")


@dataclass
class Message:
    role: str  # "user" or "assistant" (the system text lives on the Conversation)
    content: str
    # Only meaningful for assistant messages: whether this turn carries training loss.
    loss: bool = True

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.role == "assistant" and not self.loss:
            d["loss"] = False
        return d


@dataclass
class Conversation:
    messages: list[Message]
    system: str | None = None
    # Free-form metadata: source, role (character name), split, type, speaker, chapter, id ...
    meta: dict[str, Any] = field(default_factory=dict)

    # -- convenience -------------------------------------------------------------------------
    @property
    def prompt_messages(self) -> list[Message]:
        """Every message before the final assistant answer (what a model sees at inference)."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[:-1]
        return list(self.messages)

    @property
    def answer(self) -> str | None:
        """The final assistant message, or None when the conversation ends with the user."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[-1].content
        return None

    @property
    def opens_with_assistant(self) -> bool:
        """Whether the first message is the assistant's: a character's greeting, before any user message."""
        return bool(self.messages) and self.messages[0].role == "assistant"

    def validate(self, where: str | None = None) -> None:
        """Raise DataError unless roles alternate user/assistant and texts are strings.

        The first message is the user's, or one assistant message (a character's greeting) that the user
        answers: assistant, user, assistant, ...
        """
        from tunesmith.errors import DataError

        if not self.messages:
            raise DataError("conversation has no messages (expected at least one user message)", where)
        offset = 1 if self.messages[0].role == "assistant" else 0
        for i, m in enumerate(self.messages):
            if m.role not in ROLES:
                raise DataError(f"message {i}: role {m.role!r} is not one of {ROLES}", where)
            if not isinstance(m.content, str):
                raise DataError(f"message {i}: content must be a string (got {type(m.content).__name__})", where)
            expected = ROLES[(i + offset) % 2]
            if m.role != expected:
                raise DataError(f"message {i}: expected role {expected!r} (user and assistant must alternate, "
                                f"user first or after one opening assistant greeting), got {m.role!r}", where)
        if self.system is not None and not isinstance(self.system, str):
            raise DataError(f"system must be a string (got {type(self.system).__name__})", where)

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.system:
            d["system"] = self.system
        d["messages"] = [m.to_dict() for m in self.messages]
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | None = None) -> Conversation:
        from tunesmith.errors import DataError

        if not isinstance(d, dict):
            raise DataError(f"expected a JSON object with a \"messages\" list (got {type(d).__name__})", where)
        msgs = d.get("messages")
        if not isinstance(msgs, list):
            raise DataError('field "messages" must be a list of {"role", "content"} objects', where)
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise DataError(f'messages[{i}] must be an object with "role" and "content"', where)
            out.append(Message(role=m["role"], content=m["content"], loss=bool(m.get("loss", True))))
        system = d.get("system")
        conv = cls(messages=out, system=system or None, meta=dict(d.get("meta") or {}))
        conv.validate(where)
        return conv

    @classmethod
    def single_turn(cls, user: str, assistant: str | None = None, system: str | None = None,
                    **meta: Any) -> Conversation:
        msgs = [Message("user", user)]
        if assistant is not None:
            msgs.append(Message("assistant", assistant))
        return cls(messages=msgs, system=system, meta=dict(meta))
