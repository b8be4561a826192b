"""RoleBench (RoleLLM) records -> Conversations, with the role's persona as the system prompt.

    tunesmith data convert --from rolebench datasets/rolebench-zh/general/train.jsonl out.jsonl
    tunesmith data rolebench-prepare datasets/rolebench-zh --role 李白 -o data/libai

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
from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write

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
    from tunesmith.data.records import JsonShapeError, read_text, strict_loads

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


# -- rolebench-prepare ---------------------------------------------------------------------------

def prepare(rolebench_dir: str | Path, roles: list[str], out_dir: str | Path, *, profiles: str | Path | None = None,
            persona_template: str | None = None, dev_ratio: float = 0.05, seed: int = 42,
            on_error: str = "fail") -> dict[str, Any]:
    """Build train / dev / test files for some roles from a rolebench-zh folder (see docs/data.md).

    train = general/train + role_specific/train for the roles, one Conversation per answer, minus any
    (role, question) pair that also occurs in a test file; dev = a question-grouped slice of train;
    test_general (CUS) and test_role_specific (SPE) stay separate, one Conversation per question with
    every reference in meta.references; baseline_* hold the RoleGPT answers to the same test questions.
    Returns the manifest (also written to OUT/manifest.json).
    """
    import hashlib
    import time

    from tunesmith.data.formats import load, save
    from tunesmith.data.registry import register_dataset
    from tunesmith.data.split import split_conversations

    root = Path(rolebench_dir)
    if not root.is_dir():
        raise DataError("not a folder (expected the rolebench-zh folder with general/ and role_specific/)", str(root))
    if not roles:
        raise ConfigError("give at least one --role (e.g. --role 李白)")
    needed = {
        "general_train": root / "general" / "train.jsonl",
        "role_specific_train": root / "role_specific" / "train.jsonl",
        "general_test": root / "general" / "test.jsonl",
        "role_specific_test": root / "role_specific" / "test.jsonl",
    }
    for p in needed.values():
        if not p.is_file():
            raise DataError(f"missing {p.relative_to(root)} (expected the rolebench-zh layout: general/ and "
                            "role_specific/ with train.jsonl and test.jsonl)", str(root))
    profiles_path = Path(profiles) if profiles else find_profiles(needed["general_train"])
    opts: dict[str, Any] = {"profiles": str(profiles_path) if profiles_path else None}
    if persona_template:
        opts["persona_template"] = persona_template

    def role_filter(convs: list[Conversation]) -> list[Conversation]:
        return [c for c in convs if c.meta.get("role") in roles]

    all_train = load(needed["general_train"], "rolebench", on_error=on_error, **opts) + \
        load(needed["role_specific_train"], "rolebench", on_error=on_error, **opts)
    all_roles = sorted({c.meta["role"] for c in all_train})
    missing = [r for r in roles if r not in all_roles]
    if missing:
        raise ConfigError(f"role {', '.join(map(repr, missing))} not found in {root} train files "
                          f"(roles there: {', '.join(all_roles)})")
    train = role_filter(all_train)
    del all_train
    tests = {
        "test_general": role_filter(load(needed["general_test"], "rolebench", on_error=on_error, answers="first",
                                         **opts)),
        "test_role_specific": role_filter(load(needed["role_specific_test"], "rolebench", on_error=on_error,
                                               answers="first", **opts)),
    }
    # The split of RoleBench is at the (role, question) level; make sure no test pair leaks into training.
    test_pairs = {(c.meta["role"], c.meta["question"]) for convs in tests.values() for c in convs}
    before = len(train)
    train = [c for c in train if (c.meta["role"], c.meta["question"]) not in test_pairs]
    leaked = before - len(train)

    baselines: dict[str, list[Conversation]] = {}
    for subset, test_key in (("general", "test_general"), ("role_specific", "test_role_specific")):
        bpath = root / subset / "rolegpt_baseline.jsonl"
        if not bpath.is_file():
            continue
        refs = {(c.meta["role"], c.meta["question"]): c.meta.get("references") for c in tests[test_key]}
        base = []
        for c in role_filter(load(bpath, "rolebench", on_error=on_error, answers="first", split="baseline", **opts)):
            key = (c.meta["role"], c.meta["question"])
            if key in refs:
                c.meta["references"] = refs[key]
                base.append(c)
        baselines[f"baseline_{subset}"] = base

    dev: list[Conversation] = []
    if dev_ratio > 0:
        train, dev = split_conversations(train, dev_ratio=dev_ratio, seed=seed, group_by="question")
        for c in dev:
            c.meta["split"] = "dev"

    out = Path(out_dir)
    files: dict[str, list[Conversation]] = {"train": train}
    if dev:
        files["dev"] = dev
    files.update(tests)
    files.update(baselines)
    written = {}
    for key, convs in files.items():
        save(convs, out / f"{key}.jsonl", "conversation")
        written[key] = {"file": f"{key}.jsonl", "conversations": len(convs),
                        "questions": len({(c.meta["role"], c.meta["question"]) for c in convs})}

    personas = {}
    for r in roles:
        sys_text = next((c.system for c in train if c.meta["role"] == r), None)
        personas[r] = sys_text
    # persona.txt is what chat/serve should use as the system prompt for this role (same text as in training).
    if len(roles) == 1 and personas[roles[0]]:
        atomic_write(out / "persona.txt", personas[roles[0]] + "\n")

    def sha256(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "roles": roles,
        "source": str(root.resolve()),
        "inputs": {k: {"path": str(p.relative_to(root)), "sha256": sha256(p)} for k, p in needed.items()},
        "profiles": str(profiles_path) if profiles_path else None,
        "persona": personas,
        "dev_ratio": dev_ratio,
        "seed": seed,
        "dropped_train_pairs_also_in_test": leaked,
        "files": written,
    }
    atomic_write(out / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    # Register every file so recipes can say {name: train, data_dir: OUT} (LLaMA-Factory style).
    for key in files:
        register_dataset(key, f"{key}.jsonl", out, formatting="conversation", force=True)
    return manifest
