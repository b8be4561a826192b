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

Guarantees, and how:
- Every change is one transaction (BEGIN IMMEDIATE ... COMMIT) and is committed before the call returns,
  with the WAL journal and synchronous=FULL: a server killed right after answering loses nothing.
- Every edit writes a row in `revisions` (who, when, which fields, the old and the new value).
- Optimistic concurrency: update/delete name the revision they were based on; if someone saved in
  between, EditConflict is raised and nothing is written (no silent overwrite).
- Bad input (empty fields, output that must be JSON and is not, a duplicate) raises a TunesmithError
  before anything is written: nothing is ever saved half-way.

Only the standard library is imported here; the data layer (import/export) is imported when used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.errors import ConfigError, DataError, TunesmithError

DB_NAME = "tunesmith-label.sqlite"
SCHEMA_VERSION = 1
STATUSES = ("accepted", "draft", "rejected")
KINDS = ("single", "chat")
VERDICTS = ("right", "wrong")
PROMPT_FORMATS = ("alpaca", "context")
EXPORT_FORMATS = ("conversation", "alpaca", "sharegpt", "context-target", "messages")
ANONYMOUS = "anonymous"
# How an instruction and its input become the user message (see ProjectSettings.prompt_format).
_CONTEXT_PROMPT = "Instruction: {instruction}\nInput: {input}\nAnswer: "
_CONTEXT_RE = re.compile(r"\AInstruction: (?P<instruction>.*?)\nInput: (?P<input>.*)\nAnswer: \Z", re.S)
# Fields of a sample a person edits (the revisions table records changes of exactly these).
EDITABLE = ("kind", "system", "instruction", "input", "output", "messages", "status", "role", "tags", "note")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS project (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('single', 'chat')),
    system TEXT NOT NULL DEFAULT '',
    instruction TEXT NOT NULL DEFAULT '',     -- single: the task
    input TEXT NOT NULL DEFAULT '',           -- single: the material it applies to
    output TEXT NOT NULL DEFAULT '',          -- single: the answer
    prompt_format TEXT NOT NULL DEFAULT 'alpaca',  -- single: how instruction + input made the prompt \
(fixed at creation)
    messages TEXT NOT NULL DEFAULT '[]',      -- chat: JSON [{role, content}], user first, ends with assistant
    status TEXT NOT NULL CHECK (status IN ('accepted', 'draft', 'rejected')),
    role TEXT NOT NULL DEFAULT '',            -- character name (RoleBench role, novel speaker)
    tags TEXT NOT NULL DEFAULT '',            -- ",tag1,tag2," so one tag matches exactly
    note TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT 'manual',    -- manual | import:FILE | model:ADAPTER
    meta TEXT NOT NULL DEFAULT '{}',          -- JSON kept from imports, exported back
    content_hash TEXT NOT NULL,               -- duplicate detection: system + every turn, as trained on
    search_text TEXT NOT NULL DEFAULT '',     -- lower-cased text for search
    revision INTEGER NOT NULL DEFAULT 1,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL, updated_by TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS samples_content ON samples (content_hash) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS samples_status ON samples (status, deleted);
CREATE TABLE IF NOT EXISTS revisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sample_id INTEGER NOT NULL REFERENCES samples (id),
    revision INTEGER NOT NULL,
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,                     -- create | update | delete
    changed TEXT NOT NULL,                    -- JSON list of field names
    old TEXT,                                 -- JSON {field: old value} (null for create)
    new TEXT,                                 -- JSON {field: new value} (null for delete)
    UNIQUE (sample_id, revision)
);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    adapter TEXT NOT NULL,
    kind TEXT NOT NULL,                       -- single | chat
    system TEXT NOT NULL DEFAULT '',
    instruction TEXT NOT NULL DEFAULT '',
    input TEXT NOT NULL DEFAULT '',
    messages TEXT NOT NULL,                   -- the prompt: JSON [{role, content}] ending with the user turn
    answer TEXT NOT NULL,
    elapsed_s REAL NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    json_ok INTEGER,                          -- 1/0 when the answer holds JSON, null when it holds none
    verdict TEXT,                             -- latest judgement: right | wrong
    note TEXT NOT NULL DEFAULT '',
    review TEXT,                              -- accepted | rejected (as a training sample)
    sample_id INTEGER REFERENCES samples (id)
);
CREATE TABLE IF NOT EXISTS judgements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    generation_id INTEGER NOT NULL REFERENCES generations (id),
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    verdict TEXT NOT NULL,                    -- right | wrong | accepted | rejected
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS settings_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, user TEXT NOT NULL, old TEXT NOT NULL, new TEXT NOT NULL
);
"""


class LabelError(TunesmithError):
    """A labeling request cannot be carried out (unknown sample, nothing to accept ...)."""


class EditConflict(LabelError):
    """Someone saved the sample after the revision an edit was based on."""

    def __init__(self, sample_id: int, expected: int, current: Sample | None):
        self.sample_id, self.expected, self.current = sample_id, expected, current
        if current is None:
            msg = f"sample #{sample_id} was deleted after you opened it (revision {expected}); nothing was saved"
        else:
            msg = (f"sample #{sample_id} was changed by {current.updated_by} at {current.updated_at} "
                   f"(now revision {current.revision}; your edit was based on revision {expected}). "
                   "Nothing was saved: reload the sample, then apply your change again")
        super().__init__(msg)


class DuplicateSample(LabelError):
    def __init__(self, existing_id: int, where: str | None = None):
        self.existing_id = existing_id
        super().__init__(f"{where + ': ' if where else ''}the same sample already exists as #{existing_id} "
                         "(same system, prompt and answer); nothing was saved")


@dataclass
class ProjectSettings:
    name: str = ""
    # "alpaca": user = instruction + "\n" + input (LLaMA-Factory's rule, as `tunesmith data` reads alpaca);
    # "context": user = "Instruction: {instruction}\nInput: {input}\nAnswer: " (the IE/classification records).
    prompt_format: str = "alpaca"
    output_json: bool = False  # every answer must be JSON (IE / classification projects)
    default_system: str = ""

    def check(self) -> None:
        if self.prompt_format not in PROMPT_FORMATS:
            raise ConfigError(f"prompt_format {self.prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}")
        if not isinstance(self.output_json, bool):
            raise ConfigError(f"output_json must be true or false (got {self.output_json!r})")


@dataclass
class Sample:
    id: int
    kind: str
    system: str
    instruction: str
    input: str
    output: str
    messages: list[Message]  # the whole conversation (for single samples: built with the prompt format)
    status: str
    role: str
    tags: list[str]
    note: str
    source: str
    meta: dict[str, Any]
    revision: int
    created_at: str
    created_by: str
    updated_at: str
    updated_by: str

    @property
    def prompt(self) -> str:
        """The last user message (what the model is asked)."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""

    @property
    def answer(self) -> str:
        return self.messages[-1].content if self.messages and self.messages[-1].role == "assistant" else ""

    def to_conversation(self) -> Conversation:
        meta = dict(self.meta)
        meta["label_id"] = self.id
        if self.role:
            meta["role"] = self.role
        if self.tags:
            meta["tags"] = list(self.tags)
        return Conversation([Message(m.role, m.content, m.loss) for m in self.messages], self.system or None, meta)

    def fields(self) -> dict[str, Any]:
        """The editable fields, as the revisions table records them."""
        out = {k: getattr(self, k) for k in EDITABLE}
        # single samples keep instruction/input/output; their messages are derived, not edited
        out["messages"] = [m.to_dict() for m in self.messages] if self.kind == "chat" else []
        out["tags"] = list(self.tags)
        return out


@dataclass
class Revision:
    sample_id: int
    revision: int
    at: str
    user: str
    action: str
    changed: list[str]
    old: dict[str, Any] | None
    new: dict[str, Any] | None


@dataclass
class Generation:
    id: int
    at: str
    user: str
    adapter: str
    kind: str
    system: str
    instruction: str
    input: str
    messages: list[Message]
    answer: str
    elapsed_s: float
    options: dict[str, Any]
    json_ok: bool | None
    verdict: str | None
    note: str
    review: str | None
    sample_id: int | None


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


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def clean_user(user: str | None) -> str:
    u = (user or "").strip()
    return u[:80] if u else ANONYMOUS


def parse_tags(tags: str | Iterable[str] | None) -> list[str]:
    """'a, b,,c' or ['a', 'b'] -> ['a', 'b', 'c'] (order kept, duplicates dropped)."""
    if tags is None:
        return []
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    out: list[str] = []
    for t in items:
        if not isinstance(t, str):
            raise DataError(f"each tag must be text (got {type(t).__name__})", "tags")
        t = t.strip()
        if t and t not in out:
            out.append(t)
    return out


def compose_prompt(instruction: str, input: str, prompt_format: str) -> str:
    """The user message of a single-turn sample, under the project's prompt format."""
    if prompt_format == "context":
        return _CONTEXT_PROMPT.format(instruction=instruction, input=input)
    return "\n".join(t for t in (instruction, input) if t)


def split_prompt(user: str, prompt_format: str) -> tuple[str, str] | None:
    """(instruction, input) that compose back to exactly `user`, or None when the format cannot."""
    if prompt_format == "context":
        m = _CONTEXT_RE.match(user)
        return (m["instruction"], m["input"]) if m else None
    return user, ""


def _messages_from(value: Any, where: str = "messages") -> list[Message]:
    """Accept Message objects, {role, content} dicts or [role, content] rows (a UI table)."""
    if isinstance(value, str):
        # Typed by a person: the same rules as data files (no key twice, no absurd nesting), not a traceback.
        from tunesmith.data.records import JsonShapeError, strict_loads

        try:
            value = strict_loads(value)
        except JsonShapeError as e:
            line = value.count("\n", 0, e.pos) + 1
            raise DataError(e.msg, f"{where} (line {line})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                            'expected [{"role": "user", "content": "..."}, ...]', where) from None
    if not isinstance(value, (list, tuple)):
        raise DataError(f"expected a list of messages (got {type(value).__name__})", where)
    out: list[Message] = []
    for i, m in enumerate(value):
        if isinstance(m, Message):
            out.append(Message(m.role, m.content, m.loss))
        elif isinstance(m, dict):
            out.append(Message(str(m.get("role", "")).strip(), m.get("content", ""), bool(m.get("loss", True))))
        elif isinstance(m, (list, tuple)) and len(m) >= 2:
            out.append(Message(str(m[0] or "").strip(), m[1] if m[1] is not None else ""))
        else:
            raise DataError(f"message {i + 1}: expected a role and a content", where)
    return out


class LabelStore:
    """The SQLite store of one labeling project (see the module docstring for the guarantees)."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path).expanduser()
        if p.suffix in (".sqlite", ".db", ".sqlite3"):
            self.path = p
        else:
            self.path = p / DB_NAME
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise ConfigError(f"{self.path.parent}: not a folder (expected a labeling project folder)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.project_dir = self.path.parent
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            mode = self._con().execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as e:
            self.close()
            raise ConfigError(f"{self.path}: not a labeling database ({e}); "
                              f"expected a project folder or a {DB_NAME} file") from None
        if mode.lower() != "wal":  # e.g. a network file system without shared memory
            raise ConfigError(f"{self.path}: SQLite cannot use WAL journaling here (got {mode}); use a local folder")
        with self._write() as c:
            for stmt in _split_sql(_SCHEMA):
                c.execute(stmt)
            row = c.execute("SELECT value FROM project WHERE key='schema_version'").fetchone()
            if row is None:
                c.execute("INSERT INTO project VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                c.execute("INSERT INTO project VALUES ('settings', ?)", (json.dumps(asdict(ProjectSettings())),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise ConfigError(f"{self.path}: made by a newer tunesmith (schema {row[0]} > {SCHEMA_VERSION}); "
                                  "upgrade tunesmith")

    # -- connections and transactions ---------------------------------------------------------------
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            # isolation_level=None: no implicit transactions; every write below opens BEGIN IMMEDIATE itself,
            # so the write lock is taken up front and two writers never deadlock on a lock upgrade.
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            con.row_factory = sqlite3.Row
            try:
                con.execute("PRAGMA busy_timeout = 30000")
                con.execute("PRAGMA synchronous = FULL")  # a COMMIT is on disk before the call returns
                con.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error:
                con.close()
                raise
            self._local.con = con
            with self._lock:
                self._all.append(con)
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        con = self._con()
        con.execute("BEGIN")  # one consistent snapshot for multi-query reads
        try:
            yield con
        finally:
            con.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for con in self._all:
                try:
                    con.close()
                except sqlite3.Error:  # pragma: no cover - closing twice, or from a dead thread
                    pass
            self._all.clear()
        self._local = threading.local()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def integrity_check(self) -> str:
        return self._con().execute("PRAGMA integrity_check").fetchone()[0]

    # -- settings ------------------------------------------------------------------------------------
    def settings(self) -> ProjectSettings:
        row = self._con().execute("SELECT value FROM project WHERE key='settings'").fetchone()
        data = json.loads(row[0]) if row else {}
        known = {k: v for k, v in data.items() if k in ProjectSettings.__dataclass_fields__}
        return ProjectSettings(**known)

    def update_settings(self, user: str | None = None, **changes: Any) -> ProjectSettings:
        unknown = set(changes) - set(ProjectSettings.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown project setting(s) {sorted(unknown)} "
                              f"(expected {', '.join(ProjectSettings.__dataclass_fields__)})")
        with self._write() as c:
            old = self.settings()
            new = ProjectSettings(**{**asdict(old), **changes})
            new.check()
            if new.output_json and not old.output_json:
                bad = self._first_non_json(c, new)
                if bad is not None:
                    raise DataError(f"cannot require JSON outputs: sample #{bad[0]} is not JSON ({bad[1]}); "
                                    "fix or reject it first", "output_json")
            c.execute("UPDATE project SET value=? WHERE key='settings'", (json.dumps(asdict(new), ensure_ascii=False),))
            c.execute("INSERT INTO settings_log (at, user, old, new) VALUES (?, ?, ?, ?)",
                      (now(), clean_user(user), json.dumps(asdict(old), ensure_ascii=False),
                       json.dumps(asdict(new), ensure_ascii=False)))
        return new

    def _first_non_json(self, c: sqlite3.Connection, settings: ProjectSettings) -> tuple[int, str] | None:
        from tunesmith.label.answers import parse_answer_json

        for row in c.execute("SELECT * FROM samples WHERE deleted=0 AND status != 'rejected' ORDER BY id"):
            s = self._sample(row, settings)
            for m in s.messages:
                if m.role == "assistant":
                    r = parse_answer_json(m.content)
                    if not r.ok:
                        return s.id, r.error or "no JSON found"
        return None

    # -- samples: validation -------------------------------------------------------------------------
    def _normalize(self, f: dict[str, Any], settings: ProjectSettings,
                   prompt_format: str | None = None) -> dict[str, Any]:
        """Check a sample's fields and fill in the derived ones; DataError names the field at fault.

        prompt_format: the sample's own (an edit keeps the format the sample was made with), else the project's.
        """
        kind = f.get("kind") or "single"
        if kind not in KINDS:
            raise DataError(f"must be one of {', '.join(KINDS)} (got {kind!r})", "kind")
        status = f.get("status") or "accepted"
        if status not in STATUSES:
            raise DataError(f"must be one of {', '.join(STATUSES)} (got {status!r})", "status")
        out: dict[str, Any] = {"kind": kind, "status": status, "prompt_format": prompt_format or settings.prompt_format}
        for key in ("system", "instruction", "input", "output", "role", "note"):
            v = f.get(key)
            if v is None:
                v = ""
            if not isinstance(v, str):
                raise DataError(f"must be text (got {type(v).__name__})", key)
            out[key] = v
        out["role"] = out["role"].strip()
        out["tags"] = parse_tags(f.get("tags"))
        if kind == "single":
            if not out["instruction"].strip() and not out["input"].strip():
                raise DataError("empty (expected the instruction, or at least an input, of the sample)", "instruction")
            if not out["output"].strip():
                raise DataError("empty (expected the answer the model should learn)", "output")
            user = compose_prompt(out["instruction"], out["input"], out["prompt_format"])
            msgs = [Message("user", user), Message("assistant", out["output"])]
        else:
            msgs = _messages_from(f.get("messages") or [], "messages")
            msgs = [m for m in msgs if m.role or m.content]  # blank rows of a UI table
            if not msgs:
                raise DataError("empty (expected user and assistant turns, user first, ending with assistant)",
                                "messages")
            for i, m in enumerate(msgs):
                expected = "user" if i % 2 == 0 else "assistant"
                if m.role != expected:
                    raise DataError(f"turn {i + 1}: role {m.role!r}, expected {expected!r} "
                                    "(user and assistant alternate, user first)", "messages")
                if not isinstance(m.content, str) or not m.content.strip():
                    raise DataError(f"turn {i + 1} ({m.role}): empty text (expected what the {m.role} says)",
                                    "messages")
            if msgs[-1].role != "assistant":
                raise DataError("the last turn is from the user "
                                "(expected the chat to end with an assistant answer to learn)", "messages")
            out["instruction"] = out["input"] = ""
            out["output"] = msgs[-1].content
        if settings.output_json and status != "rejected":
            from tunesmith.label.answers import require_json

            for i, m in enumerate(msgs):
                if m.role == "assistant":
                    require_json(m.content, "output" if kind == "single" else f"messages turn {i + 1}")
        out["messages"] = msgs
        return out

    @staticmethod
    def _hash(system: str, messages: Sequence[Message]) -> str:
        # What training sees: a single sample and a chat with the same text are the same sample.
        body = [system, [[m.role, m.content] for m in messages]]
        return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode()).hexdigest()

    @staticmethod
    def _search_text(n: dict[str, Any]) -> str:
        parts = [n["system"], n["instruction"], n["input"], n["role"], n["note"], " ".join(n["tags"])]
        parts += [m.content for m in n["messages"]]
        return "\n".join(parts).lower()

    def _row_values(self, n: dict[str, Any]) -> dict[str, Any]:
        msgs = n["messages"]
        return {
            "kind": n["kind"], "system": n["system"], "instruction": n["instruction"], "input": n["input"],
            "output": n["output"], "prompt_format": n["prompt_format"],
            "messages": json.dumps([m.to_dict() for m in msgs], ensure_ascii=False) if n["kind"] == "chat" else "[]",
            "status": n["status"], "role": n["role"], "tags": ("," + ",".join(n["tags"]) + ",") if n["tags"] else "",
            "note": n["note"],
            "content_hash": self._hash(n["system"], msgs),
            "search_text": self._search_text(n),
        }

    def _check_duplicate(self, c: sqlite3.Connection, content_hash: str, own_id: int | None,
                         where: str | None = None) -> None:
        row = c.execute("SELECT id FROM samples WHERE content_hash=? AND deleted=0 AND id IS NOT ?",
                        (content_hash, own_id)).fetchone()
        if row is not None:
            raise DuplicateSample(row[0], where)

    def _insert(self, c: sqlite3.Connection, n: dict[str, Any], *, source: str, meta: dict[str, Any] | None,
                user: str, where: str | None = None) -> int:
        vals = self._row_values(n)
        self._check_duplicate(c, vals["content_hash"], None, where)
        t = now()
        vals.update(source=source, meta=json.dumps(meta or {}, ensure_ascii=False), revision=1, deleted=0,
                    created_at=t, created_by=user, updated_at=t, updated_by=user)
        cols = ", ".join(vals)
        cur = c.execute(f"INSERT INTO samples ({cols}) VALUES ({', '.join('?' * len(vals))})", tuple(vals.values()))
        sid = int(cur.lastrowid)
        new = self._fields_of(n)
        c.execute("INSERT INTO revisions (sample_id, revision, at, user, action, changed, old, new) "
                  "VALUES (?, 1, ?, ?, 'create', ?, NULL, ?)",
                  (sid, t, user, json.dumps(sorted(new)), json.dumps(new, ensure_ascii=False)))
        return sid

    @staticmethod
    def _fields_of(n: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k in EDITABLE:
            v = n[k]
            if k == "messages":
                v = [m.to_dict() for m in v] if n["kind"] == "chat" else []
            out[k] = list(v) if k == "tags" else v
        return out

    # -- samples: API --------------------------------------------------------------------------------
    def add_sample(self, *, instruction: str = "", input: str = "", output: str = "",
                   messages: Any = None, system: str | None = None, kind: str | None = None,
                   status: str = "accepted", role: str = "", tags: str | Iterable[str] | None = None,
                   note: str = "", source: str = "manual", meta: dict[str, Any] | None = None,
                   user: str | None = None) -> Sample:
        """Add one sample: single-turn (instruction/input/output) or, with `messages`, a chat."""
        settings = self.settings()
        kind = kind or ("chat" if messages else "single")
        if system is None:
            system = settings.default_system
        n = self._normalize({"kind": kind, "system": system, "instruction": instruction, "input": input,
                             "output": output, "messages": messages, "status": status, "role": role,
                             "tags": tags, "note": note}, settings)
        with self._write() as c:
            sid = self._insert(c, n, source=source, meta=meta, user=clean_user(user))
        return self.get_sample(sid)

    def update_sample(self, sample_id: int, *, expected_revision: int, user: str | None = None,
                      **changes: Any) -> Sample:
        """Change some fields of a sample saved at `expected_revision`; EditConflict if it moved on since."""
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise LabelError(f"cannot edit field(s) {sorted(unknown)} (editable: {', '.join(EDITABLE)})")
        if expected_revision is None:
            raise LabelError("expected_revision is required (the revision the edit was based on)")
        user = clean_user(user)
        with self._write() as c:
            row = c.execute("SELECT * FROM samples WHERE id=?", (int(sample_id),)).fetchone()
            if row is None:
                raise LabelError(f"no sample #{sample_id}")
            settings = self.settings()
            cur = self._sample(row, settings)
            if row["deleted"]:
                raise EditConflict(int(sample_id), int(expected_revision), None)
            if cur.revision != int(expected_revision):
                raise EditConflict(cur.id, int(expected_revision), cur)
            base = cur.fields()
            merged = {**base, **changes}
            if "messages" in changes and "kind" not in changes and changes["messages"]:
                merged["kind"] = "chat"
            n = self._normalize(merged, settings, row["prompt_format"])
            new = self._fields_of(n)
            changed = [k for k in EDITABLE if new[k] != base[k]]
            if not changed:
                return cur
            vals = self._row_values(n)
            self._check_duplicate(c, vals["content_hash"], cur.id)
            t = now()
            vals.update(revision=cur.revision + 1, updated_at=t, updated_by=user)
            sets = ", ".join(f"{k}=?" for k in vals)
            c.execute(f"UPDATE samples SET {sets} WHERE id=?", (*vals.values(), cur.id))
            c.execute("INSERT INTO revisions (sample_id, revision, at, user, action, changed, old, new) "
                      "VALUES (?, ?, ?, ?, 'update', ?, ?, ?)",
                      (cur.id, cur.revision + 1, t, user, json.dumps(changed),
                       json.dumps({k: base[k] for k in changed}, ensure_ascii=False),
                       json.dumps({k: new[k] for k in changed}, ensure_ascii=False)))
        return self.get_sample(cur.id)

    def delete_sample(self, sample_id: int, *, expected_revision: int, user: str | None = None) -> None:
        """Delete a sample (kept in the file with its history; it leaves lists, counts and exports)."""
        user = clean_user(user)
        with self._write() as c:
            row = c.execute("SELECT * FROM samples WHERE id=?", (int(sample_id),)).fetchone()
            if row is None:
                raise LabelError(f"no sample #{sample_id}")
            cur = self._sample(row, self.settings())
            if row["deleted"]:
                raise EditConflict(cur.id, int(expected_revision), None)
            if cur.revision != int(expected_revision):
                raise EditConflict(cur.id, int(expected_revision), cur)
            t = now()
            c.execute("UPDATE samples SET deleted=1, revision=?, updated_at=?, updated_by=? WHERE id=?",
                      (cur.revision + 1, t, user, cur.id))
            c.execute("INSERT INTO revisions (sample_id, revision, at, user, action, changed, old, new) "
                      "VALUES (?, ?, ?, ?, 'delete', '[]', ?, NULL)",
                      (cur.id, cur.revision + 1, t, user, json.dumps(cur.fields(), ensure_ascii=False)))

    def get_sample(self, sample_id: int) -> Sample:
        row = self._con().execute("SELECT * FROM samples WHERE id=? AND deleted=0", (int(sample_id),)).fetchone()
        if row is None:
            raise LabelError(f"no sample #{sample_id} (it does not exist or was deleted)")
        return self._sample(row, self.settings())

    def _sample(self, row: sqlite3.Row, settings: ProjectSettings) -> Sample:
        if row["kind"] == "single":
            user = compose_prompt(row["instruction"], row["input"], row["prompt_format"])
            msgs = [Message("user", user), Message("assistant", row["output"])]
        else:
            msgs = _messages_from(json.loads(row["messages"]))
        return Sample(
            id=row["id"], kind=row["kind"], system=row["system"], instruction=row["instruction"], input=row["input"],
            output=row["output"], messages=msgs, status=row["status"], role=row["role"],
            tags=[t for t in row["tags"].split(",") if t], note=row["note"], source=row["source"],
            meta=json.loads(row["meta"] or "{}"), revision=row["revision"], created_at=row["created_at"],
            created_by=row["created_by"], updated_at=row["updated_at"], updated_by=row["updated_by"],
        )

    @staticmethod
    def _where(text: str | None, status: str | Sequence[str] | None, tag: str | None, role: str | None,
               source: str | None = None) -> tuple[str, list[Any]]:
        clauses, args = ["deleted = 0"], []
        if text and text.strip():
            for word in text.lower().split():  # every word must appear somewhere in the sample
                clauses.append("instr(search_text, ?) > 0")
                args.append(word)
        if status and status != "all":
            statuses = [status] if isinstance(status, str) else list(status)
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise LabelError(f"unknown status {bad[0]!r} (expected one of {', '.join(STATUSES)})")
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if tag and tag.strip():
            clauses.append("instr(tags, ?) > 0")
            args.append("," + tag.strip() + ",")
        if role and role.strip():
            clauses.append("role = ?")
            args.append(role.strip())
        if source:
            clauses.append("source LIKE ?")
            args.append(source + "%")
        return " AND ".join(clauses), args

    def list_samples(self, text: str | None = None, status: str | Sequence[str] | None = None, tag: str | None = None,
                     role: str | None = None, *, source: str | None = None, limit: int | None = 200,
                     offset: int = 0, newest_first: bool = True) -> list[Sample]:
        """Samples matching every given filter (text: each word somewhere in the sample, case-insensitive)."""
        where, args = self._where(text, status, tag, role, source)
        sql = f"SELECT * FROM samples WHERE {where} ORDER BY id {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [int(limit), int(offset)]
        with self._read() as c:
            settings = self.settings()
            return [self._sample(r, settings) for r in c.execute(sql, args).fetchall()]

    search = list_samples

    def count(self, text: str | None = None, status: str | Sequence[str] | None = None, tag: str | None = None,
              role: str | None = None) -> int:
        where, args = self._where(text, status, tag, role)
        return int(self._con().execute(f"SELECT COUNT(*) FROM samples WHERE {where}", args).fetchone()[0])

    def counts(self) -> dict[str, int]:
        """{"total": N, "accepted": .., "draft": .., "rejected": ..} over samples not deleted."""
        rows = self._con().execute("SELECT status, COUNT(*) FROM samples WHERE deleted=0 GROUP BY status").fetchall()
        out = {s: 0 for s in STATUSES}
        out.update({r[0]: r[1] for r in rows})
        out["total"] = sum(out[s] for s in STATUSES)
        return out

    def roles(self) -> list[str]:
        return [r[0] for r in self._con().execute(
            "SELECT DISTINCT role FROM samples WHERE deleted=0 AND role != '' ORDER BY role")]

    def tags(self) -> list[str]:
        seen: set[str] = set()
        for (t,) in self._con().execute("SELECT DISTINCT tags FROM samples WHERE deleted=0 AND tags != ''"):
            seen.update(x for x in t.split(",") if x)
        return sorted(seen)

    def history(self, sample_id: int) -> list[Revision]:
        rows = self._con().execute("SELECT * FROM revisions WHERE sample_id=? ORDER BY revision",
                                   (int(sample_id),)).fetchall()
        return [Revision(r["sample_id"], r["revision"], r["at"], r["user"], r["action"], json.loads(r["changed"]),
                         json.loads(r["old"]) if r["old"] else None, json.loads(r["new"]) if r["new"] else None)
                for r in rows]

    # -- model answers ---------------------------------------------------------------------------------
    def log_generation(self, *, adapter: str, answer: str, elapsed_s: float, messages: Any,
                       system: str = "", instruction: str = "", input: str = "", kind: str | None = None,
                       options: dict[str, Any] | None = None, user: str | None = None) -> int:
        """Record one model answer to a prompt (messages ending with the user turn); returns its id."""
        from tunesmith.label.answers import parse_answer_json

        msgs = _messages_from(messages)
        if not msgs or msgs[-1].role != "user":
            raise LabelError("a generation's prompt must end with a user message")
        r = parse_answer_json(answer)
        json_ok = None if not r.found else int(r.ok)
        kind = kind or ("single" if len(msgs) == 1 and (instruction or input) else "chat")
        with self._write() as c:
            cur = c.execute(
                "INSERT INTO generations (at, user, adapter, kind, system, instruction, input, messages, answer, "
                "elapsed_s, options, json_ok) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), clean_user(user), adapter, kind, system or "", instruction or "", input or "",
                 json.dumps([m.to_dict() for m in msgs], ensure_ascii=False), answer, float(elapsed_s),
                 json.dumps(options or {}, ensure_ascii=False, default=str), json_ok))
            return int(cur.lastrowid)

    def get_generation(self, generation_id: int) -> Generation:
        row = self._con().execute("SELECT * FROM generations WHERE id=?", (int(generation_id),)).fetchone()
        if row is None:
            raise LabelError(f"no model answer #{generation_id}")
        return self._generation(row)

    @staticmethod
    def _generation(r: sqlite3.Row) -> Generation:
        return Generation(r["id"], r["at"], r["user"], r["adapter"], r["kind"], r["system"], r["instruction"],
                          r["input"], _messages_from(json.loads(r["messages"])), r["answer"], r["elapsed_s"],
                          json.loads(r["options"]), None if r["json_ok"] is None else bool(r["json_ok"]),
                          r["verdict"], r["note"], r["review"], r["sample_id"])

    def list_generations(self, review: str | None = None, limit: int = 200) -> list[Generation]:
        """Newest first; review="pending" lists answers neither accepted nor rejected yet."""
        sql, args = "SELECT * FROM generations", []
        if review == "pending":
            sql += " WHERE review IS NULL"
        elif review:
            sql += " WHERE review = ?"
            args.append(review)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(int(limit))
        return [self._generation(r) for r in self._con().execute(sql, args).fetchall()]

    def count_generations(self, review: str | None = None) -> int:
        """How many model answers are logged; review="pending": not yet accepted or rejected."""
        if review == "pending":
            sql, args = "SELECT COUNT(*) FROM generations WHERE review IS NULL", []
        elif review:
            sql, args = "SELECT COUNT(*) FROM generations WHERE review = ?", [review]
        else:
            sql, args = "SELECT COUNT(*) FROM generations", []
        return int(self._con().execute(sql, args).fetchone()[0])

    def judge(self, generation_id: int, verdict: str, note: str = "", user: str | None = None) -> Generation:
        """Mark a model answer right or wrong (with a note); every judgement is kept in `judgements`."""
        if verdict not in VERDICTS:
            raise DataError(f"must be one of {', '.join(VERDICTS)} (got {verdict!r})", "verdict")
        with self._write() as c:
            if c.execute("SELECT 1 FROM generations WHERE id=?", (int(generation_id),)).fetchone() is None:
                raise LabelError(f"no model answer #{generation_id} (generate one first)")
            user = clean_user(user)
            c.execute("INSERT INTO judgements (generation_id, at, user, verdict, note) VALUES (?, ?, ?, ?, ?)",
                      (int(generation_id), now(), user, verdict, note or ""))
            c.execute("UPDATE generations SET verdict=?, note=? WHERE id=?", (verdict, note or "", int(generation_id)))
        return self.get_generation(generation_id)

    def judgements(self, generation_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self._con().execute(
            "SELECT * FROM judgements WHERE generation_id=? ORDER BY id", (int(generation_id),))]

    def accept_generation(self, generation_id: int, *, output: str | None = None, status: str = "accepted",
                          role: str = "", tags: str | Iterable[str] | None = None, note: str | None = None,
                          user: str | None = None) -> Sample:
        """Turn a model answer (or a corrected `output`) into a training sample, in one transaction."""
        user = clean_user(user)
        settings = self.settings()
        with self._write() as c:
            row = c.execute("SELECT * FROM generations WHERE id=?", (int(generation_id),)).fetchone()
            if row is None:
                raise LabelError(f"no model answer #{generation_id} (generate one first)")
            g = self._generation(row)
            if g.review == "accepted" and g.sample_id is not None:
                raise LabelError(f"model answer #{g.id} was already accepted as sample #{g.sample_id}")
            answer = g.answer if output is None else output
            corrected = output is not None and output != g.answer
            note = g.note if note is None else note
            # keep the prompt exactly as the model saw it: the instruction form only when a prompt format rebuilds it
            fmt = next((f for f in (settings.prompt_format, *PROMPT_FORMATS)
                        if g.kind == "single" and len(g.messages) == 1
                        and compose_prompt(g.instruction, g.input, f) == g.messages[0].content), None)
            if fmt is not None:
                fields = {"kind": "single", "instruction": g.instruction, "input": g.input, "output": answer}
            else:
                fields = {"kind": "chat", "messages": [*g.messages, Message("assistant", answer)]}
            n = self._normalize({**fields, "system": g.system, "status": status, "role": role, "tags": tags,
                                 "note": note}, settings, fmt)
            meta = {"generation_id": g.id, "adapter": g.adapter, "corrected": corrected}
            sid = self._insert(c, n, source=f"model:{g.adapter}", meta=meta, user=user)
            c.execute("UPDATE generations SET review='accepted', sample_id=? WHERE id=?", (sid, g.id))
            c.execute("INSERT INTO judgements (generation_id, at, user, verdict, note) VALUES (?, ?, ?, 'accepted', ?)",
                      (g.id, now(), user, f"as sample #{sid}" + (" (corrected)" if corrected else "")))
        return self.get_sample(sid)

    def reject_generation(self, generation_id: int, note: str = "", user: str | None = None) -> Generation:
        """Keep a model answer out of the dataset (logged as a judgement)."""
        with self._write() as c:
            row = c.execute("SELECT review, sample_id FROM generations WHERE id=?", (int(generation_id),)).fetchone()
            if row is None:
                raise LabelError(f"no model answer #{generation_id}")
            if row["review"] == "accepted":
                raise LabelError(f"model answer #{generation_id} is already sample #{row['sample_id']}; "
                                 "reject that sample in the Label tab instead")
            c.execute("UPDATE generations SET review='rejected' WHERE id=?", (int(generation_id),))
            c.execute("INSERT INTO judgements (generation_id, at, user, verdict, note) VALUES (?, ?, ?, 'rejected', ?)",
                      (int(generation_id), now(), clean_user(user), note or ""))
        return self.get_generation(generation_id)

    # -- import / export -----------------------------------------------------------------------------
    def import_file(self, path: str | os.PathLike, fmt: str | None = None, *, status: str = "accepted",
                    tags: str | Iterable[str] | None = None, user: str | None = None, on_error: str = "fail",
                    limit: int | None = None) -> ImportReport:
        """Add every conversation of a dataset file (any format `tunesmith data` reads) in one transaction.

        Duplicates (of the store or within the file) are left out and reported. on_error="fail" stops at the
        first bad record with its FILE:LINE and adds nothing; "skip" leaves bad records out and reports them.
        """
        from tunesmith.data import load

        if fmt in ("", "auto"):
            fmt = None
        errors: list[DataError] = []
        convs = load(path, fmt, on_error=on_error, errors=errors, quiet=True, limit=limit)
        settings = self.settings()
        report = ImportReport(str(path), skipped=[str(e) for e in errors])
        user = clean_user(user)
        extra_tags = parse_tags(tags)
        name = Path(path).name
        prepared = []
        for i, conv in enumerate(convs):
            where = f"{name} conversation {i + 1}"
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
            try:
                n = self._normalize(fields, settings)
            except DataError as e:
                if on_error == "fail":
                    raise DataError(e.detail, f"{where} ({e.where})" if e.where else where) from None
                report.skipped.append(f"{where}: {e}")
                continue
            prepared.append((where, n, meta))
        with self._write() as c:
            for where, n, meta in prepared:
                try:
                    self._insert(c, n, source=f"import:{name}", meta=meta, user=user, where=where)
                except DuplicateSample as e:
                    report.duplicates.append(f"{where}: same as #{e.existing_id}")
                    continue
                report.added += 1
        return report

    def conversations(self, statuses: Sequence[str] = ("accepted",), tag: str | None = None,
                      role: str | None = None) -> list[tuple[int, Conversation]]:
        return [(s.id, s.to_conversation())
                for s in self.list_samples(status=list(statuses), tag=tag, role=role, limit=None, newest_first=False)]

    def export(self, path: str | os.PathLike, fmt: str = "conversation", *, statuses: Sequence[str] = ("accepted",),
               tag: str | None = None, role: str | None = None) -> ExportReport:
        """Write the chosen samples with the data layer's writer for `fmt` (atomically); oldest first."""
        from tunesmith.data import save, to_records

        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"export format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
        if not statuses:
            raise ConfigError("choose at least one status to export (accepted, draft, rejected)")
        items = self.conversations(statuses, tag, role)
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


def _split_sql(script: str) -> list[str]:
    """The statements of the schema (comments dropped), run one by one inside the caller's transaction."""
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
