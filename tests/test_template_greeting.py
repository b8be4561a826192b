"""A conversation the character opens (its greeting first) trains and prompts alike in every template.

The greeting is the first answer: its tokens are in the labels, and the prompt tunesmith sends at inference for the
messages so far (none: the greeting's own prompt; the greeting and a question; ...) is the training prefix, token
for token. Also checked on tokenizer templates shaped like real ones: Llama 3 and GLM-4 render a greeting first,
Llama 2 refuses it (and says so).
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tunesmith.conversation import Conversation, Message
from tunesmith.errors import ConfigError, DataError
from tunesmith.template import (
    TEMPLATE_NAMES,
    ChatTemplate,
    encode_conversation,
    encode_prompt,
    render_text,
    resolve_template,
    to_jinja,
    to_ollama_template,
)

GREETING = "*放下酒杯* 来者何人？且与我共饮一杯！"
CONV = Conversation(
    [Message("assistant", GREETING), Message("user", "我是过路人。"), Message("assistant", "吾乃李白，字太白。"),
     Message("user", "你会写诗吗？"), Message("assistant", "床前明月光。")],
    system="你是李白，唐代诗人。",
)

# Shaped like the chat templates real models ship (Meta Llama 3, THUDM GLM-4, Meta Llama 2), kept short.
LLAMA3 = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = '<|begin_of_text|>' + "
    "content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GLM4 = (
    "[gMASK]<sop>{% for item in messages %}{% if item['role'] == 'system' %}<|system|>\n{{ item['content'] }}"
    "{% elif item['role'] == 'user' %}<|user|>\n{{ item['content'] }}{% elif item['role'] == 'assistant' %}"
    "<|assistant|>\n{{ item['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def _learned(tok, ex) -> str:
    return tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])


def _check_prefixes(tok, tpl, conv: Conversation, answer_follows: bool = True) -> None:
    """answer_follows=False: the template writes text between its generation prompt and a reply (GLM-4's
    "<|assistant|>" then "\n"), which the model sees in training but generates itself at inference."""
    ex = encode_conversation(tok, tpl, conv)
    answers = [k for k, m in enumerate(conv.messages) if m.role == "assistant"]
    for k in answers:  # the prompt before each answer, the greeting's (no messages) included
        prompt = encode_prompt(tok, tpl, conv.system, conv.messages[:k])
        assert ex["input_ids"][: len(prompt)] == prompt, (tpl.name, k)
        if answer_follows:
            assert ex["labels"][len(prompt)] == ex["input_ids"][len(prompt)]  # loss starts exactly at the answer
        assert len(prompt) == 0 or ex["labels"][len(prompt) - 1] == -100
    learned = _learned(tok, ex)
    assert all(conv.messages[k].content in learned for k in answers)
    if conv.opens_with_assistant:
        assert learned.startswith(conv.messages[0].content)  # the greeting is the first thing learned


@pytest.mark.parametrize("arch", ["qwen2", "llama", "glm"])
@pytest.mark.parametrize("name", ["auto", *TEMPLATE_NAMES])
def test_a_greeting_first_trains_and_prompts_alike(tiny_model_factory, arch, name):
    tok = AutoTokenizer.from_pretrained(tiny_model_factory(arch))
    tpl = resolve_template(name, tok)
    _check_prefixes(tok, tpl, CONV)
    _check_prefixes(tok, tpl, Conversation([Message("assistant", GREETING)], system=CONV.system))  # greeting alone
    _check_prefixes(tok, tpl, Conversation(CONV.messages[:3]))  # no system text


def test_chatml_renders_the_greeting_as_the_first_assistant_turn(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("chatml", tok)
    assert render_text(tok, tpl, "S", CONV.messages[:2], add_generation_prompt=True) == (
        f"<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\n{GREETING}<|im_end|>\n"
        "<|im_start|>user\n我是过路人。<|im_end|>\n<|im_start|>assistant\n")
    assert render_text(tok, tpl, "S", [], add_generation_prompt=True) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\n"
    ex = encode_conversation(tok, tpl, Conversation(CONV.messages[:1], system="S"))
    assert _learned(tok, ex) == GREETING + "<|im_end|>"
    instruction = resolve_template("instruction", tok)
    assert render_text(tok, instruction, "S", CONV.messages[:1]) == f"Instruction: S\nInput: \nAnswer: {GREETING}" \
        + "<|im_end|>\n"


@pytest.mark.parametrize("jinja", [LLAMA3, GLM4], ids=["llama3", "glm4"])
@pytest.mark.parametrize("arch", ["llama", "glm"])
def test_real_style_tokenizer_templates_take_a_greeting_first(tiny_model_factory, arch, jinja):
    tok = AutoTokenizer.from_pretrained(tiny_model_factory(arch))
    # the template's markers are special tokens, as in the real tokenizers (no model runs here)
    tok.add_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[gMASK]", "<sop>",
                    "<|system|>", "<|user|>", "<|assistant|>"], special_tokens=True)
    tpl = ChatTemplate("tokenizer", jinja=jinja)
    follows = jinja is not GLM4
    _check_prefixes(tok, tpl, CONV, follows)
    _check_prefixes(tok, tpl, Conversation([Message("assistant", GREETING)], system=CONV.system), follows)
    _check_prefixes(tok, tpl, Conversation(CONV.messages[:3]), follows)
    if jinja is GLM4:  # it writes no end-of-turn token: tunesmith learns EOS after each reply instead
        return
    text = render_text(tok, tpl, CONV.system, CONV.messages[:2], add_generation_prompt=True)
    openai = [{"role": "system", "content": CONV.system}] + [
        {"role": m.role, "content": m.content} for m in CONV.messages[:2]]
    assert text == tok.apply_chat_template(openai, chat_template=jinja, tokenize=False, add_generation_prompt=True)


def test_a_template_that_refuses_a_greeting_first_says_so(tiny_model_factory):
    tok = AutoTokenizer.from_pretrained(tiny_model_factory("llama"))
    tpl = ChatTemplate("tokenizer", jinja=LLAMA2)
    _check_prefixes(tok, tpl, Conversation(CONV.messages[1:3], system=CONV.system), False)  # user first: fine
    with pytest.raises(ConfigError, match=r"refuses a conversation that opens with the assistant.*greeting.*"
                                          r"Conversation roles must alternate.*template=chatml"):
        encode_conversation(tok, tpl, CONV)
    with pytest.raises(ConfigError, match="refuses a conversation that opens with the assistant"):
        encode_prompt(tok, tpl, None, CONV.messages[:2])
    assert to_ollama_template(tpl, tok) is None  # not chatml: Ollama reads the GGUF's own template


@pytest.mark.parametrize("name", ["chatml", "plain", "instruction", "tokenizer"])
@pytest.mark.parametrize("default_system", [None, "你是李白，爱酒。"])
def test_the_jinja_form_renders_a_greeting_first_like_tunesmith(tiny_qwen2, name, default_system):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template(name, tok, default_system=default_system)
    jinja = to_jinja(tpl, tok)
    for system, messages in ((None, CONV.messages[:2]), ("你是李白", CONV.messages[:4]), ("你是李白", [])):
        openai = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": m.role, "content": m.content} for m in messages]
        text = tok.apply_chat_template(openai, chat_template=jinja, tokenize=False, add_generation_prompt=True)
        assert text == render_text(tok, tpl, system, messages, add_generation_prompt=True), (name, system)


def test_the_ollama_template_gives_a_greeting_first_its_own_header(tiny_qwen2):
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    go = to_ollama_template(resolve_template("instruction", tok), tok)
    # instruction: the greeting follows the instruction with an empty input; a later answer follows its question
    assert '{{ range $i, $m := .Messages }}' in go
    assert "{{ if eq $i 0 }}Instruction: {{ $.System }}\nInput: \nAnswer: {{ else }}{{ end }}{{ .Content }}" in go
    chatml = to_ollama_template(resolve_template("chatml", tok), tok)
    assert "eq $i 0" not in chatml  # chatml's greeting header is its usual assistant header
    assert to_ollama_template(resolve_template("tokenizer", tok), tok) == chatml  # the tiny template is chatml


def test_validate_takes_one_opening_assistant_message_and_keeps_the_other_rules():
    Conversation([Message("assistant", "hi")]).validate()
    Conversation.from_dict(CONV.to_dict()).validate()
    assert CONV.opens_with_assistant and not Conversation.single_turn("q", "a").opens_with_assistant
    for roles, bad in ((("assistant", "assistant"), 1), (("assistant", "user", "user"), 2),
                       (("user", "user"), 1), (("user", "assistant", "assistant"), 2)):
        with pytest.raises(DataError, match=rf"message {bad}: expected role .*alternate"):
            Conversation([Message(r, "x") for r in roles]).validate()


def test_chat_history_keeps_the_greeting_while_it_fits_and_drops_it_first(tiny_qwen2):
    from tunesmith.infer.history import check_messages, fit_prompt, trim_turns

    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    tpl = resolve_template("chatml", tok)
    chat = [*CONV.messages[:4]]  # greeting, question, answer, question
    check_messages(chat)
    ids, kept = fit_prompt(tok, tpl, "S", chat, budget=10_000)
    assert kept == chat and ids == encode_prompt(tok, tpl, "S", chat)
    without = encode_prompt(tok, tpl, "S", chat[1:])
    ids, kept = fit_prompt(tok, tpl, "S", chat, budget=len(without))  # one token short of the greeting
    assert kept == chat[1:] and ids == without
    assert trim_turns(chat, 2) == chat and trim_turns(chat, 1) == chat[1:] and trim_turns(chat, 0) == chat[3:]
    user_first = chat[1:] + [Message("assistant", "a"), Message("user", "q")]
    assert trim_turns(user_first, 3) == user_first  # more turns allowed than there are: all of them
    with pytest.raises(DataError, match="message 1 has role 'assistant'"):
        check_messages([Message("assistant", "hi"), Message("assistant", "again"), Message("user", "q")])
