"""How the labeling page shows things: status lines, table cells, tables.

    from tunesmith.label.ui.views import fail, ok, short, table
    ok("saved")                    # '✅ saved'
    fail("output: empty")          # '⚠️ output: empty', and a toast when called from a page event
    short("a long text ...", 20)   # one line, at most 20 characters
    table([[1, "a"]], ["id", "x"])  # a DataFrame for a gr.Dataframe
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd
from gradio.context import LocalContext

CELL = 80  # characters of a prompt/answer shown in a table cell


def ok(msg: str) -> str:
    return f"✅ {msg}"


def fail(msg: str) -> str:
    """A user's mistake: a toast now, and the same words in the status line (stays visible)."""
    if LocalContext.blocks.get(None) is not None:  # inside a page event (not a direct call from Python)
        gr.Warning(msg)
    return f"⚠️ {msg}"


def short(text: str, n: int = CELL) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def int_or_none(v: Any) -> int | None:
    """A positive id typed or picked on the page, else None."""
    if v is None or v == "":
        return None
    try:
        i = int(float(v))
    except (TypeError, ValueError):
        return None
    return i if i > 0 else None


def table(rows: list[list[Any]], headers: list[str]):
    return pd.DataFrame(rows, columns=headers)


def rows_of(value: Any) -> list[list[Any]]:
    """A Dataframe's value as rows, whatever form Gradio hands it in (pandas, list of lists, dict)."""
    if value is None:
        return []
    if hasattr(value, "values") and hasattr(value, "columns"):
        return value.values.tolist()
    if isinstance(value, dict):
        return list(value.get("data") or [])
    return [list(r) for r in value]


def md_cell(v: Any) -> str:
    """A value in a Markdown table cell."""
    if isinstance(v, list):
        v = " / ".join(f"{m.get('role')}: {m.get('content')}" if isinstance(m, dict) else str(m) for m in v)
    return str(v if v is not None else "").replace("|", "\\|").replace("\n", " ")
