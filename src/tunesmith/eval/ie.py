"""Scoring strict-format answers: JSON parse rate, IE triple precision/recall/F1, classification accuracy.

    from tunesmith.eval.ie import parse_json_answer, triple_scores, classification_scores, task_of_target
    parse_json_answer('```json\\n[{"subject": "A", ...}]\\n```')     # (True, [...])
    triple_scores(predictions, targets)    # {"parse_rate", "precision", "recall", "f1", "typed_f1", ...}
    classification_scores(predictions, targets)   # {"accuracy", "macro_f1", "labels", ...}

IE targets are a ```json fenced list of {predicate, object_type, subject_type, object, subject};
classification targets a JSON list with one label, e.g. ["水果"].

Rules (stated in every report):
- An answer parses when the body of its first ```json (or ```) fence, or else the whole answer, is JSON,
  or when a JSON list/object starts at its first '[' or '{' (words around it are allowed; a truncated
  list is not).  A JSON object is read as a list of one.
- Triples are (subject, predicate, object), compared exactly after stripping outer spaces; the typed view
  adds (subject_type, object_type).  Per answer, triples are a set: repeating a triple counts once.
  Items that are not objects or lack subject/predicate/object count as wrong predicted triples.
- Precision/recall/F1 are micro-averaged over all answers (summed true positives, predicted and gold
  triples); an unparseable answer predicts no triples.
- Classification: the predicted label is the first string of the answer's JSON list (strict view); the
  lenient view also accepts an answer that names exactly one of the known labels in plain text.
  The label set is the labels found in the targets.  Macro-F1 averages per-label F1 over that set.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)(?:```|$)", re.S)
TRIPLE_KEYS = ("subject", "predicate", "object")
TYPED_KEYS = ("subject", "subject_type", "predicate", "object", "object_type")

IE_RULES = (
    "JSON: the body of the first ```json fence (or the whole answer), else a JSON list/object starting at its "
    "first '[' or '{'; triples (subject, predicate, object) match exactly after stripping spaces, typed view "
    "adds subject_type and object_type; a triple repeated in one answer counts once; micro P/R/F1 over all answers"
)
CLS_RULES = (
    "label = first string of the answer's JSON list (strict); lenient also accepts plain text naming exactly "
    "one known label; label set = labels in the targets; macro-F1 = mean per-label F1 over that set"
)


def parse_json_answer(text: str | None) -> tuple[bool, Any]:
    """(parsed, value). Fenced ```json first, then the bare answer, then a JSON list/object inside it."""
    if not text or not text.strip():
        return False, None
    candidates = []
    m = _FENCE.search(text)
    if m:
        candidates.append(m.group(1))
    candidates.append(text)
    dec = json.JSONDecoder()
    for cand in candidates:
        body = cand.strip()
        if not body:
            continue
        try:
            return True, json.loads(body)
        except (ValueError, RecursionError):  # a model can write brackets thousands deep
            pass
        # JSON with words around it: decode from the first bracket only, so that a truncated list
        # fails instead of yielding one of its inner objects.
        start = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
        if start >= 0:
            try:
                return True, dec.raw_decode(body, start)[0]
            except (ValueError, RecursionError):
                pass
    return False, None


def _items(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    return []


def _field(item: dict, key: str) -> str | None:
    v = item.get(key)
    if v is None:
        return None
    return v.strip() if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def extract_triples(value: Any, typed: bool = False) -> tuple[set[tuple], int]:
    """(set of triples, number of malformed items) from a parsed IE answer."""
    keys = TYPED_KEYS if typed else TRIPLE_KEYS
    out: set[tuple] = set()
    malformed = 0
    for item in _items(value):
        if not isinstance(item, dict) or any(_field(item, k) in (None, "") for k in TRIPLE_KEYS):
            malformed += 1
            continue
        out.add(tuple(_field(item, k) or "" for k in keys))
    return out, malformed


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    # Nothing predicted and nothing to find is perfect; otherwise an empty side scores 0.
    p = tp / n_pred if n_pred else (1.0 if n_gold == 0 else 0.0)
    r = tp / n_gold if n_gold else (1.0 if n_pred == 0 else 0.0)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def triple_match(prediction: str, target: str, typed: bool = False) -> dict[str, Any]:
    """Per-answer counts: parsed, tp, n_pred, n_gold (malformed predicted items count as predicted)."""
    parsed, value = parse_json_answer(prediction)
    _, gold_value = parse_json_answer(target)
    gold, _ = extract_triples(gold_value, typed)
    if not parsed:
        return {"parsed": False, "tp": 0, "n_pred": 0, "n_gold": len(gold)}
    pred, malformed = extract_triples(value, typed)
    return {"parsed": True, "tp": len(pred & gold), "n_pred": len(pred) + malformed, "n_gold": len(gold)}


def triple_scores(predictions: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    """Parse rate and micro precision/recall/F1 of triples, plain and typed."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    out: dict[str, Any] = {"n": len(predictions)}
    parsed = 0
    for typed, prefix in ((False, ""), (True, "typed_")):
        tp = n_pred = n_gold = 0
        for pred, tgt in zip(predictions, targets):
            m = triple_match(pred, tgt, typed)
            tp, n_pred, n_gold = tp + m["tp"], n_pred + m["n_pred"], n_gold + m["n_gold"]
            if not typed:
                parsed += m["parsed"]
        p, r, f = _prf(tp, n_pred, n_gold)
        out.update({f"{prefix}precision": p, f"{prefix}recall": r, f"{prefix}f1": f})
        if not typed:
            out.update({"tp": tp, "predicted_triples": n_pred, "gold_triples": n_gold})
    out["parse_rate"] = parsed / len(predictions) if predictions else 0.0
    return out


def label_of(text: str | None) -> str | None:
    """The first string of a JSON list answer (['水果'] -> '水果'), or a bare JSON string; else None."""
    parsed, value = parse_json_answer(text)
    if not parsed:
        return None
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0].strip()
    if isinstance(value, str):
        return value.strip()
    return None


def lenient_label(text: str | None, labels: Sequence[str]) -> str | None:
    strict = label_of(text)
    if strict is not None:
        return strict
    named = [lab for lab in labels if lab and lab in (text or "")]
    return named[0] if len(named) == 1 else None


def classification_scores(predictions: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 over the label set found in the targets; JSON parse rate of the answers."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions but {len(targets)} targets")
    gold = [label_of(t) for t in targets]
    labels = sorted({g for g in gold if g is not None})
    strict = [label_of(p) for p in predictions]
    lenient = [lenient_label(p, labels) for p in predictions]
    n = len(predictions)
    parsed = sum(parse_json_answer(p)[0] for p in predictions)

    def acc(pred: list[str | None]) -> float:
        return sum(p is not None and p == g for p, g in zip(pred, gold)) / n if n else 0.0

    def macro_f1(pred: list[str | None]) -> float:
        if not labels:
            return 0.0
        total = 0.0
        for lab in labels:
            tp = sum(p == lab and g == lab for p, g in zip(pred, gold))
            n_pred = sum(p == lab for p in pred)
            n_gold = sum(g == lab for g in gold)
            total += _prf(tp, n_pred, n_gold)[2]
        return total / len(labels)

    return {
        "n": n,
        "parse_rate": parsed / n if n else 0.0,
        "accuracy": acc(strict),
        "macro_f1": macro_f1(strict),
        "lenient_accuracy": acc(lenient),
        "labels": labels,
        "gold_counts": dict(sorted(Counter(g for g in gold if g is not None).items())),
        "unknown_predictions": sum(p is not None and p not in labels for p in strict),
    }


def task_of_target(target: str | None) -> str:
    """'ie' for a ```json fenced (or JSON list of objects) target, 'cls' for a JSON list of strings, else 'text'."""
    if not target:
        return "text"
    if "```json" in target:
        return "ie"
    parsed, value = parse_json_answer(target)
    if parsed and isinstance(value, list) and value:
        if all(isinstance(x, str) for x in value):
            return "cls"
        if all(isinstance(x, dict) for x in value):
            return "ie"
    return "text"
