"""Which map to trust: every CAM method's map for an image and class, measured with the metrics of
:mod:`convscope.techniques.metrics` and ranked by the faithfulness score (insertion - deletion).

Honest output: methods whose maps are identical (max difference below 1e-6) form one group (with
the reason where it is known), an all-zero map is flagged ``empty``, and Eigen-CAM's independence
from the class is said once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..catalog import DEFAULT_METRICS, MAPS_PRECISION, SANITY_SEEDS
from ..errors import check_at_least
from ..images import ImageSource
from ..model import Model, as_input, as_model
from ..precision import check_precision
from ..specs import check_metrics, parse_methods
from . import attributions as pixel
from . import metrics as measure
from .cams import METHODS, CamSettings, cam_maps
from .capture import cam_layer

#: Maps closer than this everywhere are the same map.
SAME_MAP = 1e-6
CONSTANT_GRADIENT = ("the gradient is the same at every position of this layer (it feeds global average pooling "
                     "and a linear classifier), so these methods all reduce to the original CAM")


@dataclass
class MethodEvaluation:
    """One method's map for an image and class, and its measurements (None where not asked for).
    ``same_as``: the other methods with the identical map (this one stands for the group)."""

    method: str
    title: str
    map: torch.Tensor = field(repr=False)
    deletion: float | None = None
    insertion: float | None = None
    deletion_curve: list[float] | None = field(default=None, repr=False)
    insertion_curve: list[float] | None = field(default=None, repr=False)
    average_drop: float | None = None
    increase: float | None = None
    sanity: measure.SanityResult | None = None
    pointing: tuple[bool, float] | None = None
    empty: bool = False
    same_as: list[str] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        """The faithfulness score: insertion - deletion (higher is better)."""
        if self.insertion is None or self.deletion is None:
            return None
        return self.insertion - self.deletion


@dataclass
class Evaluation:
    """Every method for one image and class, best first; ``notes`` say what the numbers cannot."""

    image: int
    name: str
    class_index: int
    label: str
    layer: str
    methods: list[MethodEvaluation]
    notes: list[str] = field(default_factory=list)

    def groups(self) -> list[list[MethodEvaluation]]:
        """The ranked methods with identical maps together: each group's first stands for it."""
        by_name = {m.method: m for m in self.methods}
        seen: set[str] = set()
        groups = []
        for method in self.methods:
            if method.method not in seen:
                group = [method] + [by_name[name] for name in method.same_as if name in by_name]
                seen.update(m.method for m in group)
                groups.append(group)
        return groups

    def as_json(self) -> list[dict]:
        """One object per method: image, class, label, method, the metrics, sanity, pointing, empty."""
        rows = []
        for m in self.methods:
            row = {"image": self.name, "class": self.class_index, "label": self.label, "method": m.method,
                   "layer": self.layer, "deletion": _round(m.deletion), "insertion": _round(m.insertion),
                   "score": _round(m.score), "average_drop": _round(m.average_drop), "increase": _round(m.increase),
                   "empty": m.empty, "same_as": m.same_as}
            if m.sanity is not None:
                row["sanity"] = m.sanity.as_json()
            if m.pointing is not None:
                row["pointing"] = {"hit": m.pointing[0], "energy": round(m.pointing[1], 4)}
            rows.append(row)
        return rows


def group_title(group: Iterable[MethodEvaluation]) -> str:
    """The title of a group of methods with identical maps (see :meth:`Evaluation.groups`):
    ``Grad-CAM = HiResCAM``."""
    return " = ".join(m.title for m in group)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def check_methods(methods: str | Sequence[str]) -> list[str]:
    """``all`` or names (comma lists allowed) of registered methods -> method names, each checked."""
    return parse_methods(methods, ranked_method_names())


def ranked_method_names() -> list[str]:
    """Every method "which map to trust" ranks: the layer maps, then the pixel attributions."""
    return [*METHODS, *pixel.METHODS]


def method_title(name: str) -> str:
    """A ranked method's title (a layer map's or a pixel attribution's)."""
    return pixel.METHODS[name].title if name in pixel.METHODS else METHODS[name].title


def class_independent(name: str) -> bool:
    """Whether the method's map is the same for every class (by construction)."""
    return name not in pixel.METHODS and METHODS[name].class_independent


def method_maps(model: Model, x: torch.Tensor, name: str, layer: str, precision: str,
                classes: int | str | Sequence[int | str] | None) -> tuple[torch.Tensor, list[int]]:
    """The maps (B x H x W in [0, 1]) a method makes for "which map to trust", and each row's class: a
    layer map at ``layer`` in ``precision``; a pixel attribution with its default settings (guided
    Grad-CAM at ``layer``), as importance (:func:`~convscope.techniques.attributions.importance`)."""
    if name in pixel.METHODS:
        settings = pixel.attribution_settings(model, name, layer=layer if name == "guidedgradcam" else None)
        result = pixel.attributions(model, x, settings, classes)
        return pixel.importance(result.maps), result.classes
    result = cam_maps(model, x, CamSettings(layer, METHODS[name], precision), classes)
    return result.maps, result.classes


def evaluate(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
             classes: int | str | Sequence[int | str] | None = None, layer: str | None = None,
             methods: str | Sequence[str] = "all", metrics: str | Sequence[str] = DEFAULT_METRICS,
             steps: int = measure.STEPS, boxes: Mapping[tuple[int, int], Sequence[Sequence[float]]] | None = None,
             photo_sizes: Sequence[tuple[int, int]] | None = None, names: Sequence[str] | None = None,
             precision: str = MAPS_PRECISION, cascade: bool = True, sanity_seeds: int = SANITY_SEEDS,
             progress: Callable[[str], None] | None = None) -> list[Evaluation]:
    """Every method's map for each image and class, measured and ranked (see :class:`Evaluation`).

    ``classes``: as for :func:`~convscope.cam` (one for all images, one per image, None: each image's
    top-1). ``metrics``: any of :data:`METRIC_NAMES`; ``pointing`` needs ``boxes``, keyed by (image
    index, class index), in the photo's pixels (``photo_sizes``: each photo's (width, height)); an
    image and class without boxes is not scored by it, unless its target knows each map's region
    (segmentation, detection): then it points into that region.
    ``cascade``: the whole sanity cascade, or only its classifier step (enough for the verdict);
    ``sanity_seeds``: the randomizations whose correlations the sanity check averages.
    ``progress`` is told what is being done.
    """
    model = as_model(model, x)
    check_at_least("steps", steps, 1)
    check_precision(precision, model.device)
    check_at_least("sanity_seeds", sanity_seeds, 1)
    return evaluations(model, as_input(model, x), classes=classes, layer=cam_layer(model, layer),
                       methods=check_methods(methods),
                       # images without boxes: no pointing game, unless the target knows each map's region
                       metrics=check_metrics(metrics, boxes is not None or model.target.has_regions),
                       steps=steps, boxes=boxes, photo_sizes=photo_sizes, names=names, precision=precision,
                       cascade=cascade, sanity_seeds=sanity_seeds, progress=progress)


def evaluations(model: Model, x: torch.Tensor, *, classes: int | str | Sequence[int | str] | None, layer: str,
                methods: list[str], metrics: list[str], steps: int,
                boxes: Mapping[tuple[int, int], Sequence[Sequence[float]]] | None,
                photo_sizes: Sequence[tuple[int, int]] | None, names: Sequence[str] | None, precision: str,
                cascade: bool, progress: Callable[[str], None] | None,
                sanity_seeds: int = SANITY_SEEDS) -> list[Evaluation]:
    """:func:`evaluate` with every setting already checked (by :func:`evaluate` or the plan)."""
    chosen_methods, chosen_metrics = methods, metrics
    names = list(names) if names is not None else [f"image{i + 1}" for i in range(len(x))]
    first_maps, first_classes = method_maps(model, x, chosen_methods[0], layer, precision, classes)
    evaluations = []
    for row, cls in enumerate(first_classes):
        image = row if len(first_classes) == len(x) else 0
        say = progress or (lambda _: None)
        say(f"{names[image]}, class {cls}: maps")
        for method in chosen_methods:  # the methods that run the model once per channel or copy say so first
            cost = CamSettings(layer, METHODS[method], precision).passes_per_image(model) \
                if method in METHODS else None
            if cost is not None:
                say(f"{METHODS[method].title}: up to {cost[0]:,} forward passes ({cost[1]})")
        one = x[image:image + 1]
        maps = torch.stack([first_maps[row] if method == chosen_methods[0] else
                            method_maps(model, one, method, layer, precision, [cls])[0][0]
                            for method in chosen_methods])
        evaluation = Evaluation(image, names[image], cls, model.labels[cls], layer,
                                [MethodEvaluation(method, method_title(method), heat.cpu())
                                 for method, heat in zip(chosen_methods, maps)])
        where = (boxes or {}).get((image, cls))
        if where is None and "pointing" in chosen_metrics:
            where = model.regions(one, [cls])  # the region the target explains, else None
        _measure(model, one, cls, maps, evaluation, chosen_metrics, steps, precision, (cascade, sanity_seeds), say,
                 where, photo_sizes[image] if photo_sizes else None)
        _group_and_note(evaluation)
        evaluations.append(evaluation)
    return evaluations


def _measure(model: Model, one: torch.Tensor, cls: int, maps: torch.Tensor, evaluation: Evaluation,
             chosen: list[str], steps: int, precision: str, sanity: tuple[bool, int], say: Callable[[str], None],
             boxes: Sequence[Sequence[float]] | torch.Tensor | None, photo_size: tuple[int, int] | None) -> None:
    """The chosen metrics of one image and class's ``maps``; ``boxes``: the class's boxes in the photo's
    pixels, or the region its target explains (1 x H x W), for the pointing game."""
    count = len(maps)
    inputs, targets = one.expand(count, *one.shape[1:]), [cls] * count
    for kind in ("deletion", "insertion"):
        if kind in chosen:
            say(f"{evaluation.name}, class {cls}: {kind}")
            curves = measure.curves(model, inputs, maps, targets, kind, steps, precision=precision)
            for method, curve, area in zip(evaluation.methods, curves, measure.auc(curves)):
                setattr(method, kind, float(area))
                setattr(method, f"{kind}_curve", [round(float(p), 5) for p in curve])
    if "drop" in chosen:
        drops = measure.average_drop(model, inputs, maps, targets, precision)
        increases = measure.increase_in_confidence(model, inputs, maps, targets, precision)
        for method, drop, increase in zip(evaluation.methods, drops, increases):
            method.average_drop, method.increase = float(drop), float(increase)
    if "sanity" in chosen:
        say(f"{evaluation.name}, class {cls}: sanity check")
        for method, heat in zip(evaluation.methods, maps):
            def draw(m: Model, inputs: torch.Tensor, classes: Sequence[int], name: str = method.method) -> torch.Tensor:
                return method_maps(m, inputs, name, evaluation.layer, precision, classes)[0]
            method.sanity = measure.sanity(model, one, [cls], draw, evaluation.layer, heat[None], seeds=sanity[1],
                                           cascade=sanity[0])[0]
    if "pointing" in chosen and isinstance(boxes, torch.Tensor):
        hits, energies = measure.pointing_in(maps, boxes.expand(count, -1, -1))
        for method, hit, energy in zip(evaluation.methods, hits, energies):
            method.pointing = (bool(hit), float(energy))
    elif "pointing" in chosen and boxes:
        hits, energies = measure.pointing(maps, [boxes] * count, [photo_size] * count if photo_size else None)
        for method, hit, energy in zip(evaluation.methods, hits, energies):
            method.pointing = (bool(hit), float(energy))
    for method in evaluation.methods:
        method.empty = bool(method.map.max() <= 0)
    evaluation.methods.sort(key=lambda m: -m.score if m.score is not None else 0.0)


def _group_and_note(evaluation: Evaluation) -> None:
    """Identical maps grouped, empty maps and Eigen-CAM's class independence noted."""
    for method in evaluation.methods:
        method.same_as = [other.method for other in evaluation.methods if other is not method
                          and (other.map - method.map).abs().max() < SAME_MAP]
    names = {m.method for m in evaluation.methods}
    gradcam = next((m for m in evaluation.methods if m.method == "gradcam"), None)
    if gradcam is not None and "hirescam" in gradcam.same_as:
        by_name = {m.method: m for m in evaluation.methods}
        titles = group_title([gradcam, *(by_name[name] for name in gradcam.same_as)])
        evaluation.notes.append(f"{titles}: {CONSTANT_GRADIENT}.")
    for method in evaluation.methods:
        if method.empty:
            evaluation.notes.append(f"{method.title}: the map is empty -- no position raised the class score.")
    independent = [method_title(name) for name in names if class_independent(name)]
    for title in independent:
        evaluation.notes.append(f"{title} does not depend on the class: its map is the same for every class.")
