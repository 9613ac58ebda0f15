"""Where the jobs of a sweep run: worker processes on this machine, or tasks on a Ray cluster.

Both executors run the same function, `run_job`, in worker processes that each keep the models
they loaded (so a worker running ten seeds of one model loads it once), and both yield one result
dict per job as it finishes: {"name", "out", "state", "seconds"} or {"name", "out", "error"}.
A failing job never stops the others; the sweep reports it once they are done.

GPUs: each worker sees only the GPU it is given (CUDA_VISIBLE_DEVICES), so torch and onnxruntime
in every worker use their own device 0 and no two crowd onto the machine's first GPU. Local
workers get the visible GPUs round-robin (`worker_environments`); Ray gives each actor its share
(`--gpus-per-job`, by default one GPU per worker, or an even fraction where workers outnumber
GPUs). A worker without a GPU sees none; workers that share one split onnxruntime's memory pool
(`models.device.GPU_SHARE_ENV`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

from foolbench.errors import FoolbenchError

EXECUTORS = ("local", "ray")
RAY_PROBE_TIMEOUT_S = 5  # how long a cluster address may take to accept a TCP connection


# -- one job, in a worker ---------------------------------------------------------------------------
_worker_threads: int | None = None  # set by init_worker in a worker process (0: the default threads)
_models = None  # this worker process's ModelCache (a model loads once per worker), made at its first job
THREADS_ENV = "FOOLBENCH_THREADS"  # models.onnx_model.THREADS_ENV (importing it here would load torch)


def run_job(name: str, request) -> dict:
    """Start, resume or skip one run; errors come back as one line, never as a crash of the pool."""
    from foolbench.runner import ensure_run

    _start_worker()
    t0 = time.perf_counter()
    try:
        _, state = ensure_run(request, _models)
    except FoolbenchError as e:
        return {"name": name, "out": str(request.out), "error": str(e)}
    except Exception as e:  # a library's own error (onnxruntime, torch): keep its first line
        first = (str(e).splitlines() or [""])[0][:300]
        return {"name": name, "out": str(request.out), "error": f"{type(e).__name__}: {first}"}
    return {"name": name, "out": str(request.out), "state": state, "seconds": time.perf_counter() - t0}


def init_worker(threads: int | None, environments: list[dict] | None = None, counter=None) -> None:
    """Set up a worker process: its GPU and its threads (None: the defaults); its model cache and
    torch's threads follow at its first job, so that starting a worker loads nothing.

    Several workers each using every core would fight over them (and onnxruntime's and torch's thread
    pools stall when one of their threads is descheduled), so each worker gets its share of the cores.
    `environments`: one per worker (`worker_environments`); `counter`, shared by the pool's workers,
    hands each the next one. Set before torch or onnxruntime start CUDA, which read them once.
    """
    global _worker_threads
    if environments:
        with counter.get_lock():
            index, counter.value = counter.value, counter.value + 1
        os.environ.update(environments[index % len(environments)])
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = os.environ[THREADS_ENV] = str(threads)
    _worker_threads = threads or 0


def _start_worker() -> None:
    """At a worker's first job: torch's threads as `init_worker` was told, and the model cache."""
    global _models
    if _worker_threads is None or _models is not None:
        return  # not a worker (a one-worker sweep runs in the caller's process), or started already
    if _worker_threads:
        import torch

        torch.set_num_threads(_worker_threads)
    from foolbench.runner import ModelCache

    _models = ModelCache()


def worker_environment(hold_seconds: float = 0.0) -> dict[str, str]:
    """This worker's process id, GPU and foolbench settings, after `hold_seconds` (so that a pool's
    other workers take the tasks submitted next): what each worker was given, for tests and logs."""
    time.sleep(hold_seconds)
    keep = {k: v for k, v in os.environ.items() if k == "CUDA_VISIBLE_DEVICES" or k.startswith("FOOLBENCH_")}
    return {"pid": str(os.getpid()), **keep}


def worker_environments(workers: int, gpus: list[str]) -> list[dict[str, str]]:
    """The GPU settings of each of `workers` local workers: the visible `gpus` round-robin, each
    worker seeing only its own, with FOOLBENCH_GPU_SHARE saying how many workers share it; no GPU
    at all for every worker where there are none."""
    from foolbench.models.device import GPU_SHARE_ENV

    if not gpus:
        return [{"CUDA_VISIBLE_DEVICES": ""} for _ in range(workers)]
    sharing = [len(range(i, workers, len(gpus))) for i in range(len(gpus))]  # workers per GPU
    return [
        {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)], GPU_SHARE_ENV: str(sharing[i % len(gpus)])}
        for i in range(workers)
    ]


# -- local: worker processes on this machine ---------------------------------------------------------
def run_local(jobs: list, workers: int) -> Iterator[dict]:
    """Run the jobs in `workers` spawned processes (in this process when there is one worker)."""
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            yield run_job(job.name, job.request)
        return
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    with local_pool(min(workers, len(jobs))) as pool:
        futures = [pool.submit(run_job, job.name, job.request) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:  # a worker was killed (out of memory, a crash in a library)
            raise FoolbenchError(
                "a worker process died while running the sweep; run the same sweep again to resume"
            ) from None


def local_pool(workers: int):
    """`workers` spawned processes, one thread each, each given its GPU (`worker_environments`)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from foolbench.models.device import requested, visible_gpus

    context = multiprocessing.get_context("spawn")
    gpus = [] if requested() == "cpu" else visible_gpus()
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=init_worker,
        initargs=(1, worker_environments(workers, gpus), context.Value("i", 0)),
    )


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


def connect_ray(
    address: str | None, workers: int | None, cpus_per_job: int, gpus_per_job: float | None
) -> tuple[int, float]:
    """Connect to the cluster at `address` (or $RAY_ADDRESS, or a new local one); returns the worker
    count and the GPUs per worker (`ray_gpus_per_job` where `gpus_per_job` is None).

    Workers get foolbench's environment variables (FOOLBENCH_ZOO, FOOLBENCH_DEVICE, ...) so they
    find the same models and use the device asked for.
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
    resources = ray.cluster_resources()
    if gpus_per_job is None:
        gpus_per_job = ray_gpus_per_job(resources.get("GPU", 0), workers)
    if workers is not None:
        return workers, gpus_per_job
    if gpus_per_job > 0:
        return max(1, int(resources.get("GPU", 0) / gpus_per_job)), gpus_per_job
    return max(1, int(resources.get("CPU", 1) / cpus_per_job)), gpus_per_job


def ray_gpus_per_job(gpus: float, workers: int | None) -> float:
    """GPUs per Ray worker when the user names none: one each (as many workers as GPUs), or an even
    share 1/k where more workers are asked for than there are GPUs (a fraction Ray can pack onto
    one GPU); none on a cluster without GPUs or with --device cpu."""
    from foolbench.models.device import requested

    if gpus < 1 or requested() == "cpu":
        return 0.0
    if workers is None or workers <= gpus:
        return 1.0
    return 1.0 / math.ceil(workers / int(gpus))


def ray_worker_environment(gpus_per_job: float) -> dict[str, str]:
    """What a Ray actor adds to the GPU settings Ray gives it: a worker with no GPU sees none, and
    workers sharing one (a fraction each) split onnxruntime's memory pool."""
    from foolbench.models.device import GPU_SHARE_ENV

    if gpus_per_job <= 0:
        return {"CUDA_VISIBLE_DEVICES": ""}
    if gpus_per_job < 1:
        return {GPU_SHARE_ENV: str(math.floor(1 / gpus_per_job + 1e-9))}
    return {}


def run_ray(jobs: list, workers: int, cpus_per_job: int, gpus_per_job: float) -> Iterator[dict]:
    """Run the jobs on `workers` Ray actors (one worker process each, models cached per actor).

    The driver chose every run directory; actors write them directly, so the cluster's machines must
    share the sweep folder (NFS or similar) at the same path.
    """
    import ray
    from ray.util import ActorPool

    try:
        actor = ray.remote(num_cpus=cpus_per_job, num_gpus=gpus_per_job)(RayWorker)
        actors = [actor.remote(cpus_per_job, gpus_per_job) for _ in range(min(workers, len(jobs)))]
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda a, job: a.run.remote(job.name, job.request), jobs)
    except ray.exceptions.RayError as e:  # a worker process died (out of memory, a crash in a library)
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise FoolbenchError(f"a Ray worker stopped while running the sweep: {first}") from None
    finally:
        ray.shutdown()


class RayWorker:
    """A Ray actor: one worker process that runs jobs one at a time and keeps its models loaded."""

    def __init__(self, threads: int, gpus_per_job: float = 0.0):
        os.environ.update(ray_worker_environment(gpus_per_job))
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
