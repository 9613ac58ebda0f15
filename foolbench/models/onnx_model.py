"""ONNX models through onnxruntime: the fast path for scoring populations.

The CUDA provider is asked for only where CUDA is wanted (`device.cuda_wanted`: a GPU is visible, or
`--device cuda`), so CPU-only machines log no errors, and the providers a session got are checked
against those asked for (`device.check_session`): onnxruntime itself falls back to the CPU silently.
External-data files must live beside the model: a path that leaves the model's folder is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from foolbench.errors import FoolbenchError
from foolbench.models import device as devices
from foolbench.models.base import DEFAULT_BATCH, Model, spec_from_card
from foolbench.models.card import CARD_METADATA_KEY, ModelCard, card_from_json


def read_onnx(path: Path):
    """Parse the graph (without external weights) and check it is a safe, well-formed ONNX file."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise FoolbenchError(
            f"{path} is not a readable ONNX model ({type(e).__name__}); re-export it with "
            "torch.onnx.export or check the file was copied whole"
        ) from None
    if not proto.graph.node and not proto.graph.input:
        raise FoolbenchError(f"{path} is not an ONNX model (it holds no graph); pass a .onnx model file")
    _check_external_data(proto, path)
    return proto


def _check_external_data(proto, path: Path) -> None:
    folder = path.resolve().parent
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key != "location":
                continue
            target = (folder / entry.value).resolve()
            if folder not in target.parents:
                raise FoolbenchError(
                    f"{path}: external weights at '{entry.value}' point outside the model's folder; "
                    "refusing to read them (keep external data files beside the model)"
                )


def embedded_card(proto, source: str) -> ModelCard:
    for prop in proto.metadata_props:
        if prop.key == CARD_METADATA_KEY:
            return card_from_json(prop.value, f"{source} (embedded card)")
    return ModelCard()


THREADS_ENV = "FOOLBENCH_THREADS"  # onnxruntime threads per model; unset or 0: onnxruntime's default


class OnnxModel(Model):
    backend = "onnx"

    def __init__(self, path: Path, card: ModelCard, batch_size: int = DEFAULT_BATCH):
        import onnxruntime as ort

        proto = read_onnx(path)
        card = embedded_card(proto, str(path)).merged(card)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Idle onnxruntime threads otherwise spin and steal the cores the renderer needs between batches.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        threads = int(os.environ.get(THREADS_ENV) or 0)
        if threads > 0:  # several runs side by side (a sweep's workers) each take their share of the cores
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        providers = devices.onnx_providers()
        devices.session_options(opts, providers)
        if len(providers) > 1:  # its CUDA provider's own errors are said in one line of ours instead
            ort.set_default_logger_severity(4)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad graphs
            msg = str(e).splitlines()[0][:200]
            raise FoolbenchError(f"{path}: onnxruntime cannot load this model ({msg})") from None
        devices.check_session(self.session, providers)
        self.output_name = self.session.get_outputs()[0].name
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise FoolbenchError(
                f"{path}: the model has {len(inputs)} inputs; foolbench needs one image input"
            )
        self.input_name = inputs[0].name
        shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        spec = spec_from_card(card, shape, path.name)
        super().__init__(card.name or path.stem, card, spec, path, batch_size, devices.torch_device())
        self._probe()

    @property
    def on_gpu(self) -> bool:
        return self.provider == devices.CUDA_PROVIDER

    @property
    def input_device(self) -> torch.device:
        """The GPU where both the session and torch run there (inputs are prepared on it and handed
        over in place), else the CPU (the session takes host arrays)."""
        return self.device if self.on_gpu and self.device.type == "cuda" else torch.device("cpu")

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        if x.device.type == "cuda":
            return self._forward_in_place(x)
        return self.session.run(None, {self.input_name: x.numpy()})[0]

    def _forward_in_place(self, x: torch.Tensor) -> np.ndarray:
        """Run the session on a tensor already on the GPU (I/O binding), with no trip to the host."""
        x = x.contiguous()
        torch.cuda.current_stream(x.device).synchronize()  # onnxruntime reads it on its own stream
        binding = self.session.io_binding()
        binding.bind_input(
            name=self.input_name,
            device_type="cuda",
            device_id=x.device.index or 0,
            element_type=np.float32,
            shape=tuple(x.shape),
            buffer_ptr=x.data_ptr(),
        )
        binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def _torch_net(self) -> torch.nn.Module:
        """The graph converted to PyTorch with onnx2torch, so gradients can flow through it."""
        try:
            from onnx2torch import convert
        except ImportError:
            raise FoolbenchError(
                f"{self.name}: gradient ascent on ONNX models needs onnx2torch (pip install onnx2torch); "
                "the evolutionary attacks (direct, cppn) work without it"
            ) from None
        from foolbench.models.onnx_torch import register_onnx_opsets

        register_onnx_opsets()
        try:
            net = convert(str(self.path)).eval()
        except Exception as e:
            raise FoolbenchError(
                f"{self.name}: onnx2torch cannot convert this model ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]}); the evolutionary attacks (direct, cppn) still work"
            ) from None
        return net
