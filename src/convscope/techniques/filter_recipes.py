"""Filter recipes: how a filter's picture is parameterized, transformed and updated at each step.

A :class:`FilterRecipe` bundles a parameterization (a module whose ``forward()`` returns the batch of
pictures, RGB in [0, 1]), an optional transformation applied every step, an update rule, its
default steps and learning rate, and whether ReLU gradients are redirected. Two are registered:

* ``classic`` (the classic tutorials): the picture is the pixels themselves, started gray plus a
  little noise; each step adds ``lr * g / rms(g)`` with the RMS taken per picture, then clips to [0, 1].
* ``lucid`` (Olah et al. 2017, Distill "Feature Visualization"): the picture is
  ``sigmoid(C @ irfft2(spectrum / f))`` -- Fourier coefficients scaled by 1/frequency and a fixed
  colour-decorrelation matrix C -- optimized with Adam; every step sees it padded, jittered,
  scaled, rotated and jittered again (transformation robustness), and, as in Lucid's renderer,
  ReLU gradients are redirected while a picture has switched a ReLU off everywhere (otherwise a
  filter behind a dead ReLU, e.g. in a depthwise conv, never leaves its gray start).

* ``maco`` (Fel et al., NeurIPS 2023, "MAgnitude Constrained Optimization"; Horama is the authors'
  code): the picture is ``sigmoid(standardize(irfft2(M * exp(i * standardize(phase)))) @ C)`` with
  the magnitude M fixed to natural photos' mean spectrum (:func:`natural_magnitude`) and only the
  phase optimized, by NAdam (lr 1.0 as the authors'); every step sees it transformed as ``lucid``'s,
  and the summed absolute gradient on the picture is kept as its transparency map (where the ascent
  pushed the picture: the authors' attribution-weighted transparency).

* ``accentuate`` (Hamblin et al. 2024, "Feature Accentuation"; faccent is the authors' code): the
  picture starts from a photo (faccent's Fourier parameterization, its exact inverse at the start)
  and is pushed toward the unit by Adam (lr 0.05, as faccent) while staying close to the photo in
  the model's own features: the ascent maximizes ``unit - alpha * beta * D`` with D the mean over
  positions of the Euclidean distance, over channels, between the picture's and the photo's maps at
  a regularization layer (both seen through the same box crops: ``ACCENT_VIEWS`` per step, the unit
  and D averaged over them), and beta the ratio of the two terms' gradient sizes at the first step
  (faccent's balance).

A new recipe is one :class:`FilterRecipe` passed to :func:`register_recipe` (and its test).
Random draws come from one generator per filter (see :func:`generators`), so a filter's picture
does not depend on which other filters share its batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import RECIPE_STEPS
from ..hooks import registered

Generators = Sequence[torch.Generator]
#: An update rule: built from the picture's parameters and the learning rate, then called with the
#: gradient of the objective (to be increased) at every step.
UpdateRule = Callable[[list[nn.Parameter], float], Callable[[torch.Tensor], None]]

# Lucid's colour correlation of ImageNet (square root of its covariance, from an SVD), used to turn
# decorrelated channels into RGB; scaled so that its largest column has norm 1.
_COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MATRIX = _COLOR_CORRELATION / _COLOR_CORRELATION.norm(dim=0).max()


def generators(seed: int, filters: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One generator per filter, seeded by ``seed`` and the filter's index."""
    result = []
    for index in filters:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed * 1_000_003 + index)
        result.append(generator)
    return result


def _per_filter(gens: Generators, draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    return torch.stack([draw(g) for g in gens])


# -- parameterizations --------------------------------------------------------------------------------
class PixelImage(nn.Module):
    """Pixels as parameters: RGB (or gray, ``channels=1``) in [0, 1], started at gray 0.5 plus
    uniform noise of +-0.05."""

    def __init__(self, gens: Generators, size: int, device: torch.device, channels: int = 3) -> None:
        super().__init__()
        noise = _per_filter(gens, lambda g: torch.rand(channels, size, size, generator=g, device=device))
        self.pixels = nn.Parameter(0.5 + (noise - 0.5) * 0.1)

    def forward(self) -> torch.Tensor:
        return self.pixels


class FourierImage(nn.Module):
    """RGB = sigmoid(C @ irfft2(spectrum * scale)): the spectrum scaled by 1/frequency (so all
    frequencies learn at a similar rate) and the colours decorrelated by Lucid's matrix C (for one
    channel, ``channels=1``, there are no colours to decorrelate: C = 1)."""

    def __init__(self, gens: Generators, size: int, device: torch.device, channels: int = 3) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(size, device=device)[:, None]
        fx = torch.fft.rfftfreq(size, device=device)[None, :]
        frequencies = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / size)
        self.register_buffer("scale", 1.0 / frequencies, persistent=False)
        self.size = size
        shape = (channels, size, size // 2 + 1, 2)
        noise = _per_filter(gens, lambda g: torch.randn(*shape, generator=g, device=device))
        self.spectrum = nn.Parameter(noise * 0.01)
        colors = COLOR_MATRIX if channels == 3 else torch.eye(channels)
        self.register_buffer("colors", colors.to(device), persistent=False)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4.0
        rgb = torch.einsum("ij,bjhw->bihw", self.colors, decorrelated)
        return torch.sigmoid(rgb)


# MaCo's colour matrix (Horama's, not scaled): decorrelated x -> RGB as ``rgb_j = sum_i x_i C_ij``.
MACO_COLORS = torch.tensor([[0.56282854, 0.58447580, 0.58447580],
                            [0.19482528, 0.00000000, -0.19482528],
                            [0.04329450, -0.10823626, 0.06494176]])
#: The natural photos whose mean spectrum MaCo's magnitude is (all ship with scikit-image and
#: matplotlib: nothing is downloaded), and the random square crops taken of each.
NATURAL_PHOTOS = ("chelsea", "coffee", "grace_hopper", "astronaut", "rocket", "stereo_motorcycle")
NATURAL_CROPS = 32


def _natural_photo(name: str) -> np.ndarray:
    from ..samples import SAMPLES, sample_array

    if name in SAMPLES:
        return sample_array(name)
    from skimage import data

    photo = getattr(data, name)()
    return np.asarray(photo[0] if isinstance(photo, tuple) else photo)[..., :3]  # a stereo pair: its left view


@functools.lru_cache(maxsize=8)
def natural_magnitude(size: int) -> torch.Tensor:
    """MaCo's fixed magnitude at ``size`` px: the mean ``|rfft2|`` (3 x S x S//2+1) of natural photos
    in MaCo's decorrelated colours -- :data:`NATURAL_CROPS` seeded random square crops (50-100 % of the
    shorter side) of each of :data:`NATURAL_PHOTOS`, resized to S x S (antialiased). The authors'
    is the mean over ImageNet, downloaded at run time; this one is made offline from the photos that
    ship with the installed packages (its shape is the same 1/f-like falloff)."""
    generator = torch.Generator().manual_seed(0)
    to_decorrelated = torch.linalg.inv(MACO_COLORS.double()).float()
    total = torch.zeros(3, size, size // 2 + 1)
    for name in NATURAL_PHOTOS:
        photo = torch.from_numpy(_natural_photo(name).copy()).permute(2, 0, 1).float() / 255.0
        height, width = photo.shape[1:]
        shorter = min(height, width)
        for _ in range(NATURAL_CROPS):
            side = int(shorter * (0.5 + 0.5 * torch.rand(1, generator=generator).item()))
            top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
            crop = F.interpolate(photo[None, :, top:top + side, left:left + side], size=(size, size),
                                 mode="bilinear", antialias=True, align_corners=False)[0]
            decorrelated = torch.einsum("ji,jhw->ihw", to_decorrelated, crop)
            total += torch.fft.rfft2(decorrelated).abs()
    return total / (len(NATURAL_PHOTOS) * NATURAL_CROPS)


def _standardized(values: torch.Tensor) -> torch.Tensor:
    """Each picture's values (dim 0: pictures) less their mean, over their std (+ 1e-4), as Horama's."""
    flat = values.flatten(1)
    shape = (-1, *[1] * (values.dim() - 1))
    return (values - flat.mean(dim=1).view(shape)) / (flat.std(dim=1).view(shape) + 1e-4)


class MacoImage(nn.Module):
    """RGB = sigmoid(standardize(irfft2(M exp(i standardize(phase)))) @ C): the magnitude M fixed
    (:func:`natural_magnitude`), the phase the only parameter (drawn N(0, 1) per picture), C MaCo's
    colour matrix (one channel, ``channels=1``: the first decorrelated channel, C = 1)."""

    def __init__(self, gens: Generators, size: int, device: torch.device, channels: int = 3) -> None:
        super().__init__()
        self.size = size
        shape = (channels, size, size // 2 + 1)
        self.phase = nn.Parameter(_per_filter(gens, lambda g: torch.randn(*shape, generator=g, device=device)))
        self.register_buffer("magnitude", natural_magnitude(size)[:channels].to(device), persistent=False)
        colors = MACO_COLORS if channels == 3 else torch.eye(channels)
        self.register_buffer("colors", colors.to(device), persistent=False)

    def forward(self) -> torch.Tensor:
        spectrum = torch.polar(self.magnitude.expand_as(self.phase), _standardized(self.phase))
        spatial = _standardized(torch.fft.irfft2(spectrum, s=(self.size, self.size)))
        return torch.sigmoid(torch.einsum("ij,bihw->bjhw", self.colors, spatial))


class PhotoImage(nn.Module):
    """Feature accentuation's picture (faccent's Fourier parameterization): RGB =
    sigmoid((irfft2(spectrum * scale) / 5) @ C), C MaCo's (Lucid's unscaled) colour matrix, the
    spectrum scaled by 1/frequency; started from the photo (``start``, 3 x S x S in [0, 1]) by the exact
    inverse, ``spectrum = rfft2(5 * logit(photo) @ C^-1) / scale`` (orthonormal FFTs), so the first
    picture is the photo. No randomness: ``gens`` only count the pictures."""

    def __init__(self, gens: Generators, size: int, device: torch.device, channels: int = 3,
                 start: torch.Tensor | None = None) -> None:
        super().__init__()
        if start is None:
            raise ValueError("PhotoImage needs the photo it starts from")
        fy = torch.fft.fftfreq(size, device=device)[:, None]
        fx = torch.fft.rfftfreq(size, device=device)[None, :]
        self.register_buffer("scale", 1.0 / torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / size), persistent=False)
        self.size = size
        colors = MACO_COLORS if channels == 3 else torch.eye(channels)
        self.register_buffer("colors", colors.to(device), persistent=False)
        photo = start.to(device, torch.float32).clamp(1e-6, 1 - 1e-6)[:channels]
        signal = torch.einsum("jhw,ji->ihw", torch.logit(photo), torch.linalg.inv(self.colors.double()).float())
        spectrum = torch.fft.rfft2(PHOTO_DESATURATION * signal, norm="ortho") / self.scale
        self.spectrum = nn.Parameter(torch.view_as_real(spectrum)[None].repeat(len(gens), 1, 1, 1, 1).contiguous())

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        signal = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / PHOTO_DESATURATION
        return torch.sigmoid(torch.einsum("bihw,ij->bjhw", signal, self.colors))


#: faccent's desaturation: the photo's decorrelated logits are scaled by this in the parameters.
PHOTO_DESATURATION = 5.0


# -- transformation robustness ------------------------------------------------------------------------
def random_transform(images: torch.Tensor, gens: Generators) -> torch.Tensor:
    """Transformation robustness, one draw per picture from its own generator, as Lucid's standard
    transforms for a 128 px picture (in proportion for other sizes): pad 12 px with gray, jitter
    (a random crop) by 8 px, scale by 0.9-1.1, rotate by -10..10 degrees, jitter by 4 px. Applied as
    one bilinear affine resampling straight from the picture: the output is ``S + 24 - 12`` px and
    whatever falls outside the picture is gray. The draws stay on the device (no synchronization)."""
    return _transformed(images, _transform_draws(gens, images.device))


#: Accentuation's box crops: views per picture and step, and the side of a crop as a share of the
#: picture's (faccent's ``box_crop_2``: 0.05 .. 0.99). faccent takes 16 views; measured on the
#: default model (2 class logits from the ``chelsea`` photo, 128 px, 64 steps, alpha 0.1), 4 views
#: reach logits 48 and 54 in 3.7 s a picture, 16 views 57 and 60 in 22 s (faccent: 54 and 60 in 34 s).
ACCENT_VIEWS = 4
CROP_SIDES = (0.05, 0.99)
#: The noise added to every crop (faccent's ``uniform_gaussian_noise``): Gaussian std and uniform width.
CROP_NOISE = 0.02


def paired_box_crops(images: torch.Tensor, gens: Generators, views: int = ACCENT_VIEWS) -> torch.Tensor:
    """Feature accentuation's transform (faccent's box crops): 2B pictures, the B pictures first and
    then their B photos, -> 2 x B x ``views`` crops at the pictures' size: each a square of side
    U(:data:`CROP_SIDES`) of the picture's, placed uniformly inside it, resized (bilinear), plus
    Gaussian (std :data:`CROP_NOISE`) and uniform (width :data:`CROP_NOISE`) noise. Picture i's
    crops come first (``views`` in a row), then the photos'; item i's photo shares its boxes and noise.
    The draws come from generator i."""
    size = images.shape[-1]
    low, high = CROP_SIDES
    boxes, noise = [], []
    for g in gens:
        draws = torch.rand(views, 3, generator=g, device=g.device)
        boxes.append(draws)
        normal = torch.randn(views, images.shape[1], size, size, generator=g, device=g.device) * CROP_NOISE
        uniform = (torch.rand(views, images.shape[1], size, size, generator=g, device=g.device) - 0.5) * CROP_NOISE
        noise.append(normal + uniform)
    draws = torch.stack(boxes).to(images.device).flatten(0, 1).double()  # B x views rows: side, x, y
    side = low + (high - low) * draws[:, 0]
    centre_x, centre_y = (1 - side) * draws[:, 1] + side / 2, (1 - side) * draws[:, 2] + side / 2
    zeros = torch.zeros_like(side)
    theta = torch.stack([torch.stack([side, zeros, 2 * centre_x - 1], dim=1),
                         torch.stack([zeros, side, 2 * centre_y - 1], dim=1)], dim=1).to(images.dtype)
    theta = torch.cat([theta, theta])
    grid = F.affine_grid(theta, [len(theta), images.shape[1], size, size], align_corners=False)
    repeated = images.repeat_interleave(views, dim=0)
    crops = F.grid_sample(repeated, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return crops + torch.cat([torch.cat(noise)] * 2).to(images.device, images.dtype)


def _transform_draws(gens: Generators, device: torch.device) -> torch.Tensor:
    return torch.stack([torch.rand(6, generator=g, device=g.device) for g in gens]).to(device).double()


def _transformed(images: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    picture = images.shape[-1]
    pad, jitter, fine = (max(1, round(picture * amount / 128)) for amount in (12, 8, 4))
    out = picture + 2 * pad - jitter - fine
    ratio = out / picture  # the output grid spans this many picture widths
    scale = 0.9 + 0.2 * draws[:, 0]
    angle = (-10 + 20 * draws[:, 1]) * (math.pi / 180.0)
    shift_x = (torch.round(jitter * (draws[:, 2] - 0.5)) + torch.round(fine * (draws[:, 3] - 0.5))) * 2.0 / picture
    shift_y = (torch.round(jitter * (draws[:, 4] - 0.5)) + torch.round(fine * (draws[:, 5] - 0.5))) * 2.0 / picture
    cos, sin = torch.cos(angle) / scale * ratio, torch.sin(angle) / scale * ratio
    theta = torch.stack([torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(images.dtype), [images.shape[0], images.shape[1], out, out], align_corners=False)
    return F.grid_sample(images - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


# -- redirected ReLU gradients (Lucid's relu_gradient_override) ---------------------------------------
class _RedirectedClamp(torch.autograd.Function):
    """The ReLU output ``y = clamp(x, 0, upper)`` (computed by the module, passed in detached) with a
    backward to ``x`` that, for a picture whose ordinary gradient through this ReLU is all zero
    (every unit dead), also passes the gradient where it pushes ``x`` back into the active range --
    so optimization can start from inputs that switch a ReLU off everywhere."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor, upper: float | None) -> torch.Tensor:
        ctx.save_for_backward(y)
        ctx.upper = upper
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (y,) = ctx.saved_tensors  # y > 0 exactly where x > 0, y < upper exactly where x < upper
        if ctx.upper is None:
            result = torch.ops.aten.threshold_backward(grad, y, 0)  # the ordinary ReLU gradient, fused
        else:
            result = torch.ops.aten.hardtanh_backward(grad, y, 0.0, ctx.upper)
        dead = torch.nonzero(result.abs().amax(dim=tuple(range(1, grad.dim()))) == 0).flatten()
        if dead.numel():
            y_dead, grad_dead = y[dead], grad[dead]
            active = y_dead > 0 if ctx.upper is None else (y_dead > 0) & (y_dead < ctx.upper)
            toward = (y_dead <= 0) & (grad_dead > 0)  # grad is d(objective)/dy: > 0 asks for a larger x
            if ctx.upper is not None:
                toward |= (y_dead >= ctx.upper) & (grad_dead < 0)
            result[dead] = grad_dead * (active | toward)
        return result, None, None


def _relu_upper(module: nn.Module) -> tuple[bool, float | None]:
    if isinstance(module, nn.ReLU):
        return True, None
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh) and module.min_val == 0):
        return True, float(module.max_val)
    return False, None


@contextmanager
def redirected_relus(root: nn.Module) -> Iterator[None]:
    """Inside the block, every ``nn.ReLU``/``nn.ReLU6`` module of ``root`` back-propagates redirected
    gradients (see :class:`_RedirectedClamp`); forward values are unchanged. Hooks removed on exit."""
    inputs_seen: dict[int, list[torch.Tensor]] = {}

    def pre_hook(module: nn.Module, inputs: tuple) -> tuple | None:
        inputs_seen.setdefault(id(module), []).append(inputs[0])
        if getattr(module, "inplace", False):
            return (inputs[0].clone(),)  # the in-place op must not overwrite the saved input
        return None

    def post_hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs_seen[id(module)].pop()
        return _RedirectedClamp.apply(x, output.detach(), _relu_upper(module)[1])

    relus = [module for module in root.modules() if _relu_upper(module)[0]]
    with registered(forward=[(m, post_hook) for m in relus], pre=[(m, pre_hook) for m in relus]):
        yield


# -- update rules -------------------------------------------------------------------------------------
def _optimizer_ascent(optimizer_class: type[torch.optim.Optimizer]) -> UpdateRule:
    """An update rule running ``optimizer_class`` on the (single) picture parameter, ascending the
    objective (the optimizer minimizes: it is handed the negated gradient)."""
    def rule(parameters: list[nn.Parameter], lr: float) -> Callable[[torch.Tensor], None]:
        optimizer = optimizer_class(parameters, lr=lr)

        def step(grad: torch.Tensor) -> None:
            parameters[0].grad = -grad
            optimizer.step()
            parameters[0].grad = None
        return step
    return rule


#: Adam (Lucid's and faccent's optimizer) and NAdam (MaCo's) on the picture parameter.
adam_ascent = _optimizer_ascent(torch.optim.Adam)
nadam_ascent = _optimizer_ascent(torch.optim.NAdam)


def rms_ascent(parameters: list[nn.Parameter], lr: float) -> Callable[[torch.Tensor], None]:
    """``p += lr * g / rms(g)`` with the RMS per picture, then clip to [0, 1] (pixel parameters)."""
    def step(grad: torch.Tensor) -> None:
        rms = grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        parameters[0].add_(lr * grad / (rms + 1e-12)).clamp_(0.0, 1.0)
    return step


# -- the registry ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FilterRecipe:
    """How pictures are made: ``picture(generators, size, device, channels)`` builds the parameterization
    (``start=photo`` too for a recipe ``from_photo``),
    ``transform(pictures, generators)`` (or None) is applied before every step, ``update`` is the
    update rule; ``default_steps``, ``default_lr``, whether ReLU gradients are redirected and
    whether a transparency map is kept."""

    name: str
    picture: Callable[..., nn.Module]
    transform: Callable[[torch.Tensor, Generators], torch.Tensor] | None
    update: UpdateRule
    default_steps: int
    default_lr: float
    redirect_relus: bool = False
    #: Whether the ascent keeps a transparency map (the summed absolute gradient on the picture).
    transparency: bool = False
    #: Whether the picture starts from a photo (``picture(..., start=photo)``) and stays close to it
    #: in the model's features (see :mod:`convscope.techniques.filters`); its ``transform`` then takes
    #: the pictures followed by their photos (:func:`paired_box_crops`) and gives ``views`` of each.
    from_photo: bool = False
    views: int = 1


#: Every recipe by name; the first is the default.
RECIPES: dict[str, FilterRecipe] = {}


def register_recipe(recipe: FilterRecipe) -> FilterRecipe:
    """Add ``recipe`` to :data:`RECIPES` under its name."""
    RECIPES[recipe.name] = recipe
    return recipe


# Defaults sized so that ``convscope filters`` on the default model (5 layers, 288 filters) takes
# about a minute on a 2-core CPU; use more steps and a larger size for better pictures.
register_recipe(FilterRecipe("lucid", FourierImage, random_transform, adam_ascent, default_steps=RECIPE_STEPS["lucid"],
                             default_lr=0.05, redirect_relus=True))
register_recipe(FilterRecipe("classic", PixelImage, None, rms_ascent, default_steps=RECIPE_STEPS["classic"],
                             default_lr=0.01))
register_recipe(FilterRecipe("accentuate", PhotoImage, paired_box_crops, adam_ascent,
                             default_steps=RECIPE_STEPS["accentuate"], default_lr=0.05, from_photo=True,
                             views=ACCENT_VIEWS))
register_recipe(FilterRecipe("maco", MacoImage, random_transform, nadam_ascent, default_steps=RECIPE_STEPS["maco"],
                             default_lr=1.0, redirect_relus=True, transparency=True))
