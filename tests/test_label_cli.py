"""`tunesmith label`: argument errors exit 2 with one clear line, before any model is loaded."""

from __future__ import annotations

import socket

import pytest

from tunesmith.cli import main


@pytest.mark.parametrize("args, message", [
    (["--adapter", "ie=runs/ie"], "--adapter needs --model"),
    (["--model", "m", "--adapter", "=oops"], "expected NAME=PATH"),
    (["--port", "0"], "expected 1..65535"),
])
def test_label_argument_errors(tmp_path, capsys, args, message):
    assert main(["label", str(tmp_path / "proj"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_label_refuses_a_file_as_project_and_a_busy_port(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["label", str(f)]) == 2
    assert "not a folder" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["label", str(tmp_path / "proj"), "--port", str(port)]) == 2
    assert "cannot listen there" in capsys.readouterr().err
    assert not (tmp_path / "proj").exists()  # nothing created for a command that did not start


def test_label_help_is_documented(capsys):
    assert main(["label", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--model", "--adapter", "--port", "--host", "--device"):
        assert opt in out
