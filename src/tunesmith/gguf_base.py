"""A GGUF file as a base model: checked (magic, architecture) from its metadata alone, then converted once into a
plain transformers folder in the model cache, keyed by the file's content, with its tokenizer and chat template.

    from tunesmith.gguf_base import gguf_model_dir
    folder = gguf_model_dir(Path("models/qwen2.5-1.5b-instruct-q8_0.gguf"), cache_dir() / "models")

The folder is `gguf-<stem>-<first 12 hex of the file's sha256>`: the same bytes under another name or place reuse
it, a changed file gets a new one.  The sha256 of a file is remembered in `gguf-index.json` beside the folders,
by (resolved path, size, mtime_ns), so a file of several GB is read once, not at every run.

Quantized weights are de-quantized: the folder holds float16 for an F16 or quantized file (its rounding is far
below the quantization's own), bfloat16 for a BF16 file and float32 for an F32 one; training and inference then
cast to the dtype they run in.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from tunesmith.errors import ModelError
from tunesmith.fsio import atomic_dir, atomic_write

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")  # GGUF general.architecture values this converts
INDEX_FILE = "gguf-index.json"
_MAGIC = b"GGUF"


def is_gguf_path(path: Path) -> bool:
    return path.suffix.lower() == ".gguf" and not path.is_dir()


def gguf_model_dir(path: Path, models_dir: Path) -> Path:
    """The converted folder of the GGUF file `path` under `models_dir`, converting it on first use."""
    if not path.is_file():
        raise ModelError(f"{path}: no such GGUF file")
    arch, storage = read_gguf_header(path)
    digest = file_sha256(path, models_dir / INDEX_FILE)
    stem = re.sub(r"[^\w.-]+", "_", path.stem).strip("._") or "model"
    out = models_dir / f"gguf-{stem}-{digest[:12]}"
    if (out / "config.json").is_file():  # atomic_dir: the folder exists only once complete
        return out
    print(f"first use of {path}: converting it ({arch}, {path.stat().st_size / 2**20:,.0f} MiB) into {out} "
          f"(once, as {storage})", file=sys.stderr, flush=True)
    import torch

    convert_gguf(path, out, dtype=getattr(torch, storage))
    return out


def read_gguf_header(path: Path) -> tuple[str, str]:
    """(architecture, storage dtype name) from the file's metadata, without reading the weights. A file that is
    not GGUF, a split file or an architecture outside SUPPORTED_ARCHITECTURES raises ModelError."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != _MAGIC:
        raise ModelError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    from gguf import GGMLQuantizationType, GGUFReader

    try:
        reader = GGUFReader(path, "r")
        fields = reader.fields
        arch = str(fields["general.architecture"].contents()) if "general.architecture" in fields else None
        splits = int(fields["split.count"].contents()) if "split.count" in fields else 1
        types = {t.tensor_type for t in reader.tensors if len(t.shape) > 1}
    except Exception as e:  # noqa: BLE001 - any parse failure of a damaged file is the same user error
        raise ModelError(f"{path}: cannot read its GGUF metadata ({type(e).__name__}: {e})") from None
    if arch is None:
        raise ModelError(f"{path}: its GGUF metadata has no general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"{path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)}); "
            "pass a transformers model folder or hub id instead (for a GGUF-only model, convert it to a "
            "transformers folder first, e.g. with transformers' from_pretrained(..., gguf_file=...) and "
            "save_pretrained)")
    if splits > 1:
        raise ModelError(f"{path}: one part of a GGUF split into {splits} files; merge them into one first "
                         "(llama.cpp's llama-gguf-split --merge)")
    if GGMLQuantizationType.BF16 in types:
        storage = "bfloat16"
    elif types and types <= {GGMLQuantizationType.F32}:
        storage = "float32"
    else:
        storage = "float16"
    return arch, storage


def file_sha256(path: Path, index_path: Path) -> str:
    """The sha256 of `path`, hashed once per (resolved path, size, mtime_ns) and remembered in `index_path`."""
    st = path.stat()
    key = str(path.resolve())
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    seen = index.get(key)
    if isinstance(seen, dict) and seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns:
        return str(seen["sha256"])
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    index[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    atomic_write(index_path, json.dumps(index, ensure_ascii=False, indent=1, sort_keys=True))
    return digest


def convert_gguf(gguf_path: Path, out: Path, dtype=None) -> Path:
    """De-quantize a GGUF checkpoint into a plain safetensors model folder (written atomically), weights stored
    in `dtype` (default float32), with the tokenizer and the chat template the file carries."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    dtype = dtype or torch.float32
    folder, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = _chat_template(gguf_path)
    # dequantize=True: plain dense weights, also where transformers could keep them packed (GGUF kernels)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype,
                                                  quantization_config=GgufConfig(dequantize=True))
    # The loaded config still says "quantized with gguf"; a fresh model of the same architecture with a
    # clean config makes a folder that any transformers/peft/vLLM user can load.
    cfg = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        cfg.pop(key, None)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelError(f"converting {gguf_path}: missing weights {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.generation_config = loaded.generation_config
    with atomic_dir(out) as tmp:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def _chat_template(gguf_path: Path) -> str | None:
    """tokenizer.chat_template from the file's metadata (where the tokenizer conversion did not keep it)."""
    from gguf import GGUFReader

    field = GGUFReader(gguf_path, "r").fields.get("tokenizer.chat_template")
    return str(field.contents()) if field is not None else None
