"""The miner's fallback rules one by one: each look-back rule (look_back.py) and each elided-clause rule
(elided.py) fed the text it exists for, and the chains' order."""

from __future__ import annotations

import pytest

from tunesmith.data.novel import look_back as lb
from tunesmith.data.novel.elided import ELIDED_RULES, Elided, nobody_named
from tunesmith.data.novel.extract import name_speakers
from tunesmith.data.novel.look_back import LOOK_BACK_RULES, Then, Walk, look_back
from tunesmith.data.novel.quotes import find_speeches, speech_clause
from tunesmith.data.novel.speakers import SpeakerFinder
from tunesmith.data.novel.text import split_paragraphs


def finder_knowing(*names: str, text: str = "") -> SpeakerFinder:
    """A finder whose mined name list is `names` (two votes each: 张飞曰 twice)."""
    return SpeakerFinder([f"{n}曰" for n in names for _ in range(2)], text)


def walk_to(text: str, clause: str) -> Walk:
    """A look-back walk over `text` stopped at `clause` (walking from the end of the text)."""
    walk = Walk.over(text)
    while walk.step():
        if walk.clause == clause:
            return walk
    raise AssertionError(f"no clause {clause!r} in {text!r}")


# -- look-back rules: (rule, the narrative before the elided clause, the clause it decides, names, answer) --

LOOK_BACK_CASES = [
    (lb.courtesy_name, "有一人姓陈名萼，表字光蕊，", "表字光蕊", (), "光蕊"),
    (lb.one_stirred, "又惊动本司狱官，", "又惊动本司狱官", (), "狱官"),
    (lb.one_made_out, "原来是乌鸡国王的太子，", "原来是乌鸡国王的太子", ("太子",), "太子"),
    (lb.who_is_named, "一军拦路，当先大将，乃张飞也，", "乃张飞也", ("张飞",), "张飞"),
    (lb.several_listed, "宋宪、魏续至，", "宋宪、魏续至", ("宋宪", "魏续"), ""),
    (lb.counted_group, "三个老魔，", "三个老魔", ("老魔",), "老魔"),
    (lb.someone_unnamed, "当先一员少年将军，", "当先一员少年将军", (), ""),
    (lb.one_sent, "遣主簿李孚扮作曹军都督，直至城下。", "遣主簿李孚扮作曹军都督", ("李孚",), "李孚"),
    (lb.one_came_out, "山后转出张飞，", "山后转出张飞", ("张飞",), "张飞"),
    (lb.relative_named, "其姊辛宪英见之，", "其姊辛宪英见之", ("宪英",), "辛宪英"),
    (lb.placed_group, "帐下众将听知，一齐怨恨，", "帐下众将听知", ("众将",), "众将"),
    (lb.name_opening, "张飞引兵入，", "张飞引兵入", ("张飞",), "张飞"),
    (lb.messenger, "早有曹军飞报曹操，", "早有曹军飞报曹操", ("曹操",), ""),
    (lb.pointed_group, "那些妃子有胆大的，", "那些妃子有胆大的", (), "妃子"),
    (lb.role_name_closing, "那南方三噹火德星君，", "那南方三噹火德星君", ("星君",), "星君"),
]


@pytest.mark.parametrize("rule,text,clause,names,answer", LOOK_BACK_CASES, ids=lambda c: getattr(c, "__name__", None))
def test_look_back_rule_names_the_speaker_it_exists_for(rule, text, clause, names, answer):
    finder = finder_knowing(*names)
    assert rule(finder, walk_to(text, clause)) == answer
    assert look_back(finder, text) == answer  # and the whole chain agrees


def test_look_back_rules_pass_on_a_plain_clause():
    """A clause with nothing for them: every rule but the name rule says nothing (None)."""
    finder = finder_knowing("张飞")
    walk = walk_to("只是不肯，", "只是不肯")
    assert [rule.__name__ for rule in LOOK_BACK_RULES if rule(finder, walk) is not None] == []


def test_one_sent_gives_way_to_a_name_opening_the_sentence():
    """孔明强支病体，令左右扶上小车，…，乃长叹曰: the order does not hand the speech to those ordered."""
    finder = finder_knowing("孔明", "张飞")
    text = "孔明强支病体，令张飞扶上小车，出寨遍观，"
    assert lb.one_sent(finder, walk_to(text, "令张飞扶上小车")) == "孔明"
    assert look_back(finder, text) == "孔明"


def test_name_opening_keeps_a_one_character_name_for_the_end_of_the_sentence():
    """云火急绰枪上马，…，正迎着蔡瑁，急问曰 -> 云: remembered, then the answer at the sentence start."""
    finder = finder_knowing("云", "蔡瑁")
    text = "云火急绰枪上马，引军来迎，正迎着蔡瑁，"
    walk = walk_to(text, "云火急绰枪上马")
    assert lb.name_opening(finder, walk) is None and walk.single == "云"
    assert look_back(finder, text) == "云"


def test_predicate_or_list_skips_the_clause_and_another_speech_stops_the_walk():
    finder = finder_knowing("玄德")
    text = "玄德出迎，来者乃简雍也，"
    assert lb.predicate_or_list(finder, walk_to(text, "来者乃简雍也")) is Then.NEXT_CLAUSE
    assert look_back(finder, text) == "玄德"  # the clause before the predicate names the speaker
    after_speech = "玄德曰：“来。”乃简雍也，"
    assert lb.predicate_or_list(finder, walk_to(after_speech, "乃简雍也")) is Then.STOP
    assert lb.another_speech(finder, walk_to("玄德曰：“来。”遂去，", "遂去")) is Then.STOP
    assert look_back(finder, "玄德曰：“来。”遂去，") is None  # never past another speech


def test_look_back_crosses_at_most_two_sentence_ends_and_max_clauses():
    finder = finder_knowing("张飞")
    assert look_back(finder, "张飞引兵入。众皆惊。遂退，") == "张飞"  # two sentence ends back
    assert look_back(finder, "张飞引兵入。众皆惊。遂退。") is None  # three: too far
    assert look_back(finder, "张飞引兵入，遂退，", max_clauses=2) is None


def test_look_back_rule_order_is_the_priority():
    """Someone unnamed (一员少年将军) is decided before the name rule could read 少年 as a name."""
    names = [rule.__name__ for rule in LOOK_BACK_RULES]
    assert names.index("someone_unnamed") < names.index("name_opening")
    assert names.index("predicate_or_list") < names.index("name_opening")
    assert names[-1] == "another_speech"
    assert all(rule.__doc__ for rule in LOOK_BACK_RULES)


# -- elided-clause rules: a small book names 玄德, 孔明, 张飞, 行者, 云, 蔡瑁; the case follows it ------------

BOOK = "".join(f"{n}曰：“是。”\n" for n in ("玄德", "孔明", "张飞", "行者", "云", "蔡瑁") for _ in range(2))


def elided_last(text: str) -> Elided:
    """The last speech of BOOK + `text`, with every speech before it named as the miner names them."""
    paragraphs = split_paragraphs(BOOK + text)
    speeches = find_speeches(paragraphs).speeches
    finder = name_speakers(paragraphs, speeches)
    s = speeches[-1]
    clause = speech_clause(paragraphs[s.para].text, s)
    name, elided = finder.speaker_of(clause)
    assert elided, f"{clause!r} names {name!r}"
    return Elided(finder, paragraphs, s, clause, speeches[-2], finder.how)


ELIDED_CASES = [
    ("the_one_asked_answers", "玄德问向导官曰：“此处何名？”答曰：“段谷。”", ("向导官", "answer")),
    ("the_one_asked_before_answers", "融问其姓名，对曰：“吾乃某也。”", ("", "answer")),
    ("given_name_nearby", "韩遂在此。韩遂曰：“来。”韩遂走。马超回见韩遂，遂曰：“去。”", ("韩遂", "given")),
    ("subject_further_back", "云火急绰枪上马，引军来迎，正迎着蔡瑁，急问曰：“何往？”", ("云", "back")),
    ("previous_speaker_goes_on", "孔明曰：“且看。”又曰：“去罢。”", ("孔明", "previous")),
    (
        "previous_speaker_as_he",
        "行者道：“好。”那老者取出一条铁棒，长有二丈，粗有斗来，放在当面，看了半晌，口里念了几遍，方才放下。"
        "他拿在手中，笑道：“妙。”",
        ("行者", "previous"),
    ),
    ("he_opening_the_next_paragraph", "行者道：“师父莫怕。”\n你看他揝着铁棒，扯着高老道：“走。”", ("行者", "previous")),
    ("nobody_named", "忽然大叫曰：“吾在此！”", ("", "unknown")),
]


@pytest.mark.parametrize("rule_name,text,answer", ELIDED_CASES, ids=[c[0] for c in ELIDED_CASES])
def test_elided_rule_names_the_speaker_it_exists_for(rule_name, text, answer):
    e = elided_last(text)
    first = next(rule for rule in ELIDED_RULES if rule(e) is not None)
    assert first.__name__ == rule_name  # this text is what the rule is for: no earlier rule takes it
    assert first(e) == answer


def test_a_crowd_speaking_at_once_is_not_the_one_named_before():
    """张飞引兵入，齐声都道: the look-back finds 张飞, but 齐声 / 都道 say several speak."""
    e = elided_last("张飞引兵入，齐声都道：“愿往。”")
    assert e.finder.look_back(e.between) == "张飞"
    assert ELIDED_RULES[3](e) == ("", e.how)


def test_after_a_report_the_one_sent_out_speaks():
    """先差张飞领三万铁甲马军，哨至江边。回报云： -> 张飞."""
    e = elided_last("先差张飞领三万铁甲马军，哨至江边。回报云：“有兵。”")
    assert e.report
    assert [r(e) for r in ELIDED_RULES if r(e) is not None][0] == ("张飞", "back")


def test_an_answer_never_falls_back_to_the_one_who_asked():
    """操曰：“汝来何迟？”对曰： -> '' (the one asked, not named), not the one asking."""
    e = elided_last("孔明曰：“汝来何迟？”对曰：“路远。”")
    assert next(r for r in ELIDED_RULES if r(e) is not None) is nobody_named
    assert nobody_named(e) == ("", e.how)


def test_elided_rule_order_ends_with_the_rule_that_always_answers():
    assert ELIDED_RULES[-1] is nobody_named
    assert all(rule.__doc__ for rule in ELIDED_RULES)
