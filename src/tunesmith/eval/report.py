"""Write an evaluation's report: report.md, report.html, metrics.json and a bar chart (metrics.png).

    from tunesmith.eval.report import write_report
    write_report(out_dir, result)      # result: the dict run_eval builds (see tunesmith.eval.runner)

Every file is written to a temp file in the folder and renamed into place.  Text from models and data is
HTML-escaped in both the HTML and the Markdown (whose tables also get their pipes escaped), so an answer
can never break the page.
"""

from __future__ import annotations

import base64
import html
import json
import os
import sys
from pathlib import Path
from typing import Any

from tunesmith.eval.testset import CUS, IDENTITY, PROBE, RAW, SPE
from tunesmith.fonts import MISSING_HINT, chart_rc
from tunesmith.fsio import atomic_file, atomic_write

CHART_FILE = "metrics.png"
METRIC_LABELS = {
    "rouge_l_chars": "ROUGE-L (chars)",
    "rouge_l_words": "ROUGE-L (jieba words)",
    "rouge_rouge_l_chars": "text ROUGE-L (chars)",
    "exact_match": "exact match",
    "loop_rate": "looping answers",
    "parse_rate": "JSON parse rate",
    "ie_parse_rate": "IE JSON parse rate",
    "f1": "triple F1",
    "ie_f1": "IE triple F1",
    "typed_f1": "typed triple F1",
    "ie_typed_f1": "IE typed triple F1",
    "accuracy": "accuracy",
    "cls_accuracy": "CLS accuracy",
    "macro_f1": "macro-F1",
    "cls_macro_f1": "CLS macro-F1",
    "role_share": "attributed to the role",
    "in_character_rate": "in-character rate",
    "names_role_rate": "names the role",
    "drop_role": "drop-role requests",  # role-breaking probes (eval/role_breaking.py): in-character rate per category
    "ooc_task": "out-of-character tasks",
    "anachronism": "anachronisms",
    "unknowable": "unknowable questions",
    "in_character_early": "in character, early turns",  # long conversations (eval/drift.py)
    "in_character_late": "in character, late turns",
    "in_character_drift": "in-character drift (points)",
    "attribution_early": "attributed to the role, early turns",
    "attribution_late": "attributed to the role, late turns",
    "attribution_drift": "attribution drift (points)",
}
SET_LABELS = {CUS: "CUS (general test, speaking style)", SPE: "SPE (role-specific test, role knowledge)",
              RAW: "RAW (plain-answer references)", PROBE: "general-ability probe",
              IDENTITY: "identity questions (in character)", "role_breaking": "role-breaking probes",
              "drift": "long conversations (persona drift)"}


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if v is None:
        return "n/a"
    return str(v)


def columns(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(set, metric) pairs that get a column, in display order."""
    from tunesmith.eval.scoring import headline_metrics

    cols: list[tuple[str, str]] = []
    for set_name in result["set_order"]:
        seen: dict[str, Any] = {}
        for m in result["metrics"].values():
            seen.update(m.get(set_name, {}))
        cols += [(set_name, k) for k in headline_metrics(set_name, seen)]
    return cols


def metric_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    cols = columns(result)
    header = ["model"] + [f"{s} {METRIC_LABELS.get(k, k)}" for s, k in cols] + [f"n {s}" for s in result["set_order"]]
    rows = []
    for model in result["model_order"]:
        m = result["metrics"].get(model, {})
        row = [model]
        row += [fmt(m.get(s, {}).get(k)) for s, k in cols]
        row += [f"{m.get(s, {}).get('n', 0)}/{m.get(s, {}).get('n_total', 0)}" for s in result["set_order"]]
        rows.append(row)
    return header, rows


def delta_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Each other model minus the base, per headline metric."""
    base = result["metrics"].get("base")
    if not base:
        return [], []
    cols = columns(result)
    header = ["model"] + [f"Δ {s} {METRIC_LABELS.get(k, k)}" for s, k in cols]
    rows = []
    for model in result["model_order"]:
        if model == "base":
            continue
        m = result["metrics"].get(model, {})
        row = [model]
        for s, k in cols:
            a, b = m.get(s, {}).get(k), base.get(s, {}).get(k)
            row.append(f"{a - b:+.4f}" if isinstance(a, float) and isinstance(b, float) else "n/a")
        rows.append(row)
    return header, rows


def _md_cell(text: str, limit: int | None = None) -> str:
    t = text if limit is None or len(text) <= limit else text[:limit] + "…"
    return html.escape(t).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- in character: identity verdicts, role attribution, the classifier's held-out accuracy -------------------

def in_character_tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of the report's "In character" section; [] when neither score was computed."""
    from tunesmith.eval.in_character import VERDICT_ORDER

    tables = []
    ident = result.get("identity")
    if ident:
        rows = []
        for model in result["model_order"]:
            block = result["metrics"].get(model, {}).get(IDENTITY)
            if block and block.get("n"):
                rows.append([model, f"{block['in_character_rate']:.4f}"]
                            + [str(block["counts"].get(c, 0)) for c in VERDICT_ORDER] + [str(block["n"])])
        caption = (f"Identity questions asked in character ({ident['questions']}), judged for {ident['role']}: the "
                   "in-character rate counts names_role and keeps_role")
        tables.append((caption, ["model", "in-character rate", *VERDICT_ORDER, "n"], rows))
    clf = result.get("attribution")
    if clf:
        rows = []
        for model in result["model_order"]:
            for set_name in result["set_order"]:
                block = result["metrics"].get(model, {}).get(set_name, {})
                if "role_share" in block:
                    counts = ", ".join(f"{r} {n}" for r, n in block["attributed"].items())
                    rows.append([model, set_name, f"{block['role_share']:.4f}", counts, str(block["attributed_n"])])
        tables.append(("Role attribution: the role a character n-gram classifier says each answer sounds like",
                       ["model", "set", "attributed to the role", "attributed to", "n"], rows))
        held = clf["heldout"]
        caption = (f"The classifier: trained on {sum(clf['train_answers'].values())} RoleBench-zh train answers of "
                   f"{len(clf['roles'])} roles; accuracy on {held['n']} held-out test answers {held['accuracy']:.4f} "
                   f"(chance {1 / len(clf['roles']):.2f}). Rows: the true role; columns: the role it said")
        said = clf["roles"] + sorted({p for row in held["confusion"].values() for p in row} - set(clf["roles"]))
        rows = [[t, f"{held['per_role'][t]['recall']:.2f}", *(str(held["confusion"][t].get(p, 0)) for p in said)]
                for t in clf["roles"]]
        tables.append((caption, ["role", "recall", *said], rows))
    from tunesmith.eval.role_play import report_tables

    return tables + report_tables(result)  # persona drift, role-breaking probes


# -- chart ---------------------------------------------------------------------------------------

def draw_chart(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """Grouped bars: one group per headline metric, one bar per model. Returns {"font": the CJK family or None}.

    Chinese labels (model and set names) are set in the bundled CJK font (tunesmith.fonts); a warning that says
    how to fix it is printed only when no CJK font is found at all (the font package missing: a broken install).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rc, font = chart_rc()
    rc["axes.unicode_minus"] = False
    if not font:
        print(f"warning: {MISSING_HINT}", file=sys.stderr)
    with plt.rc_context(rc):
        fig = _chart_figure(result, plt)
        try:
            with atomic_file(path, "wb") as f:
                fig.savefig(f, format="png")
        finally:
            plt.close(fig)
    return {"font": font}


def _chart_figure(result: dict[str, Any], plt):
    cols = [(s, k) for s, k in columns(result) if k not in ("rouge_l_words", "typed_f1", "ie_typed_f1")
            and not k.endswith("_drift")]  # drifts are points, not 0-1 scores
    models = result["model_order"]
    fig_w = max(6.0, 1.2 + 0.5 * len(cols) * max(1, len(models)))
    fig, ax = plt.subplots(figsize=(min(fig_w, 18.0), 4.5), dpi=110)
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        vals = [result["metrics"].get(model, {}).get(s, {}).get(k) for s, k in cols]
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(cols))]
        heights = [v if isinstance(v, (int, float)) else 0.0 for v in vals]
        bars = ax.bar(xs, heights, width, label=model)
        for b, v in zip(bars, vals):
            if isinstance(v, (int, float)):
                ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                            fontsize=7)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([f"{s}\n{METRIC_LABELS.get(k, k)}" for s, k in cols], fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score (0-1)")
    ax.set_title(f"tunesmith eval: {result['task']} — base vs tuned")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


# -- side by side ---------------------------------------------------------------------------------

def side_by_side(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows {set, question, answers: {model: (text, score)}, reference} for the first N items of each set."""
    return result.get("side_by_side", [])


def _md_side_by_side(result: dict[str, Any], limit_chars: int = 300) -> str:
    rows = side_by_side(result)
    if not rows:
        return "_no answers to show_"
    models = result["model_order"]
    header = ["set", "question"] + models + ["reference"]
    body = []
    for r in rows:
        cells = [r["set"], r["question"]]
        for m in models:
            a = r["answers"].get(m)
            cells.append(f"{a[0]}\n({a[1]})" if a else "—")
        cells.append(r["reference"])
        body.append(cells)
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_md_cell(c, limit_chars) for c in cells) + " |" for cells in body]
    return "\n".join(out)


def render_markdown(result: dict[str, Any]) -> str:
    h, rows = metric_rows(result)
    dh, drows = delta_rows(result)
    lines = [f"# Evaluation: {result['task']}", ""]
    lines += ["Command:", "", "```", result["command"], "```", ""]
    lines += [f"Started {result['started']}, took {result['seconds']:.1f} s "
              f"({result['seconds'] / 60:.1f} min); device: {result.get('device', '?')}.", ""]
    lines += ["## Metrics", "", _md_table(h, rows), ""]
    if drows:
        lines += ["Change against the base model:", "", _md_table(dh, drows), ""]
    lines += [f"![metrics chart]({CHART_FILE})", ""]
    in_char = in_character_tables(result)
    if in_char:
        lines += ["## In character", ""]
        for caption, header, body in in_char:
            lines += [caption + ":", "", _md_table(header, body), ""]
    lines += ["## Setup", ""]
    lines += [f"- base model: `{result['model']}`"]
    for name, info in result["models"].items():
        if info["kind"] == "adapter":
            lines.append(f"- adapter `{name}`: `{info['path']}` (template `{info['template']}`)")
        elif info["kind"] == "score-file":
            lines.append(f"- `{name}`: existing answers from {', '.join('`' + p + '`' for p in info['paths'])} "
                         f"(matched to test records by (role, question)), scored with the same metric")
    lines.append(f"- fairness: {result['fairness']}")
    lines.append(f"- generation: `{json.dumps(result['generation'], ensure_ascii=False)}`"
                 + (f"; probe: `{json.dumps(result['probe_generation'], ensure_ascii=False)}`"
                    if result.get("probe_generation") else ""))
    for model, info in result["models"].items():
        if info.get("seconds") is not None:
            lines.append(f"- `{model}`: {info['answered']} new answers in {info['seconds']:.1f} s, "
                         f"{info['generated_tokens']} tokens generated ({info['tokens_per_s']:.1f} tokens/s"
                         + (f", {info['batching']} batching" if info.get("batching") else "")
                         + (", adapter merged into the weights)" if info.get("merged") else ")")
                         + (f", {info['resumed']} answers reused from an earlier run" if info.get("resumed") else ""))
    lines.append("- sets: " + "; ".join(f"{s}: {n} items" for s, n in result["set_sizes"].items()))
    lines += ["", "## How the metrics are computed", ""]
    lines += [f"- {d}" for d in result["metric_notes"]]
    lines += ["", "## Answers side by side", "",
              f"First {result['show']} items of each set; the number under an answer is its own score.", "",
              _md_side_by_side(result), ""]
    return "\n".join(lines)


_CSS = """
body{font-family:"Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3}td.ans{white-space:pre-wrap;max-width:28em}small{color:#666}
code,pre{background:#f6f6f6}pre{padding:.6em;white-space:pre-wrap}
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
    return "\n".join(out) + "</table>"


def render_html(result: dict[str, Any], chart_png: bytes | None) -> str:
    e = html.escape
    h, rows = metric_rows(result)
    dh, drows = delta_rows(result)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tunesmith eval: {e(result['task'])}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>Evaluation: {e(result['task'])}</h1>",
             f"<pre>{e(result['command'])}</pre>",
             f"<p>Started {e(result['started'])}, took {result['seconds']:.1f} s; "
             f"device: {e(str(result.get('device', '?')))}.</p>",
             "<h2>Metrics</h2>", _html_table(h, rows)]
    if drows:
        parts += ["<p>Change against the base model:</p>", _html_table(dh, drows)]
    if chart_png:
        parts.append(f"<img alt='metrics chart' src='data:image/png;base64,{base64.b64encode(chart_png).decode()}'>")
    in_char = in_character_tables(result)
    if in_char:
        parts.append("<h2>In character</h2>")
        for caption, header, body in in_char:
            parts += [f"<p>{e(caption)}:</p>", _html_table(header, body)]
    parts += ["<h2>Setup</h2><ul>", f"<li>base model: <code>{e(result['model'])}</code></li>"]
    for name, info in result["models"].items():
        if info["kind"] == "adapter":
            parts.append(f"<li>adapter <code>{e(name)}</code>: <code>{e(info['path'])}</code> "
                         f"(template <code>{e(info['template'])}</code>)</li>")
        elif info["kind"] == "score-file":
            parts.append(f"<li><code>{e(name)}</code>: existing answers from {e(', '.join(info['paths']))}</li>")
    parts.append(f"<li>fairness: {e(result['fairness'])}</li>")
    parts.append(f"<li>generation: <code>{e(json.dumps(result['generation'], ensure_ascii=False))}</code></li></ul>")
    parts += (["<h2>How the metrics are computed</h2><ul>"] + [f"<li>{e(d)}</li>" for d in result["metric_notes"]]
              + ["</ul>"])
    parts.append(f"<h2>Answers side by side</h2><p>First {result['show']} items of each set.</p>")
    models = result["model_order"]
    parts.append("<table><tr><th>set</th><th>question</th>" + "".join(f"<th>{e(m)}</th>" for m in models)
                 + "<th>reference</th></tr>")
    for r in side_by_side(result):
        cells = [f"<td>{e(r['set'])}</td>", f"<td class='ans'>{e(r['question'])}</td>"]
        for m in models:
            a = r["answers"].get(m)
            cells.append(f"<td class='ans'>{e(a[0])}<br><small>{e(a[1])}</small></td>" if a else "<td>—</td>")
        cells.append(f"<td class='ans'>{e(r['reference'])}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(out_dir: str | os.PathLike, result: dict[str, Any]) -> dict[str, Path]:
    """Write metrics.json, metrics.png, report.md and report.html into out_dir; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chart = out / CHART_FILE
    try:
        result["chart_font"] = draw_chart(result, chart)["font"]
        png = chart.read_bytes()
    except (ImportError, OSError, RuntimeError, ValueError) as err:  # a report without a chart beats no report
        print(f"warning: could not draw the chart ({err})", file=sys.stderr)
        png = None
    paths = {"metrics": out / "metrics.json", "markdown": out / "report.md", "html": out / "report.html"}
    public = {k: v for k, v in result.items() if k != "side_by_side"}
    atomic_write(paths["metrics"], (json.dumps(public, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))
    atomic_write(paths["markdown"], render_markdown(result).encode("utf-8"))
    atomic_write(paths["html"], render_html(result, png).encode("utf-8"))
    if png:
        paths["chart"] = chart
    return paths
