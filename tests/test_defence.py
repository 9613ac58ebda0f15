"""`foolbench defend`: the retraining defence on LeNet with tiny budgets, and the ImageNet head fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import export, tiny

from foolbench.experiments.defence import FOOLING, _prepare, defend, fooling_images
from foolbench.experiments.defence_imagenet import ImagenetDefence, finetune_head
from foolbench.fileio import read_json, sha256_file
from foolbench.models import load_model
from foolbench.zoo.defended import balanced_indices

# One small defence shared by the tests: 2 runs of 5 generations per iteration, one retraining of
# 2 epochs (the zoo recipe's 40 take ~50 s and test nothing more).
ARGS = dict(scale="cpu", runs_per_iteration=2, generations=5, epochs=2, seed=0, progress=False)
CLI_ARGS = [
    "--attack",
    "mnist-cppn",
    "--iterations",
    "1",
    "--runs",
    "2",
    "--generations",
    "5",
    "--epochs",
    "2",
]
CLI_ARGS += ["--scale", "cpu", "--seed", "0", "--no-progress"]


@pytest.fixture(scope="module")
def defence(lenet, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("defence") / "out"
    defend("lenet-mnist", "mnist-cppn", 1, out, log=lambda m: None, **ARGS)
    return out


def test_defended_model_is_a_normal_model_file_with_its_card(defence, lenet):
    path = defence / "models" / "lenet-mnist-defended-1.onnx"
    model = load_model(str(path))
    table = pd.read_csv(defence / "defence.csv")
    assert model.labels == [str(d) for d in range(10)] + [FOOLING]
    extra = model.card.extra
    assert extra["iteration"] == 1
    assert extra["fooling_images"] == table["fooling_images"][1] > 0
    assert extra["parent_sha256"] == sha256_file(lenet)
    assert extra["fooling_training_examples"] == 400  # an average digit class of the 4,000 training digits
    assert model.card.dataset == "mnist"
    assert model.card.accuracy == pytest.approx(table["clean_accuracy"][1], abs=0.002)
    assert table["model_path"][1] == str(path) and table["model_sha256"][1] == sha256_file(path)


def test_csv_numbers_are_those_of_the_runs(defence):
    table = pd.read_csv(defence / "defence.csv")
    assert list(table["iteration"]) == [0, 1]
    for k, row in table.iterrows():
        runs = sorted((defence / f"iter-{k}" / "runs").iterdir())
        assert len(runs) == row["runs"] == 2
        results = pd.concat([pd.read_csv(d / "results.csv") for d in runs])
        summaries = [read_json(d / "summary.json") for d in runs]
        assert sorted(results["class"].unique()) == list(range(10))  # digits only, never the fooling class
        assert row["median_confidence"] == pytest.approx(np.median(results["confidence"]), abs=1e-12)
        assert row["mean_confidence"] == pytest.approx(np.mean(results["confidence"]), abs=1e-12)
        assert row["classes_at_99"] == np.mean([s["classes_at_99"] for s in summaries])
        assert row["classes_at_9999"] == np.mean([s["classes_at_9999"] for s in summaries])
        assert row["evaluations"] == sum(s["evaluations"] for s in summaries)
        fooled = np.mean(results["top1"] == 10) if k > 0 else 0.0
        assert row["fooled_share"] == pytest.approx(fooled)
        manifest = read_json(runs[0] / "manifest.json")
        assert manifest["models"][0]["sha256"] == row["model_sha256"]
    assert table["fooling_images"][0] == 0
    assert read_json(defence / "defence.json")["settings"]["runs_per_iteration"] == 2


def test_the_fooling_class_is_learnt(defence):
    images = fooling_images(sorted((defence / "iter-0" / "runs").iterdir()), channels=1)
    assert len(images) == pd.read_csv(defence / "defence.csv")["fooling_images"][1]
    model = load_model(str(defence / "models" / "lenet-mnist-defended-1.onnx"))
    assert np.mean(model.probs(images).argmax(1) == 10) >= 0.9
    assert pd.read_csv(defence / "defence.csv")["clean_accuracy"][1] >= 0.95  # digits stay digits


def test_running_again_reuses_the_work_and_a_killed_run_resumes(defence, foolbench):
    before = (defence / "defence.csv").read_bytes()
    model = defence / "models" / "lenet-mnist-defended-1.onnx"
    stamp = model.stat().st_mtime_ns
    killed = sorted((defence / "iter-1" / "runs").iterdir())[1]
    (killed / "summary.json").unlink()  # as if killed before it finished
    (killed / "results.csv").unlink()
    proc = foolbench("defend", "--model", "lenet-mnist", "--out", defence, *CLI_ARGS)
    assert proc.returncode == 0, proc.stderr
    assert "(finished)" in proc.stderr and "(resuming)" in proc.stderr and "reusing" in proc.stderr
    assert (defence / "defence.csv").read_bytes() == before
    assert model.stat().st_mtime_ns == stamp


def test_other_settings_in_the_same_folder_are_refused(defence, foolbench):
    before = (defence / "defence.csv").read_bytes()
    args = [a if a != "2" else "3" for a in CLI_ARGS]  # --runs 3
    proc = foolbench("defend", "--model", "lenet-mnist", "--out", defence, *args)
    assert proc.returncode == 2 and "runs_per_iteration 2 (asked 3)" in proc.stderr
    assert (defence / "defence.csv").read_bytes() == before


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> Path:
    return export(tiny(channels=3, size=32), tmp_path_factory.mktemp("m") / "colour.onnx", (1, 3, 32, 32))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--iterations", "0"], "--iterations must be 1 or more"),
        (["--attack", "no-such-preset"], "attack preset 'no-such-preset' not found"),
        (["--attack", "gradient"], "the defence searches for its images with the model's outputs alone"),
        (["--runs", "0"], "--runs must be 1 or more"),
        (["--epochs", "0"], "--epochs 0: give 1 or more"),
        (["--classes", "12"], "class 12 is out of range"),
        (["--attack", "imagenet-cppn"], "imagenet-cppn attacks imagenet models"),
        (["--data", "no/such/folder"], "no MNIST found"),
        (["--model", "COLOUR", "--attack", "mnist-cppn"], "the defence supports MNIST models"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(lenet, colour_model, tmp_path, foolbench, args, message):
    out = tmp_path / "out"
    args = [str(colour_model) if a == "COLOUR" else a for a in args]
    proc = foolbench("defend", "--out", out, "--scale", "cpu", "--no-progress", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists()


def test_a_folder_that_holds_something_else_is_refused(lenet, tmp_path, foolbench):
    (tmp_path / "notes.txt").write_text("mine")
    proc = foolbench("defend", "--out", tmp_path, "--scale", "cpu", "--iterations", "1")
    assert proc.returncode == 2 and "holds no defence.json" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_defended_model_can_be_defended_again(defence):
    setup = _prepare(
        str(defence / "models" / "lenet-mnist-defended-1.onnx"), "mnist-cppn", 1, "cpu", 1, 0, None, None
    )
    assert setup.fooling_index == 10 and setup.labels == [str(d) for d in range(10)]
    assert setup.classes == list(range(10))  # "all" of the preset means the digits, not the fooling class
    assert setup.inherited_fooling > 0 and "already has a fooling class" in setup.note


def test_balanced_indices_keep_the_class_size():
    picked = balanced_indices(3, 8, seed=0)
    assert len(picked) == 8 and set(np.bincount(picked)) <= {2, 3}
    fewer = balanced_indices(10, 4, seed=0)
    assert len(fewer) == 4 and len(set(fewer)) == 4
    assert np.array_equal(balanced_indices(10, 4, seed=0), fewer)


def test_finetuned_head_learns_the_fooling_class_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    d, k = 32, 6
    weight, bias = rng.normal(size=(k, d)), rng.normal(size=k)
    natural = rng.normal(size=(60, d))
    logits = natural @ weight.T + bias
    labels = logits.argmax(1)
    targets = np.exp(logits - logits.max(1, keepdims=True))
    targets /= targets.sum(1, keepdims=True)  # the original head's probabilities
    fooling = rng.normal(size=(20, d)) + 3.0 * rng.normal(size=d)  # a cluster of its own
    w, b, loss = finetune_head(weight, bias, fooling, natural, targets)
    assert w.shape == (k + 1, d) and b.shape == (k + 1,)
    assert np.all((fooling @ w.T + b).argmax(1) == k)
    assert np.mean((natural @ w.T + b).argmax(1) == labels) >= 0.9
    unseen = rng.normal(
        size=(200, d)
    )  # the old rows stay close: inputs far from the fooling cluster keep their class
    kept = (unseen @ w[:k].T + b[:k]).argmax(1) == (unseen @ weight.T + bias).argmax(1)
    assert kept.mean() >= 0.9
    assert np.mean((unseen @ w.T + b).argmax(1) == k) <= 0.1
    w2, b2, _ = finetune_head(weight, bias, fooling, natural, targets)
    assert np.array_equal(w, w2) and np.array_equal(b, b2)


def test_the_imagenet_clean_accuracy_is_measured_on_photos_held_out_of_fine_tuning():
    task = ImagenetDefence(model=None, data=None, seed=0)
    training, held_out = task.photos()
    assert len(training) == len(held_out) == 4  # scikit-image's 8 photos, half held out
    seen = {p.tobytes() for p in training}
    assert not any(p.tobytes() in seen for p in held_out)
    assert task.facts()["clean_photos"] == {
        "held_out": 4,
        "fine_tuned_on": 4,
        "data": "scikit-image's photos",
        "labelled": False,
    }
    again = ImagenetDefence(model=None, data=None, seed=0).photos()[1]
    assert all(np.array_equal(a, b) for a, b in zip(again, held_out, strict=True))  # seeded

    class Scorer:  # sees which photos the clean accuracy looks at; its top-1 is the photo's height
        labels = [str(i) for i in range(1000)]

        def __init__(self):
            self.shown = []

        def probs(self, x):
            self.shown += [image.tobytes() for image in x]
            return np.eye(1000)[[image.shape[1] % 1000 for image in x]]

    task.original = Scorer()
    assert task.clean_accuracy(Scorer()) == 1.0  # agreement with the original model's top-1
    assert set(task.original.shown) == {p.tobytes() for p in held_out}


def test_labelled_photos_split_in_halves_and_clean_accuracy_is_against_their_labels(tmp_path):
    """A folder of labelled photos (class folders by index, as $FOOLBENCH_DATA/imagenet-sample): a
    seeded half is fine-tuned on, the other half measures accuracy against the folders' labels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(5):
        (tmp_path / f"{c:03d}").mkdir()
        for k in range(4):  # each photo's height says its class, so a "model" can read it back
            Image.fromarray(rng.integers(0, 256, (10 + c, 12, 3), dtype=np.uint8)).save(
                tmp_path / f"{c:03d}" / f"{k}.png"
            )

    class Reader:
        labels = [f"c{i}" for i in range(8)]

        def __init__(self, wrong=()):
            self.wrong = set(wrong)

        def probs(self, x):
            top = [(image.shape[1] - 10) if image.shape[1] - 10 not in self.wrong else 7 for image in x]
            return np.eye(8)[top]

    task = ImagenetDefence(Reader(), tmp_path, seed=3)
    training, held_out = task.photos()
    assert len(training) == len(held_out) == 10
    both = [*training.indices, *held_out.indices]
    assert sorted(both) == list(range(20))  # every photo, in exactly one half
    assert ImagenetDefence(Reader(), tmp_path, seed=3).photos()[1].indices == held_out.indices
    assert ImagenetDefence(Reader(), tmp_path, seed=4).photos()[1].indices != held_out.indices
    assert task.facts()["clean_photos"] == {
        "held_out": 10,
        "fine_tuned_on": 10,
        "data": tmp_path.name,
        "labelled": True,
    }
    assert task.clean_accuracy(Reader()) == 1.0
    wrong = np.mean(np.isin(held_out.labels, [0, 1]))
    assert task.clean_accuracy(Reader(wrong=(0, 1))) == pytest.approx(1 - wrong)
    assert "against the photos' labels" in task.clean_text


def test_a_defence_from_patch_search_champions_with_an_evaluation_budget(lenet, tmp_path):
    """The defence retrains on any black-box search's champions (here the patch search's),
    --evaluations caps each run, and an iteration-0 run made elsewhere with the same settings is used
    rather than made again (as `foolbench paper` reuses its seed runs)."""
    from foolbench.runner import RunRequest, ensure_run

    made = tmp_path / "made"
    ensure_run(
        RunRequest(["lenet-mnist"], "mnist-patch", "cpu", evaluations=150, seed=0, out=made, progress=False)
    )
    stamp = (made / "summary.json").stat().st_mtime_ns
    out = tmp_path / "out"
    table = defend(
        "lenet-mnist",
        "mnist-patch",
        1,
        out,
        scale="cpu",
        runs_per_iteration=1,
        evaluations=150,
        epochs=1,
        progress=False,
        log=lambda m: None,
        reuse={0: made},
    )
    record = read_json(out / "defence.json")
    assert record["iterations"][0]["run_dirs"] == [str(made)] and not (out / "iter-0").exists()
    assert (made / "summary.json").stat().st_mtime_ns == stamp
    assert record["settings"]["attack"] == "mnist-patch" and record["settings"]["evaluations"] == 150
    for k, run in ((0, made), (1, *(out / "iter-1" / "runs").iterdir())):
        summary = read_json(run / "summary.json")
        manifest = read_json(run / "manifest.json")
        assert manifest["preset"]["attack"]["method"] == "patch" and manifest["budget"]["evaluations"] == 150
        assert table["evaluations"][k] == summary["evaluations"] >= 150
    assert table["fooling_images"][1] > 0


def test_zoo_build_of_the_defended_model_is_the_defence_model_and_resumes(
    defence, lenet, tmp_path, monkeypatch
):
    """`foolbench zoo build lenet-mnist-defended` runs the defence in memory: the same recipe as the
    shared `defend` fixture (1 iteration, 2 runs of 5 generations, 2 epochs) gives the same weights,
    also when the build is interrupted after the retraining and run again from another checkout."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from foolbench.text import percent
    from foolbench.zoo import build, defended

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(lenet, zoo / lenet.name)  # the base model, as built in the zoo
    monkeypatch.setattr(defended, "RECIPE", defended.Recipe(iterations=1, runs=2))
    evolve, calls = defended._evolved, []

    def killed_once(b, model, k, r):
        calls.append((k, r))
        if (k, r) == (1, 1) and calls.count((1, 1)) == 1:
            raise KeyboardInterrupt
        return evolve(b, model, k, r)

    monkeypatch.setattr(defended, "_evolved", killed_once)
    with pytest.raises(KeyboardInterrupt):
        build("lenet-mnist-defended", out_dir=zoo, generations=5, epochs=2, progress=False)
    assert not (zoo / "lenet-mnist-defended.onnx").exists()
    load_preset = defended.load_preset  # resumed from another checkout: the preset file has moved

    def moved(*args):
        preset = load_preset(*args)
        return type(preset)(
            preset.name, "/elsewhere/" + Path(preset.source).name, preset.scale, preset.tables
        )

    monkeypatch.setattr(defended, "load_preset", moved)
    make_search, searched = defended.make_search, []
    monkeypatch.setattr(defended, "make_search", lambda *a: searched.append(a) or make_search(*a))
    path = build("lenet-mnist-defended", out_dir=zoo, generations=5, epochs=2, progress=False)
    assert len(searched) == 1  # only the interrupted run evolved again; the others were kept
    assert not (
        zoo / ".lenet-mnist-defended.build"
    ).exists()  # the work folder goes once the model is written

    def weights(p):
        return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(p)).graph.initializer}

    mine, theirs = weights(path), weights(defence / "models" / "lenet-mnist-defended-1.onnx")
    assert sorted(mine) == sorted(theirs) and all(np.array_equal(mine[n], theirs[n]) for n in mine)
    card = load_model(str(path)).card
    table = pd.read_csv(defence / "defence.csv")
    assert card.labels[-1] == FOOLING and card.extra["recipe"]["generations"] == 5
    rows = card.extra["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1] and rows[1]["fooling_images"] == table["fooling_images"][
        1
    ]
    for row, (_, theirs_row) in zip(rows, table.iterrows(), strict=True):
        assert row["median_confidence"] == pytest.approx(theirs_row["median_confidence"], abs=1e-6)
        assert row["fooled_share"] == pytest.approx(theirs_row["fooled_share"], abs=1e-4)
    assert card.accuracy == pytest.approx(table["clean_accuracy"][1], abs=1e-4)
    page = path.with_suffix(".md").read_text()
    assert f"median {percent(rows[1]['median_confidence'])}" in page and "Held-out top-1 accuracy" in page


def test_a_run_on_a_defended_model_never_targets_its_fooling_class_by_default(defence, tmp_path):
    """An image the defended model puts in `fooling` is rejected, not believed: a run targets the
    digits (and measures their look-alikes), unless --classes names the fooling class itself."""
    from foolbench.runner import RunRequest, start_run

    model = str(defence / "models" / "lenet-mnist-defended-1.onnx")
    run = start_run(
        RunRequest(models=[model], attack="mnist-cppn", generations=2, out=tmp_path / "a", progress=False)
    )
    summary = read_json(run / "summary.json")
    assert summary["classes"] == 10 and "lookalike_share" in summary
    assert sorted(pd.read_csv(run / "results.csv")["class"]) == list(range(10))
    asked = start_run(
        RunRequest(
            models=[model],
            attack="mnist-cppn",
            generations=2,
            classes="10",
            out=tmp_path / "b",
            progress=False,
        )
    )
    assert list(pd.read_csv(asked / "results.csv")["label"]) == [FOOLING]
