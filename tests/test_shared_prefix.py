"""Shared prompt prefixes in packed rows: the layout, and that loss and gradients equal the plain packed row."""

from __future__ import annotations

import json
import random

import pytest
import torch
from transformers import AutoTokenizer

from tests.support import packed_lora_model, write_conversations
from tunesmith.conversation import Conversation
from tunesmith.template import resolve_template
from tunesmith.train.shared_prefix import IGNORE_INDEX, plan_row, prefix_groups, saving_line

PERSONAS = ["你是李白，唐代诗人，字太白，号青莲居士。说话豪放，爱酒爱月，常以诗句作答。",
            "你是孙悟空，齐天大圣，花果山水帘洞美猴王。说话直爽，自称俺老孙。"]


def _convs(n: int, seed: int = 0) -> list[Conversation]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = "".join(rng.choice("天地人山水风月酒诗剑") for _ in range(rng.randint(2, 30)))
        out.append(Conversation.single_turn(q, "吾答曰：" + q[::-1], system=PERSONAS[i % 2] if i % 5 else None))
    return out


def _samples(tok, n=8, seed=0):
    from tunesmith.train.dataset import encode_all

    samples, _ = encode_all(_convs(n, seed), tok, resolve_template("chatml", tok), max_source_len=512,
                            max_target_len=256)
    return samples


def _learned(labels):
    return sorted(t for t in labels if t != IGNORE_INDEX)


def test_row_lays_each_shared_prefix_once_and_keeps_every_learned_token(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    samples = _samples(tok)
    row = plan_row(samples)
    groups = [g for g in prefix_groups(samples) if g[0]]
    assert len(groups) == 2  # one per persona; the conversations without a system text share nothing long
    assert len(row.ids) == sum(len(s["input_ids"]) for s in samples) - sum(p * (len(m) - 1) for p, m in groups)
    assert sorted(i for _, i in row.placed) == list(range(len(samples)))
    # each learned token once, with its own context: a member's tokens after its prefix, positions continuing
    assert _learned(row.labels) == _learned(t for s in samples for t in [IGNORE_INDEX] + s["labels"][1:])
    for (a, b, pa, pb), i in row.placed:
        shared = pb - pa
        assert row.ids[pa:pb] + row.ids[a:b] == samples[i]["input_ids"]
        assert row.positions[a:b] == list(range(shared, len(samples[i]["input_ids"])))
        assert all(t == IGNORE_INDEX for t in samples[i]["labels"][:shared + 1])
    # the plain row is the samples end to end, in order
    plain = plan_row(samples, share=False)
    assert plain.ids == [t for s in samples for t in s["input_ids"]] and all(p == a for a, _, p, _ in plain.segments)


def test_prefix_never_covers_a_learned_token():
    learned_early = {"input_ids": list(range(40)), "labels": [IGNORE_INDEX] * 5 + list(range(5, 40))}
    late = {"input_ids": list(range(40)), "labels": [IGNORE_INDEX] * 30 + list(range(30, 40))}
    (shared, members), = prefix_groups([learned_early, late, dict(late)], min_shared=2)
    assert shared == 4 and len(members) == 3
    assert prefix_groups([learned_early, late], min_shared=16) == [(0, [0]), (0, [1])]


def test_saving_line_says_what_share_of_the_tokens_is_computed():
    a = {"input_ids": list(range(100)) + [7] * 20, "labels": [IGNORE_INDEX] * 110 + [7] * 10}
    line = saving_line([a] * 8, 4)
    # two batches of 4: the 109 tokens before the last one ahead of the first learned token are laid once,
    # + 4 x 11 of 4 x 120 tokens = 32%
    assert line.startswith("a batch of 4 conversations computes 32% of their tokens") and "first 2 batches" in line


@pytest.mark.parametrize("arch", ["qwen2", "llama", "glm"])
def test_shared_prefix_row_gives_the_plain_rows_loss_and_gradients(tiny_model_factory, arch):
    from tunesmith.train.attention import check_shared_prefixes
    from tunesmith.train.dataset import PackedCollator
    from tunesmith.train.trainer import answer_loss_sum, output_head

    path = tiny_model_factory(arch)
    tok = AutoTokenizer.from_pretrained(path)
    model = packed_lora_model(path)
    samples = _samples(tok)
    shared = PackedCollator(share_prefixes=True, sample_weights=True)(samples)
    plain = PackedCollator(sample_weights=True)(samples)
    assert "packed_segments" in shared and shared["input_ids"].shape[1] < plain["input_ids"].shape[1]
    assert shared["num_tokens"] == plain["num_tokens"]  # the conversations' tokens, what tokens/s counts

    def loss_and_grads(batch, weighted):
        batch = dict(batch) if weighted else {k: v for k, v in batch.items() if k != "loss_weights"}
        model.zero_grad()
        s, n = answer_loss_sum(model, batch, output_head(model))
        (s / n).backward()
        return (s / n).item(), float(n), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}

    for weighted in (False, True):
        ref_loss, ref_n, ref_grads = loss_and_grads(plain, weighted)
        loss, n, grads = loss_and_grads(shared, weighted)
        assert n == pytest.approx(ref_n) and loss == pytest.approx(ref_loss, rel=1e-5)
        for k, g in ref_grads.items():
            torch.testing.assert_close(grads[k], g, rtol=1e-4, atol=1e-6)
    assert check_shared_prefixes(model, len(tok), "cpu") < 1e-4
    # an attention that does not know the segments lets a member see other members: the probe catches it
    model.base_model.model.set_attn_implementation("sdpa")
    assert check_shared_prefixes(model, len(tok), "cpu") > 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_recomputed_attention_backward_gives_sdpas_gradients(tiny_qwen2, monkeypatch, dtype):
    """The packed attention's CPU backward (recomputed softmax) against sdpa's own, on plain and shared rows."""
    from tunesmith.train import attention
    from tunesmith.train.dataset import PackedCollator
    from tunesmith.train.trainer import answer_loss_sum, output_head

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    model = packed_lora_model(tiny_qwen2).to(dtype)
    samples = _samples(tok)
    calls = []
    original = attention.segment_attention
    monkeypatch.setattr(attention, "segment_attention", lambda *a: calls.append(1) or original(*a))

    def loss_and_grads(batch):
        model.zero_grad()
        s, n = answer_loss_sum(model, dict(batch), output_head(model))
        (s / n).backward()
        return (s / n).item(), {k: p.grad.float().clone() for k, p in model.named_parameters() if p.requires_grad}

    for share in (False, True):
        batch = PackedCollator(share_prefixes=share)(samples)
        monkeypatch.setattr(attention, "RECOMPUTE_BACKWARD_ON_CPU", False)
        ref_loss, ref_grads = loss_and_grads(batch)
        assert not calls
        monkeypatch.setattr(attention, "RECOMPUTE_BACKWARD_ON_CPU", True)
        loss, grads = loss_and_grads(batch)
        assert calls  # the recomputing backward ran
        calls.clear()
        assert loss == pytest.approx(ref_loss, rel=1e-6)  # the same forward
        tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 0.05, "atol": 0.05}
        scale = max(g.abs().max() for g in ref_grads.values())
        for k, g in ref_grads.items():
            torch.testing.assert_close(grads[k] / scale, g / scale, **tol)
    # conversations past RECOMPUTE_MAX_CELLS keep sdpa's backward
    monkeypatch.setattr(attention, "RECOMPUTE_MAX_CELLS", 4)
    loss_and_grads(PackedCollator()(samples))
    assert not calls


def test_training_shares_prefixes_by_default_and_not_when_switched_off(tiny_qwen2, tmp_path, capsys):
    from tunesmith.train import train_from_config

    train = write_conversations(tmp_path / "train.jsonl", _convs(24))
    cfg = {"model": str(tiny_qwen2), "data": {"train": str(train)}, "dtype": "fp32", "batch_size": 8,
           "max_steps": 2, "logging_steps": 1, "sample_tokens": 0, "warmup": 0, "device": "cpu", "plot": False}
    on = train_from_config({**cfg, "output_dir": str(tmp_path / "on")})
    log = capsys.readouterr().out
    assert on.summary["shared_prefixes"] is True and "with shared prompt prefixes" in log
    assert "shared prompt prefixes: a batch of 8 conversations computes" in log
    off = train_from_config({**cfg, "output_dir": str(tmp_path / "off"),
                             "data": {**cfg["data"], "share_prefixes": False}})
    assert off.summary["shared_prefixes"] is False
    # the same batches (same seed) learn the same: first-step losses agree
    first = [json.loads((r.output_dir / "log_history.json").read_text())[0]["loss"] for r in (on, off)]
    assert first[0] == pytest.approx(first[1], rel=1e-4)
