"""Labeling: a playground to try a model and a desk to write, curate and export training samples.

    tunesmith label ie-project                                   # the web page at http://127.0.0.1:7861/label/
    tunesmith label ie-project --model /models/qwen --adapter ie=runs/ie/adapter

    from tunesmith.label.store import LabelStore                 # the same data from Python, no browser
    store = LabelStore("ie-project")
    store.add_sample(instruction="...", input="...", output="...", user="ann")
    store.export("ie-project/train.jsonl", "context-target")

Modules: store (LabelStore, the front of the SQLite store), whose concerns are db (connections, schema),
settings (project settings, prompt formats), samples (the Sample type, validation, revisions, search),
review (model answers and their judgements) and io (import / export); answers (JSON in answers),
ui (the Gradio page), server (FastAPI app), commands (the CLI command).  See docs/labeling.md.
"""
