"""The `tunesmith` command. Each stage's typed function is its command; help text comes from docstrings.

    tunesmith --help
    tunesmith data convert --from rolebench datasets/rolebench-zh/general/train.jsonl out.jsonl
    tunesmith train configs/rolebench_libai.yaml max_steps=50
    tunesmith eval --adapter libai=runs/libai/adapter --data ... --task rolebench -o report/

Heavy libraries (torch, transformers, gradio) are imported inside the command functions so that
`tunesmith --help` answers in well under a second.
"""

from __future__ import annotations

import sys

import click
import typer

from tunesmith.errors import TunesmithError

try:  # typer >= 0.2x vendors its own copy of click: its exceptions are not click's
    from typer._click import exceptions as _typer_click_exceptions
except ImportError:  # pragma: no cover - older typer uses click itself
    _typer_click_exceptions = click.exceptions
_CLICK_ERRORS = (click.ClickException, _typer_click_exceptions.ClickException)
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)

app = typer.Typer(
    name="tunesmith",
    help="Tailor an open chat LLM with LoRA to play a character or follow a strict format, and prove it worked.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    # Each module below imports only the standard library and typer at top level.
    from tunesmith.data.commands import app as data_app
    from tunesmith.demo import demo
    from tunesmith.eval.commands import eval_command
    from tunesmith.infer.commands import chat
    from tunesmith.label.commands import app as label_app
    from tunesmith.serve.commands import serve
    from tunesmith.tiny import tiny_model_command
    from tunesmith.train.commands import export, train

    app.add_typer(data_app, name="data",
                  help="Import, validate, inspect and split datasets; mine dialogue from novels.")
    app.command("train")(train)
    app.command("export")(export)
    app.command("eval")(eval_command)
    app.command("chat")(chat)
    app.command("serve")(serve)
    app.add_typer(label_app, name="label")
    app.command("tiny-model")(tiny_model_command)
    app.command("demo")(demo)
    for typer_app in (app, data_app, label_app):
        for info in typer_app.registered_commands:
            if info.help is None and info.callback is not None and info.callback.__doc__:
                info.help = reflow(info.callback.__doc__)


def reflow(doc: str) -> str:
    """A docstring as --help shows it: the lines of each paragraph joined (typer would keep the source's line
    breaks, so a docstring wrapped at 120 columns showed ragged), indented lines such as examples kept."""
    import inspect

    out: list[str] = []
    for line in inspect.cleandoc(doc).split("\n"):
        joinable = out and out[-1] and line and not line[0].isspace() and not out[-1][0].isspace()
        if joinable:
            out[-1] += " " + line
        else:
            out.append(line)
    return "\n".join(out)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes print one clear line and exit 2, never a traceback."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except TunesmithError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except _EXITS as e:
        return e.exit_code
    except _ABORTS:
        print("aborted", file=sys.stderr)
        return 130
    except _CLICK_ERRORS as e:
        e.show()
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    # In non-standalone mode typer returns an exit code instead of raising (e.g. 130 after Ctrl-C).
    return rv if type(rv) is int else 0


if __name__ == "__main__":
    sys.exit(main())
