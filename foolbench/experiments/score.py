"""`foolbench score`: run a scoring protocol on one model and make its leaderboard row.

Every attack x seed of the protocol is a normal run directory under WORK/<attack>-s<seed>/, its
complete preset written to WORK/presets/<attack>.toml, so any run can be inspected, transferred or
repeated with `foolbench run`. A finished run there is reused and a killed one resumed, so scoring
again after a crash (or re-scoring the same model) only does the missing work. The real-image
baseline is `foolbench baseline` on the model, against all of the runs' champions (WORK/baseline/).
The row is computed from the runs' summary.json and baseline.json only.

The default WORK is runs/score/<name>-<first 12 hex of the model's sha256>/<protocol version>/: a
changed model file gets fresh runs, never another file's.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np

from foolbench import __version__, rundir
from foolbench.errors import FoolbenchError
from foolbench.experiments.score_v3 import gradient_masked, real_images, suite_judge, v3_cells
from foolbench.fileio import sha256_file, write_json, write_text
from foolbench.models.load import ModelOptions, as_evaluated
from foolbench.presets import preset_from_dict
from foolbench.protocol import (
    DEFAULT_PROTOCOL,
    Protocol,
    ProtocolAttack,
    Suite,
    curve_score,
    load_protocol,
    run_score,
    stepped,
    toml_text,
)
from foolbench.rating.judge import with_people
from foolbench.rating.summary import people_cells
from foolbench.runner import RunRequest, check_outputs, ensure_run, run_state
from foolbench.text import safe_name

SCORE_DIR = Path("runs") / "score"


def score_model(
    model_spec: str,
    name: str | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    leaderboard: str | Path | None = None,
    work: str | Path | None = None,
    model_options: ModelOptions | None = None,
    progress: bool = True,
    log=print,
    data: str | Path | None = None,
) -> dict:
    """Score the model under the protocol; with `leaderboard`, put its row there (replacing an older one).

    Everything a user can get wrong (model, protocol, leaderboard file, name, and under a protocol
    that reads real images, `data` and a model that returns NaN for them) is checked before the
    first run starts, so a mistake costs no time and writes nothing. `data`: a folder of labelled
    real images (one sub-folder per class) in place of the suite's own.
    """
    from foolbench.report.leaderboard import add_row, read_leaderboard
    from foolbench.resolve import load_model

    proto = load_protocol(protocol)
    options = model_options or ModelOptions()
    model = load_model(model_spec, options)
    if model.path is None:
        raise FoolbenchError(
            f"{model_spec}: a model without a file cannot be identified on the leaderboard (its sha256); "
            "export it to ONNX or save its state dict and score that file"
        )
    name = check_name(name if name is not None else model.name)
    if leaderboard is not None:
        read_leaderboard(leaderboard)  # a broken leaderboard fails now, not after the runs
    check_outputs(model, model.spec.channels, resolution_of(model))
    suite = proto.suite_for(model.spec.channels, max(model.spec.size), model.card.dataset)
    options = _with_crop(options, suite)
    real = why_not_real = None
    if proto.score == "real-rank":
        real, why_not_real = real_images(
            as_evaluated(model, {"crop": suite.crop} if suite.crop else {}, options), suite, data
        )
        if why_not_real:
            log(f"score: not ranked: {why_not_real}")
    elif data is not None:
        raise FoolbenchError(
            f"--data is for protocols that read real images (v3); protocol {proto.version} does not"
        )
    sha = sha256_file(model.path)
    work = Path(work) if work is not None else work_dir(name, sha, proto.version)
    plan = _plan(proto, suite, model)
    gradient_skipped = _gradient_check(model, suite)
    masked = None
    if proto.score == "real-rank" and not gradient_skipped and any(stepped(a.method) for a in suite.attacks):
        masked = gradient_masked(model, real)
    requests = {
        attack: [_request(work, attack, seed, model_spec, options, progress) for seed in proto.seeds]
        for attack in plan
        if attack.name not in gradient_skipped
    }
    for attack, reqs in requests.items():  # a run of something else in WORK is refused before any runs
        preset = preset_from_dict(plan[attack], reqs[0].attack)
        for req in reqs:
            run_state(req, preset)

    runs: dict[str, list[Path]] = {}
    for attack, tables in plan.items():
        if attack.name in gradient_skipped:
            log(f"score: {attack.name} skipped: {gradient_skipped[attack.name]}")
            continue
        write_text(
            requests[attack][0].attack,
            toml_text(tables, f"foolbench score: {tables['attack']['description']}"),
        )
        runs[attack.name] = [_run(req, log) for req in requests[attack]]
    if proto.score == "real-rank":
        base, base_note = None, None
        judge, judge_text = suite_judge(suite, real, model, resolution_of(model))
        judge, judge_text = with_people(judge, judge_text, [d for dirs in runs.values() for d in dirs])
        row = make_row(name, sha, model, proto, suite, runs, None)
        row |= v3_cells(
            proto,
            suite,
            runs,
            real,
            why_not_real,
            judge,
            judge_text,
            gradient_skipped,
            model.spec.channels,
            work,
            masked,
        )
    else:
        base, base_note = _baseline(model, model_spec, runs, work / "baseline", options)
        row = make_row(name, sha, model, proto, suite, runs, base)
    record = {
        "row": row,
        "model": {"spec": model_spec, "path": str(model.path), "options": options.to_json()},
        "protocol": {"version": proto.version, "source": proto.source, "suite": suite.name},
        "runs": {a: [str(d) for d in dirs] for a, dirs in runs.items()},
        "skipped": gradient_skipped,
        "baseline": str(work / "baseline" / "baseline.json") if base else None,
        "baseline_note": base_note,
    }
    write_json(work / "score.json", record)
    if leaderboard is not None:
        add_row(leaderboard, row)
    return row


def work_dir(name: str, sha: str, version: str) -> Path:
    """Where the runs of a model's score go by default: one folder per name, file and protocol."""
    return SCORE_DIR / f"{safe_name(name)}-{sha[:12]}" / version


def check_name(name: str) -> str:
    name = str(name).strip()
    if not name or any(not c.isprintable() for c in name) or len(name) > 200:
        raise FoolbenchError(f"--name must be 1 to 200 printable characters on one line, got {name!r}")
    return name


def _with_crop(options: ModelOptions, suite: Suite) -> ModelOptions:
    """The protocol fixes the crop (its cost per evaluation); a --crop that differs is refused."""
    if suite.crop is None:
        return options
    if options.card.get("crop", suite.crop) != suite.crop:
        raise FoolbenchError(
            f"the protocol scores suite {suite.name} with crop '{suite.crop}'; drop --crop {options.card['crop']}"
        )
    return options.with_card(crop=suite.crop)


def resolution_of(model) -> int:
    """The side images are drawn at: what the model's card resizes to, else its larger input side."""
    return int(model.spec.resize or max(model.spec.size))


def _plan(proto: Protocol, suite: Suite, model) -> dict[ProtocolAttack, dict]:
    """Each attack's complete preset for this model, validated as a preset before anything runs."""
    classes = proto.classes_for(model.num_classes, model.labels)
    plan = {}
    for attack in suite.attacks:
        tables = proto.preset_tables(attack, suite, resolution_of(model), classes)
        preset_from_dict(tables, f"{proto.source} [suite.{suite.name}.attacks.{attack.name}]")
        plan[attack] = tables
    return plan


def _gradient_check(model, suite: Suite) -> dict[str, str]:
    """Gradient attacks this model cannot take (no PyTorch form): attack name -> the reason."""
    gradient = [a.name for a in suite.attacks if stepped(a.method)]
    if not gradient:
        return {}
    try:
        model.torch_module()
    except FoolbenchError as e:
        return dict.fromkeys(gradient, str(e))
    return {}


def _request(work: Path, attack: ProtocolAttack, seed: int, spec: str, options: ModelOptions, progress: bool):
    """The run of `attack` with `seed` in WORK, its preset the file written to WORK/presets/."""
    return RunRequest(
        models=[spec],
        attack=str(work / "presets" / f"{attack.name}.toml"),
        scale="full",
        seed=seed,
        out=work / f"{attack.name}-s{seed}",
        model_options=options,
        progress=progress,
    )


def _run(req: RunRequest, log) -> Path:
    state = run_state(req)
    log(f"score: {req.out}" + {"finished": " (finished, reused)", "resuming": " (resuming)"}.get(state, ""))
    return ensure_run(req)[0]


def _baseline(
    model, spec: str, runs: dict, out: Path, options: ModelOptions
) -> tuple[dict | None, str | None]:
    """`foolbench baseline` against all champions; (None, why) where the model has no real images."""
    from foolbench.experiments.baseline import baseline, default_data, real_images

    data = default_data(model)
    try:
        real_images(data, model)
    except FoolbenchError as e:
        return None, f"no real-image baseline: {e}"
    run_dirs = [d for dirs in runs.values() for d in dirs]
    return baseline(spec, data, run_dirs, out, options), None


# -- the row ---------------------------------------------------------------------------------------
def attack_cells(summaries: list[dict]) -> dict:
    """One attack's cells from its seeds' summary.json: mean median, mean classes at >= 99%, and the
    median over seeds of the evaluations to the first 99% (never = infinite; None where that is the median)."""
    reached = [s["evaluations_to_first_99"] for s in summaries]
    evals = float(np.median([math.inf if e is None else e for e in reached]))
    return {
        "median": float(np.mean([s["median_confidence"] for s in summaries])),
        "classes_at_99": float(np.mean([s["classes_at_99"] for s in summaries])),
        "evals_to_99": None if math.isinf(evals) else evals,
    }


def make_row(
    name: str, sha: str, model, proto: Protocol, suite: Suite, runs: dict, base: dict | None
) -> dict:
    h, w = model.spec.size
    row = {
        "name": name,
        "model_sha256": sha,
        "classes": model.num_classes,
        "input_size": f"{model.spec.channels}x{h}x{w}",
        "suite": suite.name,
        "protocol": proto.version,
        "foolbench": __version__,
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "fooling_score": None,
    }
    row |= people_cells([d for dirs in runs.values() for d in dirs])  # where people rated the champions
    if proto.score == "real-rank":
        return row  # v3's cells need the real images: score_v3.v3_cells
    if proto.score == "nines-auc":
        row |= v2_cells(proto, suite, runs)
    else:
        for attack in proto.attack_names:
            dirs = runs.get(attack, [])
            cells = attack_cells([rundir.read_summary(d) for d in dirs]) if dirs else {}
            for key in ("median", "classes_at_99", "evals_to_99"):
                row[f"{attack}_{key}"] = cells.get(key)
        ranked = [row[f"{a}_median"] for a in proto.ranked]
        row["fooling_score"] = (
            float(HEADLINES[proto.headline](ranked)) if ranked and None not in ranked else None
        )
    fvr = (base or {}).get("fooling_vs_real") or {}
    row["baseline_median"] = base["median_confidence"] if base else None
    row["fooling_auroc"] = fvr.get("auroc")
    return row


# How a row's attacks combine into its fooling_score (the protocol's `headline`)
HEADLINES = {"mean": np.mean, "worst": np.max}


def run_v2(run_dir: Path, lookalikes: bool) -> dict:
    """One run's v2 figures from its files: the curve score (metrics.csv), scaled for look-alikes
    (summary.json), and the v1 figures beside it."""
    summary = rundir.read_summary(run_dir)
    metrics = rundir.read_metrics(run_dir)
    alike = len(summary.get("lookalike_classes", [])) if lookalikes else 0
    curve = curve_score(metrics["evaluations"], metrics["median_confidence"])
    return {"score": run_score(curve, summary["classes"], alike), "lookalikes": alike, "summary": summary}


def v2_cells(proto: Protocol, suite: Suite, runs: dict[str, list[Path]]) -> dict:
    """The row's v2 cells. Per attack: the mean over seeds of the run score, with its min and max, the
    look-alike classes per seed, and v1's median and classes at 99 % for reading. The headline,
    `fooling_score`, is per seed the protocol's headline over the attacks that ran (v2: the worst
    case, the highest score), then the mean over seeds; `fooling_score_low`/`_high` are its min and max over seeds, the spread a
    difference between two models must exceed before it means anything."""
    cells, per_seed = {}, []
    for attack in proto.attack_names:
        found = [run_v2(d, proto.lookalikes) for d in runs.get(attack, [])]
        scores = [f["score"] for f in found]
        cells |= {
            f"{attack}_score": float(np.mean(scores)) if found else None,
            f"{attack}_score_min": float(np.min(scores)) if found else None,
            f"{attack}_score_max": float(np.max(scores)) if found else None,
            f"{attack}_lookalikes": float(np.mean([f["lookalikes"] for f in found])) if found else None,
        }
        summaries = [f["summary"] for f in found]
        v1 = attack_cells(summaries) if found else {}
        cells |= {f"{attack}_{k}": v1.get(k) for k in ("median", "classes_at_99", "evals_to_99")}
        if found and (attack in proto.ranked or not proto.ranked):
            per_seed.append(scores)
    worst = HEADLINES[proto.headline](np.array(per_seed), axis=0) if per_seed else None
    skipped = [a.name for a in suite.attacks if a.name not in runs]  # gradient attacks it escaped
    return cells | {
        "fooling_score": float(np.mean(worst)) if worst is not None else None,
        "fooling_score_low": float(np.min(worst)) if worst is not None else None,
        "fooling_score_high": float(np.max(worst)) if worst is not None else None,
        "attacks_scored": "all" if not skipped else "without " + ", ".join(skipped),
    }
