"""The labeling page's behaviour: LabelApp, one method per button, reading and writing the LabelStore.

    from tunesmith.label.ui.app import LabelApp
    app = LabelApp("ie-project", engine=None)                     # the page without a browser
    app.save_sample("ann", 0, 0, "single", "", "", "抽取三元组", "周星驰主演喜剧之王", '["..."]', None,
                    "accepted", "", "")                         # the editor's fields, as ui.form lists them
    app.open_sample(1); app.export_dataset("context-target", ["accepted"], "", "")

A handler never raises for a user's mistake: it returns the message for the status line (and shows a
toast).  An edit names the revision it started from; a stale edit is refused with a message saying who
changed the sample, and the form keeps the text typed.  The page that calls these is ui.page.
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

from tunesmith.conversation import Message
from tunesmith.errors import TunesmithError
from tunesmith.infer.options import GenerationOptions
from tunesmith.label.answers import parse_answer_json
from tunesmith.label.db import ANONYMOUS
from tunesmith.label.io import EXPORT_FORMATS
from tunesmith.label.preference import EXPORT_KINDS, KTO, SFT
from tunesmith.label.samples import EditConflict, Sample
from tunesmith.label.settings import compose_prompt
from tunesmith.label.store import LabelStore
from tunesmith.label.ui import form
from tunesmith.label.ui.views import fail, int_or_none, md_cell, ok, short, table

TABLE_HEADERS = ["id", "status", "kind", "role", "tags", "input / prompt", "answer", "rev", "by", "updated"]
GEN_HEADERS = ["id", "adapter", "verdict", "json", "prompt", "answer", "by", "at"]
TABLE_LIMIT = 200
USER_HEADER = "x-tunesmith-user"
NO_MODEL = ("No model is loaded, so nothing can be generated here. Start the page with a model: "
            "`tunesmith label PROJECT --model MODEL [--adapter NAME=PATH]` "
            "or `tunesmith serve --model MODEL --label-project PROJECT`.")


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
                 short((s.input or s.instruction) if s.kind == "single" else s.prompt), short(s.answer), s.revision,
                 s.updated_by, s.updated_at[:19].replace("T", " ")] for s in samples]
        return table(rows, TABLE_HEADERS)

    def filter_info(self, text: str = "", status: str = "all", tag: str = "", role: str = "") -> str:
        try:
            n = self.store.count(text=text, status=None if status in (None, "", "all") else status, tag=tag, role=role)
        except TunesmithError as e:
            return fail(str(e))
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
            rows.append([g.id, g.adapter, g.verdict or "", ok, short(g.messages[-1].content), short(g.answer),
                         g.user, g.at[:19].replace("T", " ")])
        return table(rows, GEN_HEADERS)

    # -- Try it -----------------------------------------------------------------------------------------
    def adapter_choices(self) -> list[str]:
        return list(getattr(self.engine, "adapter_names", None) or ["base"]) if self.engine is not None else []

    def generate(self, user: str, adapter: str, mode: str, system: str, instruction: str, input: str,
                 chat_history: list | None, chat_message: str, max_new_tokens: float, do_sample: bool,
                 temperature: float, top_p: float, top_k: float, num_beams: float,
                 request: gr.Request | None = None):
        """-> (answer, info, parsed JSON, JSON status, answer id, chat history, chat view, chat box, status)"""
        history = [dict(m) for m in (chat_history or [])]
        keep = (gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), history, history, chat_message)
        if self.engine is None:
            return (*keep, fail(NO_MODEL))
        adapter = adapter or "base"
        if adapter not in self.adapter_choices():
            return (*keep, fail(f"adapter {adapter!r} is not loaded (loaded: {', '.join(self.adapter_choices())})"))
        settings = self.store.settings()
        if mode == "chat":
            if not (chat_message or "").strip():
                return (*keep, fail("message: empty (type what the user says)"))
            prompt = [Message(m["role"], m["content"]) for m in history] + [Message("user", chat_message)]
            instruction = input = ""
        else:
            if not (instruction or "").strip() and not (input or "").strip():
                return (*keep, fail("instruction: empty (type an instruction, an input, or both)"))
            prompt = [Message("user", compose_prompt(instruction or "", input or "", settings.prompt_format))]
        try:
            options = self._options(max_new_tokens, do_sample, temperature, top_p, top_k, num_beams)
            t0 = time.perf_counter()
            answer = self.engine.chat(prompt, system=(system or None), adapter=adapter, options=options)
            elapsed = time.perf_counter() - t0
        except TunesmithError as e:
            return (*keep, fail(str(e)))
        gid = self.store.log_generation(adapter=adapter, system=system or "", instruction=instruction or "",
                                        input=input or "", kind="chat" if mode == "chat" else "single",
                                        messages=prompt, answer=answer, elapsed_s=elapsed,
                                        options=asdict(options), user=self.user_of(user, request))
        value, json_md = self._json_view(answer)
        if mode == "chat":
            history = history + [{"role": "user", "content": chat_message}, {"role": "assistant", "content": answer}]
            chat_message = ""
        info = f"answer #{gid} · {adapter} · {elapsed:.2f} s · {len(answer)} characters"
        return answer, info, value, json_md, gid, history, history, chat_message, ok(f"logged as answer #{gid}")

    @staticmethod
    def _options(max_new_tokens, do_sample, temperature, top_p, top_k, num_beams):
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
        gid = int_or_none(generation_id)
        if gid is None:
            return fail("no answer to judge yet (generate one first)")
        if verdict not in ("right", "wrong"):
            return fail("verdict: choose right or wrong")
        try:
            self.store.judge(gid, verdict, note or "", user=self.user_of(user, request))
        except TunesmithError as e:
            return fail(str(e))
        return ok(f"answer #{gid} marked {verdict}" + (f" ({short(note, 40)})" if note else ""))

    def accept_answer(self, user: str, generation_id: Any, answer: str, role: str, tags: str, note: str,
                      request: gr.Request | None = None):
        """Accept the (possibly corrected) answer as a sample -> (status, live count)."""
        gid = int_or_none(generation_id)
        if gid is None:
            return fail("no answer to accept yet (generate one first)"), self.count_text()
        try:
            s = self.store.accept_generation(gid, output=answer, role=role or "", tags=tags, note=note or None,
                                             user=self.user_of(user, request))
        except TunesmithError as e:
            return fail(str(e)), self.count_text()
        fixed = " (corrected)" if s.meta.get("corrected") else ""
        return ok(f"answer #{gid} added to the dataset as sample #{s.id}{fixed}"), self.count_text()

    # -- Label: the editor ------------------------------------------------------------------------------
    def _form(self, s: Sample | None) -> tuple[Any, ...]:
        """The editor's values (one per field of form.EDITOR_FIELDS) showing `s`, or a blank form."""
        if s is None:
            return form.new_values(self.store.settings())
        return form.sample_values(s, self.history_text(s.id))

    def new_sample(self):
        """-> editor values + (status,)"""
        return (*self._form(None), "Write a new sample, then Save.")

    def open_sample(self, sample_id: Any):
        """-> editor values + (status,)"""
        sid = int_or_none(sample_id)
        if sid is None:
            return (*self._form(None), fail("sample #: type the number of a sample to open"))
        try:
            s = self.store.get_sample(sid)
        except TunesmithError as e:
            return (*form.kept_values(), fail(str(e)))
        return (*self._form(s), f"Opened sample #{s.id} (revision {s.revision}, last changed by {s.updated_by}).")

    def open_selected(self, evt: gr.SelectData):
        """A click on a row of the dataset table opens that sample."""
        row = getattr(evt, "row_value", None)
        sid = row[0] if row else None
        if sid is None and isinstance(getattr(evt, "index", None), (list, tuple)):
            return (*form.kept_values(), fail("cannot tell which sample this row is"))
        return self.open_sample(sid)

    def save_sample(self, user: str, *values: Any, request: gr.Request | None = None):
        """Add (sample # 0) or update (sample # + the revision the form was opened at).

        values: the form's values in form.SENT_FIELDS order, then the dataset filters (text, status, tag, role).
        -> editor values + (status, table, filter info, live count)"""
        typed, rest = form.split_sent(values)
        text, f_status, f_tag, f_role = _filters(rest)
        who = self.user_of(user, request)
        sid = int_or_none(typed["id"])
        fields = form.sample_fields(typed)
        try:
            if sid is None:
                s = self.store.add_sample(**fields, user=who)
                msg = ok(f"saved as new sample #{s.id}")
            else:
                rev = int_or_none(typed["revision"])
                if rev is None:
                    return (*form.kept_values(), fail("this form has no revision: open the sample again before saving"),
                            *self.refresh(text, f_status, f_tag, f_role))
                s = self.store.update_sample(sid, expected_revision=rev, user=who, **fields)
                msg = ok(f"saved sample #{s.id} (revision {s.revision})") if s.revision != rev else \
                    f"Nothing changed in sample #{s.id}."
        except EditConflict as e:
            # keep the typed text in the form so the person can re-apply it after reloading
            return (*form.kept_values(), fail(str(e)), *self.refresh(text, f_status, f_tag, f_role))
        except TunesmithError as e:
            return (*form.kept_values(), fail(f"not saved: {e}"), *self.refresh(text, f_status, f_tag, f_role))
        return (*self._form(s), msg, *self.refresh(text, f_status, f_tag, f_role))

    def delete_sample(self, user: str, sample_id: Any, revision: Any, text: str = "", f_status: str = "all",
                      f_tag: str = "", f_role: str = "", request: gr.Request | None = None):
        """-> editor values + (status, table, filter info, live count)"""
        sid, rev = int_or_none(sample_id), int_or_none(revision)
        if sid is None or rev is None:
            return (*form.kept_values(), fail("open a saved sample before deleting it"),
                    *self.refresh(text, f_status, f_tag, f_role))
        try:
            self.store.delete_sample(sid, expected_revision=rev, user=self.user_of(user, request))
        except TunesmithError as e:
            return (*form.kept_values(), fail(str(e)), *self.refresh(text, f_status, f_tag, f_role))
        return (*self._form(None), ok(f"deleted sample #{sid} (its history is kept)"),
                *self.refresh(text, f_status, f_tag, f_role))

    def history_text(self, sample_id: Any) -> str:
        sid = int_or_none(sample_id)
        if sid is None:
            return ""
        lines = ["| rev | when (UTC) | who | what changed |", "|---|---|---|---|"]
        for h in self.store.history(sid):
            if h.action == "update":
                what = "; ".join(f"{k}: {short(md_cell(h.old.get(k)), 30)} → {short(md_cell(h.new.get(k)), 30)}"
                                 for k in h.changed)
            else:
                what = h.action
            lines.append(f"| {h.revision} | {h.at[:19].replace('T', ' ')} | {md_cell(h.user)} | {what} |")
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
        gid = int_or_none(row[0] if row else None)
        if gid is None:
            return gr.update(), gr.update(), gr.update(), fail("cannot tell which answer this row is")
        return self.open_generation(gid)

    def open_generation(self, generation_id: Any):
        gid = int_or_none(generation_id)
        if gid is None:
            return gr.update(), gr.update(), gr.update(), fail("answer #: type the number of a model answer")
        try:
            g = self.store.get_generation(gid)
        except TunesmithError as e:
            return gr.update(), gr.update(), gr.update(), fail(str(e))
        prompt = "\n\n".join(f"**{m.role}**: {m.content}" for m in g.messages)
        if g.system:
            prompt = f"**system**: {g.system}\n\n" + prompt
        return g.id, g.answer, prompt, f"Answer #{g.id} by {g.adapter} ({g.verdict or 'not judged'})."

    def review(self, user: str, generation_id: Any, decision: str, output: str, role: str, tags: str, note: str,
               request: gr.Request | None = None):
        """Accept or reject a logged answer -> (status, pending table, live count)"""
        gid = int_or_none(generation_id)
        if gid is None:
            return fail("pick a model answer first (click a row)"), self.generations_table(), self.count_text()
        who = self.user_of(user, request)
        try:
            if decision == "accept":
                s = self.store.accept_generation(gid, output=output, role=role or "", tags=tags,
                                                 note=note or None, user=who)
                msg = ok(f"answer #{gid} accepted as sample #{s.id}")
            else:
                self.store.reject_generation(gid, note=note or "", user=who)
                msg = ok(f"answer #{gid} rejected (kept out of the dataset)")
        except TunesmithError as e:
            msg = fail(str(e))
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
            return (fail("file: choose a dataset file (.jsonl or .json) to import"), *self.refresh())
        try:
            rep = self.store.import_file(path, None if fmt in (None, "", "auto") else fmt, status=status or "accepted",
                                         tags=tags, user=self.user_of(user, request), on_error=on_error or "fail")
        except TunesmithError as e:
            return (fail(f"nothing imported: {e}"), *self.refresh())
        msg = rep.summary()
        if rep.duplicates:
            msg += f". First duplicate: {rep.duplicates[0]}"
        return ((ok(msg) if rep.added else fail(msg)), *self.refresh())

    def export_dataset(self, fmt: str, statuses: Sequence[str] | None, tag: str, role: str, kind: str = SFT):
        """-> (status, file to download).  kind: sft (samples, in `fmt`), pairs or kto (conversation JSONL)."""
        kind = kind or SFT
        if kind not in EXPORT_KINDS:
            return fail(f"kind: choose one of {', '.join(EXPORT_KINDS)}"), None
        if kind == SFT and fmt not in EXPORT_FORMATS:
            return fail(f"format: choose one of {', '.join(EXPORT_FORMATS)}"), None
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = fmt if kind == SFT else kind
        out = self.exports_dir / f"{self.project_dir.name}-{name}-{stamp}.jsonl"
        filters = dict(tag=tag or None, role=role or None)
        try:
            if kind == SFT:
                rep = self.store.export(out, fmt, statuses=list(statuses or []), **filters)
            else:
                rep = self.store.export_preference(out, kind, statuses=list(statuses or []), **filters)
        except TunesmithError as e:
            return fail(f"nothing exported: {e}"), None
        # Gradio serves downloads only from its own temp area (or allowed paths): hand it a copy.
        dl = Path(tempfile.gettempdir()) / "tunesmith-label-exports" / uuid.uuid4().hex / rep.path.name
        dl.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rep.path, dl)
        if kind == SFT:
            msg = (f"✅ wrote {rep.count} sample(s) to `{rep.path}` ({fmt}).\n\n"
                   f"Train on it: `tunesmith train RECIPE.yaml data.train={rep.path}` "
                   f"(or, in the recipe, `data: {{train: {{path: {rep.path}, format: {fmt}}}}}`).")
        else:
            method = "kto" if kind == KTO else "dpo"
            note = " (every judged model answer: the status filter applies to samples)" if kind == KTO else ""
            msg = (f"✅ {rep.summary()}{note}.\n\n"
                   f"Train on it: `tunesmith train RECIPE.yaml method={method} data.train={rep.path}`"
                   + (" (or method=orpo)." if kind != KTO else "."))
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
            return fail(f"settings not saved: {e}")
        return ok("settings saved")

    def prompt_preview(self, instruction: str, input: str) -> str:
        fmt = self.store.settings().prompt_format
        text = compose_prompt(instruction or "", input or "", fmt)
        return f"Prompt the model sees ({fmt} format):\n\n```text\n{text}\n```" if text else ""


def _filters(rest: list[Any]) -> list[Any]:
    """The dataset filters that follow the form's values (text, status, tag, role), defaults for those left out."""
    defaults = ["", "all", "", ""]
    if len(rest) > len(defaults):
        raise TypeError(f"expected at most {len(defaults)} filters after the form values (got {len(rest)})")
    return [*rest, *defaults[len(rest):]]
