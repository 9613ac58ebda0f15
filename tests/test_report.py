"""`foolbench report` on tiny real runs: the headline and tables reproduce the runs' files, hostile
labels are escaped and never name a file, bad inputs write nothing, and a real browser renders the
page headline first, with no table wider than a 1280 px window."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import export, tiny
from PIL import Image

from foolbench.experiments.baseline import baseline
from foolbench.experiments.transfer import transfer
from foolbench.models import ModelCard, ModelOptions
from foolbench.report import write_report
from foolbench.report.headline import (
    BEYOND,
    NO_FIGURE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REFERENCES,
    REPRODUCED,
    REPRODUCED_SMALLER,
    Line,
    Reference,
)
from foolbench.runner import RunRequest, start_run
from foolbench.text import percent

EVIL = "<script>alert(1)</script>"
LABELS = [EVIL, "../x/y", 'a "quoted" & <b>bold</b>', *map(str, range(3, 10))]
DEFENCE = """iteration,model,model_path,model_sha256,fooling_images,runs,evaluations,median_confidence,\
mean_confidence,classes_at_99,classes_at_9999,fooled_share,clean_accuracy
0,tiny,/m/tiny.onnx,aaa,0,1,800,0.9,0.8,4,1,0.7,0.95
1,tiny-d1,/m/tiny-d1.onnx,bbb,10,1,800,0.6,0.5,2,0,0.4,0.94
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """One folder holding two finished runs (one with hostile labels), an unfinished one, a transfer,
    a baseline and a defence folder: everything a report reads."""
    root = tmp_path_factory.mktemp("results")
    model = export(tiny(), root / "tiny.onnx", (1, 1, 28, 28))
    labels = root / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    for name, options, attack in (
        ("plain", ModelOptions(), "mnist-direct"),
        ("evil", ModelOptions(labels=str(labels)), "mnist-cppn"),
    ):
        req = RunRequest(
            models=[str(model)],
            attack=attack,
            generations=3,
            out=root / "runs" / name,
            model_options=options,
            progress=False,
        )
        start_run(req)
    unfinished = root / "runs" / "unfinished"
    unfinished.mkdir()
    shutil.copy(root / "runs" / "plain" / "manifest.json", unfinished / "manifest.json")
    transfer([root / "runs" / "plain"], [str(model)], root / "transfer")
    baseline(str(model), "mnist", [root / "runs" / "plain"], root / "baseline")
    (root / "defence").mkdir()
    (root / "defence" / "defence.csv").write_text(DEFENCE)
    settings = {
        "settings": {"attack": "imagenet-cppn"},
        "dataset": "imagenet",
        "iterations": [{"iteration": 0, "run_dirs": [str(root / "runs" / "plain")]}],  # a reused run
    }  # as `foolbench defend` writes
    (root / "defence" / "defence.json").write_text(json.dumps(settings))
    return root


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> SimpleNamespace:
    out = tmp_path_factory.mktemp("report") / "report"
    warnings = []
    index = write_report([results], out, note="a <note> & b", warn=warnings.append)
    return SimpleNamespace(out=out, index=index, html=index.read_text(encoding="utf-8"), warnings=warnings)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- tables reproduce the runs' files -------------------------------------------------------------------
def test_runs_table_reproduces_each_summary(results, report):
    runs = pd.read_csv(report.out / "runs.csv")
    assert sorted(runs["run"]) == ["evil", "plain"]  # the unfinished run is skipped ...
    assert any("unfinished" in w and "not finished" in w for w in report.warnings)  # ... with a warning
    for row in runs.itertuples():
        summary = json.loads((results / "runs" / row.run / "summary.json").read_text())
        for key in (
            "model",
            "attack",
            "seed",
            "evaluations",
            "classes_at_90",
            "classes_at_99",
            "classes_at_9999",
        ):
            assert getattr(row, key) == summary[key], key
        assert row.median_confidence == summary["median_confidence"]  # exact: CSV keeps full precision
        assert row.mean_confidence == summary["mean_confidence"]
        md = (report.out / "runs.md").read_text()
        assert percent(summary["median_confidence"]) in md and percent(summary["mean_confidence"]) in md
        assert percent(summary["median_confidence"]) in report.html


def test_classes_table_reproduces_results_csv(results, report):
    classes = pd.read_csv(report.out / "classes.csv", keep_default_na=False)
    for name in ("plain", "evil"):
        ours = classes[classes["run"] == name].reset_index(drop=True)
        theirs = pd.read_csv(results / "runs" / name / "results.csv", keep_default_na=False)
        np.testing.assert_array_equal(ours["confidence"], theirs["confidence"])
        assert list(ours["label"]) == list(theirs["label"]) and list(ours["class"]) == list(theirs["class"])
    assert list(classes[classes["run"] == "evil"]["label"]) == LABELS


def test_transfer_defence_baseline_tables(results, report):
    t = pd.read_csv(report.out / "transfer_transfer.csv")
    pd.testing.assert_frame_equal(t, pd.read_csv(results / "transfer" / "transfer.csv"))
    d = pd.read_csv(report.out / "defence_defence.csv")
    assert "model_sha256" not in d and "model_path" not in d
    assert list(d["fooled_share"]) == [0.7, 0.4] and list(d["clean_accuracy"]) == [0.95, 0.94]
    assert (report.out / "plots" / "defence_defence.png").stat().st_size > 5000
    # class counts are means over an iteration's runs, and their header says so
    assert list(d["classes_at_99_mean_of_runs"]) == [4, 2]
    assert "≥ 99% (mean of runs)" in (report.out / "defence_defence.md").read_text()
    # the first iteration's gallery, although its run lives outside the defence folder
    section = report.html[report.html.index('id="defence-defence"') :]
    assert "Iteration 0, against the model given" in section
    b = pd.read_csv(report.out / "baselines.csv")
    result = json.loads((results / "baseline" / "baseline.json").read_text())
    assert b["median_confidence"][0] == result["median_confidence"]
    assert b["auroc"][0] == result["fooling_vs_real"]["auroc"]  # the CSV at full precision
    assert f"| {result['fooling_vs_real']['auroc']:.3f} |" in (report.out / "baselines.md").read_text()


# -- the headline --------------------------------------------------------------------------------------
def test_headline_reproduces_the_files_it_reads(results, report):
    lines = pd.read_csv(report.out / "headline.csv", keep_default_na=False, na_values=[""])
    by = {r.experiment: r for r in lines.itertuples()}
    for name, experiment, key in (
        ("plain", "MNIST, direct encoding", ("mnist", "map-elites", "direct", False)),
        ("evil", "MNIST, CPPN encoding", ("mnist", "map-elites", "cppn", False)),
    ):
        summary = json.loads((results / "runs" / name / "summary.json").read_text())
        row = by[experiment]
        assert row.ours == summary["median_confidence"] and row.budget == summary["evaluations"]
        assert row.paper == REFERENCES[key].value and row.paper_budget == 40_200
        close = abs(summary["median_confidence"] - 0.9999) <= 0.05
        smaller = 40_200 / summary["evaluations"] >= 2  # 3 generations: far below the paper's 200
        expected = (REPRODUCED_SMALLER if smaller else REPRODUCED) if close else NOT_REPRODUCED
        assert row.verdict == expected, (row.verdict, row.why)
    baseline = json.loads((results / "baseline" / "baseline.json").read_text())
    row = by["Real-image baseline, MNIST digits"]
    fooling = baseline["fooling_vs_real"]["median_fooling_confidence"]
    assert row.ours == baseline["median_confidence"] and row.paper == 0.603
    assert (row.verdict != NOT_REPRODUCED) == (fooling >= baseline["median_confidence"])
    defence = by["Retraining defence, ImageNet (imagenet-cppn)"]  # the median falls from 90% to 60%
    assert defence.ours == 0.6 and defence.paper == 0.117 and defence.budget == 800
    assert defence.verdict == REPRODUCED_SMALLER  # the paper's effect with 800 of its 2.0 M evaluations
    assert defence.why == "same way: confidence falls after retraining; 1/2,501 of the paper's budget"
    assert len(lines) == 4  # one transfer table on one model has no other model to transfer to
    md = (report.out / "headline.md").read_text()
    assert "| MNIST, direct encoding |" in md and "40,200 evals" in md


def test_the_page_opens_on_the_headline(report):
    page = report.html
    sections = re.findall(r'<section id="([^"]+)"', page)
    assert sections[0] == "headline"
    assert page.index('id="headline"') < page.index("<nav>") < page.index('id="mnist-direct"')
    assert sections.index("mnist-direct") < sections.index("mnist-cppn") < sections.index("transfer")
    assert sections[-1] == "runs"  # every run, folded, below the experiments
    assert "a &lt;note&gt; &amp; b" in page
    assert page.count("<details") > page.count('<details id="run-') >= 2
    for anchor in re.findall(r'<a href="#([^"]+)"', page):
        assert f'id="{anchor}"' in page, anchor


def test_verdict_rule():
    ref = Reference("median best confidence per class", 0.88, "88%", "AlexNet", 2_000_000)

    def judge(ours, budget=2_000_000, effect=None, reference=ref):
        line = Line(
            "s", "e", "m", ours, f"{ours}", reference, budget, effect=effect, effect_text=("yes", "no")
        )
        return line.judge()

    assert judge(0.84) == (REPRODUCED, "within 5 points")
    assert judge(0.93)[0] == REPRODUCED
    assert judge(0.82) == (NOT_REPRODUCED, "6 points below")
    assert judge(0.84, budget=4_000) == (REPRODUCED_SMALLER, "within 5 points; 1/500 of the paper's budget")
    assert judge(0.84, budget=1_000_001)[0] == REPRODUCED  # 1.99x: not half
    assert judge(0.10, effect=True) == (REPRODUCED, "yes")
    assert judge(0.10, effect=False) == (NOT_REPRODUCED, "no")
    assert judge(0.10, reference=None)[0] == NO_FIGURE
    no_value = Reference("share", None, "often", "twins")
    assert judge(0.3, reference=no_value)[0] == NO_FIGURE
    assert judge(0.3, effect=True, reference=no_value) == (REPRODUCED, "yes")


def test_verdicts_say_when_a_figure_is_not_the_papers_method_or_cannot_show_its_effect():
    ref = Reference("median of new champions after retraining", 0.117, "88.1% → 11.7%", "AlexNet", 2_000_000)

    def judge(ours, reference=ref, **kw):
        return Line("s", "e", "m", ours, "", reference, 40_000, effect_text=("falls", "stays"), **kw).judge()

    # a search the paper did not run: beyond it, not "no figure" and not a reproduction
    assert judge(0.99, reference=None, method="the patch search") == (
        BEYOND,
        "the patch search: a search the paper did not run, so it has no figure for it",
    )
    # the paper's experiment fed by another search: the rule's verdict, saying by which method
    assert judge(0.05, effect=True, method="the patch search") == (
        REPRODUCED_SMALLER,
        "falls; 1/50 of the paper's budget; by the patch search, not the paper's method",
    )
    # a defence whose first iteration was never fooled measures nothing, whatever its last median
    assert judge(0.001, effect=True, unmeasured="its first iteration is not fooled") == (
        NOT_MEASURED,
        "its first iteration is not fooled",
    )


def test_a_defence_that_starts_unfooled_is_not_measured(tmp_path):
    """On the committed shape of defence.csv: iteration 0's median decides, not the fall after it."""
    folder = tmp_path / "defence"
    folder.mkdir()
    unfooled = DEFENCE.replace(",0.9,0.8,4,1,0.7,", ",0.0241,0.03,0,0,0.0,").replace(
        ",0.6,0.5,2,", ",0.0027,0.01,0,"
    )
    (folder / "defence.csv").write_text(unfooled)
    (folder / "defence.json").write_text(
        json.dumps({"settings": {"attack": "imagenet-cppn"}, "dataset": "imagenet"})
    )
    write_report([folder], tmp_path / "report")
    row = pd.read_csv(tmp_path / "report" / "headline.csv").iloc[0]
    assert row["verdict"] == NOT_MEASURED and "median 2.41% < 50%" in row["why"]


def test_a_single_model_gets_the_same_page(results, tmp_path, foolbench):
    out = tmp_path / "r"
    proc = foolbench("report", results / "runs" / "plain", results / "runs" / "evil", "--out", out)
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    assert re.findall(r'<section id="([^"]+)"', page) == ["headline", "mnist-direct", "mnist-cppn", "runs"]
    lines = pd.read_csv(out / "headline.csv")
    assert list(lines["experiment"]) == ["MNIST, direct encoding", "MNIST, CPPN encoding"]
    assert (out / "plots" / "headline.png").stat().st_size > 5000


def test_searches_beyond_the_encodings_are_named_by_method(results, tmp_path):
    """A patch search and CPPN gradient ascent get sections of their own, named for what they are
    (not an "other encoding"), under the model card's dataset even where the preset was made for
    another (gradient-cppn's is ImageNet's)."""
    model = export(tiny(), tmp_path / "digits.onnx", (1, 1, 28, 28), card=ModelCard(dataset="mnist"))
    for attack in ("mnist-patch", "gradient-cppn"):
        start_run(
            RunRequest(
                models=[str(model)], attack=attack, generations=2, out=tmp_path / attack, progress=False
            )
        )
    out = tmp_path / "report"
    write_report([tmp_path / "mnist-patch", tmp_path / "gradient-cppn"], out, warn=lambda m: None)
    experiments = list(pd.read_csv(out / "headline.csv")["experiment"])
    assert experiments == ["MNIST, patch search", "MNIST, gradient ascent on CPPN weights"]


# -- hostile labels --------------------------------------------------------------------------------------
def test_labels_are_escaped_in_html_and_markdown_and_name_no_file(report):
    for raw in (EVIL, "<b>bold</b>", '"quoted"'):
        assert raw not in report.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report.html
    assert "a &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt;" in report.html
    assert not re.search(r"<script|<link|<iframe|src=\"(?!data:)|href=\"(?!#)", report.html)  # no request
    assert EVIL not in (report.out / "classes.md").read_text()
    files = [p for p in report.out.rglob("*")]
    record = json.loads((report.out / "report.json").read_text())
    assert sorted(str(p.relative_to(report.out)) for p in files if p.is_file()) == record["files"]
    for p in files:
        assert p.resolve().is_relative_to(report.out.resolve())
        assert not re.search(r"[<>\"&]|script|\.\.", p.name), p.name
    assert not (report.out.parent / "x").exists()


def test_every_image_is_embedded(report):
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report.html)
    pngs = sorted((report.out / "plots").glob("*.png")) + sorted((report.out / "galleries").glob("*.png"))
    assert len(set(uris)) == len(pngs) and len(uris) == report.html.count("<img ")  # a run shown twice
    assert sorted(base64.b64decode(u) for u in set(uris)) == sorted(p.read_bytes() for p in pngs)
    gallery = Image.open(io.BytesIO((report.out / "galleries" / "evil.png").read_bytes()))
    assert gallery.size == (10 * 108, 108 + 34)  # 10 champions in one row


# -- the command ---------------------------------------------------------------------------------------
def test_cli_prints_the_page_and_a_table(results, tmp_path, foolbench):
    out = tmp_path / "r"
    proc = foolbench("report", results / "runs" / "plain", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {out / 'index.html'}" in proc.stdout and "mnist-direct" in proc.stdout
    assert (out / "runs.csv").is_file() and not list(out.rglob("*.tmp"))


def test_bad_inputs_exit_2_and_write_nothing(results, tmp_path, foolbench):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(results / "runs" / "plain", corrupt)
    (corrupt / "summary.json").write_text('{"attack": "mnist-dir')
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    bad_png = tmp_path / "badpng"
    shutil.copytree(results / "runs" / "plain", bad_png)
    (bad_png / "champions" / "0_class_0.png").write_bytes(b"not a png")
    cases = {
        tmp_path / "missing": "does not exist",
        empty: "no finished run",
        corrupt: "summary.json",
        bad_png: "0_class_0.png is not a readable image",
    }
    for path, message in cases.items():
        out = tmp_path / "out"
        proc = foolbench("report", results / "runs" / "evil", path, "--out", out)
        assert proc.returncode == 2, (path, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not out.exists()
    # an earlier report in OUT stays as it was
    out = tmp_path / "kept"
    assert foolbench("report", results / "runs" / "plain", "--out", out).returncode == 0
    before = snapshot(out)
    assert foolbench("report", results / "runs" / "plain", corrupt, "--out", out).returncode == 2
    assert snapshot(out) == before


def test_rerun_removes_only_what_the_last_report_wrote(results, tmp_path):
    out = tmp_path / "r"
    write_report([results / "runs"], out)
    (out / "notes.txt").write_text("mine")
    assert (out / "galleries" / "evil.png").is_file()
    write_report([results / "runs" / "plain"], out)
    assert not (out / "galleries" / "evil.png").exists() and (out / "galleries" / "plain.png").is_file()
    assert (out / "notes.txt").read_text() == "mine"
    assert list(pd.read_csv(out / "runs.csv")["run"]) == ["plain"]


# -- a real browser ------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium as the machine allows it: no sandbox (root), no GPU, no network chatter."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


# Measures the page as laid out, every folded section opened: written into a copy of the page (the
# page itself has no script), read back from the DOM Chromium dumps.
MEASURE = """<script>
addEventListener("load", () => {
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const width = document.documentElement.clientWidth;
  const tables = [...document.querySelectorAll("table")];
  const wide = tables.filter((t) => t.scrollWidth > t.clientWidth + 1
    || t.getBoundingClientRect().right > width + 1 || t.parentElement.scrollWidth > t.parentElement.clientWidth + 1);
  const first = document.querySelector("main > section");
  document.body.dataset.measured = JSON.stringify({
    viewport: innerWidth, tables: tables.length, wide: wide.map((t) => t.innerText.slice(0, 80)),
    page: document.documentElement.scrollWidth, first: first && first.id,
    headline: first && first.getBoundingClientRect().top,
  });
});
</script>"""


def measure(index: Path, tmp_path: Path, width: int = 1280) -> dict:
    copy = index.parent / "measure.html"  # beside the page, so that it loads the same way
    copy.write_text(
        index.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8"
    )
    try:
        dom = chromium(
            f"--window-size={width},900",
            "--virtual-time-budget=10000",
            "--dump-dom",
            copy.as_uri(),
            profile=tmp_path,
        ).stdout
    finally:
        copy.unlink()
    found = re.search(r'data-measured="([^"]*)"', dom)
    assert found, dom[-500:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="chromium is not installed")
def test_a_browser_renders_tables_and_images(report, tmp_path):
    assert CHROMIUM, "CI must install chromium (apt-get install -y chromium)"
    uri = report.index.resolve().as_uri()
    shot = tmp_path / "shot.png"
    chromium("--window-size=1280,2400", f"--screenshot={shot}", uri, profile=tmp_path / "p1")
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape == (2400, 1280, 3)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 500  # plots and galleries, not a blank or text-only page
    assert (pixels.min(axis=2) < 128).mean() > 0.01  # dark pixels: text and champion images
    green = (
        np.all(pixels == (0x2B, 0x8A, 0x3E), axis=2).sum()
        + np.all(pixels == (0x0B, 0x72, 0x85), axis=2).sum()
    )
    red = np.all(pixels == (0xC9, 0x2A, 0x2A), axis=2).sum()
    assert green + red > 50  # the headline's verdicts, in the colours of the bars, above the fold
    dom = chromium("--dump-dom", uri, profile=tmp_path / "p2").stdout
    assert dom.count("<table") == report.html.count("<table") >= 6
    assert dom.count("<img ") == report.html.count("<img ") > 5
    assert EVIL not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="chromium is not installed")
def test_every_table_fits_a_1280_px_window_and_the_headline_comes_first(report, tmp_path):
    assert CHROMIUM, "CI must install chromium (apt-get install -y chromium)"
    m = measure(report.index, tmp_path)
    assert m["viewport"] == 1280 and m["tables"] == report.html.count("<table") >= 6
    assert m["wide"] == [] and m["page"] <= 1280
    assert m["first"] == "headline" and m["headline"] < 200  # right under the title


def test_cifar10_models_get_a_cifar10_section_and_baseline(tmp_path, monkeypatch):
    """Runs of a model whose card says CIFAR-10 get sections titled CIFAR-10, between MNIST and
    ImageNet, and its baseline reads as one on CIFAR-10's test images."""
    from test_cifar10 import write_folder

    from foolbench.data.cifar10 import CLASSES

    write_folder(tmp_path / "data" / "cifar10")
    monkeypatch.setenv("FOOLBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FOOLBENCH_CACHE", str(tmp_path / "cache"))
    card = ModelCard(dataset="cifar10", labels=list(CLASSES))
    model = export(tiny(channels=3, size=32), tmp_path / "c10.onnx", (1, 3, 32, 32), card=card)
    run = start_run(
        RunRequest(
            models=[str(model)], attack="cifar-cppn", generations=2, out=tmp_path / "run", progress=False
        )
    )
    baseline(str(model), runs=[run], out=tmp_path / "baseline")
    out = tmp_path / "report"
    write_report([run, tmp_path / "baseline"], out, warn=lambda m: None)
    experiments = list(pd.read_csv(out / "headline.csv")["experiment"])
    assert experiments == ["CIFAR-10, CPPN encoding", "Real-image baseline, CIFAR-10 test images"]
