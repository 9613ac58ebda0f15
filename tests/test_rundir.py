"""The run directory's one "same run?" check and `ensure_run` (start, resume or reuse)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from conftest import export, tiny

from foolbench import rundir
from foolbench.errors import FoolbenchError
from foolbench.models import ModelOptions
from foolbench.runner import RunRequest, ensure_run, resume_run, run_state
from foolbench.search.map_elites import MapElites


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m")
    other = tiny()
    with torch.no_grad():
        other.body[0].weight.mul_(2)
    return export(tiny(), folder / "a.onnx", (1, 1, 28, 28)), export(other, folder / "b.onnx", (1, 1, 28, 28))


def request(model, out, **kw) -> RunRequest:
    given = {"attack": "mnist-direct", "scale": "cpu", "generations": 2, "classes": "0-4", "seed": 0}
    return RunRequest(models=[str(model)], out=out, progress=False, **(given | kw))


def files(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert ensure_run(request(models[0], out)) == (out, "started")
    return out


def test_a_finished_run_is_reused_untouched(models, finished):
    before = files(finished)
    assert run_state(request(models[0], finished)) == "finished"
    assert ensure_run(request(models[0], finished)) == (finished, "finished")
    assert files(finished) == before


def test_the_same_file_elsewhere_is_the_same_run(models, finished, tmp_path):
    copy = tmp_path / "copy.onnx"
    shutil.copy(models[0], copy)
    assert run_state(request(copy, finished)) == "finished"


@pytest.mark.parametrize(
    "change, named",
    [
        ({"seed": 1}, "seed 0 (asked 1)"),
        ({"generations": 3}, "generations 2 (asked 3)"),
        ({"classes": "0-3"}, "classes [0, 1, 2, 3, 4] (asked [0, 1, 2, 3])"),
        ({"attack": "mnist-cppn"}, "attack 'mnist-direct' (asked 'mnist-cppn')"),
        ({"scale": "full"}, "other attack settings"),
        (
            {"model_options": ModelOptions(card={"crop": "ten"})},
            "options {} (asked {'overrides': {'crop': 'ten'}})",
        ),
        ({"model": 1}, "another model file"),
    ],
)
def test_another_run_in_the_way_is_refused_naming_what_differs(models, finished, change, named):
    change = dict(change)
    model = models[change.pop("model", 0)]
    before = files(finished)
    with pytest.raises(FoolbenchError, match="holds a run with other settings") as e:
        ensure_run(request(model, finished, **change))
    assert named in str(e.value) and "\n" not in str(e.value)
    assert files(finished) == before


def test_a_killed_run_resumes_to_the_uninterrupted_one(models, finished, tmp_path, monkeypatch):
    ask = MapElites.ask

    def dies_at_2(self):
        if self.generation == 1:
            raise KeyboardInterrupt
        return ask(self)

    monkeypatch.setattr(MapElites, "ask", dies_at_2)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        ensure_run(request(models[0], out, generations=2))
    monkeypatch.setattr(MapElites, "ask", ask)
    assert run_state(request(models[0], out)) == "resuming"
    assert ensure_run(request(models[0], out)) == (out, "resumed")
    assert (out / rundir.RESULTS).read_bytes() == (finished / rundir.RESULTS).read_bytes()


def test_a_folder_that_is_not_a_run_is_refused(models, tmp_path):
    (tmp_path / "mine.txt").write_text("mine")
    with pytest.raises(FoolbenchError, match="is not a run directory"):
        ensure_run(request(models[0], tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_without_out_a_new_run_directory_is_started(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, state = ensure_run(request(models[0], None, generations=0))
    assert state == "started" and run.parent == rundir.RUNS_DIR and rundir.is_finished(tmp_path / run)


def hold_elsewhere(run_dir) -> subprocess.Popen:
    """Another process holding `run_dir`, as a running `foolbench run` does, until its stdin gets a line."""
    code = f"from foolbench import rundir\nwith rundir.held({str(run_dir)!r}):\n    print(1, flush=True)\n    input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "1"
    return holder


def test_a_run_another_process_is_writing_is_refused_in_one_line(models, tmp_path, monkeypatch):
    """Two processes on one run folder would interleave its checkpoints: the second is refused, the
    folder left as it was, and once the first is gone the run resumes."""
    out = tmp_path / "run"
    ask = MapElites.ask
    monkeypatch.setattr(MapElites, "ask", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ensure_run(request(models[0], out))  # killed after its manifest: a run to resume
    monkeypatch.setattr(MapElites, "ask", ask)
    holder = hold_elsewhere(out)
    try:
        before = files(out)
        for attempt in (lambda: ensure_run(request(models[0], out)), lambda: resume_run(out)):
            with pytest.raises(FoolbenchError, match="is being written by another foolbench process") as e:
                attempt()
            assert "\n" not in str(e.value) and files(out) == before
    finally:
        holder.communicate("\n", timeout=30)
    assert ensure_run(request(models[0], out)) == (out, "resumed")


def test_a_killed_holder_leaves_the_run_free(models, tmp_path):
    """The hold ends with the process that had it: kill -9 leaves nothing to clean up."""
    out = tmp_path / "run"
    out.mkdir()
    holder = hold_elsewhere(out)
    holder.kill()
    holder.wait(timeout=30)
    assert ensure_run(request(models[0], out)) == (out, "started")
