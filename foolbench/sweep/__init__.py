"""Sweeps: many independent runs from one command, on local worker processes or a Ray cluster.

`plan` turns models x attacks x seeds (x class shards) into checked jobs with fixed run directory
names; `executors` runs them; `merge` joins the class shards of each (model, attack, seed) into one
run, `<model>-<attack>-s<seed>-merged`. Re-running a sweep skips its finished runs and resumes
killed ones, so a sweep that stopped half-way is continued by running the same command again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from foolbench.errors import FoolbenchError
from foolbench.sweep.executors import EXECUTORS
from foolbench.sweep.merge import merge
from foolbench.sweep.plan import DEFAULT_OUT, Job, Sweep, parse_seeds, plan

__all__ = ["DEFAULT_OUT", "EXECUTORS", "Job", "Sweep", "merge", "parse_seeds", "plan", "run_sweep"]


def run_sweep(
    sweep: Sweep,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    cpus_per_job: int = 1,
    gpus_per_job: float | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Run every job of the sweep not finished yet, merge shards; returns the finished run directories.

    Everything is checked before the first job starts. A job that fails does not stop the others;
    afterwards one FoolbenchError names it, and every run that finished stays as it is.
    """
    from foolbench.sweep import executors

    if executor not in EXECUTORS:
        raise FoolbenchError(f"unknown executor '{executor}'; use one of {', '.join(EXECUTORS)}")
    if jobs is not None and jobs < 1:
        raise FoolbenchError(f"--jobs must be 1 or more, not {jobs}")
    if cpus_per_job < 1 or (gpus_per_job is not None and gpus_per_job < 0):
        raise FoolbenchError("--cpus-per-job must be 1 or more and --gpus-per-job 0 or more")
    if executor == "ray":
        executors.ray_address(address)  # an unreachable cluster is refused before anything runs
    planned = plan(sweep)
    todo = [job for job in planned if job.state != "finished"]
    for job in planned:
        if job.state == "finished":
            log(f"sweep: {job.name} finished earlier (skipped)")
    results: list[dict] = []
    if todo:
        if executor == "ray":
            workers, gpus_per_job = executors.connect_ray(address, jobs, cpus_per_job, gpus_per_job)
            stream = executors.run_ray(todo, workers, cpus_per_job, gpus_per_job)
        else:
            stream = executors.run_local(todo, jobs or 1)
        for result in stream:
            results.append(result)
            log(_line(result, len(results), len(todo)))
    failed = [r for r in results if "error" in r]
    merged = _merge_shards(planned, failed, sweep, log) if sweep.shards > 1 else []
    if failed:
        more = f" (and {len(failed) - 1} more runs)" if len(failed) > 1 else ""
        raise FoolbenchError(
            f"run {failed[0]['name']} failed{more}: {failed[0]['error']}; the other runs are kept — "
            "fix it and run the same sweep again to continue"
        )
    return [job.run_dir for job in planned] + merged


def _line(result: dict, done: int, total: int) -> str:
    if "error" in result:
        return f"sweep: [{done}/{total}] {result['name']} FAILED: {result['error']}"
    from foolbench import rundir
    from foolbench.text import percent

    s = rundir.read_summary(Path(result["out"]))
    return (
        f"sweep: [{done}/{total}] {result['name']} {result['state']} in {result['seconds']:.1f} s: "
        f"median {percent(s['median_confidence'])}, {s['classes_at_99']}/{s['classes']} classes >= 99%, "
        f"{s['evaluations_per_second']:,.0f} eval/s"
    )


def _merge_shards(planned: list[Job], failed: list[dict], sweep: Sweep, log) -> list[Path]:
    """Merge the shards of each group whose shards all finished into <group>-merged (once)."""
    from foolbench import rundir

    failed_names = {r["name"] for r in failed}
    groups: dict[str, list[Job]] = {}
    for job in planned:
        groups.setdefault(job.group, []).append(job)
    merged = []
    for group, shard_jobs in groups.items():
        if any(job.name in failed_names for job in shard_jobs):
            continue
        out = shard_jobs[0].run_dir.parent / f"{group}-merged"
        sources = [str(job.run_dir.resolve()) for job in shard_jobs]
        if rundir.is_finished(out) and "merged_from" in rundir.read_summary(out):
            recorded = [m["run"] for m in rundir.read_manifest(out).get("merged_from", [])]
            if recorded == sources:
                log(f"sweep: {out.name} merged earlier (skipped)")
                merged.append(out)
                continue
        if out.exists():  # an interrupted merge: it holds nothing that cannot be made again
            import shutil

            shutil.rmtree(out)
        merge([job.run_dir for job in shard_jobs], out, seed=shard_jobs[0].seed)
        s = rundir.read_summary(out)
        log(f"sweep: {out.name} merged {len(shard_jobs)} shards: {s['classes_at_99']}/{s['classes']} >= 99%")
        merged.append(out)
    return merged
