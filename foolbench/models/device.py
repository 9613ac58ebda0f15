"""Where models run: the device a user asks for, the one obtained, and what makes CUDA repeatable.

A user asks with `--device auto|cpu|cuda` (the CLI sets $FOOLBENCH_DEVICE, so a sweep's workers
inherit it). `auto` wants CUDA wherever a GPU is visible; when CUDA was wanted and not obtained
(torch built without CUDA, onnxruntime without its CUDA provider, libraries or a driver that do not
load) one line says so and the work carries on on the CPU. `cuda` requires it: without it one line
and exit 2. A library never falls back to the CPU silently: `check_session` compares the providers
an onnxruntime session got with the ones asked for.

The adapter owns the torch device (`Model.device`, from `torch_device`): engines, encodings and
judges create their tensors there, never assuming the CPU. On CUDA the settings that make a run
repeatable are switched on before the first kernel runs (`_repeatable_torch`, `cuda_options`); on
the CPU nothing is changed, so CPU results stay what they were.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from pathlib import Path

from foolbench.errors import FoolbenchError

DEVICES = ("auto", "cpu", "cuda")
DEVICE_ENV = "FOOLBENCH_DEVICE"  # the device asked for; `--device` sets it
GPU_SHARE_ENV = "FOOLBENCH_GPU_SHARE"  # processes sharing this process's GPU (a sweep's workers)
GPU_MEMORY_SHARE = 0.8  # of a shared GPU's memory, split evenly between the processes sharing it
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
_said: set[str] = set()


def say_once(message: str) -> None:
    """One line on stderr, once per process (a sweep loads many models)."""
    if message not in _said:
        _said.add(message)
        print(f"foolbench: {message}", file=sys.stderr, flush=True)


def requested() -> str:
    """The device asked for: $FOOLBENCH_DEVICE (set by `--device`), else auto."""
    value = (os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if value not in DEVICES:
        raise FoolbenchError(f"{DEVICE_ENV}={value!r} is not a device; use one of {', '.join(DEVICES)}")
    return value


def use(device: str) -> None:
    """Ask for `device` in this process and the workers it starts (what `--device` does)."""
    if device not in DEVICES:
        raise FoolbenchError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    os.environ[DEVICE_ENV] = device


# -- is a GPU there at all? --------------------------------------------------------------------------
def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (indices or UUIDs).

    The variable where it is set (empty or -1: none); else the GPUs a CUDA build of torch counts
    (which starts no CUDA context); else those the driver lists, so that a CPU-only torch beside
    onnxruntime-gpu, or a torch whose CUDA does not load, still sees that a GPU is there.
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        names = [n.strip() for n in listed.split(",") if n.strip()]
        return [] if not names or names[0] == "-1" else names
    import torch

    count = torch.cuda.device_count() if torch.version.cuda is not None else 0
    driver = Path("/proc/driver/nvidia/gpus")
    if not count and driver.is_dir():
        count = len(list(driver.iterdir()))
    if not count:  # a container may show the device files without the driver's /proc entries
        count = len(list(Path("/dev").glob("nvidia[0-9]*")))
    return [str(i) for i in range(count)]


def cuda_wanted(request: str) -> bool:
    """Whether a request wants CUDA: `cuda` always, `auto` where a GPU is visible."""
    return request == "cuda" or (request == "auto" and bool(visible_gpus()))


# -- torch ---------------------------------------------------------------------------------------------
def torch_device(request: str | None = None):
    """The torch device a request (default: the one asked for now) obtains in this process."""
    return _torch_device(request or requested())


@functools.cache
def _torch_device(request: str):
    """Once per request and process: the answer does not change, and a GPU is probed only once."""
    import torch

    if not cuda_wanted(request):
        return torch.device("cpu")
    why = _torch_cuda_problem()
    if why is None:
        return torch.device("cuda")
    if request == "cuda":
        raise FoolbenchError(
            f"--device cuda: PyTorch cannot use a GPU ({why}); install a CUDA build of torch that "
            "matches the driver, or run with --device cpu"
        )
    say_once(
        f"a GPU is visible but PyTorch cannot use it ({why}); PyTorch models and gradients run on the CPU"
    )
    return torch.device("cpu")


def _torch_cuda_problem() -> str | None:
    """None when torch can run a kernel on the GPU, else why not, in a few words."""
    import torch

    if torch.version.cuda is None:
        return "this torch is built without CUDA"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False: the driver or the GPU did not answer"
    _repeatable_torch()  # before the first kernel: cuBLAS reads its workspace setting once
    try:
        (torch.ones(2, device="cuda") * 2).sum().item()
    except (RuntimeError, AssertionError) as e:
        return (str(e).splitlines() or [type(e).__name__])[0][:160]
    return None


def _repeatable_torch() -> None:
    """What makes torch's CUDA kernels give the same numbers each run: deterministic cuDNN without
    benchmarking, no TF32 (it rounds float32 matmuls and convolutions to 10 bits of mantissa), and
    torch's deterministic algorithms where they exist (a warning names an op that has none)."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


# -- onnxruntime -----------------------------------------------------------------------------------------
def onnx_providers(request: str | None = None) -> list:
    """The execution providers to ask onnxruntime for (CUDA with its repeatable options, then the CPU)."""
    request = request or requested()
    if not cuda_wanted(request):
        return [CPU_PROVIDER]
    import onnxruntime as ort

    if CUDA_PROVIDER not in ort.get_available_providers():
        _not_obtained(request, "this onnxruntime has no CUDA provider; pip install onnxruntime-gpu")
        return [CPU_PROVIDER]
    return [(CUDA_PROVIDER, cuda_options()), CPU_PROVIDER]


def cuda_options() -> dict[str, str]:
    """onnxruntime CUDA options for repeatable runs: convolution algorithms chosen by cuDNN's
    heuristic (the default, exhaustive search, times candidates in each process and may pick
    another algorithm each time), no TF32, and a memory pool capped where processes share the GPU."""
    options = {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}
    share = int(os.environ.get(GPU_SHARE_ENV) or 1)
    if share > 1:
        total = _gpu_memory()
        if total:
            options["gpu_mem_limit"] = str(int(total * GPU_MEMORY_SHARE / share))
    return options


def session_options(opts, providers: list) -> None:
    """Make a session repeatable where it runs on CUDA (deterministic kernels where onnxruntime has a
    choice); a CPU session is left as it is."""
    if any(_name(p) == CUDA_PROVIDER for p in providers):
        opts.use_deterministic_compute = True


def check_session(session, providers: list, request: str | None = None) -> None:
    """The providers a session got against those asked for: onnxruntime opens a session on the CPU
    when its CUDA provider cannot start, and says so only in its log."""
    request = request or requested()
    asked = [_name(p) for p in providers]
    if CUDA_PROVIDER in asked and CUDA_PROVIDER not in session.get_providers():
        _not_obtained(
            request,
            "onnxruntime could not start its CUDA provider (CUDA or cuDNN libraries missing, or a "
            "driver that does not match)",
        )


def _not_obtained(request: str, why: str) -> None:
    if request == "cuda":
        raise FoolbenchError(f"--device cuda: {why}; fix the CUDA set-up or run with --device cpu")
    say_once(f"a GPU is visible but {why}; ONNX models score on the CPU, at cpu scale")


def onnx_on_gpu(request: str | None = None) -> bool:
    """Whether onnxruntime obtains its CUDA provider here: a one-node graph is opened as models are."""
    return _onnx_on_gpu(request or requested())


@functools.cache
def _onnx_on_gpu(request: str) -> bool:
    providers = onnx_providers(request)
    if len(providers) == 1:
        return False
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    ort.set_default_logger_severity(4)  # its CUDA provider's own errors are said in one line of ours
    session = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=providers)
    check_session(session, providers, request)
    return CUDA_PROVIDER in session.get_providers()


def scores_on_gpu(backend: str, request: str | None = None) -> bool:
    """Whether models of `backend` ("onnx" or "pytorch") score on a GPU here: what `--scale auto`
    follows, so that a broken CUDA set-up never starts the paper's budgets on the CPU."""
    if backend == "onnx":
        return onnx_on_gpu(request)
    return torch_device(request).type == "cuda"


def _name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def _gpu_memory() -> int | None:
    """Bytes of memory of this process's first GPU, where torch can tell."""
    import torch

    try:
        if torch.version.cuda is not None and torch.cuda.is_available():
            return int(torch.cuda.get_device_properties(0).total_memory)
    except RuntimeError:
        pass
    return None


# -- what a manifest records ---------------------------------------------------------------------------------
def placement(model) -> dict:
    """Where a model's numbers come from: its scoring provider, the torch device of its gradients
    and tensors, and the GPU's name (two runs agree bit for bit only where these three agree), and
    which of the machine's GPUs the process saw (CUDA_VISIBLE_DEVICES, as a sweep's worker gets it)."""
    import torch

    device = getattr(model, "device", torch.device("cpu"))
    gpu = None
    if device.type == "cuda" or CUDA_PROVIDER in str(getattr(model, "provider", "")):
        gpu = _gpu_name()
    record = {"provider": model.provider, "torch_device": device.type, "gpu": gpu}
    if gpu is not None:
        record["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return record


def library_versions() -> dict:
    """CUDA and cuDNN as torch sees them (None on a CPU build), and the CPU: its instruction set
    changes the floats of CPU kernels (a LeNet trained on an AVX2-only CPU gets other weights than
    on an AVX-512 one), so a manifest must say which it ran on."""
    import torch

    cudnn = None
    if torch.version.cuda is not None and torch.backends.cudnn.is_available():
        cudnn = torch.backends.cudnn.version()
    return {
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def cpu_name() -> str:
    """The CPU's model name ('AMD EPYC 7B13'), from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name() -> str | None:
    import torch

    try:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except (RuntimeError, AssertionError):
        return None


def describe_placement(record: dict | None) -> str:
    """A placement in a few words: 'the CPU (CPUExecutionProvider)' or 'cuda (..., NVIDIA H100)'."""
    record = record or CPU_PLACEMENT
    where = "the CPU" if record.get("torch_device") == "cpu" else record.get("torch_device", "?")
    extra = ", ".join(str(v) for v in (record.get("provider"), record.get("gpu")) if v)
    return f"{where} ({extra})" if extra else where


# Manifests written before foolbench recorded a placement: every such run ran on the CPU.
CPU_PLACEMENT = {"provider": None, "torch_device": "cpu", "gpu": None}


def same_placement(recorded: dict | None, now: dict) -> bool:
    """Whether a run recorded at `recorded` continues bit for bit at `now`. A manifest older than
    the record ran on the CPU with whichever CPU provider its model had."""
    recorded = recorded or CPU_PLACEMENT
    if any(recorded.get(k) != now.get(k) for k in ("torch_device", "gpu")):
        return False
    if recorded.get("provider") is None:
        return CUDA_PROVIDER not in str(now.get("provider"))
    return recorded.get("provider") == now.get("provider")
