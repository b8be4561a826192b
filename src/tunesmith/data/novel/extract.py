"""The miner, phase by phase: read the novel, rebuild paragraphs, find speeches, name speakers, cut contexts.

    from tunesmith.data.novel.extract import extract_dialogue
    records = extract_dialogue("datasets/four-novels-raw/三国演义.txt", stats=(stats := {}))
    stats["how"]     # how many speakers each rule named: {"start": ..., "back": ..., "previous": ...}
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from tunesmith.data.encoding import read_text_file
from tunesmith.data.novel.context import context_start, sentence_starts
from tunesmith.data.novel.elided import Elided, speaker_of_elided
from tunesmith.data.novel.quotes import Speech, Speeches, find_speeches, speech_clause
from tunesmith.data.novel.speakers import SpeakerFinder
from tunesmith.data.novel.text import Paragraph, heading_label, split_paragraphs
from tunesmith.errors import ConfigError, DataError

# Default context window.  Both published records of the cosplay format start at their paragraph start,
# which any window of 16 or more characters reproduces; 200 keeps one or two preceding sentences or
# speeches of a long paragraph, enough situation for the model without drowning the speaker cue.
DEFAULT_CONTEXT_CHARS = 200


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
    text, used, where = _read(text_or_path, encoding)
    paragraphs = split_paragraphs(text)
    found = find_speeches(paragraphs)
    finder = name_speakers(paragraphs, found.speeches)
    records = _records(paragraphs, found, context_chars, speaker)
    if stats is not None:
        stats.update(_counts(paragraphs, found, finder, records, used))
    _check_found(paragraphs, found, records, speaker, where)
    return records


def _looks_like_path(value: str) -> bool:
    return (
        "\n" not in value
        and len(value) < 1024
        and (os.path.exists(value) or value.lower().endswith((".txt", ".text")))
    )


def _read(text_or_path: str | os.PathLike, encoding: str) -> tuple[str, str, str | None]:
    """(the text, the encoding used or "str", the file name for error messages or None)."""
    if isinstance(text_or_path, os.PathLike) or (isinstance(text_or_path, str) and _looks_like_path(text_or_path)):
        text, used = read_text_file(text_or_path, encoding)
        return text, used, str(text_or_path)
    if isinstance(text_or_path, str):
        return text_or_path.lstrip("\ufeff"), "str", None
    raise ConfigError(f"extract_dialogue expects a path or the text (got {type(text_or_path).__name__})")


def name_speakers(paragraphs: list[Paragraph], speeches: list[Speech]) -> SpeakerFinder:
    """Set every speech's speaker, the rule that named it (how) and whom it addresses; returns the finder
    with the book's name list.  A clause that names nobody goes down the fallbacks of `elided.py`."""
    finder = SpeakerFinder(
        (paragraphs[s.para].text[s.clause_start : s.colon] for s in speeches), "\n".join(p.text for p in paragraphs)
    )
    prev: Speech | None = None
    for s in speeches:
        clause = speech_clause(paragraphs[s.para].text, s)
        name, elided = finder.speaker_of(clause)
        how = finder.how
        if elided:
            name, how = speaker_of_elided(Elided(finder, paragraphs, s, clause, prev, how))
        s.speaker = name
        s.how = how
        s.addressee = finder.addressee_of(clause)
        prev = s
    finder.resolve_short_names(speeches, paragraphs)
    return finder


def _records(
    paragraphs: list[Paragraph], found: Speeches, context_chars: int, speaker: str | None
) -> list[dict[str, Any]]:
    """One cosplay record per speech (only `speaker`'s when given), its context cut at a sentence start."""
    records: list[dict[str, Any]] = []
    starts_cache: dict[int, list[int]] = {}
    for s in found.speeches:
        if speaker is not None and s.speaker != speaker:
            continue
        p = paragraphs[s.para].text
        if s.para not in starts_cache:
            starts_cache[s.para] = sentence_starts(p, found.spans[s.para])
        start = context_start(p, s.clause_start, s.colon + 1, starts_cache[s.para], context_chars)
        records.append(
            {
                "context": p[start : s.colon + 1],
                "chat": p[s.open : s.close + 1],
                "speaker": s.speaker,
                "chapter": paragraphs[s.para].chapter,
                "line": s.line,
            }
        )
    return records


def _counts(
    paragraphs: list[Paragraph], found: Speeches, finder: SpeakerFinder, records: list[dict[str, Any]], used: str
) -> dict[str, Any]:
    speeches = found.speeches
    return dict(
        encoding=used,
        paragraphs=len(paragraphs),
        chapters=len({p.chapter for p in paragraphs if p.chapter and heading_label(p.text) is None}),
        quotes=found.quotes,
        unclosed=found.unclosed,
        speeches=len(speeches),
        with_speaker=sum(1 for s in speeches if s.speaker),
        names=len(finder.names),
        how=dict(Counter(s.how for s in speeches).most_common()),
        records=len(records),
    )


def _check_found(
    paragraphs: list[Paragraph], found: Speeches, records: list[dict[str, Any]], speaker: str | None, where: str | None
) -> None:
    """DataError for a text without speeches, or a `speaker` who never speaks (naming the frequent ones)."""
    if not found.speeches:
        raise DataError(
            "no dialogue found: expected quoted speech after a colon, e.g. 曹洪曰：“……” or 行者道：\"……\" "
            f"({len(paragraphs)} paragraphs, {found.quotes} quotes read)",
            where,
        )
    if speaker is not None and not records:
        top = Counter(s.speaker for s in found.speeches if s.speaker).most_common(8)
        raise DataError(
            f"no speech by speaker {speaker!r}; most frequent speakers: " + "、".join(f"{n}({c})" for n, c in top),
            where,
        )
