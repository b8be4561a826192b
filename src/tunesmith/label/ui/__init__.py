"""The labeling web page: a playground to try the model, and a labeling desk that builds a dataset.

    tunesmith label ie-project                                    # model-free: write, import, curate, export
    tunesmith label ie-project --model /models/qwen --adapter ie=runs/ie/adapter   # + the Try-it tab
    tunesmith serve --model ... --label-project ie-project        # the same page at /label of the chat server

    from tunesmith.label.ui import build_label_ui
    blocks = build_label_ui("ie-project", engine=None)            # a gr.Blocks; mount it anywhere

Tabs:
- Try it: an instruction + input (or a chat) against the base model or any adapter; the answer, the time
  it took, its parsed JSON (or why it does not parse); mark it right/wrong with a note; accept it
  (edited, if it needed a fix) as a training sample.  Every answer and every judgement is logged.
- Label: write or edit samples (instruction / input / output, or a multi-turn chat with a system text and
  a character role), the dataset table with a live count, search and filters, the history of each sample,
  and the model answers waiting for review (accept or reject).
- Import / export: bring in a dataset in any format `tunesmith data` reads; write the accepted samples as
  JSONL for `tunesmith train` (conversation, alpaca, sharegpt, context-target, messages).
- Settings: the prompt format (how instruction + input become the prompt), "outputs must be JSON".

All state lives in the project's SQLite store (tunesmith.label.store); the page holds no data of its own,
so several tabs and users work at once.  An edit names the revision it started from; a stale edit is
refused with a message saying who changed the sample, and the form keeps the text typed.

Modules: app (LabelApp: every event handler, callable without a browser, as the tests do), form (the
sample editor's fields, from one list), page (the layout, one function per tab), views (status lines and
table cells).
"""

from tunesmith.label.io import EXPORT_FORMATS, IMPORT_FORMATS
from tunesmith.label.ui.app import GEN_HEADERS, NO_MODEL, TABLE_HEADERS, TABLE_LIMIT, USER_HEADER, LabelApp
from tunesmith.label.ui.form import KIND_CHOICES, NEW_TURNS
from tunesmith.label.ui.page import build_label_ui
from tunesmith.label.ui.views import CELL

__all__ = ["CELL", "EXPORT_FORMATS", "GEN_HEADERS", "IMPORT_FORMATS", "KIND_CHOICES", "NEW_TURNS", "NO_MODEL",
           "TABLE_HEADERS", "TABLE_LIMIT", "USER_HEADER", "LabelApp", "build_label_ui"]
