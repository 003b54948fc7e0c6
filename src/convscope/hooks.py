"""Hook life cycle and model-state guards: nothing convscope does is left behind in a user's model.

* :func:`evaluating` puts a module in eval mode for a block and restores every submodule's own
  ``training`` flag afterwards (a model in train mode stays in train mode).
* :func:`registered` is the one place hooks are registered: every handle is removed in ``finally``,
  so the hooks are gone even when the forward pass fails.
* :func:`layer_hooks` hooks named layers through it and records which ones ran, so that a layer
  the input never reaches is the clear :class:`~convscope.errors.LayerError` of :meth:`LayerHooks.check_ran`
  rather than a silent wrong answer.
* :func:`capture_outputs` stores a detached **clone** of each named layer's output (an in-place op
  later in the network cannot change what was captured).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import LayerError

ForwardHook = Callable[[nn.Module, Any, Any], Any]
PreHook = Callable[[nn.Module, Any], Any]


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


@contextmanager
def registered(forward: Iterable[tuple[nn.Module, ForwardHook]] = (),
               pre: Iterable[tuple[nn.Module, PreHook]] = ()) -> Iterator[None]:
    """Forward hooks (``(module, hook)`` pairs) and forward pre-hooks live inside the block only."""
    handles = []
    try:
        for module, hook in pre:
            handles.append(module.register_forward_pre_hook(hook))
        for module, hook in forward:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class LayerHooks:
    """Which of the hooked layers have run, in the block of :func:`layer_hooks`."""

    names: list[str]
    ran: set[str] = field(default_factory=set)

    def start_pass(self) -> None:
        """Forget which layers ran, before another forward pass with the same hooks."""
        self.ran.clear()

    def check_ran(self) -> None:
        """LayerError for the first hooked layer that did not run in the forward pass."""
        for name in self.names:
            if name not in self.ran:
                raise LayerError(f"layer {name!r} did not run in the forward pass")


@contextmanager
def layer_hooks(layers: Mapping[str, nn.Module],
                hook_for: Callable[[str], ForwardHook]) -> Iterator[LayerHooks]:
    """Hook each named layer's module with ``hook_for(name)`` for the block; the hook sees only the
    module's **first** call (a module called twice in one pass keeps its first output)."""
    state = LayerHooks(list(layers))

    def first_call_only(name: str) -> ForwardHook:
        inner = hook_for(name)

        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if name in state.ran:
                return None
            state.ran.add(name)
            return inner(module, inputs, output)
        return hook

    with registered(forward=[(module, first_call_only(name)) for name, module in layers.items()]):
        yield state


def _snapshot(output: Any) -> Any:
    """Detached clone of a tensor output (or of each tensor in a tuple/list); other values as they are."""
    if isinstance(output, torch.Tensor):
        return output.detach().clone()
    if isinstance(output, (tuple, list)):
        return type(output)(_snapshot(o) for o in output)
    return output


class StopForward(Exception):
    """Raised by a capture hook once everything asked for is captured, to skip the rest of the network."""


def run_until_stopped(module: nn.Module, x: torch.Tensor) -> None:
    """Run ``module(x)``, treating :class:`StopForward` from a hook as the normal end."""
    try:
        module(x)
    except StopForward:
        pass


@contextmanager
def capture_outputs(modules: Mapping[str, nn.Module], stop: bool = False) -> Iterator[dict[str, Any]]:
    """Capture the output of each named module during the forward passes run inside the block.

    Yields a dict that fills up as the modules run: ``name -> detached clone of the output`` of the
    module's first call. With ``stop``, the hook that completes the set raises :class:`StopForward`
    (run the model through :func:`run_until_stopped`). On a normal exit, a module that did not run
    raises :class:`~convscope.errors.LayerError`.
    """
    captured: dict[str, Any] = {}

    def hook_for(name: str) -> ForwardHook:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured[name] = _snapshot(output)
            if stop and len(captured) == len(modules):
                raise StopForward
        return hook

    with layer_hooks(modules, hook_for) as state:
        yield captured
        state.check_ran()


@dataclass
class ModuleCall:
    """A submodule's first call in a forward pass: its path, the module, the output shape for one
    item (batch dimension dropped; None when the output is not a tensor) and how often it ran."""

    path: str
    module: nn.Module
    shape: tuple[int, ...] | None
    calls: int = 1
    #: For a dict of B x C x H x W tensors (an FPN's levels): each key and its map's shape for one item.
    levels: tuple[tuple[str, tuple[int, ...]], ...] = ()


@contextmanager
def record_call_order(module: nn.Module) -> Iterator[list[ModuleCall]]:
    """Record a :class:`ModuleCall` for every submodule that runs, in the order their first calls
    complete (children before their container), counting later calls. Only shapes are kept, never
    the outputs themselves."""
    calls: list[ModuleCall] = []
    by_path: dict[str, ModuleCall] = {}

    def hook_for(path: str) -> ForwardHook:
        def hook(sub: nn.Module, _inputs: Any, output: Any) -> None:
            if path in by_path:
                by_path[path].calls += 1
                return
            is_tensor = isinstance(output, torch.Tensor) and output.dim() >= 1
            levels = tuple((str(key), tuple(value.shape[1:])) for key, value in output.items()) \
                if isinstance(output, Mapping) and output and \
                all(isinstance(v, torch.Tensor) and v.dim() == 4 for v in output.values()) else ()
            by_path[path] = ModuleCall(path, sub, tuple(output.shape[1:]) if is_tensor else None, levels=levels)
            calls.append(by_path[path])
        return hook

    with registered(forward=[(sub, hook_for(path)) for path, sub in module.named_modules() if path]):
        yield calls
