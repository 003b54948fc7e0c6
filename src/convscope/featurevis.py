"""Filters: what each filter responds to, by gradient ascent in input space.

Each requested filter of a conv layer gets its own picture, all optimized together in one batch
(item i maximizes filter i) with the forward pass stopped at the target layer. The objective and
the *score* of a filter are the spatial mean of its **pre-activation** (the conv's output, or the
BatchNorm right after it, before the nonlinearity), so no filter starts stuck at a dead ReLU.

Two methods:

* ``classic`` (the classic tutorials): the picture is the pixels themselves, RGB in [0, 1],
  started gray plus a little noise; each step adds ``lr * g / rms(g)`` with the RMS taken per
  picture, then clips to [0, 1].
* ``lucid`` (Olah et al. 2017, Distill "Feature Visualization"): the picture is
  ``sigmoid(C @ irfft2(spectrum / f))`` -- Fourier coefficients scaled by 1/frequency and a fixed
  colour-decorrelation matrix C -- optimized with Adam; every step sees it padded, jittered,
  scaled, rotated and jittered again (transformation robustness), and, as in Lucid's renderer,
  ReLU gradients are redirected while a picture has switched a ReLU off everywhere (otherwise a
  filter behind a dead ReLU, e.g. in a depthwise conv, never leaves its gray start).

Random draws (start noise, transforms) come from one generator per filter, seeded by the seed
and the filter index, so a filter's picture does not depend on which other filters share its batch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .hooks import StopForward, evaluating
from .intermediate import CONV_TYPES, as_model
from .model import Model
from .precision import autocast, prepare_input, resolve_precision

METHODS = ("lucid", "classic")
DEFAULT_FILTERS = 64
#: Filters optimized together in one batch.
FILTER_BATCH = 64
#: Defaults sized so that ``convscope filters`` on the default model (5 layers, 288 filters) takes
#: about a minute on a 2-core CPU; use more steps and a larger size for better pictures.
DEFAULT_STEPS = {"lucid": 64, "classic": 40}
DEFAULT_SIZE = 64
MIN_SIZE, MAX_SIZE = 16, 1024

# Lucid's colour correlation of ImageNet (square root of its covariance, from an SVD), used to turn
# decorrelated channels into RGB; scaled so that its largest column has norm 1.
_COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MATRIX = _COLOR_CORRELATION / _COLOR_CORRELATION.norm(dim=0).max()


# -- which filters, which layers -------------------------------------------------------------------
def parse_filter_spec(spec: str | int | Sequence[int] | None, channels: int) -> list[int]:
    """Filter indices from a spec: None (the first 64, or all if fewer), a count ``"16"`` (the first
    16), or indices and ranges ``"0-15,32"``; a list of ints is taken as indices. Errors before work."""
    if spec is None:
        return list(range(min(DEFAULT_FILTERS, channels)))
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        indices = [int(i) for i in spec]
        if not indices:
            raise InputError("--filters: empty filter list")
        return _check_indices(indices, channels, str(list(spec)))
    text = spec.strip()
    if not text:
        raise InputError("--filters: empty filter spec")
    if re.fullmatch(r"-\d+", text):
        raise InputError(f"--filters {text}: negative count")
    if re.fullmatch(r"\d+", text):
        count = int(text)
        if count < 1:
            raise InputError(f"--filters {text}: the count must be at least 1")
        if count > channels:
            raise InputError(f"--filters {text}: the layer has only {channels} filters")
        return list(range(count))
    indices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise InputError(f"--filters {spec!r}: {part!r} is not an index or a range like 0-15 "
                             "(indices are 0 or more)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise InputError(f"--filters {spec!r}: empty range {part!r}")
        indices.extend(i for i in range(first, last + 1) if i not in indices)
    return _check_indices(indices, channels, spec)


def _check_indices(indices: list[int], channels: int, spec: str) -> list[int]:
    bad = [i for i in indices if not 0 <= i < channels]
    if bad:
        raise InputError(f"--filters {spec}: filter {bad[0]} is out of range (the layer has {channels} filters, 0-{channels - 1})")
    return indices


def _is_conv_layer(model: Model, name: str) -> bool:
    aliases = {alias.name: alias for alias in model.aliases}
    if name in aliases:
        return aliases[name].type == "Conv2d"
    return isinstance(model.module.get_submodule(model.layer(name).module), CONV_TYPES)


def default_filter_layers(model: Model) -> list[str]:
    """The first convolution of each block: the first conv layer, then each conv whose output
    resolution differs from the previous conv's (VGG: block1_conv1 ... block5_conv1)."""
    names = set(alias.name for alias in model.aliases)
    chosen, previous = [], None
    for layer in model.layers():
        if model.aliases and layer.name not in names:
            continue
        if not layer.is_spatial or not _is_conv_layer(model, layer.name):
            continue
        resolution = layer.shape[1:]
        if resolution != previous:
            chosen.append(layer.name)
        previous = resolution
    return chosen


def preactivation_path(model: Model, layer: str) -> str:
    """Module path of a conv layer's pre-activation: the conv itself (for an alias, the conv it is
    named after), or the BatchNorm that directly follows it in the forward pass."""
    if not _is_conv_layer(model, layer):
        raise InputError(f"--layers: {layer} is not a convolution layer (filters are drawn for conv layers)")
    aliases = {alias.name: alias for alias in model.aliases}
    conv = aliases[layer].source if layer in aliases else model.layer(layer).module
    modules = [info.module for info in model.all_layers() if info.name == info.module]
    position = modules.index(conv)
    if position + 1 < len(modules):
        following = model.module.get_submodule(modules[position + 1])
        conv_module = model.module.get_submodule(conv)
        if isinstance(following, nn.modules.batchnorm._BatchNorm) and \
                following.num_features == conv_module.out_channels:
            return modules[position + 1]
    return conv


# -- parameterizations ----------------------------------------------------------------------------
def _generators(seed: int, filters: Sequence[int], device: torch.device) -> list[torch.Generator]:
    generators = []
    for index in filters:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed * 1_000_003 + index)
        generators.append(generator)
    return generators


def _per_filter(generators: Sequence[torch.Generator], draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    return torch.stack([draw(g) for g in generators])


class PixelImage(nn.Module):
    """Pixels as parameters: RGB in [0, 1], started at gray 0.5 plus uniform noise of +-0.05."""

    def __init__(self, generators: Sequence[torch.Generator], size: int, device: torch.device) -> None:
        super().__init__()
        noise = _per_filter(generators, lambda g: torch.rand(3, size, size, generator=g, device=device))
        self.pixels = nn.Parameter(0.5 + (noise - 0.5) * 0.1)

    def forward(self) -> torch.Tensor:
        return self.pixels


class FourierImage(nn.Module):
    """RGB = sigmoid(C @ irfft2(spectrum * scale)): the spectrum scaled by 1/frequency (so all
    frequencies learn at a similar rate) and the colours decorrelated by Lucid's matrix C."""

    def __init__(self, generators: Sequence[torch.Generator], size: int, device: torch.device) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(size, device=device)[:, None]
        fx = torch.fft.rfftfreq(size, device=device)[None, :]
        frequencies = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / size)
        self.register_buffer("scale", 1.0 / frequencies, persistent=False)
        self.size = size
        shape = (3, size, size // 2 + 1, 2)
        self.spectrum = nn.Parameter(
            _per_filter(generators, lambda g: torch.randn(*shape, generator=g, device=device)) * 0.01)
        self.register_buffer("colors", COLOR_MATRIX.to(device), persistent=False)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        decorrelated = torch.fft.irfft2(spectrum, s=(self.size, self.size), norm="ortho") / 4.0
        rgb = torch.einsum("ij,bjhw->bihw", self.colors, decorrelated)
        return torch.sigmoid(rgb)


def random_transform(images: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Transformation robustness, one draw per picture from its own generator, as Lucid's standard
    transforms for a 128 px picture (in proportion for other sizes): pad 12 px with gray, jitter
    (a random crop) by 8 px, scale by 0.9-1.1, rotate by -10..10 degrees, jitter by 4 px. Applied as
    one bilinear affine resampling straight from the picture: the output is ``S + 24 - 12`` px and
    whatever falls outside the picture is gray."""
    picture = images.shape[-1]
    pad, jitter, fine = (max(1, round(picture * amount / 128)) for amount in (12, 8, 4))
    out = picture + 2 * pad - jitter - fine
    ratio = out / picture  # the output grid spans this many picture widths
    thetas = []
    for g in generators:
        draws = torch.rand(6, generator=g, device=g.device).cpu().tolist()
        scale = 0.9 + 0.2 * draws[0]
        angle = math.radians(-10 + 20 * draws[1])
        shift_x = (round(jitter * (draws[2] - 0.5)) + round(fine * (draws[3] - 0.5))) * 2.0 / picture
        shift_y = (round(jitter * (draws[4] - 0.5)) + round(fine * (draws[5] - 0.5))) * 2.0 / picture
        cos, sin = math.cos(angle) / scale * ratio, math.sin(angle) / scale * ratio
        thetas.append([[cos, -sin, shift_x], [sin, cos, shift_y]])
    theta = torch.tensor(thetas, dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, [images.shape[0], 3, out, out], align_corners=False)
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
    handles = []
    inputs_seen: dict[int, list[torch.Tensor]] = {}

    def pre_hook(module: nn.Module, inputs: tuple) -> tuple | None:
        inputs_seen.setdefault(id(module), []).append(inputs[0])
        if getattr(module, "inplace", False):
            return (inputs[0].clone(),)  # the in-place op must not overwrite the saved input
        return None

    def post_hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs_seen[id(module)].pop()
        return _RedirectedClamp.apply(x, output.detach(), _relu_upper(module)[1])

    try:
        for module in root.modules():
            if _relu_upper(module)[0]:
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(post_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


# -- the optimization ------------------------------------------------------------------------------
def _preactivation(model: Model, module: nn.Module, rgb: torch.Tensor, precision: str) -> torch.Tensor:
    """Run the model on pictures (RGB in [0, 1]) until ``module`` and return its output (B x C x h x w)."""
    held: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        held["out"] = output
        raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        with autocast(model.device, precision):
            model.module(prepare_input(model.preprocessing.normalize(rgb), precision))
    except StopForward:
        pass
    finally:
        handle.remove()
    if "out" not in held:
        raise InputError("the target layer did not run in the forward pass")
    return held["out"]


def _channel_means(acts: torch.Tensor, filters: Sequence[int]) -> torch.Tensor:
    """Item i's mean of channel filters[i], in fp32."""
    index = torch.tensor(list(filters), device=acts.device)
    return acts.float()[torch.arange(len(filters), device=acts.device), index].mean(dim=(1, 2))


def score_images(model: Model, layer: str, images: torch.Tensor, filters: Sequence[int]) -> torch.Tensor:
    """The score of each picture: the fp32 mean of its filter's pre-activation (no transforms)."""
    model = as_model(model)
    module = model.module.get_submodule(preactivation_path(model, layer))
    with evaluating(model.module), torch.no_grad():
        acts = _preactivation(model, module, images.to(model.device, torch.float32), "fp32")
    return _channel_means(acts, filters)


@dataclass
class FilterResult:
    """Pictures (N x 3 x S x S, RGB in [0, 1]) of ``filters`` of ``layer``, their scores, the
    scores of the starting pictures and the objective at every step (steps x N)."""

    images: torch.Tensor
    scores: torch.Tensor
    filters: list[int]
    layer: str
    method: str
    steps: int
    size: int
    seed: int
    precision: str
    initial_scores: torch.Tensor
    history: torch.Tensor = field(repr=False)


def total_steps(filter_counts: Sequence[int], steps: int, batch_size: int = FILTER_BATCH) -> int:
    """Optimization steps (progress ticks) :func:`render_filters` takes for layers of these filter counts."""
    return sum(-(-count // batch_size) * steps for count in filter_counts)


def render_filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
                   steps: int | None = None, size: int = DEFAULT_SIZE, method: str = "lucid", seed: int = 0,
                   precision: str = "auto", lr: float | None = None, batch_size: int = FILTER_BATCH,
                   progress: Callable[[int], None] | None = None) -> FilterResult:
    """Optimize one picture per filter of ``layer`` (all in batches of ``batch_size``) and score them.

    ``steps`` defaults to 64 (lucid) or 40 (classic); ``lr`` to 0.05 (Adam, lucid) or 0.01 (the
    per-step RMS-normalized pixel change, classic). ``progress`` is called with the number of steps
    done after each step of each batch.
    """
    model = as_model(model)
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    steps = DEFAULT_STEPS[method] if steps is None else steps
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    precision = resolve_precision(precision, model.device)
    path = preactivation_path(model, layer)
    module = model.module.get_submodule(path)
    channels = model.layer(path).shape[0]
    chosen = parse_filter_spec(filters, channels)
    lr = (0.05 if method == "lucid" else 0.01) if lr is None else lr

    images, initial, history = [], [], []
    with evaluating(model.module):
        for start in range(0, len(chosen), batch_size):
            batch = chosen[start:start + batch_size]
            pictures, first, steps_history = _optimize(model, module, batch, steps, size, method, seed,
                                                       precision, lr, progress)
            images.append(pictures)
            initial.append(first)
            history.append(steps_history)
    images_all = torch.cat(images)
    scores = score_images(model, layer, images_all, chosen)
    return FilterResult(images_all.cpu(), scores.cpu(), chosen, layer, method, steps, size, seed, precision,
                        torch.cat(initial).cpu(), torch.cat(history, dim=1).cpu())


def _optimize(model: Model, module: nn.Module, filters: list[int], steps: int, size: int, method: str,
              seed: int, precision: str, lr: float,
              progress: Callable[[int], None] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = model.device
    generators = _generators(seed, filters, device)
    picture = (FourierImage if method == "lucid" else PixelImage)(generators, size, device)
    parameters = list(picture.parameters())
    optimizer = torch.optim.Adam(parameters, lr=lr) if method == "lucid" else None
    with torch.no_grad():
        first = _channel_means(_preactivation(model, module, picture().float(), "fp32"), filters)
    history = []
    for _ in range(steps):
        rgb = picture()
        if method == "lucid":
            rgb = random_transform(rgb, generators)
        with redirected_relus(model.module) if method == "lucid" else nullcontext():
            objective = _channel_means(_preactivation(model, module, rgb, precision), filters)
            (grad,) = torch.autograd.grad(objective.sum(), parameters)
        with torch.no_grad():
            if optimizer is not None:
                parameters[0].grad = -grad  # Adam minimizes: ascend the objective
                optimizer.step()
                parameters[0].grad = None
            else:
                rms = grad.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
                parameters[0].add_(lr * grad / (rms + 1e-12)).clamp_(0.0, 1.0)
        history.append(objective.detach())
        if progress is not None:
            progress(1)
    with torch.no_grad():
        final = picture().float().clamp(0.0, 1.0)
    return final.detach(), first, torch.stack(history)


def plain_batched_ascent(model: Model | nn.Module, layer: str, filters: Sequence[int], steps: int,
                         size: int = DEFAULT_SIZE, seed: int = 0, lr: float = 1 / 255) -> torch.Tensor:
    """The reference the ``classic`` method is held against: the textbook loop (Chollet's: step 1
    on the 0..255 pixel scale, i.e. 1/255 here) run on a batch, one RMS over the whole batch's
    gradient, no clipping, from the same start. Returns the scores."""
    model = as_model(model)
    module = model.module.get_submodule(preactivation_path(model, layer))
    filters = list(filters)
    picture = PixelImage(_generators(seed, filters, model.device), size, model.device)
    pixels = picture.pixels
    with evaluating(model.module):
        for _ in range(steps):
            objective = _channel_means(_preactivation(model, module, pixels, "fp32"), filters)
            (grad,) = torch.autograd.grad(objective.sum(), [pixels])
            with torch.no_grad():
                pixels.add_(lr * grad / (grad.pow(2).mean().sqrt() + 1e-12))
    return score_images(model, layer, pixels.detach(), filters).cpu()


def filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
            steps: int | None = None, size: int = DEFAULT_SIZE, method: str = "lucid", seed: int = 0,
            precision: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Pictures of what each filter of ``layer`` responds to: ``(images, scores)``, images
    N x 3 x S x S RGB in [0, 1] (before the model's own normalization), scores the fp32 mean of each
    filter's pre-activation on its picture. ``filters``: a count, indices/ranges (``"0-15,32"``) or
    a list (default: the first 64). Deterministic for a seed on a given device."""
    result = render_filters(model, layer, filters, steps, size, method, seed, precision)
    return result.images, result.scores
