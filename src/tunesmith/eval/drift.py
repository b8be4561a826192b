"""Long conversations: does the model stay in character twelve turns in, on its own answers?

    from tunesmith.eval.drift import load_conversations, answer_conversations, drift_scores
    scripts = load_conversations()          # resources/long_conversations.jsonl
    stats = answer_conversations(engine, store, "base", "base", template, sig, scripts, role, persona, options)
    block = drift_scores(scripts, role, persona, store.done("base", sig), classifier)
    block["in_character_drift"]             # late - early, in points: negative when the role fades

A scripted conversation fixes the user's turns; the model's own answers become the history, so every model
is asked turn k after its own turns 1..k-1.  All conversations of a model run turn by turn, one batched
Engine.generate call per turn index over every conversation that has that turn, each reply appended before
the next user turn.  Some user turns are identity probes ("你是谁？", "Who are you?") marked in the script,
placed early (turn 1-2), in the middle and late (the last two turns).

Depth: the turns of an n-turn conversation fall in thirds, early (turn index k < n/3), late (k >= n - n/3)
and middle.  Per depth:
    in_character_DEPTH   the in-character rate of the identity-probe answers (in_character.verdict, as for
                         the identity questions)
    attribution_DEPTH    the share of all the answers at that depth that the role classifier attributes to
                         the role (eval/attribution.py; only with a classifier that knows the role)
    DRIFT                late - early, in points (percentage points): in_character_drift, attribution_drift

Prompt length: Engine.generate fits every prompt to the model's context minus max_new_tokens
(infer/history.py: the oldest turns are dropped first, the system text never); 12 turns of 64-token answers
and short user turns stay well inside SmolLM2's 2,048 tokens, so nothing is dropped there.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunesmith.conversation import Message
from tunesmith.data.records import read_records
from tunesmith.errors import DataError
from tunesmith.eval.in_character import IN_CHARACTER, RESOURCES, VERDICT_ORDER, load_rules, verdict
from tunesmith.eval.testset import prompt_id

DRIFT = "drift"  # the metrics key (and report set) of the long conversations
LONG_SET = "long_conversation"  # the set name of their answers in predictions.jsonl
CONVERSATION_FILE = RESOURCES / "long_conversations.jsonl"
DEPTHS = ("early", "middle", "late")
DESCRIPTION = (
    "long conversations: scripted user turns, the model's own answers as the history (one batched generate call "
    "per turn index over all conversations); identity probes (你是谁？, Who are you?) early, in the middle and "
    "late; depth = the turn's third of its conversation; in_character_DEPTH = the in-character rate of the "
    "identity-probe answers (the identity verdict), attribution_DEPTH = the share of all answers at that depth "
    "the role classifier attributes to the role; drift = late - early, in points"
)


def load_conversations(path: str | Path | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Scripts from a JSONL file {id?, lang?, turns: [{user: str, probe?: "identity" | null}, ...]} (default: the
    bundled one); `limit` keeps the first N."""
    p = Path(path) if path else CONVERSATION_FILE
    if not p.is_file():
        raise DataError('long-conversation file not found (expected JSONL lines {"turns": [{"user": str, '
                        '"probe": "identity" | null}, ...]})', str(p))
    out = []
    for where, rec in read_records(p):
        i = int(where.rsplit(":", 1)[1])
        turns = rec.get("turns") if isinstance(rec, dict) else None
        if not isinstance(turns, list) or len(turns) < 2 or not all(
                isinstance(t, dict) and isinstance(t.get("user"), str) and t["user"].strip()
                and t.get("probe") in (None, "identity") for t in turns):
            raise DataError('expected {"turns": [{"user": str, "probe": "identity" | null}, ...]} with at least '
                            "two turns", where)
        out.append({"id": str(rec.get("id") or f"line{i}"), "lang": str(rec.get("lang") or ""),
                    "turns": [{"user": t["user"], "probe": t.get("probe")} for t in turns]})
    if not out:
        raise DataError("the long-conversation file has no conversations", str(p))
    return out[:limit] if limit else out


def depth_of(k: int, n: int) -> str:
    """early / middle / late: the third of an n-turn conversation that turn index k (0-based) falls in."""
    third = n / 3
    return "early" if k < third else "late" if k >= n - third else "middle"


def _turn_prompt(persona: str | None, history: list[Message], user: str) -> tuple[str, list[Message]]:
    msgs = [*history, Message("user", user)]
    return prompt_id(persona, msgs), msgs


def answer_conversations(engine, store, model: str, adapter: str, template, sig: str, scripts: Sequence[dict],
                         role: str, persona: str | None, options, batch_size: int = 16,
                         batching: str = "padded") -> dict[str, Any]:
    """Run every script turn by turn (one generate call per turn index); answers already in predictions.jsonl
    for these settings are reused, the new ones appended after each turn. Returns timing stats."""
    stats = {"answered": 0, "seconds": 0.0, "generated_tokens": 0}
    done = store.done(model, sig)
    histories: list[list[Message]] = [[] for _ in scripts]
    tok = getattr(engine, "tokenizer", None)
    mode = engine.resolve_batching(batching, options)
    for k in range(max(len(s["turns"]) for s in scripts)):
        live = [c for c, s in enumerate(scripts) if k < len(s["turns"])]
        asked = {c: _turn_prompt(persona, histories[c], scripts[c]["turns"][k]["user"]) for c in live}
        todo = [c for c in live if asked[c][0] not in done]
        if todo:
            t0 = time.perf_counter()
            replies = engine.generate([(persona, asked[c][1]) for c in todo], adapter=adapter, options=options,
                                      batch_size=min(batch_size, len(todo)), template=template, batching=mode)
            dt = time.perf_counter() - t0
            rows = []
            for c, reply in zip(todo, replies):
                n_tok = len(tok(reply, add_special_tokens=False)["input_ids"]) if tok is not None and reply else 0
                turn = scripts[c]["turns"][k]
                rows.append({"model": model, "sig": sig, "set": LONG_SET, "id": asked[c][0], "role": role,
                             "conversation": scripts[c]["id"], "turn": k + 1, "probe": turn["probe"],
                             "question": turn["user"], "prediction": reply, "tokens": n_tok,
                             "seconds": round(dt / len(todo), 4)})
                done[asked[c][0]] = reply
                stats["generated_tokens"] += n_tok
            store.append(rows)
            stats["answered"] += len(todo)
            stats["seconds"] += dt
            print(f"[{model}] long conversations: turn {k + 1}, {len(todo)} answered in {dt:.1f} s "
                  f"({stats['answered']} turns, {stats['seconds']:.1f} s so far)", file=sys.stderr, flush=True)
        for c in live:
            histories[c] = asked[c][1] + [Message("assistant", done[asked[c][0]])]
    return stats


def transcripts(scripts: Sequence[dict], persona: str | None, preds: dict[str, str]) -> list[list[dict[str, Any]]]:
    """Per script, its turns answered so far: {turn (1-based), depth, probe, user, answer} (replayed from the
    answers by prompt id; a conversation stops at its first unanswered turn)."""
    out = []
    for s in scripts:
        history: list[Message] = []
        turns = []
        for k, turn in enumerate(s["turns"]):
            pid, msgs = _turn_prompt(persona, history, turn["user"])
            if pid not in preds:
                break
            turns.append({"turn": k + 1, "depth": depth_of(k, len(s["turns"])), "probe": turn["probe"],
                          "user": turn["user"], "answer": preds[pid]})
            history = msgs + [Message("assistant", preds[pid])]
        out.append(turns)
    return out


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def _drift(block: dict[str, Any], what: str) -> None:
    early, late = block.get(f"{what}_early"), block.get(f"{what}_late")
    block[f"{what}_drift"] = round(100 * (late - early), 4) if early is not None and late is not None else None


def drift_scores(scripts: Sequence[dict], role: str, persona: str | None, preds: dict[str, str],
                 classifier=None) -> dict[str, Any]:
    """The drift block of one model: n / n_total (turns answered / scripted), per depth the in-character rate of
    the identity probes and (with a classifier that knows the role) the attribution share of all answers,
    both drifts (late - early, in points) and the probe verdict counts per depth."""
    rules = load_rules()
    done = transcripts(scripts, persona, preds)
    answered = [t for conv in done for t in conv]
    block: dict[str, Any] = {"n": len(answered), "n_total": sum(len(s["turns"]) for s in scripts),
                             "conversations": len(scripts)}
    verdicts: dict[str, Counter] = {d: Counter() for d in DEPTHS}
    for t in answered:
        if t["probe"] == "identity":
            verdicts[t["depth"]][verdict(t["answer"], role, rules, t["user"], persona)[0]] += 1
    for d in DEPTHS:
        n = sum(verdicts[d].values())
        block[f"in_character_{d}"] = _rate(sum(verdicts[d][c] for c in IN_CHARACTER), n)
        block[f"probes_{d}"] = n
    _drift(block, "in_character")
    if classifier is not None and role in classifier.roles:
        for d in DEPTHS:
            texts = [t["answer"] for t in answered if t["depth"] == d]
            said = classifier.predict(texts)
            block[f"attribution_{d}"] = _rate(sum(p == role for p in said), len(texts))
        _drift(block, "attribution")
    block["verdicts"] = {d: {c: verdicts[d][c] for c in VERDICT_ORDER if verdicts[d][c]} for d in DEPTHS}
    return block


__all__ = ["DRIFT", "LONG_SET", "DEPTHS", "DESCRIPTION", "load_conversations", "depth_of", "answer_conversations",
           "transcripts", "drift_scores"]
