"""The labeling page's layout: one function per tab, each building its widgets and wiring their events to
the LabelApp handlers (tunesmith.label.ui.app).

    from tunesmith.label.ui.page import build_label_ui
    blocks = build_label_ui("ie-project", engine=None)            # a gr.Blocks; mount it anywhere
    blocks.label_app                                              # the LabelApp behind it

The element ids (elem_id) are the page's interface for the browser test and for scripts: keep them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from tunesmith.label.io import EXPORT_FORMATS, IMPORT_FORMATS
from tunesmith.label.preference import KIND_HELP
from tunesmith.label.samples import STATUSES
from tunesmith.label.settings import PROMPT_FORMAT_HELP, ProjectSettings
from tunesmith.label.store import LabelStore
from tunesmith.label.ui import form
from tunesmith.label.ui.app import GEN_HEADERS, NO_MODEL, TABLE_HEADERS, LabelApp


@dataclass
class _Page:
    """The widgets one tab's events use from another (the user's name, the live count, the dataset table)."""

    app: LabelApp
    settings: ProjectSettings
    user: Any = None
    count: Any = None
    filters: list[Any] = field(default_factory=list)  # search text, status, tag, role
    table: Any = None  # the dataset table
    listing: list[Any] = field(default_factory=list)  # dataset table, filter info, live count
    pending: Any = None  # the table of model answers to review
    settings_fields: list[Any] = field(default_factory=list)  # name, prompt format, JSON outputs, system text


def build_label_ui(project_dir: str | Path, engine: Any = None, *, store: LabelStore | None = None) -> gr.Blocks:
    """The labeling page for one project folder (its SQLite store is created on first use).

    engine: a loaded tunesmith.infer.engine.Engine for the Try-it tab, or None for a model-free page.
    The LabelApp behind the page is `blocks.label_app`.
    """
    app = LabelApp(project_dir, engine=engine, store=store)
    page = _Page(app, app.store.settings())
    title = f"tunesmith label · {page.settings.name or app.project_dir.name}"
    with gr.Blocks(title=title, analytics_enabled=False) as blocks:
        _header(page, title)
        _try_tab(page)
        _label_tab(page)
        _io_tab(page)
        _settings_tab(page)
        _follow_changes(blocks, page)
    blocks.label_app = app  # type: ignore[attr-defined]
    return blocks


def _with_request(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler(*values, request=...)` as Gradio calls it: Gradio hands the request only to a positional
    parameter typed gr.Request, and a handler that takes the form's values as *values has none after them."""

    def call(request: gr.Request, *values: Any) -> Any:
        return handler(*values, request=request)

    call.__name__ = call.__qualname__ = handler.__name__
    return call


def _header(page: _Page, title: str) -> None:
    with gr.Row():
        gr.Markdown(f"## {title}\nProject folder: `{page.app.project_dir}`", elem_id="label-title")
        page.user = gr.Textbox(label="Your name", placeholder="recorded with every change you make", scale=0,
                               min_width=220, elem_id="label-user")
    page.count = gr.Markdown(page.app.count_text(), elem_id="label-count")


# -- Try it ----------------------------------------------------------------------------------------------
def _try_tab(page: _Page) -> None:
    """A prompt against the base model or an adapter; the answer, judged and accepted as a sample."""
    app = page.app
    with gr.Tab("Try it", id="try"):
        if app.engine is None:
            gr.Markdown(NO_MODEL)
        with gr.Row():
            with gr.Column(scale=3):
                ask = _try_prompt(app)
            with gr.Column(scale=3):
                out = _try_answer()
    ask["mode"].change(app.set_mode, ask["mode"], [ask["single"], ask["chat"]], queue=False)
    ask["generate"].click(
        app.generate,
        [page.user, ask["adapter"], ask["mode"], ask["system"], ask["instruction"], ask["input"], ask["history"],
         ask["message"], *ask["options"]],
        [out["answer"], out["info"], out["json"], out["json_status"], out["id"], ask["history"], ask["chat_view"],
         ask["message"], out["status"]],
        concurrency_limit=None)
    out["answer"].change(app.check_json, out["answer"], [out["json"], out["json_status"]], queue=False)
    ask["clear"].click(app.clear_chat, None, [ask["history"], ask["chat_view"], ask["message"]], queue=False)
    out["judge"].click(app.judge, [page.user, out["id"], out["verdict"], out["note"]], out["status"])
    out["accept"].click(app.accept_answer,
                        [page.user, out["id"], out["answer"], out["role"], out["tags"], out["note"]],
                        [out["status"], page.count])


def _try_prompt(app: LabelApp) -> dict[str, Any]:
    c: dict[str, Any] = {}
    with gr.Row():
        c["adapter"] = gr.Dropdown(app.adapter_choices(), value=(app.adapter_choices() or [None])[0],
                                   label="Model", info="base, or a LoRA adapter", elem_id="try-adapter")
        c["mode"] = gr.Radio([("Instruction + input", "instruction"), ("Chat", "chat")], value="instruction",
                             label="Mode", elem_id="try-mode")
    c["system"] = gr.Textbox(label="System text (optional: persona, rules)", lines=1, elem_id="try-system")
    with gr.Group(visible=True) as c["single"]:
        c["instruction"] = gr.Textbox(label="Instruction", lines=2, elem_id="try-instruction")
        c["input"] = gr.Textbox(label="Input", lines=4, elem_id="try-input")
    with gr.Group(visible=False) as c["chat"]:
        c["chat_view"] = gr.Chatbot(label="Chat", height=300, elem_id="try-chat")
        c["message"] = gr.Textbox(label="Message", lines=2, elem_id="try-message")
        c["clear"] = gr.Button("Clear chat", size="sm")
    c["history"] = gr.State([])
    with gr.Accordion("Generation options", open=False):
        with gr.Row():
            max_new = gr.Slider(1, 2048, value=256, step=1, label="max new tokens")
            beams = gr.Slider(1, 8, value=1, step=1, label="beams")
        with gr.Row():
            sample = gr.Checkbox(False, label="do sample")
            temp = gr.Slider(0, 2, value=0.7, step=0.05, label="temperature")
            top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="top p")
            top_k = gr.Slider(0, 200, value=50, step=1, label="top k")
    c["options"] = [max_new, sample, temp, top_p, top_k, beams]  # in the order LabelApp.generate takes them
    c["generate"] = gr.Button("Generate", variant="primary", elem_id="try-generate")
    return c


def _try_answer() -> dict[str, Any]:
    c: dict[str, Any] = {}
    c["answer"] = gr.Textbox(label="Answer (edit it to correct it before accepting)", lines=8, interactive=True,
                             elem_id="try-answer")
    c["info"] = gr.Markdown(elem_id="try-info")
    c["json_status"] = gr.Markdown(elem_id="try-json-status")
    c["json"] = gr.JSON(label="Parsed JSON", elem_id="try-json")
    c["id"] = gr.Number(label="answer #", precision=0, interactive=False, elem_id="try-answer-id")
    with gr.Row():
        c["verdict"] = gr.Radio(["right", "wrong"], label="The answer is", elem_id="try-verdict")
        c["note"] = gr.Textbox(label="Note", lines=1, elem_id="try-note")
    with gr.Row():
        c["role"] = gr.Textbox(label="Role (character) for the sample", lines=1)
        c["tags"] = gr.Textbox(label="Tags for the sample", lines=1, placeholder="comma-separated")
    with gr.Row():
        c["judge"] = gr.Button("Save judgement", elem_id="try-judge")
        c["accept"] = gr.Button("Accept as sample", variant="primary", elem_id="try-accept")
    c["status"] = gr.Markdown(elem_id="try-status")
    return c


# -- Label -------------------------------------------------------------------------------------------------
def _label_tab(page: _Page) -> None:
    """The sample editor beside the dataset table, and the model answers waiting for review."""
    with gr.Tab("Label", id="label"):
        with gr.Row():
            with gr.Column(scale=2):
                editor = _editor(page.settings)
            with gr.Column(scale=3):
                search = _dataset(page)
        with gr.Accordion("Model answers to review", open=False):
            queue = _review_queue(page)
    _wire_editor(page, editor)
    _wire_dataset(page, search)
    _wire_review_queue(page, queue)


def _editor(settings: ProjectSettings) -> dict[str, Any]:
    """The form, laid out from form.EDITOR_FIELDS, with its buttons, prompt preview and status line."""
    gr.Markdown("### Sample")
    c = _form_widgets(settings, (f for f in form.EDITOR_FIELDS if f.sent), after={
        "open": lambda: {"open": gr.Button("Open #", size="sm", elem_id="ed-open"),
                         "new": gr.Button("New", size="sm", elem_id="ed-new")},
        "single": lambda: {"preview": gr.Markdown(elem_id="ed-preview")},
    })
    with gr.Row():
        c["save"] = gr.Button("Save", variant="primary", elem_id="ed-save")
        c["delete"] = gr.Button("Delete", variant="stop", size="sm", elem_id="ed-delete")
    c["msg"] = gr.Markdown(elem_id="ed-status-line")
    with gr.Accordion("History of this sample", open=False):
        c["history"] = form.FIELDS["history"].component(settings)
    return c


def _form_widgets(settings: ProjectSettings, fields: Iterable[form.FormField],
                  after: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, Any]:
    """The widgets of `fields`, in order: the fields of one kind of sample share a group shown only for that
    kind ("<kind>-group" in the result), the fields of one row share a line; after[key] adds widgets at the
    end of the row or group named key."""
    c: dict[str, Any] = {}
    new_kind = form.FIELDS["kind"].new
    for kind, in_kind in itertools.groupby(fields, key=lambda f: f.kind):
        if kind is None:
            _form_rows(settings, in_kind, after, c)
            continue
        with gr.Group(visible=kind == new_kind) as c[f"{kind}-group"]:
            _form_rows(settings, in_kind, after, c)
            c.update(after.get(kind, dict)())
    return c


def _form_rows(settings: ProjectSettings, fields: Iterable[form.FormField],
               after: dict[str, Callable[[], dict[str, Any]]], c: dict[str, Any]) -> None:
    for row, in_row in itertools.groupby(fields, key=lambda f: f.row):
        if row is None:
            c.update({f.name: f.component(settings) for f in in_row})
            continue
        with gr.Row():
            c.update({f.name: f.component(settings) for f in in_row})
            c.update(after.get(row, dict)())


def _wire_editor(page: _Page, c: dict[str, Any]) -> None:
    app = page.app
    shown = [c[f.name] for f in form.EDITOR_FIELDS]  # what every handler that fills the form returns
    sent = [c[name] for name in form.SENT_FIELDS]
    c["kind"].change(app.set_kind, c["kind"], [c["single-group"], c["chat-group"]], queue=False)
    for typed in (c["instruction"], c["input"]):
        typed.change(app.prompt_preview, [c["instruction"], c["input"]], c["preview"], queue=False)
    c["new"].click(app.new_sample, None, [*shown, c["msg"]])
    c["open"].click(app.open_sample, c["id"], [*shown, c["msg"]])
    c["id"].submit(app.open_sample, c["id"], [*shown, c["msg"]])
    page.table.select(app.open_selected, None, [*shown, c["msg"]])
    c["save"].click(_with_request(app.save_sample), [page.user, *sent, *page.filters],
                    [*shown, c["msg"], *page.listing])
    c["delete"].click(app.delete_sample, [page.user, c["id"], c["revision"], *page.filters],
                      [*shown, c["msg"], *page.listing])


def _dataset(page: _Page) -> Any:
    """The dataset table with its search and filters -> the search button."""
    app = page.app
    gr.Markdown("### Dataset")
    with gr.Row():
        text = gr.Textbox(label="Search", placeholder="words to find", scale=2, elem_id="f-text")
        status = gr.Dropdown(["all", *STATUSES], value="all", label="Status", elem_id="f-status")
        tag = gr.Textbox(label="Tag", elem_id="f-tag")
        role = gr.Textbox(label="Role", elem_id="f-role")
    with gr.Row():
        search = gr.Button("Search / refresh", size="sm", elem_id="f-search")
        info = gr.Markdown(elem_id="f-info")
    table = gr.Dataframe(app.table(), headers=TABLE_HEADERS, interactive=False, wrap=True, max_height=600,
                         label="Click a row to open it", elem_id="ds-table")
    page.table, page.filters = table, [text, status, tag, role]
    page.listing = [table, info, page.count]
    return search


def _wire_dataset(page: _Page, search: Any) -> None:
    text, status, tag, role = page.filters
    search.click(page.app.refresh, page.filters, page.listing)
    text.submit(page.app.refresh, page.filters, page.listing)
    status.change(page.app.refresh, page.filters, page.listing)
    tag.submit(page.app.refresh, page.filters, page.listing)
    role.submit(page.app.refresh, page.filters, page.listing)


def _review_queue(page: _Page) -> dict[str, Any]:
    """Logged model answers neither accepted nor rejected: pick one, correct it, accept or reject it."""
    app, c = page.app, {}
    with gr.Row():
        with gr.Column(scale=3):
            page.pending = gr.Dataframe(app.generations_table(), headers=GEN_HEADERS, interactive=False, wrap=True,
                                        label="Pending answers (click one)", elem_id="gen-table")
        with gr.Column(scale=2):
            c["id"] = gr.Number(label="answer #", precision=0, elem_id="rv-id")
            c["prompt"] = gr.Markdown()
            c["output"] = gr.Textbox(label="Answer (correct it before accepting)", lines=5, elem_id="rv-output")
            with gr.Row():
                c["role"] = gr.Textbox(label="Role", lines=1)
                c["tags"] = gr.Textbox(label="Tags", lines=1)
            c["note"] = gr.Textbox(label="Note", lines=1)
            with gr.Row():
                c["accept"] = gr.Button("Accept as sample", variant="primary", elem_id="rv-accept")
                c["reject"] = gr.Button("Reject", variant="stop", elem_id="rv-reject")
            c["msg"] = gr.Markdown(elem_id="rv-status")
    return c


def _wire_review_queue(page: _Page, c: dict[str, Any]) -> None:
    app = page.app
    opened = [c["id"], c["output"], c["prompt"], c["msg"]]
    page.pending.select(app.pick_generation, None, opened)
    c["id"].submit(app.open_generation, c["id"], opened)
    decision = [page.user, c["id"], c["output"], c["role"], c["tags"], c["note"]]
    c["accept"].click(app.accept_review, decision, [c["msg"], page.pending, page.count])
    c["reject"].click(app.reject_review, decision, [c["msg"], page.pending, page.count])


# -- Import / export ---------------------------------------------------------------------------------------
def _io_tab(page: _Page) -> None:
    """Bring in a dataset file to curate; write the chosen samples for `tunesmith train`."""
    app = page.app
    with gr.Tab("Import / export", id="io"):
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Import a dataset to curate")
                file = gr.File(label="Dataset file (.jsonl / .json)", file_types=[".jsonl", ".json"],
                               elem_id="im-file")
                with gr.Row():
                    fmt = gr.Dropdown(list(IMPORT_FORMATS), value="auto", label="Format", elem_id="im-format")
                    status = gr.Radio(list(STATUSES), value="accepted", label="Status of imported samples")
                with gr.Row():
                    tags = gr.Textbox(label="Tags for imported samples", lines=1)
                    on_error = gr.Radio([("stop at the first bad record", "fail"), ("skip bad records", "skip")],
                                        value="fail", label="Bad records")
                do_import = gr.Button("Import", variant="primary", elem_id="im-button")
                import_msg = gr.Markdown(elem_id="im-status")
            with gr.Column():
                gr.Markdown("### Export for `tunesmith train`")
                x_kind = gr.Radio([(f"{k}: {how}", k) for k, how in KIND_HELP.items()], value="sft",
                                  label="What to export", elem_id="ex-kind")
                x_fmt = gr.Dropdown(list(EXPORT_FORMATS), value="conversation", elem_id="ex-format",
                                    label="Format (sft; pairs and kto are always conversation JSONL)")
                x_statuses = gr.CheckboxGroup(list(STATUSES), value=["accepted"], label="Samples with status",
                                              elem_id="ex-statuses")
                with gr.Row():
                    x_tag = gr.Textbox(label="Only tag", lines=1)
                    x_role = gr.Textbox(label="Only role", lines=1)
                do_export = gr.Button("Export", variant="primary", elem_id="ex-button")
                export_msg = gr.Markdown(elem_id="ex-status")
                download = gr.File(label="Download", interactive=False, elem_id="ex-file")
    do_import.click(app.import_dataset, [page.user, file, fmt, status, tags, on_error], [import_msg, *page.listing])
    do_export.click(app.export_dataset, [x_fmt, x_statuses, x_tag, x_role, x_kind], [export_msg, download])


# -- Settings ----------------------------------------------------------------------------------------------
def _settings_tab(page: _Page) -> None:
    """The project's settings: name, prompt format, JSON outputs, default system text."""
    s = page.settings
    with gr.Tab("Settings", id="settings"):
        name = gr.Textbox(s.name, label="Project name")
        prompt_format = gr.Radio([(f"{n}: {how}", n) for n, how in PROMPT_FORMAT_HELP.items()],
                                 value=s.prompt_format, label="Prompt format (new samples)", elem_id="st-format")
        output_json = gr.Checkbox(s.output_json, label="Outputs must be JSON (information extraction, classification)",
                                  elem_id="st-json")
        system = gr.Textbox(s.default_system, label="Default system text for new samples", lines=2)
        save = gr.Button("Save settings", variant="primary", elem_id="st-save")
        msg = gr.Markdown(elem_id="st-status")
    page.settings_fields = [name, prompt_format, output_json, system]  # in LabelApp.settings_values order
    save.click(page.app.save_settings, [page.user, *page.settings_fields], msg)


def _follow_changes(blocks: gr.Blocks, page: _Page) -> None:
    """The count and the tables follow other tabs' and users' changes."""
    app = page.app
    timer = gr.Timer(5)
    timer.tick(app.count_text, None, page.count, queue=False, show_progress="hidden")
    blocks.load(app.refresh, page.filters, page.listing)
    blocks.load(app.generations_table, None, page.pending)
    blocks.load(app.settings_values, None, page.settings_fields)
