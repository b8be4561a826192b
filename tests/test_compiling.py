"""torch.compile for training (tunesmith.train.compiling): the layers compile once for every batch shape and give
the eager loss and gradients; `compile: auto` decides from the measured step time; the config takes the spellings."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from tests.support import packed_lora_model
from tests.test_shared_prefix import _samples
from tunesmith.errors import ConfigError
from tunesmith.train import compiling
from tunesmith.train.compiling import CompileCallback, compile_layers, decoder_layers, uncompile_layers, worth_compiling


def test_compiled_layers_give_the_eager_loss_and_gradients_without_recompiling_per_batch(tiny_qwen2):
    from torch._dynamo.utils import counters

    from tunesmith.train.dataset import PackedCollator
    from tunesmith.train.trainer import answer_loss_sum, output_head

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    model = packed_lora_model(tiny_qwen2)
    model.train()
    # three batches of different lengths, with and without shared prefixes: one compile serves them all
    batches = [PackedCollator(share_prefixes=share)(_samples(tok, n=n, seed=n))
               for n, share in ((8, True), (5, True), (6, False))]
    assert len({b["input_ids"].shape[1] for b in batches}) == 3

    def loss_and_grads(batch):
        model.zero_grad()
        s, n = answer_loss_sum(model, batch, output_head(model))
        (s / n).backward()
        return (s / n).item(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}

    eager = [loss_and_grads(b) for b in batches]
    torch._dynamo.reset()
    counters.clear()
    assert compile_layers(model) == len(decoder_layers(model)) == model.config.num_hidden_layers
    compiled = [loss_and_grads(b) for b in batches]
    for (ref_loss, ref_grads), (loss, grads) in zip(eager, compiled):
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        for k, g in ref_grads.items():
            torch.testing.assert_close(grads[k], g, rtol=1e-3, atol=1e-5)
    # each compiled region (a layer's halves around the eager attention) compiled at most twice: once static,
    # once dynamic when the length first changed; the third length reuses the dynamic graph
    frames = counters["stats"]["unique_graphs"]
    assert 0 < frames <= 2 * 3, dict(counters["stats"])
    embeddings_out = model.get_input_embeddings()(batches[0]["input_ids"])
    assert embeddings_out.requires_grad  # compile_layers' hook: layer 0 sees the same input kind every step
    uncompile_layers(model)
    assert all(layer._compiled_call_impl is None for layer in decoder_layers(model))
    assert not model.get_input_embeddings()(batches[0]["input_ids"]).requires_grad  # the hook is gone again
    torch._dynamo.reset()


def test_auto_compiles_only_when_the_steps_left_win_back_the_compile(monkeypatch):
    on, why = worth_compiling(step_seconds=3.0, steps_left=498)
    assert on and "498 steps left" in why
    assert not worth_compiling(step_seconds=3.0, steps_left=58)[0]  # the demo's 60 steps: not worth it
    first = next(n for n in range(1, 10_000) if worth_compiling(3.0, n)[0])
    saving = 3.0 * (1 - compiling.COMPILED_STEP_FRACTION)
    assert (first - 1) * saving <= compiling.COMPILE_SECONDS < first * saving + 1e-9
    assert all(worth_compiling(3.0, n)[0] for n in range(first, first + 50))

class _State:
    def __init__(self, step, max_steps):
        self.global_step, self.max_steps = step, max_steps


@pytest.mark.parametrize(("max_steps", "device", "expect"), [(600, "cpu", True), (10, "cpu", False),
                                                             (600, "cuda", False)])
def test_auto_callback_decides_after_the_second_step(monkeypatch, capsys, max_steps, device, expect):
    calls = []
    monkeypatch.setattr(compiling, "compile_layers", lambda model: calls.append(model) or 30)
    clock = iter([100.0, 102.5, 999.0])  # step 1 ends at 100 s, step 2 at 102.5 s: 2.5 s a step
    monkeypatch.setattr(compiling.time, "perf_counter", lambda: next(clock))
    cb = CompileCallback("auto", device)
    model = object()
    for step in (1, 2, 3):
        cb.on_step_end(None, _State(step, max_steps), None, model=model)
    out = capsys.readouterr().out
    assert (calls == [model]) is expect
    assert ("compile: on, 30 decoder layers" in out) is expect
    assert "2.5 s/step eager" in out if device == "cpu" else "measured on CPUs only" in out


def test_true_compiles_before_the_first_step_and_false_never(monkeypatch):
    calls = []
    monkeypatch.setattr(compiling, "compile_layers", lambda model: calls.append(model) or 2)
    CompileCallback("true", "cpu").on_train_begin(None, _State(0, 5), None, model="m")
    cb = CompileCallback("false", "cpu")
    cb.on_train_begin(None, _State(0, 5), None, model="n")
    for step in (1, 2, 3):
        cb.on_step_end(None, _State(step, 10_000), None, model="n")
    assert calls == ["m"]


def test_no_compiler_means_eager_with_the_reason(monkeypatch, capsys):
    monkeypatch.setattr(compiling.shutil, "which", lambda name: None)
    monkeypatch.setattr(compiling, "compile_layers", lambda model: pytest.fail("compiled without a compiler"))
    CompileCallback("true", "cpu").on_train_begin(None, _State(0, 5), None, model="m")
    assert "compile: off (no C++ compiler (g++) found)" in capsys.readouterr().out


@pytest.mark.parametrize(("given", "mode"), [(True, "true"), (False, "false"), ("auto", "auto"), ("yes", "true"),
                                             ("Off", "false")])
def test_config_takes_the_spellings_of_compile(given, mode):
    from tunesmith.train.config import load_config

    assert load_config(None, base={"model": "default", "data": {"train": "t.jsonl"}, "compile": given}).compile == mode
    assert load_config(None, base={"model": "default", "data": {"train": "t.jsonl"}}).compile == "auto"


def test_config_names_a_bad_compile_value():
    from tunesmith.train.config import load_config

    with pytest.raises(ConfigError, match="compile: 'sometimes' is not one of auto, true, false"):
        load_config(None, base={"model": "default", "data": {"train": "t.jsonl"}, "compile": "sometimes"})


def test_checkpointing_or_quantization_keep_the_run_eager(monkeypatch, capsys):
    monkeypatch.setattr(compiling, "compile_layers", lambda model: pytest.fail("compiled a blocked run"))
    CompileCallback("true", "cpu", blocked="gradient checkpointing is on").on_train_begin(None, _State(0, 5), None,
                                                                                         model="m")
    assert "compile: off (gradient checkpointing is on)" in capsys.readouterr().out
