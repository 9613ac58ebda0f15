"""Devices, checked on a machine without a GPU: no silent CPU fallback, one device everywhere (on a
stand-in device), resumes refused across devices, every sweep worker given its own GPU, and the
fixed-kernel resize that makes CUDA gradients repeatable.

The stand-in device. A mixed-device bug (a tensor left on the CPU while the model is on CUDA)
fails on a GPU machine at the first operation that mixes them. Here, with no GPU, the adapter's
device is `meta` (tensors with shapes and no data) and `StandIn`, a TorchFunctionMode, holds every
torch call to CUDA's rule: all tensors of one operation on one device, CPU scalars excepted, data
copied to the host only through `.cpu()`/`.to("cpu")` (which hand back zeros of the right shape, as
meta has no data to copy). meta alone would not do: its kernels accept CPU arguments in many ops
(einsum, matmul, baddbmm) that CUDA refuses. Numbers are meaningless on it, so these tests prove
placement only; the other test files prove the numbers on the CPU.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import export, tiny
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from foolbench.errors import FoolbenchError
from foolbench.models import ModelOptions, load_model
from foolbench.models import device as devices
from foolbench.models.card import ModelCard
from foolbench.models.preprocess import interpolation_matrix, resize, resize_by_matrices
from foolbench.models.torch_model import TorchModel
from foolbench.runner import RunRequest, resolve_scale, resume_run, start_run
from foolbench.search import Evaluator, Search
from foolbench.search.gradient import GradientAscent, gradient_batch
from foolbench.search.gradient_cppn import CPPNGradient
from foolbench.sweep import executors

META = torch.device("meta")
_SCALARS = {
    torch.Tensor.item,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__bool__,
    torch.Tensor.__index__,
    torch.Tensor.tolist,
}
# Calls that take tensors of two devices by design (copies, and Module.to's own bookkeeping).
_TRANSFERS = {
    torch.Tensor.to,
    torch.Tensor.copy_,
    torch.Tensor.cpu,
    torch._has_compatible_shallow_copy_type,
    torch.Tensor.data.__set__,
}


class StandIn(TorchFunctionMode):
    """CUDA's device rules over meta tensors (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if any(t.is_meta for t in tensors):
            source = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if source is not None and source.is_meta and _to_host(func, args, kwargs):
                return torch.zeros(source.shape, dtype=_dtype(args, kwargs) or source.dtype)
            if source is not None and source.is_meta and func in _SCALARS:
                value = torch.zeros(source.shape, dtype=source.dtype)
                return value.tolist() if func is torch.Tensor.tolist else func(value)
            host = [t for t in tensors if t.device.type == "cpu" and t.dim() > 0]
            if host and func not in _TRANSFERS:
                name = getattr(func, "__name__", str(func))
                raise RuntimeError(
                    f"Expected all tensors to be on the same device, but found at least two devices, "
                    f"meta (standing in for cuda) and cpu ({name})"
                )
        return func(*args, **kwargs)


def _to_host(func, args, kwargs) -> bool:
    if func is torch.Tensor.cpu:
        return True
    if func is not torch.Tensor.to:
        return False
    for a in [*args[1:], kwargs.get("device")]:
        if isinstance(a, (str, torch.device)) and torch.device(a).type == "cpu":
            return True
        if isinstance(a, torch.Tensor) and a.device.type == "cpu":
            return True
    return False


def _dtype(args, kwargs):
    found = [a for a in [*args[1:], kwargs.get("dtype")] if isinstance(a, torch.dtype)]
    return found[0] if found else None


CACHED = (devices._torch_device, devices._onnx_on_gpu)  # answers a process keeps


@pytest.fixture
def clean_devices(monkeypatch):
    """Each test asks for its device afresh, and leaves no answer behind."""
    monkeypatch.setenv(devices.DEVICE_ENV, "auto")
    monkeypatch.delenv(devices.GPU_SHARE_ENV, raising=False)
    for cached in CACHED:
        cached.cache_clear()
    devices._said.clear()
    yield
    for cached in CACHED:
        cached.cache_clear()


GREY = ModelCard(input_size=(28, 28), channels=1)


def on_stand_in(net=None, card: ModelCard = GREY) -> TorchModel:
    with StandIn():
        return TorchModel(net or confident(), card, "tiny", device=META)


def confident() -> torch.nn.Module:
    net = tiny()
    with torch.no_grad():
        net.body[4].weight *= 10
    return net


# -- the stand-in itself -------------------------------------------------------------------------------
def test_the_stand_in_refuses_what_cuda_refuses():
    """Without this the tests below would prove nothing: a tensor left on the CPU must fail."""
    with StandIn():
        x = torch.ones(3, 4, device=META)
        with pytest.raises(RuntimeError, match="same device"):
            torch.einsum("ij,jk->ik", x, torch.ones(4, 2))  # meta's own kernel would accept this
        with pytest.raises(RuntimeError, match="same device"):
            torch.baddbmm(torch.zeros(1, 3, 1), x[None], torch.ones(1, 4, 1, device=META))
        with pytest.raises((RuntimeError, TypeError)):
            x.numpy()  # on CUDA too: the host copy must be asked for
        assert (x * torch.tensor(2.0)).is_meta  # a CPU scalar is allowed, as on CUDA
        assert (
            x.cpu().shape == (3, 4)
            and int(x.sum()) == 0
            and x.to("cpu", torch.float64).dtype == torch.float64
        )


def test_a_tensor_attribute_left_on_the_cpu_is_said_in_one_line():
    """A module whose forward uses a tensor that .to(device) does not move (here, a plain attribute;
    a TorchScript file traced on the CPU holds such constants) fails its probe with one line."""

    class Offset(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.offset = tiny(), torch.ones(10)  # not a buffer: stays on the CPU

        def forward(self, x):
            return self.net(x) + self.offset

    with pytest.raises(FoolbenchError, match="fails on a probe batch on meta.*--device cpu") as e:
        on_stand_in(Offset())
    assert "\n" not in str(e.value)


# -- one device everywhere -----------------------------------------------------------------------------
def test_the_adapter_scores_and_differentiates_on_its_device():
    card = ModelCard(input_size=(24, 24), channels=1, resize=26, crop="ten", mean=(0.5,), std=(0.25,))
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    net(torch.zeros(1, 1, 24, 24))
    model = on_stand_in(net, card)
    with StandIn():
        probs = model.probs(np.random.default_rng(0).random((3, 3, 40, 40), dtype=np.float32))
        assert probs.shape == (3, 10)  # colour -> grey, resized, ten crops, normalised: all on meta
        module = model.torch_module("log_probs")
        assert {p.device.type for p in module.parameters()} == {"meta"}
        assert module(torch.zeros(2, 1, 40, 40, device=META)).shape == (2, 10)
    assert model.describe()["device"] == "meta" and model.provider == "torch-meta"


@pytest.mark.parametrize("engine", [GradientAscent, CPPNGradient], ids=["gradient", "gradient-cppn"])
def test_gradient_engines_keep_every_tensor_on_the_model_device(engine):
    """Steps, a checkpoint and a restore (Adam's moments included) with the model on the stand-in."""
    model = on_stand_in()
    options = {"cppn_resolution": 16} if engine is CPPNGradient else {}
    with StandIn():
        first = engine(model, np.arange(10), 0, **options)
        search = Search(first, Evaluator(model, first.encoding, first.classes))
        for _ in range(3):
            search.step()
        state = search.state()
        again = engine(model, np.arange(10), 0, **options)
        resumed = Search(again, Evaluator(model, again.encoding, again.classes))
        resumed.load_state(state)
        resumed.step()
    assert again.generation == 3
    if engine is CPPNGradient:
        moments = [m for s in again.adam.state.values() for k, m in s.items() if k != "step"]
        assert moments and {m.device.type for m in moments} == {"meta"}


def test_an_onnx_models_torch_form_runs_on_the_model_device(tmp_path, clean_devices, monkeypatch):
    """onnx2torch's modules go to the device whole (no constants left behind), and the session keeps
    scoring host arrays on the CPU."""
    path = export(confident(), tmp_path / "tiny.onnx", (1, 1, 28, 28))
    monkeypatch.setattr(devices, "torch_device", lambda request=None: META)
    with StandIn():
        model = load_model(str(path))
        assert model.device == META and model.input_device.type == "cpu"
        engine = CPPNGradient(model, np.arange(10), 0, cppn_resolution=16)
        search = Search(engine, Evaluator(model, engine.encoding, engine.classes))
        search.step()
        search.step()
    assert engine.generation == 1


def test_a_whole_run_on_the_stand_in_device_resumes(tmp_path, clean_devices, monkeypatch):
    """foolbench run's path end to end (load, engine, checkpoint, kill, resume, champions, results)
    with a PyTorch model whose device is the stand-in; the manifest says where it ran."""
    monkeypatch.setattr(devices, "torch_device", lambda request=None: META)
    attack = tmp_path / "gc.toml"
    attack.write_text(
        '[attack]\nmethod = "gradient-cppn"\n[gradient-cppn]\nsteps = 4\ncppn_resolution = 16\n'
    )
    options = ModelOptions(card={"input_size": [28, 28], "channels": 1})
    req = RunRequest(
        models=["conftest:tiny"], attack=str(attack), out=tmp_path / "run", progress=False,
        checkpoint_every=2, model_options=options,
    )  # fmt: skip
    ask = CPPNGradient.ask

    def dies_at_3(self):
        if self.generation == 3:
            raise KeyboardInterrupt
        return ask(self)

    with StandIn():
        monkeypatch.setattr(CPPNGradient, "ask", dies_at_3)
        with pytest.raises(KeyboardInterrupt):
            start_run(req)
        monkeypatch.setattr(CPPNGradient, "ask", ask)
        resume_run(tmp_path / "run")
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["device"] == {"provider": "torch-meta", "torch_device": "meta", "gpu": None}
    assert (tmp_path / "run/summary.json").is_file() and "device_changes" not in manifest


def test_look_alike_vectors_come_to_the_host_from_any_device():
    from foolbench.lookalike import prepare

    with StandIn():
        assert prepare(torch.zeros(2, 1, 28, 28, device=META)).shape == (2, 784)


# -- no silent fallback --------------------------------------------------------------------------------
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without a GPU")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return export(tiny(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 1, 28, 28))


@no_gpu
def test_device_cuda_without_a_usable_gpu_stops_in_one_line(onnx_file, foolbench, clean_devices):
    out = foolbench("models", "inspect", onnx_file, "--device", "cuda")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("foolbench: error: --device cuda:"), lines


@no_gpu
def test_auto_says_when_cuda_was_wanted_and_not_obtained(onnx_file, foolbench, clean_devices, monkeypatch):
    """A GPU visible (as CUDA_VISIBLE_DEVICES names one) that neither library can use: one line
    each, the model on the CPU, and --scale auto at cpu scale. onnxruntime alone would have opened
    the session on the CPU with only a log line (or nothing at all, as foolbench quiets its log)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    out = foolbench("models", "inspect", onnx_file)
    assert out.returncode == 0, out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("foolbench: a GPU is visible but")]
    assert any("onnxruntime" in line for line in said) and any("PyTorch" in line for line in said), said
    assert "scores on the CPU, gradients on cpu; asked: --device auto" in out.stdout
    assert resolve_scale("auto", [str(onnx_file)]) == "cpu"
    assert resolve_scale("auto", ["conftest:tiny"]) == "cpu"


def test_onnxruntime_is_asked_for_cuda_even_where_torch_has_none(clean_devices, monkeypatch):
    """The reverse case: a CPU-only torch beside onnxruntime-gpu still scores ONNX models on the GPU
    (the request no longer goes through torch.cuda.is_available())."""
    import onnxruntime as ort

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.version, "cuda", None)
    asked = devices.onnx_providers("auto")
    if devices.CUDA_PROVIDER in ort.get_available_providers():
        assert asked[0][0] == devices.CUDA_PROVIDER and asked[-1] == devices.CPU_PROVIDER
    assert devices.torch_device("auto").type == "cpu"
    assert devices.onnx_providers("cpu") == [devices.CPU_PROVIDER]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.onnx_providers("auto") == [devices.CPU_PROVIDER] and not devices.cuda_wanted("auto")


def test_a_bad_device_value_is_one_line(clean_devices, monkeypatch):
    monkeypatch.setenv(devices.DEVICE_ENV, "tpu")
    with pytest.raises(FoolbenchError, match="FOOLBENCH_DEVICE='tpu' is not a device"):
        devices.requested()


def test_cuda_runs_are_set_up_to_repeat(clean_devices, monkeypatch):
    """What CUDA runs get (switched on only there): onnxruntime's deterministic compute and heuristic
    convolution search without TF32, a memory pool split between processes sharing a GPU, and
    torch's deterministic cuDNN and algorithms without TF32."""
    import onnxruntime as ort

    options = devices.cuda_options()
    assert options == {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0"}
    monkeypatch.setenv(devices.GPU_SHARE_ENV, "2")
    monkeypatch.setattr(devices, "_gpu_memory", lambda: 80 * 2**30)
    assert int(devices.cuda_options()["gpu_mem_limit"]) == int(80 * 2**30 * devices.GPU_MEMORY_SHARE / 2)
    opts = ort.SessionOptions()
    devices.session_options(opts, [devices.CPU_PROVIDER])
    assert not opts.use_deterministic_compute  # a CPU session is left as it was
    devices.session_options(opts, [(devices.CUDA_PROVIDER, options), devices.CPU_PROVIDER])
    assert opts.use_deterministic_compute
    cudnn, backends = torch.backends.cudnn, torch.backends
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
    saved_algorithms = torch.are_deterministic_algorithms_enabled()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        devices._repeatable_torch()
        assert cudnn.deterministic and not cudnn.benchmark and not cudnn.allow_tf32
        assert not backends.cuda.matmul.allow_tf32 and torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved
        torch.use_deterministic_algorithms(saved_algorithms)


# -- resumes across devices ----------------------------------------------------------------------------
ON_A_GPU = {"provider": "CUDAExecutionProvider", "torch_device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"}


def test_a_resume_on_another_device_is_refused_unless_accepted(onnx_file, tmp_path, foolbench, monkeypatch):
    import foolbench.runner as runner

    run = tmp_path / "run"
    args = ["run", "--model", onnx_file, "--attack", "mnist-direct", "--scale", "cpu", "--no-progress"]
    first = foolbench(*args, "--generations", "2", "--checkpoint-every", "1", "--out", run)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["device"]["torch_device"] == "cpu" and "cudnn" in manifest["versions"]
    # the CPU's instruction set changes CPU floats, so the manifest names it
    assert manifest["versions"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert manifest["versions"]["cpu"]
    (run / "summary.json").unlink()  # as if killed before it finished
    monkeypatch.setattr(runner, "placement", lambda model: ON_A_GPU)
    refused = foolbench("run", "--resume", run, "--generations", "3", "--no-progress")
    assert refused.returncode == 2
    line = refused.stderr.strip().splitlines()[-1]
    assert "was started on the CPU (CPUExecutionProvider) and would continue on cuda" in line, line
    assert "--device cpu" in line and "--allow-device-change" in line
    assert json.loads((run / "manifest.json").read_text()) == manifest  # nothing written
    accepted = foolbench(
        "run", "--resume", run, "--generations", "3", "--no-progress", "--allow-device-change"
    )
    assert accepted.returncode == 0, accepted.stderr
    after = json.loads((run / "manifest.json").read_text())
    assert after["device"] == ON_A_GPU
    assert after["device_changes"] == [{"from": manifest["device"], "to": ON_A_GPU, "after_generation": 2}]


def test_a_manifest_from_before_the_record_resumes_on_the_cpu():
    assert devices.same_placement(
        None, {"provider": "CPUExecutionProvider", "torch_device": "cpu", "gpu": None}
    )
    assert not devices.same_placement(None, ON_A_GPU)
    assert not devices.same_placement(
        None, {"provider": "CUDAExecutionProvider", "torch_device": "cpu", "gpu": None}
    )


# -- sweeps: one GPU per worker ------------------------------------------------------------------------
def test_local_workers_get_the_gpus_round_robin():
    share = devices.GPU_SHARE_ENV
    assert executors.worker_environments(3, ["3", "5"]) == [
        {"CUDA_VISIBLE_DEVICES": "3", share: "2"},
        {"CUDA_VISIBLE_DEVICES": "5", share: "1"},
        {"CUDA_VISIBLE_DEVICES": "3", share: "2"},
    ]
    assert executors.worker_environments(2, []) == [{"CUDA_VISIBLE_DEVICES": ""}] * 2
    assert executors.ray_worker_environment(0) == {"CUDA_VISIBLE_DEVICES": ""}
    assert executors.ray_worker_environment(0.5) == {share: "2"} and executors.ray_worker_environment(1) == {}
    assert executors.ray_gpus_per_job(4, None) == 1.0 and executors.ray_gpus_per_job(2, 3) == 0.5
    assert executors.ray_gpus_per_job(0, 3) == 0.0


def test_each_spawned_worker_sees_its_own_gpu(monkeypatch, clean_devices):
    """The environment two real worker processes get with two GPUs visible: one GPU each, one
    thread each (`worker_environments` above says what they get with none)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with executors.local_pool(2) as pool:
        seen: dict[str, dict] = {}
        for _ in range(20):  # until both workers have answered
            tasks = [pool.submit(executors.worker_environment, 0.2) for _ in range(2)]
            seen |= {env["pid"]: env for env in (task.result() for task in tasks)}
            if len(seen) == 2:
                break
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for env in seen.values()) == ["3", "5"]
    assert all(env["FOOLBENCH_THREADS"] == "1" and env["FOOLBENCH_GPU_SHARE"] == "1" for env in seen.values())


# -- the fixed-kernel resize ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size, to, antialias",
    [(16, 32, False), (16, 28, True), (40, 26, True), (28, 28, True), (9, 28, False)],
)
def test_the_matrix_resize_is_the_bilinear_resize(size, to, antialias):
    """The resize CUDA uses (two matrix products: a deterministic backward pass) against
    F.interpolate, values and gradients; on the CPU `resize` is F.interpolate itself, unchanged."""
    x = torch.rand(2, 3, size, size + 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out_size = (to, to + 1)
    ref = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False, antialias=antialias)
    fixed = resize_by_matrices(x, out_size, antialias)
    torch.testing.assert_close(fixed, ref, rtol=0, atol=5e-7)
    weights = torch.rand(ref.shape, generator=torch.Generator().manual_seed(1))
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    (g_fixed,) = torch.autograd.grad((fixed * weights).sum(), x)
    torch.testing.assert_close(g_fixed, g_ref, rtol=0, atol=2e-6)
    assert torch.equal(resize(x, out_size, antialias), ref)
    assert interpolation_matrix(size, to, antialias).sum(1).sub(1).abs().max() < 1e-6  # rows sum to 1


# -- gradient passes follow --batch-size ---------------------------------------------------------------
def test_gradient_batches_follow_the_batch_size_given(onnx_file):
    plain = load_model(str(onnx_file))
    assert gradient_batch(plain) == 64  # on the CPU, by default, for memory
    given = load_model(str(onnx_file), ModelOptions(batch_size=300))
    assert gradient_batch(given) == 300
    assert gradient_batch(given.with_options(crop="ten", resize=32)) == 30  # 10 inputs per image
