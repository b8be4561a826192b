"""Samples: the Sample type, the checks a sample passes before it is saved, its revisions, and finding samples.

    from tunesmith.label.db import Database
    from tunesmith.label import samples
    db = Database("ie-project")
    s = samples.add_sample(db, instruction="抽取三元组", input="周星驰主演喜剧之王", output='["..."]', user="ann")
    s = samples.update_sample(db, s.id, expected_revision=s.revision, user="bob", note="checked")
    samples.list_samples(db, text="周星驰", status="accepted"); samples.history(db, s.id)

LabelStore (tunesmith.label.store) is the front that calls these; use it unless you hold a Database already.

Why it is safe: a sample's fields are checked (and the derived ones filled in) before the write transaction
starts, so bad input raises a DataError naming the field and nothing is saved half-way.  Every create, update
and delete writes a row in `revisions` (who, when, which fields, the old and the new value).  Update and
delete name the revision they were based on: when someone saved in between, EditConflict is raised and
nothing is written (no silent overwrite).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.data.records import JsonShapeError, strict_loads
from tunesmith.errors import ConfigError, DataError, TunesmithError
from tunesmith.label.answers import parse_answer_json, require_json
from tunesmith.label.db import Database, clean_user, now
from tunesmith.label.settings import ProjectSettings, compose_prompt

STATUSES = ("accepted", "draft", "rejected")
KINDS = ("single", "chat")
# Fields of a sample a person edits (the revisions table records changes of exactly these).
EDITABLE = ("kind", "system", "instruction", "input", "output", "messages", "status", "role", "tags", "note")
_TEXT_FIELDS = ("system", "instruction", "input", "output", "role", "note")


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


# -- reading what a person typed ------------------------------------------------------------------------
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


def messages_from(value: Any, where: str = "messages") -> list[Message]:
    """Accept Message objects, {role, content} dicts or [role, content] rows (a UI table)."""
    if isinstance(value, str):
        # Typed by a person: the same rules as data files (no key twice, no absurd nesting), not a traceback.
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


# -- validation ------------------------------------------------------------------------------------------
def normalize(f: dict[str, Any], settings: ProjectSettings, prompt_format: str | None = None) -> dict[str, Any]:
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
    for key in _TEXT_FIELDS:
        v = f.get(key)
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise DataError(f"must be text (got {type(v).__name__})", key)
        out[key] = v
    out["role"] = out["role"].strip()
    out["tags"] = parse_tags(f.get("tags"))
    if kind == "single":
        msgs = _single_turn(out)
    else:
        msgs = _chat_turns(f.get("messages"))
        out["instruction"] = out["input"] = ""
        out["output"] = msgs[-1].content
    if settings.output_json and status != "rejected":
        for i, m in enumerate(msgs):
            if m.role == "assistant":
                require_json(m.content, "output" if kind == "single" else f"messages turn {i + 1}")
    out["messages"] = msgs
    return out


def _single_turn(out: dict[str, Any]) -> list[Message]:
    """The prompt and answer of an instruction / input / output sample."""
    if not out["instruction"].strip() and not out["input"].strip():
        raise DataError("empty (expected the instruction, or at least an input, of the sample)", "instruction")
    if not out["output"].strip():
        raise DataError("empty (expected the answer the model should learn)", "output")
    user = compose_prompt(out["instruction"], out["input"], out["prompt_format"])
    return [Message("user", user), Message("assistant", out["output"])]


def _chat_turns(value: Any) -> list[Message]:
    """The turns of a chat sample: user and assistant alternate, user first (or one opening assistant turn, a
    character's greeting, as a card's conversations start), ending with assistant."""
    msgs = messages_from(value or [], "messages")
    msgs = [m for m in msgs if m.role or m.content]  # blank rows of a UI table
    if not msgs:
        raise DataError("empty (expected user and assistant turns, user first, ending with assistant)", "messages")
    greeting = msgs[0].role == "assistant"  # the character speaks first: its greeting is learned like any answer
    for i, m in enumerate(msgs):
        expected = "user" if (i + greeting) % 2 == 0 else "assistant"
        if m.role != expected:
            raise DataError(f"turn {i + 1}: role {m.role!r}, expected {expected!r} (user and assistant alternate, "
                            "user first, or an opening assistant greeting)", "messages")
        if not isinstance(m.content, str) or not m.content.strip():
            raise DataError(f"turn {i + 1} ({m.role}): empty text (expected what the {m.role} says)", "messages")
    if msgs[-1].role != "assistant":
        raise DataError("the last turn is from the user "
                        "(expected the chat to end with an assistant answer to learn)", "messages")
    return msgs


# -- rows of the samples table ------------------------------------------------------------------------------
def content_hash(system: str, messages: Sequence[Message]) -> str:
    # What training sees: a single sample and a chat with the same text are the same sample.
    body = [system, [[m.role, m.content] for m in messages]]
    return hashlib.sha256(json.dumps(body, ensure_ascii=False).encode()).hexdigest()


def _search_text(n: dict[str, Any]) -> str:
    parts = [n["system"], n["instruction"], n["input"], n["role"], n["note"], " ".join(n["tags"])]
    parts += [m.content for m in n["messages"]]
    return "\n".join(parts).lower()


def _row_values(n: dict[str, Any]) -> dict[str, Any]:
    msgs = n["messages"]
    return {
        "kind": n["kind"], "system": n["system"], "instruction": n["instruction"], "input": n["input"],
        "output": n["output"], "prompt_format": n["prompt_format"],
        "messages": json.dumps([m.to_dict() for m in msgs], ensure_ascii=False) if n["kind"] == "chat" else "[]",
        "status": n["status"], "role": n["role"], "tags": ("," + ",".join(n["tags"]) + ",") if n["tags"] else "",
        "note": n["note"],
        "content_hash": content_hash(n["system"], msgs),
        "search_text": _search_text(n),
    }


def _fields_of(n: dict[str, Any]) -> dict[str, Any]:
    """The editable fields of normalized input, as the revisions table records them."""
    out = {}
    for k in EDITABLE:
        v = n[k]
        if k == "messages":
            v = [m.to_dict() for m in v] if n["kind"] == "chat" else []
        out[k] = list(v) if k == "tags" else v
    return out


def sample_from_row(row: sqlite3.Row) -> Sample:
    if row["kind"] == "single":
        user = compose_prompt(row["instruction"], row["input"], row["prompt_format"])
        msgs = [Message("user", user), Message("assistant", row["output"])]
    else:
        msgs = messages_from(json.loads(row["messages"]))
    return Sample(
        id=row["id"], kind=row["kind"], system=row["system"], instruction=row["instruction"], input=row["input"],
        output=row["output"], messages=msgs, status=row["status"], role=row["role"],
        tags=[t for t in row["tags"].split(",") if t], note=row["note"], source=row["source"],
        meta=json.loads(row["meta"] or "{}"), revision=row["revision"], created_at=row["created_at"],
        created_by=row["created_by"], updated_at=row["updated_at"], updated_by=row["updated_by"],
    )


def _check_duplicate(c: sqlite3.Connection, digest: str, own_id: int | None, where: str | None = None) -> None:
    row = c.execute("SELECT id FROM samples WHERE content_hash=? AND deleted=0 AND id IS NOT ?",
                    (digest, own_id)).fetchone()
    if row is not None:
        raise DuplicateSample(row[0], where)


def _log_revision(c: sqlite3.Connection, sample_id: int, revision: int, at: str, user: str, action: str,
                  changed: list[str], old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    c.execute("INSERT INTO revisions (sample_id, revision, at, user, action, changed, old, new) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              (sample_id, revision, at, user, action, json.dumps(changed),
               None if old is None else json.dumps(old, ensure_ascii=False),
               None if new is None else json.dumps(new, ensure_ascii=False)))


def insert_sample(c: sqlite3.Connection, n: dict[str, Any], *, source: str, meta: dict[str, Any] | None,
                  user: str, where: str | None = None) -> int:
    """Insert normalized fields as revision 1 inside the caller's transaction; DuplicateSample if present."""
    vals = _row_values(n)
    _check_duplicate(c, vals["content_hash"], None, where)
    t = now()
    vals.update(source=source, meta=json.dumps(meta or {}, ensure_ascii=False), revision=1, deleted=0,
                created_at=t, created_by=user, updated_at=t, updated_by=user)
    cols = ", ".join(vals)
    cur = c.execute(f"INSERT INTO samples ({cols}) VALUES ({', '.join('?' * len(vals))})", tuple(vals.values()))
    sid = int(cur.lastrowid)
    new = _fields_of(n)
    _log_revision(c, sid, 1, t, user, "create", sorted(new), None, new)
    return sid


# -- add, edit, delete -----------------------------------------------------------------------------------
def add_sample(db: Database, *, instruction: str = "", input: str = "", output: str = "",
               messages: Any = None, system: str | None = None, kind: str | None = None,
               status: str = "accepted", role: str = "", tags: str | Iterable[str] | None = None,
               note: str = "", source: str = "manual", meta: dict[str, Any] | None = None,
               user: str | None = None) -> Sample:
    """Add one sample: single-turn (instruction/input/output) or, with `messages`, a chat."""
    settings = db.settings()
    kind = kind or ("chat" if messages else "single")
    if system is None:
        system = settings.default_system
    n = normalize({"kind": kind, "system": system, "instruction": instruction, "input": input,
                   "output": output, "messages": messages, "status": status, "role": role,
                   "tags": tags, "note": note}, settings)
    with db.write() as c:
        sid = insert_sample(c, n, source=source, meta=meta, user=clean_user(user))
    return get_sample(db, sid)


def _current(c: sqlite3.Connection, sample_id: int, expected_revision: int) -> tuple[sqlite3.Row, Sample]:
    """The row and Sample an edit of `expected_revision` applies to; EditConflict when it moved on since."""
    row = c.execute("SELECT * FROM samples WHERE id=?", (int(sample_id),)).fetchone()
    if row is None:
        raise LabelError(f"no sample #{sample_id}")
    cur = sample_from_row(row)
    if row["deleted"]:
        raise EditConflict(cur.id, int(expected_revision), None)
    if cur.revision != int(expected_revision):
        raise EditConflict(cur.id, int(expected_revision), cur)
    return row, cur


def update_sample(db: Database, sample_id: int, *, expected_revision: int, user: str | None = None,
                  **changes: Any) -> Sample:
    """Change some fields of a sample saved at `expected_revision`; EditConflict if it moved on since."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise LabelError(f"cannot edit field(s) {sorted(unknown)} (editable: {', '.join(EDITABLE)})")
    if expected_revision is None:
        raise LabelError("expected_revision is required (the revision the edit was based on)")
    user = clean_user(user)
    with db.write() as c:
        row, cur = _current(c, sample_id, expected_revision)
        base = cur.fields()
        merged = {**base, **changes}
        if "messages" in changes and "kind" not in changes and changes["messages"]:
            merged["kind"] = "chat"
        n = normalize(merged, db.settings(), row["prompt_format"])
        new = _fields_of(n)
        changed = [k for k in EDITABLE if new[k] != base[k]]
        if not changed:
            return cur
        vals = _row_values(n)
        _check_duplicate(c, vals["content_hash"], cur.id)
        t = now()
        vals.update(revision=cur.revision + 1, updated_at=t, updated_by=user)
        sets = ", ".join(f"{k}=?" for k in vals)
        c.execute(f"UPDATE samples SET {sets} WHERE id=?", (*vals.values(), cur.id))
        _log_revision(c, cur.id, cur.revision + 1, t, user, "update", changed,
                      {k: base[k] for k in changed}, {k: new[k] for k in changed})
    return get_sample(db, cur.id)


def delete_sample(db: Database, sample_id: int, *, expected_revision: int, user: str | None = None) -> None:
    """Delete a sample (kept in the file with its history; it leaves lists, counts and exports)."""
    user = clean_user(user)
    with db.write() as c:
        _row, cur = _current(c, sample_id, expected_revision)
        t = now()
        c.execute("UPDATE samples SET deleted=1, revision=?, updated_at=?, updated_by=? WHERE id=?",
                  (cur.revision + 1, t, user, cur.id))
        _log_revision(c, cur.id, cur.revision + 1, t, user, "delete", [], cur.fields(), None)


def get_sample(db: Database, sample_id: int) -> Sample:
    row = db.con().execute("SELECT * FROM samples WHERE id=? AND deleted=0", (int(sample_id),)).fetchone()
    if row is None:
        raise LabelError(f"no sample #{sample_id} (it does not exist or was deleted)")
    return sample_from_row(row)


def history(db: Database, sample_id: int) -> list[Revision]:
    rows = db.con().execute("SELECT * FROM revisions WHERE sample_id=? ORDER BY revision",
                            (int(sample_id),)).fetchall()
    return [Revision(r["sample_id"], r["revision"], r["at"], r["user"], r["action"], json.loads(r["changed"]),
                     json.loads(r["old"]) if r["old"] else None, json.loads(r["new"]) if r["new"] else None)
            for r in rows]


# -- the settings samples are checked against ------------------------------------------------------------
def update_settings(db: Database, user: str | None = None, **changes: Any) -> ProjectSettings:
    """Change the project's settings; requiring JSON outputs is refused while a live sample is not JSON."""
    unknown = set(changes) - set(ProjectSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown project setting(s) {sorted(unknown)} "
                          f"(expected {', '.join(ProjectSettings.__dataclass_fields__)})")
    with db.write() as c:
        old = db.settings()
        new = ProjectSettings(**{**asdict(old), **changes})
        new.check()
        if new.output_json and not old.output_json:
            bad = _first_non_json(c)
            if bad is not None:
                raise DataError(f"cannot require JSON outputs: sample #{bad[0]} is not JSON ({bad[1]}); "
                                "fix or reject it first", "output_json")
        c.execute("UPDATE project SET value=? WHERE key='settings'", (json.dumps(asdict(new), ensure_ascii=False),))
        c.execute("INSERT INTO settings_log (at, user, old, new) VALUES (?, ?, ?, ?)",
                  (now(), clean_user(user), json.dumps(asdict(old), ensure_ascii=False),
                   json.dumps(asdict(new), ensure_ascii=False)))
    return new


def _first_non_json(c: sqlite3.Connection) -> tuple[int, str] | None:
    for row in c.execute("SELECT * FROM samples WHERE deleted=0 AND status != 'rejected' ORDER BY id"):
        s = sample_from_row(row)
        for m in s.messages:
            if m.role == "assistant":
                r = parse_answer_json(m.content)
                if not r.ok:
                    return s.id, r.error or "no JSON found"
    return None


# -- finding samples ---------------------------------------------------------------------------------------
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


def list_samples(db: Database, text: str | None = None, status: str | Sequence[str] | None = None,
                 tag: str | None = None, role: str | None = None, *, source: str | None = None,
                 limit: int | None = 200, offset: int = 0, newest_first: bool = True) -> list[Sample]:
    """Samples matching every given filter (text: each word somewhere in the sample, case-insensitive)."""
    where, args = _where(text, status, tag, role, source)
    sql = f"SELECT * FROM samples WHERE {where} ORDER BY id {'DESC' if newest_first else 'ASC'}"
    if limit is not None:
        sql += " LIMIT ? OFFSET ?"
        args += [int(limit), int(offset)]
    with db.read() as c:
        return [sample_from_row(r) for r in c.execute(sql, args).fetchall()]


def count(db: Database, text: str | None = None, status: str | Sequence[str] | None = None,
          tag: str | None = None, role: str | None = None) -> int:
    where, args = _where(text, status, tag, role)
    return int(db.con().execute(f"SELECT COUNT(*) FROM samples WHERE {where}", args).fetchone()[0])


def counts(db: Database) -> dict[str, int]:
    """{"total": N, "accepted": .., "draft": .., "rejected": ..} over samples not deleted."""
    rows = db.con().execute("SELECT status, COUNT(*) FROM samples WHERE deleted=0 GROUP BY status").fetchall()
    out = {s: 0 for s in STATUSES}
    out.update({r[0]: r[1] for r in rows})
    out["total"] = sum(out[s] for s in STATUSES)
    return out


def roles(db: Database) -> list[str]:
    return [r[0] for r in db.con().execute(
        "SELECT DISTINCT role FROM samples WHERE deleted=0 AND role != '' ORDER BY role")]


def tags(db: Database) -> list[str]:
    seen: set[str] = set()
    for (t,) in db.con().execute("SELECT DISTINCT tags FROM samples WHERE deleted=0 AND tags != ''"):
        seen.update(x for x in t.split(",") if x)
    return sorted(seen)
