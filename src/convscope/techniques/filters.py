"""Filters: what each unit responds to, by gradient ascent in input space.

Each requested unit of a layer gets its own picture, all optimized together in one batch (item i
maximizes unit i) with the forward pass stopped at the target layer. A unit is a channel of a conv
layer (its objective and *score* taken on its **pre-activation**: the conv's output, or the
BatchNorm right after it, before the nonlinearity, so no filter starts stuck at a dead ReLU), a
channel of any other feature map, an entry of a vector (a Linear layer's neuron, a class score:
:data:`~convscope.techniques.units.LOGITS`) or a direction (see :mod:`convscope.techniques.units`):
``mean`` (default) a channel's spatial mean, ``neuron`` its value at the centre position (Lucid's
neuron objective: row h // 2, column w // 2). With ``diversity`` N > 1 each unit gets N pictures
drawn together, their similarity penalized (Lucid's diversity term). A recipe that starts from a
photo (``accentuate``) gets its ``photo`` and a regularization layer, where the distance between the
picture's and the photo's maps is held down (see :mod:`convscope.techniques.filter_recipes`).

A picture can fail in two ways, and :func:`draw_filters` (what the commands use) says which:
*flat* -- its pixels barely vary (every colour channel's standard deviation below
:data:`FLAT_STD`); for a filter whose weights sum negative (common in depthwise layers) a uniform
picture is the true optimum of the ``mean`` objective, so the ascent is right and the picture
useless -- and *not reached* -- the objective on the final picture is not above its value on the
starting picture. Every picture that failed with ``mean`` is drawn again with ``neuron``; one that
fails that too is marked not reached. A conv filter whose weights are all zero is *dead*: its
pre-activation is one constant for every input, so it is said so and not drawn again.

How a picture is parameterized, transformed and updated is a recipe (see
:mod:`convscope.techniques.filter_recipes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import DEFAULT_FILTERS, DEFAULT_SIZE, FILTER_SIZES, FILTERS_PRECISION, OBJECTIVES
from ..errors import InputError, check_at_least, check_between, check_choice
from ..hooks import evaluating, registered
from ..images import ImageSource, load_image
from ..layers import LayerInfo, has_fixed_grid
from ..model import Model, as_model
from ..precision import check_precision, choose_precision, computing_in, prepare_input
from ..specs import filter_spec
from .capture import stopping_at
from .filter_recipes import RECIPES, FilterRecipe, generators, redirected_relus
from .units import (
    accentuation_layer,
    check_class_scores,
    dead_units,
    diversified,
    diversity_layer,
    reads_class_scores,
    regularization_layer,
    unit_count,
    unit_layer,
    unit_values,
)

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
    """Module path of the output ``layer``'s units are read from (a conv's pre-activation, see
    :func:`convscope.techniques.units.unit_layer`)."""
    return unit_layer(model, layer).module


# -- running the model up to the layer ---------------------------------------------------------------
class UnitReader:
    """``reader(rgb, precision)`` runs the model on pictures (RGB in [0, 1]) and returns the output
    the units are read from (see :func:`truncated_at`); ``features`` then holds the feature map
    diversity compares (when asked for). Pictures the network cannot take at their size on the way
    to a vector (``vector``: a fixed flatten before a Linear layer) are seen resized to its input
    size from then on; a feature map too deep for them fails (see :func:`picture_size_for`). With
    ``at_input_size`` (class pictures) pictures smaller than the model's input are seen enlarged to
    it (bilinear), as the model sees photos -- and as Lucent's renderer sees every picture: measured
    on 25 classes, the default model's class pictures then transfer to EfficientNet-Lite1/Lite2 with
    top-5 0.88 / 0.84 (maco) instead of 0.64 / 0.52."""

    def __init__(self, model: Model, forward: Callable[[torch.Tensor], torch.Tensor], vector: bool = False,
                 at_input_size: bool = False) -> None:
        self._model, self._forward, self._vector, self._enlarge = model, forward, vector, at_input_size
        self._fixed = has_fixed_grid(model.all_layers()) or model.fixed_input_size
        self.features: torch.Tensor | None = None

    def __call__(self, rgb: torch.Tensor, precision: str) -> torch.Tensor:
        model = self._model
        if self._enlarge and rgb.shape[-1] < min(model.input_size):  # class pictures: seen as the model sees photos
            rgb = F.interpolate(rgb, size=model.input_size, mode="bilinear", align_corners=False)
        if self._vector and not self._fixed and tuple(rgb.shape[2:]) != model.input_size:
            try:
                return self._run(rgb, precision)
            except RuntimeError:  # a network that takes only its own size (a fixed flatten before a Linear)
                self._fixed = True
        if self._fixed and tuple(rgb.shape[2:]) != model.input_size:
            # a transformer's patch grid is fixed: its pictures are seen at its input size
            rgb = F.interpolate(rgb, size=model.input_size, mode="bilinear", align_corners=False)
        return self._run(rgb, precision)

    def _run(self, rgb: torch.Tensor, precision: str) -> torch.Tensor:
        model = self._model
        if model.frames is not None:  # a still: the picture in every frame
            rgb = rgb[:, :, None].expand(-1, -1, model.frames, -1, -1)
        with computing_in(model.device, precision):
            return self._forward(prepare_input(model.preprocessing.normalize(rgb)))


@contextmanager
def truncated_at(model: Model, layer: str, keep: LayerInfo | None = None) -> Iterator[UnitReader]:
    """Inside the block, ``run(rgb, precision)`` runs the model on pictures (RGB in [0, 1]) until the
    output ``layer``'s units are read from and returns it (a conv's pre-activation B x C x h x w; a
    transformer's layer as its map, the pictures resized to its input size, as for a model that takes
    only its own size (a Keras model built for one); a video network's B x C x t x h x w, each
    picture a still clip: repeated over its frames; a vector layer's B x N; :data:`LOGITS`: the
    target's class scores, the full forward pass); one hook for all the passes. With ``keep`` (a
    layer that runs no later: diversity's or accentuation's), ``run.features`` holds its map after each pass."""
    side = keep
    reader: UnitReader

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        assert side is not None
        reader.features = side.as_map(output).clone()  # an in-place op downstream must not change it

    target = None if reads_class_scores(model, layer) else unit_layer(model, layer)
    same_map = side is not None and target is not None and side.module == target.module
    keeping = [] if side is None or same_map else [(model.module.get_submodule(side.module), keep)]
    with registered(forward=keeping):
        if target is None:
            check_class_scores(model)
            reader = UnitReader(model, model.scores, vector=True, at_input_size=True)
            yield reader
            return
        with stopping_at(model.module, layer, model.module.get_submodule(target.module), target.view,
                         model.preactivations.get(target.module)) as stopped:
            def forward(x: torch.Tensor) -> torch.Tensor:
                output = stopped.run(x)
                if same_map:
                    reader.features = output
                return output
            reader = UnitReader(model, forward, vector=not target.is_spatial)
            yield reader


#: A picture whose every colour channel has a pixel standard deviation below this (RGB in [0, 1]) is flat.
FLAT_STD = 0.01


def score_images(model: Model | nn.Module, layer: str, images: torch.Tensor, filters: Sequence[int],
                 batch_size: int = FILTER_BATCH, objective: str = "mean",
                 direction: torch.Tensor | None = None) -> torch.Tensor:
    """The score of each picture: its unit's fp32 ``objective`` (a conv filter's pre-activation mean
    by default; no transforms), ``batch_size`` pictures per forward pass."""
    model = as_model(model, torch.zeros(1, 1, *images.shape[-2:]))
    scores = []
    with evaluating(model.module), torch.no_grad(), truncated_at(model, layer) as run:
        for start in range(0, len(filters), batch_size):
            batch = images[start:start + batch_size].to(model.device, torch.float32)
            scores.append(unit_values(run(batch, "fp32"), filters[start:start + batch_size], objective, direction))
    return torch.cat(scores)


# -- the optimization ------------------------------------------------------------------------------
@dataclass
class FilterResult:
    """Pictures (N x 3 x S x S, RGB in [0, 1]) of the units ``filters`` of ``layer`` (each unit
    ``copies`` times in a row with diversity), their scores, the scores of the starting pictures
    and the objective at every step (steps x N)."""

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
    #: The objective asked for; per picture, the one it maximizes (``neuron`` where a ``mean``
    #: picture failed and was drawn again), whether it was reached (the final picture scores above
    #: the starting one and is not flat), whether its ``mean`` picture was flat, and whether its
    #: filter is dead (all weights zero).
    objective: str = "mean"
    objectives: list[str] = field(default_factory=list)
    reached: list[bool] = field(default_factory=list)
    flat: list[bool] = field(default_factory=list)
    dead: list[bool] = field(default_factory=list)
    #: Pictures per unit (``diversity``), whether the unit is a direction, and the units' names (a
    #: class picture's label; empty for channels).
    copies: int = 1
    direction: bool = False
    labels: list[str] = field(default_factory=list)
    #: Per picture, where the ascent pushed the picture most (MaCo's transparency: the summed
    #: absolute gradient, N x S x S scaled to [0, 1]); None for recipes without one.
    transparency: torch.Tensor | None = field(default=None, repr=False)

    @property
    def redrawn(self) -> int:
        """Pictures shown with another objective than the one asked for (they were flat or not reached)."""
        return sum(objective != self.objective for objective in self.objectives)

    @property
    def not_reached(self) -> int:
        """Pictures not reached by any objective tried (dead filters included)."""
        return sum(not reached for reached in self.reached)

    def status(self, position: int) -> str:
        """The picture at ``position`` in words: ``""`` when fine, else why it is marked."""
        if self.dead and self.dead[position]:
            return DEAD
        if not self.reached[position]:
            return NOT_REACHED
        if self.objectives[position] != self.objective:
            return FLAT_REDRAWN if self.flat[position] else MEAN_NOT_REACHED
        return ""


#: How a marked picture is described (the report and ``<layer>.json`` use these words).
NOT_REACHED = "not reached"
DEAD = "dead (all weights zero)"
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


def check_filter_settings(method: str, steps: int | None, size: int, objective: str = "mean",
                          diversity: int = 1, photo: object = None) -> int:
    """Check the method, steps, size, objective, diversity and whether a photo is given before any
    work; returns the steps (the recipe's default for None)."""
    check_choice("method", method, RECIPES)
    check_choice("objective", objective, OBJECTIVES)
    steps = RECIPES[method].default_steps if steps is None else steps
    check_at_least("steps", steps, 1)
    check_between("size", size, MIN_SIZE, MAX_SIZE, " pixels")
    check_at_least("diversity", diversity, 1)
    if RECIPES[method].from_photo and photo is None:
        raise InputError(f"from: the {method} method starts from a photo; give one (--from IMAGE, photo=...)",
                         parameter="from")
    if photo is not None and not RECIPES[method].from_photo:
        starting = ", ".join(name for name, recipe in RECIPES.items() if recipe.from_photo)
        raise InputError(f"from: the {method} method does not start from a photo (only {starting} does)",
                         parameter="from")
    if photo is not None and diversity > 1:
        raise InputError("diversity: pictures that start from one photo are not drawn with diversity",
                         parameter="diversity")
    return steps


def photo_picture(source: ImageSource | torch.Tensor, size: int) -> torch.Tensor:
    """A photo as a picture to start from: 3 x S x S RGB in [0, 1], its largest centred square resized
    to ``size`` (antialiased bilinear); a tensor (3 x H x W or 1 x 3 x H x W, in [0, 1]) likewise."""
    if isinstance(source, torch.Tensor):
        rgb = source.detach().float().cpu()
        rgb = rgb[0] if rgb.dim() == 4 else rgb
        if rgb.dim() != 3 or rgb.shape[0] != 3:
            raise InputError(f"photo: expected 3 x H x W RGB in [0, 1], got shape {tuple(source.shape)}",
                             parameter="photo")
    else:
        image = load_image(source)
        rgb = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)
    height, width = rgb.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[None, :, top:top + side, left:left + side]
    return F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


@dataclass(frozen=True)
class Ascent:
    """Every setting of one ascent, checked: the layer whose units are drawn, the recipe
    (``method``), steps, picture size, seed, precision, learning rate (None: the recipe's),
    objective, pictures per unit (``diversity``) and the ``direction`` drawn instead of single units."""

    layer: str
    method: str
    steps: int
    size: int
    seed: int = 0
    precision: str = FILTERS_PRECISION
    lr: float | None = None
    objective: str = "mean"
    diversity: int = 1
    direction: torch.Tensor | None = None
    #: A recipe that starts from a photo: the photo (3 x S x S, RGB in [0, 1]) and the layer where the
    #: picture is held close to it (None: :func:`~convscope.techniques.units.accentuation_layer`).
    photo: torch.Tensor | None = None
    reg_layer: str | None = None

    @property
    def recipe(self) -> FilterRecipe:
        return RECIPES[self.method]

    def kept_layer(self, model: Model) -> LayerInfo | None:
        """The map the ascent compares besides the units: diversity's, or where a picture is held close
        to its photo; None for neither."""
        if self.recipe.from_photo:
            if self.reg_layer is None:
                return accentuation_layer(model, self.layer)
            return regularization_layer(model, self.layer, self.reg_layer)
        return diversity_layer(model, self.layer) if self.diversity > 1 else None

    def again_with(self, **changes: object) -> Ascent:
        """The same ascent with some settings changed."""
        return replace(self, **changes)


def drawable(model: Model | nn.Module, size: int) -> Model:
    """A :class:`Model` as it is; a plain module wrapped at its usual 224 x 224, or where it fails
    there (a network that takes only its own size, such as a CIFAR net), at the pictures' ``size``."""
    if isinstance(model, Model):
        return model
    try:
        return as_model(model)
    except InputError:
        return as_model(model, torch.zeros(1, 1, size, size))


def chosen_units(model: Model, layer: str, filters: str | int | Sequence[int] | None,
                 direction: torch.Tensor | None = None) -> list[int]:
    """The units to draw: from the spec (see :func:`parse_filter_spec`), or the one direction."""
    if direction is not None:
        return [0]
    return parse_filter_spec(filters, unit_count(model, layer))


def optimize_filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
                     steps: int | None = None, size: int = DEFAULT_SIZE, method: str = DEFAULT_METHOD,
                     seed: int = 0, precision: str = FILTERS_PRECISION, lr: float | None = None,
                     batch_size: int = FILTER_BATCH, progress: Callable[[int], None] | None = None,
                     objective: str = "mean", *, diversity: int = 1, direction: torch.Tensor | None = None,
                     photo: ImageSource | torch.Tensor | None = None, reg_layer: str | None = None) -> FilterResult:
    """Optimize one picture per unit of ``layer`` (``diversity`` per unit; all in batches of
    ``batch_size``) for ``objective`` (``mean`` or ``neuron``, see the module notes) and score them
    with it. ``layer`` may be any layer with a tensor output, or ``"logits"`` for class pictures;
    ``direction`` (C numbers) draws that direction of the layer instead of its units; ``photo`` (an
    image, or a tensor in [0, 1]) is where ``accentuate`` starts, held close to it at ``reg_layer``.

    ``steps`` and ``lr`` default to the recipe's: 64 steps and Adam lr 0.05 (lucid), 40 steps and a
    per-step RMS-normalized pixel change of 0.01 (classic). ``progress`` is called with the number
    of steps done after each step of each batch.
    """
    model = drawable(model, size)
    steps = check_filter_settings(method, steps, size, objective, diversity, photo)
    check_at_least("batch_size", batch_size, 1)
    check_precision(precision, model.device)
    start = None if photo is None else photo_picture(photo, size)
    ascent = Ascent(layer, method, steps, size, seed, precision, lr, objective, diversity, direction, start,
                    reg_layer)
    return _ascend(model, ascent, chosen_units(model, layer, filters, direction), batch_size, progress)


#: Copy k > 0 of a unit draws its random start from key ``unit + k * COPY_KEY`` (copy 0: ``unit``).
COPY_KEY = 10_000_019


def _ascend(model: Model, ascent: Ascent, chosen: list[int], batch_size: int,
            progress: Callable[[int], None] | None) -> FilterResult:
    """:func:`optimize_filters` with every setting checked and the units resolved."""
    recipe = ascent.recipe
    lr = recipe.default_lr if ascent.lr is None else ascent.lr
    items, keys, per_batch = _batching(ascent, chosen, batch_size)

    images, scores, initial, history, transparency = [], [], [], [], []
    with evaluating(model.module), truncated_at(model, ascent.layer, ascent.kept_layer(model)) as run:
        precision, reason = _chosen_precision(run, model, ascent, items[:per_batch], keys[:per_batch])
        for start in range(0, len(items), per_batch):
            batch = items[start:start + per_batch]
            gens = generators(ascent.seed, keys[start:start + per_batch], model.device)
            pictures, first, steps_history, pushed = _optimize(run, model, batch, gens, ascent, precision, lr,
                                                               progress)
            with torch.no_grad():
                scores.append(unit_values(run(pictures, "fp32"), batch, ascent.objective, ascent.direction))
            images.append(pictures)
            initial.append(first)
            history.append(steps_history)
            if pushed is not None:
                transparency.append(pushed)
    images_, scores_, initial_ = torch.cat(images).cpu(), torch.cat(scores).cpu(), torch.cat(initial).cpu()
    flat = flat_pictures(images_)
    dead = [False] * len(items) if ascent.direction is not None else dead_units(model, ascent.layer, items)
    reached = reached_scores(scores_, initial_) & ~flat & ~torch.tensor(dead, dtype=torch.bool)
    labels = [model.labels[unit] for unit in items] if reads_class_scores(model, ascent.layer) else []
    return FilterResult(images=images_, scores=scores_, filters=items, layer=ascent.layer, method=ascent.method,
                        steps=ascent.steps, size=ascent.size, seed=ascent.seed, precision=precision,
                        initial_scores=initial_, history=torch.cat(history, dim=1).cpu(), precision_reason=reason,
                        objective=ascent.objective, objectives=[ascent.objective] * len(items),
                        reached=reached.tolist(),
                        flat=flat.tolist() if ascent.objective == "mean" else [False] * len(items), dead=dead,
                        copies=ascent.diversity, direction=ascent.direction is not None, labels=labels,
                        transparency=torch.cat(transparency).cpu() if transparency else None)


def _batching(ascent: Ascent, chosen: list[int], batch_size: int) -> tuple[list[int], list[int], int]:
    """``(items, keys, per_batch)``: each unit repeated ``diversity`` times, each copy's random key,
    and the pictures per batch (a unit's copies share a batch)."""
    copies = ascent.diversity
    items = [unit for unit in chosen for _ in range(copies)]
    keys = [unit + copy * COPY_KEY for unit in chosen for copy in range(copies)]
    return items, keys, max(copies, batch_size // copies * copies)


def _chosen_precision(run: UnitReader, model: Model, ascent: Ascent, items: list[int],
                      keys: list[int]) -> tuple[str, str]:
    """The ascent's precision and why (:func:`~convscope.precision.choose_precision`): ``auto`` times
    one step on the first batch (``items`` with their ``keys``)."""
    def one_step(option: str) -> None:
        gens = generators(ascent.seed, keys, model.device)
        picture = _picture(ascent.recipe, gens, ascent, model)
        with redirected_relus(model.module) if ascent.recipe.redirect_relus else nullcontext():
            _objective_and_gradient(run, picture, gens, ascent, items, option)

    return choose_precision(ascent.precision, model.module, model.device,
                            ("filters", ascent.layer, ascent.method, ascent.size, ascent.diversity, len(items)),
                            one_step)


def filters_precision(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
                      size: int = DEFAULT_SIZE, method: str = DEFAULT_METHOD, seed: int = 0,
                      precision: str = FILTERS_PRECISION) -> str:
    """The precision :func:`draw_filters` computes the first batch of ``filters`` in with these
    settings: ``precision`` itself unless ``auto``, which is measured here (and remembered, as in
    the drawing). A job drawing a layer in many calls fixes it once with this, so that every part
    computes alike whatever each part would have measured."""
    model = drawable(model, size)
    ascent = Ascent(layer, method, RECIPES[method].default_steps, size, seed, precision)
    items, keys, per_batch = _batching(ascent, chosen_units(model, layer, filters), FILTER_BATCH)
    with evaluating(model.module), truncated_at(model, layer, ascent.kept_layer(model)) as run:
        return _chosen_precision(run, model, ascent, items[:per_batch], keys[:per_batch])[0]


def draw_filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
                 steps: int | None = None, size: int = DEFAULT_SIZE, method: str = DEFAULT_METHOD, seed: int = 0,
                 precision: str = FILTERS_PRECISION, progress: Callable[[int], None] | None = None,
                 objective: str = "mean", *, diversity: int = 1, direction: torch.Tensor | None = None,
                 photo: torch.Tensor | None = None, reg_layer: str | None = None) -> FilterResult:
    """:func:`optimize_filters` (``photo`` a picture to start from, see :func:`photo_picture`), then
    (for ``mean`` on a feature map, one picture per unit, not from a photo) every picture that came
    out flat or not reached -- a dead filter aside -- drawn again with ``neuron``, in one more batch;
    the redrawn picture replaces the first where it is reached (the first stays, marked not reached,
    where neither is). ``objectives``, ``reached``, ``flat`` and ``dead`` of the
    result say which (see :meth:`FilterResult.status`).

    The settings are taken as checked where they entered (:func:`~convscope.presentation.plans.plan_filters`,
    the filter cache's settings); only the units are resolved here."""
    model = drawable(model, size)
    steps = RECIPES[method].default_steps if steps is None else steps
    ascent = Ascent(layer, method, steps, size, seed, precision, None, objective, diversity, direction, photo,
                    reg_layer)
    result = _ascend(model, ascent, chosen_units(model, layer, filters, direction), FILTER_BATCH, progress)
    failed = [i for i, ok in enumerate(result.reached) if not ok and not result.dead[i]]
    spatial = not reads_class_scores(model, layer) and unit_layer(model, layer).is_spatial
    if objective != "mean" or not failed or diversity > 1 or not spatial or photo is not None:
        return result
    again = _ascend(model, ascent.again_with(precision=result.precision, objective="neuron"),
                    [result.filters[i] for i in failed], FILTER_BATCH, progress)
    for position, i in enumerate(failed):
        if not again.reached[position]:
            continue
        result.images[i] = again.images[position]
        result.scores[i] = again.scores[position]
        result.initial_scores[i] = again.initial_scores[position]
        result.objectives[i] = "neuron"
        result.reached[i] = again.reached[position]
    return result


def _picture(recipe: FilterRecipe, gens: Sequence[torch.Generator], ascent: Ascent, model: Model) -> nn.Module:
    """The recipe's parameterization for one batch (started from the photo for a recipe ``from_photo``)."""
    if recipe.from_photo:
        return recipe.picture(gens, ascent.size, model.device, model.preprocessing.channels, start=ascent.photo)
    return recipe.picture(gens, ascent.size, model.device, model.preprocessing.channels)


@dataclass
class _Terms:
    """One step's pieces: each unit's objective, and (accentuation) each picture's distance to its photo."""

    values: torch.Tensor
    distances: torch.Tensor | None = None
    seen: torch.Tensor | None = None  # the picture before its transform (for a transparency)


def _terms(run: UnitReader, picture: nn.Module, gens: Sequence[torch.Generator], ascent: Ascent, units: list[int],
           precision: str) -> _Terms:
    """The units' objectives on the transformed pictures and, for a recipe ``from_photo``, each
    picture's distance to its photo at the regularization layer: the mean over positions of the
    Euclidean distance over channels, both seen through the same crops (objective and distance each
    averaged over the recipe's ``views``)."""
    recipe = ascent.recipe
    rgb = picture()
    if recipe.from_photo:
        assert ascent.photo is not None and recipe.transform is not None
        photos = ascent.photo.to(rgb.device, rgb.dtype).expand_as(rgb)
        acts = run(recipe.transform(torch.cat([rgb, photos]), gens, recipe.views), precision)
        assert run.features is not None
        maps, views = run.features.float(), recipe.views
        half = len(rgb) * views  # each picture's views in a row, then its photo's
        distances = (maps[:half] - maps[half:]).norm(dim=1).flatten(1).mean(dim=1).view(len(rgb), views).mean(dim=1)
        seen = [unit for unit in units for _ in range(views)]
        values = unit_values(acts[:half], seen, ascent.objective, ascent.direction).view(len(rgb), views).mean(dim=1)
        return _Terms(values, distances, rgb)
    seen = recipe.transform(rgb, gens) if recipe.transform is not None else rgb
    return _Terms(unit_values(run(seen, precision), units, ascent.objective, ascent.direction), None, rgb)


def _objective_and_gradient(run: UnitReader, picture: nn.Module, gens: Sequence[torch.Generator], ascent: Ascent,
                            units: list[int], precision: str, balance: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One step: each unit's objective on its transformed picture, the gradient of what the ascent
    maximizes with respect to the picture's parameters -- the units' sum; with diversity, less its
    penalty; from a photo, less ``balance * distance`` per picture -- and, for a recipe that keeps a
    transparency, the gradient's absolute value on the picture summed over its colours (B x S x S)."""
    recipe = ascent.recipe
    terms = _terms(run, picture, gens, ascent, units, precision)
    total = terms.values.sum()
    if ascent.diversity > 1:
        assert run.features is not None
        total = diversified(terms.values, run.features, ascent.diversity)
    if terms.distances is not None:
        total = total - (terms.distances * (balance if balance is not None else 0.0)).sum()
    wrt = [*picture.parameters(), terms.seen] if recipe.transparency else list(picture.parameters())
    grads = torch.autograd.grad(total, wrt)
    pushed = grads[-1].float().abs().sum(dim=1) if recipe.transparency else None
    return terms.values, grads[0], pushed


#: Accentuation's weight of the distance to the photo (faccent's ``accent_reg_alpha``, whose default
#: is 1). Measured on the default model (4 class logits from the ``chelsea`` photo, 128 px, 64 steps):
#: with 1 the balanced terms hold the picture at the photo (mean logit 2.7 -> 4.0, the pictures
#: indistinguishable from it); with 0.1 it rises to 40 and the pictures stay the photo, accentuated.
ACCENTUATION_ALPHA = 0.1


def _balance(run: UnitReader, picture: nn.Module, gens: Sequence[torch.Generator], ascent: Ascent,
             units: list[int], precision: str) -> torch.Tensor:
    """Per picture, ``alpha * |d unit / d params|_1 / |d distance / d params|_1`` on one transform draw
    at the start (faccent's balance, taken per picture: the pictures of a batch are independent);
    the draw is taken from copies of the generators, so the ascent's own draws are not moved."""
    copies = [torch.Generator(device=g.device) for g in gens]
    for copy, g in zip(copies, gens):
        copy.set_state(g.get_state())
    terms = _terms(run, picture, copies, ascent, units, precision)
    assert terms.distances is not None
    (parameter,) = list(picture.parameters())
    (unit_grad,) = torch.autograd.grad(terms.values.sum(), [parameter], retain_graph=True)
    (distance_grad,) = torch.autograd.grad(terms.distances.sum(), [parameter])
    sizes = unit_grad.abs().flatten(1).sum(dim=1), distance_grad.abs().flatten(1).sum(dim=1)
    return ACCENTUATION_ALPHA * sizes[0] / sizes[1].clamp(min=1e-12)


def _optimize(run: UnitReader, model: Model, units: list[int], gens: Sequence[torch.Generator], ascent: Ascent,
              precision: str, lr: float, progress: Callable[[int], None] | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One batch: (final pictures, scores of the starting pictures, objective at every step, the
    transparency: the summed pushes scaled to [0, 1] per picture, or None)."""
    recipe = ascent.recipe
    picture = _picture(recipe, gens, ascent, model)
    parameters = list(picture.parameters())
    update = recipe.update(parameters, lr)
    with torch.no_grad():
        first = unit_values(run(picture().float(), "fp32"), units, ascent.objective, ascent.direction)
    history, pushed, balance = [], None, None
    with redirected_relus(model.module) if recipe.redirect_relus else nullcontext():
        if recipe.from_photo:
            balance = _balance(run, picture, gens, ascent, units, precision)
        for _ in range(ascent.steps):
            value, grad, push = _objective_and_gradient(run, picture, gens, ascent, units, precision, balance)
            with torch.no_grad():
                update(grad)
            history.append(value.detach())
            if push is not None:
                pushed = push if pushed is None else pushed + push
            if progress is not None:
                progress(1)
    with torch.no_grad():
        final = picture().float().clamp(0.0, 1.0)
    if pushed is not None:
        pushed = pushed / pushed.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    return final.detach(), first, torch.stack(history), pushed


def filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
            steps: int | None = None, size: int = DEFAULT_SIZE, method: str = DEFAULT_METHOD, seed: int = 0,
            precision: str = FILTERS_PRECISION, objective: str = "mean", *, diversity: int = 1,
            direction: torch.Tensor | None = None, photo: ImageSource | torch.Tensor | None = None,
            reg_layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pictures of what each unit of ``layer`` responds to: ``(images, scores)``, images
    N x 3 x S x S RGB in [0, 1] (before the model's own normalization), scores the fp32 objective of
    each unit on its picture (a conv filter's pre-activation: ``mean`` its spatial mean, ``neuron``
    its centre value; a vector's entry; ``"logits"``: class scores). ``filters``: a count,
    indices/ranges (``"0-15,32"``) or a list (default: the first 64); ``diversity``: pictures per
    unit; ``direction``: draw that direction (C numbers) instead; ``photo``: where ``accentuate``
    starts (held close to it at ``reg_layer``). A plain module that fails at
    224 x 224 is drawn at ``size``. Deterministic for a seed on a given device."""
    result = optimize_filters(model, layer, filters, steps, size, method, seed, precision, objective=objective,
                              diversity=diversity, direction=direction, photo=photo, reg_layer=reg_layer)
    return result.images, result.scores
