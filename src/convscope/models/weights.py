"""Loading weights safely: state dicts only (``torch.load(weights_only=True)`` or safetensors),
with errors that name the first mismatching keys or shapes."""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError

PICKLE_PROTO = b"\x80"  # first byte of a pickle of protocol 2 or newer

#: Weight specs other than a file path.
NAMED_WEIGHTS = ("imagenet", "random")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never running pickled code.

    A checkpoint that wraps the state dict (``{"state_dict": ...}`` or ``{"model": ...}``) is
    unwrapped, and a ``module.`` prefix left by DataParallel is dropped.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file (weights are imagenet, random or a path "
                           "to a .pth/.pt/.safetensors state dict)")
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, not a weights file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    else:
        with open(path, "rb") as f:
            head = f.read(1)
        if head != PICKLE_PROTO and not zipfile.is_zipfile(path):
            raise WeightsError(f"{path}: not a PyTorch weights file (neither a torch.save archive nor a "
                               "pickle; .safetensors files need that extension)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise WeightsError(f"{path}: refused: not a plain state dict (it holds pickled objects that could "
                               f"run code, or is corrupt; {_unpickler_reason(exc)})") from None
        except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
            raise WeightsError(f"{path}: not a readable PyTorch weights file ({_first_line(exc)})") from None
    return _unwrap(state, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _unpickler_reason(exc: BaseException) -> str:
    """The useful part of torch's long weights_only message, e.g. 'Unsupported global: GLOBAL os.system'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            detail = line.split("WeightsUnpickler error:", 1)[1].strip()
            if not detail and i + 1 < len(lines):
                detail = lines[i + 1]
            return detail.split(" was not an allowed global")[0][:200] or "weights_only load failed"
    return "weights_only load failed"


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise WeightsError(f"{path}: not a state dict (expected a mapping of parameter names to tensors)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def apply_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str, model_name: str) -> None:
    """Load ``state`` into ``module`` strictly; a mismatch raises WeightsError naming the first few
    missing keys, unexpected keys and shape mismatches."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                   for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise WeightsError(f"{source}: weights do not fit {model_name}: {'; '.join(problems)}")
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
