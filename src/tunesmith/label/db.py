"""The labeling database: one SQLite file per project folder, its tables, and the connections that use it.

    from tunesmith.label.db import Database
    db = Database("ie-project")                # ie-project/tunesmith-label.sqlite, created with its tables
    with db.write() as c:                      # BEGIN IMMEDIATE ... COMMIT; ROLLBACK when the block raises
        c.execute("UPDATE samples SET note=? WHERE id=?", ("checked", 1))
    with db.read() as c:                       # one consistent snapshot for several queries
        c.execute("SELECT COUNT(*) FROM samples").fetchone()
    db.settings()                              # the project's ProjectSettings
    db.close()

Why a change is never lost: every write is one transaction, committed before the call returns, with the WAL
journal and synchronous=FULL (a server killed right after answering loses nothing); each thread has its own
connection, so several tabs, users and processes can work on one file at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.label.settings import ProjectSettings

DB_NAME = "tunesmith-label.sqlite"
SCHEMA_VERSION = 1
ANONYMOUS = "anonymous"
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


def now() -> str:
    """The time a row is written, in UTC (what `at`, `created_at` and `updated_at` hold)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def clean_user(user: str | None) -> str:
    """The name a change is recorded under: trimmed, at most 80 characters, anonymous when empty."""
    u = (user or "").strip()
    return u[:80] if u else ANONYMOUS


class Database:
    """The SQLite file of one labeling project: connections, transactions, schema and settings row."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path).expanduser()
        self.path = p if p.suffix in (".sqlite", ".db", ".sqlite3") else p / DB_NAME
        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise ConfigError(f"{self.path.parent}: not a folder (expected a labeling project folder)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.project_dir = self.path.parent
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._use_wal()
        self._create_or_check_schema()

    def _use_wal(self) -> None:
        try:
            mode = self.con().execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.DatabaseError as e:
            self.close()
            raise ConfigError(f"{self.path}: not a labeling database ({e}); "
                              f"expected a project folder or a {DB_NAME} file") from None
        if mode.lower() != "wal":  # e.g. a network file system without shared memory
            raise ConfigError(f"{self.path}: SQLite cannot use WAL journaling here (got {mode}); use a local folder")

    def _create_or_check_schema(self) -> None:
        """Create the tables of a new file; refuse a file written by a newer schema than this one knows."""
        with self.write() as c:
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
    def con(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        con = getattr(self._local, "con", None)
        if con is None:
            # isolation_level=None: no implicit transactions; every write opens BEGIN IMMEDIATE itself,
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
    def write(self) -> Iterator[sqlite3.Connection]:
        con = self.con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        con = self.con()
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

    def integrity_check(self) -> str:
        return self.con().execute("PRAGMA integrity_check").fetchone()[0]

    # -- the settings row -------------------------------------------------------------------------------
    def settings(self) -> ProjectSettings:
        row = self.con().execute("SELECT value FROM project WHERE key='settings'").fetchone()
        data: dict[str, Any] = json.loads(row[0]) if row else {}
        known = {k: v for k, v in data.items() if k in ProjectSettings.__dataclass_fields__}
        return ProjectSettings(**known)


def _split_sql(script: str) -> list[str]:
    """The statements of the schema (comments dropped), run one by one inside the caller's transaction."""
    lines = [ln.split("--", 1)[0] for ln in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
