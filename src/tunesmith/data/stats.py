"""What is in a dataset: counts, roles, turns and length percentiles (characters, and tokens given a tokenizer).

    tunesmith data stats datasets/rolebench-zh/general/train.jsonl --from rolebench
    tunesmith data stats data/libai/train.jsonl --tokenizer path/to/model --json

    from tunesmith.data.stats import dataset_stats
    dataset_stats(convs)["chars"]["answer"]["p90"]

"prompt" is everything the model reads before the final answer (system text + earlier messages),
"answer" the final assistant message. Token counts are of the raw texts without a chat template, so
they are a lower bound of the training length (the template adds a few tokens per turn).

"kind" says what the data trains (tunesmith.preference): plain rows (SFT), pairs (DPO/ORPO: the answer is
the chosen one, and "rejected" gives the rejected answers' lengths) or judged answers (KTO: "desirable"
and "undesirable" count the labels). "pair_mix" counts the pairs `data make-pairs` made by strategy and
kind ({"reference": 10, "negatives/loop": 10}). "equal_answers" counts pairs whose two answers are the same text:
they teach nothing, and a DPO loss on them is a constant.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from tunesmith import model
from tunesmith.conversation import Conversation
from tunesmith.preference import JUDGED, PAIR, kind_of_dataset, label, rejected

PERCENTILES = (50, 90, 99)


def percentiles(values: list[int]) -> dict[str, float | int]:
    """Nearest-rank percentiles p50/p90/p99 plus min, max and mean (all 0 for no values)."""
    if not values:
        return {"p50": 0, "p90": 0, "p99": 0, "min": 0, "max": 0, "mean": 0}
    v = sorted(values)
    n = len(v)
    out: dict[str, float | int] = {f"p{p}": v[max(0, math.ceil(p / 100 * n) - 1)] for p in PERCENTILES}
    out["min"] = v[0]
    out["max"] = v[-1]
    out["mean"] = round(sum(v) / n, 1)
    return out


def _prompt_text(c: Conversation) -> str:
    parts = [c.system] if c.system else []
    parts += [m.content for m in c.prompt_messages]
    return "\n".join(parts)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The tokenizer of a model folder, hub id or "default" (same resolution as train/chat use)."""
    model.resolve_model_path(path)  # a wrong path fails here, before transformers is imported (seconds)
    return model.load_tokenizer(path, trust_remote_code=trust_remote_code)


def _token_lengths(tok, texts: list[str]) -> list[int]:
    out: list[int] = []
    for i in range(0, len(texts), 1024):
        enc = tok(texts[i:i + 1024], add_special_tokens=False)["input_ids"]
        out.extend(len(ids) for ids in enc)
    return out


def dataset_stats(convs: list[Conversation], tokenizer: Any = None) -> dict[str, Any]:
    """A JSON-serialisable summary of conversations; tokenizer: a loaded tokenizer or None."""
    prompts = [_prompt_text(c) for c in convs]
    answers = [c.answer for c in convs if c.answer is not None]
    turns = Counter(sum(1 for m in c.messages if m.role == "user") for c in convs)
    stats: dict[str, Any] = {
        "conversations": len(convs),
        "sources": dict(Counter(c.meta.get("source", "?") for c in convs).most_common()),
        "splits": dict(Counter(c.meta["split"] for c in convs if "split" in c.meta).most_common()),
        "roles": dict(Counter(c.meta["role"] for c in convs if c.meta.get("role")).most_common()),
        "with_system": sum(1 for c in convs if c.system),
        "distinct_systems": len({c.system for c in convs if c.system}),
        "distinct_prompts": len(set(prompts)),
        "without_answer": len(convs) - len(answers),
        "turns": {str(k): v for k, v in sorted(turns.items())},
        "chars": {"prompt": percentiles([len(p) for p in prompts]), "answer": percentiles([len(a) for a in answers])},
    }
    kind = kind_of_dataset(convs)
    stats["kind"] = kind
    rejects = [rejected(c) for c in convs] if kind == PAIR else []
    if kind == PAIR:
        stats["pairs"] = len(convs)
        stats["equal_answers"] = sum(1 for c, r in zip(convs, rejects) if c.answer.strip() == r.strip())
        stats["chars"]["rejected"] = percentiles([len(r) for r in rejects])
        mix = pair_mix(convs)
        if mix:
            stats["pair_mix"] = mix
    elif kind == JUDGED:
        stats["desirable"] = sum(1 for c in convs if label(c))
        stats["undesirable"] = len(convs) - stats["desirable"]
    if tokenizer is not None:
        stats["tokens"] = {"prompt": percentiles(_token_lengths(tokenizer, prompts)),
                           "answer": percentiles(_token_lengths(tokenizer, answers))}
        if rejects:
            stats["tokens"]["rejected"] = percentiles(_token_lengths(tokenizer, rejects))
    return stats


def pair_mix(convs: list[Conversation]) -> dict[str, int]:
    """{strategy or strategy/kind: pairs} of the pairs `data make-pairs` wrote (meta.made_by; no meta.strategy:
    reference), e.g. {"reference": 10, "rank": 4, "negatives/loop": 10}; {} for pairs from elsewhere."""
    found: Counter = Counter()
    for c in convs:
        if "made_by" in c.meta:
            strategy = str(c.meta.get("strategy", "reference"))
            kind = c.meta.get("negative")
            found[f"{strategy}/{kind}" if kind else strategy] += 1
    return dict(found.most_common())


def equal_answers_warning(stats: dict[str, Any]) -> str | None:
    """The warning for pairs whose chosen and rejected answers are the same text, or None."""
    n = stats.get("equal_answers", 0)
    if not n:
        return None
    return (f"warning: {n:,} of {stats['pairs']:,} pairs have the same chosen and rejected answer (expected two "
            "different answers: such a pair teaches nothing)")


def render_stats(stats: dict[str, Any], title: str) -> None:
    """Print the summary as rich tables."""
    from rich.console import Console  # rich is for this printout only: it costs the CLI start
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{title}[/bold]", soft_wrap=True)
    t = Table(show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("conversations", f"{stats['conversations']:,}")
    kind = stats.get("kind", "plain")
    t.add_row("kind", {"plain": "plain (prompt and answer)", "pair": "pairs (chosen and rejected)",
                       "judged": "judged answers (label true/false)"}[kind])
    if kind == "pair":
        t.add_row("pairs", f"{stats['pairs']:,}")
        t.add_row("equal chosen and rejected", f"{stats['equal_answers']:,}")
        if stats.get("pair_mix"):
            t.add_row("made by (make-pairs)", ", ".join(f"{k} {n:,}" for k, n in stats["pair_mix"].items()))
    elif kind == "judged":
        t.add_row("desirable / undesirable", f"{stats['desirable']:,} / {stats['undesirable']:,}")
    for k in ("sources", "splits"):
        if stats[k]:
            t.add_row(k, ", ".join(f"{n} {c:,}" for n, c in stats[k].items()))
    t.add_row("with system prompt", f"{stats['with_system']:,} ({stats['distinct_systems']} distinct)")
    t.add_row("distinct prompts", f"{stats['distinct_prompts']:,}")
    if stats["without_answer"]:
        t.add_row("without answer", f"{stats['without_answer']:,}")
    t.add_row("user turns", ", ".join(f"{k}: {v:,}" for k, v in stats["turns"].items()))
    console.print(t)
    if stats["roles"]:
        r = Table(title="roles", title_justify="left")
        r.add_column("role")
        r.add_column("conversations", justify="right")
        for name, n in stats["roles"].items():
            r.add_row(name, f"{n:,}")
        console.print(r)
    lengths = Table(title="lengths", title_justify="left")
    lengths.add_column("")
    for col in ("p50", "p90", "p99", "max", "mean"):
        lengths.add_column(col, justify="right")
    for unit in ("chars", "tokens"):
        for part in ("prompt", "answer", "rejected"):
            if unit in stats and part in stats[unit]:
                s = stats[unit][part]
                lengths.add_row(f"{part} {unit}", *(f"{s[c]:,}" for c in ("p50", "p90", "p99", "max", "mean")))
    console.print(lengths)
