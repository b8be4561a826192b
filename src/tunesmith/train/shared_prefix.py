"""Shared prompt prefixes in a packed row: a persona (or an instruction) that several conversations of a batch
begin with is laid in the row once, and each of those conversations continues after it.

    from tunesmith.train.shared_prefix import plan_row
    row = plan_row(samples[:8])   # Row(ids, labels, positions, segments)

Role-play and task-format data repeat one long system text in every record (a 李白 persona and the template's
opening run to ~140 tokens of a ~220-token record), so a packed row of 8 conversations spends most of its compute
on 8 copies of the same tokens. Under causal attention the prefix's hidden states do not depend on what follows
it, so computing them once and letting every conversation of the group attend to them gives the same logits, the
same loss and the same gradients (the prefix's gradient is the sum of what each conversation sends back, as
with 8 copies):

- a group's prefix is a segment of its own (positions 0..P-1, causal attention, nothing learned);
- each member continues with its own tokens at positions P.. and attends to the prefix and causally to itself;
- a prefix only covers prompt tokens: every shared token, and the one after it, has label -100 in every member
  (so no logit is needed inside a prefix, and the loss counts each learned token exactly once).

`segments` tells the attention (tunesmith.train.attention) which keys each segment sees: one
(start, end, prefix_start, prefix_end) per segment, prefix_start == prefix_end when it sees no prefix.
Groups are found by sorting the batch's prompts and growing a group while the shared length times the members
does not shrink; a prefix shorter than MIN_SHARED tokens is not worth a segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_INDEX = -100  # a label that is not learned (the Trainer's and torch's cross-entropy convention)
MIN_SHARED = 16  # shorter common prefixes (a template's first tokens) are not worth the extra segment


@dataclass
class Row:
    ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    segments: list[tuple[int, int, int, int]] = field(default_factory=list)
    placed: list[tuple[tuple[int, int, int, int], int]] = field(default_factory=list)  # (segment, feature index)

    def add(self, ids, labels, first_position: int = 0, prefix: tuple[int, int] | None = None, sample=None) -> None:
        start = len(self.ids)
        self.ids.extend(ids)
        lab = list(labels)
        lab[0] = IGNORE_INDEX  # the previous segment's last token must not predict this one
        self.labels.extend(lab)
        self.positions.extend(range(first_position, first_position + len(ids)))
        pa, pb = prefix if prefix else (start, start)
        self.segments.append((start, len(self.ids), pa, pb))
        if sample is not None:
            self.placed.append((self.segments[-1], sample))


def shareable_length(labels) -> int:
    """How many leading tokens of a sample may go into a shared prefix: those before its first learned token,
    less one (the token after the prefix must not be learned either: no prefix logit is ever needed)."""
    first = next((i for i, t in enumerate(labels) if t != IGNORE_INDEX), len(labels))
    return max(0, first - 1)


def _common(a, b, limit: int) -> int:
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def prefix_groups(features: list[dict], min_shared: int = MIN_SHARED) -> list[tuple[int, list[int]]]:
    """[(shared length, [feature indices])]: every feature in exactly one group; length 0 for a lone one."""
    limits = [shareable_length(f["labels"]) for f in features]
    order = sorted(range(len(features)), key=lambda i: features[i]["input_ids"][: limits[i]])
    groups: list[tuple[int, list[int]]] = []
    for i in order:
        if groups:
            shared, members = groups[-1]
            head = features[members[0]]["input_ids"]
            p = _common(head, features[i]["input_ids"], min(shared if len(members) > 1 else limits[members[0]],
                                                            limits[i]))
            # join when the tokens saved do not shrink: p * (members) against shared * (members - 1)
            if p >= min_shared and p * len(members) >= shared * (len(members) - 1):
                groups[-1] = (p, members + [i])
                continue
        groups.append((0, [i]))
    return [(shared if len(members) > 1 else 0, members) for shared, members in groups]


def plan_row(features: list[dict], share: bool = True, min_shared: int = MIN_SHARED) -> Row:
    """One packed row of `features` in their order, or with `share` each group's shared prefix laid once (see
    the module docstring)."""
    row = Row()
    groups = prefix_groups(features, min_shared) if share else [(0, [i]) for i in range(len(features))]
    for shared, members in groups:
        if not shared:
            for i in members:
                row.add(features[i]["input_ids"], features[i]["labels"], sample=i)
            continue
        first = features[members[0]]
        start = len(row.ids)
        row.add(first["input_ids"][:shared], [IGNORE_INDEX] * shared)
        for i in members:
            f = features[i]
            row.add(f["input_ids"][shared:], f["labels"][shared:], first_position=shared,
                    prefix=(start, start + shared), sample=i)
    return row


def saving_line(samples: list[dict], batch_size: int, batches: int = 50) -> str:
    """What sharing saves on batches of `batch_size` taken in order from `samples` (the Trainer draws them
    shuffled again, so this is an estimate): e.g. 'a batch of 8 conversations computes 61% of their tokens'."""
    total = computed = 0
    for start in range(0, min(len(samples), batches * batch_size), batch_size):
        chunk = samples[start:start + batch_size]
        total += sum(len(f["input_ids"]) for f in chunk)
        computed += len(plan_row(chunk).ids)
    share = computed / total if total else 1.0
    return (f"a batch of {batch_size} conversations computes {share:.0%} of their tokens "
            f"(estimated on the first {min(batches, -(-len(samples) // batch_size))} batches)")
