"""Preference data formats: TRL pairs, KTO judged answers, LLaMA-Factory ranking entries; convert, stats, split,
bad records, and a converted TRL file that trains with DPO."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.data import detect_format, load, load_dataset_by_name, save
from tunesmith.errors import DataError
from tunesmith.preference import JUDGED, PAIR, kind_of, kind_of_dataset, label, rejected


def _jsonl(path: Path, *records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _shape(conv) -> tuple:
    """(system, prompt messages, chosen, rejected) of a pair."""
    return conv.system, [(m.role, m.content) for m in conv.prompt_messages], conv.answer, rejected(conv)


STRINGS = {"prompt": "天空是什么颜色？", "chosen": "蓝色。", "rejected": "绿色。"}
CONVERSATIONAL = {"prompt": [{"role": "system", "content": "你是李白"}, _user("你是谁？")],
                  "chosen": [_bot("吾乃李白。")], "rejected": [_bot("我是一个AI助手。")]}
IMPLICIT = {"chosen": [_user("你好"), _bot("吾乃李白。"), _user("饮酒否？"), _bot("饮！")],
            "rejected": [_user("你好"), _bot("吾乃李白。"), _user("饮酒否？"), _bot("我不能饮酒。")]}
IMPLICIT_SYSTEM = {"chosen": [{"role": "system", "content": "你是李白"}, _user("你是谁？"), _bot("李太白也。")],
                   "rejected": [{"role": "system", "content": "你是李白"}, _user("你是谁？"), _bot("AI。")]}


# -- TRL pairs ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("record,expected", [
    (STRINGS, (None, [("user", "天空是什么颜色？")], "蓝色。", "绿色。")),
    (CONVERSATIONAL, ("你是李白", [("user", "你是谁？")], "吾乃李白。", "我是一个AI助手。")),
    (IMPLICIT, (None, [("user", "你好"), ("assistant", "吾乃李白。"), ("user", "饮酒否？")], "饮！", "我不能饮酒。")),
    (IMPLICIT_SYSTEM, ("你是李白", [("user", "你是谁？")], "李太白也。", "AI。")),
    # a string prompt with message-list answers, and a chosen longer than one message that differs only at its end
    ({"prompt": "你好", "chosen": [_bot("在。"), _user("名字？"), _bot("李白。")],
      "rejected": [_bot("在。"), _user("名字？"), _bot("不知。")]},
     (None, [("user", "你好"), ("assistant", "在。"), ("user", "名字？")], "李白。", "不知。")),
], ids=["strings", "conversational", "implicit-prompt", "implicit-with-system", "longer-answers"])
def test_trl_records_become_pairs(tmp_path, record, expected):
    f = _jsonl(tmp_path / "pairs.jsonl", record)
    assert detect_format(record) == "trl"
    (conv,) = load(f)  # detected
    assert kind_of(conv) == PAIR and _shape(conv) == expected and conv.meta["source"] == "trl"


def test_trl_convert_round_trip_through_our_jsonl(tmp_path):
    src = _jsonl(tmp_path / "trl.jsonl", STRINGS, CONVERSATIONAL, IMPLICIT)
    ours, back = tmp_path / "ours.jsonl", tmp_path / "back.jsonl"
    assert main(["data", "convert", str(src), str(ours)]) == 0
    rows = _read(ours)
    assert rows[1] == {"system": "你是李白", "messages": [_user("你是谁？"), _bot("吾乃李白。")],
                       "meta": {"source": "trl", "rejected": "我是一个AI助手。"}}
    assert main(["data", "convert", str(ours), str(back), "--to", "trl"]) == 0
    written = _read(back)
    # written in the conversational shape, the system prompt as the prompt's first message
    assert written[1] == CONVERSATIONAL
    assert written[0] == {"prompt": [_user("天空是什么颜色？")], "chosen": [_bot("蓝色。")],
                          "rejected": [_bot("绿色。")]}
    assert [_shape(c) for c in load(back, "trl")] == [_shape(c) for c in load(src, "trl")]


def test_writing_pairs_where_rejected_has_no_place_warns(tmp_path, capsys):
    src = _jsonl(tmp_path / "trl.jsonl", STRINGS)
    assert main(["data", "convert", str(src), str(tmp_path / "s.json"), "--to", "sharegpt"]) == 0
    assert "sharegpt has no place for the rejected answers" in capsys.readouterr().err
    # and the pair/judged writers refuse what is not their kind, by name, writing nothing
    plain = _jsonl(tmp_path / "plain.jsonl", {"messages": [_user("问"), _bot("答")]})
    assert main(["data", "convert", str(plain), str(tmp_path / "x.jsonl"), "--to", "trl"]) == 2
    assert "trl writes pairs" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()
    assert main(["data", "convert", str(src), str(tmp_path / "x.jsonl"), "--to", "kto"]) == 2
    assert "kto writes judged answers" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()


# -- KTO judged answers ---------------------------------------------------------------------------------

def test_kto_records_become_judged_answers_and_round_trip(tmp_path):
    src = _jsonl(tmp_path / "kto.jsonl",
                 {"prompt": "天空是什么颜色？", "completion": "蓝色。", "label": True},
                 {"prompt": [{"role": "system", "content": "你是李白"}, _user("你是谁？")],
                  "completion": [_bot("我是AI助手。")], "label": False})
    convs = load(src)
    assert kind_of_dataset(convs) == JUDGED
    assert [(c.system, c.messages[0].content, c.answer, label(c)) for c in convs] == [
        (None, "天空是什么颜色？", "蓝色。", True), ("你是李白", "你是谁？", "我是AI助手。", False)]
    ours, back = tmp_path / "ours.jsonl", tmp_path / "back.jsonl"
    assert main(["data", "convert", str(src), str(ours)]) == 0
    assert _read(ours)[1]["meta"] == {"source": "kto", "label": False}
    assert main(["data", "convert", str(ours), str(back), "--to", "kto"]) == 0
    assert _read(back)[1] == {"prompt": [{"role": "system", "content": "你是李白"}, _user("你是谁？")],
                              "completion": [_bot("我是AI助手。")], "label": False}


# -- LLaMA-Factory ranking entries ----------------------------------------------------------------------

@pytest.fixture()
def lf_ranking(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "dpo_zh_demo.json").write_text(json.dumps([
        {"instruction": "翻译", "input": "hello", "chosen": "你好", "rejected": "再见"},
        {"instruction": "你是谁？", "chosen": "吾乃李白。", "rejected": "我是AI。", "system": "你是李白",
         "history": [["在吗", "在"]]},
    ], ensure_ascii=False), encoding="utf-8")
    (d / "dpo_en_demo.json").write_text(json.dumps([
        {"conversations": [{"from": "system", "value": "你是李白"}, {"from": "human", "value": "你好"},
                           {"from": "gpt", "value": "幸会。"}, {"from": "human", "value": "饮酒否？"}],
         "chosen": {"from": "gpt", "value": "饮！"}, "rejected": {"from": "gpt", "value": "不饮。"}},
    ], ensure_ascii=False), encoding="utf-8")
    (d / "openai_pairs.json").write_text(json.dumps([
        {"messages": [{"role": "user", "content": "问"}], "better": {"role": "assistant", "content": "好答"},
         "worse": {"role": "assistant", "content": "坏答"}},
    ], ensure_ascii=False), encoding="utf-8")
    (d / "dataset_info.json").write_text(json.dumps({
        "dpo_zh_demo": {"file_name": "dpo_zh_demo.json", "ranking": True,
                        "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                    "rejected": "rejected", "system": "system", "history": "history"}},
        "dpo_zh_unmapped": {"file_name": "dpo_zh_demo.json", "ranking": True},
        "dpo_en_demo": {"file_name": "dpo_en_demo.json", "formatting": "sharegpt", "ranking": True,
                        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
        "openai_pairs": {"file_name": "openai_pairs.json", "formatting": "sharegpt", "ranking": True,
                         "columns": {"messages": "messages", "chosen": "better", "rejected": "worse"},
                         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                  "assistant_tag": "assistant", "system_tag": "system"}},
        "not_ranked": {"file_name": "dpo_en_demo.json", "formatting": "sharegpt"},
    }, ensure_ascii=False), encoding="utf-8")
    return d


def test_llama_factory_alpaca_ranking_entry(lf_ranking):
    convs = load_dataset_by_name("dpo_zh_demo", lf_ranking)
    assert [_shape(c) for c in convs] == [
        (None, [("user", "翻译\nhello")], "你好", "再见"),
        ("你是李白", [("user", "在吗"), ("assistant", "在"), ("user", "你是谁？")], "吾乃李白。", "我是AI。")]
    # LLaMA-Factory's defaults: system and history only when mapped; chosen/rejected by their documented names
    unmapped = load_dataset_by_name("dpo_zh_unmapped", lf_ranking)
    assert _shape(unmapped[1]) == (None, [("user", "你是谁？")], "吾乃李白。", "我是AI。")


def test_llama_factory_sharegpt_ranking_entries(lf_ranking):
    (c,) = load_dataset_by_name("dpo_en_demo", lf_ranking)
    prompt = [("user", "你好"), ("assistant", "幸会。"), ("user", "饮酒否？")]
    assert _shape(c) == ("你是李白", prompt, "饮！", "不饮。")
    (o,) = load_dataset_by_name("openai_pairs", lf_ranking)  # renamed columns and OpenAI tags
    assert _shape(o) == (None, [("user", "问")], "好答", "坏答")
    # without "ranking": true the same file is refused with the hint, not read as SFT
    with pytest.raises(DataError, match=r'dpo_en_demo\.json:\d+ \(record 0\): .*expected ranking=true'):
        load_dataset_by_name("not_ranked", lf_ranking)


def test_llama_factory_ranking_files_from_the_cli(lf_ranking, tmp_path):
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(lf_ranking / "dpo_en_demo.json"), str(out), "--from", "sharegpt",
                 "-O", "ranking=true"]) == 0
    assert _read(out)[0]["meta"] == {"source": "sharegpt", "rejected": "不饮。"}


def test_register_detects_llama_factory_ranking_files(lf_ranking, tmp_path, capsys):
    d = tmp_path / "reg"
    assert main(["data", "register", "zh", str(lf_ranking / "dpo_zh_demo.json"), "--data-dir", str(d)]) == 0
    assert main(["data", "register", "en", str(lf_ranking / "dpo_en_demo.json"), "--data-dir", str(d)]) == 0
    assert main(["data", "register", "trl", str(_jsonl(tmp_path / "trl.jsonl", STRINGS)), "--data-dir", str(d)]) == 0
    info = json.loads((d / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["zh"]["formatting"] == "alpaca" and info["zh"]["ranking"] is True
    assert info["en"]["formatting"] == "sharegpt" and info["en"]["ranking"] is True
    assert info["trl"]["formatting"] == "trl" and "ranking" not in info["trl"]
    assert [c.answer for c in load_dataset_by_name("zh", d)] == ["你好", "吾乃李白。"]
    assert kind_of_dataset(load_dataset_by_name("en", d)) == PAIR
    assert _shape(load_dataset_by_name("trl", d)[0]) == (None, [("user", "天空是什么颜色？")], "蓝色。", "绿色。")


# -- stats and split ------------------------------------------------------------------------------------

def test_stats_reports_kind_counts_and_equal_answers(tmp_path, capsys):
    same = {"prompt": "饮酒否？", "chosen": "饮！", "rejected": "饮！"}
    pairs = _jsonl(tmp_path / "pairs.jsonl", STRINGS, CONVERSATIONAL, same, dict(same, prompt="再饮否？"))
    assert main(["data", "stats", str(pairs), "--json"]) == 0
    captured = capsys.readouterr()
    s = json.loads(captured.out)
    assert s["kind"] == "pair" and s["pairs"] == 4 and s["equal_answers"] == 2
    assert s["chars"]["rejected"]["max"] == len("我是一个AI助手。")
    assert "warning: 2 of 4 pairs have the same chosen and rejected answer" in captured.err
    assert main(["data", "stats", str(pairs)]) == 0
    table = capsys.readouterr()
    assert "pairs (chosen and rejected)" in table.out and "equal chosen and rejected" in table.out
    assert "warning: 2 of 4 pairs" in table.err
    judged = _jsonl(tmp_path / "kto.jsonl", *({"prompt": f"问{i}", "completion": "答", "label": i < 3}
                                              for i in range(5)))
    assert main(["data", "stats", str(judged), "--json"]) == 0
    captured = capsys.readouterr()
    s = json.loads(captured.out)
    assert (s["kind"], s["desirable"], s["undesirable"]) == ("judged", 3, 2) and "warning" not in captured.err
    plain = _jsonl(tmp_path / "plain.jsonl", {"messages": [_user("问"), _bot("答")]})
    assert main(["data", "stats", str(plain), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["kind"] == "plain" and "pairs" not in s and "desirable" not in s


def test_split_keeps_pairs(tmp_path):
    src = _jsonl(tmp_path / "trl.jsonl", *({"prompt": f"问题{i}", "chosen": f"好{i}", "rejected": f"坏{i}"}
                                           for i in range(20)))
    assert main(["data", "split", str(src), "--dev-ratio", "0.25", "-o", str(tmp_path / "split")]) == 0
    train, dev = load(tmp_path / "split" / "train.jsonl"), load(tmp_path / "split" / "dev.jsonl")
    assert len(train) == 15 and len(dev) == 5
    assert kind_of_dataset(train) == PAIR and kind_of_dataset(dev) == PAIR
    got = sorted(_shape(c)[1:] for c in train + dev)
    assert got == sorted(([("user", f"问题{i}")], f"好{i}", f"坏{i}") for i in range(20))


# -- bad records ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,record,message", [
    ("trl", {"prompt": "问", "rejected": "坏"}, 'missing field "chosen"'),
    ("trl", {"prompt": "问", "chosen": "好", "rejected": 3}, 'field "rejected" must be a string or a list of messages '
                                                           "(got int)"),
    ("trl", {"prompt": "  ", "chosen": "好", "rejected": "坏"}, 'field "prompt" is empty'),
    ("trl", {"prompt": [], "chosen": "好", "rejected": "坏"}, 'field "prompt" is an empty list'),
    ("trl", {"chosen": "好", "rejected": "坏"}, 'missing field "prompt"'),
    ("trl", {"chosen": [_bot("好")], "rejected": [_bot("坏")]}, "no prompt"),
    ("trl", {"chosen": [_user("问"), _bot("好")], "rejected": [_user("别的问题"), _bot("坏")]},
     '"chosen" and "rejected" differ before their last message'),
    ("trl", {"prompt": "问", "chosen": [_user("好")], "rejected": "坏"}, "expected an assistant answer last"),
    ("trl", {"prompt": "问", "chosen": "好", "rejected": [{"role": "robot", "content": "坏"}]},
     "rejected[0].role is 'robot'"),
    ("kto", {"prompt": "问", "completion": "答", "label": "yes"}, 'field "label" must be true or false (got string'),
    ("kto", {"prompt": "问", "completion": "答", "label": 1}, 'field "label" must be true or false (got int 1'),
    ("kto", {"prompt": "", "completion": "答", "label": True}, 'field "prompt" is empty'),
])
def test_bad_records_exit_2_naming_file_and_line(tmp_path, capsys, fmt, record, message):
    good = STRINGS if fmt == "trl" else {"prompt": "问", "completion": "答", "label": True}
    src = _jsonl(tmp_path / "bad.jsonl", good, record)
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(src), str(out), "--from", fmt]) == 2
    err = capsys.readouterr().err
    assert f"error: {src}:2: " in err and message in err and "Traceback" not in err, err
    assert not out.exists()


def test_mixed_kinds_in_one_file_exit_2(tmp_path, capsys):
    pair = {"messages": [_user("问"), _bot("好")], "meta": {"rejected": "坏"}}
    plain = {"messages": [_user("问"), _bot("好")], "meta": {}}
    judged = {"messages": [_user("问"), _bot("好")], "meta": {"label": True}}
    for second, kind in ((plain, "plain"), (judged, "judged")):
        src = _jsonl(tmp_path / "mixed.jsonl", pair, pair, second)
        out = tmp_path / "out.jsonl"
        assert main(["data", "convert", str(src), str(out)]) == 2
        err = capsys.readouterr().err
        assert (f"error: {src}:3: this record is {kind!r} but the ones before it in this file are 'pair'" in err
                and "Traceback" not in err), err
        assert not out.exists()
    # a malformed rejected answer in our own JSONL, and a LLaMA-Factory ranking record without its answer
    src = _jsonl(tmp_path / "bad.jsonl", pair, {"messages": [_user("问"), _bot("好")], "meta": {"rejected": 5}})
    assert main(["data", "stats", str(src)]) == 2
    assert f'error: {src}:2: meta "rejected" must be a non-empty string' in capsys.readouterr().err
    lf = tmp_path / "lf.json"
    lf.write_text(json.dumps([{"instruction": "问", "chosen": "好", "rejected": "坏"}, {"instruction": "问",
                                                                                        "chosen": "好"}]),
                  encoding="utf-8")
    assert main(["data", "convert", str(lf), str(tmp_path / "o.jsonl"), "--from", "alpaca", "-O", "ranking=true"]) == 2
    assert f'error: {lf}:1 (record 1): missing field "rejected"' in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


# -- a converted TRL file trains ------------------------------------------------------------------------

def _args(model: Path, out: Path, train: Path, *extra: str) -> list[str]:
    return ["train", f"model={model}", f"output_dir={out}", f"data.train={train}", "dtype=fp32", "device=cpu",
            "batch_size=4", "lr=5e-3", "max_steps=2", "logging_steps=1", "eval_steps=2", "sample_tokens=4",
            "warmup=0", *extra]


@pytest.mark.parametrize("converted", [True, False], ids=["converted", "trl-file-as-is"])
def test_trl_pairs_train_with_dpo(tiny_qwen2, tmp_path, converted):
    records = [{"prompt": [{"role": "system", "content": "你是李白"}, _user(q)],
                "chosen": [_bot("吾乃李白，" + q + "也。")], "rejected": [_bot("酒作诗，酒作诗，酒作诗")]}
               for q in ("天地", "山水", "风月", "诗剑", "你我", "人山")]
    train = _jsonl(tmp_path / "trl.jsonl", *records)
    if converted:
        ours = tmp_path / "pairs.jsonl"
        assert main(["data", "convert", str(train), str(ours)]) == 0
        train = ours
    out = tmp_path / "dpo"
    assert main(_args(tiny_qwen2, out, train, "method=dpo")) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["method"] == "dpo" and s["steps"] == 2 and s["train_tokens"] > 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_save_keeps_pair_meta(tmp_path):
    convs = load(_jsonl(tmp_path / "trl.jsonl", CONVERSATIONAL))
    save(convs, tmp_path / "ours.jsonl")
    assert [_shape(c) for c in load(tmp_path / "ours.jsonl")] == [_shape(convs[0])]
