"""Filter recipes' parameterizations, by hand: MaCo's magnitude stays the fixed spectrum after every
step and its picture is the stated formula; the transparency is the summed absolute gradient;
accentuation starts at its photo, and its distance and balance are the stated ones."""

from __future__ import annotations

import pytest
import torch

from convscope.hooks import evaluating
from convscope.techniques.filter_recipes import (
    ACCENT_VIEWS,
    MACO_COLORS,
    RECIPES,
    MacoImage,
    PhotoImage,
    generators,
    nadam_ascent,
    natural_magnitude,
    paired_box_crops,
    random_transform,
)
from convscope.techniques.filters import optimize_filters, score_images, truncated_at
from convscope.techniques.units import unit_values


def _decorrelated(rgb: torch.Tensor) -> torch.Tensor:
    """The picture's signal before the sigmoid and MaCo's colour matrix: logit(rgb) @ C^-1."""
    logits = torch.logit(rgb.double())
    return torch.einsum("bjhw,ji->bihw", logits, torch.linalg.inv(MACO_COLORS.double()))


def test_lucid_picture_is_the_formula():
    from convscope.techniques.filter_recipes import COLOR_MATRIX, FourierImage

    size = 8
    picture = FourierImage(generators(0, [1, 2], torch.device("cpu")), size, torch.device("cpu"))
    spectrum = torch.view_as_complex(picture.spectrum.detach().double())
    fy, fx = torch.fft.fftfreq(size)[:, None], torch.fft.rfftfreq(size)[None, :]
    scale = 1.0 / torch.sqrt(fx * fx + fy * fy).clamp(min=1 / size)  # 1/f, the constant term at 1/size
    spatial = torch.fft.irfft2(spectrum * scale, s=(size, size), norm="ortho") / 4.0
    expected = torch.sigmoid(torch.einsum("ij,bjhw->bihw", COLOR_MATRIX.double(), spatial))
    torch.testing.assert_close(picture().double(), expected, rtol=1e-5, atol=1e-6)
    assert COLOR_MATRIX.norm(dim=0).max() == pytest.approx(1.0)  # Lucid's matrix, its largest column norm 1


def test_classic_picture_and_step_by_hand():
    from convscope.techniques.filter_recipes import PixelImage, rms_ascent

    gens = generators(0, [3], torch.device("cpu"))
    picture = PixelImage(gens, 4, torch.device("cpu"))
    start = picture().detach().clone()
    noise = torch.rand(3, 4, 4, generator=generators(0, [3], torch.device("cpu"))[0])
    torch.testing.assert_close(start[0], 0.5 + (noise - 0.5) * 0.1)  # gray plus +-0.05 of uniform noise
    grad = torch.randn(1, 3, 4, 4)
    with torch.no_grad():  # as the ascent runs it
        rms_ascent(list(picture.parameters()), 0.01)(grad)
    torch.testing.assert_close(picture(), (start + 0.01 * grad / grad.pow(2).mean().sqrt()).clamp(0, 1))


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


def test_box_crops_share_their_boxes_and_noise_with_the_photo():
    pictures = torch.rand(2, 3, 16, 16)
    whole = torch.cat([pictures, pictures])  # the photos equal the pictures: every crop pair equal
    crops = paired_box_crops(whole, generators(0, [1, 2], torch.device("cpu")), 3)
    torch.testing.assert_close(crops[:6], crops[6:])
    still = paired_box_crops(torch.full((4, 3, 16, 16), 0.5), generators(0, [1, 2], torch.device("cpu")), 3)
    assert (still - 0.5).abs().max() <= 0.02 * 6 and (still - 0.5).std() == pytest.approx(0.02 * 1.04, rel=0.1)


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


# -- accentuation ---------------------------------------------------------------------------------------------
def _photo(size: int = 16) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, size, size) * 0.8 + 0.1


def test_accentuation_starts_at_the_photo_and_is_the_formula():
    photo = _photo()
    picture = PhotoImage(generators(0, [0, 1], torch.device("cpu")), 16, torch.device("cpu"), start=photo)
    torch.testing.assert_close(picture(), photo.expand(2, -1, -1, -1), rtol=0, atol=2e-5)
    # the parameters are the spectrum of 5 * logit(photo) @ C^-1 over the 1/f scale
    signal = torch.einsum("jhw,ji->ihw", torch.logit(photo.double()), torch.linalg.inv(MACO_COLORS.double()))
    fy, fx = torch.fft.fftfreq(16)[:, None], torch.fft.rfftfreq(16)[None, :]
    scale = 1.0 / torch.sqrt(fx * fx + fy * fy).clamp(min=1 / 16)
    expected = torch.fft.rfft2(5.0 * signal, norm="ortho") / scale
    torch.testing.assert_close(torch.view_as_complex(picture.spectrum[0].double()), expected, rtol=1e-4, atol=1e-4)


def test_accentuation_distance_and_balance_by_hand(tiny_model):
    from convscope.techniques.filters import Ascent, _balance, _terms

    photo = _photo()
    ascent = Ascent("conv2", "accentuate", 3, 16, photo=photo, reg_layer="conv1")
    gens = generators(0, [2, 5], torch.device("cpu"))
    picture = PhotoImage(gens, 16, torch.device("cpu"), start=photo)
    with torch.no_grad():
        picture.spectrum.add_(0.3 * torch.randn_like(picture.spectrum))  # away from the photo
    kept = ascent.kept_layer(tiny_model)
    assert kept.name == "conv1"
    states = [g.get_state() for g in gens]
    with evaluating(tiny_model.module), truncated_at(tiny_model, "conv2", kept) as run:
        terms = _terms(run, picture, gens, ascent, [2, 5], "fp32")
        for g, state in zip(gens, states):
            g.set_state(state)
        balance = _balance(run, picture, gens, ascent, [2, 5], "fp32")
        # by hand: both through the same draws, conv1's maps compared position by position
        for g, state in zip(gens, states):
            g.set_state(state)
        rgb = picture()
        views = ACCENT_VIEWS
        seen = paired_box_crops(torch.cat([rgb, photo.expand_as(rgb)]), gens, views)
        assert seen.shape == (2 * 2 * views, 3, 16, 16)
        conv1 = tiny_model.module.conv1(tiny_model.preprocessing.normalize(seen))
        conv2 = tiny_model.module.bn(tiny_model.module.conv2(tiny_model.module.pool(tiny_model.module.relu1(
            conv1.clone()))))
        # picture i's views are rows i*views ..; its photo's the same rows after the pictures' 2*views
        distance = [sum((conv1[i * views + v] - conv1[2 * views + i * views + v]).pow(2).sum(dim=0).sqrt().mean()
                        for v in range(views)) / views for i in range(2)]
        unit = [sum(conv2[i * views + v, c].mean() for v in range(views)) / views for i, c in ((0, 2), (1, 5))]
    torch.testing.assert_close(terms.distances, torch.stack(distance).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.values, torch.stack(unit).detach(), rtol=1e-5, atol=1e-6)
    grads = [torch.autograd.grad(sum(terms_), [picture.spectrum], retain_graph=True)[0]
             for terms_ in (unit, distance)]
    expected = [0.1 * grads[0][i].abs().sum() / grads[1][i].abs().sum() for i in range(2)]
    torch.testing.assert_close(balance, torch.stack(expected), rtol=1e-4, atol=0)


def test_accentuation_raises_the_unit_and_stays_near_the_photo(tiny_model):
    import convscope.techniques.filters as filters

    photo = _photo()
    held = optimize_filters(tiny_model, "conv2", [1, 3], steps=12, size=16, method="accentuate", photo=photo,
                            precision="fp32")
    assert (held.scores > held.initial_scores).all()
    torch.testing.assert_close(held.initial_scores, score_images(tiny_model, "conv2", photo.expand(2, -1, -1, -1),
                                                                 [1, 3]))  # it starts at the photo
    alpha = filters.ACCENTUATION_ALPHA
    try:
        filters.ACCENTUATION_ALPHA = 0.0  # the same ascent, free to leave the photo
        free = optimize_filters(tiny_model, "conv2", [1, 3], steps=12, size=16, method="accentuate", photo=photo,
                            precision="fp32")
    finally:
        filters.ACCENTUATION_ALPHA = alpha
    assert (held.images - photo).abs().mean() < (free.images - photo).abs().mean()
