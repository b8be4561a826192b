"""How a scene (several characters and the user in one conversation) reaches one character's model.

    from tunesmith.scene import scene_prompt, scene_messages, scene_system

A transcript line is {"speaker": who speaks (an adapter or character key, None for the user), "name": the name
shown, "text": the line}.  For the speaker asked:

    system     its persona, the scene description, and one line naming the others present and telling it to
               answer only as itself (scene_system)
    assistant  each of its own lines
    user       everyone else's lines (the user's and the other characters'), each written "Name: text",
               consecutive ones merged into one message, one line each

The web chat's Scene tab (tunesmith.serve.webui_scene) builds its prompts with scene_prompt, and a group chat
imported for training (tunesmith.data.sillytavern) its conversations with scene_messages and scene_system, so a
character trained on group chats sees the shape the Scene tab serves it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tunesmith.conversation import Message

CONTINUE_LINE = "(continue)"  # asks a speaker who spoke last for its next line
START_LINE = "(the scene begins)"  # asks for the first line of an empty scene


def _names(names: list[str]) -> str:
    """"A", "A and B", "A, B and C"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def scene_system(speaker: str, participants: Mapping[str, str], user_name: str, persona: str | None,
                 description: str | None = None) -> str:
    """The speaker's system text: persona, the scene description, and who else is present.

    `participants`: speaker key -> the name shown, in speaking order (the user is not among them)."""
    me = participants.get(speaker, speaker)
    others = [name for key, name in participants.items() if key != speaker] + [user_name]
    scene_line = (f"{me} is in a scene with {_names(others)}. The others' lines come as \"Name: text\". "
                  f"Reply only as {me}, with {me}'s next line.")
    return "\n\n".join(p.strip() for p in (persona, description, scene_line) if p and p.strip())


def scene_messages(transcript: list[dict], speaker: str) -> tuple[list[Message], list[str]]:
    """(messages, heard): the speaker's own lines as assistant messages, everyone else's as "Name: text" lines of
    the user messages between them (consecutive ones merged; two own lines in a row get a "(continue)" user
    message between them), and `heard`, the others' lines after the speaker's last own line (not in messages)."""
    messages: list[Message] = []
    heard: list[str] = []  # others' lines since the speaker's last own line
    for line in transcript:
        if line["speaker"] == speaker:
            if heard:
                messages.append(Message("user", "\n".join(heard)))
                heard = []
            elif messages:  # two own lines in a row: the "(continue)" that asked for the second one
                messages.append(Message("user", CONTINUE_LINE))
            messages.append(Message("assistant", line["text"]))
        else:
            heard.append(f"{line['name']}: {line['text']}")
    return messages, heard


def scene_prompt(transcript: list[dict], speaker: str, participants: Mapping[str, str], user_name: str,
                 system_for: Callable[[str], str | None],
                 description: str | None = None) -> tuple[str, list[Message]]:
    """(system, messages) that ask `speaker` for its next line in the scene.

    `participants`: speaker key -> the name shown, in speaking order; `system_for(key)`: its persona or None.
    The messages are scene_messages' and end with a user message: the others' lines since the speaker's last
    own line, or "(continue)" when it spoke last ("(the scene begins)" in an empty scene)."""
    messages, heard = scene_messages(transcript, speaker)
    if heard:
        messages.append(Message("user", "\n".join(heard)))
    else:
        messages.append(Message("user", CONTINUE_LINE if messages else START_LINE))
    return scene_system(speaker, participants, user_name, system_for(speaker), description), messages
