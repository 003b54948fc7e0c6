"""Intermediate outputs: the output of chosen layers for an input, captured in one forward pass.

Outputs are captured by forward hooks as detached clones (an in-place ReLU later in the network
cannot change them), the hooks are removed in ``finally`` and the model's modes are restored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .errors import InputError
from .hooks import capture_outputs, evaluating, run_until_captured
from .images import ImageSource
from .layers import LayerInfo
from .model import Model

#: Default limit on the memory the captured activations may take.
DEFAULT_MAX_BYTES = 4 * 1024**3

CONV_TYPES = (nn.modules.conv._ConvNd,)
POOL_TYPES = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
              nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
              nn.modules.pooling._LPPoolNd)


def as_model(model: Model | nn.Module) -> Model:
    """A :class:`Model` as it is, or a plain module wrapped with default preprocessing."""
    if isinstance(model, Model):
        return model
    from .models import load_model

    return load_model(model)


def as_input(model: Model, x: torch.Tensor | ImageSource | Sequence[ImageSource]) -> torch.Tensor:
    """A B x 3 x H x W tensor as it is (moved to the model's device), or images preprocessed."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4:
            raise InputError(f"expected an input of shape B x C x H x W, got {tuple(x.shape)}")
        return x.to(device=model.device, dtype=model.dtype)
    return model.preprocess(x)


def is_conv_or_pool(model: Model, layer: LayerInfo) -> bool:
    """Whether a layer is a convolution or pooling layer with a spatial output larger than 1 x 1."""
    if not layer.is_spatial or layer.shape[1] * layer.shape[2] <= 1:
        return False
    aliased = {alias.name: alias for alias in model.aliases}
    if layer.name in aliased:
        return aliased[layer.name].type in ("Conv2d", "MaxPool2d", "AvgPool2d")
    return isinstance(model.module.get_submodule(layer.module), CONV_TYPES + POOL_TYPES)


def default_layers(model: Model) -> list[str]:
    """Every convolution and pooling layer with a spatial output (on VGG: the Keras-named ones).

    On a model with aliases, only the aliases are taken, so VGG19 gives the 21 layers
    block1_conv1 ... block5_pool.
    """
    listed = model.layers()
    if model.aliases:
        alias_names = {alias.name for alias in model.aliases}
        listed = [layer for layer in listed if layer.name in alias_names]
    return [layer.name for layer in listed if is_conv_or_pool(model, layer)]


def estimate_bytes(model: Model, layers: Sequence[str], input_shape: Sequence[int]) -> int:
    """Bytes the captured float32 outputs of ``layers`` take for an input B x 3 x H x W, scaling the
    shapes found at the model's own input size by the ratio of input areas."""
    batch, _, height, width = input_shape
    base_h, base_w = model.input_size
    ratio = (height * width) / (base_h * base_w)
    total = 0
    for name in layers:
        shape = model.layer(name).shape or (1,)
        elements = 1
        for size in shape:
            elements *= size
        spatial = ratio if len(shape) == 3 else 1.0
        total += int(elements * spatial * batch * 4)
    return total


def check_memory(model: Model, layers: Sequence[str], input_shape: Sequence[int],
                 max_bytes: int = DEFAULT_MAX_BYTES) -> int:
    """Raise InputError before any work if the captured outputs would exceed ``max_bytes``."""
    needed = estimate_bytes(model, layers, input_shape)
    if needed > max_bytes:
        raise InputError(f"capturing {len(layers)} layers for an input of {tuple(input_shape)} would take "
                         f"about {needed / 1024**3:.1f} GB, over the limit of {max_bytes / 1024**3:.1f} GB; "
                         "choose fewer layers (--layers) or a smaller input")
    return needed


def activations(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
                layers: str | Sequence[str] | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for input ``x``, captured in one forward pass.

    ``x``: a B x 3 x H x W tensor (model input) or images (paths, PIL images, arrays).
    ``layers``: names, comma lists, globs or ``all`` (default: every conv and pooling layer).
    Returns ``{layer: tensor}`` in network order, each a detached clone (B x C x H x W for a feature
    map) of the output the name denotes. Raises InputError before any work when the outputs would
    take more than ``max_bytes``.
    """
    model = as_model(model)
    names = default_layers(model) if layers is None else model.select_layers(layers)
    if not names:
        raise InputError("no layers to capture")
    x = as_input(model, x)
    check_memory(model, names, x.shape, max_bytes)
    modules = {name: model.submodule(name) for name in names}
    with evaluating(model.module), torch.no_grad(), capture_outputs(modules, stop=True) as captured:
        run_until_captured(model.module, x)
    missing = [name for name in names if name not in captured]
    if missing:
        raise InputError(f"layer {missing[0]!r} did not run in the forward pass")
    return {name: captured[name] for name in names}
