"""The labeling web page: a playground to try the model, and a labeling desk that builds a dataset.

    tunesmith label ie-project                                    # model-free: write, import, curate, export
    tunesmith label ie-project --model /models/qwen --adapter ie=runs/ie/adapter   # + the Try-it tab
    tunesmith serve --model ... --label-project ie-project        # the same page at /label of the chat server

    from tunesmith.label.ui import build_label_ui
    blocks = build_label_ui("ie-project", engine=None)            # a gr.Blocks; mount it anywhere

Tabs:
- Try it: an instruction + input (or a chat) against the base model or any adapter; the answer, the time
  it took, its parsed JSON (or why it does not parse); mark it right/wrong with a note; accept it
  (edited, if it needed a fix) as a training sample.  Every answer and every judgement is logged.
- Label: write or edit samples (instruction / input / output, or a multi-turn chat with a system text and
  a character role), the dataset table with a live count, search and filters, the history of each sample,
  and the model answers waiting for review (accept or reject).
- Import / export: bring in a dataset in any format `tunesmith data` reads; write the accepted samples as
  JSONL for `tunesmith train` (conversation, alpaca, sharegpt, context-target, messages).
- Settings: the prompt format (how instruction + input become the prompt), "outputs must be JSON".

All state lives in the project's SQLite store (tunesmith.label.store); the page holds no data of its own,
so several tabs and users work at once.  An edit names the revision it started from; a stale edit is
refused with a message saying who changed the sample, and the form keeps the text typed.

Every event handler is a method of `LabelApp`, callable without a browser (the tests do so).  A handler
never raises for a user's mistake: it returns the message for the status line (and shows a toast).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr

from tunesmith.errors import TunesmithError
from tunesmith.label.answers import parse_answer_json
from tunesmith.label.store import ANONYMOUS, EXPORT_FORMATS, STATUSES, EditConflict, LabelStore, Sample, compose_prompt

TABLE_HEADERS = ["id", "status", "kind", "role", "tags", "input / prompt", "answer", "rev", "by", "updated"]
GEN_HEADERS = ["id", "adapter", "verdict", "json", "prompt", "answer", "by", "at"]
TABLE_LIMIT = 200
CELL = 80  # characters of a prompt/answer shown in a table cell
USER_HEADER = "x-tunesmith-user"
IMPORT_FORMATS = ("auto", "conversation", "alpaca", "sharegpt", "messages", "context-target", "rolebench",
                  "novel-dialogue")
NEW_TURNS = [["user", ""], ["assistant", ""]]  # what the chat table of a new sample starts with
KIND_CHOICES = [("Instruction / input / output", "single"), ("Multi-turn chat", "chat")]
NO_MODEL = ("No model is loaded, so nothing can be generated here. Start the page with a model: "
            "`tunesmith label PROJECT --model MODEL [--adapter NAME=PATH]` "
            "or `tunesmith serve --model MODEL --label-project PROJECT`.")


def _ok(msg: str) -> str:
    return f"✅ {msg}"


def _fail(msg: str) -> str:
    """A user's mistake: a toast now, and the same words in the status line (stays visible)."""
    from gradio.context import LocalContext

    if LocalContext.blocks.get(None) is not None:  # inside a page event (not a direct call from Python)
        gr.Warning(msg)
    return f"⚠️ {msg}"


def _short(text: str, n: int = CELL) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _int_or_none(v: Any) -> int | None:
    if v is None or v == "":
        return None
    try:
        i = int(float(v))
    except (TypeError, ValueError):
        return None
    return i if i > 0 else None


def _table(rows: list[list[Any]], headers: list[str]):
    import pandas as pd

    return pd.DataFrame(rows, columns=headers)


def _rows_of(value: Any) -> list[list[Any]]:
    """A Dataframe's value as rows, whatever form Gradio hands it in (pandas, list of lists, dict)."""
    if value is None:
        return []
    if hasattr(value, "values") and hasattr(value, "columns"):
        return value.values.tolist()
    if isinstance(value, dict):
        return list(value.get("data") or [])
    return [list(r) for r in value]


class LabelApp:
    """The labeling page's behaviour: one method per button, reading and writing the LabelStore."""

    def __init__(self, project_dir: str | Path, engine: Any = None, store: LabelStore | None = None):
        self.store = store or LabelStore(project_dir)
        self.project_dir = self.store.project_dir
        self.engine = engine
        self.exports_dir = self.project_dir / "exports"

    # -- who is working ---------------------------------------------------------------------------------
    @staticmethod
    def user_of(name: str | None, request: gr.Request | None = None) -> str:
        """The name typed in the page, else the X-Tunesmith-User header, else the login name, else anonymous."""
        if name and name.strip():
            return name.strip()[:80]
        if request is not None:
            headers = getattr(request, "headers", None) or {}
            try:
                h = headers.get(USER_HEADER)
            except Exception:  # pragma: no cover - an unusual headers object
                h = None
            if h and h.strip():
                return h.strip()[:80]
            if getattr(request, "username", None):
                return str(request.username)[:80]
        return ANONYMOUS

    # -- shared views -----------------------------------------------------------------------------------
    def count_text(self) -> str:
        c = self.store.counts()
        pending = self.store.count_generations("pending")
        return (f"**{c['total']} samples** — {c['accepted']} accepted, {c['draft']} draft, {c['rejected']} rejected"
                f" · {pending} model answer(s) to review")

    def table(self, text: str = "", status: str = "all", tag: str = "", role: str = ""):
        try:
            samples = self.store.list_samples(text=text, status=None if status in (None, "", "all") else status,
                                              tag=tag, role=role, limit=TABLE_LIMIT)
        except TunesmithError:
            samples = []
        # a single sample shows its input (the instruction is often the same for a whole project)
        rows = [[s.id, s.status, s.kind, s.role, ",".join(s.tags),
                 _short((s.input or s.instruction) if s.kind == "single" else s.prompt), _short(s.answer), s.revision,
                 s.updated_by, s.updated_at[:19].replace("T", " ")] for s in samples]
        return _table(rows, TABLE_HEADERS)

    def filter_info(self, text: str = "", status: str = "all", tag: str = "", role: str = "") -> str:
        try:
            n = self.store.count(text=text, status=None if status in (None, "", "all") else status, tag=tag, role=role)
        except TunesmithError as e:
            return _fail(str(e))
        shown = min(n, TABLE_LIMIT)
        more = f" (showing the newest {shown}; narrow the search to see others)" if n > TABLE_LIMIT else ""
        return f"{n} match(es){more}"

    def refresh(self, text: str = "", status: str = "all", tag: str = "", role: str = ""):
        """-> (table, filter info, live count)"""
        return self.table(text, status, tag, role), self.filter_info(text, status, tag, role), self.count_text()

    def generations_table(self):
        rows = []
        for g in self.store.list_generations("pending", limit=TABLE_LIMIT):
            ok = "" if g.json_ok is None else ("ok" if g.json_ok else "broken")
            rows.append([g.id, g.adapter, g.verdict or "", ok, _short(g.messages[-1].content), _short(g.answer),
                         g.user, g.at[:19].replace("T", " ")])
        return _table(rows, GEN_HEADERS)

    # -- Try it -----------------------------------------------------------------------------------------
    def adapter_choices(self) -> list[str]:
        return list(getattr(self.engine, "adapter_names", None) or ["base"]) if self.engine is not None else []

    def generate(self, user: str, adapter: str, mode: str, system: str, instruction: str, input: str,
                 chat_history: list | None, chat_message: str, max_new_tokens: float, do_sample: bool,
                 temperature: float, top_p: float, top_k: float, num_beams: float,
                 request: gr.Request | None = None):
        """-> (answer, info, parsed JSON, JSON status, answer id, chat history, chat view, chat box, status)"""
        from tunesmith.conversation import Message

        history = [dict(m) for m in (chat_history or [])]
        keep = (gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), history, history, chat_message)
        if self.engine is None:
            return (*keep, _fail(NO_MODEL))
        adapter = adapter or "base"
        if adapter not in self.adapter_choices():
            return (*keep, _fail(f"adapter {adapter!r} is not loaded (loaded: {', '.join(self.adapter_choices())})"))
        settings = self.store.settings()
        if mode == "chat":
            if not (chat_message or "").strip():
                return (*keep, _fail("message: empty (type what the user says)"))
            prompt = [Message(m["role"], m["content"]) for m in history] + [Message("user", chat_message)]
            instruction = input = ""
        else:
            if not (instruction or "").strip() and not (input or "").strip():
                return (*keep, _fail("instruction: empty (type an instruction, an input, or both)"))
            prompt = [Message("user", compose_prompt(instruction or "", input or "", settings.prompt_format))]
        try:
            options = self._options(max_new_tokens, do_sample, temperature, top_p, top_k, num_beams)
            t0 = time.perf_counter()
            answer = self.engine.chat(prompt, system=(system or None), adapter=adapter, options=options)
            elapsed = time.perf_counter() - t0
        except TunesmithError as e:
            return (*keep, _fail(str(e)))
        gid = self.store.log_generation(adapter=adapter, system=system or "", instruction=instruction or "",
                                        input=input or "", kind="chat" if mode == "chat" else "single",
                                        messages=prompt, answer=answer, elapsed_s=elapsed,
                                        options=asdict(options), user=self.user_of(user, request))
        value, json_md = self._json_view(answer)
        if mode == "chat":
            history = history + [{"role": "user", "content": chat_message}, {"role": "assistant", "content": answer}]
            chat_message = ""
        info = f"answer #{gid} · {adapter} · {elapsed:.2f} s · {len(answer)} characters"
        return answer, info, value, json_md, gid, history, history, chat_message, _ok(f"logged as answer #{gid}")

    @staticmethod
    def _options(max_new_tokens, do_sample, temperature, top_p, top_k, num_beams):
        from tunesmith.infer.options import GenerationOptions

        return GenerationOptions(max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample),
                                 temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                                 num_beams=int(num_beams)).validate()

    @staticmethod
    def _json_view(answer: str) -> tuple[Any, str]:
        r = parse_answer_json(answer)
        if not r.found:
            return None, "No JSON in this answer (plain text)."
        if r.error:
            return None, f"❌ JSON does not parse: {r.error}"
        n = f" ({len(r.value)} item(s))" if isinstance(r.value, (list, dict)) else ""
        return r.value, f"✅ valid JSON{n}"

    def check_json(self, answer: str):
        """-> (parsed JSON, JSON status) for an answer edited by hand."""
        return self._json_view(answer)

    def clear_chat(self):
        """-> (chat history, chat view, chat box)"""
        return [], [], ""

    def judge(self, user: str, generation_id: Any, verdict: str | None, note: str,
              request: gr.Request | None = None) -> str:
        gid = _int_or_none(generation_id)
        if gid is None:
            return _fail("no answer to judge yet (generate one first)")
        if verdict not in ("right", "wrong"):
            return _fail("verdict: choose right or wrong")
        try:
            self.store.judge(gid, verdict, note or "", user=self.user_of(user, request))
        except TunesmithError as e:
            return _fail(str(e))
        return _ok(f"answer #{gid} marked {verdict}" + (f" ({_short(note, 40)})" if note else ""))

    def accept_answer(self, user: str, generation_id: Any, answer: str, role: str, tags: str, note: str,
                      request: gr.Request | None = None):
        """Accept the (possibly corrected) answer as a sample -> (status, live count)."""
        gid = _int_or_none(generation_id)
        if gid is None:
            return _fail("no answer to accept yet (generate one first)"), self.count_text()
        try:
            s = self.store.accept_generation(gid, output=answer, role=role or "", tags=tags, note=note or None,
                                             user=self.user_of(user, request))
        except TunesmithError as e:
            return _fail(str(e)), self.count_text()
        fixed = " (corrected)" if s.meta.get("corrected") else ""
        return _ok(f"answer #{gid} added to the dataset as sample #{s.id}{fixed}"), self.count_text()

    # -- Label: the editor ------------------------------------------------------------------------------
    def _form(self, s: Sample | None):
        """Editor values: (id, revision, kind, system, role, instruction, input, output, messages, status, tags,
        note, history)"""
        if s is None:
            d = self.store.settings().default_system
            return (0, 0, "single", d, "", "", "", "", _table(NEW_TURNS, ["role", "content"]), "accepted", "", "",
                    "New sample (not saved yet).")
        msgs = _table([[m.role, m.content] for m in s.messages], ["role", "content"])
        return (s.id, s.revision, s.kind, s.system, s.role, s.instruction, s.input, s.output, msgs, s.status,
                ", ".join(s.tags), s.note, self.history_text(s.id))

    def new_sample(self):
        """-> editor values + (status,)"""
        return (*self._form(None), "Write a new sample, then Save.")

    def open_sample(self, sample_id: Any):
        """-> editor values + (status,)"""
        sid = _int_or_none(sample_id)
        if sid is None:
            return (*self._form(None), _fail("sample #: type the number of a sample to open"))
        try:
            s = self.store.get_sample(sid)
        except TunesmithError as e:
            return (*self._keep_form(), _fail(str(e)))
        return (*self._form(s), f"Opened sample #{s.id} (revision {s.revision}, last changed by {s.updated_by}).")

    def open_selected(self, evt: gr.SelectData):
        """A click on a row of the dataset table opens that sample."""
        row = getattr(evt, "row_value", None)
        sid = row[0] if row else None
        if sid is None and isinstance(getattr(evt, "index", None), (list, tuple)):
            return (*self._keep_form(), _fail("cannot tell which sample this row is"))
        return self.open_sample(sid)

    @staticmethod
    def _keep_form():
        return tuple(gr.update() for _ in range(13))

    def save_sample(self, user: str, sample_id: Any, revision: Any, kind: str, system: str, role: str,
                    instruction: str, input: str, output: str, messages: Any, status: str, tags: str, note: str,
                    text: str = "", f_status: str = "all", f_tag: str = "", f_role: str = "",
                    request: gr.Request | None = None):
        """Add (no id) or update (id + the revision the form was opened at).

        -> editor values + (status, table, filter info, live count)"""
        who = self.user_of(user, request)
        sid = _int_or_none(sample_id)
        fields: dict[str, Any] = {"kind": kind or "single", "system": system or "", "role": role or "",
                                  "status": status or "accepted", "tags": tags or "", "note": note or ""}
        if fields["kind"] == "chat":
            fields["messages"] = [[str(r[0] if r[0] is not None else "").strip(),
                                   r[1] if len(r) > 1 and r[1] is not None else ""]
                                  for r in _rows_of(messages) if r and any(x not in (None, "") for x in r)]
        else:
            fields.update(instruction=instruction or "", input=input or "", output=output or "")
        try:
            if sid is None:
                s = self.store.add_sample(**fields, user=who)
                msg = _ok(f"saved as new sample #{s.id}")
            else:
                rev = _int_or_none(revision)
                if rev is None:
                    return (*self._keep_form(), _fail("this form has no revision: open the sample again before saving"),
                            *self.refresh(text, f_status, f_tag, f_role))
                if fields["kind"] == "single":
                    fields["messages"] = []
                s = self.store.update_sample(sid, expected_revision=rev, user=who, **fields)
                msg = _ok(f"saved sample #{s.id} (revision {s.revision})") if s.revision != rev else \
                    f"Nothing changed in sample #{s.id}."
        except EditConflict as e:
            # keep the typed text in the form so the person can re-apply it after reloading
            return (*self._keep_form(), _fail(str(e)), *self.refresh(text, f_status, f_tag, f_role))
        except TunesmithError as e:
            return (*self._keep_form(), _fail(f"not saved: {e}"), *self.refresh(text, f_status, f_tag, f_role))
        return (*self._form(s), msg, *self.refresh(text, f_status, f_tag, f_role))

    def delete_sample(self, user: str, sample_id: Any, revision: Any, text: str = "", f_status: str = "all",
                      f_tag: str = "", f_role: str = "", request: gr.Request | None = None):
        """-> editor values + (status, table, filter info, live count)"""
        sid, rev = _int_or_none(sample_id), _int_or_none(revision)
        if sid is None or rev is None:
            return (*self._keep_form(), _fail("open a saved sample before deleting it"),
                    *self.refresh(text, f_status, f_tag, f_role))
        try:
            self.store.delete_sample(sid, expected_revision=rev, user=self.user_of(user, request))
        except TunesmithError as e:
            return (*self._keep_form(), _fail(str(e)), *self.refresh(text, f_status, f_tag, f_role))
        return (*self._form(None), _ok(f"deleted sample #{sid} (its history is kept)"),
                *self.refresh(text, f_status, f_tag, f_role))

    def history_text(self, sample_id: Any) -> str:
        sid = _int_or_none(sample_id)
        if sid is None:
            return ""
        lines = ["| rev | when (UTC) | who | what changed |", "|---|---|---|---|"]
        for h in self.store.history(sid):
            if h.action == "update":
                what = "; ".join(f"{k}: {_short(_md(h.old.get(k)), 30)} → {_short(_md(h.new.get(k)), 30)}"
                                 for k in h.changed)
            else:
                what = h.action
            lines.append(f"| {h.revision} | {h.at[:19].replace('T', ' ')} | {_md(h.user)} | {what} |")
        return "\n".join(lines)

    def set_kind(self, kind: str):
        """Show the single-turn fields or the chat table -> (single group, chat group)"""
        return gr.update(visible=kind != "chat"), gr.update(visible=kind == "chat")

    def set_mode(self, mode: str):
        """Try it: instruction fields or chat -> (instruction group, chat group)"""
        return gr.update(visible=mode != "chat"), gr.update(visible=mode == "chat")

    # -- Label: model answers to review --------------------------------------------------------------------
    def pick_generation(self, evt: gr.SelectData):
        """A click on a pending answer -> (answer id, answer text to correct, prompt shown, status)"""
        row = getattr(evt, "row_value", None)
        gid = _int_or_none(row[0] if row else None)
        if gid is None:
            return gr.update(), gr.update(), gr.update(), _fail("cannot tell which answer this row is")
        return self.open_generation(gid)

    def open_generation(self, generation_id: Any):
        gid = _int_or_none(generation_id)
        if gid is None:
            return gr.update(), gr.update(), gr.update(), _fail("answer #: type the number of a model answer")
        try:
            g = self.store.get_generation(gid)
        except TunesmithError as e:
            return gr.update(), gr.update(), gr.update(), _fail(str(e))
        prompt = "\n\n".join(f"**{m.role}**: {m.content}" for m in g.messages)
        if g.system:
            prompt = f"**system**: {g.system}\n\n" + prompt
        return g.id, g.answer, prompt, f"Answer #{g.id} by {g.adapter} ({g.verdict or 'not judged'})."

    def review(self, user: str, generation_id: Any, decision: str, output: str, role: str, tags: str, note: str,
               request: gr.Request | None = None):
        """Accept or reject a logged answer -> (status, pending table, live count)"""
        gid = _int_or_none(generation_id)
        if gid is None:
            return _fail("pick a model answer first (click a row)"), self.generations_table(), self.count_text()
        who = self.user_of(user, request)
        try:
            if decision == "accept":
                s = self.store.accept_generation(gid, output=output, role=role or "", tags=tags,
                                                 note=note or None, user=who)
                msg = _ok(f"answer #{gid} accepted as sample #{s.id}")
            else:
                self.store.reject_generation(gid, note=note or "", user=who)
                msg = _ok(f"answer #{gid} rejected (kept out of the dataset)")
        except TunesmithError as e:
            msg = _fail(str(e))
        return msg, self.generations_table(), self.count_text()

    def accept_review(self, user: str, generation_id: Any, output: str, role: str, tags: str, note: str,
                      request: gr.Request | None = None):
        return self.review(user, generation_id, "accept", output, role, tags, note, request)

    def reject_review(self, user: str, generation_id: Any, output: str, role: str, tags: str, note: str,
                      request: gr.Request | None = None):
        return self.review(user, generation_id, "reject", output, role, tags, note, request)

    # -- Import / export --------------------------------------------------------------------------------
    def import_dataset(self, user: str, file: Any, fmt: str, status: str, tags: str, on_error: str,
                       request: gr.Request | None = None):
        """-> (status, table, filter info, live count)"""
        path = getattr(file, "name", file)
        if not path:
            return (_fail("file: choose a dataset file (.jsonl or .json) to import"), *self.refresh())
        try:
            rep = self.store.import_file(path, None if fmt in (None, "", "auto") else fmt, status=status or "accepted",
                                         tags=tags, user=self.user_of(user, request), on_error=on_error or "fail")
        except TunesmithError as e:
            return (_fail(f"nothing imported: {e}"), *self.refresh())
        msg = rep.summary()
        if rep.duplicates:
            msg += f". First duplicate: {rep.duplicates[0]}"
        return ((_ok(msg) if rep.added else _fail(msg)), *self.refresh())

    def export_dataset(self, fmt: str, statuses: Sequence[str] | None, tag: str, role: str):
        """-> (status, file to download)"""
        if fmt not in EXPORT_FORMATS:
            return _fail(f"format: choose one of {', '.join(EXPORT_FORMATS)}"), None
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = self.exports_dir / f"{self.project_dir.name}-{fmt}-{stamp}.jsonl"
        try:
            rep = self.store.export(out, fmt, statuses=list(statuses or []), tag=tag or None, role=role or None)
        except TunesmithError as e:
            return _fail(f"nothing exported: {e}"), None
        # Gradio serves downloads only from its own temp area (or allowed paths): hand it a copy.
        dl = Path(tempfile.gettempdir()) / "tunesmith-label-exports" / uuid.uuid4().hex / rep.path.name
        dl.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rep.path, dl)
        msg = (f"✅ wrote {rep.count} sample(s) to `{rep.path}` ({fmt}).\n\n"
               f"Train on it: `tunesmith train RECIPE.yaml data.train={rep.path}` "
               f"(or, in the recipe, `data: {{train: {{path: {rep.path}, format: {fmt}}}}}`).")
        return msg, str(dl)

    # -- Settings -------------------------------------------------------------------------------------
    def settings_values(self):
        s = self.store.settings()
        return s.name, s.prompt_format, s.output_json, s.default_system

    def save_settings(self, user: str, name: str, prompt_format: str, output_json: bool, default_system: str,
                      request: gr.Request | None = None) -> str:
        try:
            self.store.update_settings(user=self.user_of(user, request), name=name or "",
                                       prompt_format=prompt_format, output_json=bool(output_json),
                                       default_system=default_system or "")
        except TunesmithError as e:
            return _fail(f"settings not saved: {e}")
        return _ok("settings saved")

    def prompt_preview(self, instruction: str, input: str) -> str:
        fmt = self.store.settings().prompt_format
        text = compose_prompt(instruction or "", input or "", fmt)
        return f"Prompt the model sees ({fmt} format):\n\n```text\n{text}\n```" if text else ""


def _md(v: Any) -> str:
    """A value in a Markdown table cell."""
    if isinstance(v, list):
        v = " / ".join(f"{m.get('role')}: {m.get('content')}" if isinstance(m, dict) else str(m) for m in v)
    return str(v if v is not None else "").replace("|", "\\|").replace("\n", " ")


def build_label_ui(project_dir: str | Path, engine: Any = None, *, store: LabelStore | None = None) -> gr.Blocks:
    """The labeling page for one project folder (its SQLite store is created on first use).

    engine: a loaded tunesmith.infer.engine.Engine for the Try-it tab, or None for a model-free page.
    The LabelApp behind the page is `blocks.label_app`.
    """
    app = LabelApp(project_dir, engine=engine, store=store)
    settings = app.store.settings()
    title = f"tunesmith label · {settings.name or app.project_dir.name}"
    with gr.Blocks(title=title, analytics_enabled=False) as blocks:
        with gr.Row():
            gr.Markdown(f"## {title}\nProject folder: `{app.project_dir}`", elem_id="label-title")
            user = gr.Textbox(label="Your name", placeholder="recorded with every change you make", scale=0,
                              min_width=220, elem_id="label-user")
        count = gr.Markdown(app.count_text(), elem_id="label-count")

        # ---------------------------------------------------------------- Try it
        with gr.Tab("Try it", id="try"):
            if engine is None:
                gr.Markdown(NO_MODEL)
            with gr.Row():
                with gr.Column(scale=3):
                    with gr.Row():
                        adapter = gr.Dropdown(app.adapter_choices(), value=(app.adapter_choices() or [None])[0],
                                              label="Model", info="base, or a LoRA adapter", elem_id="try-adapter")
                        mode = gr.Radio([("Instruction + input", "instruction"), ("Chat", "chat")], value="instruction",
                                        label="Mode", elem_id="try-mode")
                    t_system = gr.Textbox(label="System text (optional: persona, rules)", lines=1, elem_id="try-system")
                    with gr.Group(visible=True) as t_single:
                        t_instruction = gr.Textbox(label="Instruction", lines=2, elem_id="try-instruction")
                        t_input = gr.Textbox(label="Input", lines=4, elem_id="try-input")
                    with gr.Group(visible=False) as t_chat:
                        chat_view = gr.Chatbot(label="Chat", height=300, elem_id="try-chat")
                        chat_msg = gr.Textbox(label="Message", lines=2, elem_id="try-message")
                        clear = gr.Button("Clear chat", size="sm")
                    chat_state = gr.State([])
                    with gr.Accordion("Generation options", open=False):
                        with gr.Row():
                            max_new = gr.Slider(1, 2048, value=256, step=1, label="max new tokens")
                            beams = gr.Slider(1, 8, value=1, step=1, label="beams")
                        with gr.Row():
                            sample = gr.Checkbox(False, label="do sample")
                            temp = gr.Slider(0, 2, value=0.7, step=0.05, label="temperature")
                            top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="top p")
                            top_k = gr.Slider(0, 200, value=50, step=1, label="top k")
                    gen_btn = gr.Button("Generate", variant="primary", elem_id="try-generate")
                with gr.Column(scale=3):
                    answer = gr.Textbox(label="Answer (edit it to correct it before accepting)", lines=8,
                                        interactive=True, elem_id="try-answer")
                    info = gr.Markdown(elem_id="try-info")
                    json_md = gr.Markdown(elem_id="try-json-status")
                    json_view = gr.JSON(label="Parsed JSON", elem_id="try-json")
                    gen_id = gr.Number(label="answer #", precision=0, interactive=False, elem_id="try-answer-id")
                    with gr.Row():
                        verdict = gr.Radio(["right", "wrong"], label="The answer is", elem_id="try-verdict")
                        j_note = gr.Textbox(label="Note", lines=1, elem_id="try-note")
                    with gr.Row():
                        a_role = gr.Textbox(label="Role (character) for the sample", lines=1)
                        a_tags = gr.Textbox(label="Tags for the sample", lines=1, placeholder="comma-separated")
                    with gr.Row():
                        judge_btn = gr.Button("Save judgement", elem_id="try-judge")
                        accept_btn = gr.Button("Accept as sample", variant="primary", elem_id="try-accept")
                    t_status = gr.Markdown(elem_id="try-status")

        # ---------------------------------------------------------------- Label
        with gr.Tab("Label", id="label"):
            with gr.Row():
                with gr.Column(scale=2):
                    gr.Markdown("### Sample")
                    with gr.Row():
                        e_id = gr.Number(0, label="sample # (0 = new)", precision=0, elem_id="ed-id")
                        e_rev = gr.Number(0, label="revision", precision=0, interactive=False, elem_id="ed-rev")
                        open_btn = gr.Button("Open #", size="sm", elem_id="ed-open")
                        new_btn = gr.Button("New", size="sm", elem_id="ed-new")
                    e_kind = gr.Radio(KIND_CHOICES, value="single", label="Kind", elem_id="ed-kind")
                    e_system = gr.Textbox(settings.default_system, label="System text", lines=1, elem_id="ed-system")
                    e_role = gr.Textbox(label="Role (character name)", lines=1, elem_id="ed-role")
                    with gr.Group(visible=True) as e_single:
                        e_instruction = gr.Textbox(label="Instruction", lines=2, elem_id="ed-instruction")
                        e_input = gr.Textbox(label="Input", lines=3, elem_id="ed-input")
                        e_output = gr.Textbox(label="Output (the answer to learn)", lines=4, elem_id="ed-output")
                        e_preview = gr.Markdown(elem_id="ed-preview")
                    with gr.Group(visible=False) as e_chat:
                        e_messages = gr.Dataframe(NEW_TURNS, headers=["role", "content"], datatype=["str", "str"],
                                                  type="array", interactive=True, column_count=2, row_count=2,
                                                  wrap=True,
                                                  label="Turns: user, assistant, user, assistant … "
                                                        "(end with assistant)",
                                                  elem_id="ed-messages")
                    with gr.Row():
                        e_status = gr.Radio(list(STATUSES), value="accepted", label="Status", elem_id="ed-status")
                        e_tags = gr.Textbox(label="Tags", placeholder="comma-separated", lines=1, elem_id="ed-tags")
                    e_note = gr.Textbox(label="Note", lines=1, elem_id="ed-note")
                    with gr.Row():
                        save_btn = gr.Button("Save", variant="primary", elem_id="ed-save")
                        del_btn = gr.Button("Delete", variant="stop", size="sm", elem_id="ed-delete")
                    e_msg = gr.Markdown(elem_id="ed-status-line")
                    with gr.Accordion("History of this sample", open=False):
                        e_hist = gr.Markdown(elem_id="ed-history")
                with gr.Column(scale=3):
                    gr.Markdown("### Dataset")
                    with gr.Row():
                        f_text = gr.Textbox(label="Search", placeholder="words to find", scale=2, elem_id="f-text")
                        f_status = gr.Dropdown(["all", *STATUSES], value="all", label="Status", elem_id="f-status")
                        f_tag = gr.Textbox(label="Tag", elem_id="f-tag")
                        f_role = gr.Textbox(label="Role", elem_id="f-role")
                    with gr.Row():
                        search_btn = gr.Button("Search / refresh", size="sm", elem_id="f-search")
                        f_info = gr.Markdown(elem_id="f-info")
                    table = gr.Dataframe(app.table(), headers=TABLE_HEADERS, interactive=False, wrap=True,
                                         max_height=600, label="Click a row to open it", elem_id="ds-table")
            with gr.Accordion("Model answers to review", open=False):
                with gr.Row():
                    with gr.Column(scale=3):
                        g_table = gr.Dataframe(app.generations_table(), headers=GEN_HEADERS, interactive=False,
                                               wrap=True, label="Pending answers (click one)", elem_id="gen-table")
                    with gr.Column(scale=2):
                        g_id = gr.Number(label="answer #", precision=0, elem_id="rv-id")
                        g_prompt = gr.Markdown()
                        g_output = gr.Textbox(label="Answer (correct it before accepting)", lines=5,
                                              elem_id="rv-output")
                        with gr.Row():
                            g_role = gr.Textbox(label="Role", lines=1)
                            g_tags = gr.Textbox(label="Tags", lines=1)
                        g_note = gr.Textbox(label="Note", lines=1)
                        with gr.Row():
                            g_accept = gr.Button("Accept as sample", variant="primary", elem_id="rv-accept")
                            g_reject = gr.Button("Reject", variant="stop", elem_id="rv-reject")
                        g_msg = gr.Markdown(elem_id="rv-status")

        # ---------------------------------------------------------------- Import / export
        with gr.Tab("Import / export", id="io"):
            with gr.Row():
                with gr.Column():
                    gr.Markdown("### Import a dataset to curate")
                    i_file = gr.File(label="Dataset file (.jsonl / .json)", file_types=[".jsonl", ".json"],
                                     elem_id="im-file")
                    with gr.Row():
                        i_fmt = gr.Dropdown(list(IMPORT_FORMATS), value="auto", label="Format", elem_id="im-format")
                        i_status = gr.Radio(list(STATUSES), value="accepted", label="Status of imported samples")
                    with gr.Row():
                        i_tags = gr.Textbox(label="Tags for imported samples", lines=1)
                        i_err = gr.Radio([("stop at the first bad record", "fail"), ("skip bad records", "skip")],
                                         value="fail", label="Bad records")
                    i_btn = gr.Button("Import", variant="primary", elem_id="im-button")
                    i_msg = gr.Markdown(elem_id="im-status")
                with gr.Column():
                    gr.Markdown("### Export for `tunesmith train`")
                    x_fmt = gr.Dropdown(list(EXPORT_FORMATS), value="conversation", label="Format", elem_id="ex-format")
                    x_statuses = gr.CheckboxGroup(list(STATUSES), value=["accepted"], label="Samples with status",
                                                  elem_id="ex-statuses")
                    with gr.Row():
                        x_tag = gr.Textbox(label="Only tag", lines=1)
                        x_role = gr.Textbox(label="Only role", lines=1)
                    x_btn = gr.Button("Export", variant="primary", elem_id="ex-button")
                    x_msg = gr.Markdown(elem_id="ex-status")
                    x_file = gr.File(label="Download", interactive=False, elem_id="ex-file")

        # ---------------------------------------------------------------- Settings
        with gr.Tab("Settings", id="settings"):
            s_name = gr.Textbox(settings.name, label="Project name")
            s_format = gr.Radio([("alpaca: instruction + newline + input", "alpaca"),
                                 ("context: Instruction: …\\nInput: …\\nAnswer: ", "context")],
                                value=settings.prompt_format, label="Prompt format (new samples)", elem_id="st-format")
            s_json = gr.Checkbox(settings.output_json,
                                 label="Outputs must be JSON (information extraction, classification)",
                                 elem_id="st-json")
            s_system = gr.Textbox(settings.default_system, label="Default system text for new samples", lines=2)
            s_btn = gr.Button("Save settings", variant="primary", elem_id="st-save")
            s_msg = gr.Markdown(elem_id="st-status")

        # ---------------------------------------------------------------- wiring
        filters = [f_text, f_status, f_tag, f_role]
        listing = [table, f_info, count]
        form = [e_id, e_rev, e_kind, e_system, e_role, e_instruction, e_input, e_output, e_messages, e_status, e_tags,
                e_note, e_hist]

        mode.change(app.set_mode, mode, [t_single, t_chat], queue=False)
        gen_btn.click(app.generate,
                      [user, adapter, mode, t_system, t_instruction, t_input, chat_state, chat_msg, max_new, sample,
                       temp, top_p, top_k, beams],
                      [answer, info, json_view, json_md, gen_id, chat_state, chat_view, chat_msg, t_status],
                      concurrency_limit=None)
        answer.change(app.check_json, answer, [json_view, json_md], queue=False)
        clear.click(app.clear_chat, None, [chat_state, chat_view, chat_msg], queue=False)
        judge_btn.click(app.judge, [user, gen_id, verdict, j_note], t_status)
        accept_btn.click(app.accept_answer, [user, gen_id, answer, a_role, a_tags, j_note], [t_status, count])

        e_kind.change(app.set_kind, e_kind, [e_single, e_chat], queue=False)
        e_instruction.change(app.prompt_preview, [e_instruction, e_input], e_preview, queue=False)
        e_input.change(app.prompt_preview, [e_instruction, e_input], e_preview, queue=False)
        new_btn.click(app.new_sample, None, [*form, e_msg])
        open_btn.click(app.open_sample, e_id, [*form, e_msg])
        e_id.submit(app.open_sample, e_id, [*form, e_msg])
        table.select(app.open_selected, None, [*form, e_msg])
        save_btn.click(app.save_sample,
                       [user, e_id, e_rev, e_kind, e_system, e_role, e_instruction, e_input, e_output, e_messages,
                        e_status, e_tags, e_note, *filters],
                       [*form, e_msg, *listing])
        del_btn.click(app.delete_sample, [user, e_id, e_rev, *filters], [*form, e_msg, *listing])
        search_btn.click(app.refresh, filters, listing)
        f_text.submit(app.refresh, filters, listing)
        f_status.change(app.refresh, filters, listing)
        f_tag.submit(app.refresh, filters, listing)
        f_role.submit(app.refresh, filters, listing)

        g_table.select(app.pick_generation, None, [g_id, g_output, g_prompt, g_msg])
        g_id.submit(app.open_generation, g_id, [g_id, g_output, g_prompt, g_msg])
        g_accept.click(app.accept_review, [user, g_id, g_output, g_role, g_tags, g_note], [g_msg, g_table, count])
        g_reject.click(app.reject_review, [user, g_id, g_output, g_role, g_tags, g_note], [g_msg, g_table, count])

        i_btn.click(app.import_dataset, [user, i_file, i_fmt, i_status, i_tags, i_err], [i_msg, *listing])
        x_btn.click(app.export_dataset, [x_fmt, x_statuses, x_tag, x_role], [x_msg, x_file])
        s_btn.click(app.save_settings, [user, s_name, s_format, s_json, s_system], s_msg)

        # The count and the tables follow other tabs' and users' changes.
        timer = gr.Timer(5)
        timer.tick(app.count_text, None, count, queue=False, show_progress="hidden")
        blocks.load(app.refresh, filters, listing)
        blocks.load(app.generations_table, None, g_table)
        blocks.load(app.settings_values, None, [s_name, s_format, s_json, s_system])
    blocks.label_app = app  # type: ignore[attr-defined]
    return blocks
