"""Pixel attributions: how much each input value (channel, row, column) counts for a class score.

With ``g = dY_c/dx`` (``Y_c`` the class score before softmax, ``x`` the model input after
preprocessing) and ``x'`` the baseline (a black image, preprocessed):

* ``saliency``            (Simonyan et al. 2014; Captum ``Saliency``): ``|g|``
* ``inputxgradient``      (Shrikumar et al. 2016; Captum ``InputXGradient``): ``x * g``
* ``integratedgradients`` (Sundararajan et al. 2017; Captum ``IntegratedGradients``):
  ``(x - x') * sum_i w_i g(x' + a_i (x - x'))``, ``(a_i, w_i)`` the Gauss-Legendre nodes and weights
  on [0, 1] (``steps`` of them); completeness: ``sum(attr) = Y(x) - Y(x')`` up to the quadrature,
  whose gap is reported
* ``smoothgrad``          (Smilkov et al. 2017; Captum ``NoiseTunnel(Saliency)``): the mean of
  ``|g(x + n)|`` over ``samples`` copies, ``n ~ N(0, s^2)``, ``s = sigma * (max x - min x)`` per
  image (the paper's noise level, a fraction of the input's range; Captum's ``stdevs`` is absolute)
* ``guidedbackprop``      (Springenberg et al. 2015): ``g`` with the guided rule at every ReLU-like
  unit (:mod:`convscope.techniques.backward_rules`)
* ``deconvolution``       (Zeiler & Fergus 2014): ``g`` with the deconvolution rule
* ``guidedgradcam``       (Selvaraju et al. 2017): guided backpropagation times the layer's Grad-CAM
  map (ReLU'd, not normalized) upsampled bilinearly to the input, as the paper
* ``occlusion``           (Zeiler & Fergus 2014; Captum ``Occlusion``): a ``window`` x ``window``
  square of every channel set to the baseline, moved by ``stride`` (the last one cut at the edge);
  each value's attribution is the mean of ``Y(x) - Y(x occluded)`` over the squares that cover it

Each method is one function registered with :func:`register_attribution` in :data:`METHODS`,
taking :class:`AttributionInputs` and returning B x C x H x W. Gradients come from the one capture
path, :func:`convscope.techniques.capture.input_pass`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..catalog import ATTRIBUTION_DEFAULTS, MAPS_PRECISION
from ..errors import InputError, check_at_least, check_choice
from ..hooks import evaluating
from ..images import ImageSource
from ..model import Model, as_input, as_model
from ..precision import computing_in, prepare_input
from .cams import METHODS as CAM_METHODS
from .cams import CamSettings, cam_maps, minmax, resized_linearly
from .capture import InputPass, batch_for_classes, cam_layer, input_pass

#: Rows (copies of the input) per forward and backward pass of integrated gradients and SmoothGrad,
#: and occluded inputs per forward pass, on CPUs and elsewhere.
ATTRIBUTION_BATCH = {"cpu": 16, "cuda": 64}


@dataclass(frozen=True)
class AttributionMethod:
    """A registered method: its name, title, the function from :class:`AttributionInputs` to the
    attributions (B x C x H x W), whether it draws random copies (``seeded``), and what the first
    pass on the image itself gives it (:attr:`AttributionInputs.first`): ``rule``, the backward rule
    of its gradient, or no gradient at all (``gradient_at_input`` False: a forward pass only)."""

    name: str
    title: str
    compute: Callable[[AttributionInputs], torch.Tensor]
    seeded: bool = False
    rule: str | None = None
    gradient_at_input: bool = True


#: Every pixel attribution by name, in the order they are offered.
METHODS: dict[str, AttributionMethod] = {}


def register_attribution(name: str, title: str, **facts: bool | str | None
                         ) -> Callable[[Callable[[AttributionInputs], torch.Tensor]],
                                       Callable[[AttributionInputs], torch.Tensor]]:
    """Decorator adding an attribution function to :data:`METHODS` under ``name``; ``facts``: the
    other fields of :class:`AttributionMethod`."""
    def register(compute: Callable[[AttributionInputs], torch.Tensor]) -> Callable[[AttributionInputs], torch.Tensor]:
        METHODS[name] = AttributionMethod(name, title, compute, **facts)
        return compute
    return register


@dataclass(frozen=True)
class AttributionSettings:
    """A method and its options, checked by :func:`attribution_settings`: integrated gradients'
    ``steps``; SmoothGrad's ``samples``, ``sigma`` (a fraction of each image's range) and ``seed``;
    occlusion's ``window`` and ``stride`` (pixels); guided Grad-CAM's ``layer``."""

    method: AttributionMethod
    steps: int = ATTRIBUTION_DEFAULTS["steps"]
    samples: int = ATTRIBUTION_DEFAULTS["samples"]
    sigma: float = ATTRIBUTION_DEFAULTS["sigma"]
    seed: int = 0
    window: int = ATTRIBUTION_DEFAULTS["window"]
    stride: int = ATTRIBUTION_DEFAULTS["stride"]
    layer: str | None = None


def attribution_settings(model: Model, method: str = "saliency", *, steps: int = ATTRIBUTION_DEFAULTS["steps"],
                         samples: int = ATTRIBUTION_DEFAULTS["samples"], sigma: float = ATTRIBUTION_DEFAULTS["sigma"],
                         seed: int = 0, window: int | None = None, stride: int | None = None,
                         layer: str | None = None) -> AttributionSettings:
    """The method and its options, each checked here, once, where the user's values enter. Occlusion's
    ``window`` and ``stride`` default to 16 and 8 px, cut to the input's shorter side where it is smaller
    (a window the user gives must fit)."""
    check_choice("method", method, METHODS, "attribution method")
    check_at_least("steps", steps, 1)
    check_at_least("samples", samples, 1)
    if not sigma > 0:
        raise InputError(f"sigma: must be above 0, got {sigma}", parameter="sigma")
    height, width = model.input_size
    if window is None:
        window = min(ATTRIBUTION_DEFAULTS["window"], height, width)
    if stride is None:
        stride = min(ATTRIBUTION_DEFAULTS["stride"], window)
    check_at_least("window", window, 1)
    check_at_least("stride", stride, 1)
    if method == "occlusion" and window > min(height, width):
        raise InputError(f"window {window}: larger than the {height}x{width} input", parameter="window")
    if method == "occlusion" and stride > window:
        raise InputError(f"stride {stride}: larger than the window ({window}), so some pixels would never be "
                         "occluded", parameter="stride")
    chosen_layer = cam_layer(model, layer) if method == "guidedgradcam" else None
    return AttributionSettings(METHODS[method], int(steps), int(samples), float(sigma), int(seed), int(window),
                               int(stride), chosen_layer)


@dataclass(frozen=True)
class AttributionInputs:
    """What a method computes from: the model, its input ``x`` (B x C x H x W), each row's class, the
    logits, ``first`` (the pass on ``x`` itself: dY_c/dx under the method's rule, or None for a
    method without a gradient at the input), the ``baseline`` (1 x C x 1 x 1, a black image
    preprocessed), the settings, ``batch`` (rows per pass), ``gradients(inputs, classes, rule)``
    (:func:`~convscope.techniques.capture.input_pass`) and ``scores(inputs)`` (the logits, no gradient)."""

    model: Model
    x: torch.Tensor
    classes: list[int]
    logits: torch.Tensor
    first: torch.Tensor | None
    baseline: torch.Tensor
    settings: AttributionSettings
    batch: int
    gradients: Callable[[torch.Tensor, list[int], str | None], InputPass]
    scores: Callable[[torch.Tensor], torch.Tensor]


@dataclass
class AttributionResult:
    """``attributions`` B x C x H x W (signed, fp32), each row's class, the method, the logits and,
    for integrated gradients, each row's score ``change`` from the baseline, ``Y(x) - Y(x')``, and
    completeness ``gap``: ``sum(attr) - change``."""

    attributions: torch.Tensor
    classes: list[int]
    method: str
    logits: torch.Tensor
    change: torch.Tensor | None = None
    gap: torch.Tensor | None = None

    @property
    def maps(self) -> torch.Tensor:
        """Each row's attribution summed over the input channels: B x H x W, signed."""
        return self.attributions.sum(dim=1)


# -- the methods ---------------------------------------------------------------------------------------
@register_attribution("saliency", "Saliency")
def saliency(i: AttributionInputs) -> torch.Tensor:
    """|dY_c/dx|."""
    return i.first.abs()


@register_attribution("inputxgradient", "Input x Gradient")
def input_x_gradient(i: AttributionInputs) -> torch.Tensor:
    """x * dY_c/dx."""
    return i.x.float() * i.first


@register_attribution("integratedgradients", "Integrated Gradients", gradient_at_input=False)
def integrated_gradients(i: AttributionInputs) -> torch.Tensor:
    """(x - x') * sum_i w_i g(x' + a_i (x - x')), Gauss-Legendre on [0, 1]."""
    alphas, weights = gauss_legendre(i.settings.steps)
    delta = i.x - i.baseline
    points = [(row, i.baseline[0] + a * delta[row], w) for a, w in zip(alphas, weights) for row in range(len(i.x))]
    return delta.float() * _weighted_gradients(i, points)


@register_attribution("smoothgrad", "SmoothGrad", seeded=True, gradient_at_input=False)
def smoothgrad(i: AttributionInputs) -> torch.Tensor:
    """The mean of |g(x + n)| over ``samples`` noisy copies, n ~ N(0, (sigma * range)^2) per image."""
    generator = torch.Generator().manual_seed(i.settings.seed)
    weight = 1.0 / i.settings.samples
    points = []
    for row, image in enumerate(i.x):
        spread = float(image.max() - image.min()) * i.settings.sigma
        points += [(row, image + (torch.randn(image.shape, generator=generator) * spread).to(image.device, image.dtype),
                    weight) for _ in range(i.settings.samples)]
    return _weighted_gradients(i, points, absolute=True)


@register_attribution("guidedbackprop", "Guided Backprop", rule="guided")
def guided_backprop(i: AttributionInputs) -> torch.Tensor:
    """dY_c/dx with the guided rule at every ReLU-like unit."""
    return i.first


@register_attribution("deconvolution", "Deconvolution", rule="deconvolution")
def deconvolution(i: AttributionInputs) -> torch.Tensor:
    """dY_c/dx with the deconvolution rule at every ReLU-like unit."""
    return i.first


@register_attribution("guidedgradcam", "Guided Grad-CAM", rule="guided")
def guided_gradcam(i: AttributionInputs) -> torch.Tensor:
    """Guided backpropagation times the layer's Grad-CAM map (ReLU'd, not normalized), upsampled
    bilinearly (align_corners=False; a video's trilinearly) to the input."""
    guided = i.first
    cams = cam_maps(i.model, i.x, CamSettings(i.settings.layer, CAM_METHODS["gradcam"]), i.classes)
    return guided * resized_linearly(cams.low_res[:, None], i.x.shape[2:])


@register_attribution("occlusion", "Occlusion", gradient_at_input=False)
def occlusion(i: AttributionInputs) -> torch.Tensor:
    """The mean drop of Y_c over the occluding squares that cover each value (see the module notes);
    a clip's square covers the same pixels in every frame."""
    height, width = i.x.shape[-2:]
    window, stride = i.settings.window, i.settings.stride
    squares = [(top, left) for top in _starts(height, window, stride) for left in _starts(width, window, stride)]
    counts = torch.zeros((height, width), dtype=torch.float32, device=i.x.device)
    for top, left in squares:
        counts[top:top + window, left:left + window] += 1
    total = torch.zeros_like(i.x, dtype=torch.float32)
    work = [(row, top, left) for row in range(len(i.x)) for top, left in squares]  # every image's squares together
    for start in range(0, len(work), i.batch):
        chunk = work[start:start + i.batch]
        occluded = i.x[[row for row, _, _ in chunk]].clone()
        for n, (_, top, left) in enumerate(chunk):
            occluded[n, ..., top:top + window, left:left + window] = i.baseline[0]
        scores = i.scores(occluded)
        for n, (row, top, left) in enumerate(chunk):
            cls = i.classes[row]
            total[row, ..., top:top + window, left:left + window] += i.logits[row, cls] - scores[n, cls]
    return total / counts


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Where the occluding squares start along one side: every ``stride``, as many as Captum's
    ``ceil((size - window) / stride) + 1`` (the last may reach past the edge and is cut there)."""
    return [k * stride for k in range(int(np.ceil((size - window) / stride)) + 1)]


def _weighted_gradients(i: AttributionInputs, points: Sequence[tuple[int, torch.Tensor, float]],
                        absolute: bool = False) -> torch.Tensor:
    """For each row of ``x``, sum_p w_p dY_c/dx at its ``points`` ((row, C x H x W input, w) triples,
    the rows' points together ``batch`` per pass; |dY_c/dx| with ``absolute``): B x C x H x W."""
    total = torch.zeros_like(i.x, dtype=torch.float32)
    for start in range(0, len(points), i.batch):
        chunk = points[start:start + i.batch]
        rows = [row for row, _, _ in chunk]
        grads = i.gradients(torch.stack([p for _, p, _ in chunk]), [i.classes[row] for row in rows], None).grads
        if absolute:
            grads = grads.abs()
        weights = torch.tensor([w for _, _, w in chunk], dtype=torch.float32, device=grads.device)
        total.index_add_(0, torch.tensor(rows, device=grads.device), weights.view(-1, *[1] * (grads.dim() - 1)) * grads)
    return total


def gauss_legendre(steps: int) -> tuple[list[float], list[float]]:
    """The Gauss-Legendre nodes and weights of ``steps`` points on [0, 1] (as Captum's ``gausslegendre``)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return list(0.5 * (nodes + 1)), list(0.5 * weights)


def importance(maps: torch.Tensor) -> torch.Tensor:
    """Signed maps (B x H x W, each attribution summed over the input channels) as maps of importance
    in [0, 1], as "which map to trust" measures every map: the evidence for the class (the positive
    part; saliency and SmoothGrad are magnitudes, positive already), min-max normalized per map."""
    return minmax(torch.relu(maps.float()))


# -- running the model -------------------------------------------------------------------------------
def black_baseline(model: Model) -> torch.Tensor:
    """A black image after preprocessing, 1 x C x 1 x 1 (a video network's 1 x C x 1 x 1 x 1):
    ``(0 - mean) / std`` per channel."""
    mean = torch.tensor(model.preprocessing.mean, dtype=torch.float32)
    std = torch.tensor(model.preprocessing.std, dtype=torch.float32)
    return (-mean / std).view(1, -1, *[1] * (2 if model.frames is None else 3)).to(model.device)


def attributions(model: Model, x: torch.Tensor, settings: AttributionSettings,
                 classes: int | str | Sequence[int | str] | None = None, batch: int | None = None
                 ) -> AttributionResult:
    """Attributions with settings checked by :func:`attribution_settings` (see :func:`attribute`)."""
    x, fixed, _ = batch_for_classes(model, x, classes)
    batch = ATTRIBUTION_BATCH.get(model.device.type, 16) if batch is None else batch
    check_at_least("batch", batch, 1)
    baseline = black_baseline(model).to(x.dtype)

    def scores(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), computing_in(model.device, MAPS_PRECISION):
            return model.scores(prepare_input(inputs)).float()

    def gradients(inputs: torch.Tensor, chosen: list[int] | None, rule: str | None) -> InputPass:
        return input_pass(model, inputs, MAPS_PRECISION, chosen, rule, settings.method.name)

    method = settings.method
    with evaluating(model.module):
        if method.gradient_at_input:
            first = gradients(x, fixed, method.rule)
            logits, chosen, at_input = first.logits, first.classes, first.grads
        else:
            with torch.no_grad(), computing_in(model.device, MAPS_PRECISION):
                logits, chosen = model.scores_for(prepare_input(x), fixed)
            logits, at_input = logits.float(), None
        inputs = AttributionInputs(model, x, chosen, logits, at_input, baseline, settings, batch, gradients, scores)
        found = settings.method.compute(inputs).float()
        change = gap = None
        if settings.method.name == "integratedgradients":
            rows = torch.arange(len(x), device=logits.device)
            black = scores(baseline.expand(1, *x.shape[1:]).contiguous())[0]  # one black image serves every row
            change = logits[rows, chosen] - black[chosen]
            gap = found.flatten(1).sum(dim=1) - change
    return AttributionResult(found.detach(), chosen, settings.method.name, logits, change, gap)


def attribute(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
              classes: int | str | Sequence[int | str] | None = None, method: str = "saliency",
              **options: float | int | str | None) -> AttributionResult:
    """Pixel attributions for each image and class (see the module notes): ``classes`` as for
    :func:`~convscope.cam`; ``options``: ``steps`` (integrated gradients, default 50), ``samples``,
    ``sigma``, ``seed`` (SmoothGrad: 50, 0.15, 0), ``window``, ``stride`` (occlusion: 16, 8, cut to a
    smaller input),
    ``layer`` (guided Grad-CAM; default the CAM layer)."""
    model = as_model(model, x)
    return attributions(model, as_input(model, x), attribution_settings(model, method, **options), classes)
