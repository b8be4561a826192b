"""`--adapter NAME=PATH` as every command reads it (chat, serve, eval, label), with one rule for bare paths.

    parse_adapter_specs(["libai=runs/libai/adapter", "runs/sanguo/adapter"])
    # {"libai": "runs/libai/adapter", "sanguo": "runs/sanguo/adapter"}

A bare PATH is named after its folder, or after the folder above when it is called `adapter` (what
`tunesmith train` writes: runs/NAME/adapter). A name is letters of any script (李白 is fine), digits, '_'
and '-'; `base` names the model without adapters and cannot be taken.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tunesmith.errors import ConfigError

BASE = "base"
# Letters of any script (李白 is a fine adapter name), digits, "_" and "-": a name, never a path.
ADAPTER_NAME_RE = re.compile(r"[^\W]+(?:[-_][^\W]+)*|[\w-]+")


def adapter_name_from_path(path: str) -> str:
    """runs/libai/adapter -> libai; runs/libai-v2 -> libai-v2."""
    p = Path(path.rstrip("/"))
    return p.parent.name if p.name == "adapter" and p.parent.name else p.name


def check_adapter_name(name: str, flag: str = "--adapter") -> str:
    if not name or name == BASE or not ADAPTER_NAME_RE.fullmatch(name):
        raise ConfigError(f"{flag} name {name!r}: expected letters (any script, e.g. 李白), digits, '_' or '-', "
                          f"and not {BASE!r} (the model without adapters)")
    return name


def parse_name_path(spec: str, flag: str, default_name: Callable[[str], str] | None = None) -> tuple[str, str]:
    """"NAME=PATH" -> (NAME, PATH), both stripped; a bare PATH takes default_name(PATH), or is refused when
    there is no default."""
    name, sep, path = spec.partition("=")
    if not sep:
        if default_name is None:
            raise ConfigError(f"{flag} {spec!r}: expected NAME=PATH (e.g. {flag} libai=runs/libai/adapter)")
        name, path = default_name(spec.strip()), spec
    name, path = name.strip(), path.strip()
    if not name or not path:
        raise ConfigError(f"{flag} {spec!r}: expected NAME=PATH with a non-empty name and path "
                          f"(e.g. {flag} libai=runs/libai/adapter)")
    return name, path


def parse_adapter_specs(specs: list[str] | None, flag: str = "--adapter") -> dict[str, str]:
    """["libai=runs/libai/adapter", "runs/sanguo/adapter"] -> {"libai": ..., "sanguo": ...}, in the given
    order; a ConfigError names a bad spec, a bad name or a name given twice."""
    out: dict[str, str] = {}
    for spec in specs or []:
        name, path = parse_name_path(spec, flag, adapter_name_from_path)
        check_adapter_name(name, flag)
        if name in out:
            raise ConfigError(f"{flag}: the name {name!r} is given twice")
        out[name] = path
    return out
