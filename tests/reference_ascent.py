"""The reference the ``classic`` filter recipe is held against (used by tests/test_filters.py and
benchmarks/filters_classic.py; not part of the library)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

import convscope
from convscope.hooks import evaluating
from convscope.techniques.filter_recipes import PixelImage, generators
from convscope.techniques.filters import DEFAULT_SIZE, score_images, truncated_at


def plain_batched_ascent(model: convscope.Model, layer: str, filters: Sequence[int], steps: int,
                         size: int = DEFAULT_SIZE, seed: int = 0, lr: float = 1 / 255) -> torch.Tensor:
    """The textbook loop (Chollet's: step 1 on the 0..255 pixel scale, i.e. 1/255 here) run on a
    batch, one RMS over the whole batch's gradient, no clipping, from the same start as ``classic``.
    Returns the scores."""
    filters = list(filters)
    pixels = PixelImage(generators(seed, filters, model.device), size, model.device).pixels
    index = torch.tensor(filters)
    with evaluating(model.module), truncated_at(model, layer) as run:
        for _ in range(steps):
            acts = run(pixels, "fp32")
            objective = acts.float()[torch.arange(len(filters)), index].mean(dim=(1, 2))
            (grad,) = torch.autograd.grad(objective.sum(), [pixels])
            with torch.no_grad():
                pixels.add_(lr * grad / (grad.pow(2).mean().sqrt() + 1e-12))
    return score_images(model, layer, pixels.detach(), filters).cpu()
