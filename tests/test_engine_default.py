"""The engine on the embedded default model (SmolLM2-135M-Instruct): real answers, adapters, beams, streaming."""

from __future__ import annotations

import pytest

from tunesmith.conversation import Message
from tunesmith.infer.engine import Engine, GenerationOptions

pytestmark = pytest.mark.slow

Q = [Message("user", "What is the capital of France?")]


@pytest.fixture(scope="module")
def default_engine(default_model_path, make_adapter):
    import torch

    # One thread: on a CPU shared with other jobs, two OpenMP threads per process wait on each other
    # (a forward pass measured 10x slower); restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    adapter = make_adapter(default_model_path, seed=4)
    eng = Engine.load("default", {"noisy": str(adapter)}, device="cpu")
    yield eng
    eng.close()
    torch.set_num_threads(threads)


def test_default_model_answers_and_streams(default_engine):
    opts = GenerationOptions(max_new_tokens=10)
    answer = default_engine.chat(Q, options=opts)
    assert "Paris" in answer
    assert "".join(default_engine.stream(Q, options=opts)) == answer
    # the prompt is the tokenizer's own chat template, ending with the assistant header
    prompt = default_engine.tokenizer.decode(default_engine.prompt_ids(Q))
    assert prompt.rstrip().endswith("<|im_start|>assistant")


def test_default_model_beams_and_adapter_off_means_base(default_engine):
    beams = default_engine.complete(Q, options=GenerationOptions(max_new_tokens=4, num_beams=2, n=2))
    assert len(beams) == 2 and all(c.text.strip() for c in beams)
    opts = GenerationOptions(max_new_tokens=10)
    noisy = default_engine.chat(Q, adapter="noisy", options=opts)
    base = default_engine.chat(Q, adapter="base", options=opts)
    assert noisy != base and "Paris" in base  # base runs with the adapter disabled, after the adapter ran
