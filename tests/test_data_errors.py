"""Bad input: every message names the file and line and what was expected; the CLI exits 2 without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.data import load
from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write_lines

GOOD_CT = {"context": "Instruction: 分类\nInput: 苹果\nAnswer: ", "target": '["水果"]'}
GOOD_RB = {"role": "李白", "question": "你好", "generated": ["幸会幸会", "久仰"]}


def _lines(path: Path, *lines: str, encoding: str = "utf-8", newline_at_end: bool = True) -> Path:
    path.write_bytes(("\n".join(lines) + ("\n" if newline_at_end else "")).encode(encoding))
    return path


def _j(rec) -> str:
    return json.dumps(rec, ensure_ascii=False)


def test_empty_file(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jsonl: file is empty \(expected JSON records"):
        load(f, "context-target")
    _lines(f, "", "   ", "")
    with pytest.raises(DataError, match="file is empty"):
        load(f)


def test_blank_lines_are_skipped_and_lines_still_counted(tmp_path):
    f = _lines(tmp_path / "d.jsonl", _j(GOOD_CT), "", "   ", _j(GOOD_CT), "", _j({"context": "x", "target": 3}))
    with pytest.raises(DataError, match=r"d\.jsonl:6: field \"target\" must be a string \(got int\)"):
        load(f)
    assert len(load(f, on_error="skip", quiet=True)) == 2


def test_windows_line_endings_and_bom_are_accepted(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + (_j(GOOD_CT) + "\r\n" + _j(GOOD_CT) + "\r\n").encode("utf-8"))
    convs = load(f)
    assert len(convs) == 2 and convs[0].messages[0].content == GOOD_CT["context"]  # "Answer: " intact, no \r
    g = tmp_path / "utf16.jsonl"
    g.write_bytes((_j(GOOD_CT) + "\n").encode("utf-16"))  # Python writes a BOM for "utf-16"
    assert load(g)[0].answer == '["水果"]'


def test_non_utf8_bytes_name_line_and_expected_encoding(tmp_path):
    f = tmp_path / "latin.jsonl"
    f.write_bytes((_j(GOOD_CT) + "\n").encode("utf-8") + b'{"context": "caf\xe9 \xff\xfe", "target": "x"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: byte \d+ \(0x.*\) is not valid UTF-8 "
                                        r"\(expected a UTF-8 file; .*gb18030"):
        load(f)


def test_gb18030_jsonl_is_decoded_with_a_warning(tmp_path, capsys):
    rec = {"context": "曹仁回城中，与众商议。曹洪曰：", "chat": "“目今失了彝陵，势已危急，何不拆丞相遗计观之？”"}
    f = _lines(tmp_path / "gbk.jsonl", _j(rec), _j(rec), encoding="gb18030")
    convs = load(f)
    assert convs[0].answer == rec["chat"] and len(convs) == 2
    assert "decoded as GB18030" in capsys.readouterr().err
    # Forcing UTF-8 refuses, naming the line and suggesting the encoding.
    with pytest.raises(DataError, match=r"gbk\.jsonl:1: byte \d+ is not valid utf-8"):
        load(f, encoding="utf-8")
    assert load(f, encoding="gb18030")[1].answer == rec["chat"]


def test_truncated_last_line(tmp_path):
    full = _j(GOOD_RB)
    f = _lines(tmp_path / "cut.jsonl", _j(GOOD_CT), _j(GOOD_CT), full[: len(full) // 2], newline_at_end=False)
    with pytest.raises(DataError, match=r"cut\.jsonl:3: truncated JSON: the file ends in the middle of a record"):
        load(f, "context-target")
    assert len(load(f, "context-target", on_error="skip", quiet=True)) == 2


def test_invalid_json_line_and_non_object(tmp_path):
    f = _lines(tmp_path / "bad.jsonl", _j(GOOD_CT), "{'context': 'single quotes'}", _j(GOOD_CT))
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON: Expecting property name "
                                        r".*\(expected one JSON object per line\)"):
        load(f)
    g = _lines(tmp_path / "list.jsonl", _j(GOOD_CT), '["not", "an", "object"]')
    with pytest.raises(DataError, match=r"list\.jsonl:2: record must be a JSON object \(got list; expected"):
        load(g, "context-target")


def test_json_array_file_reports_record_index_and_line(tmp_path):
    f = tmp_path / "arr.json"
    f.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": ""},\n'
                 '  {"instruction": "d", "output": 5}\n]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r'arr\.json:3 \(record 1\): field "output" is empty '
                                        r'\(expected a non-empty answer\)'):
        load(f)
    errors: list[DataError] = []
    convs = load(f, on_error="skip", errors=errors, quiet=True)
    assert len(convs) == 1
    assert [e.where for e in errors] == [f"{f}:3 (record 1)", f"{f}:4 (record 2)"]
    assert 'field "output" must be a string (got int)' in str(errors[1])
    g = tmp_path / "cut.json"
    g.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": "c", "outp', encoding="utf-8")
    with pytest.raises(DataError, match=r"cut\.json:2 \(record 1\): truncated JSON array"):
        load(g)


@pytest.mark.parametrize("record,message", [
    ({"role": "李白", "question": "q", "generated": "一个字符串"},
     'field "generated" must be a list of strings (got string)'),
    ({"role": "李白", "question": "q", "generated": ["好", 3]}, 'field "generated"[1] must be a string (got int)'),
    ({"role": "李白", "question": "q", "generated": ["好", "  "]},
     'field "generated"[1] is empty (expected a non-empty answer)'),
    ({"role": "李白", "question": "q", "generated": []}, 'field "generated" is an empty list'),
    ({"role": "李白", "generated": ["好"]}, 'missing field "question" (expected {"role": str, "question": str'),
    ({"role": 7, "question": "q", "generated": ["好"]}, 'field "role" must be a string (got int)'),
    ({"role": "李白", "question": "q", "generated": ["好"], "type": 1},
     'field "type" must be a string or a list of strings'),
])
def test_rolebench_wrong_fields(tmp_path, rolebench_dir, record, message):
    f = _lines(tmp_path / "train.jsonl", _j(GOOD_RB), _j(record))
    prof = rolebench_dir / "profiles-zh/desc.json"
    with pytest.raises(DataError) as e:
        load(f, "rolebench", profiles=prof)
    assert str(e.value).startswith(f"{f}:2: ") and message in str(e.value)


@pytest.mark.parametrize("fmt,record,message", [
    ("context-target", {"context": "c", "target": ""}, 'field "target" is empty'),
    ("context-target", {"context": "c"}, 'missing field "target" (expected {"context": str, "target": str}'),
    ("novel-dialogue", {"context": "曹洪曰：", "chat": None}, 'missing field "chat"'),
    ("novel-dialogue", {"context": "曹洪曰：", "chat": "“x”", "chapter": [1]},
     'field "chapter" must be a string or an integer'),
    ("alpaca", {"instruction": "i", "output": "o", "history": [["only one"]]},
     'field "history"[0] must be a [user, assistant] pair'),
    ("alpaca", {"instruction": "", "input": "", "output": "o"}, "both empty (expected an instruction)"),
    ("sharegpt", {"conversations": [{"from": "gpt", "value": "a"}, {"from": "gpt", "value": "b"}]},
     "out of order (expected turns to alternate human, gpt"),  # one opening gpt turn (a greeting) is fine
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}]},
     "expected the conversation to end with a 'gpt' answer"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}]},
     "tool turns ('function_call') are not supported"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]}, "empty answer"),
    ("messages", {"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]},
     "messages[1].role is 'bot' (expected 'system', 'user' or 'assistant')"),
    ("messages", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content must be a string (got int)"),
    ("conversation", {"messages": "hi", "meta": {}}, 'field "messages" must be a list'),
])
def test_wrong_fields_other_formats(tmp_path, fmt, record, message):
    good = {"context-target": GOOD_CT, "novel-dialogue": {"context": "曹洪曰：", "chat": "“走”"},
            "alpaca": {"instruction": "i", "output": "o"},
            "sharegpt": {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            "messages": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "conversation": {"messages": [{"role": "user", "content": "q"}], "meta": {}}}[fmt]
    f = _lines(tmp_path / "d.jsonl", _j(good), "", _j(record))
    with pytest.raises(DataError) as e:
        load(f, fmt)
    assert str(e.value).startswith(f"{f}:3: ") and message in str(e.value), str(e.value)


def test_skip_reports_count_and_first_messages(tmp_path, capsys):
    bad = [_j({"context": "c", "target": ""}) for _ in range(8)]
    f = _lines(tmp_path / "d.jsonl", _j(GOOD_CT), *bad, _j(GOOD_CT))
    errors: list[DataError] = []
    assert len(load(f, on_error="skip", errors=errors)) == 2
    err = capsys.readouterr().err
    assert "skipped 8 bad record(s)" in err and f"{f}:2: " in err and f"{f}:6: " in err and f"{f}:7: " not in err
    assert len(errors) == 8 and errors[-1].where == f"{f}:9"
    with pytest.raises(ConfigError, match="on_error='ignore'"):
        load(f, on_error="ignore")


def test_unknown_format_and_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="unknown format 'csv' \\(expected one of: rolebench, "):
        load(tmp_path, "csv")
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        load(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="folder has no"):
        load(tmp_path)
    with pytest.raises(DataError, match="glob matches no files"):
        load(str(tmp_path / "*.jsonl"))


def test_write_atomic_leaves_nothing_half_written(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("old content\n", encoding="utf-8")

    def lines():
        yield "first"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_lines(out, lines())
    assert out.read_text(encoding="utf-8") == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # the temp file is gone


# -- the CLI -------------------------------------------------------------------------------------------

def test_cli_convert_bad_record_exits_2_and_keeps_old_output(tmp_path, capsys):
    src = _lines(tmp_path / "ie.jsonl", _j(GOOD_CT), _j({"context": "c", "target": ["x"]}))
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    assert main(["data", "convert", str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {src}:2: field \"target\" must be a string (got list)" in err and "Traceback" not in err
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ie.jsonl", "out.jsonl"]
    # --on-error skip converts the rest and says what it dropped
    assert main(["data", "convert", str(src), str(out), "--on-error", "skip", "--to", "context-target"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 bad record(s)" in err and f"{src}:2:" in err
    assert [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] == [GOOD_CT]


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    src = _lines(tmp_path / "ie.jsonl", _j(GOOD_CT))
    cases = [
        (["data", "convert", str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl")],
         "missing.jsonl: file not found"),
        (["data", "convert", str(src), str(tmp_path / "o.jsonl"), "--from", "csv"], "unknown format 'csv'"),
        (["data", "convert", str(src), str(tmp_path / "o.jsonl"), "--on-error", "maybe"], "on_error='maybe'"),
        (["data", "convert", str(src), str(tmp_path / "o.jsonl"), "-O", "nonsense"],
         "--option 'nonsense' must look like KEY=VALUE"),
        (["data", "convert", str(src), str(tmp_path / "o.jsonl"), "-O", "speed=1"],
         "format 'context-target' has no option 'speed'"),
        (["data", "stats", str(src), "--tokenizer", str(tmp_path / "no-model")], "no such model folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_check_lists_every_bad_record(tmp_path, capsys):
    f = _lines(tmp_path / "d.jsonl", _j(GOOD_CT), _j({"context": "c", "target": ""}), "{", _j(GOOD_CT))
    assert main(["data", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2: field \"target\" is empty" in err and f"{f}:3: invalid JSON" in err
    assert "2 bad record(s); 2 conversations are fine" in err
    g = _lines(tmp_path / "g.jsonl", _j(GOOD_CT))
    assert main(["data", "check", str(g)]) == 0
    assert "ok: 1 conversations" in capsys.readouterr().out


def test_cli_process_prints_one_line_and_exits_2(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_bytes(b'{"context": "a", "target": "b"}\n{"context": "a", "targ')
    r = subprocess.run([sys.executable, "-m", "tunesmith.cli", "data", "convert", str(f), str(tmp_path / "o.jsonl")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert f"{f}:2: truncated JSON" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()
