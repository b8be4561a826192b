"""`tunesmith export --gguf`: the merged model as one GGUF file that transformers loads back with the same
logits (within each type's rounding), the same tokenizer and the saved chat template; and its Modelfile."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.cli import main
from tunesmith.template import load_template, to_jinja

# largest |logit difference| allowed against the fp32 merge, on logits of magnitude ~1 (tiny models)
TOLERANCE = {"f32": 1e-5, "f16": 2e-3, "q8_0": 3e-2}
TEXT = "床前明月光，疑是地上霜。Hello world <|im_end|>"


def _merged(model_dir, adapter):
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("gguf_type", ["f32", "f16", "q8_0"])
def test_the_gguf_file_loads_back_with_the_merged_logits(tiny_model_factory, make_adapter, tmp_path, arch, gguf_type):
    model_dir = tiny_model_factory(arch)
    adapter = make_adapter(model_dir, seed=21, default_system="你是李白")
    out = tmp_path / "gguf"
    assert main(["export", str(adapter), "-o", str(out), "--gguf", gguf_type]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf", "template.json"]

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(TEXT, return_tensors="pt").input_ids
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32).eval()
    with torch.no_grad():
        want, got = _merged(model_dir, adapter)(ids).logits, loaded(ids).logits
    assert want.abs().max() > 0.1  # logits that can tell a wrong tensor from a right one
    assert (want - got).abs().max().item() < TOLERANCE[gguf_type]

    gguf_tok = AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")
    assert gguf_tok(TEXT).input_ids == tok(TEXT).input_ids and gguf_tok.eos_token == tok.eos_token
    # the chat template in the file is the adapter's, persona included
    assert gguf_tok.chat_template == to_jinja(load_template(adapter), tok)


def test_the_modelfile_carries_template_persona_and_stops(tiny_qwen2, make_adapter, tmp_path):
    adapter = make_adapter(tiny_qwen2, seed=22, template="chatml", default_system="你是李白")
    out = tmp_path / "gguf"
    assert main(["export", str(adapter), "-o", str(out), "--gguf", "f16"]) == 0
    text = (out / "Modelfile").read_text(encoding="utf-8")
    assert text.startswith("FROM ./model.gguf\n")
    assert ('TEMPLATE """{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ range .Messages }}'
            '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n{{ else if eq .Role "assistant" }}'
            '<|im_start|>assistant\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}<|im_start|>assistant\n"""') in text
    assert 'SYSTEM """你是李白"""' in text and 'PARAMETER stop "<|im_end|>"' in text


@pytest.mark.parametrize("args, message", [
    (["--gguf", "q4_k"], "f16, q8_0, f32"),
    (["--gguf", "f16", "--no-merge"], "drop --no-merge"),
    (["--gguf", "f16", "--dtype", "bf16"], "drop --no-merge and --dtype"),
])
def test_bad_gguf_options_exit_2_and_write_nothing(libai_adapter, tmp_path, capsys, args, message):
    out = tmp_path / "gguf"
    assert main(["export", str(libai_adapter), "-o", str(out), *args]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_an_unsupported_architecture_is_refused(tiny_model_factory, make_adapter, tmp_path, capsys):
    adapter = make_adapter(tiny_model_factory("glm"), seed=23)
    out = tmp_path / "gguf"
    assert main(["export", str(adapter), "-o", str(out), "--gguf", "f16"]) == 2
    assert "not supported yet" in capsys.readouterr().err and not out.exists()


QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")


def _split_then_bytes(regex: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}


@pytest.mark.parametrize("pre, name", [
    ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),  # the tiny models, SmolLM here
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                            {"type": "ByteLevel", "use_regex": True}]}, "smollm"),
    (_split_then_bytes(QWEN2_SPLIT), "qwen2"),
    (_split_then_bytes(LLAMA3_SPLIT), "llama-bpe"),
    ({"type": "Metaspace"}, "default"),
    (None, "default"),
])
def test_the_pre_tokenizer_is_named_as_llama_cpp_names_it(pre, name):
    from tunesmith.export_gguf import pre_tokenizer_name

    assert pre_tokenizer_name(pre) == name
