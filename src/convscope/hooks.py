"""Hook life cycle and model-state guards: nothing convscope does is left behind in a user's model.

* :func:`evaluating` puts a module in eval mode for a block and restores every submodule's own
  ``training`` flag afterwards (a model in train mode stays in train mode).
* :func:`capture_outputs` registers forward hooks that store a detached **clone** of each module's
  output (an in-place op later in the network cannot change what was captured) and removes the
  hooks in ``finally``, so they are gone even when the forward pass fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; each submodule's ``training`` flag restored on exit."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield module
    finally:
        for m, was_training in modes:
            m.training = was_training


def _snapshot(output: Any) -> Any:
    """Detached clone of a tensor output (or of each tensor in a tuple/list); other values as they are."""
    if isinstance(output, torch.Tensor):
        return output.detach().clone()
    if isinstance(output, (tuple, list)):
        return type(output)(_snapshot(o) for o in output)
    return output


class StopForward(Exception):
    """Raised by a capture hook once everything asked for is captured, to skip the rest of the network."""


@contextmanager
def capture_outputs(modules: Mapping[str, nn.Module], stop: bool = False) -> Iterator[dict[str, Any]]:
    """Capture the output of each named module during the forward passes run inside the block.

    Yields a dict that fills up as the modules run: ``name -> detached clone of the output`` of the
    module's first call (a module called twice keeps its first output). With ``stop``, the hook
    that completes the set raises :class:`StopForward` (run the model through :func:`run_until_captured`).
    Hooks are removed on exit.
    """
    captured: dict[str, Any] = {}
    handles = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if name not in captured:
                captured[name] = _snapshot(output)
                if stop and len(captured) == len(modules):
                    raise StopForward
        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def run_until_captured(module: nn.Module, x: torch.Tensor) -> None:
    """Run ``module(x)``, treating :class:`StopForward` from a capture hook as the normal end."""
    try:
        module(x)
    except StopForward:
        pass


@contextmanager
def record_call_order(module: nn.Module) -> Iterator[list[tuple[str, nn.Module, Any]]]:
    """Record ``(path, submodule, output)`` for the first call of every submodule, in the order the
    calls complete (children before their container). Outputs are not cloned: use for shapes only."""
    calls: list[tuple[str, nn.Module, Any]] = []
    seen: set[str] = set()
    handles = []

    def make_hook(path: str):
        def hook(sub: nn.Module, _inputs: Any, output: Any) -> None:
            if path not in seen:
                seen.add(path)
                calls.append((path, sub, output))
        return hook

    try:
        for path, sub in module.named_modules():
            if path:
                handles.append(sub.register_forward_hook(make_hook(path)))
        yield calls
    finally:
        for handle in handles:
            handle.remove()
