"""Mine role-play dialogue from a Chinese novel: every quoted speech becomes {context, chat, speaker, chapter}.

    tunesmith data extract-dialogue datasets/four-novels-raw/三国演义.txt -o sanguo.jsonl
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
import functools
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.data.encoding import read_text_file
from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write_lines

if TYPE_CHECKING:  # the importer is loaded lazily: extraction alone needs no data-layer import
    from tunesmith.conversation import Conversation

# Default context window.  Both published records of the cosplay format start at their paragraph start,
# which any window of 16 or more characters reproduces; 200 keeps one or two preceding sentences or
# speeches of a long paragraph, enough situation for the model without drowning the speaker cue.
DEFAULT_CONTEXT_CHARS = 200
FORMATS = ("cosplay", "conversation")

SENTENCE_END = "。！？!?…"
_CLOSER_OF = {"“": "”", "「": "」"}
CLOSERS = "”’」』\"'"
COLONS = "：:"
# Characters that end a clause: the speaker of `X曰：` is looked for after the last of these.
CLAUSE_DELIMS = frozenset("，。！？；：”’」』（）()…,.!?;:　 \t—\"'")

# -- text cleaning ---------------------------------------------------------------------------------

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


def _heading_label(line: str) -> str | None:
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
        while i < n and _heading_label(paragraphs[i].text) is None and _heading_label(p.text) is None:
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
    nonblank = [w for w in widths if w]
    if not nonblank:
        return []
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

    paragraphs = _merge_broken(paragraphs)

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
    if '"' in p:
        # ASCII quotes do not say which end they are: pair those outside other quotes in order.
        inside = [(o, len(p) if c is None else c) for o, c in spans]
        idx = [i for i, ch in enumerate(p) if ch == '"' and not any(o < i < c for o, c in inside)]
        spans.extend((idx[k], idx[k + 1] if k + 1 < len(idx) else None) for k in range(0, len(idx), 2))
    spans.sort()
    return spans


def _paired_spans(p: str, opener: str, closer: str) -> Iterable[tuple[int, int | None]]:
    marks = [m.start() for m in re.finditer(f"[{opener}{closer}]", p)]  # only the quote marks are visited
    i = p.find(opener)
    j = 0
    while i >= 0:
        depth, end, restart = 1, None, None
        while j < len(marks) and marks[j] <= i:
            j += 1
        for k in marks[j:]:
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
        yield (i, end)
        if end is not None:
            i = p.find(opener, end + 1)
        elif restart is not None:
            i = restart
        else:
            return


# -- speakers ----------------------------------------------------------------------------------------

# A clause before the colon ends in one speech verb (stripped once) after any number of manner words
# (stripped repeatedly): 孔明 | 大笑 | 曰, 行者 | 暗 | 笑 | 道.  云 and 言 are verbs only at the very end, so
# 赵云曰 keeps its 云; single characters that often end a name (遂 in 韩遂, 进 in 何进) are left out.
_VERBS = (
    "曰 道 说 云 言 问 答 叫 喊 嚷 喝 骂 叱 报 奏 禀 启 告 诉 谏 劝 叹 呼 吟 诵 称 谢 嘱 应 对 谓 想 忖 念 祝 笑 哭"
    " 吩咐 分付 嘱付 嘱咐 传令 下令 商议 计议 自思 暗想 寻思 暗思 暗忖 沉吟 叫声 道声 开言 开口 答应 回言 言语"
).split()
_MODIFIERS = (
    "问 答 叫 喊 嚷 喝 骂 叱 报 奏 禀 启 告 诉 谏 劝 叹 呼 吟 诵 称 谢 嘱 应 对 谓 想 忖 念 祝 说 吩咐 分付"
    " 笑 喜 怒 惊 又 乃 便 因 复 亦 急 忙 皆 俱 都 齐 共 冷 暗 陪"
    " 回 慌 即 就 却 还 只 泣 哭 拜 跪 揖 了 着 之 而 大 心 口 声"
    " 高叫 高呼 厉声 高声 低声 大声 连声 齐声 应声 失声 放声"
    " 一声 仰天 长叹 欣然 愕然 慌忙 连忙 急忙 赶忙 上前 近前 向前"
    " 进前 出班 出列 再拜 拜谢 称谢 顿首 叩头 磕头 点头 摇头"
    " 拍手 抚掌 合掌 顿足 拱手 躬身 起身 施礼 变色 改容 垂泪 流泪"
    " 含泪 掩面 满面 满心 心中 心下 心上 口中 口里 暗暗 呵呵 哈哈 嘻嘻 欢喜 冷笑 暗笑 陪笑 笑嘻嘻 战兢兢 战战兢兢"
    " 心惊胆战 慌了 见了 听了 闻言 听说 听见 看见 见说 闻说 看了 看 止之 止住 扯住 问之 谓之 视之 指之 出 而出 入"
    " 跪下 跪倒 面前 开口 只得 不住 忍不住 的 高 回头 转身 作礼 传旨 眼中 欠身 起来 进言 商议 计议 传令 下令 嘱付 嘱咐"
" 自思 暗想 寻思 暗思 暗忖 沉吟 叫声 道声 开言 答应 回言 言语 各自 暗自 十分 一个个 聚众 一齐 一同 同声 异口同声 跳"
" 施礼 作揖 唱喏 佯 佯醉 佯输 佯笑 佯惊 佯怒 伏地 拜伏 跪伏 伏于地 拜伏于地 哭拜于地 拜于地"
" 伏于地下 具 请 勃然 奋然 愕然 欣然 忿然 毅然 慨然 喟然 怫然 默然 黯然 恍然 忻然 怡然 泰然 哂然"
" 尝 吃惊 称赞 称羡 尽皆 出语 止不住 禁不住 按不住 礼拜 埋怨 抱怨 滴泪 噙泪"
" 拭泪 附耳 低言 扬言 横刀 勒马 以手加额 咬牙 切齿 跌足 捶胸 拱手 举手 攒眉 皱眉"
" 吟诗 作诗 题诗 赋诗 作歌 唱歌 大呼小叫 战呵呵 战呵呵的 战兢兢的 颤巍巍 笑吟吟 笑嘻嘻的 喜孜孜 大惊小怪"
" 大吃一惊 吃了一惊 大吃了一惊 拦住 挡住 拉住 揪住 抓住 按住 扶住 抱住 接住 叫住 喝住 留住 劝住 架住 顶住"
).split()
_VERB_TAIL = re.compile("(?:" + "|".join(sorted(set(_VERBS), key=len, reverse=True)) + ")$")
_MODIFIER_TAIL = re.compile("(?:" + "|".join(sorted(set(_MODIFIERS), key=len, reverse=True)) + ")$")
_TITLES = (
    "太史令 黄门侍郎 主簿 主薄 长史 参军 司徒 司空 太尉 校尉 中军校尉"
    " 司隶校尉 侍御史 御史 议郎 中常侍 常侍 尚书 仆射 军师 都督 大都督"
    " 丞相 太守 刺史 将军 大将军 大将 上将 部将 先锋 牙将 偏将"
    " 副将 裨将 谋士 谋臣 从事 别驾 治中 功曹 督邮 县令 太傅 太师"
    " 太保 大夫 侍中 黄门 中郎将 郎中 护军 监军 司马 军司马 使者"
    " 近臣 内侍 宦官 国舅 皇叔 元帅 学士 温侯 侍郎 门下侍郎 都护"
    " 都尉 骑都尉 校尉 典军校尉 中郎 小校 牙门将 督将 守将 老将 大将 小将 主将 副将 家将 司农 大司农 司隶 中书 中书令"
    " 廷尉 卫尉 太常 太仆 少府 尚书令 光禄勋 行军司马 参谋 长水校尉 步兵校尉 羽林监 虎贲 散骑常侍 给事中 谏议大夫"
    " 天王 真君 星官 长老 法师 禅师 国师 祖师 老师 菩萨 大仙 太子 公主 娘娘 小姐 员外 驿丞 僧官"
).split()
_TITLE_RE = re.compile("(?:" + "|".join(sorted(_TITLES, key=len, reverse=True)) + ")")
# Words that open a clause before its subject; tried one at a time only when no name matches at the start.
_LEADERS = sorted(
    (
        "却说 且说 话说 只见 但见 忽见 又见 却见 于是 当下 当时 此时"
        " 那时 随即 随后 少顷 须臾 忽然 原来 后来 次日 当日 是日"
        " 早有 只得 不期 谁知 不想 果然 正是 慌得 唬得 吓得 急得 气得 喜得 多亏 幸亏 内有 内中 其中 中有 旁有 傍有"
        " 忽 乃 遂 便 又 却 因 时 但 只 正 即 就 再 复 方 才 好 密 私 潜 悄 当先 为首"
        " 急 也 亦 今 且 这 那 那个 这个 个 为首 再说 惟有 只有 却有 有 真个 果然 好"
    ).split(),
    key=len,
    reverse=True,
)
# 其姊辛宪英 / 长子毋丘甸: a relative named right after; alone (其妻曰) the words are the speaker.
_KIN_LEADERS = "其姊 其妹 其兄 其弟 其妻 其母 其父 其子 其女 其侄 其叔 其婿 其甥 长子 次子 幼子 其长子 其次子".split()
_LEADERS = sorted(_LEADERS + _KIN_LEADERS, key=len, reverse=True)
# A name right after one of these is the person spoken to (谓操曰, 问孔明曰, 对行者道), not the speaker.
_ADDRESSEE_MARKS = frozenset("谓问对告与向叱骂责指顾见禀劝嘱唤叫教令请拜谢迎奏揖扯召命遣聚付谕招呼赐")
# The same marks minus those that are also surnames or name characters (顾雍, 向宠, 谢旌, 令狐, 县令):
# a leftover subject holding one of these is a verb phrase (谓操, 对行者, 叫小妖), not a name.
_VERB_MARKS = _ADDRESSEE_MARKS - frozenset("顾向谢令见呼赐")
# Before a name at the end of a clause, these make it the listener (分付鲁肃曰, 报知曹操曰, 关、张曰).
_LISTENER_BEFORE = _ADDRESSEE_MARKS | frozenset("付呼戒招谕知聚、和同及把被将")
# ... and these make it the speaker: a place or rank before the name (阶下蒯良出曰, 长子孙策曰, 听得杨秋说道).
_SPEAKER_BEFORE = frozenset("下子士将有得中上内旁傍前后臣官吏谋")
# Not a character: poems and documents quoted after 曰.
# A character reciting or singing (孔明才醒，口吟诗曰 / 唐妃亦作歌曰) still speaks; these are the narrator's.
_DOCUMENT = re.compile(
    r"诗[云叹赞单道]|有诗|后人|^诗曰|[词赞偈颂铭谣]曰|其[略文书词歌]|书[略曰云]|表[略文]|檄[文曰]|榜文|诏[曰略云]|碑[文上曰]"
    r"|写着|上书|内书|疏曰|单道|有篇|古风|祭文|读曰|大书|一联"
)
# An unnamed newcomer (忽闻背后一人问曰, 惟有一小将曰): the text names him later if at all.
_NEWCOMER = re.compile(
    r"(?:^|[有见乃忽中下内上后旁傍前里])一(?:[个位员名]|[\u4e00-\u9fff]{0,2}?(?:人|将|者|汉|卒|童|官|僧|道|妖|怪|女|妇))"
)
# Characters that end a rank or a kind of being; a subject the name list does not know ends in one of them.
_ROLE_CHARS = "官君后帅妃将僧神仙童婆翁圣魔精妖怪刚吏臣卒兵汉女母士"
_ROLE_START = re.compile(
    "(?:众|诸|群|两|二|三|四|八)?[\u4e00-\u9fff]{0,3}?[" + _ROLE_CHARS + "](?=[^" + _ROLE_CHARS + "]|$)"
)
# Someone unnamed coming on, as the subject of a clause (一人挺身出, 一员少年将军, 一大汉); not 一往一来.
_LOOK_BACK_NEWCOMER = re.compile(r"一(?:人|将|员|位|名|少年|大汉|老[者人翁叟]|小[将童卒校])")
# A subject opening with 一 that is a person (一老者, 一个小妖), not a manner (一把揪住, 一齐, 一面).
_PERSON_CHARS = "人者汉童官僧道妖怪女妇翁叟卒校婢奴仆军兵将魔精神仙"
_ONE_PERSON = re.compile(rf"一(?:[个位员名夥伙]|[\u4e00-\u9fff]{{0,3}}?[{_PERSON_CHARS}])")
# Troops or people arriving (忽刺斜里一彪军到, 山后一队人马, 又见两个总角蓬头女子): someone not named yet.
_COUNT = re.compile("[两二三四五六七八九十百几数]+[个员名]")
# 一个军士 / 一个巡海的夜叉 / 一个胆量大的和尚 (not 一个杏叶儿, 一个巴掌, 一个个)
_ONE_OF_KIND = re.compile(rf"一个(?!个)[^，]{{0,6}}?[{_PERSON_CHARS}]")
# Before a counted group these make it an object (领十数个小妖, 将两个妖怪, 与两三个小和尚).
_LEADS = frozenset("领将把引带率同与和及被叫唤请打拿捉擒杀斩见点差遣调拨起整聚集会召")
_ARRIVING = re.compile(
    rf"一(?:彪|队|枝|支|哨|伙|夥|簇)(?:军|人马|兵|人)|(?<!第)[两二三四五六七八九十百几数]+(?:个|员|名)[^，]{{0,5}}?[{_PERSON_CHARS}]"
)
# Unnamed little groups (着两个急去郡中报道, 内中几个道).
_UNNAMED = re.compile(r"[两二三四五六七八九十百几数][个人名员口]|众人皆")
_PLACE_END = frozenset("后前处间中里外上下边旁内头")
# Relatives named by a possessor: 土地婆儿, 汜妻, 他丈母, 其姊辛宪英.
_KIN_AFTER_NAME = re.compile("之?(?:婆儿|婆婆|老婆|娘子|浑家|夫人|妻|母亲|母|之子|之女)")
_KIN_NOUNS = frozenset(
    (
        "丈母 丈人 母亲 父亲 老母 老父 妻子 妻 娘子 浑家 老婆 丈夫 儿子 女儿 孩儿"
        " 哥哥 兄长 兄弟 妹子 姐姐 师父 徒弟 姊 弟 兄 母 父 子 女"
    ).split()
)
# Before a name standing apart: a verb taking a person, a rank (唤陈应, 见卞喜, 吴将于诠, 黄门张当).
_BEFORE_STANDALONE = _ADDRESSEE_MARKS | frozenset("将把与和及同遇迎斩杀擒捉拿门官士军督史尉郎使人是乃")
# A one-character name followed by one of these is half a word (飞身跳跃, 化成一个左慈, 直至城下).
_WORD_AFTER_SINGLE = frozenset("身成为作")
# What follows a one-character given name opening a clause (祖于马上谓宁曰, 旋问部将曰).
_GIVEN_FOLLOWERS = frozenset(
    "于在乃便即遂亦又急忙大引领率视见闻听谓问曰道笑怒喜惊叹拜回出入与令使教命唤叱喝骂叫提挺纵拍勒拨"
)
# What follows a title standing alone as the subject: a verb of moving or speaking, an adverb.
_AFTER_BARE_TITLE = frozenset("回入出进见至到乃便即遂急忙慌亦又再复皆都齐笑怒惊哭拜跪奏禀告曰道问答叫")
# Look-back clause shapes: 惊动本司狱官 (the one stirred), 原来是X的太子 / 乃张飞也 (the one made out),
# 早有曹军飞报 (a messenger), 转出张飞 (someone coming out).
_STIRRED = re.compile("(?:惊动|唬醒|惊醒)了?(?:那|这)?(.{2,6})$")
_IT_WAS = re.compile("(?:原来是|原来乃是|乃是|却是)(.{2,12})")
_WHO_IS = re.compile("乃(.{2,4})也")
_THERE_WAS = re.compile("[忽早却又]?有")
_CAME_OUT = re.compile("[转闪走撞跳杀拥]出(.{2,6})$")
# A courtesy name given as someone is introduced (表字光蕊 / 字玄德).
_COURTESY = re.compile("表字([\u4e00-\u9fff]{2})$")
# Adverbs saying that several speak at once (都道, 俱曰, 齐声道, 一齐叫).
_PLURAL_VERB = re.compile("[都俱皆共][^，]{0,6}$|一齐|齐声|同声|齐[叫喊道曰说呼]")
# A plural demonstrative opening a subject the name list does not know (那些妃子, 这些枷锁的和尚).
_POINTED = re.compile("(?:那些|这些|那伙|这伙|那班|那一班|这一班)(?=[\u4e00-\u9fff])")
# A group after a place word, as a subject (帐下众将听知, 阶下群臣).
_PLACED_GROUP = re.compile(
    "(?:帐下|帐前|阶下|堂下|殿下|殿上|城上|城下|两边|两旁|左右|满朝|外面|里面|门外|座上|座间)?(?:文武)?"
    "([众诸群多][\u4e00-\u9fff]{1,2}?)(?=[皆都齐俱各亦又乃便听闻见入出拜]|$)"
)
# Someone being there (忽有当驾官奏道, 旁有侍臣曰): the noun after 有 is the speaker.
_THERE_IS = re.compile("[忽早又却只但旁傍内中正]+有")
# An order to pass a message on: 命传报 / 令人报知 / 使人传语 (the one giving it speaks).
_RELAY = re.compile("[命令使教着][人左右从者]*[传通]?(?:报|禀|语|言|话|说)")
# Verbs of hearing: the voice that follows speaks (只听那妖王叫道), not the one who hears.  Not 闻言 / 听说 /
# 闻知 (the one who heard goes on to speak).
_HEARD = re.compile("(?:只|但|忽|又|却|猛)?(?:听|闻)[得见]|(?:只|但|忽|又|却|猛)(?:听|闻)(?![言说知之罢了此报])")
# Verbs of answering: an elided 答曰 after 问X曰 is X speaking.
_ANSWER = re.compile(r"(?:答|对|应|回)(?:曰|道|言|说)$|^(?:答|对)$")
# Surnames, for a name at the clause start that was a speaker only once (杨锋引兵入曰, 辛毗哭拜于地曰).
# Single characters that are also common words (于 时 和 方 文 国 ...) are left out on purpose.
_SURNAMES = frozenset(
    "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜戚谢邹喻柏窦章苏潘葛奚范彭郎鲁韦昌马苗凤俞任袁"
    "柳酆鲍史唐费廉岑薛雷贺倪汤滕殷罗毕郝邬乐傅皮卞伍余卜顾孟黄穆萧尹姚邵湛汪祁毛禹狄米贝臧伏戴谈宋茅庞熊纪舒屈项祝"
    "董梁杜阮蓝闵席季麻贾娄危江童颜郭梅盛林刁钟徐邱骆高夏蔡田樊胡凌霍虞万柯昝管卢莫房裘缪解宗丁宣贲邓郁杭洪诸崔吉钮"
    "龚程嵇邢滑裴陆荣翁荀羊惠甄芮靳汲邴糜焦巴弓牧隗侯宓蓬郗班仇栾甘厉戎祖符刘詹龙叶黎蓟宿怀蒲邰鄂索籍赖卓蔺屠蒙"
    "乔胥苍党翟谭贡劳逄姬申扶堵冉郦雍桑桂濮牛寿扈燕冀郏浦晏柴瞿阎慕茹艾鱼庾暨衡耿弘匡寇阙殳沃蔚夔巩聂晁敖融訾辛阚"
    "简饶曾鞠丰巢关蒯荆游竺逯桓车逢郤"
)
# Right before a one-character name, even common-word surnames are safe (文鸯…鸯曰, 于禁…禁曰).
_LOCAL_SURNAMES = _SURNAMES | frozenset("文石关云伏")
_COMPOUND_SURNAMES = (
    "诸葛 司马 夏侯 公孙 太史 欧阳 皇甫 令狐 上官 尉迟 长孙 慕容"
    " 宇文 淳于 东方 西门 南宫 百里 呼延 钟离 独孤 轩辕 端木 毋丘"
).split()
# A second character that makes surname+X a phrase, not a name (马上, 何故, 吴兵, 张开).
_NOT_GIVEN_NAME = frozenset(
    "上下前后来去出入不也之的了着是在有兵军将马人等众故必时曰道说言问日月年"
    "开口手头面里中处州城郡县国地罪鞭剑刀枪弓箭旗书印门家多性些般次位个"
)
# What follows a name in narrative: speech and action verbs, adverbs (孔明笑曰, 杨锋引兵, 辛毗急).
_NAME_FOLLOWERS = (
    "曰道说问答笑叫喝骂怒喜惊叹引领率见视谓乃遂便即亦又等听闻急拜告奏谏密慌忙令使教命唤叱挺拍纵提看望接迎朝私暗"
)
_FOLLOWER_SET = frozenset(_NAME_FOLLOWERS)
# Surname + one of these is a person too (蔡夫人, 伏皇后, 严氏).
_SURNAME_TITLES = ("夫人", "皇后", "太后", "贵妃", "娘娘", "小姐", "公子", "氏")
# Anonymous or pronoun subjects: the record keeps speaker "".
# Clause subjects that end a look-back: the speaker is someone unnamed (那二人举枪向孙策乱搠，大叫曰).
_ANONYMOUS_GROUPS = ("二人", "两人", "三人", "数人", "众人", "一人", "有人", "其人", "二将")
_ANONYMOUS = frozenset(
    "人 一人 有人 或 或人 其人 他 她 彼 此人 某 吾 我 汝 你 之 二人 两个 一个 后人 众人皆 有一人".split()
)
_NAME_CHARS = re.compile(r"^[\u4e00-\u9fff]{1,4}$")
_NOT_IN_NAMES = frozenset("之了的着不是在有也而以于其所此这把被说曰道问得住过")
# Names and role words do not end in a place, body part or verb ending (半空中, 路旁, 起手, 满眼, 心内) nor
# start with an action (按落云头, 掣铁棒, 搀起, 惊讶, 仰面).
_NOT_NAME_END = frozenset("上下中里内边旁前起落住着了过得声眼口面心手脚身")
_ACTION_START = frozenset("按掣吩搀翻鼓思惊仰哀微吆咄发勒拔拍挺举抚摇点哭笑叫骂喝跳跑走坐站躬拱转低抬回避闪拥")
# A single character left over that is a verb, adverb or clause opener is no name (问曰, 乃曰, 遂曰).
_SINGLE_NOT_NAME = frozenset(w for w in _MODIFIERS + _LEADERS if len(w) == 1) | frozenset(
    "遂出入来去上下前后曰道言说自等以与在于为将把被向从则及所此其若如吆咄哀发喝叫笑哭战思"
)
# A leftover starting with one of these is an action (去吃酒, 把行者, 自觉), not a subject.
_NOT_NAME_START = "之了的着不是在把被将去来到往走跑吃看听使等自入回与同至当闻见望以"
# Doubled endings that are people (婆婆, 哥哥, 猩猩); any other X+YY (慌张张, 战兢兢, 泪汪汪) is a manner word.
_KIN_DOUBLES = frozenset("婆公哥姐娘爷奶妹弟叔伯舅姑嫂猩")


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def _strip_tail(s: str) -> str:
    """孔明大笑曰 -> 孔明, 行者暗笑道 -> 行者, 悟空近前跪下 -> 悟空, 谓众将曰 -> 谓众将;
    '' when only verbs and manner words."""
    m = _VERB_TAIL.search(s)
    if m:
        s = s[: m.start()]
    while s:
        m = _MODIFIER_TAIL.search(s)
        if not m:
            break
        s = s[: m.start()]
    return s


_LEADER_RE = re.compile("^(?:" + "|".join(map(re.escape, _LEADERS)) + ")")


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def _strip_leaders(s: str) -> str:
    """却说曹操… -> 曹操…, 只见那老者 -> 老者 (at most three openers, never the whole clause)."""
    for _ in range(3):
        m = _LEADER_RE.match(s)
        if not m or m.end() >= len(s):
            break
        s = s[m.end() :]
    return s


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def _strip_title(s: str) -> str:
    """主簿陈琳 -> 陈琳, 卓婿谋士李儒 -> 李儒: drop everything up to the last title when a 2-3 character name
    follows."""
    last = None
    for m in _TITLE_RE.finditer(s):
        if 2 <= len(s) - m.end() <= 3:
            last = m
    return s[last.end() :] if last else s


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def _demonstrative(s: str) -> str:
    # 那老者 -> 老者, 那妇人 -> 妇人; keep 那怪 / 那人 (one character left would say nothing)
    for d in ("那个", "这个", "那伙", "这伙", "那些", "这些", "那群", "那", "这"):
        if s.startswith(d):
            return s[len(d) :] if len(s) - len(d) >= 2 else s
    return s


@functools.lru_cache(maxsize=65536)  # pure, and the same clauses come back (孔明曰, 操曰 …)
def _plain_subject(clause: str) -> str:
    """What is left of a clause once verbs, manner words, openers and titles are gone, when it can stand as a
    speaker label (老者, 那怪, 众僧, 孔明, 陈琳); '' otherwise."""
    r = _strip_tail(clause)
    if not r or r == clause and _VERB_TAIL.search(clause) is None and len(clause) > 4:
        return ""
    r = _demonstrative(r) if r.startswith(("那", "这")) else _strip_leaders(r)
    r = _strip_title(r)
    if r in _LEADERS and r not in _KIN_LEADERS:
        return ""
    if not _NAME_CHARS.match(r) or r[0] in _VERB_MARKS or r[0] in _NOT_NAME_START or r[0] in "一他她它":
        return ""
    if any(c in _NOT_IN_NAMES or c in _VERB_MARKS for c in r[1:]):
        return ""
    if len(r) == 1 and r in _SINGLE_NOT_NAME:
        return ""
    if len(r) >= 2 and (r[-1] in _NOT_NAME_END or r[0] in _ACTION_START or (r[-1] == "来" and r != "如来")):
        return ""
    if len(r) >= 3 and r[-1] == r[-2] and r[-1] not in _KIN_DOUBLES:
        return ""  # 慌张张 / 战索索: how someone speaks, not who
    return r


@dataclass
class _Speech:
    para: int
    open: int
    close: int
    colon: int  # index of the colon before the quote
    clause_start: int
    line: int
    speaker: str = ""
    addressee: str = ""
    how: str = ""  # which rule named the speaker (start, title, surname, inside, plain, back, previous, answer)


def _trie_regex(words: Iterable[str]) -> re.Pattern[str]:
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


class _PrefixCounts:
    """Counts of the strings of 2-4 characters that start with a surname character, from one findall (in C)
    of the 4 characters at every such position, sorted once: a count is a sum over a range of the sorted
    strings, found by bisection."""

    def __init__(self, text: str):
        first = "[" + "".join(sorted(_SURNAMES | {c[0] for c in _COMPOUND_SURNAMES})) + "]"
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
                if key[0] in _SURNAMES and len(key) >= 2:
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


class _Followed:
    """How often a string is followed by a verb of speaking or acting, read off the n+1-character counts:
    names are (杨锋引兵, 辛毗曰); words that start with a surname character (解释, 黄金, 江山) hardly ever."""

    def __init__(self, counts: _PrefixCounts):
        self._counts = counts
        self._cache: dict[str, int] = {}

    def __getitem__(self, s: str) -> int:
        if s not in self._cache:
            self._cache[s] = self._counts.followed(s, _FOLLOWER_SET)
        return self._cache[s]


class SpeakerFinder:
    """Names the speaker of `…X曰：` from the clause before the colon.

    The name list is mined from the book: a clause that is only a name plus speech verb and manner words
    (孔明曰, 孔明笑曰, 行者暗笑道, 主簿陈琳谏曰 after dropping the title) votes for that name; two votes make
    it a listed name, unless it is an action that follows a well-known name elsewhere (操勒马, 谌伏地).
    Then for each clause, first match wins:
      a titled name (长史张昭, 部将李堪) or a listed name at the start, after openers such as 却说/乃/只见;
      a surname plus given name the book mentions often (杨锋引兵入曰);
      the leftmost listed name that is not the person spoken to (谓操曰 / 问孔明曰 name the listener);
      a short plain subject (老者道, 众将曰).
    Otherwise the clause is elided and the caller looks back (`look_back`, or the speaker of the speech right
    before, for …”又曰：; after 问X曰, an elided 答曰 is X).  `resolve_short_names` expands 飞 to 张飞."""

    def __init__(self, clauses: Iterable[str], text: str = ""):
        self._text = text
        self._surname_counts: _PrefixCounts | None = None
        self._speaker_cache: dict[str, tuple[tuple[str, bool], str]] = {}
        self.how = "none"
        self._followed_counts: _Followed | Counter[str] = Counter()
        votes: Counter[str] = Counter()
        for clause in clauses:
            if _DOCUMENT.search(clause) or "、" in clause:
                continue
            r = _strip_tail(clause)
            if r == clause:
                continue  # no speech verb at the end: not a clean vote
            name = _plain_subject(clause)
            if name and name not in _ANONYMOUS:
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
            and n[0] not in _NOT_NAME_START
            and not any(c in _ADDRESSEE_MARKS for c in n)
            and not any(c in _SINGLE_NOT_NAME for c in n[1:])
            and not (len(n) == 3 and n[:2] in self.names)  # 行者自: a name plus a stray character
        }
        self._max_len = max((len(n) for n in self.names), default=1)

    @staticmethod
    def _drop_actions(names: dict[str, int], text: str) -> dict[str, int]:
        """Drop rarely-voted entries that are actions: in the book they often follow a well-known name
        (勒马 in 玄德勒马, 扬鞭 in 操扬鞭, 密 in 玄德密谓).  A rank before a name does not count (魏主曹睿)."""
        strong = {n for n, c in names.items() if c >= 5 and n not in _TITLES and n[-1:] not in "主王帝公侯后将相师"}
        weak = [n for n, c in names.items() if c < 5]
        if not weak or not text:
            return names
        total: Counter[str] = Counter()
        after_name: Counter[str] = Counter()
        for m in _trie_regex(weak).finditer(text):
            w, i = m.group(), m.start()
            total[w] += 1
            if text[i - 1 : i] in strong or text[i - 2 : i] in strong or text[i - 3 : i] in strong:
                after_name[w] += 1
        return {n: c for n, c in names.items() if not (after_name[n] >= 2 and after_name[n] >= 0.15 * total[n])}

    def _name_at(self, s: str, i: int) -> str:
        for L in range(min(self._max_len, len(s) - i), 0, -1):
            cand = s[i : i + L]
            if cand in self.names:
                return cand
        return ""

    def _text_has_name_ending(self, ch: str) -> bool:
        """Whether the book mentions surname + `ch` twice or more (匡 -> 吴匡): `ch` can be a given name."""
        self._count("")  # builds the index
        return self._surname_counts is not None and ch in self._surname_counts.given_names()

    def _mined_at(self, s: str) -> str:
        """周鲂听知… -> 周鲂 where 周 alone is also a listed name: a mined longer name at the start."""
        if s[:1] not in _LOCAL_SURNAMES:
            return ""  # 操退 / 瑜作色 are one-vote actions, not names
        for L in (3, 2):
            if s[:L] in self.full_names:
                return s[:L]
        return ""

    def _count(self, s: str) -> int:
        """How often the book mentions `s` (only asked for surname-initial strings, indexed once)."""
        if self._surname_counts is None:
            self._surname_counts = _PrefixCounts(self._text)
            self._followed_counts = _Followed(self._surname_counts)
        return self._surname_counts.get(s, 0)

    def _surname_name(self, s: str) -> str:
        """杨锋引兵入 -> 杨锋, 蔡夫人 -> 蔡夫人: surname + given name the book mentions three times or more."""
        if s[:2] in _COMPOUND_SURNAMES:
            k = 2
        elif s[:1] in _SURNAMES:
            k = 1
        else:
            return ""
        for suffix in _SURNAME_TITLES:
            if s.startswith(suffix, k):
                return s[: k + len(suffix)]
        short, long_ = s[: k + 1], s[: k + 2]
        if len(short) < k + 1 or short[-1] in _NOT_GIVEN_NAME or short[-1] in _SINGLE_NOT_NAME:
            return ""
        if not _NAME_CHARS.match(short) or any(c in _NOT_IN_NAMES or c in _ADDRESSEE_MARKS for c in short[k:]):
            return ""
        n = self._count(short)
        last = long_[-1:]
        if n < 3 or self._followed_counts[short] < 2:
            return ""
        if (
            len(long_) > len(short)
            and last not in _NOT_GIVEN_NAME
            and last not in _SINGLE_NOT_NAME
            and last not in _NOT_IN_NAMES
            and last not in _ADDRESSEE_MARKS
            and self._count(long_) >= max(3, 0.7 * n)
            and self._followed_counts[long_] >= 2
        ):
            return long_
        return short

    def _kin_name(self, s: str) -> str:
        """其姊辛宪英见之 -> 辛宪英, 长子毋丘甸 -> 毋丘甸: after a kin word, a listed name or a surname + a
        listed given name (宪英曰 is in the list) or + one or two characters."""
        kin = next((k for k in _KIN_LEADERS if s.startswith(k)), "")
        if not kin:
            return ""
        rest = s[len(kin) :]
        n = self._name_at(rest, 0)
        if len(n) >= 2:
            return n
        k = 2 if rest[:2] in _COMPOUND_SURNAMES else 1 if rest[:1] in _SURNAMES else 0
        given = self._name_at(rest, k) if k else ""
        if len(given) >= 2:
            return rest[: k + len(given)]
        return self._surname_name(rest)

    def _titled_name(self, s: str) -> str:
        """长史张昭 / 部将李堪 / 温侯吕布: the name right after a title; 谋士逢纪说绍曰: two characters between a
        title and a verb."""
        for m in _TITLE_RE.finditer(s):
            rest = s[m.end() :]
            if _TITLE_RE.match(rest):
                continue  # 侍中太史令王立: another title first
            n = self._name_at(rest, 0)
            if len(n) >= 2:
                return n
            n = self._surname_name(rest)
            if n:
                return n
            two = rest[:2]
            if (
                m.group() not in self.names  # 菩萨吩咐道 / 长老滴泪道: a title that is itself a speaker's name
                and len(rest) > 2
                and (rest[2] in _NAME_FOLLOWERS or rest[2] == "说")
                and _NAME_CHARS.match(two)
                and _strip_tail(two) == two
                and not any(
                    c in _NOT_IN_NAMES
                    or c in _ADDRESSEE_MARKS
                    or c in _SINGLE_NOT_NAME
                    or c in _NOT_NAME_START
                    or c in _ROLE_CHARS
                    for c in two
                )
            ):
                return two
        return ""

    def _subject(self, clause: str) -> tuple[str, bool]:
        """(speaker or '', whether a listed name was seen only as the person spoken to)."""
        s = clause
        for _ in range(4):
            t = self._titled_name(s) if _TITLE_RE.match(s) else ""
            if t:
                self.how = "title"
                return t, False
            n = self._name_at(s, 0)
            inner = self._name_at(s, 1) if n and n[0] in "那这" else ""
            if len(inner) >= len(n) and self.names.get(inner, 0) > self.names.get(n, 0):
                n = inner  # 那龙王敖顺: 龙王, not a listed 那龙 (but 那怪满口道: 那怪)
            kin = _KIN_AFTER_NAME.match(s, len(n)) if n else None
            if kin and not _VERB_TAIL.fullmatch(s[len(n) :]):
                self.how = "start"
                return n + kin.group().lstrip("之"), False  # 土地婆儿道 / 汜妻曰: his wife speaks, not he
            if len(n) >= 2:
                self.how = "start"
                return n, False
            if len(n) == 1:
                longer = self._mined_at(s)
                if longer:
                    self.how = "start"
                    return longer, False
            if n:
                # 众侍婢上前道: the whole short subject beats the one-character group word it starts with
                plain = _plain_subject(s) if n in "众诸群" else ""
                if 2 <= len(plain) <= 3 and plain[0] == n:
                    self.how = "start"
                    return plain, False
                self.how = "start1"
                return n, False
            t = self._surname_name(s) or self._titled_name(s)
            if t:
                self.how = "surname"
                return t, False
            title = _TITLE_RE.match(s)
            if title and s[title.end() : title.end() + 1] in _AFTER_BARE_TITLE:
                self.how = "title"
                return title.group(), False  # 使者回见陆逊曰 / 近臣入奏曰: the title alone names the speaker
            if s[:1] in "把被" and len(s) > 2:
                # 被行者一把扯住道 / 把长老唬得慌忙…道: the one named after 被/把 speaks
                t = self._name_at(s, 1)
                if len(t) >= 2:
                    self.how = "start"
                    return t, False
            stripped = _strip_leaders(s)
            if stripped == s:
                break
            s = stripped
        # A name inside the clause is mostly the listener (分付鲁肃曰, 召关兴、张苞曰): only a name right
        # before the verb, after something that is not a verb of addressing, speaks (阶下蒯良出曰, 长子孙策曰).
        s = _strip_tail(s)  # 大惊小怪道 holds no 小怪
        addressee = any(
            s[i - 1] in _ADDRESSEE_MARKS and len(self._name_at(s, i)) >= 2 for i in range(1, len(s))
        )
        for L in (4, 3, 2):
            if len(s) <= L:
                continue
            tail = s[-L:]
            if tail in self.names or self._surname_name(tail) == tail:
                head = s[:-L]
                short_epithet = len(head) <= 2 and not any(c in _LISTENER_BEFORE or c in _SINGLE_NOT_NAME for c in head)
                if head[-1] in _SPEAKER_BEFORE or short_epithet:  # 劲节十八公笑道
                    self.how = "inside"
                    return tail, False
                break
        i = 1
        while i < len(s) - 1:  # 城楼上小妖急跳下城中报道: a listed name right after a place word
            n = self._name_at(s, i) if s[i - 1] in _SPEAKER_BEFORE else ""
            if len(n) >= 2 and not (i > 1 and s[i - 2] in _LISTENER_BEFORE):
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
        if _DOCUMENT.search(clause):
            return "", False
        subject_part = re.split("[" + "".join(_ADDRESSEE_MARKS) + "]", clause, maxsplit=1)[0]
        if "、" in subject_part:
            self.how = "several"
            return "", False  # 关、张曰 / 韩当、周泰、凌统等应声而出曰: several speakers at once
        sent = re.search("所[差遣使派]", clause)
        if sent:  # 法正所差下书人回报说: the one sent speaks
            plain = _plain_subject(clause[sent.end() :])
            if plain:
                self.how = "plain"
                return plain, False
        name, addressee = self._subject(clause)
        if name:
            return name, False
        rest = _strip_tail(clause)
        subject = _strip_leaders(re.split("[" + "".join(_ADDRESSEE_MARKS) + "]", rest, maxsplit=1)[0])
        if _NEWCOMER.search(subject) or _ONE_PERSON.match(subject) or _UNNAMED.search(subject):
            return "", False
        there = _THERE_IS.match(clause)
        if there and not addressee:
            who = _demonstrative(_strip_tail(clause[there.end() :]))
            m = _ROLE_START.match(who)
            if who[:1] not in "人一" and m and not any(c in _ADDRESSEE_MARKS for c in m.group()):
                self.how = "role"
                return m.group(), False
        heard = _HEARD.search(clause)
        if heard:
            # 只听得路旁叫：the one who hears is not the one who speaks; the voice is named after the verb
            # (听得…有八大金刚叫道, 只听那妖王叫道, 又听得黄门官来奏) or is nobody yet
            self.how = "heard"
            return self._voice(clause[heard.end() :]), False
        plain = "" if addressee else _plain_subject(clause)
        if len(plain) > 3 and plain not in self.names:
            # 本寺院主 / 正台阴阳官: keep the head noun when it is a listed name or a rank; else it is an action
            head = next((plain[-k:] for k in (3, 2) if plain[-k:] in self.names), "")
            if not head and plain[-1] in "官使吏臣兵卒僧主翁婆":
                head = plain[-3:]
            plain = head
        if len(plain) == 1 and plain not in self.names and not self._text_has_name_ending(plain):
            plain = ""  # 垂泣曰: half a word, unless a name ending in it was just mentioned (吴匡…匡大呼曰)
        if plain:
            self.how = "plain"
            return ("", False) if plain in _ANONYMOUS else (plain, False)
        r = _strip_leaders(rest)
        if r[:1] in "他她" and len(r) >= 3 and (r[1:] in _KIN_NOUNS or r[1:] in self.names):
            self.how = "plain"
            return r[1:], False  # 他丈母道 / 她师父道: the relative speaks
        if r[:1] in ("他", "她") and r[1:2] not in ("们", "两", "二", "三", "几"):
            return "", True  # 他想着： / 他又跌脚捶胸的道： the one just spoken of
        if r in _ANONYMOUS:
            return "", False
        if _RELAY.match(_strip_leaders(clause)):
            self.how = "relay"  # 命传报：“故人蒋干相访。” the one who sends the word, named before
            return "", True
        if "报" in clause and not addressee:
            self.how = "report"  # 回报曰 / 忽报： a messenger, named at most in the clause before
            return "", True
        if r in _SINGLE_NOT_NAME and r not in _ROLE_CHARS:
            self.how = "word"  # 遂曰 / 乃曰: "then said" (or 韩遂 by his given name, see `given_name_near`)
            return "", True
        verb_first = (
            not r or r[0] in _ACTION_START or r[0] in _NOT_NAME_START or any(c in _ADDRESSEE_MARKS for c in r[:3])
        )
        if re.match("[闪走转跳撞拥赶][出上过入]", r):
            role = self._role_at_end(r)  # 闪上三宫皇后道: the subject comes after a verb of appearing
            if role:
                self.how = "role"
                return role, False
        if r and not addressee and not verb_first:
            # a subject the name list does not know: 众女官拥拜丹墀道, 闪上三宫皇后道, 四大元帅作礼道
            role = self._role_at_start(r) or self._role_at_end(r)
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
            return "" if r[0] in "人一" else self._role_at_start(_strip_tail(r))
        r = _demonstrative(_strip_tail(rest))
        if not r or r[0] in "人一" or r in _ANONYMOUS:
            return ""
        name = self._name_at(r, 0)
        if len(name) >= 2:
            return name
        plain = _plain_subject(rest)
        if 2 <= len(plain) <= 3 and plain not in _ANONYMOUS and plain[-1] not in _PLACE_END:
            return plain  # not 背后 / 林深处 / 河中间: a place the voice comes from
        role = self._role_at_start(r)
        return "" if role.endswith("后") and role[-2:-1] in "背身门山林帐阵城屋堂营寨墙殿" else role

    @staticmethod
    def addressee_of(clause: str) -> str:
        """问向导官曰 -> 向导官, 谓孔明曰 -> 孔明, 唤农夫问曰 -> 农夫: who a speech is addressed to, when the
        clause says."""
        r = _strip_tail(clause)
        for i in range(len(r) - 1, -1, -1):
            if r[i] in "问谓对告":
                rest = _demonstrative(r[i + 1 :])
                return rest if 1 <= len(rest) <= 4 and _NAME_CHARS.match(rest) and rest not in _ANONYMOUS else ""
        called = re.search("[唤召叫]([^唤召叫]{1,4}?)问[曰道]?$", clause)
        if called and _NAME_CHARS.match(called.group(1)) and called.group(1) not in _ANONYMOUS:
            return _demonstrative(called.group(1))
        return ""

    @staticmethod
    def _role_at_start(r: str) -> str:
        """众女官拥拜丹墀 -> 众女官, 八大金刚 -> 八大金刚: a short noun phrase ending in a rank or kind."""
        r = _demonstrative(r)
        m = _ROLE_START.match(r)
        if (
            not m
            or r[0] in _NOT_NAME_START
            or r[0] in _ACTION_START
            or r[0] == "一"
            or any(c in _ADDRESSEE_MARKS for c in m.group(0))
        ):
            return ""  # 命九嫔妃子 / 入后边 / 对君臣僧俗 are actions, not subjects
        if r[m.end() : m.end() + 1] in ("子", "儿"):
            return m.group(0) + r[m.end()]  # 女子 / 妃子 / 孩儿
        return m.group(0)

    def _role_at_end(self, r: str) -> str:
        """闪上三宫皇后 -> 皇后, 马赵温关四大元帅 -> 元帅: a listed name or rank closing the subject."""
        for k in (3, 2):
            if len(r) > k and (r[-k:] in self.names or r[-k:] in _TITLES):
                return r[-k:]
        if len(r) >= 2 and r[-1] in _ROLE_CHARS and r[-2] not in _SINGLE_NOT_NAME and not any(
            c in _ADDRESSEE_MARKS for c in r
        ):
            return r[-2:]
        return ""

    def sent_one(self, text: str) -> str | None:
        """先差曹洪领三万铁甲马军，哨至江边。回报云： -> 曹洪: the one sent out comes back with the report."""
        tail = text[-80:]
        for m in reversed(list(re.finditer("[差遣使令命教]", tail))):
            rest = tail[m.end() :]
            title = _TITLE_RE.match(rest)
            if title:
                rest = rest[title.end() :]  # 遣主簿李孚… -> 李孚
            if rest[:1] in "、人" or "、" in rest[:6]:
                return None  # 使张辽、许褚探… several, or 使人 (someone)
            n = self._name_at(rest, 0)
            if len(n) < 2:
                n = self._surname_name(rest)
            if not n and title and rest[:1] in _SURNAMES and rest[1:2] and rest[1] not in _NOT_GIVEN_NAME:
                n = rest[:2] if _NAME_CHARS.match(rest[:2]) else ""  # a title says a name follows
            if n:
                return n
        return None

    def asked_in(self, text: str) -> str | None:
        """Who was asked in the narrative right before an answer: 融问其姓名， -> '' (someone unnamed),
        玄德问童子， -> 童子; None when the last two clauses ask nobody."""
        clauses = [c for c in _CLAUSE_SPLIT.split(text)[0::2] if c]
        for clause in reversed(clauses[-2:]):
            k = clause.rfind("问")
            if k < 0 or clause[k + 1 : k + 2] in ("曰", "道", ""):
                continue
            rest = _demonstrative(clause[k + 1 :])
            if rest[:1] in "其之何":
                return ""
            n = self._name_at(rest, 0) or self._surname_name(rest)
            return n if n else None
        return None

    def given_name_near(self, p: str, clause_start: int, clause: str) -> str:
        """遂曰 after 马超回见韩遂… -> 韩遂, 旋问部将曰 after 金旋… -> 金旋: a one-character word alone before
        the speech verb, or opening the clause before a verb, is a given name when the paragraph named
        someone with it (surname + that character) in the last 300 characters."""
        verb = _VERB_TAIL.search(clause)
        strict = False  # a word as common as 都 / 喜 opening a longer clause needs a listed full name
        if verb and verb.start() == 1:
            c = clause[0]  # 遂曰 / 都曰 / 喜曰 (not 笑道 / 问道: a verb of speaking before the verb)
            strict = c in "曰道说问答叫喊嚷喝骂笑哭叹呼言云"
        elif clause[:1] in _SINGLE_NOT_NAME and _strip_tail(clause) == clause[:1]:
            c = clause[0]  # 正笑曰 / 遂大怒曰: the word, then only manner words
        else:
            s = _strip_leaders(clause)
            c = s[:1]
            if not c or s[1:2] not in _GIVEN_FOLLOWERS or c in self.names or c in "他她我你其此彼众诸人":
                return ""
            strict = c in _SINGLE_NOT_NAME
        name = self._local_full_name(p, clause_start, c, window=300, standalone=True)
        if not name or name in self.names or name in self.full_names:
            return name
        return "" if strict or self._count(name) < 3 else name

    @staticmethod
    def is_answer(clause: str) -> bool:
        return bool(_ANSWER.search(_strip_leaders(clause)))

    def look_back(self, text: str, max_clauses: int = 10) -> str | None:
        """The subject of the nearest clause before an elided one that opens with a listed name
        (云火急绰枪上马，…，正迎着蔡瑁，急问曰 -> 云), or that brings someone on (转出张飞 -> 张飞).
        Crosses at most two sentence ends and no speech; clauses ending in 也 are predicates (乃简雍也).
        '' when an unnamed newcomer (一少年将) is the subject, None when nothing is found."""
        # text = clause, delimiters, clause, delimiters, ... walked from the end (the speech) backwards
        parts = _CLAUSE_SPLIT.split(text)
        clauses, delims = parts[0::2], parts[1::2]
        sentence_ends = 0
        single: str | None = None  # a one-character name found in this sentence, see below
        i = len(clauses) - 1
        for _ in range(max_clauses):
            if i < 0:
                break
            after = delims[i] if i < len(delims) else ""
            if any(c in SENTENCE_END for c in after):
                if single is not None:
                    return single
                sentence_ends += 1
                if sentence_ends > 2:
                    break  # the subject of a sentence three back is too far
            clause = clauses[i]
            before = delims[i - 1] if i > 0 else ""
            i -= 1
            named = _COURTESY.search(clause)
            if named and sentence_ends <= 1:
                return named.group(1)  # 有一人姓陈名萼，表字光蕊，…对母张氏道: the name the text goes on to use
            stirred = _STIRRED.search(clause)
            if stirred and single is None:
                n = self._name_at(stirred.group(1), 0) or self._role_at_end(stirred.group(1))
                if n:
                    return n  # 又惊动本司狱官，走来喝道: the one stirred comes and speaks
            it_was = _IT_WAS.fullmatch(clause)
            if it_was and single is None:
                head = _demonstrative(it_was.group(1).split("的")[-1])
                n = self._name_at(head, 0)
                if len(n) >= 2 and len(n) >= len(head) - 1:
                    return n  # 原来是乌鸡国王的太子，急上前扯住…道
            who = _WHO_IS.fullmatch(clause)
            if (
                who
                and sentence_ends == 0
                and (self._name_at(who.group(1), 0) == who.group(1) or self._surname_name(who.group(1)) == who.group(1))
            ):
                return who.group(1)  # 一军拦路，当先大将，乃张飞也，大叫： the one just made out speaks
            listed = _strip_leaders(clause) if "、" in clause else ""
            # 唤聚诸佛，阿罗、揭谛
            ordered = i >= 0 and any(c in _LEADS or c in _ADDRESSEE_MARKS for c in clauses[i][-4:])
            if (
                listed
                and not ordered
                and len(self._name_at(listed, 0)) >= 2
                and listed[len(self._name_at(listed, 0))] == "、"
            ):
                return single if single is not None else ""  # 宋宪、魏续至，告布曰: several of them speak
            if not clause or clause.endswith("也") or "、" in clause:
                if "”" in before or "」" in before:
                    break
                continue  # a predicate (乃简雍也) or a list of people (聚长史杨大将，都督张勋、纪灵…)
            subject = _strip_leaders(clause)
            head = _demonstrative(subject)
            arriving = _ARRIVING.search(head[:8])
            if arriving and arriving.start() > 0 and (self._name_at(head, 0) or head[arriving.start() - 1] in _LEADS):
                arriving = None  # 邓贤引一彪军… / 将两个妖怪押赴当朝: the one leading them
            if arriving and arriving.start() == 0 and arriving.group()[0] != "一":
                counted = head[_COUNT.match(head).end() :]
                group = next((counted[:k] for k in (3, 2) if counted[:k] in self.names), "")
                if group:
                    return group  # 三个老魔，笑呵呵问道 / 六个小妖…高叫道: the group speaks
            if (
                _LOOK_BACK_NEWCOMER.match(subject)
                or _ONE_OF_KIND.match(subject)
                or any(subject.startswith(a) for a in _ANONYMOUS_GROUPS)
                or arriving
            ):
                return single if single is not None else ""  # 当先一员少年将军 / 那二人举枪…: someone unnamed
            sent = self.sent_one(clause) if clause[:1] in "差遣使令命教" else None
            if sent:
                # 遣主簿李孚扮作曹军都督，直至城下。大叫： the one sent; but 孔明强支病体，令左右扶上小车，…，
                # 乃长叹曰: a name opening the sentence before the order is the one who goes on
                for j in range(i, -1, -1):
                    if j < i and any(c in SENTENCE_END for c in delims[j]):
                        break
                    n = self._name_at(_strip_leaders(clauses[j]), 0)
                    if len(n) >= 2:
                        return n
                return sent
            m = _CAME_OUT.search(clause)
            if m:
                n = self._name_at(m.group(1), 0) or self._surname_name(m.group(1))
                return n if n and len(n) == len(m.group(1)) else ""  # someone new came out
            s = clause
            kin_name = self._kin_name(_strip_leaders(clause) if clause[:1] not in "其长次幼" else clause)
            if kin_name:
                return kin_name
            group = _PLACED_GROUP.match(subject)
            if group and group.group(1) in self.names:
                return group.group(1)  # 帐下众将听知，一齐怨恨，…，大呼曰 / 外面文武众官皆入，拜伏于地曰
            for _ in range(3):
                n = self._name_at(s, 0)
                if len(n) <= 1:
                    titled = _TITLE_RE.match(s) or (s[:1] in "左右前后中上大副" and _TITLE_RE.match(s, 1))
                    n = self._mined_at(s) or self._surname_name(s) or (self._titled_name(s) if titled else "") or n
                if len(n) >= 2:
                    return n
                if n and single is None and s[1:2] not in _WORD_AFTER_SINGLE:
                    # 孔明以酒食赐之，修密书一封，付军士曰: a one-character name may be a verb (修); a longer
                    # name opening an earlier clause of the same sentence wins
                    single = n
                stripped = _strip_leaders(s)
                if stripped == s:
                    break
                s = stripped
            if single is None and "报" in clause and _THERE_WAS.match(clause):
                return ""  # 早有曹军飞报曹操，说： a messenger
            pointed = _POINTED.match(clause)
            if single is None and pointed:
                # 那些妃子有胆大的，…，道 / 这些枷锁的和尚听说，…，道: a group the list does not know
                return self._role_at_start(clause[pointed.end() :]) or ""
            head = _demonstrative(_strip_leaders(clause))[:-2]
            if (
                single is None
                and clause[-2:] in self.names
                and clause[-1] in _ROLE_CHARS
                and len(clause) <= 10
                and not any(
                    c in _ADDRESSEE_MARKS or c in _ACTION_START or c in _NOT_NAME_START or c in _LEADS for c in head
                )
            ):
                return clause[-2:]  # 那南方三噹火德星君，整衣出门迎进道
            if "”" in before or "」" in before:
                break  # do not look past another speech
        return single

    def _local_full_name(self, p: str, end: int, short: str, window: int = 200, standalone: bool = False) -> str:
        """吴匡杀入内庭…匡大呼曰 -> 吴匡: the nearest surname + (one character +) `short` just before.
        standalone: a two-character name the list does not know must stand apart in the text (唤陈应、, 。龚都便走,
        见卞喜), not inside a longer word (国王又问, 厉声高叫)."""
        lo = max(0, end - window)
        i = p.rfind(short, lo, end)
        while i > lo:
            three, two = p[i - 2 : i + 1], p[i - 1 : i + 1]
            if i - 2 >= lo and (three in self.full_names or three[:2] in _COMPOUND_SURNAMES):
                return three
            known = two in self.full_names or two in self.names
            apart = not standalone or i < 2 or p[i - 2] in CLAUSE_DELIMS or p[i - 2] in _BEFORE_STANDALONE
            if known or (apart and two[0] in _LOCAL_SURNAMES and self._count(two) >= 2):
                return two
            i = p.rfind(short, lo, i)
        return ""

    def resolve_short_names(self, speeches: list[_Speech], paragraphs: list[Paragraph]) -> None:
        """飞 -> 张飞: a one-character speaker becomes the mined longer name ending in it that the text
        mentions most recently before the speech, within about five chapters."""
        shorts = {s.speaker for s in speeches if len(s.speaker) == 1} - {"众"}
        full_names = [n for n in self.full_names if n[-1] in shorts and n not in _ANONYMOUS]
        offsets, pos = [], 0
        for p in paragraphs:
            offsets.append(pos)
            pos += len(p.text) + 1
        text = self._text  # the paragraphs joined by newlines, as given to the constructor
        by_last: dict[str, tuple[list[int], list[str]]] = {}
        for m in _trie_regex(full_names).finditer(text) if full_names else ():
            pos_list, names = by_last.setdefault(m.group()[-1], ([], []))
            pos_list.append(m.start())
            names.append(m.group())
        horizon = 30000
        for s in speeches:
            if len(s.speaker) != 1:
                continue
            local = self._local_full_name(paragraphs[s.para].text, s.clause_start, s.speaker)
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


# 他 / 她 as the subject of a clause (not 他们, 他两个, nor 他 as an object: 问他, 打他).
_PRONOUN_SUBJECT = re.compile("(?:^|[，。！？；”])(?:你看|只见|那|这)?[他她](?![们两二三几的])")
_CLAUSE_SPLIT = re.compile("([" + re.escape("".join(sorted(CLAUSE_DELIMS))) + "]+)")
_SENTENCE_BREAK = re.compile("[" + re.escape(SENTENCE_END) + "][" + re.escape(SENTENCE_END + CLOSERS) + "]*")


def _sentence_starts(p: str, spans: list[tuple[int, int | None]]) -> list[int]:
    """Offsets where a sentence starts cleanly: after 。！？… (and closing quotes), never inside a quote."""
    inside = [(o, c if c is not None else len(p)) for o, c in spans]
    starts = [0]
    j = 0
    n = len(p)
    for m in _SENTENCE_BREAK.finditer(p):
        k = m.end()
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
    start = _window_start(p, clause_start, end, sentence_starts, context_chars)
    # A paragraph that opens inside a quote (a verse broken over lines in the source): start after its ”.
    depth = 0
    for m in _QUOTE_CHAR.finditer(p, start, clause_start):
        if m.group() in "“「":
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                start, depth = m.end(), 0
    return start


_QUOTE_CHAR = re.compile("[“「”」]")


def _window_start(p: str, clause_start: int, end: int, sentence_starts: list[int], context_chars: int) -> int:
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


# -- the extractor -----------------------------------------------------------------------------------


def _looks_like_path(value: str) -> bool:
    return (
        "\n" not in value
        and len(value) < 1024
        and (os.path.exists(value) or value.lower().endswith((".txt", ".text")))
    )


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
        typos = [c for o, c in spans if c is not None and p[c] == p[o] and p[o] in _CLOSER_OF]
        if typos:
            # “…。“ typed for “…。”: mend the text so that chat and later contexts read right
            chars = list(p)
            for c in typos:
                chars[c] = _CLOSER_OF[chars[c]]
            para.text = p = "".join(chars)
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

    finder = SpeakerFinder(
        (paragraphs[s.para].text[s.clause_start : s.colon] for s in speeches), "\n".join(p.text for p in paragraphs)
    )
    prev: _Speech | None = None
    for s in speeches:
        p = paragraphs[s.para].text
        clause = p[s.clause_start : s.colon]
        if s.clause_start > 0 and p[s.clause_start - 1] in "”」":
            # “牛王”道： the name itself is quoted
            q = p.rfind("“" if p[s.clause_start - 1] == "”" else "「", max(0, s.clause_start - 7), s.clause_start - 1)
            word = p[q + 1 : s.clause_start - 1] if q >= 0 else ""
            if q >= 0 and (q == 0 or p[q - 1] not in COLONS) and _NAME_CHARS.match(word):
                clause = word + clause
        name, elided = finder.speaker_of(clause)
        same_para = prev is not None and prev.para == s.para
        how = finder.how
        if elided and same_para and finder.is_answer(clause) and prev.addressee:
            # 问向导官曰：“…”答曰： -> the one asked answers
            name, elided, how = prev.addressee, False, "answer"
        elif elided and finder.is_answer(clause):
            # 融问其姓名，对曰： -> not 融 but the one asked, here someone not named yet
            asked = finder.asked_in(p[prev.close + 1 if same_para else 0 : s.clause_start])
            if asked is not None:
                name, elided, how = asked, False, "answer"
        if elided:
            given = finder.given_name_near(p, s.clause_start, clause)
            if given:
                name, elided, how = given, False, "given"
        if elided:
            # look back over the narrative since the previous speech of this paragraph; when it names
            # nobody, the previous speaker goes on (…”又曰： / …”遂引兵去，问曰：)
            b = prev.close + 1 if same_para else 0
            report = finder.how == "report"
            found = finder.look_back(p[b : s.clause_start], max_clauses=1 if report else 10)
            if report and not found:
                found = finder.sent_one(p[b : s.clause_start])
            name = found or ""
            if name and _PLURAL_VERB.search(clause) and not (name[0] in "众诸群多" or name[-1] in "们等"):
                name = ""  # 士农工商，文人墨客，愚夫俗子，齐咳咳都道: not the 行者 named before them
            how = "back" if name else finder.how
            between = p[b : s.clause_start]
            bare = finder.how != "unknown"  # 又曰 / 笑曰 continue a speaker; 四大元帅作礼道 does not
            answer = finder.is_answer(clause)  # 操曰：“汝来何迟？”对曰： the one asked, not the one asking
            if (
                found is None
                and bare
                and not report
                and not answer
                and same_para
                and len(between) <= 40
                and sum(c in SENTENCE_END for c in between) <= 1
            ):
                name = prev.speaker
                how = "previous"
            elif (
                found is None
                and not report
                and not answer
                and same_para
                and len(between) <= 80
                and sum(c in SENTENCE_END for c in between) <= 1
                and any(
                    _PRONOUN_SUBJECT.match(c)
                    for c in ([c for c in _CLAUSE_SPLIT.split(between)[0::2] if c][-1:] + [clause])
                )
            ):
                name = prev.speaker  # …一条铁棒。他拿在手中，笑道: 他 is the one who just spoke
                how = "previous"
            elif (
                found is None
                and prev is not None
                and prev.para == s.para - 1
                and len(paragraphs[prev.para].text) - prev.close <= 2
                and s.clause_start <= 40
                and _PRONOUN_SUBJECT.search(p[: s.colon])
            ):
                # a paragraph opening with 他 (你看他揝着铁棒，扯着高老道) right after a speech: its speaker
                name = prev.speaker
                how = "previous"
        s.speaker = name
        s.how = how
        s.addressee = finder.addressee_of(clause)
        prev = s
    finder.resolve_short_names(speeches, paragraphs)

    records: list[dict[str, Any]] = []
    for s in speeches:
        if speaker is not None and s.speaker != speaker:
            continue
        p = paragraphs[s.para].text
        if s.para not in starts_cache:
            starts_cache[s.para] = _sentence_starts(p, spans_cache[s.para])
        start = _context_start(p, s.clause_start, s.colon + 1, starts_cache[s.para], context_chars)
        chat = p[s.open : s.close + 1]
        records.append(
            {
                "context": p[start : s.colon + 1],
                "chat": chat,
                "speaker": s.speaker,
                "chapter": paragraphs[s.para].chapter,
                "line": s.line,
            }
        )
    if stats is not None:
        stats.update(
            encoding=used,
            paragraphs=len(paragraphs),
            chapters=len({p.chapter for p in paragraphs if p.chapter and _heading_label(p.text) is None}),
            quotes=quotes,
            unclosed=unclosed,
            speeches=len(speeches),
            with_speaker=sum(1 for s in speeches if s.speaker),
            names=len(finder.names),
            how=dict(Counter(s.how for s in speeches).most_common()),
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


def records_to_conversations(records: list[dict[str, Any]], book: str | None = None) -> list[Conversation]:
    """user = context, assistant = chat, exactly as `tunesmith data convert --from novel-dialogue` reads the
    cosplay JSONL: meta has source "novel-dialogue", role and speaker (when named), chapter, line, book."""
    from tunesmith.data.novel_dialogue import converter

    convert = converter(Path(book or "novel"))
    out = []
    for r in records:
        rec = {k: v for k, v in r.items() if not (k == "speaker" and not v)}  # the importer wants a name or no key
        if book:
            rec["book"] = book
        out.extend(convert(rec))
    return out


def write_jsonl_atomic(rows: Iterable[dict[str, Any]], out: str | os.PathLike) -> int:
    """Write JSON lines to `out` in one step (never a half-written file); returns how many."""
    out = Path(out)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise DataError("output folder does not exist", str(folder))
    if out.is_dir():
        raise DataError("output is a directory (expected a .jsonl file name)", str(out))
    return atomic_write_lines(out, (json.dumps(row, ensure_ascii=False) for row in rows))


def write_dialogue(
    records: list[dict[str, Any]], out: str | os.PathLike, fmt: str = "cosplay", book: str | None = None
) -> int:
    """Write records as cosplay JSONL ({context, chat, speaker, chapter, line}) or Conversation JSONL."""
    if fmt == "cosplay":
        return write_jsonl_atomic(records, out)
    if fmt == "conversation":
        return write_jsonl_atomic((c.to_dict() for c in records_to_conversations(records, book)), out)
    raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")


def extract_dialogue_file(
    novel: str | os.PathLike,
    out: str | os.PathLike,
    *,
    context_chars: int = DEFAULT_CONTEXT_CHARS,
    encoding: str = "auto",
    fmt: str = "cosplay",
    speaker: str | None = None,
) -> dict[str, Any]:
    """`tunesmith data extract-dialogue`: mine `novel`, write `out`, return the counts for the summary line."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    folder = Path(out).parent
    if str(folder) and not folder.is_dir():
        raise DataError("output folder does not exist", str(folder))
    stats: dict[str, Any] = {}
    records = extract_dialogue(
        Path(novel), context_chars=context_chars, encoding=encoding, speaker=speaker, stats=stats
    )
    stats["written"] = write_dialogue(records, out, fmt, book=Path(novel).stem)
    stats["written_with_speaker"] = sum(1 for r in records if r["speaker"])
    return stats
