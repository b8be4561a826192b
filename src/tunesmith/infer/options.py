"""Generation options shared by the engine, the terminal chat, the API and the web UI.

    from tunesmith.infer.options import GenerationOptions
    opts = GenerationOptions(max_new_tokens=64, do_sample=True, temperature=0.8, seed=1, stop=["\\n\\n"])
    opts = opts.updated({"do_sample": "false", "num_beams": "4"})   # strings parsed by field type

Every value is checked by `validate()`; a bad one raises ConfigError naming the field and the allowed range.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.fsio import read_json_file
from tunesmith.parsing import parse_bool  # noqa: F401  (re-exported: chat /set and the API use it)

MAX_N = 16
# How a list of prompts is batched (Engine.generate): left-padded batches, transformers' continuous
# batching (greedy only), or continuous whenever the options allow it.
BATCHING_MODES = ("padded", "continuous", "auto")
MAX_STOP_STRINGS = 16
# torch.manual_seed takes an unsigned 64-bit seed; a larger one overflowed inside the engine (a 500).
MAX_SEED = 2**64 - 1
# Below this a temperature is greedy decoding (as vLLM does): dividing logits by a denormal like 1e-320
# makes them infinite and sampling from NaN probabilities fails inside torch.
MIN_SAMPLING_TEMPERATURE = 1e-5
# A repetition penalty divides or multiplies logits; near zero it makes them infinite, as above.
MIN_REPETITION_PENALTY = 1e-3
# DRY's defaults are those of its reference implementations (text-generation-webui, llama.cpp, koboldcpp).
DRY_SEQUENCE_BREAKERS = ("\n", ":", "\"", "*")
MAX_DRY_BREAKERS = 64
# What DRY counts as an earlier occurrence: the whole context (prompt and reply, as the reference
# implementations do); the reply alone, so that quoting the question or the persona costs nothing; or the
# character's own words, its earlier replies in the conversation and this one (the user's and the system's text
# stay free to quote, a line said again from one turn to the next does not).
DRY_SCOPES = ("context", "reply", "own")
# The samplers of infer/samplers.py, with the value that turns each off: options that change logits by what
# was generated before (see `anti_repeat`).
SAMPLER_OFF = {"min_p": 0.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "no_repeat_ngram_size": 0,
               "dry_multiplier": 0.0}

@dataclass
class GenerationOptions:
    max_new_tokens: int = 256
    do_sample: bool = False  # False: greedy (or beam search when num_beams > 1)
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50  # 0 disables top-k
    repetition_penalty: float = 1.0
    num_beams: int = 1
    seed: int | None = None  # makes sampling reproducible (such a request runs in a batch of its own)
    stop: list[str] = field(default_factory=list)  # the reply ends before the first of these strings
    n: int = 1  # replies per prompt; with beam search, the n best beams (n <= num_beams)
    # Samplers against loops (infer/samplers.py; docs/serving.md "Samplers against loops"); each default is off.
    min_p: float = 0.0  # sampling keeps tokens with at least min_p x the top token's probability
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token already generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per time a token was generated
    no_repeat_ngram_size: int = 0  # no n-gram of this size occurs twice (transformers' processor)
    dry_multiplier: float = 0.0  # DRY: penalty = multiplier * base ** (match length - allowed length)
    dry_base: float = 1.75
    dry_allowed_length: int = 2  # repeats this long are free
    dry_sequence_breakers: list[str] = field(default_factory=lambda: list(DRY_SEQUENCE_BREAKERS))
    dry_range: int = 0  # DRY looks at the last this many tokens (0: the whole prompt and reply)
    dry_scope: str = "context"  # context: prompt and reply (the reference); reply: this one; own: the character's

    def validate(self) -> GenerationOptions:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"{name}: expected {expected} (got {getattr(self, name)!r})")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise bad("max_new_tokens", "an integer >= 1")
        if not isinstance(self.do_sample, bool):
            raise bad("do_sample", "true or false")
        if not is_num(self.temperature) or not 0 <= self.temperature <= 100:
            raise bad("temperature", "a number in [0, 100]")
        if not is_num(self.top_p) or not 0 < self.top_p <= 1:
            raise bad("top_p", "a number in (0, 1]")
        if not is_int(self.top_k) or self.top_k < 0:
            raise bad("top_k", "an integer >= 0 (0 disables top-k)")
        if not is_num(self.repetition_penalty) or not MIN_REPETITION_PENALTY <= self.repetition_penalty <= 10:
            raise bad("repetition_penalty", f"a number in [{MIN_REPETITION_PENALTY}, 10]")
        if not is_int(self.num_beams) or not 1 <= self.num_beams <= 32:
            raise bad("num_beams", "an integer in [1, 32]")
        if self.seed is not None and (not is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise bad("seed", "an integer in [0, 2**64 - 1] or null")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", "a list of non-empty strings")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise bad("stop", f"at most {MAX_STOP_STRINGS} strings")
        if not is_int(self.n) or not 1 <= self.n <= MAX_N:
            raise bad("n", f"an integer in [1, {MAX_N}]")
        if self.num_beams > 1 and self.n > self.num_beams:
            raise ConfigError("n: with beam search n must be <= num_beams "
                              f"(got n={self.n}, num_beams={self.num_beams})")
        self._validate_samplers(bad, is_int, is_num)
        return self

    def _validate_samplers(self, bad, is_int, is_num) -> None:
        if not is_num(self.min_p) or not 0 <= self.min_p <= 1:
            raise bad("min_p", "a number in [0, 1] (0 disables min-p)")
        for name in ("presence_penalty", "frequency_penalty"):
            if not is_num(getattr(self, name)) or not -2 <= getattr(self, name) <= 2:
                raise bad(name, "a number in [-2, 2] (0: none)")
        if not is_int(self.no_repeat_ngram_size) or not 0 <= self.no_repeat_ngram_size <= 64:
            raise bad("no_repeat_ngram_size", "an integer in [0, 64] (0 disables it)")
        if not is_num(self.dry_multiplier) or not 0 <= self.dry_multiplier <= 100:
            raise bad("dry_multiplier", "a number in [0, 100] (0 disables DRY)")
        if not is_num(self.dry_base) or not 1 < self.dry_base <= 16:
            raise bad("dry_base", "a number in (1, 16]")
        if not is_int(self.dry_allowed_length) or not 1 <= self.dry_allowed_length <= 1000:
            raise bad("dry_allowed_length", "an integer in [1, 1000]")
        breakers = self.dry_sequence_breakers
        if (not isinstance(breakers, list) or len(breakers) > MAX_DRY_BREAKERS
                or not all(isinstance(b, str) and b for b in breakers)):
            raise bad("dry_sequence_breakers", f"a list of at most {MAX_DRY_BREAKERS} non-empty strings")
        if not is_int(self.dry_range) or self.dry_range < 0:
            raise bad("dry_range", "an integer >= 0 (0: the whole sequence)")
        if self.dry_scope not in DRY_SCOPES:
            raise bad("dry_scope", ", ".join(repr(s) for s in DRY_SCOPES[:-1]) + f" or {DRY_SCOPES[-1]!r}")

    @property
    def anti_repeat(self) -> bool:
        """Whether a sampler of infer/samplers.py is on (min_p, the penalties, no-repeat n-grams, DRY)."""
        # min_p only ever acts on sampling (a greedy reply keeps the top token whatever min_p is)
        return any(getattr(self, name) != off for name, off in SAMPLER_OFF.items()
                   if name != "min_p" or self.sampling)

    @property
    def sampling(self) -> bool:
        """Sampling really happens only with do_sample and a temperature above zero."""
        return self.do_sample and self.temperature >= MIN_SAMPLING_TEMPERATURE

    def updated(self, changes: Mapping[str, Any]) -> GenerationOptions:
        """A copy with `changes` applied; string values (from a CLI or a chat command) are parsed by field type."""
        known = {f.name: f for f in dataclasses.fields(self)}
        values = dataclasses.asdict(self)
        for key, raw in changes.items():
            if key not in known:
                raise ConfigError(f"unknown generation option {key!r} (expected one of {', '.join(known)})")
            values[key] = _parse_field(key, raw)
        return GenerationOptions(**values).validate()


def _parse_field(key: str, raw: Any) -> Any:
    if not isinstance(raw, str):
        return list(raw) if key in ("stop", "dry_sequence_breakers") and isinstance(raw, (list, tuple)) else raw
    text = raw.strip()
    try:
        if key == "do_sample":
            return parse_bool(text, key)
        if key in _INT_FIELDS:
            return int(text)
        if key == "seed":
            return None if text.lower() in ("", "none", "null") else int(text)
        if key in _FLOAT_FIELDS:
            return float(text)
    except ValueError:
        raise ConfigError(f"{key}: expected a number (got {raw!r})") from None
    if key == "dry_sequence_breakers" and text.startswith("["):
        # text-generation-webui sends the breakers as a JSON list in a string: '["\\n", ":", "\\"", "*"]'
        try:
            return json.loads(text)
        except ValueError:
            raise ConfigError(f"{key}: expected a JSON list of strings (got {raw!r})") from None
    if key in ("stop", "dry_sequence_breakers"):
        # "a|b" -> ["a", "b"]; \n and \t are understood so a newline can be typed
        return [s.replace("\\n", "\n").replace("\\t", "\t") for s in raw.split("|") if s]
    return raw


_INT_FIELDS = ("max_new_tokens", "top_k", "num_beams", "n", "no_repeat_ngram_size", "dry_allowed_length", "dry_range")
_FLOAT_FIELDS = ("temperature", "top_p", "repetition_penalty", "min_p", "presence_penalty", "frequency_penalty",
                 "dry_multiplier", "dry_base")


# -- the recommended sampler saved next to an adapter -------------------------------------------------
GENERATION_FILE = "generation.json"


def check_generation(values: Any, where: str = "generation") -> dict[str, Any]:
    """A recommended sampler (a mapping of GenerationOptions fields) checked: known keys, valid values.
    A bad one is a ConfigError naming `where` and the key."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of generation options (got {type(values).__name__})")
    try:
        GenerationOptions().updated(values)
    except ConfigError as e:
        # a recipe's key path reads generation.dry_base: ..., a file's /path/generation.json: dry_base: ...
        nested = not str(e).startswith("unknown") and not where.endswith(".json")
        raise ConfigError(f"{where}.{e}" if nested else f"{where}: {e}") from None
    return {k: _parse_field(k, v) for k, v in values.items()}


def save_generation(values: Mapping[str, Any], folder: str | os.PathLike) -> Path:
    """Write `folder`/generation.json (atomically): the sampler chat, serve and the web chat use for this
    adapter where a request does not say otherwise."""
    from tunesmith.fsio import atomic_write

    checked = check_generation(values)
    return atomic_write(Path(folder) / GENERATION_FILE, json.dumps(checked, ensure_ascii=False, indent=2) + "\n")


def load_generation(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The recommended sampler saved next to an adapter (or in an exported folder); None when there is none."""
    path = Path(folder) / GENERATION_FILE
    if not path.is_file():
        return None
    values = read_json_file(path)
    return check_generation(values, str(path))
