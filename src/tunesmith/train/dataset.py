"""Conversations -> token ids + labels -> batches (packed or padded).

    from tunesmith.train.dataset import encode_all, PackedCollator, PaddedCollator
    samples, stats = encode_all(convs, tokenizer, tpl, max_source_len=512, max_target_len=256)
    batch = PackedCollator()(samples[:8])   # one row, position_ids restart per sample, no padding

Packing here means flattening: the conversations of a batch are laid end to end in one row of
`sum(lengths)` tokens.  There is no padding at all, and no token attends to another conversation:
position ids restart at 0 for every conversation, and `cu_seq_lens` mark the boundaries for the
attention (`tunesmith.train.attention` runs causal attention per conversation; transformers' own
sdpa/eager masks derive the same block-diagonal mask from the restarting position ids).  Because a
packed batch holds the same conversations as the padded one, the loss (token-weighted mean over
answer tokens) is the same, only cheaper to compute.

With `sample_weights=True` both collators also emit `loss_weights` (shaped like `labels`): each learned
token of a conversation weighs 1 / (its number of learned tokens), so every conversation adds 1 to the
weight total and the weighted mean is the mean over conversations of their mean token loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.train.shared_prefix import IGNORE_INDEX, plan_row


@dataclass
class EncodeStats:
    conversations: int = 0
    samples: int = 0
    dropped_no_loss: int = 0  # nothing left to learn after the cutoffs (or no assistant answer at all)
    source_cut: int = 0  # prompt reached max_source_len (its middle was dropped)
    target_cut: int = 0  # final answer reached max_target_len (its tail was dropped)
    tokens: int = 0
    loss_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def encode_all(convs: Sequence[Any], tokenizer, tpl, *, max_source_len: int | None, max_target_len: int | None,
               train_on_prompt: bool = False, last_turn_only: bool = False) -> tuple[list[dict], EncodeStats]:
    """Encode conversations with the chat template; drop those with no loss token left."""
    from tunesmith.template import encode_conversation

    stats = EncodeStats(conversations=len(convs))
    out: list[dict] = []
    for conv in convs:
        ex = encode_conversation(tokenizer, tpl, conv, max_source_len=max_source_len, max_target_len=max_target_len,
                                 train_on_prompt=train_on_prompt, last_turn_only=last_turn_only)
        if not train_on_prompt:  # how many hit a cutoff (equal to the limit counts as cut: cheap and close)
            n_src = _source_len(ex)
            stats.source_cut += max_source_len is not None and n_src >= max_source_len
            stats.target_cut += max_target_len is not None and len(ex["input_ids"]) - n_src >= max_target_len
        labels = list(ex["labels"])
        if labels:
            labels[0] = IGNORE_INDEX  # nothing predicts the first token
        n_loss = sum(1 for t in labels if t != IGNORE_INDEX)
        if n_loss == 0:
            stats.dropped_no_loss += 1
            continue
        out.append({"input_ids": list(ex["input_ids"]), "labels": labels})
        stats.tokens += len(labels)
        stats.loss_tokens += n_loss
    stats.samples = len(out)
    return out, stats


def _source_len(ex: dict) -> int:
    """Tokens before the final answer's first learned token (what max_source_len counts)."""
    labels = ex["labels"]
    last = len(labels)
    # walk back over the final answer block (learned tokens and the non-learned filler after it)
    i = len(labels) - 1
    while i >= 0 and labels[i] == IGNORE_INDEX:
        i -= 1
    while i >= 0 and labels[i] != IGNORE_INDEX:
        last = i
        i -= 1
    return last


class ListDataset:
    """A map-style dataset over encoded samples (what the Trainer's samplers and dataloaders need)."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return self.samples[i]


class PackedCollator:
    """Flatten a batch into one row: input_ids/labels/position_ids of shape [1, total], no padding.

    `cu_seq_lens_q/k` and `max_length_q/k` (the flash-attention varlen convention) travel with the
    batch when `varlen_kwargs` is true; `num_tokens` (the conversations' own tokens) is what the progress
    display counts.  With `share_prefixes`, a prompt prefix that several conversations share is laid once
    (tunesmith.train.shared_prefix) and `packed_segments` tells tunesmith's packed attention what each
    segment sees; only that attention knows it, so only a model using it gets such rows.
    """

    def __init__(self, varlen_kwargs: bool = True, sample_weights: bool = False, share_prefixes: bool = False):
        self.varlen_kwargs = varlen_kwargs
        self.sample_weights = sample_weights
        self.share_prefixes = share_prefixes

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        return self.batch_of(plan_row(features, share=self.share_prefixes), features)

    def batch_of(self, row, features: list[dict]) -> dict[str, Any]:
        """The batch of a row already planned from `features` (the preference head keeps the row's
        placement to put its results back where the padded batch had them)."""
        import torch

        batch: dict[str, Any] = {
            "input_ids": torch.tensor([row.ids], dtype=torch.long),
            "labels": torch.tensor([row.labels], dtype=torch.long),
            "position_ids": torch.tensor([row.positions], dtype=torch.long),
            "num_tokens": sum(len(f["input_ids"]) for f in features),
        }
        if self.sample_weights:
            weights = [w for a, b, _, _ in row.segments for w in _sample_weights(row.labels[a:b])]
            batch["loss_weights"] = torch.tensor([weights], dtype=torch.float32)
        if self.share_prefixes and any(pb > pa for _, _, pa, pb in row.segments):
            batch["packed_segments"] = torch.tensor(row.segments, dtype=torch.int64)
        if self.varlen_kwargs:
            bounds = [0] + [b for _, b, _, _ in row.segments]
            cu = torch.tensor(bounds, dtype=torch.int32)
            longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
            batch.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
        return batch


class PaddedCollator:
    """Pad a batch to its longest sample (right padding, attention_mask, labels -100 on padding)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, sample_weights: bool = False):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.sample_weights = sample_weights

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        n = len(features)
        ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((n, longest), dtype=torch.long)
        weights = torch.zeros((n, longest), dtype=torch.float32)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            ids[i, :k] = torch.tensor(f["input_ids"], dtype=torch.long)
            lab = list(f["labels"])
            lab[0] = IGNORE_INDEX
            labels[i, :k] = torch.tensor(lab, dtype=torch.long)
            mask[i, :k] = 1
            if self.sample_weights:
                weights[i, :k] = torch.tensor(_sample_weights(lab), dtype=torch.float32)
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask,
                 "num_tokens": sum(len(f["input_ids"]) for f in features)}
        if self.sample_weights:
            batch["loss_weights"] = weights
        return batch


def _sample_weights(labels: list[int]) -> list[float]:
    """1 / (learned tokens) on each learned position of one conversation, 0 elsewhere."""
    n = sum(1 for t in labels if t != IGNORE_INDEX)
    w = 1.0 / n if n else 0.0
    return [w if t != IGNORE_INDEX else 0.0 for t in labels]
