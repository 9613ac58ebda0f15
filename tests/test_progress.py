"""Progress output fits where it goes: a bar on a terminal, one plain line per run in a log file."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from conftest import export, tiny

from foolbench.progress import Progress
from foolbench.text import percent

CLI = [sys.executable, "-m", "foolbench.cli"]


def test_a_log_file_gets_one_line_per_run(tmp_path):
    model = export(tiny(), tmp_path / "tiny.onnx", (1, 1, 28, 28))
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        args = ["run", "--model", model, "--attack", "mnist-direct", "--attack", "mnist-cppn"]
        args += ["--generations", "4", "--out", tmp_path / "runs"]
        subprocess.run([*CLI, *map(str, args)], stdout=f, stderr=subprocess.STDOUT, check=True)
    text = log.read_text()
    assert "\r" not in text and "it/s" not in text and "gen/s" not in text  # no bar updates
    for attack in ("mnist-direct", "mnist-cppn"):
        s = json.loads((tmp_path / "runs" / attack / "summary.json").read_text())
        line = (
            f"foolbench: {attack} on tiny: {s['evaluations']:,} evaluations in {s['seconds']:.1f} s, "
            f"median {percent(s['median_confidence'])}, {s['classes_at_99']} of 10 classes >= 99%"
        )
        assert text.count(line) == 1, text
    assert len(text.splitlines()) <= 10  # start and end of each run, the summary table, the paths


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_no_summary_line(monkeypatch):
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    bar = Progress(5, unit="gen")
    for i in range(1, 6):
        bar.advance_to(i, f"step {i}")
    bar.close("finished")
    text = screen.getvalue()
    assert "5/5" in text and "\r" in text and "finished" not in text


def test_no_progress_prints_nothing(monkeypatch):
    for stream in (Terminal(), io.StringIO()):
        monkeypatch.setattr(sys, "stderr", stream)
        bar = Progress(5, unit="gen", enabled=False)
        bar.advance_to(5)
        bar.close("finished")
        assert stream.getvalue() == ""
