"""Eval metrics against hand-computed values: Chinese ROUGE-L, IE triples, classification, the probe checker."""

from __future__ import annotations

import json

import pytest

from tunesmith.errors import ConfigError, DataError
from tunesmith.eval.ie import (
    classification_scores,
    lenient_label,
    parse_json_answer,
    task_of_target,
    triple_match,
    triple_scores,
)
from tunesmith.eval.predictions import PredictionStore
from tunesmith.eval.probe import load_probe, probe_correct, probe_scores
from tunesmith.eval.rouge import lcs_length, mean_rouge_l, rouge_l_tokens, rouge_l_zh, tokenize_chars, tokenize_words

# -- ROUGE-L --------------------------------------------------------------------------------------

def test_tokenize_chars_mixed_chinese_latin_digits_punctuation():
    assert tokenize_chars("我用GPT-4写了3首诗！") == ["我", "用", "gpt", "4", "写", "了", "3", "首", "诗"]
    assert tokenize_chars("李白说: Hello world, 2022年。") == ["李", "白", "说", "hello", "world", "2022", "年"]
    # full-width latin and digits are the same tokens as ASCII ones (NFKC)
    assert tokenize_chars("ＧＰＴ４，好") == ["gpt4", "好"]
    assert tokenize_chars("……！？，。") == []


def test_lcs_classic():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4
    assert lcs_length([], list("abc")) == 0


def test_rouge_l_hand_computed():
    # LCS 我爱 = 2 of 4 and 4 tokens: P = R = F = 0.5
    assert rouge_l_zh("我爱北京", "我爱上海") == pytest.approx(0.5)
    # LCS 今天天气 = 4 of 6 and 6
    assert rouge_l_zh("今天天气很好", "今天天气不错") == pytest.approx(4 / 6)
    # P = 3/5, R = 3/3: F = 2 * 0.6 * 1 / 1.6 = 0.75
    assert rouge_l_zh("我们去北京", "去北京") == pytest.approx(0.75)
    s = rouge_l_tokens(tokenize_chars("我们去北京"), tokenize_chars("去北京"))
    assert s["p"] == pytest.approx(0.6) and s["r"] == pytest.approx(1.0)


def test_rouge_l_chinese_is_not_zero_like_english_only_tokenizers():
    # the known trap: an [a-z0-9] tokenizer sees nothing in these strings; ours sees 4 of 6 characters
    assert 0 < rouge_l_zh("今天天气很好", "今天天气不错") < 1


def test_rouge_l_best_of_several_references():
    refs = ["杜甫饮酒作诗", "李白饮酒", "我是张飞"]
    assert rouge_l_zh("李白饮酒", refs) == pytest.approx(1.0)
    # against 杜甫饮酒作诗 alone: LCS 饮酒 = 2, P = 2/4, R = 2/6 -> F = 0.4
    assert rouge_l_zh("李白饮酒", refs[:1]) == pytest.approx(0.4)
    assert mean_rouge_l(["李白饮酒", "我爱北京"], [refs, ["我爱上海"]]) == pytest.approx((1.0 + 0.5) / 2)


def test_rouge_l_empty_and_punctuation_only_prediction_score_zero():
    assert rouge_l_zh("", ["李白饮酒"]) == 0.0
    assert rouge_l_zh("！！……", ["李白饮酒"]) == 0.0
    assert rouge_l_zh("hello", ["李白饮酒"]) == 0.0
    with pytest.raises(ValueError):
        rouge_l_zh("李白", [])


def test_rouge_l_words_view_uses_jieba():
    assert tokenize_words("我爱北京天安门！") == ["我", "爱", "北京", "天安门"]
    # words: LCS 我/爱/北京 = 3, P = 3/4, R = 3/3 -> 6/7; chars: LCS 4 of 7 and 4 -> 2*(4/7)/(11/7) = 8/11
    assert rouge_l_zh("我爱北京天安门", "我爱北京", tokenizer="words") == pytest.approx(6 / 7)
    assert rouge_l_zh("我爱北京天安门", "我爱北京") == pytest.approx(8 / 11)
    with pytest.raises(ConfigError):
        rouge_l_zh("a", "a", tokenizer="bytes")


# -- IE -------------------------------------------------------------------------------------------

T1 = {"predicate": "编剧", "object_type": "人物", "subject_type": "影视作品", "object": "神尾叶子",
      "subject": "花样男子"}
T2 = {"predicate": "出版社", "object_type": "出版社", "subject_type": "书籍", "object": "集英社", "subject": "花样男子"}


def fenced(items) -> str:
    return "```json\n" + json.dumps(items, ensure_ascii=False) + "\n```"


def test_parse_json_answer_fenced_bare_prose_malformed_empty():
    assert parse_json_answer(fenced([T1])) == (True, [T1])
    assert parse_json_answer(json.dumps([T1], ensure_ascii=False)) == (True, [T1])
    assert parse_json_answer("结果如下：" + json.dumps([T1], ensure_ascii=False) + " 以上。") == (True, [T1])
    assert parse_json_answer('["水果"]') == (True, ["水果"])
    # truncated JSON does not count, even though an inner object would parse
    assert parse_json_answer('```json\n[{"subject": "A", "predicate": "b", "object": "c"}, {"subj')[0] is False
    assert parse_json_answer('[{"subject": "A",}]')[0] is False
    assert parse_json_answer("")[0] is False
    assert parse_json_answer(None)[0] is False
    assert parse_json_answer("没有抽取到任何关系")[0] is False


def test_triples_duplicates_count_once():
    gold = fenced([T1, T2])
    m = triple_match(fenced([T1, T1, T1]), gold)
    assert (m["tp"], m["n_pred"], m["n_gold"]) == (1, 1, 2)
    s = triple_scores([fenced([T1, T1])], [gold])
    assert s["precision"] == pytest.approx(1.0) and s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(2 / 3)


def test_triples_malformed_item_is_a_wrong_prediction():
    s = triple_scores([fenced([T1, {"subject": "花样男子"}])], [fenced([T1])])
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(1.0)
    assert s["f1"] == pytest.approx(2 / 3)


def test_triples_typed_view():
    wrong_type = dict(T1, subject_type="书籍")
    s = triple_scores([fenced([wrong_type])], [fenced([T1])])
    assert s["f1"] == pytest.approx(1.0)
    assert s["typed_f1"] == pytest.approx(0.0)


def test_triples_micro_average_and_parse_rate():
    preds = [fenced([T1, T2]), '```json\n[{"subject": "花样', " " + json.dumps([T1], ensure_ascii=False)]
    golds = [fenced([T1, T2]), fenced([T2]), fenced([T1])]
    s = triple_scores(preds, golds)
    # tp 2 + 0 + 1 = 3; predicted 2 + 0 + 1 = 3; gold 2 + 1 + 1 = 4
    assert (s["tp"], s["predicted_triples"], s["gold_triples"]) == (3, 3, 4)
    assert s["precision"] == pytest.approx(1.0)
    assert s["recall"] == pytest.approx(0.75)
    assert s["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert s["parse_rate"] == pytest.approx(2 / 3)


def test_triples_whitespace_is_stripped_but_text_must_match():
    spaced = {k: f" {v} " for k, v in T1.items()}
    assert triple_match(fenced([spaced]), fenced([T1]))["tp"] == 1
    assert triple_match(fenced([dict(T1, object="神尾")]), fenced([T1]))["tp"] == 0


def test_classification_hand_computed():
    golds = ['["水果"]', '["水果"]', '["衣服"]', '["衣服"]', '["衣服"]']
    preds = ['["水果"]', '["衣服"]', "这是水果", '```json\n["衣服"]\n```', "应该是衣服"]
    s = classification_scores(preds, golds)
    assert s["labels"] == ["水果", "衣服"]
    assert s["accuracy"] == pytest.approx(2 / 5)
    # 水果: P 1/1, R 1/2 -> 2/3; 衣服: P 1/2, R 1/3 -> 0.4; macro = (2/3 + 0.4) / 2
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.4) / 2)
    # lenient: "这是水果" -> 水果 (wrong), "应该是衣服" -> 衣服 (right)
    assert s["lenient_accuracy"] == pytest.approx(3 / 5)
    assert s["parse_rate"] == pytest.approx(3 / 5)
    assert lenient_label("水果还是衣服", ["水果", "衣服"]) is None  # naming two labels decides nothing


def test_classification_unknown_label_and_empty_prediction():
    s = classification_scores(['["蔬菜"]', ""], ['["水果"]', '["水果"]'])
    assert s["accuracy"] == 0.0 and s["macro_f1"] == 0.0
    assert s["unknown_predictions"] == 1


def test_task_of_target_on_the_real_dev_file(datasets_dir):
    path = datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"
    targets = [json.loads(line)["target"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kinds = [task_of_target(t) for t in targets]
    # SOURCES.md: 59 IE and 63 classification records
    assert kinds.count("ie") == 59 and kinds.count("cls") == 63
    ie = [t for t, k in zip(targets, kinds) if k == "ie"]
    cls = [t for t, k in zip(targets, kinds) if k == "cls"]
    assert triple_scores(ie, ie)["f1"] == 1.0 and triple_scores(ie, ie)["parse_rate"] == 1.0
    assert classification_scores(cls, cls)["accuracy"] == 1.0
    assert task_of_target("一段文字") == "text"


# -- probe ----------------------------------------------------------------------------------------

def test_probe_checker_numbers_stand_alone():
    assert probe_correct("哈哈，四乘五得二十！", ["20", "二十"])
    assert probe_correct("答：20。", ["20", "二十"])
    assert probe_correct("Beijing, of course", ["北京", "beijing"])
    assert not probe_correct("是200", ["20"])
    assert not probe_correct("二十五", ["二十"])
    assert not probe_correct("3.20", ["20"])
    assert not probe_correct("", ["20"])


def test_bundled_probe_is_well_formed_and_not_answered_by_the_question():
    items = load_probe()
    assert 20 <= len(items) <= 30
    assert len({i["id"] for i in items}) == len(items)
    assert any("4*5" in i["question"] and "20" in i["accept"] and "二十" in i["accept"] for i in items)
    for it in items:
        assert not probe_correct(it["question"], it["accept"]), it  # repeating the question scores nothing
    s = probe_scores([it["accept"][0] for it in items], items)
    assert s["accuracy"] == 1.0 and s["correct"] == len(items)


def test_probe_file_errors_name_file_and_line(tmp_path):
    p = tmp_path / "probe.jsonl"
    p.write_text('{"question": "1+1?", "accept": ["2"]}\n{"question": "x", "accept": []}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"probe.jsonl:2.*accept"):
        load_probe(p)
    with pytest.raises(DataError, match="not found"):
        load_probe(tmp_path / "missing.jsonl")


# -- predictions.jsonl ----------------------------------------------------------------------------

def test_prediction_store_drops_a_torn_last_line_and_keeps_appending(tmp_path):
    p = tmp_path / "predictions.jsonl"
    store = PredictionStore(p)
    store.append([{"model": "base", "sig": "s", "id": "a", "prediction": "甲"}])
    with open(p, "a", encoding="utf-8") as f:
        f.write('{"model": "base", "sig": "s", "id": "b", "predic')  # killed mid-write
    store = PredictionStore(p)
    assert store.done("base", "s") == {"a": "甲"}
    store.append([{"model": "base", "sig": "s", "id": "b", "prediction": "乙"}])
    assert PredictionStore(p).done("base", "s") == {"a": "甲", "b": "乙"}
    assert PredictionStore(p).done("base", "other") == {}
    with pytest.raises(ConfigError, match="other settings"):
        PredictionStore(p).check_signature("base", "other")


def test_prediction_store_refuses_a_broken_line_in_the_middle(tmp_path):
    p = tmp_path / "predictions.jsonl"
    p.write_text('{"model": "base", "id": "a", "prediction": "x"}\nnot json\n'
                 '{"model": "base", "id": "b", "prediction": "y"}\n',
                 encoding="utf-8")
    with pytest.raises(ConfigError, match=r"predictions.jsonl:2"):
        PredictionStore(p)
    assert PredictionStore(p, overwrite=True).rows == []
