"""The format contract: one Format per format module, the table derived from them, the layers of tunesmith.data."""

from __future__ import annotations

import ast
import importlib.util
import typing
from pathlib import Path

import pytest

from tunesmith.data import commands, novel_text
from tunesmith.data.format import Format
from tunesmith.data.formats import (
    ALIASES,
    DETECT_ORDER,
    FORMAT_MODULES,
    FORMATS,
    get_format,
    readable_formats,
    writable_formats,
)

# Modules above the format modules: a format module importing one of them would close an import cycle.
ABOVE_FORMATS = {"tunesmith.data", "tunesmith.data.formats", "tunesmith.data.registry", "tunesmith.data.rolebench",
                 "tunesmith.data.commands", "tunesmith.data.split", "tunesmith.data.stats"}


@pytest.mark.parametrize("module", FORMAT_MODULES, ids=lambda m: m.__name__.rpartition(".")[2])
def test_each_format_module_exports_one_format(module):
    formats = [v for v in vars(module).values() if isinstance(v, Format)]
    assert formats == [module.FORMAT]
    f = module.FORMAT
    assert FORMATS[f.name] is f and f.record and isinstance(f.options, dict)
    # Either JSON records (a converter, found by detect) or a whole file read at once (a novel's text).
    assert (f.converter is None) == (f.read_file is not None)
    assert (f.detect is None) == (f.read_file is not None)
    # A whole-file format may claim files given without --from (a .txt novel, a .png card); records never do.
    assert f.claims is None or f.read_file is not None


def test_the_table_is_derived_from_the_modules():
    assert list(FORMATS) == [m.FORMAT.name for m in FORMAT_MODULES]
    assert not set(ALIASES) & set(FORMATS)
    for alias, name in ALIASES.items():
        assert get_format(alias) is FORMATS[name]
    detectable = [n for n, f in FORMATS.items() if f.detect is not None]
    assert sorted(DETECT_ORDER) == sorted(detectable) and len(set(DETECT_ORDER)) == len(DETECT_ORDER)
    assert readable_formats() == list(DETECT_ORDER)
    assert writable_formats()[0] == "conversation"
    assert set(writable_formats()) == {n for n, f in FORMATS.items() if f.export is not None}


def _option_help(command, param: str) -> str:
    return typing.get_type_hints(command, include_extras=True)[param].__metadata__[0].help


def test_cli_help_names_every_format():
    from_help = _option_help(commands.convert, "from_")
    assert all(name in from_help for name in FORMATS)
    to_help = _option_help(commands.convert, "to")
    assert all(name in to_help for name in writable_formats())


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _tunesmith_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tunesmith"):
            # `from pkg import mod` imports pkg.mod; `from pkg import name` imports pkg itself
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if _is_module(sub) else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("tunesmith")}
    return out


@pytest.mark.parametrize("module", FORMAT_MODULES, ids=lambda m: m.__name__.rpartition(".")[2])
def test_format_modules_import_nothing_above_them(module):
    # Imports inside functions count: hiding one there is what made formats -> rolebench -> registry a cycle.
    above = _tunesmith_imports(Path(module.__file__)) & ABOVE_FORMATS
    assert not above, f"{module.__name__} imports {sorted(above)}"


# -- the novel's cache key follows every module of the miner --------------------------------------------

def test_miner_fingerprint_changes_with_any_module(tmp_path):
    files = []
    for name, text in (("__init__.py", "from .a import x\n"), ("a.py", "x = 1\n"), ("b.py", "y = 2\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        files.append(tmp_path / name)
    first = novel_text.miner_fingerprint(files)
    assert novel_text.miner_fingerprint(files) == first
    seen = {first}
    for f in files:
        f.write_text(f.read_text(encoding="utf-8") + "# changed\n", encoding="utf-8")
        seen.add(novel_text.miner_fingerprint(files))
    assert len(seen) == 4  # each change gave a new key


def test_novel_cache_key_uses_the_miner_fingerprint(tmp_path, monkeypatch):
    from tunesmith.data import novel

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    key = novel_text._cache_file(Path("书.txt"), b"text", {})
    assert novel_text._cache_file(Path("书.txt"), b"text", {}) == key
    fewer = novel.source_files()[:-1]
    monkeypatch.setattr(novel, "source_files", lambda: fewer)  # a miner without one of its modules
    assert novel_text._cache_file(Path("书.txt"), b"text", {}) != key


def test_whole_file_formats_claim_their_files_without_from(tmp_path):
    from tunesmith.data.formats import claimed_by

    (tmp_path / "book.txt").write_text("text", encoding="utf-8")
    (tmp_path / "card.json").write_text('{"spec": "chara_card_v2", "data": {"name": "A"}}', encoding="utf-8")
    (tmp_path / "rows.json").write_text('{"name": "A", "first_mes": "hi"}\n{"name": "B", "first_mes": "yo"}\n',
                                        encoding="utf-8")  # JSONL named .json: records, not one card
    (tmp_path / "array.json").write_text('[{"instruction": "q", "output": "a"}]', encoding="utf-8")
    got = {n: claimed_by(tmp_path / n) for n in ("book.txt", "card.json", "rows.json", "array.json", "x.png",
                                                 "y.jsonl")}
    assert got == {"book.txt": "novel", "card.json": "card", "rows.json": None, "array.json": None, "x.png": "card",
                   "y.jsonl": None}
