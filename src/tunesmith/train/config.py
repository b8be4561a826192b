"""A training recipe: YAML file + `key=value` overrides -> a checked `TrainConfig`.

    from tunesmith.train.config import load_config
    cfg = load_config("configs/rolebench_libai.yaml", ["max_steps=50", "lora.rank=16", "data.packing=false"])

Every value is converted to the type its field declares, the same way for the YAML file and for
overrides: "false", "False", "0", "no", "off" are False for a bool field (never `bool("False")`),
"2e-4" is a float for a float field (PyYAML reads it as a string), "null"/"none" is None where a field
allows None.  Unknown keys fail with the closest known names; YAML syntax errors name file:line.

Imports only the standard library and PyYAML (the CLI must start fast).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.parsing import parse_bool

SCHEDULERS = ("cosine", "linear", "constant")
DTYPES = ("auto", "fp32", "bf16", "fp16")
LOSS_WEIGHTINGS = ("token", "sample")
DEVICES = ("auto", "cpu", "cuda", "mps")
QUANTIZATIONS = ("none", "8bit", "4bit")
TEMPLATES = ("auto", "tokenizer", "chatml", "plain", "instruction")
METHODS = ("sft", "dpo", "orpo", "kto")
# TRL's DPO losses offered by name: sigmoid is DPO itself, ipo the IPO paper's squared loss, hinge SLiC,
# robust the noise-tolerant rDPO, sigmoid_norm DPO on length-normalised log-probs.
DPO_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "sigmoid_norm")

# Names people bring from other tools: suggested when they are used, never silently accepted.
KNOWN_ALIASES = {
    "learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size", "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum", "lr_scheduler_type": "scheduler",
    "warmup_ratio": "warmup", "warmup_steps": "warmup", "cutoff_len": "data.max_source_len",
    "max_seq_length": "data.pack_length", "lora_r": "lora.rank", "lora_rank": "lora.rank", "r": "lora.rank",
    "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout", "lora_target": "lora.target_modules",
    "target_modules": "lora.target_modules", "train_file": "data.train", "dev_file": "data.dev",
    "eval_file": "data.dev", "model_name_or_path": "model", "base_model": "model", "bf16": "dtype",
    "fp16": "dtype", "load_in_4bit": "quantization", "load_in_8bit": "quantization",
    "resume_from_checkpoint": "resume", "packing": "data.packing", "max_source_length": "data.max_source_len",
    "max_target_length": "data.max_target_len", "output": "output_dir", "out": "output_dir",
    "stage": "method", "rlhf_type": "method", "card": "character", "character_card": "character",
    "pref_beta": "preference.beta", "pref_loss": "preference.loss_type",
    "beta": "preference.beta", "loss_type": "preference.loss_type", "adapter_name_or_path": "init_adapter",
    "pref_ftx": "preference.sft_weight", "rpo_alpha": "preference.sft_weight",
}


def _help(text: str) -> dict[str, str]:
    """A field's metadata: its `help` is what `tunesmith train --help` lists for the key."""
    return {"help": text}


@dataclass
class LoraConfigSection:
    rank: int = field(default=8, metadata=_help("r: adapter capacity; memory and time grow linearly with it"))
    alpha: float = field(default=16.0, metadata=_help("scale = alpha / rank"))
    dropout: float = field(default=0.05, metadata=_help("dropout on the LoRA input"))
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata=_help(
        "all-linear (every linear layer of the decoder except the output head, QLoRA-paper style) or module "
        "names such as q_proj,v_proj (ChatGLM: query_key_value)"))


@dataclass
class DataConfigSection:
    # Dataset specs for tunesmith.data.resolve_dataset; relative paths are relative to the folder the command
    # runs in.
    train: Any = field(default=None, metadata=_help(
        "training data: a path, {path, format, ...options}, {name, data_dir} of a registered dataset, or a list "
        "of them (required; test splits are refused)"))
    dev: Any = field(default=None, metadata=_help("dev data for the dev loss, given like data.train"))
    dev_ratio: float = field(default=0.0, metadata=_help(
        "without data.dev: carve this fraction of the training questions out as the dev set"))
    max_dev_samples: int = field(default=200, metadata=_help(
        "dev loss on at most this many conversations (a fixed subset: eval time stays bounded)"))
    max_source_len: int = field(default=512, metadata=_help(
        "tokens before the final answer (system + history + question); a longer prompt loses its middle"))
    max_target_len: int = field(default=256, metadata=_help(
        "tokens of the final answer with its end token; a longer answer loses its tail"))
    train_on_prompt: bool = field(default=False, metadata=_help("also learn the prompt tokens"))
    last_turn_only: bool = field(default=False, metadata=_help(
        "in multi-turn conversations learn only the last answer"))
    packing: bool = field(default=True, metadata=_help(
        "lay each batch end to end in one row: no padding, no attention across conversations"))
    share_prefixes: bool = field(default=True, metadata=_help(
        "packing: a prompt prefix that several conversations of a batch begin with (a persona, an instruction) is "
        "computed once in the row and they all attend to it; the same loss and gradients for fewer tokens "
        "(tunesmith's packed attention only, checked at start; off with flash-attention)"))
    shuffle: bool = field(default=True, metadata=_help(
        "draw the training conversations in a seeded random order; false: in the order of the data files, every "
        "epoch (a curriculum, or a side-by-side run with a tool that reads in order)"))
    group_by_length: bool = field(default=True, metadata=_help(
        "without packing: batches of similar lengths (less padding)"))
    max_samples: int | None = field(default=None, metadata=_help(
        "train on only the first N conversations (after the seeded shuffle, if any)"))


@dataclass
class PreferenceConfigSection:
    beta: float = field(default=0.1, metadata=_help(
        "dpo/kto: how close the tuned model stays to the reference (higher: closer); orpo: weight of the "
        "odds-ratio term next to the chosen answers' loss"))
    loss_type: str = field(default="sigmoid", metadata=_help(
        "dpo loss: sigmoid (DPO) | ipo | hinge | robust | sigmoid_norm (length-normalised)"))
    sft_weight: float = field(default=0.0, metadata=_help(
        "dpo: also learn the chosen answers (their token loss) with this weight; keeps the voice (RPO)"))
    precompute_ref: bool = field(default=False, metadata=_help(
        "dpo/kto: score every answer with the reference once before training instead of at every step"))
    desirable_weight: float = field(default=1.0, metadata=_help("kto: weight of the answers labelled good"))
    undesirable_weight: float = field(default=1.0, metadata=_help("kto: weight of the answers labelled bad"))


@dataclass
class TrainConfig:
    model: str = field(default="default", metadata=_help(
        "a model folder, a hub id, a .gguf file (llama or qwen2, converted once into the cache), or default "
        "(SmolLM2-135M-Instruct, bundled)"))
    template: str = field(default="auto", metadata=_help(
        "auto | tokenizer | chatml | plain | instruction; saved as template.json next to the adapter"))
    system: str | None = field(default=None, metadata=_help(
        "system prompt for conversations that have none (saved with the template)"))
    character: str | None = field(default=None, metadata=_help(
        "a character card (JSON or PNG) or a character.json: saved as character.json next to the adapter, and its "
        "persona is the system text of conversations without one (unless system is set); without it, a card the "
        "training data came from (or init_adapter's character) is saved"))
    output_dir: str = field(default="runs/tunesmith", metadata=_help(
        "where the adapter, checkpoints, loss.png and summary.json go"))
    method: str = field(default="sft", metadata=_help(
        "sft (answers) | dpo | orpo (pairs: chosen vs rejected) | kto (answers judged good or bad)"))
    init_adapter: str | None = field(default=None, metadata=_help(
        "start from this trained adapter (e.g. runs/libai/adapter) instead of a fresh LoRA; its template is used"))
    data: DataConfigSection = field(default_factory=DataConfigSection)
    lora: LoraConfigSection = field(default_factory=LoraConfigSection)
    preference: PreferenceConfigSection = field(default_factory=PreferenceConfigSection)
    batch_size: int = field(default=8, metadata=_help("conversations per device per micro-step"))
    grad_accum: int = field(default=1, metadata=_help(
        "micro-steps per optimizer step: a bigger effective batch without more memory"))
    lr: float = field(default=2e-4, metadata=_help("peak learning rate"))
    # token: every answer token counts the same (long answers dominate); sample: every conversation counts
    # the same (each one's mean token loss), so 5-token labels are not drowned by 100-token extractions
    loss_weighting: str = field(default="token", metadata=_help(
        "token: every answer token counts the same; sample: every conversation counts the same"))
    scheduler: str = field(default="cosine", metadata=_help("cosine | linear | constant decay after warmup"))
    warmup: float = field(default=0.03, metadata=_help("below 1: fraction of all steps; 1 or more: number of steps"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay on the LoRA weights"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping"))
    epochs: float = field(default=1.0, metadata=_help("passes over the training data (fractions allowed)"))
    max_steps: int | None = field(default=None, metadata=_help("optimizer steps; when set, wins over epochs"))
    logging_steps: int = field(default=10, metadata=_help(
        "a progress line every N steps; the loss shown is the mean of those N steps"))
    eval_steps: int = field(default=50, metadata=_help("dev loss and a sample answer every N steps (and at step 0)"))
    save_steps: int | None = field(default=None, metadata=_help(
        "a checkpoint every N steps (default: eval_steps; with keep_best a multiple of it)"))
    save_total_limit: int = field(default=2, metadata=_help("checkpoints kept on disk (the best one is always kept)"))
    keep_best: bool = field(default=True, metadata=_help(
        "with dev data: the saved adapter is the checkpoint with the lowest dev loss"))
    sample_tokens: int = field(default=48, metadata=_help(
        "greedy tokens generated for the first dev prompt at each eval (0: off)"))
    dtype: str = field(default="auto", metadata=_help(
        "auto | fp32 | bf16 | fp16 (auto: bf16/fp16 on GPU; on CPU bf16 where it measures faster)"))
    device: str = field(default="auto", metadata=_help("auto | cpu | cuda | mps"))
    threads: int | None = field(default=None, metadata=_help(
        "CPU threads (default: the cores no normal-priority work keeps busy; niced work counts as free, busy cores "
        "make extra threads wait; with every core free the threads spin while they wait and are lowered as soon as "
        "other work takes a core; set: they wait passively)"))
    quantization: str = field(default="none", metadata=_help("none | 8bit | 4bit (QLoRA; CUDA + bitsandbytes)"))
    gradient_checkpointing: bool = field(default=False, metadata=_help(
        "recompute activations in the backward pass: less memory, slower"))
    compile: str = field(default="auto", metadata=_help(
        "auto | true | false: torch.compile the decoder layers (inductor), faster steps after a one-off compile; "
        "auto compiles when the run's measured step time says it pays (docs/training.md)"))
    seed: int = field(default=42, metadata=_help("data order, LoRA initialisation, dropout"))
    resume: bool = field(default=False, metadata=_help(
        "continue from the last checkpoint in output_dir (fails if there is none)"))
    overwrite: bool = field(default=False, metadata=_help("start over in an output_dir that already holds checkpoints"))
    trust_remote_code: bool = field(default=False, metadata=_help("models that ship their own code (ChatGLM3)"))
    eval_batch_size: int | None = field(default=None, metadata=_help(
        "conversations per dev batch (default: batch_size)"))
    plot: bool = field(default=True, metadata=_help("write loss.png"))
    generation: dict[str, Any] | None = field(default=None, metadata=_help(
        "the sampler recommended for the adapter, a mapping of generation options (e.g. {dry_multiplier: 0.8, "
        "dry_allowed_length: 2}): saved as generation.json next to it; chat, serve and the web chat use it where a "
        "request does not say otherwise (docs/serving.md)"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- type conversion --------------------------------------------------------------------------------
_NONE = {"null", "none", "~", ""}


def _type_label(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def coerce(value: Any, tp: Any, what: str) -> Any:
    """Convert `value` (from YAML or a command line string) to the declared field type `tp`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        return coerce(value, args[0], what)
    if tp is bool:
        return parse_bool(value, what)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{what}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    pass
                else:
                    if f.is_integer():
                        return int(f)
        raise ConfigError(f"{what}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{what}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{what}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{what}: expected a string, got {value!r}")
        return str(value)
    if origin is dict:
        if isinstance(value, str):
            value = _parse_scalar_text(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{what}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = _parse_scalar_text(value)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            value = [value]
        return [coerce(v, inner, f"{what}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{what}: unsupported field type {tp}")


def _parse_scalar_text(text: str) -> Any:
    """YAML-parse an override value that is meant to be structured (a list or mapping)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# -- field tables -----------------------------------------------------------------------------------
def _sections() -> dict[str, type]:
    return {"data": DataConfigSection, "lora": LoraConfigSection, "preference": PreferenceConfigSection}


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys() -> list[str]:
    """Every settable dotted key, e.g. ['model', ..., 'data.train', ..., 'lora.rank', ...]."""
    keys = []
    for name in _field_types(TrainConfig):
        sec = _sections().get(name)
        if sec is None:
            keys.append(name)
        else:
            keys.extend(f"{name}.{k}" for k in _field_types(sec))
    return keys


def key_help() -> list[tuple[str, str, str]]:
    """(dotted key, default as YAML would write it, help) for every key, from the fields' metadata."""
    top = [(k, _default_text(f), f.metadata["help"]) for k, f in _fields(TrainConfig).items() if k not in _sections()]
    sections = [(f"{name}.{k}", _default_text(f), f.metadata["help"])
                for name, sec in _sections().items() for k, f in _fields(sec).items()]
    return top + sections


def keys_help_text(indent: str = "    ") -> str:
    """The key listing `tunesmith train --help` shows: one `key  default  help` line per key."""
    rows = key_help()
    width = max(len(k) for k, _, _ in rows)
    dwidth = max(len(d) for _, d, _ in rows)
    return "\n".join(f"{indent}{k:<{width}}  {d:<{dwidth}}  {h}" for k, d, h in rows)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _default_text(fld: dataclasses.Field) -> str:
    value = fld.default_factory() if fld.default is dataclasses.MISSING else fld.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _unknown_key_message(key: str) -> str:
    keys = all_keys()
    hints: list[str] = []
    leaf = key.split(".")[-1]
    for cand in (key, leaf):
        if cand in KNOWN_ALIASES and KNOWN_ALIASES[cand] not in hints:
            hints.append(KNOWN_ALIASES[cand])
    for k in difflib.get_close_matches(key, keys, n=3, cutoff=0.6):
        if k not in hints:
            hints.append(k)
    for k in keys:  # "rank" -> lora.rank
        if k.split(".")[-1] == leaf and k not in hints:
            hints.append(k)
    msg = f"unknown key {key!r}"
    if hints:
        msg += f" (did you mean {', '.join(hints[:4])}?)"
    return msg + "; see `tunesmith train --help` or docs/training.md for the keys"


# -- YAML with line numbers -------------------------------------------------------------------------
def _load_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in a YAML file and the line (1-based) of every dotted key in it."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML ({problem})") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping of keys to values at the top level "
                          f"(got {type(data).__name__})")
    lines: dict[str, int] = {}

    def walk(n: Any, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode):
                    dotted = f"{prefix}{k.value}"
                    lines[dotted] = k.start_mark.line + 1
                    if not prefix:  # only one level of sections
                        walk(v, dotted + ".")

    walk(node, "")
    return data, lines


# -- building the config ----------------------------------------------------------------------------
def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    d = raw
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. max_steps=50 or lora.rank=16)")
    key, value = text.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {text!r}: the key before '=' is empty")
    return key, value


def build_config(raw: dict[str, Any], where: dict[str, str] | None = None) -> TrainConfig:
    """A TrainConfig from a nested mapping; `where` maps dotted keys to 'FILE:LINE' or 'override k=v'."""
    where = where or {}
    top_types = _field_types(TrainConfig)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        loc = where.get(str(key))
        prefix = f"{loc}: " if loc else ""
        if key not in top_types:
            raise ConfigError(prefix + _unknown_key_message(str(key)))
        sec = _sections().get(key)
        if sec is None:
            kwargs[key] = coerce(value, top_types[key], f"{prefix}{key}")
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{prefix}{key}: expected a mapping of {key}.* keys (got {value!r})")
        sec_types = _field_types(sec)
        sec_kwargs = {}
        for k, v in value.items():
            dotted = f"{key}.{k}"
            loc = where.get(dotted) or where.get(key)
            pfx = f"{loc}: " if loc else ""
            if k not in sec_types:
                raise ConfigError(pfx + _unknown_key_message(dotted))
            sec_kwargs[k] = coerce(v, sec_types[k], f"{pfx}{dotted}")
        kwargs[key] = sec(**sec_kwargs)
    cfg = TrainConfig(**kwargs)
    validate(cfg, where)
    return cfg


COMPILE_MODES = ("auto", "true", "false")


def compile_mode(value) -> str | None:
    """'auto' | 'true' | 'false' from a YAML bool or any spelling parse_bool takes; None for anything else."""
    if str(value).strip().lower() == "auto":
        return "auto"
    try:
        return "true" if parse_bool(value) else "false"
    except ConfigError:
        return None


def _choice(value: str, choices: tuple[str, ...], key: str, where: dict[str, str]) -> None:
    if value not in choices:
        loc = where.get(key)
        raise ConfigError(f"{loc + ': ' if loc else ''}{key}: {value!r} is not one of {', '.join(choices)}")


def _check_generation(values: dict[str, Any], where: dict[str, str]) -> dict[str, Any]:
    """The recipe's recommended sampler checked now, so a bad key fails before training (named with its line)."""
    from tunesmith.infer.options import check_generation

    try:
        return check_generation(values, "generation")
    except ConfigError as e:
        key = str(e).split(":", 1)[0]
        loc = where.get(key) or where.get("generation")
        raise ConfigError(f"{loc}: {e}" if loc else str(e)) from None


def validate(cfg: TrainConfig, where: dict[str, str] | None = None) -> None:
    where = where or {}

    def fail(key: str, msg: str) -> None:
        loc = where.get(key)
        raise ConfigError(f"{loc + ': ' if loc else ''}{key}: {msg}")

    _choice(cfg.scheduler, SCHEDULERS, "scheduler", where)
    cfg.compile = compile_mode(cfg.compile) or cfg.compile
    _choice(cfg.compile, COMPILE_MODES, "compile", where)
    if cfg.generation is not None:
        cfg.generation = _check_generation(cfg.generation, where)
    _choice(cfg.dtype, DTYPES, "dtype", where)
    _choice(cfg.loss_weighting, LOSS_WEIGHTINGS, "loss_weighting", where)
    _choice(cfg.device, DEVICES, "device", where)
    _choice(cfg.quantization, QUANTIZATIONS, "quantization", where)
    _choice(cfg.template, TEMPLATES, "template", where)
    _choice(cfg.method, METHODS, "method", where)
    _choice(cfg.preference.loss_type, DPO_LOSSES, "preference.loss_type", where)
    if not cfg.preference.beta > 0:
        fail("preference.beta", f"must be > 0 (got {cfg.preference.beta})")
    for key in ("sft_weight", "desirable_weight", "undesirable_weight"):
        if getattr(cfg.preference, key) < 0:
            fail(f"preference.{key}", f"must be >= 0 (got {getattr(cfg.preference, key)})")
    for key in ("batch_size", "grad_accum", "logging_steps", "eval_steps", "save_total_limit"):
        if getattr(cfg, key) < 1:
            fail(key, f"must be at least 1 (got {getattr(cfg, key)})")
    for key in ("save_steps", "eval_batch_size", "threads"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            fail(key, f"must be at least 1 (got {getattr(cfg, key)})")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        fail("max_steps", f"must be at least 1, or null to train for `epochs` (got {cfg.max_steps})")
    if cfg.max_steps is None and cfg.epochs <= 0:
        fail("epochs", f"must be > 0 (got {cfg.epochs})")
    if not cfg.lr > 0:
        fail("lr", f"must be > 0 (got {cfg.lr})")
    if cfg.warmup < 0:
        fail("warmup", f"must be >= 0 (got {cfg.warmup})")
    if cfg.lora.rank < 1:
        fail("lora.rank", f"must be at least 1 (got {cfg.lora.rank})")
    if not 0 <= cfg.lora.dropout < 1:
        fail("lora.dropout", f"must be in [0, 1) (got {cfg.lora.dropout})")
    if not cfg.lora.target_modules:
        fail("lora.target_modules", "give at least one module name, or all-linear")
    for key in ("max_source_len", "max_target_len"):
        if getattr(cfg.data, key) < 1:
            fail(f"data.{key}", f"must be at least 1 (got {getattr(cfg.data, key)})")
    if not 0 <= cfg.data.dev_ratio < 1:
        fail("data.dev_ratio", f"must be in [0, 1) (got {cfg.data.dev_ratio})")
    if cfg.data.train is None:
        fail("data.train", "no training data given (e.g. data.train=data/train.jsonl)")
    if cfg.resume and cfg.overwrite:
        fail("resume", "resume=true and overwrite=true contradict each other")


def apply_overrides(raw: dict[str, Any], where: dict[str, str], overrides: list[str] | tuple[str, ...]) -> None:
    """Apply `key=value` strings to a nested mapping in place (recording where each value came from)."""
    top_types = _field_types(TrainConfig)
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in _sections():
            parsed = _parse_scalar_text(value)
            if not isinstance(parsed, dict):
                raise ConfigError(f"override {text}: {key} is a section; set one of its keys, "
                                  f"e.g. {key}.{next(iter(_field_types(_sections()[key])))}=...")
            for k, v in parsed.items():
                _set(raw, f"{key}.{k}", v)
                where[f"{key}.{k}"] = f"override {text}"
            continue
        if parts[0] not in top_types or len(parts) > 2 or (len(parts) == 2 and parts[0] not in _sections()):
            raise ConfigError(f"override {text}: " + _unknown_key_message(key))
        tp = top_types[parts[0]]
        if len(parts) == 2:
            tp = _field_types(_sections()[parts[0]]).get(parts[1], str)
        # Structured fields (dataset specs) take YAML; typed fields keep the text for `coerce`.
        _set(raw, key, _parse_scalar_text(value) if tp is Any else value)
        where[key] = f"override {text}"


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                base: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML recipe (or start from `base`, or from defaults) and apply `key=value` overrides in order."""
    raw: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in (base or {}).items()}
    where: dict[str, str] = {}
    if path is not None:
        p = Path(path)
        raw, lines = _load_yaml(p)
        where = {k: f"{p}:{n}" for k, n in lines.items()}
    apply_overrides(raw, where, list(overrides))
    return build_config(raw, where)


def dump_config(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), allow_unicode=True, sort_keys=False)
