"""dataset_info.json (LLaMA-Factory layout) by name, `tunesmith data register`, and resolve_dataset specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.data import load, load_dataset_by_name, read_dataset_info, register_dataset, resolve_dataset
from tunesmith.errors import ConfigError, DataError


def _dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


@pytest.fixture()
def lf_dir(tmp_path) -> Path:
    """A folder laid out like LLaMA-Factory's data/: JSON-array files and a dataset_info.json."""
    d = tmp_path / "data"
    _dump(d / "alpaca_zh_demo.json", [
        {"instruction": "识别并解释给定列表中的两个科学理论：细胞理论和日心说。", "input": "",
         "output": "细胞理论是生物科学的一个理论……", "system": "ignored unless mapped"},
        {"instruction": "翻译", "input": "你好", "output": "Hello", "history": [["在吗", "在"]]},
    ])
    _dump(d / "glaive_toolcall_zh_demo.json", [
        {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！有什么可以帮你？"}],
         "system": "你是助手", "tools": "[]"},
    ])
    _dump(d / "openai_style.json", [
        {"messages": [{"role": "system", "content": "系统"}, {"role": "user", "content": "问"},
                      {"role": "assistant", "content": "答"}]},
    ])
    (d / "folder").mkdir()
    _dump(d / "folder" / "a.json", [{"q": "问一", "a": "答一"}])
    _dump(d / "folder" / "b.json", [{"q": "问二", "a": "答二"}])
    _dump(d / "dataset_info.json", {
        "alpaca_zh_demo": {"file_name": "alpaca_zh_demo.json"},
        "alpaca_with_system": {"file_name": "alpaca_zh_demo.json",
                               "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                           "system": "system", "history": "history"}},
        "glaive_toolcall_zh_demo": {"file_name": "glaive_toolcall_zh_demo.json", "formatting": "sharegpt",
                                    "columns": {"messages": "conversations", "system": "system", "tools": "tools"}},
        "openai_style": {"file_name": "openai_style.json", "formatting": "sharegpt",
                         "columns": {"messages": "messages"},
                         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                  "assistant_tag": "assistant", "system_tag": "system"}},
        "renamed_columns_folder": {"file_name": "folder", "columns": {"prompt": "q", "query": None, "response": "a"}},
        "first_one": {"file_name": "alpaca_zh_demo.json", "num_samples": 1},
        "alpaca_gpt4_en": {"hf_hub_url": "llamafactory/alpaca_gpt4_en"},
        "dpo_pairs": {"file_name": "alpaca_zh_demo.json", "ranking": True},
    })
    return d


def test_llama_factory_alpaca_entries(lf_dir):
    convs = load_dataset_by_name("alpaca_zh_demo", lf_dir)
    assert len(convs) == 2
    # LLaMA-Factory reads system/history only when the columns map them: same conversations here.
    assert convs[0].system is None and len(convs[1].messages) == 2 and convs[1].messages[0].content == "翻译\n你好"
    mapped = load_dataset_by_name("alpaca_with_system", lf_dir)
    assert (mapped[0].system == "ignored unless mapped"
            and [m.content for m in mapped[1].messages] == ["在吗", "在", "翻译\n你好", "Hello"])
    assert len(load_dataset_by_name("first_one", lf_dir)) == 1  # num_samples
    folder = load_dataset_by_name("renamed_columns_folder", lf_dir)  # a folder of files, renamed columns
    assert [(c.messages[0].content, c.answer) for c in folder] == [("问一", "答一"), ("问二", "答二")]


def test_llama_factory_sharegpt_and_openai_entries(lf_dir, capsys):
    (c,) = load_dataset_by_name("glaive_toolcall_zh_demo", lf_dir)
    assert c.system == "你是助手" and c.answer == "你好！有什么可以帮你？"
    (o,) = load_dataset_by_name("openai_style", lf_dir)
    assert o.system == "系统" and [m.role for m in o.messages] == ["user", "assistant"]


def test_registry_errors_name_the_entry(lf_dir, tmp_path):
    with pytest.raises(DataError, match=r"dataset_info\.json: dataset 'nope' is not registered "
                                        r"\(known: alpaca_gpt4_en, alpaca_with_system"):
        load_dataset_by_name("nope", lf_dir)
    with pytest.raises(DataError, match=r"alpaca_gpt4_en: entry uses hf_hub_url; only local files are read"):
        load_dataset_by_name("alpaca_gpt4_en", lf_dir)
    with pytest.raises(DataError, match="ranking"):
        load_dataset_by_name("dpo_pairs", lf_dir)
    with pytest.raises(DataError, match="no dataset_info.json in this folder"):
        load_dataset_by_name("x", tmp_path)
    info = read_dataset_info(lf_dir)
    info["broken"] = {"file_name": "missing.json"}
    info["weird"] = {"file_name": "alpaca_zh_demo.json", "formatting": "csv"}
    _dump(lf_dir / "dataset_info.json", info)
    with pytest.raises(DataError, match="file_name 'missing.json' not found"):
        load_dataset_by_name("broken", lf_dir)
    with pytest.raises(DataError, match="formatting 'csv' unknown"):
        load_dataset_by_name("weird", lf_dir)
    (lf_dir / "dataset_info.json").write_text("{\n  \"a\": {,\n}", encoding="utf-8")
    with pytest.raises(DataError, match=r"dataset_info\.json:2: invalid JSON"):
        load_dataset_by_name("a", lf_dir)


def test_register_our_formats_and_keep_existing_entries(lf_dir, datasets_dir, rolebench_dir):
    before = read_dataset_info(lf_dir)
    ie = datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"
    entry = register_dataset("ie_dev", ie, lf_dir)  # formatting detected
    assert entry == {"file_name": str(ie.resolve()), "formatting": "context-target"}
    rb = rolebench_dir / "role_specific" / "test.jsonl"
    register_dataset("spe", rb, lf_dir, formatting="rolebench", options={"answers": "first"})
    info = read_dataset_info(lf_dir)
    assert {k: info[k] for k in before} == before and list(info)[-2:] == ["ie_dev", "spe"]
    assert len(load_dataset_by_name("ie_dev", lf_dir)) == 122
    spe = load_dataset_by_name("spe", lf_dir)
    assert len(spe) == 239 and spe[0].system.startswith("你是")  # desc.json found next to the data
    # file inside the data folder is stored relative; an existing name needs force
    entry = register_dataset("again", lf_dir / "openai_style.json", lf_dir)
    assert (entry["file_name"] == "openai_style.json" and entry["formatting"] == "sharegpt"
            and entry["tags"]["role_tag"] == "role")
    assert load_dataset_by_name("again", lf_dir)[0].system == "系统"
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("again", ie, lf_dir)
    register_dataset("again", ie, lf_dir, force=True)
    assert read_dataset_info(lf_dir)["again"]["formatting"] == "context-target"


def test_register_cli(tmp_path, datasets_dir, capsys):
    data = tmp_path / "reg"
    ie = datasets_dir / "chatglm-mixed-ie-cls" / "dataset.jsonl"
    assert main(["data", "register", "ie_demo", str(ie), "--data-dir", str(data)]) == 0
    assert "registered 'ie_demo'" in capsys.readouterr().out
    assert main(["data", "register", "alp", str(ie), "--data-dir", str(data), "--formatting", "alpaca",
                 "--column", "prompt=context", "--column", "response=target"]) == 0
    alp = load_dataset_by_name("alp", data)
    assert alp[0].messages[0].content.endswith("Answer: ") and len(alp) == 5
    assert main(["data", "register", "alp", str(ie), "--data-dir", str(data)]) == 2
    assert "already registered" in capsys.readouterr().err
    assert main(["data", "register", "x", str(tmp_path / "none.jsonl"), "--data-dir", str(data)]) == 2
    assert "none.jsonl: file not found" in capsys.readouterr().err


def test_resolve_dataset_specs(lf_dir, datasets_dir, rolebench_dir):
    ie = datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"
    assert len(resolve_dataset({"path": str(ie), "format": "context-target"})) == 122
    assert len(resolve_dataset(str(ie))) == 122  # a path string, format detected
    assert len(resolve_dataset({"name": "alpaca_zh_demo", "data_dir": str(lf_dir)})) == 2
    assert len(resolve_dataset("alpaca_zh_demo", data_dir=lf_dir)) == 2  # a name string
    assert len(resolve_dataset({"path": "openai_style.json"}, data_dir=lf_dir)) == 1  # path relative to data_dir
    both = resolve_dataset([{"path": str(ie)}, {"name": "first_one"}], data_dir=lf_dir)
    assert len(both) == 123
    rb = rolebench_dir
    libai = resolve_dataset({"path": str(rb / "role_specific" / "train.jsonl"), "format": "rolebench",
                             "roles": ["李白"], "limit": 10})
    assert len(libai) == 10 and {c.meta["role"] for c in libai} == {"李白"}
    with pytest.raises(DataError, match="typo/train.jsonl: file not found"):
        resolve_dataset("typo/train.jsonl", data_dir=lf_dir)
    with pytest.raises(DataError, match="dataset 'typo' is not registered"):
        resolve_dataset("typo", data_dir=lf_dir)
    with pytest.raises(ConfigError, match="needs 'path' or 'name'"):
        resolve_dataset({"file": "x"})
    with pytest.raises(ConfigError, match="unknown keys \\['formatt'\\]"):
        resolve_dataset({"name": "alpaca_zh_demo", "data_dir": str(lf_dir), "formatt": "x"})
    with pytest.raises(ConfigError, match="no option 'persona_tmpl'"):
        resolve_dataset({"path": str(rb / "role_specific" / "test.jsonl"), "format": "rolebench", "persona_tmpl": "x"})


def test_resolve_dataset_refuses_test_data_for_training(rolebench_dir):
    test = {"path": str(rolebench_dir / "role_specific" / "test.jsonl"), "format": "rolebench"}
    assert len(resolve_dataset(test, purpose="eval")) == 240
    with pytest.raises(DataError, match="240 conversations come from a test split .*evaluation only"):
        resolve_dataset(test, purpose="train")
    assert len(resolve_dataset({**test, "allow_test": True}, purpose="train")) == 240
    train = {"path": str(rolebench_dir / "role_specific" / "train.jsonl"), "format": "rolebench"}
    assert len(resolve_dataset(train, purpose="train")) == 1535
    assert len(load(train["path"], "rolebench")) == 1535
