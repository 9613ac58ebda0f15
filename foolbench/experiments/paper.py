"""`foolbench paper`: every experiment of the paper at one scale, and a report that sets each of our
figures beside the paper's.

The paper's numbers come from its models and budgets (AlexNet, LeNet trained by Caffe, millions of
evaluations); ours come from the models this machine has and the chosen scale. So every line of the
report's headline names the model and the budget on both sides, and its verdict follows a stated
rule (foolbench.report.headline): a reader should never compare two numbers without seeing what
each was measured on.

Each experiment writes ordinary outputs under OUT/work/ (run directories, transfer, defence and
baseline folders). A step whose outputs are already there is reused and a killed run is resumed, so
an interrupted `foolbench paper` continues where it stopped. The report is written last, from those
folders only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from foolbench.errors import FoolbenchError
from foolbench.fileio import read_json, write_json
from foolbench.text import safe_name

SCALES = ("cpu", "full")
MNIST_MODEL = "lenet-mnist"
MNIST_ATTACKS = ("mnist-direct", "mnist-cppn")
ENSEMBLE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
GRADIENT_PRESETS = ("gradient", "gradient-decay", "gradient-regularised", "gradient-blur")
GRADIENTS = (*GRADIENT_PRESETS, "gradient-imagenet")  # the MNIST presets, and ImageNet's
DEFENCE_ITERATIONS = {"cpu": (3, 1), "full": (5, 3)}  # (MNIST, ImageNet)
TRANSFERS = ("transfer-seeds", "transfer-arch")
PHOTOS = "imagenet-sample"  # labelled ImageNet photos: --data DIR or $FOOLBENCH_DATA/imagenet-sample


@dataclass(frozen=True)
class ImagenetPlan:
    """How the ImageNet experiments are run at one scale.

    At the cpu scale every black-box ImageNet run gets 40,000 evaluations on the preset's 10 classes
    (1/50 of the paper's CPPN budget per class set), three seeds for CPPN MAP-Elites and the patch
    search and one for the direct encoding (the paper's weakest search; each seed is hours of two
    shared cores). The paper's MAP-Elites stays below its 88 % there, so the ensemble and the
    defence, which need champions that fool the model to say anything, are fed by the patch search
    (beyond the paper), and the headline says so. The full scale runs the presets' (the paper's)
    budgets with its method."""

    evaluations: int | None  # per run; None: the preset's budget
    seeds: dict[str, int]  # seeds of each single-model ImageNet search (seed, seed + 1, ...)
    ensemble: str  # the preset the ensemble is fooled with
    defence: str  # the preset whose champions the defence retrains on


IMAGENET = {
    "cpu": ImagenetPlan(
        40_000,
        {"imagenet-direct": 1, "imagenet-cppn": 3, "imagenet-patch": 3},
        "imagenet-patch",
        "imagenet-patch",
    ),
    "full": ImagenetPlan(
        None,
        {"imagenet-direct": 1, "imagenet-cppn": 1, "imagenet-patch": 1},
        "imagenet-cppn",
        "imagenet-cppn",
    ),
}


@dataclass
class Context:
    """What every step needs: where to write, at which scale, on which models and data, and how to talk."""

    out: Path
    scale: str
    seed: int
    imagenet_model: str
    progress: bool
    log: Callable[[str], None]
    generations: int | None = None  # a cap on every run, for a quick look; None: the presets' budgets
    photos: Path | None = None  # labelled ImageNet photos; None: scikit-image's 8 unlabelled ones

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def plan(self) -> ImagenetPlan:
        return IMAGENET[self.scale]

    @property
    def imagenet_evaluations(self) -> int | None:
        """Every black-box ImageNet run's budget; None: the preset's."""
        return self.plan.evaluations

    def imagenet_seeds(self, attack: str) -> list[int]:
        return [self.seed + i for i in range(self.plan.seeds[attack])]

    @property
    def data(self) -> str:
        """The real ImageNet images a step measures on, as the baseline and the defence take them."""
        return str(self.photos) if self.photos is not None else "skimage"


# -- helpers -----------------------------------------------------------------------------------------
def request(
    ctx: Context, key: str, attack: str, models: list[str], seed: int | None = None, evaluations=None
):
    """The run at OUT/work/runs/KEY, as a runner.RunRequest."""
    from foolbench.runner import RunRequest

    return RunRequest(
        models=list(models),
        attack=attack,
        scale=ctx.scale,
        seed=ctx.seed if seed is None else seed,
        generations=ctx.generations,
        evaluations=evaluations,
        out=ctx.work / "runs" / key,
        progress=ctx.progress,
    )


def evolve(ctx: Context, req) -> Path:
    """One run directory (a `request`): started, resumed, or reused when it already finished."""
    from foolbench.runner import ensure_run

    ctx.log(f"{req.attack} on {' + '.join(req.models)} -> {req.out}")
    ensure_run(req)
    return Path(req.out)


def imagenet_key(attack: str, seed: int) -> str:
    return f"{attack}-s{seed}"


# -- the experiments ---------------------------------------------------------------------------------
# Each step writes its outputs under OUT/work/; the report finds them there and sets each beside the
# paper's figure (foolbench.report.headline), so `foolbench report OUT/work` gives the same page.
def mnist_runs(ctx: Context) -> None:
    for req in mnist_requests(ctx):
        evolve(ctx, req)


def mnist_requests(ctx: Context) -> list:
    return [request(ctx, a, a, [MNIST_MODEL]) for a in MNIST_ATTACKS]


def imagenet_runs(ctx: Context) -> None:
    """The paper's two searches and the patch search, each for every seed of the scale."""
    for req in imagenet_requests(ctx):
        evolve(ctx, req)


def imagenet_requests(ctx: Context) -> list:
    return [
        request(ctx, imagenet_key(a, s), a, [ctx.imagenet_model], s, ctx.imagenet_evaluations)
        for a in ctx.plan.seeds
        for s in ctx.imagenet_seeds(a)
    ]


def ensemble(ctx: Context) -> None:
    evolve(ctx, ensemble_request(ctx))


def ensemble_request(ctx: Context):
    attack = ctx.plan.ensemble
    return request(ctx, f"{attack}-ensemble", attack, list(ENSEMBLE), evaluations=ctx.imagenet_evaluations)


def transfers(ctx: Context) -> None:
    """Seed twins (MNIST) and architectures (MNIST; the ImageNet models with both ImageNet searches).
    The ImageNet model's own runs are those of `imagenet_runs` (its first seed), not evolved again."""
    from foolbench.experiments.transfer import run_experiment

    for name in TRANSFERS:
        out = ctx.work / name
        ctx.log(f"{name} -> {out}")
        run_experiment(name, out, **_transfer_args(ctx, name), log=ctx.log)


def _transfer_args(ctx: Context, name: str) -> dict:
    """How the paper runs transfer experiment `name` (`run_experiment`'s keyword arguments)."""
    imagenet = list(dict.fromkeys([ctx.imagenet_model, *ENSEMBLE]))
    return {
        "seed": ctx.seed,
        "generations": ctx.generations,
        "scale": ctx.scale,
        "imagenet": True,
        "progress": ctx.progress,
        "models": {"imagenet": imagenet} if name == "transfer-arch" else None,
        "evaluations": {"imagenet": ctx.imagenet_evaluations} if ctx.imagenet_evaluations else None,
        "reuse": {
            (ctx.imagenet_model, attack): ctx.work / "runs" / imagenet_key(attack, ctx.seed)
            for attack in ("imagenet-cppn", "imagenet-patch")
        },
    }


def defences(ctx: Context) -> None:
    """MNIST's defence, and ImageNet's from the plan's search. The ImageNet defence's first iteration
    attacks the model as given with seeds seed, seed + 1, ...: where `imagenet_runs` made those runs
    already (same search, budget and seeds), they are its runs, not made again."""
    from foolbench.experiments.defence import DEFAULT_RUNS, defend

    mnist_iters, imagenet_iters = DEFENCE_ITERATIONS[ctx.scale]
    search = ctx.plan.defence
    made = ctx.imagenet_seeds(search) if search in ctx.plan.seeds else []
    reuse = {
        r: ctx.work / "runs" / imagenet_key(search, ctx.seed + r) for r in range(DEFAULT_RUNS["imagenet"])
    }
    reuse = {r: d for r, d in reuse.items() if ctx.seed + r in made}
    for model, attack, iterations, data, evaluations, runs in (
        (MNIST_MODEL, "mnist-cppn", mnist_iters, None, None, {}),
        (ctx.imagenet_model, search, imagenet_iters, ctx.data, ctx.imagenet_evaluations, reuse),
    ):
        out = ctx.work / f"defence-{attack.split('-')[0]}"
        ctx.log(f"defence of {model} with {attack}, {iterations} iterations -> {out}")
        defend(
            model,
            attack,
            iterations,
            out,
            scale=ctx.scale,
            seed=ctx.seed,
            data=data,
            generations=ctx.generations,
            evaluations=evaluations,
            progress=ctx.progress,
            log=ctx.log,
            reuse=runs,
        )


def gradients(ctx: Context) -> None:
    for req in gradient_requests(ctx):
        evolve(ctx, req)


def gradient_requests(ctx: Context) -> list:
    return [
        request(ctx, a, a, [ctx.imagenet_model if a == "gradient-imagenet" else MNIST_MODEL])
        for a in GRADIENTS
    ]


def baselines(ctx: Context) -> None:
    """Real MNIST digits beside the MNIST champions."""
    from foolbench.experiments.baseline import baseline

    out = ctx.work / f"baseline-{MNIST_MODEL}"
    ctx.log(f"baseline of {MNIST_MODEL} -> {out}")
    runs = [ctx.work / "runs" / r for r in ("mnist-cppn", "mnist-direct")]
    baseline(MNIST_MODEL, runs=runs, out=out)


def imagenet_baselines(ctx: Context) -> None:
    """Real ImageNet photos beside the paper's searches' champions, and again beside the patch search's
    (a figure of another method, which its line says)."""
    from foolbench.experiments.baseline import baseline

    for attacks, suffix in ((("imagenet-cppn", "imagenet-direct"), ""), (("imagenet-patch",), "-patch")):
        model = Path(ctx.imagenet_model)
        out = ctx.work / f"baseline-{safe_name(model.stem if model.suffix else model.name)}{suffix}"
        ctx.log(f"baseline of {ctx.imagenet_model} on {ctx.data} -> {out}")
        runs = [ctx.work / "runs" / imagenet_key(a, s) for a in attacks for s in ctx.imagenet_seeds(a)]
        baseline(ctx.imagenet_model, data=ctx.data, runs=runs, out=out)


STEPS = (mnist_runs, imagenet_runs, ensemble, transfers, gradients, baselines, imagenet_baselines, defences)


def independent_runs(ctx: Context) -> list:
    """The plan's runs that need no other step's output, as runner.RunRequests: the MNIST and
    ImageNet searches, the ensemble, every transfer run the ImageNet searches do not make, and
    gradient ascent. The defences' runs wait for their retrained models."""
    from foolbench.experiments.transfer import experiment_requests

    planned = [*mnist_requests(ctx), *imagenet_requests(ctx), ensemble_request(ctx)]
    for name in TRANSFERS:
        args = _transfer_args(ctx, name)
        made = {Path(d) for d in args["reuse"].values()}  # the ImageNet model's own: imagenet_requests
        for group in experiment_requests(name, ctx.work / name, **args).values():
            planned += [req for req in group if Path(req.out) not in made]
    return planned + gradient_requests(ctx)


def run_side_by_side(ctx: Context, jobs: int) -> None:
    """Make `independent_runs` in `jobs` worker processes (one thread each; the visible GPUs shared
    round-robin, as `foolbench sweep` does), so that the steps find them finished. A run that fails
    is named in one line once the others are done."""
    from foolbench.sweep.executors import run_local
    from foolbench.sweep.plan import Job

    planned = [Job(str(req.out), "paper", req.seed, req) for req in independent_runs(ctx)]
    ctx.log(f"{len(planned)} independent runs, {jobs} at a time")
    failed = []
    for result in run_local(planned, jobs):
        if "error" in result:
            failed.append(f"{result['out']}: {result['error']}")
        else:
            ctx.log(f"{result['out']}: {result['state']} ({result['seconds']:,.0f} s)")
    if failed:
        raise FoolbenchError(f"{len(failed)} of the paper's runs failed: {'; '.join(failed)}")


def locate_photos(data: str | Path | None, log: Callable[[str], None]) -> Path | None:
    """The labelled ImageNet photos: --data DIR (which must exist), else $FOOLBENCH_DATA/imagenet-sample,
    else None (the steps fall back to scikit-image's 8 unlabelled photos, and say so)."""
    from foolbench.data.locate import locate

    what = "labelled ImageNet photos (one sub-folder per class, named by label or class index)"
    if data is not None:
        return locate(PHOTOS, data, what=what)
    try:
        return locate(PHOTOS, what=what)
    except FoolbenchError as e:
        log(
            f"{e}; the ImageNet baseline and the defence's clean accuracy use scikit-image's 8 unlabelled "
            "photos instead"
        )
        return None


# -- the command ---------------------------------------------------------------------------------------
def paper(
    out: str | Path = "reports/paper",
    scale: str = "cpu",
    seed: int = 0,
    imagenet_model: str = "efficientnet-lite0",
    progress: bool = True,
    log: Callable[[str], None] = print,
    generations: int | None = None,
    data: str | Path | None = None,
    jobs: int = 1,
) -> Path:
    """Run every step (reusing finished work), then write the report; returns the index.html path.
    `jobs` > 1 first makes the runs no step waits on in that many worker processes (`run_side_by_side`).

    `data` is the folder of labelled ImageNet photos (default: $FOOLBENCH_DATA/imagenet-sample, else
    scikit-image's unlabelled photos). The headline rows (ours, the paper's, both budgets, the
    verdict) are the report's headline.csv, also kept in OUT/paper.json with the settings they were
    made with."""
    from foolbench.report import write_report

    if scale not in SCALES:
        raise FoolbenchError(f"unknown scale '{scale}'; choose one of {', '.join(SCALES)}")
    photos = locate_photos(data, log)
    ctx = Context(Path(out), scale, seed, imagenet_model, progress, log, generations, photos)
    if jobs > 1:
        run_side_by_side(ctx, jobs)
    for step in STEPS:
        step(ctx)
    plan = ctx.plan
    note = (
        f"Every experiment of the paper at the '{scale}' scale ({_seeds_text(ctx)}; seed {seed} elsewhere), "
        "on this machine's models. The "
        "paper's figures were measured on its models and budgets, ours on those beside them. Real ImageNet "
        + (
            f"photos: {photos.name}/ ({PHOTOS} from --data or $FOOLBENCH_DATA, not shipped with foolbench). "
            if photos is not None
            else "photos: none given, so scikit-image's 8 unlabelled photos (pass --data DIR for labelled ones). "
        )
    )
    if plan.ensemble != "imagenet-cppn" or plan.defence != "imagenet-cppn":
        note += (
            f"At this scale the ensemble is fooled with {plan.ensemble} and the defence retrains on "
            f"{plan.defence}'s champions (beyond the paper, whose MAP-Elites needs far more evaluations "
            "to fool the models); their lines say so."
        )
    if generations is not None:
        note += (
            f" Every run was capped at {generations} generations (a quick look, not the presets' budgets)."
        )
    index = write_report([ctx.work], ctx.out, title="foolbench: the paper, reproduced", note=note)
    rows = pd.read_csv(ctx.out / "headline.csv", keep_default_na=False, na_values=[""])
    rows = rows.astype(object).where(rows.notna(), None).to_dict("records")
    seeds = {attack: ctx.imagenet_seeds(attack) for attack in ctx.plan.seeds}
    settings = {"scale": scale, "seed": seed, "imagenet_seeds": seeds, "generations": generations}
    settings |= {"imagenet_evaluations": ctx.imagenet_evaluations, "photos": photos.name if photos else None}
    write_json(ctx.out / "paper.json", {**settings, "rows": rows})
    return index


def _seeds_text(ctx: Context) -> str:
    """'seeds 0-2 of imagenet-cppn and imagenet-patch, seed 0 of imagenet-direct on ImageNet'."""
    by: dict[str, list[str]] = {}
    for attack in ctx.plan.seeds:
        seeds = ctx.imagenet_seeds(attack)
        text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
        by.setdefault(text, []).append(attack)
    return ", ".join(f"{text} of {' and '.join(attacks)}" for text, attacks in by.items()) + " on ImageNet"


def markdown_table(out: str | Path) -> str:
    """The headline as Markdown (for the README), read back from paper.json."""
    from foolbench.report.tables import headline_markdown

    return headline_markdown(pd.DataFrame(read_json(Path(out) / "paper.json")["rows"]))
