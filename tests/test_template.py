"""Training-time prompt tokens must equal inference-time prompt tokens, for every template and architecture."""

import pytest
from transformers import AutoTokenizer

from tunesmith.conversation import Conversation, Message
from tunesmith.template import (
    TEMPLATE_NAMES,
    encode_conversation,
    encode_prompt,
    load_template,
    resolve_template,
    save_template,
)

CONV = Conversation(
    [Message("user", "你好，请问你是谁？"), Message("assistant", "吾乃李白，字太白。"),
     Message("user", "4*5等于多少"), Message("assistant", "二十也！")],
    system="你是李白，唐代诗人。",
)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "glm"])
@pytest.mark.parametrize("name", ["auto", *TEMPLATE_NAMES])
def test_train_prompt_tokens_equal_inference_prompt_tokens(tiny_model_factory, arch, name):
    tok = AutoTokenizer.from_pretrained(tiny_model_factory(arch))
    tpl = resolve_template(name, tok)
    ex = encode_conversation(tok, tpl, CONV)
    for k in (1, 3):  # prompt before the first and before the second answer
        prompt = encode_prompt(tok, tpl, CONV.system, CONV.messages[:k])
        assert ex["input_ids"][: len(prompt)] == prompt
        # the next label after the prompt is the first answer token: loss starts exactly at the answer
        assert ex["labels"][len(prompt)] == ex["input_ids"][len(prompt)]
        assert ex["labels"][len(prompt) - 1] == -100


def test_labels_cover_answers_and_eos_only(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("chatml", tok)
    ex = encode_conversation(tok, tpl, CONV)
    learned = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])
    assert learned == "吾乃李白，字太白。<|im_end|>二十也！<|im_end|>"
    last_only = encode_conversation(tok, tpl, CONV, last_turn_only=True)
    assert (tok.decode([t for t, lab in zip(last_only["input_ids"], last_only["labels"]) if lab != -100])
            == "二十也！<|im_end|>")
    everything = encode_conversation(tok, tpl, CONV, train_on_prompt=True)
    assert everything["labels"] == everything["input_ids"]


def test_plain_template_keeps_answer_space_exactly(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("plain", tok)
    conv = Conversation.single_turn("Instruction: 抽取\nInput: 句子\nAnswer: ", '["水果"]')
    ex = encode_conversation(tok, tpl, conv)
    assert tok.decode(ex["input_ids"]) == 'Instruction: 抽取\nInput: 句子\nAnswer: ["水果"]<|im_end|>'
    prompt = encode_prompt(tok, tpl, None, conv.messages[:1])
    assert tok.decode(prompt).endswith("Answer: ")


def test_cutoffs_really_apply(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("chatml", tok)
    conv = Conversation.single_turn("问" * 300 + "最后的问题？", "答" * 300, system="你是李白")
    full = encode_conversation(tok, tpl, conv)
    cut = encode_conversation(tok, tpl, conv, max_source_len=64, max_target_len=32)
    n_src = sum(1 for lab in cut["labels"] if lab == -100)
    assert n_src == 64 and len(cut["input_ids"]) == 96 < len(full["input_ids"])
    text = tok.decode(cut["input_ids"][:64])
    assert text.startswith("<|im_start|>system") and text.endswith("最后的问题？<|im_end|>\n<|im_start|>assistant\n")


def test_template_saved_and_reloaded(tmp_path, tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("auto", tok, default_system="你是李白")
    save_template(tpl, tmp_path)
    again = load_template(tmp_path)
    assert again == tpl and again.name == "tokenizer" and again.jinja == tok.chat_template


def test_tokenizer_round_trips_after_reload(tmp_path, tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    text = "曹洪曰：“目今失了彝陵，势已危急……” Hello, 4*5=20 ✓"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    tok.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2(text, add_special_tokens=False)["input_ids"] == ids
    assert tok2.decode(ids) == text
