"""The terminal chat loop behind `tunesmith chat`: multi-turn, streamed, with slash commands.

    tunesmith chat --adapter libai=runs/libai/adapter --system "你是李白"

Commands inside the chat (type /help):

    /clear              forget the conversation (the system prompt stays; a character greets again)
    /greeting [N]       start over with the character's greeting N (/greeting alone lists them)
    /retry              answer the last question again (useful with sampling)
    /system TEXT        set the system prompt (/system alone removes it)
    /adapter NAME       talk to another loaded adapter, or "base" (/adapter alone lists them)
    /set key=value ...  change a generation option, e.g. /set do_sample=true temperature=0.9 num_beams=1
                        (also max_history_turns=N; /set alone shows the current values)
    /history            show the conversation so far
    /exit               leave (Ctrl-D works too)

An adapter trained as a character (character.json next to it) opens the conversation: its greeting is printed
first and is the first assistant message the model sees, as in training.

`run_chat` takes its input and output streams as arguments so tests can drive it.
"""

from __future__ import annotations

import dataclasses
import shlex
from typing import TextIO

from tunesmith.conversation import Message
from tunesmith.errors import ConfigError, TunesmithError
from tunesmith.infer.options import GenerationOptions

HELP = __doc__.split("Commands inside the chat (type /help):", 1)[1].split("`run_chat`", 1)[0].rstrip() + "\n"


@dataclasses.dataclass
class ChatState:
    adapter: str
    options: GenerationOptions
    system: str | None = None
    max_history_turns: int | None = 10
    messages: list[Message] = dataclasses.field(default_factory=list)


def run_chat(engine, state: ChatState, stdin: TextIO, stdout: TextIO, *, prompt: str = ">>> ",
             interactive: bool = False) -> ChatState:
    """Read lines until /exit or end of input; returns the final state (for tests)."""

    def say(text: str = "") -> None:
        stdout.write(text + "\n")
        stdout.flush()

    def read_line() -> str | None:
        if interactive:
            try:
                return input(prompt)
            except EOFError:
                return None
        stdout.write(prompt)
        stdout.flush()
        line = stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def answer() -> None:
        """Stream a reply to state.messages (which end with the user's message) and keep it."""
        pieces: list[str] = []
        try:
            for piece in engine.stream(state.messages, system=state.system, adapter=state.adapter,
                                       options=state.options, max_history_turns=state.max_history_turns):
                pieces.append(piece)
                stdout.write(piece)
                stdout.flush()
        except TunesmithError as e:
            state.messages.pop()  # the question could not be answered: do not keep it
            say(f"error: {e}")
            return
        say()
        state.messages.append(Message("assistant", "".join(pieces)))

    def greet(index: int = 0) -> None:
        """Start over with the character's greeting `index`, when the adapter is a character."""
        char = engine.character_for(state.adapter)
        if char is None or not char.greetings:
            return
        if not 0 <= index < len(char.greetings):
            raise ConfigError(f"greeting {index + 1}: {char.name} has {len(char.greetings)} greeting(s)")
        state.messages[:] = [Message("assistant", char.greetings[index])]
        say(f"[{char.name}] {char.greetings[index]}")

    say(f"chatting with {state.adapter!r} (loaded: {', '.join(engine.adapter_names)}); /help lists commands")
    if not state.messages:
        greet()
    while True:
        line = read_line()
        if line is None:
            say()
            break
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd, _, arg = text.partition(" ")
            arg = arg.strip()
            try:
                if cmd in ("/exit", "/quit"):
                    break
                elif cmd == "/help":
                    stdout.write(HELP)
                elif cmd == "/clear":
                    state.messages.clear()
                    say("(conversation cleared)")
                    greet()
                elif cmd == "/greeting":
                    _greeting_command(engine, state, arg, say, greet)
                elif cmd == "/retry":
                    if len(state.messages) < 2:
                        say("(nothing to retry yet)")
                        continue
                    state.messages.pop()  # drop the last answer, keep its question
                    answer()
                elif cmd == "/system":
                    state.system = arg or None
                    say(f"(system prompt {'set' if arg else 'removed'})")
                elif cmd == "/adapter":
                    if not arg:
                        say("adapters: " + ", ".join(f"*{a}" if a == state.adapter else a
                                                     for a in engine.adapter_names))
                    else:
                        engine.template_for(arg)  # raises for an unknown name
                        state.adapter = arg
                        say(f"(now talking to {arg!r})")
                        if not state.messages:
                            greet()
                elif cmd == "/set":
                    _apply_settings(state, arg)
                    say(_describe(state))
                elif cmd == "/history":
                    if state.system:
                        say(f"[system] {state.system}")
                    for m in state.messages:
                        say(f"[{m.role}] {m.content}")
                    if not state.messages:
                        say("(no messages yet)")
                else:
                    say(f"unknown command {cmd} (type /help)")
            except TunesmithError as e:
                say(f"error: {e}")
            continue
        state.messages.append(Message("user", line))
        answer()
    return state


def _greeting_command(engine, state: ChatState, arg: str, say, greet) -> None:
    char = engine.character_for(state.adapter)
    if char is None or not char.greetings:
        say(f"({state.adapter!r} is not a character with a greeting)")
    elif not arg:
        for i, g in enumerate(char.greetings, 1):
            say(f"{i}. {g[:70]}{'...' if len(g) > 70 else ''}")
    elif not arg.isdigit():
        raise ConfigError(f"/greeting: expected a number 1-{len(char.greetings)} (got {arg!r})")
    else:
        greet(int(arg) - 1)


def _apply_settings(state: ChatState, arg: str) -> None:
    if not arg:
        return
    changes: dict[str, str] = {}
    for item in shlex.split(arg):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"/set expects key=value (got {item!r})")
        changes[key.strip()] = value
    if "max_history_turns" in changes:
        raw = changes.pop("max_history_turns").strip().lower()
        try:
            turns = None if raw in ("none", "all", "") else int(raw)
        except ValueError:
            raise ConfigError(f"max_history_turns: expected an integer or 'none' (got {raw!r})") from None
        if turns is not None and turns < 0:
            raise ConfigError(f"max_history_turns: expected an integer >= 0 (got {turns})")
        new_options = state.options.updated(changes)  # validate everything before changing anything
        state.max_history_turns = turns
        state.options = new_options
    else:
        state.options = state.options.updated(changes)


def _describe(state: ChatState) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(state.options).items())
    return f"{opts}, max_history_turns={state.max_history_turns!r}"
