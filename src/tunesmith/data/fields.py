"""Typed access to record fields, raising DataError messages that say what was expected.

The importers call these so that every bad record reads the same way, e.g.

    data/train.jsonl:17: field "generated" must be a list of strings (got int)

The `where` (file and line) is added by `tunesmith.data.formats.load`, which knows it.
"""

from __future__ import annotations

from typing import Any

from tunesmith.errors import ConfigError, DataError


def type_name(v: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), type(v).__name__)


def require_object(rec: Any, expected: str) -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"record must be a JSON object (got {type_name(rec)}; expected {expected})")
    return rec


def get_str(rec: dict, key: str, expected: str, *, required: bool = True, allow_empty: bool = False,
            what: str | None = None) -> str | None:
    """A string field. Missing/None -> error when required; empty or whitespace-only -> error unless allow_empty."""
    v = rec.get(key)
    label = what or f'field "{key}"'
    if v is None:
        if required:
            have = ", ".join(sorted(rec)) or "none"
            raise DataError(f"missing {label} (expected {expected}; record has: {have})")
        return None
    if not isinstance(v, str):
        raise DataError(f"{label} must be a string (got {type_name(v)})")
    if not allow_empty and not v.strip():
        raise DataError(f"{label} is empty (expected a non-empty text)")
    return v


def get_str_list(rec: dict, key: str, expected: str, *, allow_empty_items: bool = False) -> list[str]:
    v = rec.get(key)
    if v is None:
        have = ", ".join(sorted(rec)) or "none"
        raise DataError(f'missing field "{key}" (expected {expected}; record has: {have})')
    if not isinstance(v, list):
        raise DataError(f'field "{key}" must be a list of strings (got {type_name(v)})')
    if not v:
        raise DataError(f'field "{key}" is an empty list (expected at least one answer)')
    for i, item in enumerate(v):
        if not isinstance(item, str):
            raise DataError(f'field "{key}"[{i}] must be a string (got {type_name(item)})')
        if not allow_empty_items and not item.strip():
            raise DataError(f'field "{key}"[{i}] is empty (expected a non-empty answer)')
    return v


def check_options(fmt: str, opts: dict, accepted: dict[str, str]) -> None:
    """Refuse unknown importer options, listing the accepted ones (a typo must not be silently ignored)."""
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        listing = "; ".join(f"{k}: {v}" for k, v in accepted.items()) or "none"
        raise ConfigError(f"format {fmt!r} has no option {', '.join(map(repr, unknown))} (accepted options: {listing})")
