"""The CJK font for charts: Noto Sans SC, shipped as a Python dependency, registered with matplotlib.

Chart labels carry Chinese (model names such as 李白, set names, a model folder in a loss plot's title), and
matplotlib's own fonts have no Chinese glyphs. The font comes from the `pylopdf-fonts-zh-cn` wheel (pinned in
requirements.txt; SIL Open Font License 1.1, see docs/evaluation.md), so a machine with no system CJK font
still draws real glyphs:

    import matplotlib.pyplot as plt
    from tunesmith.fonts import chart_rc

    rc, family = chart_rc()          # family: "Noto Sans SC"; None only on a broken install
    with plt.rc_context(rc):
        fig, ax = plt.subplots()
        ax.set_title("李白")
        fig.savefig("chart.png")     # draw inside the context: fonts are looked up when text is drawn
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The bundled font comes first, a system font only when it is missing: the bundled one is the same file on
# every machine (charts and tests look alike everywhere) and has the Simplified Chinese glyph forms, while a
# system "Noto Sans CJK" install also lists the JP/KR/TC faces, whose forms of shared hanzi differ.
BUNDLED_PACKAGE = "pylopdf-fonts-zh-cn"
_SYSTEM_CJK_HINTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi",
                     "SimHei", "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB", "Droid Sans Fallback",
                     "Noto Sans CJK", "Source Han Sans", "Noto Serif CJK", "AR PL")
MISSING_HINT = (f"no CJK font for charts: the font package {BUNDLED_PACKAGE} is missing from this environment "
                "(reinstall the pinned dependencies: bash scripts/setup.sh, or pip install -r requirements.txt); "
                "Chinese labels may show as boxes")


def bundled_font_path() -> Path | None:
    """The bundled Noto Sans SC file, or None when its package is not installed."""
    try:
        import pylopdf_fonts_zh_cn
    except ImportError:
        return None
    path = Path(pylopdf_fonts_zh_cn.sans_path())
    return path if path.is_file() else None


def register_bundled_font() -> str | None:
    """Add the bundled font to matplotlib's font list (once per font list) and return its family name."""
    path = bundled_font_path()
    if path is None:
        return None
    from matplotlib import font_manager

    fm = font_manager.fontManager
    for entry in fm.ttflist:
        if Path(entry.fname) == path:
            return entry.name
    first = len(fm.ttflist)
    fm.addfont(path)
    return fm.ttflist[first].name


def find_system_cjk_font() -> str | None:
    """The name of an installed system font with Chinese glyphs (matplotlib's font list), or None."""
    from matplotlib import font_manager

    names = sorted({f.name for f in font_manager.fontManager.ttflist})
    for hint in _SYSTEM_CJK_HINTS:
        for n in names:
            if n.startswith(hint):
                return n
    return None


def cjk_font() -> str | None:
    """The family charts use for Chinese: the bundled font, else a system CJK font, else None."""
    return register_bundled_font() or find_system_cjk_font()


def chart_rc() -> tuple[dict[str, Any], str | None]:
    """rcParams for a chart with Chinese text (for `plt.rc_context`) and the CJK family chosen (None: none)."""
    family = cjk_font()
    rc: dict[str, Any] = {"font.family": "sans-serif"}
    if family:
        rc["font.sans-serif"] = [family, "DejaVu Sans"]
    return rc, family
