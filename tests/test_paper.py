"""`foolbench paper`: the headline reproduces the runs it reads, and a second call reuses them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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


# -- the ImageNet experiments, on tiny 1000-class stand-ins -------------------------------------------------
IMAGENET_LABELS = [f"class {i}" for i in range(1000)]


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """Three tiny 1000-class colour models (different weights, one label set) and a labelled photo
    folder named by class index, as $FOOLBENCH_DATA/imagenet-sample is."""
    import torch
    from conftest import export, tiny
    from PIL import Image

    from foolbench.models import ModelCard

    root = tmp_path_factory.mktemp("imagenet")
    card = ModelCard(dataset="imagenet", labels=IMAGENET_LABELS, input_size=[32, 32], resize=36)
    models = []
    for i in range(3):
        net = tiny(channels=3, classes=1000, size=32)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.05)
        models.append(str(export(net, root / f"tiny-{i}.onnx", (1, 3, 32, 32), card=card)))
    photos = root / "imagenet-sample"
    rng = np.random.default_rng(0)
    for c in (84, 87, 145, 207):
        (photos / f"{c:03d}").mkdir(parents=True)
        for k in range(3):
            pixels = rng.integers(0, 256, (40 + 4 * k, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(photos / f"{c:03d}" / f"{k}.png")
    return SimpleNamespace(models=models, photos=photos)


@pytest.mark.parametrize("jobs", [1, 2])
def test_imagenet_steps_searches_ensemble_transfer_and_baselines(imagenet, tmp_path, monkeypatch, jobs):
    """The ImageNet part of `foolbench paper --scale cpu` at 1 generation per run: two seeds of the
    paper's two searches and of the patch search; the patch search on the ensemble; transfer among the
    three models, whose first model's runs are the seed runs (not evolved twice); the baselines on the
    labelled photos. Each headline line is read back from the files it cites."""
    from foolbench.experiments import transfer as transfer_module
    from foolbench.report.headline import BEYOND, NOT_REPRODUCED, REFERENCES

    arch = transfer_module.EXPERIMENTS["transfer-arch"]
    imagenet_only = transfer_module.Experiment(arch.name, arch.description, arch.paper, arch.groups[1:])
    monkeypatch.setattr(transfer_module, "EXPERIMENTS", {"transfer-arch": imagenet_only})
    monkeypatch.setattr(paper_module, "TRANSFERS", ("transfer-arch",))  # not the MNIST seed twins' minutes
    seeds = {"imagenet-direct": 1, "imagenet-cppn": 2, "imagenet-patch": 1}  # fewer than the real thing's
    plan = dataclasses.replace(paper_module.IMAGENET["cpu"], seeds=seeds)
    monkeypatch.setitem(paper_module.IMAGENET, "cpu", plan)
    steps = (paper_module.imagenet_runs, paper_module.ensemble, paper_module.transfers)
    monkeypatch.setattr(paper_module, "STEPS", (*steps, paper_module.imagenet_baselines))
    monkeypatch.setattr(paper_module, "ENSEMBLE", tuple(imagenet.models))
    monkeypatch.setattr(paper_module, "MNIST_ATTACKS", ())  # with --jobs, only this test's ImageNet runs
    monkeypatch.setattr(paper_module, "GRADIENTS", ())
    out = tmp_path / "paper"
    log = []
    paper_module.paper(
        out, "cpu", 0, imagenet.models[0], False, log.append, generations=1, data=imagenet.photos, jobs=jobs
    )
    runs = out / "work" / "runs"
    if jobs > 1:  # side by side first, in worker processes: 4 searches, the ensemble, 4 transfer runs
        assert "9 independent runs, 2 at a time" in log
        assert sum(line.endswith(" s)") and ": started (" in line for line in log) == 9
        transfer_lines = [line for line in log if line.startswith("transfer-arch: ")]
        assert len(transfer_lines) == 6 and all(line.endswith("(finished)") for line in transfer_lines)

    rows = {r["experiment"]: r for r in json.loads((out / "paper.json").read_text())["rows"]}

    # the paper's searches and the patch search: the median over seeds, each seed's in the detail
    for experiment, attack, seeds in (
        ("ImageNet, direct encoding", "imagenet-direct", 1),
        ("ImageNet, CPPN encoding", "imagenet-cppn", 2),
        ("ImageNet, patch search", "imagenet-patch", 1),
    ):
        summaries = [json.loads((runs / f"{attack}-s{s}" / "summary.json").read_text()) for s in range(seeds)]
        medians = sorted(s["median_confidence"] for s in summaries)
        row = rows[experiment]
        assert (
            row["ours"] == pytest.approx(np.median(medians)) and row["budget"] == summaries[0]["evaluations"]
        )
        if seeds > 1:
            assert "median of 2 seeds" in row["detail"]
            assert f"{percent(medians[0])}–{percent(medians[1])}" in row["detail"]
    assert rows["ImageNet, patch search"]["verdict"] == BEYOND
    assert "the patch search" in rows["ImageNet, patch search"]["why"]

    # the ensemble, fooled by the patch search: set beside the paper's ensemble, saying by which method
    row = rows["ImageNet, patch search, ensemble"]
    results = pd.read_csv(runs / "imagenet-patch-ensemble" / "results.csv")
    summary = json.loads((runs / "imagenet-patch-ensemble" / "summary.json").read_text())
    assert row["ours"] == summary["classes_at_90"] / len(results)
    assert row["paper"] == REFERENCES[("imagenet", "map-elites", "cppn", True)].value
    assert "by the patch search, not the paper's method" in row["why"]
    for member in ("tiny-0", "tiny-1", "tiny-2"):
        alone = int((results[f"confidence_{member}"] >= 0.9).sum())
        assert f"{member} {alone}" in row["detail"]

    # transfer: one line per search (the paper's figure is for its own method), the first model's
    # champions are its seed-0 runs
    transfer_dir = out / "work" / "transfer-arch"
    assert not any("tiny-0" in p.name for p in (transfer_dir / "runs" / "imagenet").iterdir())
    meta = json.loads((transfer_dir / "transfer" / "imagenet" / "all" / "transfer.json").read_text())
    assert str(runs / "imagenet-cppn-s0") in meta["runs"] and str(runs / "imagenet-patch-s0") in meta["runs"]
    cppn = rows["Transfer across architectures (ImageNet, imagenet-cppn)"]
    patch = rows["Transfer across architectures (ImageNet, imagenet-patch)"]
    table = pd.read_csv(transfer_dir / "transfer" / "imagenet" / "imagenet-patch" / "transfer.csv")
    cross = table[table["source"] != table["target"]]["fraction_at_99"]
    assert patch["ours"] == pytest.approx(float(np.median(cross)))
    assert "by the patch search" in patch["why"] and "not the paper's method" not in cppn["why"]
    for row in (cppn, patch):  # set beside the paper's architecture figure, not the seed twins'
        assert row["paper_text"] == REFERENCES[("transfer", "transfer-arch")].text == "about 20%"

    # the baselines: the labelled photos' medians, right and wrong, and which data they used
    for experiment, folder in (
        ("Real-image baseline, ImageNet photos", "baseline-tiny-0"),
        ("Real-image baseline, ImageNet photos, fooling images of imagenet-patch", "baseline-tiny-0-patch"),
    ):
        result = json.loads((out / "work" / folder / "baseline.json").read_text())
        row = rows[experiment]
        assert result["images"] == 12 and result["correct"] + result["wrong"] == 12
        assert (
            row["ours"] == result["median_confidence"]
            and "12 labelled photos in imagenet-sample/" in row["data"]
        )
        wrong = percent(result["median_confidence_wrong"])
        assert f"wrong {wrong}" in row["ours_text"]
        fooling = result["fooling_vs_real"]["median_fooling_confidence"]
        assert (row["verdict"] == NOT_REPRODUCED) == (fooling < result["median_confidence"])
    assert (
        "by the patch search"
        in rows["Real-image baseline, ImageNet photos, fooling images of imagenet-patch"]["why"]
    )
    assert json.loads((out / "paper.json").read_text())["photos"] == "imagenet-sample"
    page = (out / "index.html").read_text()
    assert "imagenet-sample/" in page and "beyond the paper" in page


def test_missing_photos_are_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "paper"
    proc = foolbench("paper", "--out", out, "--data", tmp_path / "no-photos", "--no-progress", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("foolbench: error: --data ")
    assert "labelled ImageNet photos" in proc.stderr and not out.exists()


def test_the_cpu_plans_independent_runs_are_the_runs_its_steps_make(tmp_path):
    """`--jobs` makes exactly the runs the steps would make before the defences, each once: the
    ImageNet model's own transfer runs are its seed-0 search runs, not made twice."""
    ctx = paper_module.Context(tmp_path, "cpu", 0, "efficientnet-lite0", False, print)
    outs = [str(r.out.relative_to(tmp_path / "work")) for r in paper_module.independent_runs(ctx)]
    assert len(outs) == len(set(outs))
    searches = {f"runs/{a}-s{s}" for a, n in paper_module.IMAGENET["cpu"].seeds.items() for s in range(n)}
    lites = {
        f"transfer-arch/runs/imagenet/efficientnet-lite{i}-{a}"
        for i in (1, 2)
        for a in ("imagenet-cppn", "imagenet-patch")
    }
    assert searches | lites | {"runs/imagenet-patch-ensemble"} <= set(outs)
    assert not any("efficientnet-lite0-imagenet" in o for o in outs)  # reused from runs/, not evolved again
    assert {o for o in outs if o.startswith("runs/gradient")} == {f"runs/{g}" for g in paper_module.GRADIENTS}
    transfer_runs = [o for o in outs if o.startswith("transfer-")]
    assert len(transfer_runs) == 6 + 4 + 4  # LeNet's seed twins, LeNet and the MLP, lite1 and lite2
    evaluations = {
        r.evaluations for r in paper_module.independent_runs(ctx) if str(r.attack).startswith("imagenet-")
    }
    assert evaluations == {40_000}
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    assert f"the transfer and gradient runs: {len(outs)} at cpu scale)" in readme
