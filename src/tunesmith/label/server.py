"""The stand-alone labeling server: FastAPI with the labeling page mounted at /label, run by uvicorn.

    tunesmith label ie-project                                   # http://127.0.0.1:7861/label/
    tunesmith label ie-project --model /models/qwen --adapter ie=runs/ie/adapter

    from tunesmith.label.server import build_app
    app = build_app("ie-project", engine=None)                  # any ASGI server can run it

`/` redirects to the page and `/label/health` answers {"ok": true, "samples": N} for scripts and probes.
Nothing is fetched from the internet: Gradio analytics are off and no share link is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LABEL_PATH = "/label"


def build_app(project_dir: str | Path, engine: Any = None, *, path: str = LABEL_PATH):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    from tunesmith.label.ui import build_label_ui

    blocks = build_label_ui(project_dir, engine=engine)
    store = blocks.label_app.store
    app = FastAPI(title="tunesmith label", docs_url=None, redoc_url=None)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse(path + "/")

    @app.get(path + "/health")
    def health() -> dict[str, Any]:
        c = store.counts()
        return {"ok": True, "project": str(store.project_dir), "samples": c["total"], "accepted": c["accepted"],
                "model": getattr(engine, "model_name", None), "adapters": blocks.label_app.adapter_choices()}

    app = gr.mount_gradio_app(app, blocks, path=path, footer_links=[], show_error=True)
    app.state.label_blocks = blocks
    return app


def check_port_free(host: str, port: int) -> None:
    """ConfigError now, rather than a uvicorn traceback after the model has loaded, when the port is taken."""
    import socket

    from tunesmith.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                              "pick another port with --port") from None


def run(project_dir: str | Path, engine: Any = None, *, host: str = "127.0.0.1", port: int = 7861) -> None:
    import uvicorn

    check_port_free(host, port)
    app = build_app(project_dir, engine)
    print(f"labeling page: http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}{LABEL_PATH}/ "
          f"(project {Path(project_dir).resolve()}); Ctrl-C stops it", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
