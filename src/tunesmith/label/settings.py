"""A labeling project's settings, and the prompt formats that turn an instruction and its input into a prompt.

    from tunesmith.label.settings import ProjectSettings, compose_prompt, split_prompt
    compose_prompt("抽取三元组", "周星驰主演喜剧之王", "context")
    # 'Instruction: 抽取三元组\\nInput: 周星驰主演喜剧之王\\nAnswer: '
    split_prompt("Instruction: a\\nInput: b\\nAnswer: ", "context")   # ('a', 'b'); None when it cannot
    ProjectSettings(prompt_format="context", output_json=True).check()

The settings live in the store (LabelStore.settings() / update_settings()); this module only says what they
are and what the prompt formats mean.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunesmith.errors import ConfigError

# name -> how the user message is made from an instruction and its input (the page shows these words).
PROMPT_FORMAT_HELP = {
    "alpaca": "instruction + newline + input",
    "context": "Instruction: …\\nInput: …\\nAnswer: ",
}
PROMPT_FORMATS = tuple(PROMPT_FORMAT_HELP)
_CONTEXT_PROMPT = "Instruction: {instruction}\nInput: {input}\nAnswer: "
_CONTEXT_RE = re.compile(r"\AInstruction: (?P<instruction>.*?)\nInput: (?P<input>.*)\nAnswer: \Z", re.S)


@dataclass
class ProjectSettings:
    name: str = ""
    # "alpaca": user = instruction + "\n" + input (LLaMA-Factory's rule, as `tunesmith data` reads alpaca);
    # "context": user = "Instruction: {instruction}\nInput: {input}\nAnswer: " (the IE/classification records).
    prompt_format: str = "alpaca"
    output_json: bool = False  # every answer must be JSON (IE / classification projects)
    default_system: str = ""

    def check(self) -> None:
        if self.prompt_format not in PROMPT_FORMATS:
            raise ConfigError(f"prompt_format {self.prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}")
        if not isinstance(self.output_json, bool):
            raise ConfigError(f"output_json must be true or false (got {self.output_json!r})")


def compose_prompt(instruction: str, input: str, prompt_format: str) -> str:
    """The user message of a single-turn sample, under the project's prompt format."""
    if prompt_format == "context":
        return _CONTEXT_PROMPT.format(instruction=instruction, input=input)
    return "\n".join(t for t in (instruction, input) if t)


def split_prompt(user: str, prompt_format: str) -> tuple[str, str] | None:
    """(instruction, input) that compose back to exactly `user`, or None when the format cannot."""
    if prompt_format == "context":
        m = _CONTEXT_RE.match(user)
        return (m["instruction"], m["input"]) if m else None
    return user, ""
