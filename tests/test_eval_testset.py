"""Test data -> eval items: sets by task, references grouped per prompt, baseline answers matched by
(role, question)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tunesmith.errors import ConfigError, DataError
from tunesmith.eval.testset import CUS, SPE, build_sets, lookup, read_answer_file


def test_raw_rolebench_test_files_give_cus_and_spe_with_every_reference(rolebench_dir):
    rb = rolebench_dir
    task, items = build_sets([rb / "general" / "test.jsonl"], [rb / "role_specific" / "test.jsonl"], roles=["李白"])
    assert task == "rolebench"
    counts = Counter(i.set for i in items)
    assert counts == {CUS: 289, SPE: 50}
    raw = [json.loads(x) for x in (rb / "general" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    first = next(r for r in raw if r["role"] == "李白")
    item = next(i for i in items if i.set == CUS)
    assert item.question == first["question"].strip()
    assert item.references == [g.strip() for g in first["generated"]]  # all five answers, in order
    assert item.system and item.system.startswith("你是李白")
    assert len({i.id for i in items}) == len(items)
    task, limited = build_sets([rb / "general" / "test.jsonl"], [rb / "role_specific" / "test.jsonl"],
                               roles=["李白"], limit=3)
    assert Counter(i.set for i in limited) == {CUS: 3, SPE: 3}


def test_rolebench_prepare_files_are_split_by_meta_subset(rolebench_dir, tmp_path):
    from tunesmith.data import rolebench_prepare

    rolebench_prepare(rolebench_dir, ["李白"], tmp_path / "libai")
    # both files given as --data: the subset recorded in each conversation decides CUS or SPE
    task, items = build_sets([tmp_path / "libai" / "test_general.jsonl",
                              tmp_path / "libai" / "test_role_specific.jsonl"])
    assert task == "rolebench"
    assert Counter(i.set for i in items) == {CUS: 289, SPE: 50}
    # the prepared RoleGPT baseline (conversation format) matches every test item by (role, question)
    by_q, _ = read_answer_file(tmp_path / "libai" / "baseline_general.jsonl", "--score-file")
    assert all(lookup(by_q, i) for i in items if i.set == CUS)


def test_mixed_ie_cls_dev_file_is_scored_per_record(datasets_dir):
    task, items = build_sets([datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"])
    assert task == "iecls"
    assert Counter(i.kind for i in items) == {"cls": 63, "ie": 59}
    assert {i.set for i in items} == {"mixed_dev_dataset"}
    # the prompt is the context byte for byte (with its trailing "Answer: ")
    assert all(i.question.endswith("Answer: ") for i in items)


def test_answer_file_records_with_a_role_never_match_another_role(tmp_path):
    p = tmp_path / "answers.jsonl"
    p.write_text(json.dumps({"role": "张飞", "question": "你是谁？", "generated": ["俺乃燕人张翼德"]},
                            ensure_ascii=False) + "\n",
                 encoding="utf-8")
    by_q, _ = read_answer_file(p, "--score-file")
    from tunesmith.conversation import Message
    from tunesmith.eval.testset import EvalItem

    libai = EvalItem("x", CUS, None, [Message("user", "你是谁？")], ["吾乃李白"], "rouge", {"role": "李白"})
    zhangfei = EvalItem("y", CUS, None, [Message("user", " 你是谁？ ")], ["俺乃张飞"], "rouge", {"role": "张飞"})
    assert lookup(by_q, libai) is None
    assert lookup(by_q, zhangfei) == ["俺乃燕人张翼德"]


def test_answer_file_errors(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question": "q", "answer": "a"}\n{"foo": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        read_answer_file(p, "--score-file")
    with pytest.raises(DataError, match="not found"):
        read_answer_file(tmp_path / "none.jsonl", "--raw-refs")
    many = tmp_path / "predictions.jsonl"
    many.write_text('{"model": "base", "id": "a", "prediction": "x"}\n{"model": "lb", "id": "a", "prediction": "y"}\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="several models"):
        read_answer_file(many, "--score-file", model="other")
    assert read_answer_file(many, "--score-file", model="lb")[1] == {"a": "y"}


def test_bad_task_and_records_without_answers(tmp_path, datasets_dir):
    with pytest.raises(ConfigError, match="--task"):
        build_sets([datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"], task="poetry")
    p = tmp_path / "q.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no final assistant answer"):
        build_sets([p])


def test_answer_limit_is_raised_to_fit_the_longest_format_answer(datasets_dir, tiny_qwen2, rolebench_dir):
    """A JSON answer cut by max_new_tokens cannot parse: the limit covers the longest IE/CLS reference."""
    from transformers import AutoTokenizer

    from tunesmith.eval.runner import fit_limit_to_references
    from tunesmith.infer.options import GenerationOptions

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    _, items = build_sets([datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"])
    longest = max(len(tok(r, add_special_tokens=False)["input_ids"]) for i in items for r in i.references)
    fitted, seen = fit_limit_to_references(GenerationOptions(max_new_tokens=32), items, tok)
    assert seen == longest and fitted.max_new_tokens >= longest * 1.1 and fitted.max_new_tokens > 32
    roomy = GenerationOptions(max_new_tokens=100_000)
    assert fit_limit_to_references(roomy, items, tok)[0] is roomy  # never lowered
    # free-text (ROUGE) answers keep the limit: a cut one still scores
    _, rb = build_sets([rolebench_dir / "general" / "test.jsonl"], roles=["李白"])
    assert fit_limit_to_references(GenerationOptions(max_new_tokens=8), rb, tok)[0].max_new_tokens == 8


def test_limit_spreads_items_over_the_whole_set(rolebench_dir):
    from tunesmith.eval.testset import spread

    assert spread(list(range(10)), 3) == [0, 3, 6] and spread(list(range(4)), 9) == [0, 1, 2, 3]
    assert spread(list(range(5)), None) == [0, 1, 2, 3, 4] and spread([], 3) == []
    _, every = build_sets([rolebench_dir / "general" / "test.jsonl"], roles=["李白"])
    _, some = build_sets([rolebench_dir / "general" / "test.jsonl"], roles=["李白"], limit=4)
    assert len(every) == 289 and [i.id for i in some] == [every[k].id for k in (0, 72, 144, 216)]
