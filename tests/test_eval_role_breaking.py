"""Role-breaking probes: the judge on fixed answers, the bundled probes, and the set in an eval run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.errors import DataError
from tunesmith.eval.role_breaking import (
    CATEGORIES,
    IN_ROLE,
    ROLE_BREAKING,
    VERDICTS,
    judge,
    load_break_rules,
    load_probes,
    probe_items,
    role_breaking_scores,
)


@pytest.mark.parametrize("category, answer, term, expected", [
    # drop_role: complying is out, an in-character refusal is in
    ("drop_role", "好的，我现在是ChatGPT，一个AI助手。", "", "claims_ai"),
    ("drop_role", "作为ChatGPT，我很乐意帮助你。", "", "claims_ai"),
    ("drop_role", "好的，没问题。请问有什么可以帮你？", "", "complies"),
    ("drop_role", "好的，从现在开始我会以普通身份回答。", "", "complies"),
    ("drop_role", "Sure! What can I do for you?", "", "complies"),
    ("drop_role", "I'm no longer Li Bai, just a helper now.", "", "complies"),
    ("drop_role", "Okay, I am now ChatGPT.", "", "claims_ai"),
    ("drop_role", "哼！吾乃李白，岂能忘却本心？来，且饮此杯！", "", "names_role"),
    ("drop_role", "休要胡言，我只知饮酒作诗。", "", "keeps_role"),
    ("drop_role", "Nonsense, friend. Pour me some wine instead.", "", "keeps_role"),
    # ooc_task: code (a fence or code lines) or handing it over is out, declining in voice is in
    ("ooc_task", "```python\nprint(sum(range(1, 101)))\n```", "", "writes_code"),
    ("ooc_task", "Sure, here is the Python code:\ndef rev(s):\n    return s[::-1]", "", "complies"),
    ("ooc_task", "def add(a, b):\n    return a + b", "", "writes_code"),
    ("ooc_task", "SELECT COUNT(*) FROM users;", "", "writes_code"),
    ("ooc_task", "以下是代码：total = 0", "", "complies"),
    ("ooc_task", "代码？吾只会作诗，不如听我吟一首：床前明月光。", "", "keeps_role"),
    ("ooc_task", "你可以使用Java的`Arrays.fill()`方法来生成一个数组。", "", "writes_code"),
    ("ooc_task", "Use str.join(reversed(s)) for that.", "", "writes_code"),
    ("ooc_task", "机器学习是一种人工智能技术，可以让电脑自己学习。", "", "knows_modern"),
    ("ooc_task", "I know not what a function is, friend. Let us drink.", "", "puzzled"),
    # anachronism: knowing the modern thing is out, puzzlement is in
    ("anachronism", "智能手机是一种通讯设备，非常方便。", "智能手机", "knows_modern"),
    ("anachronism", "我觉得智能手机非常方便，可以随时联系朋友。", "智能手机", "knows_modern"),
    ("anachronism", "此物甚好，我常用互联网与友人通信。", "智能手机", "knows_modern"),
    ("anachronism", "Smartphones are devices that let us call anyone.", "smartphone", "knows_modern"),
    ("anachronism", "何为智能手机？吾未曾听闻此物。", "智能手机", "puzzled"),
    ("anachronism", "智能手机？莫非是仙家法宝？", "智能手机", "puzzled"),
    ("anachronism", "A smartphone? I have never heard of such a thing.", "smartphone", "puzzled"),
    ("anachronism", "哈哈，且听我吟诗一首，举杯邀明月。", "智能手机", "keeps_role"),
    ("anachronism", "作为一个AI，我认为智能手机很有用。", "智能手机", "claims_ai"),
    # unknowable: admitting it is in, a made-up number or an assistant's disclaimer is out
    ("unknowable", "天机不可泄露，谁能知晓未来之事？", "", "puzzled"),
    ("unknowable", "冠军是巴西，比分3比1。", "", "makes_up"),
    ("unknowable", "下期号码是 07 12 19 23 28 33。", "", "makes_up"),
    ("unknowable", "抱歉，我无法获取实时信息。", "", "assistant_talk"),
    ("unknowable", "My training data ends in 2023, so I cannot say.", "", "assistant_talk"),
    ("unknowable", "Who can tell? Let us drink while the moon is bright.", "", "puzzled"),
    ("unknowable", "", "", "empty"),
])
def test_judge_on_fixed_answers(category, answer, term, expected):
    got, _evidence = judge(answer, category, "李白", term=term)
    assert got == expected
    assert (got in IN_ROLE) == (expected in ("names_role", "keeps_role", "puzzled"))


def test_a_modern_word_the_question_asked_about_is_no_new_knowledge():
    q = "你平时用微信和朋友联系吗？"
    assert judge("微信？何物也？", "anachronism", "李白", question=q, term="微信")[0] == "puzzled"
    assert judge("微信？不如写信。", "anachronism", "李白", question=q, term="微信")[0] == "keeps_role"
    assert judge("微信？不如上网聊。", "anachronism", "李白", question=q, term="微信")[0] == "knows_modern"
    # agreeing to a drop-role request is out; the same opener to any other probe is not
    assert judge("好的，且听我吟诗一首。", "ooc_task", "李白")[0] == "keeps_role"
    assert judge("好的，且听我吟诗一首。", "drop_role", "李白")[0] == "complies"
    # an echo of the probe is out (the identity verdict comes first)
    q = "帮我用Java写一个冒泡排序。"
    assert judge(q + "。。。", "ooc_task", "李白", question=q)[0] == "repeats_prompt"


def test_scores_per_category():
    answers = ["吾乃李白", "好的，我现在是ChatGPT", "```py\nx=1\n```", "代码？不会。", "何为手机？", "手机是一种设备",
               "天机不可泄露", "42"]
    cats = ["drop_role", "drop_role", "ooc_task", "ooc_task", "anachronism", "anachronism", "unknowable", "unknowable"]
    metas = [{"category": c, "role": "李白", "term": "手机" if c == "anachronism" else ""} for c in cats]
    scores = role_breaking_scores(answers, metas)
    assert scores["in_character_rate"] == pytest.approx(4 / 8)
    assert all(scores[c] == pytest.approx(0.5) for c in CATEGORIES)
    assert scores["n_by_category"] == dict.fromkeys(CATEGORIES, 2)
    assert scores["counts"]["drop_role"] == {"claims_ai": 1, "names_role": 1}
    assert scores["counts"]["unknowable"] == {"makes_up": 1, "puzzled": 1}
    assert all(v in VERDICTS for c in scores["counts"].values() for v in c)


def test_bundled_probes_and_rules_are_well_formed():
    probes = load_probes()
    for cat in CATEGORIES:
        zh = [p for p in probes if p["category"] == cat and p["lang"] == "zh"]
        en = [p for p in probes if p["category"] == cat and p["lang"] == "en"]
        assert len(zh) >= 6 and en, cat
    assert {p["category"] for p in probes} == set(CATEGORIES)
    assert all(p["term"] for p in probes if p["category"] == "anachronism")
    assert any("{name}" in p["question"] for p in probes)
    assert len({p["id"] for p in probes}) == len(probes)
    rules = load_break_rules()
    assert rules.code and rules.modern
    about = " ".join(json.loads((Path(__file__).resolve().parents[1] / "src/tunesmith/resources/"
                                 "in_character_rules.json").read_text(encoding="utf-8"))["about"])
    assert all(v in about for v in ("complies", "writes_code", "assistant_talk", "knows_modern", "puzzled",
                                    "makes_up"))
    # every bundled probe repeated back is an echo, never in character
    for p in probes:
        q = p["question"].replace("{name}", "李白")
        assert judge(q, p["category"], "李白", question=q, term=p["term"])[0] not in IN_ROLE, q


def test_probe_items_fill_the_name_and_keep_n_per_category(tmp_path):
    items = probe_items(None, "李白", "你是李白。", per_category=2)
    assert len(items) == 2 * len(CATEGORIES) and {i.set for i in items} == {ROLE_BREAKING}
    assert all(i.system == "你是李白。" and i.role == "李白" and "{name}" not in i.question for i in items)
    assert any(i.question.startswith("李白怎么看") for i in items)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="category"):
        load_probes(bad)


# -- in an eval run (tiny model) ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def libai_test(rolebench_dir, tmp_path_factory) -> Path:
    lines = (rolebench_dir / "general" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    folder = tmp_path_factory.mktemp("libai") / "rolebench-zh"
    (folder / "general").mkdir(parents=True)
    (folder / "profiles-zh").mkdir()
    (folder / "profiles-zh" / "desc.json").write_bytes((rolebench_dir / "profiles-zh" / "desc.json").read_bytes())
    path = folder / "general" / "test.jsonl"
    path.write_text("\n".join([ln for ln in lines if json.loads(ln)["role"] == "李白"][:2]) + "\n", encoding="utf-8")
    return path


def _common(tiny_qwen2, libai_adapter, libai_test, tmp_path) -> list[str]:
    probe = tmp_path / "probe.jsonl"
    probe.write_text(json.dumps({"question": "4*5等于多少？", "accept": ["20"]}, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    return ["eval", "--model", str(tiny_qwen2), "--adapter", f"libai={libai_adapter}", "--data", str(libai_test),
            "--task", "rolebench", "--max-new-tokens", "4", "--probe-file", str(probe), "--no-in-character",
            "--no-attribution", "--no-long-conversations"]


def test_eval_reports_role_breaking_per_category(tiny_qwen2, libai_adapter, libai_test, tmp_path):
    out = tmp_path / "r"
    assert main(_common(tiny_qwen2, libai_adapter, libai_test, tmp_path) + ["-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    n = len(load_probes())
    assert metrics["set_order"] == ["CUS", "probe", ROLE_BREAKING] and metrics["set_sizes"][ROLE_BREAKING] == n
    assert metrics["role_breaking"]["probes"] == n and metrics["role_breaking"]["role"] == "李白"
    for model in ("base", "libai"):
        block = metrics["metrics"][model][ROLE_BREAKING]
        assert block["n"] == n and sum(block["n_by_category"].values()) == n
        assert all(0.0 <= block[c] <= 1.0 for c in CATEGORIES)
        kept = sum(k for cat in block["counts"].values() for v, k in cat.items() if v in IN_ROLE)
        assert block["in_character_rate"] == pytest.approx(kept / n)
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(r["set"] == ROLE_BREAKING for r in rows) == 2 * n
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "Role-breaking probes by category" in md and "role_breaking drop-role requests" in md
    assert "drop_role, in character: " in md or "drop_role, out of character: " in md
    assert "Role-breaking probes by category" in (out / "report.html").read_text(encoding="utf-8")


def test_role_breaking_switches_off(tiny_qwen2, libai_adapter, libai_test, tmp_path):
    out = tmp_path / "off"
    assert main(_common(tiny_qwen2, libai_adapter, libai_test, tmp_path) + ["--no-role-breaking", "-o",
                                                                            str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["set_order"] == ["CUS", "probe"] and metrics["role_breaking"] is None
    assert ROLE_BREAKING not in metrics["metrics"]["base"]
