"""The Scene tab of the web chat at /ui: several characters (adapters on one base) and the user in one conversation.

    tunesmith serve --adapter alice=runs/alice/adapter --adapter bob=runs/bob/adapter   # then /ui, tab "Scene"

The user picks the participants and who speaks next ("Take turns": each participant in order, after the last
character who spoke).  Every reply comes from the speaker's own adapter and sees the whole scene so far, as
`scene_prompt` builds it for that speaker:

    system     the speaker's persona (its character's, else the adapter's saved one), the scene description,
               and one line naming the others present and telling it to answer only as itself
    assistant  each of the speaker's own earlier lines
    user       everyone else's lines (the user's and the other characters'), each written "Name: text",
               consecutive ones merged into one message, one line each

so the speaker's adapter sees the shape it was trained on: its own lines as answers, the rest as what it answers
(tunesmith.scene holds scene_prompt and scene_system, shared with the group chats `tunesmith data convert --from
sillytavern` turns into training data).
Where the speaker spoke last, a user message "(continue)" asks for its next line (an empty scene:
"(the scene begins)"); the speaker's own line opening the scene stays an assistant-first greeting, as in training.
The reply stops where the model starts another speaker's line ("\\nName:"), and a leading "Name:" of its own is
removed.  docs/serving.md ("Scenes") has an example.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping

from tunesmith.scene import CONTINUE_LINE, START_LINE, scene_prompt, scene_system  # noqa: F401 - re-exported

TAKE_TURNS = "(take turns)"  # the "Next speaker" value for round-robin; parentheses keep it apart from adapter names
DEFAULT_USER_NAME = "User"
MAX_SCENE_STOPS = 16  # GenerationOptions allows 16 stop strings (MAX_STOP_STRINGS)

# A transcript line: {"speaker": adapter name, or None for the user, "name": the name shown, "text": the line}.
# The name is kept with the line so a later change of the user's name or of the participants leaves it as said.


def scene_stops(speaker: str, participants: Mapping[str, str], user_name: str) -> list[str]:
    """Stop strings that end a reply where the model starts writing someone else's line."""
    others = [name for adapter, name in participants.items() if adapter != speaker] + [user_name]
    stops = [f"\n{name}{colon}" for name in dict.fromkeys(others) if name for colon in (":", "：")]
    return stops[:MAX_SCENE_STOPS]


def clean_reply(text: str, name: str) -> str:
    """The reply without a leading "Name:" (or "**Name**:") the model may echo from the transcript."""
    return re.sub(rf"^\s*(\*\*)?{re.escape(name)}(\*\*)?\s*[:：]\s*", "", text).strip()


def next_speaker(transcript: list[dict], participants: Iterable[str], choice: str | None) -> str | None:
    """The adapter that speaks next: `choice` when it is a participant, else the participant after the last
    character who spoke (the first one when none of them has spoken); None without participants."""
    order = list(participants)
    if not order:
        return None
    if choice in order:
        return choice
    for line in reversed(transcript):
        if line["speaker"] in order:
            return order[(order.index(line["speaker"]) + 1) % len(order)]
    return order[0]


def render_transcript(transcript: list[dict]) -> list[dict]:
    """Chatbot messages: the user's lines as user messages, each character's as an assistant message headed
    by its bold name (a Chatbot metadata title would fold the line into a collapsible "thought")."""
    return [{"role": "user", "content": line["text"]} if line["speaker"] is None
            else {"role": "assistant", "content": f"**{line['name']}**: {line['text']}"} for line in transcript]


def display_name(engine, adapter: str) -> str:
    """The name a participant goes by in the scene: its character's name, else the adapter name."""
    char = engine.character_for(adapter)
    return char.name if char is not None and char.name else adapter


def persona_for(engine, adapter: str) -> str | None:
    """The persona an adapter speaks with: its character's, else the adapter template's default system text."""
    char = engine.character_for(adapter)
    if char is not None and char.persona:
        return char.persona
    return engine.template_for(adapter).default_system


def scene_opening(engine, participants: list[str]) -> list[dict]:
    """A new scene: the first participant's first greeting when it is a character that has one, else empty."""
    if not participants:
        return []
    char = engine.character_for(participants[0])
    if char is None or not char.greetings:
        return []
    return [{"speaker": participants[0], "name": display_name(engine, participants[0]), "text": char.greetings[0]}]


def default_participants(engine) -> list[str]:
    """The first two adapters other than the base, or what there is."""
    names = engine.adapter_names
    tuned = [n for n in names if n != "base"]
    return (tuned or names)[:2]


def stream_line(engine, transcript: list[dict], speaker: str, participants: Mapping[str, str], user_name: str,
                description: str | None, options) -> Iterator[dict]:
    """`speaker`'s next line as it is generated (a transcript line, growing), from its own adapter; the scene's
    stop strings are added to those of `options` (GenerationOptions), up to the 16 allowed."""
    system, messages = scene_prompt(transcript, speaker, participants, user_name,
                                    lambda a: persona_for(engine, a), description)
    stops = list(dict.fromkeys([*options.stop, *scene_stops(speaker, participants, user_name)]))
    opts = dataclasses.replace(options, stop=stops[:MAX_SCENE_STOPS]).validate()
    line = {"speaker": speaker, "name": participants[speaker], "text": ""}
    raw = ""
    for piece in engine.stream(messages, system=system, adapter=speaker, options=opts):
        raw += piece
        line = {**line, "text": clean_reply(raw, line["name"])}
        yield line
    yield line


def build_scene_tab(engine, d) -> None:
    """The Scene tab, inside the current gr.Blocks / Tab; `d`: the server's GenerationOptions."""
    import gradio as gr

    from tunesmith.errors import TunesmithError

    labels = {n: (f"{display_name(engine, n)} ({n})" if display_name(engine, n) != n else n)
              for n in engine.adapter_names}
    start = default_participants(engine)
    max_new_cap = max(16, min(4096, engine.context_length // 2))

    def speaker_choices(chosen) -> list[tuple[str, str]]:
        return [("Take turns", TAKE_TURNS)] + [(labels.get(n, n), n) for n in chosen or []]

    def reply(transcript, chosen, user_name, choice, description, do_sample, temperature, max_new):
        """Stream the next speaker's line; yields the transcript with the line as it grows."""
        chosen = [n for n in chosen or [] if n in labels]
        speaker = next_speaker(transcript, chosen, choice)
        if speaker is None:
            raise gr.Error("Pick at least one participant.")
        participants = {n: display_name(engine, n) for n in chosen}
        try:
            # the speaker's recommended sampler (generation.json), as its own chat would use, with the tab's controls
            opts = engine.options_for(speaker, d).updated(
                {"max_new_tokens": int(max_new), "do_sample": bool(do_sample), "temperature": float(temperature)})
            for line in stream_line(engine, transcript, speaker, participants,
                                    (user_name or "").strip() or DEFAULT_USER_NAME, description, opts):
                yield transcript + [line]
        except TunesmithError as e:
            raise gr.Error(str(e)) from None

    def send(message, transcript, chosen, user_name, *settings):
        """Add the user's line (when there is one), then the next speaker replies."""
        transcript = list(transcript or [])
        if (message or "").strip():
            name = (user_name or "").strip() or DEFAULT_USER_NAME
            transcript.append({"speaker": None, "name": name, "text": message.strip()})
        yield "", transcript, render_transcript(transcript)
        for t in reply(transcript, chosen, user_name, *settings):
            yield "", t, render_transcript(t)

    def continue_scene(transcript, chosen, user_name, *settings):
        transcript = list(transcript or [])
        yield transcript, render_transcript(transcript)
        for t in reply(transcript, chosen, user_name, *settings):
            yield t, render_transcript(t)

    def pick_participants(chosen, choice):
        keep = choice if choice in (chosen or []) else TAKE_TURNS
        return gr.update(choices=speaker_choices(chosen), value=keep)

    def clear(chosen):
        transcript = scene_opening(engine, [n for n in chosen or [] if n in labels])
        return transcript, render_transcript(transcript), ""

    opening = scene_opening(engine, start)
    transcript = gr.State(opening)
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(render_transcript(opening), label="Scene", height=460, elem_id="scene-chatbot",
                                 group_consecutive_messages=False)
            message = gr.Textbox(show_label=False, placeholder="Your line (empty: the next speaker just goes on)",
                                 lines=2, elem_id="scene-input")
            with gr.Row():
                send_btn = gr.Button("Send", variant="primary", elem_id="scene-send-btn")
                continue_btn = gr.Button("Continue", elem_id="scene-continue-btn")
                clear_btn = gr.Button("Clear", elem_id="scene-clear-btn")
        with gr.Column(scale=1):
            participants = gr.Dropdown([(label, n) for n, label in labels.items()], value=start, multiselect=True,
                                       label="Participants", elem_id="scene-participants")
            speaker = gr.Dropdown(speaker_choices(start), value=TAKE_TURNS, label="Next speaker",
                                  elem_id="scene-next-speaker")
            user_name = gr.Textbox(DEFAULT_USER_NAME, label="Your name", elem_id="scene-user-name")
            description = gr.Textbox(label="Scene description", lines=3, elem_id="scene-description",
                                     placeholder="(optional) where and when; added to every character's system text")
            do_sample = gr.Checkbox(value=d.do_sample, label="Do sample", elem_id="scene-do-sample")
            temperature = gr.Slider(0.01, 2.0, value=max(0.01, d.temperature), step=0.01, label="Temperature",
                                    elem_id="scene-temperature")
            max_new = gr.Slider(1, max_new_cap, value=min(d.max_new_tokens, max_new_cap), step=1,
                                label="Max new tokens", elem_id="scene-max-new-tokens")
    settings = [speaker, description, do_sample, temperature, max_new]
    message.submit(send, [message, transcript, participants, user_name, *settings], [message, transcript, chatbot],
                   concurrency_limit=None)
    send_btn.click(send, [message, transcript, participants, user_name, *settings], [message, transcript, chatbot],
                   concurrency_limit=None)
    continue_btn.click(continue_scene, [transcript, participants, user_name, *settings], [transcript, chatbot],
                       concurrency_limit=None)
    clear_btn.click(clear, participants, [transcript, chatbot, message], queue=False)
    participants.change(pick_participants, [participants, speaker], speaker, queue=False)
    chatbot.clear(lambda: [], None, transcript, queue=False)  # the Chatbot's own trash button: an empty scene
