"""The page's outline: the report's inputs arranged into one section per experiment, each with its
headline lines.

- Runs of an evolution attack go to the section of their dataset and encoding (MNIST direct, MNIST
  CPPN, ImageNet direct, ...); gradient-ascent runs to one section. Within a section, runs of one
  attack on one model (or ensemble) form a group: one headline line, one plot panel with a thin line
  per seed, one gallery.
- Runs made inside a defence folder, or inside a `foolbench experiment` folder whose transfer tables
  the report reads, belong to that experiment's section: they are its raw material, not separate
  results (and would otherwise count twice).
- Transfer, defence and baseline results each get one section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from foolbench.report.collect import Baseline, Defence, Inputs, Run, Transfer
from foolbench.report.headline import FOOLED, REFERENCES, Line, median, share_text
from foolbench.text import percent

DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar": "CIFAR-size colour", "imagenet": "ImageNet"}
REAL_IMAGES = {
    "mnist": "MNIST digits",
    "cifar10": "CIFAR-10 test images",
    "imagenet": "ImageNet images",
    "imagenet-sample": "ImageNet photos",
    "skimage": "scikit-image photos",
}
ENCODINGS = {"direct": "direct encoding", "cppn": "CPPN encoding"}
# Searches that are not MAP-Elites over an encoding: named by method (foolbench.search.ENGINES)
METHODS = {"patch": "patch search", "gradient-cppn": "gradient ascent on CPPN weights"}
PAPER_METHODS = ("map-elites", "gradient")  # the paper's searches; any other is beyond it
TRANSFER_TITLES = {
    "transfer-seeds": "Transfer between seed twins",
    "transfer-arch": "Transfer across architectures",
}
ORDER = {"mnist": 0, "cifar10": 1, "imagenet": 3}  # datasets: MNIST, CIFAR-10, others, ImageNet last


@dataclass
class Group:
    """Runs of one attack on one model (or ensemble), one per seed."""

    key: str
    title: str
    runs: list[Run]

    @property
    def first(self) -> Run:
        return self.runs[0]


@dataclass
class Section:
    key: str  # the page anchor
    title: str
    kind: str  # evolution, gradient, transfer, defence or baseline
    groups: list[Group] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    defences: list[Defence] = field(default_factory=list)
    baselines: list[Baseline] = field(default_factory=list)
    owned: list[Run] = field(default_factory=list)  # runs its transfer or defence experiments made
    lines: list[Line] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [r for g in self.groups for r in g.runs] + self.owned


def dataset_name(dataset: str) -> str:
    return DATASETS.get(dataset, dataset)


def arrange(inputs: Inputs) -> list[Section]:
    """Every input in exactly one section, sections in the paper's order, headline lines computed."""
    sections: dict[str, Section] = {}
    owners = [d.path for d in inputs.defences] + [t.root for t in inputs.transfers if t.root is not None]
    owned = [r for r in inputs.runs if _inside(r.path, owners)]
    for run in inputs.runs:
        if any(run is r for r in owned):
            continue
        key, title, kind = _run_section(run)
        section = sections.setdefault(key, Section(key, title, kind))
        _add_to_group(section, run)
    if inputs.transfers:
        section = sections.setdefault("transfer", Section("transfer", "Transfer to other models", "transfer"))
        section.transfers = sorted(inputs.transfers, key=_transfer_rank)
    if inputs.defences:
        section = sections.setdefault("defence", Section("defence", "Retraining defence", "defence"))
        section.defences = sorted(inputs.defences, key=lambda d: (ORDER.get(_defence_facts(d)[1], 2), d.key))
    if inputs.baselines:
        section = sections.setdefault("baseline", Section("baseline", "Real-image baseline", "baseline"))
        section.baselines = sorted(
            inputs.baselines, key=lambda b: (ORDER.get(str(b.result.get("data")), 2), b.key)
        )
    for run in owned:
        key = "defence" if _inside(run.path, [d.path for d in inputs.defences]) else "transfer"
        sections[key].owned.append(run)
    ordered = sorted(sections.values(), key=_rank)
    for section in ordered:
        for group in section.groups:
            group.runs.sort(key=lambda r: (r.seed if isinstance(r.seed, int) else 0, r.key))
        section.groups.sort(  # MNIST first, single models before ensembles, then by name
            key=lambda g: (ORDER.get(g.first.dataset, 2), g.first.ensemble, g.first.attack, g.first.model)
        )
        section.lines = _lines(section, inputs.runs)
    return ordered


def _inside(path: Path, folders: list[Path]) -> bool:
    resolved = path.resolve()
    return any(f.resolve() in resolved.parents for f in folders)


def _run_section(run: Run) -> tuple[str, str, str]:
    if run.method == "gradient":
        return "gradient", "Gradient ascent", "gradient"
    if run.method in METHODS:
        return (
            f"{run.dataset}-{run.method}",
            f"{dataset_name(run.dataset)}, {METHODS[run.method]}",
            "evolution",
        )
    encoding = ENCODINGS.get(run.encoding, f"{run.encoding or 'other'} encoding")
    return f"{run.dataset}-{run.encoding or 'other'}", f"{dataset_name(run.dataset)}, {encoding}", "evolution"


def _rank(section: Section) -> tuple:
    kinds = ("evolution", "gradient", "transfer", "defence", "baseline")
    if section.kind != "evolution":
        return (kinds.index(section.kind),)
    run = section.groups[0].first
    return (0, ORDER.get(run.dataset, 2), run.dataset, {"direct": 0, "cppn": 1}.get(run.encoding, 2))


def _add_to_group(section: Section, run: Run) -> None:
    for group in section.groups:
        if group.first.attack == run.attack and group.first.model == run.model:
            group.runs.append(run)
            return
    title = f"{run.model.replace('+', ' + ')} · {run.attack}"  # an ensemble's members may wrap
    section.groups.append(Group(f"{section.key}-{len(section.groups)}", title, [run]))


# -- headline lines --------------------------------------------------------------------------------
def _lines(section: Section, runs: list[Run]) -> list[Line]:
    if section.kind in ("evolution", "gradient"):
        return [group_line(section, g) for g in section.groups]
    if section.kind == "transfer":
        return [line for t in headline_transfers(section.transfers, runs) if (line := transfer_line(t, runs))]
    if section.kind == "defence":
        return [defence_line(d, section.owned) for d in section.defences if len(d.table)]
    return [baseline_line(b, runs) for b in section.baselines]


def method_name(method: str) -> str:
    """'' for the paper's own searches, else what the headline calls the search behind a figure."""
    return "" if method in PAPER_METHODS else f"the {METHODS.get(method, method)}"


def group_line(section: Section, group: Group) -> Line:
    """Seeds of one attack on one model: the median over seeds of each run's figure.

    A search the paper did not run has no paper figure of its own; on an ensemble it is still set
    beside the paper's ensemble figure (MAP-Elites over CPPNs), saying by which method ours was made."""
    run = group.first
    ref = REFERENCES.get((run.dataset, run.method, run.encoding, run.ensemble))
    method = method_name(run.method)
    if ref is None and method and run.ensemble:
        ref = REFERENCES.get((run.dataset, "map-elites", "cppn", True))
    summaries = [r.summary for r in group.runs]
    classes = int(median([r.summary.get("classes") or len(r.results) for r in group.runs]))
    effect, effect_text = None, ("", "")
    if run.ensemble:
        at_90 = median([s.get("classes_at_90", 0) for s in summaries])
        ours, text = at_90 / max(classes, 1), f"{at_90:g} of {classes} classes"
        if ref is not None and ref.value is not None:
            effect = ours >= ref.value
            effect_text = (
                "same way: as large a share of classes ≥ 90% as the paper's ensemble, or larger",
                "a smaller share of classes ≥ 90% than the paper's ensemble",
            )
    else:
        ours = median([s["median_confidence"] for s in summaries])
        text = percent(ours)
    gradient = run.method == "gradient"
    budget = median([s.get("generations" if gradient else "evaluations") or 0 for s in summaries])
    at_99 = median([s.get("classes_at_99", 0) for s in summaries])
    detail = f"{at_99:g} of {classes} classes ≥ 99%"
    if len(group.runs) > 1:
        seeds = [s["median_confidence"] for s in summaries]
        detail += f"; median of {len(group.runs)} seeds (medians {percent(min(seeds))}–{percent(max(seeds))})"
    if run.ensemble:
        detail += "; " + member_detail(group)
    experiment = section.title
    if run.ensemble:
        experiment += ", ensemble"
    if gradient:
        experiment += f", {dataset_name(run.dataset)} ({run.attack})"
    return Line(
        section.key,
        experiment,
        run.model.replace("+", " + "),
        ours,
        text,
        ref,
        budget or None,
        "steps" if gradient else "evaluations",
        effect=effect,
        effect_text=effect_text,
        detail=detail,
        outputs=[str(r.path) for r in group.runs],
        method=method,
    )


def member_detail(group: Group) -> str:
    """An ensemble's champions scored on each member alone (results.csv's confidence_<member>):
    classes at >= 90 % per member, the median over seeds."""
    members = [
        c.removeprefix("confidence_") for c in group.first.results.columns if c.startswith("confidence_")
    ]
    if not members:
        return "not scored on each member"
    counts = [
        median(
            [
                int((r.results[f"confidence_{m}"] >= 0.9).sum())
                for r in group.runs
                if f"confidence_{m}" in r.results
            ]
        )
        for m in members
    ]
    return "on each member alone ≥ 90%: " + ", ".join(
        f"{m} {c:g}" for m, c in zip(members, counts, strict=True)
    )


def headline_transfers(transfers: list[Transfer], runs: list[Run] | None = None) -> list[Transfer]:
    """One transfer table per experiment group: `all` (every attack together) where there is one,
    unless its champions come from searches of different kinds (the paper's and another): then one
    per attack, so the paper's figure is set beside its own method's champions only."""
    chosen: dict[tuple, list[Transfer]] = {}
    for t in transfers:
        key = (str(t.root), t.meta.get("group")) if t.root is not None else (str(t.path),)
        chosen.setdefault(key, []).append(t)
    out = []
    for group in chosen.values():
        pooled = [t for t in group if t.path.name == "all"]
        if pooled and len({bool(method_name(m)) for m in transfer_methods(pooled[0], runs or [])}) <= 1:
            out.append(pooled[0])
        else:
            out += [t for t in group if t.path.name != "all"] or group
    return sorted(out, key=_transfer_rank)


def transfer_methods(t: Transfer, runs: list[Run]) -> set[str]:
    """The search methods of a transfer table's source runs (those the report has read)."""
    return {r.method for p in t.meta.get("runs", []) if (r := find_run(str(p), runs)) is not None}


def _transfer_rank(t: Transfer) -> tuple:
    """Seed twins before architectures, MNIST before ImageNet, `all` before single attacks."""
    names = list(TRANSFER_TITLES)
    name = t.experiment.get("experiment")
    group = str(t.meta.get("group") or "")
    return (
        names.index(name) if name in names else len(names),
        ORDER.get(group, 1),
        t.path.name != "all",
        str(t.path),
    )


def transfer_title(t: Transfer) -> str:
    """Transfer between seed twins (MNIST), or for a `foolbench transfer` folder: Transfer: its path."""
    group = str(t.meta.get("group") or "")
    title = TRANSFER_TITLES.get(t.experiment.get("experiment") or t.meta.get("experiment") or "", "Transfer")
    attacks = t.meta.get("attacks") or []
    one = f", {attacks[0]}" if t.path.name != "all" and len(attacks) == 1 else ""
    return title + (
        f" ({dataset_name(group)}{one})" if group else f": {'/'.join(t.path.resolve().parts[-2:])}"
    )


def transfer_line(t: Transfer, runs: list[Run]) -> Line | None:
    table = t.table
    cross = table[table["source"] != table["target"]]["fraction_at_99"].dropna()
    own = table[table["source"] == table["target"]]["fraction_at_99"].dropna()
    if cross.empty:
        return None
    name = t.experiment.get("experiment") or t.meta.get("experiment") or ""
    ours = float(np.median(cross))
    attacks = set(t.meta.get("attacks") or [])  # a per-attack table's meta lists its group's every run
    sources = [
        r
        for p in t.meta.get("runs", [])
        if (r := find_run(str(p), runs)) is not None and (not attacks or r.attack in attacks)
    ]
    budget = median([r.summary["evaluations"] for r in sources]) if sources else None
    detail = f"on the model they were evolved on: {share_text(float(np.median(own)))}" if len(own) else ""
    methods = sorted({m for r in sources if (m := method_name(r.method))})  # not `name`: := binds out here
    return Line(
        "transfer",
        transfer_title(t),
        ", ".join(dict.fromkeys(str(x) for x in table["target"])),
        ours,
        f"{share_text(ours)} (pairs {share_text(cross.min())}–{share_text(cross.max())})",
        REFERENCES.get(("transfer", name)) or REFERENCES[("transfer", "transfer-seeds")],
        budget,
        effect=ours > 0,
        effect_text=(
            "same way: champions fool models they were not evolved on",
            "no champion fools another model at ≥ 99%",
        ),
        detail=detail,
        outputs=[str(t.path)],
        method=" and ".join(methods),
    )


def find_run(path: str, runs: list[Run]) -> Run | None:
    """The collected run that a path written by another command names. Paths are stored as given
    (often relative to where that command ran), so the run sharing the longest tail of names wins:
    transfer-seeds/runs/mnist/X and transfer-arch/runs/mnist/X are different runs."""
    wanted = Path(path).parts[::-1]
    best, depth = None, 0
    for run in runs:
        have = run.path.resolve().parts[::-1]
        n = next(
            (i for i, (a, b) in enumerate(zip(wanted, have, strict=False)) if a != b),
            min(len(wanted), len(have)),
        )
        if n > depth:
            best, depth = run, n
    return best


def _defence_facts(d: Defence) -> tuple[str, str]:
    """The attack and dataset of a defence (defence.json), or what its folder name suggests."""
    settings = d.meta.get("settings", {}) if isinstance(d.meta.get("settings"), dict) else {}
    attack = str(settings.get("attack") or "")
    return attack, str(d.meta.get("dataset") or attack.split("-")[0] or "other").lower()


def defence_title(d: Defence) -> str:
    attack, dataset = _defence_facts(d)
    return f"Retraining defence, {dataset_name(dataset)}" + (f" ({attack})" if attack else "")


def defence_line(d: Defence, owned: list[Run] | None = None) -> Line:
    """The defence's medians over iterations. It shows the paper's effect only if its first iteration
    starts from fooling images (median >= FOOLED): otherwise there is nothing to defend against."""
    t = d.table
    attack, dataset = _defence_facts(d)
    ref = REFERENCES.get(("defence", dataset))
    medians = [float(m) for m in t["median_confidence"]]
    falls = len(medians) > 1 and medians[-1] < medians[0]
    every = ref is not None and ref.value is not None and ref.value > 0.99  # "99.99% in every iteration"
    unmeasured = ""
    if not every and medians[0] < FOOLED:
        unmeasured = (
            f"its first iteration is not fooled (median {percent(medians[0])} < {FOOLED:.0%}), so there is "
            "no fooling for retraining to take away"
        )
    methods = sorted({m for r in owned or [] if _inside(r.path, [d.path]) and (m := method_name(r.method))})
    ours = min(medians) if every else medians[-1]
    shown = medians if len(medians) <= 4 else [medians[0], medians[-1]]
    text = " → ".join(percent(m) for m in shown)
    runs = t["runs"].iloc[-1] if "runs" in t else 1
    budget = float(t["evaluations"].iloc[-1]) / max(float(runs), 1.0) if "evaluations" in t else None
    detail = f"{len(medians) - 1} retrainings"
    if "fooled_share" in t:
        detail += (
            f"; last new champions put in the fooling class: {share_text(float(t['fooled_share'].iloc[-1]))}"
        )
    if "clean_accuracy" in t and len(t):
        detail += f"; clean accuracy {' → '.join(percent(float(a)) for a in t['clean_accuracy'])}"
    return Line(
        "defence",
        defence_title(d),
        str(t["model"].iloc[0]) if "model" in t else "",
        ours,
        text,
        ref,
        budget,
        effect=None if every else falls,
        effect_text=(
            "same way: confidence falls after retraining",
            "confidence does not fall after retraining",
        ),
        detail=detail,
        outputs=[str(d.path)],
        method=" and ".join(methods),
        unmeasured=unmeasured,
        data=_defence_data(d),
    )


def _defence_data(d: Defence) -> str:
    """The photos the clean accuracy was measured on (defence.json's clean_photos), if any."""
    photos = d.meta.get("clean_photos")
    if not isinstance(photos, dict) or "held_out" not in photos:
        return ""
    where = photos.get("data") or "natural photos"
    return (
        f"clean accuracy on {photos['held_out']:,} photos of {where} held out of fine-tuning on the "
        f"other {photos.get('fine_tuned_on', '?'):,}"
    )


def baseline_line(b: Baseline, runs: list[Run] | None = None) -> Line:
    """Real images' median top-1 confidence (right and wrong too, where the photos are labelled) beside
    the fooling images' median, as the paper sets 60.3 % (86.7 / 33.7 %) beside 88.1 %."""
    r = b.result
    real = float(r["median_confidence"])
    versus = r.get("fooling_vs_real") or {}
    fooling = versus.get("median_fooling_confidence")
    text = f"real {percent(real)}"
    if r.get("correct") is not None:  # labelled photos: the medians where the model is right and wrong
        right, wrong = (r.get(f"median_confidence_{k}") for k in ("correct", "wrong"))
        text += f" (right {'–' if right is None else percent(right)}, wrong {'–' if wrong is None else percent(wrong)})"
    text += f", fooling {percent(fooling)}" if fooling is not None else ""
    auroc = versus.get("auroc")
    detail = f"{r.get('images', '?'):,} real images" if isinstance(r.get("images"), int) else "real images"
    if r.get("correct") is not None:
        detail += f", {r['correct']:,} right"
    detail += f"; fooling-vs-real AUROC {auroc:.2f}" if auroc is not None else ""
    sources = [found for x in versus.get("runs", []) if (found := find_run(str(x.get("path")), runs or []))]
    methods = sorted({m for run in sources if (m := method_name(run.method))})
    attacks = sorted({str(x.get("attack")) for x in versus.get("runs", []) if x.get("attack")})
    data = str(r.get("data_name") or r.get("data") or "real images")
    name = REAL_IMAGES.get(data, f"photos ({data})")
    return Line(
        "baseline",
        f"Real-image baseline, {name}" + (f", fooling images of {', '.join(attacks)}" if methods else ""),
        str(r.get("model") or ""),
        real,
        text,
        REFERENCES[("baseline",)],
        None,
        effect=None if fooling is None else fooling >= real,
        effect_text=(
            "same way: fooling images score at least as high as real ones",
            "fooling images score below real ones",
        ),
        detail=detail,
        outputs=[str(b.path)],
        method=" and ".join(methods),
        data=str(r.get("data_source") or ""),
    )
