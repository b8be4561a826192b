"""`tunesmith data ...` commands: convert, check, stats, split, register, rolebench-prepare, formats, make-pairs.

    tunesmith data convert --from rolebench datasets/rolebench-zh/general/train.jsonl out/general.jsonl
    tunesmith data stats datasets/chatglm-mixed-ie-cls/mixed_train_dataset.jsonl
    tunesmith data rolebench-prepare datasets/rolebench-zh --role 李白 -o data/libai

Only the standard library, typer and the data modules (themselves standard library only) are imported here
at top level; the work is in the sibling modules. The dialogue miner and make-pairs (model loading)
are imported by their commands alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tunesmith.data.formats import FORMATS, get_format, load, save, writable_formats
from tunesmith.data.pair_strategies import (
    DEFAULT_MIN_MARGIN,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
)
from tunesmith.data.records import strict_loads
from tunesmith.data.registry import DATA_CONFIG, register_dataset
from tunesmith.data.rolebench import prepare
from tunesmith.data.split import split_conversations
from tunesmith.data.stats import dataset_stats, equal_answers_warning, load_tokenizer, render_stats
from tunesmith.errors import ConfigError, DataError
from tunesmith.preference import JUDGED, PAIR, PLAIN, alternative_pairs, kind_of_dataset

app = typer.Typer(no_args_is_help=True, help="Import, validate, inspect and split datasets.")

FromOpt = Annotated[str | None, typer.Option(
    "--from", "-f", help=f"Input format ({', '.join(FORMATS)}); default: detected from the first record "
                         "(a .txt file: novel; a .png or one-card .json: card).")]
OnErrorOpt = Annotated[str, typer.Option(
    "--on-error", help="fail: stop at the first bad record; skip: drop bad records and report them on stderr.")]
EncodingOpt = Annotated[str, typer.Option(
    "--encoding", help="Input encoding; auto = UTF-8 (BOM ok), falling back to GB18030 when the bytes are clearly "
                       "Chinese GB text.")]
RoleOpt = Annotated[list[str] | None, typer.Option(
    "--role", "-r", help="Keep only conversations of this role (meta.role: RoleBench role, novel speaker). "
                         "Repeatable.")]
OptionOpt = Annotated[list[str] | None, typer.Option(
    "--option", "-O", help="Importer option KEY=VALUE (VALUE parsed as JSON when it can be), e.g. -O answers=first. "
                           "Repeatable.")]


def _parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r} must look like KEY=VALUE")
        try:
            out[key] = strict_loads(value)
        except ValueError:  # not JSON (or JSON no option needs): the text itself
            out[key] = value
    return out


def _load_opts(profiles: Path | None, persona_template: str | None, no_persona: bool,
               options: list[str] | None) -> dict[str, Any]:
    opts = _parse_kv(options, "--option")
    if profiles is not None:
        opts["profiles"] = str(profiles)
    if persona_template is not None:
        opts["persona_template"] = persona_template
    if no_persona:
        opts["persona"] = False
    return opts


@app.command("convert")
def convert(
    input: Annotated[str, typer.Argument(help="Input file, folder (its *.jsonl/*.json files) or quoted glob.")],
    output: Annotated[Path, typer.Argument(help="Output file (.jsonl; a .json name writes a JSON array).")],
    from_: FromOpt = None,
    to: Annotated[str, typer.Option(
        "--to", "-t", help=f"Output format: {', '.join(writable_formats())} (default: conversation, which keeps "
                           "meta: a pair's rejected answer, a judged answer's label; trl: pairs, kto: judged "
                           "answers).")] = "conversation",
    profiles: Annotated[Path | None, typer.Option(
        "--profiles", help="rolebench: desc.json with role descriptions (default: found next to the data).")] = None,
    persona_template: Annotated[str | None, typer.Option(
        "--persona-template", help="rolebench: system prompt template with {role} and {desc}.")] = None,
    no_persona: Annotated[bool, typer.Option("--no-persona", help="rolebench: no system prompt.")] = False,
    role: RoleOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Keep at most N conversations.")] = None,
    on_error: OnErrorOpt = "fail",
    encoding: EncodingOpt = "auto",
    option: OptionOpt = None,
) -> None:
    """Convert a dataset into Conversations JSONL (or another format), validating every record.

    Bad records are reported as FILE:LINE: what is wrong (expected ...). The output is written to a temp file
    and renamed, so it is never left half-written.
    """
    opts = _load_opts(profiles, persona_template, no_persona, option)
    convs = load(input, from_, on_error=on_error, encoding=encoding, roles=role, limit=limit, **opts)
    if not convs:
        raise DataError("no conversations to write (every record was skipped or filtered out)", input)
    kind = kind_of_dataset(convs, input)
    if kind == PLAIN and get_format(to).name == "trl" and any(c.meta.get("alternatives") for c in convs):
        # answers a chat front end kept beside the chosen one (SillyTavern's swipes) become the pairs
        convs, kind = [p for c in convs for p in alternative_pairs(c)], PAIR
    keeps = {PLAIN: None, PAIR: ("conversation", "trl"), JUDGED: ("conversation", "kto")}[kind]
    if keeps and get_format(to).name not in keeps:
        what = "rejected answers" if kind == PAIR else "labels"
        print(f"warning: {to} has no place for the {what}: {output} gets the answers as plain rows "
              f"(to keep them: --to {' or --to '.join(keeps)})", file=sys.stderr)
    save(convs, output, to)
    print(f"wrote {len(convs):,} conversations to {output} ({to})", file=sys.stderr)


@app.command("check")
def check(
    input: Annotated[str, typer.Argument(help="Input file, folder or quoted glob.")],
    from_: FromOpt = None,
    max_errors: Annotated[int, typer.Option("--max-errors", help="Show at most this many problems.")] = 20,
    encoding: EncodingOpt = "auto",
    option: OptionOpt = None,
) -> None:
    """Validate a dataset: list every bad record (FILE:LINE: problem) and exit 2 if there is any."""
    errors: list[DataError] = []
    convs = load(input, from_, on_error="skip", encoding=encoding, errors=errors, quiet=True,
                 **_parse_kv(option, "--option"))
    for e in errors[:max_errors]:
        print(e, file=sys.stderr)
    if errors:
        more = f" (showing {max_errors})" if len(errors) > max_errors else ""
        raise DataError(f"{len(errors)} bad record(s){more}; {len(convs):,} conversations are fine", input)
    print(f"ok: {len(convs):,} conversations in {input}")


@app.command("stats")
def stats(
    input: Annotated[str, typer.Argument(help="Input file, folder or quoted glob.")],
    from_: FromOpt = None,
    tokenizer: Annotated[str | None, typer.Option(
        "--tokenizer", help="Model or tokenizer folder: also report lengths in tokens.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(
        "--trust-remote-code", help="Allow the tokenizer's own code (ChatGLM, Baichuan).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    role: RoleOpt = None,
    on_error: OnErrorOpt = "fail",
    option: OptionOpt = None,
) -> None:
    """Kind (plain, pairs, judged), counts, roles, turns and p50/p90/p99/max lengths of prompts and answers
    (characters, and tokens with --tokenizer); warns on pairs whose two answers are the same."""

    tok = load_tokenizer(tokenizer, trust_remote_code) if tokenizer else None
    convs = load(input, from_, on_error=on_error, roles=role, **_parse_kv(option, "--option"))
    s = dataset_stats(convs, tok)
    warning = equal_answers_warning(s)
    if warning:
        print(warning, file=sys.stderr)
    if as_json:
        print(json.dumps(s, ensure_ascii=False, indent=2))
    else:
        render_stats(s, title=str(input))


@app.command("split")
def split(
    input: Annotated[str, typer.Argument(help="Input file, folder or quoted glob.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for train.jsonl and dev.jsonl.")],
    dev_ratio: Annotated[float, typer.Option("--dev-ratio", help="Share of groups (questions) that go to dev.")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Same input + ratio + seed = same split.")] = 42,
    group_by: Annotated[str, typer.Option(
        "--group-by", help="question: all answers to one question stay on one side; none: split conversations "
                           "independently.")] = "question",
    from_: FromOpt = None,
    role: RoleOpt = None,
    allow_test: Annotated[bool, typer.Option(
        "--allow-test", help="Split data marked split=test anyway (RoleBench test data is for evaluation).")] = False,
    on_error: OnErrorOpt = "fail",
    option: OptionOpt = None,
) -> None:
    """Split a dataset into OUT/train.jsonl and OUT/dev.jsonl, deterministically and grouped by question."""
    convs = load(input, from_, on_error=on_error, roles=role, **_parse_kv(option, "--option"))
    n_test = sum(1 for c in convs if c.meta.get("split") == "test")
    if n_test:
        if not allow_test:
            raise DataError(f"{n_test:,} conversations are test data (meta.split=test): RoleBench test splits are for "
                            "evaluation and must not become training data. Use the train files (see: tunesmith data "
                            "rolebench-prepare), or pass --allow-test if you really mean it", input)
        print(f"WARNING: splitting {n_test:,} TEST conversations into train/dev (--allow-test). Scores on this "
              "test set will no longer measure generalisation.", file=sys.stderr)
    train, dev = split_conversations(convs, dev_ratio=dev_ratio, seed=seed, group_by=group_by)
    save(train, out_dir / "train.jsonl")
    save(dev, out_dir / "dev.jsonl")
    print(f"train: {len(train):,}  dev: {len(dev):,}  -> {out_dir}/train.jsonl, {out_dir}/dev.jsonl", file=sys.stderr)


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Dataset name to use in recipes (e.g. libai_train).")],
    file: Annotated[Path, typer.Argument(help="Data file or folder (absolute, relative to here, or to --data-dir).")],
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", "-d", help="Folder holding dataset_info.json (created if missing).")] = Path("data"),
    formatting: Annotated[str | None, typer.Option(
        "--formatting", help="alpaca, sharegpt, openai, or one of ours (rolebench, context-target, novel-dialogue, "
                             "conversation, trl, kto); default: detected.")] = None,
    ranking: Annotated[bool, typer.Option(
        "--ranking", help="LLaMA-Factory preference data (\"ranking\": true): alpaca/sharegpt records with chosen "
                          "and rejected answers (detected when --formatting is left out).")] = False,
    column: Annotated[list[str] | None, typer.Option(
        "--column", help="LLaMA-Factory column mapping KEY=FIELD, e.g. --column prompt=question. Repeatable.")] = None,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="sharegpt tag mapping KEY=VALUE, e.g. --tag role_tag=role. Repeatable.")] = None,
    option: OptionOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing entry of that name.")] = False,
) -> None:
    """Add a dataset to DATA_DIR/dataset_info.json (LLaMA-Factory's registry format) and check that it loads."""
    entry = register_dataset(name, file, data_dir, formatting=formatting, columns=_parse_kv(column, "--column") or None,
                             tags=_parse_kv(tag, "--tag") or None, options=_parse_kv(option, "--option") or None,
                             ranking=ranking, force=force)
    print(f"registered {name!r} in {data_dir / DATA_CONFIG}: {json.dumps(entry, ensure_ascii=False)}")


@app.command("rolebench-prepare")
def rolebench_prepare(
    rolebench_dir: Annotated[Path, typer.Argument(
        help="The rolebench-zh folder (with general/, role_specific/, profiles-zh/).")],
    role: Annotated[list[str], typer.Option("--role", "-r", help="Role to prepare, e.g. 李白. Repeatable.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    profiles: Annotated[Path | None, typer.Option(
        "--profiles", help="desc.json (default: ROLEBENCH_DIR/profiles-zh/desc.json).")] = None,
    persona_template: Annotated[str | None, typer.Option(
        "--persona-template", help="System prompt template with {role} and {desc}.")] = None,
    dev_ratio: Annotated[float, typer.Option(
        "--dev-ratio", help="Share of train questions held out as dev.jsonl (0 = none).")] = 0.05,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the dev split.")] = 42,
    keep_shared_questions: Annotated[bool, typer.Option(
        "--keep-shared-questions", help="With several roles, keep train answers to questions another of the roles "
        "is tested on (RoleBench's own split; CUS then includes questions the adapter saw in another voice). "
        "Default: drop them.")] = False,
) -> None:
    """Build train/dev/test files for one role from rolebench-zh (test splits kept separate; see docs/data.md).

    OUT/train.jsonl = general/train + role_specific/train (minus dev.jsonl); OUT/test_general.jsonl (CUS)
    and OUT/test_role_specific.jsonl (SPE) with all references in meta.references; OUT/baseline_*.jsonl
    (RoleGPT answers to the same test questions); persona.txt, manifest.json and dataset_info.json.
    """
    m = prepare(rolebench_dir, list(role), out_dir, profiles=profiles, persona_template=persona_template,
                dev_ratio=dev_ratio, seed=seed, keep_shared_questions=keep_shared_questions)
    for f in m["files"].values():
        print(f"{out_dir / f['file']}: {f['conversations']:,} conversations ({f['questions']:,} questions)")
    if m["dropped_train_pairs_also_in_test"]:
        print(f"dropped {m['dropped_train_pairs_also_in_test']} train conversations whose (role, question) is in a "
              "test file", file=sys.stderr)
    n = sum(m["shared_test_questions"].values())
    if n and not keep_shared_questions:
        print(f"dropped {n:,} train conversations whose question another of the roles is tested on "
              "(--keep-shared-questions keeps them)", file=sys.stderr)
    elif n:
        print(f"kept {n:,} train conversations whose question another of the roles is tested on: their CUS scores "
              "include questions the adapter saw answered in another voice", file=sys.stderr)


@app.command("formats")
def formats() -> None:
    """List the dataset formats, what one record looks like, and their importer options."""
    for f in FORMATS.values():
        rw = "read/write" if f.export else "read"
        print(f"{f.name}  ({rw})\n  {f.record}")
        for k, v in f.options.items():
            print(f"    -O {k}=...  {v}")


# Novel dialogue mining (`tunesmith data extract-dialogue`) lives in tunesmith.data.novel; its command goes below.


@app.command("extract-dialogue")
def extract_dialogue(
    novel: Annotated[Path, typer.Argument(
        help="The novel as plain text (UTF-8 or GB18030/GBK, BOM or not), e.g. "
             "datasets/four-novels-raw/三国演义.txt.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL file.")],
    context_chars: Annotated[int, typer.Option(
        "--context-chars", help="Most narrative characters kept before each speech, cut at a sentence start, never "
                                "before the paragraph start (the speaker clause is always kept).")] = 200,
    encoding: Annotated[str, typer.Option("--encoding", help="auto (UTF-8, else GB18030), utf-8 or gb18030.")] = "auto",
    format: Annotated[str, typer.Option(
        "--format", help="cosplay: {context, chat, speaker, chapter, line} per line; conversation: Conversation JSONL "
                         "(user = context, assistant = chat, meta speaker/chapter/line/book).")] = "cosplay",
    speaker: Annotated[str | None, typer.Option(
        "--speaker", help="Keep only this speaker's lines (one character to cosplay, e.g. 孔明 or 八戒).")] = None,
) -> None:
    """Mine quoted speeches from a Chinese novel as role-play records: context "…曹洪曰：" -> chat "“…”".

    Each record is the narrative up to the speaker and speech verb (context) and the quoted utterance (chat),
    with the speaker's name and the chapter. See docs/novel-dialogue.md.
    """
    from tunesmith.data.novel import extract_dialogue_file

    s = extract_dialogue_file(novel, output, context_chars=context_chars, encoding=encoding, fmt=format,
                              speaker=speaker)
    unnamed = s["written"] - s["written_with_speaker"]
    print(f"{output}: {s['written']:,} records ({s['written_with_speaker']:,} with a speaker, {unnamed:,} without) "
          f"from {s['chapters']} chapters of {novel} ({s['encoding']}); {s['unclosed']} unclosed quotes skipped",
          file=sys.stderr)


@app.command("make-pairs")
def make_pairs_command(
    data: Annotated[str, typer.Argument(help="Role-play or task data (file, folder or quoted glob, any format "
                                             "`tunesmith data` reads): each conversation ends with the reference "
                                             "answer.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Pairs file to write (conversation JSONL); "
                                                                 "a rerun continues it, a rerun with another "
                                                                 "--strategy adds its pairs to it.")],
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Base model (folder, hub id, .gguf file or 'default') whose answers become the "
                              "rejected ones; required by --strategy reference and rank, and by the negatives "
                              "kind base.")] = None,
    adapter: Annotated[str | None, typer.Option(
        "--adapter", "-a", help="LoRA adapter folder on the base (its template.json builds the prompts).")] = None,
    strategy: Annotated[str, typer.Option(
        "--strategy", help="reference: chosen = the reference, rejected = the model's greedy answer. rank: "
                           "--samples answers sampled per prompt and scored (ROUGE-L, loops, in character, role "
                           "classifier; IE/CLS: F1 or label, parsing); chosen = the best, rejected = the worst "
                           "sample. negatives: chosen = the reference, rejected = a "
                           "targeted bad version of it (--negatives).")] = "reference",
    samples: Annotated[int, typer.Option(
        "--samples", help="rank: answers sampled per prompt (>= 2).")] = DEFAULT_SAMPLES,
    temperature: Annotated[float, typer.Option(
        "--temperature", help="rank: sampling temperature (> 0).")] = DEFAULT_TEMPERATURE,
    top_p: Annotated[float, typer.Option("--top-p", help="rank: nucleus sampling (top-k is off).")] = DEFAULT_TOP_P,
    seed: Annotated[int, typer.Option(
        "--seed", help="rank: seeds each batch (with its prompts): the same data, settings, batch size and device "
                       "give the same samples, also after an interruption.")] = DEFAULT_SEED,
    min_margin: Annotated[float, typer.Option(
        "--min-margin", help="rank: skip a prompt whose best - worst score is under this (1.0 = the whole "
                             "ROUGE-L range).")] = DEFAULT_MIN_MARGIN,
    with_reference: Annotated[bool, typer.Option(
        "--with-reference", help="rank: the data's reference answers compete for chosen too (they usually win: "
                                 "pairs of reference over worst sample); default: both answers are samples "
                                 "(on-policy).")] = False,
    negatives: Annotated[str | None, typer.Option(
        "--negatives", help="negatives: comma-separated kinds of rejected answer: loop (the reference's tail "
                            "repeated), disclaimer (an AI assistant's reply), base (the base model's greedy "
                            "answer, adapter off), other_role (another RoleBench role's answer to the same "
                            "question), truncated (the reference's opening sentences only, at most half of it: "
                            "the loop negative's opposite in length). Default: every kind that applies (base "
                            "with --model, other_role with the RoleBench-zh folder); truncated only when "
                            "named.")] = None,
    rolebench: Annotated[Path | None, typer.Option(
        "--rolebench", help="The rolebench-zh folder: the role classifier of rank (trained on its train answers) "
                            "and the answers of other_role (general/train.jsonl). Default: the repository's "
                            "datasets/rolebench-zh.")] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", "-b", help="Prompts answered per batch (rank: rows, i.e. prompts x samples).")] = 16,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", help="Longest generated answer, in tokens.")] = 256,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N conversations of the data.")] = None,
    from_: FromOpt = None,
    role: RoleOpt = None,
    dtype: Annotated[str, typer.Option("--dtype", help="Model weights dtype: auto, fp32, bf16, fp16.")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")] = "auto",
    template: Annotated[str | None, typer.Option(
        "--template", help="Chat template of the base model without --adapter (auto, tokenizer, chatml, plain, "
                           "instruction).")] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads for torch (default: the cores no normal-priority work keeps busy now; niced "
                          "work counts as free).")] = None,
) -> None:
    """Preference pairs from data and a model (default --strategy reference: chosen = the reference answer,
    rejected = the model's greedy answer).

    The model answers the prompt of every conversation (everything before its final answer) in batches; an answer
    equal to the reference is skipped. Pairs are appended to OUT after every batch: run the same command again to
    continue an interrupted run. Each pair records meta.strategy (rank: meta.scores, negatives: meta.negative);
    `tunesmith data stats OUT` shows the mix. Then train with `tunesmith train RECIPE.yaml method=dpo
    data.train=OUT`.
    """
    from tunesmith.data.make_pairs import MakePairsConfig, make_pairs

    cfg = MakePairsConfig(data=data, out=output, model=model, adapter=adapter, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, limit=limit, fmt=from_, roles=role, dtype=dtype,
                          device=device, template=template, threads=threads, strategy=strategy, samples=samples,
                          temperature=temperature, top_p=top_p, seed=seed, min_margin=min_margin,
                          with_reference=with_reference,
                          negatives=negatives, rolebench=rolebench)
    print(make_pairs(cfg).summary())
