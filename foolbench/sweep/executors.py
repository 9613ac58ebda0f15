"""Where the jobs of a sweep run: worker processes on this machine, or tasks on a Ray cluster.

Both executors run the same function, `run_job`, in worker processes that each keep the models
they loaded (so a worker running ten seeds of one model loads it once), and both yield one result
dict per job as it finishes: {"name", "out", "state", "seconds"} or {"name", "out", "error"}.
A failing job never stops the others; the sweep reports it once they are done.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from foolbench.errors import FoolbenchError

EXECUTORS = ("local", "ray")
RAY_PROBE_TIMEOUT_S = 5  # how long a cluster address may take to accept a TCP connection


# -- one job, in a worker ---------------------------------------------------------------------------
_models = None  # this worker process's ModelCache (a model loads once per worker), set by init_worker


def run_job(name: str, request) -> dict:
    """Start, resume or skip one run; errors come back as one line, never as a crash of the pool."""
    from foolbench.runner import ensure_run

    t0 = time.perf_counter()
    try:
        _, state = ensure_run(request, _models)
    except FoolbenchError as e:
        return {"name": name, "out": str(request.out), "error": str(e)}
    except Exception as e:  # a library's own error (onnxruntime, torch): keep its first line
        first = (str(e).splitlines() or [""])[0][:300]
        return {"name": name, "out": str(request.out), "error": f"{type(e).__name__}: {first}"}
    return {"name": name, "out": str(request.out), "state": state, "seconds": time.perf_counter() - t0}


def init_worker(threads: int | None) -> None:
    """Set up a worker process: cache loaded models, and use `threads` threads (None: the defaults).

    Several workers each using every core would fight over them (and onnxruntime's and torch's thread
    pools stall when one of their threads is descheduled), so each worker gets its share of the cores.
    """
    global _models
    if threads is not None:
        from foolbench.models.onnx_model import THREADS_ENV

        os.environ["OMP_NUM_THREADS"] = os.environ[THREADS_ENV] = str(threads)
        import torch

        torch.set_num_threads(threads)
    from foolbench.runner import ModelCache

    _models = ModelCache()


# -- local: worker processes on this machine ---------------------------------------------------------
def run_local(jobs: list, workers: int) -> Iterator[dict]:
    """Run the jobs in `workers` spawned processes (in this process when there is one worker)."""
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            yield run_job(job.name, job.request)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=init_worker,
        initargs=(1,),
    ) as pool:
        futures = [pool.submit(run_job, job.name, job.request) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:  # a worker was killed (out of memory, a crash in a library)
            raise FoolbenchError(
                "a worker process died while running the sweep; run the same sweep again to resume"
            ) from None


# -- Ray: actors on a cluster ------------------------------------------------------------------------
def ray_address(address: str | None) -> str | None:
    """The cluster address to use (`--address`, else $RAY_ADDRESS, else None: a new local cluster).

    A plain TCP connection is tried first: `ray.init` keeps retrying an address where nothing
    listens for many minutes, and a sweep should say at once that the address is wrong.
    """
    import socket

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address in ("auto", "local"):
        return address
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise FoolbenchError(f"Ray address '{address}' is not HOST:PORT (e.g. 10.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=RAY_PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise FoolbenchError(
            f"cannot connect to the Ray cluster at {address}: {e.strerror or e}; "
            "start it with 'ray start --head' or check --address / RAY_ADDRESS"
        ) from None
    return address


def connect_ray(address: str | None, workers: int | None, cpus_per_job: int, gpus_per_job: float) -> int:
    """Connect to the cluster at `address` (or $RAY_ADDRESS, or a new local one); returns the worker count.

    Workers get foolbench's environment variables (FOOLBENCH_ZOO, ...) so they find the same models.
    """
    import logging

    import ray

    address = ray_address(address)
    env = {k: v for k, v in os.environ.items() if k.startswith("FOOLBENCH_")}
    env.setdefault("FOOLBENCH_ZOO", str(_zoo_dir()))
    options = {
        "runtime_env": {"env_vars": env},
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address is None:
        cpus = workers * cpus_per_job if workers else os.cpu_count()
        options |= {"include_dashboard": False, "num_cpus": cpus}
    try:
        with _quiet_stderr():
            ray.init(address=address, **options)
    except Exception as e:  # ConnectionError, TimeoutError, ray's own: all mean "no cluster there"
        why, chain, hint = _first_line(e), [], ""
        while e is not None:
            chain, e = [*chain, str(e)], e.__cause__
        if "InvalidAuthToken" in " ".join(chain):
            hint = "; the cluster uses token authentication: set RAY_AUTH_MODE=token here too"
        raise FoolbenchError(f"cannot connect to the Ray cluster at {address}: {why}{hint}") from None
    if workers is not None:
        return workers
    resources = ray.cluster_resources()
    if gpus_per_job > 0:
        return max(1, int(resources.get("GPU", 0) / gpus_per_job))
    return max(1, int(resources.get("CPU", 1) / cpus_per_job))


def run_ray(jobs: list, workers: int, cpus_per_job: int, gpus_per_job: float) -> Iterator[dict]:
    """Run the jobs on `workers` Ray actors (one worker process each, models cached per actor).

    The driver chose every run directory; actors write them directly, so the cluster's machines must
    share the sweep folder (NFS or similar) at the same path.
    """
    import ray
    from ray.util import ActorPool

    try:
        actor = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job)(RayWorker)
        actors = [actor.remote(cpus_per_job) for _ in range(min(workers, len(jobs)))]
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda a, job: a.run.remote(job.name, job.request), jobs)
    except ray.exceptions.RayError as e:  # a worker process died (out of memory, a crash in a library)
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise FoolbenchError(f"a Ray worker stopped while running the sweep: {first}") from None
    finally:
        ray.shutdown()


class RayWorker:
    """A Ray actor: one worker process that runs jobs one at a time and keeps its models loaded."""

    def __init__(self, threads: int):
        init_worker(threads)

    def run(self, name: str, request) -> dict:
        return run_job(name, request)


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"


def _zoo_dir() -> Path:
    from foolbench.zoo.registry import zoo_dir

    return zoo_dir().resolve()


@contextlib.contextmanager
def _quiet_stderr():
    """Ray prints banners and retry warnings while connecting; the sweep prints its own lines."""
    fd = 2  # the process's stderr, whatever sys.stderr has been replaced with
    saved = os.dup(fd)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
