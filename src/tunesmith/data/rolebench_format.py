"""RoleBench (RoleLLM) records -> Conversations, with the role's persona as the system prompt.

    tunesmith data convert --from rolebench datasets/rolebench-zh/general/train.jsonl out.jsonl

    from tunesmith.data import persona_for
    system = persona_for("李白", profiles="datasets/rolebench-zh/profiles-zh/desc.json")

A record is `{"role": "李白", "question": "...", "generated": ["answer 1", ..., "answer 5"], "type"?}`.
Each answer becomes its own Conversation (the list is a set of alternative references, never one
long target). The system prompt is built from `profiles-zh/desc.json`, found next to the data folder
(`rolebench-zh/profiles-zh/desc.json` for `rolebench-zh/general/train.jsonl`) or given as `profiles=`.

meta of each Conversation: source="rolebench", subset (general / role_specific, from the folder name),
split (train / test / baseline, from the file name), role, question, answer_index, type (as in the
file: a string in train, a list in test) and, for test files, `references`: every answer of the
record, so that eval can score one prediction against all of them.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation, Message
from tunesmith.data.fields import check_options, get_str, get_str_list, require_object, type_name
from tunesmith.data.format import Format
from tunesmith.data.records import JsonShapeError, read_text, strict_loads
from tunesmith.errors import ConfigError, DataError

NAME = "rolebench"
EXPECTED = '{"role": str, "question": str, "generated": [str, ...], "type"?: str | [str]}'

# desc.json holds "为人爽朗大方,乐于交友,爱好饮酒作诗。" — a clause that reads well after "你是李白，".
DEFAULT_PERSONA_TEMPLATE = "你是{role}，{desc}。请以{role}的身份、语气和口吻回答。"
# Used when a role has no description (or persona text is wanted without one).
DEFAULT_PERSONA_TEMPLATE_NO_DESC = "你是{role}。请以{role}的身份、语气和口吻回答。"

OPTIONS = {
    "profiles": "path to desc.json (default: found next to the data, e.g. rolebench-zh/profiles-zh/desc.json)",
    "persona": "build the persona system prompt (default true; false = no system prompt)",
    "persona_template": "system prompt template with {role} and {desc} (default: " + DEFAULT_PERSONA_TEMPLATE + ")",
    "normalize_punct": "turn ASCII , : ! ? ; after Chinese text in desc.json into full-width (default true)",
    "answers": "'each' (default: one Conversation per answer) or 'first' (one per question; all answers in "
               "meta.references)",
    "split": "override the split read from the file name (train / test / baseline)",
    "references": "store all answers in meta.references (default: only for test files)",
}

_CJK_BEFORE_ASCII_PUNCT = re.compile(r"(?<=[\u3400-\u9fff\u3000-\u303f\uff00-\uffef“”‘’」』）])([,:!?;])")
_FULLWIDTH = {",": "，", ":": "：", "!": "！", "?": "？", ";": "；"}
_TRAILING_STOP = "。.!！~～ "


def find_profiles(data_path: str | Path) -> Path | None:
    """Look for profiles-zh/desc.json (or profiles/desc.json, desc.json) in the data file's folder and up to 3
    parents."""
    p = Path(data_path).resolve()
    folder = p if p.is_dir() else p.parent
    for d in [folder, *list(folder.parents)[:3]]:
        for cand in (d / "profiles-zh" / "desc.json", d / "profiles" / "desc.json", d / "desc.json"):
            if cand.is_file():
                return cand
    return None


def load_profiles(path: str | Path) -> dict[str, str]:
    """desc.json: {"李白": "为人爽朗大方,...", ...} -> dict. Errors name the file and what was expected."""
    p = Path(path)
    text = read_text(p)
    try:
        data = strict_loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg} (expected an object {{role: description}})",
                        f"{p}:{e.lineno}") from None
    except JsonShapeError as e:  # a role given twice, or nesting no profile file has
        raise DataError(e.msg, f"{p}:{text.count(chr(10), 0, e.pos) + 1}") from None
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object {{role: description}} (got {type_name(data)})", str(p))
    for k, v in data.items():
        if not isinstance(v, str):
            raise DataError(f"description of role {k!r} must be a string (got {type_name(v)})", str(p))
    return data


def normalize_punct(text: str) -> str:
    """ASCII `, : ! ? ;` that follow Chinese text become full-width (the stored desc.json lost them)."""
    return _CJK_BEFORE_ASCII_PUNCT.sub(lambda m: _FULLWIDTH[m.group(1)], text)


def check_template(template: str) -> None:
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    bad = fields - {"role", "desc"}
    if bad:
        raise ConfigError(f"persona template may use only {{role}} and {{desc}} "
                          f"(found {', '.join('{' + b + '}' for b in sorted(bad))})")
    if "role" not in fields:
        raise ConfigError("persona template must contain {role}")


def persona_prompt(role: str, desc: str | None, template: str | None = None, normalize: bool = True) -> str:
    """The system prompt for a role, e.g. persona_prompt("李白", "为人爽朗大方,乐于交友,爱好饮酒作诗。").

    The description's trailing full stop is dropped because the template adds its own.
    """
    template = template or DEFAULT_PERSONA_TEMPLATE
    desc = (desc or "").strip()
    if normalize:
        desc = normalize_punct(desc)
    desc = desc.rstrip(_TRAILING_STOP) if desc.endswith(("。", ".")) else desc
    if not desc and template == DEFAULT_PERSONA_TEMPLATE:
        template = DEFAULT_PERSONA_TEMPLATE_NO_DESC
    return template.format(role=role, desc=desc)


def persona_for(role: str, data_path: str | Path | None = None, profiles: str | Path | None = None,
                template: str | None = None, normalize: bool = True) -> str:
    """The system prompt that `rolebench` data for `role` gets: what chat/eval must use for the same role."""
    path = Path(profiles) if profiles else (find_profiles(data_path) if data_path else None)
    if path is None:
        raise DataError("cannot find profiles-zh/desc.json (pass profiles=PATH)")
    descs = load_profiles(path)
    if role not in descs:
        raise DataError(f"role {role!r} is not in desc.json (it has: {', '.join(descs)})", str(path))
    return persona_prompt(role, descs[role], template, normalize)


def split_from_name(path: Path) -> str | None:
    stem = path.stem.lower()
    for s in ("train", "test", "dev", "baseline"):
        if s in stem:
            return s
    return None


def detect(rec: dict) -> bool:
    return "role" in rec and "question" in rec and "generated" in rec


def converter(path: Path, **opts: Any) -> Callable[[Any], list[Conversation]]:
    check_options(NAME, opts, OPTIONS)
    persona = opts.get("persona", True)
    if isinstance(persona, str):
        persona = persona.lower() not in ("0", "false", "no", "off")
    template = opts.get("persona_template") or DEFAULT_PERSONA_TEMPLATE
    check_template(template)
    normalize = opts.get("normalize_punct", True)
    if isinstance(normalize, str):
        normalize = normalize.lower() not in ("0", "false", "no", "off")
    answers = opts.get("answers", "each")
    if answers not in ("each", "first"):
        raise ConfigError(f"rolebench option answers={answers!r} (expected 'each' or 'first')")
    split = opts.get("split") or split_from_name(path)
    subset = path.parent.name if path.parent.name in ("general", "role_specific") else None
    with_refs = opts.get("references")
    with_refs = (split == "test") if with_refs is None else bool(with_refs)

    descs: dict[str, str] | None = None
    profiles_path: Path | None = None
    if persona:
        profiles_path = Path(opts["profiles"]) if opts.get("profiles") else find_profiles(path)
        if profiles_path is None:
            raise DataError("cannot find profiles-zh/desc.json next to the data (looked in this folder and 3 parents); "
                            "pass --profiles PATH (or option profiles=PATH), or persona=false for no system prompt",
                            str(path))
        descs = load_profiles(profiles_path)
    systems: dict[str, str] = {}

    def convert(rec: Any) -> list[Conversation]:
        require_object(rec, EXPECTED)
        role = get_str(rec, "role", EXPECTED)
        question = get_str(rec, "question", EXPECTED).strip()
        generated = get_str_list(rec, "generated", EXPECTED)
        rtype = rec.get("type")
        if rtype is not None and not (isinstance(rtype, str)
                                      or (isinstance(rtype, list) and all(isinstance(t, str) for t in rtype))):
            raise DataError(f'field "type" must be a string or a list of strings (got {type_name(rtype)})')
        system = None
        if descs is not None:
            system = systems.get(role)
            if system is None:
                if role not in descs:
                    raise DataError(f"role {role!r} has no description in {profiles_path} (it has: {', '.join(descs)}; "
                                    f"expected the record's role to be one of them)")
                system = systems[role] = persona_prompt(role, descs[role], template, normalize)
        refs = [g.strip() for g in generated]
        chosen = refs if answers == "each" else refs[:1]
        base: dict[str, Any] = {"source": NAME}
        if subset:
            base["subset"] = subset
        if split:
            base["split"] = split
        base["role"] = role
        base["question"] = question
        out = []
        for i, ans in enumerate(chosen):
            meta = {**base, "answer_index": i}
            if rtype is not None:
                meta["type"] = rtype
            if with_refs:
                meta["references"] = refs
            out.append(Conversation([Message("user", question), Message("assistant", ans)], system, meta))
        return out

    return convert


FORMAT = Format(NAME, EXPECTED, converter, None, detect, OPTIONS, aliases=("role-bench",))
