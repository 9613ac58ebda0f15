"""`foolbench transfer` and the transfer experiments, on tiny ONNX models and tiny runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from conftest import export, tiny
from PIL import Image

from foolbench.cli import main
from foolbench.errors import FoolbenchError
from foolbench.experiments.transfer import EXPERIMENTS, run_experiment
from foolbench.models.card import ModelCard
from foolbench.runner import RunRequest, start_run


@pytest.fixture
def foolbench(capsys, monkeypatch):
    """The real entry point (`foolbench.cli:main`) in this process: no second torch import per call."""

    def call(*args, check=True, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["foolbench", *map(str, args)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main()
        out, err = capsys.readouterr()
        proc = SimpleNamespace(returncode=exit_.value.code, stdout=out, stderr=err)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
        return proc

    return call


def tiny_variant(seed: int, classes: int = 10):
    """A tiny CNN whose weights differ from tiny()'s (TinyCNN always starts from seed 0)."""
    net = tiny(classes=classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return net


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    letters = ModelCard(labels=list("abcdefghij"))
    return {
        "a": export(tiny(), d / "a.onnx", (1, 1, 28, 28)),
        "b": export(tiny_variant(1), d / "b.onnx", (1, 1, 28, 28)),
        "five": export(tiny_variant(2, classes=5), d / "five.onnx", (1, 1, 28, 28)),
        "letters": export(tiny_variant(3), d / "letters.onnx", (1, 1, 28, 28), card=letters),
    }


def make_run(model: Path, attack: str, out: Path, generations: int = 3) -> Path:
    req = RunRequest(models=[str(model)], attack=attack, generations=generations, out=out, progress=False)
    return start_run(req)


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runs")
    return {
        "a-direct": make_run(models["a"], "mnist-direct", d / "a-direct"),
        "a-cppn": make_run(models["a"], "mnist-cppn", d / "a-cppn"),
        "b-direct": make_run(models["b"], "mnist-direct", d / "b-direct"),
        "five": make_run(models["five"], "mnist-direct", d / "five", generations=1),
    }


def onnx_probs(model: Path, x: np.ndarray) -> np.ndarray:
    """Independent of foolbench's adapter: onnxruntime on the raw array, then a float64 softmax."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0].astype(np.float64)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def pngs(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    results = pd.read_csv(run_dir / "results.csv")
    x = np.stack(
        [np.asarray(Image.open(run_dir / f).convert("L"), dtype=np.float32) / 255 for f in results["file"]]
    )
    return x[:, None], results["class"].to_numpy()


def test_transfer_equals_independent_rescoring(models, runs, tmp_path, foolbench):
    chosen = [runs["a-direct"], runs["a-cppn"], runs["b-direct"]]
    out = tmp_path / "out"
    foolbench("transfer", *chosen, "--model", models["a"], "--model", models["b"], "--out", out)
    table = pd.read_csv(out / "transfer.csv")
    assert list(table.columns[:2]) == ["source", "target"]
    expected = []
    for source, dirs in (("a", chosen[:2]), ("b", chosen[2:])):
        for target in ("a", "b"):
            conf, top, cls = [], [], []
            for run_dir in dirs:
                x, classes = pngs(run_dir)
                p = onnx_probs(models[target], x)
                conf.append(p[np.arange(len(classes)), classes])
                top.append(p.argmax(1))
                cls.append(classes)
            conf, top, cls = map(np.concatenate, (conf, top, cls))
            expected.append(
                {
                    "source": source,
                    "target": target,
                    "median_confidence": np.median(conf),
                    "fraction_at_99": np.mean(conf >= 0.99),
                    "fraction_at_50": np.mean(conf >= 0.5),
                    "top1_match": np.mean(top == cls),
                    "n_images": len(conf),
                    "runs": len(dirs),
                }
            )
    expected = pd.DataFrame(expected)
    pd.testing.assert_frame_equal(table[expected.columns], expected, check_dtype=False, atol=1e-6, rtol=0)
    # The matrices hold the same numbers, rows = source, columns = target; each has its heatmap.
    for stat in ("median_confidence", "fraction_at_99", "fraction_at_50", "top1_match"):
        m = pd.read_csv(out / f"matrix_{stat}.csv", index_col="source")
        assert list(m.index) == ["a", "b"] and list(m.columns) == ["a", "b"]
        for row in expected.itertuples():
            assert m.loc[row.source, row.target] == pytest.approx(getattr(row, stat), abs=1e-6)
        assert (out / f"heatmap_{stat}.png").stat().st_size > 2000
    assert not list(out.glob(".*.tmp"))


def test_a_model_transferred_to_itself_reproduces_results_csv(models, runs, tmp_path):
    from foolbench.experiments.transfer import transfer

    transfer([runs["a-cppn"], runs["b-direct"]], [str(models["a"]), str(models["b"])], tmp_path)
    images = pd.read_csv(tmp_path / "images.csv")
    for run, name in ((runs["a-cppn"], "a"), (runs["b-direct"], "b")):
        results = pd.read_csv(run / "results.csv")
        own = images[(images["run"] == str(run.resolve())) & (images["target"] == name)]
        assert list(own["file"]) == list(results["file"])
        np.testing.assert_allclose(own["confidence"], results["confidence"], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(own["top1"], results["top1"])
    # Scoring in chunks (how large ImageNet runs are read) changes nothing.
    from foolbench.experiments.transfer import load_targets, score_transfer
    from foolbench.rundir import read_champions

    run_images = [read_champions(runs["a-cppn"].resolve()), read_champions(runs["b-direct"].resolve())]
    targets = load_targets([str(models["a"]), str(models["b"])], run_images)
    chunked = score_transfer(run_images, targets, chunk=3).drop(columns="run_index")
    pd.testing.assert_frame_equal(chunked, images, check_dtype=False, atol=1e-12, rtol=0)


def test_mismatched_class_spaces_fail_in_one_line(models, runs, tmp_path, foolbench):
    out = tmp_path / "out"
    args = [runs["a-direct"], "--model", models["a"], "--model", models["letters"], "--out", out]
    proc = foolbench("transfer", *args, check=False, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("foolbench: error:")
    assert "calls class 0 'a' but the runs call it 'class 0'" in proc.stderr
    assert not out.exists() and not (tmp_path / "transfer").exists()


@pytest.mark.parametrize("case", ["runs", "target-classes"])
def test_other_class_space_mismatches_are_refused(models, runs, tmp_path, case):
    from foolbench.experiments.transfer import transfer

    run_dirs, targets, message = {
        "runs": ([runs["a-direct"], runs["five"]], [models["a"]], "runs from different class spaces"),
        "target-classes": ([runs["a-direct"]], [models["five"]], "has 5 classes but the runs have 10"),
    }[case]
    with pytest.raises(FoolbenchError, match=message) as e:
        transfer(run_dirs, [str(t) for t in targets], tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_unfinished_or_foreign_folder_is_refused(models, tmp_path):
    from foolbench.experiments.transfer import transfer

    with pytest.raises(FoolbenchError, match="not a run directory"):
        transfer([tmp_path], [str(models["a"])], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_transfer_seeds_experiment_with_injected_models(models, tmp_path, foolbench):
    out = tmp_path / "exp"
    specs = [str(models["a"]), str(models["b"])]
    models_args = [f"--model={s}" for s in specs]
    proc = foolbench(
        "experiment", "transfer-seeds", "--out", out, "--generations", 1, "--no-progress", *models_args
    )
    assert "median_confidence" in proc.stdout
    group = EXPERIMENTS["transfer-seeds"].groups[0]
    runs = sorted(p.name for p in (out / "runs" / "mnist").iterdir())
    assert runs == sorted(f"{m}-{a}" for m in ("a", "b") for a in group.attacks)
    for run in runs:  # normal run directories
        assert (out / "runs" / "mnist" / run / "summary.json").is_file()
    table = pd.read_csv(out / "transfer" / "mnist" / "all" / "transfer.csv")
    assert len(table) == 4 and set(table["n_images"]) == {20} and set(table["runs"]) == {2}
    for attack in group.attacks:
        per = pd.read_csv(out / "transfer" / "mnist" / attack / "transfer.csv")
        assert set(per["n_images"]) == {10} and set(per["runs"]) == {1}
    record = json.loads((out / "experiment.json").read_text())
    assert record["experiment"] == "transfer-seeds" and record["groups"][0]["models"] == specs
    # Finished runs are reused (a killed experiment continues); other settings there are refused.
    from foolbench.runner import run_state

    run = out / "runs" / "mnist" / "a-mnist-cppn"
    req = RunRequest(
        models=[specs[0]], attack="mnist-cppn", scale="cpu", generations=1, out=run, progress=False
    )
    assert run_state(req) == "finished"
    with pytest.raises(FoolbenchError, match="other settings: generations 1 \\(asked 2\\)"):
        run_experiment("transfer-seeds", out, generations=2, models={"mnist": specs}, progress=False)
