"""Preference pairs from a dataset and a model, by one of three strategies (--strategy):

    reference  chosen = the reference answer, rejected = the model's greedy answer (the default; below)
    rank       K sampled answers and the reference scored; chosen = the best, rejected = the worst sample
    negatives  chosen = the reference, rejected = a targeted bad version of it (a loop, an AI disclaimer,
               the base model's answer, another role's answer)
rank and negatives are in tunesmith.data.pair_strategies; the file they share in tunesmith.data.pair_file.

    from tunesmith.data.make_pairs import MakePairsConfig, make_pairs
    rep = make_pairs(MakePairsConfig(data="data/libai/train.jsonl", out="data/libai/pairs.jsonl",
                                     model="default", adapter="runs/libai-sft/adapter"))
    rep.summary()   # 'wrote 412 pair(s) to data/libai/pairs.jsonl; 3 skipped: the model's answer equals ...'

then `tunesmith train RECIPE.yaml method=dpo data.train=data/libai/pairs.jsonl`.

Every conversation of the data (any format the data readers load) that ends with an assistant answer gives
one pair (tunesmith.preference's contract): the prompt is everything before that final answer, the chosen
answer is the reference, the rejected one the model's greedy answer to the same prompt, generated in
batches by the Engine with the adapter's saved template (the prompt it was trained on).  An answer equal to
the reference is no preference: it is skipped and counted.

Resumable: each batch's pairs are appended to OUT and flushed to disk before the next batch starts; a rerun
reads OUT back and skips every (prompt, reference) already there, keyed on a stable hash of the prompt
(`meta.prompt_id`, tunesmith.eval.testset.prompt_id); only prompts whose answer was skipped as equal to
the reference (they leave nothing in OUT) are asked again.  A torn last line (the run was killed mid-write) is
dropped with a note.  At the end OUT is rewritten atomically in the order of the data, so an interrupted run
continued to the end gives the same file as one uninterrupted run.  Pairs made with other settings (model,
adapter, template, max_new_tokens, dtype: `meta.made_by`) are refused, not mixed in.  The pairs of the
other strategies in OUT are kept (tunesmith.data.pair_file): one file may hold the mix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data.formats import load
from tunesmith.data.pair_file import (
    NEGATIVES,
    RANK,
    REFERENCE,
    Item,
    append,
    finish,
    group_of,
    item_key,
    items_of,
    note,
    pair_key,
    prompt_chars,
    read_pairs,
)
from tunesmith.data.pair_negatives import BASE
from tunesmith.data.pair_strategies import (
    DEFAULT_MIN_MARGIN,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    check_strategy,
    made_by,
    run_negatives,
    run_rank,
)
from tunesmith.errors import ConfigError, DataError
from tunesmith.preference import make_pair, rejected

DEFAULT_MAX_NEW_TOKENS = 256


@dataclass
class MakePairsConfig:
    data: str | Path | Sequence[str | Path]
    out: str | Path
    # the base model; None: none (--strategy negatives without the base kind loads no model)
    model: str | None = "default"
    adapter: str | None = None  # a LoRA adapter folder (or NAME=PATH); None: the base model answers
    batch_size: int = 16
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    limit: int | None = None  # the first N conversations of the data only (after the role filter)
    roles: Sequence[str] | None = None  # only conversations of these roles (meta.role)
    fmt: str | None = None  # the data's format; None: detected
    dtype: str = "auto"
    device: str = "auto"
    template: str | None = None  # the base model's template (an adapter uses its own template.json)
    threads: int | None = None  # torch CPU threads (None: the cores free now, tunesmith.threads)
    strategy: str = REFERENCE  # reference, rank or negatives (tunesmith.data.pair_strategies)
    samples: int = DEFAULT_SAMPLES  # rank: answers sampled per prompt
    temperature: float = DEFAULT_TEMPERATURE  # rank: sampling temperature
    top_p: float = DEFAULT_TOP_P  # rank: nucleus sampling
    seed: int = DEFAULT_SEED  # rank: seeds every batch (with its prompts)
    min_margin: float = DEFAULT_MIN_MARGIN  # rank: skip prompts whose best - worst score is smaller
    with_reference: bool = False  # rank: the data's reference answers compete for chosen too (off-policy)
    negatives: str | Sequence[str] | None = None  # negatives: the kinds (None: every kind that applies)
    rolebench: str | Path | None = None  # the rolebench-zh folder (classifier, other_role); None: the repository's


@dataclass
class MakePairsReport:
    path: Path
    strategy: str = REFERENCE
    written: int = 0  # pairs in OUT at the end
    generated: int = 0  # prompts the model answered in this run
    resumed: int = 0  # pairs found in OUT from an earlier run, not generated again
    skipped_equal: int = 0  # the model's answer equals the reference: no preference
    skipped_empty: int = 0  # the model answered nothing (a pair's rejected answer must be text)
    duplicates: int = 0  # conversations that repeat an earlier one (same prompt and reference): written once
    kept_other: int = 0  # pairs already in OUT whose prompt is not in this data (kept at the end)
    made: int = 0  # rank / negatives: pairs made in this run
    skipped: Counter = field(default_factory=Counter)  # rank / negatives: why a pair was not made -> how often

    def summary(self) -> str:
        if self.strategy == REFERENCE:
            parts = [f"wrote {self.written} pair(s) to {self.path}",
                     f"{self.skipped_equal} skipped: the model's answer equals the reference",
                     f"{self.resumed} resumed from the file (not generated again)"]
        else:
            parts = [f"wrote {self.written} pair(s) to {self.path} ({self.made} new by --strategy {self.strategy})",
                     f"{self.resumed} resumed from the file (not made again)"]
            if self.skipped_equal:
                parts.append(f"{self.skipped_equal} skipped: base: the base model's answer equals the reference")
            parts += [f"{n} skipped: {why}" for why, n in sorted(self.skipped.items())]
        if self.skipped_empty:
            parts.append(f"{self.skipped_empty} skipped: the model's answer was empty")
        if self.duplicates:
            parts.append(f"{self.duplicates} repeated conversation(s) written once")
        if self.kept_other:
            parts.append(f"{self.kept_other} earlier pair(s) of prompts not in this data kept at the end")
        return "; ".join(parts)

    def nothing(self) -> str:
        """Why there is no pair to write at all."""
        if self.strategy == REFERENCE:
            return (f"no pairs to write: the model's answer equals the reference (or is empty) for every "
                    f"conversation ({self.skipped_equal} equal, {self.skipped_empty} empty)")
        why = "; ".join(f"{n} {w}" for w, n in sorted(self.skipped.items())) or "no conversation gave one"
        return f"no pairs to write by --strategy {self.strategy} ({why})"


def _check_config(cfg: MakePairsConfig) -> dict[str, str]:
    """The adapter as {name: folder} (empty for the base), after the cheap checks of every option."""
    from tunesmith.adapter_spec import parse_adapter_specs
    from tunesmith.infer.adapters import adapter_folders

    for name in ("batch_size", "max_new_tokens"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: expected an integer >= 1 (got {v!r})")
    for name in ("limit", "threads"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"--{name}: expected an integer >= 1 (got {v!r})")
    out = Path(cfg.out)
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder (expected the .jsonl file to write the pairs to)")
    adapters = parse_adapter_specs([cfg.adapter] if cfg.adapter else None)
    if adapters and cfg.model is None:
        raise ConfigError("--adapter: needs --model (the base model the adapter was trained on)")
    return {n: str(p) for n, p in adapter_folders(adapters).items()}  # a missing adapter: ModelError, exit 2


def _made_by(cfg: MakePairsConfig, adapters: dict[str, str], template: Any) -> str:
    """What produced the rejected answers; pairs from other settings are not mixed into one file."""
    from tunesmith.eval.predictions import signature

    adapter = next(iter(adapters.values()), None)
    return signature({"model": str(cfg.model), "adapter": str(Path(adapter).resolve()) if adapter else None,
                      "template": template.to_dict(), "max_new_tokens": cfg.max_new_tokens, "dtype": cfg.dtype})


def make_pairs(cfg: MakePairsConfig, engine: Any = None) -> MakePairsReport:
    """Write OUT: the pairs of `cfg.strategy` for the data, merged with the other strategies' pairs in OUT.

    `engine`: an Engine already loaded with the adapter (tests, scripts); else the model is loaded here when
    the strategy needs one.
    """
    adapters = _check_config(cfg)
    kinds = check_strategy(cfg)
    convs = load(cfg.data, cfg.fmt, roles=list(cfg.roles) if cfg.roles else None, limit=cfg.limit)
    where = str(cfg.data) if isinstance(cfg.data, (str, Path)) else "the data"
    items = items_of(convs, where)
    if not items:
        raise DataError("no conversations to make pairs from", where)
    out = Path(cfg.out)
    earlier = read_pairs(out)  # before loading a model for minutes: a broken OUT is refused at once
    needs_model = cfg.strategy != NEGATIVES or BASE in kinds
    if engine is None and needs_model:
        engine = _load_engine(cfg, adapters)
    adapter = next(iter(adapters), "base")
    template = engine.template_for(adapter) if needs_model else None
    if cfg.strategy == REFERENCE:
        made = {(REFERENCE, ""): _made_by(cfg, adapters, template)}
    else:
        made = made_by(cfg, adapters, template, kinds)
    _refuse_other_settings(out, earlier, made)
    report = MakePairsReport(out, strategy=cfg.strategy)
    done = {pair_key(c): c for c in earlier}
    out.parent.mkdir(parents=True, exist_ok=True)
    if cfg.strategy == NEGATIVES:
        note(f"negatives: {', '.join(kinds)}")
        run_negatives(cfg, items, done, made, kinds, report)
        if BASE in kinds:
            # the base's answer to the prompt the adapter is trained on (its template), adapter off
            _run_greedy(engine, "base", cfg, items, earlier, done, made[(NEGATIVES, BASE)], report,
                        (NEGATIVES, BASE), template)
    else:
        if adapter != "base":
            # folded into the weights, the adapter decodes at the base's speed (fp32 only; see Engine.merge)
            engine.merge(adapter)
        try:
            if cfg.strategy == RANK:
                run_rank(engine, adapter, cfg, items, done, made[(RANK, "")], report)
            else:
                _run_greedy(engine, adapter, cfg, items, earlier, done, made[(REFERENCE, "")], report,
                            (REFERENCE, ""))
        finally:
            engine.unmerge()
    finish(out, items, done, earlier, report, report.nothing())
    return report


def _load_engine(cfg: MakePairsConfig, adapters: dict[str, str]) -> Any:
    from tunesmith.infer.engine import Engine
    from tunesmith.model import resolve_device
    from tunesmith.threads import choose_threads

    threads = choose_threads(cfg.threads, resolve_device(cfg.device))
    threads.apply()
    note(threads.line())
    note(f"loading {cfg.model}" + (f" with adapter {next(iter(adapters.values()))}" if adapters else ""))
    return Engine.load(cfg.model, adapters=adapters, dtype=cfg.dtype, device=cfg.device, template=cfg.template,
                       max_batch_size=cfg.batch_size)


def _refuse_other_settings(out: Path, earlier: Sequence[Conversation], made: dict[tuple[str, str], str]) -> None:
    """A ConfigError when OUT holds pairs of a (strategy, kind) this run makes, made with other settings."""
    for c in earlier:
        group = group_of(c)
        if group in made and c.meta["made_by"] != made[group]:
            what = {REFERENCE: "model, adapter, template, max_new_tokens or dtype",
                    RANK: "model, adapter, template, max_new_tokens, dtype, samples, temperature, top_p, seed, "
                          "min_margin, with_reference, batch_size or the role classifier's data"}.get(
                              group[0], "the kind's inputs")
            name = "pairs" if group[0] == REFERENCE else f"{group[0]} pairs" + (f" ({group[1]})" if group[1] else "")
            raise ConfigError(f"{out} holds {name} made with other settings ({what} changed); write to another -o "
                              "file, or delete it to start over")


def _run_greedy(engine: Any, adapter: str, cfg: MakePairsConfig, items: Sequence[Item],
                earlier: Sequence[Conversation], done: dict, made_by_: str, report: MakePairsReport,
                group: tuple[str, str], template: Any = None) -> None:
    """Pairs of the reference and a greedy answer (the reference strategy; the base negatives): the prompts not
    answered yet, a batch at a time."""
    answered = {c.meta["prompt_id"]: rejected(c) for c in earlier if group_of(c) == group}
    todo: dict[tuple, Item] = {}
    for it in items:
        key = item_key(it, *group)
        if key in done:
            report.resumed += 1
        elif key in todo:
            report.duplicates += 1
        else:
            todo[key] = it
    if report.resumed:
        note(f"{report.resumed} pair(s) already in {report.path}: not generated again")
    _generate(engine, adapter, cfg, list(todo.values()), answered, done, made_by_, report, group, template)


def _generate(engine: Any, adapter: str, cfg: MakePairsConfig, todo: list[Item], answered: dict[str, str],
              done: dict, made_by_: str, report: MakePairsReport, group: tuple[str, str],
              template: Any = None) -> None:
    """Answer the prompts not answered yet, a batch at a time; append each batch's pairs to OUT."""
    from tunesmith.infer.options import GenerationOptions

    opts = GenerationOptions(max_new_tokens=cfg.max_new_tokens, do_sample=False)
    extra = {"template": template} if template is not None else {}
    need = list({it.prompt_id: it for it in todo if it.prompt_id not in answered}.values())
    if need:
        note(f"{len(need)} prompt(s) to answer with {'the base model' if adapter == 'base' else adapter}")
    # Longest prompts first: similar lengths share a batch (little padding) and the slowest come first.
    need.sort(key=prompt_chars, reverse=True)
    waiting: dict[str, list[Item]] = {}
    for it in todo:
        waiting.setdefault(it.prompt_id, []).append(it)
    # One pass more than there are batches when none is needed: references of prompts answered by an earlier
    # run still become pairs.
    for start in range(0, len(need) + 1, cfg.batch_size):
        batch = need[start:start + cfg.batch_size]
        if batch:
            replies = engine.generate([(it.system, it.prompt) for it in batch], adapter=adapter, options=opts,
                                      batch_size=cfg.batch_size, **extra)
            answered.update({it.prompt_id: reply for it, reply in zip(batch, replies)})
            report.generated += len(batch)
        # every waiting (prompt, reference) whose prompt is now answered: its pair, or a skip
        ready = [pid for pid in waiting if pid in answered]
        pairs = []
        for pid in ready:
            for it in waiting.pop(pid):
                pair = _pair(it, answered[pid], made_by_, group)
                if pair is None:
                    if answered[pid].strip():
                        report.skipped_equal += 1
                    else:
                        report.skipped_empty += 1
                else:
                    done[item_key(it, *group)] = pair
                    pairs.append(pair)
                    report.made += 1
        append(report.path, pairs)
        if batch:
            note(f"{min(start + len(batch), len(need))}/{len(need)} prompts answered")


def _pair(it: Item, answer: str, made_by_: str, group: tuple[str, str]) -> Conversation | None:
    """The pair of one reference and the model's answer; None when they are equal (nothing to prefer, also when
    they differ only in surrounding white space) or the answer is empty."""
    if answer.strip() == it.reference.strip() or not answer.strip():
        return None
    meta = {k: v for k, v in it.meta.items() if k not in ("rejected", "label")}
    strategy = {} if group[0] == REFERENCE else {"strategy": group[0], "negative": group[1]}
    return make_pair(it.prompt, it.reference, answer, system=it.system, **meta, prompt_id=it.prompt_id,
                     made_by=made_by_, **strategy)


__all__ = ["DEFAULT_MAX_NEW_TOKENS", "MakePairsConfig", "MakePairsReport", "make_pairs", "read_pairs"]
