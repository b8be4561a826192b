"""Datasets in and out of a labeling project, through the data layer's readers and writers.

    from tunesmith.label.db import Database
    from tunesmith.label import io
    db = Database("ie-project")
    rep = io.import_file(db, "datasets/chatglm-mixed-ie-cls/mixed_dev_dataset.jsonl", tags="dev")
    rep.summary()                    # 'imported 122 sample(s) from mixed_dev_dataset.jsonl'
    io.export(db, "train.jsonl", "context-target")     # then: tunesmith train ... with that file

LabelStore (tunesmith.label.store) is the front that calls these.  The formats offered are the data layer's
own (tunesmith.data.formats): IMPORT_FORMATS are those it reads, EXPORT_FORMATS those it writes that can hold
any label sample.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data.formats import load, readable_formats, save, to_records, writable_formats
from tunesmith.errors import ConfigError, DataError
from tunesmith.label.db import Database, clean_user
from tunesmith.label.samples import DuplicateSample, LabelError, insert_sample, list_samples, normalize, parse_tags
from tunesmith.label.settings import ProjectSettings, split_prompt

IMPORT_FORMATS = ("auto", *readable_formats())
# Formats the data layer writes that are not offered, and why.  A format that cannot hold some samples is
# offered when its writer refuses them by name (context-target refuses a chat or a system text: the export
# stops at that sample); novel-dialogue's writer would drop a sample's system text and role without a word.
NOT_EXPORTED = {
    "novel-dialogue": "its writer drops a sample's system text and role (it keeps one context and one utterance)",
    "trl": "it writes pairs (a chosen and a rejected answer); a sample has one answer",
    "kto": "it writes judged answers (an answer and a true/false label); a sample has no label",
}
EXPORT_FORMATS = tuple(f for f in writable_formats() if f not in NOT_EXPORTED)


@dataclass
class ImportReport:
    path: str
    added: int = 0
    duplicates: list[str] = field(default_factory=list)  # "FILE#N: same as #ID"
    skipped: list[str] = field(default_factory=list)  # records the data layer could not read, or that failed checks

    def summary(self) -> str:
        parts = [f"imported {self.added} sample(s) from {Path(self.path).name}"]
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate(s) left out")
        if self.skipped:
            parts.append(f"{len(self.skipped)} bad record(s) skipped (first: {self.skipped[0]})")
        return "; ".join(parts)


@dataclass
class ExportReport:
    path: Path
    fmt: str
    count: int


def _sample_fields(conv: Conversation, settings: ProjectSettings, status: str,
                   extra_tags: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample fields of one imported conversation, and the meta kept with it.

    A user + assistant pair whose prompt the project's format splits back is an instruction / input sample;
    anything else is a chat.
    """
    meta = dict(conv.meta)
    role = str(meta.pop("role", "") or "")
    own_tags = meta.pop("tags", None)
    meta.pop("label_id", None)
    all_tags = parse_tags(own_tags if isinstance(own_tags, list) else None) + [t for t in extra_tags]
    fields: dict[str, Any] = {"system": conv.system or "", "status": status, "role": role, "tags": all_tags}
    split = split_prompt(conv.messages[0].content, settings.prompt_format) if len(conv.messages) == 2 else None
    if split is not None and conv.messages[1].role == "assistant" and all(m.loss for m in conv.messages):
        fields.update(kind="single", instruction=split[0], input=split[1], output=conv.messages[1].content)
    else:
        fields.update(kind="chat", messages=conv.messages)
    return fields, meta


def import_file(db: Database, path: str | os.PathLike, fmt: str | None = None, *, status: str = "accepted",
                tags: str | Iterable[str] | None = None, user: str | None = None, on_error: str = "fail",
                limit: int | None = None) -> ImportReport:
    """Add every conversation of a dataset file (any format `tunesmith data` reads) in one transaction.

    Duplicates (of the store or within the file) are left out and reported. on_error="fail" stops at the
    first bad record with its FILE:LINE and adds nothing; "skip" leaves bad records out and reports them.
    """
    if fmt in ("", "auto"):
        fmt = None
    errors: list[DataError] = []
    convs = load(path, fmt, on_error=on_error, errors=errors, quiet=True, limit=limit)
    settings = db.settings()
    report = ImportReport(str(path), skipped=[str(e) for e in errors])
    user = clean_user(user)
    extra_tags = parse_tags(tags)
    name = Path(path).name
    prepared = []
    for i, conv in enumerate(convs):
        where = f"{name} conversation {i + 1}"
        fields, meta = _sample_fields(conv, settings, status, extra_tags)
        try:
            n = normalize(fields, settings)
        except DataError as e:
            if on_error == "fail":
                raise DataError(e.detail, f"{where} ({e.where})" if e.where else where) from None
            report.skipped.append(f"{where}: {e}")
            continue
        prepared.append((where, n, meta))
    with db.write() as c:
        for where, n, meta in prepared:
            try:
                insert_sample(c, n, source=f"import:{name}", meta=meta, user=user, where=where)
            except DuplicateSample as e:
                report.duplicates.append(f"{where}: same as #{e.existing_id}")
                continue
            report.added += 1
    return report


def conversations(db: Database, statuses: Sequence[str] = ("accepted",), tag: str | None = None,
                  role: str | None = None) -> list[tuple[int, Conversation]]:
    """(sample id, Conversation) of the chosen samples, oldest first."""
    return [(s.id, s.to_conversation())
            for s in list_samples(db, status=list(statuses), tag=tag, role=role, limit=None, newest_first=False)]


def export(db: Database, path: str | os.PathLike, fmt: str = "conversation", *,
           statuses: Sequence[str] = ("accepted",), tag: str | None = None, role: str | None = None) -> ExportReport:
    """Write the chosen samples with the data layer's writer for `fmt` (atomically); oldest first."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if not statuses:
        raise ConfigError("choose at least one status to export (accepted, draft, rejected)")
    items = conversations(db, statuses, tag, role)
    if not items:
        raise LabelError(f"no samples to export (status {', '.join(statuses)}"
                         + (f", tag {tag}" if tag else "") + (f", role {role}" if role else "") + ")")
    for sid, conv in items:  # name the sample that does not fit the format, before writing anything
        try:
            to_records([conv], fmt)
        except DataError as e:
            raise DataError(f"{e.detail}", f"sample #{sid}") from None
    out = save([c for _, c in items], path, fmt)
    return ExportReport(Path(out), fmt, len(items))
