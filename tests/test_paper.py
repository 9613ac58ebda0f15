"""`foolbench paper`: the headline reproduces the runs it reads, and a second call reuses them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_run import foolbench

from foolbench.experiments import paper as paper_module
from foolbench.report import write_report
from foolbench.text import percent


@pytest.fixture
def mnist_only(monkeypatch):
    """The MNIST step alone (the others need the ImageNet models and minutes of CPU)."""
    monkeypatch.setattr(paper_module, "STEPS", (paper_module.mnist_runs,))


def test_headline_reproduces_the_runs_and_a_rerun_reuses_them(lenet, tmp_path, mnist_only):
    out = tmp_path / "paper"
    index = paper_module.paper(out, "cpu", seed=0, progress=False, log=lambda m: None, generations=3)
    rows = json.loads((out / "paper.json").read_text())["rows"]
    assert [r["experiment"] for r in rows] == ["MNIST, direct encoding", "MNIST, CPPN encoding"]
    for r, attack in zip(rows, ("mnist-direct", "mnist-cppn"), strict=True):
        summary = json.loads((out / "work" / "runs" / attack / "summary.json").read_text())
        assert r["ours"] == summary["median_confidence"] and r["ours_text"] == percent(
            summary["median_confidence"]
        )
        assert r["budget"] == summary["evaluations"] == 800 and r["paper_budget"] == 40_200
        assert r["paper"] == 0.9999 and r["paper_model"] == "LeNet (Caffe)" and r["verdict"]
    page = index.read_text()
    assert page.index('id="headline"') < page.index('id="mnist-direct"') and "capped at 3 generations" in page
    assert "| MNIST, direct encoding |" in paper_module.markdown_table(out)

    # `foolbench report` over the same folders writes the same headline
    again = tmp_path / "again"
    write_report([out / "work"], again)
    pd.testing.assert_frame_equal(pd.read_csv(again / "headline.csv"), pd.read_csv(out / "headline.csv"))

    stamps = {p: p.stat().st_mtime_ns for p in (out / "work" / "runs").rglob("summary.json")}
    paper_module.paper(out, "cpu", seed=0, progress=False, log=lambda m: None, generations=3)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished runs were reused, not redone
    assert json.loads((out / "paper.json").read_text())["rows"] == rows


def test_a_run_with_other_settings_in_the_way_is_one_line(lenet, tmp_path):
    out = tmp_path / "paper"
    foolbench("run", "--attack", "mnist-direct", "--generations", 2, "--out", out / "work/runs/mnist-direct")
    proc = foolbench("paper", "--out", out, "--generations", 3, "--no-progress", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "holds a run with other settings" in proc.stderr.strip().splitlines()[-1]
    assert not (out / "paper.json").exists() and not (out / "index.html").exists()
