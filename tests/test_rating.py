"""`foolbench rate` on tiny real runs: the deck mixes champions with real digits of their classes, a
browser (headless Chromium) answers every image by keyboard, is closed half-way and resumes, the
answers land in ratings.csv once each, and the summary counts them; the static page downloads the
same rows and `--import` takes them in; the server refuses what does not carry its token; bad input
is one line and exit 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import export, tiny
from PIL import Image, ImageOps

from foolbench.models import ModelCard
from foolbench.rating import command
from foolbench.rating.deck import CONTROL, FOILS, NONE, build_deck
from foolbench.rating.page import write_static
from foolbench.rating.server import RatingServer
from foolbench.rating.store import COLUMNS, RATINGS, Store, answer_row, read_ratings
from foolbench.rating.summary import (
    CONTROL_THRESHOLD,
    MIN_CONTROLS,
    agreement_text,
    summarise,
    summarise_dirs,
)
from foolbench.runner import RunRequest, start_run

EVIL = "<script>alert(1)</script>"
# The page marks the image on show (body[data-ready=<id>]) once it can be answered; selectors, not
# script, wait for it: the served page's Content-Security-Policy allows no script but its own.
READY = 'body[data-ready]:not([data-ready="done"])'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two finished runs of a tiny digit model on 5 classes each (direct and CPPN), and one run of a
    model whose first label is a script tag; copied per test, since rating writes into them."""
    root = tmp_path_factory.mktemp("rated")
    digits = [str(d) for d in range(10)]
    plain = export(tiny(), root / "tiny.onnx", (1, 1, 28, 28), card=ModelCard(dataset="mnist", labels=digits))
    evil = export(
        tiny(),
        root / "evil.onnx",
        (1, 1, 28, 28),
        card=ModelCard(dataset="mnist", labels=[EVIL, *digits[1:]]),
    )
    made = {}
    for name, model, attack in (
        ("direct", plain, "mnist-direct"),
        ("cppn", plain, "mnist-cppn"),
        ("evil", evil, "mnist-cppn"),
    ):
        out = root / name
        start_run(
            RunRequest(
                models=[str(model)], attack=attack, generations=2, classes="0-4", out=out, progress=False
            )
        )
        made[name] = out
    return made


@pytest.fixture
def two(runs, tmp_path) -> list[Path]:
    """Fresh copies of the two plain runs."""
    return [Path(shutil.copytree(runs[n], tmp_path / n)) for n in ("direct", "cppn")]


def rows_of(paths) -> pd.DataFrame:
    return pd.concat([read_ratings(Path(p) / RATINGS) for p in paths if (Path(p) / RATINGS).is_file()])


# -- the deck ---------------------------------------------------------------------------------------------
def test_deck_mixes_champions_with_real_images_of_their_classes(two):
    deck = build_deck(two)
    champions, controls = deck.champions, deck.controls
    assert len(champions) == 10 and len(controls) == 10
    assert sorted(i.target_class for i in champions) == sorted(i.target_class for i in controls)
    assert all(i.image.startswith("mnist-heldout/") for i in controls)
    assert len({i.id for i in deck.items}) == 20 and len({i.image for i in controls}) == 10
    for item in deck.items:
        assert item.options[0] == item.target and len(set(item.options)) == 1 + FOILS
        assert NONE not in item.options
    # the same runs give the same deck (a session resumes on it); another seed draws other foils
    again = build_deck(two)
    assert [(i.id, i.options, i.png) for i in again.items] == [(i.id, i.options, i.png) for i in deck.items]
    other = build_deck(two, seed=1)
    assert [i.options for i in other.champions] != [i.options for i in champions]
    assert len(build_deck(two, controls=2).controls) == 20


# -- the served page, in a real browser --------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM and not os.environ.get("CI"):
        pytest.skip("chromium is not installed")
    assert CHROMIUM, "CI must install chromium (apt-get install -y chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        flags = [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ]
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield chromium
        chromium.close()


def rate(page, items: dict, count: int, recognise=frozenset(), careless=False) -> list[str]:
    """Answer `count` images by keyboard as a rater would: the right class for every real image, the
    target for champions in `recognise`, "none of these" for the others (careless: always N)."""
    done = []
    for _ in range(count):
        page.wait_for_selector(READY, state="attached")
        shown = page.evaluate("document.body.dataset.ready")
        item = items[shown]
        labels = page.eval_on_selector_all("#options button span", "spans => spans.map((s) => s.textContent)")
        assert sorted(labels[:-1]) == sorted(item.options) and labels[-1] == NONE
        picks = item.kind == CONTROL or item.id in recognise
        key = "n" if careless or not picks else "asdf"[labels.index(item.target)]
        page.keyboard.press(key)
        page.wait_for_selector(f'body:not([data-ready="{shown}"])', state="attached")
        done.append(shown)
    return done


def start(page, url: str, rater: str):
    page.goto(url)
    page.fill("#rater", rater)
    page.keyboard.press("Enter")


@pytest.fixture
def served(two):
    deck = build_deck(two)
    server = RatingServer(deck, Store(deck.runs))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield deck, server
    server.shutdown()
    server.server_close()


def test_a_browser_rates_every_image_by_keyboard_closes_half_way_and_resumes(browser, served, two):
    deck, server = served
    items = deck.by_id()
    recognise = {deck.champions[0].id, deck.champions[3].id, deck.champions[7].id}
    first = browser.new_context()
    page = first.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    start(page, server.url, "ana")
    done = rate(page, items, 7, recognise)
    first.close()  # the rater closes the page half-way

    rows = rows_of(two)
    assert list(rows.columns) == COLUMNS and len(rows) == 7 and set(rows["item"]) == set(done)
    assert (rows["rater"] == "ana").all() and (rows["seconds"] > 0).all()
    for row in rows.to_dict("records"):
        item = items[row["item"]]
        assert sorted(json.loads(row["options"])) == sorted(item.options)
        assert row["picked_target"] == (row["answer"] == item.target)
        assert (row["kind"], row["image_sha256"], row["champion"]) == (
            item.kind,
            item.image_sha256,
            item.champion,
        )
        assert row["model_sha256"] == next(r.model_sha256 for r in deck.runs if str(r.path) == row["run"])

    second = browser.new_context()  # a new browser session: what was answered comes from ratings.csv
    page = second.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    start(page, server.url, "ana")
    page.wait_for_selector("body[data-ready]", state="attached")
    assert page.text_content("#progress") == "8 of 20"
    done += rate(page, items, 13, recognise)
    page.wait_for_selector('body[data-ready="done"]', state="attached")
    bob = second.new_page()  # a second rater on the same runs, answering "none of these" throughout
    start(bob, server.url, "bob")
    rate(bob, items, 20, careless=True)
    second.close()
    assert errors == []

    rows = rows_of(two)
    ana = rows[rows["rater"] == "ana"]
    assert sorted(ana["item"]) == sorted(done) == sorted(items)  # every image once, none twice
    assert len(rows) == 40 and (rows.loc[rows["rater"] == "bob", "answer"] == NONE).all()
    summary = summarise_dirs(two)
    raters = summary.raters.set_index("rater")
    assert raters.loc["ana", "counted"] and raters.loc["ana", "controls_right"] == 10
    assert not raters.loc["bob", "counted"] and raters.loc["bob", "controls_right"] == 0
    assert summary.runs["recognised"].sum() == 3 and summary.runs["rated"].sum() == 10
    assert list(summary.runs["raters"]) == [1, 1]
    by_run = {Path(r): k for r, k in zip(summary.runs["run"], summary.runs["recognised"], strict=True)}
    assert by_run == {p: sum(items[i].run == str(p) for i in recognise) for p in two}


def test_rate_serves_on_loopback_prints_the_url_and_counts_the_session(two, foolbench):
    """What `foolbench rate RUN...` does, up to Ctrl-C: says what it rates and where answers go, prints
    the URL, serves the page behind it, and counts the answers of the session when it stops."""
    said, servers = [], []
    thread = threading.Thread(
        target=command.serve, args=(two,), kwargs={"say": said.append, "started": servers.append}, daemon=True
    )
    thread.start()
    for _ in range(600):
        if servers:
            break
        time.sleep(0.1)
    server = servers[0]
    url = said[-1].splitlines()[-1]
    assert (
        "10 champions from 2 runs and 10 real images" in said[0]
        and "ratings.csv in each of the 2 runs" in said[0]
    )
    assert url == server.url and url.startswith("http://127.0.0.1:") and "/?t=" in url
    item = server.deck.controls[0]
    answer = {
        "t": server.token,
        "rater": "ana",
        "item": item.id,
        "shown": item.options,
        "answer": item.target,
        "seconds": 2,
    }
    assert "Which class do you see?" in request(url)[1]
    assert (
        request(
            url.replace("/?", "/answer?"), json.dumps(answer).encode(), {"Content-Type": "application/json"}
        )[0]
        == 200
    )
    server.shutdown()
    thread.join(60)
    assert said[-1] == "1 answers saved in this session."
    result = foolbench("rate", *two, "--summary")
    assert result.returncode == 0 and "not rated" in result.stdout  # one control answered: nobody counts yet
    assert "| ana | 1 of 1 (100 %) | 0 | no: 1 controls answered, fewer than 5 |" in result.stdout


# -- what the server refuses ---------------------------------------------------------------------------------
def request(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_server_answers_only_its_token_on_loopback_and_checks_every_answer(served, two):
    deck, server = served
    base = f"http://127.0.0.1:{server.port}"
    token = server.token
    assert server.server_address[0] == "127.0.0.1"
    assert request(f"{base}/")[0] == 403 and request(f"{base}/?t=wrong")[0] == 403
    assert request(f"{base}/image/0")[0] == 403
    status, _ = request(f"{base}/?t={token}", headers={"Host": f"evil.example:{server.port}"})
    assert status == 403  # a rebound DNS name
    assert request(f"{base}/image/0?t={token}")[0] == 200
    for path in (
        "/image/20",
        "/image/-1",
        "/image/..%2f..%2fmanifest.json",
        "/../manifest.json",
        "/champions/0_0.png",
    ):
        assert request(f"{base}{path}?t={token}")[0] == 404, path
    item = deck.champions[0]
    good = {
        "t": token,
        "rater": "ana",
        "item": item.id,
        "shown": item.options,
        "answer": item.target,
        "seconds": 1.5,
    }
    json_type = {"Content-Type": "application/json"}
    assert request(f"{base}/answer", json.dumps(good).encode(), {"Content-Type": "text/plain"})[0] == 415
    assert request(f"{base}/answer", json.dumps({**good, "t": "x"}).encode(), json_type)[0] == 403
    for bad in (
        {"item": "champions/0_0.png"},
        {"answer": "not offered"},
        {"shown": [*item.options[:-1], "other"]},
        {"rater": ""},
        {"rater": "a\nb"},
        {"seconds": "soon"},
    ):
        assert request(f"{base}/answer", json.dumps({**good, **bad}).encode(), json_type)[0] == 400, bad
    assert not any((p / RATINGS).exists() for p in two)  # nothing refused was written
    assert request(f"{base}/answer", json.dumps(good).encode(), json_type) == (200, '{"saved": 1}')
    assert request(f"{base}/answer", json.dumps(good).encode(), json_type) == (200, '{"saved": 0}')
    status, body = request(f"{base}/deck?t={token}&rater=ana")
    assert status == 200 and json.loads(body)["answered"] == [item.id]


# -- the static page ---------------------------------------------------------------------------------------
def test_the_static_page_downloads_answers_that_import_takes_in(browser, two, tmp_path, foolbench):
    deck = build_deck(two)
    items = deck.by_id()
    html = write_static(deck, tmp_path / "rate.html")
    text = html.read_text(encoding="utf-8")
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from anywhere
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    start(page, html.as_uri(), "cy")
    recognise = {deck.champions[1].id}
    rate(page, items, 6, recognise)
    page.reload()  # closed half-way: the answers so far are in the browser
    page.fill("#rater", "cy")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-ready]", state="attached")
    assert page.text_content("#progress") == "7 of 20"
    rate(page, items, 14, recognise)
    with page.expect_download() as download:
        page.click("#download")
    csv = tmp_path / "from-browser.csv"
    download.value.save_as(csv)
    context.close()

    rows = read_ratings(csv)
    assert list(rows.columns) == COLUMNS and len(rows) == 20 and sorted(rows["item"]) == sorted(items)
    result = foolbench("rate", *two, "--import", csv)
    assert result.returncode == 0 and "20 answers added" in result.stdout, result.stderr
    again = foolbench("rate", *two, "--import", csv)
    assert again.returncode == 0 and "0 answers added" in again.stdout and "20 already there" in again.stdout
    stored = rows_of(two)
    assert len(stored) == 20 and set(stored["item"]) == set(items)
    summary = foolbench("rate", *two, "--summary")
    assert summary.returncode == 0
    lines = [line for line in summary.stdout.splitlines() if line.startswith(("| direct", "| cppn"))]
    recognised = {line.split(" | ")[0][2:]: line.split(" | ")[3] for line in lines[:2]}
    which = Path(items[next(iter(recognise))].run).name
    assert recognised == {name: ("1 of 5" if name == which else "0 of 5") for name in ("direct", "cppn")}


def test_labels_enter_the_page_as_text_only(browser, runs, tmp_path):
    run = Path(shutil.copytree(runs["evil"], tmp_path / "evil"))
    deck = build_deck([run])
    html = write_static(deck, tmp_path / "rate.html")
    assert EVIL not in html.read_text(encoding="utf-8")  # the JSON escapes '<'
    context = browser.new_context()
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    start(page, html.as_uri(), "dee")
    items = deck.by_id()
    seen = set()
    for _ in range(len(items)):
        page.wait_for_selector(READY, state="attached")
        seen |= set(page.eval_on_selector_all("#options button span", "s => s.map((x) => x.textContent)"))
        shown = page.evaluate("document.body.dataset.ready")
        page.keyboard.press("n")
        page.wait_for_selector(f'body:not([data-ready="{shown}"])', state="attached")
    assert EVIL in seen and dialogs == []
    assert page.evaluate("document.scripts.length") == 2
    context.close()


# -- the summary's rules -------------------------------------------------------------------------------------
def test_raters_below_the_control_threshold_are_set_aside_and_ties_count_as_recognised(two):
    deck = build_deck(two)
    controls, champions = deck.controls, deck.champions
    rows = []

    def answer(rater, item, right):
        pick = item.target if right else item.options[1]
        rows.append(answer_row(item, rater, item.options, pick, 1.0))

    need = int(CONTROL_THRESHOLD * MIN_CONTROLS)  # 4 of 5 right is the least that counts
    for n, item in enumerate(controls[:MIN_CONTROLS]):
        answer("just", item, n < need)
        answer("below", item, n < need - 1)
    for item in controls[: MIN_CONTROLS - 1]:
        answer("few", item, True)
    for item in champions[:2]:
        for rater in ("just", "below", "few"):
            answer(rater, item, True)
    summary = summarise(deck.runs, pd.DataFrame(rows, columns=COLUMNS))
    counted = dict(zip(summary.raters["rater"], summary.raters["counted"], strict=True))
    assert counted == {"below": False, "few": False, "just": True}
    assert summary.champions["raters"].tolist() == [1, 1] and summary.champions["recognised"].all()
    # two counted raters split on a champion: a tie is "recognised" (people did not clearly miss it)
    for item in controls[:MIN_CONTROLS]:
        answer("other", item, True)
    answer("other", champions[0], False)
    summary = summarise(deck.runs, pd.DataFrame(rows, columns=COLUMNS))
    first = summary.champions.iloc[0]
    assert (first["raters"], first["picked"], first["recognised"]) == (2, 1, True)


def test_lookalike_agreement_counts_both_directions(two):
    deck = build_deck(two)
    verdicts = {}
    for run in deck.runs:
        results = pd.read_csv(run.path / "results.csv", dtype={"file": str})
        verdicts |= {
            (str(run.path), f): bool(v) for f, v in zip(results["file"], results["lookalike"], strict=True)
        }
    rows = [answer_row(c, "ana", c.options, c.target, 1.0) for c in deck.controls]
    recognised = deck.champions[::2]
    rows += [
        answer_row(c, "ana", c.options, c.target if c in recognised else NONE, 1.0) for c in deck.champions
    ]
    summary = summarise(deck.runs, pd.DataFrame(rows, columns=COLUMNS))
    for run in summary.runs.to_dict("records"):
        mine = [c for c in deck.champions if c.run == run["run"]]
        people = [c in recognised for c in mine]
        judge = [verdicts[(c.run, c.champion)] for c in mine]
        assert run["lookalike_compared"] == 5
        assert run["lookalike_agree"] == sum(p == j for p, j in zip(people, judge, strict=True))
        assert run["people_only"] == sum(p and not j for p, j in zip(people, judge, strict=True))
        assert run["judge_only"] == sum(j and not p for p, j in zip(people, judge, strict=True))


def test_answers_to_a_champion_that_has_since_changed_are_left_out(two):
    deck = build_deck(two)
    rows = [answer_row(i, "ana", i.options, i.target, 1.0) for i in deck.items]
    Store(deck.runs).add(rows)
    changed = two[0] / deck.champions[0].champion
    with Image.open(changed) as img:
        inverted = ImageOps.invert(img.convert("L"))
    inverted.save(changed)
    summary = summarise_dirs(two)
    assert summary.stale == 1 and summary.runs["rated"].sum() == 9 and "no longer" in summary.text()


# -- bad input: one line, exit 2, nothing written -----------------------------------------------------------
def test_bad_input_is_one_line_and_exit_2(two, runs, tmp_path, foolbench):
    def fails(*args, says: str):
        result = foolbench("rate", *args)
        assert result.returncode == 2, result
        assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr

    fails(tmp_path / "nowhere", says="no such run directory")
    fails(tmp_path, says="not a run directory")
    empty = Path(shutil.copytree(two[0], tmp_path / "empty"))
    (empty / "results.csv").write_text((empty / "results.csv").read_text().splitlines()[0] + "\n")
    fails(empty, "--summary", says="has no champions")
    # a ratings file of another run: the evil model's ratings copied into a plain run
    evil = Path(shutil.copytree(runs["evil"], tmp_path / "evil"))
    evil_deck = build_deck([evil])
    Store(evil_deck.runs).add([answer_row(i, "ana", i.options, NONE, 1.0) for i in evil_deck.items])
    shutil.copy(evil / RATINGS, two[0] / RATINGS)
    fails(*two, "--summary", says="holds ratings of another run")
    fails(*two, says="holds ratings of another run")  # before anything is served
    (two[0] / RATINGS).unlink()
    fails(*two, "--import", evil / RATINGS, says="no champion of these runs")
    assert not any((p / RATINGS).exists() for p in two)
    fails(*two, "--import", tmp_path / "missing.csv", says="no such file")
    fails(*two, "--static", tmp_path, says="is a folder")
    fails(*two, "--summary", "--import", evil / RATINGS, says="separate modes")


# -- in the report --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("out", [False, True], ids=["in-the-runs", "rate-out"])
def test_the_report_says_recognised_by_people_beside_the_lookalike_judge(two, tmp_path, out):
    from foolbench.report import write_report

    deck = build_deck(two)
    recognised = {deck.champions[0].id, deck.champions[6].id}
    rows = [answer_row(c, "ana", c.options, c.target, 1.0) for c in deck.controls]
    rows += [
        answer_row(c, "ana", c.options, c.target if c.id in recognised else NONE, 1.0) for c in deck.champions
    ]
    rows += [answer_row(c, "bob", c.options, NONE, 1.0) for c in deck.items]  # set aside: no control right
    folder = tmp_path / "ratings" if out else None
    Store(deck.runs, folder).add(rows)
    index = write_report([*two, *([folder] if out else [])], tmp_path / "report")
    page = index.read_text(encoding="utf-8")
    assert 'id="people"' in page and page.count("recognised by people: 1 of 5 champions (1 rater)") == 4
    people = pd.read_csv(tmp_path / "report" / "people.csv")
    assert list(people["recognised by people"]) == ["1 of 5", "1 of 5"] and list(people["raters"]) == [1, 1]
    raters = pd.read_csv(tmp_path / "report" / "raters.csv").set_index("rater")
    assert raters.loc["ana", "counted"] == "yes" and raters.loc["bob", "counted"].startswith("no: below 80")
    summary = summarise_dirs(two, folder)
    assert list(people["look-alike judge agrees"]) == [
        agreement_text(r) for r in summary.runs.to_dict("records")
    ]


def test_the_readme_states_the_rules_the_code_applies():
    prose = re.sub(r"\s+", " ", (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8"))
    threshold = f"{CONTROL_THRESHOLD:.0%}".replace("%", " %")
    assert f"answered at least {MIN_CONTROLS} real images and got at least {threshold} of them right" in prose
    assert (
        f'its target label, {("one", "two", "three", "four")[FOILS - 1]} foils and "none of these"' in prose
    )
    assert f"picks the target 1 time in {FOILS + 2}" in prose


# -- people as a judge (a scoring protocol counts a class people recognise as not fooled) --------------------
def test_the_people_judge_recognises_exactly_the_champions_recognised_by_people(two):
    from foolbench.rating.judge import people_judge
    from foolbench.rundir import read_champions

    assert people_judge(two) is None  # nobody has rated: nothing changes
    deck = build_deck(two)
    recognised = deck.champions[2]
    rows = [answer_row(c, "ana", c.options, c.target, 1.0) for c in deck.controls]
    rows += [
        answer_row(c, "ana", c.options, c.target if c is recognised else NONE, 1.0)
        for c in deck.champions[:5]
    ]
    Store(deck.runs).add(rows)
    judge = people_judge(two)
    assert judge.name == "people (1 rater)"
    for path in two:
        champions = read_champions(path)
        images = champions.images()
        mine = [c.champion == f and c.run == str(path) for f in champions.files for c in [recognised]]
        assert judge.recognised(images, champions.classes).tolist() == mine
        assert judge.rated(images, champions.classes).tolist() == [path == two[0]] * 5
        assert not judge.recognised(1 - images, champions.classes).any()  # another image of the class


def test_either_judge_recognises_what_any_judge_does_and_names_them_all():
    from types import SimpleNamespace

    from foolbench.rating.judge import either

    zeros = SimpleNamespace(name="lookalike (mnist-heldout)", recognised=lambda x, c: c == 0)
    odd = SimpleNamespace(name="people (2 raters)", recognised=lambda x, c: c % 2 == 1)
    assert either(None, None) is None and either(None, zeros) is zeros
    both = either(zeros, odd)
    assert both.name == "lookalike (mnist-heldout) or people (2 raters)"
    assert both.recognised(None, np.arange(5)).tolist() == [True, True, False, True, False]


def test_a_leaderboard_row_says_recognised_by_people_where_ratings_exist(two):
    from foolbench.api import load_model
    from foolbench.experiments.score import make_row
    from foolbench.protocol import load_protocol
    from foolbench.rundir import read_manifest

    model = load_model(read_manifest(two[0])["models"][0]["path"])
    proto = load_protocol("v1")
    runs = {"direct": [two[0]], "cppn": [two[1]]}

    def row():
        return make_row("tiny", "sha", model, proto, proto.suite_for(1), runs, None)

    assert "recognised_by_people" not in row()  # nobody rated: the row is as before
    deck = build_deck(two)
    recognised = {deck.champions[1].id, deck.champions[4].id, deck.champions[8].id}
    rows = [answer_row(c, "ana", c.options, c.target, 1.0) for c in deck.controls]
    rows += [
        answer_row(c, "ana", c.options, c.target if c.id in recognised else NONE, 1.0) for c in deck.champions
    ]
    bob = {deck.champions[1].id, deck.champions[2].id, deck.champions[3].id}
    rows += [answer_row(c, "bob", c.options, c.target, 1.0) for c in deck.controls]
    rows += [answer_row(c, "bob", c.options, c.target if c.id in bob else NONE, 1.0) for c in deck.champions]
    Store(deck.runs).add(rows)
    cells = row()
    assert (cells["recognised_by_people"], cells["people_raters"]) == (
        "5 of 10",
        2,
    )  # ties count as recognised


# -- protocol v3: people as a judge beside the look-alike one -------------------------------------------------
TINY_V3 = """
[protocol]
version = "r3"
seeds = [0]
score = "real-rank"
headline = "worst"
never_target = ["fooling"]

[suite.grey]
channels = 1
datasets = ["mnist"]
data = "mnist-heldout"
judge = "lookalike"
min_accuracy = 0.9
queries = [100, 200]

[suite.grey.attacks.cppn]
preset = "mnist-cppn"
evaluations = 200
batch = 100
"""


def test_protocol_v3_counts_a_class_people_recognise_as_not_fooled_and_names_the_judge(
    lenet, tmp_path, foolbench
):
    from foolbench.report.leaderboard import read_leaderboard
    from foolbench.rundir import read_results

    (tmp_path / "r3.toml").write_text(TINY_V3)
    board = tmp_path / "board.csv"
    argv = ["score", "--model", lenet, "--name", "lenet", "--protocol", tmp_path / "r3.toml"]
    argv += ["--leaderboard", board, "--work", tmp_path / "work", "--no-progress"]
    assert foolbench(*argv).returncode == 0
    before = read_leaderboard(board).iloc[0]
    run = tmp_path / "work" / "cppn-s0"
    alike = dict(
        zip(read_results(run)["file"], read_results(run)["lookalike"].astype(str) == "True", strict=True)
    )
    deck = build_deck([run])
    seen = next(
        c for c in deck.champions if not alike[c.champion]
    )  # a class the look-alike judge calls fooled
    rows = [answer_row(c, "ana", c.options, c.target, 1.0) for c in deck.controls]
    rows += [answer_row(c, "ana", c.options, c.target if c is seen else NONE, 1.0) for c in deck.champions]
    Store(deck.runs).add(rows)
    assert foolbench(*argv).returncode == 0  # the runs are reused; only the row is made again
    after = read_leaderboard(board).iloc[0]
    assert before["judge"].startswith("lookalike") and "people" not in before["judge"]
    assert after["judge"] == f"{before['judge']} or people (1 rater)"
    assert after["cppn_recognised"] == before["cppn_recognised"] + 1
    assert after["fooling_score"] < before["fooling_score"]
    assert after["recognised_by_people"] == "1 of 10" and after["people_raters"] == 1
