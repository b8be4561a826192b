"""Multi-turn history -> prompt token ids that fit the model.

    ids, kept = fit_prompt(tokenizer, template, system, messages, budget=2048 - 256, max_history_turns=10)

A *turn* is one user message and the assistant answer to it.  `max_history_turns=10` keeps the ten
most recent earlier turns (twenty messages) before the new question; 0 keeps none, None keeps all.
Then, while the prompt is longer than `budget` tokens (the model's context minus max_new_tokens), the
oldest remaining turn is dropped.  The system prompt is never dropped; when even the system prompt
plus the new question do not fit, PromptTooLongError says by how much.

The work is bounded by what fits, not by what was sent: the prompt is built from the newest turn
backwards (1, 2, 4, ... turns, then a binary search between the last that fit and the first that did
not), each piece is tokenized once, and a try stops at the first piece that cannot fit.  A piece whose
UTF-8 length alone proves it too long (see `bytes_per_token`) is never tokenized.  (Dropping one turn
at a time and re-encoding the rest made a 1,000-turn request cost minutes.)

With the tokenizer's own (Jinja) template, each message's text is found by rendering the whole
conversation up to it, so a prompt of k turns costs time quadratic in k; there at most
MAX_TEMPLATE_TURNS earlier turns are considered (a bound by design: 1,000 turns of a few words, which a
32k context holds, took 6 s to fit; 3,000 took 41 s).  Named templates (chatml, plain, instruction) render
each message once and keep every turn that fits.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError, DataError
from tunesmith.template import ChatTemplate, iter_segments

# Normalizers (NFKC, accent stripping) can shrink text before it is split: one token may then stand for
# up to 4 input bytes per byte of its own text.  Tokenizers without a normalizer are bounded exactly.
_NORMALIZER_SLACK = 4
_bytes_per_token: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
MAX_TEMPLATE_TURNS = 256


class PromptIds(list):
    """A prompt's token ids (a list), with `own`: the token ids of the assistant's earlier replies the prompt holds,
    each encoded alone and followed by OWN_SEPARATOR (None where nobody asked for them).  DRY's `own` scope reads
    them (infer/samplers.py); everything else sees a plain list of ids."""

    own: list[int] | None = None


# Ends each earlier reply in PromptIds.own: no token has this id, and DRY counts it as a sequence breaker, so a
# repeat never runs from one reply into the next.
OWN_SEPARATOR = -1


def own_reply_ids(tokenizer, messages: Sequence[Message]) -> list[int]:
    """The assistant messages' token ids, each alone and followed by OWN_SEPARATOR."""
    out: list[int] = []
    for m in messages:
        if m.role == "assistant" and m.content:
            out.extend(tokenizer(m.content, add_special_tokens=False)["input_ids"])
            out.append(OWN_SEPARATOR)
    return out


class PromptTooLongError(ConfigError):
    """The system prompt plus the last user message alone exceed the token budget."""


def check_messages(messages: Sequence[Message], where: str = "messages") -> None:
    """User first (or after one opening assistant greeting), then alternating, ending with the user message to
    answer; contents are valid Unicode strings."""
    if not messages:
        raise DataError("no messages (expected at least one user message)", where)
    offset = 1 if messages[0].role == "assistant" else 0  # a character's greeting opens the chat
    for i, m in enumerate(messages):
        expected = "user" if (i + offset) % 2 == 0 else "assistant"
        if m.role != expected:
            raise DataError(f"message {i} has role {m.role!r}, expected {expected!r} (user and assistant alternate, "
                            "user first or after one greeting, the last one is the user's)", where)
        if not isinstance(m.content, str):
            raise DataError(f"message {i}: content must be a string", where)
        check_text(m.content, f"message {i}", where)
    if messages[-1].role != "user":
        raise DataError("the last message must be the user's (the one to answer)", where)


def check_text(text: str, what: str, where: str = "messages") -> None:
    """JSON (and so the API and the web UI) can carry a lone UTF-16 surrogate such as "\\ud800"; it is no
    character, and the tokenizer fails on it with a TypeError deep inside the template."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(f"{what}: contains a lone UTF-16 surrogate (\\u{ord(text[e.start]):04x} at character "
                        f"{e.start}); expected valid Unicode text", where) from None


def trim_turns(messages: Sequence[Message], max_history_turns: int | None) -> list[Message]:
    """Keep the last `max_history_turns` complete turns before the final user message."""
    if max_history_turns is None:
        return list(messages)
    if max_history_turns < 0:
        raise ConfigError(f"max_history_turns: expected an integer >= 0 (got {max_history_turns})")
    history, question = list(messages[:-1]), messages[-1]
    keep = 2 * max_history_turns
    return (history[max(0, len(history) - keep):] if keep else []) + [question]


def bytes_per_token(tokenizer) -> int | None:
    """The most input bytes one token can stand for (None: unknown), so that a text of B bytes is at least
    B / bytes_per_token tokens: found without tokenizing it.  Computed once per tokenizer from its vocabulary
    (the longest token text, in UTF-8, which is never shorter than the bytes it stands for)."""
    try:
        return _bytes_per_token[tokenizer]
    except (KeyError, TypeError):
        pass
    try:
        vocab = tokenizer.get_vocab()
        longest = max((len(t if isinstance(t, bytes) else str(t).encode("utf-8", "surrogatepass")) for t in vocab),
                      default=0)
    except Exception:  # a tokenizer without a usable vocabulary: no shortcut, everything is tokenized
        longest = 0
    backend = getattr(tokenizer, "backend_tokenizer", None)
    exact = backend is not None and getattr(backend, "normalizer", None) is None
    value = longest * (1 if exact else _NORMALIZER_SLACK) if longest else None
    try:
        _bytes_per_token[tokenizer] = value
    except TypeError:
        pass
    return value


class _Encoder:
    """encode_prompt that gives up (None) as soon as the prompt is sure to exceed `budget`; pieces tokenized once."""

    def __init__(self, tokenizer, template: ChatTemplate, system: str | None, budget: int):
        self.tokenizer, self.template, self.system, self.budget = tokenizer, template, system, budget
        self.per_token = bytes_per_token(tokenizer)
        self.cache: dict[str, list[int]] = {}
        self.length = 0  # tokens of the last try
        self.complete = True  # False: the last try gave up early, and `length` is a lower bound

    def encode(self, messages: list[Message]) -> list[int] | None:
        ids: list[int] = []
        for _, text, _ in iter_segments(self.tokenizer, self.template, self.system, messages,
                                        add_generation_prompt=True):
            if not text:
                continue
            piece = self.cache.get(text)
            if piece is None:
                room = self.budget - len(ids)
                if self.per_token and len(text) > room * self.per_token // 4:  # a cheap first look: chars <= bytes
                    least = -(-len(text.encode("utf-8", "surrogatepass")) // self.per_token)
                    if least > room:
                        self.length, self.complete = len(ids) + least, False
                        return None
                piece = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                self.cache[text] = piece
            ids.extend(piece)
            if len(ids) > self.budget:
                self.length, self.complete = len(ids), False
                return None
        self.length, self.complete = len(ids), True
        return ids


def fit_prompt(tokenizer, template: ChatTemplate, system: str | None, messages: Sequence[Message], *,
               budget: int, max_history_turns: int | None = None) -> tuple[list[int], list[Message]]:
    """(prompt ids, messages kept).  Drops whole turns, oldest first, to fit `budget` tokens."""
    check_messages(messages)
    if system is not None:
        check_text(system, "the system prompt")
    kept = trim_turns(messages, max_history_turns)
    if template.name == "tokenizer":
        kept = trim_turns(kept, MAX_TEMPLATE_TURNS)
    history, question = kept[:-1], kept[-1:]
    encoder = _Encoder(tokenizer, template, system, budget)
    ids = encoder.encode(question)
    if ids is None:
        raise PromptTooLongError(
            f"the prompt is {'' if encoder.complete else 'at least '}{encoder.length} tokens "
            f"(system prompt + last user message) but only {budget} fit "
            "(model context minus max_new_tokens); shorten the message or lower max_new_tokens")

    def last(turns: int) -> list[Message]:
        return history[max(0, len(history) - 2 * turns):] + question if turns else question

    # Turns kept: `fits` fits, `fails` (if any) does not.  Grow 1, 2, 4, ... then bisect.  An opening greeting
    # (odd history) counts as the oldest turn.
    fits, fails, total = 0, None, (len(history) + 1) // 2
    step = 1
    while fits < total:
        n = min(step, total)
        got = encoder.encode(last(n))
        if got is None:
            fails = n
            break
        fits, ids = n, got
        step *= 2
    while fails is not None and fails - fits > 1:
        mid = (fits + fails) // 2
        got = encoder.encode(last(mid))
        if got is None:
            fails = mid
        else:
            fits, ids = mid, got
    return ids, last(fits)
