"""Score one model's answers on every set of an evaluation.

    from tunesmith.eval.scoring import score_model, per_item_scores
    metrics = score_model(items, predictions, raw_refs=None, probe_items=probe)
    # {"CUS": {"n": 289, "rouge_l_chars": 0.31, "rouge_l_words": 0.18}, "probe": {"n": 26, "accuracy": 0.5}, ...}

Items whose kind is "rouge" get ROUGE-L F (best of references) in the chars and words views plus the
exact-match rate; "ie" items get the JSON parse rate and triple P/R/F1; "cls" items accuracy and
macro-F1; the probe its accuracy; the identity questions the in-character rate (tunesmith.eval.in_character:
the share of answers that keep the role, and the count of each verdict).  Every set also gets `loop_rate`, the
share of answers that repeat an n-gram 3+ times (tunesmith.eval.repetition).  A set mixing kinds (task iecls)
reports each kind under its own prefix: "ie_f1", "cls_accuracy", ...  Only items the model answered are scored,
and `n` says how many.  Role attribution (tunesmith.eval.attribution) is added to the sets by the runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunesmith.eval.ie import classification_scores, parse_json_answer, task_of_target, triple_match, triple_scores
from tunesmith.eval.in_character import identity_scores, per_item_verdict
from tunesmith.eval.probe import probe_correct, probe_scores
from tunesmith.eval.repetition import loop_rate
from tunesmith.eval.role_breaking import CATEGORIES, ROLE_BREAKING, role_breaking_scores
from tunesmith.eval.role_breaking import per_item_verdict as breaking_verdict
from tunesmith.eval.rouge import rouge_l_zh
from tunesmith.eval.testset import CUS, IDENTITY, PROBE, RAW, EvalItem, lookup

# The number each set is judged by first (the chart and the headline table use it).
HEADLINE = {"rouge": "rouge_l_chars", "ie": "f1", "cls": "accuracy", "probe": "accuracy",
            "identity": "in_character_rate", "role_breaking": "in_character_rate"}


def _rouge_block(preds: list[str], refs: list[list[str]]) -> dict[str, Any]:
    n = len(preds)
    chars = [rouge_l_zh(p, r, "chars") for p, r in zip(preds, refs)]
    words = [rouge_l_zh(p, r, "words") for p, r in zip(preds, refs)]
    exact = [any(p.strip() == x.strip() for x in r) for p, r in zip(preds, refs)]
    return {"n": n, "rouge_l_chars": sum(chars) / n, "rouge_l_words": sum(words) / n,
            "exact_match": sum(exact) / n, "empty": sum(not p.strip() for p in preds)}


def score_items(items: Sequence[EvalItem], preds: dict[str, str]) -> dict[str, Any]:
    """Metrics of one set (items answered by the model only)."""
    answered = [i for i in items if i.id in preds]
    out: dict[str, Any] = {"n": len(answered), "n_total": len(items)}
    if not answered:
        return out
    kinds = sorted({i.kind for i in answered})
    for kind in kinds:
        group = [i for i in answered if i.kind == kind]
        p = [preds[i.id] for i in group]
        if kind == "rouge":
            block = _rouge_block(p, [i.references for i in group])
        elif kind == "ie":
            block = triple_scores(p, [i.references[0] for i in group])
        elif kind == "cls":
            block = classification_scores(p, [i.references[0] for i in group])
        elif kind == "probe":
            block = probe_scores(p, [i.meta for i in group])
            block.pop("ok", None)
        elif kind == "identity":
            block = identity_scores(p, [i.meta for i in group])
        elif kind == "role_breaking":
            block = role_breaking_scores(p, [i.meta for i in group])
        else:  # pragma: no cover - kinds are set by testset/probe
            raise ValueError(f"unknown item kind {kind!r}")
        if len(kinds) == 1:
            out.update({k: v for k, v in block.items() if k != "n"})
        else:
            out.update({f"{kind}_{k}": v for k, v in block.items()})
    out["loop_rate"] = loop_rate(preds[i.id] for i in answered)
    if {"ie", "cls"} <= set(kinds):  # the strict-format bar: every JSON answer parses
        out["parse_rate"] = sum(parse_json_answer(preds[i.id])[0] for i in answered if i.kind in ("ie", "cls")) / \
            sum(1 for i in answered if i.kind in ("ie", "cls"))
    return out


def score_model(items: Sequence[EvalItem], preds: dict[str, str],
                raw_refs: dict[tuple[str, str], list[str]] | None = None) -> dict[str, dict[str, Any]]:
    """{set name: metrics} for one model; RAW (when raw references are given) re-scores the CUS answers."""
    sets: dict[str, list[EvalItem]] = {}
    for i in items:
        sets.setdefault(i.set, []).append(i)
    out = {name: score_items(group, preds) for name, group in sets.items()}
    if raw_refs and CUS in sets:
        raw_items = []
        for i in sets[CUS]:
            refs = lookup(raw_refs, i)
            if refs:
                raw_items.append(EvalItem(i.id, RAW, i.system, i.messages, refs, "rouge", i.meta))
        if raw_items:
            out[RAW] = score_items(raw_items, preds)
    return out


def per_item_scores(item: EvalItem, prediction: str) -> str:
    """A short score for one answer, shown under it in the side-by-side table."""
    if item.kind == "rouge":
        return f"R-L {rouge_l_zh(prediction, item.references, 'chars'):.2f}"
    if item.kind == "ie":
        m = triple_match(prediction, item.references[0])
        return f"JSON {'ok' if m['parsed'] else 'no'}, {m['tp']}/{m['n_gold']} triples"
    if item.kind == "cls":
        from tunesmith.eval.ie import label_of

        return "right" if label_of(prediction) == label_of(item.references[0]) else "wrong"
    if item.kind == "probe":
        return "right" if probe_correct(prediction, item.meta["accept"]) else "wrong"
    if item.kind == "identity":
        return per_item_verdict(item, prediction)
    if item.kind == "role_breaking":
        return breaking_verdict(item, prediction)
    return ""


def headline_metrics(set_name: str, metrics: dict[str, Any]) -> list[str]:
    """Metric keys worth a column for a set, in display order."""
    keys = [k for k in ("rouge_l_chars", "rouge_l_words", "parse_rate", "ie_parse_rate", "f1", "ie_f1",
                        "typed_f1", "ie_typed_f1", "accuracy", "cls_accuracy", "macro_f1", "cls_macro_f1",
                        "rouge_rouge_l_chars", "role_share", "loop_rate") if k in metrics]
    if set_name == PROBE:
        keys = ["accuracy"]
    if set_name == IDENTITY:
        keys = ["in_character_rate", "names_role_rate"]
    if set_name == ROLE_BREAKING:
        keys = [k for k in ("in_character_rate", *CATEGORIES) if k in metrics]
    if set_name == "drift":  # long conversations (eval/drift.py): the rates early and late, and the drift
        keys = [f"{w}_{d}" for w in ("in_character", "attribution") for d in ("early", "late", "drift")
                if f"{w}_{d}" in metrics]
    return keys


__all__ = ["HEADLINE", "score_items", "score_model", "per_item_scores", "headline_metrics", "task_of_target"]
