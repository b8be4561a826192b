"""How a Conversation becomes text and token ids, the same way at training and at inference.

    from tunesmith.template import resolve_template, encode_conversation, encode_prompt
    tpl = resolve_template("auto", tokenizer)          # the tokenizer's own chat template, else chatml
    ex = encode_conversation(tokenizer, tpl, conv)     # {"input_ids": [...], "labels": [...]}
    ids = encode_prompt(tokenizer, tpl, system, history_messages)   # what generation starts from

A conversation is rendered into *segments*: prompt text (no loss), answer text (the assistant reply and
its end-of-turn token: loss) and the filler after an answer (e.g. the newline after ``<|im_end|>``: no
loss).  Each segment is tokenized on its own and the ids are concatenated.  Inference builds the prompt
from exactly the same segments, so the tokens a model was trained on before an answer are, by
construction, the tokens it sees before it generates one: a prompt that ends in "Answer: " in training
and "Answer:" at inference cannot happen.  The template used is saved next to every adapter
(`template.json`) and reused by chat, serve and eval.

A conversation may open with one assistant message (a character's greeting, see Conversation.validate):
it is rendered as the first answer, after the template's *opening* (chatml: the assistant header;
plain: nothing; instruction: the instruction with an empty input), and learned like any answer.
`encode_prompt` with no messages gives the prompt a greeting is generated from.

Templates:
- ``tokenizer``: the tokenizer's own Jinja chat template (its text is saved, so a later tokenizer
  change cannot alter it).  Segments come from rendering growing prefixes of the conversation.
- ``chatml``: ``<|im_start|>role\\ncontent<|im_end|>\\n`` (Qwen, SmolLM, Yi ...).
- ``plain``: text continues text: the user content verbatim, the answer right after it, then EOS.  For
  `{context, target}` data ("...Answer: " + target) and novel cosplay ("...曹洪曰：" + "“...”").
- ``instruction``: ``Instruction: {system}\\nInput: {user}\\nAnswer: {answer}`` + EOS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.errors import ConfigError
from tunesmith.fsio import atomic_write

TEMPLATE_FILE = "template.json"
PROMPT, ANSWER, AFTER = "prompt", "answer", "after"


@dataclass
class ChatTemplate:
    name: str
    # tokenizer: the Jinja source; named templates: None
    jinja: str | None = None
    # Used when a conversation has no system text of its own (None: the template's own default, if any).
    default_system: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatTemplate:
        if d.get("name") not in TEMPLATE_NAMES:
            raise ConfigError(f"template name {d.get('name')!r} is not one of {', '.join(TEMPLATE_NAMES)}")
        return cls(name=d["name"], jinja=d.get("jinja"), default_system=d.get("default_system"),
                   extra=dict(d.get("extra") or {}))


# Named templates: format strings for each part.  {eos} is the tokenizer's EOS text.
_NAMED: dict[str, dict[str, str]] = {
    "chatml": {
        "system": "<|im_start|>system\n{content}<|im_end|>\n",
        "user": "<|im_start|>user\n{content}<|im_end|>\n",
        "assistant_prefix": "<|im_start|>assistant\n",
        "answer_end": "<|im_end|>",
        "after": "\n",
        # before an assistant message that opens the conversation (a greeting): no user part precedes it
        "opening": "<|im_start|>assistant\n",
    },
    "plain": {"system": "{content}\n", "user": "{content}", "assistant_prefix": "", "answer_end": "{eos}", "after": "",
              "opening": ""},
    "instruction": {
        "system": "",  # folded into the user part below
        "user": "Instruction: {system}\nInput: {content}\nAnswer: ",
        "assistant_prefix": "",
        "answer_end": "{eos}",
        "after": "\n",
        "opening": "Instruction: {system}\nInput: \nAnswer: ",  # the user part with an empty input
    },
}
TEMPLATE_NAMES = ("tokenizer", *_NAMED)


def resolve_template(name: str | None, tokenizer, default_system: str | None = None) -> ChatTemplate:
    """'auto' picks the tokenizer's own chat template when it has one, else chatml."""
    name = name or "auto"
    if name == "auto":
        name = "tokenizer" if getattr(tokenizer, "chat_template", None) else "chatml"
    if name == "tokenizer":
        jinja = getattr(tokenizer, "chat_template", None)
        if not jinja:
            raise ConfigError("template=tokenizer, but this tokenizer has no chat template "
                              "(use chatml, plain or instruction)")
        if isinstance(jinja, dict):  # several named templates: use the default one
            jinja = jinja.get("default") or next(iter(jinja.values()))
        return ChatTemplate("tokenizer", jinja=jinja, default_system=default_system)
    if name not in _NAMED:
        raise ConfigError(f"template {name!r} is not one of auto, {', '.join(TEMPLATE_NAMES)}")
    return ChatTemplate(name, default_system=default_system)



def template_from_arg(template: str | None, tokenizer) -> ChatTemplate:
    """A --template value: a folder with template.json (or that file) is loaded; anything else is a name for
    resolve_template ('auto' when empty)."""
    if template and (os.sep in template or template.endswith(".json") or Path(template).is_dir()):
        p = Path(template).expanduser()
        folder = p.parent if p.is_file() else p
        tpl = load_template(folder)
        if tpl is None:
            raise ConfigError(f"{p}: no template.json found (expected a template name or a folder with template.json)")
        return tpl
    return resolve_template(template or "auto", tokenizer)

# -- rendering to segments --------------------------------------------------------------------------
def _eos_text(tokenizer) -> str:
    if tokenizer.eos_token is None:
        raise ConfigError("the tokenizer has no EOS token; set one (tokenizer.eos_token) before training")
    return tokenizer.eos_token


def _named_segments(tpl: ChatTemplate, tokenizer, system: str | None, messages: Sequence[Message],
                    add_generation_prompt: bool) -> Iterator[tuple[str, str, int]]:
    spec = _NAMED[tpl.name]
    eos = _eos_text(tokenizer)
    if system and spec["system"]:
        yield PROMPT, spec["system"].format(content=system), -1
    if not messages and add_generation_prompt and spec["opening"]:  # the prompt a greeting is generated from
        yield PROMPT, spec["opening"].format(system=system or ""), -1
    for i, m in enumerate(messages):
        if m.role == "assistant" and i == 0 and spec["opening"]:
            yield PROMPT, spec["opening"].format(system=system or ""), i
        if m.role == "user":
            text = spec["user"].format(content=m.content, system=system or "")
            nxt_is_answer = i + 1 < len(messages) or add_generation_prompt
            if nxt_is_answer:
                text += spec["assistant_prefix"]
            yield PROMPT, text, i
        else:
            yield ANSWER, m.content + spec["answer_end"].format(eos=eos), i
            if spec["after"]:
                yield AFTER, spec["after"], i


def _render_jinja(tpl: ChatTemplate, tokenizer, msgs: list[dict], add_generation_prompt: bool) -> str:
    turns = [m for m in msgs if m["role"] != "system"]
    try:
        return tokenizer.apply_chat_template(msgs, chat_template=tpl.jinja, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja2's TemplateError (raise_exception in the template) or what the template trips on
        if turns and turns[0]["role"] == "user":
            raise
        raise ConfigError(
            "the tokenizer's chat template refuses a conversation that opens with the assistant (a character's "
            f"greeting): {type(e).__name__}: {e}; use template=chatml (or plain), or leave the greetings out "
            "(card option greetings=false)") from None


def _special_texts(tokenizer) -> list[str]:
    toks = set(getattr(tokenizer, "all_special_tokens", []) or [])
    toks.update(str(t) for t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values())
    return sorted((t for t in toks if t), key=len, reverse=True)


# A reply text no template header contains: found in the rendered text, it marks where a greeting starts.
_PROBE = "<<tunesmith: the greeting>>"


def _opening_prompt(tpl: ChatTemplate, tokenizer, msgs: list[dict], greeting: str) -> str:
    """The text before an opening assistant message (a greeting) that the template renders as its generation
    prompt for the system text alone; "" when it renders none or one that the greeting's text does not start with."""
    if not msgs:  # no system text: nothing to render a generation prompt for (transformers refuses)
        return ""
    try:
        gen = _render_jinja(tpl, tokenizer, msgs, add_generation_prompt=True)
    except ConfigError:  # a template that cannot render the system text alone: the greeting's own delta then
        return ""
    with_greeting = _render_jinja(tpl, tokenizer, [*msgs, {"role": "assistant", "content": greeting}], False)
    return gen if with_greeting.startswith(gen) and greeting in with_greeting[len(gen):] else ""


def _jinja_segments(tpl: ChatTemplate, tokenizer, system: str | None, messages: Sequence[Message],
                    add_generation_prompt: bool) -> Iterator[tuple[str, str, int]]:
    msgs: list[dict] = [{"role": "system", "content": system}] if system else []
    specials = _special_texts(tokenizer)
    eos = _eos_text(tokenizer)
    prev = ""
    if not messages and add_generation_prompt:
        # the prompt a greeting is generated from: what training puts before a greeting's text
        for kind, text, idx in _jinja_segments(tpl, tokenizer, system, [Message("assistant", _PROBE)], False):
            if kind != PROMPT:
                return
            yield kind, text, idx
        return
    for i, m in enumerate(messages):
        if i == 0 and m.role == "assistant":
            # A greeting: its header is the generation prompt of the conversation so far (the system text),
            # a piece of its own, as encode_prompt with no messages gives it
            opening = _opening_prompt(tpl, tokenizer, msgs, m.content)
            if opening:
                yield PROMPT, opening, -1
                prev = opening
        msgs.append({"role": m.role, "content": m.content})
        last = i == len(messages) - 1
        if m.role == "user":
            gen = (not last) or add_generation_prompt
            cur = _render_jinja(tpl, tokenizer, msgs, add_generation_prompt=gen)
        else:
            cur = _render_jinja(tpl, tokenizer, msgs, add_generation_prompt=False)
        if not cur.startswith(prev):
            raise ConfigError(
                "the tokenizer's chat template renders earlier turns differently once later turns are added, "
                "so training and inference prompts could not match; use template=chatml (or plain)"
            )
        delta = cur[len(prev):]
        prev = cur
        if m.role == "user":
            yield PROMPT, delta, i
            continue
        # The answer delta is "<content><end-of-turn special?><filler>".  Learn the content and the
        # end-of-turn token; when the template writes no end token (GLM-4 style), learn EOS instead.
        pos = delta.find(m.content) if m.content else 0
        if pos < 0:
            raise ConfigError("the tokenizer's chat template changes the assistant text; use template=chatml")
        head, rest = delta[:pos], delta[pos + len(m.content):]
        if head:  # text the template puts before the reply, e.g. a role header it did not emit earlier
            yield PROMPT, head, i
        end = next((s for s in specials if rest.startswith(s)), None)
        if end is not None:
            yield ANSWER, m.content + end, i
            rest = rest[len(end):]
        else:
            yield ANSWER, m.content + eos, i
        if rest:
            yield AFTER, rest, i


def iter_segments(tokenizer, tpl: ChatTemplate, system: str | None, messages: Sequence[Message],
                  add_generation_prompt: bool = False) -> Iterator[tuple[str, str, int]]:
    """render_segments one piece at a time, in order: a caller fitting a prompt to a token budget can stop
    at the first piece that does not fit instead of rendering (for the tokenizer's template: once per
    message, each time the whole prefix) the rest."""
    system = system if system is not None else tpl.default_system
    if tpl.name == "tokenizer":
        return _jinja_segments(tpl, tokenizer, system, messages, add_generation_prompt)
    return _named_segments(tpl, tokenizer, system, messages, add_generation_prompt)


def render_segments(tokenizer, tpl: ChatTemplate, system: str | None, messages: Sequence[Message],
                    add_generation_prompt: bool = False) -> list[tuple[str, str, int]]:
    """(kind, text, message_index) pieces of a conversation; message_index -1 is the system part."""
    return list(iter_segments(tokenizer, tpl, system, messages, add_generation_prompt))


def render_text(tokenizer, tpl: ChatTemplate, system: str | None, messages: Sequence[Message],
                add_generation_prompt: bool = False) -> str:
    return "".join(t for _, t, _ in render_segments(tokenizer, tpl, system, messages, add_generation_prompt))


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


# -- encoding -----------------------------------------------------------------------------------------
def encode_prompt(tokenizer, tpl: ChatTemplate, system: str | None, messages: Sequence[Message]) -> list[int]:
    """Token ids a model generates the next assistant reply from. `messages` must end with a user turn; no
    messages at all is the prompt a conversation's opening assistant message (a greeting) is generated from."""
    if messages and messages[-1].role != "user":
        raise ConfigError("a prompt must end with a user message (or hold no message: a greeting's prompt)")
    ids: list[int] = []
    for _, text, _ in render_segments(tokenizer, tpl, system, messages, add_generation_prompt=True):
        ids.extend(_ids(tokenizer, text))
    return ids


def _cut_middle(ids: list[int], budget: int) -> list[int]:
    """Keep the start (system/persona) and the end (the question and answer header) of a long prompt."""
    if len(ids) <= budget:
        return ids
    head = budget // 4
    return ids[:head] + ids[len(ids) - (budget - head):]


def encode_conversation(
    tokenizer,
    tpl: ChatTemplate,
    conv: Conversation,
    *,
    max_source_len: int | None = None,
    max_target_len: int | None = None,
    train_on_prompt: bool = False,
    last_turn_only: bool = False,
    ignore_index: int = -100,
) -> dict[str, list[int]]:
    """input_ids and labels for training: loss on assistant answers (+ their end token) only by default.

    Cutoffs really apply: the final answer is cut to `max_target_len` tokens; everything before it (the
    source) is cut to `max_source_len` tokens by dropping its middle, keeping the system text at the start
    and the question plus answer header at the end.
    """
    segs = render_segments(tokenizer, tpl, conv.system, conv.messages)
    last_answer = max((i for i, m in enumerate(conv.messages) if m.role == "assistant"), default=-1)
    source: list[tuple[list[int], list[int]]] = []  # (ids, labels) before the final answer
    target: list[tuple[list[int], list[int]]] = []
    for kind, text, idx in segs:
        ids = _ids(tokenizer, text)
        if kind == ANSWER:
            msg = conv.messages[idx]
            learn = msg.loss and (not last_turn_only or idx == last_answer)
        else:
            learn = False
        lab = list(ids) if (learn or train_on_prompt) else [ignore_index] * len(ids)
        (target if idx == last_answer and kind in (ANSWER, AFTER) else source).append((ids, lab))
    src_ids = [t for ids, _ in source for t in ids]
    src_lab = [t for _, lab in source for t in lab]
    tgt_ids = [t for ids, _ in target for t in ids]
    tgt_lab = [t for _, lab in target for t in lab]
    if max_source_len is not None and len(src_ids) > max_source_len:
        keep = _cut_middle(list(range(len(src_ids))), max_source_len)
        src_ids = [src_ids[k] for k in keep]
        src_lab = [src_lab[k] for k in keep]
    if max_target_len is not None and len(tgt_ids) > max_target_len:
        tgt_ids, tgt_lab = tgt_ids[:max_target_len], tgt_lab[:max_target_len]
    return {"input_ids": src_ids + tgt_ids, "labels": src_lab + tgt_lab}


def stop_token_ids(tokenizer, tpl: ChatTemplate, model_generation_config=None) -> list[int]:
    """Token ids that end a reply: the template's end-of-turn token, EOS, and the model's own EOS list."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if tpl.name == "chatml":
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
            ids.append(im_end)
    gen_eos = getattr(model_generation_config, "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.append(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.extend(gen_eos)
    if tpl.name == "tokenizer":
        # an end-of-turn special the template writes after a reply (e.g. <|eot_id|>, <|im_end|>)
        probe = [Message("user", "x"), Message("assistant", "y")]
        for kind, text, _ in _jinja_segments(tpl, tokenizer, None, probe, False):
            if kind == ANSWER and text != "y":
                end_ids = _ids(tokenizer, text[1:])
                if len(end_ids) == 1:
                    ids.append(end_ids[0])
    return sorted(set(ids))


# -- the same template as Jinja, for servers that take a chat template (vLLM) --------------------------
def _jinja_literal(text: str) -> str:
    # a JSON string is a valid Jinja string literal (the same escapes), also for non-ASCII text
    return json.dumps(text, ensure_ascii=False)


def _jinja_part(fmt: str, eos: str, content: str = "m['content']") -> str:
    """A part of a named template ("...{content}...{system}...{eos}") as one Jinja output expression;
    `content` is the Jinja expression {content} stands for."""
    pieces: list[str] = []
    rest = fmt.replace("{eos}", "\0eos\0").replace("{content}", "\0content\0").replace("{system}", "\0system\0")
    for i, piece in enumerate(rest.split("\0")):
        if i % 2:
            pieces.append({"eos": _jinja_literal(eos), "content": content, "system": "(ns.system or '')"}[piece])
        elif piece:
            pieces.append(_jinja_literal(piece))
    return "{{- " + (" + ".join(pieces) or "''") + " -}}" if pieces else ""


def to_jinja(tpl: ChatTemplate, tokenizer) -> str:
    """The template as a Jinja chat template over OpenAI-style messages (an optional leading system message):
    rendered with add_generation_prompt, it gives the text `render_text` gives for the same conversation,
    the saved default system text included, so a server that renders prompts itself sends what tunesmith
    sends. An exported model's tokenizer carries it, and vLLM gets it as --chat-template."""
    default = "none" if tpl.default_system is None else _jinja_literal(tpl.default_system)
    head = ("{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- set ns = namespace(system=messages[0]['content'], messages=messages[1:]) -%}"
            f"{{%- else -%}}{{%- set ns = namespace(system={default}, messages=messages) -%}}{{%- endif -%}}")
    if tpl.name == "tokenizer":
        if not tpl.jinja:
            raise ConfigError("template=tokenizer without its Jinja source (template.json has no 'jinja')")
        # the tokenizer's own template, given the system message tunesmith would add
        return head + ("{%- if ns.system -%}{%- set messages = [{'role': 'system', 'content': ns.system}] + "
                       "ns.messages -%}{%- else -%}{%- set messages = ns.messages -%}{%- endif -%}") + tpl.jinja
    spec = _NAMED[tpl.name]
    eos = _eos_text(tokenizer)
    system = ""
    if spec["system"]:
        system = f"{{%- if ns.system -%}}{_jinja_part(spec['system'], eos, content='ns.system')}{{%- endif -%}}"
    user = _jinja_part(spec["user"], eos)
    prefix = _jinja_part(spec["assistant_prefix"], eos)
    if prefix:
        user += f"{{%- if not loop.last or add_generation_prompt -%}}{prefix}{{%- endif -%}}"
    answer = _jinja_part("{content}" + spec["answer_end"] + spec["after"], eos)
    opening = _jinja_part(spec["opening"], eos)
    if opening:  # before an assistant message that opens the conversation; alone: a greeting's prompt
        answer = f"{{%- if loop.first -%}}{opening}{{%- endif -%}}" + answer
        system += f"{{%- if not ns.messages and add_generation_prompt -%}}{opening}{{%- endif -%}}"
    return (head + system + "{%- for m in ns.messages -%}{%- if m['role'] == 'user' -%}" + user
            + "{%- else -%}" + answer + "{%- endif -%}{%- endfor -%}")


def _go_part(fmt: str, eos: str, content: str) -> str:
    """A part of a named template as Go template text ({content} -> `content`, {system} -> the system text)."""
    return fmt.replace("{eos}", eos).replace("{content}", content).replace("{system}", "{{ $.System }}")


def _renders_alike(tokenizer, tpl: ChatTemplate, other: ChatTemplate, system: str | None,
                   messages: list[Message]) -> bool:
    """Both templates render this prompt the same; a conversation `tpl` refuses (a tokenizer template that
    refuses a greeting first) cannot differ, since tunesmith never sends it."""
    try:
        mine = render_text(tokenizer, tpl, system, messages, True)
    except ConfigError:
        return messages[0].role == "assistant"
    return mine == render_text(tokenizer, other, system, messages, True)


def to_ollama_template(tpl: ChatTemplate, tokenizer) -> str | None:
    """The template as an Ollama TEMPLATE (a Go template over .System and .Messages) rendering what
    `render_text` renders; None for a tokenizer's own template that is not chatml under another name (Go
    cannot run its Jinja: Ollama then reads the GGUF file's tokenizer.chat_template)."""
    name = tpl.name
    if name == "tokenizer":
        probes = [[Message("user", "u1"), Message("assistant", "a1"), Message("user", "u2")],
                  [Message("assistant", "a0"), Message("user", "u1")]]  # a greeting first
        # with a persona (the Modelfile's SYSTEM) every conversation reaches the template with system text
        systems = ("sys",) if tpl.default_system else ("sys", None)
        chatml = ChatTemplate("chatml")
        if any(not _renders_alike(tokenizer, tpl, chatml, s, probe) for s in systems for probe in probes):
            return None
        name = "chatml"
    spec = _NAMED[name]
    eos = _eos_text(tokenizer)
    system = ""
    if spec["system"]:
        system = "{{ if .System }}" + _go_part(spec["system"], eos, "{{ .System }}") + "{{ end }}"
    user = _go_part(spec["user"], eos, "{{ .Content }}")
    prefix = _go_part(spec["assistant_prefix"], eos, "")
    opening = _go_part(spec["opening"], eos, "")
    loop, prefix_of, last = "{{ range .Messages }}", prefix, prefix
    if opening != prefix:  # an assistant message that opens the conversation (a greeting) has its own header
        loop = "{{ range $i, $m := .Messages }}"
        prefix_of = "{{ if eq $i 0 }}" + opening + "{{ else }}" + prefix + "{{ end }}"
        last = "{{ if .Messages }}" + prefix + "{{ else }}" + opening + "{{ end }}"
    answer = prefix_of + _go_part("{content}" + spec["answer_end"] + spec["after"], eos, "{{ .Content }}")
    return (system + loop + '{{ if eq .Role "user" }}' + user + '{{ else if eq .Role "assistant" }}' + answer
            + "{{ end }}{{ end }}" + last)


# -- persistence next to an adapter -----------------------------------------------------------------
def save_template(tpl: ChatTemplate, folder: str | os.PathLike) -> Path:
    return atomic_write(Path(folder) / TEMPLATE_FILE, json.dumps(tpl.to_dict(), ensure_ascii=False, indent=2))


def load_template(folder: str | os.PathLike) -> ChatTemplate | None:
    path = Path(folder) / TEMPLATE_FILE
    if not path.is_file():
        return None
    try:
        return ChatTemplate.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from e
