"""Writing outputs so that a crash never leaves half of one: build beside the target, then rename.

    from tunesmith.fsio import atomic_write, atomic_file, atomic_dir
    atomic_write("summary.json", json.dumps(summary))        # str or bytes
    with atomic_file("rows.jsonl") as f:                      # stream into it; replaced only on success
        for row in rows:
            f.write(json.dumps(row) + "\\n")
    with atomic_dir("runs/x/adapter") as tmp:                 # fill a folder; it replaces the old one at the end
        model.save_pretrained(tmp)

Every writer here puts its temporary file or folder in the target's own folder (so the final os.replace is a
rename on one file system) and removes it when the body fails: the previous output, if any, stays untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Yield an open temporary file beside `path` ("w": UTF-8 text with "\\n" line ends, "wb": bytes); when the
    body ends without error it becomes `path`, otherwise it is deleted."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', not {mode!r}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        if mode == "wb":
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        with f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an output file should be readable like any other
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` in one step."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Write each line plus "\\n" to `path` in one step; returns how many lines. `lines` may be a generator: it is
    consumed inside the write, so an error it raises half-way leaves the old file as it was."""
    n = 0
    with atomic_file(path) as f:
        for line in lines:
            f.write(line)
            f.write("\n")
            n += 1
    return n


@contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `out`, on error it is removed.

    An existing `out` is renamed aside first and deleted only once the new folder is in place, so a crash
    during the swap leaves one of the two complete folders, never a mix."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a model folder should be readable like any other
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_file(path: Path):
    """A small JSON file saved next to an adapter (template, character, sampler), parsed; ConfigError naming the
    file and line when it is not UTF-8 JSON."""
    import json

    from tunesmith.errors import ConfigError

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
