"""Protocol v2: the curve score by hand, look-alikes, never-target classes, the worst case over attacks
with its seed spread, ties, and a v2 row reproduced from its saved run directories."""

from __future__ import annotations

import sys
import tomllib

import numpy as np
import pandas as pd
import pytest
from conftest import export, tiny
from test_leaderboard import _row

from foolbench import rundir
from foolbench.cli import main
from foolbench.errors import FoolbenchError
from foolbench.experiments.score import v2_cells
from foolbench.protocol import NINES_CAP, curve_score, load_protocol, nines, protocol_from_dict, run_score
from foolbench.report.leaderboard import ranked, read_leaderboard, render

TINY_V2 = """
[protocol]
version = "t2"
seeds = [0, 1, 2]
score = "nines-auc"
headline = "worst"
lookalikes = true
never_target = ["fooling"]

[suite.grey]
channels = 1

[suite.grey.attacks.cppn]
preset = "mnist-cppn"
evaluations = 200
batch = 50

[suite.grey.attacks.gradient]
preset = "gradient"
steps = 3

[suite.colour]
channels = 3

[suite.colour.attacks.patch]
preset = "imagenet-patch"
evaluations = 100
"""


def test_nines_are_the_papers_thresholds():
    np.testing.assert_allclose(nines([0.0, 0.9, 0.99, 0.9999, 1.0]), [0, 1, 2, 4, NINES_CAP])
    assert NINES_CAP == 4  # 99.99 %: the paper's threshold, beyond which a model is as fooled as it gets


def test_curve_score_by_hand():
    # 90 % until the last generation, 99.99 % at it: 255 of the 256 log-spaced points read 1 nine
    assert curve_score([100, 1000], [0.9, 0.9999]) == pytest.approx((255 * 1 + 4) / 256 / 4)
    # at 99.99 % from the first generation: 1; never above 0: 0
    assert curve_score([200, 400, 800], [0.99999] * 3) == pytest.approx(1.0)
    assert curve_score([200, 400, 800], [0.0] * 3) == 0.0
    # the same end, reached ten times later, scores lower: the score keeps separating at the ceiling
    fast = curve_score([100, 200, 10_000], [0.5, 0.9999, 0.9999])
    slow = curve_score([100, 2000, 10_000], [0.5, 0.9999, 0.9999])
    assert fast > slow
    with pytest.raises(FoolbenchError, match="one per generation"):
        curve_score([1, 2], [0.5])


def test_lookalike_classes_count_as_not_fooled():
    assert run_score(1.0, 10, 0) == 1.0 and run_score(1.0, 10, 3) == pytest.approx(0.7)


def test_v2_loads_and_never_targets_the_fooling_class():
    proto = load_protocol("v2")
    assert (proto.score, proto.headline, proto.lookalikes, len(proto.seeds)) == (
        "nines-auc",
        "worst",
        True,
        3,
    )
    labels = [str(d) for d in range(10)] + ["fooling"]
    assert proto.classes_for(11, labels) == list(range(10))
    assert load_protocol("v1").classes_for(11, labels) == list(range(11))  # v1 rows stay as they were


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("score", "mean", "protocol.score"),
        ("headline", "best", "protocol.headline"),
        ("lookalikes", 1, "lookalikes"),
    ],
)
def test_bad_v2_keys_name_the_problem(key, value, message):
    import tomllib

    data = tomllib.loads(TINY_V2)
    data["protocol"][key] = value
    with pytest.raises(FoolbenchError, match=message):
        protocol_from_dict(data, "p.toml")


def test_overlapping_seed_ranges_are_marked_as_ties():
    def v2(i, score, low, high):
        return _row(0, i, score) | {"protocol": "v2", "fooling_score_low": low, "fooling_score_high": high}

    rows = [v2(1, 0.9, 0.85, 0.95), v2(2, 0.8, 0.7, 0.86), v2(3, 0.2, 0.1, 0.3), _row(0, 4, 0.5)]
    table = ranked(pd.DataFrame(rows)).set_index("name")
    assert table.loc["w0-3", "ties"] == "" and table.loc["w0-2", "ties"] == "3"
    assert table.loc["w0-1", "ties"] == "2" and pd.isna(table.loc["w0-4", "ties"])  # v1: no spread, no ties
    text = render(pd.DataFrame(rows), "md")
    assert "## Protocol v2, grey models" in text and "0.900" in text
    v1_part = text.split("## Protocol v1, grey models")[1].split("## Protocol v2")[0]
    assert "50.00%" in v1_part and "ties" not in v1_part  # v1's score stays a confidence, with no ties


@pytest.fixture(scope="module")
def scored_v2(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    (root / "t2.toml").write_text(TINY_V2)
    model = export(tiny(), root / "m.onnx", (1, 1, 28, 28))
    argv = ["foolbench", "score", "--model", model, "--protocol", root / "t2.toml"]
    argv += ["--leaderboard", root / "board.csv", "--work", root / "work", "--no-progress"]
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as exit_:
        mp.setattr(sys, "argv", list(map(str, argv)))
        main()
    assert exit_.value.code == 0
    return root


def test_v2_row_is_the_worst_case_of_the_saved_curves(scored_v2):
    row = read_leaderboard(scored_v2 / "board.csv").iloc[0]
    per_attack = {}
    for attack in ("cppn", "gradient"):
        scores = []
        for seed in (0, 1, 2):
            metrics = rundir.read_metrics(scored_v2 / "work" / f"{attack}-s{seed}")
            scores.append(curve_score(metrics["evaluations"], metrics["median_confidence"]))
        per_attack[attack] = scores  # the tiny model has no card: no look-alike measure, no scaling
        assert row[f"{attack}_score"] == pytest.approx(np.mean(scores))
        assert (row[f"{attack}_score_min"], row[f"{attack}_score_max"]) == pytest.approx(
            (min(scores), max(scores))
        )
    worst = np.maximum(per_attack["cppn"], per_attack["gradient"])
    assert row["fooling_score"] == pytest.approx(worst.mean())
    assert (row["fooling_score_low"], row["fooling_score_high"]) == pytest.approx((worst.min(), worst.max()))
    assert (
        row["attacks_scored"] == "all" and row["protocol"] == "t2"
    )  # the colour suite's patch is not missed
    assert pd.isna(row["patch_score"])
    # the protocol's headline decides how the attacks combine: "mean" averages them per seed instead
    proto = protocol_from_dict(tomllib.loads(TINY_V2.replace('"worst"', '"mean"')), "t.toml")
    runs = {a: [scored_v2 / "work" / f"{a}-s{s}" for s in (0, 1, 2)] for a in ("cppn", "gradient")}
    mean = (np.array(per_attack["cppn"]) + np.array(per_attack["gradient"])) / 2
    cells = v2_cells(proto, proto.suite_for(1), runs)
    assert cells["fooling_score"] == pytest.approx(mean.mean())
    assert (cells["fooling_score_low"], cells["fooling_score_high"]) == pytest.approx(
        (mean.min(), mean.max())
    )
