"""The preference trainers' memory-saving LM head (tunesmith.train.fused_head, orpo_forward) gives the numbers of
the plain computation it replaces: full logits, log-softmax, the labelled tokens picked out.

The bench is bench/bench_preference_memory.py; these tests hold the equality that makes its savings free.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tunesmith.train.fused_head import answer_only_fused_head

OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


@pytest.fixture(scope="module")
def lora_model(tiny_model_factory):
    """A tiny Llama with a random (non-zero) LoRA on every linear layer, in fp32, switched to packed attention."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.train.attention import use_packed_attention

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_factory("llama"), dtype=torch.float32)
    use_packed_attention(base)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    return model


def _batch(vocab: int, seed: int = 0):
    """4 right-padded sequences: pairs share their prompt, all share a 20-token system prefix; labels -100 on
    prompts and padding (a DPO batch: chosen rows, then rejected rows)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randint(3, vocab, (n,), generator=g).tolist()  # noqa: E731
    system = rand(20)
    prompts = [system + rand(5), system + rand(9)]
    seqs = [prompts[0] + rand(7), prompts[1] + rand(3), prompts[0] + rand(11), prompts[1] + rand(6)]
    starts = [len(prompts[0]), len(prompts[1]), len(prompts[0]), len(prompts[1])]
    width = max(map(len, seqs))
    ids = torch.zeros(4, width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, (s, a) in enumerate(zip(seqs, starts)):
        ids[r, :len(s)] = torch.tensor(s)
        attention[r, :len(s)] = 1
        labels[r, a:len(s)] = torch.tensor(s[a:])
    return ids, attention, labels


def _plain(model, ids, attention, labels):
    """Per-token log-probabilities from the full logits, zero where not labelled."""
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != -100
    logps = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logps * mask, logits


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return grads


def _fused(model, outputs=OUTPUTS, **kw):
    from trl.trainer.utils import add_fused_lm_head

    model = copy.deepcopy(model)
    add_fused_lm_head(model.get_base_model(), outputs=outputs)
    assert answer_only_fused_head(model, outputs, **kw)
    return model


@pytest.mark.parametrize("packing", [None, "varlen", "shared"])
def test_answer_only_head_equals_the_full_logits(lora_model, packing):
    vocab = lora_model.config.vocab_size
    ids, attention, labels = _batch(vocab)
    weights = torch.randn(ids.shape[0], ids.shape[1] - 1, generator=torch.Generator().manual_seed(1))
    want, logits = _plain(lora_model, ids, attention, labels)
    want_grads = _grads(lora_model, (want * weights).sum())
    model = _fused(lora_model, chunk_size=7, packing=packing)  # 7 columns: several tiles, a ragged last one
    out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
    mask = labels[:, 1:] != -100
    assert torch.equal(out.label_mask, mask)
    torch.testing.assert_close(out.log_probs, want.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mean_logits[mask], logits.mean(-1)[mask].detach(), atol=1e-5, rtol=1e-5)
    picked = logits.argmax(-1) == labels[:, 1:]
    assert torch.equal(out.is_top1[mask], picked[mask])
    got = _grads(model, (out.log_probs * weights).sum())
    assert got.keys() == want_grads.keys() and got
    for name, g in want_grads.items():
        torch.testing.assert_close(got[name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_dpo_loss_and_gradients_equal_the_plain_dpo_computation(lora_model, tmp_path):
    """TunesmithDPOTrainer's loss (answer-only head, batch packed with the shared prompt laid once, reference =
    TRL's frozen copy of the starting adapter) against DPO's sigmoid loss written out on full logits."""
    from trl import DPOConfig

    from tunesmith.train.preference_trainers import dpo_trainer_class

    vocab = lora_model.config.vocab_size
    ids, attention, labels = _batch(vocab, seed=3)
    model = copy.deepcopy(lora_model)
    args = DPOConfig(output_dir=str(tmp_path), beta=0.1, max_length=None, report_to="none", use_cpu=True,
                     per_device_train_batch_size=2, disable_dropout=True)
    from transformers import AutoTokenizer

    from datasets import Dataset

    tok = AutoTokenizer.from_pretrained(lora_model.get_base_model().name_or_path)
    tok.pad_token = tok.pad_token or tok.eos_token
    rows = Dataset.from_list([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}])
    trainer = dpo_trainer_class()(model=model, args=args, train_dataset=rows, processing_class=tok,
                                  packing="shared")
    batch = {"input_ids": ids, "attention_mask": attention, "completion_mask": (labels != -100).long()}
    loss = trainer.compute_loss(trainer.model, batch)
    got = _grads(trainer.model, loss)

    plain = copy.deepcopy(lora_model)
    policy = _plain(plain, ids, attention, labels)[0].sum(-1)
    with torch.no_grad():  # the reference: the adapter as it was when training started
        ref = _plain(plain, ids, attention, labels)[0].sum(-1)
    margin = (policy[:2] - ref[:2]) - (policy[2:] - ref[2:])
    want_loss = -torch.nn.functional.logsigmoid(0.1 * margin).mean()
    torch.testing.assert_close(loss.detach(), want_loss.detach(), atol=1e-6, rtol=1e-5)
    want = _grads(plain, want_loss)
    assert got.keys() == want.keys() and got
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, atol=1e-6, rtol=1e-4, msg=name)


def test_orpo_forward_equals_trl_orpo_on_full_logits(lora_model, tmp_path):
    from transformers import AutoTokenizer

    from datasets import Dataset
    from tunesmith.train.preference_trainers import config_class, orpo_trainer_class

    tok = AutoTokenizer.from_pretrained(lora_model.get_base_model().name_or_path)
    tok.pad_token = tok.pad_token or tok.eos_token
    args = config_class("orpo")(output_dir=str(tmp_path), beta=0.1, max_length=64, max_completion_length=32,
                                report_to="none", use_cpu=True, per_device_train_batch_size=2,
                                remove_unused_columns=False)
    vocab = lora_model.config.vocab_size
    ids, attention, labels = _batch(vocab, seed=5)
    rows = [{"prompt_ids": ids[r][labels[r] == -100][: int(attention[r].sum())].tolist()[:25 if r == 0 else 29],
             "chosen_ids": ids[r][labels[r] != -100].tolist(),
             "rejected_ids": ids[r + 2][labels[r + 2] != -100].tolist()}
            for r in range(2)]
    trainer = orpo_trainer_class()(model=copy.deepcopy(lora_model), args=args, train_dataset=Dataset.from_list(rows),
                                   processing_class=tok)
    assert trainer.fused_head
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])

    def run(fused: bool):
        trainer.fused_head = fused
        out = trainer.concatenated_forward(trainer.model, batch)
        loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
        return [o.detach() for o in out], loss.detach(), _grads(trainer.model, loss)

    (lc, lr, gc, gr, nll), loss, grads = run(True)
    (wc, wr, wgc, wgr, wnll), want_loss, want_grads = run(False)
    for got, want in ((lc, wc), (lr, wr), (nll, wnll), (loss, want_loss), (gc.mean(), wgc.mean()),
                      (gr.mean(), wgr.mean())):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for name, g in want_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-6, rtol=1e-4, msg=name)
