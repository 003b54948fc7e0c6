"""Modified backward passes through ReLU-like units: guided backpropagation (Springenberg et al.
2015) and deconvolution (Zeiler & Fergus 2014).

For a unit ``y = clamp(x, low, high)`` (ReLU: low 0, no high; ReLU6: 0 and 6) with upstream
gradient ``r``, the plain gradient is ``r * [low < x < high]``; the rules replace it by

* ``guided``:        ``ReLU(r) * [low < x < high]`` -- only positive signal, only where the unit is open
* ``deconvolution``: ``ReLU(r)``                     -- only positive signal, wherever the unit is

Inside :func:`backward_rule` every call that makes a ReLU-like unit goes through the rule, however the
model spells it: ``nn.ReLU``, ``nn.ReLU6`` (zero also where the input is >= 6), ``F.relu``,
``torch.relu``, ``Tensor.relu`` and their in-place forms, ``F.relu6``, ``F.hardtanh`` with a lower
bound of 0, ``clamp(min=0)``. A torch function mode sees the calls (not module hooks, which miss the
functional ones: pytorch-grad-cam's and Captum's guided backpropagation only replace ``nn.ReLU``, so
on a ReLU6 network they return the plain gradient). Units whose gradient no such rule defines --
SiLU, Hardswish, GELU, Mish -- are refused with an :class:`~convscope.errors.InputError`. The
forward values are unchanged; nothing is left in the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import InputError

#: The rules by name.
RULES = ("guided", "deconvolution")


class _RuleReLU(torch.autograd.Function):
    """``clamp(x, low, high)`` forward; the rule's gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float | None, rule: str) -> torch.Tensor:
        ctx.rule = rule
        ctx.save_for_backward(x)
        ctx.bounds = (low, high)
        return x.clamp(min=low, max=high)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (x,) = ctx.saved_tensors
        low, high = ctx.bounds
        passed = grad.clamp(min=0)
        if ctx.rule == "guided":  # the plain unit's own backward kernels zero it where the unit is closed
            passed = torch.ops.aten.threshold_backward(passed, x, low) if high is None else \
                torch.ops.aten.hardtanh_backward(passed, x, low, high)
        return passed, None, None, None


def _bounds(func: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[float, float | None] | None:
    """(low, high) where ``func(*args, **kwargs)`` makes a ReLU-like unit, else None."""
    if func in (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu_):
        return 0.0, None
    if func is F.relu6:
        return 0.0, 6.0
    if func is F.hardtanh or func is F.hardtanh_:
        low = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
        high = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
        return (float(low), float(high)) if low == 0 else None
    if func in (torch.clamp, torch.Tensor.clamp, torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_,
                torch.Tensor.clamp_, torch.Tensor.clamp_min_):
        low = kwargs.get("min", args[1] if len(args) > 1 else None)
        high = kwargs.get("max", args[2] if len(args) > 2 and func not in (torch.clamp_min,) else None)
        if isinstance(low, (int, float)) and low == 0 and (high is None or isinstance(high, (int, float))):
            return 0.0, None if high is None else float(high)
    return None


#: Units with no guided or deconvolution rule (smooth or non-monotone), by the functions that make them.
_WITHOUT_RULE = {F.silu: "SiLU", F.hardswish: "Hardswish", F.gelu: "GELU", F.mish: "Mish", F.elu: "ELU",
                 F.selu: "SELU", F.leaky_relu: "LeakyReLU"}


class _RuleMode(TorchFunctionMode):
    def __init__(self, rule: str, method: str) -> None:
        super().__init__()
        self.rule, self.method = rule, method

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        if func in _WITHOUT_RULE:
            raise InputError(f"method {self.method}: the model uses {_WITHOUT_RULE[func]}, a unit for which "
                             f"{self.rule} backpropagation has no rule (it is defined for ReLU-like units: ReLU, "
                             "ReLU6, clamp at 0); use saliency or integratedgradients", parameter="method")
        bounds = _bounds(func, args, kwargs)
        if bounds is None or not isinstance(args[0], torch.Tensor) or not args[0].requires_grad:
            return func(*args, **kwargs)
        return _RuleReLU.apply(args[0], bounds[0], bounds[1], self.rule)


@contextmanager
def backward_rule(rule: str | None, method: str = "") -> Iterator[None]:
    """Inside the block, backward passes through ReLU-like units follow ``rule`` (see the module
    notes; None: the plain gradient). ``method`` names the caller in errors."""
    if rule is None:
        yield
        return
    if rule not in RULES:
        raise ValueError(f"unknown backward rule {rule!r}")
    with _RuleMode(rule, method or rule):
        yield
