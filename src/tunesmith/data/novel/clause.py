"""What a speech clause is made of: the speech verb and manner words at its end, the openers and titles
at its start, and the plain subject left in between.

    from tunesmith.data.novel.clause import plain_subject, strip_tail
    strip_tail("孔明大笑曰")          # "孔明"
    plain_subject("只见那老者笑道")    # "老者"

Pure functions of the clause alone (no name list), cached: the same clauses come back (孔明曰, 操曰 …).
"""

from __future__ import annotations

import functools

from tunesmith.data.novel.lexicon import (
    ACTION_START,
    KIN_DOUBLES,
    KIN_LEADERS,
    LEADER_RE,
    LEADERS,
    MODIFIER_TAIL,
    NAME_CHARS,
    NOT_IN_NAMES,
    NOT_NAME_END,
    NOT_NAME_START,
    SINGLE_NOT_NAME,
    TITLE_RE,
    VERB_MARKS,
    VERB_TAIL,
)


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def strip_tail(s: str) -> str:
    """孔明大笑曰 -> 孔明, 行者暗笑道 -> 行者, 悟空近前跪下 -> 悟空, 谓众将曰 -> 谓众将;
    '' when only verbs and manner words."""
    m = VERB_TAIL.search(s)
    if m:
        s = s[: m.start()]
    while s:
        m = MODIFIER_TAIL.search(s)
        if not m:
            break
        s = s[: m.start()]
    return s




@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def strip_leaders(s: str) -> str:
    """却说曹操… -> 曹操…, 只见那老者 -> 老者 (at most three openers, never the whole clause)."""
    for _ in range(3):
        m = LEADER_RE.match(s)
        if not m or m.end() >= len(s):
            break
        s = s[m.end() :]
    return s


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def strip_title(s: str) -> str:
    """主簿陈琳 -> 陈琳, 卓婿谋士李儒 -> 李儒: drop everything up to the last title when a 2-3 character name
    follows."""
    last = None
    for m in TITLE_RE.finditer(s):
        if 2 <= len(s) - m.end() <= 3:
            last = m
    return s[last.end() :] if last else s


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def demonstrative(s: str) -> str:
    # 那老者 -> 老者, 那妇人 -> 妇人; keep 那怪 / 那人 (one character left would say nothing)
    for d in ("那个", "这个", "那伙", "这伙", "那些", "这些", "那群", "那", "这"):
        if s.startswith(d):
            return s[len(d) :] if len(s) - len(d) >= 2 else s
    return s


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def plain_subject(clause: str) -> str:
    """What is left of a clause once verbs, manner words, openers and titles are gone, when it can stand as a
    speaker label (老者, 那怪, 众僧, 孔明, 陈琳); '' otherwise."""
    r = strip_tail(clause)
    if not r or r == clause and VERB_TAIL.search(clause) is None and len(clause) > 4:
        return ""
    r = demonstrative(r) if r.startswith(("那", "这")) else strip_leaders(r)
    r = strip_title(r)
    if r in LEADERS and r not in KIN_LEADERS:
        return ""
    if not NAME_CHARS.match(r) or r[0] in VERB_MARKS or r[0] in NOT_NAME_START or r[0] in "一他她它":
        return ""
    if any(c in NOT_IN_NAMES or c in VERB_MARKS for c in r[1:]):
        return ""
    if len(r) == 1 and r in SINGLE_NOT_NAME:
        return ""
    if len(r) >= 2 and (r[-1] in NOT_NAME_END or r[0] in ACTION_START or (r[-1] == "来" and r != "如来")):
        return ""
    if len(r) >= 3 and r[-1] == r[-2] and r[-1] not in KIN_DOUBLES:
        return ""  # 慌张张 / 战索索: how someone speaks, not who
    return r

