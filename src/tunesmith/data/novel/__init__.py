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
How it works, in order, one module per phase:
1. `text`: decode (UTF-8 or GB18030/GBK, see `tunesmith.data.encoding`), drop e-book site banners, rebuild
   paragraphs (hard-wrapped texts, most lines the same width, are re-joined; a new paragraph starts at an
   indented line, a blank line or a short line; one-paragraph-per-line texts stay as they are), tag chapter
   headings (第X回/章/节/卷, 楔子, 附录; a chapter repeated word for word is skipped);
2. `quotes`: find quotes (“…” with ‘…’ inside, 「…」, ASCII "…") that follow a colon: those are speeches.
   Typos common in e-book texts are handled: a “ that opens a new `X曰：“` inside an unclosed quote starts a
   new speech (the broken one is dropped), a “ used as a closer after 。！？ closes;
3. `speakers` (over `names` and `clause`): name the speaker from the clause before the colon, with a name
   list mined from the book itself (strings that stand alone before 曰/道/说, e.g. 孔明 in 孔明笑曰);
4. `elided` (and `look_back`): a clause that names nobody goes down a chain of named fallback rules;
5. `context`: cut the narrative before each speech at a sentence start; `extract` runs the phases, `output`
   writes the records.  Every table of words and characters is in `lexicon`.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.novel.extract import DEFAULT_CONTEXT_CHARS, extract_dialogue
from tunesmith.data.novel.lexicon import CLAUSE_DELIMS, CLOSERS, COLONS, SENTENCE_END
from tunesmith.data.novel.output import (
    FORMATS,
    extract_dialogue_file,
    records_to_conversations,
    write_dialogue,
    write_jsonl_atomic,
)
from tunesmith.data.novel.quotes import quote_spans
from tunesmith.data.novel.speakers import SpeakerFinder
from tunesmith.data.novel.text import Paragraph, split_paragraphs

__all__ = [
    "CLAUSE_DELIMS",
    "CLOSERS",
    "COLONS",
    "DEFAULT_CONTEXT_CHARS",
    "FORMATS",
    "SENTENCE_END",
    "Paragraph",
    "SpeakerFinder",
    "extract_dialogue",
    "extract_dialogue_file",
    "quote_spans",
    "records_to_conversations",
    "source_files",
    "split_paragraphs",
    "write_dialogue",
    "write_jsonl_atomic",
]


def source_files() -> list[Path]:
    """Every module of the miner, sorted by name: what a cache of its results must be keyed by (a change to
    any rule or table changes the output)."""
    return sorted(Path(__file__).parent.glob("*.py"))
