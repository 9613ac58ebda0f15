"""`foolbench paper`: the main table reproduces the runs it names, and a second call reuses them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_run import foolbench

from foolbench.experiments import paper as paper_module
from foolbench.text import percent


@pytest.fixture
def mnist_only(monkeypatch):
    """The MNIST step alone (the others need the ImageNet models and minutes of CPU)."""
    monkeypatch.setattr(paper_module, "STEPS", (paper_module.mnist_runs,))


def test_main_table_reproduces_the_runs_and_a_rerun_reuses_them(lenet, tmp_path, mnist_only):
    out = tmp_path / "paper"
    index = paper_module.paper(out, "cpu", seed=0, progress=False, log=lambda m: None, generations=3)
    rows = json.loads((out / "paper.json").read_text())["rows"]
    assert [r["experiment"] for r in rows] == ["MNIST, direct encoding", "MNIST, CPPN encoding"]
    for r in rows:
        summary = json.loads((tmp_path / r["outputs"] / "summary.json").read_text())
        assert r["ours"].startswith(f"median {percent(summary['median_confidence'])}; ")
        assert f"{summary['classes_at_99']} of 10 classes ≥ 99%" in r["ours"]
        assert "3 generations of 200" in r["our budget"] and r["paper"] and r["paper's model and budget"]
    page = index.read_text()
    assert "Ours vs the paper" in page and "capped at 3 generations" in page
    lead = pd.read_csv(out / "ours_vs_the_paper.csv")  # the lead table is also written as CSV
    assert "paper" in lead.columns

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


def test_the_transfer_row_gives_the_median_per_direction():
    table = pd.DataFrame(
        {
            "source": ["lenet", "lenet", "mlp", "mlp"],
            "target": ["lenet", "mlp", "lenet", "mlp"],
            "median_confidence": [0.9999, 0.0787, 0.9989, 0.9999],
            "fraction_at_99": [1.0, 0.3, 0.55, 0.8],
        }
    )
    text = paper_module.transfer_text(table)
    assert "median on another model: lenet → mlp 7.87%, mlp → lenet 99.89%" in text
    assert "53.88%" not in text  # not the mean of the two directions
    assert text.startswith("30%–55% of champions ≥ 99% on another model (on their own: 80%–100%)")
