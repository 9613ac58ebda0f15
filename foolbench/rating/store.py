"""ratings.csv: one row per answer, written as each answer comes.

A run's ratings live in the run directory (`RUN/ratings.csv`: its champions and the controls shown
beside them), so every reader of a run (the report, the summary, the protocol) finds them there;
`--out DIR` puts all of a session's rows in `DIR/ratings.csv` instead, for runs one cannot write
to. Every row names its run by the model's sha256 and the champion's file, and its image by the
sha256 of the PNG shown, so a row can never be counted for another run or for an image that has
since changed.

Each answer rewrites the file atomically under a file lock (a temporary file renamed over it), so
a killed server or browser loses at most the answer being sent, and several raters (one server,
or one each) can write to the same runs at once. A rater's answered images are read back from the
files, which is how a session closed half-way resumes.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from foolbench.errors import FoolbenchError
from foolbench.fileio import atomic_path
from foolbench.rating.deck import CHAMPION, CONTROL, NONE, Deck, Item, RatedRun

RATINGS = "ratings.csv"
COLUMNS = [
    "rater",
    "kind",  # champion or control
    "image",  # <run>/champions/<file>, or where the real image came from
    "target",  # the label the model gave a champion, or the real image's class
    "target_class",
    "options",  # the labels shown, in the order shown (JSON list); "none of these" is always offered too
    "answer",  # the label picked, or "none of these"
    "picked_target",  # a champion recognised, or a control answered right, by this rater
    "seconds",  # from the image appearing to the answer
    "run",
    "model_sha256",
    "champion",  # the champion's file in the run directory ("" for a control)
    "image_sha256",  # of the PNG shown
    "item",  # the image's id in the deck
    "time",  # when the answer came (UTC)
]
MAX_NAME = 60
LOCK_TIMEOUT = 30.0


def rater_name(text) -> str:
    """A rater's name as recorded: trimmed, one printable line, at most MAX_NAME characters."""
    name = str(text or "").strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise FoolbenchError(
            f"a rater's name must be 1 to {MAX_NAME} printable characters; got {name[:MAX_NAME]!r}"
        )
    return name


def answer_row(item: Item, rater, shown, answer, seconds, time: str | None = None) -> dict:
    """One row, checked against the deck: the labels shown are the image's own, the answer one of them."""
    rater = rater_name(rater)
    if not isinstance(shown, list) or sorted(map(str, shown)) != sorted(item.options):
        raise FoolbenchError(f"the labels shown for {item.image} are not the ones the deck offers it")
    answer = str(answer)
    if answer != NONE and answer not in item.options:
        raise FoolbenchError(f"the answer for {item.image} is not one of the labels offered")
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise FoolbenchError(f"the time taken for {item.image} is not a number of seconds")
    return {
        "rater": rater,
        **item.record(),
        "options": json.dumps([str(s) for s in shown], ensure_ascii=False),
        "answer": answer,
        "picked_target": answer == item.target,
        "seconds": round(seconds, 3),
        "time": time or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def read_ratings(path: Path) -> pd.DataFrame:
    """A ratings.csv as text columns (a label such as 'NA' stays a label), `picked_target` as bool."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:
        raise FoolbenchError(
            f"{path} is not a readable ratings table ({type(e).__name__}); restore or remove it"
        ) from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise FoolbenchError(
            f"{path} lacks the columns {', '.join(missing)}; it is not a ratings file written by foolbench"
        )
    bad = ~df["kind"].isin([CHAMPION, CONTROL]) | ~df["picked_target"].isin(["True", "False"])
    if bad.any():
        raise FoolbenchError(f"{path}: row {int(bad.idxmax()) + 2} is not a rating (kind or picked_target)")
    df = df[COLUMNS].copy()
    df["picked_target"] = df["picked_target"] == "True"
    df["target_class"] = pd.to_numeric(df["target_class"], errors="coerce")
    df["seconds"] = pd.to_numeric(df["seconds"], errors="coerce")
    return df


class Store:
    """Where a deck's answers are written and read back: each run's ratings.csv, or OUT/ratings.csv."""

    def __init__(self, runs: list[RatedRun], out: str | Path | None = None):
        self.out = Path(out) if out is not None else None
        self.shas = {str(r.path): r.model_sha256 for r in runs}

    def path(self, run: str) -> Path:
        return self.out / RATINGS if self.out is not None else Path(run) / RATINGS

    def files(self) -> list[Path]:
        return sorted({self.path(run) for run in self.shas})

    def read(self) -> pd.DataFrame:
        """Every row of the deck's runs, each file checked to hold ratings of those runs only."""
        frames = [self._checked(p) for p in self.files() if p.is_file()]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)

    def answered(self, rater: str) -> set[str]:
        rows = self.read()
        return set(rows.loc[rows["rater"] == rater, "item"])

    def add(self, rows: Iterable[dict]) -> int:
        """Append rows (each to its run's file), skipping a rater's second answer to the same image.
        Returns how many were written."""
        from filelock import FileLock, Timeout

        by_file: dict[Path, list[dict]] = {}
        for row in rows:
            by_file.setdefault(self.path(row["run"]), []).append(row)
        written = 0
        for path, new in by_file.items():
            try:
                with FileLock(_lock(path), timeout=LOCK_TIMEOUT):
                    old = self._checked(path) if path.is_file() else pd.DataFrame(columns=COLUMNS)
                    seen = set(zip(old["rater"], old["item"], strict=True))
                    fresh = []
                    for row in new:  # a rater's first answer to an image is the one that stands
                        if (row["rater"], row["item"]) not in seen:
                            seen.add((row["rater"], row["item"]))
                            fresh.append(row)
                    if fresh:
                        _append(path, fresh)
                    written += len(fresh)
            except Timeout:
                raise FoolbenchError(
                    f"{_lock(path)} has been held for {LOCK_TIMEOUT:.0f} s; if no foolbench is writing "
                    "ratings, delete the lock file"
                ) from None
        return written

    def _checked(self, path: Path) -> pd.DataFrame:
        df = read_ratings(path)
        mine = set(self.shas.values()) if self.out is not None else {self.shas[str(path.parent)]}
        foreign = sorted(set(df["model_sha256"]) - mine)
        if foreign:
            raise FoolbenchError(
                f"{path} holds ratings of another run (model sha256 {foreign[0][:12]}…, not "
                f"{' or '.join(s[:12] + '…' for s in sorted(mine))}); rate these runs into another --out, "
                "or pass the runs it belongs to"
            )
        return df


def _lock(path: Path) -> Path:
    """The lock file beside a ratings file (hidden: it stays after use, as lock files do)."""
    return path.with_name(f".{path.name}.lock")


def _append(path: Path, rows: list[dict]) -> None:
    """Rewrite `path` with `rows` added, atomically (the header first when the file is new)."""
    old = path.read_bytes() if path.is_file() else b""
    text = io.StringIO()
    pd.DataFrame(rows, columns=COLUMNS).to_csv(text, index=False, header=not old)
    with atomic_path(path) as tmp:
        tmp.write_bytes(old + text.getvalue().encode("utf-8"))


def import_csv(deck: Deck, store: Store, csv_path: str | Path) -> tuple[int, int]:
    """Take in a CSV the static page downloaded. Every row must be of the deck's runs: a champion
    row must name one of their champions exactly (model sha256, file, image sha256), a control row
    one of their models. Returns (rows written, rows already there)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FoolbenchError(f"--import {csv_path}: no such file; pass the CSV the rating page downloaded")
    df = read_ratings(csv_path)
    champions = {(i.model_sha256, i.champion, i.image_sha256): i for i in deck.champions}
    items = deck.by_id()
    shas = {r.model_sha256 for r in deck.runs}
    rows = []
    for n, row in enumerate(df.to_dict("records"), start=2):
        if row["kind"] == CHAMPION:
            item = champions.get((row["model_sha256"], row["champion"], row["image_sha256"]))
            if item is None:
                raise FoolbenchError(
                    f"{csv_path}: row {n} rates {row['image']!r}, which is no champion of these runs "
                    "(a ratings file of another run, or of a run that has changed since); import it with "
                    "the runs its page was written from"
                )
        else:
            item = items.get(row["item"])
            if item is None and row["model_sha256"] not in shas:
                raise FoolbenchError(
                    f"{csv_path}: row {n} is a control shown beside another run's champions (model sha256 "
                    f"{row['model_sha256'][:12]}…); import it with the runs its page was written from"
                )
        try:
            options = json.loads(row["options"])
        except json.JSONDecodeError:
            raise FoolbenchError(f"{csv_path}: row {n}: options is not a JSON list of labels") from None
        if item is None:  # a control of these runs drawn with other settings: kept as written, checked
            run = next(str(r.path) for r in deck.runs if r.model_sha256 == row["model_sha256"])
            item = _control_as_written(row, options, run)
        try:
            rows.append(answer_row(item, row["rater"], options, row["answer"], row["seconds"], row["time"]))
        except FoolbenchError as e:
            raise FoolbenchError(f"{csv_path}: row {n}: {e}") from None
    written = store.add(rows)
    return written, len(rows) - written


def _control_as_written(row: dict, options, run: str) -> Item:
    """A control row of one of the deck's runs that this deck did not draw; its run is the deck's
    (a path in the file is never used)."""
    if not isinstance(options, list) or row["target"] not in map(str, options):
        raise FoolbenchError(f"the control {row['image']!r} was not offered its own class")
    return Item(
        id=row["item"],
        kind=CONTROL,
        image=row["image"],
        target_class=int(row["target_class"]) if str(row["target_class"]).isdigit() else -1,
        target=row["target"],
        options=[str(o) for o in options],
        run=run,
        model_sha256=row["model_sha256"],
        champion="",
        png=b"",
        image_sha256=row["image_sha256"],
    )
