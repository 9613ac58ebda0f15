"""How long scoring one model under protocol v3 takes, from nothing to its row.

Runs `foolbench score --model NAME --protocol v3` into a fresh work folder (no finished runs to
reuse) in a child process, and records its wall time, its CPU time (user + system, the child's), the
load average before and after (the machine is shared: wall time on busy cores says little alone),
and each run's own seconds from its summary.json. Targets (issue 20): a LeNet in at most 5 minutes
on 2 cores, an EfficientNet in at most 30. Results are added to benchmarks/results/v3_timing.json
under the model's name.

    nice -n 10 python benchmarks/v3_timing.py --model lenet-mnist
    nice -n 10 python benchmarks/v3_timing.py --model airnet-cifar10 --keep --leaderboard reports/leaderboard.csv

`--keep` scores into the model's usual work folder (runs/score/<name>-<sha>/v3, which must hold no
runs yet, so the time is from nothing) and keeps it, so the timed score is also the row's score;
`--leaderboard` adds the row to a leaderboard file.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, load_average, write  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--protocol", default="v3")
    parser.add_argument("--keep", action="store_true", help="score into the usual work folder and keep it")
    parser.add_argument("--leaderboard", type=Path, help="also add the row to this leaderboard CSV")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="v3-timing-"))
    runs_dir = usual_work(args.model, args.protocol) if args.keep else tmp / "runs"
    if runs_dir.is_dir() and any(runs_dir.iterdir()):
        sys.exit(f"{runs_dir} already holds runs: a timing must start from nothing (move them away first)")
    board = args.leaderboard or tmp / "board.csv"
    load0 = load_average()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "foolbench.cli", "score", "--model", args.model, "--protocol", args.protocol]
    subprocess.run([*cmd, "--work", runs_dir, "--leaderboard", board, "--no-progress"], check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    runs = {}
    for summary in sorted(runs_dir.glob("*/summary.json")):
        s = json.loads(summary.read_text())
        runs[summary.parent.name] = {"seconds": s["seconds"], "queries": s.get("queries")}
    row = json.loads((runs_dir / "score.json").read_text())["row"]
    shutil.rmtree(tmp)
    path = RESULTS / "v3_timing.json"
    models = json.loads(path.read_text())["models"] if path.is_file() else {}
    models[args.model] = {
        "command": " ".join(["nice -n 10 python benchmarks/v3_timing.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "load_average": [load0, load_average()],
        "runs": runs,
        "fooling_score": row["fooling_score"],
    }
    write("v3_timing", {"models": models})
    print(json.dumps(models[args.model], indent=1))


def usual_work(model: str, protocol: str) -> Path:
    """The folder `foolbench score` uses for this model and protocol when --work is not given."""
    from foolbench.experiments.score import work_dir
    from foolbench.fileio import sha256_file
    from foolbench.models.load import ModelOptions
    from foolbench.resolve import load_model

    m = load_model(model, ModelOptions())
    return work_dir(m.name, sha256_file(m.path), protocol)


if __name__ == "__main__":
    main()
