"""The preference trainers' LM head: per-token log-probabilities of the labelled positions only, in narrow tiles.

    from tunesmith.train.fused_head import answer_only_fused_head
    answer_only_fused_head(peft_model)     # after TRL's add_fused_lm_head (DPO and KTO trainers add it themselves)
    out = peft_model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    out.log_probs  # (batch, seq - 1), zero where labels[:, 1:] == -100; no (batch, seq, vocabulary) logits

TRL's DPO and KTO trainers never build full logits: `add_fused_lm_head` projects the final hidden states
through the LM head in tiles and folds them into log-probabilities (trl.kernels.chunked_logprob). On a device
with Triton (CUDA, XPU) it scores only the labelled positions, in fused kernels. Everywhere else (CPU, MPS) it
scores *every* position, prompt and padding included (static shapes for compiled backends), in tiles 32,768
vocabulary columns wide, and its torch fallback keeps about six fp32 copies of a tile alive. For 4 DPO pairs
of ~300 tokens on the 135M default (vocabulary 49,152) that is 2,400 x 32,768 x 4 bytes x 6 = ~1.9 GB, more
than the whole SFT step (bench/bench_preference_memory.py).

And TRL pads a batch: 4 pairs are 8 copies of the prompt (a 李白 persona is ~150 tokens of a ~300-token
sequence) plus padding, where SFT packs its 8 conversations into one row with a shared persona laid once
(tunesmith.train.shared_prefix): DPO's backbone activations were twice SFT's. With `packing` (data.packing, the
model's packed attention proven at start-up), the padded batch runs through the backbone the way SFT's does:
one row, no padding, a prompt shared by several sequences (both answers of a pair, a persona) computed once;
the per-token results go back to their (row, position) in TRL's padded layout, so TRL's loss sees the same
tensors.

Here, on devices without Triton, the same TRL kernel (ChunkedLogProbFunction, forward and backward untouched) gets only
the labelled positions (the answers, ~40 % of the tokens) and tiles VOCAB_CHUNK columns wide: the same
numbers, a few hundred MB less per 1,000 answer tokens. Where TRL's own path is already answer-only (Triton) or
handles what this does not (pre-shifted labels under context parallelism, MoE router logits, logit
soft-capping or scaling), the call goes to TRL's forward unchanged.
"""

from __future__ import annotations

import types

# Vocabulary columns per projection tile. The torch fallback keeps ~6 fp32 tiles of (tokens x VOCAB_CHUNK):
# 4,096 columns cost ~100 MB per 1,000 scored tokens and are still wide enough for full-speed matmuls.
VOCAB_CHUNK = 4096
_SCALING_KEYS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling")


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def answer_only_fused_head(model, outputs: tuple[str, ...], chunk_size: int = VOCAB_CHUNK,
                           packing: str | None = None) -> bool:
    """Re-patch the (PEFT-wrapped) model's fused LM head, which TRL's `add_fused_lm_head` installed, so that off
    Triton devices it scores only the labelled positions in `chunk_size`-wide tiles; `outputs`: the per-token
    fields the trainer reads (TRL's `outputs` argument). `packing` ("varlen" or "shared", on every device): the
    padded batch runs through the backbone as one packed row (tunesmith.train.shared_prefix), with "shared" a
    prompt that several sequences begin with laid once. False when the model's head scales or caps its logits
    (TRL's path stays as it is)."""
    base = _base_model(model)
    text_config = base.config.get_text_config()
    if any(getattr(text_config, key, None) is not None for key in _SCALING_KEYS):
        return False
    trl_forward = base.forward  # TRL's fused forward; the model's own one when fused_lm_head is False

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                **kwargs):
        plain = not fused_lm_head or shift_labels is not None or kwargs.get("output_router_logits") or \
            getattr(text_config, "output_router_logits", False)
        given = {k: v for k, v in kwargs.items() if v is not None}  # PEFT passes inputs_embeds=None and the like
        if not plain and packing and not args and set(given) <= {"input_ids", "attention_mask", "use_cache"}:
            return _packed_log_probs(self, given, labels, num_items_in_batch, outputs, chunk_size, packing)
        if plain or _triton_device(self):
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        return _answer_log_probs(self, args, kwargs, labels, num_items_in_batch, outputs, chunk_size)

    base.forward = types.MethodType(forward, base)
    return True


def _triton_device(model) -> bool:
    from trl.kernels.chunked_logprob import _use_triton

    return _use_triton(model.get_output_embeddings().weight.device)


def _packed_log_probs(model, kwargs, labels, num_items_in_batch, outputs, chunk_size: int, packing: str):
    """_answer_log_probs for a right- or left-padded batch, its rows packed into one (padding dropped, a shared
    prompt laid once with packing "shared"); the results are scattered back to the batch's (row, position)."""
    import torch

    from tunesmith.train.dataset import PackedCollator
    from tunesmith.train.shared_prefix import plan_row

    ids, attention = kwargs["input_ids"], kwargs.get("attention_mask")
    if attention is None:
        attention = torch.ones_like(ids)
    lengths = attention.sum(1).tolist()
    starts = attention.argmax(1).tolist()  # the first real token (0 when right-padded)
    features = [{"input_ids": ids[r, a:a + n].tolist(), "labels": labels[r, a:a + n].tolist()}
                for r, (a, n) in enumerate(zip(starts, lengths))]
    share = packing == "shared"
    row = plan_row(features, share=share)
    batch = PackedCollator(share_prefixes=share).batch_of(row, features)
    # on the batch's device, as the Trainer moves a collated batch (num_tokens is for the progress display only)
    packed = {k: v.to(ids.device) if hasattr(v, "to") else v for k, v in batch.items()
              if k not in ("labels", "num_tokens")}
    packed["use_cache"] = False
    out = _answer_log_probs(model, (), packed, batch["labels"].to(ids.device), num_items_in_batch,
                            outputs, chunk_size)
    # packed token k -> its flat (batch row, padded position) index
    where = torch.full((len(row.ids),), -1, dtype=torch.long)
    for (a, b, pa, pb), r in row.placed:
        where[a:b] = r * ids.shape[1] + starts[r] + (pb - pa) + torch.arange(b - a)
    src = where[1:].to(ids.device)  # log_probs[:, k] scores token k + 1
    keep = out.label_mask[0]
    target = src[keep] - 1  # the padded log-prob slot: position of the scored token, less one
    mask = torch.zeros(ids.shape[0] * ids.shape[1], dtype=torch.bool, device=ids.device)
    mask[target] = True
    mask = mask.view(ids.shape)[:, :-1].contiguous()
    if not torch.equal(mask, labels[:, 1:] != -100):
        raise AssertionError("packing the preference batch lost or moved a labelled token")

    def unpack(x):
        if x is None:
            return None
        flat = x.new_zeros(ids.shape[0] * ids.shape[1])
        flat = flat.index_put((target,), x[0][keep])
        return flat.view(ids.shape)[:, :-1]

    return type(out)(loss=out.loss, log_probs=unpack(out.log_probs), entropy=unpack(out.entropy),
                     log_sum_sq_probs=unpack(out.log_sum_sq_probs), mean_logits=unpack(out.mean_logits),
                     is_top1=unpack(out.is_top1), label_mask=mask, aux_loss=None)


def _answer_log_probs(model, args, kwargs, labels, num_items_in_batch, outputs, chunk_size: int):
    """TRL's FusedCausalLMOutput for `labels`, the head run on the labelled positions only."""
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput

    kwargs["use_cache"] = False
    hidden = model.base_model(*args, **kwargs).last_hidden_state[:, :-1]
    head = model.get_output_embeddings()
    labels = labels[:, 1:].to(head.weight.device)
    mask = labels != -100
    per_token = ChunkedLogProbFunction.apply(hidden.to(head.weight.device)[mask], head.weight, head.bias,
                                             labels[mask], 1.0, chunk_size, None, 1.0, outputs)
    # masked_scatter keeps an all-masked batch connected to the graph (a differentiable zero), as TRL does
    log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = (
        None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token)
    denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return FusedCausalLMOutput(loss=-log_probs.sum() / denominator, log_probs=log_probs, entropy=entropy,
                               log_sum_sq_probs=log_sum_sq_probs, mean_logits=mean_logits, is_top1=is_top1,
                               label_mask=mask, aux_loss=None)
