"""Targeted bad versions of a reference answer: the rejected answers of `data make-pairs --strategy negatives`.

    from tunesmith.data.pair_negatives import loop_negative, disclaimer_negative, OtherRoleAnswers
    loop_negative("吾乃李白，好饮酒，亦好作诗。")   # "吾乃李白，好饮酒，好饮酒，好饮酒，…": eval's loops() flags it
    truncated_negative("吾乃李白，好饮酒，亦好作诗。")  # "吾乃李白。": stopped before the answer is given
    disclaimer_negative("吾乃李白。", "3f2a…")      # "作为一个人工智能语言模型，我无法回答这个问题。"
    OtherRoleAnswers("datasets/rolebench-zh").answer("你是谁？", "李白", "3f2a…")   # ("孙悟空", "俺老孙…")

Each teaches one thing, the pair says which (meta.negative):
    loop        the answer's own opening, then its last kept clause repeated until the text is at least
                LOOP_LENGTH_FACTOR times the answer's length and tunesmith.eval.repetition.loops() flags it
                (a reference that loops itself, or has no letter at all, gives no loop negative)
    disclaimer  an assistant's out-of-character reply from resources/negative_disclaimers.json, in the answer's
                language (zh when it has a CJK character, else en); every entry is claims_ai by eval's verdict
    other_role  another role's answer to the same question: RoleBench's general questions are asked of every
                role, so general/train.jsonl has the same question answered in other voices (train answers only:
                test answers stay evaluation data)
    base        the base model's greedy answer (generated in tunesmith.data.pair_strategies)
    truncated   the answer stopped early: its opening sentences (failing one, clauses, ending in a full stop),
                at most TRUNCATED_SHARE of its characters (none when the first clause is longer).  The loop
                negative is longer than the answer it comes from, so on its own it also teaches "shorter is
                better"; this one is shorter, and together they leave the length out of what is learnt
Which disclaimer and which other role are picked by the prompt's id, so a rerun picks the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tunesmith.errors import DataError
from tunesmith.eval.testset import match_key

LOOP, DISCLAIMER, BASE, OTHER_ROLE, TRUNCATED = "loop", "disclaimer", "base", "other_role", "truncated"
KINDS = (LOOP, DISCLAIMER, BASE, OTHER_ROLE, TRUNCATED)
LOOP_LENGTH_FACTOR = 1.5  # the loop negative is at least this many times the answer's length
TRUNCATED_SHARE = 0.5  # the truncated negative keeps at most this share of the answer's characters
DISCLAIMERS_FILE = Path(__file__).resolve().parents[1] / "resources" / "negative_disclaimers.json"
OTHER_ROLE_FILE = Path("general", "train.jsonl")
# A clause: text up to and including its closing punctuation (Chinese and latin).
_CLAUSE = re.compile(r"[^，。！？；、,.!?;…\n]+[，。！？；、,.!?;…\n]*")
# A sentence: text up to and including its closing full stop, question or exclamation mark (or line end).
_SENTENCE = re.compile(r"[^。！？!?\n]+[。！？!?\n…”」]*")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _pick(seq_len: int, key: str) -> int:
    """A fixed index in [0, seq_len) for a key (a prompt id, hex)."""
    return int(key, 16) % seq_len if re.fullmatch(r"[0-9a-f]+", key or "") else len(key or "") % seq_len


def loop_negative(answer: str) -> str | None:
    """The answer turned into a loop (None when it loops already or has no clause with a letter in it)."""
    from tunesmith.eval.repetition import loops, units

    if loops(answer):
        return None
    clauses = [m.group(0) for m in _CLAUSE.finditer(answer.strip()) if units(m.group(0))]
    if not clauses:
        return None
    kept = clauses[:max(1, (len(clauses) + 1) // 2)]
    tail = kept[-1]
    if tail == tail.rstrip("，。！？；、,.!?;…\n"):  # no closing punctuation: add a comma so repeats stay clauses
        tail += "，" if _CJK.search(tail) else ", "
    text = "".join(kept[:-1]) + tail
    target = LOOP_LENGTH_FACTOR * len(answer)
    while len(text) < target or not loops(text):  # each repeat adds a unit: loops() holds after a few
        text += tail
    return text.rstrip()


def truncated_negative(answer: str) -> str | None:
    """The answer's opening sentences, at most TRUNCATED_SHARE of its length; failing a sentence, its opening
    clauses ending in a full stop, so what the pair teaches is the length and not a dangling comma (None when
    the first clause is already longer, e.g. an answer of one clause)."""
    from tunesmith.eval.repetition import units

    text = answer.strip()
    for pattern in (_SENTENCE, _CLAUSE):
        kept = ""
        for m in pattern.finditer(text):
            if len(kept) + len(m.group(0)) > TRUNCATED_SHARE * len(text):
                break
            kept += m.group(0)
        kept = kept.rstrip()
        if units(kept):
            if kept[-1] in "，、；,;":
                kept = kept[:-1] + ("。" if _CJK.search(kept) else ".")
            return kept
    return None


def load_disclaimers(path: str | Path | None = None) -> dict[str, list[str]]:
    """{"zh": [...], "en": [...]} from the disclaimer list (default: the bundled one)."""
    p = Path(path) if path else DISCLAIMERS_FILE
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the disclaimer list ({e})", str(p)) from None
    out = {}
    for lang in ("zh", "en"):
        entries = rec.get(lang)
        if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e.strip()
                                                                   for e in entries):
            raise DataError(f'field "{lang}" must be a non-empty list of replies', str(p))
        out[lang] = entries
    return out


def disclaimer_negative(answer: str, key: str, disclaimers: dict[str, list[str]] | None = None) -> str:
    """An assistant's disclaimer in the answer's language, the same one for the same key (prompt id)."""
    table = disclaimers or load_disclaimers()
    entries = table["zh"] if _CJK.search(answer) else table["en"]
    return entries[_pick(len(entries), key)]


def question_key(text: str) -> str:
    """How a question is matched across roles: as eval matches outside answers to its items (match_key)."""
    return match_key(None, text)[1]


class OtherRoleAnswers:
    """RoleBench-zh general/train.jsonl as {question: {role: first answer}}, read once."""

    def __init__(self, rolebench_dir: str | Path):
        self.path = Path(rolebench_dir) / OTHER_ROLE_FILE
        self.by_question: dict[str, dict[str, str]] = {}
        if not self.path.is_file():
            raise DataError("RoleBench general/train.jsonl not found (other_role negatives look up other roles' "
                            "answers there; give the rolebench-zh folder with --rolebench)", str(self.path))
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                role, question, answers = str(rec["role"]), str(rec["question"]), rec["generated"]
            except (ValueError, KeyError, TypeError):
                raise DataError('expected a RoleBench record {"role", "question", "generated": [...]}',
                                f"{self.path}:{n}") from None
            first = next((a for a in (answers if isinstance(answers, list) else [answers])
                          if isinstance(a, str) and a.strip()), None)
            if first is not None:
                self.by_question.setdefault(question_key(question), {}).setdefault(role, first)

    def answer(self, question: str, role: str, key: str) -> tuple[str, str] | None:
        """(other role, its answer) to the same question, picked by key; None when no other role answered it."""
        answers = self.by_question.get(question_key(question), {})
        others = sorted(r for r in answers if r != role)
        if not others:
            return None
        other = others[_pick(len(others), key)]
        return other, answers[other]


__all__ = ["KINDS", "LOOP", "DISCLAIMER", "BASE", "OTHER_ROLE", "TRUNCATED", "LOOP_LENGTH_FACTOR",
           "TRUNCATED_SHARE", "DISCLAIMERS_FILE", "loop_negative", "truncated_negative", "load_disclaimers",
           "disclaimer_negative", "question_key", "OtherRoleAnswers"]
