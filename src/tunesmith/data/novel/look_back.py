"""Looking back for the speaker of an elided clause: the narrative before `…，急问曰：` names who speaks.

    from tunesmith.data.novel.look_back import look_back
    look_back(names, "云火急绰枪上马，引军来迎，正迎着蔡瑁，急问曰")   # "云"

The clauses before the elided one are walked from the speech backwards, crossing at most two sentence ends
and no other speech.  At each clause the rules of `LOOK_BACK_RULES` are tried top to bottom; the first that
decides ends the walk with its name ('' for someone unnamed), or says to skip to the clause before, or to
stop.  When no rule decides, the walk goes on; a one-character name seen on the way (which may be a verb:
修 in 修密书) is the answer only when nothing better turns up in the same sentence.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from tunesmith.data.novel.clause import demonstrative, strip_leaders
from tunesmith.data.novel.lexicon import (
    ACTION_START,
    ADDRESSEE_MARKS,
    ANONYMOUS_GROUPS,
    ARRIVING,
    CAME_OUT,
    CLAUSE_SPLIT,
    COUNT,
    COURTESY,
    IT_WAS,
    LEADS,
    LOOK_BACK_NEWCOMER,
    NOT_NAME_START,
    ONE_OF_KIND,
    PLACED_GROUP,
    POINTED,
    ROLE_CHARS,
    SENTENCE_END,
    STIRRED,
    THERE_WAS,
    TITLE_RE,
    WHO_IS,
    WORD_AFTER_SINGLE,
)
from tunesmith.data.novel.names import BookNames


class Then(enum.Enum):
    """What a rule says when it names nobody but still decides the clause."""

    NEXT_CLAUSE = "skip this clause's other rules: go on to the clause before"
    STOP = "end the walk: the answer is the one-character name found so far, if any"


@dataclass
class Walk:
    """Where a look-back stands: the clause being read, and what the walk has crossed to reach it."""

    clauses: list[str]
    delims: list[str]  # delims[k] follows clauses[k]
    i: int  # the index of the clause before the one being read
    clause: str = ""
    subject: str = ""  # the clause without its openers (却说, 只见, 乃 ...)
    head: str = ""  # the subject without a demonstrative (那老者 -> 老者)
    before: str = ""  # the delimiters right before the clause being read
    sentence_ends: int = 0
    single: str | None = None  # a one-character name found in this sentence

    @classmethod
    def over(cls, text: str) -> Walk:
        """A walk over `text` (clause, delimiters, clause, ...), starting at its end (the speech)."""
        parts = CLAUSE_SPLIT.split(text)
        return cls(parts[0::2], parts[1::2], len(parts[0::2]) - 1)

    def step(self) -> bool:
        """Move to the clause before; False when the walk ends instead: at the start of the text, at a
        third sentence end, or at a sentence end after a one-character name was found."""
        if self.i < 0:
            return False
        after = self.delims[self.i] if self.i < len(self.delims) else ""
        if any(c in SENTENCE_END for c in after):
            if self.single is not None:
                return False
            self.sentence_ends += 1
            if self.sentence_ends > 2:
                return False  # the subject of a sentence three back is too far
        self.clause = self.clauses[self.i]
        self.subject = strip_leaders(self.clause)
        self.head = demonstrative(self.subject)
        self.before = self.delims[self.i - 1] if self.i > 0 else ""
        self.i -= 1
        return True

    @property
    def unnamed(self) -> str:
        """The answer when the subject is someone unnamed: the one-character name found before, else ''."""
        return self.single if self.single is not None else ""


Rule = Callable[[BookNames, Walk], "str | Then | None"]


def look_back(names: BookNames, text: str, max_clauses: int = 10) -> str | None:
    """The subject of the nearest clause of `text` that names the speaker; '' when that is someone unnamed
    (一少年将), None when nothing is found within `max_clauses` clauses."""
    walk = Walk.over(text)
    for _ in range(max_clauses):
        if not walk.step():
            break
        decided = _decide(names, walk)
        if decided is Then.STOP:
            break
        if isinstance(decided, str):
            return decided
    return walk.single


def _decide(names: BookNames, walk: Walk) -> str | Then | None:
    for rule in LOOK_BACK_RULES:
        decided = rule(names, walk)
        if decided is Then.NEXT_CLAUSE:
            return None
        if decided is not None:
            return decided
    return None


# -- the rules, in the order they are tried (LOOK_BACK_RULES below) -------------------------------------


def courtesy_name(names: BookNames, walk: Walk) -> str | None:
    """有一人姓陈名萼，表字光蕊，…对母张氏道 -> 光蕊: a courtesy name just given is the name the text goes on
    to use."""
    named = COURTESY.search(walk.clause)
    return named.group(1) if named and walk.sentence_ends <= 1 else None


def one_stirred(names: BookNames, walk: Walk) -> str | None:
    """又惊动本司狱官，走来喝道 -> 狱官: the one stirred comes and speaks."""
    stirred = STIRRED.search(walk.clause)
    if stirred and walk.single is None:
        return names.name_at(stirred.group(1), 0) or names.role_at_end(stirred.group(1)) or None
    return None


def one_made_out(names: BookNames, walk: Walk) -> str | None:
    """原来是乌鸡国王的太子，急上前扯住…道 -> 太子: the one just recognised speaks."""
    it_was = IT_WAS.fullmatch(walk.clause)
    if it_was and walk.single is None:
        head = demonstrative(it_was.group(1).split("的")[-1])
        n = names.name_at(head, 0)
        if len(n) >= 2 and len(n) >= len(head) - 1:
            return n
    return None


def who_is_named(names: BookNames, walk: Walk) -> str | None:
    """一军拦路，当先大将，乃张飞也，大叫： -> 张飞: the one just made out, in this very sentence."""
    who = WHO_IS.fullmatch(walk.clause)
    if who and walk.sentence_ends == 0:
        n = who.group(1)
        if names.name_at(n, 0) == n or names.surname_name(n) == n:
            return n
    return None


def several_listed(names: BookNames, walk: Walk) -> str | None:
    """宋宪、魏续至，告布曰 -> '': several named people arrive and speak (but 唤聚诸佛，阿罗、揭谛 lists
    the ones ordered about)."""
    listed = walk.subject if "、" in walk.clause else ""
    if not listed:
        return None
    ordered = walk.i >= 0 and any(c in LEADS or c in ADDRESSEE_MARKS for c in walk.clauses[walk.i][-4:])
    first = names.name_at(listed, 0)
    if not ordered and len(first) >= 2 and listed[len(first)] == "、":
        return walk.unnamed
    return None


def predicate_or_list(names: BookNames, walk: Walk) -> Then | None:
    """乃简雍也 (a predicate), 都督张勋、纪灵 (a list of people): no subject here, go on to the clause before
    (unless another speech ends right before it)."""
    clause = walk.clause
    if not clause or clause.endswith("也") or "、" in clause:
        return Then.STOP if "”" in walk.before or "」" in walk.before else Then.NEXT_CLAUSE
    return None


def _arriving(names: BookNames, head: str) -> re.Match[str] | None:
    """A group arriving as the subject (一彪军, 两个总角蓬头女子), not as what someone leads (邓贤引一彪军,
    将两个妖怪押赴当朝)."""
    arriving = ARRIVING.search(head[:8])
    if arriving and arriving.start() > 0 and (names.name_at(head, 0) or head[arriving.start() - 1] in LEADS):
        return None
    return arriving


def counted_group(names: BookNames, walk: Walk) -> str | None:
    """三个老魔，笑呵呵问道 -> 老魔 / 六个小妖…高叫道 -> 小妖: a counted group the name list knows speaks."""
    head = walk.head
    arriving = _arriving(names, head)
    if arriving and arriving.start() == 0 and arriving.group()[0] != "一":
        counted = head[COUNT.match(head).end() :]
        return next((counted[:k] for k in (3, 2) if counted[:k] in names.names), None)
    return None


def someone_unnamed(names: BookNames, walk: Walk) -> str | None:
    """当先一员少年将军 / 一个军士 / 那二人举枪… / 一彪军到 -> '': someone the text has not named."""
    subject = walk.subject
    if (
        LOOK_BACK_NEWCOMER.match(subject)
        or ONE_OF_KIND.match(subject)
        or any(subject.startswith(a) for a in ANONYMOUS_GROUPS)
        or _arriving(names, walk.head)
    ):
        return walk.unnamed
    return None


def one_sent(names: BookNames, walk: Walk) -> str | None:
    """遣主簿李孚扮作曹军都督，直至城下。大叫： -> 李孚: the one sent off speaks; but in 孔明强支病体，令左右扶上
    小车，…，乃长叹曰 a name opening the sentence before the order is the one who goes on (-> 孔明)."""
    clause = walk.clause
    sent = names.sent_one(clause) if clause[:1] in "差遣使令命教" else None
    if not sent:
        return None
    for j in range(walk.i, -1, -1):
        if j < walk.i and any(c in SENTENCE_END for c in walk.delims[j]):
            break
        n = names.name_at(strip_leaders(walk.clauses[j]), 0)
        if len(n) >= 2:
            return n
    return sent


def one_came_out(names: BookNames, walk: Walk) -> str | None:
    """转出张飞 -> 张飞: someone coming out speaks; '' when the one coming out is not a known name."""
    m = CAME_OUT.search(walk.clause)
    if not m:
        return None
    n = names.name_at(m.group(1), 0) or names.surname_name(m.group(1))
    return n if n and len(n) == len(m.group(1)) else ""


def relative_named(names: BookNames, walk: Walk) -> str | None:
    """其姊辛宪英见之 -> 辛宪英 / 长子毋丘甸 -> 毋丘甸: a relative named right after the kin word."""
    clause = walk.clause
    return names.kin_name(walk.subject if clause[:1] not in "其长次幼" else clause) or None


def placed_group(names: BookNames, walk: Walk) -> str | None:
    """帐下众将听知，一齐怨恨，…，大呼曰 / 外面文武众官皆入，拜伏于地曰 -> 众将 / 众官: a group after a place."""
    group = PLACED_GROUP.match(walk.subject)
    return group.group(1) if group and group.group(1) in names.names else None


def name_opening(names: BookNames, walk: Walk) -> str | None:
    """云火急绰枪上马 -> 云 (remembered), 杨锋引兵入 -> 杨锋: a name opening the clause, after up to three
    openers.  A name of two or more characters decides; a one-character one may be a verb (孔明以酒食赐之，
    修密书一封，付军士曰: 修), so it is kept for the end of the sentence and a longer name before it wins."""
    s = walk.clause
    for _ in range(3):
        n = names.name_at(s, 0)
        if len(n) <= 1:
            titled = TITLE_RE.match(s) or (s[:1] in "左右前后中上大副" and TITLE_RE.match(s, 1))
            n = names.mined_at(s) or names.surname_name(s) or (names.titled_name(s) if titled else "") or n
        if len(n) >= 2:
            return n
        if n and walk.single is None and s[1:2] not in WORD_AFTER_SINGLE:
            walk.single = n
        stripped = strip_leaders(s)
        if stripped == s:
            break
        s = stripped
    return None


def messenger(names: BookNames, walk: Walk) -> str | None:
    """早有曹军飞报曹操，说： -> '': a messenger."""
    clause = walk.clause
    return "" if walk.single is None and "报" in clause and THERE_WAS.match(clause) else None


def pointed_group(names: BookNames, walk: Walk) -> str | None:
    """那些妃子有胆大的，…，道 / 这些枷锁的和尚听说，…，道 -> 妃子 / 和尚: a group the name list does not
    know, pointed at."""
    pointed = POINTED.match(walk.clause)
    if walk.single is None and pointed:
        return names.role_at_start(walk.clause[pointed.end() :]) or ""
    return None


def role_name_closing(names: BookNames, walk: Walk) -> str | None:
    """那南方三噹火德星君，整衣出门迎进道 -> 星君: a short clause closing with a listed rank or kind."""
    clause = walk.clause
    head = walk.head[:-2]
    if (
        walk.single is None
        and clause[-2:] in names.names
        and clause[-1] in ROLE_CHARS
        and len(clause) <= 10
        and not any(c in ADDRESSEE_MARKS or c in ACTION_START or c in NOT_NAME_START or c in LEADS for c in head)
    ):
        return clause[-2:]
    return None


def another_speech(names: BookNames, walk: Walk) -> Then | None:
    """…”曰：“…”，遂… : a speech right before this clause ends the walk (its speaker is another matter)."""
    return Then.STOP if "”" in walk.before or "」" in walk.before else None


# The order is the rules' priority: the first rule that decides a clause wins.
LOOK_BACK_RULES: tuple[Rule, ...] = (
    courtesy_name,
    one_stirred,
    one_made_out,
    who_is_named,
    several_listed,
    predicate_or_list,
    counted_group,
    someone_unnamed,
    one_sent,
    one_came_out,
    relative_named,
    placed_group,
    name_opening,
    messenger,
    pointed_group,
    role_name_closing,
    another_speech,
)
