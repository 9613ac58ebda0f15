"""The README's tables of measured figures, written from the committed results files.

Each table sits in README.md between `<!-- figures: NAME -->` and `<!-- /figures -->` and opens
with the file it comes from and the command that wrote that file. After re-running a benchmark or
regenerating a report, run this script to rewrite the tables; `tests/test_readme.py` fails while
the README differs from what this script writes (and checks the figures quoted in the prose).

    python benchmarks/readme_figures.py           # rewrite the tables in README.md
    python benchmarks/readme_figures.py --check   # exit 1 if README.md is out of date
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
PAPER = ROOT / "reports" / "paper"
LEADERBOARD = ROOT / "reports" / "leaderboard.csv"
BLOCK = re.compile(r"(<!-- figures: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


# -- formatting -------------------------------------------------------------------------------------
def pct(confidence: float) -> str:
    """A confidence in %, rounded down (as every foolbench table does, so 99.995% never reads 100%)."""
    return f"{math.floor(confidence * 10000) / 100:.2f} %"


def share(fraction: float) -> str:
    return f"{round(fraction * 100):g} %"


def span(values, fmt: Callable = str, sep: str = "–") -> str:
    """'a–b' for the smallest and largest value, or one value when they are equal."""
    low, high = fmt(min(values)), fmt(max(values))
    return low if low == high else f"{low.removesuffix(' %')}{sep}{high}"


def number(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def table(header: list[str], rows: list[list]) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def source(path: Path, command: str) -> str:
    return f"*From `{path.relative_to(ROOT).as_posix()}`, written by `{command}`.*"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def load(payload: dict) -> str:
    """The machine's load average as the benchmark recorded it (before, after)."""
    values = payload.get("load_average_1min")
    if not values:
        return "load not recorded"
    return "load average " + " → ".join(f"{v:.1f}" for v in values)


# -- the tables ----------------------------------------------------------------------------------------
def presets() -> str:
    """Every shipped preset at the paper's scale and what its `cpu` scale changes."""
    from foolbench.presets import ATTACKS_DIR, load_preset

    rows = []
    for path in sorted(ATTACKS_DIR.glob("*.toml")):
        full, cpu = load_preset(path.stem, "full"), load_preset(path.stem, "cpu")
        rows.append([f"`{path.stem}`", describe(full), changes(full, cpu)])
    caption = (
        "*From `attacks/*.toml`; `tests/test_paper_settings.py` pins them to the paper. The `cifar-*` "
        "presets are not the paper's: they are the default for small colour models.*"
    )
    header = ["preset", "full scale (the paper's settings)", "`cpu` scale (2 cores)"]
    return f"{caption}\n\n{table(header, rows)}"


def _classes(spec) -> str:
    return "all classes" if spec == "all" else f"{len(spec)} classes"


def _crop(crop) -> list[str]:
    return {"ten": ["10 crops"], "center": ["centre crop"]}.get(crop, [])


def describe(preset) -> str:
    """A preset's settings in a line: images, budget, classes, evaluation, operators."""
    s, g = preset.search, preset.gradient
    if preset.method == "gradient":
        parts = [preset.attack["model"], f"{g['steps']} steps from noise", _classes(s["classes"])]
        if g.get("decay"):
            parts.append(f"L2 decay {g['decay']:g}")
        if g.get("blur_every"):
            every = "every step" if g["blur_every"] == 1 else f"every {g['blur_every']} steps"
            parts.append(f"blur radius {g['blur_radius']:g} {every}")
        if g.get("l1_percentile"):
            parts.append(f"pseudo-L1 at the {g['l1_percentile']:g}th percentile")
        return ", ".join(parts + _crop(preset.evaluation.get("crop")))
    if preset.method == "patch":
        return describe_patch(preset)
    if preset.method == "gradient-cppn":
        g = preset.tables["gradient-cppn"]
        parts = [
            preset.attack["model"],
            f"{g['steps']} Adam steps on CPPN weights (lr {g['lr']:g})",
            _classes(s["classes"]),
        ]
        return ", ".join(parts + _crop(preset.evaluation.get("crop"))) + " (beyond the paper)"
    options = dict(preset.encoding)
    kind = options.pop("type")
    from foolbench.encodings import make_encoding

    o = make_encoding(kind, **options).options
    colour = (
        "grey" if o["channels"] == 1 else ("HLS" if kind == "cppn" or o.get("colour") == "hls" else "RGB")
    )
    parts = [
        f"{o['resolution']}x{o['resolution']} {colour}{' CPPN' if kind == 'cppn' else ''}",
        f"batch {s['batch']}",
        f"{s['generations']} generations",
        _classes(s["classes"]),
        *_crop(preset.evaluation.get("crop")),
    ]
    if kind == "direct":
        halving = f" halving every {o['rate_halving']}" if o["rate_halving"] else ""
        parts.append(f"polynomial mutation rate {o['mutation_rate']:g}{halving}")
    else:
        parts.append(f"at most {o['max_hidden']} hidden nodes")
    return ", ".join(parts)


def describe_patch(preset) -> str:
    """A patch preset in a line: canvas, start pool, squares, budget, classes, evaluation."""
    o, s = preset.tables["patch"], preset.search
    colour = "grey" if o["channels"] == 1 else "RGB"
    parts = [
        f"{o['resolution']}x{o['resolution']} {colour}",
        f"best of {o['pool']} random CPPNs, then {o['children']} square per class per step (first "
        f"{share(o['p_init'])} of the image)",
        f"{s['evaluations']:,} evaluations",
        _classes(s["classes"]),
        *_crop(preset.evaluation.get("crop")),
    ]
    return ", ".join(parts) + " (beyond the paper)"


def changes(full, cpu) -> str:
    """What the cpu scale sets differently, or 'same'."""
    parts = []
    for section, key, fmt in (
        ("search", "classes", _classes),
        ("search", "batch", lambda v: f"batch {v}"),
        ("search", "generations", lambda v: f"{v} generations"),
        ("gradient", "steps", lambda v: f"{v} steps"),
        ("gradient-cppn", "steps", lambda v: f"{v} steps"),
        ("search", "evaluations", lambda v: f"{v:,} evaluations"),
    ):
        new = cpu.tables[section].get(key)
        steps_are_generations = cpu.gradient or cpu.tables["gradient-cppn"]
        if new != full.tables[section].get(key) and not (
            section == "search" and key == "generations" and steps_are_generations
        ):
            parts.append(fmt(new))
    if cpu.evaluation.get("crop") != full.evaluation.get("crop"):
        parts += _crop(cpu.evaluation.get("crop"))
    return ", ".join(parts) or "same"


def leaderboard() -> str:
    from foolbench.report.leaderboard import ranked, read_leaderboard

    rows = ranked(read_leaderboard(LEADERBOARD))
    rows = rows[rows["protocol"] == "v1"]
    body = [
        [
            r.suite,
            r.rank,
            r.name,
            pct(r.fooling_score),
            pct(r.cppn_median),
            pct(r.direct_median),
            f"{pct(r.gradient_median)} ({r.gradient_classes_at_99:g})",
            pct(r.baseline_median),
            f"{r.fooling_auroc:.2f}",
        ]
        for r in rows.itertuples()
    ]
    dates = "; ".join(
        f"{suite} rows (protocol {protocol}) on {', '.join(sorted(group['date'].unique()))}"
        for (suite, protocol), group in rows.groupby(["suite", "protocol"])
    )
    header = [
        "suite",
        "rank",
        "model",
        "fooling score",
        "CPPN median",
        "direct median",
        "gradient median (classes ≥ 99 %)",
        "real-image median",
        "fooling-vs-real AUROC",
    ]
    caption = f"{source(LEADERBOARD, 'foolbench score --model NAME --protocol v1')} Scored: {dates}."
    return f"{caption}\n\n{table(header, body)}"


def leaderboard_v2() -> str:
    """Protocol v2's rows: the worst-case score with its spread over seeds and the ties it makes, and
    each attack's score (look-alike classes per seed in brackets where measured)."""
    from foolbench.report.leaderboard import ranked, read_leaderboard

    rows = ranked(read_leaderboard(LEADERBOARD))
    rows = rows[rows["protocol"] == "v2"].dropna(axis=1, how="all")
    from foolbench.protocol import load_protocol

    attacks = [a for a in load_protocol("v2").attack_names if f"{a}_score" in rows.columns]

    def cell(r: dict, attack: str) -> str:
        score, alike = r[f"{attack}_score"], r.get(f"{attack}_lookalikes", math.nan)
        if pd.isna(score):
            return "–"
        return f"{score:.3f}" + (f" ({alike:.2g})" if not pd.isna(alike) and alike > 0 else "")

    body = [
        [
            r["suite"],
            r["rank"],
            r["name"],
            f"{r['fooling_score']:.3f} ({r['fooling_score_low']:.3f}–{r['fooling_score_high']:.3f})",
            r["ties"] or "–",
            *[cell(r, a) for a in attacks],
            r["attacks_scored"],
        ]
        for r in rows.to_dict("records")
    ]
    dates = ", ".join(sorted(rows["date"].unique()))
    header = ["suite", "rank", "model", "fooling score (seeds' range)", "ties with"]
    header += [f"{a} (look-alikes)" for a in attacks] + ["attacks"]
    caption = f"{source(LEADERBOARD, 'foolbench score --model NAME --protocol v2')} Scored: {dates}."
    return f"{caption}\n\n{table(header, body)}"


def leaderboard_v3() -> str:
    """Protocol v3's rows: the score with its spread over seeds and its ties, accuracy on the suite's
    real images, each attack's curve area (classes the judge recognised at the end, where it saw
    any), and why a row is not ranked."""
    from foolbench.protocol import load_protocol
    from foolbench.report.leaderboard import ranked, read_leaderboard

    rows = ranked(read_leaderboard(LEADERBOARD))
    rows = rows[rows["protocol"] == "v3"].dropna(axis=1, how="all")
    attacks = [a for a in load_protocol("v3").attack_names if f"{a}_score" in rows.columns]

    def cell(r: dict, attack: str) -> str:
        score, seen = r[f"{attack}_score"], r.get(f"{attack}_recognised", math.nan)
        if pd.isna(score):
            return "–"
        return f"{score:.3f}" + (f" ({seen:.2g})" if not pd.isna(seen) and seen > 0 else "")

    body = [
        [
            r["suite"],
            "–" if pd.isna(r["rank"]) else int(r["rank"]),
            r["name"],
            f"{r['fooling_score']:.3f} ({r['fooling_score_low']:.3f}–{r['fooling_score_high']:.3f})",
            r.get("ties") or "–",
            f"{r['accuracy'] * 100:.1f} %",
            *[cell(r, a) for a in attacks],
            f"{r['fooled_at_end']:.3f}",
            r["judge"].split(" (")[0],
            "ranked" if r["ranked"] == "true" else f"not ranked: {r['not_ranked_why']}",
        ]
        for r in rows.to_dict("records")
    ]
    dates = ", ".join(sorted(rows["date"].unique()))
    header = ["suite", "rank", "model", "fooling score (seeds' range)", "ties with", "accuracy"]
    header += [f"{a} (recognised)" for a in attacks] + ["fooled at the end", "judge", "ranked"]
    caption = f"{source(LEADERBOARD, 'foolbench score --model NAME --protocol v3')} Scored: {dates}."
    return f"{caption}\n\n{table(header, body)}"


def v3_measures() -> str:
    """The grey models under v3's measure and the alternatives tried, on the same runs."""
    path = RESULTS / "v3_measures.json"
    data = json.loads(path.read_text())
    measures = data["measures"]
    kinds = list(next(iter(measures.values())))
    body = [
        [name, *[f"{m[k]['mean']:.3f} ({m[k]['low']:.3f}–{m[k]['high']:.3f})" for k in kinds]]
        for name, m in measures.items()
    ]
    held = [
        "all" if all(steps.values()) else f"{sum(steps.values())} of {len(steps)}"
        for steps in data["ordering_beyond_seed_noise"].values()
    ]
    body.append(["PGD < OE, defended < plain LeNets, beyond seed noise", *held])
    caption = source(path, "nice -n 10 python benchmarks/v3_measures.py")
    return f"{caption}\n\n{table(['model', *kinds], body)}"


def paper() -> str:
    """The paper report's headline table, as `foolbench paper` writes it beside headline.csv."""
    path = PAPER / "headline.csv"
    table_md = (PAPER / "headline.md").read_text().strip()
    return f"{source(path, 'foolbench paper --scale cpu --out reports/paper')}\n\n{table_md}"


REACH_PAPER = {  # PAPER.md, "Results to reproduce", and the paper's Fig. 4
    "mnist-direct": "every class ≥ 99.99 % after 200 generations in each of 5 runs (Fig. 4); median 99.99 % by 200",
    "mnist-cppn": "median 99.99 % by 200 generations",
}


def reach() -> str:
    path = RESULTS / "reach.json"
    data = read_json(path)
    rows = []
    for attack, paper_says in REACH_PAPER.items():
        runs = {k.split("/")[1]: v for k, v in data["runs"].items() if k.startswith(f"{attack}/")}
        seeds = sorted(int(s[1:]) for s in runs)
        at200 = [r["at_generation_200"]["classes_at_9999"] for r in runs.values()]
        first = [r["first_generation"] for r in runs.values()]
        all_first = [f["all_9999"] for f in first if "all_9999" in f]
        median_first = [f["median_9999"] for f in first if "median_9999" in f]
        result = (
            "all 10 classes ≥ 99.99 % at generation 200 for every seed"
            if min(at200) == 10
            else f"{span(at200)} of 10 classes ≥ 99.99 % at generation 200"
        )
        if len(all_first) == len(first):
            result += f"; every class ≥ 99.99 % first at generation {span(all_first)}"
        if len(median_first) == len(first):
            result += f"; median ≥ 99.99 % from generation {span(median_first)}"
            if max(median_first) == 0:
                result += " (the random initial population)"
        model = f"{data['model']} ({data['accuracy'] * 100:.1f} % held-out)"
        budget = f"batches of {data['batch']}, generation 200 (searched to {data['search_limit']}), seeds {seeds[0]}–{seeds[-1]}"
        rows.append([f"`{attack}`", model, budget, result, paper_says])
    header = ["preset", "model", "budget", "result", "the paper"]
    return f"{source(path, 'python benchmarks/reach.py')}\n\n{table(header, rows)}"


def imagenet_reach() -> str:
    """The patch search on three class sets at 10,000 and 20,000 evaluations, the paper's MAP-Elites
    at 40,000 on the cpu classes (a run stopped early says where), an earlier stop's runs whose
    folders were not kept, and MNIST's all-digit reach."""
    path = RESULTS / "imagenet_reach.json"
    data = read_json(path)
    runs = data["imagenet"]
    rows = []
    for cset in data["imagenet_setting"]["class_sets"]:
        for seed in sorted({k.split("/s")[-1] for k in runs if k.startswith(f"patch/{cset}/")}):
            short, long = runs.get(f"patch/{cset}/e10000/s{seed}"), runs.get(f"patch/{cset}/e20000/s{seed}")
            rows.append(
                [
                    cset,
                    seed,
                    _final(short),
                    f"{short['classes_at_90']} / {short['classes_at_99']}" if _done(short) else "–",
                    _final(long),
                    " / ".join(_count(long["evaluations_to"][t]) for t in ("0.9", "0.99")) if long else "–",
                    f"{long['classes_at_90']} / {long['classes_at_99']}" if _done(long) else "–",
                    " + ".join(f"{r['wall_seconds']:,.0f}" for r in (short, long) if r) + " s",
                ]
            )
    header = [
        "classes",
        "seed",
        "10,000 evaluations: median",
        "classes ≥ 90 / 99 %",
        "20,000 evaluations: median",
        "its median ≥ 90 / 99 % after",
        "classes ≥ 90 / 99 %",
        "wall (shared)",
    ]
    patch = table(header, rows) if rows else "Not measured yet (no run of this preset on these sets)."
    elites = [
        [f"`{data['searches'][k.split('/')[0]]['imagenet']}`", k.split("/")[1], k.split("/s")[-1], *_marks(r)]
        for k, r in runs.items()
        if k.startswith("map-elites")
    ]
    marks_header = ["median at 4k", "10k", "20k", "40k", "50 / 90 / 99 % after", "≥ 99 % (PNGs)", "wall"]
    earlier = data.get("earlier", {})
    old = [[k.split("/")[0], k.split("/s")[-1], *_marks(r)] for k, r in earlier.get("runs", {}).items()]
    mnist = []
    for search in data["searches"]:
        got = [(k.split("/")[1][1:], r) for k, r in data["mnist"].items() if k.startswith(f"{search}/")]
        if got:
            firsts = " / ".join(f"{r['evaluations_to_all_9999'] or '–':,}" for _, r in got)
            seeds = " / ".join(s for s, _ in got)
            mnist.append([f"{search} (`{data['searches'][search]['mnist']}`)", seeds, firsts])
    mnist_table = table(["search", "seeds", "evaluations until all 10 digits ≥ 99.99 % (each seed)"], mnist)
    command = "nice -n 10 python benchmarks/imagenet_reach.py"
    return (
        f"{source(path, command)}\n\nThe patch search (`imagenet-patch`), one run per budget:\n\n{patch}\n\n"
        "The paper's MAP-Elites, 40,000 evaluations (`--adopt`: the runs of `foolbench paper --scale cpu`):"
        f"\n\n{table(['preset', 'classes', 'seed', *marks_header], elites)}\n\n"
        f"{earlier.get('title', 'An earlier stop')}:\n\n{table(['search', 'seed', *marks_header], old)}\n\n"
        f"lenet-mnist (an earlier stop):\n\n{mnist_table}"
    )


def _done(run: dict | None) -> bool:
    return bool(run) and run.get("finished", True)


def _final(run: dict | None) -> str:
    if not run:
        return "–"
    return pct(run["final_median_rescored"]) if _done(run) else f"stopped at {run['evaluations']:,}"


def _marks(run: dict) -> list[str]:
    """A run's median at the marks, evaluations to 50/90/99 %, classes at 99 % (or where it stopped), wall."""
    marks = [pct(v) if v is not None else "–" for v in run["median_at"].values()]
    to = " / ".join(_count(v) for v in run["evaluations_to"].values())
    end = f"{run['classes_at_99']} of 10" if _done(run) else f"stopped at {run['evaluations']:,}"
    return [*marks, to, end, f"{run['wall_seconds']:,.0f} s"]


def _count(evaluations: int | None) -> str:
    return "–" if evaluations is None else f"{evaluations:,}"


def imagenet_tuning() -> str:
    """The patch-search variants measured on the tuning classes (each set's final median, one row
    per variant and seed, so rows of one seed are paired), and the CPPN-weights probe."""
    path = RESULTS / "imagenet_reach.json"
    tuning = read_json(path)["tuning"]
    sets = list(tuning["sets"])
    seen: dict[tuple, dict] = {}
    for key, r in tuning["runs"].items():
        variant, tset, budget, seed = key.split("/")
        seen.setdefault((variant, budget, seed), {"question": r["question"]})[tset] = r
    rows = [
        [f"`{variant}`", r["question"], f"{int(budget[1:]):,}", seed[1:]]
        + [f"{pct(r[t]['median'])} ({r[t]['classes_at_90']})" if t in r else "–" for t in sets]
        for (variant, budget, seed), r in seen.items()
    ]
    header = [
        "variant",
        "what it tries",
        "evaluations",
        "seed",
        *(f"{t}: median (classes ≥ 90 %)" for t in sets),
    ]
    probe = [
        [
            key.split("/")[0],
            pct(r["start_median"]),
            pct(r["patch_search"]),
            pct(r["cma-es"]["median"]),
            pct(r["one-plus-one-es"]["median"]),
        ]
        for key, r in tuning.get("cppn_probe", {}).items()
    ]
    probe_header = ["set", "the pool's best", "squares (the base run)", "CMA-ES", "(1+1)-ES, 1/5th rule"]
    spent = {r["one-plus-one-es"]["evaluations"] for r in tuning.get("cppn_probe", {}).values()}
    command = "nice -n 10 python benchmarks/imagenet_reach.py --tune VARIANT ..."
    return (
        f"{source(path, command)}\n\n{table(header, rows)}\n\n"
        f"Median best confidence {span(spent, _count)} evaluations after the 200-CPPN pool, seed 0 (`--probe-cppn`):\n\n"
        f"{table(probe_header, probe)}"
    )


def imagenet_classes() -> str:
    """The two best classes of each seed's ImageNet CPPN run of the paper report, and every class of
    the ensemble run, scored on each member too."""
    path = PAPER / "classes.csv"
    df = pd.read_csv(path)
    rows = []
    shown = {**{f"imagenet-cppn-s{s}": 2 for s in range(3)}, "imagenet-patch-ensemble": None}
    for run, best in shown.items():
        got = df[df["run"] == run].sort_values("confidence", ascending=False)
        assert len(got), f"{run} is not in {path}"
        members = [c for c in got.columns if c.startswith("confidence_") and got[c].notna().all()]
        for _, r in (got.head(best) if best else got).iterrows():
            each = " / ".join(pct(r[c]) for c in members) if members else "–"
            rows.append([run, r["model"], r["label"], pct(r["confidence"]), each, r["top1_label"]])
    header = ["run", "model", "class", "confidence", "on each member", "top-1 label"]
    return f"{source(path, 'foolbench paper --scale cpu --out reports/paper')}\n\n{table(header, rows)}"


TRANSFERS = [  # (experiment folder, dataset, label)
    ("transfer-seeds", "mnist", "LeNet seed twins"),
    ("transfer-arch", "mnist", "LeNet and MLP"),
    ("transfer-arch", "imagenet", "EfficientNet-Lite0, -Lite1 and -Lite2"),
]


def transfer() -> str:
    rows = []
    for experiment, dataset, label in TRANSFERS:
        folder = PAPER / "work" / experiment / "transfer" / dataset
        for encoding in sorted(p.name for p in folder.iterdir() if p.name != "all"):
            df = pd.read_csv(folder / encoding / "transfer.csv")
            own, cross = df[df.source == df.target], df[df.source != df.target]
            if label.startswith("LeNet seed"):
                rows.append(
                    [
                        label,
                        encoding,
                        "each → each other",
                        span(own.fraction_at_99, share),
                        span(cross.fraction_at_99, share),
                        span(cross.fraction_at_50, share),
                        span(cross.median_confidence, pct),
                    ]
                )
                continue
            for r in cross.itertuples():
                mine = own[own.source == r.source].fraction_at_99.iloc[0]
                rows.append(
                    [
                        label,
                        encoding,
                        f"{r.source} → {r.target}",
                        share(mine),
                        share(r.fraction_at_99),
                        share(r.fraction_at_50),
                        pct(r.median_confidence),
                    ]
                )
    header = [
        "models",
        "champions",
        "evolved on → scored on",
        "≥ 99 % on their own model",
        "≥ 99 % on the other model",
        "≥ 50 % on the other model",
        "median on the other model",
    ]
    files = "reports/paper/work/transfer-*/transfer/*/*/transfer.csv"
    caption = f"*From `{files}`, written by `foolbench paper --scale cpu --out reports/paper`.*"
    return f"{caption}\n\n{table(header, rows)}"


def baselines() -> str:
    path = PAPER / "baselines.csv"
    df = pd.read_csv(path)
    rows = []
    for r in df.itertuples():
        known = not pd.isna(r.median_confidence_correct)
        rows.append(
            [
                r.model,
                f"{r.images:,} ({r.data})",
                pct(r.median_confidence),
                f"{pct(r.median_confidence_correct)} / {pct(r.median_confidence_wrong)}"
                if known
                else "no labels",
                pct(r.median_fooling_confidence),
                f"{r.auroc:.3f}",
                share(r.fpr_at_95_tpr),
            ]
        )
    header = [
        "model",
        "real images",
        "median top-1",
        "right / wrong",
        "median of its fooling images",
        "fooling-vs-real AUROC",
        "fooling images accepted at 95 % TPR",
    ]
    return f"{source(path, 'foolbench paper --scale cpu --out reports/paper')}\n\n{table(header, rows)}"


def inference() -> str:
    path = RESULTS / "inference.json"
    data = read_json(path)
    rows = [
        [
            c["model"],
            c["batch"],
            number(c["onnxruntime_images_per_second"]),
            number(c["pytorch_images_per_second"]),
            c.get("pytorch_memory_format", "nchw"),
            f"{c['onnxruntime_over_pytorch']:.2f}x",
        ]
        for c in data["cases"].values()
    ]
    header = ["model", "batch", "onnxruntime img/s", "PyTorch eager img/s", "eager memory format", "ratio"]
    settings = (
        f"{data['threads']} thread{'s' if data['threads'] > 1 else ''} each, allocator: {data['allocator']}"
        if "threads" in data
        else "threads and allocator not recorded"
    )
    caption = (
        f"{source(path, 'python benchmarks/inference.py')} Measured {data['date']}, {settings}, {load(data)}."
    )
    return f"{caption}\n\n{table(header, rows)}"


OVERHEAD_CASES = {
    "lenet-direct": "LeNet, direct",
    "lenet-cppn": "LeNet, CPPN",
    "lite0-cppn": "EfficientNet-Lite0, CPPN 256x256 HLS",
}


def overhead() -> str:
    path = RESULTS / "overhead.json"
    data = read_json(path)
    rows = []
    for key, case in data["cases"].items():
        stages = {k: v for k, v in case["stages_ms"].items() if k != "score"}
        rest = ", ".join(f"{k} {v:g}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        rows.append(
            [
                OVERHEAD_CASES.get(key, key),
                case["batch"],
                number(case["bare_images_per_second"]),
                number(case["attack_evaluations_per_second"]),
                f"{case['ratio']:.2f}",
                f"{case['stages_ms']['score']:g}",
                rest,
            ]
        )
    header = [
        "case",
        "batch",
        "bare img/s",
        "attack eval/s",
        "ratio",
        "score (ms)",
        "the rest of a generation (ms)",
    ]
    caption = f"{source(path, 'python benchmarks/overhead.py')} Measured {data['date']}, {load(data)}."
    return f"{caption}\n\n{table(header, rows)}"


def peer_pyribs() -> str:
    path = RESULTS / "peer_pyribs.json"
    data = read_json(path)
    rows = [
        [
            r["seed"],
            r["foolbench"]["classes_at_9999"],
            f"{r['foolbench']['wall_seconds']:.1f}",
            r["pyribs"]["classes_at_9999"],
            f"{r['pyribs']['sum_best_confidence']:.2f}",
            f"{r['pyribs']['wall_seconds']:.1f}",
        ]
        for r in data["runs"]
    ]
    header = [
        "seed",
        "foolbench: classes ≥ 99.99 %",
        "seconds",
        "pyribs: classes ≥ 99.99 %",
        "sum of best",
        "seconds",
    ]
    caption = f"{source(path, 'python benchmarks/peer_pyribs.py')} {data['evaluations']:,} evaluations on {data['model']}."
    return f"{caption}\n\n{table(header, rows)}"


def cppn_size() -> str:
    path = RESULTS / "cppn_size.json"
    data = read_json(path)
    rows = []
    for key, run in data["runs"].items():
        attack, scale, seed = key.split("/")
        last = run["by_generation"][-1]
        peak = max(row["max"] for row in run["by_generation"])
        worst = max(row["share_at_cap"] for row in run["by_generation"])
        rows.append(
            [
                f"`{attack}` ({scale}), {seed}",
                run["model"],
                run["generations"],
                f"{last['median']:g} / {last['mean']:g} / {last['max']}",
                peak,
                run["max_hidden"],
                share(worst),
            ]
        )
    header = [
        "run",
        "model",
        "generations",
        "hidden nodes of the champions at the end: median / mean / max",
        "most at any point",
        "cap",
        "cells whose champion is full",
    ]
    return f"{source(path, 'python benchmarks/cppn_size.py')}\n\n{table(header, rows)}"


def cifar_zoo() -> str:
    """The CIFAR-10 references' card figures (and the accuracy re-measured from each file); models not
    built yet are listed as such, and builds that a recipe change replaced follow as "earlier"."""
    path = RESULTS / "cifar_zoo.json"
    payload = read_json(path)
    body = []
    rows = [(f"`{name}`", m) for name, m in payload["models"].items()]
    rows += [(f"`{name}`, earlier build", m) for name, ms in payload.get("earlier", {}).items() for m in ms]
    for name, m in rows:
        if m.get("built") is False:
            body.append([name, "not built yet", *["–"] * 5])
            continue
        noise = " / ".join(
            pct(m["confident_on_noise"][k]).removesuffix(" %") for k in ("uniform", "smoothed", "cppn")
        )
        wrong = m["median_confidence_wrong"]
        body.append(
            [
                name,
                f"{m['card_accuracy'] * 100:.2f} % ({m['measured_accuracy'] * 100:.2f} %)",
                f"{pct(m['median_confidence_right'])} / {'–' if wrong is None else pct(wrong)}",
                f"{m['robust_accuracy'] * 100:.1f} %",
                f"{noise} %",
                f"{m['training_seconds_wall']:,} s",
                _cifar_recipe(m),
            ]
        )
    header = [
        "model",
        "test accuracy, card (re-measured from the file)",
        "median confidence right / wrong",
        "PGD-20 at 8/255",
        "> 95 % on uniform / smoothed / CPPN",
        "training time (wall; the defence: its whole build)",
        "recipe",
    ]
    return f"{source(path, 'python benchmarks/cifar_zoo.py')}\n\n{table(header, body)}"


def _cifar_recipe(m: dict) -> str:
    """A reference's recipe in a few words: its method, or the defence's iterations with the median
    confidence fresh runs reach at each."""
    if m.get("defence_iterations"):
        medians = " → ".join(pct(row["median_confidence"]) for row in m["defence_iterations"])
        n = len(m["defence_iterations"]) - 1
        return f"retraining defence, {n} iteration{'s' * (n != 1)} (fresh runs' median: {medians})"
    recipe = m["recipe"]
    method = recipe["method"]
    if method == "pgd":
        method = "FGSM, random start" if recipe["steps"] == 1 else f"PGD-{recipe['steps']}"
    if method == "oe":
        method = "outlier exposure" + (", in the same batches" if recipe.get("joint_outliers") else "")
    if recipe.get("recalibrate"):
        method += ", batch-norm statistics recomputed"
    return method + (f", whitening eps {recipe['whitening']:g}" if recipe.get("whitening") else "")


BLOCKS: dict[str, Callable[[], str]] = {
    "presets": presets,
    "leaderboard": leaderboard,
    "leaderboard-v2": leaderboard_v2,
    "leaderboard-v3": leaderboard_v3,
    "v3-measures": v3_measures,
    "paper": paper,
    "reach": reach,
    "imagenet_reach": imagenet_reach,
    "imagenet_tuning": imagenet_tuning,
    "imagenet-classes": imagenet_classes,
    "transfer": transfer,
    "baselines": baselines,
    "inference": inference,
    "overhead": overhead,
    "peer-pyribs": peer_pyribs,
    "cppn-size": cppn_size,
    "cifar-zoo": cifar_zoo,
}


# -- the README -------------------------------------------------------------------------------------------
def rewrite(text: str) -> str:
    """`text` with every figures block replaced by what its files say now."""

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(f"README.md: unknown figures block '{name}'; known: {', '.join(BLOCKS)}")
        return f"{match[1]}{BLOCKS[name]()}\n{match[4]}"

    return BLOCK.sub(fill, text)


def main(check: bool) -> int:
    text = README.read_text(encoding="utf-8")
    new = rewrite(text)
    if check:
        if new != text:
            print("README.md is out of date: run python benchmarks/readme_figures.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    print(f"wrote {len(BLOCK.findall(new))} tables into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))
