"""`tunesmith label PROJECT_DIR`: the labeling web page (playground + dataset desk) for one project folder;
`tunesmith label export PROJECT_DIR -o OUT`: its samples, pairs or judged answers as a training file.

    tunesmith label ie-project
    tunesmith label ie-project --model /models/Qwen2.5-1.5B-Instruct --adapter ie=runs/ie/adapter --port 7861
    tunesmith label export ie-project -o ie-pairs.jsonl --kind pairs      # then: tunesmith train ... method=dpo

`label` is a group whose default command opens the page, so `tunesmith label PROJECT_DIR` works as it always
did; only a first word naming a sub-command (`export`) goes elsewhere.  Only the standard library and typer
are imported here; the server and the store are imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from tunesmith.adapter_spec import parse_adapter_specs

OPEN = "open"  # the default command: the page


class _LabelGroup(TyperGroup):
    """`tunesmith label ARGS`: a sub-command when the first word names one, else the page (`open`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = [OPEN, *args]  # `label --help` shows the page's options, as before there were sub-commands
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_LabelGroup, help="The labeling page, and exports of what was labeled.")


@app.command(OPEN)
def label(
    project_dir: Annotated[Path, typer.Argument(
        help="Project folder; its store tunesmith-label.sqlite is created on first use.")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Base model (folder, hub id, .gguf file or 'default') for the Try-it tab; without it "
                              "the page labels without a model.")] = None,
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
    PROJECT_DIR/tunesmith-label.sqlite; several people can work at once. Write a training file without the
    page: tunesmith label export PROJECT_DIR -o OUT [--kind sft|pairs|kto] (see tunesmith label export --help).
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


@app.command("export")
def label_export(
    project_dir: Annotated[Path, typer.Argument(help="The labeling project folder (holding tunesmith-label.sqlite).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (.jsonl).")],
    kind: Annotated[str, typer.Option(
        "--kind", "-k", help="sft: the samples (prompt + answer); pairs: corrected model answers (chosen = the "
                             "correction, rejected = the model's answer) for method=dpo/orpo; kto: model answers "
                             "judged right/wrong (label true/false) for method=kto.")] = "sft",
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="sft only: conversation, alpaca, sharegpt, context-target or messages (pairs and kto "
                               "are always our conversation JSONL).")] = "conversation",
    status: Annotated[list[str] | None, typer.Option(
        "--status", "-s", help="Samples with this status (repeatable; default accepted). sft and pairs only.")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only samples with this tag (sft and pairs).")] = None,
    role: Annotated[str | None, typer.Option("--role", help="Only samples of this role (sft and pairs).")] = None,
) -> None:
    """Write a labeling project's samples (sft), corrected answers (pairs) or judged answers (kto) for training.

    For example `tunesmith label export ie-project -o pairs.jsonl --kind pairs`, then
    `tunesmith train RECIPE.yaml method=dpo data.train=pairs.jsonl`.

    Nothing is written when there is nothing of that kind to export (exit 2), or when a sample does not fit
    the format; the file is written atomically.
    """
    from tunesmith.errors import ConfigError
    from tunesmith.label.db import DB_NAME
    from tunesmith.label.preference import EXPORT_KINDS, SFT

    if kind not in EXPORT_KINDS:
        raise ConfigError(f"--kind {kind!r}: expected one of {', '.join(EXPORT_KINDS)}")
    store_file = project_dir if project_dir.is_file() else project_dir / DB_NAME
    if not store_file.is_file():  # exporting never creates a project
        raise ConfigError(f"{project_dir}: no labeling project here (expected a folder holding {DB_NAME})")
    if kind != SFT and fmt != "conversation":
        raise ConfigError(f"--format {fmt!r}: --kind {kind} is always written as conversation JSONL "
                          "(leave --format out)")
    if kind == "kto" and status:
        raise ConfigError("--status chooses samples; a kto export holds every model answer judged right or wrong "
                          "(leave --status out)")
    from tunesmith.label.store import LabelStore

    statuses = tuple(status or ("accepted",))
    with LabelStore(store_file) as store:
        if kind == SFT:
            rep = store.export(output, fmt, statuses=statuses, tag=tag, role=role)
            print(f"wrote {rep.count} sample(s) to {rep.path} ({fmt})")
        else:
            print(store.export_preference(output, kind, statuses=statuses, tag=tag, role=role).summary())
