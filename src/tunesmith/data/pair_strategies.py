"""The strategies of `data make-pairs` beside the reference one: `rank` and `negatives` ("pairs that teach one thing").

rank
    The start model (base, or base + adapter) samples K answers per prompt (--samples, --temperature, --top-p,
    top-k off).  Both answers of a pair are the model's own samples (on-policy pairs, as rejection-sampling DPO
    makes them): each is scored by tunesmith.data.pair_scores (role-play: ROUGE-L against the references, minus
    a loop and an out-of-character penalty, plus the role classifier's probability; IE/CLS: F1 or exact label
    plus parsing), chosen = the best sample, rejected = the worst.  With --with-reference the data's reference
    answers compete for chosen too; they score ROUGE-L 1 against themselves, so such pairs mostly say "the
    reference over the worst sample" (off-policy, close to --strategy reference); a sample still wins when the
    reference loops, breaks the role, or a sample says the same in the role's voice.  A prompt whose best -
    worst margin is under --min-margin teaches little and is skipped.  One pair per prompt, its scores in
    meta.scores ({"chosen": {terms..., "total", "from"}, "rejected": {...}, "margin"}).
    Reproducibility: prompts go in fixed batches of batch_size // K distinct prompts, longest first (ties in data
    order: little padding), each batch one padded `generate` call with n = K (rows of a batch are sampled
    together, so batches are kept); before it torch's global generator is seeded with a hash of --seed and the
    batch's prompt ids.  The same data, model, settings (batch size included) and device give the same samples,
    also when a run is interrupted and continued: a batch is generated again whole, with its seed, until every
    prompt of it has a pair in OUT.  Another batch size, --limit or data order changes the batches and so the
    samples; GPU kernels may differ in the last bits between machines.
negatives
    chosen = the reference, rejected = a targeted bad version of it (tunesmith.data.pair_negatives: loop,
    disclaimer, other_role, truncated; base: the base model's greedy answer to the same prompt, with the
    adapter's template when --adapter is given).  --negatives picks the kinds; by default every kind that
    applies: loop and disclaimer always, other_role when the RoleBench-zh folder is found, base when --model is
    given; truncated only when named.  Kinds other than base load no model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data.pair_file import NEGATIVES, RANK, STRATEGIES, Item, append, item_key, note, prompt_chars
from tunesmith.data.pair_negatives import (
    BASE,
    DISCLAIMER,
    KINDS,
    LOOP,
    OTHER_ROLE,
    TRUNCATED,
    TRUNCATED_SHARE,
    OtherRoleAnswers,
    disclaimer_negative,
    load_disclaimers,
    loop_negative,
    truncated_negative,
)
from tunesmith.errors import ConfigError
from tunesmith.preference import LABEL, REJECTED, make_pair

DEFAULT_SAMPLES = 4
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_SEED = 0
# Score points (pair_scores: 1 = the whole ROUGE range) the chosen answer must lead the rejected one by.
DEFAULT_MIN_MARGIN = 0.1


def rolebench_dir(cfg: Any) -> Path | None:
    """--rolebench, else the repository's datasets/rolebench-zh (None when there is none)."""
    from tunesmith.eval.attribution import default_data_dir

    return Path(cfg.rolebench) if cfg.rolebench else default_data_dir()


def check_strategy(cfg: Any) -> list[str]:
    """The strategy options checked (ConfigError naming the option); the negative kinds to make ([] unless
    --strategy negatives)."""
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"--strategy: expected one of {', '.join(STRATEGIES)} (got {cfg.strategy!r})")
    if cfg.strategy != NEGATIVES and cfg.model is None:
        raise ConfigError(f"--model: required for --strategy {cfg.strategy} (the model whose answers are rejected)")
    if cfg.negatives and cfg.strategy != NEGATIVES:
        raise ConfigError("--negatives: only with --strategy negatives")
    if cfg.rolebench and not Path(cfg.rolebench).is_dir():
        raise ConfigError(f"--rolebench: {cfg.rolebench} is not a folder (expected the rolebench-zh folder)")
    if cfg.strategy == RANK:
        _check_rank(cfg)
    if cfg.strategy != NEGATIVES:
        return []
    if cfg.negatives:
        given = cfg.negatives.split(",") if isinstance(cfg.negatives, str) else list(cfg.negatives)
        kinds = [k.strip() for k in given if k.strip()]
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise ConfigError(f"--negatives: unknown kind {', '.join(bad) or '(none)'} (expected a comma-separated "
                              f"list of {', '.join(KINDS)})")
        if BASE in kinds and cfg.model is None:
            raise ConfigError("--negatives base: needs --model (the base model that answers)")
        if OTHER_ROLE in kinds and rolebench_dir(cfg) is None:
            raise ConfigError("--negatives other_role: needs the rolebench-zh folder (--rolebench DIR)")
        return [k for k in KINDS if k in kinds]
    # truncated only when asked for: it answers the loop negative's length signal, measured in one recipe so far
    applies = {LOOP: True, DISCLAIMER: True, BASE: cfg.model is not None, OTHER_ROLE: rolebench_dir(cfg) is not None,
               TRUNCATED: False}
    return [k for k in KINDS if applies[k]]


def _check_rank(cfg: Any) -> None:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(cfg.samples, int) or isinstance(cfg.samples, bool) or cfg.samples < 2:
        raise ConfigError(f"--samples: expected an integer >= 2 (a best and a worst answer; got {cfg.samples!r})")
    if not number(cfg.temperature) or cfg.temperature <= 0:
        raise ConfigError(f"--temperature: expected a number > 0 (got {cfg.temperature!r})")
    if not number(cfg.top_p) or not 0 < cfg.top_p <= 1:
        raise ConfigError(f"--top-p: expected a number in (0, 1] (got {cfg.top_p!r})")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"--seed: expected an integer >= 0 (got {cfg.seed!r})")
    if not number(cfg.min_margin) or cfg.min_margin < 0:
        raise ConfigError(f"--min-margin: expected a number >= 0 (got {cfg.min_margin!r})")


def made_by(cfg: Any, adapters: dict[str, str], template: Any, kinds: Sequence[str]) -> dict[tuple[str, str], str]:
    """{(strategy, kind): the fingerprint of what makes such pairs}; pairs from other settings are not mixed."""
    from tunesmith.data.pair_scores import WEIGHTS
    from tunesmith.eval.predictions import signature

    adapter = next(iter(adapters.values()), None)
    model = {"model": str(cfg.model), "adapter": str(Path(adapter).resolve()) if adapter else None,
             "template": template.to_dict() if template is not None else None,
             "max_new_tokens": cfg.max_new_tokens, "dtype": cfg.dtype}
    bench = rolebench_dir(cfg)
    bench_id = str(bench.resolve()) if bench else None
    if cfg.strategy == RANK:
        rank = {"strategy": RANK, "samples": cfg.samples, "temperature": cfg.temperature, "top_p": cfg.top_p,
                "seed": cfg.seed, "min_margin": cfg.min_margin, "batch_size": cfg.batch_size, "weights": WEIGHTS,
                "with_reference": cfg.with_reference,
                "rolebench": bench_id}
        return {(RANK, ""): signature({**model, **rank})}
    parts = {LOOP: {"loop": "v1"}, DISCLAIMER: {"disclaimers": load_disclaimers()}, BASE: model,
             OTHER_ROLE: {"rolebench": bench_id}, TRUNCATED: {"truncated": TRUNCATED_SHARE}}
    return {(NEGATIVES, k): signature({"strategy": NEGATIVES, "kind": k, **parts[k]}) for k in kinds}


def _pair_meta(it: Item) -> dict[str, Any]:
    return {k: v for k, v in it.meta.items() if k not in (REJECTED, LABEL)}


# -- rank ---------------------------------------------------------------------------------------------------
def batch_seed(seed: int, prompt_ids: Sequence[str]) -> int:
    """The seed of one batch: fixed by --seed and the batch's prompts."""
    blob = f"{seed}:{','.join(prompt_ids)}".encode()
    return int(hashlib.sha256(blob).hexdigest()[:15], 16)


def make_scorer(items: Sequence[Item], cfg: Any) -> Any:
    """The AnswerScorer, with the role classifier trained once when some record is role-play."""
    from tunesmith.data.pair_scores import ROLE, AnswerScorer, task_of

    if not any(task_of(it.reference, it.meta) == ROLE for it in items):
        return AnswerScorer(None)
    bench = rolebench_dir(cfg)
    if bench is None:
        note("no rolebench-zh folder (--rolebench): the role classifier's term is 0 in every score")
        return AnswerScorer(None)
    from tunesmith.eval.attribution import train_classifier

    clf = train_classifier(bench)
    note(f"role classifier trained on {bench} in {clf.seconds:.1f} s ({len(clf.roles)} roles)")
    return AnswerScorer(clf)


def run_rank(engine: Any, adapter: str, cfg: Any, items: Sequence[Item], done: dict, made_by_: str,
             report: Any) -> None:
    """Sample, score and pair every prompt that has no rank pair in OUT yet, a fixed batch at a time."""
    import torch

    from tunesmith.infer.options import GenerationOptions

    prompts: dict[str, list[Item]] = {}
    for it in items:
        prompts.setdefault(it.prompt_id, []).append(it)
    # Longest prompts first, ties in data order: a batch is padded to its longest prompt, so prompts of like length
    # batched together pad least (long prompts spread over many batches would each pad a batch of short ones).  The
    # order depends on the data alone, so batches and seeds stay reproducible.
    groups = sorted(prompts.values(), key=lambda g: prompt_chars(g[0]), reverse=True)
    per_call = max(1, cfg.batch_size // cfg.samples)
    batches = [groups[i:i + per_call] for i in range(0, len(groups), per_call)]
    report.resumed += sum(item_key(g[0], RANK) in done for g in groups)
    todo = [b for b in batches if any(item_key(g[0], RANK) not in done for g in b)]
    opts = GenerationOptions(max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature,
                             top_p=cfg.top_p, top_k=0, n=cfg.samples)
    scorer = make_scorer(items, cfg) if todo else None
    if todo:
        note(f"{sum(len(b) for b in todo)} prompt(s) in {len(todo)} batch(es) to sample {cfg.samples} answers each "
             f"with {'the base model' if adapter == 'base' else adapter}")
    for n, batch in enumerate(todo, 1):
        # one seed per batch: the K samples of a batch's prompts are drawn together, in one padded generate call
        torch.manual_seed(batch_seed(cfg.seed, [g[0].prompt_id for g in batch]))
        samples = engine.generate([(g[0].system, g[0].prompt) for g in batch], adapter=adapter, options=opts,
                                  batch_size=per_call * cfg.samples)
        report.generated += len(batch)
        pairs = []
        for g, answers in zip(batch, samples):
            key = item_key(g[0], RANK)
            if key in done:  # written by an earlier run from these same samples
                continue
            pair, why = rank_pair(g, list(answers), scorer, made_by_, cfg.min_margin, cfg.with_reference)
            if pair is None:
                report.skipped[why] += 1
            else:
                done[key] = pair
                pairs.append(pair)
                report.made += 1
        append(report.path, pairs)
        note(f"{n}/{len(todo)} batches sampled and scored")


def rank_pair(group: Sequence[Item], samples: Sequence[str], scorer: Any, made_by_: str,
              min_margin: float, with_reference: bool = False) -> tuple[Conversation | None, str]:
    """The rank pair of one prompt (its data items `group`) and its samples, or (None, why it is skipped).
    with_reference: the data's reference answers are candidates for chosen as well."""
    from tunesmith.data.pair_scores import task_of

    first = group[0]
    all_refs = list(dict.fromkeys(it.reference for it in group))
    extra = [r for it in group for r in (it.meta.get("references") or []) if isinstance(r, str) and r.strip()]
    refs = list(dict.fromkeys(all_refs + extra))
    data_refs = all_refs if with_reference else []
    question = first.prompt[-1].content if first.prompt else ""
    cands = data_refs + list(samples)
    origin = [f"reference {i + 1}" if len(data_refs) > 1 else "reference" for i in range(len(data_refs))]
    origin += [f"sample {i + 1}" for i in range(len(samples))]
    scores = scorer.score_many(cands, refs, task_of(first.reference, first.meta), str(first.meta.get("role") or ""),
                               question, first.system)
    best = max(range(len(cands)), key=lambda i: scores[i]["total"])  # ties: the first, a reference before samples
    worse = [i for i in range(len(data_refs), len(cands)) if cands[i].strip() and
             cands[i].strip() != cands[best].strip()]
    if not worse:
        return None, "every sample is empty or equals the chosen answer"
    worst = min(worse, key=lambda i: scores[i]["total"])
    margin = round(scores[best]["total"] - scores[worst]["total"], 4)
    if margin < min_margin:
        return None, f"best - worst score under --min-margin {min_margin}"
    meta = {**_pair_meta(first), "prompt_id": first.prompt_id, "made_by": made_by_, "strategy": RANK,
            "scores": {"chosen": {**scores[best], "from": origin[best]},
                       "rejected": {**scores[worst], "from": origin[worst]}, "margin": margin}}
    return make_pair(first.prompt, cands[best], cands[worst], system=first.system, **meta), ""


# -- negatives without a model ----------------------------------------------------------------------------
def run_negatives(cfg: Any, items: Sequence[Item], done: dict, made_by_: dict[tuple[str, str], str],
                  kinds: Sequence[str], report: Any) -> None:
    """The negatives that need no model (loop, disclaimer, other_role, truncated), appended in batches of
    --batch-size."""
    disclaimers = load_disclaimers() if DISCLAIMER in kinds else None
    others = OtherRoleAnswers(rolebench_dir(cfg)) if OTHER_ROLE in kinds else None
    for kind in (k for k in kinds if k != BASE):
        seen: set = set()
        pairs: list[Conversation] = []
        for it in items:
            key = item_key(it, NEGATIVES, kind)
            if key in done:
                report.resumed += 1
                continue
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            rejected, extra, why = _negative(kind, it, disclaimers, others)
            if rejected is None:
                report.skipped[f"{kind}: {why}"] += 1
                continue
            pair = make_pair(it.prompt, it.reference, rejected, system=it.system, **_pair_meta(it),
                             prompt_id=it.prompt_id, made_by=made_by_[(NEGATIVES, kind)], strategy=NEGATIVES,
                             negative=kind, **extra)
            done[key] = pair
            pairs.append(pair)
            report.made += 1
            if len(pairs) >= cfg.batch_size:
                append(report.path, pairs)
                pairs = []
        append(report.path, pairs)


def _negative(kind: str, it: Item, disclaimers: Any, others: OtherRoleAnswers | None
              ) -> tuple[str | None, dict[str, Any], str]:
    """(rejected answer, extra meta, why none)."""
    if kind == LOOP:
        text = loop_negative(it.reference)
        return text, {}, "the reference loops itself or has no letter to repeat"
    if kind == DISCLAIMER:
        return disclaimer_negative(it.reference, it.prompt_id, disclaimers), {}, ""
    if kind == TRUNCATED:
        return truncated_negative(it.reference), {}, "the reference's first clause is more than half of it"
    role = str(it.meta.get("role") or "")
    if not role:
        return None, {}, "no meta.role (whose answer would be another role's?)"
    question = str(it.meta.get("question") or (it.prompt[-1].content if it.prompt else ""))
    found = others.answer(question, role, it.prompt_id) if others else None
    if found is None or found[1].strip() == it.reference.strip():
        return None, {}, "no other role answered this question in RoleBench general/train.jsonl"
    return found[1], {"other_role": found[0]}, ""


__all__ = ["DEFAULT_SAMPLES", "DEFAULT_TEMPERATURE", "DEFAULT_TOP_P", "DEFAULT_SEED", "DEFAULT_MIN_MARGIN",
           "check_strategy", "made_by", "run_rank", "rank_pair", "run_negatives", "batch_seed", "make_scorer",
           "rolebench_dir"]
