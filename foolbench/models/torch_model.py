"""PyTorch models: TorchScript files, state dicts with a named architecture, or a factory.

Files are loaded without executing code in them: state dicts with `weights_only=True`, TorchScript
through torch.jit. Code runs only when the user names a factory (`package.module:factory`) to import.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from foolbench.errors import FoolbenchError
from foolbench.models import device as devices
from foolbench.models.base import DEFAULT_BATCH, Model, card_spec
from foolbench.models.card import ModelCard


def import_factory(target: str):
    """Import `package.module:attribute` (the only way foolbench runs a user's code)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise FoolbenchError(f"'{target}' is not of the form package.module:factory")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise FoolbenchError(
            f"cannot import '{target}' ({type(e).__name__}: {e}); check the module is on PYTHONPATH "
            "and the name is spelled right"
        ) from None


def build_from_factory(target: str) -> torch.nn.Module:
    module = import_factory(target)()
    if not isinstance(module, torch.nn.Module):
        raise FoolbenchError(f"'{target}' returned {type(module).__name__}, not a torch.nn.Module")
    return module


def load_state_dict_file(path: Path) -> dict:
    """Plain tensors only: a pickle that would build arbitrary objects is refused, unexecuted."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise FoolbenchError(
            f"{path} holds pickled Python objects, not plain weights; refusing to load it because "
            "it could run code. Save model.state_dict() instead and pass --arch package.module:factory"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise FoolbenchError(f"{path} is not a readable PyTorch file ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FoolbenchError(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


def load_torch_file(path: Path, arch: str | None) -> torch.nn.Module:
    if arch:
        module = build_from_factory(arch)
        try:
            module.load_state_dict(load_state_dict_file(path))
        except RuntimeError as e:
            first = str(e).splitlines()[0][:200]
            raise FoolbenchError(f"{path} does not fit the architecture {arch}: {first}") from None
        return module
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, zipfile.BadZipFile):
        raise FoolbenchError(
            f"{path} is not a TorchScript file; if it is a state dict, name its architecture with "
            "--arch package.module:factory"
        ) from None


class TorchModel(Model):
    backend = "pytorch"

    def __init__(
        self,
        module: torch.nn.Module,
        card: ModelCard,
        name: str,
        path: Path | None = None,
        batch_size: int = DEFAULT_BATCH,
        device: torch.device | None = None,
    ):
        if not card.input_size or not card.channels:
            raise FoolbenchError(
                f"{name}: a PyTorch model does not declare its input; give input_size and channels "
                "in a model card (NAME.toml beside the file) or with --input-size H W --channels C"
            )
        spec = card_spec(card)
        device = device if device is not None else devices.torch_device()
        super().__init__(card.name or name, card, spec, path, batch_size, device)
        self.net = module.eval().to(self.device)
        self._probe()

    def _probe(self) -> None:
        """The base probe, with a failure of the user's network said in one line: a TorchScript file
        traced on one device keeps that device's tensors and fails on another."""
        try:
            super()._probe()
        except RuntimeError as e:
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            hint = "check its input size and channels"
            if "device" in first:
                hint = "a TorchScript file traced on another device must be traced again on this one"
                hint += ", or run with --device cpu"
            raise FoolbenchError(
                f"{self.name}: the model fails on a probe batch on {self.device.type} ({first}); {hint}"
            ) from None

    @torch.no_grad()
    def _forward(self, x: torch.Tensor) -> np.ndarray:
        return self.net(x.to(self.device)).float().cpu().numpy()

    @property
    def provider(self) -> str:
        return f"torch-{self.device.type}"

    def _torch_net(self) -> torch.nn.Module:
        return self.net
