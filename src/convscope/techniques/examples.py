"""Dataset examples: for every channel of a layer, the images that excite it most, and where.

For an image and a layer with output A (C x h x w, the tensor ``activations`` shows), channel k's
response is ``m_k = max_ij A_kij``, at the first position (row-major) that reaches it. Over a
dataset, channel k's examples are the K images with the largest ``m_k``, ties broken by image
order (the smaller image number first). :class:`TopK` keeps them streaming: memory is channels x K
whatever the number of images, and merging partial results in any grouping gives exactly the
same examples.

The unit at position (i, j) sees a box of the input, its receptive field, measured from the
network (:func:`receptive_field`): the input pixels the gradient of the centre unit reaches, for
random inputs; other positions shift it by the layer's stride (input size / output size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..catalog import EXAMPLES_TOP
from ..hooks import evaluating
from ..model import Model
from .capture import stopping_at
from .units import reads_class_scores

#: Default number of examples per channel.
DEFAULT_TOP = EXAMPLES_TOP
_NO_IMAGE = np.iinfo(np.int64).max


def channel_maxima(output: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A layer's output B x C x h x w -> (maxima B x C float32, positions B x C x 2 (row, column))."""
    flat = output.detach().float().flatten(2)
    values, where = flat.max(dim=2)
    width = output.shape[3]
    positions = torch.stack([where // width, where % width], dim=-1)
    return values.cpu().numpy(), positions.cpu().numpy().astype(np.int32)


@dataclass
class TopK:
    """The ``k`` best images of each of ``C`` channels: ``values`` C x k (float32, -inf where not
    filled), ``images`` C x k (image numbers), ``positions`` C x k x 2. Rows are sorted best first."""

    values: np.ndarray
    images: np.ndarray
    positions: np.ndarray

    @classmethod
    def empty(cls, channels: int, k: int) -> TopK:
        return cls(np.full((channels, k), -np.inf, np.float32), np.full((channels, k), _NO_IMAGE, np.int64),
                   np.zeros((channels, k, 2), np.int32))

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def add(self, maxima: np.ndarray, positions: np.ndarray, images: np.ndarray) -> TopK:
        """This top-K with a batch of images folded in: ``maxima`` B x C, ``positions`` B x C x 2,
        ``images`` their B image numbers."""
        channels = self.values.shape[0]
        other = TopK(np.ascontiguousarray(maxima.T, np.float32),
                     np.broadcast_to(np.asarray(images, np.int64), (channels, len(images))).copy(),
                     np.ascontiguousarray(positions.transpose(1, 0, 2), np.int32))
        return self.merge(other)

    def merge(self, other: TopK) -> TopK:
        """The best ``k`` of both: by value, descending; equal values by image number, ascending."""
        values = np.concatenate([self.values, other.values], axis=1)
        images = np.concatenate([self.images, other.images], axis=1)
        positions = np.concatenate([self.positions, other.positions], axis=1)
        order = np.lexsort((images, -values.astype(np.float64)), axis=1)[:, :self.k]
        return TopK(np.take_along_axis(values, order, 1), np.take_along_axis(images, order, 1),
                    np.take_along_axis(positions, order[..., None], 1))

    def filled(self, channel: int) -> int:
        return int((self.images[channel] != _NO_IMAGE).sum())


@dataclass(frozen=True)
class ReceptiveField:
    """Where a unit of a layer looks in the input: ``size`` (rows, columns) of its box, ``stride``
    (input pixels per output position) and ``offset`` (the centre unit's box centre minus the
    nominal centre ``(i + 0.5) * stride - 0.5``), for an input of ``input_size`` (height, width)."""

    size: tuple[int, int]
    stride: tuple[float, float]
    offset: tuple[float, float]
    input_size: tuple[int, int]

    def box(self, row: int, column: int, clip: bool = True) -> tuple[int, int, int, int]:
        """The box (left, top, right, bottom; right and bottom exclusive) of the unit at (row,
        column), clipped to the input unless ``clip`` is false."""
        edges = []
        for axis, position in ((1, column), (0, row)):
            centre = (position + 0.5) * self.stride[axis] - 0.5 + self.offset[axis]
            low = math.floor(centre - (self.size[axis] - 1) / 2 + 0.5)
            high = low + self.size[axis]
            edges.append((max(0, low), min(self.input_size[axis], high)) if clip else (low, high))
        (left, right), (top, bottom) = edges
        return left, top, right, bottom

    def cell(self, row: int, column: int) -> tuple[int, int, int, int]:
        """The stride-sized box around the unit's centre: where its maximum is, as marked on a crop."""
        edges = []
        for axis, position in ((1, column), (0, row)):
            centre = (position + 0.5) * self.stride[axis] - 0.5 + self.offset[axis]
            half = max(self.stride[axis], 1.0) / 2
            edges.append((max(0, math.floor(centre - half + 1)),
                          min(self.input_size[axis], math.floor(centre + half + 1))))
        (left, right), (top, bottom) = edges
        return left, top, right, bottom


def receptive_field(model: Model, layer: str, samples: int = 4, seed: int = 0) -> ReceptiveField:
    """Measure ``layer``'s receptive field: the bounding box of the input pixels where the gradient
    of the centre unit (summed over channels, for ``samples`` random inputs) is not zero (the class
    scores, ``logits``: the whole input).

    The model is left as it was: evaluation mode during the pass, gradients taken with
    ``torch.autograd.grad`` (no ``.grad`` filled), the forward stopped after the layer.
    """
    height, width = model.input_size
    if reads_class_scores(model, layer):  # a class score sees the whole picture
        return ReceptiveField((height, width), (float(height), float(width)), (0.0, 0.0), (height, width))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, model.preprocessing.channels, height, width, generator=generator)
    x = x.to(model.device, model.dtype).requires_grad_(True)
    with evaluating(model.module), torch.enable_grad(), \
            stopping_at(model.module, layer, model.submodule(layer), model.layer(layer).view) as stopped:
        output = stopped.run(x)
        rows, columns = output.shape[2], output.shape[3]
        centre = output[:, :, rows // 2, columns // 2]
        (gradient,) = torch.autograd.grad(centre.float().sum(), x)
    reached = gradient.abs().sum(dim=(0, 1)).cpu().numpy() > 0
    stride = (height / rows, width / columns)
    if not reached.any():  # the unit does not depend on the input: call it the whole picture
        return ReceptiveField((height, width), stride, (0.0, 0.0), (height, width))
    spans = []
    for axis in (0, 1):
        hit = np.flatnonzero(reached.any(axis=1 - axis))
        spans.append((int(hit[0]), int(hit[-1]) + 1))
    (top, bottom), (left, right) = spans
    offset = ((top + bottom - 1) / 2 - ((rows // 2 + 0.5) * stride[0] - 0.5),
              (left + right - 1) / 2 - ((columns // 2 + 0.5) * stride[1] - 0.5))
    return ReceptiveField((bottom - top, right - left), stride, offset, (height, width))


__all__ = ["DEFAULT_TOP", "TopK", "ReceptiveField", "channel_maxima", "receptive_field"]
