"""`foolbench score` and `foolbench leaderboard`: the protocol, the row, concurrent writers, rendering."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import export, tiny

from foolbench.cli import main
from foolbench.errors import FoolbenchError
from foolbench.protocol import load_protocol, protocol_from_dict
from foolbench.report.html import STYLE
from foolbench.report.leaderboard import BASE_COLUMNS, TAIL_COLUMNS, ranked, read_leaderboard, render

# A protocol small enough for tests: the v1 layout with budgets of a few hundred evaluations.
TINY_PROTOCOL = """
[protocol]
version = "t1"
seeds = [0, 1]
ranked = ["cppn", "direct"]

[suite.grey]
channels = 1

[suite.grey.attacks.cppn]
preset = "mnist-cppn"
evaluations = 300
batch = 50

[suite.grey.attacks.direct]
preset = "mnist-direct"
evaluations = 300
batch = 50

[suite.grey.attacks.gradient]
preset = "gradient"
steps = 3
"""
ATTACKS = ("cppn", "direct", "gradient")


@pytest.fixture(scope="module")
def protocol(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("protocol") / "tiny.toml"
    path.write_text(TINY_PROTOCOL)
    return path


def _model(folder: Path, name: str, shift: float | torch.Tensor) -> Path:
    """A tiny 10-class grey ONNX model; `shift` changes its weights, so files differ by sha256."""
    net = tiny()
    with torch.no_grad():
        net.body[-1].bias += shift
    return export(net, folder / f"{name}.onnx", (1, 1, 28, 28))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {"a": _model(folder, "a", 0.0), "b": _model(folder, "b", torch.linspace(-3, 3, 10))}


@pytest.fixture(scope="module")
def scored(models, protocol, tmp_path_factory):
    """Model a scored once into a fresh leaderboard, through the command line."""
    root = tmp_path_factory.mktemp("scored")
    board, work = root / "board.csv", root / "work-a"
    argv = ["foolbench", "score", "--model", models["a"], "--protocol", protocol]
    argv += ["--leaderboard", board, "--work", work, "--no-progress"]
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as exit_:
        mp.setattr(sys, "argv", list(map(str, argv)))
        main()
    assert exit_.value.code == 0
    return SimpleNamespace(board=board, work=work, root=root)


# -- the protocol ------------------------------------------------------------------------------------
def test_v1_protocol_loads_and_samples_classes():
    proto = load_protocol("v1")
    assert proto.version == "v1" and proto.seeds == (0, 1) and set(proto.ranked) <= set(proto.attack_names)
    assert proto.classes_for(10) == list(range(10)) and proto.classes_for(100) == list(range(100))
    assert proto.classes_for(1000) == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert proto.classes_for(101) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert proto.suite_for(1).name == "grey" and proto.suite_for(3).name == "colour"
    with pytest.raises(FoolbenchError, match="no suite for 4-channel"):
        proto.suite_for(4)


def test_preset_for_a_model_carries_the_budget_resolution_and_classes():
    proto = load_protocol("v1")
    colour = proto.suites["colour"]
    cppn = next(a for a in colour.attacks if a.name == "cppn")
    tables = proto.preset_tables(cppn, colour, 32, [0, 5])
    assert tables["encoding"]["resolution"] == 32 and tables["encoding"]["channels"] == 3
    assert tables["search"]["evaluations"] == cppn.evaluations and "generations" not in tables["search"]
    assert tables["search"]["classes"] == [0, 5] and tables["evaluation"]["crop"] == "center"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["protocol"].update(colour="red"), "unknown key 'protocol.colour'"),
        (lambda d: d["protocol"].update(seeds=[0, 0]), "distinct seeds"),
        (lambda d: d["protocol"].update(version="v 1"), "protocol.version"),
        (lambda d: d["suite"]["grey"]["attacks"]["cppn"].update(evaluations=0), "between 1"),
        (lambda d: d["suite"]["grey"]["attacks"]["cppn"].update(preset="nope"), "preset 'nope' not found"),
        (lambda d: d["suite"]["grey"]["attacks"]["cppn"].update(steps=5), "budget is 'evaluations'"),
        (lambda d: d["suite"]["grey"]["attacks"]["gradient"].update(evaluations=5), "budget is 'steps'"),
        (lambda d: d["suite"]["grey"].update(channels=2), "must be one of 1, 3"),
        (lambda d: d["protocol"].update(ranked=["fast"]), "ranked attack 'fast'"),
        (lambda d: d.update(extra={}), r"unknown section \[extra\]"),
    ],
)
def test_bad_protocols_name_the_problem(edit, message):
    import tomllib

    data = tomllib.loads(TINY_PROTOCOL)
    edit(data)
    with pytest.raises(FoolbenchError, match=message):
        protocol_from_dict(data, "p.toml")


# -- scoring -----------------------------------------------------------------------------------------
def test_row_numbers_are_the_runs_summaries(scored, models):
    board = read_leaderboard(scored.board)
    assert len(board) == 1
    row = board.iloc[0]
    from foolbench.fileio import sha256_file

    assert row["name"] == "a" and row["model_sha256"] == sha256_file(models["a"])
    assert (row["protocol"], row["suite"], row["classes"], row["input_size"]) == ("t1", "grey", 10, "1x28x28")
    for attack in ATTACKS:
        summaries = [
            json.loads((scored.work / f"{attack}-s{s}" / "summary.json").read_text()) for s in (0, 1)
        ]
        assert row[f"{attack}_median"] == pytest.approx(np.mean([s["median_confidence"] for s in summaries]))
        assert row[f"{attack}_classes_at_99"] == np.mean([s["classes_at_99"] for s in summaries])
        reached = [s["evaluations_to_first_99"] for s in summaries]
        expected = np.nan if None in reached else np.median(reached)
        assert row[f"{attack}_evals_to_99"] == pytest.approx(expected, nan_ok=True)
        assert all(s["classes"] == 10 for s in summaries)
    assert summaries[0]["evaluations"] == 4 * 10  # gradient: noise + 3 steps, 10 classes each
    assert row["fooling_score"] == pytest.approx((row["cppn_median"] + row["direct_median"]) / 2)
    base = json.loads((scored.work / "baseline" / "baseline.json").read_text())
    assert row["baseline_median"] == pytest.approx(base["median_confidence"])
    assert row["fooling_auroc"] == pytest.approx(base["fooling_vs_real"]["auroc"])
    assert base["fooling_vs_real"]["fooling_images"] == 60  # every champion of the six runs
    assert not list(scored.root.rglob("*.tmp"))


def test_scoring_again_replaces_the_row_resuming_and_reusing_the_runs(
    scored, models, protocol, foolbench, tmp_path
):
    board, work = tmp_path / "board.csv", tmp_path / "work"
    board.write_bytes(scored.board.read_bytes())
    shutil.copytree(scored.work, work)
    (work / "cppn-s0" / "summary.json").unlink()  # as if killed before it finished: resumed
    manifest = work / "direct-s1" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    r = foolbench(
        "score", "--model", models["a"], "--name", "renamed", "--protocol", protocol,
        "--leaderboard", board, "--work", work, "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "cppn-s0 (resuming)" in r.stderr and "direct-s1 (finished, reused)" in r.stderr
    assert manifest.stat().st_mtime_ns == before
    old, new = read_leaderboard(scored.board), read_leaderboard(board)
    assert list(new["name"]) == ["renamed"]
    numbers = [c for c in old.columns if c not in ("name", "date")]
    pd.testing.assert_frame_equal(old[numbers], new[numbers])


def test_two_models_are_ranked_and_rendered(scored, models, protocol, foolbench, tmp_path):
    board = tmp_path / "board.csv"
    board.write_bytes(scored.board.read_bytes())
    r = foolbench(
        "score", "--model", models["b"], "--name", "<b>|x", "--protocol", protocol,
        "--leaderboard", board, "--work", tmp_path / "work-b", "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    df = read_leaderboard(board)
    assert len(df) == 2
    order = list(df.sort_values("fooling_score")["name"])
    csv = foolbench("leaderboard", "--format", "csv", "--leaderboard", board)
    assert csv.returncode == 0 and csv.stdout.startswith("# foolbench leaderboard, protocol t1\n")
    shown = pd.read_csv(pd.io.common.StringIO(csv.stdout), comment="#")
    assert list(shown["name"]) == order and list(shown["rank"]) == [1, 2]
    md = foolbench("leaderboard", "--leaderboard", board)
    assert "protocol t1" in md.stdout.splitlines()[0] and "<b>\\|x" in md.stdout
    rows = [line.split(" | ") for line in md.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert [r[1] for r in rows] == [n.replace("|", "\\|") for n in order]
    out = tmp_path / "board.html"
    h = foolbench("leaderboard", "--format", "html", "--out", out, "--leaderboard", board)
    page = out.read_text()
    assert h.returncode == 0 and "&lt;b&gt;|x" in page and "<b>|x" not in page
    assert STYLE in page and "<script" not in page  # dressed as the report, self-contained
    assert page.count("<table") == 2  # the ranking, and the model files and dates in a folded table


def test_a_run_of_another_model_in_work_is_refused(scored, models, protocol, foolbench, tmp_path):
    board = tmp_path / "board.csv"
    r = foolbench(
        "score", "--model", models["b"], "--protocol", protocol,
        "--leaderboard", board, "--work", scored.work, "--no-progress",
    )  # fmt: skip
    assert r.returncode == 2 and "another model file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not board.exists()


# -- bad input: one line, exit 2, the leaderboard untouched ---------------------------------------------
@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown model", "not found"),
        ("bad protocol key", "unknown key 'suite.grey.attacks.cppn.budget'"),
        ("missing protocol", "protocol 'v99' not found"),
        ("broken leaderboard", "not a leaderboard CSV"),
        ("bad name", "--name"),
        ("crop", "drop --crop"),
    ],
)
def test_bad_input_fails_in_one_line_and_writes_nothing(case, message, models, protocol, foolbench, tmp_path):
    board = tmp_path / "board.csv"
    board.write_text(
        "a,b\n1,2\n" if case == "broken leaderboard" else ",".join(BASE_COLUMNS + TAIL_COLUMNS) + "\n"
    )
    before = board.read_bytes()
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_PROTOCOL.replace("evaluations = 300\nbatch = 50", "budget = 300", 1))
    args = {
        "unknown model": ["--model", tmp_path / "nope.onnx"],
        "bad protocol key": ["--protocol", bad],
        "missing protocol": ["--protocol", "v99"],
        "bad name": ["--name", "two\nlines"],
        "crop": ["--crop", "ten"],
    }.get(case, [])
    full = {"--model": models["a"], "--protocol": protocol} | dict(zip(args[::2], args[1::2], strict=True))
    if case == "crop":
        full["--protocol"] = tmp_path / "crop.toml"
        full["--protocol"].write_text(TINY_PROTOCOL.replace("channels = 1", 'channels = 1\ncrop = "center"'))
    argv = [x for kv in full.items() for x in kv] + ["--leaderboard", board, "--work", tmp_path / "w"]
    r = foolbench("score", *argv, "--no-progress")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert board.read_bytes() == before and not (tmp_path / "w").exists()


def test_leaderboard_command_without_a_file(foolbench, tmp_path):
    r = foolbench("leaderboard", "--leaderboard", tmp_path / "none.csv")
    assert r.returncode == 2 and "score a model first" in r.stderr


# -- many writers at once ----------------------------------------------------------------------------
def _row(writer: int, i: int, score: float) -> dict:
    row = dict.fromkeys(BASE_COLUMNS + TAIL_COLUMNS)
    row |= {"name": f"w{writer}-{i}", "model_sha256": f"{writer:04d}{i:060d}", "classes": 10}
    row |= {
        "input_size": "1x28x28",
        "suite": "grey",
        "protocol": "v1",
        "foolbench": "0",
        "date": "2026-01-01",
    }
    return row | {"fooling_score": score, "cppn_median": score, "cppn_evals_to_99": float(i)}


# Each writer is its own Python process, as concurrent `foolbench score` commands are: it waits for the
# go file, adds its rows, then scores its first model again (which must replace that row).
WRITER = """
import sys, time
from pathlib import Path
from foolbench.report.leaderboard import BASE_COLUMNS, TAIL_COLUMNS, add_row
path, writer, rows, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
def row(i, score):
    r = dict.fromkeys(BASE_COLUMNS + TAIL_COLUMNS)
    r |= {"name": f"w{writer}-{i}", "model_sha256": f"{writer:04d}{i:060d}", "classes": 10, "protocol": "v1"}
    return r | {"suite": "grey", "fooling_score": score, "cppn_median": score, "cppn_evals_to_99": float(i)}
while not go.exists():
    time.sleep(0.01)
for i in range(rows):
    add_row(path, row(i, 0.5))
add_row(path, row(0, 0.25))
"""


WRITERS, ROWS = 8, 20  # the README says these numbers


def test_concurrent_writers_lose_no_row(tmp_path):
    path, go = tmp_path / "board.csv", tmp_path / "go"
    writers, rows = WRITERS, ROWS
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(rows), str(go)])
        for w in range(writers)
    ]
    go.touch()
    assert [p.wait(timeout=300) for p in procs] == [0] * writers
    df = read_leaderboard(path)
    assert len(df) == writers * rows
    assert set(df["name"]) == {f"w{w}-{i}" for w in range(writers) for i in range(rows)}
    firsts = df["name"].str.endswith("-0")
    assert (df.loc[firsts, "fooling_score"] == 0.25).all() and (df.loc[~firsts, "fooling_score"] == 0.5).all()
    assert not list(tmp_path.glob(".*.tmp"))


# -- ranking -----------------------------------------------------------------------------------------
def test_ranking_order_and_ties():
    rows = [
        _row(0, 1, 0.9) | {"name": "fooled"},
        _row(0, 2, 0.3) | {"name": "tie-fast", "cppn_evals_to_99": 100.0},
        _row(0, 3, 0.3) | {"name": "tie-slow", "cppn_evals_to_99": 5000.0},
        _row(0, 4, 0.3) | {"name": "tie-never", "cppn_evals_to_99": None},
        _row(0, 5, 0.1) | {"name": "robust"},
        _row(0, 6, 0.0) | {"name": "colour", "suite": "colour"},
        _row(0, 7, 0.95) | {"name": "old", "protocol": "v0"},
    ]
    table = ranked(pd.DataFrame(rows))
    assert list(table["name"]) == ["old", "colour", "robust", "tie-never", "tie-slow", "tie-fast", "fooled"]
    assert list(table["rank"]) == [1, 1, 1, 2, 3, 4, 5]
    assert render(pd.DataFrame(rows), "md").startswith("# foolbench leaderboard, protocol v0, v1\n")
