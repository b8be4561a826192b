"""The preference record contract: pairs and judged answers are Conversations with meta keys."""

import pytest

from tunesmith.conversation import Conversation, Message
from tunesmith.errors import DataError
from tunesmith.preference import (
    JUDGED,
    PAIR,
    PLAIN,
    check_method_data,
    kind_of,
    kind_of_dataset,
    label,
    make_judged,
    make_pair,
    rejected,
)

Q = [Message("user", "你是谁？")]


def test_pair_round_trips_through_json_dict():
    conv = make_pair(Q, chosen="吾乃李白。", rejected="我是AI助手。", system="你是李白", source="t")
    back = Conversation.from_dict(conv.to_dict())
    assert kind_of(back) == PAIR
    assert back.answer == "吾乃李白。" and rejected(back) == "我是AI助手。"
    assert back.meta["source"] == "t" and back.system == "你是李白"


def test_judged_and_plain_kinds():
    assert kind_of(make_judged(Q, "吾乃李白。", label=False)) == JUDGED
    assert label(make_judged(Q, "吾乃李白。", label=True)) is True
    assert kind_of(Conversation.single_turn("q", "a")) == PLAIN


@pytest.mark.parametrize("meta, expected", [
    ({"rejected": "x", "label": True}, "both"),
    ({"rejected": ""}, "non-empty string"),
    ({"rejected": 3}, "non-empty string"),
    ({"label": "yes"}, "true or false"),
])
def test_malformed_preference_meta_is_refused(meta, expected):
    conv = Conversation.single_turn("q", "a", **meta)
    with pytest.raises(DataError, match=expected):
        kind_of(conv, "f.jsonl:3")


def test_pair_needs_a_final_answer():
    conv = Conversation(messages=[Message("user", "q")], meta={"rejected": "x"})
    with pytest.raises(DataError, match="must end with the assistant answer"):
        kind_of(conv)


def test_mixed_dataset_names_the_first_misfit():
    convs = [make_pair(Q, "a", "b"), make_pair(Q, "c", "d"), Conversation.single_turn("q", "a")]
    with pytest.raises(DataError, match="record 3: this record is 'plain'"):
        kind_of_dataset(convs, "pairs.jsonl")
    assert kind_of_dataset(convs[:2]) == PAIR and kind_of_dataset([]) == PLAIN


def test_method_data_check():
    check_method_data("dpo", PAIR)
    check_method_data("sft", PAIR)  # a pair's chosen answer is an SFT row
    check_method_data("kto", JUDGED)
    with pytest.raises(DataError, match="method 'dpo' trains on pairs"):
        check_method_data("dpo", PLAIN, "x.jsonl")
    with pytest.raises(DataError, match="judged answers"):
        check_method_data("kto", PAIR)
