"""The Python API: `foolbench.run`, `.resume`, `.score` and `.load_model` on files, zoo names and
in-memory torch modules write the command line's run directories, resume as it does, and refuse bad
input in one FoolbenchError line without writing anything."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import export, tiny

import foolbench
from foolbench import protocol, rundir, runner
from foolbench.errors import FoolbenchError
from foolbench.protocol import PROTOCOLS_DIR

LABELS = [f"thing {i}" for i in range(10)]


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """An empty working folder: runs/ and runs/models/ land here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return tiny(channels=3, size=32)


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_import_stays_cheap_and_the_api_is_there():
    code = "import sys, foolbench; print('torch' in sys.modules, 'foolbench.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert foolbench.run is foolbench.api.run and foolbench.score is foolbench.api.score
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        foolbench.nothing  # noqa: B018


def test_a_module_runs_into_the_same_run_directory_as_the_cli(here, net):
    result = foolbench.run(
        net, "cifar-direct", generations=2, out="run", labels=LABELS, input_size=(3, 32, 32), mean=[0.5] * 3
    )
    assert result.run_dir == Path("run")
    assert result.summary["classes"] == 10 and result.summary["evaluations"] == 200 * 3
    assert list(result.results["label"]) == LABELS
    pd.testing.assert_frame_equal(result.results, rundir.read_results("run"))
    manifest = rundir.read_manifest("run")
    assert manifest["command"].startswith("foolbench.run(") and manifest["command"].endswith("from Python")
    (exported,) = files(here / "runs" / "models")
    assert manifest["models"][0]["path"] == str(exported.relative_to(here))
    card = foolbench.load_model(exported).card  # the card travels inside the file
    assert card.labels == LABELS and card.mean == [0.5] * 3 and card.input_size == [32, 32]
    champions = rundir.read_champions("run")  # what transfer and the baseline read
    assert len(champions.files) == 10 and champions.channels == 3


def test_running_again_reuses_the_finished_run_and_the_exported_file(here, net):
    kw = {"generations": 2, "out": "run", "input_size": (3, 32, 32)}
    first = foolbench.run(net, "cifar-direct", **kw)
    stamp = (here / "run" / "summary.json").stat().st_mtime_ns
    again = foolbench.run(net, "cifar-direct", **kw)
    assert again.summary == first.summary and (here / "run" / "summary.json").stat().st_mtime_ns == stamp
    assert len(files(here / "runs" / "models")) == 1
    with pytest.raises(FoolbenchError, match="other settings|differ"):
        foolbench.run(net, "cifar-direct", **{**kw, "generations": 3})


def test_a_killed_run_continues_to_the_same_result(here, net, monkeypatch):
    preset = (Path(foolbench.__file__).parent.parent / "attacks" / "cifar-cppn.toml").read_text()
    Path("every.toml").write_text(preset.replace("checkpoint_every = 50", "checkpoint_every = 1"))
    kw = {"generations": 4, "input_size": (3, 32, 32), "classes": [0, 3, 7]}
    whole = foolbench.run(net, "every.toml", out="whole", **kw)

    save = runner._checkpoint

    def killed_after_two(run_dir, search, metrics):
        save(run_dir, search, metrics)
        if search.generation == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        foolbench.run(net, "every.toml", out="killed", **kw)
    monkeypatch.setattr(runner, "_checkpoint", save)
    assert not rundir.is_finished("killed")
    resumed = foolbench.run(net, "every.toml", out="killed", **kw)
    pd.testing.assert_frame_equal(resumed.results, whole.results)
    keys = ("median_confidence", "evaluations", "classes_at_99")
    assert {k: resumed.summary[k] for k in keys} == {k: whole.summary[k] for k in keys}


def test_resume_extends_a_budget(here, net):
    first = foolbench.run(net, "cifar-direct", generations=1, out="run", input_size=(3, 32, 32))
    longer = foolbench.resume("run", generations=3)
    assert first.summary["generations"] == 1 and longer.summary["generations"] == 3
    assert longer.summary["evaluations"] == 200 * 4


def test_default_attacks_follow_the_model_from_python(here, net, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, "ensure_run", lambda req: seen.append(req) or (None, ""))
    monkeypatch.setattr(foolbench.api.RunResult, "read", classmethod(lambda cls, d: d))
    assert foolbench.run(net, input_size=(3, 32, 32), out="runs/mine", scale="cpu") == [None, None]
    assert [r.preset.name for r in seen] == ["cifar-cppn", "cifar-direct"]
    assert [r.out for r in seen] == [Path("runs/mine/cifar-cppn"), Path("runs/mine/cifar-direct")]


def test_a_zoo_name_and_a_loaded_model_run_alike(here, lenet):
    model = foolbench.load_model("lenet-mnist")
    assert model.labels == [str(d) for d in range(10)] and model.path == lenet
    by_name = foolbench.run("lenet-mnist", "mnist-direct", generations=1, out="a")
    by_model = foolbench.run(model, "mnist-direct", generations=1, out="b")
    pd.testing.assert_frame_equal(by_name.results, by_model.results)


def tiny_protocol(folder: Path) -> Path:
    path = folder / "tiny-protocol.toml"
    path.write_text(
        '[protocol]\nversion = "tiny"\nseeds = [0]\nranked = ["cppn", "direct"]\n\n'
        '[suite.colour]\nchannels = 3\ncrop = "center"\n'
        '[suite.colour.attacks.cppn]\npreset = "imagenet-cppn"\nevaluations = 80\nbatch = 40\n'
        '[suite.colour.attacks.direct]\npreset = "imagenet-direct"\nevaluations = 80\nbatch = 40\n'
    )
    return path


def test_score_a_module_returns_its_row_and_runs(here, net):
    result = foolbench.score(net, "my net", protocol=str(tiny_protocol(here)), input_size=(3, 32, 32))
    assert result.row["name"] == "my net" and result.row["classes"] == 10
    assert result.row["input_size"] == "3x32x32" and result.row["protocol"] == "tiny"
    assert result.run_dir.parts[:2] == ("runs", "score") and result.run_dir.name == "tiny"
    assert json.loads((result.run_dir / "score.json").read_text())["row"] == result.row
    assert sorted(result.results["attack"]) == ["cppn", "direct"]
    medians = result.results.set_index("attack")["median_confidence"]
    assert result.row["cppn_median"] == medians["cppn"] and result.row["direct_median"] == medians["direct"]
    assert not (here / "reports").exists()  # no leaderboard unless one is named
    board = here / "board.csv"
    foolbench.score(
        net, "my net", protocol=str(tiny_protocol(here)), input_size=(3, 32, 32), leaderboard=board
    )
    assert pd.read_csv(board)["name"].tolist() == ["my net"]


class Echo(torch.nn.Module):
    """Not a classifier: returns its input."""

    def forward(self, x):
        return x


@pytest.mark.parametrize(
    "module, info, message",
    [
        (Echo(), {"input_size": (3, 32, 32)}, r"output has shape \[2, 3, 32, 32\] .* needs \[batch, classes\]"),
        (tiny(channels=3, size=32), {"input_size": (3, 32, 32), "labels": ["a", "b"]}, "2 labels given but .* 10 classes"),
        (tiny(channels=3, size=32), {}, r"pass input_size=\(C, H, W\)"),
        (tiny(channels=3, size=32), {"input_size": (1, 32, 32)}, "failed on a batch of"),
        (tiny(channels=3, size=32), {"input_size": (3, 32)}, r"pass input_size=\(C, H, W\)"),
        (tiny(channels=3, size=32), {"input_size": (3, 32, 32), "std": [0, 1, 1]}, "'std' values must be positive"),
    ],
)  # fmt: skip
def test_bad_modules_fail_in_one_line_and_write_nothing(here, module, info, message):
    for call in (foolbench.load_model, foolbench.run, foolbench.score):
        with pytest.raises(FoolbenchError, match=message) as error:
            call(module, **info)
        assert "\n" not in str(error.value)
    assert files(here) == []


def test_bad_files_and_arguments_fail_in_one_line(here, tmp_path):
    path = export(tiny(channels=3, size=32), tmp_path / "m.onnx", (1, 3, 32, 32))
    with pytest.raises(FoolbenchError, match="3 labels given but the model outputs 10 classes"):
        foolbench.run(path, "cifar-direct", labels=["a", "b", "c"], generations=1)
    with pytest.raises(FoolbenchError, match="already loaded; give labels to foolbench.load_model"):
        foolbench.run(foolbench.load_model(path), labels=LABELS)
    with pytest.raises(FoolbenchError, match="not list"):
        foolbench.run([path])
    with pytest.raises(FoolbenchError, match="mean must be one number per channel"):
        foolbench.load_model(path, mean="grey")
    with pytest.raises(FoolbenchError, match="input_size must be"):
        foolbench.load_model(path, input_size=(3, 31.5, 32))
    with pytest.raises(FoolbenchError, match="attack preset 'nope' not found"):
        foolbench.run(path, "nope")
    with pytest.raises(FoolbenchError, match="class 12 is out of range"):
        foolbench.run(path, "cifar-direct", classes=[12], generations=1)
    assert [p for p in files(here) if p.suffix != ".onnx"] == []


# -- the README's "From Python" section runs as written -------------------------------------------------
def readme_python_blocks() -> list[str]:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### From Python") :]
    section = section[: section.index("\n#", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def shrunk_v3(folder: Path) -> Path:
    """attacks/protocols/v3.toml with every budget cut to a test's size (one seed, a few hundred
    queries): the examples call the default protocol, whose full budgets take minutes."""
    text = (PROTOCOLS_DIR / "v3.toml").read_text(encoding="utf-8")
    for pattern, small in [
        (r"(?m)^seeds = .*$", "seeds = [0]"),
        (r"(?m)^queries = .*$", "queries = [100, 200, 400]"),
        (r"(?m)^evaluations = .*$", "evaluations = 400"),
        (r"(?m)^batch = .*$", "batch = 100"),
        (r"(?m)^steps = .*$", "steps = 3"),
    ]:
        text = re.sub(pattern, small, text)
    folder.mkdir()
    (folder / "v3.toml").write_text(text, encoding="utf-8")
    return folder


def test_the_readmes_python_examples_run_as_written(here, lenet, capsys, monkeypatch, tmp_path):
    assert inspect.signature(foolbench.score).parameters["protocol"].default == "v3"
    monkeypatch.setattr(protocol, "PROTOCOLS_DIR", shrunk_v3(tmp_path / "protocols"))
    blocks = readme_python_blocks()
    assert len(blocks) >= 3, "the README's From Python section lost its examples"
    namespace: dict = {}
    for block in blocks:  # in order, in one namespace, as a notebook would run them
        exec(compile(block, "README.md (From Python)", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "RunResult(mnist-cppn on lenet-mnist" in printed and "cifar-cppn" in printed
    assert rundir.read_summary(here / "runs" / "py-lenet")["generations"] == 20
    assert pd.read_csv(here / "my-leaderboard.csv")["name"].tolist() == ["tiny cifar net"]
    row = namespace["scored"].row
    assert row["protocol"] == "v3" and row["suite"] == "cifar"
    assert row["gradient_median"] is not None  # the example's net converts for gradients
    assert row["ranked"] == "false" and row["not_ranked_why"]  # untrained (or no CIFAR-10 here): says why
