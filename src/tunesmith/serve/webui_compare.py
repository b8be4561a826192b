"""The "Side by side" tab of the web chat at /ui: one message goes to the base and to adapters at once, and
their answers stream into columns next to each other, so what tuning changed is in plain view.

    tunesmith serve --adapter libai=runs/libai/adapter    # open http://127.0.0.1:8000/ui, tab "Side by side"

    # the same merge without a browser: every model's answer so far, after each new piece of any of them
    from tunesmith.serve.webui_compare import stream_answers
    question = [Message("user", "你是谁？")]
    for answers in stream_answers(engine, {"base": question, "libai": question}, options=GenerationOptions()):
        print({name: a.text for name, a in answers.items()})

What a column is:
- one model (the base or an adapter, labelled with its character's name when it is one), up to MAX_COLUMNS
  at a time; the picker chooses which are shown and asked;
- its own conversation: the shared user messages and that model's own answers (a model never sees another
  model's answers); a character's column opens with its first greeting, as its chats did in training and
  as the Chat tab does, so the comparison is with the conversation a user of that character would have;
- its own persona: an empty system prompt lets each model use its saved one (the base has none), which
  is the point of comparing; text typed there goes to every column alike.

Decoding is greedy by default, so that two columns differ by their weights and not by the dice.  A model
that fails (a prompt over its context, say) shows the error in its own column and the others go on; the
failed question is left out of that model's later prompts.

All requests are queued at once (engine.enqueue with mix_adapters) and their pieces read from one queue in
arrival order.  The engine runs them as one batch whose rows each go through their own adapter (PEFT's
mixed-adapter batch), so the columns grow together, token by token.  Where the model cannot mix (int8
weights) or with beams, each adapter's request runs after the other's and the columns fill in turn.
Closing the stream (the browser went away) cancels every request still running.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from tunesmith.conversation import Message
from tunesmith.errors import TunesmithError
from tunesmith.infer.options import GenerationOptions

MAX_COLUMNS = 4  # wider than four, each column is too narrow to read
MAX_HISTORY_TURNS = 10  # the Chat tab's default
ERROR_TITLE = "⚠ error"  # the metadata title that marks a column's error note (never sent to a model)
_DONE = object()


@dataclass
class Answer:
    """One model's answer so far: its text, an error that ended it, and whether it is finished."""

    text: str = ""
    error: str | None = None
    done: bool = False


def stream_answers(engine, conversations: Mapping[str, Sequence[Message]], system: str | None = None,
                   options: GenerationOptions | Mapping[str, GenerationOptions] | None = None,
                   max_history_turns: int | None = MAX_HISTORY_TURNS) -> Iterator[dict[str, Answer]]:
    """Answer each {model name: messages} at once; yield {name: Answer} (copies) first with the requests
    queued (and any model that could not be asked already failed), then whenever new pieces arrived,
    until every answer is done.  Closing the generator cancels the requests still running.
    `options`: one GenerationOptions for every model, or {name: options} (each model its own sampler)."""
    per_model = options if isinstance(options, Mapping) else dict.fromkeys(conversations, options)
    opts_of = {name: replace(per_model.get(name) or GenerationOptions(), n=1).validate() for name in conversations}
    answers = {name: Answer() for name in conversations}
    arrivals: queue.Queue = queue.Queue()  # (name, piece) from the engine's worker, then (name, _DONE)
    requests = {}
    try:
        prompts = {}
        for name, messages in conversations.items():  # every prompt first, so the requests arrive together
            try:
                prompts[name] = engine.prompt_ids(list(messages), system, name, opts_of[name], max_history_turns)
            except TunesmithError as e:  # this model cannot be asked; the others still are
                answers[name] = Answer(error=str(e), done=True)
        for name, ids in prompts.items():
            try:
                req = engine.enqueue(ids, name, opts_of[name],
                                     lambda _choice, piece, name=name: arrivals.put((name, piece)),
                                     mix_adapters=True)
            except TunesmithError as e:
                answers[name] = Answer(error=str(e), done=True)
                continue
            requests[name] = req
            req.future.add_done_callback(lambda _f, name=name: arrivals.put((name, _DONE)))
        yield _copies(answers)
        running = set(requests)
        while running:
            item = arrivals.get()
            while item is not None:  # take everything that arrived meanwhile into one update
                name, piece = item
                if piece is _DONE:
                    running.discard(name)
                    answers[name].done = True
                    answers[name].error = _failure(requests[name].future)
                else:
                    answers[name].text += piece
                item = _next_or_none(arrivals)
            yield _copies(answers)
    finally:
        for req in requests.values():
            if not req.future.done():  # the reader went away: stop generating for it
                req.cancel()


def _copies(answers: dict[str, Answer]) -> dict[str, Answer]:
    return {name: replace(a) for name, a in answers.items()}


def _next_or_none(arrivals: queue.Queue):
    try:
        return arrivals.get_nowait()
    except queue.Empty:
        return None


def _failure(future) -> str | None:
    """What ended a finished request other than its answer, as one line (None: it answered)."""
    if future.cancelled():
        return "cancelled"
    e = future.exception()
    if e is None:
        return None
    return str(e) if isinstance(e, TunesmithError) else f"{type(e).__name__}: {e}"


# -- the columns' histories (what the Chatbots hold) ----------------------------------------------------


def column_label(engine, name: str) -> str:
    """A column's title: a character shows its name, e.g. "李白 (libai)"."""
    char = engine.character_for(name)
    return f"{char.name} ({name})" if char is not None and char.name != name else name


def column_opening(engine, name: str) -> list[dict]:
    """A new conversation in `name`'s column: its character's first greeting, or empty."""
    char = engine.character_for(name)
    return [{"role": "assistant", "content": char.greetings[0]}] if char is not None and char.greetings else []


def chatbot_history(value) -> list[dict]:
    """A Chatbot's value as [{"role", "content": str, "error": bool}] (error: one of this tab's error notes)."""
    out = []
    for m in value or []:
        get = m.get if isinstance(m, dict) else lambda key, default=None, m=m: getattr(m, key, default)
        content = get("content", "")
        if isinstance(content, list):
            content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        metadata = get("metadata") or {}
        title = metadata.get("title") if isinstance(metadata, dict) else getattr(metadata, "title", None)
        out.append({"role": get("role", "user"), "content": content or "", "error": title == ERROR_TITLE})
    return out


def past_turns(history: Sequence[dict]) -> list[Message]:
    """The messages a column's model sees before the new question: its greeting, then each question with
    its answer; a question whose answer failed or never came (a closed page) is left out."""
    messages: list[Message] = []
    greeting: list[str] = []
    question, answer, failed = None, [], False
    for m in [*history, {"role": "user", "content": "", "error": False}]:  # the sentinel closes the last turn
        if m["role"] == "user":
            if question is not None and answer and not failed:
                messages += [Message("user", question), Message("assistant", "".join(answer))]
            question, answer, failed = m["content"], [], False
        elif m["error"]:
            failed = True
        elif question is None:
            greeting.append(m["content"])
        else:
            answer.append(m["content"])
    return [Message("assistant", "\n\n".join(greeting))] + messages if greeting else messages


def column_view(history: list[dict], question: str, answer: Answer) -> list[dict]:
    """What a column shows while (and after) it answers `question`."""
    shown = [_chat_message(m) for m in history] + [{"role": "user", "content": question}]
    if answer.text or (answer.done and answer.error is None):
        shown.append({"role": "assistant", "content": answer.text})
    if answer.error is not None:
        shown.append({"role": "assistant", "content": answer.error, "metadata": {"title": ERROR_TITLE}})
    return shown


def _chat_message(m: dict) -> dict:
    out = {"role": m["role"], "content": m["content"]}
    if m.get("error"):
        out["metadata"] = {"title": ERROR_TITLE}
    return out


# -- the tab ------------------------------------------------------------------------------------------------


def build_compare_tab(engine, d: GenerationOptions) -> None:
    """The Side by side tab, inside the current gr.Blocks / Tab; `d`: the server's GenerationOptions."""
    import gradio as gr

    names = list(engine.adapter_names)
    start = names[:MAX_COLUMNS]
    max_new_cap = max(16, min(4096, engine.context_length // 2))

    def persona_note(name: str) -> str:
        saved = engine.template_for(name).default_system
        return f"Persona: {saved}" if saved else "No saved persona"

    def send(message, selected, system, max_new, do_sample, temperature, *values):
        histories = [chatbot_history(v) for v in values]
        unchanged = [[_chat_message(m) for m in h] for h in histories]
        asked = [n for n in names if n in (selected or [])]
        if not (message or "").strip() or not asked:
            if not asked:
                gr.Warning("Pick at least one model to compare.")
            yield message, *unchanged
            return
        try:
            # each model answers as chat would (its recommended sampler, generation.json), with the tab's controls
            controls = {"max_new_tokens": int(max_new), "do_sample": bool(do_sample), "temperature": float(temperature)}
            opts = {n: engine.options_for(n, d).updated(controls) for n in asked}
        except TunesmithError as e:
            raise gr.Error(str(e)) from None
        conversations = {n: past_turns(histories[names.index(n)]) + [Message("user", message)] for n in asked}
        for answers in stream_answers(engine, conversations, (system or "").strip() or None, opts):
            yield "", *[column_view(h, message, answers[n]) if n in answers else u
                        for n, h, u in zip(names, histories, unchanged)]

    with gr.Row():
        picked = gr.Dropdown([(column_label(engine, n), n) for n in names], value=start, multiselect=True,
                             max_choices=MAX_COLUMNS, label=f"Models to compare (at most {MAX_COLUMNS})",
                             elem_id="compare-models", scale=3)
        max_new = gr.Slider(1, max_new_cap, value=min(d.max_new_tokens, max_new_cap), step=1,
                            label="Max new tokens", elem_id="compare-max-new-tokens", scale=1)
        do_sample = gr.Checkbox(value=False, label="Do sample (off: greedy)", elem_id="compare-do-sample", scale=1)
        temperature = gr.Slider(0.01, 2.0, value=max(0.01, d.temperature), step=0.01, label="Temperature",
                                elem_id="compare-temperature", scale=1)
    system = gr.Textbox(label="System prompt (for every column)", lines=2, elem_id="compare-system",
                        placeholder="(empty: each model uses its own saved persona; the base has none)")
    with gr.Row(equal_height=True):
        columns = [gr.Chatbot(column_opening(engine, n), label=column_label(engine, n), height=440, min_width=200,
                              placeholder=persona_note(n), visible=n in start, elem_id=f"compare-{n}")
                   for n in names]
    message = gr.Textbox(show_label=False, placeholder="One message to every column, Enter to send", lines=2,
                         elem_id="compare-input")
    with gr.Row():
        send_btn = gr.Button("Send", variant="primary", elem_id="compare-send")
        clear_btn = gr.Button("Clear", elem_id="compare-clear")
    inputs = [message, picked, system, max_new, do_sample, temperature, *columns]
    message.submit(send, inputs, [message, *columns], concurrency_limit=None)
    send_btn.click(send, inputs, [message, *columns], concurrency_limit=None)
    clear_btn.click(lambda: ("", *[column_opening(engine, n) for n in names]), None, [message, *columns],
                    queue=False)
    picked.change(lambda sel: [gr.update(visible=n in (sel or [])) for n in names], picked, columns, queue=False)
