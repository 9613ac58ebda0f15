"""What people's ratings say: which champions people recognise, whose answers count, and how well the
look-alike judge (foolbench.lookalike) agrees with people.

- **Whose answers count.** A rater's answers count when they answered at least MIN_CONTROLS real
  images (controls) and picked the right class for at least CONTROL_THRESHOLD of them. A person
  paying attention names nearly every real digit or photo when its class is among five offered
  (the class, three random others, "none of these"); 80 % leaves room for slips and hard photos,
  and is far above a careless rater's (one answering at random gets 1 in 5; one always answering
  "none of these", none). Raters below it are listed, and set aside.
- **Recognised.** A champion is recognised by people when at least half of the raters who count
  and rated it picked its target: ties go to "recognised", so a champion only counts as fooling
  people when most of them did not see the class in it.
- **The look-alike judge's agreement**: over the rated champions of runs that record a look-alike
  verdict (digit models), how often the judge and people say the same (recognised / look-alike),
  and in which direction they differ.

Rows count only for the champion image they rated (model sha256, champion file and the PNG's
sha256): a run extended since keeps its old rows on disk, and they are left out here, and said so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from foolbench.rating.deck import CHAMPION, CONTROL, RatedRun, read_run

CONTROL_THRESHOLD = 0.8
MIN_CONTROLS = 5
RULE = (
    f"a champion is recognised when at least half of its raters picked its class; a rater counts "
    f"with at least {int(CONTROL_THRESHOLD * 100)} % of at least {MIN_CONTROLS} real images "
    "(controls) answered right"
)


@dataclass
class Summary:
    raters: pd.DataFrame  # rater, controls, controls_right, counted, why
    champions: pd.DataFrame  # run, class, file, label, raters, picked, recognised, lookalike
    runs: pd.DataFrame  # run, model, attack, seed, champions, rated, recognised, raters, lookalike_*
    stale: int = 0  # rows of champion images that are no longer the run's
    notes: list[str] = field(default_factory=list)

    def run_row(self, path: str | Path) -> dict | None:
        """The runs table's row for a run directory (None when nobody counted has rated it)."""
        hit = self.runs[self.runs["run"] == str(path)]
        return hit.iloc[0].to_dict() if len(hit) and hit.iloc[0]["rated"] else None

    def text(self) -> str:
        """The summary as Markdown, for the terminal and for files."""
        parts = [f"Recognised by people ({RULE}):", "", _markdown(self.runs_view())]
        parts += ["", "Raters:", "", _markdown(self.raters_view())]
        if len(self.champions):
            parts += ["", "Champions:", "", _markdown(self.champions_view())]
        parts += [f"\n{n}" for n in self.notes]
        return "\n".join(parts) + "\n"

    def runs_view(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "run": [Path(r).name for r in self.runs["run"]],
                "model": self.runs["model"],
                "attack": self.runs["attack"],
                "recognised by people": [recognised_text(r) for r in self.runs.to_dict("records")],
                "raters": self.runs["raters"],
                "look-alike judge agrees": [agreement_text(r) for r in self.runs.to_dict("records")],
            }
        )

    def raters_view(self) -> pd.DataFrame:
        r = self.raters
        return pd.DataFrame(
            {
                "rater": r["rater"],
                "controls right": [
                    f"{k} of {n}" + (f" ({k / n:.0%})".replace("%", " %") if n else "")
                    for k, n in zip(r["controls_right"], r["controls"], strict=True)
                ],
                "champions rated": r["champions"],
                "counted": ["yes" if c else f"no: {w}" for c, w in zip(r["counted"], r["why"], strict=True)],
            }
        )

    def champions_view(self) -> pd.DataFrame:
        c = self.champions
        return pd.DataFrame(
            {
                "run": [Path(r).name for r in c["run"]],
                "class": c["class"],
                "label": c["label"],
                "picked its class": [f"{k} of {n}" for k, n in zip(c["picked"], c["raters"], strict=True)],
                "recognised": ["yes" if x else "no" for x in c["recognised"]],
                "look-alike": [_yes_no(x) for x in c["lookalike"]],
            }
        )


def recognised_text(run: dict) -> str:
    """ "k of n" champions recognised by people, or "not rated"."""
    return f"{run['recognised']} of {run['rated']}" if run.get("rated") else "not rated"


def agreement_text(run: dict) -> str:
    n = run.get("lookalike_compared") or 0
    if not n:
        return "–"
    return (
        f"{run['lookalike_agree']} of {n} (people only {run['people_only']}, judge only {run['judge_only']})"
    )


def _yes_no(x) -> str:
    return "–" if x is None or pd.isna(x) else ("yes" if x else "no")


def _markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)"
    cells = [[str(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


# -- computing it ------------------------------------------------------------------------------------------
def summarise(runs: list[RatedRun], rows: pd.DataFrame) -> Summary:
    """The summary of `rows` (ratings of `runs`; rows of other runs are ignored)."""
    shas = {r.model_sha256 for r in runs}
    rows = rows[rows["model_sha256"].isin(shas)]
    images = {str(r.path): {f: _sha(r.path / f) for f in r.champions.files} for r in runs}
    current = {(r.model_sha256, f, images[str(r.path)][f]) for r in runs for f in r.champions.files}
    is_champion = rows["kind"] == CHAMPION
    keys = list(zip(rows["model_sha256"], rows["champion"], rows["image_sha256"], strict=True))
    fresh = pd.Series([k in current for k in keys], index=rows.index, dtype=bool)
    stale = int((is_champion & ~fresh).sum())
    rows = rows[~is_champion | fresh]
    raters = _raters(rows)
    counted = set(raters.loc[raters["counted"], "rater"])
    kept = rows[rows["rater"].isin(counted) & (rows["kind"] == CHAMPION)]
    kept = kept.assign(
        key=[
            f"{s}/{c}/{i}"
            for s, c, i in zip(kept["model_sha256"], kept["champion"], kept["image_sha256"], strict=True)
        ]
    )
    champions = _champions(runs, kept, images)
    notes = []
    if stale:
        notes.append(
            f"{stale} answers rate champion images that are no longer their run's (the run was extended "
            "since); they are left out."
        )
    return Summary(raters, champions, _runs(runs, champions, kept, images), stale, notes)


def _raters(rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for rater, mine in rows.groupby("rater", sort=True):
        controls = mine[mine["kind"] == CONTROL]
        n, k = len(controls), int(controls["picked_target"].sum())
        if n < MIN_CONTROLS:
            why = f"{n} controls answered, fewer than {MIN_CONTROLS}"
        elif k / n < CONTROL_THRESHOLD:
            why = f"below {int(CONTROL_THRESHOLD * 100)} % of controls right"
        else:
            why = ""
        out.append(
            {
                "rater": rater,
                "controls": n,
                "controls_right": k,
                "champions": int((mine["kind"] == CHAMPION).sum()),
                "counted": not why,
                "why": why,
            }
        )
    return pd.DataFrame(out, columns=["rater", "controls", "controls_right", "champions", "counted", "why"])


def _champions(runs: list[RatedRun], kept: pd.DataFrame, images: dict) -> pd.DataFrame:
    out = []
    for run in runs:
        verdicts = _lookalike_verdicts(run)
        for f, cls in zip(run.champions.files, run.champions.classes, strict=True):
            answers = kept[kept["key"] == _key(run, f, images)]
            n, k = len(answers), int(answers["picked_target"].sum())
            if not n:
                continue
            out.append(
                {
                    "run": str(run.path),
                    "class": int(cls),
                    "file": f,
                    "label": run.champions.labels.get(int(cls), str(cls)),
                    "raters": n,
                    "picked": k,
                    "recognised": 2 * k >= n,
                    "lookalike": verdicts.get(f),
                }
            )
    columns = ["run", "class", "file", "label", "raters", "picked", "recognised", "lookalike"]
    return pd.DataFrame(out, columns=columns)


def _runs(runs: list[RatedRun], champions: pd.DataFrame, kept: pd.DataFrame, images: dict) -> pd.DataFrame:
    out = []
    for run in runs:
        mine = champions[champions["run"] == str(run.path)]
        judged = mine[mine["lookalike"].notna()] if len(mine) else mine
        people = judged["recognised"].astype(bool) if len(judged) else pd.Series(dtype=bool)
        judge = judged["lookalike"].astype(bool) if len(judged) else pd.Series(dtype=bool)
        out.append(
            {
                "run": str(run.path),
                "model": run.champions.source,
                "attack": run.champions.attack,
                "champions": len(run.champions.files),
                "rated": len(mine),
                "recognised": int(mine["recognised"].sum()) if len(mine) else 0,
                "raters": kept.loc[
                    kept["key"].isin([_key(run, f, images) for f in run.champions.files]), "rater"
                ].nunique(),
                "lookalike_compared": len(judged),
                "lookalike_agree": int((people == judge).sum()),
                "people_only": int((people & ~judge).sum()),
                "judge_only": int((~people & judge).sum()),
            }
        )
    return pd.DataFrame(out)


def _key(run: RatedRun, file: str, images: dict) -> str:
    """A champion image as rows name it: model sha256, file and the PNG's sha256."""
    return f"{run.model_sha256}/{file}/{images[str(run.path)][file]}"


def _lookalike_verdicts(run: RatedRun) -> dict[str, bool]:
    """champion file -> the look-alike judge's verdict, where the run recorded one."""
    from foolbench.rundir import read_results

    results = read_results(run.path)
    if "lookalike" not in results.columns:
        return {}
    return {
        f: str(v).strip().lower() == "true"
        for f, v in zip(results["file"], results["lookalike"], strict=True)
        if str(v).strip() != ""
    }


def _sha(path: Path) -> str:
    from foolbench.fileio import sha256_file

    return sha256_file(path)


# -- reading ------------------------------------------------------------------------------------------------
def summarise_dirs(run_dirs, out: str | Path | None = None) -> Summary:
    """The summary of the ratings of run directories: their own ratings.csv, or OUT/ratings.csv."""
    from foolbench.rating.store import Store

    runs = [read_run(p) for p in run_dirs]
    return summarise(runs, Store(runs, out).read())


def summarise_found(run_dirs, extra=()) -> Summary | None:
    """The ratings of the runs a report shows: each run's own ratings.csv (which must be that run's)
    and ratings files found beside them (`foolbench rate --out`; rows of runs not shown are left
    out). None where nobody has rated any of them."""
    from foolbench.rating.store import RATINGS, Store, read_ratings

    extra_rows = [read_ratings(Path(f)) for f in extra]
    shas = set().union(*(set(f["model_sha256"]) for f in extra_rows)) if extra_rows else set()
    chosen = []
    for path in map(Path, run_dirs):
        if (path / RATINGS).is_file() or (shas and _manifest_sha(path) in shas):
            chosen.append(read_run(path))
    if not chosen:
        return None
    frames = [Store(chosen).read(), *extra_rows]
    rows = pd.concat([f for f in frames if len(f)] or [frames[0]], ignore_index=True)
    rows = rows.drop_duplicates(["rater", "item", "model_sha256"])
    return summarise(chosen, rows) if len(rows) else None


def _manifest_sha(path: Path) -> str:
    from foolbench.rating.deck import model_sha256
    from foolbench.rundir import read_manifest

    return model_sha256(read_manifest(path))


def people_cells(run_dirs) -> dict:
    """A leaderboard row's cells from people's ratings of the runs it was scored from: the champions
    recognised by people ("k of n") and how many raters counted; none where nobody counted rated them."""
    summary = summarise_found(run_dirs)
    if summary is None or summary.champions.empty:
        return {}
    k, n = int(summary.runs["recognised"].sum()), int(summary.runs["rated"].sum())
    return {"recognised_by_people": f"{k} of {n}", "people_raters": int(summary.raters["counted"].sum())}
