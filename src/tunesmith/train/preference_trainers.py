"""The preference methods: TRL's DPO, ORPO and KTO trainers, fed the token ids our chat template made.

    tunesmith train configs/rolebench_libai_dpo.yaml          # method: dpo, init_adapter: runs/libai/adapter
    tunesmith train configs/tiny.yaml method=orpo data.train=pairs.jsonl

    from tunesmith.train.preference_trainers import preference_trainer
    trainer = preference_trainer(cfg, model=peft_model, tokenizer=tok, args_kwargs=..., train_rows=..., ...)

The losses are TRL's, untouched. What this module changes is only how data reaches them: TRL would render
and tokenize `prompt`/`chosen`/`rejected` text itself; here each trainer takes the rows of
tunesmith.train.preference_data as they are, so the prompt a preference run learns after is, token for token,
the prompt chat/serve/eval send (the same template saved with the adapter).

The reference model (dpo, kto): TRL's own choice for a PEFT model, a frozen copy of the starting adapter held as
a second adapter named "ref" on the same base weights. Started on an SFT adapter (`init_adapter`), the reference
is that SFT adapter, so the preference loss measures how far the run moves away from it; from a fresh LoRA the
copy is all zeros, i.e. exactly the base model. No second copy of the base model is loaded. With
`preference.precompute_ref`, the reference scores every answer once before training instead of at every step.
ORPO needs no reference.
"""

from __future__ import annotations

from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.train.fused_head import answer_only_fused_head
from tunesmith.train.trainer import StopsWhenResumedFinished, lora_takes_autocast_inputs

# Metrics shown at each dev evaluation and drawn in loss.png, as TRL logs them (without the eval_ prefix).
PAIR_METRICS = ("rewards/accuracies", "rewards/margins")
KTO_METRICS = ("rewards/chosen", "rewards/rejected", "kl")


def _as_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list(rows)


class _PreferenceTrainerMixin(StopsWhenResumedFinished):
    """What every preference trainer adds to TRL's: `tokens_seen` for the progress display (the non-padding
    tokens of every training batch), LoRA layers fed autocast's activations uncopied in the loss, and the stop
    when resumed at the end."""

    tokens_seen = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.count_tokens(model, inputs)
        with lora_takes_autocast_inputs(self, model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def count_tokens(self, model, inputs) -> None:
        if not model.training:
            return
        keys = [k for k in inputs if k.endswith("attention_mask") and not k.startswith(("prompt_", "KL_"))]
        self.tokens_seen += int(sum(inputs[k].sum().item() for k in keys))


def dpo_trainer_class():
    from trl import DPOTrainer

    class TunesmithDPOTrainer(_PreferenceTrainerMixin, DPOTrainer):
        """DPOTrainer on rows already encoded by our template ({prompt_ids, chosen_ids, rejected_ids})."""

        def __init__(self, *args, packing: str | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            # the fields TRL's DPO reads from its fused head: metrics, and WPO weights with use_weighting
            answer_only_fused_head(self.model, ("log_probs", "entropy", "mean_logits", "is_top1")
                                   + (("log_sum_sq_probs",) if self.use_weighting else ()), packing=packing)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return TunesmithDPOTrainer


def kto_trainer_class():
    from trl import KTOTrainer

    class TunesmithKTOTrainer(_PreferenceTrainerMixin, KTOTrainer):
        """KTOTrainer on rows already encoded by our template ({prompt_ids, completion_ids, label})."""

        def __init__(self, *args, packing: str | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            answer_only_fused_head(self.model, ("log_probs", "entropy", "mean_logits"), packing=packing)  # KTO's

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if not self.calculate_KL:
                return dataset
            # TRL's KL estimate pairs each prompt with its batch neighbour's completion (the batch rotated by
            # one), computed once here as TRL's own preparation does; the loss itself stays TRL's.
            def add_kl_completions(batch):
                batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
                return batch

            return dataset.map(add_kl_completions, batched=True, batch_size=args.per_device_train_batch_size)

    return TunesmithKTOTrainer


def orpo_trainer_class():
    import warnings

    with warnings.catch_warnings():  # TRL marks its experimental trainers with a warning on import
        warnings.simplefilter("ignore")
        from trl.experimental.orpo import ORPOTrainer

    class TunesmithORPOTrainer(_PreferenceTrainerMixin, ORPOTrainer):
        """ORPOTrainer whose rows carry our template's ids: tokenize_row lays them out as ORPO's batches; its
        forward scores tokens through the fused LM head instead of full logits (orpo_forward)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not (self.is_encoder_decoder or self.aux_loss_enabled):
                from trl.trainer.utils import add_fused_lm_head

                add_fused_lm_head(self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model,
                                  outputs=ORPO_HEAD_OUTPUTS)
                answer_only_fused_head(self.model, ORPO_HEAD_OUTPUTS)
                self.fused_head = True

        def concatenated_forward(self, model, batch):
            if not getattr(self, "fused_head", False):
                return super().concatenated_forward(model, batch)
            return orpo_forward(self, model, batch)

        def tokenize_row(self, feature, model=None) -> dict:
            prompt = list(feature["prompt_ids"])
            out: dict[str, list[int]] = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
            for side in ("chosen", "rejected"):
                answer = list(feature[f"{side}_ids"])
                out[f"{side}_input_ids"] = prompt + answer
                out[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
                out[f"{side}_labels"] = [-100] * len(prompt) + answer
            return out

    return TunesmithORPOTrainer


ORPO_HEAD_OUTPUTS = ("log_probs", "mean_logits")


def orpo_forward(trainer, model, batch):
    """TRL's ORPO concatenated_forward, the same five values, from per-token log-probabilities of the fused LM
    head instead of the (2 x batch, length, vocabulary) logits, which TRL's ORPO builds and keeps for the
    backward: on the 135M default, 8 sequences of 300 tokens are 470 MB of fp32 logits, and its log-softmax as
    much again. The loss built from these values (TRL's get_batch_loss_metrics) is untouched.

    Every position is scored (labels = the ids, no -100): TRL's NLL runs over prompt and answer of the chosen
    sequences (the non-padding positions), the log-probability ratio over the answers, and its `logits/*`
    metrics are means over every position, padding included, which the per-position vocabulary means give.
    """
    cat = trainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=trainer.padding_value,
                                      device=trainer.accelerator.device)
    n = batch["chosen_labels"].shape[0]
    ids, attention = cat["concatenated_input_ids"], cat["concatenated_attention_mask"]
    out = model(ids, attention_mask=attention, labels=ids, use_cache=False, fused_lm_head=True)
    logps = out.log_probs  # (2n, length - 1): position t scores ids[t + 1]
    nll_mask = attention[:n, 1:] == 1
    chosen_nll = -logps[:n][nll_mask].sum() / nll_mask.sum()  # CrossEntropyLoss's mean over non-ignored tokens
    answers = cat["concatenated_labels"][:, 1:] != -100
    mean_logps = (logps * answers).sum(-1) / answers.sum(-1)  # get_batch_logps(average_log_prob=True)
    # (n, length - 1) means over the vocabulary: their mean is the mean of the logits TRL logs
    return mean_logps[:n], mean_logps[n:], out.mean_logits[:n], out.mean_logits[n:], chosen_nll


def method_arguments(cfg, has_dev: bool) -> dict[str, Any]:
    """The method's own config keys (beyond TrainingArguments) for TRL's DPOConfig / KTOConfig / ORPOConfig."""
    p = cfg.preference
    common: dict[str, Any] = dict(beta=p.beta, max_length=None, disable_dropout=True,
                                  gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.method == "dpo":
        losses, weights = [p.loss_type], [1.0]
        if p.sft_weight > 0:  # TRL combines its losses by weight: DPO + w * the chosen answers' NLL
            losses, weights = [p.loss_type, "sft"], [1.0, p.sft_weight]
        return {**common, "loss_type": losses, "loss_weights": weights,
                "precompute_ref_log_probs": p.precompute_ref}
    if cfg.method == "kto":
        if cfg.batch_size < 2:
            raise ConfigError("method=kto: batch_size must be at least 2 (KTO estimates its KL term from the other "
                              f"answers of a batch; got {cfg.batch_size})")
        return {**common, "desirable_weight": p.desirable_weight, "undesirable_weight": p.undesirable_weight,
                "precompute_ref_log_probs": p.precompute_ref, "train_sampling_strategy": "sequential"}
    # ORPO: TRL's experimental trainer reads max_length as a number
    return {**common, "max_length": cfg.data.max_source_len + cfg.data.max_target_len,
            "max_completion_length": cfg.data.max_target_len}


def config_class(method: str):
    if method == "dpo":
        from trl import DPOConfig

        return DPOConfig
    if method == "kto":
        from trl import KTOConfig

        return KTOConfig
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.orpo import ORPOConfig
    return ORPOConfig


def trainer_class(method: str):
    return {"dpo": dpo_trainer_class, "kto": kto_trainer_class, "orpo": orpo_trainer_class}[method]()


def preference_trainer(cfg, *, model, tokenizer, training_kwargs: dict[str, Any], train_rows: list[dict],
                       dev_rows: list[dict], callbacks: list, packing: str | None = None):
    """The TRL trainer for cfg.method on encoded rows; `training_kwargs` are the shared TrainingArguments;
    `packing` ("varlen" | "shared", dpo and kto): how the fused LM head packs a padded batch (fused_head.py)."""
    kwargs = dict(training_kwargs)
    # The preference trainers compute their own losses from their own batch keys.
    kwargs.pop("label_names", None)
    if cfg.method == "kto" and kwargs.get("train_sampling_strategy") == "group_by_length":
        kwargs.pop("train_sampling_strategy")
    kwargs.update(method_arguments(cfg, has_dev=bool(dev_rows)))
    args = config_class(cfg.method)(**kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    trainer = trainer_class(cfg.method)(
        model=model, args=args, train_dataset=_as_dataset(train_rows),
        eval_dataset=_as_dataset(dev_rows) if dev_rows else None, processing_class=tokenizer,
        callbacks=callbacks, **({"packing": packing} if cfg.method != "orpo" else {}))
    return trainer
