"""Preference records: a pair of answers (DPO, ORPO) or one judged answer (KTO), as Conversations.

Preference data crosses the same stages as SFT data (import, split, stats, labeling export, training), so
it is the same type with two keys in `meta`:

    pair:   the final assistant message is the *chosen* answer, meta["rejected"] the rejected one
            {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": CHOSEN}],
             "meta": {"rejected": REJECTED}}
    judged: the final assistant message is the completion, meta["label"] says whether it is desirable
            {"messages": [..., {"role": "assistant", "content": COMPLETION}], "meta": {"label": true}}

Everything before the final answer is the prompt, rendered by the chat template exactly as inference
renders it, so both answers of a pair are scored after the same prompt tokens.

    from tunesmith.preference import make_pair, kind_of
    conv = make_pair([Message("user", "你是谁？")], chosen="吾乃李白。", rejected="我是一个AI助手。")
    kind_of(conv)  # "pair"
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.errors import DataError

REJECTED = "rejected"  # meta key of a pair's rejected answer
LABEL = "label"  # meta key of a judged answer's verdict (True: desirable)
# meta key of a plain conversation's other answers (a chat front end's swipes): [{"message": index of an
# assistant message, "chosen": the answer kept there, "rejected": [the other answers]}]; alternative_pairs makes
# one pair of each
ALTERNATIVES = "alternatives"

PLAIN, PAIR, JUDGED = "plain", "pair", "judged"
KINDS = (PLAIN, PAIR, JUDGED)
# What each training method needs (sft trains on plain rows; a pair's chosen answer also works as SFT).
METHOD_KIND = {"sft": PLAIN, "dpo": PAIR, "orpo": PAIR, "kto": JUDGED}


def make_pair(prompt: Sequence[Message], chosen: str, rejected: str, system: str | None = None,
              **meta: Any) -> Conversation:
    """A pair: `prompt` (ending with a user message), then `chosen` as the answer, `rejected` in meta."""
    conv = Conversation(messages=[*prompt, Message("assistant", chosen)], system=system,
                        meta={**meta, REJECTED: rejected})
    conv.validate()
    return conv


def make_judged(prompt: Sequence[Message], completion: str, label: bool, system: str | None = None,
                **meta: Any) -> Conversation:
    """A judged answer for KTO: `completion` after `prompt`, desirable when `label` is True."""
    conv = Conversation(messages=[*prompt, Message("assistant", completion)], system=system,
                        meta={**meta, LABEL: bool(label)})
    conv.validate()
    return conv


def alternative_pairs(conv: Conversation) -> list[Conversation]:
    """The pairs of a plain conversation's meta.alternatives: for each entry, the conversation up to that
    assistant message as the prompt, its kept answer chosen against each other answer (none: no alternatives)."""
    out = []
    meta = {k: v for k, v in conv.meta.items() if k != ALTERNATIVES}
    for alt in conv.meta.get(ALTERNATIVES) or []:
        i = alt["message"]
        for n, other in enumerate(alt["rejected"]):
            out.append(make_pair(conv.messages[:i], alt["chosen"], other, conv.system,
                                 **meta, alternative={"message": i, "index": n}))
    return out


def kind_of(conv: Conversation, where: str | None = None) -> str:
    """PAIR, JUDGED or PLAIN; a DataError when the preference keys are malformed."""
    has_rejected, has_label = REJECTED in conv.meta, LABEL in conv.meta
    if not has_rejected and not has_label:
        return PLAIN
    if has_rejected and has_label:
        raise DataError(f'meta has both "{REJECTED}" (a pair) and "{LABEL}" (a judged answer); '
                        "expected one of them", where)
    if conv.answer is None:
        raise DataError("a preference record must end with the assistant answer it is about", where)
    if has_rejected:
        if not isinstance(conv.meta[REJECTED], str) or not conv.meta[REJECTED].strip():
            raise DataError(f'meta "{REJECTED}" must be a non-empty string (the rejected answer)', where)
        return PAIR
    if not isinstance(conv.meta[LABEL], bool):
        raise DataError(f'meta "{LABEL}" must be true or false (got {conv.meta[LABEL]!r})', where)
    return JUDGED


def rejected(conv: Conversation) -> str:
    """The rejected answer of a pair."""
    return conv.meta[REJECTED]


def label(conv: Conversation) -> bool:
    """The verdict of a judged answer."""
    return conv.meta[LABEL]


def kind_of_dataset(convs: Iterable[Conversation], where: str | None = None) -> str:
    """The one kind every conversation has (PLAIN for an empty set); a DataError naming the first misfit."""
    found = None
    for i, conv in enumerate(convs):
        at = f"{where} record {i + 1}" if where else f"record {i + 1}"
        k = kind_of(conv, at)
        if found is None:
            found = k
        elif k != found:
            raise DataError(f"this record is {k!r} but the ones before it are {found!r}; "
                            "a data set must be all plain, all pairs or all judged answers", at)
    return found or PLAIN


def check_method_data(method: str, kind: str, where: str | None = None) -> None:
    """Refuse data that the training method cannot use, saying what it expected."""
    need = METHOD_KIND[method]
    if kind == need or (method == "sft" and kind == PAIR):
        return
    shape = {PLAIN: "prompt and answer rows", PAIR: 'pairs (an answer plus meta "rejected")',
             JUDGED: 'judged answers (an answer plus meta "label": true/false)'}
    raise DataError(f"method {method!r} trains on {shape[need]}, but this data has {shape[kind]}", where)
