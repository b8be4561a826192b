"""OpenAI chat messages as clients such as SillyTavern send them -> the engine's (system, alternating turns).

    system, messages = to_conversation(req.messages)
    check_fields(req)       # 400 naming a field that would change the answer and is not supported

The rule (docs/sillytavern.md, "How a request becomes a prompt"); no text is ever rewritten, each message's
text only finds its place:

    system text   the system (or developer) messages before the first user or assistant message, joined in
                  order with a newline ("\\n")
    turns         after that, every message sits on one side: assistant messages on the assistant's, user and
                  system messages on the user's; consecutive messages of one side are one turn, their texts
                  joined in order with a newline.  So a system message between turns is a line of the user turn
                  at its place (before the user's text when it comes before it, after it when it follows it),
                  and a trailing system instruction ("[Write the next reply only as Corvin.]") ends the last user
                  turn, or is the user turn when the assistant spoke last
    the end       the model answers as the assistant after a user turn; when the messages end with the
                  assistant's turn (a "continue"), a user turn "(continue)" asks for its next line, as the Scene
                  tab does (tunesmith.scene)
    no turns      system messages alone: the last one is the user turn, the ones before it the system text

One opening assistant turn (a character's greeting) may come first.  "Name: " prefixes (SillyTavern's group
chats) stay in the text.  A message's `name` field is not used (SillyTavern writes names into the text).
"""

from __future__ import annotations

from tunesmith.conversation import Message
from tunesmith.scene import CONTINUE_LINE
from tunesmith.serve.schema import APIError, ChatCompletionRequest, ChatMessage, TextPart

SYSTEM_ROLES = ("system", "developer")
_SIDE = {"user": "user", "assistant": "assistant", "system": "user", "developer": "user"}

# Fields that change the answer when set to anything but the value given here, and that the engine cannot honour:
# refused with a 400 naming them (an empty logit_bias, logprobs false and the like are accepted).
_NEUTRAL: dict[str, tuple] = {
    "logit_bias": (None, {}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "best_of": (None, 1),
    "echo": (None, False),
    "suffix": (None, ""),
    "typical_p": (None, 1, 1.0),
    "top_a": (None, 0, 0.0),
    "tfs": (None, 1, 1.0),
    "mirostat": (None, 0),
    "mirostat_mode": (None, 0),
    "prediction": (None,),
}
_WHY = {"logit_bias": "per-token biases are not supported; send {} or leave it out",
        "logprobs": "token log-probabilities are not returned; send false or leave it out",
        "top_logprobs": "token log-probabilities are not returned; send 0 or leave it out"}


def _text(content: str | list[TextPart] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.type != "text":
            raise APIError(400, f"messages[{index}]: only text content is supported (got a {part.type!r} part)",
                           param=f"messages[{index}].content")
        parts.append(part.text)
    return "".join(parts)


def to_conversation(messages: list[ChatMessage]) -> tuple[str | None, list[Message]]:
    """OpenAI messages -> (system text or None, user/assistant turns ending with the user's), by the rule above."""
    if not messages:
        raise APIError(400, "messages must not be empty (expected at least one user message)", param="messages")
    texts = []
    for i, m in enumerate(messages):
        if m.role not in _SIDE:
            raise APIError(400, f"messages[{i}]: role {m.role!r} is not supported (expected system, user or "
                                "assistant)", param=f"messages[{i}].role")
        texts.append(_text(m.content, i))
    first_turn = next((i for i, m in enumerate(messages) if m.role not in SYSTEM_ROLES), None)
    if first_turn is None:  # instructions alone: the last one is what to answer
        first_turn = len(messages) - 1
        turns = [Message("user", texts[-1])]
    else:
        turns = []
        for m, text in zip(messages[first_turn:], texts[first_turn:]):
            side = _SIDE[m.role]
            if turns and turns[-1].role == side:
                turns[-1] = Message(side, turns[-1].content + "\n" + text)
            else:
                turns.append(Message(side, text))
    if turns[-1].role == "assistant":  # the assistant spoke last: ask for its next line
        turns.append(Message("user", CONTINUE_LINE))
    system = "\n".join(texts[:first_turn]) if first_turn else None
    return system, turns


def check_fields(req: ChatCompletionRequest) -> None:
    """Refuse (400, naming the field) a field that would change the answer and that the server cannot honour."""
    extra = req.model_extra or {}
    for field, neutral in _NEUTRAL.items():
        if field in extra and not any(_same(extra[field], v) for v in neutral):
            why = _WHY.get(field, "not supported by this server; leave it out")
            raise APIError(400, f"{field}: {why} (got {_short(extra[field])})", param=field)


def _same(value, neutral) -> bool:
    if isinstance(value, bool) != isinstance(neutral, bool):  # 1 == True in Python: a flag is only a flag
        return False
    return value == neutral


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
