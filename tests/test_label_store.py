"""The labeling store: validation, revisions, optimistic concurrency, crash safety, import/export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from tunesmith.errors import DataError, TunesmithError
from tunesmith.label.answers import parse_answer_json
from tunesmith.label.store import (
    DB_NAME,
    DuplicateSample,
    EditConflict,
    LabelError,
    LabelStore,
    compose_prompt,
    split_prompt,
)

IE_OUTPUT = ('```json\n[{"predicate": "主演", "object_type": "人物", "subject_type": "影视作品", "object": "周星驰", '
             '"subject": "喜剧之王"}]\n```')


@pytest.fixture()
def store(tmp_path):
    s = LabelStore(tmp_path / "proj")
    yield s
    s.close()


# -- JSON in answers ------------------------------------------------------------------------------
def test_parse_answer_json_fenced_bare_text_and_errors():
    r = parse_answer_json(IE_OUTPUT)
    assert r.ok and r.value[0]["object"] == "周星驰"
    assert parse_answer_json('["水果"]').value == ["水果"]
    assert parse_answer_json("前言\n```\n{\"a\": 1}\n```\n后记").value == {"a": 1}
    plain = parse_answer_json("我是李白，举杯邀明月。")
    assert not plain.found and plain.error is None
    broken = parse_answer_json('```json\n[{"a": 1,]\n```')
    assert broken.found and not broken.ok and "line 1" in broken.error
    assert "never closed" in parse_answer_json("```json\n[1]").error
    assert "not valid JSON" in parse_answer_json("[1, 2").error


def test_prompt_formats_round_trip():
    user = compose_prompt("抽取三元组", "周星驰主演喜剧之王", "context")
    assert user == "Instruction: 抽取三元组\nInput: 周星驰主演喜剧之王\nAnswer: "
    assert split_prompt(user, "context") == ("抽取三元组", "周星驰主演喜剧之王")
    assert split_prompt("no header", "context") is None
    assert compose_prompt("写一首诗", "", "alpaca") == "写一首诗"
    assert compose_prompt("翻译", "hello", "alpaca") == "翻译\nhello"


# -- samples ---------------------------------------------------------------------------------------
def test_add_update_history_keeps_who_when_what(store):
    s = store.add_sample(instruction="抽取三元组", input="周星驰主演喜剧之王", output='["a"]', tags="ie, 人物",
                         user="ann")
    assert (s.id, s.revision, s.created_by, s.tags) == (1, 1, "ann", ["ie", "人物"])
    assert s.messages[0].content == "抽取三元组\n周星驰主演喜剧之王" and s.answer == '["a"]'
    s2 = store.update_sample(s.id, output='["b"]', note="fixed label", expected_revision=1, user="bob")
    assert s2.revision == 2 and s2.updated_by == "bob" and s2.created_by == "ann"
    hist = store.history(s.id)
    assert [h.action for h in hist] == ["create", "update"]
    assert hist[1].user == "bob" and sorted(hist[1].changed) == ["note", "output"]
    assert hist[1].old == {"output": '["a"]', "note": ""} and hist[1].new == {"output": '["b"]', "note": "fixed label"}
    assert hist[1].at >= hist[0].at
    # a no-op save writes no revision
    assert store.update_sample(s.id, output='["b"]', expected_revision=2, user="bob").revision == 2
    assert len(store.history(s.id)) == 2


def test_stale_edit_is_refused_with_a_clear_message(store):
    s = store.add_sample(instruction="q", output="a1", user="ann")
    store.update_sample(s.id, output="a2", expected_revision=1, user="bob")
    with pytest.raises(EditConflict) as e:
        store.update_sample(s.id, output="a3", expected_revision=1, user="carol")
    msg = str(e.value)
    assert ("changed by bob" in msg and "revision 2" in msg and "based on revision 1" in msg
            and "Nothing was saved" in msg)
    assert store.get_sample(s.id).output == "a2"
    assert isinstance(e.value, TunesmithError)


def test_concurrent_editors_one_wins_no_lost_update(tmp_path):
    """Two writers (separate connections, as two server threads or processes) edit revision 1 at once."""
    path = tmp_path / "p"
    LabelStore(path).add_sample(instruction="q", output="orig", user="ann")
    barrier = threading.Barrier(8)
    results: list[str] = []

    def edit(i: int) -> None:
        st = LabelStore(path)
        barrier.wait()
        try:
            st.update_sample(1, output=f"edit {i}", expected_revision=1, user=f"u{i}")
            results.append(f"ok {i}")
        except EditConflict:
            results.append("conflict")
        finally:
            st.close()

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("ok")]
    assert len(winners) == 1 and results.count("conflict") == 7
    final = LabelStore(path).get_sample(1)
    assert final.revision == 2 and final.output == f"edit {winners[0].split()[1]}"


def test_parallel_adds_from_processes_lose_nothing(tmp_path):
    path = tmp_path / "p"
    LabelStore(path).close()
    code = textwrap.dedent("""
        import sys
        from tunesmith.label.store import LabelStore
        st = LabelStore(sys.argv[1])
        for i in range(25):
            st.add_sample(instruction=f"{sys.argv[2]} q{i}", output="a", user=sys.argv[2])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"w{k}"]) for k in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    st = LabelStore(path)
    assert st.count() == 75
    assert {s.created_by for s in st.list_samples(limit=None)} == {"w0", "w1", "w2"}


def test_killed_writer_loses_nothing_acknowledged(tmp_path):
    """SIGKILL a process that is writing; every sample it acknowledged must be in the reopened store."""
    path = tmp_path / "p"
    code = textwrap.dedent("""
        import sys
        from tunesmith.label.store import LabelStore
        st = LabelStore(sys.argv[1])
        i = 0
        while True:
            s = st.add_sample(instruction=f"question {i}", output="答案" * 50, user="writer")
            if i % 3 == 0:
                st.update_sample(s.id, note=f"note {i}", expected_revision=s.revision, user="writer")
            print(s.id, flush=True)   # acknowledged only after commit
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    acked: list[int] = []
    try:
        while len(acked) < 40:
            line = proc.stdout.readline()
            assert line, "writer died early"
            acked.append(int(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert (path / DB_NAME).is_file()
    st = LabelStore(path)
    assert st.integrity_check() == "ok"
    have = {s.id for s in st.list_samples(limit=None)}
    assert set(acked) <= have
    for sid in acked:
        if (sid - 1) % 3 == 0:
            assert st.get_sample(sid).note == f"note {sid - 1}"


def test_bad_input_is_refused_and_nothing_is_saved(store):
    with pytest.raises(DataError, match="instruction: empty"):
        store.add_sample(instruction="  ", input="", output="a")
    with pytest.raises(DataError, match="output: empty"):
        store.add_sample(instruction="q", output=" ")
    with pytest.raises(DataError, match="turn 2: role 'user', expected 'assistant'"):
        store.add_sample(messages=[["user", "hi"], ["user", "again"]])
    with pytest.raises(DataError, match="last turn is from the user"):
        store.add_sample(messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(DataError, match="turn 2 \\(assistant\\): empty"):
        store.add_sample(messages=[["user", "hi"], ["assistant", ""]])
    with pytest.raises(DataError, match="status"):
        store.add_sample(instruction="q", output="a", status="maybe")
    assert store.count() == 0 and store.counts()["total"] == 0
    s = store.add_sample(instruction="q", output="a")
    with pytest.raises(DuplicateSample, match="#1"):
        store.add_sample(instruction="q", output="a")
    # a chat with exactly the same text is the same training sample
    with pytest.raises(DuplicateSample):
        store.add_sample(messages=[["user", "q"], ["assistant", "a"]])
    with pytest.raises(DataError):
        store.update_sample(s.id, output="", expected_revision=1)
    assert store.get_sample(s.id).revision == 1 and store.count() == 1


def test_json_required_project(store):
    store.add_sample(instruction="聊天", output="你好")
    with pytest.raises(DataError, match="sample #1 is not JSON"):
        store.update_settings(output_json=True)
    assert store.settings().output_json is False
    store.update_sample(1, status="rejected", expected_revision=1)
    store.update_settings(output_json=True, prompt_format="context", user="lead")
    with pytest.raises(DataError, match="output: must be JSON"):
        store.add_sample(instruction="抽取", input="x", output="周星驰")
    with pytest.raises(DataError, match="output: the fenced block is not valid JSON"):
        store.add_sample(instruction="抽取", input="x", output='```json\n[{"a": }]\n```')
    s = store.add_sample(instruction="抽取", input="周星驰主演喜剧之王", output=IE_OUTPUT)
    assert s.messages[0].content == "Instruction: 抽取\nInput: 周星驰主演喜剧之王\nAnswer: "


def test_search_filter_count(store):
    store.add_sample(instruction="李白是谁", output="诗人", role="李白", tags="persona", user="a")
    store.add_sample(instruction="杜甫是谁", output="诗圣", role="杜甫", tags="persona,cus", status="draft")
    store.add_sample(messages=[["user", "Hello THERE"], ["assistant", "hi"], ["user", "more"], ["assistant", "ok"]],
                     system="你是助手", status="rejected", tags="chat")
    assert store.counts() == {"accepted": 1, "draft": 1, "rejected": 1, "total": 3}
    assert [s.role for s in store.list_samples(text="诗")] == ["杜甫", "李白"]
    assert store.count(text="hello there") == 1  # case-insensitive, every word
    assert store.count(tag="persona") == 2 and store.count(tag="cus") == 1 and store.count(tag="pers") == 0
    assert store.count(role="李白") == 1 and store.count(status="draft") == 1
    assert store.count(status=["accepted", "draft"]) == 2
    assert store.roles() == ["李白", "杜甫"] and store.tags() == ["chat", "cus", "persona"]
    with pytest.raises(LabelError, match="unknown status"):
        store.count(status="nope")


def test_delete_keeps_history_and_needs_current_revision(store):
    s = store.add_sample(instruction="q", output="a")
    with pytest.raises(EditConflict):
        store.delete_sample(s.id, expected_revision=0)
    store.delete_sample(s.id, expected_revision=1, user="ann")
    assert store.count() == 0
    assert [h.action for h in store.history(s.id)] == ["create", "delete"]
    with pytest.raises(EditConflict, match="deleted"):
        store.update_sample(s.id, output="b", expected_revision=2)
    store.add_sample(instruction="q", output="a")  # no longer a duplicate


# -- model answers -----------------------------------------------------------------------------------
def test_generations_judgements_accept_reject(store):
    g = store.log_generation(adapter="ie", instruction="抽取", input="x", kind="single",
                             messages=[["user", "抽取\nx"]], answer='```json\n[{"a": 1]\n```', elapsed_s=0.5,
                             options={"max_new_tokens": 32}, user="ann")
    gen = store.get_generation(g)
    assert gen.json_ok is False and gen.options == {"max_new_tokens": 32}
    store.judge(g, "wrong", "broken JSON", user="ann")
    store.judge(g, "right", "on second look", user="bob")
    assert [j["verdict"] for j in store.judgements(g)] == ["wrong", "right"]
    assert store.get_generation(g).verdict == "right"
    with pytest.raises(DataError, match="verdict"):
        store.judge(g, "meh")
    s = store.accept_generation(g, output='```json\n[{"a": 1}]\n```', user="ann", tags="from-model")
    assert s.kind == "single" and s.instruction == "抽取" and s.source == "model:ie"
    assert s.meta["corrected"] is True and s.meta["generation_id"] == g
    assert store.get_generation(g).review == "accepted" and store.get_generation(g).sample_id == s.id
    with pytest.raises(LabelError, match="already accepted"):
        store.accept_generation(g)
    chat = store.log_generation(adapter="base", messages=[["user", "你好"], ["assistant", "好"], ["user", "再见"]],
                                answer="再见！", elapsed_s=0.1)
    assert store.count_generations("pending") == 1 and store.count_generations() == 2
    store.reject_generation(chat, note="off-topic", user="ann")
    assert store.list_generations("pending") == [] and store.count_generations("pending") == 0
    assert store.count_generations("rejected") == 1 and store.count_generations("accepted") == 1
    assert store.judgements(chat)[-1]["verdict"] == "rejected"
    chat2 = store.log_generation(adapter="base", messages=[["user", "你好"], ["assistant", "好"], ["user", "几点"]],
                                 answer="三点", elapsed_s=0.1, system="你是钟表")
    s2 = store.accept_generation(chat2)
    assert s2.kind == "chat" and len(s2.messages) == 4 and s2.system == "你是钟表" and s2.answer == "三点"
    with pytest.raises(LabelError, match="no model answer"):
        store.judge(999, "right")


def test_accept_generation_with_empty_answer_saves_nothing(store):
    g = store.log_generation(adapter="base", messages=[["user", "q"]], answer="", elapsed_s=0.1)
    with pytest.raises(DataError, match="turn 2 \\(assistant\\): empty"):
        store.accept_generation(g)
    assert store.count() == 0 and store.get_generation(g).review is None


# -- import / export -----------------------------------------------------------------------------------
def test_import_real_ie_data_and_export_every_format(store, datasets_dir, tmp_path):
    from tunesmith.data import load

    store.update_settings(prompt_format="context", output_json=True)
    src = datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"
    rep = store.import_file(src, "context-target", tags="dev", user="ann")
    assert rep.added == 122 and not rep.duplicates
    again = store.import_file(src)  # detected format; every record is already there
    assert again.added == 0 and len(again.duplicates) == 122
    s = store.list_samples(newest_first=False, limit=1)[0]
    assert s.kind == "single" and s.instruction.startswith("你现在是一个很厉害的阅读理解器")
    assert s.tags == ["dev"] and s.source == "import:mixed_dev_dataset.jsonl"
    # context-target export reproduces the source records byte for byte
    out = store.export(tmp_path / "ct.jsonl", "context-target")
    assert out.count == 122
    src_lines = src.read_text(encoding="utf-8").splitlines()
    got = [json.loads(x) for x in out.path.read_text(encoding="utf-8").splitlines()]
    assert got == [json.loads(x) for x in src_lines if x.strip()]
    for fmt in ("conversation", "alpaca", "sharegpt", "messages"):
        rep = store.export(tmp_path / f"x-{fmt}.jsonl", fmt)
        back = load(rep.path, fmt)
        assert len(back) == 122 and back[0].answer == got[0]["target"]
    conv = load(tmp_path / "x-conversation.jsonl", "conversation")[0]
    assert conv.meta["label_id"] == 1 and conv.meta["tags"] == ["dev"]


def test_import_bad_file_names_the_line_and_adds_nothing(store, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="bad.jsonl:2"):
        store.import_file(bad, "alpaca")
    assert store.count() == 0
    rep = store.import_file(bad, "alpaca", on_error="skip")
    assert rep.added == 1 and len(rep.skipped) == 1 and "bad.jsonl:2" in rep.skipped[0]


def test_import_chat_data_keeps_roles_and_system(store, rolebench_dir, tmp_path):
    src = rolebench_dir / "role_specific" / "test.jsonl"
    if not src.is_file():
        src = next((rolebench_dir / "role_specific").glob("*test*.jsonl"))
    rep = store.import_file(src, "rolebench", limit=20, status="draft")
    assert rep.added + len(rep.duplicates) == 20
    s = store.list_samples(limit=1)[0]
    assert s.role and s.system and s.status == "draft"
    assert store.count(role=s.role) >= 1


def test_export_refuses_what_the_format_cannot_hold(store, tmp_path):
    store.add_sample(instruction="q", output="a", system="你是李白")
    with pytest.raises(DataError, match="sample #1.*system"):
        store.export(tmp_path / "ct.jsonl", "context-target")
    assert not (tmp_path / "ct.jsonl").exists()
    with pytest.raises(LabelError, match="no samples to export"):
        store.export(tmp_path / "x.jsonl", statuses=["draft"])
    with pytest.raises(TunesmithError, match="export format"):
        store.export(tmp_path / "x.jsonl", "rolebench")


def test_settings_change_does_not_rewrite_old_samples(store):
    a = store.add_sample(instruction="翻译", input="hello", output="你好")
    store.update_settings(prompt_format="context")
    assert store.get_sample(a.id).messages[0].content == "翻译\nhello"  # made under alpaca, stays so
    b = store.add_sample(instruction="翻译", input="hello", output="你好")  # now a different prompt
    assert b.messages[0].content == "Instruction: 翻译\nInput: hello\nAnswer: "
    edited = store.update_sample(a.id, input="hi", expected_revision=1)
    assert edited.messages[0].content == "翻译\nhi"


def test_store_path_forms(tmp_path):
    s = LabelStore(tmp_path / "p")
    assert s.path == tmp_path / "p" / DB_NAME and s.path.is_file()
    s2 = LabelStore(tmp_path / "p" / DB_NAME)
    assert s2.path == s.path
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(TunesmithError, match="not a labeling database"):
        LabelStore(tmp_path / "junk.sqlite")


def test_format_lists_come_from_the_data_layer_and_every_export_format_writes_a_sample(store, tmp_path):
    from tunesmith.data import load
    from tunesmith.data.formats import readable_formats, writable_formats
    from tunesmith.label.io import EXPORT_FORMATS, IMPORT_FORMATS, NOT_EXPORTED

    assert IMPORT_FORMATS == ("auto", *readable_formats())
    assert set(EXPORT_FORMATS) | set(NOT_EXPORTED) == set(writable_formats()) and EXPORT_FORMATS[0] == "conversation"
    store.add_sample(instruction="翻译", input="hello", output="你好", tags="mt")
    for fmt in EXPORT_FORMATS:
        back = load(store.export(tmp_path / f"single-{fmt}.jsonl", fmt).path, fmt)
        assert [(m.role, m.content) for m in back[0].messages] == [("user", "翻译\nhello"), ("assistant", "你好")], fmt
    store.add_sample(messages=[["user", "你是谁？"], ["assistant", "吾乃李太白。"], ["user", "何处人？"],
                               ["assistant", "蜀中人。"]], system="你是李白", role="李白")
    for fmt in EXPORT_FORMATS:
        if fmt == "context-target":  # one prompt and one answer: the chat is refused by name, nothing written
            with pytest.raises(DataError, match="sample #2"):
                store.export(tmp_path / f"chat-{fmt}.jsonl", fmt)
            assert not (tmp_path / f"chat-{fmt}.jsonl").exists()
            continue
        back = load(store.export(tmp_path / f"chat-{fmt}.jsonl", fmt).path, fmt)
        assert len(back[1].messages) == 4 and back[1].system == "你是李白" and back[1].answer == "蜀中人。", fmt


def test_a_chat_the_character_opens_is_kept_and_exported(store, tmp_path):
    """A card's conversations start with the character's greeting: the store takes them as they train."""
    from pathlib import Path

    from tunesmith.data import load

    card = Path(__file__).resolve().parents[1] / "datasets" / "character-cards" / "Seraphina.png"
    rep = store.import_file(card, "card")
    convs = load(card)
    assert rep.added == len(convs) == 1  # its one greeting (the card has no example dialogues)
    first = store.list_samples(limit=1)[0]
    assert first.messages[0].role == "assistant" and first.messages[0].content.startswith("*You wake with a start")
    assert first.system == convs[0].system
    back = load(store.export(tmp_path / "back.jsonl", "conversation").path, "conversation")
    assert [[(m.role, m.content) for m in c.messages] for c in back] == \
        [[(m.role, m.content) for m in c.messages] for c in convs]
    greeted = store.add_sample(messages=[{"role": "assistant", "content": "*waves* Hello, traveller."},
                                         {"role": "user", "content": "Hi."},
                                         {"role": "assistant", "content": "Sit by the fire."}])
    assert greeted.prompt == "Hi." and greeted.answer == "Sit by the fire."
    with pytest.raises(DataError, match="turn 2: role 'assistant', expected 'user'"):
        store.add_sample(messages=[{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}])
