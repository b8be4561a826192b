"""`tunesmith train` and `tunesmith export`.

    tunesmith train configs/rolebench_libai.yaml
    tunesmith train configs/ie_cls.yaml max_steps=100 lr=1e-4 lora.rank=16 data.packing=false
    tunesmith train configs/ie_cls.yaml --resume
    tunesmith train model=default data.train=my.jsonl max_steps=50 output_dir=runs/mine     # no recipe file
    torchrun --nproc_per_node 2 -m tunesmith.cli train configs/ie_cls.yaml
    tunesmith export runs/ie_cls/adapter -o models/ie-cls-merged --merge

Only the standard library, typer and the config dataclasses are imported here; the training stack loads when a
command runs.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Annotated

import typer

from tunesmith.train.config import dump_config, keys_help_text, load_config


def train(
    config: Annotated[Path | None, typer.Argument(
        help="YAML recipe, e.g. configs/rolebench_libai.yaml (optional: key=value settings alone work "
             "too).", show_default=False)] = None,
    overrides: Annotated[list[str] | None, typer.Argument(
        help="key=value settings on top of the recipe: max_steps=50 lr=1e-4 lora.rank=16 "
             "data.train=my.jsonl", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the last checkpoint in output_dir (fails if there is none).")] = False,
    output_dir: Annotated[str | None, typer.Option(
        "--output-dir", "-o", help="Where the adapter, checkpoints, loss.png and summary.json go (same as "
                                   "output_dir=...).")] = None,
    show_config: Annotated[bool, typer.Option(
        "--show-config", help="Print the resolved config (recipe + overrides) and exit.")] = False,
) -> None:
    """Fine-tune a model with LoRA as a YAML recipe says; keys can be overridden as key=value.

    Keys (key, default, what it does; docs/training.md says more):
    """
    extra = list(overrides or [])
    # `tunesmith train model=X data.train=Y` has no recipe: its first word is a setting, not a file name.
    if config is not None and re.match(r"[A-Za-z_][\w.]*=", str(config)) and not config.exists():
        extra.insert(0, str(config))
        config = None
    if resume:
        extra.append("resume=true")
    if output_dir:
        extra.append(f"output_dir={output_dir}")
    cfg = load_config(config, extra)
    if show_config:
        typer.echo(dump_config(cfg), nl=False)
        return
    from tunesmith.threads import openmp_wait_policy

    openmp_wait_policy(cfg.threads)  # before torch loads: OpenMP reads it once (tunesmith.threads)
    from tunesmith.train.run import train_from_config

    train_from_config(cfg)


# The key listing comes from the config fields' help metadata, so that it can never miss a key.
train.__doc__ = inspect.cleandoc(train.__doc__) + "\n\n" + keys_help_text()


def export(
    adapter: Annotated[Path, typer.Argument(
        help="Adapter folder written by tunesmith train (OUT/adapter).", show_default=False)],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder to write the standalone model to.", show_default=False)],
    merge: Annotated[bool, typer.Option(
        "--merge/--no-merge", help="Merge LoRA into the base weights (a standalone model); --no-merge copies the "
                                   "adapter with a chat template baked into its tokenizer.")] = True,
    base: Annotated[str | None, typer.Option(
        help="Base model folder (or .gguf file), when the one recorded in adapter_config.json is elsewhere on "
             "this machine.")] = None,
    dtype: Annotated[str, typer.Option(
        help="Saved weight dtype: auto (the base's), fp32, bf16, fp16. The merge runs in fp32 for auto.")] = "auto",
    device: Annotated[str, typer.Option(help="Device for the merge: cpu or cuda.")] = "cpu",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow models with their own code (ChatGLM3).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it already exists.")] = False,
    gguf: Annotated[str | None, typer.Option(
        help="Write the merged model as OUT/model.gguf (f16, q8_0 or f32; llama and qwen2 models) with an Ollama "
             "Modelfile, instead of a transformers folder.")] = None,
    card: Annotated[bool, typer.Option(
        "--card", help="Write only the adapter's character (character.json) as a character card: OUT/<name>.png "
                       "and OUT/<name>.json, for SillyTavern to import.")] = False,
) -> None:
    """Write a standalone model folder: base + LoRA merged, tokenizer, chat template and template.json
    (--card: the adapter's character card instead)."""
    from tunesmith.errors import ConfigError

    if card:
        from tunesmith.data.card import export_card

        png, js = export_card(adapter, out, overwrite=overwrite)
        typer.echo(f"wrote the character card to {png} and {js}")
        return
    if dtype not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"--dtype {dtype!r} is not one of auto, fp32, bf16, fp16")
    from tunesmith.export import export_model

    path = export_model(adapter, out, merge=merge, base=base, dtype=dtype, device=device,
                        trust_remote_code=trust_remote_code, overwrite=overwrite, gguf=gguf)
    what = f"merged model as GGUF ({gguf}) with an Ollama Modelfile" if gguf else "merged model" if merge else "adapter"
    typer.echo(f"wrote {what} to {path}")
