"""Helpers shared by several test modules: random LoRA adapters on a tiny model, a uvicorn server in a thread,
a headless Chromium page on a served app."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tunesmith.template import resolve_template, save_template


def make_lora_adapter(model_dir: Path, out_dir: Path, *, seed: int, template: str = "auto",
                      default_system: str | None = None) -> Path:
    """A saved PEFT LoRA adapter with random non-zero weights (so it changes the outputs) + its template.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():  # make the adapter's effect large enough to change greedy outputs
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out_dir)
    save_template(resolve_template(template, tok, default_system=default_system), out_dir)
    return out_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
needs_browser = pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("TUNESMITH_REQUIRE_BROWSER"),
                                   reason=f"{CHROMIUM} is not installed "
                                          "(set TUNESMITH_REQUIRE_BROWSER=1 to fail instead)")


def cjk(text: str) -> str:
    """Rendered text compared by its CJK characters (markdown rendering may change punctuation and spaces)."""
    return "".join(re.findall(r"[\u4e00-\u9fff]", text))


@contextmanager
def ui_page(app, **page_options):
    """A headless Chromium page next to `app` served in a thread: yields (page, the server's URL); on leaving, the
    page must have asked nothing of any other host (the web pages work offline)."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with RunningServer(app) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(**page_options)
            page.on("request", lambda r: None if r.url.startswith(server.url) or r.url.startswith("data:")
                    else outside.append(r.url))
            yield page, server.url
        finally:
            browser.close()
    assert outside == [], f"the page reached outside the server: {outside}"


class RunningServer:
    """uvicorn serving `app` in a thread on a free port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def wait_until_healthy(url: str, proc, read_log, timeout_s: float = 120) -> None:
    """Poll GET {url}/health of a server started as a subprocess until it answers 200; if the process ends
    first, fail with what `read_log()` returns."""
    import httpx

    deadline = time.time() + timeout_s
    while True:
        assert proc.poll() is None, read_log()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "server did not start"
        time.sleep(0.3)


def write_conversations(path: Path, convs) -> Path:
    """Write tunesmith conversations as JSONL (one `to_dict()` per line) and return the path."""
    path.write_text("".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in convs), encoding="utf-8")
    return path


def packed_lora_model(path):
    """A tiny model from `path` with tunesmith's packed attention and a LoRA adapter whose B is random (so the
    adapter changes the logits and its gradients are non-trivial): what the packing equivalence tests train."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.train.attention import use_packed_attention

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert use_packed_attention(model) == "tunesmith_packed"
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                            init_lora_weights=False))
