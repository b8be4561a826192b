"""Parsing values typed by people (CLI overrides, /set commands, form fields)."""

from __future__ import annotations

from typing import Any

from tunesmith.errors import ConfigError

TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n", "f"})


def parse_bool(value: Any, what: str = "value") -> bool:
    """'false'/'False'/'0'/'no'/'off' are False: a plain bool("False") is True, so a
    `type=bool` flag would read "False" as on."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ConfigError(f"{what}: expected true or false (got {value!r})")
