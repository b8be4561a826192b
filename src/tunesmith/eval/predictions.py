"""predictions.jsonl: every answer of every model, appended per batch so that an interrupted eval resumes.

    store = PredictionStore(Path("report/predictions.jsonl"))
    done = store.done("base", signature)            # {prompt id: prediction} already answered
    store.append([{"model": "base", "id": ..., "prediction": ...}, ...])   # written and flushed at once

Each line: {"model", "sig", "set", "id", "role"?, "question", "prediction", "tokens", "seconds"}.
`sig` fingerprints what produced the answer (model, adapter, template, generation options, dtype); a
line counts as done only for the same fingerprint, and a folder holding answers made with other
settings is refused (use a new -o folder, or --overwrite) rather than silently mixed.  A torn last
line (the process was killed mid-write) is dropped when the file is opened again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tunesmith.data.records import strict_loads
from tunesmith.errors import ConfigError


def signature(parts: dict[str, Any]) -> str:
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:12]


class PredictionStore:
    def __init__(self, path: Path, overwrite: bool = False):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if overwrite and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        offset = 0  # byte offset of the current line
        for i, line in enumerate(lines):
            if line.strip():
                try:
                    row = strict_loads(line.decode("utf-8"))
                    if not isinstance(row, dict) or not {"model", "id", "prediction"} <= row.keys():
                        raise ValueError("not a prediction line")
                except (ValueError, UnicodeDecodeError):
                    if any(rest.strip() for rest in lines[i + 1:]):
                        raise ConfigError(f"{self.path}:{i + 1}: not a prediction line (expected JSON with model, id, "
                                          "prediction); fix it, or start over with --overwrite") from None
                    # A torn last line from an interrupted run: cut it so the next append starts clean.
                    with open(self.path, "r+b") as f:
                        f.truncate(offset)
                    return
                self.rows.append(row)
            offset += len(line) + 1
        if raw and not raw.endswith(b"\n"):
            with open(self.path, "ab") as f:
                f.write(b"\n")

    def check_signature(self, model: str, sig: str) -> None:
        other = {r.get("sig") for r in self.rows if r["model"] == model and r.get("sig") != sig}
        if other:
            raise ConfigError(
                f"{self.path} already holds answers of {model!r} made with other settings (model, adapter, template "
                "or generation options changed); use a new -o folder, or --overwrite to start over")

    def done(self, model: str, sig: str) -> dict[str, str]:
        return {r["id"]: r["prediction"] for r in self.rows if r["model"] == model and r.get("sig") == sig}

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)
