"""`tunesmith serve`: the OpenAI-compatible API and the web chat for a base model and its LoRA adapters.

    tunesmith serve --adapter libai=runs/libai/adapter --port 8000
    curl http://127.0.0.1:8000/v1/models
    open http://127.0.0.1:8000/ui

Only the standard library and typer are imported here; the server stack loads when the command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tunesmith.adapter_spec import parse_adapter_specs
from tunesmith.infer.commands import (
    AdapterOpt,
    DeviceOpt,
    DtypeOpt,
    HistoryOpt,
    MaxNewOpt,
    ModelOpt,
    QuantOpt,
    TemplateOpt,
)

# On SIGTERM / Ctrl-C, requests still running get this long to finish before they are cancelled (their
# generation stops at the next token), so a busy server stops within seconds, not after its longest reply.
GRACEFUL_SHUTDOWN_S = 3


def serve(
    model: ModelOpt = "default",
    adapter: AdapterOpt = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on (0.0.0.0 to accept other machines; set --api-key then).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="TUNESMITH_API_KEY", show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on every route but /health (the web UI asks for it as "
             "password).")] = None,
    template: TemplateOpt = None,
    max_new_tokens: MaxNewOpt = 256,
    max_history_turns: HistoryOpt = -1,
    ui: Annotated[bool, typer.Option("--ui/--no-ui", help="Serve the web chat at /ui.")] = True,
    label_project: Annotated[str | None, typer.Option(
        help="A labeling project folder (created if missing): serve the labeling page for it at /label, with this "
             "server's model and adapters in its Try-it tab.")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Most sequences generated together in one batch.")] = 16,
    batching: Annotated[str, typer.Option(
        help="auto or continuous (a finished reply's slot goes to the next request at once; greedy and unseeded "
             "sampling requests; others, and --max-batch-size 1 under auto, run as padded batches), or padded "
             "(requests that arrive together run as one batch until its longest reply ends).")] = "auto",
    batch_wait_ms: Annotated[float, typer.Option(
        help="How long the engine waits for more requests to share a batch (from the last arrival; at most 5x "
             "this).")] = 20.0,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    quantization: QuantOpt = "none",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the model folder / hub.")] = False,
    threads: Annotated[int | None, typer.Option(
        help="CPU threads for torch (default: torch's choice). On a CPU shared with other jobs, 1 avoids threads "
             "waiting on each other.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug.")] = "info",
    max_request_bytes: Annotated[int, typer.Option(
        help="Largest request body accepted by the API; a larger one gets 413 before it is read.")] = 4 * 1024 * 1024,
    backend: Annotated[str, typer.Option(
        help="tunesmith (this process) or vllm (vLLM's OpenAI server for the same model names and prompts; "
             "needs vLLM installed, usually on a CUDA machine).")] = "tunesmith",
    print_vllm_command: Annotated[bool, typer.Option(
        help="Print the vLLM launch command for these options and exit (vLLM need not be installed here); "
             "writes chat_template.jinja next to the first adapter.")] = False,
    vllm_chat_template: Annotated[str | None, typer.Option(
        help="Where to write the chat template file vLLM reads (default: chat_template.jinja next to the first "
             "adapter; in the current folder without adapters).")] = None,
    vllm_args: Annotated[str, typer.Option(
        help="More vLLM arguments, appended as given (e.g. '--tensor-parallel-size 2 --max-model-len 4096').")] = "",
) -> None:
    """Serve /v1/chat/completions (OpenAI-compatible, streaming), /v1/models, /health and a web chat at /ui.

    Every adapter is a model name in the API ("base" is the model without adapters). Concurrent requests
    are batched continuously (a request joins the running batch at the next step), so many clients at once
    get much more total throughput than one.
    """
    _check_options(max_batch_size, batching, batch_wait_ms, label_project, ui, backend, threads, max_request_bytes)
    if backend == "vllm" or print_vllm_command:
        _vllm(model, adapter, template, host, port, api_key, dtype, quantization, trust_remote_code, max_new_tokens,
              vllm_chat_template, vllm_args, run=not print_vllm_command)
        return
    import uvicorn

    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    from tunesmith.infer.engine import Engine
    from tunesmith.infer.options import GenerationOptions
    from tunesmith.serve.api import create_app

    adapters = parse_adapter_specs(adapter)
    defaults = GenerationOptions(max_new_tokens=max_new_tokens).validate()
    engine = Engine.load(model, adapters, dtype=dtype, device=device, quantization=quantization, template=template,
                         trust_remote_code=trust_remote_code, max_batch_size=max_batch_size,
                         batch_wait_s=batch_wait_ms / 1000, batching=batching)
    app = create_app(engine, api_key=api_key or None, ui=ui, label_project=label_project, default_options=defaults,
                     default_max_history_turns=None if max_history_turns < 0 else max_history_turns,
                     max_request_bytes=max_request_bytes)
    shown = "0.0.0.0" if host in ("0.0.0.0", "::") else host
    typer.echo(f"serving {', '.join(engine.adapter_names)} on http://{shown}:{port}/v1"
               + (f"  (web chat: http://{shown}:{port}/ui)" if ui else ""))
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    finally:
        engine.close(timeout=GRACEFUL_SHUTDOWN_S, cancel=True)


def _check_options(max_batch_size: int, batching: str, batch_wait_ms: float, label_project: str | None, ui: bool,
                   backend: str, threads: int | None, max_request_bytes: int) -> None:
    """Refuse option values serve cannot use, naming the option (before anything is loaded)."""
    from tunesmith.errors import ConfigError
    from tunesmith.infer.options import BATCHING_MODES

    if not 1 <= max_batch_size <= 1024:
        raise ConfigError(f"--max-batch-size: expected 1..1024 (got {max_batch_size})")
    if batching not in BATCHING_MODES:
        raise ConfigError(f"--batching: expected one of {', '.join(BATCHING_MODES)} (got {batching!r})")
    if not 0 <= batch_wait_ms <= 1000:
        raise ConfigError(f"--batch-wait-ms: expected 0..1000 (got {batch_wait_ms})")
    if label_project is not None:
        from pathlib import Path

        if Path(label_project).exists() and not Path(label_project).is_dir():
            raise ConfigError(f"--label-project {label_project}: not a folder (expected a labeling project folder; "
                              "it is created when missing)")
        if not ui:
            raise ConfigError("--label-project needs the web UI (drop --no-ui)")
    if backend not in ("tunesmith", "vllm"):
        raise ConfigError(f"--backend: expected tunesmith or vllm (got {backend!r})")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: expected an integer >= 1 (got {threads})")
    if max_request_bytes < 1:
        raise ConfigError(f"--max-request-bytes: expected an integer >= 1 (got {max_request_bytes})")


def _vllm(model: str, adapter: list[str] | None, template: str | None, host: str, port: int, api_key: str | None,
          dtype: str, quantization: str, trust_remote_code: bool, max_new_tokens: int, chat_template_file: str | None,
          vllm_args: str, run: bool) -> None:
    """Print vLLM's launch command for the serve options, or replace this process with it."""
    import os
    import shlex
    import shutil

    from tunesmith.errors import ConfigError
    from tunesmith.serve.vllm import VllmLaunch, build_vllm_command, shown_command

    try:
        extra = shlex.split(vllm_args)
    except ValueError as e:
        raise ConfigError(f"--vllm-args: {e}") from None
    launch = VllmLaunch(model=model, adapters=parse_adapter_specs(adapter), template=template, host=host, port=port,
                        dtype=dtype, quantization=quantization, trust_remote_code=trust_remote_code,
                        max_new_tokens=max_new_tokens, chat_template_file=chat_template_file, extra_args=extra)
    cmd = build_vllm_command(launch)
    if not run:
        typer.echo(shown_command(cmd, api_key))
        return
    exe = shutil.which("vllm")
    if exe is None:
        raise ConfigError("--backend vllm: vLLM is not installed here (pip install vllm, on a CUDA machine); "
                          "--print-vllm-command prints the command to run there")
    if api_key:
        os.environ["VLLM_API_KEY"] = api_key
    typer.echo(shown_command(cmd, api_key), err=True)
    os.execv(exe, [exe, *cmd[1:]])
