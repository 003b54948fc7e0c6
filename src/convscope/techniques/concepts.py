"""Concepts: Deep Feature Factorization (Collins et al. 2018; pytorch-grad-cam's
``DeepFeatureFactorization``).

A layer's activations over every image together, as a K x (B h w) matrix ``A`` (K channels), each
row shifted by its minimum so that it is non-negative, are factorized ``A ~ W H`` by non-negative
matrix factorization with ``n`` components (scikit-learn's ``NMF(init="random", random_state=0)``,
as the reference): column k of ``W`` (plus the shift) is concept k's channel vector, row k of ``H``
its map on every image. The concepts are shared by the images. Where the layer feeds global
average pooling and one Linear layer, that layer scores each concept's vector: the classes it
stands for. Needs scikit-learn (``pip install 'convscope[concepts]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, check_at_least
from ..images import ImageSource
from ..model import Model, as_input, as_model
from .cams import FULLGRAD_EPS, feeds_gap_linear, last_linear, minmax_channels, resized_linearly
from .capture import cam_layer, layer_pass

#: How many classes label each concept.
CONCEPT_LABELS = 2


@dataclass
class Concepts:
    """``vectors`` (n x K: each concept's channel weights), ``low_res`` (B x n x h x w, each image's
    map of each concept as the factorization gives it), ``maps`` (B x n x H x W: each min-max
    normalized at the layer's size, then upsampled bilinearly to the input, as the reference),
    ``layer``, and where the layer feeds one Linear layer after global average pooling, ``scores``
    (n x classes: that layer applied to each vector) and ``top`` (each concept's most probable
    classes, index and softmax probability); else None."""

    vectors: torch.Tensor
    low_res: torch.Tensor
    maps: torch.Tensor
    layer: str
    scores: torch.Tensor | None = None
    top: list[list[tuple[int, float]]] | None = None


def factorize(acts: torch.Tensor, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W + shift, H)`` of the non-negative factorization of the activations (B x K x h x w) as in
    the module notes: W K x n, H n x (B h w)."""
    matrix = acts.detach().float().cpu().transpose(0, 1).reshape(acts.shape[1], -1).numpy()
    matrix = np.nan_to_num(matrix)
    shift = matrix.min(axis=-1)
    factorization = _nmf_class("n")(n_components=n, init="random", random_state=0)
    w = factorization.fit_transform(matrix - shift[:, None])
    return w + shift[:, None], factorization.components_


def _nmf_class(parameter: str) -> type:
    """scikit-learn's ``NMF``, or an InputError naming ``parameter`` that says how to install it."""
    try:
        from sklearn.decomposition import NMF
    except ImportError:
        raise InputError("concepts need scikit-learn: pip install 'convscope[concepts]'",
                         parameter=parameter) from None
    return NMF


def check_concepts(model: Model, layer: str, n: int, parameter: str = "n") -> None:
    """``n`` concepts can be found at ``layer``: at least 1, at most its channels, scikit-learn
    installed; errors name ``parameter``."""
    check_at_least(parameter, n, 1)
    channels = model.layer(layer).shape[0]
    if n > channels:
        raise InputError(f"{parameter} {n}: more concepts than layer {layer}'s {channels} channels",
                         parameter=parameter)
    _nmf_class(parameter)


def concepts(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource], n: int = 5,
             layer: str | None = None) -> Concepts:
    """``n`` concepts shared by the images at ``layer`` (default: the CAM layer), see :class:`Concepts`."""
    model = as_model(model, x)
    x = as_input(model, x)
    layer = cam_layer(model, layer)
    check_concepts(model, layer, n)
    found = layer_pass(model, x, layer, "fp32", None, False)
    acts = found.acts
    vectors, components = factorize(acts, n)
    low_res = torch.from_numpy(components.astype(np.float32)).reshape(n, acts.shape[0], *acts.shape[2:]).transpose(0, 1)
    maps = resized_linearly(minmax_channels(low_res.contiguous(), FULLGRAD_EPS), x.shape[2:])
    vectors_t = torch.from_numpy(vectors.T.astype(np.float32))
    scores = top = None
    linear = last_linear(model.module)
    if feeds_gap_linear(acts, found.logits, linear):
        with torch.no_grad():
            scores = F.linear(vectors_t.to(linear.weight.device), linear.weight.float(),
                              None if linear.bias is None else linear.bias.float()).cpu()
        probabilities = scores.softmax(dim=1)
        values, indices = probabilities.topk(min(CONCEPT_LABELS, probabilities.shape[1]), dim=1)
        top = [[(int(i), float(v)) for i, v in zip(row_i, row_v)] for row_i, row_v in zip(indices, values)]
    return Concepts(vectors_t, low_res, maps, layer, scores, top)
