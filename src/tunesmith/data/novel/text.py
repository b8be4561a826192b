"""A novel's text as paragraphs: e-book banners dropped, hard-wrapped lines re-joined, chapters tagged.

    from tunesmith.data.novel.text import split_paragraphs
    for p in split_paragraphs(text):
        p.text, p.line, p.chapter      # "曹仁回城中，…", 8685, "第五十一回"
        p.line_at(offset)              # the source line of a character of the re-joined paragraph
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field

from tunesmith.data.novel.lexicon import CLOSERS, COLONS, SENTENCE_END

_BANNER_LINE = re.compile(
    r"https?://|www\.|\.(?:com|net|cn|org)\b|电子书|版权声明|转载请保留|整理校对|txt\s*下载", re.I
)
_RULE_LINE = re.compile(r"^[ \t\u3000]*[-=_*—～~]{8,}[ \t\u3000]*$", re.M)
_RUNNING_HEAD = re.compile(r"^[ \t\u3000]*\S{1,20}--\S{1,20}--", re.M)  # "吴承恩--西游记--第二回 ..." page heads
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


def heading_label(line: str) -> str | None:
    s = line.strip()
    if len(s) > 60 or any(c in s for c in "。！？“”"):
        return None
    m = _HEADING.match(s)
    if not m:
        return None
    return re.sub(r"\s+", "", m.group(1))


def _drop_banners(lines: list[str]) -> list[str]:
    """Blank out e-book site banners (a short block between rules that names a site), rules, running heads
    and URL lines.  The patterns run once over the whole text; only the few lines they hit are looked at."""
    joined = "\n".join(lines)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def hit_lines(pattern: re.Pattern[str]) -> list[int]:
        return sorted({bisect.bisect_right(starts, m.start()) - 1 for m in pattern.finditer(joined)})

    # cheap substring tests first: most texts have no rules or running heads at all
    rules = hit_lines(_RULE_LINE) if any(r * 8 in joined for r in "-=_*—～~") else []
    banners = hit_lines(_BANNER_LINE)
    heads = hit_lines(_RUNNING_HEAD) if "--" in joined else []
    if not (rules or banners or heads):
        return lines
    out = list(lines)
    for a, b in zip(rules, rules[1:]):
        if b - a <= 15 and any(a < i < b for i in banners):
            for i in range(a, b + 1):
                out[i] = ""
    for i in rules + heads:
        out[i] = ""
    for i in banners:
        if len(lines[i]) < 120 and "“" not in lines[i]:
            out[i] = ""
    return out


def _join(a: Paragraph, b: Paragraph) -> Paragraph:
    shift = len(a.text)
    return Paragraph(a.text + b.text, a.line, line_starts=a.line_starts + [(o + shift, ln) for o, ln in b.line_starts])


def _quote_balance(s: str) -> int:
    return s.count("“") - s.count("”") + s.count("「") - s.count("」")


def _merge_broken(paragraphs: list[Paragraph]) -> list[Paragraph]:
    """Undo line breaks inside a sentence: `歌曰：` + a line opening a quote (kept apart until the quote
    closes, at most 8 lines on), and lines ending in ，；、 before a line of text."""
    out: list[Paragraph] = []
    i = 0
    n = len(paragraphs)
    while i < n:
        p = paragraphs[i]
        i += 1
        while i < n and heading_label(paragraphs[i].text) is None and heading_label(p.text) is None:
            nxt = paragraphs[i]
            if p.text[-1:] in COLONS and nxt.text[:1] in "“「":
                # join up to the line that closes the quote; if none does within 8, join just the first
                balance, k = _quote_balance(nxt.text), i
                while balance > 0 and k + 1 < min(n, i + 8):
                    k += 1
                    balance += _quote_balance(paragraphs[k].text)
                last = k if balance <= 0 else i
                for j in range(i, last + 1):
                    p = _join(p, paragraphs[j])
                i = last + 1
            elif p.text[-1:] in "，；、,;" and nxt.text[:1] not in "“「":
                p = _join(p, nxt)
                i += 1
            else:
                break
        out.append(p)
    return out


def split_paragraphs(text: str) -> list[Paragraph]:
    """Rebuild paragraphs (re-joining hard-wrapped lines) and tag each with its chapter heading."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = _drop_banners(text.split("\n"))
    widths = [_width(line.rstrip()) for line in lines]
    if not any(widths):
        return []
    paragraphs = _merge_broken(_join_wrapped(lines, widths, *_wrapping(lines, widths)))
    return _tag_chapters(paragraphs)


def _wrapping(lines: list[str], widths: list[int]) -> tuple[int, bool, bool]:
    """(wrap width, whether the text is hard-wrapped, whether an indent alone starts a paragraph)."""
    nonblank = [w for w in widths if w]
    # Hard-wrapped: a third or more of the lines share one width (±2 columns), and most of those lines
    # stop in mid-sentence (a text with one paragraph per line ends its lines with 。！？” instead).
    counts = Counter(w for w in nonblank if w > 20)
    wrap_width, wrapped = 0, False
    if counts:
        wrap_width = counts.most_common(1)[0][0]
        near = [line.rstrip() for line, w in zip(lines, widths) if w > 20 and abs(w - wrap_width) <= 2]
        mid_sentence = sum(1 for line in near if line[-1:] not in SENTENCE_END + CLOSERS + "：:")
        wrapped = len(near) >= 0.3 * len(nonblank) and wrap_width >= 40 and mid_sentence >= 0.5 * len(near)
    indented = sum(1 for line in lines if line.strip() and line[:1] in " \u3000\t")
    # In an indented text the indent alone marks a new paragraph; wrap widths vary by a few columns.
    use_indent = wrapped and indented >= 0.05 * len(nonblank)
    return wrap_width, wrapped, use_indent


def _join_wrapped(
    lines: list[str], widths: list[int], wrap_width: int, wrapped: bool, use_indent: bool
) -> list[Paragraph]:
    """Source lines -> paragraphs: a new one at a blank line, a heading, an indent, or (in a text without
    indents) after a short line; every line of a text that is not hard-wrapped is its own paragraph."""
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
        heading = heading_label(s) is not None
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
    return paragraphs


def _tag_chapters(paragraphs: list[Paragraph]) -> list[Paragraph]:
    """Tag each paragraph with its chapter; a chapter that repeats an earlier one word for word (a copy
    error) is dropped."""
    out: list[Paragraph] = []
    seen: dict[int, int] = {}
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
        label = heading_label(p.text)
        if label is not None:
            close_block()
            chapter = label
            block = [p]
        else:
            block.append(p)
        p.chapter = chapter
    close_block()
    return out
