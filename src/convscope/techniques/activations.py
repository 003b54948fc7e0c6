"""Intermediate outputs: the output of chosen layers for an input, captured in one forward pass.

Outputs are captured by forward hooks as detached clones (an in-place ReLU later in the network
cannot change them), the hooks are removed in ``finally`` and the model's modes are restored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from ..hooks import capture_outputs, evaluating, run_until_stopped
from ..images import ImageSource
from ..layers import default_activation_layers, warn_if_called_again
from ..model import Model, as_input, as_model

#: Default limit on the memory the captured activations may take.
DEFAULT_MAX_BYTES = 4 * 1024**3


def activation_layers(model: Model, layers: str | Sequence[str] | None = None,
                      feature_maps_only: bool = True) -> list[str]:
    """The layers to capture: ``layers`` resolved (names, comma lists, globs, ``all``) and, with
    ``feature_maps_only``, checked to output feature maps; by default every conv and pooling layer
    larger than 1x1. A layer whose module runs more than once gets a warning (its first call is kept)."""
    if layers is None:
        names = default_activation_layers(model.all_layers())
        if not names:
            raise InputError("layers: no convolution or pooling layers found; name layers", parameter="layers")
    else:
        names = model.select_layers(layers)
    flat = [name for name in names if not model.layer(name).is_spatial]
    if flat and feature_maps_only:
        raise InputError(f"layers: {flat[0]} outputs {list(model.layer(flat[0]).shape or [])}, not a "
                         "C x H x W feature map", parameter="layers")
    for name in names:
        warn_if_called_again(model.layer(name))
    return names


def estimate_bytes(model: Model, layers: Sequence[str], input_shape: Sequence[int]) -> int:
    """Bytes the captured float32 outputs of ``layers`` take for an input B x 3 x H x W (a video
    network's B x 3 x T x H x W), scaling the shapes found at the model's own input size by the ratio
    of input areas (volumes)."""
    batch, height, width = input_shape[0], input_shape[-2], input_shape[-1]
    base_h, base_w = model.input_size
    ratio = (height * width) / (base_h * base_w)
    if model.frames is not None and len(input_shape) == 5:
        ratio *= input_shape[2] / model.frames
    total = 0
    for name in layers:
        shape = model.layer(name).shape or (1,)
        elements = 1
        for size in shape:
            elements *= size
        spatial = ratio if len(shape) in (3, 4) else 1.0
        total += int(elements * spatial * batch * 4)
    return total


def check_memory(model: Model, layers: Sequence[str], input_shape: Sequence[int],
                 max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Raise InputError before any work if the captured outputs would exceed ``max_bytes``."""
    needed = estimate_bytes(model, layers, input_shape)
    if needed > max_bytes:
        raise InputError(f"layers: capturing {len(layers)} layers for an input of {tuple(input_shape)} would "
                         f"take about {needed / 1024**3:.1f} GB, over the limit of {max_bytes / 1024**3:.1f} GB; "
                         "choose fewer layers or a smaller input", parameter="layers")
    return needed


def capture(model: Model, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The outputs of the (already resolved) layers ``names`` for the model input ``x``: one forward
    pass, stopped once the last of them has run."""
    modules = {name: model.submodule(name) for name in names}
    with evaluating(model.module), torch.no_grad(), capture_outputs(modules, stop=True) as captured:
        run_until_stopped(model.module, x)
    return {name: model.layer(name).as_map(captured[name]) for name in names}


def activations(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
                layers: str | Sequence[str] | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for input ``x``, captured in one forward pass.

    ``x``: a B x 3 x H x W tensor (model input) or images (paths, PIL images, arrays).
    ``model``: a :class:`Model`, or a plain module (its input size is then the tensor's).
    ``layers``: names, comma lists, globs or ``all`` (default: every conv and pooling layer).
    Returns ``{layer: tensor}`` in network order, each a detached clone (B x C x H x W for a feature
    map) of the output the name denotes. Raises InputError before any work when the outputs would
    take more than ``max_bytes``, and LayerError when a layer does not run for this input.
    """
    model = as_model(model, x)
    names = activation_layers(model, layers, feature_maps_only=False)
    x = as_input(model, x)
    check_memory(model, names, x.shape, max_bytes)
    return capture(model, x, names)
