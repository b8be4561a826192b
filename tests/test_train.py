"""LoRA training on tiny models: labels, packing, loss, resume, adapter files, outputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from tests.support import write_conversations
from tunesmith.conversation import Conversation, Message
from tunesmith.errors import ConfigError
from tunesmith.template import resolve_template

CONV = Conversation(
    [Message("user", "你好，请问你是谁？"), Message("assistant", "吾乃李白，字太白。"),
     Message("user", "4*5等于多少"), Message("assistant", "二十也！")],
    system="你是李白，唐代诗人。",
)
ROLE_CHARS = "天地人你我他山水风月酒诗剑"


def _convs(n: int, seed: int = 0) -> list[Conversation]:
    """Learnable toy data: the answer reverses the question, in 李白's voice; lengths vary a lot."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q = "".join(rng.choice(ROLE_CHARS) for _ in range(rng.randint(2, 40)))
        out.append(Conversation.single_turn(q, "吾乃李白，" + q[::-1] + "也。", system="你是李白"))
    return out



@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("toy-data")
    return write_conversations(d / "train.jsonl", _convs(48)), write_conversations(d / "dev.jsonl", _convs(8, seed=1))


def _cfg(model: Path, out: Path, train: Path, dev: Path | None = None, **over) -> dict:
    cfg = {"model": str(model), "output_dir": str(out), "data": {"train": str(train)}, "dtype": "fp32",
           "batch_size": 4, "lr": 5e-3, "max_steps": 8, "logging_steps": 2, "eval_steps": 4, "sample_tokens": 8,
           "warmup": 0, "device": "cpu"}
    if dev is not None:
        cfg["data"]["dev"] = str(dev)
    for k, v in over.items():
        if "." in k:
            sec, key = k.split(".")
            cfg.setdefault(sec, {})[key] = v
        else:
            cfg[k] = v
    return cfg


# -- labels and batches -------------------------------------------------------------------------------
def test_labels_token_by_token_through_both_collators(tiny_qwen2):
    from tunesmith.train.dataset import IGNORE_INDEX, PackedCollator, PaddedCollator, encode_all

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("chatml", tok)
    other = Conversation.single_turn("天地", "山水", system="你是李白")
    samples, stats = encode_all([CONV, other], tok, tpl, max_source_len=512, max_target_len=256)
    assert stats.samples == 2 and stats.dropped_no_loss == 0
    im_end = tok.convert_tokens_to_ids("<|im_end|>")

    def learned_spans(ids, labels):
        """Decoded runs of learned tokens; every learned label equals the token at its position."""
        spans, cur = [], []
        for t, lab in zip(ids, labels):
            if lab == IGNORE_INDEX:
                if cur:
                    spans.append(tok.decode(cur))
                    cur = []
            else:
                assert lab == t
                cur.append(t)
        if cur:
            spans.append(tok.decode(cur))
        return spans

    packed = PackedCollator()(samples)
    ids, labels, pos = packed["input_ids"][0].tolist(), packed["labels"][0].tolist(), packed["position_ids"][0].tolist()
    n0 = len(samples[0]["input_ids"])
    assert packed["input_ids"].shape == (1, n0 + len(samples[1]["input_ids"])) and packed["num_tokens"] == len(ids)
    assert pos == list(range(n0)) + list(range(len(ids) - n0))  # positions restart per conversation
    assert packed["cu_seq_lens_q"].tolist() == [0, n0, len(ids)]
    assert labels[0] == IGNORE_INDEX and labels[n0] == IGNORE_INDEX  # no sample predicts its neighbour's first token
    assert learned_spans(ids, labels) == ["吾乃李白，字太白。<|im_end|>", "二十也！<|im_end|>", "山水<|im_end|>"]
    # the token right before each answer is a prompt token (the assistant header), never learned
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    assert labels.count(im_end) == 3

    padded = PaddedCollator(tok.pad_token_id)(samples)
    assert padded["input_ids"].shape == (2, n0)
    for row in range(2):
        n = len(samples[row]["input_ids"])
        assert padded["attention_mask"][row].tolist() == [1] * n + [0] * (n0 - n)
        assert all(lab == IGNORE_INDEX for lab in padded["labels"][row, n:].tolist())
    assert (learned_spans(padded["input_ids"][0].tolist(), padded["labels"][0].tolist())
            == learned_spans(ids[:n0], labels[:n0]))
    assert learned_spans(padded["input_ids"][1].tolist(), padded["labels"][1].tolist()) == ["山水<|im_end|>"]


def test_cutoffs_drop_samples_with_nothing_to_learn(tiny_qwen2):
    from tunesmith.train.dataset import encode_all

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("chatml", tok)
    long_answer = Conversation.single_turn("问", "答" * 100)
    no_answer = Conversation([Message("user", "只有问题")])
    samples, stats = encode_all([long_answer, no_answer], tok, tpl, max_source_len=16, max_target_len=10)
    assert stats.samples == 1 and stats.dropped_no_loss == 1 and stats.target_cut == 1
    assert sum(1 for lab in samples[0]["labels"] if lab != -100) == 10


# -- packing --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_packed_batch_loss_equals_unpacked_and_model_loss(tiny_model_factory, arch):
    """Same conversations, packed into one row or padded: identical token-weighted loss and gradients."""
    from tests.support import packed_lora_model
    from tunesmith.train.attention import check_packing
    from tunesmith.train.dataset import PackedCollator, PaddedCollator, encode_all
    from tunesmith.train.trainer import answer_loss_sum, head_loss_supported, output_head

    path = tiny_model_factory(arch)
    tok = AutoTokenizer.from_pretrained(path)
    model = packed_lora_model(path)  # random B: the adapter matters
    model.eval()
    samples, _ = encode_all([CONV, *_convs(5)], tok, resolve_template("chatml", tok), max_source_len=512,
                            max_target_len=256)
    packed = PackedCollator()(samples)
    padded = PaddedCollator(tok.pad_token_id)(samples)
    head = output_head(model)
    assert head is not None and head_loss_supported(model, "cpu")

    def loss_and_grads(batch, use_head):
        model.zero_grad()
        s, n = answer_loss_sum(model, batch, head if use_head else None)
        (s / n).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        return (s / n).item(), int(n), grads

    ref_loss, ref_n, ref_grads = loss_and_grads(padded, False)
    # the model's own loss on the padded batch is an independent reference for the token-weighted mean
    with torch.no_grad():
        own = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                    labels=padded["labels"]).loss
    assert ref_loss == pytest.approx(own.item(), rel=1e-6)
    for batch, use_head in ((packed, True), (packed, False), (padded, True)):
        loss, n, grads = loss_and_grads(batch, use_head)
        assert n == ref_n
        assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
        for k, g in ref_grads.items():
            torch.testing.assert_close(grads[k], g, rtol=1e-4, atol=1e-6)
    # the loss with the head asks the model for no logits at all (one kept position copies the head's weight)
    from tunesmith.train.trainer import hidden_states_only

    out = hidden_states_only(model, input_ids=packed["input_ids"])
    assert out.logits.shape[1] == 0 and out.hidden_states[-1].shape[1] == packed["input_ids"].shape[1]
    # without the attention boundaries the packed row would leak across conversations: the probe sees it
    assert check_packing(model, len(tok), "cpu") < 1e-4
    model.base_model.model.set_attn_implementation("eager")
    assert check_packing(model, len(tok), "cpu", varlen_kwargs=False) < 1e-4  # transformers' own mask from position ids



def test_sample_weighting_averages_each_conversations_mean_loss(tiny_qwen2):
    """loss_weighting=sample: packed or padded, the loss is the mean over conversations of their own
    mean answer-token loss (the model's loss on each one alone), and the step divisor counts conversations."""
    from types import SimpleNamespace

    from tunesmith.train.dataset import PackedCollator, PaddedCollator, encode_all
    from tunesmith.train.trainer import TunesmithTrainer, answer_loss_sum

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32).eval()
    convs = [Conversation.single_turn("天地", "山", system="你是李白"), CONV, *_convs(3)]
    samples, _ = encode_all(convs, tok, resolve_template("chatml", tok), max_source_len=512, max_target_len=256)
    lengths = {sum(1 for t in s["labels"][1:] if t != -100) for s in samples}
    assert len(lengths) > 2  # answers of very different lengths, else both weightings agree
    with torch.no_grad():
        own = []
        for s in samples:
            one = PaddedCollator(tok.pad_token_id)([s])
            own.append(model(input_ids=one["input_ids"], labels=one["labels"]).loss.item())
        want = sum(own) / len(own)
        token_s, token_n = answer_loss_sum(model, PackedCollator()(samples))
        assert abs(token_s.item() / token_n.item() - want) > 1e-3  # the token-weighted mean differs
        for batch in (PackedCollator(sample_weights=True)(samples),
                      PaddedCollator(tok.pad_token_id, sample_weights=True)(samples)):
            s, n = answer_loss_sum(model, batch)
            assert n.item() == pytest.approx(len(samples))
            assert s.item() / n.item() == pytest.approx(want, rel=1e-5)
    # a step of two micro-batches is divided by its number of conversations (3 + 2), not of tokens
    stub = SimpleNamespace(args=SimpleNamespace(average_tokens_across_devices=True, world_size=1))
    micro = [PackedCollator(sample_weights=True)(samples[:3]), PackedCollator(sample_weights=True)(samples[3:])]
    assert TunesmithTrainer._get_num_items_in_batch(stub, micro, torch.device("cpu")).item() == pytest.approx(5)


def test_bf16_loss_hands_lora_the_activations_uncopied_with_the_same_loss_and_gradients(tiny_qwen2):
    """Under bf16 autocast (bf16 base, fp32 LoRA, as dtype: bf16 trains) the Trainer's loss switches off peft's
    cast of each activation to fp32: the same loss and gradients, no fp32 copy, and the switch is undone after."""
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    from tunesmith.train.dataset import PackedCollator, encode_all
    from tunesmith.train.trainer import TunesmithTrainer

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.bfloat16),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    samples, _ = encode_all(_convs(4), tok, resolve_template("chatml", tok), max_source_len=512, max_target_len=256)
    batch = PackedCollator()(samples)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    seen = []
    hooks = [m.lora_A["default"].register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
             for m in layers]

    def loss_and_grads(bf16: bool):
        stub = SimpleNamespace(args=SimpleNamespace(bf16=bf16, fp16=False), head=None,
                               accelerator=SimpleNamespace(autocast=lambda: torch.autocast("cpu", torch.bfloat16)))
        model.zero_grad()
        seen.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            s, n = TunesmithTrainer.loss_sum_and_count(stub, model, batch)
        (s / n).backward()
        return (s / n).item(), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}

    cast_loss, cast_grads = loss_and_grads(bf16=False)  # peft's casting on, as any other caller has it
    assert set(seen) == {torch.float32}
    loss, grads = loss_and_grads(bf16=True)
    assert set(seen) == {torch.bfloat16}  # the activations reach LoRA as autocast made them
    assert loss == cast_loss
    for k, g in cast_grads.items():
        torch.testing.assert_close(grads[k], g, rtol=0, atol=0)
    assert all(getattr(m, "cast_input_dtype_enabled", True) for m in layers)  # restored for everything else

    # the preference trainers' loss (DPO, ORPO, KTO share one mixin) does the same around TRL's compute_loss
    from tunesmith.train.preference_trainers import _PreferenceTrainerMixin

    class TRLLoss:
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            seen.clear()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(**{k: v for k, v in inputs.items() if k in ("input_ids", "position_ids")}).logits.sum()

    class Preference(_PreferenceTrainerMixin, TRLLoss):
        args = SimpleNamespace(bf16=True, fp16=False)

    model.train()
    Preference().compute_loss(model, batch)
    assert set(seen) == {torch.bfloat16} and all(m.cast_input_dtype_enabled for m in layers)
    for h in hooks:
        h.remove()


def test_check_packing_flags_a_model_that_rejects_packed_rows(tiny_qwen2):
    """A forward that refuses position ids (some remote-code models) must read as 'cannot pack', not crash."""
    from tunesmith.train.attention import PACKING_TOLERANCE, check_packing

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32).train()
    vocab = model.config.vocab_size
    assert check_packing(model, vocab, "cpu", varlen_kwargs=False) < PACKING_TOLERANCE
    plain_forward = model.forward

    def forward(*args, position_ids=None, **kwargs):
        if position_ids is not None:
            raise TypeError("forward() got an unexpected keyword argument 'position_ids'")
        return plain_forward(*args, **kwargs)

    model.forward = forward
    assert check_packing(model, vocab, "cpu", varlen_kwargs=False) == float("inf")
    assert model.training  # the probe puts the model back in the mode it found it in

# -- end-to-end -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_qwen2, toy_data, tmp_path_factory):
    from tunesmith.train import train_from_config

    out = tmp_path_factory.mktemp("run") / "out"
    train, dev = toy_data
    result = train_from_config(_cfg(tiny_qwen2, out, train, dev, max_steps=12, system="你是诗人"))
    return result


def test_training_writes_outputs_and_lowers_dev_loss(trained, tiny_qwen2):
    out = trained.output_dir
    s = json.loads(trained.summary_path.read_text(encoding="utf-8"))
    assert s == trained.summary
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "train_config.yaml").is_file() and (out / "log_history.json").is_file()
    assert s["steps"] == 12 and s["train_tokens"] > 0 and s["tokens_per_second"] > 0 and s["train_seconds"] > 0
    assert [d["step"] for d in s["dev_losses"]] == [0, 4, 8, 12]
    assert s["best_dev_loss"] < s["initial_dev_loss"] - 0.1
    assert s["final_train_loss"] < s["first_train_loss"]
    assert s["adapter_is"] == "best" and s["best_checkpoint"].endswith(f"checkpoint-{s['best_dev_step']}")
    assert s["data"]["train"]["samples"] == 48 and s["packing"].startswith("varlen")
    assert len(s["samples"]) == 4 and all(isinstance(x["text"], str) for x in s["samples"])
    # the windowed loss is the mean of the last logging_steps steps, not of all steps since step 0
    hist = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert len(hist) == 12 and s["final_train_loss"] == pytest.approx(sum(hist[-2:]) / 2)


def test_saved_adapter_is_complete_and_reloads_to_identical_outputs(trained, tiny_qwen2):
    from peft import PeftModel
    from safetensors.torch import load_file

    from tunesmith.template import load_template

    adapter = trained.adapter_dir
    tensors = load_file(adapter / "adapter_model.safetensors")
    # tiny qwen2: 2 layers x 7 linear layers x (A, B)
    assert len(tensors) == 28
    assert all(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == Path(tiny_qwen2) and cfg["r"] == 8
    tpl = load_template(adapter)
    assert tpl.name == "tokenizer" and tpl.default_system == "你是诗人"
    assert (adapter / "tokenizer_config.json").is_file() and (adapter / "train_config.yaml").is_file()
    assert trained.summary["adapter_check"]["reload_max_logit_diff"] == 0.0

    # a fresh base + the saved adapter == the best checkpoint's weights, and differs from the base
    ids = torch.tensor([AutoTokenizer.from_pretrained(adapter)("你是谁？吾乃李白").input_ids])
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter)).eval()
        reloaded = tuned(ids).logits
    best = Path(trained.summary["best_checkpoint"])
    best_tensors = load_file(best / "adapter_model.safetensors")
    assert best_tensors.keys() == tensors.keys()
    for k in tensors:
        torch.testing.assert_close(tensors[k], best_tensors[k], rtol=0, atol=0)
    assert (reloaded - base_logits).abs().max() > 1e-3


def test_every_checkpoint_is_an_adapter_folder_with_the_runs_template(trained, tiny_qwen2):
    """eval/chat/serve -a on checkpoint-N prompt it as the run trained it, not with the base model's template."""
    from transformers import AutoTokenizer

    from tunesmith.infer.adapters import load_adapters
    from tunesmith.template import load_template

    checkpoints = sorted((trained.output_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints
    base_template = resolve_template("auto", AutoTokenizer.from_pretrained(tiny_qwen2))
    assert base_template.default_system is None  # so a checkpoint read with the base template would lose 你是诗人
    for ckpt in checkpoints:
        assert load_template(ckpt).to_dict() == load_template(trained.adapter_dir).to_dict()
        assert (ckpt / "train_config.yaml").read_text() == (trained.adapter_dir / "train_config.yaml").read_text()
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32)
    _, templates = load_adapters(base, {"ckpt": checkpoints[-1]}, base_template)
    assert templates["ckpt"].default_system == "你是诗人"


class _StopAt(TrainerCallback):
    """Simulates an interruption: the run stops right after step `k` (after its checkpoint)."""

    def __init__(self, k: int):
        self.k = k

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.k:
            control.should_training_stop = True
        return control


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tiny_qwen2, toy_data, tmp_path):
    from safetensors.torch import load_file

    from tunesmith.train import train_from_config

    train, _ = toy_data
    common = dict(max_steps=8, save_steps=3, save_total_limit=5, **{"lora.dropout": 0.1})  # dropout: RNG state matters
    full = train_from_config(_cfg(tiny_qwen2, tmp_path / "full", train, **common))
    cut = train_from_config(_cfg(tiny_qwen2, tmp_path / "cut", train, **common), callbacks=[_StopAt(3)])
    assert cut.summary["steps"] == 3
    resumed = train_from_config(_cfg(tiny_qwen2, tmp_path / "cut", train, **common), ["resume=true"])
    assert resumed.summary["resumed_from"].endswith("checkpoint-3") and resumed.summary["steps"] == 8

    def losses(result):
        return [(e["step"], e["loss"]) for e in json.loads((result.output_dir / "log_history.json").read_text())
                if "loss" in e]

    a, b = losses(full), losses(resumed)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 9))
    assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-5)
    wa = load_file(full.adapter_dir / "adapter_model.safetensors")
    wb = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-7)


def test_resume_without_checkpoint_fails_loudly(tiny_qwen2, toy_data, tmp_path):
    from tunesmith.train import train_from_config

    train, _ = toy_data
    with pytest.raises(ConfigError, match="resume=true but .* holds no checkpoint"):
        train_from_config(_cfg(tiny_qwen2, tmp_path / "never", train), ["resume=true"])


def test_rerun_into_a_used_output_dir_needs_resume_or_overwrite(trained, tiny_qwen2, toy_data):
    from tunesmith.train import train_from_config

    train, _ = toy_data
    with pytest.raises(ConfigError, match="already holds checkpoints .* --resume .* overwrite=true"):
        train_from_config(_cfg(tiny_qwen2, trained.output_dir, train))


# -- resume from what a kill leaves behind -------------------------------------------------------------------
STOPPED = dict(max_steps=8, save_steps=3, save_total_limit=5, **{"lora.dropout": 0.1})


@pytest.fixture(scope="module")
def stopped(tiny_qwen2, toy_data, tmp_path_factory):
    """A run of 8 steps stopped right after step 6: complete checkpoints at steps 3 and 6."""
    from tunesmith.train import train_from_config

    out = tmp_path_factory.mktemp("stopped") / "out"
    result = train_from_config(_cfg(tiny_qwen2, out, toy_data[0], **STOPPED), callbacks=[_StopAt(6)])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-6"]
    return result


def _cut(path: Path, keep: float = 0.5) -> None:
    """What a kill in the middle of writing a file leaves: its first part."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# Every file the Trainer reads back, damaged the ways a kill or a full disk leaves it.
DAMAGE = [
    ("trainer_state.json", _cut), ("trainer_state.json", lambda p: p.write_bytes(b"")),
    ("trainer_state.json", Path.unlink), ("adapter_model.safetensors", _cut),
    ("adapter_model.safetensors", lambda p: _cut(p, 0.999)), ("adapter_model.safetensors", Path.unlink),
    ("adapter_config.json", _cut), ("optimizer.pt", _cut), ("optimizer.pt", Path.unlink),
    ("scheduler.pt", lambda p: p.write_bytes(b"")), ("scheduler.pt", Path.unlink), ("rng_state.pth", _cut),
    ("rng_state.pth", Path.unlink), ("training_args.bin", _cut),
]


@pytest.mark.parametrize("name,damage", DAMAGE, ids=[f"{n}-{i}" for i, (n, _) in enumerate(DAMAGE)])
def test_a_checkpoint_counts_only_when_every_file_is_there_and_parses(stopped, tmp_path, name, damage):
    import shutil

    from tunesmith.train.checkpoints import checkpoint_problem, pick_checkpoint

    ckpts = tmp_path / "checkpoints"
    for n in ("checkpoint-3", "checkpoint-6"):
        shutil.copytree(stopped.output_dir / "checkpoints" / n, ckpts / n)
    assert checkpoint_problem(ckpts / "checkpoint-6") is None
    damage(ckpts / "checkpoint-6" / name)
    why = checkpoint_problem(ckpts / "checkpoint-6")
    assert why is not None and name in why, why
    assert pick_checkpoint(ckpts) == (ckpts / "checkpoint-3", [(ckpts / "checkpoint-6", why)])


@pytest.mark.parametrize("name", ["trainer_state.json", "optimizer.pt"])
def test_resume_falls_back_to_the_newest_complete_checkpoint(stopped, tiny_qwen2, toy_data, tmp_path, name):
    import io
    import shutil

    from tunesmith.train import train_from_config

    out = tmp_path / "out"
    shutil.copytree(stopped.output_dir, out)
    _cut(out / "checkpoints/checkpoint-6" / name)
    log = io.StringIO()
    resumed = train_from_config(_cfg(tiny_qwen2, out, toy_data[0], **STOPPED), ["resume=true"], stream=log)
    said = log.getvalue()
    assert f"warning: checkpoint-6 is incomplete ({name} is cut short" in said, said
    assert "moved aside to incomplete-checkpoint-6" in said and "resuming from checkpoint-3" in said
    assert resumed.summary["resumed_from"].endswith("checkpoint-3") and resumed.summary["steps"] == 8
    # steps 4-6 again, exactly as the stopped run had trained them: the state of step 3 was restored
    before = {e["step"]: e["loss"] for e in json.loads((stopped.output_dir / "log_history.json").read_text())
              if "loss" in e}
    after = {e["step"]: e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e}
    assert sorted(after) == list(range(1, 9))
    assert [after[s] for s in (4, 5, 6)] == pytest.approx([before[s] for s in (4, 5, 6)], rel=1e-5)
    # the damaged folder is kept aside, and the Trainer wrote step 6 afresh
    assert (out / "checkpoints/incomplete-checkpoint-6" / name).is_file()
    from tunesmith.train.checkpoints import checkpoint_problem

    assert checkpoint_problem(out / "checkpoints/checkpoint-6") is None


@pytest.mark.parametrize("leftover", ["empty", "cut state"])
def test_a_folder_with_only_incomplete_checkpoints_counts_as_empty(tiny_qwen2, toy_data, tmp_path, leftover):
    """A kill at the very start of the first save leaves checkpoint-N with nothing (or half a state) in it."""
    import io

    from tunesmith.train import train_from_config

    out = tmp_path / "out"
    first = out / "checkpoints/checkpoint-3"
    first.mkdir(parents=True)
    if leftover == "cut state":
        (first / "trainer_state.json").write_text('{"global_step": 3, "log_hist', encoding="utf-8")
    why = "the folder is empty" if leftover == "empty" else "trainer_state.json is cut short"
    cfg = _cfg(tiny_qwen2, out, toy_data[0], max_steps=2, save_steps=2)
    with pytest.raises(ConfigError, match=rf"holds no complete checkpoint to resume from: checkpoint-3: {why}.*"
                                          r"run without --resume to start over"):
        train_from_config(cfg, ["resume=true"])
    assert first.is_dir()  # an error changes nothing
    log = io.StringIO()
    result = train_from_config(cfg, stream=log)
    said = log.getvalue()
    assert f"warning: checkpoint-3 is incomplete ({why}" in said and "starting from the beginning" in said
    assert result.summary["steps"] == 2 and result.summary["resumed_from"] is None
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "incomplete-checkpoint-3"]


def test_resuming_a_finished_run_does_nothing(stopped, tiny_qwen2, toy_data, tmp_path):
    """Step 6 is not the end of an epoch (12 steps), where the stock Trainer would train one step more."""
    import io
    import shutil

    from tunesmith.train import train_from_config

    out = tmp_path / "out"
    shutil.copytree(stopped.output_dir, out)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for max_steps in (6, 5):  # at max_steps, or past a max_steps lowered since
        log = io.StringIO()
        again = train_from_config(_cfg(tiny_qwen2, out, toy_data[0], **{**STOPPED, "max_steps": max_steps}),
                                  ["resume=true"], stream=log)
        assert again.summary == stopped.summary and again.adapter_dir == out / "adapter"
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files  # not one byte written
        assert f"the run is complete: checkpoint-6 is at step 6 and max_steps={max_steps}" in log.getvalue()


def test_resuming_a_finished_run_writes_only_what_the_stopped_run_had_not(stopped, tiny_qwen2, toy_data, tmp_path):
    """Stopped after its last checkpoint but before the adapter and summary.json: resume writes them, no step more."""
    import shutil

    from tunesmith.train import train_from_config

    out = tmp_path / "out"
    shutil.copytree(stopped.output_dir, out)
    shutil.rmtree(out / "adapter")
    (out / "summary.json").unlink()
    result = train_from_config(_cfg(tiny_qwen2, out, toy_data[0], **{**STOPPED, "max_steps": 6}), ["resume=true"])
    assert result.summary["steps"] == 6 and (out / "adapter/adapter_model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 6
    assert [e["step"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e] == list(range(1, 7))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3", "checkpoint-6"]


def test_resuming_a_finished_epoch_run_does_nothing(tiny_qwen2, toy_data, tmp_path):
    """Without max_steps the step count comes from the data inside the Trainer, which must stop there too."""
    import io

    from tunesmith.train import train_from_config

    cfg = _cfg(tiny_qwen2, tmp_path / "out", toy_data[0], max_steps=None, epochs=0.25, save_steps=3)
    first = train_from_config(cfg)
    assert first.summary["steps"] == 3  # 48 conversations / 4 per step / 4
    log = io.StringIO()
    again = train_from_config(cfg, ["resume=true"], stream=log)
    assert again.summary == first.summary
    assert sorted(p.name for p in (tmp_path / "out/checkpoints").iterdir()) == ["checkpoint-3"]
    assert "the run is complete: checkpoint-3 is at step 3 of 3; nothing to train" in log.getvalue()


def test_unpacked_length_grouped_sample_weighted_training_runs(tiny_model_factory, toy_data, tmp_path):
    from tunesmith.train import train_from_config

    train, dev = toy_data
    result = train_from_config(_cfg(tiny_model_factory("llama"), tmp_path / "out", train, dev, max_steps=4,
                                    sample_tokens=0, keep_best=False, loss_weighting="sample",
                                    **{"data.packing": False}))
    s = result.summary
    assert s["packing"] == "off" and s["steps"] == 4 and s["adapter_is"] == "last"
    assert s["best_dev_loss"] < s["initial_dev_loss"]
    # the run really weighed conversations: its step-0 dev loss (LoRA B = 0, so the plain model) is the mean
    # of each dev conversation's own loss, not the token-weighted mean
    from tunesmith.template import load_template
    from tunesmith.train.dataset import PaddedCollator, encode_all

    assert s["loss_weighting"] == "sample"
    model_dir = tiny_model_factory("llama")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    samples, _ = encode_all(_convs(8, seed=1), tok, load_template(result.adapter_dir), max_source_len=512,
                            max_target_len=256)
    with torch.no_grad():
        own = [model(**{k: v for k, v in PaddedCollator(tok.pad_token_id)([x]).items()
                        if k != "num_tokens"}).loss.item()
               for x in samples]
        token_mean = model(**{k: v for k, v in PaddedCollator(tok.pad_token_id)(samples).items()
                              if k != "num_tokens"}).loss.item()
    assert s["initial_dev_loss"] == pytest.approx(sum(own) / len(own), rel=1e-4)
    assert abs(token_mean - sum(own) / len(own)) > 1e-3
    # every training conversation had the same system prompt: it becomes the saved template's default,
    # so chat/serve without --system prompt the model as it was trained

    assert load_template(result.adapter_dir).default_system == "你是李白"


def test_bad_target_module_names_the_available_layers(tiny_qwen2, toy_data, tmp_path):
    from tunesmith.train import train_from_config

    train, _ = toy_data
    with pytest.raises(ConfigError, match=r"lora.target_modules=\['query_key_value'\].*q_proj"):
        train_from_config(_cfg(tiny_qwen2, tmp_path / "o", train, **{"lora.target_modules": ["query_key_value"]}))


def test_sample_line_never_ends_in_half_a_character(tiny_qwen2, tmp_path, monkeypatch):
    """The token limit can split a Chinese character's bytes; the printed sample drops the broken tail."""
    from tunesmith.train.progress import ProgressCallback

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    cb = ProgressCallback(logging_steps=1, out_dir=tmp_path, tokenizer=tok, template=resolve_template("chatml", tok),
                          sample_prompt=(None, [Message("user", "你好")]), sample_tokens=3)
    monkeypatch.setattr(tok, "decode", lambda ids, **kw: "吾乃李白\n\ufffd")
    assert cb.generate_sample(model) == "吾乃李白"
    monkeypatch.setattr(tok, "decode", lambda ids, **kw: "\ufffd吾\n乃")
    assert cb.generate_sample(model) == "\ufffd吾 ⏎ 乃"  # only the tail is a cut; a broken first byte stays visible
