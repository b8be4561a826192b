"""`tunesmith label PROJECT_DIR`: the labeling web page (playground + dataset desk) for one project folder.

    tunesmith label ie-project
    tunesmith label ie-project --model /models/Qwen2.5-1.5B-Instruct --adapter ie=runs/ie/adapter --port 7861

Only the standard library and typer are imported here; the server is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tunesmith.adapter_spec import parse_adapter_specs


def label(
    project_dir: Annotated[Path, typer.Argument(
        help="Project folder; its store tunesmith-label.sqlite is created on first use.")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Base model (folder, hub id or 'default') for the Try-it tab; without it the page labels "
                              "without a model.")] = None,
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", "-a", help="LoRA adapter NAME=PATH to try (repeatable); needs --model.")] = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on (0.0.0.0 to let other machines in).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 7861,
    dtype: Annotated[str, typer.Option("--dtype", help="Model weights dtype: auto, fp32, bf16, fp16.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    template: Annotated[str | None, typer.Option(
        "--template", help="Chat template for the base model (auto, tokenizer, chatml, plain, instruction); adapters "
                           "use the one saved with them.")] = None,
) -> None:
    """Open the labeling page: try the model, judge its answers, write and curate samples, export for training.

    The page is served at http://HOST:PORT/label/. Every change is saved at once, with its history, in
    PROJECT_DIR/tunesmith-label.sqlite; several people can work at once.
    """
    import os

    from tunesmith.errors import ConfigError

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    adapters = parse_adapter_specs(adapter)
    if adapters and not model:
        raise ConfigError("--adapter needs --model (the base model the adapter was trained on)")
    if project_dir.exists() and not project_dir.is_dir():
        raise ConfigError(f"{project_dir}: not a folder (expected a labeling project folder)")
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: expected 1..65535")
    from tunesmith.label.server import check_port_free

    check_port_free(host, port)  # before loading a model for minutes
    engine = None
    if model:
        from tunesmith.infer.engine import Engine

        print(f"loading {model} ...", flush=True)
        engine = Engine.load(model, adapters=adapters, dtype=dtype, device=device, template=template)
    from tunesmith.label.server import run

    run(project_dir, engine, host=host, port=port)
