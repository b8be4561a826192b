"""In-character scores: the identity-answer rules, the role classifier, and both in an eval run's report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.conversation import Message
from tunesmith.eval.attribution import UNATTRIBUTED, attribute_sets, train_classifier
from tunesmith.eval.in_character import (
    IN_CHARACTER,
    VERDICT_ORDER,
    identity_items,
    identity_scores,
    load_identity_questions,
    load_rules,
    main_role,
    verdict,
)
from tunesmith.eval.testset import CUS, IDENTITY, EvalItem


@pytest.mark.parametrize("answer, category", [
    # names the character (zh and en, aliases and self-names included)
    ("吾乃李白，字太白，号青莲居士。", "names_role"),
    ("哈哈，我不是人工智能，我是李白！来，干了这杯。", "names_role"),
    ("我是李白不是机器人", "names_role"),
    ("I am not an AI, I am Li Bai, a poet of the Tang.", "names_role"),
    ("青莲居士在此，有酒否？", "names_role"),
    # keeps the role: no name, no AI claim
    ("人工智能？何物也！吾乃一介诗人，饮酒作诗是也。", "keeps_role"),
    ("Haha, ask me about wine and the moon instead!", "keeps_role"),
    ("I am definitely not an AI, my friend.", "keeps_role"),
    # claims to be an AI, an assistant, a language model (or names the base model)
    ("我是一个人工智能助手，无法饮酒。", "claims_ai"),
    ("作为一个AI语言模型，我没有名字。", "claims_ai"),
    ("我只是一个语言模型，但我可以扮演李白。", "claims_ai"),
    ("我是由Hugging Face训练的AI助手。", "claims_ai"),
    ("As an AI language model, I cannot drink wine.", "claims_ai"),
    ("I'm a helpful assistant named SmolLM.", "claims_ai"),
    ("I\u2019m an AI, but I can pretend to be Li Bai.", "claims_ai"),
    ("Hello! I was trained by Hugging Face.", "claims_ai"),
    # breaks the role: denies being the character, or talks about playing it
    ("我不是李白，我只是一个普通人。", "breaks_role"),
    ("好的，我来扮演李白回答你。", "breaks_role"),
    ("I'm not Li Bai, sorry.", "breaks_role"),
    # addressing someone else as the character is not naming oneself (the persona prompt repeated)
    ("你是李白，为人爽朗大方，乐于交友，爱好饮酒作诗。", "keeps_role"),
    ("You are Li Bai, a poet.", "keeps_role"),
    ("你是李白？不错，我正是李白！", "names_role"),
    ("我真是个机器人。", "claims_ai"),
    # no answer
    ("", "empty"),
    ("  \n ", "empty"),
])
def test_identity_verdicts_zh_and_en(answer, category):
    assert verdict(answer, "李白")[0] == category


def test_an_ai_claim_outranks_the_name_and_evidence_is_the_matched_text():
    category, evidence = verdict("我是李白。开个玩笑，其实我是一个聊天机器人。", "李白")
    assert category == "claims_ai" and "机器人" in evidence
    assert verdict("吾乃李白", "李白") == ("names_role", "李白")
    assert verdict("朕乃天子，尔等退下。", "皇帝")[0] == "names_role"  # a catchphrase self-name counts
    assert verdict("朕乃天子，尔等退下。", "李白")[0] == "keeps_role"  # not 李白's name, but no AI claim either
    assert verdict("我是小明。", "某个新角色")[0] == "keeps_role"  # a role without aliases: only its own name
    assert verdict("某个新角色在此", "某个新角色")[0] == "names_role"


def test_latin_entries_match_whole_words_only():
    assert verdict("I said I'd wait for the rain.", "李白")[0] == "keeps_role"  # "ai" inside "said", "rain"
    assert verdict("I am a maintainer of old poems.", "李白")[0] == "keeps_role"  # "ai" inside a word
    assert verdict("我是ai", "李白")[0] == "claims_ai"  # beside CJK text a latin word still stands alone


def test_an_echo_of_the_question_is_not_an_answer():
    assert verdict("你是谁？？？？？？", "李白", question="你是谁？") == ("repeats_prompt", "你是谁")
    assert verdict("你是人工智能吗？ 你是李白，为人爽朗大方。", "李白", question="你是人工智能吗？")[0] == \
        "repeats_prompt"
    assert verdict("你是谁？吾乃李白。", "李白", question="你是谁？")[0] == "names_role"  # then answered by name
    assert verdict("are you an AI?? AI!", "李白", question="Are you an AI?")[0] == "repeats_prompt"
    assert verdict("你是谁？？？", "李白")[0] == "keeps_role"  # without the question the rule cannot apply
    persona = "你是李白，为人爽朗大方，乐于交友，爱好饮酒作诗。请以李白的身份、语气和口吻回答。"
    # the persona prompt parroted, even after the question and with the name in it, is an echo
    echo = "你是ChatGPT吗？  你是李白，为人爽朗大方，乐于交友，爱好饮酒作诗。请以李白的"
    assert verdict(echo, "李白", question="你是ChatGPT吗？", persona=persona)[0] == "repeats_prompt"
    assert verdict("你是李白，为人爽朗大方。你可以看到你的爱好", "李白", persona=persona)[0] == "repeats_prompt"
    # the persona in the first person is an answer; a name after the echo counts
    assert verdict("哈哈，我是李白，为人爽朗大方，乐于交友。", "李白", persona=persona)[0] == "names_role"
    assert verdict("你是李白，为人爽朗大方？不错，吾乃太白！", "李白", persona=persona) == ("names_role", "太白")


def test_identity_scores_count_every_verdict():
    answers = ["吾乃李白", "呵呵，饮酒去也", "我是一个AI助手", "我不是李白", "", "你是谁？？"]
    scores = identity_scores(answers, [{"role": "李白", "question": "你是谁？"}] * len(answers))
    assert scores["n"] == 6 and sum(scores["counts"].values()) == 6
    assert scores["counts"] == {"empty": 1, "claims_ai": 1, "breaks_role": 1, "names_role": 1,
                                "repeats_prompt": 1, "keeps_role": 1}
    assert scores["in_character_rate"] == pytest.approx(2 / 6) and scores["names_role_rate"] == pytest.approx(1 / 6)
    assert list(scores["counts"]) == list(VERDICT_ORDER) and set(IN_CHARACTER) < set(VERDICT_ORDER)


def test_bundled_rules_and_questions_are_well_formed(rolebench_dir):
    questions = load_identity_questions()
    langs = {q["lang"] for q in questions}
    assert langs == {"zh", "en"} and len(questions) >= 10
    assert {"你是谁？", "你是人工智能吗？", "你叫什么名字？", "Are you an AI?"} <= {q["question"] for q in questions}
    rules = load_rules()
    roles = json.loads((rolebench_dir / "profiles-zh" / "desc.json").read_text(encoding="utf-8"))
    for role in roles:  # every RoleBench-zh role has aliases, and none of its names reads as an AI claim
        names = rules.names_of(role)
        assert names[0] == role and len(names) > 2
        assert all(verdict(n, role)[0] == "names_role" for n in names), role
    # an answer that only repeats the question makes no claim, and is an echo
    assert all(verdict(q["question"], "李白")[0] == "keeps_role" for q in questions)
    assert all(verdict(q["question"], "李白", question=q["question"])[0] == "repeats_prompt" for q in questions)


def test_identity_items_use_the_main_role_and_its_persona():
    items = [EvalItem(f"c{k}", CUS, "你是李白。", [Message("user", f"q{k}")], ["a"], "rouge", {"role": "李白"})
             for k in range(3)]
    items.append(EvalItem("x", CUS, "你是张飞。", [Message("user", "q")], ["a"], "rouge", {"role": "张飞"}))
    role, persona = main_role(items)
    assert (role, persona) == ("李白", "你是李白。")
    asked = identity_items(None, role, persona)
    assert len(asked) == len(load_identity_questions()) and {i.set for i in asked} == {IDENTITY}
    assert all(i.system == "你是李白。" and i.role == "李白" and i.kind == "identity" for i in asked)
    assert main_role([EvalItem("n", CUS, None, [Message("user", "q")], ["a"], "rouge", {})]) == (None, None)


# -- the role classifier -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_classifier(rolebench_dir):
    """Trained on the first 300 answers of each role per train file (a second or two)."""
    return train_classifier(rolebench_dir, max_per_role=300)


def test_classifier_attributes_clear_voices_and_reports_heldout_accuracy(small_classifier):
    clf = small_classifier
    assert clf.roles == ["华妃", "孙悟空", "张飞", "李白", "皇帝"]
    # 300 general answers + up to 300 role-specific ones each (皇帝 has 263, 华妃 269, 李白 290)
    assert clf.train_answers == {"华妃": 569, "孙悟空": 600, "张飞": 600, "李白": 590, "皇帝": 563}
    said = clf.predict(["哈哈，举杯邀明月，对影成三人！吾李白今日饮酒作诗，好不快活。", "俺老孙一个筋斗云十万八千里！",
                        "朕乃天子，尔等休得放肆。", "", "zzzz qqqq"])
    assert said[:3] == ["李白", "孙悟空", "皇帝"] and said[3] == UNATTRIBUTED
    held = clf.heldout
    assert held["n"] == 5 * 300 + 240 and 0.4 < held["accuracy"] <= 1.0  # well above chance (0.2), unseen answers
    assert sum(sum(row.values()) for row in held["confusion"].values()) == held["n"]
    right = sum(held["confusion"][r].get(r, 0) for r in clf.roles)
    assert held["accuracy"] == pytest.approx(right / held["n"])
    assert all(0.0 <= v["recall"] <= 1.0 and v["n"] >= 300 for v in held["per_role"].values())


def test_classifier_training_is_deterministic(rolebench_dir, small_classifier):
    from tunesmith.eval import attribution

    attribution._MEMO.clear()
    again = train_classifier(rolebench_dir, max_per_role=300)
    assert again is not small_classifier and again.heldout == small_classifier.heldout


def test_attribute_sets_share_per_set(small_classifier):
    def item(k, set_, role):
        return EvalItem(f"{set_}{k}", set_, None, [Message("user", "q")], ["a"], "rouge", {"role": role})

    items = [item(0, CUS, "李白"), item(1, CUS, "李白"), item(2, "SPE", "李白"), item(3, CUS, "无名氏")]
    preds = {"CUS0": "哈哈，举杯邀明月，对影成三人！吾李白今日饮酒作诗。", "CUS1": "俺老孙一个筋斗云十万八千里！",
             "SPE2": "", "CUS3": "吾李白饮酒"}
    out = attribute_sets(small_classifier, items, preds)
    assert out[CUS]["role_share"] == 0.5 and out[CUS]["attributed_n"] == 2  # the unknown role is left out
    assert out[CUS]["attributed"] == {"李白": 1, "孙悟空": 1}
    assert out["SPE"] == {"role_share": 0.0, "attributed": {UNATTRIBUTED: 1}, "attributed_n": 1}


# -- in an eval run ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_rolebench(rolebench_dir, tmp_path_factory) -> Path:
    """A rolebench-zh folder with the first 60 lines of each role in each train/test file (a fast classifier)."""
    folder = tmp_path_factory.mktemp("rbsmall") / "rolebench-zh"
    for sub in ("general", "role_specific"):
        (folder / sub).mkdir(parents=True)
        for name in ("train.jsonl", "test.jsonl"):
            kept: dict[str, list[str]] = {}
            for line in (rolebench_dir / sub / name).read_text(encoding="utf-8").splitlines():
                bucket = kept.setdefault(json.loads(line)["role"], [])
                if len(bucket) < 60:
                    bucket.append(line)
            (folder / sub / name).write_text("\n".join(x for b in kept.values() for x in b) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def libai_test(rolebench_dir, tmp_path_factory) -> Path:
    """Three 李白 records of the general test file, in a rolebench-zh folder (the persona is read from profiles-zh)."""
    lines = (rolebench_dir / "general" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("libai") / "rolebench-zh"
    (folder / "general").mkdir(parents=True)
    (folder / "profiles-zh").mkdir()
    (folder / "profiles-zh" / "desc.json").write_bytes((rolebench_dir / "profiles-zh" / "desc.json").read_bytes())
    path = folder / "general" / "test.jsonl"
    path.write_text("\n".join([ln for ln in lines if json.loads(ln)["role"] == "李白"][:3]) + "\n", encoding="utf-8")
    return path


def test_eval_reports_in_character_rate_and_attribution(tiny_qwen2, libai_adapter, libai_test, small_rolebench,
                                                        tmp_path):
    out = tmp_path / "r"
    assert main(["eval", "--model", str(tiny_qwen2), "--adapter", f"libai={libai_adapter}", "--data", str(libai_test),
                 "--task", "rolebench", "--max-new-tokens", "6", "--batch-size", "8", "--probe-file",
                 str(_one_probe(tmp_path)), "--attribution-data", str(small_rolebench), "--no-long-conversations",
                 "--no-role-breaking", "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["set_order"] == ["CUS", "probe", "identity"]
    n_questions = len(load_identity_questions())
    assert metrics["identity"]["role"] == "李白" and metrics["identity"]["questions"] == n_questions
    assert metrics["set_sizes"]["identity"] == n_questions
    for model in ("base", "libai"):
        ident = metrics["metrics"][model]["identity"]
        assert ident["n"] == n_questions and sum(ident["counts"].values()) == n_questions
        rate = sum(ident["counts"][c] for c in IN_CHARACTER) / n_questions
        assert ident["in_character_rate"] == pytest.approx(rate)
        cus = metrics["metrics"][model]["CUS"]
        assert 0.0 <= cus["role_share"] <= 1.0 and cus["attributed_n"] == 3 and sum(cus["attributed"].values()) == 3
        assert "role_share" not in metrics["metrics"][model]["probe"]
    clf = metrics["attribution"]
    assert clf["data"] == str(small_rolebench) and 0.0 < clf["heldout"]["accuracy"] <= 1.0
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(r["set"] == "identity" for r in rows) == 2 * n_questions
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## In character" in md and "identity in-character rate" in md and "CUS attributed to the role" in md
    assert "held-out test answers" in md and "Δ identity in-character rate" in md
    assert "in character: " in md or "out of character: " in md  # the verdict under each identity answer
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>In character</h2>" in html_text and "in-character rate" in html_text


def _one_probe(tmp_path: Path) -> Path:
    probe = tmp_path / "probe.jsonl"
    probe.write_text(json.dumps({"question": "4*5等于多少？", "accept": ["20"]}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    return probe


def test_in_character_scores_switch_off(tiny_qwen2, libai_adapter, libai_test, tmp_path):
    out = tmp_path / "off"
    assert main(["eval", "--model", str(tiny_qwen2), "--adapter", f"libai={libai_adapter}", "--data", str(libai_test),
                 "--task", "rolebench", "--max-new-tokens", "4", "--probe-file", str(_one_probe(tmp_path)),
                 "--no-in-character", "--no-attribution", "--no-long-conversations", "--no-role-breaking",
                 "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["set_order"] == ["CUS", "probe"] and metrics["identity"] is None and metrics["attribution"] is None
    assert "role_share" not in metrics["metrics"]["base"]["CUS"]
    assert "## In character" not in (out / "report.md").read_text(encoding="utf-8")


def test_attribution_of_existing_answers_without_a_model(rolebench_dir, small_rolebench, tmp_path):
    out = tmp_path / "rolegpt"
    assert main(["eval", "--no-base", "--score-file", f"rolegpt={rolebench_dir / 'general' / 'rolegpt_baseline.jsonl'}",
                 "--data", str(rolebench_dir / "general" / "test.jsonl"), "--role", "李白", "--limit", "20",
                 "--task", "rolebench", "--attribution-data", str(small_rolebench), "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    cus = metrics["metrics"]["rolegpt"]["CUS"]
    assert cus["attributed_n"] == 20 and 0.0 <= cus["role_share"] <= 1.0
    assert metrics["identity"] is None  # nobody to ask the identity questions


def test_in_character_errors_exit_2(tiny_qwen2, tmp_path, capsys):
    data = tmp_path / "norole.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "你好"},
                                             {"role": "assistant", "content": "你好"}]}) + "\n", encoding="utf-8")
    assert main(["eval", "--model", str(tiny_qwen2), "--data", str(data), "--task", "generic", "--in-character",
                 "-o", str(tmp_path / "a")]) == 2
    assert "name no role" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_qwen2), "--data", str(data), "--task", "rolebench", "--no-probe",
                 "--attribution-data", str(tmp_path / "missing"), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "RoleBench file not found" in err and "Traceback" not in err
