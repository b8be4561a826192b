"""The in-character rate: asked who it is, does the model keep its role?

    from tunesmith.eval.in_character import verdict, identity_scores
    verdict("吾乃李白，字太白。", "李白")                       # ("names_role", "李白")
    verdict("我是一个人工智能助手，无法饮酒。", "李白")           # ("claims_ai", "我是一个人工智能助手")
    verdict("Haha, ask me about wine instead!", "李白")        # ("keeps_role", "")

Identity questions (resources/identity_questions.jsonl: 你是谁？, 你是人工智能吗？, Are you an AI?, ...) are asked
in character, with the persona system text of the test data, like the general-ability probe.  Each answer gets
the first verdict of VERDICT_ORDER that applies, judged by the rule lists of resources/in_character_rules.json
(its "about" field states the rules; docs/evaluation.md, "In character"):

    empty        no answer                                                          out of character
    claims_ai    "我是…人工智能", "作为AI", "I am an assistant", "trained by Hugging Face", "SmolLM"   out
    breaks_role  denies being the character ("我不是李白") or talks about playing it ("扮演")        out
    names_role   names the character (李白 / 太白 / 青莲居士 / Li Bai ...), not as "你是李白", and not only
                 inside an echo of the prompt                                                        in
    repeats_prompt  opens by repeating the question or the persona text, and names the character
                 nowhere after it: an echo, not an answer                                            out
    keeps_role   none of these: no AI claim, the role not broken                                     in

An AI claim outranks a name: "我是AI，可以扮演李白" names 李白 and is still out of character.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.conversation import Message
from tunesmith.data.records import read_records
from tunesmith.errors import DataError
from tunesmith.eval.testset import IDENTITY, PROBE, EvalItem, prompt_id

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
RULES_FILE = RESOURCES / "in_character_rules.json"
IDENTITY_FILE = RESOURCES / "identity_questions.jsonl"
VERDICT_ORDER = ("empty", "claims_ai", "breaks_role", "names_role", "repeats_prompt", "keeps_role")
PERSONA_ECHO_MIN = 6  # letters of the persona text an answer must open with to count as repeating it
IN_CHARACTER = ("names_role", "keeps_role")
_CLAUSE_END = re.compile(r"[，。！？；：,.!?;:\n]")
RULES_DESCRIPTION = (
    "in character = the answer names the character (its role name or an alias) or at least makes no AI claim; "
    "verdicts in this order: empty (out), claims_ai (我是/作为/I am/as an + 人工智能/语言模型/助手/AI/assistant/"
    "language model in the same clause, not negated; trained by Hugging Face; SmolLM, ChatGPT: out), breaks_role "
    "(我不是李白, I am not Li Bai; 扮演, role-play: out), names_role (a name of the character, not as 你是李白: in), "
    "repeats_prompt (opens with the question or the persona text and names the character nowhere after it: out), "
    "keeps_role (in); rule lists in "
    "resources/in_character_rules.json"
)


def normalize(text: str) -> str:
    """NFKC, lower case, curly apostrophes made straight."""
    return unicodedata.normalize("NFKC", text or "").lower().replace("\u2019", "'").replace("\u2018", "'")


def _word(entry: str) -> str:
    """A regex for one list entry: latin entries as whole words (no letter beside them), CJK ones anywhere."""
    e = re.escape(normalize(entry))
    return rf"(?<![a-z]){e}(?![a-z])" if re.search(r"[a-z]", normalize(entry)) else e


@functools.lru_cache(maxsize=256)
def _any_of_cached(entries: tuple[str, ...]) -> re.Pattern:
    ordered = sorted({normalize(e) for e in entries if e.strip()}, key=len, reverse=True)
    return re.compile("|".join(_word(e) for e in ordered) if ordered else r"(?!x)x")


def _any_of(entries: Sequence[str]) -> re.Pattern:
    """One pattern matching any entry (longest first); a pattern that matches nothing for no entries."""
    return _any_of_cached(tuple(entries))


@dataclass(frozen=True)
class Rules:
    openers: re.Pattern
    nouns: re.Pattern
    negations: re.Pattern
    makers: tuple[re.Pattern, ...]
    deny_openers: re.Pattern
    second_person: tuple[str, ...]
    role_play: re.Pattern
    aliases: dict[str, tuple[str, ...]]
    window: int

    def names_of(self, role: str) -> tuple[str, ...]:
        """The role name first, then its aliases."""
        return tuple(dict.fromkeys([role, *self.aliases.get(role, ())]))


def _both(rec: dict, key: str, where: str) -> list[str]:
    v = rec.get(key)
    if not isinstance(v, dict) or not all(isinstance(x, list) and all(isinstance(s, str) for s in x)
                                          for x in v.values()):
        raise DataError(f'field "{key}" must be an object of string lists, e.g. {{"zh": [...], "en": [...]}}', where)
    return [s for x in v.values() for s in x]


@functools.lru_cache(maxsize=8)
def load_rules(path: str | Path | None = None) -> Rules:
    """The rule lists (default: the bundled resources/in_character_rules.json)."""
    p = Path(path) if path else RULES_FILE
    where = str(p)
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the in-character rules ({e})", where) from None
    aliases = rec.get("aliases", {})
    if not isinstance(aliases, dict) or not all(isinstance(v, list) for v in aliases.values()):
        raise DataError('field "aliases" must map each role to a list of names', where)
    return Rules(openers=_any_of(_both(rec, "claim_openers", where)), nouns=_any_of(_both(rec, "ai_nouns", where)),
                 negations=_any_of(_both(rec, "negations", where)),
                 makers=tuple(re.compile(m) for m in rec.get("maker_patterns", [])),
                 deny_openers=_any_of(_both(rec, "deny_openers", where)),
                 second_person=tuple(normalize(o) for o in _both(rec, "second_person_openers", where)),
                 role_play=_any_of(_both(rec, "role_play_words", where)),
                 aliases={str(k): tuple(str(a) for a in v) for k, v in aliases.items()},
                 window=int(rec.get("window_chars", 24)))


def _clause_after(text: str, end: int, window: int) -> str:
    """What follows position `end` up to the end of its clause, at most `window` characters."""
    rest = text[end:end + window]
    cut = _CLAUSE_END.search(rest)
    return rest[:cut.start()] if cut else rest


def ai_claim(text: str, rules: Rules) -> str:
    """The text of the first AI claim in a normalized answer, or ""."""
    for m in rules.openers.finditer(text):
        clause = _clause_after(text, m.end(), rules.window)
        noun = rules.nouns.search(clause)
        if noun and not rules.negations.search(clause[:noun.start()]):
            return (m.group(0) + clause[:noun.end()]).strip()
    for pattern in rules.makers:
        found = pattern.search(text)
        if found:
            return found.group(0)
    return ""


def role_break(text: str, names: Sequence[str], rules: Rules) -> str:
    """The text that breaks the role (a denial of being it, or talk of playing a part), or ""."""
    name_pattern = _any_of(names)
    for m in rules.deny_openers.finditer(text):
        clause = _clause_after(text, m.end(), rules.window)
        found = name_pattern.search(clause)
        if found:
            return (m.group(0) + clause[:found.end()]).strip()
    found = rules.role_play.search(text)
    return found.group(0) if found else ""


def self_name(text: str, names: Sequence[str], rules: Rules) -> str:
    """The first name of the character in a normalized answer that is not right after "你是" / "you are", or ""."""
    for m in _any_of(names).finditer(text):
        before = text[:m.start()].rstrip()
        if not any(before.endswith(o) for o in rules.second_person):
            return m.group(0)
    return ""


def _letters(text: str) -> str:
    return re.sub(r"[\W_]+", "", text)


def echo_end(text: str, question: str = "", persona: str | None = None) -> int:
    """Where a normalized answer's opening echo ends: the question, then the start of the persona text (at least
    PERSONA_ECHO_MIN letters of it), compared on letters, digits and CJK characters only; 0 when it opens with
    neither."""
    letters = _letters(text)
    n = 0
    q = _letters(normalize(question))
    if q and letters.startswith(q):
        n = len(q)
    p = _letters(normalize(persona or ""))
    k = 0
    while k < min(len(p), len(letters) - n) and letters[n + k] == p[k]:
        k += 1
    if k >= PERSONA_ECHO_MIN:
        n += k
    if not n:
        return 0
    seen = 0
    for pos, ch in enumerate(text):  # back from letters to a position in the text
        if _letters(ch):
            seen += 1
            if seen == n:
                return pos + 1
    return len(text)


def verdict(answer: str, role: str, rules: Rules | None = None, question: str = "",
            persona: str | None = None) -> tuple[str, str]:
    """(category, evidence): the first of VERDICT_ORDER that applies to `answer` for the character `role`
    (`question` and `persona`: what it was asked with, for the repeats_prompt rule)."""
    rules = rules or load_rules()
    text = normalize(answer).strip()
    if not text:
        return "empty", ""
    claim = ai_claim(text, rules)
    if claim:
        return "claims_ai", claim
    names = rules.names_of(role) if role else ()
    broken = role_break(text, names, rules)
    if broken:
        return "breaks_role", broken
    start = echo_end(text, question, persona)
    named = self_name(text[start:], names, rules) if names else ""
    if named:
        return "names_role", named
    if start:
        return "repeats_prompt", text[:start]
    return "keeps_role", ""


def identity_scores(answers: Sequence[str], metas: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"n", "in_character_rate", "names_role_rate", "counts": {category: n}} over the answers."""
    rules = load_rules()
    found = Counter(verdict(a, str(m.get("role") or ""), rules, str(m.get("question") or ""), m.get("persona"))[0]
                    for a, m in zip(answers, metas))
    n = len(answers)
    counts = {c: found.get(c, 0) for c in VERDICT_ORDER}
    return {"n": n, "in_character_rate": sum(counts[c] for c in IN_CHARACTER) / n if n else 0.0,
            "names_role_rate": counts["names_role"] / n if n else 0.0, "counts": counts}


def load_identity_questions(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Identity questions from a JSONL file {question, lang?, id?} (default: the bundled one)."""
    p = Path(path) if path else IDENTITY_FILE
    if not p.is_file():
        raise DataError("identity question file not found (expected JSONL lines {\"question\": str})", str(p))
    out = []
    for where, rec in read_records(p):
        i = int(where.rsplit(":", 1)[1])
        if not isinstance(rec, dict) or not isinstance(rec.get("question"), str) or not rec["question"].strip():
            raise DataError('expected {"question": str, "lang"?: str} with a non-empty question', where)
        out.append({"id": str(rec.get("id") or f"line{i}"), "question": rec["question"],
                    "lang": str(rec.get("lang") or "")})
    if not out:
        raise DataError("the identity question file has no questions", str(p))
    return out


def main_role(items: Sequence[EvalItem]) -> tuple[str | None, str | None]:
    """(role, persona): the most frequent role of the test items and the system text it is most often asked with."""
    roles = Counter(i.role for i in items if i.role and i.set not in (PROBE, IDENTITY))
    if not roles:
        return None, None
    role = roles.most_common(1)[0][0]
    systems = Counter(i.system for i in items if i.role == role and i.set not in (PROBE, IDENTITY))
    return role, systems.most_common(1)[0][0]


def identity_items(path: str | Path | None, role: str, persona: str | None) -> list[EvalItem]:
    """The identity questions as items of the set IDENTITY, asked with `persona` and judged for `role`."""
    names = load_rules().names_of(role)
    reference = f"names {' / '.join(names[:5])}, or at least claims to be no AI"
    out = []
    for rec in load_identity_questions(path):
        msgs = [Message("user", rec["question"])]
        out.append(EvalItem(prompt_id(persona, msgs), IDENTITY, persona, msgs, [reference], "identity",
                            {**rec, "role": role, "persona": persona}))
    return out


def per_item_verdict(item: EvalItem, prediction: str) -> str:
    """The verdict shown under an answer in the side-by-side table."""
    category, evidence = verdict(prediction, item.role, question=item.question, persona=item.system)
    state = "in character" if category in IN_CHARACTER else "out of character"
    if len(evidence) > 40:
        evidence = evidence[:40] + "…"
    return f"{state}: {category}" + (f" ({evidence})" if evidence else "")


__all__ = ["VERDICT_ORDER", "IN_CHARACTER", "RULES_DESCRIPTION", "load_rules", "verdict", "identity_scores",
           "load_identity_questions", "main_role", "identity_items", "per_item_verdict"]
