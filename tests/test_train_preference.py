"""Preference tuning on a tiny model: DPO, ORPO and KTO from the CLI, the prompt tokens, the reference, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, TrainerCallback

from tests.support import write_conversations
from tunesmith.cli import main
from tunesmith.conversation import Conversation, Message
from tunesmith.preference import make_judged, make_pair
from tunesmith.template import encode_prompt, resolve_template, stop_token_ids

CHARS = "天地人你我他山水风月酒诗剑"
LOOP = "酒作诗，酒作诗，酒作诗，酒作诗"


def _question(rng: random.Random) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(2, 16)))


def _pairs(n: int, seed: int = 0) -> list[Conversation]:
    """Chosen: 李白 reverses the question; rejected: the loop the issue complains about."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = _question(rng)
        out.append(make_pair([Message("user", q)], "吾乃李白，" + q[::-1] + "也。", LOOP, system="你是李白"))
    return out


def _judged(n: int, seed: int = 0) -> list[Conversation]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = _question(rng)
        good = i % 2 == 0
        out.append(make_judged([Message("user", q)], "吾乃李白，" + q[::-1] + "也。" if good else LOOP, label=good,
                               system="你是李白"))
    return out



@pytest.fixture(scope="module")
def pref_data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pref-data")
    plain = [Conversation.single_turn("山水", "吾乃李白，水山也。", system="你是李白") for _ in range(8)]
    files = {"pairs": _pairs(24), "dev": _pairs(8, seed=1), "judged": _judged(24), "plain": plain}
    return {name: write_conversations(d / f"{name}.jsonl", convs) for name, convs in files.items()}


def _args(model: Path, out: Path, train: Path, *extra: str) -> list[str]:
    return ["train", f"model={model}", f"output_dir={out}", f"data.train={train}", "dtype=fp32", "device=cpu",
            "batch_size=4", "lr=5e-3", "max_steps=2", "logging_steps=1", "eval_steps=2", "sample_tokens=4",
            "warmup=0", *extra]


# -- the prompt tokens ----------------------------------------------------------------------------------
@pytest.mark.parametrize("template", ["auto", "chatml", "plain", "instruction"])
def test_pair_prompt_ids_are_what_inference_sends(tiny_qwen2, template):
    from tunesmith.train.preference_data import encode_judged, encode_pairs

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template(template, tok, default_system="你是李白")
    history = [Message("user", "你好"), Message("assistant", "吾乃李白。"), Message("user", "饮酒否？")]
    pair = make_pair(history, chosen="饮！", rejected=LOOP)
    rows, stats = encode_pairs([pair], tok, tpl, max_source_len=512, max_target_len=256)
    row = rows[0]
    assert row["prompt_ids"] == encode_prompt(tok, tpl, None, history)  # token for token
    assert row["chosen_ids"] != row["rejected_ids"]
    # an answer's ids end with the token that stops generation, so the model learns where to stop
    stops = set(stop_token_ids(tok, tpl))
    assert row["chosen_ids"][-1] in stops and row["rejected_ids"][-1] in stops
    assert tok.decode(row["chosen_ids"], skip_special_tokens=True).strip() == "饮！"
    assert stats.samples == 1 and stats.loss_tokens == len(row["chosen_ids"]) + len(row["rejected_ids"])
    judged, _ = encode_judged([make_judged(history, "饮！", label=True)], tok, tpl, max_source_len=512,
                              max_target_len=256)
    assert judged[0] == {"prompt_ids": row["prompt_ids"], "completion_ids": row["chosen_ids"], "label": True}


def test_answer_cutoff_applies_to_both_answers(tiny_qwen2):
    from tunesmith.train.preference_data import encode_pairs

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("auto", tok)
    rows, stats = encode_pairs(_pairs(3), tok, tpl, max_source_len=512, max_target_len=5)
    assert all(len(r["chosen_ids"]) == 5 and len(r["rejected_ids"]) == 5 for r in rows)
    assert stats.target_cut == 3


# -- the three methods from the CLI --------------------------------------------------------------------
def test_dpo_trains_from_the_cli_and_reports_rewards(tiny_qwen2, pref_data, tmp_path, capsys):
    out = tmp_path / "dpo"
    assert main(_args(tiny_qwen2, out, pref_data["pairs"], "method=dpo", f"data.dev={pref_data['dev']}",
                      "preference.sft_weight=0.5")) == 0
    printed = capsys.readouterr().out
    # step 0: the policy is the reference, so the rewards are 0 (the loss adds the chosen answers' NLL)
    assert "| reward accuracy 0.000 | margin 0.000 (chosen 0.00, rejected 0.00) at step 0" in printed
    assert "ETA" in printed and "reward acc" in printed
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["method"] == "dpo" and s["steps"] == 2 and s["train_tokens"] > 0
    pref = s["preference"]
    assert pref["loss_type"] == "sigmoid" and pref["sft_weight"] == 0.5 and pref["reference"] == "base model"
    assert pref["dev_reward_accuracies"]["initial"] == 0.0
    assert [e["step"] for e in pref["dev_reward_margins"]["per_eval"]] == [0, 2]
    assert s["adapter_is"] == "best" and s["best_checkpoint"].endswith("checkpoint-2")
    adapter = out / "adapter"
    assert (adapter / "template.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert not (adapter / "ref").exists()  # only the trained adapter, not TRL's reference copy
    assert s["adapter_check"]["reload_max_logit_diff"] <= 1e-4
    # TRL's Trainer saves the checkpoints here: each carries the run's template too
    best = Path(s["best_checkpoint"])
    assert (best / "template.json").read_text() == (adapter / "template.json").read_text()
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_orpo_trains_from_the_cli(tiny_qwen2, pref_data, tmp_path):
    out = tmp_path / "orpo"
    assert main(_args(tiny_qwen2, out, pref_data["pairs"], "method=orpo", "data.dev_ratio=0.25")) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["method"] == "orpo" and s["steps"] == 2 and s["preference"]["reference"] is None
    assert "dev_reward_accuracies" in s["preference"]
    assert s["final_train_loss"] < s["first_train_loss"]


def test_kto_trains_from_the_cli_on_judged_answers(tiny_qwen2, pref_data, tmp_path):
    out = tmp_path / "kto"
    assert main(_args(tiny_qwen2, out, pref_data["judged"], "method=kto", "data.dev_ratio=0.25")) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["method"] == "kto" and s["steps"] == 2
    assert "dev_reward_chosen" in s["preference"] and s["data"]["train"]["samples"] == 18


@pytest.mark.parametrize("method, data, expected", [
    ("dpo", "plain", "method 'dpo' trains on pairs"),
    ("kto", "pairs", "method 'kto' trains on judged answers"),
    ("orpo", "judged", "but this data has judged answers"),
])
def test_data_the_method_cannot_use_exits_2(tiny_qwen2, pref_data, tmp_path, capsys, method, data, expected):
    assert main(_args(tiny_qwen2, tmp_path / "x", pref_data[data], f"method={method}")) == 2
    err = capsys.readouterr().err
    assert expected in err and str(pref_data[data]) in err and "Traceback" not in err


def test_kto_needs_two_answers_per_batch(tiny_qwen2, pref_data, tmp_path, capsys):
    assert main(_args(tiny_qwen2, tmp_path / "k", pref_data["judged"], "method=kto", "batch_size=1")) == 2
    assert "batch_size must be at least 2" in capsys.readouterr().err


# -- on top of an SFT adapter --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_adapter(tiny_qwen2, pref_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sft") / "run"
    assert main(_args(tiny_qwen2, out, pref_data["pairs"], "max_steps=3", "template=chatml")) == 0  # chosen = SFT
    return out / "adapter"


def test_dpo_on_an_sft_adapter_starts_from_it_with_it_as_reference(tiny_qwen2, pref_data, sft_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.template import load_template

    out = tmp_path / "dpo-on-sft"
    assert main(_args(tiny_qwen2, out, pref_data["pairs"], "method=dpo", f"init_adapter={sft_adapter}",
                      f"data.dev={pref_data['dev']}", "lr=1e-2")) == 0
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["init_adapter"] == str(sft_adapter) and s["preference"]["reference"] == "init_adapter (frozen copy)"
    # before the first step the policy is the SFT adapter and so is the reference: every reward is 0
    assert s["preference"]["dev_reward_margins"]["initial"] == pytest.approx(0.0, abs=1e-6)
    assert s["dev_losses"][0]["loss"] == pytest.approx(0.693147, abs=1e-5)
    assert load_template(out / "adapter") == load_template(sft_adapter)  # the SFT run's chatml, not auto
    # the result moved away from the SFT adapter, and loads like any adapter
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
        sft = PeftModel.from_pretrained(base, str(sft_adapter)).eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
        dpo = PeftModel.from_pretrained(base, str(out / "adapter")).eval()(ids).logits
    assert (dpo - sft).abs().max() > 1e-3


def test_init_adapter_of_another_model_is_refused(pref_data, sft_adapter, tmp_path, capsys):
    from tunesmith.tiny import build_tiny_model

    wider = build_tiny_model(tmp_path / "wider", "qwen2", hidden_size=96)
    code = main(_args(wider, tmp_path / "x", pref_data["pairs"], "method=dpo", f"init_adapter={sft_adapter}"))
    err = capsys.readouterr().err
    assert code == 2 and "init_adapter=" in err and "Traceback" not in err


def test_a_dpo_adapter_exports_and_chats(tiny_qwen2, pref_data, sft_adapter, tmp_path):
    from tunesmith.infer.engine import Engine, GenerationOptions

    out = tmp_path / "dpo"
    assert main(_args(tiny_qwen2, out, pref_data["pairs"], "method=dpo", f"init_adapter={sft_adapter}")) == 0
    assert main(["export", str(out / "adapter"), "-o", str(tmp_path / "merged"), "--merge"]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    opts = GenerationOptions(max_new_tokens=6)
    question = [Message("user", "山水")]
    eng = Engine.load(str(tiny_qwen2), {"libai": str(out / "adapter")}, device="cpu")
    try:
        with_adapter = eng.complete(question, adapter="libai", options=opts)[0]
    finally:
        eng.close()
    merged = Engine.load(str(tmp_path / "merged"), {}, device="cpu")
    try:
        from_merged = merged.complete(question, options=opts)[0]
    finally:
        merged.close()
    assert with_adapter.completion_tokens > 0
    assert from_merged.text == with_adapter.text


# -- resume ---------------------------------------------------------------------------------------------
class _StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
        return control


def test_dpo_resume_reaches_the_same_result(tiny_qwen2, pref_data, tmp_path):
    from safetensors.torch import load_file

    from tunesmith.train import train_from_config

    def cfg(out):
        return {"model": str(tiny_qwen2), "output_dir": str(out), "method": "dpo", "data": {"train": str(
            pref_data["pairs"])}, "dtype": "fp32", "device": "cpu", "batch_size": 4, "lr": 5e-3, "max_steps": 4,
            "save_steps": 2, "save_total_limit": 5, "warmup": 0, "sample_tokens": 0}

    full = train_from_config(cfg(tmp_path / "full"))
    cut = train_from_config(cfg(tmp_path / "cut"), callbacks=[_StopAt(2)])
    assert cut.summary["steps"] == 2
    resumed = train_from_config(cfg(tmp_path / "cut"), ["resume=true"])
    assert resumed.summary["resumed_from"].endswith("checkpoint-2") and resumed.summary["steps"] == 4
    wa = load_file(full.adapter_dir / "adapter_model.safetensors")
    wb = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-6)
    again = train_from_config(cfg(tmp_path / "cut"), ["resume=true"])  # finished: nothing more to train
    assert again.summary["steps"] == 4
