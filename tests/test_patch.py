"""The patch search (CPPN start + painted squares) on tiny ONNX models: it climbs, it resumes to the
same bytes after an interruption, its schedule is Square Attack's, and bad [patch] settings are
refused in one line before any run directory exists."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import export, tiny

from foolbench.errors import FoolbenchError
from foolbench.images import load_png
from foolbench.models import load_model
from foolbench.presets import load_preset, preset_from_dict
from foolbench.rundir import load_checkpoint, manifest_preset, read_manifest
from foolbench.runner import RunRequest, build_search, resume_run, start_run
from foolbench.search import Evaluator, Search
from foolbench.search.patch import PatchSearch, p_selection, square_side


@pytest.fixture(scope="module")
def grey(tmp_path_factory) -> Path:
    net = tiny()
    with torch.no_grad():  # as sure of itself as a trained model, so confidences can go high
        net.body[4].weight *= 10
        net.body[4].bias *= 10
    return export(net, tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 1, 28, 28))


@pytest.fixture(scope="module")
def grey_model(grey):
    return load_model(str(grey))


def search(model, evaluations: int, seed: int = 0, **options) -> PatchSearch:
    options = {"pool": 20, "p_init": 0.1, "schedule": 420} | options
    engine = PatchSearch(model, np.arange(model.num_classes), seed, **options)
    s = Search(engine, Evaluator(model, engine.encoding, engine.classes))
    while s.evaluations < evaluations:
        s.step()
    return engine


def request(model: Path, out: Path, evaluations: int, attack="mnist-patch", **kw) -> RunRequest:
    return RunRequest(
        models=[str(model)], attack=str(attack), out=out, evaluations=evaluations, progress=False, **kw
    )


# -- the search --------------------------------------------------------------------------------------------
def test_squares_raise_every_class_above_its_start(grey_model):
    start = search(grey_model, 20).fitness.copy()  # the pool alone
    end = search(grey_model, 420).fitness
    assert (end >= start).all() and (end > start).sum() >= 8
    assert np.median(end) > 1.5 * np.median(start)


def test_children_are_the_champion_with_one_square(grey_model):
    engine = search(grey_model, 20, pool=20)
    kids = engine.ask()["canvas"]
    parents = engine.archive.pool["canvas"][engine.archive.elite]
    side = square_side(0.1, 28)  # the first step's squares: p_init
    for kid, parent in zip(kids, parents, strict=True):
        rows, cols = np.nonzero((kid != parent)[0])
        assert kid.dtype == np.uint8 and set(np.unique(kid[kid != parent])) <= {0, 255}
        if len(rows):  # a square may repaint pixels with the colour they had
            assert rows.max() - rows.min() < side and cols.max() - cols.min() < side


def test_several_squares_of_any_colour(grey_model):
    engine = search(grey_model, 20, pool=20, squares=3, colours="any")
    kids = engine.ask()["canvas"]
    parents = engine.archive.pool["canvas"][engine.archive.elite]
    changed = (kids != parents).reshape(len(kids), -1).sum(axis=1)
    side = square_side(0.1, 28)
    assert changed.max() <= 3 * side * side and changed.max() > side * side  # more than one square
    assert len(np.unique(kids[kids != parents])) > 2  # not only black and white


def test_shifted_and_striped_squares(grey_model):
    for colours in ("shift", "stripes"):
        engine = search(grey_model, 20, pool=20, colours=colours)
        kids = engine.ask()["canvas"].astype(int)
        parents = engine.archive.pool["canvas"][engine.archive.elite].astype(int)
        moved = kids[kids != parents] - parents[kids != parents]
        if colours == "shift":  # up or down by 64, short of 0 and 255
            assert (np.abs(moved) <= 64).all() and (np.abs(moved) == 64).any()
        else:
            assert set(np.unique(kids[kids != parents])) <= {0, 255}
            rows = [
                row
                for kid, parent in zip(kids, parents, strict=True)
                for row in kid[0][(kid != parent)[0].any(1)]
            ]
            assert any(len(np.unique(row[(row == 0) | (row == 255)])) == 2 for row in rows)  # two colours


def test_random_sizes_span_every_scale(grey_model):
    engine = search(grey_model, 20, pool=20, sizes="random")
    sides = [engine.side(0) for _ in range(200)]
    assert min(sides) == 1 and max(sides) == square_side(0.1, 28)


def test_learned_colours_count_each_class_own_children(grey_model):
    engine = search(grey_model, 20 + 10 * 30, pool=20, colours="learned")
    assert engine.wins.sum() + engine.losses.sum() == 10 * 30  # one colour per child
    assert (engine.wins.sum(axis=1) > 0).all()  # every class has found a colour that works
    kids = engine.ask()["canvas"]
    assert set(np.unique(kids)) <= set(np.unique(engine.archive.pool["canvas"])) | {0, 255}


def test_cppn_steps_keep_each_class_champion_cppn_then_squares_follow(grey_model):
    engine = search(grey_model, 20 + 10 * 5, pool=20, cppn_evaluations=100)
    assert engine.spent == 50 and engine.genomes is not None and (engine.sigma != 0.3).any()
    np.testing.assert_array_equal(
        engine.draw(engine.genomes), engine.archive.pool["canvas"][engine.archive.elite]
    )
    s = Search(engine, Evaluator(grey_model, engine.encoding, engine.classes))
    while engine.spent < 100:
        s.step()
    assert engine.genomes is None and "cppn/w0" not in engine.state()  # the squares' turn
    assert engine.side(0) == square_side(0.1, 28)  # their schedule starts now


def test_a_class_past_done_gets_no_children_while_others_are_below(grey_model):
    engine = search(grey_model, 20, pool=20)
    done = float(np.median(engine.fitness))
    engine.options["done"] = done
    below = np.flatnonzero(engine.fitness < done)
    assert 0 < len(below) < len(engine.classes)
    np.testing.assert_array_equal(engine.active(), below)
    assert len(engine.ask()["canvas"]) == len(below)
    engine.options["done"] = float(engine.fitness.min())  # all there: all get children again
    assert len(engine.ask()["canvas"]) == len(engine.classes)


def test_a_stalled_class_starts_its_squares_over(grey_model):
    engine = search(grey_model, 20 + 10 * 30, pool=20, restart=5)
    assert engine.stall.max() < 5  # counted and reset
    assert (engine.start > 0).any()  # some class restarted
    late = engine.start.argmax()
    assert engine.side(late) > engine.side(engine.start.argmin())  # its squares are larger again


def test_success_sizes_follow_each_class_by_the_fifth_rule(grey_model):
    engine = search(grey_model, 20 + 10 * 30, pool=20, sizes="success")
    assert len(np.unique(engine.p)) > 1  # each class its own size
    assert (engine.p <= 0.1).all() and (engine.p >= 1 / 28**2).all()  # between p_init and one pixel
    before, wins = engine.p.copy(), engine.archive.fitness.copy()
    s = Search(engine, Evaluator(grey_model, engine.encoding, engine.classes))
    s.step()
    won = engine.archive.fitness > wins
    np.testing.assert_allclose(engine.p[won], np.minimum(before[won] * 1.5, 0.1))
    np.testing.assert_allclose(engine.p[~won], np.maximum(before[~won] * 1.5**-0.25, 1 / 28**2))


def test_run_directory_holds_the_scored_images(grey, tmp_path):
    run = start_run(request(grey, tmp_path / "run", 300, seed=3))
    results = pd.read_csv(run / "results.csv")
    state = load_checkpoint(run)
    np.testing.assert_allclose(results["confidence"], state["archive/fitness"], rtol=1e-6)
    png = load_png(run / results["file"][0], 1)
    canvas = state["pool/canvas"][state["archive/elite"][0]]
    np.testing.assert_array_equal(np.rint(png * 255).astype(np.uint8), canvas)


STATEFUL = {  # every option whose state lives between steps
    "colours": '"learned"',
    "restart": 3,
    "done": 0.9,
    "cppn_evaluations": 150,
    "sizes": '"success"',
    "squares": 2,
}


@pytest.mark.parametrize("options", [{}, STATEFUL])
def test_interrupted_run_resumes_to_the_same_bytes(grey, tmp_path, monkeypatch, options):
    attack = "mnist-patch"
    if options:
        attack = tmp_path / "preset.toml"
        lines = "\n".join(f"{k} = {v}" for k, v in options.items())
        attack.write_text(f'[attack]\nmethod = "patch"\n[patch]\npool = 100\np_init = 0.1\n{lines}\n')
    whole = start_run(request(grey, tmp_path / "whole", 400, checkpoint_every=7, attack=attack))
    ask = PatchSearch.ask

    def dies_at_17(self):
        if self.generation == 17:
            raise KeyboardInterrupt  # killed between checkpoints: the last one is at generation 14
        return ask(self)

    monkeypatch.setattr(PatchSearch, "ask", dies_at_17)
    with pytest.raises(KeyboardInterrupt):
        start_run(request(grey, tmp_path / "cut", 400, checkpoint_every=7, attack=attack))
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut/checkpoint/latest.json").read_text())["generation"] == 14
    cut = resume_run(tmp_path / "cut")
    a, b = load_checkpoint(whole), load_checkpoint(cut)
    assert a.keys() == b.keys() and "pool/canvas" in a and "rng" in a
    for key in a:
        if key != "metrics":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    cols = ["generation", "evaluations", "median_confidence"]
    pd.testing.assert_frame_equal(
        pd.read_csv(whole / "metrics.csv")[cols], pd.read_csv(cut / "metrics.csv")[cols]
    )
    pd.testing.assert_frame_equal(pd.read_csv(whole / "results.csv"), pd.read_csv(cut / "results.csv"))


def test_a_run_given_evaluations_plans_its_squares_over_them(grey, tmp_path):
    run = start_run(request(grey, tmp_path / "run", 300))  # mnist-patch plans over 20,000
    manifest = read_manifest(run)
    assert manifest["preset"]["patch"]["schedule"] == 300
    search = build_search(load_model(str(grey)), manifest_preset(manifest), manifest["classes"], 0)
    engine = search.engine
    engine.spent = 300 - 100 - 10  # its last step, after the pool of 100: the finest squares
    assert engine.side(0) == square_side(0.1 / 512, 28) == 1
    engine.options["schedule"] = 20_000  # as planned over the preset's budget: still large
    assert engine.side(0) == square_side(0.1 / 4, 28) == 4
    resume_run(run, request(grey, run, 400))  # extended: it keeps the squares it was planned with
    assert read_manifest(run)["preset"]["patch"]["schedule"] == 300
    assert read_manifest(run)["budget"]["evaluations"] == 400


# -- the schedule ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "step, steps, share",
    [
        (0, 10_000, 1),  # Square Attack's stages, at its own 10,000 iterations
        (10, 10_000, 1),
        (11, 10_000, 1 / 2),
        (50, 10_000, 1 / 2),
        (51, 10_000, 1 / 4),
        (500, 10_000, 1 / 8),
        (2001, 10_000, 1 / 64),
        (8000, 10_000, 1 / 256),
        (8001, 10_000, 1 / 512),
        (20_000, 10_000, 1 / 512),  # past the planned end: the finest squares
        (1, 100, 1 / 4),  # rescaled: step 1 of 100 is iteration 100 of 10,000
        (3, 3980, 1),  # the imagenet cpu scale: (40,000 - 200) / 10 steps; 3 -> iteration 7
        (5, 3980, 1 / 2),  # 5 -> iteration 12
    ],
)
def test_p_selection_is_square_attacks_schedule_rescaled(step, steps, share):
    assert p_selection(0.02, step, steps) == pytest.approx(0.02 * share)


def test_square_side_covers_the_share_of_the_window():
    assert square_side(0.02, 224) == 32  # sqrt(0.02) * 224 = 31.7
    assert square_side(0.02 / 512, 224) == 1  # 1.4 px
    assert square_side(1e-9, 224) == 1 and square_side(1.0, 224) == 223  # at least 1, never all of it


# -- presets and bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["imagenet-patch", "mnist-patch"])
@pytest.mark.parametrize("scale", ["full", "cpu"])
def test_patch_presets_load(name, scale):
    preset = load_preset(name, scale)
    assert preset.method == "patch" and not preset.encoding
    assert preset.tables["patch"]["schedule"] == preset.search["evaluations"]  # squares shrink over the run


def test_imagenet_cpu_scale_sees_the_centre_crop_of_the_cppn_classes():
    patch, cppn = load_preset("imagenet-patch", "cpu"), load_preset("imagenet-cppn", "cpu")
    assert patch.search["classes"] == cppn.search["classes"] and patch.search["evaluations"] == 40_000
    assert patch.tables["patch"]["window"] == [16, 240] and patch.evaluation["crop"] == "center"


def patch_preset(patch: dict) -> dict:
    return {"attack": {"method": "patch"}, "patch": patch, "search": {"evaluations": 1000}}


@pytest.mark.parametrize(
    "patch, named",
    [
        ({"pool_size": 10}, "unknown key 'patch.pool_size'"),
        ({"p_init": 0}, "'patch.p_init' must be > 0"),
        ({"p_init": -0.1}, "'patch.p_init' must be > 0"),
        ({"p_init": 1.5}, "'patch.p_init' must be > 0.0 and <= 1.0"),
        ({"pool": 0}, "'patch.pool' must be"),
        ({"children": 0}, "'patch.children' must be"),
        ({"pool": 2000, "schedule": 1000}, "'patch.schedule' .* must exceed 'patch.pool'"),
        ({"resolution": 256, "window": [16, 300]}, "'patch.window' .* not inside the 256-pixel canvas"),
        ({"resolution": 256, "window": [-1, 200]}, "'patch.window' .* not inside"),
        ({"resolution": 256, "window": [100, 101]}, "'patch.window' .* not inside"),
        ({"window": [0.5, 20]}, "'patch.window' must be \\[start, end\\]"),
        ({"window": [16]}, "'patch.window' must be \\[start, end\\]"),
        ({"cppn_hidden": 18}, "'patch.cppn_hidden' must be a multiple of 4"),
    ],
)
def test_bad_patch_settings_are_named(patch, named):
    with pytest.raises(FoolbenchError, match=named):
        preset_from_dict(patch_preset(patch), "p.toml")


def test_patch_section_is_only_for_the_patch_method():
    data = {"attack": {"method": "map-elites"}, "encoding": {"type": "direct"}, "patch": {"pool": 5}}
    with pytest.raises(FoolbenchError, match=r"\[patch\] is only for attack.method = 'patch'"):
        preset_from_dict(data, "p.toml")


@pytest.mark.parametrize(
    "patch, said",
    [
        ("window = [0, 40]", "'patch.window' [0, 40] is not inside the 28-pixel canvas"),  # the model's size
        ("p_init = 2.0", "'patch.p_init' must be > 0.0 and <= 1.0"),
        ("pool = 0", "'patch.pool' must be"),
    ],
)
def test_cli_refuses_bad_settings_before_any_run_directory(grey, tmp_path, foolbench, patch, said):
    preset = tmp_path / "bad.toml"
    preset.write_text(f'[attack]\nmethod = "patch"\n[patch]\n{patch}\n[search]\nevaluations = 500\n')
    out = tmp_path / "run"
    proc = foolbench("run", "--model", grey, "--attack", preset, "--out", out, "--no-progress")
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 2 and err[1].startswith("foolbench: error: ")  # 1: "running"
    assert said in err[1]
    assert not out.exists()


def test_evaluations_within_the_pool_are_refused_in_one_line(grey, tmp_path, foolbench):
    out = tmp_path / "run"
    proc = foolbench("run", "--model", grey, "--attack", "mnist-patch", "--evaluations", 50, "--out", out)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines()[-1] == (
        "foolbench: error: --evaluations 50 leaves no evaluations after the patch search's pool of 100 "
        "random CPPNs; give more than 100"
    )


@pytest.mark.parametrize("crop, window", [("center", [16, 240]), ("ten", [0, 256])])
def test_a_protocol_runs_the_patch_preset_over_its_budget_in_the_window_the_model_sees(crop, window):
    from foolbench.models.preprocess import InputSpec
    from foolbench.protocol import ProtocolAttack, Suite, load_protocol

    attack = ProtocolAttack(name="patch", preset="imagenet-patch", method="patch", evaluations=4000)
    suite = Suite(name="colour", channels=3, crop=crop, attacks=(attack,))
    tables = load_protocol("v1").preset_tables(attack, suite, 256, [0, 5])
    preset = preset_from_dict(tables, "score.toml")
    assert preset.tables["patch"]["schedule"] == preset.search["evaluations"] == 4000
    imagenet = SimpleNamespace(spec=InputSpec(channels=3, size=(224, 224), resize=256, crop=crop))
    engine = PatchSearch(imagenet, [0, 5], 0, **preset.tables["patch"])
    assert engine.options["window"] == window and engine.options["resolution"] == 256
