"""foolbench from Python: `load_model`, `run`, `resume` and `score`, for a model in a notebook.

These call what the command line calls (`runner.ensure_run`, `runner.resume_run`,
`experiments.score.score_model`), so a run from Python writes the same run directory, resumes the
same way and fails with the same one-line `FoolbenchError` as `foolbench run` and `foolbench score`.
A model is a file, a zoo name, an adapter from `load_model`, or an in-memory `torch.nn.Module`; a
module is exported once to ONNX with its card inside (runs/models/<name>-<hash>.onnx, named by its
weights and card), because a run records, resumes and scores a model by its file's sha256.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from foolbench import rundir
from foolbench.errors import FoolbenchError
from foolbench.models import Model, ModelCard, ModelOptions
from foolbench.models.card import card_from_dict, read_labels_file
from foolbench.presets import Preset
from foolbench.text import percent, safe_name

MODELS_DIR = rundir.RUNS_DIR / "models"  # where in-memory modules are exported to ONNX


# -- results ------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    """A finished run: its directory, `summary.json` and `results.csv` (one row per target class)."""

    run_dir: Path
    summary: dict
    results: pd.DataFrame

    @classmethod
    def read(cls, run_dir: str | Path) -> RunResult:
        run_dir = Path(run_dir)
        return cls(run_dir, rundir.read_summary(run_dir), rundir.read_results(run_dir))

    @property
    def gallery(self) -> Path:
        return self.run_dir / rundir.GALLERY

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"RunResult({s['attack']} on {s['model']}: median {percent(s['median_confidence'])}, "
            f"{s['classes_at_99']} of {s['classes']} classes >= 99%, {self.run_dir})"
        )


@dataclass
class ScoreResult:
    """A scored model: its leaderboard `row`, `score.json` as `summary`, one row per run in `results`."""

    run_dir: Path  # the folder of the protocol's runs (WORK)
    row: dict
    summary: dict
    results: pd.DataFrame

    def __repr__(self) -> str:
        score = self.row.get("fooling_score")
        shown = "none" if score is None else percent(score)
        return f"ScoreResult({self.row['name']}, protocol {self.row['protocol']}: fooling_score {shown}, {self.run_dir})"


# -- models -------------------------------------------------------------------------------------------
def load_model(
    model,
    *,
    labels: Sequence[str] | str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_size: Sequence[int] | None = None,
    card: dict | ModelCard | None = None,
) -> Model:
    """The model as foolbench sees it: `.probs(images)`, `.labels`, `.describe()`.

    `model`: a file (.onnx, TorchScript), a zoo name or a `torch.nn.Module`. The keywords say what
    the model does not: `labels` (names, or a text file with one per line), `mean`/`std` (per channel,
    on [0,1] pixels), `input_size` ((C, H, W) or (H, W)) and any other model-card field in `card`.
    A module needs `input_size` (or a card with `input_size` and `channels`). The adapter returned
    can be passed to `run` and `score`.
    """
    from foolbench.resolve import load_model as load_spec

    spec, options = model_source(model, labels=labels, mean=mean, std=std, input_size=input_size, card=card)
    return load_spec(spec, options)


def model_source(model, **info) -> tuple[str, ModelOptions]:
    """What a run records as the model: a spec the command line accepts, and the options beside it."""
    given = {key: value for key, value in info.items() if value is not None}
    if isinstance(model, Model):
        if given:
            raise FoolbenchError(
                f"{model.name} is already loaded; give {', '.join(given)} to foolbench.load_model instead"
            )
        if model.path is None:
            raise FoolbenchError(f"{model.name} has no file to run from; pass the file or the module itself")
        return str(model.path), model.options or ModelOptions()
    fields = card_fields(**info)
    if isinstance(model, (str, Path)):
        return str(model), ModelOptions(card=fields)
    import torch

    if isinstance(model, torch.nn.Module):
        return str(export_module(model, fields)), ModelOptions()
    raise FoolbenchError(
        f"model must be a file path, a zoo name, a loaded model or a torch.nn.Module, not {type(model).__name__}"
    )


def card_fields(labels=None, mean=None, std=None, input_size=None, card=None) -> dict:
    """Model-card fields from the keywords, checked as a card is (one line naming what is wrong)."""
    if isinstance(card, ModelCard):
        card = {k: v for k, v in dataclasses.asdict(card).items() if v is not None and v != {}}
    fields = dict(card or {})
    if labels is not None:
        fields["labels"] = read_labels_file(labels) if isinstance(labels, (str, Path)) else list(labels)
    for key, values in (("mean", mean), ("std", std)):
        if values is not None:
            fields[key] = _numbers(values, float, f"{key} must be one number per channel")
    if input_size is not None:
        size = _numbers(input_size, int, "input_size must be (C, H, W) or (H, W)")
        if len(size) not in (2, 3) or size != [float(v) for v in input_size]:
            raise FoolbenchError(
                f"input_size must be (C, H, W) or (H, W) in whole numbers, got {input_size!r}"
            )
        if len(size) == 3:
            fields["channels"] = size[0]
        fields["input_size"] = size[-2:]
    card_from_dict(fields, "the model's card")
    return fields


def _numbers(values, kind, what: str) -> list:
    try:
        return [kind(v) for v in values]
    except (TypeError, ValueError):
        raise FoolbenchError(f"{what}, got {values!r}") from None


def export_module(module, fields: dict) -> Path:
    """The module as an ONNX file with its card inside, exported once per weights and card.

    Checked before anything is written: the input size is known, the output is [batch, classes]
    and there is one label per class.
    """
    if not fields.get("input_size") or not fields.get("channels"):
        raise FoolbenchError(
            f"a torch.nn.Module ({type(module).__name__}) does not say what it takes; "
            "pass input_size=(C, H, W), e.g. input_size=(3, 32, 32)"
        )
    net = _on_cpu(module)
    was_training = net.training
    net.eval()
    try:
        _check_output(net, fields)
        name = fields.get("name") or type(module).__name__
        card = ModelCard(**{**fields, "name": name})
        path = MODELS_DIR / f"{safe_name(name)}-{_fingerprint(net, card)}.onnx"
        if not path.is_file():
            _export(net, path, card, fields)
    finally:
        net.train(was_training)
    return path


def _on_cpu(module):
    """The module itself where it lives on the CPU, else a CPU copy (the user's stays where it is)."""
    tensors = [*module.parameters(), *module.buffers()]
    return module if all(t.device.type == "cpu" for t in tensors) else copy.deepcopy(module).cpu()


def _check_output(net, fields: dict) -> None:
    """The module's output on two blank images must be [2, K], with one label per class if given."""
    import torch

    c, (h, w) = fields["channels"], fields["input_size"]
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, c, h, w))
    except Exception as e:  # the user's forward pass: any error is theirs to fix, said in one line
        first = (str(e).splitlines() or [""])[0][:200]
        raise FoolbenchError(
            f"{type(net).__name__} failed on a batch of [2, {c}, {h}, {w}] images ({type(e).__name__}: "
            f"{first}); check input_size=(C, H, W)"
        ) from None
    shape = list(getattr(out, "shape", []))
    if not isinstance(out, torch.Tensor) or len(shape) != 2 or shape[0] != 2:
        raise FoolbenchError(
            f"{type(net).__name__}'s output has shape {shape or type(out).__name__} for 2 images but "
            "foolbench needs [batch, classes]: one row of scores per image"
        )
    labels = fields.get("labels")
    if labels is not None and len(labels) != shape[1]:
        raise FoolbenchError(
            f"{len(labels)} labels given but {type(net).__name__} outputs {shape[1]} classes; "
            "give exactly one label per class"
        )


def _fingerprint(net, card: ModelCard) -> str:
    """12 hex digits of the module's class, weights and card: the same module gets the same file."""
    digest = hashlib.sha256(f"{type(net).__module__}.{type(net).__qualname__}".encode())
    for key, tensor in net.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    digest.update(card.to_json().encode())
    return digest.hexdigest()[:12]


def _export(net, path: Path, card: ModelCard, fields: dict) -> None:
    import torch

    from foolbench.zoo.export import export_onnx

    c, (h, w) = fields["channels"], fields["input_size"]
    example = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0))
    try:
        export_onnx(net, path, card, example)
    except Exception as e:  # torch.onnx's many failure types; the file is never half-written
        first = (str(e).splitlines() or [""])[0][:200]
        raise FoolbenchError(
            f"cannot export {type(net).__name__} to ONNX ({type(e).__name__}: {first}); export it "
            "yourself (torch.onnx.export) and pass the .onnx file"
        ) from None


# -- runs -----------------------------------------------------------------------------------------------
def run(
    model,
    attack: str | Path | Sequence[str | Path] | None = None,
    *,
    evaluations: int | None = None,
    generations: int | None = None,
    seconds: float | None = None,
    classes: str | Sequence[int | str] | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    scale: str | None = None,
    progress: bool = False,
    **model_info,
) -> RunResult | list[RunResult]:
    """`foolbench run`: evolve fooling images against `model`.

    `attack`: a preset name or .toml file (one `RunResult`), several (a list), or None for the
    presets that fit the model (a list; as `foolbench run` with no --attack). The budget, classes,
    seed and scale mean what the command's flags do (scale None: auto). `model_info`: labels, mean,
    std, input_size, card, as for `load_model`. With `out`, calling it again continues a killed run
    and returns a finished one as it is; a run of other settings there is refused.
    """
    from foolbench.runner import RunRequest, default_presets, ensure_run, resolve_scale

    spec, options = model_source(model, **model_info)
    scale = resolve_scale(scale, [spec])
    single = isinstance(attack, (str, Path))
    if attack is None:
        attacks = default_presets([spec], options, scale)
    else:
        attacks = [str(attack)] if single else [str(a) for a in attack]
    if not attacks:
        raise FoolbenchError("attack is an empty list; name a preset, or pass None for the model's defaults")
    done = []
    for preset in attacks:
        name = preset.name if isinstance(preset, Preset) else preset
        target = Path(out) / Path(name).stem if out is not None and len(attacks) > 1 else out
        req = RunRequest(
            models=[spec],
            attack=name,
            preset=preset if isinstance(preset, Preset) else None,
            scale=scale,
            generations=generations,
            evaluations=evaluations,
            seconds=seconds,
            classes=list(classes) if isinstance(classes, (list, tuple)) else classes,
            seed=seed,
            out=Path(target) if target is not None else None,
            model_options=options,
            progress=progress,
            command=f"foolbench.run({spec!r}, {name!r}) from Python",
        )
        done.append(RunResult.read(ensure_run(req)[0]))
    return done[0] if single else done


def resume(
    run_dir: str | Path,
    *,
    evaluations: int | None = None,
    generations: int | None = None,
    seconds: float | None = None,
    progress: bool = False,
) -> RunResult:
    """`foolbench run --resume`: continue a killed run from its last checkpoint (a budget extends it)."""
    from foolbench.runner import RunRequest, resume_run

    req = RunRequest(
        models=[],
        attack="",
        generations=generations,
        evaluations=evaluations,
        seconds=seconds,
        progress=progress,
    )
    return RunResult.read(resume_run(Path(run_dir), req))


# -- score ----------------------------------------------------------------------------------------------
def score(
    model,
    name: str | None = None,
    *,
    protocol: str = "v3",
    out: str | Path | None = None,
    leaderboard: str | Path | None = None,
    progress: bool = False,
    data: str | Path | None = None,
    **model_info,
) -> ScoreResult:
    """`foolbench score`: run the scoring protocol on `model` and make its leaderboard row.

    `out`: the folder of its runs (default runs/score/<name>-<sha>/<version>/, finished runs there
    reused); `leaderboard`: a CSV to put the row in (default: none, the row is only returned);
    `data`: protocol v3's labelled real images (a folder, one sub-folder per class) in place of the
    suite's own.
    """
    from foolbench.experiments.score import check_name, score_model, work_dir
    from foolbench.fileio import read_json, sha256_file
    from foolbench.protocol import load_protocol
    from foolbench.resolve import load_model as load_spec

    spec, options = model_source(model, **model_info)
    if out is None:  # the command's default folder, named here so the result can point to it
        loaded = load_spec(spec, options)
        if loaded.path is not None:
            named = check_name(name if name is not None else loaded.name)
            out = work_dir(named, sha256_file(loaded.path), load_protocol(protocol).version)
    log = _say if progress else _silent
    row = score_model(spec, name, protocol, leaderboard, out, options, progress, log=log, data=data)
    record = read_json(Path(out) / "score.json")
    runs = [  # one row per run: the protocol's attack name, its run directory, its summary.json
        {"attack": attack, "run_dir": path} | _renamed(rundir.read_summary(path))
        for attack, paths in record["runs"].items()
        for path in paths
    ]
    return ScoreResult(Path(out), row, record, pd.DataFrame(runs))


def _renamed(summary: dict) -> dict:
    """A run's summary.json with its preset's name as `preset` (`attack` is the protocol's name)."""
    return {("preset" if key == "attack" else key): value for key, value in summary.items()}


def _say(message: str) -> None:
    print(f"foolbench: {message}", file=sys.stderr)


def _silent(message: str) -> None:
    pass
