"""`foolbench run` end to end on a tiny model: the run directory, determinism, and kill -9 + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import export, tiny

from foolbench.images import load_png
from foolbench.models import load_model
from foolbench.rundir import load_checkpoint, read_snapshots

CLI = [sys.executable, "-m", "foolbench.cli"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return export(tiny(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 1, 28, 28))


def foolbench(*args, check=True, **kw):
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def archive_arrays(run_dir: Path) -> dict:
    state = load_checkpoint(run_dir)
    return {k: v for k, v in state.items() if k.startswith(("archive/", "pool/")) or k == "rng"}


def assert_same_archive(a: Path, b: Path):
    x, y = archive_arrays(a), archive_arrays(b)
    assert x.keys() == y.keys()
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("attack", ["mnist-direct", "mnist-cppn"])
def test_run_directory_holds_what_it_promises(tiny_model, tmp_path, attack):
    out = tmp_path / "run"
    foolbench(
        "run", "--model", tiny_model, "--attack", attack, "--generations", 12, "--out", out, "--no-progress"
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["models"][0]["sha256"]
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["generation"]) == list(range(13))
    assert (np.diff(metrics["max_confidence"]) >= 0).all()  # champions never get worse
    results = pd.read_csv(out / "results.csv")
    assert list(results["class"]) == list(range(10))
    # The reported confidence is that of the PNG on disk: reload it and score it again.
    model = load_model(str(tiny_model))
    pngs = np.stack([load_png(out / f, 1) for f in results["file"]])
    again = model.probs(pngs)[np.arange(10), results["class"]]
    np.testing.assert_allclose(again, results["confidence"], rtol=0, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["median_confidence"] == pytest.approx(float(np.median(results["confidence"])))
    assert summary["evaluations"] == 200 * 13 and (out / "gallery.png").stat().st_size > 1000
    assert not list(out.rglob("*.tmp"))


def test_same_seed_same_archive_and_other_seed_differs(tiny_model, tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        foolbench(
            "run",
            "--model",
            tiny_model,
            "--attack",
            "mnist-cppn",
            "--generations",
            8,
            "--seed",
            seed,
            "--out",
            tmp_path / name,
            "--no-progress",
        )
        runs[name] = tmp_path / name
    assert_same_archive(runs["a"], runs["b"])
    assert not np.array_equal(
        archive_arrays(runs["a"])["archive/fitness"], archive_arrays(runs["c"])["archive/fitness"]
    )


def with_snapshots(attack: str, folder: Path, queries: list[int]) -> Path:
    """The preset `attack` as a file that also saves the champions at these query counts."""
    from foolbench.presets import load_preset
    from foolbench.protocol import toml_text

    preset = load_preset(attack)
    tables = {k: v for k, v in preset.tables.items() if v}
    tables["search"] = tables["search"] | {"snapshots": queries}
    path = folder / f"{attack}-snapshots.toml"
    path.write_text(toml_text(tables))
    return path


@pytest.mark.parametrize("attack", ["mnist-direct", "mnist-cppn"])
def test_kill_9_then_resume_equals_uninterrupted(tiny_model, tmp_path, attack):
    preset = with_snapshots(attack, tmp_path, [1000, 2000, 4100, 4300, 6000, 20_000])
    args = [
        "--model",
        tiny_model,
        "--attack",
        preset,
        "--generations",
        150,
        "--checkpoint-every",
        10,
        "--no-progress",
    ]
    whole = tmp_path / "whole"
    foolbench("run", *args, "--out", whole)
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, "run", *map(str, args), "--out", str(killed)], stderr=subprocess.DEVNULL)
    latest = killed / "checkpoint" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text() or "{}").get("generation", 0) >= 20:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    foolbench("run", "--resume", killed, "--no-progress")
    assert_same_archive(whole, killed)
    a, b = pd.read_csv(whole / "results.csv"), pd.read_csv(killed / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    cols = ["generation", "evaluations", "queries", "median_confidence", "classes_at_99"]
    pd.testing.assert_frame_equal(
        pd.read_csv(whole / "metrics.csv")[cols], pd.read_csv(killed / "metrics.csv")[cols]
    )
    # the champions saved on the way (before the kill, around it, after it) are the same, taken when
    # the run's queries first reached each count, one snapshot per generation
    snaps = [(s.queries, s.results) for s in read_snapshots(whole)]
    assert [q for q, _ in snaps][:-1] == [1000, 2000, 4200, 4400, 6000, 20_000]
    assert snaps[-1][0] == json.loads((whole / "summary.json").read_text())["queries"] == 200 * 151
    for (q, a), b in zip(snaps, read_snapshots(killed), strict=True):
        assert b.queries == q
        pd.testing.assert_frame_equal(a, b.results)
    assert not list(killed.rglob(".tmp-*"))


# -- bad input: one line on stderr, exit 2, nothing written ------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--attack", "no-such-preset"], "attack preset 'no-such-preset' not found"),
        (["--attack", "mnist-direct", "--classes", "3-99"], "out of range"),
        (["--attack", "mnist-direct", "--classes", "seven"], "neither an index"),
    ],
)
def test_bad_run_options_fail_cleanly(tiny_model, tmp_path, args, message):
    proc = foolbench(
        "run", "--model", tiny_model, *args, "--out", tmp_path / "out", check=False, cwd=tmp_path
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_bad_preset_key_is_named(tiny_model, tmp_path):
    preset = tmp_path / "p.toml"
    preset.write_text(
        '[encoding]\ntype = "direct"\nresolution = 28\nchannels = 1\n[search]\nbatch = 10\nfoo = 1\n'
    )
    proc = foolbench("run", "--model", tiny_model, "--attack", preset, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown key 'search.foo'" in proc.stderr
    preset.write_text('[encoding]\ntype = "direct"\nresolution = 28\nchannels = 1\nmutation_rate = 7\n')
    proc = foolbench("run", "--model", tiny_model, "--attack", preset, check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "mutation_rate" in proc.stderr


def test_out_folder_that_is_not_empty_is_refused(tiny_model, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    proc = foolbench(
        "run", "--model", tiny_model, "--out", tmp_path / "out", "--attack", "mnist-direct", check=False
    )
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("case", ["missing", "not-onnx", "truncated", "zoo-name", "bad-arch", "labels"])
def test_bad_models_fail_in_one_line_from_the_cli(tiny_model, tmp_path, case):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model" * 50)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(tiny_model.read_bytes()[:3000])
    labels = tmp_path / "labels.txt"
    labels.write_text("only\ntwo\n")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    args = {
        "missing": [tmp_path / "nope.onnx"],
        "not-onnx": [junk],
        "truncated": [cut],
        "zoo-name": ["lenet-mnits"],
        "bad-arch": [weights, "--arch", "nowhere.at_all:make"],
        "labels": [tiny_model, "--labels", labels],
    }[case]
    proc = foolbench("models", "inspect", *args, check=False, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("foolbench: error:")
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.onnx", "junk.onnx", "labels.txt", "w.pth"]


def test_ensemble_run_records_each_members_confidence(tmp_path):
    import torch

    a = export(tiny(), tmp_path / "a.onnx", (1, 1, 28, 28))
    net_b = tiny()
    torch.nn.init.normal_(net_b.body[0].weight, std=0.3)
    b = export(net_b, tmp_path / "b.onnx", (1, 1, 28, 28))
    out = tmp_path / "run"
    foolbench(
        "run",
        "--model",
        a,
        "--model",
        b,
        "--attack",
        "mnist-direct",
        "--generations",
        4,
        "--out",
        out,
        "--no-progress",
    )
    results = pd.read_csv(out / "results.csv")
    np.testing.assert_allclose(results["confidence"], (results["confidence_a"] + results["confidence_b"]) / 2)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["a", "b"] and manifest["model"][
        "backend"
    ] == "ensemble"
    pngs = np.stack([load_png(out / f, 1) for f in results["file"]])
    again = load_model(str(b)).probs(pngs)[np.arange(10), results["class"]]
    np.testing.assert_allclose(again, results["confidence_b"], atol=1e-6)
