"""The general-ability probe: plain Chinese questions with checkable answers, asked in character.

    from tunesmith.eval.probe import load_probe, probe_correct
    items = load_probe()                                   # the bundled resources/probe_zh.jsonl
    probe_correct("四乘五得二十。", ["20", "二十"])         # True

A tuned role model must still answer "4*5等于多少" with 20 (in its own voice).  Each item is
`{"id", "question", "accept": [str, ...], "kind": "arithmetic" | "fact"}`; an answer is correct when it
contains any accepted string, compared after NFKC + lower case with spaces removed.  A number (digits or
Chinese numerals) must stand alone: "20" is not found in "200" and "二十" is not found in "二十五".
No accepted string occurs in its own question, so repeating the question does not score.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.data.records import strict_loads
from tunesmith.errors import DataError

PROBE_FILE = Path(__file__).resolve().parents[1] / "resources" / "probe_zh.jsonl"
_ZH_NUMERALS = "零〇一二两三四五六七八九十百千万亿"
CHECKER_DESCRIPTION = (
    "correct = the answer contains one of the accepted strings (NFKC, lower case, spaces removed); "
    "numbers must stand alone (20 is not found in 200, 二十 not in 二十五)"
)


def _norm(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text or "").lower())


def _pattern(accept: str) -> re.Pattern:
    a = _norm(accept)
    if a.isdigit():
        return re.compile(rf"(?<![0-9.]){re.escape(a)}(?![0-9]|\.[0-9])")
    if all(ch in _ZH_NUMERALS for ch in a):
        return re.compile(rf"(?<![{_ZH_NUMERALS}]){re.escape(a)}(?![{_ZH_NUMERALS}])")
    return re.compile(re.escape(a))


def probe_correct(answer: str, accept: Sequence[str]) -> bool:
    """Whether `answer` contains any accepted string (numbers standing alone)."""
    text = _norm(answer)
    return any(_pattern(a).search(text) for a in accept if _norm(a))


def load_probe(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Probe items from a JSONL file (default: the bundled probe_zh.jsonl)."""
    p = Path(path) if path else PROBE_FILE
    if not p.is_file():
        raise DataError("probe file not found (expected JSONL lines {\"question\": str, \"accept\": [str, ...]})",
                        str(p))
    items = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p}:{i}"
        try:
            rec = strict_loads(line)
        except ValueError as e:  # bad syntax, a key given twice, nesting too deep
            msg = getattr(e, "msg", str(e))
            raise DataError(f"invalid JSON ({msg}); expected {{\"question\": str, \"accept\": [str, ...]}}",
                            where) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not rec["question"].strip():
            raise DataError('expected {"question": str, "accept": [str, ...]} with a non-empty question', where)
        acc = rec.get("accept")
        if not isinstance(acc, list) or not acc or not all(isinstance(a, str) and a.strip() for a in acc):
            raise DataError('field "accept" must be a non-empty list of non-empty strings', where)
        items.append({"id": str(rec.get("id") or f"line{i}"), "question": rec["question"], "accept": acc,
                      "kind": rec.get("kind", "")})
    if not items:
        raise DataError("the probe file has no questions", str(p))
    return items


def probe_scores(answers: Sequence[str], items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"accuracy", "n", "correct", "by_kind": {kind: accuracy}}."""
    if len(answers) != len(items):
        raise ValueError(f"{len(answers)} answers for {len(items)} probe questions")
    ok = [probe_correct(a, it["accept"]) for a, it in zip(answers, items)]
    by_kind: dict[str, list[bool]] = {}
    for good, it in zip(ok, items):
        by_kind.setdefault(it.get("kind") or "other", []).append(good)
    n = len(items)
    return {"n": n, "correct": sum(ok), "accuracy": sum(ok) / n if n else 0.0,
            "by_kind": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}, "ok": ok}
