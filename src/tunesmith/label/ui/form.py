"""The sample editor's form, from one list of fields: its widgets, the values its handlers take and return,
and the store fields a save sends all come from EDITOR_FIELDS.

    from tunesmith.label.ui.form import EDITOR_FIELDS, new_values, sample_fields, sample_values, split_sent
    new_values(settings)                      # a blank form: one value per field, in EDITOR_FIELDS order
    sample_values(sample, history_text)       # the form showing a saved sample
    typed, rest = split_sent(values)          # what a save was handed (SENT_FIELDS order) -> {name: value}
    sample_fields(typed)                      # -> the fields LabelStore.add_sample / update_sample take

Adding a field to the editor is one FormField entry: the page lays the fields out in this order, every
handler that fills the form returns one value per field, and a save reads the new field by its name.
The sample id and revision are fields too (a save needs them) but not store fields; the history is only
shown.  A field with `kind` set belongs to that kind of sample only ("single": instruction / input / output;
"chat": the turns table); a save of the other kind sends it empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from tunesmith.label.samples import STATUSES, Sample
from tunesmith.label.settings import ProjectSettings
from tunesmith.label.ui.views import rows_of, table

NEW_TURNS = [["user", ""], ["assistant", ""]]  # what the chat table of a new sample starts with
TURN_HEADERS = ["role", "content"]
KIND_CHOICES = [("Instruction / input / output", "single"), ("Multi-turn chat", "chat")]
NEW_HISTORY = "New sample (not saved yet)."


def _text(value: Any) -> str:
    return value or ""


def _turns(value: Any) -> list[list[Any]]:
    """The rows of the turns table a person filled in (blank rows dropped)."""
    return [[str(r[0] if r[0] is not None else "").strip(), r[1] if len(r) > 1 and r[1] is not None else ""]
            for r in rows_of(value) if r and any(x not in (None, "") for x in r)]


def _new_turns(_settings: ProjectSettings) -> Any:
    return table(NEW_TURNS, TURN_HEADERS)


def _shown_turns(s: Sample, _history: str) -> Any:
    return table([[m.role, m.content] for m in s.messages], TURN_HEADERS)


@dataclass(frozen=True)
class FormField:
    name: str  # the Sample attribute and the store field it edits
    label: str
    widget: str  # a key of _WIDGETS
    elem_id: str  # the page's element id (the browser test finds fields by it)
    new: Any = ""  # the value of a blank form; a callable takes the project's settings
    shown: Callable[[Sample, str], Any] | None = None  # the value showing a sample (default: its attribute)
    to_store: Callable[[Any], Any] | None = _text  # a widget value -> the store value; None: not a store field
    sent: bool = True  # handed to a save (False: shown only)
    kind: str | None = None  # "single" / "chat": a field of that kind of sample only
    row: str | None = None  # consecutive fields with the same row share one line of the page
    empty_at_start: bool = False  # the page starts with the widget empty, not with the blank form's value
    options: dict[str, Any] = field(default_factory=dict)  # more arguments of the widget

    def new_value(self, settings: ProjectSettings) -> Any:
        return self.new(settings) if callable(self.new) else self.new

    def shown_value(self, s: Sample, history: str) -> Any:
        return self.shown(s, history) if self.shown is not None else getattr(s, self.name)

    def component(self, settings: ProjectSettings) -> gr.components.Component:
        """The widget, showing what a new page shows (a field whose blank value is no text starts with none)."""
        value = None if self.empty_at_start or self.new == "" else self.new_value(settings)
        return _WIDGETS[self.widget](self, value)


_WIDGETS: dict[str, Callable[[FormField, Any], Any]] = {
    "number": lambda f, v: gr.Number(v, label=f.label, precision=0, elem_id=f.elem_id, **f.options),
    "text": lambda f, v: gr.Textbox(v, label=f.label, elem_id=f.elem_id, **f.options),
    "radio": lambda f, v: gr.Radio(value=v, label=f.label, elem_id=f.elem_id, **f.options),
    "turns": lambda f, v: gr.Dataframe(v, headers=TURN_HEADERS, datatype=["str", "str"], type="array",
                                       interactive=True, column_count=2, row_count=2, wrap=True, label=f.label,
                                       elem_id=f.elem_id),
    "markdown": lambda f, v: gr.Markdown(v, elem_id=f.elem_id),
}

EDITOR_FIELDS: tuple[FormField, ...] = (
    FormField("id", "sample # (0 = new)", "number", "ed-id", new=0, to_store=None, row="open"),
    FormField("revision", "revision", "number", "ed-rev", new=0, to_store=None, row="open",
              options={"interactive": False}),
    FormField("kind", "Kind", "radio", "ed-kind", new="single", to_store=lambda v: v or "single",
              options={"choices": KIND_CHOICES}),
    FormField("system", "System text", "text", "ed-system", new=lambda st: st.default_system,
              options={"lines": 1}),
    FormField("role", "Role (character name)", "text", "ed-role", options={"lines": 1}),
    FormField("instruction", "Instruction", "text", "ed-instruction", kind="single", options={"lines": 2}),
    FormField("input", "Input", "text", "ed-input", kind="single", options={"lines": 3}),
    FormField("output", "Output (the answer to learn)", "text", "ed-output", kind="single", options={"lines": 4}),
    FormField("messages", "Turns: user, assistant, user, assistant … (end with assistant)", "turns", "ed-messages",
              new=_new_turns, shown=_shown_turns, to_store=_turns, kind="chat"),
    FormField("status", "Status", "radio", "ed-status", new="accepted", to_store=lambda v: v or "accepted",
              row="status", options={"choices": list(STATUSES)}),
    FormField("tags", "Tags", "text", "ed-tags", shown=lambda s, _h: ", ".join(s.tags), row="status",
              options={"placeholder": "comma-separated", "lines": 1}),
    FormField("note", "Note", "text", "ed-note", options={"lines": 1}),
    FormField("history", "History of this sample", "markdown", "ed-history", new=NEW_HISTORY,
              shown=lambda _s, history: history, to_store=None, sent=False, empty_at_start=True),
)
FIELDS = {f.name: f for f in EDITOR_FIELDS}
# The fields a save is handed, in the order the page hands them to LabelApp.save_sample.
SENT_FIELDS = tuple(f.name for f in EDITOR_FIELDS if f.sent)


def new_values(settings: ProjectSettings) -> tuple[Any, ...]:
    """A blank form (a new sample), one value per field of EDITOR_FIELDS."""
    return tuple(f.new_value(settings) for f in EDITOR_FIELDS)


def sample_values(s: Sample, history: str) -> tuple[Any, ...]:
    """The form showing sample `s` (history: its history table, as Markdown)."""
    return tuple(f.shown_value(s, history) for f in EDITOR_FIELDS)


def kept_values() -> tuple[Any, ...]:
    """No change to any field: the form keeps what the person typed (after a refused save, say)."""
    return tuple(gr.update() for _ in EDITOR_FIELDS)


def sample_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The store fields of a save; fields of the other kind of sample are sent empty."""
    kind = FIELDS["kind"].to_store(values.get("kind"))
    out = {}
    for f in EDITOR_FIELDS:
        if f.to_store is None:
            continue
        if f.kind is not None and f.kind != kind:
            out[f.name] = [] if f.widget == "turns" else ""
        else:
            out[f.name] = f.to_store(values.get(f.name))
    return out


def split_sent(values: Sequence[Any]) -> tuple[dict[str, Any], list[Any]]:
    """Values handed to a save -> (the form's values by field name, the values that follow them)."""
    n = len(SENT_FIELDS)
    if len(values) < n:
        raise TypeError(f"expected the {n} form values {', '.join(SENT_FIELDS)} (got {len(values)})")
    return dict(zip(SENT_FIELDS, values[:n], strict=True)), list(values[n:])
