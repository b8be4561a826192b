"""quantization="int8": int8 base weights under the engine (torch's dynamic int8 on a CPU), LoRA untouched."""

from __future__ import annotations

import pytest
import torch

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError
from tunesmith.infer.engine import Engine, GenerationOptions

Q = [Message("user", "你好，请问你是谁？")]


@pytest.fixture(scope="module")
def adapter(tiny_qwen2, make_adapter):
    return str(make_adapter(tiny_qwen2, seed=1, default_system="你是李白"))


@pytest.fixture(scope="module")
def pair(tiny_qwen2, adapter):
    made = {q: Engine.load(str(tiny_qwen2), {"libai": adapter}, device="cpu", quantization=q)
            for q in ("none", "int8")}
    yield made
    for e in made.values():
        e.close()


def test_base_linears_are_int8_and_lora_stays_float(pair):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    model = pair["int8"].model
    base = [m for n, m in model.named_modules() if isinstance(m, DynamicInt8Linear)]
    lora = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" in n]
    plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and "lora_" not in n]
    assert base and lora and not plain  # every base linear layer is int8 on a CPU
    assert all(m.weight().dtype == torch.qint8 for m in base)
    assert all(m.weight.dtype == torch.float32 for m in lora)


def test_int8_logits_stay_close_to_fp32_with_and_without_the_adapter(pair):
    for adapter in ("base", "libai"):
        ids = pair["none"].prompt_ids(Q, adapter=adapter)
        logits = {}
        for q, eng in pair.items():
            with eng.adapters.activate(adapter), torch.inference_mode():
                logits[q] = eng.model(input_ids=torch.tensor([ids])).logits[0, -1]
        err = (logits["int8"] - logits["none"]).abs().max() / logits["none"].abs().max()
        assert err < 0.05, (adapter, float(err))  # per-channel int8: about 1 % of the largest logit here


def test_int8_engine_answers_streams_and_refuses_to_merge(pair):
    eng = pair["int8"]
    pieces = list(eng.stream(Q, adapter="libai", options=GenerationOptions(max_new_tokens=8)))
    assert "".join(pieces) == eng.chat(Q, adapter="libai", options=GenerationOptions(max_new_tokens=8))
    assert not eng.can_merge() and eng.merge("libai") is False
    assert pair["none"].can_merge()


def test_an_unknown_quantization_is_a_config_error(tiny_qwen2):
    with pytest.raises(ConfigError, match="quantization: expected one of none, 8bit, 4bit, int8"):
        Engine.load(str(tiny_qwen2), device="cpu", quantization="int4")
