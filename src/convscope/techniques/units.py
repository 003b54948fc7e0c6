"""Units: what a feature picture maximizes, read from a layer's output as one number per picture.

* A **channel** of a feature map (B x C x H x W; a video network's B x C x T x H x W): its spatial
  mean (objective ``mean``) or its value at the centre position (``neuron``: Lucid's neuron
  objective, row h // 2, column w // 2).
* An **entry** of a vector output (B x N): a Linear layer's output neuron; with :data:`LOGITS`,
  a class score (Simonyan et al. 2014; Lucid's ``labels``): the entry itself for either objective.
* A **direction** d in the layer's channel space (Lucid's ``direction``): the mean over positions of
  ``sum_c d_c A_c`` (for a vector output, ``sum_c d_c A_c``).

The layer read is a conv's pre-activation (:func:`convscope.layers.preactivation`), any other
layer's own output; :data:`LOGITS`, in a model with no layer of that name, is the target's class
scores (the full forward pass: a Keras softmax head is read as its logits).

**Diversity** (Lucid's ``diversity``): N pictures of one unit drawn together, their similarity
penalized at a feature map A (C x positions): with the Gram matrices ``G_i = A_i A_i^T`` scaled to
unit Frobenius norm, the penalty of a group is ``sum over ordered pairs i != j of <G_i, G_j>``, and
the ascent maximizes ``sum_i unit_i - weight * mean_i |unit_i| * penalty`` (Lucid's
``channel - 1e2 * diversity`` written per picture, with the weight scaled by the units' current
size -- held constant in the gradient -- so that one weight suits any layer: Lucid's fixed 1e2 is
tuned to one layer of one network and here drives logits of ~50 down to ~13).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..layers import LayerInfo, preactivation
from ..model import Model

#: The layer name that stands for a classifier's class scores (class pictures).
LOGITS = "logits"
#: The diversity term's weight relative to the units' mean absolute value: measured on the default
#: model (96 px, 64 steps, 3 copies), 0.25 lowers the mean pair similarity of the Gram matrices from
#: 0.68 to 0.31 (two classes' logits, compared at ``_act1``) and from 0.86 to 0.30 (two ``_blocks.8``
#: channels) for 16 % and 8 % of the score.
DIVERSITY_WEIGHT = 0.25


def reads_class_scores(model: Model, layer: str) -> bool:
    """True when ``layer`` is :data:`LOGITS` and the model has no layer of that name."""
    return layer == LOGITS and all(info.name != LOGITS for info in model.all_layers())


def check_class_scores(model: Model) -> None:
    """InputError unless the model's target gives each image one score per class (not a detector's or
    a segmenter's, whose scores depend on a region)."""
    if model.target.has_regions or model.target.finds_entries:
        raise InputError(f"classes: class pictures need class scores per image; the {model.target.name} target "
                         "scores regions", parameter="classes")


def unit_layer(model: Model, layer: str) -> LayerInfo:
    """The layer whose output the units of ``layer`` are read from: a conv's pre-activation, a
    transformer's token grid as its map, any other layer with a tensor output itself."""
    layers = model.all_layers()
    info = model.layer(layer)
    if info.kind == "conv" or info.view is not None:
        return preactivation(layers, layer)
    if info.shape is None or len(info.shape) not in (1, 3, 4):
        raise InputError(f"layers: {layer} has no units to draw (its output is "
                         f"{'not a tensor' if info.shape is None else 'x'.join(map(str, info.shape))}; "
                         "units are channels of a feature map or entries of a vector)", parameter="layers")
    return info


def unit_count(model: Model, layer: str) -> int:
    """How many units ``layer`` has: channels of a map, entries of a vector, or classes (:data:`LOGITS`)."""
    if reads_class_scores(model, layer):
        check_class_scores(model)
        return len(model.labels)
    shape = unit_layer(model, layer).shape
    assert shape is not None
    return shape[0]


def diversity_layer(model: Model, layer: str) -> LayerInfo:
    """The feature map whose Gram matrices diversity compares: ``layer``'s own when it is a map, else
    the last feature map larger than 1 x 1 before it (the class scores': the network's last)."""
    if not reads_class_scores(model, layer):
        info = unit_layer(model, layer)
        if info.is_spatial:
            return info
    layers = [info for info in model.all_layers() if not info.is_alias]
    if not reads_class_scores(model, layer):
        position = next(i for i, info in enumerate(layers) if info.module == model.layer(layer).module)
        layers = layers[:position]
    maps = [info for info in layers if info.is_spatial and info.is_map_larger_than_1x1]
    if not maps:
        raise InputError(f"diversity: no feature map before {layer} to compare the pictures at",
                         parameter="diversity")
    return maps[-1]


def accentuation_layer(model: Model, layer: str) -> LayerInfo:
    """Where accentuation compares the picture with its photo by default: the feature map a third of
    the way through the feature maps up to ``layer`` (the paper regularizes InceptionV1's logits at
    ``mixed3a``, an early layer; a conv's own pre-activation when it is among the first three)."""
    maps = _maps_up_to(model, layer)
    return maps[len(maps) // 3]


def regularization_layer(model: Model, layer: str, at: str) -> LayerInfo:
    """The layer ``at`` (its map; a conv's pre-activation) as accentuation's regularization layer of
    ``layer``: InputError unless it is a feature map that runs no later than ``layer``."""
    info = unit_layer(model, at)
    if not info.is_spatial:
        raise InputError(f"reg_layer: {at} is not a feature map", parameter="reg_layer")
    if info.module not in {found.module for found in _maps_up_to(model, layer)}:
        raise InputError(f"reg_layer: {at} runs after {layer}; choose a layer at or before it", parameter="reg_layer")
    return info


def _maps_up_to(model: Model, layer: str) -> list[LayerInfo]:
    """The listed feature maps up to ``layer`` (its own output or pre-activation included), in order."""
    layers = [info for info in model.all_layers() if not info.is_alias]
    if not reads_class_scores(model, layer):
        target = unit_layer(model, layer)
        last = next(i for i, info in enumerate(layers) if info.module == target.module)
        layers = layers[:last + 1]
    maps = [info for info in layers if info.is_spatial]
    if not maps:
        raise InputError(f"layers: no feature map up to {layer} to compare the picture with its photo",
                         parameter="layers")
    return maps


def unit_values(acts: torch.Tensor, units: Sequence[int], objective: str = "mean",
                direction: torch.Tensor | None = None) -> torch.Tensor:
    """Item i's unit in fp32 (see the module notes): ``units[i]`` of ``acts`` (B x N, or maps
    B x C x ...), or with ``direction`` (C) its projection."""
    acts = acts.float()
    if direction is not None:
        weights = direction.to(acts.device, torch.float32).view(1, -1, *[1] * (acts.dim() - 2))
        maps = (acts * weights).sum(dim=1)
    else:
        index = torch.tensor(list(units), device=acts.device)
        maps = acts[torch.arange(len(units), device=acts.device), index]
    if maps.dim() == 1:
        return maps
    if objective == "neuron":
        return maps[(slice(None), *[size // 2 for size in maps.shape[1:]])]
    return maps.mean(dim=tuple(range(1, maps.dim())))


def diversified(values: torch.Tensor, maps: torch.Tensor, copies: int,
                weight: float = DIVERSITY_WEIGHT) -> torch.Tensor:
    """What the ascent maximizes with diversity: ``sum(values) - weight * mean|values| * penalty``,
    the scale ``mean|values|`` held constant (no gradient through it)."""
    return values.sum() - weight * values.detach().abs().mean() * diversity_penalty(maps, copies)


def diversity_penalty(maps: torch.Tensor, copies: int) -> torch.Tensor:
    """The summed penalty of the consecutive groups of ``copies`` pictures in ``maps`` (B x C x ...):
    per group, ``sum_{i != j} <G_i, G_j>`` with ``G = A A^T / |A A^T|``."""
    flat = maps.float().flatten(2)
    grams = flat @ flat.transpose(1, 2)
    grams = (grams / grams.flatten(1).norm(dim=1).clamp(min=1e-10).view(-1, 1, 1)).flatten(1)
    groups = grams.view(-1, copies, grams.shape[1])
    similarity = groups @ groups.transpose(1, 2)
    return similarity.sum() - similarity.diagonal(dim1=1, dim2=2).sum()


def read_direction(path: str | os.PathLike, channels: int, layer: str) -> torch.Tensor:
    """A direction from a ``.npy`` file: ``channels`` finite numbers, not all zero. InputError naming
    the file otherwise."""
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"direction: cannot read {path} as a .npy array ({exc})", parameter="direction") from None
    values = np.asarray(values).squeeze()
    if values.ndim != 1 or values.shape[0] != channels:
        raise InputError(f"direction: {path} holds {'x'.join(map(str, values.shape)) or 'a scalar'} values; "
                         f"{layer} has {channels} channels, so the direction needs {channels}",
                         parameter="direction")
    if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all() or not np.any(values):
        raise InputError(f"direction: {path} must hold finite numbers, not all zero", parameter="direction")
    return torch.from_numpy(values.astype(np.float32))


#: A filter's weights count as zero when the largest is at most this times the layer's largest
#: (the default model's ``_conv_stem`` filters 11, 16, 28 and 31 are 1e-9 .. 9e-8 against 3.6).
ZERO_WEIGHT = 1e-6


def dead_units(model: Model, layer: str, units: Sequence[int]) -> list[bool]:
    """Per unit of a conv layer, True when its filter's weights are all zero (see
    :data:`ZERO_WEIGHT`: no picture can move it, its pre-activation is one constant for every
    input); False for other layers."""
    if reads_class_scores(model, layer) or model.layer(layer).kind != "conv":
        return [False] * len(units)
    info = model.layer(layer)
    conv = model.module.get_submodule(info.source or info.module)
    weight = getattr(conv, "weight", None)
    if isinstance(weight, torch.Tensor):
        per_unit = weight.detach().flatten(1)  # torch: out x in x kh x kw
    else:  # a Keras convolution: kernel kh x kw x in x out
        kernel = getattr(conv, "kernel", None)
        if kernel is None:
            return [False] * len(units)
        kernel = torch.as_tensor(getattr(kernel, "value", kernel)).detach()
        per_unit = kernel.reshape(-1, kernel.shape[-1]).t()
    largest = per_unit.abs().amax(dim=1)
    zero = (largest <= ZERO_WEIGHT * largest.max()).tolist()
    return [bool(zero[unit]) if unit < len(zero) else False for unit in units]


def input_kernels(model: Model, layer: str) -> torch.Tensor | None:
    """The kernels of ``layer`` as RGB patches (out x 3 x kh x kw, colours in RGB order) when it is
    the network's first convolution and takes the picture's three colours directly (the classic
    first-layer figure); None otherwise (a deeper conv, a video network's 3-D kernels)."""
    if reads_class_scores(model, layer) or model.layer(layer).kind != "conv" or model.preprocessing.channels != 3:
        return None
    convs = [info for info in model.all_layers() if info.kind == "conv" and not info.is_alias]
    info = model.layer(layer)
    source = info.source or info.module
    if not convs or convs[0].module != source:
        return None
    conv = model.module.get_submodule(source)
    weight = getattr(conv, "weight", None)
    if isinstance(weight, torch.Tensor):
        kernels = weight.detach().float().cpu()
    else:  # a Keras convolution: kh x kw x in x out, fed BGR under caffe preprocessing
        kernel = getattr(conv, "kernel", None)
        if kernel is None:
            return None
        kernels = torch.as_tensor(getattr(kernel, "value", kernel)).detach().float().cpu().permute(3, 2, 0, 1)
        if getattr(model.module, "bgr", False):
            kernels = kernels.flip(1)
    if kernels.dim() != 4 or kernels.shape[1] != 3:
        return None
    return kernels
