"""The transformers Trainer, with a loss that only computes what it needs.

- Loss on answer tokens only (labels from the chat template), as a token-weighted mean over the whole
  optimizer step (all micro-batches and all processes), the same number whether or not batches are
  packed.  With `loss_weighting: sample` the collator sends `loss_weights` (1 / answer length on each
  learned token) and the same sums become a mean over conversations of their mean token loss.
- Logits only where a label is learned: the output head (vocabulary-sized, about a fifth of a small
  model's compute) runs on the answer positions instead of every position.  The model is asked for
  its final hidden states and no logits (`logits_to_keep` an empty index), and the head is applied here;
  a probe at start-up checks that this equals the model's own logits, else the model's full logits are used.
- Dev loss is token-weighted too (the stock evaluation averages per-batch means).
- Token counts for the progress display (`tokens_seen`, `loss_tokens_seen`).

Anything the stock Trainer does (DDP via torchrun / accelerate launch, DeepSpeed, FSDP, checkpoints,
resume, best-model tracking) is left to it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from tunesmith.model import eval_mode
from tunesmith.train.dataset import IGNORE_INDEX


def output_head(model):
    """The frozen output projection (lm_head) of a (PEFT-wrapped) causal LM, or None."""
    base = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None or any(p.requires_grad for p in head.parameters()):
        return None  # a trained head must run inside the model's forward (DDP/FSDP hooks)
    return head


def hidden_states_only(model, **inputs):
    """The model's outputs with every hidden state and logits for no position.  `logits_to_keep=1` would keep
    one, and on a CPU that one position's product runs as a batched matmul that first copies the whole
    vocabulary-sized head weight (~5 % of a training step of the default model, BENCHMARKS.md)."""
    ids = inputs.get("input_ids")
    keep_none = torch.empty(0, dtype=torch.long, device=ids.device if ids is not None else None)
    return model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=keep_none)


def head_loss_supported(model, device) -> bool:
    """Does lm_head(final hidden state) reproduce the model's logits (no soft-capping, scaling ...)?"""
    head = output_head(model)
    if head is None:
        return False
    ids = torch.arange(3, 11, device=device).unsqueeze(0) % max(4, model.config.get_text_config().vocab_size)
    try:
        with eval_mode(model):
            full = model(input_ids=ids, use_cache=False).logits.float()
            out = hidden_states_only(model, input_ids=ids)
            if getattr(out, "hidden_states", None) is None:
                return False
            mine = head(out.hidden_states[-1]).float()
    except (TypeError, ValueError):  # no logits_to_keep / hidden states in this model's forward
        return False
    return mine.shape == full.shape and torch.allclose(mine, full, atol=1e-3, rtol=1e-3)


def answer_loss_sum(model, inputs: dict[str, Any], head=None, head_autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of cross-entropies over learned positions, number of learned positions) for one batch.

    `inputs` is a collated batch (packed or padded) with `labels`; position t predicts labels[t+1].
    With `loss_weights` in the batch (shaped like labels), both sums are weighted by them instead.
    With `head` (the frozen output projection), the model returns only hidden states and the head runs
    on the learned positions alone.
    """
    import contextlib

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    weights = inputs.pop("loss_weights", None)
    inputs.pop("num_tokens", None)
    shift = labels[:, 1:]
    mask = shift != IGNORE_INDEX
    if head is not None:
        out = hidden_states_only(model, **inputs)
        hidden = out.hidden_states[-1][:, :-1][mask]
        with (head_autocast() if head_autocast else contextlib.nullcontext()):
            logits = head(hidden)
    else:
        out = model(**inputs, use_cache=False)
        logits = out.logits[:, :-1][mask]
    if weights is None:
        return F.cross_entropy(logits.float(), shift[mask], reduction="sum"), mask.sum()
    w = weights[:, 1:][mask].float()
    return (F.cross_entropy(logits.float(), shift[mask], reduction="none") * w).sum(), w.sum()


def lora_takes_autocast_inputs(trainer, model):
    """A context for a Trainer's loss: under bf16/fp16 mixed precision, peft's LoRA layers take each activation
    in the dtype autocast made it.  Otherwise they copy it to their fp32 weights' dtype and autocast copies it
    straight back for the matmul: the same numbers, two copies per layer (about a fifth of a CPU step,
    BENCHMARKS.md).  Outside the loss (sample answers, checks, no autocast) peft's casting stays on."""
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model, active=bool(trainer.args.bf16 or trainer.args.fp16))


class StopsWhenResumedFinished:
    """A Trainer mixin: resumed from a checkpoint at (or past) its last step, train nothing.

    The stock loop checks max_steps only after a step, so a run resumed from its last checkpoint would
    train step max_steps + 1 (and save it). A fresh run starts at step 0 and never matches.
    """

    resumed_finished = False

    def _init_training_state(self, max_steps, *args, **kwargs):
        out = super()._init_training_state(max_steps, *args, **kwargs)
        self.resumed_finished = self.state.global_step >= max_steps > 0
        return out

    def _run_epoch(self, *args, **kwargs):
        if self.resumed_finished:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)


class TunesmithTrainer(StopsWhenResumedFinished, Trainer):
    """Trainer with answer-only, head-only-where-needed, token-weighted loss."""

    def __init__(self, *args, head=None, **kwargs):
        super().__init__(*args, **kwargs)
        # The frozen output head applied outside the model's forward; None: use the model's own logits.
        # Not with ZeRO-3/FSDP, whose sharded parameters only exist inside the forward.
        self.head = None if (self.is_deepspeed_enabled or self.is_fsdp_enabled) else head
        # Our compute_loss divides by the token count of the whole optimizer step itself.
        self.model_accepts_loss_kwargs = True
        self.loss_is_scaled_for_ga = True
        self._loss_shifts_labels = True
        self.tokens_seen = 0  # input tokens (no padding) on this process

    # -- loss ----------------------------------------------------------------------------------------
    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """The divisor of a step's summed loss: learned tokens, or the weight total with `loss_weights`."""
        if not batch_samples or "loss_weights" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum(b["loss_weights"][..., 1:].sum() for b in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    def loss_sum_and_count(self, model, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        with lora_takes_autocast_inputs(self, model):
            return answer_loss_sum(model, inputs, self.head, self.accelerator.autocast)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        n_tok = inputs.get("num_tokens")
        loss_sum, n = self.loss_sum_and_count(model, inputs)
        if model.training and isinstance(n_tok, int):
            self.tokens_seen += n_tok
        if num_items_in_batch is None:
            loss = loss_sum / n.clamp_min(1)
        else:
            loss = loss_sum / torch.as_tensor(num_items_in_batch, device=loss_sum.device).clamp_min(1)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                # DDP averages gradients over processes; num_items_in_batch already counts all of them.
                loss = loss * self.args.world_size
        return (loss, None) if return_outputs else loss

    # -- token-weighted dev loss ---------------------------------------------------------------------
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataloader = self.get_eval_dataloader(eval_dataset)
        model = self.model_wrapped if self.is_deepspeed_enabled or self.is_fsdp_enabled else self.model
        start = time.perf_counter()
        total = torch.zeros(2, dtype=torch.float64, device=self.args.device)
        # compiled layers (tunesmith.train.compiling) run eager here: no-grad graphs would be a second compile
        with eval_mode(model), torch.compiler.set_stance("force_eager"):
            for inputs in dataloader:
                inputs = self._prepare_inputs(inputs)
                with self.compute_loss_context_manager():
                    loss_sum, n = self.loss_sum_and_count(model, inputs)
                total[0] += loss_sum.double()
                total[1] += n.double()
        if self.args.world_size > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        loss = (total[0] / total[1].clamp_min(1)).item()
        metrics = {
            f"{metric_key_prefix}_loss": loss,
            f"{metric_key_prefix}_ppl": math.exp(min(loss, 50.0)),
            f"{metric_key_prefix}_tokens": int(total[1].item()),
            f"{metric_key_prefix}_runtime": round(time.perf_counter() - start, 3),
        }
        self.log(metrics)
        with torch.compiler.set_stance("force_eager"):  # the progress display's sample generation
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics
