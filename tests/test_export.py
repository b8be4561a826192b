"""`tunesmith export ADAPTER -o OUT --merge`: a standalone folder whose logits equal base + adapter."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.cli import main
from tunesmith.conversation import Conversation, Message
from tunesmith.template import TEMPLATE_NAMES, load_template, render_text, resolve_template

CONV = Conversation([Message("user", "你好"), Message("assistant", "吾乃李白。"), Message("user", "饮酒否？")])


def _adapter(model_dir, out, template: str, system: str | None = "你是李白"):
    """A LoRA adapter with random (non-zero) weights, saved the way training saves it."""
    from peft import LoraConfig, get_peft_model

    from tunesmith.train.adapter import save_adapter

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    tpl = resolve_template(template, tok, default_system=system)
    save_adapter(model, tok, tpl, out)
    return out


@pytest.mark.parametrize("arch", ["qwen2", "glm"])
def test_merged_export_matches_base_plus_adapter(tiny_model_factory, tmp_path, arch):
    from peft import PeftModel

    model_dir = tiny_model_factory(arch)
    adapter = _adapter(model_dir, tmp_path / "adapter", "auto")
    out = tmp_path / "merged"
    assert main(["export", str(adapter), "-o", str(out), "--merge"]) == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    assert load_template(out) == load_template(adapter)

    ids = torch.tensor([AutoTokenizer.from_pretrained(out)("你好，吾乃李白，今日饮酒三百杯。").input_ids])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        plain = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter)).eval()(ids).logits
    assert (tuned - plain).abs().max() > 1e-2  # the adapter changes the model ...
    assert (merged - tuned).abs().max() < 1e-4  # ... and the merged folder is exactly base + adapter


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_exported_chat_template_renders_like_training(tiny_qwen2, tmp_path, name):
    adapter = _adapter(tiny_qwen2, tmp_path / "adapter", name)
    out = tmp_path / "copy"
    assert main(["export", str(adapter), "-o", str(out), "--no-merge"]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(out)
    tpl = load_template(out)
    msgs = [{"role": m.role, "content": m.content} for m in CONV.messages]
    for system in (None, "你是杜甫"):
        conv_msgs = ([{"role": "system", "content": system}] if system else []) + msgs
        got = tok.apply_chat_template(conv_msgs, tokenize=False, add_generation_prompt=True)
        assert got == render_text(tok, tpl, system, CONV.messages, add_generation_prompt=True)
        full = conv_msgs + [{"role": "assistant", "content": "不饮。"}]
        got = tok.apply_chat_template(full, tokenize=False)
        assert got == render_text(tok, tpl, system, [*CONV.messages, Message("assistant", "不饮。")])


def test_export_errors_exit_2(tmp_path, capsys, tiny_qwen2):
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x")]) == 2
    assert "not a LoRA adapter folder" in capsys.readouterr().err
    adapter = _adapter(tiny_qwen2, tmp_path / "adapter", "chatml")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["export", str(adapter), "-o", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    assert main(["export", str(adapter), "-o", str(tmp_path / "y")]) == 2
    assert "no such model folder" in capsys.readouterr().err
