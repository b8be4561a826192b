"""Mine role-play dialogue from a Chinese novel: every quoted speech becomes {context, chat, speaker, chapter}.

    tunesmith data extract-dialogue ../shared/datasets/four-novels-raw/三国演义.txt -o sanguo.jsonl
    tunesmith data extract-dialogue 西游记.txt -o xiyou.jsonl --format conversation --speaker 八戒

    from tunesmith.data.novel import extract_dialogue
    records = extract_dialogue("三国演义.txt")          # or the novel's text itself
    # {"context": "曹仁回城中，与众商议。曹洪曰：", "chat": "“目今失了彝陵，势已危急，何不拆丞相遗计观之，以解此危？”",
    #  "speaker": "曹洪", "chapter": "第五十一回", "line": 8685}

The record is the "cosplay" format: `context` is the narrative right before a speech, up to and including
the speaker, the speech verb and the colon (bounded by `context_chars`, never crossing the paragraph start,
cut at a sentence boundary); `chat` is the quoted utterance with its quote marks.  A model tuned on
user=context / assistant=chat learns to answer `<situation>，<人名>曰：` in that character's voice.

How it works, in order:
1. decode (UTF-8 or GB18030/GBK, see `tunesmith.data.encoding`), drop e-book site banners;
2. rebuild paragraphs: hard-wrapped texts (most lines the same width) are re-joined, a new paragraph
   starting at an indented line, a blank line or a short line; one-paragraph-per-line texts stay as they are;
3. find chapter headings (第X回/章/节/卷, 楔子, 附录); a chapter repeated word for word is skipped;
4. find quotes (“…” with ‘…’ inside, 「…」, ASCII "…") that follow a colon: those are speeches.  Typos
   common in e-book texts are handled: a “ that opens a new `X曰：“` inside an unclosed quote starts a
   new speech (the broken one is dropped), a “ used as a closer after 。！？ closes;
5. name the speaker from the clause before the colon, with a name list mined from the book itself
   (strings that stand alone before 曰/道/说, e.g. 孔明 in 孔明笑曰), see `SpeakerFinder`.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tunesmith.data.encoding import read_text_file
from tunesmith.errors import ConfigError, DataError

# Default context window.  Both published records of the cosplay format start at their paragraph start,
# which any window of 16 or more characters reproduces; 200 keeps one or two preceding sentences or
# speeches of a long paragraph, enough situation for the model without drowning the speaker cue.
DEFAULT_CONTEXT_CHARS = 200
FORMATS = ("cosplay", "conversation")

SENTENCE_END = "。！？!?…"
CLOSERS = "”’」』\"'"
COLONS = "：:"
# Characters that end a clause: the speaker of `X曰：` is looked for after the last of these.
CLAUSE_DELIMS = frozenset("，。！？；：、”’」』（）()…,.!?;:　 \t—")

# -- text cleaning ---------------------------------------------------------------------------------

_BANNER_LINE = re.compile(r"https?://|www\.|\.(?:com|net|cn|org)\b|电子书|版权声明|转载请保留|整理校对|txt\s*下载", re.I)
_RULE_LINE = re.compile(r"^\s*[-=_*—～~]{8,}\s*$")
_RUNNING_HEAD = re.compile(r"^\s*\S{1,20}--\S{1,20}--")  # "吴承恩--西游记--第二回 ..." page heads
_CN_NUM = "0-9０-９零〇一二三四五六七八九十百千两"
_HEADING = re.compile(rf"^(第[{_CN_NUM}]+[回章节卷]|楔子|附\s*录)(?=$|[\s　:：,，.、])")


@dataclass
class Paragraph:
    text: str
    line: int  # 1-based source line of the first character
    chapter: str = ""
    # (offset in text, source line) for every joined source line, to map a quote back to its line
    line_starts: list[tuple[int, int]] = field(default_factory=list)

    def line_at(self, offset: int) -> int:
        i = bisect.bisect_right(self.line_starts, (offset, 1 << 30)) - 1
        return self.line_starts[max(i, 0)][1] if self.line_starts else self.line


def _width(s: str) -> int:
    # display width: a CJK character is two columns, which is exactly its GB18030 byte count
    return len(s.encode("gb18030", errors="replace"))


def _heading_label(line: str) -> str | None:
    s = line.strip()
    if len(s) > 60 or any(c in s for c in "。！？“”"):
        return None
    m = _HEADING.match(s)
    if not m:
        return None
    return re.sub(r"\s+", "", m.group(1))


def _drop_banners(lines: list[str]) -> list[str]:
    """Blank out e-book site banners (a short block between rules that names a site) and URL lines."""
    out = list(lines)
    rules = [i for i, l in enumerate(lines) if _RULE_LINE.match(l)]
    for a, b in zip(rules, rules[1:]):
        block = lines[a + 1 : b]
        if b - a <= 15 and any(_BANNER_LINE.search(l) for l in block):
            for i in range(a, b + 1):
                out[i] = ""
    for i, l in enumerate(out):
        if _RULE_LINE.match(l) or _RUNNING_HEAD.match(l):
            out[i] = ""
        elif len(l) < 120 and "“" not in l and _BANNER_LINE.search(l):
            out[i] = ""
    return out


def split_paragraphs(text: str) -> list[Paragraph]:
    """Rebuild paragraphs (re-joining hard-wrapped lines) and tag each with its chapter heading."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = _drop_banners(text.split("\n"))
    widths = [_width(l.rstrip()) for l in lines]
    nonblank = [w for w in widths if w]
    if not nonblank:
        return []
    # Hard-wrapped: a third or more of the lines share one width (±2 columns) near the longest ones.
    counts = Counter(w for w in nonblank if w > 20)
    wrap_width, wrapped = 0, False
    if counts:
        wrap_width = counts.most_common(1)[0][0]
        near = sum(n for w, n in counts.items() if abs(w - wrap_width) <= 2)
        wrapped = near >= 0.3 * len(nonblank) and wrap_width >= 40
    indented = sum(1 for l in lines if l.strip() and l[:1] in " \u3000\t")
    # In an indented text the indent alone marks a new paragraph; wrap widths vary by a few columns.
    use_indent = wrapped and indented >= 0.05 * len(nonblank)

    paragraphs: list[Paragraph] = []
    cur: list[str] = []
    starts: list[tuple[int, int]] = []
    size = 0

    def flush() -> None:
        nonlocal cur, starts, size
        if cur:
            paragraphs.append(Paragraph("".join(cur), starts[0][1], line_starts=starts))
        cur, starts, size = [], [], 0

    prev_width = 0
    for i, raw in enumerate(lines):
        s = raw.strip()
        if not s:
            flush()
            prev_width = 0
            continue
        heading = _heading_label(s) is not None
        if cur and (
            heading
            or not wrapped
            or raw[:1] in " \u3000\t"
            or (not use_indent and prev_width < 0.9 * wrap_width)
        ):
            flush()
        if cur and cur[-1][-1:].isascii() and cur[-1][-1:].isalnum() and s[:1].isascii() and s[:1].isalnum():
            s = " " + s  # re-joining wrapped Latin words needs the space the wrap removed
        starts.append((size, i + 1))
        cur.append(s)
        size += len(s)
        prev_width = widths[i]
        if heading:
            flush()
            prev_width = 0
    flush()

    # Chapter tags; a chapter that repeats an earlier one word for word (a copy error) is dropped.
    out: list[Paragraph] = []
    seen: dict[str, int] = {}
    chapter = ""
    block: list[Paragraph] = []

    def close_block() -> None:
        if not block:
            return
        key = chapter + "\n" + "\n".join(p.text for p in block[1:])
        h = hash(key)
        if chapter and h in seen and len(block) > 1:
            return
        seen[h] = 1
        out.extend(block)

    for p in paragraphs:
        label = _heading_label(p.text)
        if label is not None:
            close_block()
            chapter = label
            block = [p]
        else:
            block.append(p)
        p.chapter = chapter
    close_block()
    return out


# -- quotes ------------------------------------------------------------------------------------------


def quote_spans(p: str) -> list[tuple[int, int | None]]:
    """(open, close) index pairs of top-level quotes in a paragraph; close is None for an unclosed quote."""
    spans: list[tuple[int, int | None]] = []
    for opener, closer in (("“", "”"), ("「", "」")):
        if opener in p:
            spans.extend(_paired_spans(p, opener, closer))
    if not spans and '"' in p:
        # ASCII quotes do not say which end they are: pair them in order.
        idx = [i for i, c in enumerate(p) if c == '"']
        spans = [(idx[k], idx[k + 1] if k + 1 < len(idx) else None) for k in range(0, len(idx), 2)]
    spans.sort()
    return spans


def _paired_spans(p: str, opener: str, closer: str) -> Iterable[tuple[int, int | None]]:
    n = len(p)
    i = p.find(opener)
    while i >= 0:
        depth, k, end, restart = 1, i + 1, None, None
        while k < n:
            ch = p[k]
            if ch == closer:
                depth -= 1
                if depth == 0:
                    end = k
                    break
            elif ch == opener:
                before = p[k - 1]
                if before in COLONS:
                    restart = k  # `X曰：“` inside an open quote: the open one lost its closer
                    break
                if before in SENTENCE_END and depth == 1:
                    end = k  # a “ typed where ” was meant, right after the sentence end
                    break
                depth += 1  # a nested quote of the same kind
            k += 1
        yield (i, end)
        if end is not None:
            i = p.find(opener, end + 1)
        elif restart is not None:
            i = restart
        else:
            return


# -- speakers ----------------------------------------------------------------------------------------

_VERBS = (
    "曰 道 说 云 言 问 答 叫 喊 嚷 喝 骂 叱 报 奏 禀 启 告 诉 谏 劝 叹 呼 吟 诵 称 谢 嘱 令 教 应 对 谓 想 思 忖 念 祝"
    " 吩咐 分付 嘱付 嘱咐 传令 下令 商议 计议 自思 暗想 寻思 暗思 暗忖 沉吟 叫声 道声 开言 开口 答应 回言 笑 哭 骂"
).split()
_MODIFIERS = (
    "大 小 笑 喜 怒 惊 叹 又 乃 便 遂 因 复 亦 也 急 忙 皆 俱 都 齐 共 同 冷 暗 陪 回 高 低 微 慌 连 即 就 却 才 方 再"
    " 还 只 泣 哭 拜 跪 揖 了 着 的 地 而 之 亦 先 后 一 再 厉声 高声 低声 大声 连声 齐声 应声 失声 仰天 长 欣然 愕然 慌忙 连忙"
    " 急忙 赶忙 上前 近前 向前 进前 出班 出列 再拜 拜谢 称谢 顿首 叩头 磕头 点头 摇头 拍手 抚掌 合掌 顿足 拱手 躬身 起身"
    " 施礼 变色 改容 垂泪 流泪 含泪 掩面 满面 心中 心下 口中 口里 暗暗 呵呵 哈哈 嘻嘻 欢喜 大喜 大怒 大惊 大笑 冷笑 暗笑"
    " 陪笑 笑嘻嘻 战兢兢 恨 慌了 见了 听了 闻言 听说 听见 看见 见说 闻说 看了 进 出 止之 止住 扯住 问之 谓之 视之 指之"
).split()
_TAIL = re.compile("(?:" + "|".join(sorted(set(_VERBS + _MODIFIERS), key=len, reverse=True)) + ")$")
_TITLES = (
    "主簿 主薄 长史 参军 司徒 司空 太尉 校尉 中军校尉 司隶校尉 侍御史 御史 议郎 中常侍 常侍 尚书 仆射 军师 都督 大都督"
    " 丞相 太守 刺史 将军 大将军 大将 上将 部将 先锋 牙将 偏将 副将 裨将 谋士 谋臣 从事 别驾 治中 功曹 督邮 县令 太傅 太师"
    " 太保 大夫 侍中 黄门 中郎将 郎中 护军 监军 司马 军司马 掾 使者 近臣 内侍 宦官 国舅 皇叔 先主 后主 元帅 天王 真君 星官"
    " 长老 法师 禅师 国师 祖师 老师 师父 菩萨 大仙 太子 公主 娘娘 小姐 员外 驿丞 僧官"
).split()
_TITLE_PREFIX = re.compile("(?:" + "|".join(sorted(_TITLES, key=len, reverse=True)) + ")")
# Words that open a clause before its subject; tried one at a time only when no name matches at the start.
_LEADERS = sorted(
    (
        "却说 且说 话说 只见 但见 忽见 又见 却见 于是 当下 当时 此时 那时 随即 随后 少顷 须臾 忽然 原来 后来 次日 当日 是日"
        " 早有 只得 不期 谁知 不想 果然 正是 忽 乃 遂 便 又 却 因 时 但 只 正 即 就 再 复 方 才 急 也 亦 今 且 这 那 那个 这个"
    ).split(),
    key=len,
    reverse=True,
)
# A name right after one of these is the person spoken to (谓操曰, 问孔明曰, 对行者道), not the speaker.
_ADDRESSEE_MARKS = frozenset("谓问对告与向叱骂责指顾见禀劝嘱唤叫教令请拜谢迎随同和跟及奏称望揖扯")
# Not a character: poems and documents quoted after 曰, and anonymous subjects.
_DOCUMENT = re.compile(r"诗|词|赞|偈|颂|铭|碑|檄|诏|书略|其略|其文|表略|表文|榜文|写着|书曰|书云|文曰|上书|谣|歌曰|其书|内书|疏曰")
_ANONYMOUS = frozenset("人 一人 有人 或 或人 其人 他 她 彼 此人 某 吾 我 汝 你 之 众人皆 二人 两个 一个 后人".split())
_NAME_CHARS = re.compile(r"^[\u4e00-\u9fff]{1,4}$")
_NOT_IN_NAMES = frozenset("之了的着不是在有也而以于其所此这那把被将说曰道问")


def _strip_tail(s: str) -> str:
    while True:
        m = _TAIL.search(s)
        if not m or m.start() == 0 and m.end() == len(s) and len(s) > 0 and s in ("",):
            break
        if not m:
            break
        s = s[: m.start()]
        if not s:
            break
    return s


def _strip_title(s: str) -> str:
    """主簿陈琳 -> 陈琳, 卓婿谋士李儒 -> 李儒: drop everything up to the last title when a 2-3 character name follows."""
    last = None
    for m in _TITLE_PREFIX.finditer(s):
        if 2 <= len(s) - m.end() <= 3:
            last = m
    return s[last.end() :] if last else s


def _plain_name(s: str) -> str:
    """A residue that can stand as a speaker label (老者, 那怪, 众僧, 孔明), or ''."""
    if not _NAME_CHARS.match(s) or any(c in _NOT_IN_NAMES for c in s[1:]) or s[0] in "之了的着不是在把被将":
        return ""
    return s


def _demonstrative(s: str) -> str:
    # 那老者 -> 老者, 那妇人 -> 妇人; keep 那怪 / 那人 (one character left would say nothing)
    for d in ("那个", "这个", "那", "这"):
        if s.startswith(d) and len(s) - len(d) >= 2:
            return s[len(d) :]
    return s


@dataclass
class _Speech:
    para: int
    open: int
    close: int
    colon: int  # index of the colon before the quote
    clause_start: int
    line: int
    speaker: str = ""


class SpeakerFinder:
    """Names the speaker of `…X曰：` from the clause before the colon.

    The name list is mined from the book: a clause that is only a name plus speech verb and manner words
    (孔明曰, 孔明笑曰, 行者暗笑道, 主簿陈琳谏曰 after dropping the title) votes for that name.  Then for each
    clause: the leftmost listed name that is not the person spoken to (谓操曰 / 问孔明曰) is the speaker; else
    a short plain subject (老者道, 众将曰); else the subject of the sentence, or of the speech right before
    when the clause follows it directly (…”又曰：).  A one-character name (飞曰, 操曰) is expanded to the
    listed full name ending in that character mentioned most recently (张飞, 曹操)."""

    def __init__(self, clauses: Iterable[str]):
        votes: Counter[str] = Counter()
        for clause in clauses:
            name = self._simple_subject(clause)
            if name:
                votes[name] += 1
        # single characters are often verbs or adverbs the tail list missed: ask for two votes
        self.names = {n: c for n, c in votes.items() if c >= 2 or len(n) >= 2}
        self._max_len = max((len(n) for n in self.names), default=1)

    # -- mining -----------------------------------------------------------------------------
    @staticmethod
    def _simple_subject(clause: str) -> str:
        if _DOCUMENT.search(clause):
            return ""
        r = _strip_tail(clause)
        if not r or r == clause:
            return ""
        r = _demonstrative(_strip_title(r))
        r = _plain_name(r)
        if r in _ANONYMOUS:
            return ""
        return r

    # -- lookup -----------------------------------------------------------------------------
    def _name_at(self, s: str, i: int) -> str:
        for L in range(min(self._max_len, len(s) - i), 0, -1):
            cand = s[i : i + L]
            if cand in self.names:
                return cand
        return ""

    def _subject(self, clause: str) -> tuple[str, bool]:
        """(speaker, found_addressee_only).  Tries the clause start, then leaders stripped one by one."""
        s = clause
        for _ in range(4):
            n = self._name_at(s, 0)
            if n:
                if len(n) == 1 and len(s) > 1 and s[:2] in self.names:
                    n = s[:2]
                return n, False
            for lead in _LEADERS:
                if s.startswith(lead) and len(s) > len(lead):
                    s = s[len(lead) :]
                    break
            else:
                break
        # a title-prefixed name anywhere (司隶校尉袁绍入见进曰)
        for m in _TITLE_PREFIX.finditer(s):
            n = self._name_at(s, m.end())
            if n and len(n) >= 2:
                return n, False
        # any listed name not preceded by an addressee mark
        addressee = False
        i = 0
        while i < len(s):
            n = self._name_at(s, i)
            if n and len(n) >= 2:
                if i > 0 and s[i - 1] in _ADDRESSEE_MARKS:
                    addressee = True
                    i += len(n)
                    continue
                return n, False
            i += 1
        return "", addressee

    def speaker_of(self, clause: str) -> tuple[str, bool]:
        """(speaker or '', elided).  elided=True means the clause names nobody and the caller should look back."""
        if not clause:
            return "", True
        if _DOCUMENT.search(clause):
            return "", False
        name, addressee = self._subject(clause)
        if name:
            return name, False
        r = _strip_tail(clause)
        if not r:
            return "", True
        plain = _plain_name(_demonstrative(_strip_title(r)))
        if plain and not addressee and plain[0] not in _ADDRESSEE_MARKS and plain not in _ANONYMOUS:
            return plain, False
        if (plain and plain in _ANONYMOUS) or r in _ANONYMOUS:
            return "", False
        return "", True

    def sentence_subject(self, text: str) -> str:
        """The name at the start of the first clause of a sentence (云火急绰枪上马，…，急问曰 -> 云)."""
        m = 0
        while m < len(text) and text[m] not in CLAUSE_DELIMS:
            m += 1
        first = text[:m]
        if not first:
            return ""
        name, _ = self._subject(first)
        if name and first.find(name) <= 2:
            return name
        return ""


def _sentence_starts(p: str, spans: list[tuple[int, int | None]]) -> list[int]:
    """Offsets where a sentence starts cleanly: after 。！？… (and closing quotes), never inside a quote."""
    inside = []
    for o, c in spans:
        inside.append((o, c if c is not None else len(p)))
    starts = [0]
    j = 0
    n = len(p)
    for i, ch in enumerate(p):
        if ch in SENTENCE_END or (ch in CLOSERS and i > 0 and p[i - 1] in SENTENCE_END):
            k = i + 1
            while k < n and (p[k] in SENTENCE_END or p[k] in CLOSERS):
                k += 1
            if k >= n:
                continue
            # reject offsets inside a quote span (but the offset right after a closing quote is fine)
            while j < len(inside) and inside[j][1] < k - 1:
                j += 1
            if j < len(inside) and inside[j][0] < k <= inside[j][1]:
                continue
            if starts[-1] != k:
                starts.append(k)
    return starts


def _clause_start(p: str, colon: int) -> int:
    m = colon
    while m > 0 and p[m - 1] not in CLAUSE_DELIMS:
        m -= 1
    return m


def _context_start(p: str, clause_start: int, end: int, sentence_starts: list[int], context_chars: int) -> int:
    lo = end - context_chars
    if lo <= 0:
        return 0
    i = bisect.bisect_left(sentence_starts, lo)
    if i < len(sentence_starts) and sentence_starts[i] <= clause_start:
        return sentence_starts[i]
    # no sentence boundary inside the window: fall back to a clause boundary, else the speaker clause itself
    for k in range(lo, clause_start):
        if p[k - 1] in "，；、,;":
            return k
    return clause_start


def _resolve_short_names(speeches: list[_Speech], paragraphs: list[Paragraph], finder: SpeakerFinder) -> None:
    """飞 -> 张飞: a one-character speaker becomes the listed longer name ending in it, mentioned most recently."""
    shorts = {s.speaker for s in speeches if len(s.speaker) == 1}
    if not shorts:
        return
    full_names = [n for n in finder.names if len(n) >= 2 and n[-1] in shorts and n not in _ANONYMOUS]
    if not full_names:
        return
    offsets = []
    pos = 0
    for p in paragraphs:
        offsets.append(pos)
        pos += len(p.text) + 1
    text = "\n".join(p.text for p in paragraphs)
    mention = re.compile("|".join(sorted(map(re.escape, full_names), key=len, reverse=True)))
    by_last: dict[str, tuple[list[int], list[str]]] = {}
    for m in mention.finditer(text):
        pos_list, names = by_last.setdefault(m.group()[-1], ([], []))
        pos_list.append(m.start())
        names.append(m.group())
    # Look back at most this far: a name last seen several chapters ago is probably someone else.
    horizon = 30000
    for s in speeches:
        if len(s.speaker) != 1 or s.speaker not in by_last:
            continue
        where = offsets[s.para] + s.colon
        pos_list, names = by_last[s.speaker]
        i = bisect.bisect_left(pos_list, where) - 1
        if i >= 0 and where - pos_list[i] <= horizon:
            s.speaker = names[i]


# -- the extractor -----------------------------------------------------------------------------------


def _looks_like_path(value: str) -> bool:
    return "\n" not in value and len(value) < 1024 and (os.path.exists(value) or value.lower().endswith((".txt", ".text")))


def extract_dialogue(
    text_or_path: str | os.PathLike,
    *,
    context_chars: int = DEFAULT_CONTEXT_CHARS,
    encoding: str = "auto",
    speaker: str | None = None,
    stats: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every quoted speech of a novel as {"context", "chat", "speaker", "chapter", "line"}.

    text_or_path: a path (Path, or a str naming an existing file or ending in .txt) or the novel's text.
    context_chars: the most narrative characters kept before the speech (the speaker clause is always kept).
    speaker: keep only this speaker's lines (after short names are expanded, so 张飞 also gets his 飞曰).
    stats: when given, filled with counts (paragraphs, quotes, unclosed, speeches, with_speaker, encoding).
    Raises DataError for a missing/undecodable file or a text in which no speech is found."""
    if context_chars < 0:
        raise ConfigError(f"--context-chars must be >= 0 (got {context_chars})")
    where = None
    if isinstance(text_or_path, os.PathLike) or (isinstance(text_or_path, str) and _looks_like_path(text_or_path)):
        where = str(text_or_path)
        text, used = read_text_file(text_or_path, encoding)
    elif isinstance(text_or_path, str):
        text, used = text_or_path.lstrip("\ufeff"), "str"
    else:
        raise ConfigError(f"extract_dialogue expects a path or the text (got {type(text_or_path).__name__})")

    paragraphs = split_paragraphs(text)
    speeches: list[_Speech] = []
    quotes = unclosed = 0
    starts_cache: dict[int, list[int]] = {}
    spans_cache: dict[int, list[tuple[int, int | None]]] = {}
    for pi, para in enumerate(paragraphs):
        p = para.text
        if not any(q in p for q in "“「\""):
            continue
        spans = quote_spans(p)
        spans_cache[pi] = spans
        for o, c in spans:
            quotes += 1
            k = o - 1
            while k >= 0 and p[k] in " \u3000\t":
                k -= 1
            if k < 0 or p[k] not in COLONS:
                continue
            if c is None:
                unclosed += 1
                continue
            speeches.append(_Speech(pi, o, c, k, _clause_start(p, k), para.line_at(o)))

    finder = SpeakerFinder(paragraphs[s.para].text[s.clause_start : s.colon] for s in speeches)
    prev: _Speech | None = None
    for s in speeches:
        p = paragraphs[s.para].text
        name, elided = finder.speaker_of(p[s.clause_start : s.colon])
        if elided:
            # the sentence holding this clause: back to the last sentence end or closing quote
            b = s.clause_start
            while b > 0 and p[b - 1] not in SENTENCE_END and p[b - 1] not in "”」\"":
                b -= 1
            if b > 0 and p[b - 1] in "”」\"" and prev is not None and prev.para == s.para and prev.close == b - 1:
                # right after a speech: its speaker goes on (…”又曰：), unless the sentence names someone
                name = finder.sentence_subject(p[b : s.clause_start]) or prev.speaker
            else:
                name = finder.sentence_subject(p[b : s.colon])
        s.speaker = name
        prev = s
    _resolve_short_names(speeches, paragraphs, finder)

    records: list[dict[str, Any]] = []
    for s in speeches:
        if speaker is not None and s.speaker != speaker:
            continue
        p = paragraphs[s.para].text
        if s.para not in starts_cache:
            starts_cache[s.para] = _sentence_starts(p, spans_cache[s.para])
        start = _context_start(p, s.clause_start, s.colon + 1, starts_cache[s.para], context_chars)
        records.append(
            {
                "context": p[start : s.colon + 1],
                "chat": p[s.open : s.close + 1],
                "speaker": s.speaker,
                "chapter": paragraphs[s.para].chapter,
                "line": s.line,
            }
        )
    if stats is not None:
        stats.update(
            encoding=used,
            paragraphs=len(paragraphs),
            chapters=len({p.chapter for p in paragraphs if p.chapter}),
            quotes=quotes,
            unclosed=unclosed,
            speeches=len(speeches),
            with_speaker=sum(1 for s in speeches if s.speaker),
            names=len(finder.names),
            records=len(records),
        )
    if not speeches:
        raise DataError(
            "no dialogue found: expected quoted speech after a colon, e.g. 曹洪曰：“……” or 行者道：\"……\" "
            f"({len(paragraphs)} paragraphs, {quotes} quotes read)",
            where,
        )
    if speaker is not None and not records:
        top = Counter(s.speaker for s in speeches if s.speaker).most_common(8)
        raise DataError(
            f"no speech by speaker {speaker!r}; most frequent speakers: " + "、".join(f"{n}({c})" for n, c in top),
            where,
        )
    return records


# -- output ------------------------------------------------------------------------------------------


def records_to_conversations(records: list[dict[str, Any]], source: str = "novel") -> list["Conversation"]:
    """user = context, assistant = chat; meta keeps speaker, chapter, line and source."""
    from tunesmith.conversation import Conversation

    return [
        Conversation.single_turn(
            r["context"], r["chat"], speaker=r["speaker"], chapter=r["chapter"], line=r.get("line"), source=source
        )
        for r in records
    ]


def write_jsonl_atomic(rows: Iterable[dict[str, Any]], out: str | os.PathLike) -> int:
    """Write JSON lines to a temp file next to `out`, then os.replace() it: never a half-written file."""
    out = Path(out)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise DataError("output folder does not exist", str(folder))
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=folder)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return n


def write_dialogue(records: list[dict[str, Any]], out: str | os.PathLike, fmt: str = "cosplay", source: str = "novel") -> int:
    """Write records as cosplay JSONL ({context, chat, speaker, chapter, line}) or Conversation JSONL."""
    if fmt == "cosplay":
        return write_jsonl_atomic(records, out)
    if fmt == "conversation":
        return write_jsonl_atomic((c.to_dict() for c in records_to_conversations(records, source)), out)
    raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
