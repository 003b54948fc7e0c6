"""Filter recipes' parameterizations, by hand: MaCo's magnitude stays the fixed spectrum after every
step and its picture is the stated formula; the transparency is the summed absolute gradient."""

from __future__ import annotations

import torch

from convscope.hooks import evaluating
from convscope.techniques.filter_recipes import (
    MACO_COLORS,
    RECIPES,
    MacoImage,
    generators,
    nadam_ascent,
    natural_magnitude,
    random_transform,
)
from convscope.techniques.filters import optimize_filters, truncated_at
from convscope.techniques.units import unit_values


def _decorrelated(rgb: torch.Tensor) -> torch.Tensor:
    """The picture's signal before the sigmoid and MaCo's colour matrix: logit(rgb) @ C^-1."""
    logits = torch.logit(rgb.double())
    return torch.einsum("bjhw,ji->bihw", logits, torch.linalg.inv(MACO_COLORS.double()))


def test_maco_picture_is_the_formula():
    size = 16
    picture = MacoImage(generators(0, [3, 5], torch.device("cpu")), size, torch.device("cpu"))
    phase, magnitude = picture.phase.detach().double(), natural_magnitude(size).double()
    standardized = []
    for p in phase:  # each picture on its own: (p - mean) / (std + 1e-4)
        standardized.append((p - p.mean()) / (p.std() + 1e-4))
    spectrum = torch.stack(standardized)
    spatial = torch.fft.irfft2(magnitude * torch.exp(1j * spectrum), s=(size, size))
    spatial = torch.stack([(s - s.mean()) / (s.std() + 1e-4) for s in spatial])
    expected = torch.sigmoid(torch.einsum("bihw,ij->bjhw", spatial, MACO_COLORS.double()))
    torch.testing.assert_close(picture().double(), expected, rtol=1e-5, atol=1e-6)


def test_maco_magnitude_is_fixed_after_every_step(tiny_model):
    size = 16
    gens = generators(0, [0, 1, 2], torch.device("cpu"))
    picture = MacoImage(gens, size, torch.device("cpu"))
    update = nadam_ascent(list(picture.parameters()), 1.0)
    magnitude = natural_magnitude(size).double()
    inner = slice(1, size // 2)  # the rfft columns that are not their own conjugates
    with truncated_at(tiny_model, "conv2") as run:
        for _ in range(5):
            rgb = picture()
            value = unit_values(run(random_transform(rgb, gens), "fp32"), [0, 1, 2])
            (grad,) = torch.autograd.grad(value.sum(), [picture.phase])
            with torch.no_grad():
                update(grad)
                spectrum = torch.fft.rfft2(_decorrelated(picture()))[..., inner].abs()
            ratio = spectrum / magnitude[..., inner]
            # one scale per picture (the standardization), the same at every frequency and colour
            scale = ratio.flatten(1).mean(dim=1).view(-1, 1, 1, 1)
            torch.testing.assert_close(ratio, scale.expand_as(ratio), rtol=1e-4, atol=0)


def test_natural_magnitude_falls_off_with_frequency():
    magnitude = natural_magnitude(32)
    assert magnitude.shape == (3, 32, 17) and (magnitude > 0).all()
    low, middle, high = magnitude[:, 1:3, 1:3].mean(), magnitude[:, 6:10, 6:10].mean(), magnitude[:, 14:18, 14:].mean()
    assert low > 3 * middle > 9 * high  # the 1/f falloff of natural images
    assert torch.equal(natural_magnitude(32), magnitude)  # made once, deterministic


def test_maco_transparency_is_the_summed_absolute_gradient(tiny_model):
    recipe = RECIPES["maco"]
    result = optimize_filters(tiny_model, "conv2", [4], steps=1, size=16, method="maco", precision="fp32")
    gens = generators(0, [4], torch.device("cpu"))  # the same draws: the start, then the transform
    picture = recipe.picture(gens, 16, torch.device("cpu"), 3)
    with evaluating(tiny_model.module), truncated_at(tiny_model, "conv2") as run:
        rgb = picture()
        value = unit_values(run(recipe.transform(rgb, gens), "fp32"), [4])
        (grad,) = torch.autograd.grad(value.sum(), [rgb])
    pushed = grad.abs().sum(dim=1)
    torch.testing.assert_close(result.transparency, pushed / pushed.amax(), rtol=1e-5, atol=1e-6)
    assert optimize_filters(tiny_model, "conv2", [4], steps=1, size=16).transparency is None  # lucid keeps none
