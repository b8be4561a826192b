"""The labeling page without a browser: it builds, every handler runs through Gradio, and each callback works.

The Try-it tests use a real engine on the tiny Qwen2 model with a LoRA adapter made here.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

from tunesmith.label.store import LabelStore  # noqa: E402
from tunesmith.label.ui import LabelApp, build_label_ui  # noqa: E402
from tunesmith.label.ui.form import EDITOR_FIELDS, SENT_FIELDS  # noqa: E402

IE_JSON = ('```json\n[{"predicate": "主演", "object_type": "人物", "subject_type": "影视作品", "object": "周星驰", '
           '"subject": "喜剧之王"}]\n```')
OPTS = dict(max_new_tokens=12, do_sample=False, temperature=0.7, top_p=0.9, top_k=50, num_beams=1)


def opts(**over):
    o = dict(OPTS, **over)
    return [o["max_new_tokens"], o["do_sample"], o["temperature"], o["top_p"], o["top_k"], o["num_beams"]]


@pytest.fixture(scope="module")
def tiny_engine(tiny_qwen2, tmp_path_factory):
    """A real Engine: the tiny Qwen2 base plus one LoRA adapter ("ie") whose weights are not zero."""
    from peft import LoraConfig, get_peft_model

    from tunesmith.infer.engine import Engine
    from tunesmith.model import load_model
    from tunesmith.template import resolve_template, save_template

    adapter_dir = tmp_path_factory.mktemp("ie-adapter")
    model, tok = load_model(str(tiny_qwen2), device="cpu")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(adapter_dir)
    save_template(resolve_template("auto", tok), adapter_dir)
    engine = Engine.load(str(tiny_qwen2), adapters={"ie": str(adapter_dir)}, device="cpu")
    yield engine
    engine.close()


@pytest.fixture()
def app(tmp_path):
    a = LabelApp(tmp_path / "proj")
    yield a
    a.store.close()


def rows(df) -> list[list]:
    return df.values.tolist()


# -- the page builds, and every handler survives Gradio's own pre/post-processing ---------------------
def test_every_event_handler_runs_through_gradio(tmp_path):
    """Every handler on the page imports and runs: a missing import (a NameError) fails here, not in a browser."""
    blocks = build_label_ui(tmp_path / "proj")
    assert isinstance(blocks, gr.Blocks) and isinstance(blocks.label_app, LabelApp)
    cfg = blocks.get_config_file()
    initial = {c["id"]: c.get("props", {}).get("value") for c in cfg["components"]}
    names = set()
    for fn in blocks.fns.values():
        inputs = [initial.get(c._id) for c in fn.inputs]
        event = gr.SelectData(None, {"index": [0, 0], "value": 1, "row_value": [1]}) if fn.collects_event_data else None
        out = asyncio.run(blocks.process_api(fn, inputs, state=None, event_data=event))
        assert len(out["data"]) == len(fn.outputs), fn.fn
        names.add(fn.fn.__name__)
    assert {"generate", "judge", "accept_answer", "save_sample", "delete_sample", "open_sample", "open_selected",
            "refresh", "import_dataset", "export_dataset", "save_settings", "accept_review", "reject_review",
            "count_text"} <= names
    # the export offers samples (sft), corrected answers (pairs) and judged answers (kto)
    kinds = [c for c in blocks.blocks.values() if isinstance(c, gr.Radio) and c.elem_id == "ex-kind"]
    assert [ch[1] for ch in kinds[0].choices] == ["sft", "pairs", "kto"] and kinds[0].value == "sft"


def test_page_with_engine_lists_adapters(tmp_path, tiny_engine):
    blocks = build_label_ui(tmp_path / "proj", engine=tiny_engine)
    assert blocks.label_app.adapter_choices() == ["base", "ie"]
    dropdowns = [c for c in blocks.blocks.values() if isinstance(c, gr.Dropdown) and c.elem_id == "try-adapter"]
    assert [ch[1] for ch in dropdowns[0].choices] == ["base", "ie"]


# -- Try it ---------------------------------------------------------------------------------------------
def test_try_it_without_model_says_how_to_load_one(app):
    out = app.generate("ann", "base", "instruction", "", "抽取", "x", [], "", *opts())
    assert "No model is loaded" in out[-1] and "--model" in out[-1]
    assert app.store.list_generations() == []


def test_try_it_generates_with_base_and_adapter_and_logs(tmp_path, tiny_engine):
    app = LabelApp(tmp_path / "proj", engine=tiny_engine)
    app.store.update_settings(prompt_format="context")
    answers = {}
    for adapter in ("base", "ie"):
        answer, info, value, json_md, gid, *_rest, status = app.generate(
            "ann", adapter, "instruction", "", "抽取三元组", "周星驰主演喜剧之王", [], "", *opts())
        assert isinstance(answer, str) and answer
        assert f"answer #{gid}" in info and adapter in info and " s " in info
        assert "logged" in status
        g = app.store.get_generation(gid)
        assert g.adapter == adapter and g.answer == answer and g.elapsed_s > 0 and g.user == "ann"
        assert g.messages[0].content == "Instruction: 抽取三元组\nInput: 周星驰主演喜剧之王\nAnswer: "
        assert g.options["max_new_tokens"] == 12
        answers[adapter] = answer
    assert answers["base"] != answers["ie"]  # the adapter is really applied
    # unknown adapter, empty prompt: a clear message, nothing logged
    before = len(app.store.list_generations())
    assert "not loaded" in app.generate("ann", "nope", "instruction", "", "q", "", [], "", *opts())[-1]
    assert "instruction: empty" in app.generate("ann", "base", "instruction", "", " ", "", [], "", *opts())[-1]
    assert "max_new_tokens" in app.generate("ann", "base", "instruction", "", "q", "", [], "",
                                            *opts(max_new_tokens=0))[-1]
    assert len(app.store.list_generations()) == before


def test_try_it_judge_and_accept_corrected_answer(tmp_path, tiny_engine):
    app = LabelApp(tmp_path / "proj", engine=tiny_engine)
    app.store.update_settings(prompt_format="context", output_json=True)
    answer, _info, _v, json_md, gid, *_ = app.generate("ann", "ie", "instruction", "", "抽取三元组",
                                                       "周星驰主演喜剧之王", [], "", *opts())
    assert "No JSON" in json_md or "does not parse" in json_md  # a random tiny model writes no valid JSON
    assert "marked wrong" in app.judge("ann", gid, "wrong", "not JSON")
    assert "right or wrong" in app.judge("ann", gid, None, "")
    assert [j["verdict"] for j in app.store.judgements(gid)] == ["wrong"]
    # accepting the raw answer is refused in a JSON project; nothing is saved
    status, count = app.accept_answer("ann", gid, answer, "", "", "")
    assert "must be JSON" in status and app.store.count() == 0
    # corrected by hand: the JSON view follows the edit, and the sample joins the dataset
    value, md = app.check_json(IE_JSON)
    assert value[0]["subject"] == "喜剧之王" and "valid JSON (1 item" in md
    status, count = app.accept_answer("ann", gid, IE_JSON, "", "ie, fixed", "fixed by hand")
    assert "as sample #1 (corrected)" in status and "**1 samples**" in count
    s = app.store.get_sample(1)
    assert s.instruction == "抽取三元组" and s.output == IE_JSON and s.tags == ["ie", "fixed"]
    assert s.source == "model:ie" and s.note == "fixed by hand"
    assert "already accepted" in app.accept_answer("ann", gid, IE_JSON, "", "", "")[0]


def test_try_it_chat_mode_keeps_history_and_accepts_a_chat(tmp_path, tiny_engine):
    app = LabelApp(tmp_path / "proj", engine=tiny_engine)
    history: list = []
    for msg in ("你好", "你是谁"):
        answer, _i, _v, _j, gid, history, view, box, status = app.generate(
            "bob", "base", "chat", "你是李白", "", "", history, msg, *opts(max_new_tokens=6))
        assert box == "" and view == history
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    g = app.store.get_generation(gid)
    assert [m.content for m in g.messages] == ["你好", history[1]["content"], "你是谁"] and g.system == "你是李白"
    status, _ = app.accept_answer("bob", gid, "我乃李太白。", "李白", "", "")
    s = app.store.get_sample(1)
    assert s.kind == "chat" and s.role == "李白" and s.system == "你是李白" and len(s.messages) == 4
    assert s.answer == "我乃李太白。"
    assert "message: empty" in app.generate("bob", "base", "chat", "", "", "", history, "  ", *opts())[-1]
    assert app.clear_chat() == ([], [], "")


def test_generate_shows_parsed_json_or_the_parse_error(tmp_path):
    """The JSON panel for answers the tiny model cannot write: an engine that replies with fixed texts."""

    class ScriptedEngine:
        adapter_names = ["base"]
        model_name = "scripted"

        def __init__(self, replies):
            self.replies = list(replies)

        def chat(self, messages, system=None, adapter="base", options=None):
            return self.replies.pop(0)

    app = LabelApp(tmp_path / "proj", engine=ScriptedEngine([IE_JSON, '```json\n[{"a": 1,}]\n```', '["水果"]']))
    value, md = app.generate("", "base", "instruction", "", "q", "", [], "", *opts())[2:4]
    assert value[0]["predicate"] == "主演" and "valid JSON" in md
    value, md = app.generate("", "base", "instruction", "", "q2", "", [], "", *opts())[2:4]
    assert value is None and "does not parse" in md and "line 1" in md
    value, md = app.generate("", "base", "instruction", "", "q3", "", [], "", *opts())[2:4]
    assert value == ["水果"]
    assert [g.json_ok for g in app.store.list_generations()] == [True, False, True]


# -- Label ----------------------------------------------------------------------------------------------
FILTERS = ("", "all", "", "")


N_FORM = len(EDITOR_FIELDS)  # the editor's values come first in a handler's result, then the status line
AT = {f.name: i for i, f in enumerate(EDITOR_FIELDS)}


def save(app, user="ann", sid=0, rev=0, **typed):
    """Save as the page does: the form's values by field name, in the order the field list gives them."""
    typed = {"id": sid, "revision": rev, "kind": "single", "status": "accepted", **typed}
    return app.save_sample(user, *[typed.get(name) for name in SENT_FIELDS], *FILTERS)


def test_write_edit_and_conflict_in_the_editor(app):
    out = save(app, instruction="翻译成英文", input="你好", output="Hello", tags="mt")
    form, msg, (table, _info, count) = out[:N_FORM], out[N_FORM], out[N_FORM + 1:]
    assert "new sample #1" in msg and form[0] == 1 and form[1] == 1
    assert rows(table)[0][:5] == [1, "accepted", "single", "", "mt"] and "**1 samples**" in count
    # two tabs open revision 1; the first save wins, the second is refused and keeps its text
    out = save(app, user="bob", sid=1, rev=1, instruction="翻译成英文", input="你好", output="Hi")
    assert "revision 2" in out[N_FORM]
    out = save(app, user="carol", sid=1, rev=1, instruction="翻译成英文", input="你好", output="Hey")
    assert "changed by bob" in out[N_FORM] and "Nothing was saved" in out[N_FORM]
    assert all(isinstance(v, dict) for v in out[:N_FORM])  # gr.update(): the form keeps what carol typed
    assert app.store.get_sample(1).output == "Hi"
    # history: who, when, what
    hist = app.history_text(1)
    assert "bob" in hist and "output: Hello → Hi" in hist
    # open by id and by clicking a row
    opened = app.open_sample(1)
    assert opened[:2] == (1, 2) and opened[AT["output"]] == "Hi" and "revision 2" in opened[-1]
    clicked = app.open_selected(gr.SelectData(None, {"index": [0, 3], "value": "", "row_value": [1, "accepted"]}))
    assert clicked[0] == 1
    assert "no sample #9" in app.open_sample(9)[-1]


def test_editor_bad_input_saves_nothing(app):
    assert "instruction: empty" in save(app, output="a")[N_FORM]
    assert "output: empty" in save(app, instruction="q")[N_FORM]
    assert "turn 2" in save(app, kind="chat", messages=[["user", "hi"], ["user", "again"]])[N_FORM]
    assert app.store.count() == 0
    save(app, instruction="q", output='["a"]')
    assert "already exists as #1" in save(app, instruction="q", output='["a"]')[N_FORM]
    app.store.update_settings(output_json=True)
    assert "must be JSON" in save(app, instruction="q2", output="plain words")[N_FORM]
    assert app.store.count() == 1


def test_editor_chat_sample_from_the_table(app):
    import pandas as pd

    turns = pd.DataFrame([["user", "你是谁？"], ["assistant", "吾乃李太白。"], ["", ""]], columns=["role", "content"])
    out = save(app, kind="chat", system="你是李白", role="李白", messages=turns, tags="persona")
    assert "new sample #1" in out[N_FORM]
    s = app.store.get_sample(1)
    assert [(m.role, m.content) for m in s.messages] == [("user", "你是谁？"), ("assistant", "吾乃李太白。")]
    assert out[AT["messages"]].values.tolist() == [["user", "你是谁？"], ["assistant", "吾乃李太白。"]]
    # filters: text, status, tag, role
    save(app, instruction="杜甫是谁", output="诗圣", role="杜甫", status="draft")
    assert [r[0] for r in rows(app.table("李太白"))] == [1]
    assert [r[0] for r in rows(app.table("", "draft"))] == [2]
    assert [r[0] for r in rows(app.table("", "all", "persona"))] == [1]
    assert [r[0] for r in rows(app.table("", "all", "", "杜甫"))] == [2]
    assert app.filter_info("", "all", "", "") == "2 match(es)"
    # delete needs the current revision
    out = app.delete_sample("ann", 1, 1, *FILTERS)
    assert "deleted sample #1" in out[N_FORM] and app.store.count() == 1
    assert "open a saved sample" in app.delete_sample("ann", 0, 0, *FILTERS)[N_FORM]


def test_editor_form_comes_from_one_field_list(tmp_path):
    """The editor's widgets, the values its handlers take and return, and what a sample shows: EDITOR_FIELDS."""
    blocks = build_label_ui(tmp_path / "proj")
    fns = {fn.fn.__name__: fn for fn in blocks.fns.values()}
    for name in ("new_sample", "open_sample", "open_selected", "save_sample", "delete_sample"):
        assert [c.elem_id for c in fns[name].outputs[:N_FORM]] == [f.elem_id for f in EDITOR_FIELDS], name
    assert [c.elem_id for c in fns["save_sample"].inputs] == \
        ["label-user", *[EDITOR_FIELDS[AT[n]].elem_id for n in SENT_FIELDS], "f-text", "f-status", "f-tag", "f-role"]
    app = blocks.label_app
    s = app.store.add_sample(instruction="翻译", input="hello", output="你好", tags="mt, 英语", note="n", user="ann")
    shown = dict(zip(AT, app.open_sample(s.id)))
    assert (shown["id"], shown["revision"], shown["kind"], shown["instruction"], shown["tags"], shown["note"]) == \
        (s.id, 1, "single", "翻译", "mt, 英语", "n")
    assert "| ann | create |" in shown["history"]
    blank = dict(zip(AT, app.new_sample()))
    assert (blank["id"], blank["kind"], blank["status"], blank["output"]) == (0, "single", "accepted", "")
    # through Gradio, the save still gets the request: the name from the X-Tunesmith-User header
    initial = {c["id"]: c.get("props", {}).get("value") for c in blocks.get_config_file()["components"]}
    inputs = [initial.get(c._id) for c in fns["save_sample"].inputs]
    inputs[1 + SENT_FIELDS.index("instruction")], inputs[1 + SENT_FIELDS.index("output")] = "q", "a"
    out = asyncio.run(blocks.process_api(fns["save_sample"], inputs, state=None,
                                         request=gr.Request(headers={"x-tunesmith-user": "dave"})))
    assert "new sample #2" in out["data"][N_FORM] and app.store.get_sample(2).created_by == "dave"


def test_user_name_comes_from_the_field_or_the_request(app):
    assert LabelApp.user_of("  ann ", None) == "ann"
    assert LabelApp.user_of("", gr.Request(headers={"x-tunesmith-user": "bob"})) == "bob"
    assert LabelApp.user_of("", gr.Request(username="carol")) == "carol"
    assert LabelApp.user_of("", None) == "anonymous"
    app.save_sample("", 0, 0, "single", "", "", "q", "", "a", None, "accepted", "", "", *FILTERS,
                    request=gr.Request(headers={"x-tunesmith-user": "dave"}))
    assert app.store.get_sample(1).created_by == "dave"


def test_review_queue_accept_and_reject(tmp_path):
    app = LabelApp(tmp_path / "proj")
    st = app.store
    g1 = st.log_generation(adapter="ie", messages=[["user", "q1"]], answer="a1", elapsed_s=0.2)
    g2 = st.log_generation(adapter="ie", messages=[["user", "q2"]], answer="a2", elapsed_s=0.2)
    assert sorted(r[0] for r in rows(app.generations_table())) == [g1, g2]
    gid, output, prompt, msg = app.pick_generation(gr.SelectData(None, {"index": [0, 0], "value": g1,
                                                                        "row_value": [g1]}))
    assert (gid, output) == (g1, "a1") and "q1" in prompt
    msg, table, count = app.accept_review("ann", g1, "a1 fixed", "", "", "")
    assert "accepted as sample #1" in msg and st.get_sample(1).answer == "a1 fixed"
    msg, table, count = app.reject_review("ann", g2, "", "", "", "wrong language")
    assert "rejected" in msg and rows(table) == [] and "0 model answer(s) to review" in count
    assert "pick a model answer" in app.accept_review("ann", None, "", "", "", "")[0]


# -- Import / export / settings ------------------------------------------------------------------------
def test_import_curate_export_from_the_page(app, datasets_dir, tmp_path):
    from tunesmith.data import load

    assert "settings saved" in app.save_settings("lead", "ie", "context", True, "")
    src = datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"
    msg, table, info, count = app.import_dataset("ann", str(src), "auto", "accepted", "dev", "fail")
    assert "imported 122" in msg and "**122 samples**" in count
    msg = app.import_dataset("ann", str(src), "context-target", "accepted", "", "fail")[0]
    assert "imported 0" in msg and "122 duplicate(s)" in msg
    assert "choose a dataset file" in app.import_dataset("ann", None, "auto", "accepted", "", "fail")[0]
    # curate: reject one sample, then export the accepted ones
    first = app.store.list_samples(newest_first=False, limit=1)[0]
    save(app, sid=first.id, rev=first.revision, instruction=first.instruction, input=first.input,
         output=first.output, status="rejected")
    msg, path = app.export_dataset("context-target", ["accepted"], "", "")
    assert "wrote 121 sample(s)" in msg and "tunesmith train" in msg
    exported = sorted((app.project_dir / "exports").glob("*.jsonl"))
    assert len(exported) == 1 and open(path, encoding="utf-8").read() == exported[0].read_text(encoding="utf-8")
    convs = load(exported[0], "context-target")
    assert len(convs) == 121 and convs[0].messages[0].content.endswith("\nAnswer: ")
    recs = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines() if x.strip()]
    assert [c.answer for c in convs] == [r["target"] for r in recs[1:]]
    for fmt in ("alpaca", "sharegpt", "conversation", "messages"):
        msg, path = app.export_dataset(fmt, ["accepted"], "dev", "")
        assert "wrote 121" in msg and len(load(path, fmt)) == 121
    assert "nothing exported" in app.export_dataset("alpaca", [], "", "")[0]
    assert "no samples to export" in app.export_dataset("alpaca", ["draft"], "", "")[0]
    # imported samples hold no model answers: nothing to prefer or judge, and nothing written
    before = sorted((app.project_dir / "exports").glob("*.jsonl"))
    assert "no pairs to export" in app.export_dataset("conversation", ["accepted"], "", "", "pairs")[0]
    assert "no judged answers" in app.export_dataset("conversation", ["accepted"], "", "", "kto")[0]
    assert sorted((app.project_dir / "exports").glob("*.jsonl")) == before


def test_import_bad_file_shows_the_line(app, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "target": "b"}\n{"context": 3, "target": "b"}\n', encoding="utf-8")
    msg = app.import_dataset("ann", str(bad), "context-target", "accepted", "", "fail")[0]
    assert "nothing imported" in msg and "bad.jsonl:2" in msg and app.store.count() == 0
    msg = app.import_dataset("ann", str(bad), "context-target", "accepted", "", "skip")[0]
    assert "imported 1" in msg and "1 bad record(s) skipped" in msg


def test_settings_refuse_json_requirement_when_samples_are_not_json(app):
    save(app, instruction="q", output="plain")
    msg = app.save_settings("lead", "p", "alpaca", True, "")
    assert "settings not saved" in msg and "sample #1 is not JSON" in msg
    assert app.settings_values() == ("", "alpaca", False, "")
    assert "Instruction: a\nInput: b\nAnswer: " not in app.prompt_preview("a", "b")
    app.save_settings("lead", "p", "context", False, "")
    assert "Instruction: a\nInput: b\nAnswer: " in app.prompt_preview("a", "b")


def test_label_store_shared_between_two_pages(tmp_path):
    """Two server processes or tabs on one project folder see each other's samples."""
    a, b = LabelApp(tmp_path / "proj"), LabelApp(tmp_path / "proj")
    save(a, instruction="q", output="x")
    assert "**1 samples**" in b.count_text()
    assert isinstance(b.store, LabelStore) and b.store.path == a.store.path
