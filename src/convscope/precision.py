"""Numeric precision: what ``fp32``, ``tf32``, ``bf16`` and ``auto`` mean inside convscope's calls.

* ``fp32``: true fp32. On CUDA, PyTorch runs cuDNN convolutions in TF32 by default, which changes
  maps by up to 0.1 (measured on an H200); inside convscope's calls TF32 is switched off and the
  caller's settings are restored afterwards.
* ``tf32``: TF32 matrix units on CUDA GPUs of compute capability 8.0+ (fp32 elsewhere is refused).
* ``bf16``: bf16 autocast with channels_last input; results (maps, scores) are computed in fp32.
* ``auto``: the fastest of these **measured** on the actual work (a few passes, cached per module,
  device and kind of work), never a precision slower than fp32 -- bf16 is not always faster
  (depthwise convolutions on CPUs without AMX are 1.7x slower in bf16). :func:`choose_precision`
  returns the choice with the reason, for the output to say.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Hashable, Iterator
from functools import lru_cache

import torch
from torch import nn

from .catalog import PRECISIONS
from .errors import InputError, check_choice

#: A measured precision must be this much faster than fp32 to be chosen by ``auto``.
AUTO_MARGIN = 1.1

#: Measured choices: module -> {(device, work key): (precision, reason)}.
_MEASURED: weakref.WeakKeyDictionary[nn.Module, dict[Hashable, tuple[str, str]]] = weakref.WeakKeyDictionary()


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_amx() -> bool:
    """True when the CPU advertises AMX bf16 tiles (bf16 matrix work several times faster than fp32)."""
    return "amx_bf16" in _cpu_flags()


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 can pay off on ``device``: CUDA GPUs of compute capability 8.0+, and CPUs with
    AMX or AVX-512 BF16 instructions. Whether it does for a given model, :func:`choose_precision` measures."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return cpu_has_amx() or "avx512_bf16" in _cpu_flags()
    return False


def candidates(device: torch.device) -> list[str]:
    """The precisions ``auto`` chooses from on ``device``: fp32 first, then the faster kinds it has."""
    if not has_fast_bf16(device):
        return ["fp32"]
    return ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` checked (``tf32`` needs a CUDA GPU of compute capability 8.0+) and returned."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "tf32" and "tf32" not in candidates(device):
        raise InputError(f"precision tf32 needs a CUDA GPU of compute capability 8.0 or newer, not {device}",
                         parameter="precision")
    return precision


def choose_precision(precision: str, module: nn.Module, device: torch.device, key: Hashable,
                     work: Callable[[str], object]) -> tuple[str, str]:
    """``(precision, reason)``: an explicit precision as it is; ``auto`` by timing ``work(p)`` (the
    call's own kind of work, e.g. one optimization step) for each candidate -- one warm-up, then the
    best of two -- choosing the fastest only if it beats fp32 by :data:`AUTO_MARGIN`. Remembered per
    ``module``, ``device`` and ``key``. ``precision`` was checked where it entered (:func:`check_precision`)."""
    if precision != "auto":
        return precision, "as asked"
    options = candidates(device)
    if options == ["fp32"]:
        return "fp32", f"auto: no faster precision on {device.type}"
    known = _MEASURED.setdefault(module, {})
    if (str(device), key) not in known:
        seconds = {}
        for option in options:
            work(option)  # warm-up: first calls pay for kernel selection
            seconds[option] = min(_timed(work, option) for _ in range(2))
        other = min(options[1:], key=seconds.__getitem__)  # the fastest of the others
        speedup = seconds["fp32"] / seconds[other]
        if speedup >= AUTO_MARGIN:
            known[(str(device), key)] = (other, f"auto: {other} measured {speedup:.1f}x faster than fp32 here")
        elif speedup > 1:
            known[(str(device), key)] = ("fp32", f"auto: fp32, {other} measured only {speedup:.2f}x faster here")
        else:
            known[(str(device), key)] = ("fp32", f"auto: fp32, {other} measured {1 / speedup:.1f}x its time here")
    return known[(str(device), key)]


_clock = time.perf_counter  # seconds; a module attribute so tests can give ``auto`` a clock of their own


def _timed(work: Callable[[str], object], precision: str) -> float:
    start = _clock()
    work(precision)
    return _clock() - start


@contextlib.contextmanager
def computing_in(device: torch.device, precision: str) -> Iterator[None]:
    """The block computes in ``precision`` (``fp32``, ``tf32`` or ``bf16``, see the module notes):
    TF32 switched off (fp32, bf16) or on (tf32) for CUDA matmuls and cuDNN convolutions, and bf16
    autocast for ``bf16``; the caller's TF32 settings are restored on exit."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def prepare_input(x: torch.Tensor) -> torch.Tensor:
    """The input in channels_last layout, which oneDNN (CPU) and cuDNN run fastest in both fp32 and
    bf16 (measured here: VGG19 forward 1.3x, EfficientNet forward+backward 1.65x faster in fp32).
    Only the input changes layout: the model's parameters are never touched."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
