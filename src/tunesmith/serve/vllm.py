"""vLLM's OpenAI server for a base model and its tunesmith LoRA adapters: the launch command, built here.

    tunesmith serve -a libai=runs/libai/adapter --print-vllm-command     # print it (no vLLM needed)
    tunesmith serve -a libai=runs/libai/adapter --backend vllm           # run it (on a machine with vLLM)

The command serves the same model names as `tunesmith serve` ("base" and each adapter's name) and renders
prompts exactly as tunesmith does: the adapters' saved template (`template.json`), default system text
included, is written as Jinja next to the first adapter (`chat_template.jinja`) and passed as
`--chat-template`. vLLM takes one chat template per server, so adapters with different templates need one
server each.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.adapter_spec import BASE
from tunesmith.errors import ConfigError, ModelError

CHAT_TEMPLATE_FILE = "chat_template.jinja"
# LoRA ranks vLLM's --max-lora-rank accepts; an adapter's rank is rounded up to the next one
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass
class VllmLaunch:
    """What `vllm serve` needs, gathered from the model, the adapters and the serve options."""

    model: str
    adapters: dict[str, str] = field(default_factory=dict)  # name -> adapter folder
    template: str | None = None  # --template of tunesmith serve (used without adapters)
    host: str = "127.0.0.1"
    port: int = 8000
    dtype: str = "auto"
    quantization: str = "none"
    trust_remote_code: bool = False
    max_new_tokens: int = 256
    # where the chat template file goes (None: next to the first adapter; the current folder without adapters)
    chat_template_file: str | None = None
    extra_args: list[str] = field(default_factory=list)  # appended as given (e.g. --tensor-parallel-size 2)


def _adapter_rank(folder: Path) -> int:
    path = folder / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
    ranks = [cfg.get("r") or 0, *(cfg.get("rank_pattern") or {}).values()]
    return max(int(r) for r in ranks)


def max_lora_rank(ranks: list[int]) -> int:
    """The smallest rank vLLM accepts that holds every adapter's rank."""
    need = max(ranks)
    for r in VLLM_LORA_RANKS:
        if r >= need:
            return r
    raise ConfigError(f"an adapter has LoRA rank {need}: vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}")


def _templates(launch: VllmLaunch, tokenizer):
    """The one chat template every adapter uses (the base's without adapters); adapters that differ are refused."""
    from tunesmith.template import load_template, template_from_arg

    if not launch.adapters:
        return template_from_arg(launch.template, tokenizer)
    found = {name: load_template(path) or template_from_arg(launch.template, tokenizer)
             for name, path in launch.adapters.items()}
    first_name, first = next(iter(found.items()))
    for name, tpl in found.items():
        if tpl != first:
            raise ConfigError(f"adapters {first_name!r} and {name!r} use different chat templates "
                              f"({first.name}, default system {first.default_system!r} vs {tpl.name}, "
                              f"{tpl.default_system!r}): vLLM takes one chat template per server; start one "
                              "server per template (one --backend vllm command each, on its own --port)")
    return first


def _stop_override(tokenizer, tpl, model_path: str) -> list[int]:
    """Stop tokens of the template that the model's generation config does not list (vLLM stops on those)."""
    from transformers import GenerationConfig

    from tunesmith.template import ChatTemplate, stop_token_ids

    try:
        gen = GenerationConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        gen = None
    listed = set(stop_token_ids(tokenizer, ChatTemplate("plain"), gen))  # EOS and the generation config's list
    wanted = set(stop_token_ids(tokenizer, tpl, gen))
    return sorted(wanted) if wanted - listed else []


def build_vllm_command(launch: VllmLaunch, tokenizer=None) -> list[str]:
    """`vllm serve ...` as an argument list; writes the chat template file it refers to."""
    from tunesmith.fsio import atomic_write
    from tunesmith.model import resolve_model_path
    from tunesmith.template import to_jinja

    if launch.dtype not in _DTYPES:
        raise ConfigError(f"--dtype: expected one of {', '.join(_DTYPES)} (got {launch.dtype!r})")
    if launch.quantization not in ("none", "4bit"):
        raise ConfigError(f"--quantization {launch.quantization}: vLLM quantizes bitsandbytes weights on load "
                          "in 4 bits only (use 4bit or none)")
    from tunesmith.infer.adapters import adapter_folders

    model_path = resolve_model_path(launch.model)
    folders = {name: path.resolve() for name, path in adapter_folders(launch.adapters).items()}
    ranks = [_adapter_rank(f) for f in folders.values()]
    if tokenizer is None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=launch.trust_remote_code)
        except (OSError, ValueError) as e:
            raise ModelError(f"{launch.model}: its tokenizer does not load here ({e}); the command needs it for "
                             "the chat template and stop tokens: a model folder, or a hub id in the local "
                             "Hugging Face cache") from None
    tpl = _templates(launch, tokenizer)
    cmd = ["vllm", "serve", model_path, "--served-model-name", BASE,
           "--host", launch.host, "--port", str(launch.port), "--dtype", _DTYPES[launch.dtype]]
    # the base alone with its tokenizer's template: vLLM renders that one itself, no file is needed
    if folders or tpl.name != "tokenizer" or tpl.default_system is not None:
        out = (Path(launch.chat_template_file).expanduser().resolve() if launch.chat_template_file
               else next(iter(folders.values()), Path.cwd()) / CHAT_TEMPLATE_FILE)
        atomic_write(out, to_jinja(tpl, tokenizer))
        cmd += ["--chat-template", str(out)]
    if folders:
        cmd += ["--enable-lora", "--lora-modules", *(f"{name}={path}" for name, path in folders.items()),
                "--max-lora-rank", str(max_lora_rank(ranks)), "--max-loras", str(len(folders))]
    override: dict[str, object] = {"max_new_tokens": launch.max_new_tokens}
    stops = _stop_override(tokenizer, tpl, model_path)
    if stops:
        override["eos_token_id"] = stops
    cmd += ["--override-generation-config", json.dumps(override)]
    if launch.quantization == "4bit":
        cmd += ["--quantization", "bitsandbytes"]
    if launch.trust_remote_code:
        cmd.append("--trust-remote-code")
    return cmd + list(launch.extra_args)


def shown_command(cmd: list[str], api_key: str | None) -> str:
    """The command as one shell line. A key never goes on a command line (`ps` shows it to every user of the
    machine): vLLM reads it from VLLM_API_KEY, set here from the variable tunesmith reads its own from."""
    return ('VLLM_API_KEY="$TUNESMITH_API_KEY" ' if api_key else "") + shlex.join(cmd)
