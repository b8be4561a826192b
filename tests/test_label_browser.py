"""The labeling page in headless Chromium, served by `tunesmith label` (a real subprocess with a tiny model).

Covers: write a sample (instruction form and chat turns table), two tabs editing the same sample (the stale one
is refused), search, import a real dataset file, export, and use the export for training; the Try-it tab
generates with an adapter, judges the answer and accepts a corrected answer, then the server is killed with
SIGKILL and the store must hold everything the page acknowledged.  No request may leave 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
IE_JSON = ('```json\n[{"predicate": "主演", "object_type": "人物", "subject_type": "影视作品", "object": "周星驰", '
           '"subject": "喜剧之王"}]\n```')
WAIT_MS = 60_000

pytestmark = pytest.mark.browser


def _need_browser() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("TUNESMITH_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing and TUNESMITH_REQUIRE_BROWSER is set (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is not installed")
    pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def label_server(tiny_qwen2, tmp_path_factory):
    """`tunesmith label PROJECT --model TINY --adapter ie=ADAPTER` in a subprocess; yields (url, project, process)."""
    _need_browser()
    from peft import LoraConfig, get_peft_model

    from tunesmith.model import load_model
    from tunesmith.template import resolve_template, save_template

    adapter_dir = tmp_path_factory.mktemp("browser-adapter")
    model, tok = load_model(str(tiny_qwen2), device="cpu")
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False)).save_pretrained(adapter_dir)
    save_template(resolve_template("auto", tok), adapter_dir)
    project = tmp_path_factory.mktemp("browser-project") / "ie"
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    log = open(project.parent / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "label", str(project), "--port", str(port),
                             "--model", str(tiny_qwen2), "--adapter", f"ie={adapter_dir}", "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/label/"
    deadline = time.time() + 240
    while True:
        try:
            health = json.load(urllib.request.urlopen(url + "health", timeout=5))
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("tunesmith label did not start:\n" + (project.parent / "server.log").read_text())
            time.sleep(0.5)
    assert health["adapters"] == ["base", "ie"]
    yield url, project, proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(label_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, url: str, user: str, outside: list[str]):
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    page.goto(url)
    page.get_by_label("Your name").fill(user)
    return page


def _type_into_cell(page, cell: str, text: str, tries: int = 3) -> None:
    """Edit a table cell as a person does (double-click, type, Enter) until it shows the text. Keys typed
    before the cell's editor is open are lost (seen: the first character, or all of them), so wait for the
    editor, fill it, and check the cell."""
    from playwright.sync_api import expect

    for attempt in range(tries):
        page.locator(cell).dblclick()
        editor = page.locator(f"{cell} textarea, {cell} input").first
        try:
            expect(editor).to_be_editable(timeout=5_000)
            editor.fill(text)
            editor.press("Enter")
            expect(page.locator(cell)).to_contain_text(text, timeout=5_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def _text(page, elem_id: str, contains: str) -> str:
    """Wait until the element with this id shows `contains`; return its text."""
    from playwright.sync_api import expect

    loc = page.locator(f"#{elem_id}")
    expect(loc).to_contain_text(contains, timeout=WAIT_MS)
    return loc.inner_text()


def _click_cell(page, elem_id: str, text: str) -> None:
    """Click the visible table cell showing exactly `text` (the table keeps a hidden copy for measuring)."""
    cells = page.locator(f"#{elem_id}").get_by_text(text, exact=True)
    cells.first.wait_for(state="attached")
    visible = [cells.nth(i) for i in range(cells.count()) if cells.nth(i).is_visible()]
    assert visible, f"no visible cell {text!r} in #{elem_id}"
    visible[0].click()


def _choose(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_label_conflict_import_export_and_train(label_server, browser, datasets_dir, tiny_qwen2, tmp_path):
    from tunesmith.data import load
    from tunesmith.label.store import LabelStore

    url, project, _ = label_server
    outside: list[str] = []
    ann = _open(browser, url, "ann", outside)
    ann.get_by_role("tab", name="Label").click()
    ann.locator("#ed-instruction textarea").fill("抽取三元组")
    ann.locator("#ed-input textarea").fill("周星驰主演喜剧之王")
    ann.locator("#ed-output textarea").fill(IE_JSON)
    ann.locator("#ed-save").click()
    status = _text(ann, "ed-status-line", "saved as new sample")
    sid = int(status.split("#")[1].split()[0])
    _text(ann, "label-count", "accepted")
    # a second tab (bob) opens the same sample
    bob = _open(browser, url, "bob", outside)
    bob.get_by_role("tab", name="Label").click()
    bob.locator("#ed-id input").fill(str(sid))
    bob.locator("#ed-open").click()
    _text(bob, "ed-status-line", f"Opened sample #{sid}")
    assert bob.locator("#ed-instruction textarea").input_value() == "抽取三元组"
    # ann saves first ...
    ann.locator("#ed-note textarea").fill("checked by ann")
    ann.locator("#ed-save").click()
    _text(ann, "ed-status-line", "(revision 2)")
    # ... so bob's edit of revision 1 is refused, with who changed it, and his text stays in the form
    bob.locator("#ed-note textarea").fill("bob's note")
    bob.locator("#ed-save").click()
    msg = _text(bob, "ed-status-line", "was changed by ann")
    assert "Nothing was saved" in msg
    assert bob.locator("#ed-note textarea").input_value() == "bob's note"
    # bob writes a chat sample in the turns table instead
    bob.locator("#ed-new").click()
    _text(bob, "ed-status-line", "Write a new sample")
    bob.locator("#ed-kind").get_by_text("Multi-turn chat").click()
    for row, said in ((0, "你是谁？"), (1, "吾乃李太白。")):
        _type_into_cell(bob, f"#ed-messages [data-testid=cell-{row}-1]", said)
    bob.locator("#ed-role textarea").fill("李白")
    bob.locator("#ed-save").click()
    _text(bob, "ed-status-line", "saved as new sample")
    # search finds it
    ann.locator("#f-text textarea").fill("喜剧之王")
    ann.locator("#f-text textarea").press("Enter")
    _text(ann, "f-info", "1 match(es)")
    _text(ann, "ds-table", "周星驰主演喜剧之王")
    # clicking the row opens the sample in the editor
    ann.locator("#ed-new").click()
    _text(ann, "ed-status-line", "Write a new sample")
    _click_cell(ann, "ds-table", "周星驰主演喜剧之王")
    _text(ann, "ed-status-line", f"Opened sample #{sid} (revision 2")
    assert ann.locator("#ed-input textarea").input_value() == "周星驰主演喜剧之王"

    # import a real dataset file through the upload widget
    ann.get_by_role("tab", name="Import / export").click()
    src = datasets_dir / "chatglm-mixed-ie-cls" / "mixed_dev_dataset.jsonl"
    ann.locator("#im-file input[type=file]").set_input_files(str(src))
    ann.locator("#im-file").get_by_text("mixed_dev_dataset.jsonl").first.wait_for()
    ann.locator("#im-button").click()
    _text(ann, "im-status", "imported 122 sample(s)")
    _text(ann, "label-count", "124 samples")

    # export as context-target, the shape `tunesmith train` reads for IE data
    _choose(ann, "ex-format", "context-target")
    ann.locator("#ex-button").click()
    _text(ann, "ex-status", "wrote 124 sample(s)")
    assert ann.locator("#ex-file a").first.get_attribute("href")
    exported = sorted((project / "exports").glob("*context-target*.jsonl"))
    assert len(exported) == 1
    convs = load(exported[0], "context-target")
    assert len(convs) == 124
    assert convs[0].messages[0].content == "抽取三元组\n周星驰主演喜剧之王" and convs[0].answer == IE_JSON
    store = LabelStore(project)
    s = store.get_sample(sid)
    assert (s.revision, s.note, s.updated_by) == (2, "checked by ann", "ann")
    assert [h.user for h in store.history(sid)] == ["ann", "ann"]
    chat = store.list_samples(role="李白")[0]
    assert chat.kind == "chat" and chat.created_by == "bob"
    assert [(m.role, m.content) for m in chat.messages] == [("user", "你是谁？"), ("assistant", "吾乃李太白。")]
    assert convs[1].messages[0].content == "你是谁？"
    _train_on(exported[0], "context-target", tiny_qwen2, tmp_path)
    assert outside == []


def _train_on(export: Path, fmt: str, model: Path, tmp_path: Path) -> None:
    """Train a couple of steps on the export with the tiny model (the export is a ready training file)."""
    from tunesmith.data import load

    convs = load(export, fmt)
    assert convs and all(c.answer for c in convs)
    try:
        from tunesmith.train.run import train_from_config
    except ImportError:  # a checkout without the training stage: the data-layer check above is what remains
        return
    result = train_from_config({
        "model": str(model), "output_dir": str(tmp_path / "run"), "device": "cpu", "plot": False,
        "data": {"train": {"path": str(export), "format": fmt}, "max_samples": 16},
        "lora": {"rank": 4}, "batch_size": 2, "max_steps": 2, "logging_steps": 1,
    })
    assert result.summary["steps"] == 2
    assert (Path(result.adapter_dir) / "adapter_model.safetensors").stat().st_size > 0


def test_try_it_generate_judge_accept_then_kill_server(label_server, browser):
    from tunesmith.label.store import LabelStore

    url, project, server = label_server
    outside: list[str] = []
    page = _open(browser, url, "carol", outside)
    _choose(page, "try-adapter", "ie")
    page.locator("#try-instruction textarea").fill("抽取三元组")
    page.locator("#try-input textarea").fill("刘德华主演无间道")
    page.locator("#try-generate").click()
    info = _text(page, "try-info", "answer #")
    gid = int(info.split("#")[1].split()[0])
    assert "· ie ·" in info and " s · " in info
    page.locator("#try-verdict").get_by_text("wrong").click()
    page.locator("#try-note textarea").fill("not JSON")
    page.locator("#try-judge").click()
    _text(page, "try-status", f"answer #{gid} marked wrong")
    # correct the answer by hand: the JSON panel follows, then accept it into the dataset
    page.locator("#try-answer textarea").fill(IE_JSON)
    _text(page, "try-json-status", "valid JSON")
    page.locator("#try-accept").click()
    status = _text(page, "try-status", "added to the dataset as sample")
    assert "(corrected)" in status
    # what the page acknowledged survives the server being killed at once
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=30)
    store = LabelStore(project)
    assert store.integrity_check() == "ok"
    g = store.get_generation(gid)
    assert g.adapter == "ie" and g.user == "carol" and g.verdict == "wrong" and g.note == "not JSON"
    assert g.review == "accepted"
    s = store.get_sample(g.sample_id)
    assert s.output == IE_JSON and s.input == "刘德华主演无间道" and s.created_by == "carol"
    assert outside == []
