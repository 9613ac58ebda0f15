"""Faults: runs killed again and again, corrupt checkpoints, models that return NaN."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import export, tiny
from test_run import CLI, assert_same_archive, foolbench

KILLS_PER_ATTACK = 6  # the README says this number
GENERATIONS = 60  # each kill lands within ~6 generations of the restart: 6 kills fit


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return export(tiny(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 1, 28, 28))


def latest_generation(run_dir) -> int:
    try:
        return json.loads((run_dir / "checkpoint" / "latest.json").read_text())["generation"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def wait_for_checkpoint(run_dir, proc, generation: int) -> float:
    """Wait until the run has checkpointed `generation` (or has ended); returns the time it saw it."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and latest_generation(run_dir) < generation:
        time.sleep(0.001)
    return time.perf_counter()


def run_and_kill(command: list[str], run_dir, rng: random.Random, kills: int) -> int:
    """Start the command, SIGKILL it at a random moment, resume, and repeat `kills` times; returns
    how many kills landed before the run finished.

    The moment: a few generations after the (re)start, then a random fraction of one generation's
    time as just measured, so a kill falls anywhere in a generation, its checkpoint write included,
    however fast the machine, and each attempt moves the run on by a handful of generations only.
    """
    landed = 0
    for attempt in range(kills):
        proc = subprocess.Popen(
            command if attempt == 0 else [*CLI, "run", "--resume", str(run_dir), "--no-progress"],
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        target = latest_generation(run_dir) + rng.randint(2, 4)
        before = wait_for_checkpoint(run_dir, proc, target - 1)
        generation_time = wait_for_checkpoint(run_dir, proc, target) - before
        time.sleep(rng.uniform(0, generation_time))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            landed += 1
        proc.wait()
        if (run_dir / "summary.json").exists():
            break
    return landed


ATTACKS = ("mnist-direct", "mnist-cppn", "mnist-patch")


def killed_and_whole(model: Path, folder: Path, attack: str) -> int:
    """One attack's uninterrupted run (folder/whole) and its run killed KILLS_PER_ATTACK times and
    resumed to the end (folder/killed); returns how many kills landed. Subprocesses only, so the
    attacks can go side by side in threads."""
    args = [
        "--model",
        str(model),
        "--attack",
        attack,
        "--generations",
        str(GENERATIONS),
        "--checkpoint-every",
        "1",
        "--no-progress",
    ]
    foolbench("run", *args, "--out", folder / "whole")
    killed = folder / "killed"
    landed = run_and_kill(
        [*CLI, "run", *args, "--out", str(killed)], killed, random.Random(attack), KILLS_PER_ATTACK
    )
    foolbench("run", "--resume", killed, "--no-progress")  # finishes it, or finds it finished
    return landed


@pytest.mark.slow
def test_repeated_kill_9_never_loses_the_run(tiny_model, tmp_path):
    """Direct, CPPN and patch runs, each SIGKILLed 6 times at random moments and resumed, end
    where an uninterrupted run ends. The three attacks run side by side (each kill's moment is
    measured on the run it hits, so sharing the cores only moves where kills land)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(ATTACKS)) as pool:
        landed = dict(
            zip(
                ATTACKS,
                pool.map(lambda a: killed_and_whole(tiny_model, tmp_path / a, a), ATTACKS),
                strict=True,
            )
        )
    for attack, kills in landed.items():
        assert kills == KILLS_PER_ATTACK, (
            f"{attack}: only {kills} of {KILLS_PER_ATTACK} kills landed before the run ended"
        )
        whole, killed = tmp_path / attack / "whole", tmp_path / attack / "killed"
        assert not list(killed.rglob("*.tmp"))  # temporaries of interrupted writes are cleared
        assert_same_archive(whole, killed)
        pd.testing.assert_frame_equal(pd.read_csv(whole / "results.csv"), pd.read_csv(killed / "results.csv"))


def test_corrupt_checkpoint_falls_back_then_fails_in_one_line(tiny_model, tmp_path):
    args = ["--model", tiny_model, "--attack", "mnist-direct", "--checkpoint-every", 5, "--no-progress"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    foolbench("run", *args, "--generations", 20, "--out", whole)
    foolbench("run", *args, "--generations", 10, "--out", run)
    latest = json.loads((run / "checkpoint" / "latest.json").read_text())
    newest = run / "checkpoint" / latest["file"]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    newest.write_bytes(bytes(data))
    proc = foolbench("run", "--resume", run, "--generations", 20, "--no-progress")
    assert "corrupt" in proc.stderr  # it said so, and carried on from the previous checkpoint
    assert_same_archive(whole, run)
    for npz in (run / "checkpoint").glob("gen-*.npz"):
        npz.write_bytes(npz.read_bytes()[:100])  # every checkpoint cut short
    proc = foolbench("run", "--resume", run, "--generations", 30, "--no-progress", check=False)
    assert proc.returncode == 2 and "no intact checkpoint" in proc.stderr.strip().splitlines()[-1]


class SometimesNaN(torch.nn.Module):
    """Logits that are NaN whenever the image's first pixel is above 0.5."""

    def __init__(self):
        super().__init__()
        self.net = tiny()

    def forward(self, x):
        bad = (x[:, :1, :1, :1].flatten(1) > 0.5).float()
        return self.net(x) + torch.log(1.0 - bad) * 0.0 + torch.sqrt(-bad)


def test_nan_scores_count_as_zero_and_are_reported(tmp_path):
    model = export(SometimesNaN(), tmp_path / "nan.onnx", (1, 1, 28, 28))
    out = tmp_path / "run"
    foolbench(
        "run", "--model", model, "--attack", "mnist-direct", "--generations", 3, "--out", out, "--no-progress"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nonfinite_scores"] > 0
    assert np.isfinite(pd.read_csv(out / "metrics.csv")["max_confidence"]).all()


def test_an_output_folder_that_cannot_be_made_is_one_line(tiny_model, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = foolbench(
        "run",
        "--model",
        tiny_model,
        "--attack",
        "mnist-direct",
        "--generations",
        2,
        "--out",
        blocker / "run",
        check=False,
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert last.startswith("foolbench: error: cannot read or write") and blocker.read_text() == "not a folder"


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a real file system that runs out of space (needs root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {made.stderr.decode().strip()}")
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder, leave: int) -> Path:
    """Fill the file system of `folder` until a write fails, then free `leave` bytes."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def test_a_full_disk_is_one_line_and_the_last_checkpoint_survives(tiny_model, tmp_path, small_disk):
    args = ["--model", tiny_model, "--attack", "mnist-direct", "--checkpoint-every", 1, "--no-progress"]
    whole, run = tmp_path / "whole", small_disk / "run"
    foolbench("run", *args, "--generations", 12, "--out", whole)
    foolbench("run", *args, "--generations", 6, "--out", run)
    before = {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()}
    filler = fill(small_disk, leave=16384)  # room for the manifest, not for the next checkpoint
    proc = foolbench("run", "--resume", run, "--generations", 12, "--no-progress", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert lines[-1].startswith("foolbench: error: cannot read or write") and "No space left" in lines[-1]
    assert "checkpoint/gen-0000007.npz" in lines[-1]  # the write that failed is named
    assert {p.name: p.read_bytes() for p in (run / "checkpoint").iterdir()} == before  # untouched
    assert not list(run.rglob("*.tmp"))  # no half-written file
    filler.unlink()  # space again: the run carries on from generation 6 as if nothing happened
    foolbench("run", "--resume", run, "--generations", 12, "--no-progress")
    assert_same_archive(whole, run)
    pd.testing.assert_frame_equal(pd.read_csv(whole / "results.csv"), pd.read_csv(run / "results.csv"))
