"""Protocol v3: fooling images ranked among the model's own confidences on real images.

The measure by hand (ties count as fooled, squashing changes nothing, the curve over queries), the
look-alike judge in a worked example, suites chosen by input, and the gaming tests: copies of the
zoo's LeNet that try to look harder to fool (a temperature, clipped logits, constant and uniform
output, an op onnx2torch cannot convert, NaN), each scored under a test-sized v3 and shown to get
past v2's rules on the same runs.
"""

from __future__ import annotations

import sys
import tomllib

import numpy as np
import pandas as pd
import pytest
from gaming import gamed_copy

from foolbench import rundir
from foolbench.cli import main
from foolbench.errors import FoolbenchError
from foolbench.experiments.score import v2_cells
from foolbench.judges import make_judge
from foolbench.protocol import (
    curve_area,
    curve_at,
    fooled_share,
    load_protocol,
    protocol_from_dict,
    rank_curve,
    run_score,
)
from foolbench.report.leaderboard import ranked, read_leaderboard, render

# v3 at test size: the grey suite with one black-box and one white-box attack, two seeds.
TINY_V3 = """
[protocol]
version = "t3"
seeds = [0, 1]
score = "real-rank"
headline = "worst"
never_target = ["fooling"]

[suite.grey]
channels = 1
datasets = ["mnist"]
data = "mnist-heldout"
judge = "lookalike"
min_accuracy = 0.9
queries = [10, 40, 100, 200, 400, 600]

[suite.grey.attacks.cppn]
preset = "mnist-cppn"
evaluations = 600
batch = 100

[suite.grey.attacks.gradient]
preset = "gradient"
steps = 12
"""


# -- the measure by hand ------------------------------------------------------------------------------
def test_fooled_share_ranks_among_real_confidences_and_ties_count_as_fooled():
    real = [0.5, 0.8, 0.9, 0.99]
    np.testing.assert_allclose(
        fooled_share([0.1, 0.5, 0.85, 0.99, 1.0, np.nan], real), [0, 0.25, 0.5, 1, 1, 0]
    )
    # an increasing squashing of every confidence (here a temperature on the log-odds) changes nothing
    fooling = np.array([0.3, 0.7, 0.95, 0.999])

    def squash(p):
        logit = np.log(np.asarray(p) / (1 - np.asarray(p)))
        return 1 / (1 + np.exp(-logit / 4))

    np.testing.assert_allclose(fooled_share(squash(fooling), squash(real)), fooled_share(fooling, real))
    # merging values (clipping at 0.85) can only raise the share: a fooling image ties the real ones
    clip = lambda p: np.minimum(p, 0.85)  # noqa: E731
    assert np.all(fooled_share(clip(fooling), clip(real)) >= fooled_share(fooling, real))
    with pytest.raises(FoolbenchError, match="correctly classified"):
        fooled_share([0.5], [])


def test_curve_by_hand():
    # a class reaches a share of 1 at 1,000 queries and keeps it (an image once found stays found)
    q, v = rank_curve([100, 1000, 5000], [[0.0, 0.5], [1.0, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(v, [0.25, 0.75, 1.0])
    # mean over log-queries from 100 to 10,000: a decade at 0.25 then 0.75 to 5,000 and 1.0 after
    expected = (0.25 * np.log(10) + 0.75 * np.log(5) + 1.0 * np.log(2)) / np.log(100)
    assert curve_area([(q, v)], 100, 10_000) == pytest.approx(expected)
    # before a curve's first snapshot it is 0; the strongest curve counts at each count
    assert curve_area([(q, v)], 10, 100) == 0.0
    late = (np.array([3000.0]), np.array([0.9]))
    assert curve_at([(q, v), late], 4000) == pytest.approx(0.9) and curve_at([(q, v), late], 6000) == 1.0
    faster = (np.array([100.0]), np.array([1.0]))
    assert curve_area([faster], 100, 10_000) == 1.0 > curve_area([(q, v)], 100, 10_000)
    with pytest.raises(FoolbenchError, match="increasing queries"):
        rank_curve([100, 100], [[0.0], [1.0]])


def test_recognised_classes_count_as_not_fooled_worked_example():
    """Ten champions, each at least as confident as the model's most confident real digit. Four of them
    are real held-out digits, which the look-alike judge recognises: those classes count as not fooled,
    the other six keep their share of 1, and the curve reads 0.6. v2's rule scales the whole curve of
    the median instead, which is not the same as counting those classes as not fooled: there the
    median of the ten stays at 99.99 % (four zeros, six at 99.99 %) and v2 still gives 0.6."""
    from foolbench.data.labelled import labelled

    real = labelled("mnist-heldout")
    judge = make_judge("lookalike", real.images, real.labels, real.key)
    rng = np.random.default_rng(0)
    classes = np.arange(10)
    digits = np.stack([real.images[np.flatnonzero(real.labels == c)[0]] for c in range(4)])
    noise = rng.random((6, 1, 28, 28), dtype=np.float32)
    champions = np.concatenate([digits, noise])
    seen = judge.recognised(champions, classes)
    assert seen.tolist() == [True] * 4 + [False] * 6
    confidence = np.full(10, 0.99999)
    real_conf = np.linspace(0.9, 0.9999, 50)
    shares = np.where(seen, 0.0, fooled_share(confidence, real_conf))
    np.testing.assert_array_equal(shares, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    q, v = rank_curve([100], [shares])
    assert curve_area([(q, v)], 100, 1000) == pytest.approx(0.6)
    # v2: the median confidence counting the four as not fooled is unchanged; its rule gives 0.6 anyway
    assert np.median(np.where(seen, 0.0, confidence)) == pytest.approx(0.99999)
    assert run_score(1.0, 10, 4) == pytest.approx(0.6)


def test_white_box_steps_count_their_forward_and_backward_passes(tmp_path, foolbench):
    """One query axis: a gradient step on n images costs 2n queries (forward and backward) before the
    evaluator scores the n new images; a black-box generation costs its batch."""
    from conftest import export, tiny

    model = export(tiny(), tmp_path / "tiny.onnx", (1, 1, 28, 28))
    for attack, args, queries in (
        ("gradient", ["--generations", 3], 10 + 3 * (2 * 10 + 10)),
        ("mnist-cppn", ["--generations", 3], 4 * 200),
    ):
        out = tmp_path / attack
        assert (
            foolbench(
                "run", "--model", model, "--attack", attack, *args, "--out", out, "--no-progress"
            ).returncode
            == 0
        )
        metrics = rundir.read_metrics(out)
        assert rundir.read_summary(out)["queries"] == metrics["queries"].iloc[-1] == queries
        if attack == "gradient":
            assert list(metrics["queries"]) == [10, 40, 70, 100] and list(metrics["evaluations"]) == [
                10,
                20,
                30,
                40,
            ]


def test_the_digit_judge_reads_digits_it_was_not_built_from():
    """The grey suite's judge is built from the held-out digits, which no zoo model trained on. Measured
    on 1,000 of the 4,000 training digits and 500 random CPPN images: 91 % of the digits are recognised
    as their own class, under 2 % as the next class, and under 2 % of the CPPN images as any."""
    from foolbench.data.labelled import labelled
    from foolbench.data.mnist import load_mnist
    from foolbench.encodings import make_encoding

    real = labelled("mnist-heldout")
    judge = make_judge("lookalike", real.images, real.labels, real.key)
    train = load_mnist()
    digits, labels = train.train_x[::4, None].astype(np.float32) / 255, train.train_y[::4]
    assert judge.recognised(digits, labels).mean() > 0.85
    assert judge.recognised(digits, (labels + 1) % 10).mean() < 0.02
    rng = np.random.default_rng(0)
    encoding = make_encoding("cppn", resolution=28, channels=1)
    cppns = encoding.render(encoding.init(500, rng))
    assert judge.recognised(cppns, rng.integers(0, 10, 500)).mean() < 0.02
    assert judge.name == "lookalike (mnist-heldout)"


# -- the protocol file -------------------------------------------------------------------------------
def test_v3_suites_pick_models_by_dataset_then_channels_and_side():
    proto = load_protocol("v3")
    assert proto.score == "real-rank" and len(proto.seeds) == 3
    assert proto.suite_for(1, 28, "mnist").name == "grey"
    assert proto.suite_for(1, 28, None).name == "grey"  # a digit model without a card
    assert proto.suite_for(3, 224, None).name == "imagenet"
    assert proto.suite_for(3, 32, "imagenet").name == "imagenet"  # the card's dataset decides first
    assert proto.suite_for(3, 32, None).name == "cifar"  # a small colour model without a card
    assert proto.suite_for(3, 32, "cifar10").name == "cifar" and proto.suites["cifar"].data == "cifar10-test"
    grey, colour = proto.suites["grey"], proto.suites["imagenet"]
    assert (grey.data, grey.judge, colour.data, colour.judge) == (
        "mnist-heldout",
        "lookalike",
        "imagenet-sample",
        None,
    )
    assert colour.attacks[0].preset == "imagenet-patch"  # the patch search's own preset, as retuned


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["suite"]["grey"].pop("queries"), "needs 'queries'"),
        (lambda d: d["suite"]["grey"].update(queries=[100, 50]), "increasing order"),
        (lambda d: d["suite"]["grey"].update(judge="oracle"), "suite.grey.judge"),
        (lambda d: d["suite"]["grey"].update(min_accuracy=1.5), "min_accuracy"),
        (lambda d: d["suite"]["grey"].update(min_side=64, max_side=32), "min_side 64 is above"),
        (
            lambda d: d["suite"].update(grey2={**d["suite"]["grey"], "min_side": 20}),
            "suites grey and grey2 both take",
        ),
    ],
)
def test_bad_v3_suites_name_the_problem(edit, message):
    data = tomllib.loads(TINY_V3)
    edit(data)
    with pytest.raises(FoolbenchError, match=message):
        protocol_from_dict(data, "p.toml")


# -- the gaming tests -----------------------------------------------------------------------------------
GAMED = {
    "source": None,
    "squashed": ("temperature", 4.0),
    "sharpened": ("temperature", 0.25),
    "clipped": ("clipped", 1.5),
    "constant": ("constant", None),
    "uniform": ("uniform", None),
    "unconvertible": ("unconvertible", None),
    "rounded": ("rounded", None),
}


def _score(argv) -> int:
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as exit_:
        mp.setattr(sys, "argv", ["foolbench", *map(str, argv)])
        main()
    return exit_.value.code


@pytest.fixture(scope="module")
def gamed(lenet, tmp_path_factory):
    """Each copy of the zoo's LeNet scored under TINY_V3 onto one leaderboard."""
    root = tmp_path_factory.mktemp("gaming")
    (root / "t3.toml").write_text(TINY_V3)
    for name, how in GAMED.items():
        model = lenet if how is None else gamed_copy(lenet, root / f"{name}.onnx", *how)
        argv = ["score", "--model", model, "--name", name, "--protocol", root / "t3.toml"]
        assert (
            _score([*argv, "--leaderboard", root / "board.csv", "--work", root / name, "--no-progress"]) == 0
        )
    return root


def _v2_rows(root) -> pd.DataFrame:
    """v2's rules on the same runs: the nines-curve of the median, look-alikes scaling it, no accuracy
    check, the worst case over the attacks that ran, each row ranked."""
    data = tomllib.loads(TINY_V3)
    data["protocol"] |= {"score": "nines-auc", "lookalikes": True, "version": "t3-v2"}
    proto = protocol_from_dict(data, "v2-rules.toml")
    rows = []
    for name in GAMED:
        runs = {
            a.name: [root / name / f"{a.name}-s{s}" for s in proto.seeds]
            for a in proto.suites["grey"].attacks
            if (root / name / f"{a.name}-s0" / rundir.SUMMARY).is_file()
        }
        rows.append({"name": name} | v2_cells(proto, proto.suites["grey"], runs))
    return pd.DataFrame(rows).set_index("name")


def _more_robust(rows, a: str, b: str) -> bool:
    """Whether `a` is ranked as harder to fool than `b` beyond seed noise (their ranges apart)."""
    return rows.loc[a, "fooling_score_high"] < rows.loc[b, "fooling_score_low"]


def test_squashed_confidence_buys_nothing(gamed):
    v3 = read_leaderboard(gamed / "board.csv").set_index("name")
    v2 = _v2_rows(gamed)
    source = v3.loc["source"]
    assert source["ranked"] == "true" and source["accuracy"] > 0.95 and source["attacks_scored"] == "all"
    for copy in ("squashed", "sharpened"):
        assert v3.loc[copy, "ranked"] == "true" and v3.loc[copy, "accuracy"] == source["accuracy"]
        assert not _more_robust(v3, copy, "source"), v3.loc[
            [copy, "source"], ["fooling_score_low", "fooling_score_high"]
        ]
    # v2's rules on the same runs put the squashed copy above its source, beyond seed noise
    assert _more_robust(v2, "squashed", "source")


def test_degenerate_models_are_listed_not_ranked(gamed):
    v3 = read_leaderboard(gamed / "board.csv").set_index("name")
    v2 = _v2_rows(gamed)
    for name in ("constant", "uniform", "clipped"):
        row = v3.loc[name]
        assert row["ranked"] == "false" and row["accuracy"] < 0.9
        assert "below suite grey's floor of 90%" in row["not_ranked_why"]
        # under v2's rules each ranks above the model it was made from, beyond seed noise
        assert _more_robust(v2, name, "source"), name
    # uniform output ties every image with every real one, and ties count as fooled: the most fooled
    # score there is; a constant answer cannot be moved off its one class (1 of 10 fooled), so it is the
    # accuracy floor, not the measure, that keeps it from the top
    assert v3.loc["uniform", "fooling_score"] == 1.0
    assert v3.loc["constant", "fooling_score"] == pytest.approx(0.1)
    assert v3.loc["constant", "fooling_score_high"] < v3.loc["source", "fooling_score_low"]
    table = ranked(read_leaderboard(gamed / "board.csv"))
    listed = ["constant", "uniform", "clipped", "unconvertible", "rounded"]
    assert table.set_index("name").loc[listed, "rank"].isna().all()
    assert table["rank"].iloc[0] == 1 and table["name"].iloc[-1] in listed


def test_a_model_escaping_the_gradient_attacks_is_not_ranked(gamed):
    row = read_leaderboard(gamed / "board.csv").set_index("name").loc["unconvertible"]
    assert row["attacks_scored"] == "without gradient" and row["ranked"] == "false"
    assert "onnx2torch" in row["not_ranked_why"] and "foolbench.load_model(module" in row["not_ranked_why"]
    assert row["accuracy"] > 0.95  # it is a working classifier: only the missing attack keeps it off
    # which matters: without the gradient attack it would look harder to fool than its source
    assert (
        row["fooling_score_high"]
        < read_leaderboard(gamed / "board.csv").set_index("name").loc["source", "fooling_score_low"]
    )
    v2 = _v2_rows(gamed)  # v2's rules rank it all the same, on the black-box attack alone
    assert v2.loc["unconvertible", "attacks_scored"] == "without gradient"
    assert pd.notna(v2.loc["unconvertible", "fooling_score"])


def test_a_model_masking_its_gradient_is_not_ranked(gamed):
    """Rounding the input to 8 bits changes no image the protocol scores, yet zeroes the gradient: the
    gradient attacks stand still and the model would look harder to fool than its source."""
    board = read_leaderboard(gamed / "board.csv").set_index("name")
    row, source = board.loc["rounded"], board.loc["source"]
    assert row["accuracy"] == source["accuracy"] and row["attacks_scored"] == "all"
    assert row["gradient_score"] < 0.1 < source["gradient_score"]  # it never moved
    assert row["fooling_score_high"] < source["fooling_score_low"]  # so, ranked, it would top its source
    assert (
        row["ranked"] == "false"
        and "gradient is zero for every pixel of its real images" in row["not_ranked_why"]
    )


def test_the_leaderboard_shows_v3_rows(gamed):
    text = render(read_leaderboard(gamed / "board.csv"), "md")
    assert "## Protocol t3, grey models" in text and "not_ranked_why" in text
    lines = [line for line in text.splitlines() if line.startswith("| ") and "| constant |" in line]
    assert lines and lines[0].startswith("|  | constant")  # listed, with no rank
    assert "–" in text  # not measured is a dash, never 0


def test_a_module_without_a_card_gets_its_suites_real_images(tmp_path, monkeypatch):
    """foolbench.score on a torch module: a grey 28x28 net with no card is read against the held-out
    digits by class index; an untrained one is listed, not ranked, for its accuracy."""
    from conftest import tiny

    import foolbench

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t3.toml").write_text(TINY_V3.replace("seeds = [0, 1]", "seeds = [0]"))
    scored = foolbench.score(tiny(), "untrained", protocol=str(tmp_path / "t3.toml"), input_size=(1, 28, 28))
    row = scored.row
    assert (row["suite"], row["real_data"], row["real_images"], row["ranked"]) == (
        "grey",
        "mnist-heldout",
        1000,
        "false",
    )
    assert row["accuracy"] < 0.5 and "below suite grey's floor" in row["not_ranked_why"]
    assert row["judge"] == "lookalike (mnist-heldout)" and row["fooling_score"] is not None
    assert (scored.run_dir / "v3.json").is_file() and len(pd.read_csv(scored.run_dir / "real.csv")) == 1000


def test_data_replaces_the_suites_real_images(tmp_path, foolbench):
    """--data DIR: the user's labelled images (folders named by class) are the yardstick and the judge's
    reference; a folder that names no class of the model is one line before anything runs."""
    from conftest import export, tiny
    from PIL import Image

    from foolbench.data.labelled import labelled

    digits = labelled("mnist-heldout")
    for c in range(10):
        (tmp_path / "mine" / str(c)).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(digits.labels == c)[:3]):
            Image.fromarray((digits.images[i][0] * 255).astype(np.uint8)).save(
                tmp_path / "mine" / str(c) / f"{k}.png"
            )
    protocol = tmp_path / "t3.toml"
    protocol.write_text(TINY_V3.replace("seeds = [0, 1]", "seeds = [0]").split("[suite.grey.attacks.cppn]")[0]
                        + '[suite.grey.attacks.gradient]\npreset = "gradient"\nsteps = 2\n')  # fmt: skip
    model = export(tiny(), tmp_path / "tiny.onnx", (1, 1, 28, 28))
    args = [
        "score",
        "--model",
        model,
        "--protocol",
        protocol,
        "--leaderboard",
        tmp_path / "b.csv",
        "--no-progress",
    ]
    done = foolbench(*args, "--data", tmp_path / "mine", "--work", tmp_path / "w")
    assert done.returncode == 0, done.stderr
    row = read_leaderboard(tmp_path / "b.csv").iloc[0]
    assert row["real_images"] == 30 and row["real_data"] == str(tmp_path / "mine")
    assert row["judge"] == f"lookalike ({tmp_path / 'mine'})"
    (tmp_path / "other" / "cat").mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "other" / "cat" / "0.png")
    bad = foolbench(*args, "--data", tmp_path / "other", "--work", tmp_path / "w2")
    assert (
        bad.returncode == 2 and "names a class of the model" in bad.stderr and not (tmp_path / "w2").exists()
    )


def colour_protocol(folder, suite: str, side: str, data: str, queries: str, preset: str):
    """A one-seed v3 protocol file with one colour suite whose only attack is two gradient steps."""
    path = folder / "t3.toml"
    path.write_text(
        f'[protocol]\nversion = "t3c"\nseeds = [0]\nscore = "real-rank"\n\n[suite.{suite}]\nchannels = 3\n'
        f'{side}\ndata = "{data}"\nmin_accuracy = 0.5\nqueries = {queries}\n\n'
        f'[suite.{suite}.attacks.gradient]\npreset = "{preset}"\nsteps = 2\n'
    )
    return path


def test_a_suite_without_real_images_for_the_model_lists_it_unranked(tmp_path, foolbench, monkeypatch):
    """A colour model when no labelled photos can be found: its row says why and is not ranked, and
    nothing it could not measure reads as 0."""
    from conftest import export, tiny

    monkeypatch.delenv("FOOLBENCH_DATA", raising=False)
    protocol = colour_protocol(
        tmp_path, "imagenet", "min_side = 65", "imagenet-sample", "[50, 300]", "gradient-imagenet"
    )
    model = export(tiny(channels=3, size=96), tmp_path / "colour.onnx", (1, 3, 96, 96))
    done = foolbench("score", "--model", model, "--protocol", protocol, "--leaderboard", tmp_path / "b.csv",
                     "--work", tmp_path / "w", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = read_leaderboard(tmp_path / "b.csv").iloc[0]
    assert row["suite"] == "imagenet" and row["ranked"] == "false" and pd.isna(row["fooling_score"])
    assert "$FOOLBENCH_DATA is not set" in row["not_ranked_why"] and pd.isna(row["accuracy"])
    printed = dict(line.split(None, 1) for line in done.stdout.splitlines() if " " in line.strip())
    assert printed["fooling_score"].strip() == printed["accuracy"].strip() == "–"
    assert printed["gradient_recognised"].strip() == "–"  # no judge: not measured, never 0


def test_an_all_nan_model_is_one_line_and_writes_nothing(lenet, tmp_path, foolbench):
    model = gamed_copy(lenet, tmp_path / "nan.onnx", "nan")
    (tmp_path / "t3.toml").write_text(TINY_V3)
    for protocol in (tmp_path / "t3.toml", "v2"):
        work = tmp_path / f"work-{protocol == 'v2'}"
        result = foolbench("score", "--model", model, "--protocol", protocol, "--work", work,
                           "--leaderboard", tmp_path / "board.csv", "--no-progress")  # fmt: skip
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "NaN or infinity" in result.stderr
        assert not work.exists() and not (tmp_path / "board.csv").exists()
    result = foolbench(
        "run", "--model", model, "--attack", "mnist-cppn", "--out", tmp_path / "run", "--no-progress"
    )
    assert result.returncode == 2 and "NaN or infinity" in result.stderr and not (tmp_path / "run").exists()


def test_v3_is_the_default_protocol_everywhere():
    """`foolbench score` and `foolbench.score` without a protocol both score under v3."""
    import inspect

    import foolbench
    from foolbench.cli import cli
    from foolbench.protocol import DEFAULT_PROTOCOL

    option = next(p for p in cli.commands["score"].params if p.name == "protocol")
    api_default = inspect.signature(foolbench.score).parameters["protocol"].default
    assert DEFAULT_PROTOCOL == option.default == api_default == "v3"
    assert load_protocol().version == "v3"


def test_data_naming_a_cifar10_copy_is_read_as_cifar10_test(tmp_path, foolbench, monkeypatch):
    """A CIFAR-size model's --data may name a CIFAR-10 copy, as every other command's --data does: its
    test split is the yardstick (not its train/ and test/ folders read as two classes)."""
    from conftest import export, tiny
    from test_cifar10 import TEST, write_folder

    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FOOLBENCH_DATA", raising=False)
    write_folder(tmp_path / "c10")
    protocol = colour_protocol(tmp_path, "cifar", "max_side = 64", "cifar10-test", "[20, 60]", "gradient")
    model = export(tiny(channels=3, size=32), tmp_path / "c.onnx", (1, 3, 32, 32))
    done = foolbench("score", "--model", model, "--protocol", protocol, "--leaderboard", tmp_path / "b.csv",
                     "--work", tmp_path / "w", "--data", tmp_path / "c10", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = read_leaderboard(tmp_path / "b.csv").iloc[0]
    assert (row["suite"], row["real_images"], row["real_data"]) == ("cifar", 10 * TEST, str(tmp_path / "c10"))
    assert row["accuracy"] < 0.5 and "floor" in row["not_ranked_why"]  # an untrained net: listed, not ranked
