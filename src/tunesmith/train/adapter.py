"""Save a trained LoRA adapter and prove the saved folder is the trained adapter.

    from tunesmith.train.adapter import save_adapter, adapter_tensor_stats
    save_adapter(peft_model, tokenizer, template, "runs/libai/adapter", config_yaml=text)
    trainer.add_callback(CheckpointAdapterFiles(template, config_yaml=text))   # checkpoints get template.json too

The folder is an ordinary PEFT adapter (adapter_model.safetensors + adapter_config.json with the base
model's path), plus template.json, the tokenizer, train_config.yaml, for a character character.json, and with a
recipe's `generation:` key generation.json (the recommended sampler).
It is written to a temporary sibling and renamed into place.  Then it is checked: the file holds every LoRA
tensor of the model, the lora_B matrices are not all zero after training (an untrained or emptied adapter is
exactly the base model), and the saved adapter, loaded back beside the trained one, gives the same logits.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from tunesmith.errors import ModelError
from tunesmith.fsio import atomic_dir
from tunesmith.model import eval_mode

ADAPTER_FILE = "adapter_model.safetensors"


def adapter_tensor_stats(adapter_dir: str | os.PathLike) -> dict[str, float]:
    """{'tensors': N, 'lora_A': n_A, 'lora_B': n_B, 'lora_B_norm': ||B||_F, 'bytes': size} of a saved adapter."""
    from safetensors import safe_open

    path = Path(adapter_dir) / ADAPTER_FILE
    if not path.is_file():
        raise ModelError(f"{path}: missing (expected a PEFT adapter with {ADAPTER_FILE})")
    n = n_a = n_b = 0
    sq = 0.0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            n += 1
            if "lora_A" in key:
                n_a += 1
            elif "lora_B" in key:
                n_b += 1
                sq += float(f.get_tensor(key).float().pow(2).sum())
    return {"tensors": n, "lora_A": n_a, "lora_B": n_b, "lora_B_norm": sq ** 0.5, "bytes": path.stat().st_size}


def save_adapter(model, tokenizer, template, out_dir: str | os.PathLike, *, config_yaml: str | None = None,
                 base_model: str | None = None, character=None, generation: dict | None = None) -> Path:
    """Write the adapter folder (PEFT files, template.json, tokenizer, train_config.yaml; character.json when a
    tunesmith.character.Character is given; generation.json, the recommended sampler, when given)."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        # Only the trained adapter: a preference run also holds its frozen reference copy ("ref").
        model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=[active_adapter(model)])
        if base_model:
            import json

            cfg_path = tmp / "adapter_config.json"
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            cfg["base_model_name_or_path"] = base_model
            cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")
        tokenizer.save_pretrained(str(tmp))
        write_adapter_files(tmp, template, config_yaml=config_yaml, character=character, generation=generation)
    return out


def write_adapter_files(folder: str | os.PathLike, template, *, config_yaml: str | None = None, character=None,
                        generation: dict | None = None) -> None:
    """Write what makes a PEFT folder an adapter tunesmith serves as it was trained: template.json, and where
    given train_config.yaml, character.json and generation.json (each file atomically)."""
    from tunesmith.character import save_character
    from tunesmith.fsio import atomic_write
    from tunesmith.infer.options import save_generation
    from tunesmith.template import save_template

    folder = Path(folder)
    save_template(template, folder)
    if config_yaml is not None:
        atomic_write(folder / "train_config.yaml", config_yaml)
    if character is not None:
        save_character(character, folder)
    if generation:
        save_generation(generation, folder)


class CheckpointAdapterFiles(TrainerCallback):
    """Give every checkpoint the Trainer saves the adapter's own files (write_adapter_files).

    The Trainer writes PEFT's files, the tokenizer and its state into checkpoints/checkpoint-N, no template:
    `tunesmith eval -a ...checkpoint-N` would then prompt with the base model's template, which is wrong for
    any run trained on another one (the IE recipe's plain template, a card's persona as default system)."""

    def __init__(self, template, *, config_yaml: str | None = None, character=None, generation: dict | None = None):
        self.template, self.config_yaml, self.character, self.generation = template, config_yaml, character, generation

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_adapter_files(folder, self.template, config_yaml=self.config_yaml, character=self.character,
                                generation=self.generation)


def active_adapter(model) -> str:
    """The name of the adapter a PEFT model trains and runs (usually "default")."""
    return model.active_adapter if isinstance(model.active_adapter, str) else model.active_adapters[0]


def lora_parameter_count(model) -> int:
    """LoRA tensors of the active adapter (a reference copy beside it is not saved, so not counted)."""
    name = f".{active_adapter(model)}."
    return sum(1 for n, _ in model.named_parameters() if ("lora_A" in n or "lora_B" in n) and name in n)


def verify_adapter(model, adapter_dir: str | os.PathLike, *, trained: bool, probe_ids, atol: float) -> dict[str, float]:
    """Raise ModelError unless the saved adapter is complete, non-trivial and reproduces `model`'s logits.

    The saved folder is loaded as a second adapter on the same base (no second copy of the base in
    memory), the logits of both adapters are compared on `probe_ids`, and the copy is removed again.
    """

    stats = adapter_tensor_stats(adapter_dir)
    expected = lora_parameter_count(model)
    if stats["tensors"] == 0 or stats["tensors"] < expected:
        raise ModelError(f"{adapter_dir}: the saved adapter holds {stats['tensors']} tensors, the model has {expected} "
                         "LoRA tensors: the adapter was not saved completely")
    if trained and stats["lora_B_norm"] == 0.0:
        raise ModelError(f"{adapter_dir}: every lora_B matrix is zero: the adapter equals the base model "
                         "(was the learning rate 0, or were no steps taken?)")
    active = active_adapter(model)
    check = "_tunesmith_saved_copy"
    with eval_mode(model):  # entered first, left last: the train/eval mode comes back after set_adapter below
        try:
            ref = model(input_ids=probe_ids, use_cache=False).logits.float()
            model.load_adapter(str(adapter_dir), adapter_name=check, is_trainable=False)
            model.set_adapter(check)
            again = model(input_ids=probe_ids, use_cache=False).logits.float()
        finally:
            if check in getattr(model, "peft_config", {}):
                model.set_adapter(active)
                model.delete_adapter(check)
            model.set_adapter(active)
    diff = float((ref - again).abs().max())
    if not diff <= atol:
        raise ModelError(f"{adapter_dir}: the saved adapter reloads to different outputs "
                         f"(max |logit diff| {diff:.3g} > {atol})")
    stats["reload_max_logit_diff"] = diff
    return stats
