"""Model answers and their review: every Try-it answer logged, judged right or wrong, accepted or rejected.

    from tunesmith.label.db import Database
    from tunesmith.label import review
    db = Database("ie-project")
    gid = review.log_generation(db, adapter="ie", messages=[["user", "抽取三元组\\n..."]], answer="...", elapsed_s=0.8)
    review.judge(db, gid, "wrong", note="missed the subject", user="ann")
    s = review.accept_generation(db, gid, output="corrected answer", user="ann")    # -> the new Sample
    review.list_generations(db, "pending")                                         # not accepted nor rejected

LabelStore (tunesmith.label.store) is the front that calls these.  Every judgement, acceptance and
rejection is a row in `judgements`; the latest verdict and the review are kept on the answer itself.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tunesmith.conversation import Message
from tunesmith.errors import DataError
from tunesmith.label.answers import parse_answer_json
from tunesmith.label.db import Database, clean_user, now
from tunesmith.label.samples import LabelError, Sample, get_sample, insert_sample, messages_from, normalize
from tunesmith.label.settings import PROMPT_FORMATS, compose_prompt

VERDICTS = ("right", "wrong")


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


def _generation(r: sqlite3.Row) -> Generation:
    return Generation(r["id"], r["at"], r["user"], r["adapter"], r["kind"], r["system"], r["instruction"],
                      r["input"], messages_from(json.loads(r["messages"])), r["answer"], r["elapsed_s"],
                      json.loads(r["options"]), None if r["json_ok"] is None else bool(r["json_ok"]),
                      r["verdict"], r["note"], r["review"], r["sample_id"])


def _log_judgement(c: sqlite3.Connection, generation_id: int, user: str, verdict: str, note: str) -> None:
    c.execute("INSERT INTO judgements (generation_id, at, user, verdict, note) VALUES (?, ?, ?, ?, ?)",
              (int(generation_id), now(), user, verdict, note))


def log_generation(db: Database, *, adapter: str, answer: str, elapsed_s: float, messages: Any,
                   system: str = "", instruction: str = "", input: str = "", kind: str | None = None,
                   options: dict[str, Any] | None = None, user: str | None = None) -> int:
    """Record one model answer to a prompt (messages ending with the user turn); returns its id."""
    msgs = messages_from(messages)
    if not msgs or msgs[-1].role != "user":
        raise LabelError("a generation's prompt must end with a user message")
    r = parse_answer_json(answer)
    json_ok = None if not r.found else int(r.ok)
    kind = kind or ("single" if len(msgs) == 1 and (instruction or input) else "chat")
    with db.write() as c:
        cur = c.execute(
            "INSERT INTO generations (at, user, adapter, kind, system, instruction, input, messages, answer, "
            "elapsed_s, options, json_ok) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now(), clean_user(user), adapter, kind, system or "", instruction or "", input or "",
             json.dumps([m.to_dict() for m in msgs], ensure_ascii=False), answer, float(elapsed_s),
             json.dumps(options or {}, ensure_ascii=False, default=str), json_ok))
        return int(cur.lastrowid)


def get_generation(db: Database, generation_id: int) -> Generation:
    row = db.con().execute("SELECT * FROM generations WHERE id=?", (int(generation_id),)).fetchone()
    if row is None:
        raise LabelError(f"no model answer #{generation_id}")
    return _generation(row)


def _review_filter(review: str | None) -> tuple[str, list[Any]]:
    """review="pending": neither accepted nor rejected yet; another value: that review; None: all."""
    if review == "pending":
        return " WHERE review IS NULL", []
    if review:
        return " WHERE review = ?", [review]
    return "", []


def list_generations(db: Database, review: str | None = None, limit: int = 200) -> list[Generation]:
    """Newest first; review="pending" lists answers neither accepted nor rejected yet."""
    where, args = _review_filter(review)
    sql = f"SELECT * FROM generations{where} ORDER BY id DESC LIMIT ?"
    return [_generation(r) for r in db.con().execute(sql, [*args, int(limit)]).fetchall()]


def count_generations(db: Database, review: str | None = None) -> int:
    """How many model answers are logged; review="pending": not yet accepted or rejected."""
    where, args = _review_filter(review)
    return int(db.con().execute(f"SELECT COUNT(*) FROM generations{where}", args).fetchone()[0])


def judge(db: Database, generation_id: int, verdict: str, note: str = "", user: str | None = None) -> Generation:
    """Mark a model answer right or wrong (with a note); every judgement is kept in `judgements`."""
    if verdict not in VERDICTS:
        raise DataError(f"must be one of {', '.join(VERDICTS)} (got {verdict!r})", "verdict")
    with db.write() as c:
        if c.execute("SELECT 1 FROM generations WHERE id=?", (int(generation_id),)).fetchone() is None:
            raise LabelError(f"no model answer #{generation_id} (generate one first)")
        _log_judgement(c, generation_id, clean_user(user), verdict, note or "")
        c.execute("UPDATE generations SET verdict=?, note=? WHERE id=?", (verdict, note or "", int(generation_id)))
    return get_generation(db, generation_id)


def judgements(db: Database, generation_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in db.con().execute(
        "SELECT * FROM judgements WHERE generation_id=? ORDER BY id", (int(generation_id),))]


def _sample_fields(g: Generation, answer: str, settings_format: str) -> tuple[dict[str, Any], str | None]:
    """The sample a model answer becomes, and the prompt format that rebuilds its prompt (None: a chat).

    The prompt is kept exactly as the model saw it: the instruction form only when a prompt format rebuilds it.
    """
    fmt = next((f for f in (settings_format, *PROMPT_FORMATS)
                if g.kind == "single" and len(g.messages) == 1
                and compose_prompt(g.instruction, g.input, f) == g.messages[0].content), None)
    if fmt is not None:
        return {"kind": "single", "instruction": g.instruction, "input": g.input, "output": answer}, fmt
    return {"kind": "chat", "messages": [*g.messages, Message("assistant", answer)]}, None


def accept_generation(db: Database, generation_id: int, *, output: str | None = None, status: str = "accepted",
                      role: str = "", tags: str | Iterable[str] | None = None, note: str | None = None,
                      user: str | None = None) -> Sample:
    """Turn a model answer (or a corrected `output`) into a training sample, in one transaction."""
    user = clean_user(user)
    settings = db.settings()
    with db.write() as c:
        row = c.execute("SELECT * FROM generations WHERE id=?", (int(generation_id),)).fetchone()
        if row is None:
            raise LabelError(f"no model answer #{generation_id} (generate one first)")
        g = _generation(row)
        if g.review == "accepted" and g.sample_id is not None:
            raise LabelError(f"model answer #{g.id} was already accepted as sample #{g.sample_id}")
        answer = g.answer if output is None else output
        corrected = output is not None and output != g.answer
        fields, fmt = _sample_fields(g, answer, settings.prompt_format)
        n = normalize({**fields, "system": g.system, "status": status, "role": role, "tags": tags,
                       "note": g.note if note is None else note}, settings, fmt)
        meta = {"generation_id": g.id, "adapter": g.adapter, "corrected": corrected}
        sid = insert_sample(c, n, source=f"model:{g.adapter}", meta=meta, user=user)
        c.execute("UPDATE generations SET review='accepted', sample_id=? WHERE id=?", (sid, g.id))
        _log_judgement(c, g.id, user, "accepted", f"as sample #{sid}" + (" (corrected)" if corrected else ""))
    return get_sample(db, sid)


def reject_generation(db: Database, generation_id: int, note: str = "", user: str | None = None) -> Generation:
    """Keep a model answer out of the dataset (logged as a judgement)."""
    with db.write() as c:
        row = c.execute("SELECT review, sample_id FROM generations WHERE id=?", (int(generation_id),)).fetchone()
        if row is None:
            raise LabelError(f"no model answer #{generation_id}")
        if row["review"] == "accepted":
            raise LabelError(f"model answer #{generation_id} is already sample #{row['sample_id']}; "
                             "reject that sample in the Label tab instead")
        c.execute("UPDATE generations SET review='rejected' WHERE id=?", (int(generation_id),))
        _log_judgement(c, generation_id, clean_user(user), "rejected", note or "")
    return get_generation(db, generation_id)
