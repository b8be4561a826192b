"""Attention for packed (flattened) batches: causal attention per conversation, nothing across them.

A packed batch is one row holding several conversations; `cu_seq_lens_q` (from PackedCollator) marks
where each starts.  transformers passes these keyword arguments down to the attention function, so:

- with flash-attention 2/3 installed (CUDA), its varlen kernel uses them directly;
- otherwise the model runs with attention "tunesmith_packed" (registered here): for a packed row it
  runs `scaled_dot_product_attention(is_causal=True)` on each conversation's slice, which costs
  sum(len_i^2) instead of the (sum len_i)^2 a block-diagonal mask over the whole row would cost;
  for anything else (padded batches, generation) it is exactly transformers' sdpa;
- a row with shared prompt prefixes (tunesmith.train.shared_prefix) carries `packed_segments`: a
  conversation laid after its group's prefix attends to all of the prefix and causally to itself.

`check_packing(model)` proves on a small probe that packed logits equal per-conversation logits
before training starts (models with their own attention code may ignore position ids).

Under torch.compile (tunesmith.train.compiling) this function stays eager: its per-conversation loop
depends on the batch's boundaries, which would otherwise be baked into the compiled code and recompile it
for every batch. The boundaries travel as tensors so that the compiled layers around it guard on nothing
but shapes. The row is cut into its segments with one split (whose backward is one concatenation) rather
than a slice per segment (whose backward zero-fills a row-sized gradient for each).

On a CPU, a conversation's attention runs forward in sdpa's kernel and backward in `SegmentAttention`:
the backward recomputes the probabilities with one matmul and a softmax and takes their gradient with
softmax's own backward, five small matmuls in all.  CPU sdpa's fused (flash) backward spends ~10x its
forward on conversations of a few hundred tokens; this one is ~1.6x faster over forward + backward and as
close to fp32 as sdpa's math kernel (bench/bench_train_step_cpu.py, variant modifier "flashbwd" for the old
path).  It holds a (heads, n, keys) probability table per conversation while it runs, so conversations longer
than RECOMPUTE_MAX_CELLS query x key cells keep the fused backward.
"""

from __future__ import annotations

import functools

from tunesmith.errors import ConfigError

PACKED_ATTENTION = "tunesmith_packed"
RECOMPUTE_BACKWARD_ON_CPU = True  # False: sdpa's own backward (the bench's "flashbwd" modifier)
RECOMPUTE_MAX_CELLS = 1024 * 1024  # query x key positions of one conversation (x heads x 4 bytes while it runs)


def segment_sdpa(query, key, value, dropout: float = 0.0, scale=None):
    """sdpa of n queries over m >= n keys, the last n of them the queries' own (causal there), the first m - n a
    shared prefix every query sees."""
    import torch
    import torch.nn.functional as F

    n, m = query.shape[-2], key.shape[-2]
    mask = None if m == n else torch.ones(n, m, dtype=torch.bool, device=query.device).tril(diagonal=m - n)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=mask is None,
                                          dropout_p=dropout, scale=scale)


@functools.cache
def _segment_attention_class():
    import torch

    class SegmentAttention(torch.autograd.Function):
        """segment_sdpa forward (no dropout), recomputed-softmax backward (module docstring)."""

        @staticmethod
        def forward(ctx, query, key, value, scale):
            ctx.save_for_backward(query, key, value)
            ctx.scale = query.shape[-1] ** -0.5 if scale is None else scale
            return segment_sdpa(query, key, value, scale=scale)

        @staticmethod
        def backward(ctx, grad_out):
            query, key, value = ctx.saved_tensors
            s, n, m = ctx.scale, query.shape[-2], key.shape[-2]
            scores = torch.matmul(query * s, key.transpose(-1, -2))
            scores.masked_fill_(torch.ones(n, m, dtype=torch.bool, device=query.device).triu(1 + m - n), float("-inf"))
            probs = torch.softmax(scores, -1, dtype=torch.float32)
            grad_value = torch.matmul(probs.to(value.dtype).transpose(-1, -2), grad_out)
            grad_probs = torch.matmul(grad_out, value.transpose(-1, -2)).float()
            grad_scores = torch.ops.aten._softmax_backward_data(grad_probs, probs, -1, torch.float32).to(query.dtype)
            grad_query = torch.matmul(grad_scores, key) * s
            grad_key = torch.matmul(grad_scores.transpose(-1, -2), query) * s
            return grad_query, grad_key, grad_value, None

    return SegmentAttention


def segment_attention(query, key, value, scale=None):
    """segment_sdpa with SegmentAttention's backward (the class is built on first use: torch loads lazily here)."""
    return _segment_attention_class().apply(query, key, value, scale)


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          is_causal=None, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    segments = kwargs.get("packed_segments")
    if (cu is None and segments is None) or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    n_rep = query.shape[1] // key.shape[1]
    key = repeat_kv(key, n_rep)
    value = repeat_kv(value, n_rep)
    if segments is None:
        bounds = cu.tolist()
        segments = [(a, b, a, a) for a, b in zip(bounds[:-1], bounds[1:])]
    elif hasattr(segments, "tolist"):
        segments = segments.tolist()
    # segments tile the row in order; a shared prefix is itself one of them
    sizes = [b - a for a, b, _, _ in segments]
    qs, ks, vs = (t.split(sizes, dim=2) for t in (query, key, value))
    piece = {(a, b): i for i, (a, b, _, _) in enumerate(segments)}
    recompute = RECOMPUTE_BACKWARD_ON_CPU and query.device.type == "cpu" and dropout == 0.0 and torch.is_grad_enabled()
    outs = []
    for i, (a, b, pa, pb) in enumerate(segments):
        if b <= a:
            continue
        k_i, v_i = ks[i], vs[i]
        if pb > pa:  # after a shared prefix: every prefix key, then causal over the segment's own keys
            j = piece[(pa, pb)]
            k_i, v_i = torch.cat([ks[j], k_i], dim=2), torch.cat([vs[j], v_i], dim=2)
        if recompute and (b - a) * k_i.shape[2] <= RECOMPUTE_MAX_CELLS:
            outs.append(segment_attention(qs[i], k_i, v_i, scaling))
        else:
            outs.append(segment_sdpa(qs[i], k_i, v_i, dropout, scaling))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register_packed_attention() -> None:
    import torch
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if PACKED_ATTENTION not in AttentionInterface._global_mapping:
        # eager under torch.compile (module docstring)
        AttentionInterface.register(PACKED_ATTENTION, torch.compiler.disable(packed_sdpa_attention))
    if PACKED_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        # Padded batches and generation still need sdpa's masks.
        AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)


def use_packed_attention(model) -> str:
    """Switch a model to packed-aware attention; returns the implementation now in use."""
    current = getattr(model.config, "_attn_implementation", None)
    if current and current.startswith("flash_attention"):
        return current  # varlen kernels handle cu_seq_lens themselves
    register_packed_attention()
    try:
        model.set_attn_implementation(PACKED_ATTENTION)
    except Exception:  # models with their own attention code: check_packing decides what works
        return current or "unknown"
    return getattr(model.config, "_attn_implementation", PACKED_ATTENTION)


# Largest relative logit difference between packed and separate runs that still counts as "kept apart":
# leaking attention gives differences of order 1, bf16/fp16 rounding stays well below.
PACKING_TOLERANCE = 2e-2


def check_packing(model, vocab_size: int, device, varlen_kwargs: bool = True) -> float:
    """Max |logit difference| (relative to the largest logit) between two conversations packed in one
    row and the same two run alone; inf when the model cannot take a packed row at all."""
    import torch

    from tunesmith.model import eval_mode
    from tunesmith.train.dataset import PackedCollator

    g = torch.Generator().manual_seed(0)
    lengths = (7, 5)
    seqs = [torch.randint(3, max(4, vocab_size - 1), (n,), generator=g).tolist() for n in lengths]
    feats = [{"input_ids": s, "labels": s} for s in seqs]
    batch = PackedCollator(varlen_kwargs=varlen_kwargs)(feats)
    batch.pop("labels")
    batch.pop("num_tokens")
    try:
        with eval_mode(model):
            packed = model(**{k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()},
                           use_cache=False).logits.float()
            alone = [model(input_ids=torch.tensor([s], device=device), use_cache=False).logits.float() for s in seqs]
    except (TypeError, ValueError, RuntimeError):  # a forward that rejects position ids / varlen arguments
        return float("inf")
    ref = torch.cat(alone, dim=1)
    scale = ref.abs().max().clamp_min(1.0)
    return float(((packed - ref).abs().max() / scale).item())


def check_shared_prefixes(model, vocab_size: int, device) -> float:
    """Max |logit difference| (relative) between three conversations that begin with the same prompt, packed
    with that prefix laid once (tunesmith.train.shared_prefix), and the same three run alone; inf when the
    model cannot take such a row."""
    import torch

    from tunesmith.model import eval_mode
    from tunesmith.train.dataset import IGNORE_INDEX, PackedCollator
    from tunesmith.train.shared_prefix import MIN_SHARED, plan_row

    g = torch.Generator().manual_seed(1)
    shared = MIN_SHARED + 2
    prefix = torch.randint(3, max(4, vocab_size - 1), (shared,), generator=g).tolist()
    seqs = [prefix + torch.randint(3, max(4, vocab_size - 1), (n,), generator=g).tolist() for n in (6, 4, 5)]
    feats = [{"input_ids": s, "labels": [IGNORE_INDEX] * (shared + 1) + s[shared + 1:]} for s in seqs]
    batch = PackedCollator(share_prefixes=True)(feats)
    for key in ("labels", "num_tokens"):
        batch.pop(key)
    row = plan_row(feats)  # where the collator placed each conversation
    try:
        with eval_mode(model):
            packed = model(**{k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()},
                           use_cache=False).logits.float()[0]
            diffs, scale = [], 1.0
            for (a, b, pa, pb), i in row.placed:
                alone = model(input_ids=torch.tensor([seqs[i]], device=device), use_cache=False).logits.float()[0]
                diffs.append((packed[a:b] - alone[pb - pa:]).abs().max())
                scale = max(scale, float(alone.abs().max()))
    except (TypeError, ValueError, RuntimeError):
        return float("inf")
    return float(max(diffs)) / scale


def choose_packing(model, model_label: str) -> str:
    """Prove that `model` keeps packed conversations apart and say how: "varlen (IMPL)" when the attention
    takes the varlen keyword arguments, else "block-diagonal mask from position ids". ConfigError when
    neither keeps them apart (the model's own attention code ignores both): `model_label` names it."""
    vocab = model.config.get_text_config().vocab_size
    attn = use_packed_attention(model)
    if check_packing(model, vocab, model.device, varlen_kwargs=True) <= PACKING_TOLERANCE:
        return f"varlen ({attn})"
    diff = check_packing(model, vocab, model.device, varlen_kwargs=False)
    if diff > PACKING_TOLERANCE:
        raise ConfigError(f"data.packing=true, but this model ({model_label}) lets packed conversations "
                          f"attend to each other (logit difference {diff:.3g}); set data.packing=false")
    return "block-diagonal mask from position ids"
