"""Who speaks when the speech clause names nobody (又曰：, 答曰：, 遂曰：, 急问曰：): the fallback rules.

    from tunesmith.data.novel.elided import Elided, speaker_of_elided
    name, how = speaker_of_elided(Elided(finder, paragraphs, speech, clause, prev, finder.how))

`ELIDED_RULES` is the chain, tried top to bottom; the first rule that answers gives the speaker and the
name of the rule (the `how` counted in `extract_dialogue`'s stats).  The last rule always answers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from tunesmith.data.novel.lexicon import CLAUSE_SPLIT, PLURAL_VERB, PRONOUN_SUBJECT, SENTENCE_END
from tunesmith.data.novel.quotes import Speech
from tunesmith.data.novel.speakers import SpeakerFinder
from tunesmith.data.novel.text import Paragraph


@dataclass
class Elided:
    """A speech whose clause names nobody, and what the fallback rules read around it."""

    finder: SpeakerFinder
    paragraphs: list[Paragraph]
    speech: Speech
    clause: str
    prev: Speech | None  # the speech before this one, in this paragraph or an earlier one
    how: str  # the rule of `SpeakerFinder.speaker_of` that gave up on the clause ("report", "unknown", ...)

    @property
    def p(self) -> str:
        return self.paragraphs[self.speech.para].text

    @property
    def same_para(self) -> bool:
        return self.prev is not None and self.prev.para == self.speech.para

    @functools.cached_property
    def between(self) -> str:
        """The narrative since the previous speech of this paragraph (or since the paragraph start)."""
        start = self.prev.close + 1 if self.same_para and self.prev is not None else 0
        return self.p[start : self.speech.clause_start]

    @property
    def report(self) -> bool:
        return self.how == "report"  # 回报曰 / 忽报: a messenger, named at most in the clause before

    @property
    def answer(self) -> bool:
        return self.finder.is_answer(self.clause)

    def shortly_after_prev(self, chars: int) -> bool:
        """Whether a speech of this paragraph ends at most `chars` characters and one sentence end before."""
        return self.same_para and len(self.between) <= chars and sum(c in SENTENCE_END for c in self.between) <= 1


Answer = tuple[str, str]  # (speaker or '', the rule's name)
ElidedRule = Callable[[Elided], "Answer | None"]


def speaker_of_elided(e: Elided) -> Answer:
    """The first answer of `ELIDED_RULES`."""
    for rule in ELIDED_RULES:
        found = rule(e)
        if found is not None:
            return found
    raise AssertionError("nobody_named always answers")


# -- the rules, in the order they are tried (ELIDED_RULES below) --------------------------------------


def the_one_asked_answers(e: Elided) -> Answer | None:
    """问向导官曰：“此处何名？”答曰： -> 向导官: an answer right after a speech that said whom it asked."""
    if e.same_para and e.answer and e.prev is not None and e.prev.addressee:
        return e.prev.addressee, "answer"
    return None


def the_one_asked_before_answers(e: Elided) -> Answer | None:
    """玄德问童子，童子…对曰 -> 童子; 融问其姓名，对曰： -> '' (not 融: the one asked, here not named yet)."""
    if e.answer:
        asked = e.finder.asked_in(e.between)
        if asked is not None:
            return asked, "answer"
    return None


def given_name_nearby(e: Elided) -> Answer | None:
    """遂曰 after 马超回见韩遂… -> 韩遂, 旋问部将曰 after 金旋… -> 金旋: a one-character word that is the given
    name of someone the paragraph just named."""
    given = e.finder.given_name_near(e.p, e.speech.clause_start, e.clause)
    return (given, "given") if given else None


def subject_further_back(e: Elided) -> Answer | None:
    """云火急绰枪上马，…，正迎着蔡瑁，急问曰 -> 云: the look-back over the narrative since the previous speech
    (`look_back.py`); after a report only its last clause, then the one sent out (先差曹洪…。回报云 -> 曹洪).
    Answers whenever the look-back found anyone, named or not ('' for 一少年将); a crowd speaking at once
    (士农工商，…，齐咳咳都道) is nobody named before it.  The rules below run only when it found nothing."""
    found = e.finder.look_back(e.between, max_clauses=1 if e.report else 10)
    if e.report and not found:
        found = e.finder.sent_one(e.between)
    if found is None:
        return None
    if found and PLURAL_VERB.search(e.clause) and not (found[0] in "众诸群多" or found[-1] in "们等"):
        found = ""
    return found, "back" if found else e.how


def previous_speaker_goes_on(e: Elided) -> Answer | None:
    """…”又曰： / …”遂引兵去，问曰： -> the previous speaker: a bare clause shortly after a speech of the same
    paragraph.  Not after an unknown subject (四大元帅作礼道), a report, or for an answer (操曰：“汝来何迟？”
    对曰：: the one asked, not the one asking)."""
    if e.how != "unknown" and not e.report and not e.answer and e.shortly_after_prev(40) and e.prev is not None:
        return e.prev.speaker, "previous"
    return None


def previous_speaker_as_he(e: Elided) -> Answer | None:
    """…一条铁棒。他拿在手中，笑道 -> the previous speaker: 他 opening the speech clause or the clause before
    it is the one who just spoke."""
    if e.report or e.answer or not e.shortly_after_prev(80) or e.prev is None:
        return None
    last = [c for c in CLAUSE_SPLIT.split(e.between)[0::2] if c][-1:]
    if any(PRONOUN_SUBJECT.match(c) for c in [*last, e.clause]):
        return e.prev.speaker, "previous"
    return None


def he_opening_the_next_paragraph(e: Elided) -> Answer | None:
    """你看他揝着铁棒，扯着高老道 opening the paragraph right after one that ends with a speech -> that
    speech's speaker."""
    prev, s = e.prev, e.speech
    if (
        prev is not None
        and prev.para == s.para - 1
        and len(e.paragraphs[prev.para].text) - prev.close <= 2
        and s.clause_start <= 40
        and PRONOUN_SUBJECT.search(e.p[: s.colon])
    ):
        return prev.speaker, "previous"
    return None


def nobody_named(e: Elided) -> Answer:
    """Nothing names the speaker: '' (how keeps the name of the clause rule that gave up)."""
    return "", e.how


# The order is the rules' priority: the first rule that answers wins.
ELIDED_RULES: tuple[ElidedRule, ...] = (
    the_one_asked_answers,
    the_one_asked_before_answers,
    given_name_nearby,
    subject_further_back,
    previous_speaker_goes_on,
    previous_speaker_as_he,
    he_opening_the_next_paragraph,
    nobody_named,
)
