"""Filters: what each filter responds to, by gradient ascent in input space.

Each requested filter of a conv layer gets its own picture, all optimized together in one batch
(item i maximizes filter i) with the forward pass stopped at the target layer. The objective and
the *score* of a filter are taken on its **pre-activation** (the conv's output, or the BatchNorm
right after it, before the nonlinearity), so no filter starts stuck at a dead ReLU: ``mean``
(default) its spatial mean, ``neuron`` its value at the centre position (Lucid's neuron objective:
row h // 2, column w // 2).

A picture can fail in two ways, and :func:`draw_filters` (what the commands use) says which:
*flat* -- its pixels barely vary (every colour channel's standard deviation below
:data:`FLAT_STD`); for a filter whose weights sum negative (common in depthwise layers) a uniform
picture is the true optimum of the ``mean`` objective, so the ascent is right and the picture
useless -- and *not reached* -- the objective on the final picture is not above its value on the
starting picture. Every picture that failed with ``mean`` is drawn again with ``neuron``; one that
fails that too is marked not reached.

How a picture is parameterized, transformed and updated is a recipe (``lucid`` or ``classic``,
see :mod:`convscope.techniques.filter_recipes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import DEFAULT_FILTERS, DEFAULT_SIZE, FILTER_SIZES, FILTERS_PRECISION, OBJECTIVES
from ..errors import InputError, check_at_least, check_between, check_choice
from ..hooks import evaluating
from ..layers import has_fixed_grid, preactivation
from ..model import Model, as_model
from ..precision import check_precision, choose_precision, computing_in, prepare_input
from ..specs import filter_spec
from .capture import stopping_at
from .filter_recipes import RECIPES, FilterRecipe, generators, redirected_relus

#: Filters optimized (and scored) together in one batch.
FILTER_BATCH = 64
DEFAULT_METHOD = next(iter(RECIPES))
MIN_SIZE, MAX_SIZE = FILTER_SIZES


# -- which filters ------------------------------------------------------------------------------------
def parse_filter_spec(spec: str | int | Sequence[int] | None, channels: int) -> list[int]:
    """Filter indices from a spec: None (the first 64, or all if fewer), a count ``"16"`` (the first
    16, or all if fewer), or indices and ranges ``"0-15,32"``; a list of ints is taken as indices.
    Errors before work."""
    if spec is None:
        spec = DEFAULT_FILTERS
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        indices = [int(i) for i in spec]
        if not indices:
            raise InputError("filters: empty filter list", parameter="filters")
        return _check_indices(indices, channels, str(list(spec)))
    parsed = filter_spec(spec)
    if isinstance(parsed, int):  # a count: the first N, or all of a smaller layer
        return list(range(min(parsed, channels)))
    return _check_indices(parsed, channels, spec)


def _check_indices(indices: list[int], channels: int, spec: str) -> list[int]:
    bad = [i for i in indices if not 0 <= i < channels]
    if bad:
        raise InputError(f"filters {spec}: filter {bad[0]} is out of range (the layer has {channels} filters, "
                         f"0-{channels - 1})", parameter="filters")
    return indices


def preactivation_path(model: Model, layer: str) -> str:
    """Module path of a conv layer's pre-activation (see :func:`convscope.layers.preactivation`)."""
    return preactivation(model.all_layers(), layer).module


# -- running the model up to the layer ---------------------------------------------------------------
@contextmanager
def truncated_at(model: Model, layer: str) -> Iterator[Callable[[torch.Tensor, str], torch.Tensor]]:
    """Inside the block, ``run(rgb, precision)`` runs the model on pictures (RGB in [0, 1]) until the
    pre-activation of ``layer`` and returns it (B x C x h x w; a transformer's layer as its map, the
    pictures resized to its input size, as for a model that takes only its own size (a Keras model
    built for one); a video network's B x C x t x h x w, each picture a still clip:
    repeated over its frames); one hook for all the passes."""
    target = preactivation(model.all_layers(), layer)
    fixed = has_fixed_grid(model.all_layers()) or model.fixed_input_size
    with stopping_at(model.module, layer, model.module.get_submodule(target.module), target.view,
                     model.preactivations.get(target.module)) as stopped:
        def run(rgb: torch.Tensor, precision: str) -> torch.Tensor:
            if fixed and tuple(rgb.shape[2:]) != model.input_size:
                # a transformer's patch grid is fixed: its pictures are seen at its input size
                rgb = F.interpolate(rgb, size=model.input_size, mode="bilinear", align_corners=False)
            if model.frames is not None:  # a still: the picture in every frame
                rgb = rgb[:, :, None].expand(-1, -1, model.frames, -1, -1)
            with computing_in(model.device, precision):
                return stopped.run(prepare_input(model.preprocessing.normalize(rgb)))
        yield run


#: A picture whose every colour channel has a pixel standard deviation below this (RGB in [0, 1]) is flat.
FLAT_STD = 0.01


def _channel_objective(acts: torch.Tensor, filters: Sequence[int], objective: str = "mean") -> torch.Tensor:
    """Item i's objective on channel filters[i], in fp32: its spatial mean (a video network's over t x h
    x w), or (``neuron``) its value at the centre position."""
    index = torch.tensor(list(filters), device=acts.device)
    maps = acts.float()[torch.arange(len(filters), device=acts.device), index]
    if objective == "neuron":
        return maps[(slice(None), *[size // 2 for size in maps.shape[1:]])]
    return maps.mean(dim=tuple(range(1, maps.dim())))


def score_images(model: Model | nn.Module, layer: str, images: torch.Tensor, filters: Sequence[int],
                 batch_size: int = FILTER_BATCH) -> torch.Tensor:
    """The score of each picture: the fp32 mean of its filter's pre-activation (no transforms),
    ``batch_size`` pictures per forward pass."""
    model = as_model(model)
    scores = []
    with evaluating(model.module), torch.no_grad(), truncated_at(model, layer) as run:
        for start in range(0, len(filters), batch_size):
            batch = images[start:start + batch_size].to(model.device, torch.float32)
            scores.append(_channel_objective(run(batch, "fp32"), filters[start:start + batch_size]))
    return torch.cat(scores)


# -- the optimization ------------------------------------------------------------------------------
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
    precision_reason: str = "as asked"
    #: The objective asked for; per filter, the one its picture maximizes (``neuron`` where a
    #: ``mean`` picture failed and was drawn again), whether it was reached (the final picture scores
    #: above the starting one and is not flat), and whether its ``mean`` picture was flat.
    objective: str = "mean"
    objectives: list[str] = field(default_factory=list)
    reached: list[bool] = field(default_factory=list)
    flat: list[bool] = field(default_factory=list)

    @property
    def redrawn(self) -> int:
        """Pictures shown with another objective than the one asked for (they were flat or not reached)."""
        return sum(objective != self.objective for objective in self.objectives)

    @property
    def not_reached(self) -> int:
        """Pictures not reached by any objective tried."""
        return sum(not reached for reached in self.reached)

    def status(self, position: int) -> str:
        """The picture at ``position`` in words: ``""`` when fine, else why it is marked."""
        if not self.reached[position]:
            return NOT_REACHED
        if self.objectives[position] != self.objective:
            return FLAT_REDRAWN if self.flat[position] else MEAN_NOT_REACHED
        return ""


#: How a marked picture is described (the report and ``<layer>.json`` use these words).
NOT_REACHED = "not reached"
FLAT_REDRAWN = "flat: the mean objective is maximized by a uniform picture; shown with the centre-unit objective"
MEAN_NOT_REACHED = "not reached by the mean objective; shown with the centre-unit objective"


def flat_pictures(images: torch.Tensor) -> torch.Tensor:
    """Per picture (N x C x S x S), True when every colour channel's pixel std is below :data:`FLAT_STD`."""
    return images.flatten(2).std(dim=2).amax(dim=1) < FLAT_STD


def reached_scores(scores: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """Per picture, True when the final score rose above the starting picture's (beyond float noise)."""
    return scores > initial + 1e-4 * initial.abs().clamp(min=1.0)


def total_steps(filter_counts: Sequence[int], steps: int, batch_size: int = FILTER_BATCH) -> int:
    """Optimization steps (progress ticks) :func:`optimize_filters` takes for layers of these filter counts."""
    return sum(-(-count // batch_size) * steps for count in filter_counts)


def picture_size_for(model: Model | nn.Module, layer: str, size: int) -> int:
    """The smallest picture size, ``size`` or more, that the network can take up to ``layer`` (a
    deep layer of a network without padding, such as Inception's, needs pictures of some size to
    be reached at all). InputError if even :data:`MAX_SIZE` pixels are too few."""
    model = as_model(model)

    def works(pixels: int) -> bool:
        try:
            with evaluating(model.module), torch.no_grad(), truncated_at(model, layer) as run:
                run(torch.full((1, model.preprocessing.channels, pixels, pixels), 0.5, device=model.device), "fp32")
            return True
        except RuntimeError:
            return False

    if works(size):
        return size
    too_small, enough = size, min(2 * size, MAX_SIZE)
    while not works(enough):
        if enough == MAX_SIZE:
            raise InputError(f"layers: {layer} cannot be reached with pictures of up to {MAX_SIZE} px",
                             parameter="layers")
        too_small, enough = enough, min(2 * enough, MAX_SIZE)
    while enough - too_small > 1:
        middle = (too_small + enough) // 2
        too_small, enough = (too_small, middle) if works(middle) else (middle, enough)
    return enough


def check_filter_settings(method: str, steps: int | None, size: int, objective: str = "mean") -> int:
    """Check the method, steps, size and objective before any work; returns the steps (the recipe's
    default for None)."""
    check_choice("method", method, RECIPES)
    check_choice("objective", objective, OBJECTIVES)
    steps = RECIPES[method].default_steps if steps is None else steps
    check_at_least("steps", steps, 1)
    check_between("size", size, MIN_SIZE, MAX_SIZE, " pixels")
    return steps


def optimize_filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
                     steps: int | None = None, size: int = DEFAULT_SIZE, method: str = DEFAULT_METHOD,
                     seed: int = 0, precision: str = FILTERS_PRECISION, lr: float | None = None,
                     batch_size: int = FILTER_BATCH,
                     progress: Callable[[int], None] | None = None, objective: str = "mean") -> FilterResult:
    """Optimize one picture per filter of ``layer`` (all in batches of ``batch_size``) for
    ``objective`` (``mean`` or ``neuron``, see the module notes) and score them with it.

    ``steps`` and ``lr`` default to the recipe's: 64 steps and Adam lr 0.05 (lucid), 40 steps and a
    per-step RMS-normalized pixel change of 0.01 (classic). ``progress`` is called with the number
    of steps done after each step of each batch.
    """
    model = as_model(model)
    steps = check_filter_settings(method, steps, size, objective)
    check_at_least("batch_size", batch_size, 1)
    check_precision(precision, model.device)
    chosen = parse_filter_spec(filters, model.layer(preactivation_path(model, layer)).shape[0])
    return _ascend(model, layer, chosen, steps, size, method, seed, precision, lr, batch_size, progress, objective)


def _ascend(model: Model, layer: str, chosen: list[int], steps: int, size: int, method: str, seed: int,
            precision: str, lr: float | None, batch_size: int, progress: Callable[[int], None] | None,
            objective: str) -> FilterResult:
    """:func:`optimize_filters` with every setting checked and the filters resolved."""
    recipe = RECIPES[method]
    lr = recipe.default_lr if lr is None else lr

    images, scores, initial, history = [], [], [], []
    with evaluating(model.module), truncated_at(model, layer) as run:
        first_batch = chosen[:batch_size]

        def one_step(option: str) -> None:  # what ``auto`` times: one step of the first batch
            gens = generators(seed, first_batch, model.device)
            picture = recipe.picture(gens, size, model.device, model.preprocessing.channels)
            with redirected_relus(model.module) if recipe.redirect_relus else nullcontext():
                _objective_and_gradient(run, picture, gens, recipe, first_batch, option, objective)

        precision, reason = choose_precision(precision, model.module, model.device,
                                             ("filters", layer, method, size, len(first_batch)), one_step)
        for start in range(0, len(chosen), batch_size):
            batch = chosen[start:start + batch_size]
            pictures, first, steps_history = _optimize(run, model, batch, steps, size, recipe, seed, precision,
                                                       lr, progress, objective)
            with torch.no_grad():
                scores.append(_channel_objective(run(pictures, "fp32"), batch, objective))
            images.append(pictures)
            initial.append(first)
            history.append(steps_history)
    images_, scores_, initial_ = torch.cat(images).cpu(), torch.cat(scores).cpu(), torch.cat(initial).cpu()
    flat = flat_pictures(images_)
    reached = reached_scores(scores_, initial_) & ~flat
    return FilterResult(images=images_, scores=scores_, filters=chosen, layer=layer, method=method, steps=steps,
                        size=size, seed=seed, precision=precision, initial_scores=initial_,
                        history=torch.cat(history, dim=1).cpu(), precision_reason=reason, objective=objective,
                        objectives=[objective] * len(chosen), reached=reached.tolist(),
                        flat=flat.tolist() if objective == "mean" else [False] * len(chosen))


def draw_filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
                 steps: int | None = None, size: int = DEFAULT_SIZE, method: str = DEFAULT_METHOD, seed: int = 0,
                 precision: str = FILTERS_PRECISION, progress: Callable[[int], None] | None = None,
                 objective: str = "mean") -> FilterResult:
    """:func:`optimize_filters`, then (for ``mean``) every picture that came out flat or not reached
    drawn again with ``neuron``, in one more batch; the redrawn picture replaces the first where
    it is reached (the first stays, marked not reached, where neither is). ``objectives``,
    ``reached`` and ``flat`` of the result say which (see :meth:`FilterResult.status`).

    The settings are taken as checked where they entered (:func:`~convscope.presentation.plans.plan_filters`,
    the filter cache's settings); only the filters are resolved here."""
    model = as_model(model)
    steps = RECIPES[method].default_steps if steps is None else steps
    chosen = parse_filter_spec(filters, model.layer(preactivation_path(model, layer)).shape[0])
    result = _ascend(model, layer, chosen, steps, size, method, seed, precision, None, FILTER_BATCH, progress,
                     objective)
    failed = [i for i, ok in enumerate(result.reached) if not ok]
    if objective != "mean" or not failed:
        return result
    again = _ascend(model, layer, [result.filters[i] for i in failed], steps, size, method, seed, result.precision,
                    None, FILTER_BATCH, progress, "neuron")
    for position, i in enumerate(failed):
        if not again.reached[position]:
            continue
        result.images[i] = again.images[position]
        result.scores[i] = again.scores[position]
        result.initial_scores[i] = again.initial_scores[position]
        result.objectives[i] = "neuron"
        result.reached[i] = again.reached[position]
    return result


def _objective_and_gradient(run: Callable[[torch.Tensor, str], torch.Tensor], picture: nn.Module,
                            gens: Sequence[torch.Generator], recipe: FilterRecipe, filters: list[int],
                            precision: str, objective: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """One step's objective (each filter's on its transformed picture) and its gradient with
    respect to the picture's parameters."""
    rgb = picture()
    if recipe.transform is not None:
        rgb = recipe.transform(rgb, gens)
    value = _channel_objective(run(rgb, precision), filters, objective)
    (grad,) = torch.autograd.grad(value.sum(), list(picture.parameters()))
    return value, grad


def _optimize(run: Callable[[torch.Tensor, str], torch.Tensor], model: Model, filters: list[int], steps: int,
              size: int, recipe: FilterRecipe, seed: int, precision: str, lr: float,
              progress: Callable[[int], None] | None,
              objective: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch: (final pictures, scores of the starting pictures, objective at every step)."""
    gens = generators(seed, filters, model.device)
    picture = recipe.picture(gens, size, model.device, model.preprocessing.channels)
    parameters = list(picture.parameters())
    update = recipe.update(parameters, lr)
    with torch.no_grad():
        first = _channel_objective(run(picture().float(), "fp32"), filters, objective)
    history = []
    with redirected_relus(model.module) if recipe.redirect_relus else nullcontext():
        for _ in range(steps):
            value, grad = _objective_and_gradient(run, picture, gens, recipe, filters, precision, objective)
            with torch.no_grad():
                update(grad)
            history.append(value.detach())
            if progress is not None:
                progress(1)
    with torch.no_grad():
        final = picture().float().clamp(0.0, 1.0)
    return final.detach(), first, torch.stack(history)


def filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
            steps: int | None = None, size: int = DEFAULT_SIZE, method: str = DEFAULT_METHOD, seed: int = 0,
            precision: str = FILTERS_PRECISION, objective: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Pictures of what each filter of ``layer`` responds to: ``(images, scores)``, images
    N x 3 x S x S RGB in [0, 1] (before the model's own normalization), scores the fp32 objective of
    each filter's pre-activation on its picture (``mean``: its spatial mean; ``neuron``: its centre
    value). ``filters``: a count, indices/ranges (``"0-15,32"``) or a list (default: the first 64).
    Deterministic for a seed on a given device."""
    result = optimize_filters(model, layer, filters, steps, size, method, seed, precision, objective=objective)
    return result.images, result.scores
