"""Run an evaluation: the base and every adapter answer the same prompts, then everything is scored.

    from tunesmith.eval.runner import EvalConfig, run_eval
    result = run_eval(EvalConfig(model="default", adapters={"libai": "runs/libai/adapter"},
                                 data=["data/libai/test_general.jsonl"], data2=["data/libai/test_role_specific.jsonl"],
                                 task="rolebench", out="reports/libai"))

Fairness: every model sees the same prompts.  The system/persona text comes from the test data and is
given to all models alike, and the base is prompted with the chat template saved next to the first
adapter (template.json), so the only difference between the columns of the report is the adapter.
`base_template` overrides the base's template (a name such as chatml, or a folder with template.json).

The phases, each one function (`run_eval` calls them in this order):
    check_config, load_inputs   test sets, generation settings, --raw-refs / --score-file tables, the probe, the
                                identity questions (in_character.py) and the role classifier (attribution.py)
    load_engine                 the base with every adapter side by side
    answer_models               per model: its template and signature, resumable answering (_generate_all)
    add_score_files             existing answer files as more columns
    build_result, write_report  scores, side-by-side answers, metric notes -> report.md/html, metrics.json

Resuming: answers are appended to OUT/predictions.jsonl after every batch; running the same command
again skips every (model, prompt) already answered with the same settings.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError
from tunesmith.eval.attribution import CLASSIFIER_DESCRIPTION, attribute_sets, default_data_dir, train_classifier
from tunesmith.eval.ie import CLS_RULES, IE_RULES
from tunesmith.eval.in_character import RULES_DESCRIPTION, identity_items, main_role
from tunesmith.eval.predictions import PredictionStore, signature
from tunesmith.eval.probe import CHECKER_DESCRIPTION, load_probe
from tunesmith.eval.report import write_report
from tunesmith.eval.role_breaking import ROLE_BREAKING
from tunesmith.eval.role_play import add_results, add_sets, answer_long_conversations
from tunesmith.eval.rouge import CHARS_DESCRIPTION, WORDS_DESCRIPTION
from tunesmith.eval.sampler_runs import GREEDY, Column, column_options, columns, parse_samplers, sampler_note
from tunesmith.eval.scoring import per_item_scores, score_model
from tunesmith.eval.testset import (
    CUS,
    IDENTITY,
    PROBE,
    RAW,
    SPE,
    EvalItem,
    build_sets,
    lookup,
    prompt_id,
    read_answer_file,
)
from tunesmith.infer.options import BATCHING_MODES

BASE = "base"
DEFAULT_MAX_NEW_TOKENS = {"rolebench": 160, "ie": 320, "cls": 32, "iecls": 320, "generic": 256}
PROBE_MAX_NEW_TOKENS = 64
# Under continuous batching one generate call takes this many batches of prompts: finished rows are refilled
# from them, and predictions.jsonl is appended after each call (what an interruption can lose).
CONTINUOUS_WINDOW = 4
# Item kinds answered with the probe's (short) generation options: questions asked in character, not test items.
SHORT_KINDS = ("probe", "identity", "role_breaking")


@dataclass
class EvalConfig:
    out: str | Path
    data: Sequence[str | Path]
    data2: Sequence[str | Path] = ()
    model: str = "default"
    adapters: dict[str, str] = field(default_factory=dict)
    task: str = "auto"
    fmt: str | None = None
    roles: Sequence[str] = ()
    raw_refs: str | Path | None = None
    score_files: Sequence[tuple[str, str]] = ()  # (name, path); a name may repeat to join files
    run_base: bool = True
    base_template: str | None = None
    limit: int | None = None
    batch_size: int = 16
    batching: str = "auto"  # padded | continuous | auto (continuous when the options are greedy); see Engine.generate
    generation: dict[str, Any] = field(default_factory=dict)  # GenerationOptions fields; max_new_tokens by task
    probe: bool | None = None  # None: on for rolebench and generic tasks
    probe_file: str | Path | None = None
    probe_max_new_tokens: int = PROBE_MAX_NEW_TOKENS
    in_character: bool | None = None  # identity questions; None: asked with the probe when the test data names a role
    identity_file: str | Path | None = None
    attribution: bool | None = None  # role classifier on the answers; None: on for rolebench (RoleBench-zh found)
    attribution_data: str | Path | None = None  # a rolebench-zh folder (default: the repository's datasets/)
    long_conversations: bool | None = None  # scripted chats, persona drift (role_play.py); None: as identity
    long_conversations_file: str | Path | None = None
    long_conversations_limit: int | None = None  # the first N scripts (None: all)
    role_breaking: bool | None = None  # role-breaking and anachronism probes; None: as identity
    role_breaking_file: str | Path | None = None
    role_breaking_limit: int | None = None  # the first N probes of each category (None: all)
    show: int = 20
    dtype: str = "auto"
    quantization: str = "none"  # none, or int8 (model.quantize_int8_weights), 8bit / 4bit (bitsandbytes, CUDA)
    device: str = "auto"
    threads: int | None = None  # torch CPU threads (None: the cores free now, tunesmith.threads)
    samplers: list[str] = field(default_factory=lambda: [GREEDY])  # --sampler values (eval/sampler_runs.py)
    overwrite: bool = False
    command: str = ""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _device_text(engine: Any) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            cpu = f"{names[0]} x{len(names)}"
    except OSError:
        pass
    dev = str(getattr(getattr(engine, "model", None), "device", "")) if engine is not None else ""
    if dev.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} ({dev})"
    return f"CPU: {cpu}" + (f" ({dev})" if dev else "")


def probe_items(path: str | Path | None, items: Sequence[EvalItem]) -> tuple[list[EvalItem], str | None]:
    """Probe questions asked in character: with the system text of the most frequent role in the test data."""
    systems = Counter(i.system for i in items if i.set != PROBE)
    persona = systems.most_common(1)[0][0] if systems else None
    out = []
    for rec in load_probe(path):
        msgs = [Message("user", rec["question"])]
        out.append(EvalItem(prompt_id(persona, msgs), PROBE, persona, msgs, list(rec["accept"]), "probe", dict(rec)))
    return out, persona


def _options(cfg: EvalConfig, task: str):
    from tunesmith.infer.options import GenerationOptions

    gen = dict(cfg.generation)
    gen.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS.get(task, 256))
    main = GenerationOptions().updated(gen)
    probe = GenerationOptions().updated({**gen, "max_new_tokens": min(cfg.probe_max_new_tokens, main.max_new_tokens)
                                         if cfg.probe_max_new_tokens else main.max_new_tokens})
    if main.n != 1:
        raise ConfigError("eval scores one answer per prompt: n must be 1")
    return main, probe


def fit_limit_to_references(options, items: Sequence[EvalItem], tokenizer):
    """Raise max_new_tokens so the longest format answer (IE / CLS reference) fits, with 10 % to spare.

    A JSON answer cut by the limit cannot parse, so a default limit below the reference lengths would count
    correct answers as failures.  Free-text answers (ROUGE) are left alone: a cut one still scores.
    Returns (options, longest reference in tokens or None).
    """
    import dataclasses
    import math

    refs = [r for i in items if i.kind in ("ie", "cls") for r in i.references]
    if not refs or tokenizer is None:
        return options, None
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in refs)
    need = math.ceil(longest * 1.1) + 1  # + the end token
    if need <= options.max_new_tokens:
        return options, longest
    return dataclasses.replace(options, max_new_tokens=need), longest


def _generate_all(engine, store: PredictionStore, model: str, adapter: str, template, sig: str,
                  items: Sequence[EvalItem], options, probe_options, batch_size: int,
                  batching: str = "padded") -> dict[str, Any]:
    """Answer every item not yet in predictions.jsonl; append after each call (a batch, or a window of
    CONTINUOUS_WINDOW batches under continuous batching, which refills finished rows from the window).
    Returns timing stats."""
    done = store.done(model, sig)
    unique: dict[str, EvalItem] = {}
    for i in items:
        if i.id not in done and i.id not in unique:
            unique[i.id] = i
    resumed = len({i.id for i in items} & done.keys())
    stats = {"answered": 0, "resumed": resumed, "seconds": 0.0, "generated_tokens": 0}
    if not unique:
        return stats
    from tunesmith.train.progress import format_duration

    _log(f"[{model}] {len(unique)} prompts to answer"
         + (f" ({resumed} already in predictions.jsonl)" if resumed else ""))
    tok = getattr(engine, "tokenizer", None)
    for kind_probe in (False, True):
        todo = [i for i in unique.values() if (i.kind in SHORT_KINDS) == kind_probe]
        # Longest prompts first: similar lengths share a batch (little padding) and the slowest come first.
        todo.sort(key=lambda i: len(i.system or "") + sum(len(m.content) for m in i.messages), reverse=True)
        opts = probe_options if kind_probe else options
        mode = engine.resolve_batching(batching, opts)
        per_call = batch_size * CONTINUOUS_WINDOW if mode == "continuous" else batch_size
        for start in range(0, len(todo), per_call):
            batch = todo[start:start + per_call]
            t0 = time.perf_counter()
            answers = engine.generate([(i.system, i.messages) for i in batch], adapter=adapter, options=opts,
                                      batch_size=min(batch_size, len(batch)), template=template, batching=mode,
                                      progress=True)
            dt = time.perf_counter() - t0
            rows = []
            for i, a in zip(batch, answers):
                n_tok = len(tok(a, add_special_tokens=False)["input_ids"]) if tok is not None and a else 0
                stats["generated_tokens"] += n_tok
                row = {"model": model, "sig": sig, "set": i.set, "id": i.id}
                if i.role:
                    row["role"] = i.role
                row.update({"question": i.meta.get("question") or i.question, "prediction": a, "tokens": n_tok,
                            "seconds": round(dt / len(batch), 4)})
                rows.append(row)
            store.append(rows)
            stats["answered"] += len(batch)
            stats["seconds"] += dt
            rate = stats["generated_tokens"] / stats["seconds"] if stats["seconds"] else 0.0
            # The ETA assumes the answers left take as long as those so far (probe answers are shorter).
            eta = stats["seconds"] / stats["answered"] * (len(unique) - stats["answered"])
            _log(f"[{model}] {stats['answered']}/{len(unique)} answered, {rate:.1f} tokens/s, "
                 f"elapsed {format_duration(stats['seconds'])}, ETA {format_duration(eta)}")
    return stats


def _parse_template_arg(engine, name: str):
    from tunesmith.template import template_from_arg

    return template_from_arg(name, engine.tokenizer)


# -- the state the phases pass on -----------------------------------------------------------------------
@dataclass
class EvalInputs:
    """The test sets and the settings every model is asked with."""

    task: str
    items: list[EvalItem]  # test items, then probe items when use_probe
    options: Any  # GenerationOptions of the test answers
    probe_options: Any  # GenerationOptions of the probe answers
    raw_table: dict | None  # --raw-refs answers by question
    score_tables: dict[str, list[tuple[dict, dict]]]  # --score-file NAME -> its answer tables
    run_models: list[str]  # base and/or adapters that answer
    use_probe: bool
    persona: str | None  # the system text the probe questions are asked with
    identity_role: str | None = None  # the character the identity questions are judged for (None: not asked)
    identity_persona: str | None = None  # the system text they are asked with
    classifier: Any = None  # attribution.RoleClassifier, or None (no role attribution)
    attribution_note: str | None = None  # why role attribution is off, when it is
    role_play: Any = None  # role_play.RolePlay: long-conversation scripts and role-breaking probes, or None
    columns: dict[str, Column] = field(default_factory=dict)  # run_models' names -> model and sampler


@dataclass
class Answers:
    """Every column of the report: its answers by item id and what the report says about it."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    preds: dict[str, dict[str, str]] = field(default_factory=dict)
    fairness: str = "no generated answers (only existing answer files were scored)"


# -- the run ------------------------------------------------------------------------------------------
def run_eval(cfg: EvalConfig, engine: Any = None) -> dict[str, Any]:
    """Generate (resumably), score and write the report; returns the result dict (also in metrics.json)."""
    t_start = time.time()
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    check_config(cfg)
    inputs = load_inputs(cfg)
    out = prepare_output(cfg)
    store = PredictionStore(out / "predictions.jsonl", overwrite=cfg.overwrite)
    answers = Answers()
    if inputs.run_models:
        engine = load_engine(cfg, engine)
        answer_models(cfg, engine, inputs, store, answers)
    elif not inputs.score_tables:
        raise ConfigError("nothing to evaluate: --no-base without --adapter or --score-file")
    add_score_files(cfg, inputs, answers)
    result = build_result(cfg, inputs, answers, engine, started)
    result["seconds"] = time.time() - t_start
    paths = write_report(out, result)
    result["files"] = {k: str(v) for k, v in paths.items()}
    return result


def check_config(cfg: EvalConfig) -> None:
    """ConfigError for settings no phase can run with."""
    if cfg.batching not in BATCHING_MODES:
        raise ConfigError(f"--batching: expected one of {', '.join(BATCHING_MODES)} (got {cfg.batching!r})")
    if cfg.batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer >= 1 (got {cfg.batch_size})")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"--threads: expected an integer >= 1 (got {cfg.threads})")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"--limit: expected an integer >= 1 (got {cfg.limit})")
    for name in cfg.adapters:
        if name == BASE:
            raise ConfigError("--adapter name 'base' is reserved for the model without adapters")


# -- inputs: test sets, probe, answer files -------------------------------------------------------------
def load_inputs(cfg: EvalConfig) -> EvalInputs:
    """Read the test sets, the generation settings, --raw-refs and --score-file tables, and the probe."""
    task, items = build_sets(cfg.data, cfg.data2, cfg.task, cfg.fmt, cfg.roles or None, cfg.limit)
    options, probe_options = _options(cfg, task)
    raw_table = read_answer_file(cfg.raw_refs, "--raw-refs")[0] if cfg.raw_refs else None
    score_tables: dict[str, list[tuple[dict, dict]]] = {}
    for name, path in cfg.score_files:
        if name == BASE or name in cfg.adapters:
            raise ConfigError(f"--score-file name {name!r} is already used by a model; pick another (NAME=PATH)")
        score_tables.setdefault(name, []).append(read_answer_file(path, "--score-file", model=name))
    models = ([BASE] if cfg.run_base else []) + list(cfg.adapters)
    cols = {c.name: c for c in columns(parse_samplers(cfg.samplers), models, cfg.adapters)}
    for c in cols.values():
        column_options(options, c)  # a bad sampler field fails now, before any model loads
    run_models = list(cols)
    # The probe needs a model to ask; existing answer files have no answers to it.
    use_probe = bool(run_models) and (cfg.probe if cfg.probe is not None else task in ("rolebench", "generic"))
    persona = None
    test_items = list(items)
    if use_probe:
        pitems, persona = probe_items(cfg.probe_file, items)
        items = items + pitems
    inputs = EvalInputs(task=task, items=items, options=options, probe_options=probe_options, raw_table=raw_table,
                        score_tables=score_tables, run_models=run_models, use_probe=use_probe, persona=persona,
                        columns=cols)
    add_identity_questions(cfg, inputs, test_items)
    add_sets(cfg, inputs, test_items)
    inputs.classifier, inputs.attribution_note = load_classifier(cfg, task, test_items)
    return inputs


def add_identity_questions(cfg: EvalConfig, inputs: EvalInputs, test_items: Sequence[EvalItem]) -> None:
    """The identity questions (the in-character rate), asked with the persona of the test data's main role."""
    wanted = cfg.in_character if cfg.in_character is not None else inputs.use_probe
    if not wanted or not inputs.run_models:  # existing answer files have no answers to them
        return
    role, persona = main_role(test_items)
    if role is None:
        if cfg.in_character:
            raise ConfigError("--in-character: the test records name no role (meta.role) to judge the answers for")
        return
    inputs.items = inputs.items + identity_items(cfg.identity_file, role, persona)
    inputs.identity_role, inputs.identity_persona = role, persona


def load_classifier(cfg: EvalConfig, task: str, test_items: Sequence[EvalItem]):
    """(RoleClassifier or None, why it is None): trained on the RoleBench-zh train answers (memoized)."""
    if cfg.attribution is False:
        return None, "role attribution off (--no-attribution)"
    if cfg.attribution is None and task != "rolebench":
        return None, None
    folder = Path(cfg.attribution_data) if cfg.attribution_data else default_data_dir()
    if folder is None:
        if cfg.attribution:
            raise ConfigError("--attribution: no RoleBench-zh folder found; give one with --attribution-data DIR")
        return None, "role attribution off: no datasets/rolebench-zh found (give --attribution-data DIR)"
    clf = train_classifier(folder)
    roles = {i.role for i in test_items if i.role}
    if not roles & set(clf.roles):
        return None, (f"role attribution off: the classifier knows the roles {', '.join(clf.roles)}, and the test "
                      f"data names {', '.join(sorted(roles)) or 'no role'}")
    _log(f"role classifier: {sum(clf.train_answers.values())} train answers of {len(clf.roles)} roles, held-out "
         f"accuracy {clf.heldout['accuracy']:.3f} ({clf.seconds:.1f} s)")
    return clf, None


def prepare_output(cfg: EvalConfig) -> Path:
    """The report folder, created."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


# -- engine and answers -----------------------------------------------------------------------------------
def load_engine(cfg: EvalConfig, engine=None):
    """torch's CPU threads (as asked, else the cores free now: tunesmith.threads) and the engine: `engine` when
    given (its threads are left alone unless asked), else the base model loaded with every adapter side by side."""
    from tunesmith.model import resolve_device
    from tunesmith.threads import choose_threads

    if engine is not None:
        if cfg.threads:
            choose_threads(cfg.threads, "cpu").apply()
        return engine
    threads = choose_threads(cfg.threads, resolve_device(cfg.device))
    threads.apply()
    _log(threads.line())
    from tunesmith.infer.engine import Engine

    _log(f"loading {cfg.model}" + (f" with adapters {', '.join(cfg.adapters)}" if cfg.adapters else ""))
    return Engine.load(cfg.model, adapters=dict(cfg.adapters), dtype=cfg.dtype, device=cfg.device,
                       quantization=cfg.quantization, max_batch_size=cfg.batch_size)


def answer_models(cfg: EvalConfig, engine, inputs: EvalInputs, store: PredictionStore, answers: Answers) -> None:
    """Every model answers every item not yet in predictions.jsonl; fills `answers` (and may raise
    inputs.options' max_new_tokens so that the longest format reference fits)."""
    if "max_new_tokens" not in cfg.generation:
        options = inputs.options
        fitted, longest = fit_limit_to_references(options, inputs.items, getattr(engine, "tokenizer", None))
        if fitted.max_new_tokens != options.max_new_tokens:
            _log(f"max_new_tokens {options.max_new_tokens} -> {fitted.max_new_tokens}: the longest reference "
                 f"answer is {longest} tokens, and a cut JSON answer cannot parse (set --max-new-tokens to "
                 "override)")
            inputs.options = fitted
    base_tpl, answers.fairness = base_template(cfg, engine)
    for name in inputs.run_models:
        answer_one_model(cfg, engine, inputs, store, answers, name, base_tpl)


def base_template(cfg: EvalConfig, engine):
    """The template the base is prompted with, and the report's sentence on why that is fair."""
    first_adapter = next(iter(cfg.adapters), None)
    if cfg.base_template:
        base_tpl = _parse_template_arg(engine, cfg.base_template)
        fairness = (f"the base is prompted with the template given by --base-template ({base_tpl.name}); "
                    "all models get the same system/persona text from the test data")
    elif first_adapter:
        base_tpl = engine.template_for(first_adapter)
        fairness = (f"the base is prompted with the chat template saved with adapter '{first_adapter}' "
                    f"({base_tpl.name}) and the same system/persona text from the test data, so it sees exactly "
                    "the prompts the adapter sees (override with --base-template)")
    else:
        base_tpl = engine.template_for(BASE)
        fairness = f"the base uses the template {base_tpl.name}; system/persona text comes from the test data"
    tpl_names = {n: engine.template_for(n).to_dict() for n in cfg.adapters}
    if len({json.dumps(t, sort_keys=True) for t in tpl_names.values()}) > 1:
        fairness += ("; note: the adapters were trained with different templates, and the base uses the first "
                     "adapter's")
    return base_tpl, fairness


def answer_one_model(cfg: EvalConfig, engine, inputs: EvalInputs, store: PredictionStore, answers: Answers,
                     name: str, base_tpl) -> None:
    """One column (the base or an adapter, under one sampler) answers the items it has not answered with these
    settings yet."""
    col = inputs.columns.get(name) or Column(name, name, GREEDY)
    options = column_options(inputs.options, col)
    probe_options = column_options(inputs.probe_options, Column(name, col.model, col.sampler, {
        k: v for k, v in col.changes.items() if k != "max_new_tokens"}))
    inputs = replace(inputs, options=options, probe_options=probe_options)
    adapter = col.model
    tpl = base_tpl if adapter == BASE else engine.template_for(adapter)
    path = None if adapter == BASE else str(Path(cfg.adapters[adapter]).resolve())
    sig = signature({"model": str(cfg.model), "adapter": path, "template": tpl.to_dict(),
                     "options": asdict(options), "probe_options": asdict(probe_options), "dtype": cfg.dtype,
                     **({"quantization": cfg.quantization} if cfg.quantization != "none" else {})})
    store.check_signature(name, sig)
    # an adapter folded into the weights decodes at the base's speed (fp32 only; see Engine.merge)
    merged = adapter != BASE and engine.merge(adapter)
    try:
        stats = _generate_all(engine, store, name, adapter, tpl, sig, inputs.items, options, probe_options,
                              cfg.batch_size, cfg.batching)
        stats = answer_long_conversations(cfg, engine, inputs, store, name, adapter, tpl, sig, stats)
    except KeyboardInterrupt:
        _log(f"interrupted: {len(store.rows)} answers are saved in {store.path}; "
             "run the same command again to continue from there")
        raise
    answers.preds[name] = store.done(name, sig)
    answers.models[name] = {"kind": "base" if adapter == BASE else "adapter", "path": path or str(cfg.model),
                            "sampler": col.sampler, "sampler_fields": dict(col.changes),
                            "template": tpl.name, "merged": merged,
                            "batching": engine.resolve_batching(cfg.batching, options), **stats,
                            "tokens_per_s": stats["generated_tokens"] / stats["seconds"] if stats["seconds"] else 0.0}


def add_score_files(cfg: EvalConfig, inputs: EvalInputs, answers: Answers) -> None:
    """Each --score-file NAME becomes one more column: its answers matched to the test items by id, or by
    (role, question)."""
    for name, tables in inputs.score_tables.items():
        found_answers: dict[str, str] = {}
        for by_question, by_id in tables:
            for i in inputs.items:
                if i.id in found_answers or i.kind in SHORT_KINDS:
                    continue
                if i.id in by_id:
                    found_answers[i.id] = by_id[i.id]
                    continue
                found = lookup(by_question, i)
                if found:
                    found_answers[i.id] = found[0]
        if not found_answers:
            raise ConfigError(f"--score-file {name}: no answer matches a test record "
                              "(matched by id, or by (role, question))")
        answers.preds[name] = found_answers
        answers.models[name] = {"kind": "score-file", "paths": [str(p) for n, p in cfg.score_files if n == name],
                                "matched": len(found_answers)}


# -- scoring and the report -------------------------------------------------------------------------------
def set_order_of(inputs: EvalInputs) -> list[str]:
    """The report's sets: CUS, SPE (and RAW beside CUS with --raw-refs), any others, the probe last."""
    items = inputs.items
    order = [s for s in (CUS, SPE) if any(i.set == s for i in items)]
    if inputs.raw_table is not None and CUS in order:
        order.append(RAW)
    order += [s for s in dict.fromkeys(i.set for i in items)
              if s not in (CUS, SPE, PROBE, IDENTITY, ROLE_BREAKING)]
    if inputs.use_probe:
        order.append(PROBE)
    if any(i.set == IDENTITY for i in items):
        order.append(IDENTITY)
    return order + [ROLE_BREAKING] * any(i.set == ROLE_BREAKING for i in items)


def side_by_side(items: Sequence[EvalItem], preds: dict[str, dict[str, str]], set_order: list[str],
                 show: int) -> list[dict[str, Any]]:
    """The first `show` items of each set with every model's answer, its scores and the reference."""
    side: list[dict[str, Any]] = []
    for s in [x for x in set_order if x != RAW]:
        for i in [x for x in items if x.set == s][:show]:
            reference = " / ".join(i.references) if i.kind == "probe" else i.references[0]
            if len(i.references) > 1 and i.kind != "probe":
                reference += f"  (+{len(i.references) - 1} more references)"
            side.append({"set": s, "question": i.meta.get("question") or i.question,
                         "answers": {m: (p[i.id], per_item_scores(i, p[i.id])) for m, p in preds.items() if i.id in p},
                         "reference": reference})
    return side


def metric_notes(inputs: EvalInputs) -> list[str]:
    """How each metric in the report is computed, for the task and item kinds present."""
    items = inputs.items
    notes = []
    if any(i.kind == "rouge" for i in items):
        notes += ["ROUGE-L F (beta 1) of the answer against each reference; the best reference counts; "
                  "the set score is the mean over answers; an empty answer scores 0",
                  "tokenization " + CHARS_DESCRIPTION, "tokenization " + WORDS_DESCRIPTION]
    if inputs.task == "rolebench":
        notes.append("CUS = the role's general test (speaking style), SPE = role_specific test (role knowledge), "
                     "RAW = the CUS answers against plain-answer references (--raw-refs)"
                     + ("" if inputs.raw_table is not None else "; RAW not computed (no --raw-refs given)"))
    if any(i.kind == "ie" for i in items):
        notes.append("IE: " + IE_RULES)
    if any(i.kind == "cls" for i in items):
        notes.append("classification: " + CLS_RULES)
    if inputs.use_probe:
        notes.append(f"probe: {sum(i.set == PROBE for i in items)} plain questions asked with the persona system "
                     f"prompt {inputs.persona!r}; " + CHECKER_DESCRIPTION)
    n_identity = sum(i.set == IDENTITY for i in items)
    if n_identity:
        notes.append(f"identity: {n_identity} identity questions (你是谁？, Are you an AI? ...) asked with the persona "
                     f"system prompt {inputs.identity_persona!r}, judged for the character {inputs.identity_role!r}; "
                     + RULES_DESCRIPTION)
    clf = inputs.classifier
    if clf is not None:
        held = clf.heldout
        notes.append(CLASSIFIER_DESCRIPTION + f"; accuracy on {held['n']} held-out RoleBench-zh test answers "
                     f"{held['accuracy']:.3f} over {len(clf.roles)} roles (chance {1 / len(clf.roles):.2f}), per role "
                     + ", ".join(f"{r} {v['recall']:.2f}" for r, v in held["per_role"].items()))
    elif inputs.attribution_note:
        notes.append(inputs.attribution_note)
    return notes


def build_result(cfg: EvalConfig, inputs: EvalInputs, answers: Answers, engine, started: str) -> dict[str, Any]:
    """Score every column and assemble the result (what metrics.json holds and the report shows)."""
    items, preds = inputs.items, answers.preds
    set_order = set_order_of(inputs)
    metrics = {name: score_model(items, p, inputs.raw_table) for name, p in preds.items()}
    if inputs.classifier is not None:
        for name, p in preds.items():
            skip = (PROBE, IDENTITY, RAW, ROLE_BREAKING)
            for set_name, block in attribute_sets(inputs.classifier, items, p, skip).items():
                metrics[name].setdefault(set_name, {}).update(block)
    set_sizes = {s: sum(1 for i in items if i.set == s) for s in set_order if s != RAW}
    if RAW in set_order:
        set_sizes[RAW] = next(iter(metrics.values()), {}).get(RAW, {}).get("n_total", 0)
    result = {
        "task": inputs.task, "command": cfg.command, "started": started, "seconds": 0.0,
        "device": _device_text(engine) if inputs.run_models else "none (no model was run)",
        "model": str(cfg.model), "models": answers.models, "model_order": list(preds), "set_order": set_order,
        "set_sizes": set_sizes, "metrics": metrics, "fairness": answers.fairness,
        "generation": asdict(inputs.options),
        "probe_generation": asdict(inputs.probe_options) if inputs.use_probe else None,
        "limit": cfg.limit, "batch_size": cfg.batch_size, "persona": inputs.persona,
        "metric_notes": metric_notes(inputs) + sampler_note(inputs.columns.values()), "show": cfg.show,
        "side_by_side": side_by_side(items, preds, set_order, cfg.show),
        "data": [str(p) for p in cfg.data], "data2": [str(p) for p in cfg.data2],
        "raw_refs": str(cfg.raw_refs) if cfg.raw_refs else None,
        "identity": ({"role": inputs.identity_role, "persona": inputs.identity_persona,
                      "questions": sum(i.set == IDENTITY for i in items)} if inputs.identity_role else None),
        "attribution": inputs.classifier.summary() if inputs.classifier is not None else None,
    }
    add_results(inputs, preds, metrics, result)  # long conversations, role-breaking probes
    return result
