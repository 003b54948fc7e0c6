"""Why this class: the channels of a layer that carried a class score.

For an image, a class c and a layer L with output A (K x h x w) and g = dY_c/dA (Y_c the class
score before softmax):

* channel k's **contribution** is ``C_k = sum_ij g_kij * A_kij`` (gradient x activation: the
  first-order share of Y_c carried by that channel);
* its **map** is ``g_k * A_k`` element-wise (where it contributed), and its **peak** the position
  of the map's largest term in the direction of ``C_k`` (the largest for a positive contribution,
  the most negative for a negative one; the first such position, row-major);
* the **total** ``sum_k C_k = sum(g * A)``; where global average pooling and a linear classifier
  follow L, it is exactly ``Y_c - b_c`` (the class's bias), and then Grad-CAM's map is ``sum_k g_k * A_k``.

Channels are ranked by contribution: the first ones support the class, the most negative ones
argue against it. ``share`` is ``C_k / total``, where the total is positive; None otherwise (in a
layer far from the output the first-order total can be negative, and a share of it would flip signs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from ..catalog import EXPLAIN_TOP, MAPS_PRECISION
from ..errors import InputError, check_at_least
from ..hooks import evaluating, layer_hooks
from ..images import ImageSource
from ..model import Model, as_input, as_model
from ..precision import check_precision, choose_precision
from .cams import positions, weighted_sum
from .capture import batch_for_classes, cam_layer, layer_pass

#: Channels shown as supporting the class, by default, and the most negative ones shown beside them.
DEFAULT_TOP = EXPLAIN_TOP
AGAINST = 2


@dataclass(frozen=True)
class ChannelContribution:
    """One channel's part in a class score: its index, ``contribution`` (sum_ij g*A), ``share`` of
    the total (None unless the total is positive) and ``peak`` (row, column in the layer's output; a
    video network's frame, row, column)."""

    index: int
    contribution: float
    share: float | None
    peak: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "contribution": self.contribution, "share": self.share,
                "peak": list(self.peak)}


@dataclass
class Explanation:
    """The channels of ``layer`` behind the score of class ``class_index`` for image ``image`` of
    the batch: ``contributions`` (K), ``maps`` (g * A, K x h x w), ``activations`` (A, K x h x w),
    ``cam`` (Grad-CAM before upsampling: ReLU(sum_k mean_ij(g_k) A_k), h x w), ``score`` (Y_c),
    ``probability`` (softmax), ``total`` (sum of the contributions); ``top`` supporting channels
    and up to :data:`AGAINST` opposing ones are what pictures show."""

    image: int
    class_index: int
    label: str
    layer: str
    score: float
    probability: float
    total: float
    top: int
    contributions: torch.Tensor = field(repr=False)
    maps: torch.Tensor = field(repr=False)
    activations: torch.Tensor = field(repr=False)
    cam: torch.Tensor = field(repr=False)

    def channel(self, index: int) -> ChannelContribution:
        value = float(self.contributions[index])
        direction = 1.0 if value >= 0 else -1.0
        flat = (direction * self.maps[index]).flatten()
        where = int(torch.argmax(flat))  # the first of equal maxima
        peak = tuple(int(i) for i in np.unravel_index(where, tuple(self.maps.shape[1:])))
        return ChannelContribution(index, value, value / self.total if self.total > 0 else None, peak)

    def ranked(self) -> list[ChannelContribution]:
        """Every channel, largest contribution first (ties: the smaller index first)."""
        return list(self._ranking)

    @cached_property
    def _ranking(self) -> tuple[ChannelContribution, ...]:
        """The ranking, found once (every channel's peak is an argmax over its map)."""
        values = self.contributions.tolist()
        return tuple(self.channel(k) for k in sorted(range(len(values)), key=lambda k: (-values[k], k)))

    @property
    def supporting(self) -> list[ChannelContribution]:
        """The ``top`` channels with the largest contributions."""
        return list(self._ranking[:self.top])

    @property
    def opposing(self) -> list[ChannelContribution]:
        """Up to :data:`AGAINST` channels with negative contributions, the most negative first,
        among those not already supporting."""
        return [c for c in reversed(self._ranking[self.top:]) if c.contribution < 0][:AGAINST]

    @property
    def shown(self) -> list[ChannelContribution]:
        """The channels pictures show: the supporting ones, then the opposing ones."""
        return self.supporting + self.opposing

    def sides(self) -> list[tuple[str, ChannelContribution]]:
        """:attr:`shown` with the side each channel takes: ``("for", c)``, then ``("against", c)``."""
        return [("for", c) for c in self.supporting] + [("against", c) for c in self.opposing]

    @property
    def table(self) -> list[dict[str, Any]]:
        """Every channel as a row (rank, index, contribution, share, peak), largest contribution first."""
        return [{"rank": rank, **c.as_json()} for rank, c in enumerate(self._ranking, 1)]

    def as_json(self) -> dict[str, Any]:
        """The documented JSON: the class, its score, the total, the channels shown, and every
        channel's contribution (largest first)."""
        return {"layer": self.layer, "class": self.class_index, "label": self.label, "score": self.score,
                "probability": self.probability, "total_contribution": self.total,
                "top": [c.index for c in self.supporting], "against": [c.index for c in self.opposing],
                "channels": [c.as_json() for c in self._ranking]}


def check_explain_top(model: Model, layer: str, top: int) -> int:
    """``top`` between 1 and the layer's channel count (InputError naming ``top``)."""
    check_at_least("top", top, 1)
    channels = model.layer(layer).shape[0]
    if top > channels:
        raise InputError(f"top {top}: layer {layer} has only {channels} channels", parameter="top")
    return top


def explain(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
            classes: int | str | Sequence[int | str] | None = None, layer: str | None = None,
            top: int = DEFAULT_TOP, precision: str = MAPS_PRECISION) -> list[Explanation]:
    """One :class:`Explanation` per image and class: the channels of ``layer`` (default: the CAM
    layer) ranked by their contribution to the class score (see the module notes). ``classes`` as
    for :func:`~convscope.techniques.cams.cam`: None for each image's top-1, one class for every
    image, one per image, or for a single image several classes (one explanation each)."""
    model = as_model(model, x)
    check_precision(precision, model.device)
    layer = cam_layer(model, layer)
    check_explain_top(model, layer, top)
    return explanations(model, as_input(model, x), classes, layer, top, precision)


def explanations(model: Model, x: torch.Tensor, classes: int | str | Sequence[int | str] | None, layer: str,
                 top: int, precision: str) -> list[Explanation]:
    """:func:`explain` with the layer, ``top`` and precision already checked (by the plan)."""
    x, fixed, images = batch_for_classes(model, x, classes)
    with evaluating(model.module):
        precision, _ = choose_precision(precision, model.module, model.device, ("explain", layer, tuple(x.shape)),
                                        lambda option: layer_pass(model, x, layer, option, fixed, gradients=True))
        found = layer_pass(model, x, layer, precision, fixed, gradients=True)
        acts, grads, logits, chosen = found.acts, found.grads, found.logits, found.classes
    products = grads * acts
    contributions = products.sum(dim=positions(products))
    cams = torch.relu(weighted_sum(grads.mean(dim=positions(grads)), acts))  # Grad-CAM's map
    probabilities = logits.softmax(dim=1)
    return [Explanation(image, cls, model.labels[cls], layer, float(logits[row, cls]),
                        float(probabilities[row, cls]), float(contributions[row].sum()), top,
                        contributions[row].cpu(), products[row].cpu(), acts[row].cpu(), cams[row].cpu())
            for row, (image, cls) in enumerate(zip(images, chosen))]


def score_without(model: Model, x: torch.Tensor, layer: str, channels: Sequence[int], class_index: int) -> float:
    """The score (before softmax) of ``class_index`` for the one image ``x`` when ``channels`` of
    ``layer`` are set to zero (a forward hook replaces the output): the check that the channels
    ranked first carry the score -- zeroing them must lower it more than zeroing others."""
    def zero(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, list(channels)] = 0
        return output

    with evaluating(model.module), layer_hooks({layer: model.submodule(layer)}, lambda name: zero) as hooked, \
            torch.no_grad():
        scores = model.scores(x)
        hooked.check_ran()
    return float(scores[0, class_index])
