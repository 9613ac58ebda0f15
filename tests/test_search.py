"""The engine seam: the shared evaluator, and a new engine plugged in by registering it alone."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import export, tiny

from foolbench.encodings import make_encoding
from foolbench.errors import FoolbenchError
from foolbench.images import quantise
from foolbench.models import load_model
from foolbench.options import Int, check_table
from foolbench.presets import preset_from_dict
from foolbench.rundir import load_checkpoint
from foolbench.runner import RunRequest, resume_run, start_run
from foolbench.search import ENGINES, Engine, EngineType, Evaluator, make_search
from foolbench.search.archive import Archive


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return export(tiny(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 1, 28, 28))


@pytest.fixture(scope="module")
def model(model_file):
    return load_model(str(model_file))


# -- the evaluator -----------------------------------------------------------------------------------------
def test_the_evaluator_scores_the_8_bit_image_and_counts(model):
    encoding = make_encoding("direct")
    pop = encoding.init(7, np.random.default_rng(0))
    evaluator = Evaluator(model, encoding, np.array([3, 1]))
    fitness = evaluator(pop)
    expected = model.probs(quantise(pop["genes"]))[:, [3, 1]]
    np.testing.assert_array_equal(fitness, expected)
    assert not np.array_equal(fitness, model.probs(pop["genes"])[:, [3, 1]])  # unquantised differs
    assert evaluator.evaluations == 7 and evaluator.nonfinite == 0
    evaluator(pop)
    assert evaluator.evaluations == 14


class NaNForBright(torch.nn.Module):
    """NaN logits for images whose first pixel is above 0.5."""

    def __init__(self):
        super().__init__()
        self.net = tiny()

    def forward(self, x):
        return self.net(x) + torch.sqrt(-(x[:, :1, :1, :1].flatten(1) > 0.5).float())


def test_the_evaluator_zeroes_and_counts_nonfinite_scores(tmp_path):
    model = load_model(str(export(NaNForBright(), tmp_path / "nan.onnx", (1, 1, 28, 28))))
    encoding = make_encoding("direct")
    pop = encoding.init(40, np.random.default_rng(1))
    evaluator = Evaluator(model, encoding, np.arange(10))
    fitness = evaluator(pop)
    bright = quantise(pop["genes"])[:, 0, 0, 0] > 0.5
    assert 0 < bright.sum() < 40 and evaluator.nonfinite == bright.sum()
    assert (fitness[bright] == 0).all() and np.isfinite(fitness).all() and (fitness[~bright] > 0).all()


@pytest.mark.parametrize("method", sorted(ENGINES))
def test_every_registered_engine_is_an_engine(model, method):
    tables = {"encoding": {"type": "direct"}, "search": {"batch": 4}, "gradient": {"steps": 2}}
    search = make_search(model, method, [0, 2], 0, tables)
    assert isinstance(search.engine, Engine)
    search.step()
    assert search.generation == 0 and search.engine.fitness.shape == (2,)
    genomes, found_at = search.engine.champions()
    assert search.evaluator.images(genomes).shape[0] == 2 and (found_at == 0).all()


# -- a third engine, registered and nothing else ---------------------------------------------------------
class RandomSearch:
    """A new engine as a developer would add one: fresh random genomes each generation, the best per
    class kept in an archive, its own option (`toy.batch`) and its own state (a counter)."""

    nonfinite = 0

    def __init__(self, encoding, classes, seed: int, batch: int):
        self.encoding, self.classes, self.batch = encoding, np.asarray(classes), batch
        self.rng = np.random.default_rng(seed)
        self.archive = Archive(len(self.classes))
        self.generation, self.asked = -1, 0

    @property
    def fitness(self):
        return self.archive.fitness

    def ask(self):
        self.asked += 1
        return self.encoding.init(self.batch, self.rng)

    def tell(self, pop, fitness):
        self.generation += 1
        return self.archive.insert(pop, fitness, self.generation)

    def champions(self):
        return self.archive.champions(), self.archive.generation

    def state(self):
        own = {"toy/asked": np.array(self.asked), "rng": np.array(json.dumps(self.rng.bit_generator.state))}
        return {**self.archive.state(), **own}

    def load_state(self, state):
        self.archive = Archive.from_state(state)
        self.rng.bit_generator.state = json.loads(str(state["rng"]))
        self.asked = int(state["toy/asked"])


def build_random_search(model, classes, seed, tables):
    options = dict(tables["encoding"])
    encoding = make_encoding(options.pop("type"), **options)
    return RandomSearch(encoding, classes, seed, tables["toy"].get("batch", 10))


@pytest.fixture
def toy_engine(monkeypatch):
    rules = {"batch": Int(1, 1000)}
    kind = EngineType(
        build_random_search,
        encoding=True,
        section="toy",
        rules=rules,
        check=lambda t: check_table(t, rules, "toy"),
    )
    monkeypatch.setitem(ENGINES, "random", kind)


TOY = {"attack": {"method": "random"}, "encoding": {"type": "direct"}, "toy": {"batch": 12}}


def test_a_registered_engine_gets_its_preset_section_checked(toy_engine):
    assert preset_from_dict(TOY, "toy.toml").tables["toy"] == {"batch": 12}
    with pytest.raises(FoolbenchError, match="'toy.batch' must be between 1 and 1000"):
        preset_from_dict({**TOY, "toy": {"batch": 0}}, "toy.toml")
    with pytest.raises(FoolbenchError, match=r"\[toy\] is only for attack.method = 'random'"):
        preset_from_dict({"encoding": {"type": "direct"}, "toy": {"batch": 3}}, "toy.toml")


def test_a_registered_engine_runs_checkpoints_and_resumes_exactly(
    toy_engine, model_file, tmp_path, monkeypatch
):
    (tmp_path / "toy.toml").write_text(
        '[attack]\nmethod = "random"\n[encoding]\ntype = "direct"\n[toy]\nbatch = 12\n'
    )

    def request(out):
        return RunRequest(
            models=[str(model_file)],
            attack=str(tmp_path / "toy.toml"),
            generations=9,
            checkpoint_every=3,
            out=out,
            progress=False,
        )

    whole = start_run(request(tmp_path / "whole"))
    ask = RandomSearch.ask

    def dies_at_7(self):
        if self.generation == 7:
            raise KeyboardInterrupt
        return ask(self)

    monkeypatch.setattr(RandomSearch, "ask", dies_at_7)
    with pytest.raises(KeyboardInterrupt):
        start_run(request(tmp_path / "cut"))
    monkeypatch.setattr(RandomSearch, "ask", ask)
    cut = resume_run(tmp_path / "cut")
    a, b = load_checkpoint(whole), load_checkpoint(cut)
    assert a.keys() == b.keys() and int(a["toy/asked"]) == 10
    for key in a:
        if key != "metrics":
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    pd.testing.assert_frame_equal(pd.read_csv(whole / "results.csv"), pd.read_csv(cut / "results.csv"))
    manifest = json.loads((whole / "manifest.json").read_text())
    assert manifest["preset"]["toy"] == {"batch": 12}
    assert json.loads((whole / "summary.json").read_text())["evaluations"] == 12 * 10
