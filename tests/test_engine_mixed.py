"""Mixed-adapter batches (engine.enqueue(mix_adapters=True)): requests for the base and for several adapters run
as one padded batch, each row through its own LoRA, with the answers each would get alone."""

from __future__ import annotations

import pytest

from tunesmith.conversation import Message
from tunesmith.infer.engine import Engine, GenerationOptions

QUESTIONS = {"base": "你好，请问你是谁？", "libai": "写一首诗", "ie": "Tell me about the moon."}


@pytest.fixture(scope="module")
def engine(tiny_qwen2, make_adapter):
    adapters = {"libai": str(make_adapter(tiny_qwen2, seed=1, default_system="你是李白")),
                "ie": str(make_adapter(tiny_qwen2, seed=2))}
    eng = Engine.load(str(tiny_qwen2), adapters, device="cpu")
    yield eng
    eng.close()


def _batches(engine: Engine, monkeypatch) -> list[list[str]]:
    """Record the adapters of each padded batch the worker runs."""
    seen: list[list[str]] = []
    real = engine._run_mixed

    def spy(requests):
        seen.append([r.adapter for r in requests])
        return real(requests)

    monkeypatch.setattr(engine, "_run_mixed", spy)
    return seen


def _ask_together(engine: Engine, opts: GenerationOptions, mix: bool = True) -> tuple[dict, list[str]]:
    order: list[str] = []  # which adapter each streamed piece came from, in arrival order
    reqs = {}
    with engine.incoming():  # hold the worker until all three are queued, as a server's requests arrive together
        for name, q in QUESTIONS.items():
            ids = engine.prompt_ids([Message("user", q)], adapter=name, options=opts)
            reqs[name] = engine.enqueue(ids, name, opts, lambda _c, _p, name=name: order.append(name),
                                        mix_adapters=mix)
    return {name: r.future.result(timeout=120)[0] for name, r in reqs.items()}, order


def test_one_batch_answers_each_adapter_as_it_answers_alone(engine, monkeypatch):
    opts = GenerationOptions(max_new_tokens=12)
    alone = {name: engine.complete([Message("user", q)], adapter=name, options=opts)[0]
             for name, q in QUESTIONS.items()}
    assert len({c.text for c in alone.values()}) == 3  # the three adapters answer differently
    batches = _batches(engine, monkeypatch)
    together, order = _ask_together(engine, opts)
    assert batches == [list(QUESTIONS)]  # one batch held all three
    for name in QUESTIONS:
        assert (together[name].text, together[name].completion_tokens, together[name].finish_reason) == \
            (alone[name].text, alone[name].completion_tokens, alone[name].finish_reason)
    # the pieces of the three answers arrive interleaved, step by step, not one answer after another
    first_of = {name: order.index(name) for name in QUESTIONS}
    last_of = {name: len(order) - 1 - order[::-1].index(name) for name in QUESTIONS}
    assert max(first_of.values()) < min(last_of.values())


def test_a_merged_adapter_is_unmerged_before_a_mixed_batch(engine, monkeypatch):
    opts = GenerationOptions(max_new_tokens=8)
    alone = {name: engine.chat([Message("user", q)], adapter=name, options=opts) for name, q in QUESTIONS.items()}
    assert engine.merge("libai")  # the fp32 tiny model merges
    try:
        together, _ = _ask_together(engine, opts)
        assert {n: c.text for n, c in together.items()} == alone
        assert engine.adapters.merged is None
    finally:
        engine.unmerge()


def test_beams_and_an_unmixable_model_batch_per_adapter(engine, tiny_qwen2, monkeypatch):
    batches = _batches(engine, monkeypatch)
    beams = GenerationOptions(max_new_tokens=6, num_beams=2)
    alone = {name: engine.chat([Message("user", q)], adapter=name, options=beams) for name, q in QUESTIONS.items()}
    together, _ = _ask_together(engine, beams)
    assert batches == [] and {n: c.text for n, c in together.items()} == alone
    plain = Engine.load(str(tiny_qwen2), device="cpu")  # no adapter: nothing to mix, "base" batches as always
    try:
        req = plain.enqueue(plain.prompt_ids([Message("user", "hi")]), mix_adapters=True,
                            options=GenerationOptions(max_new_tokens=4))
        assert req.mix_key is None and req.future.result(timeout=60)[0].completion_tokens > 0
    finally:
        plain.close()
