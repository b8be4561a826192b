"""The loop measure: which answers count as looping, and where it shows in the eval metrics."""

from __future__ import annotations

import pytest

from tunesmith.eval.repetition import longest_repeat, loop_rate, loops, units
from tunesmith.eval.scoring import headline_metrics, score_items
from tunesmith.eval.testset import CUS, EvalItem


@pytest.mark.parametrize("text", [
    "酒作诗，酒作诗，酒作诗，酒作诗，",            # the 李白 adapter's loop
    "举杯邀明月，举杯邀明月，举杯邀明月",          # a phrase three times
    "the cat sat on the mat and the cat sat on the mat; the cat sat on it",
    "我是李白我是李白我是李白",
])
def test_repeated_ngrams_are_loops(text):
    assert loops(text)


@pytest.mark.parametrize("text", [
    "吾乃李白，字太白，号青莲居士。",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。",  # 明月 twice is a poem, not a loop
    "I am Li Bai, a poet of the Tang dynasty who loves wine and the moon.",
    "酒作诗，酒作诗",                                # twice is not yet a loop
    "",
])
def test_natural_answers_do_not_loop(text):
    assert not loops(text)


def test_units_ignore_punctuation_and_case():
    assert units("Hello, 世界!  hello") == ["hello", "世", "界", "hello"]
    assert longest_repeat("酒作诗 酒作诗。酒作诗！酒作诗") == ("酒作诗酒", 3)


def test_loop_rate_is_the_share_of_looping_answers():
    assert loop_rate(["吾乃李白。", "饮酒饮酒饮酒饮酒饮酒饮酒", "好", "诗诗诗诗诗诗"]) == 0.5
    assert loop_rate([]) == 0.0


def test_every_set_reports_its_loop_rate_and_shows_it():
    items = [EvalItem(f"q{i}", CUS, None, [], ["吾乃李白。"], "rouge", {}) for i in range(4)]
    preds = {"q0": "吾乃李白。", "q1": "酒作诗，" * 10, "q2": "好诗。", "q3": "饮酒饮酒饮酒饮酒"}
    metrics = score_items(items, preds)
    assert metrics["loop_rate"] == 0.5
    assert "loop_rate" in headline_metrics(CUS, metrics)
