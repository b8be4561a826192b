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
first and is the first assistant message the model sees, as in training.  An adapter saved with a recommended
sampler (generation.json next to it) answers with it, except for the options given as flags or with /set
(`ChatState.explicit`): those always win.

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
    # option names the user chose (flags given, /set): these win over an adapter's generation.json
    explicit: set[str] = dataclasses.field(default_factory=set)

    def effective_options(self, engine) -> GenerationOptions:
        """What a reply is generated with: the adapter's recommended sampler over `options`, then the
        options the user chose on top."""
        recommended = engine.generation_for(self.adapter)
        chosen = {k: v for k, v in recommended.items() if k not in self.explicit}
        return self.options.updated(chosen) if chosen else self.options


def run_chat(engine, state: ChatState, stdin: TextIO, stdout: TextIO, *, prompt: str = ">>> ",
             interactive: bool = False) -> ChatState:
    """Read lines until /exit or end of input; returns the final state (for tests)."""
    return _ChatLoop(engine, state, stdin, stdout, prompt, interactive).run()


class _ChatLoop:
    """One terminal conversation: reads lines, answers them, runs the slash commands."""

    def __init__(self, engine, state: ChatState, stdin: TextIO, stdout: TextIO, prompt: str, interactive: bool):
        self.engine, self.state = engine, state
        self.stdin, self.stdout, self.prompt, self.interactive = stdin, stdout, prompt, interactive

    def say(self, text: str = "") -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def read_line(self) -> str | None:
        if self.interactive:
            try:
                return input(self.prompt)
            except EOFError:
                return None
        self.stdout.write(self.prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def answer(self) -> None:
        """Stream a reply to state.messages (which end with the user's message) and keep it."""
        state, pieces = self.state, []
        try:
            for piece in self.engine.stream(state.messages, system=state.system, adapter=state.adapter,
                                            options=state.effective_options(self.engine),
                                            max_history_turns=state.max_history_turns):
                pieces.append(piece)
                self.stdout.write(piece)
                self.stdout.flush()
        except TunesmithError as e:
            state.messages.pop()  # the question could not be answered: do not keep it
            self.say(f"error: {e}")
            return
        self.say()
        state.messages.append(Message("assistant", "".join(pieces)))

    def greet(self, index: int = 0) -> None:
        """Start over with the character's greeting `index`, when the adapter is a character."""
        char = self.engine.character_for(self.state.adapter)
        if char is None or not char.greetings:
            return
        if not 0 <= index < len(char.greetings):
            raise ConfigError(f"greeting {index + 1}: {char.name} has {len(char.greetings)} greeting(s)")
        self.state.messages[:] = [Message("assistant", char.greetings[index])]
        self.say(f"[{char.name}] {char.greetings[index]}")

    def run(self) -> ChatState:
        names = ", ".join(self.engine.adapter_names)
        self.say(f"chatting with {self.state.adapter!r} (loaded: {names}); /help lists commands")
        if not self.state.messages:
            self.greet()
        while True:
            line = self.read_line()
            if line is None:
                self.say()
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                cmd, _, arg = text.partition(" ")
                try:
                    if not self.command(cmd, arg.strip()):
                        break
                except TunesmithError as e:
                    self.say(f"error: {e}")
                continue
            self.state.messages.append(Message("user", line))
            self.answer()
        return self.state

    def command(self, cmd: str, arg: str) -> bool:
        """Run one slash command; False means leave."""
        state, say = self.state, self.say
        if cmd in ("/exit", "/quit"):
            return False
        if cmd == "/help":
            self.stdout.write(HELP)
        elif cmd == "/clear":
            state.messages.clear()
            say("(conversation cleared)")
            self.greet()
        elif cmd == "/greeting":
            _greeting_command(self.engine, state, arg, say, self.greet)
        elif cmd == "/retry":
            if not any(m.role == "user" for m in state.messages):
                say("(nothing to retry yet)")
                return True
            state.messages.pop()  # drop the last answer, keep its question
            self.answer()
        elif cmd == "/system":
            state.system = arg or None
            say(f"(system prompt {'set' if arg else 'removed'})")
        elif cmd == "/adapter":
            self.switch_adapter(arg)
        elif cmd == "/set":
            _apply_settings(state, arg)
            say(_describe(state, self.engine))
        elif cmd == "/history":
            if state.system:
                say(f"[system] {state.system}")
            for m in state.messages:
                say(f"[{m.role}] {m.content}")
            if not state.messages:
                say("(no messages yet)")
        else:
            say(f"unknown command {cmd} (type /help)")
        return True

    def switch_adapter(self, name: str) -> None:
        if not name:
            self.say("adapters: " + ", ".join(f"*{a}" if a == self.state.adapter else a
                                              for a in self.engine.adapter_names))
            return
        self.engine.template_for(name)  # raises for an unknown name
        self.state.adapter = name
        self.say(f"(now talking to {name!r})")
        if not self.state.messages:
            self.greet()


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
    state.explicit.update(changes)


def _describe(state: ChatState, engine) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(state.effective_options(engine)).items())
    return f"{opts}, max_history_turns={state.max_history_turns!r}"
