"""RoleBench as a whole: its record format and personas, and `rolebench-prepare` (train / dev / test files).

    tunesmith data rolebench-prepare datasets/rolebench-zh --role 李白 -o data/libai

    from tunesmith.data.rolebench import prepare, persona_for
    manifest = prepare("datasets/rolebench-zh", ["李白"], "data/libai")
    system = persona_for("李白", profiles="datasets/rolebench-zh/profiles-zh/desc.json")

The record format (`--from rolebench`) and the persona prompts live in tunesmith.data.rolebench_format and
are importable from here too. `prepare` reads the rolebench-zh folder through the format table and writes
and registers its files, so it sits above the format, the writer and the registry.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tunesmith.conversation import Conversation
from tunesmith.data.formats import load, save
from tunesmith.data.registry import register_dataset
from tunesmith.data.rolebench_format import (  # noqa: F401  (the names `tunesmith.data.rolebench` always had)
    DEFAULT_PERSONA_TEMPLATE,
    DEFAULT_PERSONA_TEMPLATE_NO_DESC,
    EXPECTED,
    FORMAT,
    NAME,
    OPTIONS,
    check_template,
    converter,
    detect,
    find_profiles,
    load_profiles,
    normalize_punct,
    persona_for,
    persona_prompt,
    split_from_name,
)
from tunesmith.data.split import split_conversations
from tunesmith.errors import ConfigError, DataError
from tunesmith.fsio import atomic_write

# The rolebench-zh files prepare reads, by the key the manifest names them with.
INPUT_FILES = {
    "general_train": Path("general", "train.jsonl"),
    "role_specific_train": Path("role_specific", "train.jsonl"),
    "general_test": Path("general", "test.jsonl"),
    "role_specific_test": Path("role_specific", "test.jsonl"),
}
TEST_FILES = {"test_general": "general_test", "test_role_specific": "role_specific_test"}


def prepare(rolebench_dir: str | Path, roles: list[str], out_dir: str | Path, *, profiles: str | Path | None = None,
            persona_template: str | None = None, dev_ratio: float = 0.05, seed: int = 42,
            on_error: str = "fail", keep_shared_questions: bool = False) -> dict[str, Any]:
    """Build train / dev / test files for some roles from a rolebench-zh folder (see docs/data.md).

    train = general/train + role_specific/train for the roles, one Conversation per answer, minus any
    (role, question) pair that also occurs in a test file and, unless keep_shared_questions, minus every
    conversation whose question is a test question of another of the roles; dev = a question-grouped slice of train;
    test_general (CUS) and test_role_specific (SPE) stay separate, one Conversation per question with
    every reference in meta.references; baseline_* hold the RoleGPT answers to the same test questions.
    Returns the manifest (also written to OUT/manifest.json).
    """
    root = Path(rolebench_dir)
    inputs = _input_files(root, roles)
    profiles_path = Path(profiles) if profiles else find_profiles(inputs["general_train"])
    read = _Reader(roles, on_error, {"profiles": str(profiles_path) if profiles_path else None}, persona_template)
    train = read.train(inputs, root)
    tests = {key: read.file(inputs[source], answers="first") for key, source in TEST_FILES.items()}
    train, leaked = _drop_test_pairs(train, tests)
    shared = _shared_test_questions(train, tests)
    if not keep_shared_questions:
        train = [c for c, s in zip(train, shared) if not s]
    baselines = _baselines(root, tests, read)
    train, dev = _hold_out_dev(train, dev_ratio, seed)

    out = Path(out_dir)
    files: dict[str, list[Conversation]] = {"train": train, **({"dev": dev} if dev else {}), **tests, **baselines}
    written = _write_files(out, files)
    personas = _write_persona(out, roles, train)
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "roles": roles,
        "source": str(root.resolve()),
        "inputs": {k: {"path": str(p.relative_to(root)), "sha256": _sha256(p)} for k, p in inputs.items()},
        "profiles": str(profiles_path) if profiles_path else None,
        "persona": personas,
        "dev_ratio": dev_ratio,
        "seed": seed,
        "dropped_train_pairs_also_in_test": leaked,
        "shared_test_questions": {"kept" if keep_shared_questions else "dropped": sum(shared)},
        "files": written,
    }
    atomic_write(out / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")
    # Register every file so recipes can say {name: train, data_dir: OUT} (LLaMA-Factory style).
    for key in files:
        register_dataset(key, f"{key}.jsonl", out, formatting="conversation", force=True)
    return manifest


def _input_files(root: Path, roles: list[str]) -> dict[str, Path]:
    """The four train/test files of the folder, or an error saying which is missing."""
    if not root.is_dir():
        raise DataError("not a folder (expected the rolebench-zh folder with general/ and role_specific/)", str(root))
    if not roles:
        raise ConfigError("give at least one --role (e.g. --role 李白)")
    inputs = {key: root / rel for key, rel in INPUT_FILES.items()}
    for p in inputs.values():
        if not p.is_file():
            raise DataError(f"missing {p.relative_to(root)} (expected the rolebench-zh layout: general/ and "
                            "role_specific/ with train.jsonl and test.jsonl)", str(root))
    return inputs


class _Reader:
    """Reads rolebench files with the same options, keeping only the prepared roles."""

    def __init__(self, roles: list[str], on_error: str, opts: dict[str, Any], persona_template: str | None):
        self.roles = roles
        self.on_error = on_error
        self.opts = dict(opts)
        if persona_template:
            self.opts["persona_template"] = persona_template

    def all_roles(self, path: Path, **extra: Any) -> list[Conversation]:
        return load(path, "rolebench", on_error=self.on_error, **extra, **self.opts)

    def keep_roles(self, convs: list[Conversation]) -> list[Conversation]:
        return [c for c in convs if c.meta.get("role") in self.roles]

    def file(self, path: Path, **extra: Any) -> list[Conversation]:
        return self.keep_roles(self.all_roles(path, **extra))

    def train(self, inputs: dict[str, Path], root: Path) -> list[Conversation]:
        """Both train files for the roles; a role absent from them is an error naming the roles there."""
        all_train = self.all_roles(inputs["general_train"]) + self.all_roles(inputs["role_specific_train"])
        there = sorted({c.meta["role"] for c in all_train})
        missing = [r for r in self.roles if r not in there]
        if missing:
            raise ConfigError(f"role {', '.join(map(repr, missing))} not found in {root} train files "
                              f"(roles there: {', '.join(there)})")
        return self.keep_roles(all_train)


def _drop_test_pairs(train: list[Conversation],
                     tests: dict[str, list[Conversation]]) -> tuple[list[Conversation], int]:
    """Train without any (role, question) of a test file, and how many conversations that dropped."""
    # The split of RoleBench is at the (role, question) level; make sure no test pair leaks into training.
    test_pairs = {(c.meta["role"], c.meta["question"]) for convs in tests.values() for c in convs}
    kept = [c for c in train if (c.meta["role"], c.meta["question"]) not in test_pairs]
    return kept, len(train) - len(kept)


def _shared_test_questions(train: list[Conversation], tests: dict[str, list[Conversation]]) -> list[bool]:
    """Per train conversation: is its question a test question of another role?"""
    # RoleBench splits general instructions per role: ~80 % of one role's test questions are train questions of
    # the other roles. A multi-role adapter would have seen them answered, in another voice, before its CUS test.
    test_roles: dict[str, set[str]] = {}
    for c in (c for convs in tests.values() for c in convs):
        test_roles.setdefault(c.meta["question"], set()).add(c.meta["role"])
    return [bool(test_roles.get(c.meta["question"], set()) - {c.meta["role"]}) for c in train]


def _baselines(root: Path, tests: dict[str, list[Conversation]], read: _Reader) -> dict[str, list[Conversation]]:
    """RoleGPT's answers to exactly the test questions, each with that question's test references."""
    baselines: dict[str, list[Conversation]] = {}
    for subset, test_key in (("general", "test_general"), ("role_specific", "test_role_specific")):
        bpath = root / subset / "rolegpt_baseline.jsonl"
        if not bpath.is_file():
            continue
        refs = {(c.meta["role"], c.meta["question"]): c.meta.get("references") for c in tests[test_key]}
        base = []
        for c in read.file(bpath, answers="first", split="baseline"):
            key = (c.meta["role"], c.meta["question"])
            if key in refs:
                c.meta["references"] = refs[key]
                base.append(c)
        baselines[f"baseline_{subset}"] = base
    return baselines


def _hold_out_dev(train: list[Conversation], dev_ratio: float,
                  seed: int) -> tuple[list[Conversation], list[Conversation]]:
    if dev_ratio <= 0:
        return train, []
    train, dev = split_conversations(train, dev_ratio=dev_ratio, seed=seed, group_by="question")
    for c in dev:
        c.meta["split"] = "dev"
    return train, dev


def _write_files(out: Path, files: dict[str, list[Conversation]]) -> dict[str, dict[str, Any]]:
    """OUT/KEY.jsonl for each file; returns the manifest's counts per file."""
    written = {}
    for key, convs in files.items():
        save(convs, out / f"{key}.jsonl", "conversation")
        written[key] = {"file": f"{key}.jsonl", "conversations": len(convs),
                        "questions": len({(c.meta["role"], c.meta["question"]) for c in convs})}
    return written


def _write_persona(out: Path, roles: list[str], train: list[Conversation]) -> dict[str, str | None]:
    """Each role's system prompt in training; OUT/persona.txt when there is one role with a persona."""
    personas = {r: next((c.system for c in train if c.meta["role"] == r), None) for r in roles}
    # persona.txt is what chat/serve should use as the system prompt for this role (same text as in training).
    if len(roles) == 1 and personas[roles[0]]:
        atomic_write(out / "persona.txt", personas[roles[0]] + "\n")
    return personas


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()
