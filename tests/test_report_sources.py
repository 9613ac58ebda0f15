"""What the committed reports cite is committed: every run directory or folder a report names under
reports/paper/work/ is in the repository with the files that back its figures, and .gitignore keeps
them (it drops `runs/` everywhere else).

Checked three ways: the .gitignore rules on the paths a report writes, a small report generated
here (a run, `foolbench report`, every path it cites), and the committed reports/paper itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import export, tiny

ROOT = Path(__file__).resolve().parent.parent
WORK = "reports/paper/work"
CITED = re.compile(re.escape(WORK) + r"/[^\s\"'<>|,;)]+")
TEXT = (".csv", ".json", ".md", ".html")
# Retrained model files are cited (defence.csv/json name them with their sha256) but not committed:
# they are rebuilt by the same command. Checkpoints are never cited.
NOT_COMMITTED = (".onnx", ".onnx.data")
RUN_FILES = ("manifest.json", "summary.json", "results.csv", "metrics.csv")


def cited_paths(report: Path) -> set[str]:
    """Every reports/paper/work/... path written in the report's text files (work/ included)."""
    found: set[str] = set()
    for path in report.rglob("*"):
        if path.suffix in TEXT and path.is_file():
            found |= {
                m.rstrip(".:") for m in CITED.findall(path.read_text(encoding="utf-8", errors="replace"))
            }
    return found


def backing_files(root: Path, cited: str) -> list[str]:
    """The files that back a cited path, relative to `root`; missing ones are listed too, so the
    caller can say which. A run directory stands for its results, metrics and champion PNGs."""
    path = root / cited
    if path.is_file() or not path.is_dir():
        return [cited]
    if (path / "manifest.json").is_file():
        files = [f"{cited}/{name}" for name in RUN_FILES]
        if (path / "results.csv").is_file():
            files += [f"{cited}/{f}" for f in pd.read_csv(path / "results.csv")["file"]]
        return files
    return [p.relative_to(root).as_posix() for p in sorted(path.rglob("*")) if p.is_file()]


def git_ignored(paths: list[str]) -> list[str]:
    """Those of `paths` (relative to the repository) that the repository's .gitignore drops."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout to read its ignore rules")
    proc = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input="\n".join(paths),
        capture_output=True,
        text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout.split()


def problems(root: Path, report: Path) -> list[str]:
    """What a report cites that is missing under `root` or that git would not commit."""
    cited = sorted(p for p in cited_paths(report) if not p.endswith(NOT_COMMITTED))
    files = [f for c in cited for f in backing_files(root, c)]
    missing = [f"missing: {f}" for f in files if not (root / f).exists()]
    ignored = [f"ignored by .gitignore: {f}" for f in git_ignored(files)]
    return missing + ignored


@pytest.mark.parametrize(
    "path",
    [
        "runs/mnist-direct/summary.json",
        "runs/mnist-direct/results.csv",
        "runs/mnist-direct/metrics.csv",
        "runs/mnist-direct/manifest.json",
        "runs/mnist-direct/champions/0_0.png",
        "runs/mnist-direct/gallery.png",
        "defence-mnist/iter-0/runs/mnist-cppn-s0/summary.json",
        "transfer-arch/runs/mnist/lenet-mnist-mnist-cppn/results.csv",
        "defence-mnist/defence.csv",
    ],
)
def test_gitignore_keeps_what_backs_a_figure(path):
    assert git_ignored([f"{WORK}/{path}"]) == []


@pytest.mark.parametrize(
    "path",
    [
        "runs/mnist-direct/checkpoint/latest.json",
        "runs/mnist-direct/checkpoint/gen-0000200.npz",
        "defence-mnist/models/lenet-mnist-defended-1.onnx",
    ],
)
def test_gitignore_drops_the_regenerable_bulk(path):
    assert git_ignored([f"{WORK}/{path}"]) == [f"{WORK}/{path}"]
    assert git_ignored(["runs/20260101-lenet-mnist-direct-s0/summary.json"])  # users' runs stay out


def test_a_generated_report_cites_only_what_it_keeps(tmp_path, foolbench, monkeypatch):
    """A report made as `foolbench paper` makes its own, under a reports/paper/work/ of its own."""
    model = export(tiny(), tmp_path / "tiny.onnx", (1, 1, 28, 28))
    monkeypatch.chdir(tmp_path)
    run = f"{WORK}/runs/tiny-direct"
    args = ["--model", model, "--attack", "mnist-direct", "--generations", 2, "--no-progress"]
    assert foolbench("run", *args, "--out", run).returncode == 0
    assert foolbench("report", WORK, "--out", "reports/paper").returncode == 0
    assert run in cited_paths(tmp_path / "reports/paper")
    assert problems(tmp_path, tmp_path / "reports/paper") == []
    shutil.rmtree(tmp_path / run / "champions")  # a report whose run lost its PNGs is caught
    assert any("champions/" in p for p in problems(tmp_path, tmp_path / "reports/paper"))


def test_every_path_the_committed_paper_report_cites_is_committed():
    report = ROOT / "reports" / "paper"
    assert cited_paths(report), "the committed report cites no run directory"
    assert problems(ROOT, report) == []
