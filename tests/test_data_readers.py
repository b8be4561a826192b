"""Valid JSON that the readers refuse: nesting beyond MAX_JSON_DEPTH and a key given twice in one object.

Every reader of user JSON goes through one decoder (records.STRICT_JSON): JSONL lines, JSON array files,
dataset_info.json and the labeling store's typed messages. Python's json would take a duplicate key silently
(the last value wins) and fail with a RecursionError traceback from about 1,000 levels of nesting.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.data import load, read_dataset_info
from tunesmith.data.records import MAX_JSON_DEPTH
from tunesmith.errors import DataError

GOOD = {
    "rolebench": {"role": "李白", "question": "你好", "generated": ["幸会幸会"]},
    "novel-dialogue": {"context": "曹洪曰：", "chat": "“走”"},
    "context-target": {"context": "Instruction: 分类\nInput: 苹果\nAnswer: ", "target": '["水果"]'},
    "alpaca": {"instruction": "i", "output": "o"},
    "sharegpt": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    "messages": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    "conversation": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                     "meta": {}},
}
DEEP = "nested deeper than 100 levels (expected at most 100"
DEEP_RE = re.escape(DEEP)


def _j(rec) -> str:
    return json.dumps(rec, ensure_ascii=False)


def _with_extra(rec: dict, key: str, raw: str) -> str:
    """The record's JSON with one more key whose value is the raw JSON text `raw`."""
    return _j(rec)[:-1] + f', "{key}": {raw}}}'


def _nest(levels: int) -> str:
    return "[" * levels + "]" * levels


def _load(f: Path, fmt: str | None, rolebench_dir: Path, **kw):
    if fmt == "rolebench":
        kw["profiles"] = rolebench_dir / "profiles-zh/desc.json"
    return load(f, fmt, **kw)


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, 1_000, 100_000])
@pytest.mark.parametrize("fmt", [*GOOD, None])
def test_deep_nesting_is_refused_with_file_and_line_in_every_format(tmp_path, rolebench_dir, fmt, levels):
    good = GOOD[fmt or "context-target"]
    deep = _with_extra(good, "extra", _nest(levels))  # the record itself is one level more
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(_j(good) + "\n\n" + deep + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        _load(jsonl, fmt, rolebench_dir)
    assert str(e.value).startswith(f"{jsonl}:3: arrays/objects {DEEP}"), str(e.value)
    array = tmp_path / "d.json"
    array.write_text("[\n" + _j(good) + ",\n" + deep + "\n]\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        _load(array, fmt, rolebench_dir)
    assert str(e.value).startswith(f"{array}:3 (record 1): arrays/objects {DEEP}"), str(e.value)
    # --on-error skip drops that record alone, in both layouts
    for f in (jsonl, array):
        errors: list[DataError] = []
        assert len(_load(f, fmt, rolebench_dir, on_error="skip", errors=errors, quiet=True)) == 1
        assert len(errors) == 1 and DEEP in str(errors[0])


def test_nesting_up_to_the_limit_is_read(tmp_path):
    def record(levels: int) -> str:  # the record (1) -> meta (2) -> "x": levels - 2 arrays
        return _j({"messages": GOOD["conversation"]["messages"], "meta": {"x": json.loads(_nest(levels - 2))}})

    f = tmp_path / "d.jsonl"
    f.write_text(record(MAX_JSON_DEPTH) + "\n", encoding="utf-8")
    (conv,) = load(f, "conversation")
    assert json.dumps(conv.meta["x"]) == _nest(MAX_JSON_DEPTH - 2)
    f.write_text(record(MAX_JSON_DEPTH + 1) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"d\.jsonl:1: arrays/objects {DEEP_RE}"):
        load(f, "conversation")


def test_duplicate_keys_are_refused_naming_the_key(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(_j(GOOD["context-target"]) + '\n{"context": "c", "target": 5, "target": "t"}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        load(f)
    assert str(e.value) == (f'{f}:2: key "target" appears twice in one object (expected each key once; '
                            "a JSON reader would silently keep only the last value)")
    # inside a nested object too: here a sharegpt turn whose text is given twice
    turn = '{"from": "gpt", "value": "a", "value": "b"}'
    f.write_text('{"conversations": [{"from": "human", "value": "q"}, ' + turn + "]}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r'd\.jsonl:1: key "value" appears twice'):
        load(f, "sharegpt")
    # the same key in two different objects is fine
    f.write_text(_j(GOOD["sharegpt"]) + "\n", encoding="utf-8")
    assert len(load(f, "sharegpt")) == 1


def test_duplicate_key_in_a_json_array_names_its_line_and_the_rest_can_be_skipped(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c",\n   "output": "d",\n'
                 '   "instruction": "e"},\n  {"instruction": "f", "output": "g"}\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r'a\.json:5 \(record 1\): key "instruction" appears twice'):
        load(f)
    errors: list[DataError] = []
    convs = load(f, on_error="skip", errors=errors, quiet=True)
    assert [c.messages[0].content for c in convs] == ["a", "f"] and len(errors) == 1


def test_cli_check_lists_deep_and_duplicate_records_and_exits_2(tmp_path, capsys):
    good = _j(GOOD["context-target"])
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join([good, '{"context": "c", "target": 5, "target": "t"}',
                            _with_extra(GOOD["context-target"], "x", _nest(5_000)), good]) + "\n", encoding="utf-8")
    assert main(["data", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert f'{f}:2: key "target" appears twice' in err and f"{f}:3: arrays/objects {DEEP}" in err
    assert "2 bad record(s); 2 conversations are fine" in err and "Traceback" not in err
    out = tmp_path / "o.jsonl"
    assert main(["data", "convert", str(f), str(out)]) == 2
    err = capsys.readouterr().err
    assert f'error: {f}:2: key "target"' in err and "Traceback" not in err and not out.exists()


def test_dataset_info_refuses_a_name_registered_twice_and_deep_nesting(tmp_path):
    info = tmp_path / "dataset_info.json"
    info.write_text('{\n  "ie": {"file_name": "a.jsonl"},\n  "cls": {"file_name": "b.jsonl"},\n'
                    '  "ie": {"file_name": "c.jsonl"}\n}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r'dataset_info\.json:4: key "ie" appears twice in one object'):
        read_dataset_info(tmp_path)
    info.write_text('{"ie": {"file_name": "a.jsonl", "columns": ' + _nest(3_000) + "}}", encoding="utf-8")
    with pytest.raises(DataError, match=rf"dataset_info\.json:1: arrays/objects {DEEP_RE}"):
        read_dataset_info(tmp_path)


def test_label_store_refuses_typed_messages_with_a_duplicate_key_or_deep_nesting(tmp_path):
    from tunesmith.label.store import LabelStore

    store = LabelStore(tmp_path / "proj")
    try:
        dup = '[{"role": "user", "content": "q"},\n {"role": "assistant", "content": "a", "content": "b"}]'
        with pytest.raises(DataError, match=r'messages \(line 2\): key "content" appears twice'):
            store.add_sample(messages=dup)
        with pytest.raises(DataError, match=rf"messages \(line 1\): arrays/objects {DEEP_RE}"):
            store.add_sample(messages=_nest(2_000))
        assert store.count() == 0
        ok = store.add_sample(messages='[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]')
        assert [m.content for m in ok.messages] == ["q", "a"]
    finally:
        store.close()


# -- JSON read elsewhere: profiles, probe files, -O values, a target that holds JSON, model output --------


def test_other_json_readers_refuse_bad_shapes_or_survive_deep_model_output(tmp_path, capsys):
    from tunesmith.data.rolebench import load_profiles
    from tunesmith.eval.ie import parse_json_answer
    from tunesmith.eval.probe import load_probe
    from tunesmith.label.answers import parse_answer_json

    deep = "[" * 3000 + "]" * 3000
    prof = tmp_path / "desc.json"
    prof.write_text('{"李白": "a",\n "李白": "b"}', encoding="utf-8")
    with pytest.raises(DataError, match=r"desc\.json:2: key \"李白\" appears twice"):
        load_profiles(prof)
    probe = tmp_path / "probe.jsonl"
    probe.write_text('{"question": ' + deep + "}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"probe\.jsonl:1: invalid JSON \(arrays/objects nested deeper"):
        load_probe(probe)
    # a context-target record whose target holds deep JSON is text to learn, not a traceback
    data = tmp_path / "ct.jsonl"
    data.write_text(json.dumps({"context": "Q: ", "target": deep}) + "\n", encoding="utf-8")
    assert main(["data", "check", str(data)]) == 0
    # a model that writes brackets thousands deep: its answer does not parse, and nothing raises
    assert parse_json_answer(deep) == (False, None)
    result = parse_answer_json(deep)
    assert result.found and not result.ok and "nested too deep" in result.error
