"""The labeling store: one SQLite file per project folder, safe for several tabs, users and crashes.

    from tunesmith.label.store import LabelStore
    store = LabelStore("ie-project")                     # creates ie-project/tunesmith-label.sqlite
    s = store.add_sample(instruction="抽取三元组", input="周星驰主演喜剧之王", output="[...]", user="ann")
    s = store.update_sample(s.id, output="[...fixed...]", expected_revision=s.revision, user="bob")
    store.list_samples(text="周星驰", status="accepted"); store.count()
    gid = store.log_generation(adapter="ie", system="", messages=[...], answer="...", elapsed_s=0.8)
    store.judge(gid, "wrong", note="missed the subject", user="ann")
    store.accept_generation(gid, output="corrected answer", user="ann")
    store.import_file("datasets/chatglm-mixed-ie-cls/mixed_dev_dataset.jsonl")
    store.export("train.jsonl", "context-target")        # then: tunesmith train ... with that file
    store.export_preference("pairs.jsonl", "pairs")      # corrected answers; "kto": answers judged right/wrong

Guarantees, and how:
- Every change is one transaction (BEGIN IMMEDIATE ... COMMIT) and is committed before the call returns,
  with the WAL journal and synchronous=FULL: a server killed right after answering loses nothing.
- Every edit writes a row in `revisions` (who, when, which fields, the old and the new value).
- Optimistic concurrency: update/delete name the revision they were based on; if someone saved in
  between, EditConflict is raised and nothing is written (no silent overwrite).
- Bad input (empty fields, output that must be JSON and is not, a duplicate) raises a TunesmithError
  before anything is written: nothing is ever saved half-way.

LabelStore is the front; each concern has its own module, whose functions take the project's Database:
db (connections, schema), settings (project settings, prompt formats), samples (the Sample type,
validation, revisions, search), review (model answers and their judgements), io (import / export).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.label import io, preference, review, samples
from tunesmith.label.db import ANONYMOUS, DB_NAME, SCHEMA_VERSION, Database, clean_user, now
from tunesmith.label.io import EXPORT_FORMATS, IMPORT_FORMATS, ExportReport, ImportReport
from tunesmith.label.preference import EXPORT_KINDS, PreferenceReport
from tunesmith.label.review import VERDICTS, Generation, count_generations, list_generations
from tunesmith.label.samples import (
    EDITABLE,
    KINDS,
    STATUSES,
    DuplicateSample,
    EditConflict,
    LabelError,
    Revision,
    Sample,
    parse_tags,
)
from tunesmith.label.settings import PROMPT_FORMATS, ProjectSettings, compose_prompt, split_prompt

__all__ = [
    "ANONYMOUS", "DB_NAME", "EDITABLE", "EXPORT_FORMATS", "EXPORT_KINDS", "IMPORT_FORMATS", "KINDS", "PROMPT_FORMATS",
    "SCHEMA_VERSION", "STATUSES", "VERDICTS", "DuplicateSample", "EditConflict", "ExportReport", "Generation",
    "ImportReport", "LabelError", "LabelStore", "PreferenceReport", "ProjectSettings", "Revision", "Sample",
    "clean_user", "compose_prompt", "now", "parse_tags", "split_prompt",
]


class LabelStore:
    """The SQLite store of one labeling project (see the module docstring for the guarantees)."""

    def __init__(self, path: str | os.PathLike):
        self.db = Database(path)
        self.path = self.db.path
        self.project_dir = self.db.project_dir

    # -- the file ------------------------------------------------------------------------------------
    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def integrity_check(self) -> str:
        return self.db.integrity_check()

    # -- settings ------------------------------------------------------------------------------------
    def settings(self) -> ProjectSettings:
        return self.db.settings()

    def update_settings(self, user: str | None = None, **changes: Any) -> ProjectSettings:
        """Change the project's settings; requiring JSON outputs is refused while a live sample is not JSON."""
        return samples.update_settings(self.db, user, **changes)

    # -- samples -------------------------------------------------------------------------------------
    def add_sample(self, *, instruction: str = "", input: str = "", output: str = "",
                   messages: Any = None, system: str | None = None, kind: str | None = None,
                   status: str = "accepted", role: str = "", tags: str | Iterable[str] | None = None,
                   note: str = "", source: str = "manual", meta: dict[str, Any] | None = None,
                   user: str | None = None) -> Sample:
        """Add one sample: single-turn (instruction/input/output) or, with `messages`, a chat."""
        return samples.add_sample(self.db, instruction=instruction, input=input, output=output, messages=messages,
                                  system=system, kind=kind, status=status, role=role, tags=tags, note=note,
                                  source=source, meta=meta, user=user)

    def update_sample(self, sample_id: int, *, expected_revision: int, user: str | None = None,
                      **changes: Any) -> Sample:
        """Change some fields of a sample saved at `expected_revision`; EditConflict if it moved on since."""
        return samples.update_sample(self.db, sample_id, expected_revision=expected_revision, user=user, **changes)

    def delete_sample(self, sample_id: int, *, expected_revision: int, user: str | None = None) -> None:
        """Delete a sample (kept in the file with its history; it leaves lists, counts and exports)."""
        samples.delete_sample(self.db, sample_id, expected_revision=expected_revision, user=user)

    def get_sample(self, sample_id: int) -> Sample:
        return samples.get_sample(self.db, sample_id)

    def history(self, sample_id: int) -> list[Revision]:
        return samples.history(self.db, sample_id)

    def list_samples(self, text: str | None = None, status: str | Sequence[str] | None = None, tag: str | None = None,
                     role: str | None = None, *, source: str | None = None, limit: int | None = 200,
                     offset: int = 0, newest_first: bool = True) -> list[Sample]:
        """Samples matching every given filter (text: each word somewhere in the sample, case-insensitive)."""
        return samples.list_samples(self.db, text, status, tag, role, source=source, limit=limit, offset=offset,
                                    newest_first=newest_first)

    search = list_samples

    def count(self, text: str | None = None, status: str | Sequence[str] | None = None, tag: str | None = None,
              role: str | None = None) -> int:
        return samples.count(self.db, text, status, tag, role)

    def counts(self) -> dict[str, int]:
        """{"total": N, "accepted": .., "draft": .., "rejected": ..} over samples not deleted."""
        return samples.counts(self.db)

    def roles(self) -> list[str]:
        return samples.roles(self.db)

    def tags(self) -> list[str]:
        return samples.tags(self.db)

    # -- model answers ---------------------------------------------------------------------------------
    def log_generation(self, *, adapter: str, answer: str, elapsed_s: float, messages: Any,
                       system: str = "", instruction: str = "", input: str = "", kind: str | None = None,
                       options: dict[str, Any] | None = None, user: str | None = None) -> int:
        """Record one model answer to a prompt (messages ending with the user turn); returns its id."""
        return review.log_generation(self.db, adapter=adapter, answer=answer, elapsed_s=elapsed_s,
                                     messages=messages, system=system, instruction=instruction, input=input,
                                     kind=kind, options=options, user=user)

    def get_generation(self, generation_id: int) -> Generation:
        return review.get_generation(self.db, generation_id)

    def list_generations(self, review: str | None = None, limit: int = 200) -> list[Generation]:
        """Newest first; review="pending" lists answers neither accepted nor rejected yet."""
        return list_generations(self.db, review, limit)

    def count_generations(self, review: str | None = None) -> int:
        """How many model answers are logged; review="pending": not yet accepted or rejected."""
        return count_generations(self.db, review)

    def judge(self, generation_id: int, verdict: str, note: str = "", user: str | None = None) -> Generation:
        """Mark a model answer right or wrong (with a note); every judgement is kept in `judgements`."""
        return review.judge(self.db, generation_id, verdict, note, user)

    def judgements(self, generation_id: int) -> list[dict[str, Any]]:
        return review.judgements(self.db, generation_id)

    def accept_generation(self, generation_id: int, *, output: str | None = None, status: str = "accepted",
                          role: str = "", tags: str | Iterable[str] | None = None, note: str | None = None,
                          user: str | None = None) -> Sample:
        """Turn a model answer (or a corrected `output`) into a training sample, in one transaction."""
        return review.accept_generation(self.db, generation_id, output=output, status=status, role=role, tags=tags,
                                        note=note, user=user)

    def reject_generation(self, generation_id: int, note: str = "", user: str | None = None) -> Generation:
        """Keep a model answer out of the dataset (logged as a judgement)."""
        return review.reject_generation(self.db, generation_id, note, user)

    # -- import / export -----------------------------------------------------------------------------
    def import_file(self, path: str | os.PathLike, fmt: str | None = None, *, status: str = "accepted",
                    tags: str | Iterable[str] | None = None, user: str | None = None, on_error: str = "fail",
                    limit: int | None = None) -> ImportReport:
        """Add every conversation of a dataset file (any format `tunesmith data` reads) in one transaction.

        Duplicates (of the store or within the file) are left out and reported. on_error="fail" stops at the
        first bad record with its FILE:LINE and adds nothing; "skip" leaves bad records out and reports them.
        """
        return io.import_file(self.db, path, fmt, status=status, tags=tags, user=user, on_error=on_error,
                              limit=limit)

    def conversations(self, statuses: Sequence[str] = ("accepted",), tag: str | None = None,
                      role: str | None = None) -> list[tuple[int, Conversation]]:
        return io.conversations(self.db, statuses, tag, role)

    def export(self, path: str | os.PathLike, fmt: str = "conversation", *, statuses: Sequence[str] = ("accepted",),
               tag: str | None = None, role: str | None = None) -> ExportReport:
        """Write the chosen samples with the data layer's writer for `fmt` (atomically); oldest first."""
        return io.export(self.db, path, fmt, statuses=statuses, tag=tag, role=role)


    def export_preference(self, path: str | os.PathLike, kind: str, *, statuses: Sequence[str] = ("accepted",),
                          tag: str | None = None, role: str | None = None) -> PreferenceReport:
        """Write corrected model answers as pairs (kind "pairs") or judged answers for KTO ("kto"), as native
        JSONL (atomically); LabelError when the project has none (see tunesmith.label.preference)."""
        return preference.export(self.db, path, kind, statuses=statuses, tag=tag, role=role)
