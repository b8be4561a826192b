"""Deterministic train/dev splits that keep one question's answers on one side.

    tunesmith data split data/libai/train.jsonl --dev-ratio 0.05 --seed 42 -o data/libai_split

    from tunesmith.data.split import split_conversations
    train, dev = split_conversations(convs, dev_ratio=0.05, seed=42, group_by="question")

Grouping by question matters for RoleBench: a question has up to 5 answers, and if some land in train
and others in dev, dev loss measures memorisation, not generalisation. The group key is
(meta.role, meta.question) when present, else the prompt text (system + every message before the answer).
The same input, ratio and seed always give the same split (order of input preserved on each side).
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

from tunesmith.conversation import Conversation
from tunesmith.errors import ConfigError

GroupBy = Literal["question", "none"]


def group_key(conv: Conversation, group_by: str) -> str:
    if group_by == "none":
        return str(id(conv))
    q = conv.meta.get("question")
    if isinstance(q, str):
        return f"{conv.meta.get('role', '')}\x00{q}"
    parts = [conv.system or ""] + [m.content for m in conv.prompt_messages]
    return "\x00".join(parts)


def split_conversations(convs: list[Conversation], dev_ratio: float = 0.05, seed: int = 42,
                        group_by: str = "question") -> tuple[list[Conversation], list[Conversation]]:
    """(train, dev): round(groups * dev_ratio) groups (at least 1 when dev_ratio > 0 and there are 2+ groups) go to
    dev."""
    if not 0 <= dev_ratio < 1:
        raise ConfigError(f"dev ratio must be in [0, 1) (got {dev_ratio})")
    if group_by not in ("question", "none"):
        raise ConfigError(f"group_by={group_by!r} (expected 'question' or 'none')")
    if dev_ratio == 0 or len(convs) < 2:
        return list(convs), []
    keys: list[str] = []
    seen: set[str] = set()
    conv_keys = []
    for i, c in enumerate(convs):
        k = group_key(c, group_by) if group_by == "question" else str(i)
        conv_keys.append(k)
        if k not in seen:
            seen.add(k)
            keys.append(k)
    if len(keys) < 2:
        return list(convs), []
    n_dev = max(1, round(len(keys) * dev_ratio))
    n_dev = min(n_dev, len(keys) - 1)
    # Shuffle group keys sorted by a stable hash, so the split depends on content and seed, not on dict order.
    order = sorted(keys, key=lambda k: hashlib.sha1(k.encode("utf-8")).hexdigest())
    random.Random(seed).shuffle(order)
    dev_keys = set(order[:n_dev])
    train = [c for c, k in zip(convs, conv_keys) if k not in dev_keys]
    dev = [c for c, k in zip(convs, conv_keys) if k in dev_keys]
    return train, dev
