"""The web chat served at /ui by `tunesmith serve`: pick a role (adapter), set sampling, chat with streaming.

    tunesmith serve --adapter libai=runs/libai/adapter      # then open http://127.0.0.1:8000/ui

Three tabs:
- Chat: role / adapter, system prompt (empty: the adapter's saved persona, if any), do-sample,
  temperature, top-p, top-k, beams, max new tokens, max history (in turns: one user message and its
  answer), an "Anti-repetition" accordion (min-p, repetition / presence / frequency penalty, no-repeat
  n-gram size, DRY multiplier / base / allowed length; infer/samplers.py), and Submit / Retry / Clear.
  Picking an adapter trained as a character (character.json next to it) starts a new conversation with its
  greeting; its other greetings are offered under "Greeting".  Picking an adapter saved with a recommended
  sampler (generation.json) sets the sampling controls to it; what is then changed by hand wins.
- Scene: several characters and the user in one conversation (serve/webui_scene.py).
- Side by side: one message to the base and adapters at once, the answers streamed next to each other
  (serve/webui_compare.py).

Several browser sessions are served at once; their requests are batched by the engine.  Gradio's analytics
are switched off and the default theme uses bundled fonts, so the page loads without internet access.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def gradio_launch_kwargs() -> dict:
    """Options for gr.mount_gradio_app: no server-side rendering (no Node process), no footer links out."""
    return {"ssr_mode": False, "footer_links": []}


def _plain_history(history) -> list[dict]:
    """Chat history as [{"role", "content": str}] whatever shape the Chatbot handed back."""
    out = []
    for m in history or []:
        content = m.get("content") if isinstance(m, dict) else getattr(m, "content", "")
        if isinstance(content, list):
            content = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
        role = m.get("role") if isinstance(m, dict) else getattr(m, "role", "user")
        out.append({"role": role, "content": content or ""})
    return out


def adapter_choices(engine) -> list[tuple[str, str]]:
    """(label, adapter name) for the role dropdowns: a character shows its name, e.g. "Seraphina (seraphina)"."""
    out = []
    for name in engine.adapter_names:
        char = engine.character_for(name)
        out.append((f"{char.name} ({name})" if char is not None and char.name != name else name, name))
    return out


def greeting_choices(engine, adapter: str) -> list[tuple[str, int]]:
    """(a short label, index) for each greeting of `adapter`'s character; empty when it has none."""
    char = engine.character_for(adapter)
    greetings = char.greetings if char is not None else []
    return [(f"{i + 1}. {g[:60]}{'...' if len(g) > 60 else ''}", i) for i, g in enumerate(greetings)]


def opening(engine, adapter: str, index: int | None = 0) -> list[dict]:
    """A new conversation with `adapter`: its character's greeting `index` (the first by default), or empty."""
    char = engine.character_for(adapter)
    if char is None or not char.greetings:
        return []
    i = index if isinstance(index, int) and 0 <= index < len(char.greetings) else 0
    return [{"role": "assistant", "content": char.greetings[i]}]


# The sampling controls of the Chat tab, in the order their values reach `generate`: the first five in view,
# the rest under "Anti-repetition" as (label, minimum, maximum, step).
SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "num_beams")
ANTI_REPETITION = {
    "min_p": ("Min-p (0: off; with sampling)", 0.0, 1.0, 0.01),
    "repetition_penalty": ("Repetition penalty (1: off; per token, hard on Chinese)", 1.0, 2.0, 0.01),
    "presence_penalty": ("Presence penalty (0: off)", -2.0, 2.0, 0.05),
    "frequency_penalty": ("Frequency penalty (0: off)", -2.0, 2.0, 0.05),
    "no_repeat_ngram_size": ("No-repeat n-gram size (0: off)", 0, 16, 1),
    "dry_multiplier": ("DRY multiplier (0: off)", 0.0, 5.0, 0.05),
    "dry_base": ("DRY base", 1.01, 4.0, 0.01),
    "dry_allowed_length": ("DRY allowed length", 1, 20, 1),
}


def sampler_values(engine, adapter: str, defaults) -> list:
    """The sampling controls' values for `adapter`: its recommended sampler (generation.json) over the
    server's defaults, in the order of SAMPLING_FIELDS then ANTI_REPETITION."""
    opts = engine.options_for(adapter, defaults)
    values = [getattr(opts, name) for name in (*SAMPLING_FIELDS, *ANTI_REPETITION)]
    values[1] = max(0.01, values[1])  # the temperature slider starts at 0.01
    return values


def options_from(engine, adapter: str, defaults, max_new, values):
    """GenerationOptions from the controls' values (sliders hand back floats: integer fields are rounded)."""
    from tunesmith.infer.options import GenerationOptions

    typed = {}
    for name, value in zip((*SAMPLING_FIELDS, *ANTI_REPETITION), values):
        kind = type(getattr(GenerationOptions(), name))
        typed[name] = bool(value) if kind is bool else int(round(value)) if kind is int else float(value)
    return engine.options_for(adapter, defaults).updated({"max_new_tokens": int(max_new), **typed})


def build_chat_ui(engine, defaults=None, max_history_turns: int | None = 10):
    """A gr.Blocks with the Chat, Scene and Side by side tabs over `engine`."""
    import gradio as gr

    from tunesmith.infer.options import GenerationOptions
    from tunesmith.serve.webui_compare import build_compare_tab
    from tunesmith.serve.webui_scene import build_scene_tab

    d = defaults or GenerationOptions()
    with gr.Blocks(title="tunesmith chat", analytics_enabled=False) as demo:
        gr.Markdown("### tunesmith chat")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat", elem_id="tab-chat"):
                build_chat_tab(engine, d, max_history_turns)
            with gr.Tab("Scene", id="scene", elem_id="tab-scene"):
                build_scene_tab(engine, d)
            with gr.Tab("Side by side", id="compare", elem_id="tab-compare"):
                build_compare_tab(engine, d)
    demo.queue(default_concurrency_limit=None)
    return demo


def build_chat_tab(engine, d, max_history_turns: int | None) -> None:
    """The one-role chat, inside the current gr.Blocks / Tab; `d`: the server's GenerationOptions."""
    import gradio as gr

    from tunesmith.conversation import Message
    from tunesmith.errors import TunesmithError

    names = engine.adapter_names
    start = names[1] if len(names) > 1 else names[0]
    max_new_cap = max(16, min(4096, engine.context_length // 2))

    def persona(adapter: str) -> str:
        tpl = engine.template_for(adapter)
        return f"(default: {tpl.default_system})" if tpl.default_system else "(none)"

    def generate(history, adapter, system, max_new, max_hist, *samplers):
        """Stream the answer to `history` (which ends with a user message)."""
        try:
            opts = options_from(engine, adapter, d, max_new, samplers)
            messages = [Message(m["role"], m["content"]) for m in history]
            answer = ""
            for piece in engine.stream(messages, system=(system or "").strip() or None, adapter=adapter,
                                       options=opts, max_history_turns=int(max_hist)):
                answer += piece
                yield history + [{"role": "assistant", "content": answer}]
            yield history + [{"role": "assistant", "content": answer}]
        except TunesmithError as e:
            raise gr.Error(str(e)) from None

    def submit(message, history, *settings):
        history = _plain_history(history)
        if not (message or "").strip():
            yield message, history
            return
        history = history + [{"role": "user", "content": message}]
        yield "", history
        for h in generate(history, *settings):
            yield "", h

    def retry(history, *settings):
        history = _plain_history(history)
        if not any(m["role"] == "user" for m in history):
            yield history  # nothing asked yet (a character's greeting stays)
            return
        while history[-1]["role"] == "assistant":
            history = history[:-1]
        yield history
        yield from generate(history, *settings)

    def pick_adapter(adapter):
        """A new conversation with the picked role: its greeting first when it is a character, the sampling
        controls at its recommended sampler."""
        greetings = greeting_choices(engine, adapter)
        return (opening(engine, adapter), gr.update(placeholder=persona(adapter)),
                gr.update(choices=greetings, value=0 if greetings else None, visible=bool(greetings)),
                *sampler_values(engine, adapter, d))

    greetings = greeting_choices(engine, start)
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(opening(engine, start), label="Conversation", height=460, elem_id="chatbot")
            message = gr.Textbox(show_label=False, placeholder="Type a message, Enter to send", lines=2,
                                 elem_id="user-input")
            with gr.Row():
                submit_btn = gr.Button("Submit", variant="primary", elem_id="submit-btn")
                retry_btn = gr.Button("Retry", elem_id="retry-btn")
                clear_btn = gr.Button("Clear", elem_id="clear-btn")
        with gr.Column(scale=1):
            adapter = gr.Dropdown(adapter_choices(engine), value=start, label="Role / adapter", elem_id="adapter")
            greeting = gr.Dropdown(greetings, value=0 if greetings else None, label="Greeting",
                                   visible=bool(greetings), elem_id="greeting")
            system = gr.Textbox(label="System prompt", lines=3, placeholder=persona(start), elem_id="system")
            samplers = _sampler_controls(sampler_values(engine, start, d))
            max_new = gr.Slider(1, max_new_cap, value=min(d.max_new_tokens, max_new_cap), step=1,
                                label="Max new tokens", elem_id="max-new-tokens")
            max_hist = gr.Slider(0, 50, value=10 if max_history_turns is None else max_history_turns, step=1,
                                 label="Max history (turns)")
    settings = [adapter, system, max_new, max_hist, *samplers]
    message.submit(submit, [message, chatbot, *settings], [message, chatbot], concurrency_limit=None)
    submit_btn.click(submit, [message, chatbot, *settings], [message, chatbot], concurrency_limit=None)
    retry_btn.click(retry, [chatbot, *settings], [chatbot], concurrency_limit=None)
    clear_btn.click(lambda a, g: (opening(engine, a, g), ""), [adapter, greeting], [chatbot, message], queue=False)
    adapter.input(pick_adapter, adapter, [chatbot, system, greeting, *samplers], queue=False)
    greeting.input(lambda a, g: opening(engine, a, g), [adapter, greeting], chatbot, queue=False)


def _sampler_controls(values: list) -> list:
    """The sampling controls (inside the current column), set to `values` (see sampler_values)."""
    import gradio as gr

    do_sample, temperature, top_p, top_k, num_beams, *anti = values
    controls = [gr.Checkbox(value=do_sample, label="Do sample", elem_id="do-sample"),
                gr.Slider(0.01, 2.0, value=temperature, step=0.01, label="Temperature"),
                gr.Slider(0.01, 1.0, value=top_p, step=0.01, label="Top-p"),
                gr.Slider(0, 200, value=top_k, step=1, label="Top-k (0: off)"),
                gr.Slider(1, 8, value=num_beams, step=1, label="Beams")]
    with gr.Accordion("Anti-repetition", open=False, elem_id="anti-repetition"):
        for (name, (label, low, high, step)), value in zip(ANTI_REPETITION.items(), anti):
            controls.append(gr.Slider(low, high, value=value, step=step, label=label,
                                      elem_id=name.replace("_", "-")))
    return controls
