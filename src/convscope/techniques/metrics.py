"""Faithfulness metrics of class activation maps, usable on maps from anywhere.

Maps are B x H x W in [0, 1] at the model input size; ``p(x)`` is the softmax probability of the
explained class.

* :func:`deletion` / :func:`insertion` (Petsiuk et al. 2018): pixels ordered by map value, highest
  first -- a **stable** sort of the row-major flattened map, so tied pixels (ReLU'd maps hold many
  exact zeros) go in row-major order. For ``t = 0..S`` the first ``t*H*W // S`` pixels of that
  order change (all channels of a pixel together): deletion starts from the input and sets them to
  an all-black photo through the model's preprocessing; insertion starts from the input blurred by
  a Gaussian (11 x 11, sigma 5, zero padding, per channel, in input space) and sets them to their
  original values. AUC of the curve ``p_0..p_S`` = ``(sum(p) - (p_0 + p_S) / 2) / S``. Lower
  deletion and higher insertion are better; the faithfulness score is insertion - deletion.
* :func:`average_drop` / :func:`increase_in_confidence` (Chattopadhay et al. 2018): the input times
  the map; per image ``100 * max(0, Y - O) / Y`` and ``100 * [O > Y]`` (Y, O: p of the input and
  of the masked input); their means over images are the paper's figures.
* :func:`sanity` (Adebayo et al. 2018): cascading randomization on a deep copy of the model.
* :func:`pointing` (Zhang et al. 2016; energy-based, Wang et al. 2020): hits and map mass in boxes.

All perturbed inputs go through the model in batches of ``batch_size``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import MAPS_PRECISION, SANITY_SEEDS, STEPS
from ..errors import InputError, check_at_least, check_choice
from ..hooks import evaluating
from ..model import Model, as_input, as_model
from ..precision import computing_in, prepare_input

BLUR_SIZE, BLUR_SIGMA = 11, 5.0
#: Perturbed inputs per forward pass.
METRIC_BATCH = 32
#: A method passes the sanity check when its map's Spearman correlation with the trained model's,
#: after the classifier is randomized, is below this.
SANITY_THRESHOLD = 0.5
KINDS = ("deletion", "insertion")


# -- probabilities ---------------------------------------------------------------------------------
def class_probabilities(model: Model, inputs: Iterator[torch.Tensor] | torch.Tensor, classes: Sequence[int],
                        batch_size: int = METRIC_BATCH, precision: str = MAPS_PRECISION) -> torch.Tensor:
    """p(class_i | input_i) for a stream of model inputs (a tensor or an iterator of N x C x H x W
    chunks, matched in order with ``classes``), ``batch_size`` per forward pass, fp32: the softmax
    probability for the class targets, what the model's target measures otherwise (a multilabel
    model's sigmoid, a region's summed logits, a similarity; :meth:`convscope.Model.measure`)."""
    check_at_least("batch_size", batch_size, 1)
    chunks = [inputs] if isinstance(inputs, torch.Tensor) else inputs
    results: list[torch.Tensor] = []

    def run(batch: torch.Tensor) -> None:
        with computing_in(model.device, precision):
            results.append(model.measure(prepare_input(batch)).float())

    with evaluating(model.module), torch.no_grad():
        buffer: torch.Tensor | None = None
        for chunk in chunks:
            chunk = chunk.to(model.device, model.dtype)
            buffer = chunk if buffer is None else torch.cat([buffer, chunk])
            while len(buffer) >= batch_size:
                run(buffer[:batch_size])
                buffer = buffer[batch_size:]
        if buffer is not None and len(buffer):
            run(buffer)
    probabilities = torch.cat(results) if results else torch.zeros(0, 1)
    index = torch.as_tensor(list(classes), device=probabilities.device)
    if len(index) != len(probabilities):
        raise InputError(f"classes has {len(index)} entries for {len(probabilities)} inputs", parameter="classes")
    return probabilities[torch.arange(len(index), device=index.device), index].cpu()


# -- deletion and insertion ----------------------------------------------------------------------------
def blurred(x: torch.Tensor) -> torch.Tensor:
    """The input blurred by an 11 x 11 Gaussian of sigma 5, zero padding, each channel on its own (a
    clip's each frame on its own)."""
    if x.dim() == 5:
        frames = x.transpose(1, 2).flatten(0, 1)  # (B T) x C x H x W
        return blurred(frames).unflatten(0, (x.shape[0], x.shape[2])).transpose(1, 2)
    offsets = torch.arange(BLUR_SIZE, dtype=torch.float32, device=x.device) - BLUR_SIZE // 2
    kernel = torch.exp(-offsets ** 2 / (2 * BLUR_SIGMA ** 2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(x, horizontal, padding=(0, BLUR_SIZE // 2), groups=channels)
    return F.conv2d(out, vertical, padding=(BLUR_SIZE // 2, 0), groups=channels)


def black(model: Model, like: torch.Tensor) -> torch.Tensor:
    """The model input of an all-black photo (pixel value 0 through the model's preprocessing)."""
    return model.preprocessing.normalize(torch.zeros_like(like))


def pixel_order(heat: torch.Tensor) -> torch.Tensor:
    """Pixel indices (row-major) by map value, highest first; ties in row-major order (stable)."""
    return torch.sort(heat.flatten(), descending=True, stable=True).indices


def curve_inputs(x: torch.Tensor, heat: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                 steps: int) -> torch.Tensor:
    """The S+1 inputs of a curve for one image (C x H x W): step t shows ``end`` at the first
    ``t*H*W // S`` pixels of the map's order and ``start`` elsewhere (a clip's C x T x H x W: its
    T*H*W voxels)."""
    pixels = heat.numel()
    rank = torch.empty(pixels, dtype=torch.long, device=x.device)
    rank[pixel_order(heat).to(x.device)] = torch.arange(pixels, device=x.device)
    counts = torch.tensor([t * pixels // steps for t in range(steps + 1)], device=x.device)
    changed = (rank[None] < counts[:, None]).view(steps + 1, 1, *x.shape[1:])
    return torch.where(changed, end[None], start[None])


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves of S+1 points (..., S+1) on [0, 1]: ``(sum(p) - (p_0 + p_S) / 2) / S``."""
    steps = curves.shape[-1] - 1
    return (curves.sum(dim=-1) - (curves[..., 0] + curves[..., -1]) / 2) / steps


def _ends(model: Model, x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, end) inputs of a curve: deletion goes from x to black, insertion from blurred x to x."""
    check_choice("kind", kind, KINDS)
    return (x, black(model, x)) if kind == "deletion" else (blurred(x), x)


def curves(model: Model | nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: Sequence[int], kind: str,
           steps: int = STEPS, batch_size: int = METRIC_BATCH, precision: str = MAPS_PRECISION) -> torch.Tensor:
    """Deletion or insertion curves (B x S+1) of ``maps`` (B x H x W) for the inputs ``x``."""
    model = as_model(model, x)
    x = as_input(model, x)
    check_at_least("steps", steps, 1)
    _check_maps(maps, x)
    start, end = _ends(model, x, kind)
    inputs = (curve_inputs(x[i], maps[i], start[i], end[i], steps) for i in range(len(x)))
    targets = [int(c) for c in classes for _ in range(steps + 1)]
    return class_probabilities(model, inputs, targets, batch_size, precision).view(len(x), steps + 1)


def deletion(model: Model | nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: Sequence[int],
             steps: int = STEPS, **options) -> torch.Tensor:
    """Deletion AUC per map (lower is better)."""
    return auc(curves(model, x, maps, classes, "deletion", steps, **options))


def insertion(model: Model | nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: Sequence[int],
              steps: int = STEPS, **options) -> torch.Tensor:
    """Insertion AUC per map (higher is better)."""
    return auc(curves(model, x, maps, classes, "insertion", steps, **options))


def _check_maps(maps: torch.Tensor, x: torch.Tensor) -> None:
    if maps.dim() != x.dim() - 1 or maps.shape[0] != x.shape[0] or tuple(maps.shape[1:]) != tuple(x.shape[2:]):
        expected = " x ".join(map(str, (x.shape[0], *x.shape[2:])))
        raise InputError(f"maps: expected {expected} (one map per input, at its size), got {tuple(maps.shape)}",
                         parameter="maps")


# -- Average Drop and Increase in Confidence --------------------------------------------------------------
def _masked_probabilities(model: Model | nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: Sequence[int],
                          precision: str = MAPS_PRECISION) -> tuple[torch.Tensor, torch.Tensor]:
    model = as_model(model, x)
    x = as_input(model, x)
    _check_maps(maps, x)
    masked = x * maps[:, None].to(x)
    both = class_probabilities(model, torch.cat([x, masked]), list(classes) * 2, precision=precision)
    return both[:len(x)], both[len(x):]


def average_drop(model: Model | nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: Sequence[int],
                 precision: str = MAPS_PRECISION) -> torch.Tensor:
    """Per map ``100 * max(0, Y - O) / Y`` (lower is better; the mean over images is Average Drop)."""
    original, masked = _masked_probabilities(model, x, maps, classes, precision)
    return 100 * torch.clamp(original - masked, min=0) / original


def increase_in_confidence(model: Model | nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: Sequence[int],
                           precision: str = MAPS_PRECISION) -> torch.Tensor:
    """Per map ``100 * [O > Y]`` (the mean over images is the Increase in Confidence)."""
    original, masked = _masked_probabilities(model, x, maps, classes, precision)
    return 100 * (masked > original).float()


# -- the sanity check ---------------------------------------------------------------------------------------
def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two maps (ties get their average rank); 0 when either is constant."""
    from scipy.stats import spearmanr

    first, second = a.detach().flatten().double().cpu().numpy(), b.detach().flatten().double().cpu().numpy()
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 0.0
    return float(spearmanr(first, second).statistic)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """scikit-image's structural similarity of two maps in [0, 1] (data range 1; its 7 x 7 window, 7 x 7
    x 7 for a clip's T x H x W maps, smaller for maps under 7 pixels a side; NaN under 3)."""
    from skimage.metrics import structural_similarity

    window = min(7, min(a.shape) - (1 - min(a.shape) % 2))
    if window < 3:
        return float("nan")
    return float(structural_similarity(a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy(),
                                       data_range=1.0, win_size=window))


@dataclass
class SanityResult:
    """The cascade for one map: after each step (``classifier``, then the stages from the last to the
    first) the Spearman correlation and SSIM of the map with the trained model's, each the mean over
    ``seeds`` randomizations, with ``spread`` the standard deviation of the Spearman correlations
    (population; 0 for one seed); ``passed`` when the mean correlation after the classifier step is
    below :data:`SANITY_THRESHOLD`."""

    stages: list[str]
    spearman: list[float]
    ssim: list[float]
    passed: bool
    spread: list[float] = field(default_factory=list)
    seeds: int = 1

    def as_json(self) -> dict:
        spreads = self.spread or [0.0] * len(self.stages)
        return {"passed": self.passed, "seeds": self.seeds, "threshold": SANITY_THRESHOLD,
                "stages": [{"stage": stage, "spearman": _finite(r), "spread": _finite(d), "ssim": _finite(s)}
                           for stage, r, d, s in zip(self.stages, self.spearman, spreads, self.ssim)]}


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


#: A Keras layer's variables and the initializer attribute of each (Keras keeps a layer's variables on
#: its model, so a Keras layer has no parameters of its own as a torch module).
KERAS_VARIABLES = ("kernel", "bias", "depthwise_kernel", "pointwise_kernel", "gamma", "beta", "embeddings")


def _is_keras_layer(module: nn.Module) -> bool:
    return type(module).__module__.startswith("keras") and hasattr(module, "weights")


def has_own_parameters(module: nn.Module) -> bool:
    """Whether a module holds parameters itself (a torch module's own, a Keras layer's variables)."""
    if _is_keras_layer(module):
        return any(getattr(module, name, None) is not None for name in KERAS_VARIABLES)
    return any(True for _ in module.parameters(recurse=False))


def reinitialize(module: nn.Module, seed: int) -> None:
    """A module's parameters drawn again as it draws them when built: a torch module's
    ``reset_parameters()`` (under the caller's torch seed), a Keras layer's initializers seeded with ``seed``."""
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    if not _is_keras_layer(module):
        return
    for name in KERAS_VARIABLES:
        variable, initializer = getattr(module, name, None), getattr(module, f"{name}_initializer", None)
        if variable is None or initializer is None:
            continue
        config = initializer.get_config()
        seeded = type(initializer).from_config({**config, "seed": seed}) if "seed" in config else initializer
        with torch.no_grad():
            variable.value.copy_(torch.as_tensor(np.asarray(seeded(tuple(variable.shape))), dtype=variable.value.dtype))


def randomization_cascade(model: Model, layer: str) -> list[tuple[str, list[str]]]:
    """The steps of the sanity check: ``("classifier", modules after the CAM layer)``, then the stages
    before it from the last to the first (modules with parameters, grouped where the resolution of
    their output changes), each step a list of module paths."""
    modules = [info for info in model.all_layers() if not info.is_alias
               and has_own_parameters(model.module.get_submodule(info.module))]
    order = [info.module for info in model.all_layers() if not info.is_alias]
    boundary = order.index(model.layer(layer).module)
    classifier = [info.module for info in modules if order.index(info.module) > boundary]
    stages: list[tuple[tuple[int, ...] | None, list[str]]] = []
    for info in modules:
        if order.index(info.module) > boundary:
            continue
        resolution = tuple(info.shape[1:]) if info.shape is not None and len(info.shape) == 3 else None
        if not stages or stages[-1][0] != resolution:
            stages.append((resolution, []))
        stages[-1][1].append(info.module)
    steps = [("classifier", classifier)] if classifier else []
    for number, (resolution, paths) in reversed(list(enumerate(stages, 1))):
        where = "x".join(map(str, resolution)) if resolution else "vectors"
        steps.append((f"stage {number} ({where})", paths))
    return steps


def sanity(model: Model | nn.Module, x: torch.Tensor, classes: Sequence[int],
           cam: Callable[[Model, torch.Tensor, Sequence[int]], torch.Tensor],
           layer: str, maps: torch.Tensor | None = None, seeds: int | Sequence[int] = SANITY_SEEDS,
           cascade: bool = True) -> list[SanityResult]:
    """Cascading parameter randomization on a **deep copy** of the model (the user's model is never
    touched): each step re-initializes its modules by their own ``reset_parameters()`` under a
    seed, then ``cam(copy, x, classes)`` draws the maps again, compared with ``maps`` (the trained
    model's, computed by ``cam`` when not given). The cascade runs once per seed (``seeds``: a count,
    meaning seeds 0 .. n-1, or the seeds themselves), each from a fresh copy; every correlation is
    the mean over the seeds, with its spread. One result per image. Without ``cascade`` only the
    first step (the classifier), which decides ``passed``."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise InputError("sanity_seeds must be at least 1", parameter="sanity_seeds")
    model = as_model(model, x)
    x = as_input(model, x)
    trained = cam(model, x, classes) if maps is None else maps
    steps = randomization_cascade(model, layer)
    steps = steps if cascade else steps[:1]
    # per image, per stage: the Spearman correlations and SSIMs of every seed
    rank = [[[] for _ in steps] for _ in range(len(x))]
    similar = [[[] for _ in steps] for _ in range(len(x))]
    for seed in seed_list:
        copied = Model(copy.deepcopy(model.module), name=model.name, weights="randomized",
                       preprocessing=model.preprocessing, labels=model.labels, aliases=model.aliases,
                       hidden=model.hidden, output=model.output)
        copied._all_layers = model.all_layers()  # the same structure: no second discovery
        for number, (_stage, paths) in enumerate(steps):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed * 1000 + number)
                for path in paths:
                    reinitialize(copied.module.get_submodule(path), seed * 1000 + number)
            randomized = cam(copied, x, classes)
            for image, (before, after) in enumerate(zip(trained, randomized)):
                rank[image][number].append(spearman(before, after))
                similar[image][number].append(ssim(before, after))
    results = []
    for image in range(len(x)):
        means = [float(np.mean(values)) for values in rank[image]]
        results.append(SanityResult(
            [stage for stage, _ in steps], means, [float(np.mean(values)) for values in similar[image]],
            bool(steps) and steps[0][0] == "classifier" and means[0] < SANITY_THRESHOLD,
            [float(np.std(values)) for values in rank[image]], len(seed_list)))
    return results


# -- the pointing game ----------------------------------------------------------------------------------------
def pointing(maps: torch.Tensor, boxes: Sequence[Sequence[Sequence[float]]],
             photo_sizes: Sequence[tuple[int, int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit, energy) per map. ``boxes[i]``: the boxes ``[x0, y0, x1, y1]`` of map i's class in the
    photo's pixels; ``photo_sizes[i]``: that photo's (width, height) (default: the map's size; the
    whole photo was resized to the map). A hit: a pixel holding the map's maximum, its centre mapped
    to the photo, lies inside a box; energy: the share of the map's mass whose pixel centres lie
    inside the boxes. An all-zero map is a miss with energy 0. A clip's map (T x H x W): the boxes in
    every frame."""
    hits, energies = [], []
    for index, heat in enumerate(maps):
        height, width = heat.shape[-2:]
        photo_w, photo_h = photo_sizes[index] if photo_sizes is not None else (width, height)
        xs = (torch.arange(width, dtype=torch.float64) + 0.5) * photo_w / width
        ys = (torch.arange(height, dtype=torch.float64) + 0.5) * photo_h / height
        inside = torch.zeros(height, width, dtype=torch.bool)
        for x0, y0, x1, y1 in boxes[index]:
            inside |= ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
        hit, energy = _point(heat, inside.expand(heat.shape))
        hits.append(hit)
        energies.append(energy)
    return torch.tensor(hits), torch.tensor(energies, dtype=torch.float64)


def pointing_in(maps: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit, energy) per map, as :func:`pointing`, inside ``regions`` (B x H x W at the maps' size,
    nonzero inside): the region a target explains (a segmentation's pixels, a detection's box)."""
    found = [_point(heat, region.cpu() > 0) for heat, region in zip(maps, regions)]
    return torch.tensor([hit for hit, _ in found]), torch.tensor([e for _, e in found], dtype=torch.float64)


def _point(heat: torch.Tensor, inside: torch.Tensor) -> tuple[bool, float]:
    """One map's hit (a pixel holding its maximum is inside) and energy (its mass inside); an all-zero
    map is a miss with energy 0."""
    heat = heat.detach().double().cpu()
    total = heat.sum()
    if total <= 0:
        return False, 0.0
    return bool(inside[heat == heat.max()].any()), float(heat[inside].sum() / total)


def check_box(box: Sequence[float], photo_size: tuple[int, int], where: str) -> list[float]:
    """A box ``[x0, y0, x1, y1]`` inside a photo of (width, height); InputError naming ``where`` otherwise."""
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        raise InputError(f"boxes: {where}: a box is [x0, y0, x1, y1], got {box!r}", parameter="boxes")
    x0, y0, x1, y1 = box
    width, height = photo_size
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise InputError(f"boxes: {where}: box {list(box)} is not inside the {width}x{height} photo",
                         parameter="boxes")
    return [float(v) for v in box]
