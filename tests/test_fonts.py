"""Charts draw real Chinese glyphs with only matplotlib's own fonts and the bundled Noto Sans SC.

The rendering checks run in a child process whose matplotlib sees no system font (its font list is cut to the
files under matplotlib's data folder before anything is drawn), so a CJK font installed on the machine cannot
make them pass: the glyphs of 李白 must come from the bundled font, registered by tunesmith.fonts. The control
case (the bundled font hidden, as on a broken install) shows the same checks do catch boxes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith import fonts

CHILD = r'''
import contextlib, io, json, logging, sys, warnings
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import numpy as np
from matplotlib import font_manager as fm
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

own = Path(matplotlib.get_data_path()).resolve()
fm.fontManager.ttflist = [f for f in fm.fontManager.ttflist if Path(f.fname).resolve().is_relative_to(own)]
fm.fontManager._findfont_cached.cache_clear()

from tunesmith import fonts
from tunesmith.eval import report
from tunesmith.train import progress

if sys.argv[1] == "hidden":
    fonts.bundled_font_path = lambda: None

logs = []
handler = logging.Handler()
handler.emit = lambda record: logs.append(record.getMessage())
logging.getLogger("matplotlib").addHandler(handler)
out = Path(sys.argv[2])
result = {"model_order": ["base", "李白"], "set_order": ["CUS"], "task": "rolebench",
          "metrics": {"base": {"CUS": {"n": 1, "rouge_l_chars": 0.2}}, "李白": {"CUS": {"n": 1, "rouge_l_chars": 0.4}}}}
err = io.StringIO()
with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(err):
    warnings.simplefilter("always")
    font = report.draw_chart(result, out / "metrics.png")["font"]
    progress.plot_losses([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], out / "loss.png", 1, title="李白 LoRA")

    def glyph(ch, rc=None):
        with matplotlib.rc_context(rc or fonts.chart_rc()[0]):
            fig = Figure(figsize=(1, 1), dpi=100)
            fig.text(0.5, 0.5, ch, fontsize=60, ha="center", va="center")
            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            return np.asarray(canvas.buffer_rgba())[..., 0].copy()

    li, bai = glyph("李"), glyph("白")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    # What this matplotlib draws for 李 without a CJK font: its missing-glyph box (notdef or a Last Resort box).
    box = glyph("李", {"font.family": ["DejaVu Sans"]})
rc, family = fonts.chart_rc()
with matplotlib.rc_context(rc):
    found = str(fm.findfont(fm.FontProperties(family=["sans-serif"])))
print(json.dumps({
    "font": font, "stderr": err.getvalue(), "logs": logs, "findfont": found,
    "bundled": str(fonts.bundled_font_path()),
    "missing_glyph": [str(w.message) for w in caught if "missing from font" in str(w.message)],
    "li_ink": int((li < 128).sum()), "li_equals_bai": bool((li == bai).all()), "li_equals_box": bool((li == box).all()),
}))
'''


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    """Run CHILD in a fresh process ("registered": as installed; "hidden": the bundled font hidden) -> its JSON."""
    mplconfig = tmp_path_factory.mktemp("mplconfig")  # a fresh font cache, shared by both runs

    def run(mode: str) -> dict:
        out = tmp_path_factory.mktemp(mode)
        env = {**os.environ, "MPLCONFIGDIR": str(mplconfig), "MPLBACKEND": "Agg"}
        proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(out)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        data["out"] = out
        return data

    return run


def test_chart_with_li_bai_draws_real_glyphs_from_the_bundled_font(child):
    got = child("registered")
    assert got["font"] == "Noto Sans SC"
    assert Path(got["findfont"]).resolve() == Path(got["bundled"]).resolve()
    assert got["missing_glyph"] == [], got["missing_glyph"]
    assert not [m for m in got["logs"] if "findfont" in m], got["logs"]
    assert "no CJK font" not in got["stderr"]
    # Real glyphs: ink, two different characters look different, and 李 is not the missing-glyph box.
    assert got["li_ink"] > 200
    assert not got["li_equals_bai"]
    assert not got["li_equals_box"]
    for name in ("metrics.png", "loss.png"):
        assert (got["out"] / name).read_bytes()[:4] == b"\x89PNG"


def test_the_checks_catch_boxes_when_the_bundled_font_is_missing(child):
    got = child("hidden")
    assert got["font"] is None
    assert "no CJK font" in got["stderr"] and "pip install -r requirements.txt" in got["stderr"]
    assert any("李" in m or "30333" in m for m in got["missing_glyph"]), got["missing_glyph"]
    assert got["li_equals_bai"] and got["li_equals_box"]  # both drawn as the same missing-glyph box
    assert (got["out"] / "metrics.png").read_bytes()[:4] == b"\x89PNG"  # the chart still renders


def test_bundled_font_covers_gb2312_hanzi():
    from matplotlib import ft2font

    path = fonts.bundled_font_path()
    assert path is not None and path.name == "NotoSansSC-Regular.otf"
    charmap = ft2font.FT2Font(str(path)).get_charmap()
    assert ord("李") in charmap and ord("白") in charmap
    hanzi = [bytes([hi, lo]).decode("gb2312") for hi in range(0xB0, 0xF8) for lo in range(0xA1, 0xFF)
             if not (hi == 0xD7 and lo > 0xF9)]
    assert len(hanzi) == 6763
    assert [c for c in hanzi if ord(c) not in charmap] == []


def test_registering_twice_adds_the_font_once():
    from matplotlib import font_manager

    assert fonts.register_bundled_font() == "Noto Sans SC"
    assert fonts.register_bundled_font() == "Noto Sans SC"
    path = fonts.bundled_font_path()
    assert sum(Path(f.fname) == path and f.name == "Noto Sans SC" for f in font_manager.fontManager.ttflist) == 1
