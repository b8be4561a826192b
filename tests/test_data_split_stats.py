"""Stats, deterministic grouped splits, the test-data guard, and rolebench-prepare on the real RoleBench folder."""

from __future__ import annotations

import json

import pytest

from tunesmith.cli import main
from tunesmith.data import dataset_stats, load, resolve_dataset, rolebench_prepare, split_conversations
from tunesmith.data.stats import percentiles
from tunesmith.errors import ConfigError, DataError


def _questions(convs) -> set:
    return {(c.meta["role"], c.meta["question"]) for c in convs}


# -- stats ---------------------------------------------------------------------------------------------

def test_percentiles_nearest_rank():
    v = list(range(1, 101))  # 1..100
    assert percentiles(v) == {"p50": 50, "p90": 90, "p99": 99, "min": 1, "max": 100, "mean": 50.5}
    assert percentiles([7])["p99"] == 7 and percentiles([])["max"] == 0


def test_stats_on_rolebench(rolebench_dir):
    convs = load(rolebench_dir / "role_specific/test.jsonl", "rolebench")
    s = dataset_stats(convs)
    assert s["conversations"] == 240 and s["splits"] == {"test": 240}
    # 50 questions per role, 39 for 孙悟空; the one record with 2 answers gives 张飞 51 conversations
    raw = [json.loads(x) for x in (rolebench_dir / "role_specific/test.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = {}
    for r in raw:
        expected[r["role"]] = expected.get(r["role"], 0) + len(r["generated"])
    assert s["roles"] == dict(sorted(expected.items(), key=lambda kv: -kv[1])) and s["roles"]["孙悟空"] == 39
    assert s["turns"] == {"1": 240} and s["distinct_systems"] == 5
    answers = sorted(len(c.answer) for c in convs)
    assert s["chars"]["answer"]["max"] == answers[-1] and s["chars"]["answer"]["p50"] == answers[119]
    assert s["chars"]["prompt"]["min"] > len(min(convs, key=lambda c: len(c.system)).system)  # prompt includes system


def test_stats_cli_json_and_table(rolebench_dir, capsys):
    assert main(["data", "stats", str(rolebench_dir / "role_specific/train.jsonl"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["conversations"] == 1535 and set(s["roles"]) == {"孙悟空", "华妃", "皇帝", "李白", "张飞"}
    assert s["chars"]["answer"]["p99"] <= s["chars"]["answer"]["max"]
    assert main(["data", "stats", str(rolebench_dir / "role_specific/train.jsonl"), "--role", "李白"]) == 0
    out = capsys.readouterr().out
    assert "李白" in out and "290" in out and "p90" in out and "张飞" not in out


def test_stats_with_tokenizer(tiny_qwen2, datasets_dir, capsys):
    from transformers import AutoTokenizer

    path = datasets_dir / "chatglm-mixed-ie-cls/dataset.jsonl"
    assert main(["data", "stats", str(path), "--tokenizer", str(tiny_qwen2), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    lengths = sorted(len(tok(c.answer, add_special_tokens=False)["input_ids"]) for c in load(path))
    assert s["tokens"]["answer"]["max"] == lengths[-1] and s["tokens"]["answer"]["p50"] == lengths[2]


# -- split ---------------------------------------------------------------------------------------------

def test_split_is_deterministic_and_grouped(rolebench_dir):
    convs = load(rolebench_dir / "general/train.jsonl", "rolebench", roles="李白")
    train, dev = split_conversations(convs, dev_ratio=0.1, seed=42)
    again = split_conversations(load(rolebench_dir / "general/train.jsonl", "rolebench", roles="李白"),
                                dev_ratio=0.1, seed=42)
    assert [c.to_dict() for c in dev] == [c.to_dict() for c in again[1]]
    assert len(train) + len(dev) == len(convs)
    assert not _questions(train) & _questions(dev)  # one question's answers stay on one side
    assert len(_questions(dev)) == round(len(_questions(convs)) * 0.1)
    other = split_conversations(convs, dev_ratio=0.1, seed=7)[1]
    assert _questions(other) != _questions(dev)
    # without grouping, answers of one question are split independently
    t2, d2 = split_conversations(convs, dev_ratio=0.1, seed=42, group_by="none")
    assert len(d2) == round(len(convs) * 0.1) and _questions(t2) & _questions(d2)
    with pytest.raises(ConfigError, match="dev ratio must be in"):
        split_conversations(convs, dev_ratio=1.5)


def test_split_cli(rolebench_dir, tmp_path, capsys):
    out = tmp_path / "sp"
    assert main(["data", "split", str(rolebench_dir / "role_specific/train.jsonl"), "-o", str(out), "--dev-ratio",
                 "0.1", "--role", "张飞"]) == 0
    train, dev = load(out / "train.jsonl"), load(out / "dev.jsonl")
    assert len(train) + len(dev) == 363 and len(dev) == 36 and {c.meta["role"] for c in train + dev} == {"张飞"}
    first = (out / "dev.jsonl").read_bytes()
    assert main(["data", "split", str(rolebench_dir / "role_specific/train.jsonl"), "-o", str(out), "--dev-ratio",
                 "0.1", "--role", "张飞"]) == 0
    assert (out / "dev.jsonl").read_bytes() == first


def test_split_refuses_test_data(rolebench_dir, tmp_path, capsys):
    out = tmp_path / "sp"
    assert main(["data", "split", str(rolebench_dir / "general/test.jsonl"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "6,982 conversations are test data" in err and "--allow-test" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["data", "split", str(rolebench_dir / "role_specific/test.jsonl"), "-o", str(out), "--allow-test"]) == 0
    assert "WARNING: splitting 240 TEST conversations" in capsys.readouterr().err


# -- rolebench-prepare ------------------------------------------------------------------------------------

def test_rolebench_prepare_libai(rolebench_dir, tmp_path, capsys):
    out = tmp_path / "libai"
    assert main(["data", "rolebench-prepare", str(rolebench_dir), "--role", "李白", "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["baseline_general.jsonl", "baseline_role_specific.jsonl", "dataset_info.json", "dev.jsonl",
                     "manifest.json", "persona.txt", "test_general.jsonl", "test_role_specific.jsonl", "train.jsonl"]
    raw = {rel: [json.loads(x) for x in (rolebench_dir / rel).read_text(encoding="utf-8").splitlines()]
           for rel in ("general/train.jsonl", "role_specific/train.jsonl", "general/test.jsonl",
                       "role_specific/test.jsonl")}
    libai = {k: [r for r in v if r["role"] == "李白"] for k, v in raw.items()}
    train, dev = load(out / "train.jsonl"), load(out / "dev.jsonl")
    n_answers = sum(len(r["generated"]) for k in ("general/train.jsonl", "role_specific/train.jsonl") for r in libai[k])
    assert len(train) + len(dev) == n_answers and not _questions(train) & _questions(dev)
    test_cus, test_spe = load(out / "test_general.jsonl"), load(out / "test_role_specific.jsonl")
    assert len(test_cus) == len(libai["general/test.jsonl"]) == 289 and len(test_spe) == 50
    assert [c.meta["references"] for c in test_cus] == [[g.strip() for g in r["generated"]]
                                                        for r in libai["general/test.jsonl"]]
    assert {c.meta["split"] for c in test_cus + test_spe} == {"test"} and {c.meta["split"] for c in train} == {"train"}
    # no test question of this role is in train or dev
    assert not (_questions(train) | _questions(dev)) & (_questions(test_cus) | _questions(test_spe))
    # baselines answer exactly the test questions, with the same references
    base = load(out / "baseline_general.jsonl")
    assert _questions(base) == _questions(test_cus) and all(c.meta["references"] for c in base)
    persona = (out / "persona.txt").read_text(encoding="utf-8").strip()
    assert {c.system for c in train + test_cus + test_spe} == {persona} and persona.startswith("你是李白，")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["files"]["train"]["conversations"] == len(train)
            and manifest["dropped_train_pairs_also_in_test"] == 0)
    # the whole folder loads too (dataset_info.json and manifest.json are not records)
    assert len(load(out)) == sum(f["conversations"] for f in manifest["files"].values())
    # the folder is a registry: names resolve, and test data is refused for training
    assert len(resolve_dataset({"name": "train", "data_dir": str(out)}, purpose="train")) == len(train)
    with pytest.raises(DataError, match="test split"):
        resolve_dataset({"name": "test_general", "data_dir": str(out)}, purpose="train")


def test_rolebench_prepare_errors(rolebench_dir, tmp_path, capsys):
    assert main(["data", "rolebench-prepare", str(rolebench_dir), "--role", "杜甫", "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "role '杜甫' not found" in err and "李白" in err
    assert main(["data", "rolebench-prepare", str(tmp_path), "--role", "李白", "-o", str(tmp_path / "x")]) == 2
    assert "missing general/train.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _rolebench_folder(src, descs, files):
    """A small rolebench-zh folder: profiles-zh/desc.json with descs, and each {relative path: records} as JSONL."""
    for sub in ("general", "role_specific", "profiles-zh"):
        (src / sub).mkdir(parents=True)
    (src / "profiles-zh" / "desc.json").write_text(json.dumps(descs, ensure_ascii=False), encoding="utf-8")
    for rel, recs in files.items():
        (src / rel).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return src


def test_rolebench_prepare_drops_train_pairs_that_are_in_test(rolebench_dir, tmp_path):
    # Build a small rolebench folder where one train (role, question) pair is also in test.
    src = _rolebench_folder(tmp_path / "rb", {"李白": "诗仙"}, {
        "general/train.jsonl": [{"role": "李白", "question": f"问{i}", "generated": ["答a", "答b"]} for i in range(10)],
        "general/test.jsonl": [{"role": "李白", "question": "问3", "generated": ["参考"]}],
        "role_specific/train.jsonl": [{"role": "李白", "question": "你的诗？", "generated": ["床前明月光"],
                                       "type": "script_based"}],
        "role_specific/test.jsonl": [{"role": "李白", "question": "你爱喝酒吗？", "generated": ["爱"],
                                      "type": ["script_agnostic"]}]})
    m = rolebench_prepare(src, ["李白"], tmp_path / "out", dev_ratio=0.0)
    assert m["dropped_train_pairs_also_in_test"] == 2
    train = load(tmp_path / "out" / "train.jsonl")
    assert len(train) == 19 and "问3" not in {c.meta["question"] for c in train}
    assert not (tmp_path / "out" / "dev.jsonl").exists() and "baseline_general" not in m["files"]


def test_rolebench_prepare_drops_questions_another_role_is_tested_on(tmp_path, capsys):
    from tunesmith.cli import main
    from tunesmith.data import rolebench_prepare

    # RoleBench splits general questions per role: 问1 is 张飞's test question and one of 李白's train questions
    src = _rolebench_folder(tmp_path / "rb", {"李白": "诗仙", "张飞": "猛将"}, {
        "general/train.jsonl": [{"role": "李白", "question": f"问{i}", "generated": ["答"]} for i in range(4)]
        + [{"role": "张飞", "question": f"问{i}", "generated": ["俺答"]} for i in (2, 3, 4)],
        "general/test.jsonl": [{"role": "张飞", "question": "问1", "generated": ["俺参考"]},
                               {"role": "李白", "question": "问4", "generated": ["参考"]}],
        "role_specific/train.jsonl": [{"role": "张飞", "question": "你的兵器？", "generated": ["丈八蛇矛"],
                                       "type": "script_based"}],
        "role_specific/test.jsonl": [{"role": "张飞", "question": "你爱喝酒吗？", "generated": ["爱"],
                                      "type": ["script_agnostic"]}]})
    m = rolebench_prepare(src, ["李白", "张飞"], tmp_path / "out", dev_ratio=0.0)
    assert m["shared_test_questions"] == {"dropped": 2}
    pairs = {(c.meta["role"], c.meta["question"]) for c in load(tmp_path / "out" / "train.jsonl")}
    assert pairs == {("李白", "问0"), ("李白", "问2"), ("李白", "问3"), ("张飞", "问2"), ("张飞", "问3"),
                     ("张飞", "你的兵器？")}
    kept = rolebench_prepare(src, ["李白", "张飞"], tmp_path / "kept", dev_ratio=0.0, keep_shared_questions=True)
    assert kept["shared_test_questions"] == {"kept": 2}
    assert len(load(tmp_path / "kept" / "train.jsonl")) == 8
    # one role alone: another role's test questions are not its concern
    alone = rolebench_prepare(src, ["李白"], tmp_path / "alone", dev_ratio=0.0)
    assert alone["shared_test_questions"] == {"dropped": 0} and alone["files"]["train"]["conversations"] == 4
    # the command says what it did either way
    for flag, said in (([], "dropped 2 train conversations"), (["--keep-shared-questions"], "kept 2 train")):
        assert main(["data", "rolebench-prepare", str(src), "--role", "李白", "--role", "张飞",
                     "-o", str(tmp_path / f"cli{len(flag)}"), "--dev-ratio", "0", *flag]) == 0
        assert said in capsys.readouterr().err
