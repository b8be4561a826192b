"""What labeling already records, as preference data: corrected model answers as pairs, judged ones for KTO.

    from tunesmith.label.db import Database
    from tunesmith.label import preference
    db = Database("ie-project")
    preference.edited_pairs(db)          # [(sample id, pair)], chosen = the answer as corrected, rejected = the model's
    preference.judged_answers(db)        # [(answer id, judged)], label True for "right", False for "wrong"
    preference.export(db, "pairs.jsonl", "pairs")      # then: tunesmith train ... method=dpo data.train=pairs.jsonl

Where the records come from:
- pairs: a model answer accepted as a sample (Try it -> Accept as sample, or Model answers to review) whose
  sample's answer now differs from what the model wrote: corrected when it was accepted, or edited later in
  the Label tab.  The sample's current answer is the chosen one, the model's original answer the rejected
  one, after the prompt the model saw.  The samples are filtered like an SFT export (status, tag, role).  A
  sample whose prompt or system text was edited since is left out (the model never answered that prompt),
  and so is one whose answer is still the model's (there is nothing to prefer).
- kto: every model answer judged right or wrong (its latest verdict), whether or not it became a sample.

Both are written in our native JSONL (Conversation.to_dict() per line, tunesmith.preference's contract),
atomically, after every record was built: nothing is written when there is nothing to export.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tunesmith.conversation import Conversation, Message
from tunesmith.data.formats import save
from tunesmith.errors import ConfigError
from tunesmith.label.db import Database
from tunesmith.label.review import get_generation
from tunesmith.label.samples import LabelError, list_samples
from tunesmith.preference import make_judged, make_pair

SFT, PAIRS, KTO = "sft", "pairs", "kto"
EXPORT_KINDS = (SFT, PAIRS, KTO)
KIND_HELP = {SFT: "samples (prompt + answer) for supervised training, in the chosen format",
             PAIRS: "corrected model answers as pairs (chosen = the correction, rejected = the model's answer) "
                    "for method=dpo or orpo",
             KTO: "model answers judged right / wrong (label true / false) for method=kto"}


@dataclass
class PreferenceReport:
    path: Path | None
    kind: str
    count: int
    unchanged: int = 0  # pairs: accepted answers whose sample still holds the model's own answer
    prompt_edited: int = 0  # pairs: samples whose prompt or system text changed since the model answered
    empty_answer: int = 0  # pairs: the model's answer was empty (no rejected text)

    def summary(self) -> str:
        what = "pair(s)" if self.kind == PAIRS else "judged answer(s)"
        parts = [f"wrote {self.count} {what} to {self.path}"]
        if self.unchanged:
            parts.append(f"{self.unchanged} accepted answer(s) left out as not corrected")
        if self.prompt_edited:
            parts.append(f"{self.prompt_edited} left out because their prompt was edited after the model answered")
        if self.empty_answer:
            parts.append(f"{self.empty_answer} left out because the model's answer was empty")
        return "; ".join(parts)


def _same(a: Sequence[Message], b: Sequence[Message]) -> bool:
    return [(m.role, m.content) for m in a] == [(m.role, m.content) for m in b]


def _answered_samples(db: Database) -> dict[int, int]:
    """{sample id: id of the model answer it was made from}."""
    rows = db.con().execute("SELECT id, sample_id FROM generations WHERE sample_id IS NOT NULL").fetchall()
    return {int(r["sample_id"]): int(r["id"]) for r in rows}


def edited_pairs(db: Database, statuses: Sequence[str] = ("accepted",), tag: str | None = None,
                 role: str | None = None) -> tuple[list[tuple[int, Conversation]], PreferenceReport]:
    """(sample id, pair) for every chosen sample made from a model answer and corrected since; oldest first."""
    made_from = _answered_samples(db)
    report = PreferenceReport(None, PAIRS, 0)
    out: list[tuple[int, Conversation]] = []
    for s in list_samples(db, status=list(statuses), tag=tag, role=role, limit=None, newest_first=False):
        gid = made_from.get(s.id)
        if gid is None:
            continue
        g = get_generation(db, gid)
        conv = s.to_conversation()
        if not _same(conv.messages[:-1], g.messages) or (s.system or "") != (g.system or ""):
            report.prompt_edited += 1
            continue
        chosen = conv.answer or ""
        if chosen == g.answer:
            report.unchanged += 1
            continue
        if not g.answer.strip():  # a pair's rejected answer must be text (tunesmith.preference.kind_of)
            report.empty_answer += 1
            continue
        meta = {k: v for k, v in conv.meta.items() if k not in ("corrected",)}
        meta.update(generation_id=g.id, adapter=g.adapter)
        out.append((s.id, make_pair(conv.messages[:-1], chosen, g.answer, system=conv.system, **meta)))
    report.count = len(out)
    return out, report


def judged_answers(db: Database) -> list[tuple[int, Conversation]]:
    """(answer id, judged record) for every model answer whose latest verdict is right or wrong; oldest first."""
    rows = db.con().execute("SELECT id FROM generations WHERE verdict IN ('right', 'wrong') ORDER BY id").fetchall()
    out = []
    for r in rows:
        g = get_generation(db, int(r["id"]))
        if not g.answer.strip():  # an empty answer is no completion to learn from
            continue
        meta = {"generation_id": g.id, "adapter": g.adapter}
        if g.note:
            meta["note"] = g.note
        out.append((g.id, make_judged(g.messages, g.answer, g.verdict == "right", system=g.system or None, **meta)))
    return out


def export(db: Database, path: str | os.PathLike, kind: str, *, statuses: Sequence[str] = ("accepted",),
           tag: str | None = None, role: str | None = None) -> PreferenceReport:
    """Write the project's pairs or judged answers as native JSONL (atomically); LabelError when there are none."""
    if kind == PAIRS:
        if not statuses:
            raise ConfigError("choose at least one status of the corrected samples to export (accepted, draft, "
                              "rejected)")
        items, report = edited_pairs(db, statuses, tag, role)
        if not items:
            why = []
            if report.unchanged:
                why.append(f"{report.unchanged} accepted model answer(s) were not corrected")
            if report.prompt_edited:
                why.append(f"{report.prompt_edited} had their prompt edited")
            raise LabelError(
                f"no pairs to export (status {', '.join(statuses)}" + (f", tag {tag}" if tag else "")
                + (f", role {role}" if role else "") + "): a pair is a model answer accepted as a sample with a "
                "corrected answer" + (f" ({'; '.join(why)})" if why else ""))
    elif kind == KTO:
        if tag or role:
            raise ConfigError("the tag and role filters choose samples; a kto export holds every model answer "
                              "judged right or wrong (leave them empty)")
        items = judged_answers(db)
        report = PreferenceReport(None, KTO, len(items))
        if not items:
            raise LabelError("no judged answers to export: mark model answers right or wrong in Try it "
                             "(Save judgement) first")
    else:
        raise ConfigError(f"preference export kind {kind!r} is not one of {PAIRS}, {KTO}")
    report.path = Path(save([c for _, c in items], path, "conversation"))
    return report
