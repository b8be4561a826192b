"""`tunesmith eval`: the base model and every adapter answer the same test set; one report compares them.

    tunesmith eval --adapter libai=runs/libai/adapter --data data/libai/test_general.jsonl \\
        --data2 data/libai/test_role_specific.jsonl --task rolebench -o reports/libai
    tunesmith eval --adapter iecls=runs/ie_cls/adapter \\
        --data datasets/chatglm-mixed-ie-cls/mixed_dev_dataset.jsonl --task iecls -o reports/ie_cls
    tunesmith eval --no-base --score-file rolegpt=datasets/rolebench-zh/general/rolegpt_baseline.jsonl \\
        --data datasets/rolebench-zh/general/test.jsonl --role 李白 --task rolebench -o reports/rolegpt

Writes REPORT_DIR/report.md, report.html, metrics.json, metrics.png and predictions.jsonl.  See
docs/evaluation.md.  Only the standard library and typer are imported at top level.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from tunesmith.adapter_spec import parse_adapter_specs, parse_name_path
from tunesmith.infer.commands import QuantOpt


def _command_line(ctx: typer.Context) -> str:
    """The command as typed (from sys.argv when run as `tunesmith`, else rebuilt from the parsed options)."""
    if Path(sys.argv[0]).name == "tunesmith" and len(sys.argv) > 1 and sys.argv[1] == "eval":
        return " ".join(shlex.quote(a) for a in ["tunesmith", *sys.argv[1:]])
    parts = ["tunesmith", "eval"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        opts = getattr(param, "opts", None)
        if value is None or value == param.default or value == [] or not opts or not opts[0].startswith("-"):
            continue
        if isinstance(value, bool):
            flag = opts[0] if value else (getattr(param, "secondary_opts", None) or opts)[0]
            parts.append(flag)
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            parts += [opts[0], shlex.quote(str(v))]
    return " ".join(parts)


# The options of the questions asked in character and of the role classifier (docs/evaluation.md).
ProbeOption = Annotated[bool | None, typer.Option(
    "--probe/--no-probe", help="Ask the general-ability probe in character (default: on for rolebench and generic).")]
ProbeFileOption = Annotated[Path | None, typer.Option(
    "--probe-file", help="Own probe questions, JSONL {question, accept: [...]} (default: the bundled probe_zh.jsonl).")]
InCharacterOption = Annotated[bool | None, typer.Option(
    "--in-character/--no-in-character", help="Ask identity questions in character (你是谁？, Are you an AI? ...) and "
                                             "report the in-character rate (default: with the probe, when the test "
                                             "data names a role).")]
IdentityFileOption = Annotated[Path | None, typer.Option(
    "--identity-file", help="Own identity questions, JSONL {question, lang?} (default: the bundled "
                            "identity_questions.jsonl).")]
AttributionOption = Annotated[bool | None, typer.Option(
    "--attribution/--no-attribution", help="Role attribution: the share of answers a character n-gram classifier "
                                           "trained on RoleBench-zh attributes to the test's role (default: on for "
                                           "rolebench).")]
LongConversationsOption = Annotated[bool | None, typer.Option(
    "--long-conversations/--no-long-conversations", help="Scripted conversations of 12+ turns with the model's own "
                                                         "answers as the history; identity probes early, in the middle "
                                                         "and late give the persona drift (late - early) (default: "
                                                         "with the identity questions).")]
LongConversationsFileOption = Annotated[Path | None, typer.Option(
    "--long-conversations-file", help="Own scripts, JSONL {turns: [{user, probe: \"identity\" | null}, ...]} "
                                      "(default: the bundled long_conversations.jsonl).")]
RoleBreakingOption = Annotated[bool | None, typer.Option(
    "--role-breaking/--no-role-breaking", help="Role-breaking probes by category: requests to drop the role, "
                                               "out-of-character tasks, anachronisms, unknowable questions (default: "
                                               "with the identity questions).")]
RoleBreakingFileOption = Annotated[Path | None, typer.Option(
    "--role-breaking-file", help="Own probes, JSONL {question, category, term?} ({name} is the role) (default: the "
                                 "bundled role_breaking.jsonl).")]
ThreadsOption = Annotated[int | None, typer.Option(
    "--threads", help="CPU threads for torch (default: the cores no normal-priority work keeps busy now; niced work "
                      "counts as free). The report's first lines say how many and why.")]
SamplerOption = Annotated[list[str] | None, typer.Option(
    "--sampler", help="Answer under this sampler too, as more columns (repeatable): greedy (the settings of the flags "
                      "above), recommended (each adapter's generation.json), or NAME=key=value,... (e.g. "
                      "dry=dry_multiplier=0.8,dry_allowed_length=4). Default: greedy.")]
ROLE_PLAY_FLAGS = ("long_conversations", "long_conversations_file", "role_breaking", "role_breaking_file")
AttributionDataOption = Annotated[Path | None, typer.Option(
    "--attribution-data", help="The rolebench-zh folder the classifier trains on (default: the repository's "
                               "datasets/rolebench-zh).")]


# The samplers against loops (infer/samplers.py): unset, each stays off; an adapter's generation.json is not
# read here, so that a score says which settings produced it.
MinPOpt = Annotated[float | None, typer.Option("--min-p", help="Min-p sampling (with --do-sample; 0: off).")]
PresenceOpt = Annotated[float | None, typer.Option(
    "--presence-penalty", help="OpenAI's presence penalty over the answer's tokens (-2..2; 0: off).")]
FrequencyOpt = Annotated[float | None, typer.Option(
    "--frequency-penalty", help="OpenAI's frequency penalty over the answer's tokens (-2..2; 0: off).")]
NgramOpt = Annotated[int | None, typer.Option(
    "--no-repeat-ngram-size", help="No n-gram of this many tokens occurs twice (0: off).")]
DryMultOpt = Annotated[float | None, typer.Option(
    "--dry-multiplier", help="DRY penalty on extending a repeat (0: off; docs/serving.md).")]
DryBaseOpt = Annotated[float | None, typer.Option("--dry-base", help="DRY: growth of the penalty (> 1; 1.75).")]
DryAllowedOpt = Annotated[int | None, typer.Option(
    "--dry-allowed-length", help="DRY: repeats up to this many tokens are free (2).")]
DryBreakersOpt = Annotated[str | None, typer.Option(
    "--dry-sequence-breakers", help="DRY: strings that end a repeat, '|'-separated or a JSON list.")]


def eval_command(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option(
        "--data", "-d", help="Test file (any format `tunesmith data` reads). RoleBench: the role's general test (CUS), "
                             "unless records say meta.subset. Repeatable.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Report folder: report.md, report.html, metrics.json, metrics.png, predictions.jsonl.")],
    data2: Annotated[list[Path] | None, typer.Option(
        "--data2", help="Second test file. RoleBench: the role_specific test (SPE). Other tasks: scored as its own "
                        "set. Repeatable.")] = None,
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Base model: a folder, a hub id, a .gguf file (llama, qwen2), or 'default' (the "
                              "embedded SmolLM2-135M-Instruct).")] = "default",
    adapter: Annotated[list[str] | None, typer.Option(
        "--adapter", "-a", help="NAME=PATH of a LoRA adapter folder (with its template.json). Repeatable.")] = None,
    task: Annotated[str, typer.Option(
        "--task", "-t", help="auto, rolebench (ROUGE-L CUS/SPE/RAW + probe), ie (JSON triples), cls (labels), iecls "
                             "(ie or cls per record by target shape), generic (ROUGE-L).")] = "auto",
    from_: Annotated[str | None, typer.Option(
        "--from", "-f", help="Format of the test files (default: detected).")] = None,
    role: Annotated[list[str] | None, typer.Option(
        "--role", "-r", help="Keep only test records of this role (meta.role). Repeatable.")] = None,
    raw_refs: Annotated[Path | None, typer.Option(
        "--raw-refs", help="RoleBench RAW: plain-answer references, JSONL {role?, question, answer | "
                           "references}.")] = None,
    score_file: Annotated[list[str] | None, typer.Option(
        "--score-file", help="[NAME=]PATH of existing answers to score as one more column (e.g. "
                             "rolegpt=.../rolegpt_baseline.jsonl), matched by (role, question). Repeat a NAME to join "
                             "files.")] = None,
    base: Annotated[bool, typer.Option(
        "--base/--no-base", help="Also evaluate the base model without adapters.")] = True,
    base_template: Annotated[str | None, typer.Option(
        "--base-template", help="Template for the base (name: auto, tokenizer, chatml, plain, instruction; or a folder "
                                "with template.json). Default: the first adapter's saved template.")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", "-n", help="Evaluate N items of each test set, evenly spread over it.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Prompts per batched generate call.")] = 16,
    batching: Annotated[str, typer.Option(
        "--batching", help="auto (continuous batching when decoding is greedy, else padded), continuous (a finished "
                           "answer's slot goes to the next prompt at once), or padded (each batch lasts as long as its "
                           "longest answer).")] = "auto",
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", help="Answer length limit in tokens (default: rolebench 160, ie/iecls 320, cls 32, generic "
                                 "256; for ie/cls/iecls raised to fit the longest reference answer + 10 %).")] = None,
    do_sample: Annotated[bool, typer.Option(
        "--do-sample/--greedy", help="Sample instead of greedy decoding (greedy is the default: reproducible "
                                     "scores).")] = False,
    temperature: Annotated[float | None, typer.Option(
        "--temperature", help="Sampling temperature (with --do-sample).")] = None,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling mass (with --do-sample).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Top-k sampling (with --do-sample; 0 disables).")] = None,
    num_beams: Annotated[int | None, typer.Option("--num-beams", help="Beam search width (1: none).")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(
        "--repetition-penalty", help="Penalty > 1 discourages repeating tokens.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for sampling.")] = None,
    min_p: MinPOpt = None,
    presence_penalty: PresenceOpt = None,
    frequency_penalty: FrequencyOpt = None,
    no_repeat_ngram_size: NgramOpt = None,
    dry_multiplier: DryMultOpt = None,
    dry_base: DryBaseOpt = None,
    dry_allowed_length: DryAllowedOpt = None,
    dry_sequence_breakers: DryBreakersOpt = None,
    probe: ProbeOption = None, probe_file: ProbeFileOption = None,
    in_character: InCharacterOption = None, identity_file: IdentityFileOption = None,
    attribution: AttributionOption = None, attribution_data: AttributionDataOption = None,
    long_conversations: LongConversationsOption = None, long_conversations_file: LongConversationsFileOption = None,
    role_breaking: RoleBreakingOption = None, role_breaking_file: RoleBreakingFileOption = None,
    show: Annotated[int, typer.Option("--show", help="Rows per set in the side-by-side answer table.")] = 20,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, fp32, bf16 or fp16.")] = "auto",
    quantization: QuantOpt = "none",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    threads: ThreadsOption = None, sampler: SamplerOption = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Discard predictions.jsonl in the report folder instead of resuming from it.")] = False,
) -> None:
    """Compare the base model and its LoRA adapters on a test set, and write a side-by-side report.

    Every model answers the same prompts: the same system/persona text, and the base uses the first adapter's
    saved chat template unless --base-template says otherwise. Generation is batched and greedy by default.

    Answers are appended to predictions.jsonl after every batch: after an interruption, run the same command
    again and only the missing answers are generated.
    """
    from tunesmith.eval.runner import EvalConfig, run_eval

    scores = [parse_name_path(s, "--score-file", lambda p: Path(p).stem) for s in score_file or []]
    cfg = EvalConfig(out=out, data=list(data), data2=list(data2 or []), model=model,
                     adapters=parse_adapter_specs(adapter), task=task,
                     fmt=from_, roles=list(role or []), raw_refs=raw_refs, score_files=scores, run_base=base,
                     base_template=base_template, limit=limit, batch_size=batch_size, batching=batching,
                     generation=_generation(ctx), probe=probe, probe_file=probe_file, in_character=in_character,
                     identity_file=identity_file, attribution=attribution, attribution_data=attribution_data,
                     **{k: ctx.params[k] for k in ROLE_PLAY_FLAGS},
                     show=show, dtype=dtype, quantization=quantization, device=device, threads=threads,
                     samplers=list(sampler or ["greedy"]),
                     overwrite=overwrite, command=_command_line(ctx))
    _print_result(out, run_eval(cfg))


# the eval flags that are GenerationOptions fields (unset ones keep the task's defaults)
GENERATION_FLAGS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty",
                    "seed", "min_p", "presence_penalty", "frequency_penalty", "no_repeat_ngram_size", "dry_multiplier",
                    "dry_base", "dry_allowed_length", "dry_sequence_breakers")


def _generation(ctx: typer.Context) -> dict:
    return {k: v for k, v in ctx.params.items() if k in GENERATION_FLAGS and v is not None}


def _print_result(out: Path, result: dict) -> None:
    typer.echo(f"wrote {out / 'report.md'} ({result['seconds']:.1f} s)")
    from tunesmith.eval.report import metric_rows

    header, rows = metric_rows(result)
    typer.echo("\n".join(" | ".join(r) for r in [header, *rows]))
