"""Turn a trained adapter into a standalone model folder (LoRA merged into the base weights).

    tunesmith export runs/libai/adapter -o models/libai-merged --merge
    python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('models/libai-merged')"

The folder holds the merged weights (safetensors), the tokenizer with a chat template that renders
exactly what training saw, template.json (for tunesmith chat/serve/eval), for an adapter trained as a
character its character.json, and its recommended sampler (generation.json) when it has one.  Any transformers,
vLLM or llama.cpp-conversion user can load it without peft.  Its logits equal base + adapter
(up to float rounding; the merge runs in fp32 unless asked otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tunesmith.errors import ConfigError, ModelError
from tunesmith.fsio import atomic_dir


def export_model(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *, merge: bool = True,
                 base: str | None = None, dtype: str = "auto", device: str = "cpu",
                 trust_remote_code: bool = False, overwrite: bool = False, gguf: str | None = None) -> Path:
    """Write a merged model folder (merge=True) or a self-contained copy of the adapter (merge=False);
    gguf="f16" | "q8_0" | "f32": the merged model as model.gguf with an Ollama Modelfile instead."""
    import torch

    from tunesmith.model import load_adapter, load_model, load_tokenizer
    from tunesmith.template import load_template, resolve_template, save_template, to_jinja

    adapter = Path(adapter_dir)
    cfg_path = adapter / "adapter_config.json"
    if not cfg_path.is_file():
        raise ModelError(f"{adapter}: not a LoRA adapter folder "
                         "(expected adapter_config.json, written by tunesmith train)")
    try:
        adapter_cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{cfg_path}:{e.lineno}: invalid JSON ({e.msg})") from None
    base_path = base or adapter_cfg.get("base_model_name_or_path")
    if not base_path:
        raise ModelError(f"{cfg_path}: no base_model_name_or_path; pass --base PATH")
    from tunesmith.export_gguf import GGUF_TYPES

    if gguf is not None and gguf not in GGUF_TYPES:
        raise ConfigError(f"--gguf: expected one of {', '.join(GGUF_TYPES)} (got {gguf!r})")
    if gguf is not None and (not merge or dtype != "auto"):
        raise ConfigError("--gguf writes the merged model in its own types: drop --no-merge and --dtype")
    out = Path(out_dir)
    if out.resolve() == adapter.resolve():
        raise ConfigError("the output folder must differ from the adapter folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty (pass --overwrite to replace it)")
    # The adapter folder's tokenizer is the one training used; fall back to the base's.
    if (adapter / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=trust_remote_code)
    else:
        tokenizer = load_tokenizer(base_path, trust_remote_code=trust_remote_code)
    tpl = load_template(adapter) or resolve_template("auto", tokenizer)
    tokenizer.chat_template = to_jinja(tpl, tokenizer)  # renders what training saw, persona included

    def fill(tmp: Path) -> None:
        if merge:
            load_dtype = "fp32" if dtype == "auto" else dtype
            model, _ = load_model(base_path, dtype=load_dtype, device=device, trust_remote_code=trust_remote_code)
            model = load_adapter(model, adapter)
            merged = model.merge_and_unload()
            if gguf is not None:
                _write_gguf_folder(merged, tokenizer, tpl, tmp, gguf, name=adapter.parent.name or adapter.name)
                copy_extras(adapter, tmp, ("character.json", "generation.json"))
                return
            if dtype == "auto":
                # keep the base's own storage dtype (the merge itself ran in fp32)
                saved = getattr(merged.config, "dtype", None) or getattr(merged.config, "torch_dtype", None)
                if isinstance(saved, str) and saved in ("bfloat16", "float16"):
                    merged = merged.to(getattr(torch, saved))
            merged.save_pretrained(str(tmp), safe_serialization=True)
        else:
            for f in adapter.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        tokenizer.save_pretrained(str(tmp))
        save_template(tpl, tmp)
        copy_extras(adapter, tmp)

    with atomic_dir(out) as tmp:  # a crash mid-merge leaves the old folder (or none), never half a model
        fill(tmp)
    return out


def copy_extras(adapter: Path, folder: Path,
                names: tuple[str, ...] = ("train_config.yaml", "character.json", "generation.json")) -> None:
    """The adapter's files an exported folder carries along: the recipe, the character (character.json, for
    chat and serve) when the adapter was trained as one, and its recommended sampler (generation.json)."""
    for name in names:
        if (adapter / name).is_file():
            shutil.copy2(adapter / name, folder / name)


def _write_gguf_folder(model, tokenizer, tpl, folder: Path, gguf_type: str, name: str) -> None:
    """model.gguf, its Modelfile and template.json (for tunesmith) in `folder`."""
    from tunesmith.export_gguf import GGUF_FILE, MODELFILE, modelfile_text, write_gguf
    from tunesmith.template import save_template, stop_token_ids

    write_gguf(model, tokenizer, tokenizer.chat_template, folder / GGUF_FILE, gguf_type, name=name)
    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_token_ids(tokenizer, tpl, model.generation_config)]
    (folder / MODELFILE).write_text(modelfile_text(tpl, tokenizer, stops), encoding="utf-8")
    save_template(tpl, folder)
