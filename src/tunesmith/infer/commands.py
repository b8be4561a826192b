"""`tunesmith chat`: talk to a base model and its LoRA adapters in the terminal.

    tunesmith chat                                             # the embedded default model
    tunesmith chat --model /models/Qwen2.5-1.5B-Instruct --adapter libai=runs/libai/adapter \\
        --system "你是李白" --do-sample --temperature 0.8 --max-history-turns 10

Only the standard library and typer are imported here; torch and transformers load when the command runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from tunesmith.adapter_spec import parse_adapter_specs
from tunesmith.errors import ConfigError

if TYPE_CHECKING:
    from tunesmith.infer.options import GenerationOptions

ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="Base model: a folder, a hub id, a .gguf file (llama, qwen2; converted once into the "
                          "cache), or 'default' (the embedded SmolLM2-135M-Instruct).")]
AdapterOpt = Annotated[list[str] | None, typer.Option(
    "--adapter", "-a", help="A LoRA adapter as NAME=PATH; repeat for several (they share one base in memory).")]
TemplateOpt = Annotated[str | None, typer.Option(
    help="Chat template for 'base' and for adapters without template.json: auto, tokenizer, chatml, plain, "
         "instruction, or a folder with template.json.")]
DtypeOpt = Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16 (auto: bf16/fp16 on GPU, fp32 on CPU).")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
QuantOpt = Annotated[str, typer.Option(
    help="none; 8bit or 4bit (bitsandbytes, needs CUDA); int8 (int8 weights: torch's dynamic int8 on a CPU, "
         "torchao on a GPU, installed apart: pip install 'tunesmith[int8-gpu]'; see docs/serving.md).")]
MaxNewOpt = Annotated[int, typer.Option(help="Most tokens per reply.")]
SampleOpt = Annotated[bool, typer.Option(
    "--do-sample/--greedy", help="Sample (with temperature/top-p/top-k) or decode greedily / with beams.")]
TempOpt = Annotated[float, typer.Option(help="Sampling temperature (with --do-sample).")]
TopPOpt = Annotated[float, typer.Option(
    help="Nucleus sampling: keep the smallest token set with this much probability.")]
TopKOpt = Annotated[int, typer.Option(help="Sample among the k most likely tokens (0: no limit).")]
RepOpt = Annotated[float, typer.Option(help="Repetition penalty (1.0: none; 1.1 discourages repeats).")]
BeamsOpt = Annotated[int, typer.Option(help="Beam search width (1: no beam search).")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")]
StopOpt = Annotated[list[str] | None, typer.Option("--stop", help="End the reply before this string; repeatable.")]
MinPOpt = Annotated[float, typer.Option(
    help="Sampling keeps tokens with at least this fraction of the top token's probability (0: off).")]
PresenceOpt = Annotated[float, typer.Option(
    help="Subtracted from every token the reply already holds (OpenAI's presence penalty, -2..2; 0: off).")]
FrequencyOpt = Annotated[float, typer.Option(
    help="Subtracted per time a token occurs in the reply (OpenAI's frequency penalty, -2..2; 0: off).")]
NgramOpt = Annotated[int, typer.Option(help="No n-gram of this many tokens occurs twice (0: off).")]
DryMultOpt = Annotated[float, typer.Option(
    help="DRY: penalty for a token that extends a repeat, multiplier * base^(length - allowed) (0: off; 0.8 "
         "is a common start).")]
DryBaseOpt = Annotated[float, typer.Option(help="DRY: how fast the penalty grows with the repeat's length (> 1).")]
DryAllowedOpt = Annotated[int, typer.Option(help="DRY: repeats up to this many tokens are free.")]
DryBreakersOpt = Annotated[str, typer.Option(
    help="DRY: strings that end a repeat, '|'-separated or a JSON list (\\n for a newline).")]
HistoryOpt = Annotated[int, typer.Option(
    help="Earlier turns (user + assistant) kept in the prompt; older ones are dropped first. -1: all that fit.")]


def chat(
    ctx: typer.Context,
    model: ModelOpt = "default",
    adapter: AdapterOpt = None,
    use: Annotated[str | None, typer.Option(
        help="Adapter to start with (default: the first --adapter, else base).")] = None,
    system: Annotated[str | None, typer.Option(
        help="System prompt (the adapter's saved default is used when omitted).")] = None,
    template: TemplateOpt = None,
    max_new_tokens: MaxNewOpt = 256,
    do_sample: SampleOpt = False,
    temperature: TempOpt = 0.7,
    top_p: TopPOpt = 0.9,
    top_k: TopKOpt = 50,
    repetition_penalty: RepOpt = 1.0,
    num_beams: BeamsOpt = 1,
    seed: SeedOpt = None,
    stop: StopOpt = None,
    min_p: MinPOpt = 0.0,
    presence_penalty: PresenceOpt = 0.0,
    frequency_penalty: FrequencyOpt = 0.0,
    no_repeat_ngram_size: NgramOpt = 0,
    dry_multiplier: DryMultOpt = 0.0,
    dry_base: DryBaseOpt = 1.75,
    dry_allowed_length: DryAllowedOpt = 2,
    dry_sequence_breakers: DryBreakersOpt = '["\\n", ":", "\\"", "*"]',
    max_history_turns: HistoryOpt = 10,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    quantization: QuantOpt = "none",
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the model folder / hub.")] = False,
) -> None:
    """Chat in the terminal with a base model or any of its LoRA adapters; replies stream as they are generated.

    Inside the chat: /clear, /retry, /system TEXT, /adapter NAME, /greeting N, /set key=value (e.g. /set
    do_sample=true temperature=0.9), /history, /exit. An adapter trained as a character opens with its greeting.
    An adapter saved with a recommended sampler (generation.json) answers with it; the options given here win.
    """
    from tunesmith.infer.engine import Engine
    from tunesmith.infer.options import GenerationOptions
    from tunesmith.infer.terminal import ChatState, run_chat

    options = GenerationOptions(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                                top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty,
                                num_beams=num_beams, seed=seed, stop=list(stop or []), min_p=min_p,
                                presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                no_repeat_ngram_size=no_repeat_ngram_size, dry_multiplier=dry_multiplier,
                                dry_base=dry_base, dry_allowed_length=dry_allowed_length,
                                ).updated({"dry_sequence_breakers": dry_sequence_breakers})
    adapters = parse_adapter_specs(adapter)
    if use is not None and use != "base" and use not in adapters:
        raise ConfigError(f"--use {use!r}: no such adapter (given: base, {', '.join(adapters) or 'none'})")
    engine = Engine.load(model, adapters, dtype=dtype, device=device, quantization=quantization,
                         template=template, trust_remote_code=trust_remote_code)
    start = use or next(iter(adapters), "base")
    state = ChatState(adapter=start, options=options, system=system,
                      max_history_turns=None if max_history_turns < 0 else max_history_turns,
                      explicit=given_options(ctx, options))
    try:
        run_chat(engine, state, sys.stdin, sys.stdout, interactive=sys.stdin.isatty())
    finally:
        engine.close()


def given_options(ctx: typer.Context, options: GenerationOptions) -> set[str]:
    """The generation options given on the command line (not left at their defaults): they win over an
    adapter's generation.json, the others give way to it."""
    names = set(options.__dataclass_fields__)

    def given(name: str) -> bool:
        # compared by name: typer may run its own copy of click, whose ParameterSource is another enum
        source = ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    return {name for name in ctx.params if name in names and given(name)}
