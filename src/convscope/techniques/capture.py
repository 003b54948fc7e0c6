"""The one capture path every technique shares: which layer, which classes, one hooked forward
pass and the backward pass to the layer.

* :func:`cam_layer` resolves the layer to explain (default: the last feature map before global
  pooling) and checks it once, where the user's value enters -- warning once about a module that
  runs several times in one pass.
* :func:`resolve_classes` and :func:`batch_for_classes` turn indices or labels into each row's
  class (None: each image's top-1, decided by the pass); one image with several classes becomes a
  row per class.
* :func:`layer_pass` runs the model once with a hook on the layer and returns its activations
  ``A``, ``dT/dA`` for a registered target ``T`` (:mod:`convscope.techniques.targets`; the class
  score by default), and the logits. The hook makes the output a leaf: gradient recording starts
  there, backward stops there, no parameter's ``.grad`` is filled and an in-place op downstream
  cannot change ``A``.
* :func:`input_pass` runs it once more with the backward pass to the input (the pixel attributions),
  optionally under a backward rule for ReLU-like units (:mod:`convscope.techniques.backward_rules`).
* :func:`stopping_at` holds a layer's output (graph kept) and stops the forward pass there: filter
  ascent and receptive fields need nothing after the layer.

Hooks are registered through :mod:`convscope.hooks`, so they are removed even when a pass fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..hooks import ForwardHook, LayerHooks, StopForward, layer_hooks, run_until_stopped
from ..layers import LayerView, default_cam_layer, warn_if_called_again
from ..model import Model
from ..precision import computing_in, prepare_input
from .backward_rules import backward_rule
from .targets import DEFAULT_TARGET, target_named


def cam_layer(model: Model, layer: str | None = None) -> str:
    """The layer to explain: ``layer`` checked to output a feature map larger than 1x1 (a warning
    when its module runs more than once in a pass), or the default layer (the target's choice: a
    segmentation model's backbone's last stage)."""
    if layer is None:
        return default_cam_layer(model.all_layers(), model.num_outputs, model.target.default_layer_within)
    info = model.layer(layer)
    if not info.is_spatial:
        raise InputError(f"layer {layer}: outputs {list(info.shape or [])}, not a C x H x W feature map (C x T x H x W "
                         "for a video)",
                         parameter="layer")
    if not info.is_map_larger_than_1x1:
        raise InputError(f"layer {layer}: outputs {'x'.join(map(str, info.shape))}, one value per channel, so its "
                         "map would be flat; choose a feature map larger than 1x1 (the default is the last one)",
                         parameter="layer")
    warn_if_called_again(info)
    return layer


def resolve_classes(model: Model, classes: int | str | Sequence[int | str] | None, batch: int) -> list[int] | None:
    """Class indices from indices or labels (None: each image's top-1, decided later): one class for
    every image, one per image, or for a single image any number of classes (one map each)."""
    if classes is None:
        return None
    if isinstance(classes, torch.Tensor):
        classes = classes.tolist()
    values = [classes] * batch if isinstance(classes, (int, str)) else list(classes)
    if len(values) != batch and batch != 1:
        raise InputError(f"classes has {len(values)} entries for a batch of {batch} images: give one class "
                         "per image, or one class for all", parameter="classes")
    if not values:
        raise InputError("classes is empty: give one class per image, or None for each image's top-1",
                         parameter="classes")
    return [model.class_index(value) for value in values]


def batch_for_classes(model: Model, x: torch.Tensor, classes: int | str | Sequence[int | str] | None,
                      ) -> tuple[torch.Tensor, list[int] | None, list[int]]:
    """``(x, classes, images)`` of a call: the classes resolved (None: each image's top-1, see
    :func:`resolve_classes`) and the image of each row -- one image with several classes is
    repeated, one row per class."""
    fixed = resolve_classes(model, classes, x.shape[0])
    if fixed is not None and len(fixed) != x.shape[0]:  # one image, several classes: a row for each
        return x.expand(len(fixed), *x.shape[1:]), fixed, [0] * len(fixed)
    return x, fixed, list(range(x.shape[0]))


@dataclass(frozen=True)
class LayerPass:
    """What :func:`layer_pass` found, all fp32: the layer's activations ``acts`` (A), ``grads``
    (dT/dA, or None), the ``logits``, each row's class, and ``hvp`` (the Hessian-vector product
    H A = d(g . A)/dA, or None)."""

    acts: torch.Tensor
    grads: torch.Tensor | None
    logits: torch.Tensor
    classes: list[int]
    hvp: torch.Tensor | None = None


def layer_pass(model: Model, x: torch.Tensor, layer: str, precision: str, classes: list[int] | None,
               gradients: bool, watch: Mapping[str, Callable[[torch.Tensor], None]] | None = None,
               target: str = DEFAULT_TARGET, hessian: bool = False) -> LayerPass:
    """One forward pass with a hook on ``layer``, where T is ``target``'s score of each row's class
    (None: its top-1); see :class:`LayerPass`.

    With ``gradients`` the hook makes the layer's output a leaf ``A`` that requires grad: gradient
    recording starts there, the rest of the network sees a clone of it (in-place ops downstream
    cannot touch ``A``), and backward stops at it. Without, ``A`` is a clone of the output. With
    ``hessian`` (and ``gradients``) the backward keeps its graph and a second one gives ``H A``
    (ShapleyCAM's term; zero where the network after the layer is piecewise linear). ``watch``:
    more layers, each one's output handed (detached, before anything downstream can change it) to
    its function.
    """
    score = target_named(target)
    model.resolve()
    held: dict[str, torch.Tensor] = {}
    watch = watch or {}

    infos = {name: model.layer(name) for name in (layer, *watch)}  # found once, not in every pass
    view = infos[layer].view

    def hook_for(name: str) -> ForwardHook:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if name in watch:
                watch[name](infos[name].as_map(output).detach())
            if name != layer:
                return None
            maps = infos[name].as_map(output)
            if not isinstance(maps, torch.Tensor) or maps.dim() not in (4, 5):
                raise InputError("layer: the CAM layer must output a B x C x H x W feature map (B x C x T x H x W "
                                 "for a video)", parameter="layer")
            if not gradients:
                held["acts"] = maps.detach().clone()
                return None
            held["acts"] = maps.detach().requires_grad_(True)
            torch.set_grad_enabled(True)
            return held["acts"].clone() if view is None else view.from_map(held["acts"], output)
        return hook

    grads = hvp = None
    hooked_layers = {name: model.submodule(name) for name in (layer, *watch)}
    with layer_hooks(hooked_layers, hook_for) as hooked, torch.no_grad(), \
            computing_in(model.device, precision):
        logits, chosen = model.scores_for(prepare_input(x), classes)
        hooked.check_ran()
        if gradients:
            acts = held["acts"]
            (grads,) = torch.autograd.grad(score(logits, chosen).sum(), acts, create_graph=hessian)
            if hessian:
                (hvp,) = torch.autograd.grad(grads, acts, grad_outputs=acts.detach(), allow_unused=True) \
                    if grads.requires_grad else (None,)
                hvp = (torch.zeros_like(grads) if hvp is None else hvp).detach().float()
            grads = grads.detach().float()
    return LayerPass(held["acts"].detach().float(), grads, logits.detach().float(), chosen, hvp)


def replaced_pass(model: Model, x: torch.Tensor, layer: str, replacement: torch.Tensor, precision: str) -> torch.Tensor:
    """The logits (n x N, fp32) of the model run on the one image ``x`` (1 x C x H x W) with ``layer``'s
    output replaced by ``replacement`` (n x K x h x w): the layers before it run once, on the one
    image, the rest on the n replacements in one batch (Ablation-CAM's passes)."""
    view = model.layer(layer).view

    def hook_for(_name: str) -> ForwardHook:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            maps = replacement.to(output.dtype)
            return maps if view is None else view.from_map(maps, output)
        return hook

    with layer_hooks({layer: model.submodule(layer)}, hook_for) as hooked, torch.no_grad(), \
            computing_in(model.device, precision):
        logits = model.scores(prepare_input(x))
        hooked.check_ran()
    return logits.float()


def biased_layers(module: nn.Module) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Every ``Conv2d`` and ``BatchNorm2d`` (a video's ``Conv3d`` and ``BatchNorm3d``) with a bias, by
    path, with its effective bias: a conv's own; an eval-mode BatchNorm's
    ``beta - running_mean * gamma / sqrt(running_var + eps)``."""
    found = {}
    for path, sub in module.named_modules():
        if type(sub) in (nn.Conv2d, nn.Conv3d) and sub.bias is not None:
            found[path] = (sub, sub.bias.detach().float())
        elif type(sub) in (nn.BatchNorm2d, nn.BatchNorm3d) and sub.bias is not None \
                and sub.running_mean is not None:
            scale = sub.weight.detach() / torch.sqrt(sub.running_var + sub.eps)
            found[path] = (sub, (sub.bias.detach() - sub.running_mean * scale).float())
    return found


def full_gradients(model: Model, x: torch.Tensor, classes: list[int], precision: str,
                   target: str = DEFAULT_TARGET) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """One forward and one full backward pass: ``dT/dx`` (B x C x H x W) and, for every layer of
    :func:`biased_layers`, ``(bias, dT/d output)`` (the gradient of the layer's own output: the rest
    of the network sees a clone, so an in-place op downstream cannot change which tensor it is), all fp32.
    The input keeps its memory layout outside bf16: channels-last kernels round differently, and a
    max-pooling's near-ties then route the gradient of the layers below it elsewhere."""
    score = target_named(target)
    layers = biased_layers(model.module)
    outputs: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> ForwardHook:
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            outputs[name] = output
            return output.clone()
        return hook

    leaf = x.detach().clone().requires_grad_(True)
    with layer_hooks({name: module for name, (module, _) in layers.items()}, hook_for), torch.enable_grad(), \
            computing_in(model.device, precision):
        logits = model.scores(prepare_input(leaf) if precision == "bf16" else leaf)
        names = [name for name in layers if name in outputs]
        grads = torch.autograd.grad(score(logits, classes).sum(), [leaf, *(outputs[name] for name in names)],
                                    allow_unused=True)
    found = {name: (layers[name][1], (grad if grad is not None else torch.zeros_like(outputs[name])).float())
             for name, grad in zip(names, grads[1:])}
    return grads[0].float(), found


class Stopped:
    """What :func:`stopping_at` yields: ``run(x)`` runs the module until the layer and returns its
    output (the graph kept, for gradients); ``hooks`` tells which layers ran."""

    def __init__(self, module: nn.Module, hooks: LayerHooks, held: dict[str, torch.Tensor],
                 view: LayerView | None = None) -> None:
        self._module, self.hooks, self._held, self.view = module, hooks, held, view

    def run(self, x: torch.Tensor) -> torch.Tensor:
        self.hooks.start_pass()
        run_until_stopped(self._module, x)
        self.hooks.check_ran()
        output = self._held.pop("output")
        return output if self.view is None else self.view.to_map(output)


@contextmanager
def stopping_at(module: nn.Module, name: str, layer_module: nn.Module,
                view: LayerView | None = None,
                preactivation: Callable[[nn.Module, Any], torch.Tensor] | None = None) -> Iterator[Stopped]:
    """Inside the block, :meth:`Stopped.run` runs ``module`` until ``layer_module`` (named ``name``)
    and returns that layer's output as it is (through ``view``: a transformer's tokens as a map), or,
    with ``preactivation`` (the layer and its inputs -> its output before a fused activation: a Keras
    convolution's), that; skipping the rest of the network; one hook for every pass, removed on exit."""
    held: dict[str, torch.Tensor] = {}

    def hook_for(_name: str) -> ForwardHook:
        def hook(layer: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            held["output"] = output if preactivation is None else preactivation(layer, inputs)
            raise StopForward
        return hook

    with layer_hooks({name: layer_module}, hook_for) as hooks:
        yield Stopped(module, hooks, held, view)


@dataclass(frozen=True)
class InputPass:
    """What :func:`input_pass` found, fp32: ``grads`` dT/dx (B x C x H x W, under the backward
    ``rule``), the ``logits`` and each row's class."""

    grads: torch.Tensor
    logits: torch.Tensor
    classes: list[int]


def input_pass(model: Model, x: torch.Tensor, precision: str, classes: list[int] | None, rule: str | None = None,
               method: str = "", target: str = DEFAULT_TARGET) -> InputPass:
    """One forward and one full backward pass to the input: ``dT/dx`` for each row's class (None: its
    top-1), T the ``target``'s score; ``rule`` (see :mod:`convscope.techniques.backward_rules`)
    changes how the gradient passes ReLU-like units. The gradient goes to a copy of the input only:
    no parameter's ``.grad`` is filled. The model runs on the input in channels-last layout (1.3x
    faster on VGG19 here; a reference given the same layout computes the same values)."""
    score = target_named(target)
    model.resolve()
    leaf = x.detach().requires_grad_(True)
    with backward_rule(rule, method), torch.enable_grad(), computing_in(model.device, precision):
        logits, chosen = model.scores_for(prepare_input(leaf), classes)
        (grads,) = torch.autograd.grad(score(logits, chosen).sum(), leaf)
    return InputPass(grads.detach().float(), logits.detach().float(), chosen)
