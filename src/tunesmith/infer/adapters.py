"""The named LoRA adapters that share one base model: load them, switch between them, merge one.

    model, templates = load_adapters(model, adapter_folders({"libai": "runs/libai/adapter"}), base_template)
    adapters = AdapterSet(model, base_template, templates, load_characters(folders))
    adapters.names                              # ["base", "libai"]
    with adapters.lock, adapters.activate("libai"):
        model.generate(...)                     # answers as "libai"; "base" runs with the adapters disabled
    adapters.merge("libai")                     # fp32 only: folded into the weights until another is asked for

Every adapter's prompt is built with the template saved next to it by training (template.json); one
without a template.json, and "base", use the base template.  `lock` guards the weights and the active
adapter: whoever generates, switches or merges holds it, so an adapter never changes under a running batch.
An adapter trained as a character carries its character.json (name, persona, greetings): `character_for`.
One trained with a recommended sampler carries its generation.json: `generation_for` (chat, serve and the web
chat start from it; a request's own values win).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

from tunesmith.adapter_spec import BASE, check_adapter_name
from tunesmith.character import Character, load_character
from tunesmith.errors import ModelError
from tunesmith.infer.options import GenerationOptions, load_generation
from tunesmith.template import ChatTemplate, load_template


class UnknownAdapterError(ModelError):
    """A request named an adapter that is not loaded."""


def adapter_folders(adapters: dict[str, str] | None) -> dict[str, Path]:
    """{name: folder} checked: valid names, each folder a LoRA adapter (it holds adapter_config.json)."""
    out: dict[str, Path] = {}
    for name, path in (adapters or {}).items():
        check_adapter_name(name, "adapter")
        p = Path(path).expanduser()
        if not (p / "adapter_config.json").is_file():
            raise ModelError(f"{p}: not a LoRA adapter folder (expected adapter_config.json, for adapter {name!r})")
        out[name] = p
    return out


def load_adapters(model, folders: dict[str, Path],
                  base_template: ChatTemplate) -> tuple[object, dict[str, ChatTemplate]]:
    """Attach each adapter folder by name; returns the model (a PeftModel once one is attached) and the
    adapters' templates (their own template.json, else the base template)."""
    from tunesmith.model import load_adapter

    templates: dict[str, ChatTemplate] = {}
    for name, path in folders.items():
        model = load_adapter(model, path, name=name)
        templates[name] = load_template(path) or base_template
    return model, templates


def load_characters(folders: dict[str, Path]) -> dict[str, Character]:
    """{name: Character} for the adapter folders that hold a character.json."""
    found = {name: load_character(path) for name, path in folders.items()}
    return {name: char for name, char in found.items() if char is not None}


def load_generations(folders: dict[str, Path]) -> dict[str, dict]:
    """{name: recommended sampler} for the adapter folders that hold a generation.json."""
    found = {name: load_generation(path) for name, path in folders.items()}
    return {name: values for name, values in found.items() if values}


class AdapterSet:
    """Which adapters are loaded, their templates, and which one is active or merged into the weights."""

    def __init__(self, model, base_template: ChatTemplate, templates: dict[str, ChatTemplate],
                 characters: dict[str, Character] | None = None, generations: dict[str, dict] | None = None):
        self.model = model
        self.templates = {BASE: base_template, **templates}
        self.characters = dict(characters or {})
        self.generations = dict(generations or {})
        self.names: list[str] = [BASE, *templates]
        self.lock = threading.RLock()  # the weights and the active adapter serve one generate at a time
        self.merged: str | None = None  # the adapter folded into the base weights, if any

    def check(self, adapter: str) -> None:
        if adapter not in self.templates:
            raise UnknownAdapterError(f"unknown adapter {adapter!r} (loaded: {', '.join(self.names)})")

    def template_for(self, adapter: str) -> ChatTemplate:
        self.check(adapter)
        return self.templates[adapter]

    def character_for(self, adapter: str) -> Character | None:
        """The character `adapter` was trained as (its character.json), or None."""
        self.check(adapter)
        return self.characters.get(adapter)

    def generation_for(self, adapter: str) -> dict:
        """The sampler recommended for `adapter` (its generation.json: only the fields it sets), or {}."""
        self.check(adapter)
        return dict(self.generations.get(adapter, {}))

    def options_for(self, adapter: str, defaults: GenerationOptions | None = None) -> GenerationOptions:
        """`defaults` with `adapter`'s recommended sampler applied: what a request that sets nothing gets."""
        return (defaults or GenerationOptions()).updated(self.generation_for(adapter))

    def can_mix(self) -> bool:
        """Whether one batch may run rows through different adapters (PEFT's mixed-adapter batch: each LoRA
        applied to its own rows); it needs the adapters unmerged, which `mixed` sees to."""
        from peft import PeftModel

        return isinstance(self.model, PeftModel) and not getattr(self.model, "tunesmith_quantization", None)

    @contextmanager
    def mixed(self, adapters: list[str]):
        """A context in which a batch runs each row through its own adapter: yields the names PEFT takes per
        row ("__base__" for the base).  Hold `lock` around it."""
        for name in adapters:
            self.check(name)
        self.unmerge()
        yield ["__base__" if name == BASE else name for name in adapters]

    def can_merge(self) -> bool:
        """Merging is offered for fp32, unquantized models: there, unmerging restores the base weights to
        rounding, so switching back and forth cannot drift (half precision or 4/8-bit would)."""
        import torch
        from peft import PeftModel

        if not isinstance(self.model, PeftModel) or getattr(self.model.config, "quantization_config", None):
            return False
        if getattr(self.model, "tunesmith_quantization", None):  # int8 weights (torchao): not exact to merge into
            return False
        return all(p.dtype == torch.float32 for p in self.model.parameters())

    def merge(self, adapter: str) -> bool:
        """Fold `adapter` into the base weights until another adapter or "base" is asked for.
        Returns False (and changes nothing) where merging is not offered (see `can_merge`)."""
        self.check(adapter)
        if adapter == BASE or not self.can_merge():
            return False
        with self.lock:
            if self.merged != adapter:
                self.unmerge()
                self.model.set_adapter(adapter)
                self.model.merge_adapter()
                self.merged = adapter
        return True

    def unmerge(self) -> None:
        """Restore the base weights (a no-op when nothing is merged)."""
        with self.lock:
            if self.merged is not None:
                self.model.unmerge_adapter()  # unmerges whatever layers hold merged weights
                self.merged = None

    def activate(self, adapter: str):
        """A context in which the model answers as `adapter` (hold `lock` around it)."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return nullcontext()
        if adapter == self.merged:
            return nullcontext()  # already active and folded in (set_adapter would unmerge it)
        self.unmerge()  # merged weights answer only for the merged adapter
        if adapter == BASE:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return nullcontext()
