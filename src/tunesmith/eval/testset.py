"""Test data -> evaluation items: one prompt to answer, its references and the set it is scored in.

    from tunesmith.eval.testset import build_sets
    items = build_sets(data=["data/libai/test_general.jsonl"], data2=["data/libai/test_role_specific.jsonl"],
                       task="rolebench")

Any format `tunesmith.data.load` reads is accepted.  Conversations that share a prompt (system text +
messages before the answer) become one item whose references are all their answers (raw RoleBench
test files give one conversation per answer) or, when present, `meta.references` (rolebench-prepare's
test files and the rolebench importer's test split carry every reference there).

Sets by task:
  rolebench  CUS (the role's general test: meta.subset "general", else files given with --data) and SPE
             (role_specific test: meta.subset "role_specific", else --data2); RAW reuses the CUS answers,
             scored against plain-answer references from --raw-refs.
  ie / cls / generic   one set per file (named by the file's stem), every record scored the same way.
  iecls      like ie/cls but each record is scored by the shape of its target (fenced JSON triples: IE;
             a JSON list of strings: classification; anything else: generic text).
  auto       rolebench when the records come from RoleBench, iecls when targets are JSON, else generic.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.errors import ConfigError, DataError

TASKS = ("auto", "rolebench", "ie", "cls", "iecls", "generic")
CUS, SPE, RAW, PROBE, IDENTITY = "CUS", "SPE", "RAW", "probe", "identity"


@dataclass
class EvalItem:
    id: str  # hash of the prompt (system + messages): the resume key in predictions.jsonl
    set: str  # CUS, SPE, probe, or a file stem
    system: str | None
    messages: list[Message]  # ends with the user message to answer
    references: list[str]
    kind: str  # how it is scored: rouge (rolebench/generic), ie, cls, probe, identity (the in-character rate)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        return self.messages[-1].content

    @property
    def role(self) -> str:
        return str(self.meta.get("role") or "")


def prompt_id(system: str | None, messages: Sequence[Message]) -> str:
    blob = json.dumps([system or "", [[m.role, m.content] for m in messages]], ensure_ascii=False)
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def match_key(role: str | None, question: str) -> tuple[str, str]:
    """How outside files (baseline answers, raw references) are matched to items: (role, question)."""
    return (role or "", " ".join((question or "").split()))


def load_conversations(path: Path, fmt: str | None, roles: Sequence[str] | None) -> list[Conversation]:
    from tunesmith.data import load

    if not path.exists():
        raise DataError("test data file not found (expected a JSONL/JSON file of test records)", str(path))
    convs = load(path, fmt, roles=list(roles) if roles else None)
    if not convs:
        hint = f" for role(s) {', '.join(roles)}" if roles else ""
        raise DataError(f"no test records{hint} in this file", str(path))
    for i, c in enumerate(convs):
        if c.answer is None:
            raise DataError(f"conversation {i + 1} has no final assistant answer "
                            "(expected a reference answer to compare with)",
                            str(path))
    return convs


def group_items(convs: Sequence[Conversation], set_name: str, source: str) -> list[EvalItem]:
    """Conversations sharing a prompt become one item with every answer as a reference (order kept)."""
    items: dict[str, EvalItem] = {}
    for c in convs:
        prompt = c.prompt_messages
        pid = prompt_id(c.system, prompt)
        refs = c.meta.get("references")
        refs = [r for r in refs if isinstance(r, str)] if isinstance(refs, list) else []
        if pid not in items:
            meta = {k: v for k, v in c.meta.items() if k != "references"}
            meta["file"] = source
            items[pid] = EvalItem(pid, set_name, c.system, list(prompt), [], "", meta)
        item = items[pid]
        for r in refs or [c.answer or ""]:
            if r not in item.references:
                item.references.append(r)
    return list(items.values())


def detect_task(convs: Sequence[Conversation]) -> str:
    from tunesmith.eval.ie import task_of_target

    if any(c.meta.get("source") == "rolebench" or "question" in c.meta and "role" in c.meta for c in convs):
        return "rolebench"
    shapes = Counter(c.meta.get("task") or task_of_target(c.answer) for c in convs)
    if shapes.get("ie", 0) + shapes.get("cls", 0) > len(convs) / 2:
        return "iecls"
    return "generic"


def _rolebench_set(c: Conversation, default: str) -> str:
    subset = c.meta.get("subset")
    if subset == "general":
        return CUS
    if subset == "role_specific":
        return SPE
    return default


def build_sets(data: Sequence[str | Path], data2: Sequence[str | Path] = (), task: str = "auto",
               fmt: str | None = None, roles: Sequence[str] | None = None,
               limit: int | None = None) -> tuple[str, list[EvalItem]]:
    """(task, items). `limit` keeps N items of each set, evenly spread over it (see `spread`)."""
    from tunesmith.eval.ie import task_of_target

    if task not in TASKS:
        raise ConfigError(f"--task {task!r} is not one of {', '.join(TASKS)}")
    if not data:
        raise ConfigError("give the test data with --data FILE")
    files = [(Path(p), 1) for p in data] + [(Path(p), 2) for p in data2]
    loaded = [(p, which, load_conversations(p, fmt, roles)) for p, which in files]
    if task == "auto":
        task = detect_task([c for _, _, convs in loaded for c in convs])

    by_set: dict[str, list[EvalItem]] = {}
    for path, which, convs in loaded:
        if task == "rolebench":
            default = CUS if which == 1 else SPE
            groups: dict[str, list[Conversation]] = {}
            for c in convs:
                groups.setdefault(_rolebench_set(c, default), []).append(c)
        else:
            same_stem = [q for q, _, _ in loaded if q.stem == path.stem]
            name = path.stem if len(same_stem) == 1 else f"{path.parent.name}/{path.stem}"
            groups = {name: list(convs)}
        for set_name, group in groups.items():
            for item in group_items(group, set_name, str(path)):
                if task == "rolebench" or task == "generic":
                    item.kind = "rouge"
                elif task in ("ie", "cls"):
                    item.kind = task
                else:  # iecls: by the target's shape
                    shape = task_of_target(item.references[0] if item.references else "")
                    item.kind = {"ie": "ie", "cls": "cls"}.get(shape, "rouge")
                bucket = by_set.setdefault(set_name, [])
                if item.id not in {i.id for i in bucket}:
                    bucket.append(item)
    items: list[EvalItem] = []
    for bucket in by_set.values():
        items.extend(spread(bucket, limit))
    return task, items


def spread(items: list, limit: int | None) -> list:
    """`limit` items evenly spaced over `items` (the first one included), in order; all when limit is None.

    Not the first N: test files are ordered (RoleBench's first 48 李白 questions score 0.19 ROUGE-L on the
    base model where all 289 score 0.145), so a prefix is a biased sample of the set."""
    if limit is None or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


# -- plain-answer (RAW) references and existing prediction files ------------------------------------

_QUESTION_KEYS = ("question", "prompt", "instruction", "context", "input", "query")
_ANSWER_KEYS = ("prediction", "answer", "response", "output", "reference", "references", "generated", "target")


def _text_list(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v.strip()]
    if isinstance(v, list):
        return [x.strip() for x in v if isinstance(x, str)]
    return []


def _question_answers(rec: Any) -> tuple[str | None, str | None, list[str], str | None]:
    """(role, question, answers, id) of one record of a predictions/references file."""
    if not isinstance(rec, dict):
        return None, None, [], None
    if isinstance(rec.get("messages"), list):  # our conversation / OpenAI messages format
        msgs = [m for m in rec["messages"] if isinstance(m, dict)]
        users = [m.get("content") for m in msgs if m.get("role") == "user"]
        answers = [m.get("content") for m in msgs if m.get("role") == "assistant"]
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        q = users[-1] if users and isinstance(users[-1], str) else None
        return meta.get("role"), q, _text_list(answers[-1:]), None
    question = next((rec[k] for k in _QUESTION_KEYS if isinstance(rec.get(k), str)), None)
    answers: list[str] = []
    for k in _ANSWER_KEYS:
        if k in rec:
            answers = _text_list(rec[k])
            break
    rid = rec.get("id") if isinstance(rec.get("id"), str) else None
    role = rec.get("role") if isinstance(rec.get("role"), str) else None
    return role, question, answers, rid


def read_answer_file(path: str | Path, what: str, model: str | None = None
                     ) -> tuple[dict[tuple[str, str], list[str]], dict[str, str]]:
    """({(role, question): answers}, {prompt id: answer}) from a JSONL/JSON file of answers.

    Accepted records: RoleBench {role, question, generated: [...]}, {question|prompt|context, prediction|answer|
    response|output|references: str | [str], role?}, a tunesmith predictions.jsonl ({model, id, prediction}:
    the lines of `model` when it holds several models) or {messages: [...]}.  Records with a role are
    matched on (role, question); records without one on the question alone.
    """
    from tunesmith.data.records import read_records

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} file not found", str(p))
    records = list(read_records(p))
    models = {rec.get("model") for _, rec in records if isinstance(rec, dict) and isinstance(rec.get("model"), str)}
    if len(models) > 1:
        if model not in models:
            raise ConfigError(f"{p} holds answers of several models ({', '.join(sorted(models))}); "
                              f"name the one to score: --score-file MODEL=PATH")
        records = [(w, r) for w, r in records if isinstance(r, dict) and r.get("model") == model]
    by_question: dict[tuple[str, str], list[str]] = {}
    by_id: dict[str, str] = {}
    for where, rec in records:
        role, question, answers, rid = _question_answers(rec)
        if not answers or (question is None and rid is None):
            raise DataError('cannot read a question and an answer from this record (expected e.g. '
                            '{"role"?: str, "question": str, "answer": str | [str]} or RoleBench '
                            '{"role", "question", "generated": [...]})', where)
        if rid is not None:
            by_id[rid] = answers[0]
        if question is not None:
            bucket = by_question.setdefault(match_key(role, question), [])
            bucket.extend(a for a in answers if a not in bucket)
    return by_question, by_id


def lookup(table: dict[tuple[str, str], list[str]], item: EvalItem) -> list[str] | None:
    """Answers for an item: by (role, question); records without a role match on the question alone."""
    q = item.meta.get("question") or item.question
    return table.get(match_key(item.role, q)) or table.get(match_key(None, q))
