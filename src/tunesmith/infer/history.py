"""Multi-turn history -> prompt token ids that fit the model.

    ids, kept = fit_prompt(tokenizer, template, system, messages, budget=2048 - 256, max_history_turns=10)

A *turn* is one user message and the assistant answer to it.  `max_history_turns=10` keeps the ten
most recent earlier turns (twenty messages) before the new question; 0 keeps none, None keeps all.
Then, while the prompt is longer than `budget` tokens (the model's context minus max_new_tokens), the
oldest remaining turn is dropped.  The system prompt is never dropped; when even the system prompt
plus the new question do not fit, PromptTooLongError says by how much.
"""

from __future__ import annotations

from collections.abc import Sequence

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError, DataError
from tunesmith.template import ChatTemplate, encode_prompt


class PromptTooLongError(ConfigError):
    """The system prompt plus the last user message alone exceed the token budget."""


def check_messages(messages: Sequence[Message], where: str = "messages") -> None:
    """User first, then alternating, ending with the user message to answer; contents are strings."""
    if not messages:
        raise DataError("no messages (expected at least one user message)", where)
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role != expected:
            raise DataError(f"message {i} has role {m.role!r}, expected {expected!r} "
                            "(user and assistant alternate, user first, the last one is the user's)", where)
        if not isinstance(m.content, str):
            raise DataError(f"message {i}: content must be a string", where)
    if messages[-1].role != "user":
        raise DataError("the last message must be the user's (the one to answer)", where)


def trim_turns(messages: Sequence[Message], max_history_turns: int | None) -> list[Message]:
    """Keep the last `max_history_turns` complete turns before the final user message."""
    if max_history_turns is None:
        return list(messages)
    if max_history_turns < 0:
        raise ConfigError(f"max_history_turns: expected an integer >= 0 (got {max_history_turns})")
    history, question = list(messages[:-1]), messages[-1]
    keep = 2 * max_history_turns
    return (history[len(history) - keep:] if keep else []) + [question]


def fit_prompt(tokenizer, template: ChatTemplate, system: str | None, messages: Sequence[Message], *,
               budget: int, max_history_turns: int | None = None) -> tuple[list[int], list[Message]]:
    """(prompt ids, messages kept).  Drops whole turns, oldest first, to fit `budget` tokens."""
    check_messages(messages)
    kept = trim_turns(messages, max_history_turns)
    ids = encode_prompt(tokenizer, template, system, kept)
    while len(ids) > budget and len(kept) > 1:
        kept = kept[2:]
        ids = encode_prompt(tokenizer, template, system, kept)
    if len(ids) > budget:
        raise PromptTooLongError(
            f"the prompt is {len(ids)} tokens (system prompt + last user message) but only {budget} fit "
            f"(model context minus max_new_tokens); shorten the message or lower max_new_tokens")
    return ids, kept
