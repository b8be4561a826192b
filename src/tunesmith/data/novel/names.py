"""The book's own name list, and name lookups against it and against the book's text.

    from tunesmith.data.novel.names import BookNames
    names = BookNames(speech_clauses, text)   # clauses before each colon; the paragraphs joined by newlines
    names.names                               # {"孔明": 412, "玄德": 388, ...}: listed names and their votes
    names.name_at("孔明笑曰", 0)               # "孔明": the longest listed name at an offset
    names.surname_name("杨锋引兵入")            # "杨锋": surname + a given name the book mentions often

A clause that is only a name plus speech verb and manner words (孔明曰, 孔明笑曰, 行者暗笑道, 主簿陈琳谏曰
after dropping the title) votes for that name; two votes make it a listed name, unless it is an action that
follows a well-known name elsewhere (操勒马, 谌伏地).  `SpeakerFinder` (speakers.py) builds on this.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from tunesmith.data.novel.clause import demonstrative, plain_subject, strip_tail
from tunesmith.data.novel.lexicon import (
    ACTION_START,
    ADDRESSEE_MARKS,
    ANONYMOUS,
    BEFORE_STANDALONE,
    CLAUSE_DELIMS,
    COMPOUND_SURNAMES,
    DOCUMENT,
    FOLLOWER_SET,
    KIN_LEADERS,
    LOCAL_SURNAMES,
    NAME_CHARS,
    NAME_FOLLOWERS,
    NOT_GIVEN_NAME,
    NOT_IN_NAMES,
    NOT_NAME_START,
    ROLE_CHARS,
    ROLE_START,
    SINGLE_NOT_NAME,
    SURNAME_TITLES,
    SURNAMES,
    TITLE_RE,
    TITLES,
)
from tunesmith.data.novel.quotes import Speech
from tunesmith.data.novel.text import Paragraph


def trie_regex(words: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any of `words`, longest first, built as a trie so that a scan of a whole novel
    costs one branch per character instead of one per word."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = True

    def emit(node: dict[str, Any]) -> str:
        end = node.get("", False)
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        if end:
            return "(?:" + body + ")?"
        return body

    pattern = emit(trie)
    return re.compile(pattern if pattern else r"(?!x)x")


class PrefixCounts:
    """Counts of the strings of 2-4 characters that start with a surname character, from one findall (in C)
    of the 4 characters at every such position, sorted once: a count is a sum over a range of the sorted
    strings, found by bisection."""

    def __init__(self, text: str):
        first = "[" + "".join(sorted(SURNAMES | {c[0] for c in COMPOUND_SURNAMES})) + "]"
        grams = Counter(re.findall(f"(?=({first}.{{1,3}}))", text))
        self._keys = sorted(grams)
        self._sums = [0]
        for k in self._keys:
            self._sums.append(self._sums[-1] + grams[k])
        self._cache: dict[str, int] = {}
        self._given: set[str] | None = None

    def given_names(self) -> set[str]:
        """Second characters of (one-character) surname + character pairs seen twice or more."""
        if self._given is None:
            pairs: Counter[str] = Counter()
            for k, key in enumerate(self._keys):
                if key[0] in SURNAMES and len(key) >= 2:
                    pairs[key[:2]] += self._sums[k + 1] - self._sums[k]
            self._given = {p[1] for p, c in pairs.items() if c >= 2}
        return self._given

    def followed(self, s: str, chars: frozenset[str]) -> int:
        """How often `s` is followed by one of `chars`: one pass over the sorted strings starting with `s`."""
        lo = bisect.bisect_left(self._keys, s)
        hi = bisect.bisect_left(self._keys, s + "\U0010ffff")
        n, sums, keys = len(s), self._sums, self._keys
        return sum(sums[k + 1] - sums[k] for k in range(lo, hi) if len(keys[k]) > n and keys[k][n] in chars)

    def get(self, s: str, default: int = 0) -> int:
        n = self._cache.get(s)
        if n is None:
            lo = bisect.bisect_left(self._keys, s)
            hi = bisect.bisect_left(self._keys, s + "\U0010ffff")
            n = self._cache[s] = self._sums[hi] - self._sums[lo]
        return n or default


class Followed:
    """How often a string is followed by a verb of speaking or acting, read off the n+1-character counts:
    names are (杨锋引兵, 辛毗曰); words that start with a surname character (解释, 黄金, 江山) hardly ever."""

    def __init__(self, counts: PrefixCounts):
        self._counts = counts
        self._cache: dict[str, int] = {}

    def __getitem__(self, s: str) -> int:
        if s not in self._cache:
            self._cache[s] = self._counts.followed(s, FOLLOWER_SET)
        return self._cache[s]


class BookNames:
    """The names a book uses for its speakers (mined from its speech clauses) and lookups against them:
    a listed name at an offset, surname + given name counted in the text, a name after a title or a kin
    word, a rank or kind closing a subject, the one sent out; `resolve_short_names` expands 飞 to 张飞."""

    def __init__(self, clauses: Iterable[str], text: str = ""):
        self._text = text
        self._surname_counts: PrefixCounts | None = None
        self._followed_counts: Followed | Counter[str] = Counter()
        votes: Counter[str] = Counter()
        for clause in clauses:
            if DOCUMENT.search(clause) or "、" in clause:
                continue
            r = strip_tail(clause)
            if r == clause:
                continue  # no speech verb at the end: not a clean vote
            name = plain_subject(clause)
            if name and name not in ANONYMOUS:
                votes[name] += 1
        names: dict[str, int] = {}
        for n, c in votes.items():
            if c < 2:
                continue  # one vote is as likely an action (扬鞭大骂曰) as a name: the clause's own fallback covers it
            # 张飞大 / 行者心 / 八戒慌: a better-voted name plus a leftover manner character
            if len(n) >= 3 and any(votes.get(n[:k], 0) > c for k in range(1, len(n))):
                continue
            if len(n) == 2 and votes.get(n[0], 0) >= 10 * c:
                continue  # 操退 / 瑜作: a very frequent one-character name plus an action
            names[n] = c
        firsts = Counter(n[0] for n in names if len(n) >= 2)
        # 老 / 小 / 张: the first character of three or more listed names is a prefix, not a name
        names = {n: c for n, c in names.items() if len(n) > 1 or firsts[n] < 3}
        self.names = self._drop_actions(names, text)
        # Full names for expanding one-character speakers may have a single vote (董卓曰 once, 卓曰 sixty times).
        self.full_names = {
            n
            for n in votes
            if 2 <= len(n) <= 3
            and n[0] not in NOT_NAME_START
            and not any(c in ADDRESSEE_MARKS for c in n)
            and not any(c in SINGLE_NOT_NAME for c in n[1:])
            and not (len(n) == 3 and n[:2] in self.names)  # 行者自: a name plus a stray character
        }
        self._max_len = max((len(n) for n in self.names), default=1)


    @staticmethod
    def _drop_actions(names: dict[str, int], text: str) -> dict[str, int]:
        """Drop rarely-voted entries that are actions: in the book they often follow a well-known name
        (勒马 in 玄德勒马, 扬鞭 in 操扬鞭, 密 in 玄德密谓).  A rank before a name does not count (魏主曹睿)."""
        strong = {n for n, c in names.items() if c >= 5 and n not in TITLES and n[-1:] not in "主王帝公侯后将相师"}
        weak = [n for n, c in names.items() if c < 5]
        if not weak or not text:
            return names
        total: Counter[str] = Counter()
        after_name: Counter[str] = Counter()
        for m in trie_regex(weak).finditer(text):
            w, i = m.group(), m.start()
            total[w] += 1
            if text[i - 1 : i] in strong or text[i - 2 : i] in strong or text[i - 3 : i] in strong:
                after_name[w] += 1
        return {n: c for n, c in names.items() if not (after_name[n] >= 2 and after_name[n] >= 0.15 * total[n])}

    def name_at(self, s: str, i: int) -> str:
        for L in range(min(self._max_len, len(s) - i), 0, -1):
            cand = s[i : i + L]
            if cand in self.names:
                return cand
        return ""

    def has_name_ending(self, ch: str) -> bool:
        """Whether the book mentions surname + `ch` twice or more (匡 -> 吴匡): `ch` can be a given name."""
        self.mentions("")  # builds the index
        return self._surname_counts is not None and ch in self._surname_counts.given_names()

    def mined_at(self, s: str) -> str:
        """周鲂听知… -> 周鲂 where 周 alone is also a listed name: a mined longer name at the start."""
        if s[:1] not in LOCAL_SURNAMES:
            return ""  # 操退 / 瑜作色 are one-vote actions, not names
        for L in (3, 2):
            if s[:L] in self.full_names:
                return s[:L]
        return ""

    def mentions(self, s: str) -> int:
        """How often the book mentions `s` (only asked for surname-initial strings, indexed once)."""
        if self._surname_counts is None:
            self._surname_counts = PrefixCounts(self._text)
            self._followed_counts = Followed(self._surname_counts)
        return self._surname_counts.get(s, 0)

    def surname_name(self, s: str) -> str:
        """杨锋引兵入 -> 杨锋, 蔡夫人 -> 蔡夫人: surname + given name the book mentions three times or more."""
        if s[:2] in COMPOUND_SURNAMES:
            k = 2
        elif s[:1] in SURNAMES:
            k = 1
        else:
            return ""
        for suffix in SURNAME_TITLES:
            if s.startswith(suffix, k):
                return s[: k + len(suffix)]
        short, long_ = s[: k + 1], s[: k + 2]
        if len(short) < k + 1 or short[-1] in NOT_GIVEN_NAME or short[-1] in SINGLE_NOT_NAME:
            return ""
        if not NAME_CHARS.match(short) or any(c in NOT_IN_NAMES or c in ADDRESSEE_MARKS for c in short[k:]):
            return ""
        n = self.mentions(short)
        last = long_[-1:]
        if n < 3 or self._followed_counts[short] < 2:
            return ""
        if (
            len(long_) > len(short)
            and last not in NOT_GIVEN_NAME
            and last not in SINGLE_NOT_NAME
            and last not in NOT_IN_NAMES
            and last not in ADDRESSEE_MARKS
            and self.mentions(long_) >= max(3, 0.7 * n)
            and self._followed_counts[long_] >= 2
        ):
            return long_
        return short

    def kin_name(self, s: str) -> str:
        """其姊辛宪英见之 -> 辛宪英, 长子毋丘甸 -> 毋丘甸: after a kin word, a listed name or a surname + a
        listed given name (宪英曰 is in the list) or + one or two characters."""
        kin = next((k for k in KIN_LEADERS if s.startswith(k)), "")
        if not kin:
            return ""
        rest = s[len(kin) :]
        n = self.name_at(rest, 0)
        if len(n) >= 2:
            return n
        k = 2 if rest[:2] in COMPOUND_SURNAMES else 1 if rest[:1] in SURNAMES else 0
        given = self.name_at(rest, k) if k else ""
        if len(given) >= 2:
            return rest[: k + len(given)]
        return self.surname_name(rest)

    def titled_name(self, s: str) -> str:
        """长史张昭 / 部将李堪 / 温侯吕布: the name right after a title; 谋士逢纪说绍曰: two characters between a
        title and a verb."""
        for m in TITLE_RE.finditer(s):
            rest = s[m.end() :]
            if TITLE_RE.match(rest):
                continue  # 侍中太史令王立: another title first
            n = self.name_at(rest, 0)
            if len(n) >= 2:
                return n
            n = self.surname_name(rest)
            if n:
                return n
            two = rest[:2]
            if (
                m.group() not in self.names  # 菩萨吩咐道 / 长老滴泪道: a title that is itself a speaker's name
                and len(rest) > 2
                and (rest[2] in NAME_FOLLOWERS or rest[2] == "说")
                and NAME_CHARS.match(two)
                and strip_tail(two) == two
                and not any(
                    c in NOT_IN_NAMES
                    or c in ADDRESSEE_MARKS
                    or c in SINGLE_NOT_NAME
                    or c in NOT_NAME_START
                    or c in ROLE_CHARS
                    for c in two
                )
            ):
                return two
        return ""

    @staticmethod
    def role_at_start(r: str) -> str:
        """众女官拥拜丹墀 -> 众女官, 八大金刚 -> 八大金刚: a short noun phrase ending in a rank or kind."""
        r = demonstrative(r)
        m = ROLE_START.match(r)
        if (
            not m
            or r[0] in NOT_NAME_START
            or r[0] in ACTION_START
            or r[0] == "一"
            or any(c in ADDRESSEE_MARKS for c in m.group(0))
        ):
            return ""  # 命九嫔妃子 / 入后边 / 对君臣僧俗 are actions, not subjects
        if r[m.end() : m.end() + 1] in ("子", "儿"):
            return m.group(0) + r[m.end()]  # 女子 / 妃子 / 孩儿
        return m.group(0)

    def role_at_end(self, r: str) -> str:
        """闪上三宫皇后 -> 皇后, 马赵温关四大元帅 -> 元帅: a listed name or rank closing the subject."""
        for k in (3, 2):
            if len(r) > k and (r[-k:] in self.names or r[-k:] in TITLES):
                return r[-k:]
        if len(r) >= 2 and r[-1] in ROLE_CHARS and r[-2] not in SINGLE_NOT_NAME and not any(
            c in ADDRESSEE_MARKS for c in r
        ):
            return r[-2:]
        return ""

    def sent_one(self, text: str) -> str | None:
        """先差曹洪领三万铁甲马军，哨至江边。回报云： -> 曹洪: the one sent out comes back with the report."""
        tail = text[-80:]
        for m in reversed(list(re.finditer("[差遣使令命教]", tail))):
            rest = tail[m.end() :]
            title = TITLE_RE.match(rest)
            if title:
                rest = rest[title.end() :]  # 遣主簿李孚… -> 李孚
            if rest[:1] in "、人" or "、" in rest[:6]:
                return None  # 使张辽、许褚探… several, or 使人 (someone)
            n = self.name_at(rest, 0)
            if len(n) < 2:
                n = self.surname_name(rest)
            if not n and title and rest[:1] in SURNAMES and rest[1:2] and rest[1] not in NOT_GIVEN_NAME:
                n = rest[:2] if NAME_CHARS.match(rest[:2]) else ""  # a title says a name follows
            if n:
                return n
        return None

    def local_full_name(self, p: str, end: int, short: str, window: int = 200, standalone: bool = False) -> str:
        """吴匡杀入内庭…匡大呼曰 -> 吴匡: the nearest surname + (one character +) `short` just before.
        standalone: a two-character name the list does not know must stand apart in the text (唤陈应、, 。龚都便走,
        见卞喜), not inside a longer word (国王又问, 厉声高叫)."""
        lo = max(0, end - window)
        i = p.rfind(short, lo, end)
        while i > lo:
            three, two = p[i - 2 : i + 1], p[i - 1 : i + 1]
            if i - 2 >= lo and (three in self.full_names or three[:2] in COMPOUND_SURNAMES):
                return three
            known = two in self.full_names or two in self.names
            apart = not standalone or i < 2 or p[i - 2] in CLAUSE_DELIMS or p[i - 2] in BEFORE_STANDALONE
            if known or (apart and two[0] in LOCAL_SURNAMES and self.mentions(two) >= 2):
                return two
            i = p.rfind(short, lo, i)
        return ""

    def resolve_short_names(self, speeches: list[Speech], paragraphs: list[Paragraph]) -> None:
        """飞 -> 张飞: a one-character speaker becomes the mined longer name ending in it that the text
        mentions most recently before the speech, within about five chapters."""
        shorts = {s.speaker for s in speeches if len(s.speaker) == 1} - {"众"}
        full_names = [n for n in self.full_names if n[-1] in shorts and n not in ANONYMOUS]
        offsets, pos = [], 0
        for p in paragraphs:
            offsets.append(pos)
            pos += len(p.text) + 1
        text = self._text  # the paragraphs joined by newlines, as given to the constructor
        by_last: dict[str, tuple[list[int], list[str]]] = {}
        for m in trie_regex(full_names).finditer(text) if full_names else ():
            pos_list, names = by_last.setdefault(m.group()[-1], ([], []))
            pos_list.append(m.start())
            names.append(m.group())
        horizon = 30000
        for s in speeches:
            if len(s.speaker) != 1:
                continue
            local = self.local_full_name(paragraphs[s.para].text, s.clause_start, s.speaker)
            if local:
                s.speaker = local
                continue
            if s.speaker not in by_last:
                continue
            where = offsets[s.para] + s.colon
            pos_list, names = by_last[s.speaker]
            i = bisect.bisect_left(pos_list, where) - 1
            if i >= 0 and where - pos_list[i] <= horizon:
                s.speaker = names[i]

