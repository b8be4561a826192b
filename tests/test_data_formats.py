"""Importers and writers on the real datasets, format detection, and export -> import round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.conversation import Conversation, Message
from tunesmith.data import FORMATS, detect_format, load, persona_for, persona_prompt, save, to_records
from tunesmith.errors import ConfigError, DataError

ROLES = {"孙悟空", "华妃", "皇帝", "李白", "张飞"}



def _raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- rolebench ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel,records", [("general/train.jsonl", 5933), ("general/test.jsonl", 1451),
                                         ("role_specific/train.jsonl", 1535), ("role_specific/test.jsonl", 239)])
def test_rolebench_one_conversation_per_answer(rolebench_dir, rel, records):
    raw = _raw(rolebench_dir / rel)
    assert len(raw) == records  # SOURCES.md
    convs = load(rolebench_dir / rel, "rolebench")
    assert len(convs) == sum(len(r["generated"]) for r in raw)
    # Every answer is its own single-turn target, never the list.
    assert all(len(c.messages) == 2 and isinstance(c.answer, str) for c in convs)
    assert {c.meta["role"] for c in convs} == ROLES
    split = "train" if "train" in rel else "test"
    subset = rel.split("/")[0]
    assert all(c.meta["split"] == split and c.meta["subset"] == subset and c.meta["source"] == "rolebench"
               for c in convs)
    # answers come back in order, with their index
    first = [c for c in convs if c.meta["question"] == raw[0]["question"].strip() and c.meta["role"] == raw[0]["role"]]
    assert [c.answer for c in first] == [g.strip() for g in raw[0]["generated"]]
    assert [c.meta["answer_index"] for c in first] == list(range(len(raw[0]["generated"])))


def test_rolebench_type_and_references_kept(rolebench_dir):
    train = load(rolebench_dir / "role_specific/train.jsonl", "rolebench")
    assert {c.meta["type"] for c in train} == {"script_based", "script_agnostic"}
    assert all("references" not in c.meta for c in train)
    test = load(rolebench_dir / "role_specific/test.jsonl", "rolebench")
    assert all(isinstance(c.meta["type"], list) for c in test)
    two = [c for c in test if len(c.meta["references"]) == 2]
    assert len(two) == 2 and len(two[0].meta["type"]) == 2  # the one record with 2 answers and 2 types
    gen_test = load(rolebench_dir / "general/test.jsonl", "rolebench", answers="first")
    assert len(gen_test) == 1451
    assert sum(len(c.meta["references"]) for c in gen_test) == 6982
    assert all(c.answer == c.meta["references"][0] for c in gen_test)


def test_rolebench_persona_from_desc_json(rolebench_dir):
    desc = json.loads((rolebench_dir / "profiles-zh/desc.json").read_text(encoding="utf-8"))
    convs = load(rolebench_dir / "role_specific/test.jsonl", "rolebench")
    libai = next(c for c in convs if c.meta["role"] == "李白")
    assert libai.system == "你是李白，为人爽朗大方，乐于交友，爱好饮酒作诗。请以李白的身份、语气和口吻回答。"
    wukong = next(c for c in convs if c.meta["role"] == "孙悟空")
    # ASCII punctuation of the stored desc.json after Chinese text becomes full-width; the catchphrases stay.
    assert "常用口头禅是：“俺老孙”" in wukong.system and "生性聪明、活泼" in wukong.system
    assert "生性聪明,活泼" in desc["孙悟空"] or "生性聪明、活泼" in desc["孙悟空"]
    assert persona_for("李白", rolebench_dir / "general/train.jsonl") == libai.system
    # one system prompt per role
    assert len({c.system for c in convs}) == 5


def test_rolebench_persona_options(rolebench_dir, tmp_path):
    path = rolebench_dir / "role_specific/test.jsonl"
    convs = load(path, "rolebench", persona_template="扮演{role}。{desc}", normalize_punct=False, limit=3)
    assert convs[0].system.startswith(f"扮演{convs[0].meta['role']}。")
    assert all(c.system is None for c in load(path, "rolebench", persona=False, limit=5))
    with pytest.raises(ConfigError, match=r"\{name\}"):
        load(path, "rolebench", persona_template="你是{name}")
    with pytest.raises(ConfigError, match="no option 'persona_templat'"):
        load(path, "rolebench", persona_templat="x")
    # explicit profiles file; a role missing from it is a record error naming the file and line
    prof = tmp_path / "desc.json"
    prof.write_text(json.dumps({"李白": "诗仙"}, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.jsonl:1: role '皇帝' has no description"):
        load(path, "rolebench", profiles=prof)
    only_libai = load(path, "rolebench", profiles=prof, on_error="skip", quiet=True)
    assert ({c.meta["role"] for c in only_libai} == {"李白"}
            and only_libai[0].system == "你是李白，诗仙。请以李白的身份、语气和口吻回答。")
    assert persona_prompt("李白", "") == "你是李白。请以李白的身份、语气和口吻回答。"


def test_rolebench_without_profiles_is_a_clear_error(rolebench_dir, tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text((rolebench_dir / "role_specific/train.jsonl").read_text(encoding="utf-8").split("\n", 1)[0] + "\n",
                 encoding="utf-8")
    with pytest.raises(DataError, match="cannot find profiles-zh/desc.json.*--profiles"):
        load(f, "rolebench")
    assert load(f, "rolebench", persona=False)[0].system is None


def test_rolebench_all_four_files_load_fast(rolebench_dir):
    import time

    t = time.perf_counter()
    n = sum(len(load(rolebench_dir / rel, "rolebench")) for rel in
            ("general/train.jsonl", "general/test.jsonl", "role_specific/train.jsonl", "role_specific/test.jsonl"))
    assert n == 27572 + 6982 + 1535 + 240
    assert time.perf_counter() - t < 2.0


def test_role_filter_and_glob(rolebench_dir):
    libai = load(str(rolebench_dir / "*" / "train.jsonl"), "rolebench", roles="李白")
    assert {c.meta["role"] for c in libai} == {"李白"}
    raw = _raw(rolebench_dir / "general/train.jsonl") + _raw(rolebench_dir / "role_specific/train.jsonl")
    assert len(libai) == sum(len(r["generated"]) for r in raw if r["role"] == "李白")
    assert {c.meta["subset"] for c in libai} == {"general", "role_specific"}


# -- context-target (IE / classification) --------------------------------------------------------------

@pytest.mark.parametrize("name,count", [("mixed_train_dataset.jsonl", 902), ("mixed_dev_dataset.jsonl", 122),
                                        ("dataset.jsonl", 5)])
def test_context_target_keeps_answer_prefix_exactly(datasets_dir, name, count):
    path = datasets_dir / "chatglm-mixed-ie-cls" / name
    raw = _raw(path)
    convs = load(path)  # detected
    assert len(convs) == count
    for r, c in zip(raw, convs):
        assert c.messages[0].content == r["context"] and c.messages[1].content == r["target"]
        assert c.messages[0].content.endswith("Answer: ")  # the trailing space survives
        assert c.system is None and c.meta["source"] == "context-target"


def test_context_target_task_guess(datasets_dir):
    train = load(datasets_dir / "chatglm-mixed-ie-cls/mixed_train_dataset.jsonl", "context-target")
    tasks = [c.meta["task"] for c in train]
    assert tasks.count("ie") == 500 and tasks.count("cls") == 402  # SOURCES.md: 500 IE + 402 classification
    demo = load(datasets_dir / "chatglm-mixed-ie-cls/dataset.jsonl", "context-target")
    free = [c for c in demo if not c.answer.startswith("```")]
    assert len(free) == 1 and free[0].meta["task"] == "ie"  # free text that still holds a json block


# -- the other readers ---------------------------------------------------------------------------------

def _write(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_novel_dialogue_keeps_quotes(tmp_path):
    f = _write(tmp_path / "sanguo.jsonl", [
        {"context": "曹仁回城中，与众商议。曹洪曰：", "chat": "“目今失了彝陵，势已危急。”", "speaker": "曹洪",
         "chapter": "第五十一回", "book": "三国演义"},
        {"context": "进得诏便行。主簿陈琳谏曰：", "chat": "“太后此诏，必是十常侍之谋。”"},
    ])
    convs = load(f)
    assert [c.answer for c in convs] == ["“目今失了彝陵，势已危急。”", "“太后此诏，必是十常侍之谋。”"]
    assert convs[0].meta == {"source": "novel-dialogue", "role": "曹洪", "speaker": "曹洪", "chapter": "第五十一回",
                             "book": "三国演义"}
    assert "role" not in convs[1].meta
    back = to_records(convs, "novel-dialogue")
    assert back[0] == {"context": "曹仁回城中，与众商议。曹洪曰：", "chat": "“目今失了彝陵，势已危急。”",
                       "speaker": "曹洪", "chapter": "第五十一回"}


def test_alpaca_reader(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps([
        {"instruction": "翻译成英文", "input": "你好", "output": "Hello", "system": "你是翻译"},
        {"instruction": "再来一句", "output": "Good night", "history": [["翻译：晚安", "Good night"]]},
        {"instruction": "", "input": "只有输入", "output": "好"},
    ], ensure_ascii=False, indent=1), encoding="utf-8")
    a, b, c = load(f)
    assert a.system == "你是翻译" and [m.content for m in a.messages] == ["翻译成英文\n你好", "Hello"]
    assert ([m.role for m in b.messages] == ["user", "assistant", "user", "assistant"]
            and b.messages[0].content == "翻译：晚安")
    assert c.messages[0].content == "只有输入"


def test_sharegpt_reader(tmp_path, capsys):
    f = _write(tmp_path / "s.jsonl", [
        {"conversations": [{"from": "system", "value": "你是张飞"}, {"from": "human", "value": "你是谁"},
                           {"from": "gpt", "value": "我乃燕人张翼德"},
                           {"from": "human", "value": "再说一遍"}, {"from": "gpt", "value": "俺也一样"}],
         "tools": "[{}]"},
        {"conversations": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "hello"}],
         "system": "top-level system"},
    ])
    a, b = load(f)
    assert a.system == "你是张飞" and len(a.messages) == 4 and a.answer == "俺也一样"
    assert b.system == "top-level system" and b.meta["source"] == "sharegpt"
    assert "tools" in capsys.readouterr().err  # ignored, with a warning


def test_messages_reader(tmp_path):
    f = _write(tmp_path / "m.jsonl", [
        {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"},
                      {"role": "assistant", "content": "draft", "weight": 0}, {"role": "user", "content": "again"},
                      {"role": "assistant", "content": [{"type": "text", "text": "final"}]}]},
    ])
    assert detect_format(json.loads(f.read_text(encoding="utf-8"))) == "messages"
    (c,) = load(f)
    assert c.system == "sys" and c.answer == "final" and c.messages[1].loss is False and c.messages[3].loss is True
    assert to_records([c], "messages")[0]["messages"][2] == {"role": "assistant", "content": "draft", "weight": 0}


def test_detect_format_every_shape():
    shapes = {
        "rolebench": {"role": "李白", "question": "q", "generated": ["a"]},
        "novel-dialogue": {"context": "c", "chat": "“x”"},
        "context-target": {"context": "c", "target": "t"},
        "alpaca": {"instruction": "i", "output": "o"},
        "sharegpt": {"conversations": []},
        "messages": {"messages": [{"role": "user", "content": "q"}]},
        "conversation": {"messages": [{"role": "user", "content": "q"}], "meta": {"source": "x"}},
        "trl": {"prompt": "q", "chosen": "a", "rejected": "b"},
        "kto": {"prompt": "q", "completion": "a", "label": True},
    }
    assert set(shapes) == {name for name, f in FORMATS.items() if f.read_file is None}  # every JSON-record format
    for name, rec in shapes.items():
        assert detect_format(rec) == name
    with pytest.raises(DataError, match=r"x\.jsonl:3: cannot tell the format .*keys: foo.*--from"):
        detect_format({"foo": 1}, "x.jsonl:3")


# -- writers and round trips ---------------------------------------------------------------------------

def _sample() -> list[Conversation]:
    return [
        Conversation([Message("user", "你是谁？"), Message("assistant", "吾乃李白。")], "你是李白。",
                     {"source": "t", "role": "李白"}),
        Conversation([Message("user", "第一问"), Message("assistant", "第一答"), Message("user", "第二问"),
                      Message("assistant", "第二答")], None, {}),
        Conversation([Message("user", "Instruction: x\nInput: y\nAnswer: "), Message("assistant", '["水果"]')],
                     None, {}),
    ]


def _same(a: list[Conversation], b: list[Conversation]) -> None:
    assert [(c.system, [(m.role, m.content) for m in c.messages]) for c in a] == \
           [(c.system, [(m.role, m.content) for m in c.messages]) for c in b]


@pytest.mark.parametrize("fmt", ["conversation", "alpaca", "sharegpt", "messages"])
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_export_import_round_trip(tmp_path, fmt, suffix):
    convs = _sample()
    out = save(convs, tmp_path / f"out{suffix}", fmt)
    if suffix == ".json":
        assert isinstance(json.loads(out.read_text(encoding="utf-8")), list)
    _same(load(out, fmt), convs)
    _same(load(out), convs)  # and the format is detected from what we wrote
    if fmt == "conversation":
        assert [c.meta for c in load(out)] == [c.meta for c in convs]


def test_round_trip_single_turn_formats(tmp_path, datasets_dir, rolebench_dir):
    ie = load(datasets_dir / "chatglm-mixed-ie-cls/mixed_dev_dataset.jsonl", "context-target")
    out = save(ie, tmp_path / "ie.jsonl", "context-target")
    # byte-for-byte the same records as the source file
    assert _raw(out) == _raw(datasets_dir / "chatglm-mixed-ie-cls/mixed_dev_dataset.jsonl")
    _same(load(out, "context-target"), ie)
    rb = load(rolebench_dir / "role_specific/test.jsonl", "rolebench")
    back = load(save(rb, tmp_path / "rb.jsonl"), "conversation")
    assert [c.to_dict() for c in back] == [c.to_dict() for c in rb]  # meta (references, type) survives too


def test_writers_refuse_what_they_cannot_hold(tmp_path):
    convs = _sample()
    with pytest.raises(DataError, match=r"conversation 1 \(t 李白\): context-target has no system prompt"):
        save(convs, tmp_path / "x.jsonl", "context-target")
    with pytest.raises(DataError, match="conversation 1: context-target holds one prompt and one answer; "
                                        "this conversation has 4"):
        save(convs[1:], tmp_path / "x.jsonl", "context-target")
    with pytest.raises(ConfigError, match="cannot write format 'rolebench'"):
        save(convs, tmp_path / "x.jsonl", "rolebench")
    prompt_only = Conversation([Message("user", "q")])
    with pytest.raises(DataError, match="alpaca needs an answer"):
        save([prompt_only], tmp_path / "x.jsonl", "alpaca")
    assert not (tmp_path / "x.jsonl").exists()
    # our own format keeps prompt-only conversations (eval prompts)
    assert load(save([prompt_only], tmp_path / "p.jsonl"))[0].answer is None
