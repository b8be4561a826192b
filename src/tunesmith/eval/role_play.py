"""The role-play sets of an evaluation: long conversations (persona drift) and role-breaking probes.

The runner calls these at three points:
    add_sets(cfg, inputs, test_items)         which sets run: on by default when the identity questions would be
                                              (the probe is on and the test data names a role); the probes join
                                              inputs.items (set role_breaking), the scripts wait in inputs.role_play
    answer_long_conversations(...)            per model, after its other answers: the scripts, turn by turn
    add_results(inputs, preds, metrics, result)   metrics[model]["drift"], the set order, notes, summaries
and the report calls report_tables(result) for its "In character" section (one column per model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.eval.drift import (
    DEPTHS,
    DRIFT,
    answer_conversations,
    depth_of,
    drift_scores,
    load_conversations,
    transcripts,
)
from tunesmith.eval.drift import DESCRIPTION as DRIFT_DESCRIPTION
from tunesmith.eval.in_character import IN_CHARACTER, main_role, verdict
from tunesmith.eval.role_breaking import CATEGORIES, ROLE_BREAKING, probe_items
from tunesmith.eval.role_breaking import DESCRIPTION as BREAKING_DESCRIPTION


@dataclass
class RolePlay:
    role: str
    persona: str | None
    scripts: list[dict[str, Any]] = field(default_factory=list)  # long conversations ([] when off)
    probes: int = 0  # role-breaking probes added to the items (0 when off)


def _wanted(flag: bool | None, inputs) -> bool:
    return flag if flag is not None else inputs.use_probe


def add_sets(cfg, inputs, test_items) -> None:
    """Add the role-breaking probes to inputs.items and keep the long-conversation scripts in inputs.role_play."""
    for limit, option in ((cfg.long_conversations_limit, "long_conversations_limit"),
                          (cfg.role_breaking_limit, "role_breaking_limit")):
        if limit is not None and limit < 1:
            raise ConfigError(f"{option}: expected an integer >= 1 (got {limit})")
    long_on = _wanted(cfg.long_conversations, inputs)
    breaking_on = _wanted(cfg.role_breaking, inputs)
    if not (long_on or breaking_on) or not inputs.run_models:  # answer files have no answers to them
        return
    role, persona = main_role(test_items)
    if role is None:
        for flag, option in ((cfg.long_conversations, "--long-conversations"), (cfg.role_breaking, "--role-breaking")):
            if flag:
                raise ConfigError(f"{option}: the test records name no role (meta.role) to judge the answers for")
        return
    rp = RolePlay(role, persona)
    if long_on:
        rp.scripts = load_conversations(cfg.long_conversations_file, cfg.long_conversations_limit)
    if breaking_on:
        probes = probe_items(cfg.role_breaking_file, role, persona, cfg.role_breaking_limit)
        inputs.items = inputs.items + probes
        rp.probes = len(probes)
    inputs.role_play = rp


def answer_long_conversations(cfg, engine, inputs, store, name: str, adapter: str, template, sig: str,
                              stats: dict[str, Any]) -> dict[str, Any]:
    """One model runs the scripts (with the probe's generation options); its stats gain theirs."""
    rp = inputs.role_play
    if rp is None or not rp.scripts:
        return stats
    more = answer_conversations(engine, store, name, adapter, template, sig, rp.scripts, rp.role, rp.persona,
                                inputs.probe_options, cfg.batch_size, cfg.batching)
    return {**stats, **{k: stats.get(k, 0) + v for k, v in more.items()}}


def add_results(inputs, preds: dict[str, dict[str, str]], metrics: dict[str, Any], result: dict[str, Any]) -> None:
    """metrics[model]["drift"] for every model that answered, the drift set in the report, notes and summaries."""
    rp = inputs.role_play
    result["long_conversations"] = result["role_breaking"] = None
    if rp is None:
        return
    if rp.scripts:
        for name in inputs.run_models:
            if name in preds:
                metrics[name][DRIFT] = drift_scores(rp.scripts, rp.role, rp.persona, preds[name], inputs.classifier)
        turns = sum(len(s["turns"]) for s in rp.scripts)
        result["set_order"].append(DRIFT)
        result["set_sizes"][DRIFT] = turns
        result["long_conversations"] = {"role": rp.role, "persona": rp.persona, "conversations": len(rp.scripts),
                                        "turns": turns, "ids": [s["id"] for s in rp.scripts]}
        result["metric_notes"].append(DRIFT_DESCRIPTION)
        shown = [m for m in inputs.run_models if m in preds]
        result.setdefault("side_by_side", []).extend(probe_rows(rp, preds, shown)[:result.get("show", 20)])
    if rp.probes:
        cats = [i.meta.get("category") for i in inputs.items if i.set == ROLE_BREAKING]
        result["role_breaking"] = {"role": rp.role, "persona": rp.persona, "probes": rp.probes,
                                   "by_category": {c: cats.count(c) for c in dict.fromkeys(cats)}}
        result["metric_notes"].append(BREAKING_DESCRIPTION)


def probe_rows(rp: RolePlay, preds: dict[str, dict[str, str]], models: list[str]) -> list[dict[str, Any]]:
    """Side-by-side rows of the identity probes of the long conversations: each model's answer (asked after its
    own earlier answers) and its verdict."""
    done = {m: transcripts(rp.scripts, rp.persona, preds[m]) for m in models}
    rows = []
    for c, script in enumerate(rp.scripts):
        n = len(script["turns"])
        for k, turn in enumerate(script["turns"]):
            if turn["probe"] != "identity":
                continue
            answers = {}
            for m in models:
                if k < len(done[m][c]):
                    text = done[m][c][k]["answer"]
                    v = verdict(text, rp.role, question=turn["user"], persona=rp.persona)[0]
                    answers[m] = (text, f"{'in' if v in IN_CHARACTER else 'out of'} character: {v}")
            rows.append({"set": DRIFT, "question": f"{script['id']}, turn {k + 1} of {n} ({depth_of(k, n)}): "
                                                   f"{turn['user']}", "answers": answers,
                         "reference": f"after its own answers to turns 1-{k}: names {rp.role}, or claims no AI"})
    return rows


def _pct(v: Any) -> str:
    return f"{100 * v:.1f} %" if isinstance(v, (int, float)) else "n/a"


def _points(v: Any) -> str:
    return f"{v:+.1f} points" if isinstance(v, (int, float)) else "n/a"


def report_tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows): the drift table and the role-breaking table, one column per model."""
    tables = []
    models = [m for m in result["model_order"] if DRIFT in result["metrics"].get(m, {})]
    lc = result.get("long_conversations")
    if lc and models:
        blocks = [result["metrics"][m][DRIFT] for m in models]
        rows = [[f"in character at identity probes, {d} turns"] + [f"{_pct(b[f'in_character_{d}'])} "
                                                                    f"(of {b[f'probes_{d}']})" for b in blocks]
                for d in DEPTHS]
        rows.append(["in_character_drift (late - early)"] + [_points(b["in_character_drift"]) for b in blocks])
        if all("attribution_drift" in b for b in blocks):
            rows += [[f"answers attributed to the role, {d} turns"] + [_pct(b[f"attribution_{d}"]) for b in blocks]
                     for d in DEPTHS]
            rows.append(["attribution_drift (late - early)"] + [_points(b["attribution_drift"]) for b in blocks])
        rows.append(["turns answered"] + [f"{b['n']}/{b['n_total']}" for b in blocks])
        caption = (f"Persona drift over {lc['conversations']} scripted conversations ({lc['turns']} user turns; "
                   f"the model's own answers are the history), judged for {lc['role']}")
        tables.append((caption, ["measure", *models], rows))
    models = [m for m in result["model_order"] if "in_character_rate" in result["metrics"].get(m, {}).get(
        ROLE_BREAKING, {})]
    rb = result.get("role_breaking")
    if rb and models:
        blocks = [result["metrics"][m][ROLE_BREAKING] for m in models]
        cats = [c for c in CATEGORIES if c in rb["by_category"]] + [c for c in rb["by_category"]
                                                                    if c not in CATEGORIES]
        rows = [[f"{c} (n {rb['by_category'][c]})"] + [_pct(b.get(c)) for b in blocks] for c in cats]
        rows.append([f"all probes (n {rb['probes']})"] + [_pct(b["in_character_rate"]) for b in blocks])
        rows += [[f"{c} verdicts"] + [", ".join(f"{v} {n}" for v, n in b["counts"].get(c, {}).items()) for b in blocks]
                 for c in cats]
        tables.append((f"Role-breaking probes by category, in-character rate, judged for {rb['role']}",
                       ["category", *models], rows))
    return tables


__all__ = ["RolePlay", "add_sets", "answer_long_conversations", "add_results", "report_tables"]
