"""Who speaks: the speaker of `…X曰：` read from the clause before the colon.

    from tunesmith.data.novel.speakers import SpeakerFinder
    finder = SpeakerFinder(speech_clauses, text)
    finder.speaker_of("孔明笑曰")       # ("孔明", False); finder.how == "start" names the rule that fired
    finder.speaker_of("又曰")           # ("", True): elided, the caller's fallbacks (elided.py) take over

For each clause, first match wins: a titled name (长史张昭, 部将李堪) or a listed name at the start, after
openers such as 却说/乃/只见; a surname plus given name the book mentions often (杨锋引兵入曰); the leftmost
listed name that is not the person spoken to (谓操曰 / 问孔明曰 name the listener); a short plain subject
(老者道, 众将曰).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tunesmith.data.novel.clause import demonstrative, plain_subject, strip_leaders, strip_tail
from tunesmith.data.novel.lexicon import (
    ACTION_START,
    ADDRESSEE_MARKS,
    AFTER_BARE_TITLE,
    ANONYMOUS,
    ANSWER,
    CLAUSE_SPLIT,
    DOCUMENT,
    GIVEN_FOLLOWERS,
    HEARD,
    KIN_AFTER_NAME,
    KIN_NOUNS,
    LISTENER_BEFORE,
    NAME_CHARS,
    NEWCOMER,
    NOT_NAME_START,
    ONE_PERSON,
    PLACE_END,
    RELAY,
    ROLE_CHARS,
    ROLE_START,
    SINGLE_NOT_NAME,
    SPEAKER_BEFORE,
    THERE_IS,
    TITLE_RE,
    UNNAMED,
    VERB_TAIL,
)
from tunesmith.data.novel.look_back import look_back
from tunesmith.data.novel.names import BookNames


class SpeakerFinder(BookNames):
    """Names the speaker of `…X曰：` from the clause before the colon.

    The name list is mined from the book (`BookNames`).  Then for each clause, first match wins:
      a titled name (长史张昭, 部将李堪) or a listed name at the start, after openers such as 却说/乃/只见;
      a surname plus given name the book mentions often (杨锋引兵入曰);
      the leftmost listed name that is not the person spoken to (谓操曰 / 问孔明曰 name the listener);
      a short plain subject (老者道, 众将曰).
    Otherwise the clause is elided and the caller's fallbacks (`elided.ELIDED_RULES`) take over: the one
    asked answers, a given name just mentioned, `look_back`, the previous speaker going on (…”又曰：).
    `resolve_short_names` expands 飞 to 张飞."""

    def __init__(self, clauses: Iterable[str], text: str = ""):
        super().__init__(clauses, text)
        self._speaker_cache: dict[str, tuple[tuple[str, bool], str]] = {}
        self.how = "none"

    def _subject(self, clause: str) -> tuple[str, bool]:
        """(speaker or '', whether a listed name was seen only as the person spoken to)."""
        s = clause
        for _ in range(4):
            t = self.titled_name(s) if TITLE_RE.match(s) else ""
            if t:
                self.how = "title"
                return t, False
            n = self.name_at(s, 0)
            inner = self.name_at(s, 1) if n and n[0] in "那这" else ""
            if len(inner) >= len(n) and self.names.get(inner, 0) > self.names.get(n, 0):
                n = inner  # 那龙王敖顺: 龙王, not a listed 那龙 (but 那怪满口道: 那怪)
            kin = KIN_AFTER_NAME.match(s, len(n)) if n else None
            if kin and not VERB_TAIL.fullmatch(s[len(n) :]):
                self.how = "start"
                return n + kin.group().lstrip("之"), False  # 土地婆儿道 / 汜妻曰: his wife speaks, not he
            if len(n) >= 2:
                self.how = "start"
                return n, False
            if len(n) == 1:
                longer = self.mined_at(s)
                if longer:
                    self.how = "start"
                    return longer, False
            if n:
                # 众侍婢上前道: the whole short subject beats the one-character group word it starts with
                plain = plain_subject(s) if n in "众诸群" else ""
                if 2 <= len(plain) <= 3 and plain[0] == n:
                    self.how = "start"
                    return plain, False
                self.how = "start1"
                return n, False
            t = self.surname_name(s) or self.titled_name(s)
            if t:
                self.how = "surname"
                return t, False
            title = TITLE_RE.match(s)
            if title and s[title.end() : title.end() + 1] in AFTER_BARE_TITLE:
                self.how = "title"
                return title.group(), False  # 使者回见陆逊曰 / 近臣入奏曰: the title alone names the speaker
            if s[:1] in "把被" and len(s) > 2:
                # 被行者一把扯住道 / 把长老唬得慌忙…道: the one named after 被/把 speaks
                t = self.name_at(s, 1)
                if len(t) >= 2:
                    self.how = "start"
                    return t, False
            stripped = strip_leaders(s)
            if stripped == s:
                break
            s = stripped
        # A name inside the clause is mostly the listener (分付鲁肃曰, 召关兴、张苞曰): only a name right
        # before the verb, after something that is not a verb of addressing, speaks (阶下蒯良出曰, 长子孙策曰).
        s = strip_tail(s)  # 大惊小怪道 holds no 小怪
        addressee = any(
            s[i - 1] in ADDRESSEE_MARKS and len(self.name_at(s, i)) >= 2 for i in range(1, len(s))
        )
        for L in (4, 3, 2):
            if len(s) <= L:
                continue
            tail = s[-L:]
            if tail in self.names or self.surname_name(tail) == tail:
                head = s[:-L]
                short_epithet = len(head) <= 2 and not any(c in LISTENER_BEFORE or c in SINGLE_NOT_NAME for c in head)
                if head[-1] in SPEAKER_BEFORE or short_epithet:  # 劲节十八公笑道
                    self.how = "inside"
                    return tail, False
                break
        i = 1
        while i < len(s) - 1:  # 城楼上小妖急跳下城中报道: a listed name right after a place word
            n = self.name_at(s, i) if s[i - 1] in SPEAKER_BEFORE else ""
            if len(n) >= 2 and not (i > 1 and s[i - 2] in LISTENER_BEFORE):
                self.how = "inside"
                return n, False
            i += 1
        return "", addressee

    def speaker_of(self, clause: str) -> tuple[str, bool]:
        """(speaker or '', elided).  elided=True: the clause names nobody, the caller should look back."""
        hit = self._speaker_cache.get(clause)
        if hit is None:
            result = self._speaker_of(clause)
            hit = self._speaker_cache[clause] = (result, self.how)
        self.how = hit[1]
        return hit[0]

    def _speaker_of(self, clause: str) -> tuple[str, bool]:
        self.how = "none"
        if not clause:
            return "", True
        if DOCUMENT.search(clause):
            return "", False
        subject_part = re.split("[" + "".join(ADDRESSEE_MARKS) + "]", clause, maxsplit=1)[0]
        if "、" in subject_part:
            self.how = "several"
            return "", False  # 关、张曰 / 韩当、周泰、凌统等应声而出曰: several speakers at once
        sent = re.search("所[差遣使派]", clause)
        if sent:  # 法正所差下书人回报说: the one sent speaks
            plain = plain_subject(clause[sent.end() :])
            if plain:
                self.how = "plain"
                return plain, False
        name, addressee = self._subject(clause)
        if name:
            return name, False
        rest = strip_tail(clause)
        subject = strip_leaders(re.split("[" + "".join(ADDRESSEE_MARKS) + "]", rest, maxsplit=1)[0])
        if NEWCOMER.search(subject) or ONE_PERSON.match(subject) or UNNAMED.search(subject):
            return "", False
        there = THERE_IS.match(clause)
        if there and not addressee:
            who = demonstrative(strip_tail(clause[there.end() :]))
            m = ROLE_START.match(who)
            if who[:1] not in "人一" and m and not any(c in ADDRESSEE_MARKS for c in m.group()):
                self.how = "role"
                return m.group(), False
        heard = HEARD.search(clause)
        if heard:
            # 只听得路旁叫：the one who hears is not the one who speaks; the voice is named after the verb
            # (听得…有八大金刚叫道, 只听那妖王叫道, 又听得黄门官来奏) or is nobody yet
            self.how = "heard"
            return self._voice(clause[heard.end() :]), False
        plain = "" if addressee else plain_subject(clause)
        if len(plain) > 3 and plain not in self.names:
            # 本寺院主 / 正台阴阳官: keep the head noun when it is a listed name or a rank; else it is an action
            head = next((plain[-k:] for k in (3, 2) if plain[-k:] in self.names), "")
            if not head and plain[-1] in "官使吏臣兵卒僧主翁婆":
                head = plain[-3:]
            plain = head
        if len(plain) == 1 and plain not in self.names and not self.has_name_ending(plain):
            plain = ""  # 垂泣曰: half a word, unless a name ending in it was just mentioned (吴匡…匡大呼曰)
        if plain:
            self.how = "plain"
            return ("", False) if plain in ANONYMOUS else (plain, False)
        r = strip_leaders(rest)
        if r[:1] in "他她" and len(r) >= 3 and (r[1:] in KIN_NOUNS or r[1:] in self.names):
            self.how = "plain"
            return r[1:], False  # 他丈母道 / 她师父道: the relative speaks
        if r[:1] in ("他", "她") and r[1:2] not in ("们", "两", "二", "三", "几"):
            return "", True  # 他想着： / 他又跌脚捶胸的道： the one just spoken of
        if r in ANONYMOUS:
            return "", False
        if RELAY.match(strip_leaders(clause)):
            self.how = "relay"  # 命传报：“故人蒋干相访。” the one who sends the word, named before
            return "", True
        if "报" in clause and not addressee:
            self.how = "report"  # 回报曰 / 忽报： a messenger, named at most in the clause before
            return "", True
        if r in SINGLE_NOT_NAME and r not in ROLE_CHARS:
            self.how = "word"  # 遂曰 / 乃曰: "then said" (or 韩遂 by his given name, see `given_name_near`)
            return "", True
        verb_first = (
            not r or r[0] in ACTION_START or r[0] in NOT_NAME_START or any(c in ADDRESSEE_MARKS for c in r[:3])
        )
        if re.match("[闪走转跳撞拥赶][出上过入]", r):
            role = self.role_at_end(r)  # 闪上三宫皇后道: the subject comes after a verb of appearing
            if role:
                self.how = "role"
                return role, False
        if r and not addressee and not verb_first:
            # a subject the name list does not know: 众女官拥拜丹墀道, 闪上三宫皇后道, 四大元帅作礼道
            role = self.role_at_start(r) or self.role_at_end(r)
            if role:
                self.how = "role"
                return role, False
            if r[-1] not in "手脚身":
                self.how = "unknown"  # (停住手 / 回转身 are actions: the speaker goes on)
        return "", True

    def _voice(self, rest: str) -> str:
        """The speaker named after a verb of hearing: 那妖王叫道 -> 妖王, 有八大金刚叫道 -> 八大金刚,
        黄门官来奏 -> 黄门官, 猩猩出语道 -> 猩猩; '' for 路旁叫 / 有人叫 / 人叫."""
        voice = re.search("有(.+)$", rest)
        if voice:
            r = voice.group(1)
            return "" if r[0] in "人一" else self.role_at_start(strip_tail(r))
        r = demonstrative(strip_tail(rest))
        if not r or r[0] in "人一" or r in ANONYMOUS:
            return ""
        name = self.name_at(r, 0)
        if len(name) >= 2:
            return name
        plain = plain_subject(rest)
        if 2 <= len(plain) <= 3 and plain not in ANONYMOUS and plain[-1] not in PLACE_END:
            return plain  # not 背后 / 林深处 / 河中间: a place the voice comes from
        role = self.role_at_start(r)
        return "" if role.endswith("后") and role[-2:-1] in "背身门山林帐阵城屋堂营寨墙殿" else role

    @staticmethod
    def addressee_of(clause: str) -> str:
        """问向导官曰 -> 向导官, 谓孔明曰 -> 孔明, 唤农夫问曰 -> 农夫: who a speech is addressed to, when the
        clause says."""
        r = strip_tail(clause)
        for i in range(len(r) - 1, -1, -1):
            if r[i] in "问谓对告":
                rest = demonstrative(r[i + 1 :])
                return rest if 1 <= len(rest) <= 4 and NAME_CHARS.match(rest) and rest not in ANONYMOUS else ""
        called = re.search("[唤召叫]([^唤召叫]{1,4}?)问[曰道]?$", clause)
        if called and NAME_CHARS.match(called.group(1)) and called.group(1) not in ANONYMOUS:
            return demonstrative(called.group(1))
        return ""

    def asked_in(self, text: str) -> str | None:
        """Who was asked in the narrative right before an answer: 融问其姓名， -> '' (someone unnamed),
        玄德问童子， -> 童子; None when the last two clauses ask nobody."""
        clauses = [c for c in CLAUSE_SPLIT.split(text)[0::2] if c]
        for clause in reversed(clauses[-2:]):
            k = clause.rfind("问")
            if k < 0 or clause[k + 1 : k + 2] in ("曰", "道", ""):
                continue
            rest = demonstrative(clause[k + 1 :])
            if rest[:1] in "其之何":
                return ""
            n = self.name_at(rest, 0) or self.surname_name(rest)
            return n if n else None
        return None

    def given_name_near(self, p: str, clause_start: int, clause: str) -> str:
        """遂曰 after 马超回见韩遂… -> 韩遂, 旋问部将曰 after 金旋… -> 金旋: a one-character word alone before
        the speech verb, or opening the clause before a verb, is a given name when the paragraph named
        someone with it (surname + that character) in the last 300 characters."""
        verb = VERB_TAIL.search(clause)
        strict = False  # a word as common as 都 / 喜 opening a longer clause needs a listed full name
        if verb and verb.start() == 1:
            c = clause[0]  # 遂曰 / 都曰 / 喜曰 (not 笑道 / 问道: a verb of speaking before the verb)
            strict = c in "曰道说问答叫喊嚷喝骂笑哭叹呼言云"
        elif clause[:1] in SINGLE_NOT_NAME and strip_tail(clause) == clause[:1]:
            c = clause[0]  # 正笑曰 / 遂大怒曰: the word, then only manner words
        else:
            s = strip_leaders(clause)
            c = s[:1]
            if not c or s[1:2] not in GIVEN_FOLLOWERS or c in self.names or c in "他她我你其此彼众诸人":
                return ""
            strict = c in SINGLE_NOT_NAME
        name = self.local_full_name(p, clause_start, c, window=300, standalone=True)
        if not name or name in self.names or name in self.full_names:
            return name
        return "" if strict or self.mentions(name) < 3 else name

    @staticmethod
    def is_answer(clause: str) -> bool:
        return bool(ANSWER.search(strip_leaders(clause)))

    def look_back(self, text: str, max_clauses: int = 10) -> str | None:
        """The subject of the nearest clause before an elided one that opens with a listed name
        (云火急绰枪上马，…，正迎着蔡瑁，急问曰 -> 云), or that brings someone on (转出张飞 -> 张飞).
        Crosses at most two sentence ends and no speech; clauses ending in 也 are predicates (乃简雍也).
        '' when an unnamed newcomer (一少年将) is the subject, None when nothing is found."""
        return look_back(self, text, max_clauses)
