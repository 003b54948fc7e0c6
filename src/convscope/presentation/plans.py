"""Plans: what a command or a report section will do, checked completely before any work.

Each technique has one small plan -- :class:`ActivationsPlan`, :class:`FiltersPlan`, :class:`CamPlan`,
:class:`EvaluatePlan`, :class:`ExplainPlan` -- made by ``plan_*`` (which resolves layers, filters and
classes and checks every setting, raising the errors a user can cause before anything heavy runs)
and carried out by its ``write`` method (compute, draw, write the files).
The command line and ``convscope run`` both go through them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..catalog import (
    ATTRIBUTION_ALPHA,
    CAM_ALPHA,
    CMAP,
    EXPLAIN_DIR,
    FILTERS_DIR,
    FILTERS_PRECISION,
    MAPS_PRECISION,
    NORMALIZE,
    PER_ROW,
    SANITY_SEEDS,
)
from ..errors import InputError, check_at_least, check_between, check_choice
from ..images import ImageSource
from ..layers import default_filter_layers
from ..model import Model, Prediction
from ..precision import check_precision
from ..techniques.activations import activation_layers, capture, check_memory
from ..techniques.attributions import AttributionSettings, attribution_settings, attributions
from ..techniques.cams import DEFAULT_METHOD as DEFAULT_CAM_METHOD
from ..techniques.cams import CamSettings, cam_maps, cam_settings
from ..techniques.capture import cam_layer
from ..techniques.evaluate import DEFAULT_METRICS, Evaluation, check_methods, check_metrics, evaluations
from ..techniques.explain import DEFAULT_TOP as EXPLAIN_TOP
from ..techniques.explain import Explanation, check_explain_top, explanations
from ..techniques.filters import DEFAULT_METHOD as DEFAULT_FILTER_METHOD
from ..techniques.filters import (
    DEFAULT_SIZE,
    FilterResult,
    check_filter_settings,
    draw_filters,
    parse_filter_spec,
    photo_picture,
    picture_size_for,
    total_steps,
)
from ..techniques.metrics import STEPS, check_box
from ..techniques.units import (
    LOGITS,
    check_class_scores,
    input_kernels,
    read_direction,
    regularization_layer,
    unit_count,
)
from .drawing import NORMALIZATIONS, colormap_lut
from .filter_cache import FilterSettings, cached_filter_pictures, filter_layer, filter_settings, missing_steps
from .writers import (
    WrittenAttribution,
    WrittenCam,
    WrittenEvaluation,
    WrittenExplanation,
    WrittenGrid,
    write_activation_grids,
    write_attribution_files,
    write_cam_files,
    write_evaluations,
    write_explanations,
    write_filter_grids,
)

#: Image-and-class pairs whose maps are computed in one call.
CAM_BATCH = 8


def check_top(model: Model, top: int) -> int:
    """``top`` classes, checked against the model's class count."""
    check_at_least("top", top, 1)
    if not model.target.finds_entries and top > len(model.labels):  # a detector's boxes are found later
        raise InputError(f"top {top}: the model has only {len(model.labels)} classes", parameter="top")
    return top


# -- intermediate outputs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ActivationsPlan:
    """Which layers' outputs to capture, and how to draw them."""

    layers: list[str]
    per_row: int = PER_ROW
    normalize: str = NORMALIZE
    cmap: str = CMAP
    save_raw: bool = False

    def write(self, model: Model, x: torch.Tensor, folder: Path) -> tuple[dict[str, torch.Tensor], list[WrittenGrid]]:
        """Capture the layers for the one image ``x`` (1 x 3 x H x W) and write its grids into ``folder``."""
        outputs = capture(model, x, self.layers)
        written = write_activation_grids(outputs, folder, per_row=self.per_row, normalize=self.normalize,
                                         cmap=self.cmap, save_raw=self.save_raw)
        return outputs, written


def plan_activations(model: Model, input_shape: Sequence[int], layers: str | Sequence[str] | None = None, *,
                     per_row: int = PER_ROW, normalize: str = NORMALIZE, cmap: str = CMAP,
                     save_raw: bool = False) -> ActivationsPlan:
    """The layers (default: every conv and pooling layer) checked to output feature maps whose
    capture for an input of ``input_shape`` fits in memory, and the drawing settings checked."""
    check_at_least("per_row", per_row, 1)
    check_choice("normalize", normalize, NORMALIZATIONS)
    colormap_lut(cmap)
    names = activation_layers(model, layers)
    check_memory(model, names, input_shape)
    return ActivationsPlan(names, per_row, normalize, cmap, save_raw)


# -- filters ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FiltersPlan:
    """Which units of which layers to draw (``"logits"``: class pictures), and how; ``sizes`` holds
    the layers whose pictures had to be larger than ``size`` to reach them, and ``notes`` says so in
    words; ``diversity`` pictures per unit; ``direction`` (with its file's name) drawn instead of
    the units of the one layer."""

    layers: list[tuple[str, list[int]]]
    steps: int
    size: int = DEFAULT_SIZE
    method: str = DEFAULT_FILTER_METHOD
    seed: int = 0
    precision: str = FILTERS_PRECISION
    save_raw: bool = False
    sizes: dict[str, int] = field(default_factory=dict)
    objective: str = "mean"
    diversity: int = 1
    direction: torch.Tensor | None = None
    direction_name: str = ""
    transparency: bool = False
    #: ``accentuate``: the photo its pictures start from (3 x S x S) and the layer where they stay close to it.
    photo: torch.Tensor | None = None
    reg_layer: str | None = None

    @property
    def notes(self) -> list[str]:
        """The layers drawn larger than ``size``, in words."""
        return [f"{name}: pictures of {self.size} px do not reach this layer; drawn at {needed} px"
                for name, needed in self.sizes.items()]

    def settings_for(self, name: str) -> FilterSettings:
        """The filter cache's settings of layer ``name`` (a conv of this plan, drawn at its size)."""
        return FilterSettings(self.method, self.steps, self.sizes.get(name, self.size), self.seed, self.objective)

    @property
    def total_steps(self) -> int:
        """Optimization steps in all (what a progress bar counts)."""
        return total_steps([len(chosen) * self.diversity for _, chosen in self.layers], self.steps)

    def write(self, model: Model, folder: Path,
              progress: Callable[[int], None] | None = None) -> Iterator[tuple[FilterResult, Path]]:
        """Draw each layer's filters (flat or unreached ``mean`` pictures again with ``neuron``, see
        :func:`~convscope.techniques.filters.draw_filters`) and write its grid into ``folder``, one
        layer at a time."""
        for name, chosen in self.layers:
            result = draw_filters(model, name, chosen, steps=self.steps, size=self.sizes.get(name, self.size),
                                  method=self.method, seed=self.seed, precision=self.precision, progress=progress,
                                  objective=self.objective, diversity=self.diversity, direction=self.direction,
                                  photo=self._photo_at(name), reg_layer=self.reg_layer)
            kernels = None if self.direction is not None else input_kernels(model, name)
            yield result, write_filter_grids(result, folder, save_raw=self.save_raw, direction=self.direction_name,
                                             transparency=self.transparency, kernels=kernels)


    def _photo_at(self, name: str) -> torch.Tensor | None:
        """The photo at the size layer ``name`` is drawn at."""
        size = self.sizes.get(name, self.size)
        if self.photo is None or self.photo.shape[-1] == size:
            return self.photo
        return F.interpolate(self.photo[None], size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)[0].clamp(0, 1)


def plan_filters(model: Model, layers: str | Sequence[str] | None = None, filters: str | int | None = None, *,
                 steps: int | None = None, size: int = DEFAULT_SIZE, method: str = DEFAULT_FILTER_METHOD,
                 seed: int = 0, precision: str = FILTERS_PRECISION, save_raw: bool = False,
                 objective: str = "mean", classes: Sequence[int | str] = (), diversity: int = 1,
                 direction: str | os.PathLike | None = None, transparency: bool = False,
                 photo: ImageSource | None = None, reg_layer: str | None = None) -> FiltersPlan:
    """The layers (default: the first conv of each block; named layers of any kind; patterns match
    conv layers) with their unit indices, and the ``classes`` (names or indices: class pictures,
    layer ``"logits"``), checked; ``direction``: a ``.npy`` file of the one layer's channels;
    ``transparency``: also write the recipe's transparency maps (``maco``); ``photo``: where
    ``accentuate`` starts, read here (held close to it at ``reg_layer``)."""
    steps = check_filter_settings(method, steps, size, objective, diversity, photo)
    start = None if photo is None else photo_picture(photo, size)
    if layers is None:
        names = [] if classes or direction is not None else default_filter_layers(model.all_layers())
    else:
        names = model.select_layers(layers, "conv")
    if direction is not None and (len(names) != 1 or classes):
        raise InputError(f"direction: give exactly one layer for it with --layers (got {len(names) + bool(classes)})",
                         parameter="direction")
    if not names and not classes:
        raise InputError("layers: no convolution layers found", parameter="layers")
    vector = None
    if direction is not None:
        vector = read_direction(direction, unit_count(model, names[0]), names[0])
        chosen = [(names[0], [0])]
    else:
        chosen = [(name, parse_filter_spec(filters, unit_count(model, name))) for name in names]
    if classes:
        check_class_scores(model)
        chosen.append((LOGITS, list(dict.fromkeys(model.class_index(c) for c in classes))))
    drawn = [name for name, _ in chosen]
    if reg_layer is not None:
        for name in drawn:
            regularization_layer(model, name, reg_layer)
    sizes = {name: needed for name in drawn if (needed := picture_size_for(model, name, size)) != size}
    return FiltersPlan(chosen, steps, size, method, seed, check_precision(precision, model.device), save_raw, sizes,
                       objective, diversity, vector, Path(direction).name if direction is not None else "",
                       transparency, start, reg_layer)


# -- class activation maps ----------------------------------------------------------------------------
def chosen(predictions: Sequence[Prediction], image: str) -> list[int]:
    """The classes the target explains by default for one image (a classifier's top-1, a multilabel
    model's every class above the threshold): an InputError naming ``image`` when there is none."""
    picked = [p.index for p in predictions if p.chosen]
    if not picked:
        best = f" (highest: {predictions[0].label} {predictions[0].value:.0%})" if predictions else ""
        raise InputError(f"threshold: no class of {image} is above it{best}; lower --threshold or give --class",
                         parameter="threshold")
    return picked


def class_pairs(classes: Sequence[int], top: int | None, ranked: Sequence[Sequence[Prediction]],
                names: Sequence[str] = (), labels: Sequence[str] = ()) -> list[tuple[int, int]]:
    """(image index, class) for each map of a plan: the given ``classes`` for every image, else its
    ``top`` predicted ones, else (None) the ones its target chooses (``ranked``: each image's
    predictions, best first). A given class with an empty region (a segmentation class no pixel of
    the image is assigned to: not among its predictions) is an InputError naming the image (``names``)
    and the class (``labels``)."""
    pairs = []
    for i, predictions in enumerate(ranked):
        image = names[i] if i < len(names) else f"image {i + 1}"
        if classes and predictions and predictions[0].kind == "pixels":
            listed = {p.index for p in predictions}
            for cls in classes:
                if cls not in listed:
                    name = labels[cls] if cls < len(labels) else str(cls)
                    present = ", ".join(f"{p.label} {p.value:.0%}" for p in predictions[:3])
                    raise InputError(f"classes: no pixel of {image} is assigned to {name!r}, so its region is "
                                     f"empty (the model assigns {present}); give another class or a region",
                                     parameter="classes")
        picked = classes or ([p.index for p in predictions[:top]] if top is not None else chosen(predictions, image))
        pairs += [(i, cls) for cls in picked]
    return pairs


@dataclass(frozen=True)
class CamPlan:
    """The map settings (checked by :func:`plan_cam`: layer or layers, method and its options), the
    overlay's alpha, and for each image the given classes, the ``top`` predicted ones or (None) those
    its target chooses."""

    settings: CamSettings
    alpha: float = CAM_ALPHA
    classes: tuple[int, ...] = ()
    top: int | None = None
    save_raw: bool = False

    @property
    def layer(self) -> str:
        """The layer the maps are of: the settings' layer, or every fused layer joined by `` + ``."""
        return " + ".join(self.settings.layers)

    @property
    def method(self) -> str:
        return self.settings.method.name

    def pairs(self, ranked: Sequence[Sequence[Prediction]], names: Sequence[str] = (),
              labels: Sequence[str] = ()) -> list[tuple[int, int]]:
        """(image index, class) for each map: see :func:`class_pairs`."""
        return class_pairs(self.classes, self.top, ranked, names, labels)

    def write(self, model: Model, x: torch.Tensor, photos: Sequence[Image.Image], stems: Sequence[str],
              pairs: Sequence[tuple[int, int]], folder: Path, map_size: tuple[int, int] | None = None,
              progress: Callable[[int], None] | None = None) -> list[WrittenCam]:
        """Compute the maps of ``pairs``, :data:`CAM_BATCH` at a time, and write them into ``folder``
        (``progress``: the masked inputs or noisy copies as they are done)."""
        written = []
        for start in range(0, len(pairs), CAM_BATCH):
            chunk = pairs[start:start + CAM_BATCH]
            images = [i for i, _ in chunk]
            result = cam_maps(model, x[images], self.settings, [c for _, c in chunk], progress=progress)
            written += write_cam_files(result, images, photos, stems, model.labels, folder, alpha=self.alpha,
                                       save_raw=self.save_raw, map_size=map_size,
                                       regions=model.regions(x[images], result.classes))
        return written


def plan_cam(model: Model, layer: str | Sequence[str] | None = None, classes: Sequence[int | str] = (),
             top: int | None = None, *, method: str = DEFAULT_CAM_METHOD, precision: str = MAPS_PRECISION,
             alpha: float = CAM_ALPHA, save_raw: bool = False, **options: Any) -> CamPlan:
    """The layer (default: the last feature map before global pooling) or layers, classes, method,
    overlay settings and the map's ``options`` (``aug_smooth``, ``eigen_smooth``, ``seed``,
    ``samples``, ``fuse``; see :func:`~convscope.techniques.cams.cam_settings`), checked."""
    check_between("alpha", alpha, 0, 1)
    settings = cam_settings(model, layer, method, precision, **options)
    fixed = tuple(model.class_index(value) for value in classes)
    top = None if top is None else check_top(model, top)
    return CamPlan(settings, alpha, fixed, top, save_raw)


# -- pixel attributions -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttributePlan:
    """The attribution's settings (checked by :func:`plan_attribute`), the overlay's alpha, and for
    each image the given classes, the ``top`` predicted ones or (None) those its target chooses."""

    settings: AttributionSettings
    alpha: float = ATTRIBUTION_ALPHA
    classes: tuple[int, ...] = ()
    top: int | None = None
    save_raw: bool = False

    def pairs(self, ranked: Sequence[Sequence[Prediction]], names: Sequence[str] = (),
              labels: Sequence[str] = ()) -> list[tuple[int, int]]:
        """(image index, class) for each map: see :func:`class_pairs`."""
        return class_pairs(self.classes, self.top, ranked, names, labels)

    def write(self, model: Model, x: torch.Tensor, photos: Sequence[Image.Image], stems: Sequence[str],
              pairs: Sequence[tuple[int, int]], folder: Path) -> list[WrittenAttribution]:
        """Compute the attributions of ``pairs``, :data:`CAM_BATCH` at a time, and write them into ``folder``."""
        written = []
        for start in range(0, len(pairs), CAM_BATCH):
            chunk = pairs[start:start + CAM_BATCH]
            images = [i for i, _ in chunk]
            result = attributions(model, x[images], self.settings, [c for _, c in chunk])
            written += write_attribution_files(result, images, photos, stems, model.labels, folder, alpha=self.alpha,
                                               save_raw=self.save_raw)
        return written


def plan_attribute(model: Model, method: str, classes: Sequence[int | str] = (), top: int | None = None, *,
                   alpha: float = ATTRIBUTION_ALPHA, save_raw: bool = False, **options: Any) -> AttributePlan:
    """The method and its ``options`` (see :func:`~convscope.techniques.attributions.attribution_settings`),
    classes and overlay settings, checked."""
    check_between("alpha", alpha, 0, 1)
    settings = attribution_settings(model, method, **options)
    fixed = tuple(model.class_index(value) for value in classes)
    top = None if top is None else check_top(model, top)
    return AttributePlan(settings, alpha, fixed, top, save_raw)


# -- which map to trust ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluatePlan:
    """Which methods and metrics, for which classes (given, or each image's top-1), with which boxes
    (read from the boxes file, checked against the images and classes before any work)."""

    layer: str
    methods: list[str]
    metrics: list[str]
    steps: int = STEPS
    precision: str = MAPS_PRECISION
    classes: tuple[int, ...] = ()
    boxes_file: dict[str, Any] | None = None
    cascade: bool = True
    sanity_seeds: int = SANITY_SEEDS

    def classes_for(self, ranked: Sequence[Sequence[Prediction]]) -> list[list[int]]:
        """Per image, the classes to evaluate: the given ones, or the ones its target chooses (a
        classifier's top-1)."""
        return [list(self.classes) or chosen(predictions, f"image {i + 1}") for i, predictions in enumerate(ranked)]

    def boxes(self, model: Model, names: Sequence[str], photos: Sequence[Image.Image],
              classes: Sequence[Sequence[int]]) -> dict[tuple[int, int], list[list[float]]]:
        """``(image index, class) -> boxes`` from the boxes file, every name, class and box checked."""
        if self.boxes_file is None:
            return {}
        keys = {}
        for index, name in enumerate(names):
            for key in {name, Path(name).name, name.split(":", 1)[-1]}:
                keys[key] = index
        unknown = [name for name in self.boxes_file if name not in keys]
        if unknown:
            raise InputError(f"boxes: {', '.join(repr(n) for n in unknown[:3])} not among the images of this run "
                             f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})", parameter="boxes")
        found: dict[tuple[int, int], list[list[float]]] = {}
        for name, per_class in self.boxes_file.items():
            index = keys[name]
            if not isinstance(per_class, dict):
                raise InputError(f"boxes: {name}: expected {{class: [x0, y0, x1, y1]}}", parameter="boxes")
            for label, boxes in per_class.items():
                cls = model.class_index(label)
                if cls not in classes[index]:
                    raise InputError(f"boxes: {name}: class {label!r} is not evaluated for this image (classes "
                                     f"{', '.join(map(str, classes[index]))})", parameter="boxes")
                many = boxes if boxes and isinstance(boxes[0], (list, tuple)) else [boxes]
                found[(index, cls)] = [check_box(box, photos[index].size, f"{name} {label}") for box in many]
        return found

    def write(self, model: Model, x: torch.Tensor, photos: Sequence[Image.Image], names: Sequence[str],
              stems: Sequence[str], ranked: Sequence[Sequence[Prediction]], folder: Path,
              progress: Callable[[str], None] | None = None) -> tuple[Path, list[WrittenEvaluation]]:
        """Evaluate every image's classes and write ``folder/metrics.json`` and the pictures."""
        classes = self.classes_for(ranked)
        boxes = self.boxes(model, names, photos, classes)
        found: list[Evaluation] = []
        for index in range(len(x)):
            for evaluation in evaluations(model, x[index:index + 1], classes=classes[index], layer=self.layer,
                                          methods=self.methods, metrics=self.metrics, steps=self.steps,
                                          boxes={(0, c): b for (i, c), b in boxes.items() if i == index},
                                          photo_sizes=[photos[index].size], names=[names[index]],
                                          precision=self.precision, cascade=self.cascade,
                                          sanity_seeds=self.sanity_seeds, progress=progress):
                evaluation.image = index
                found.append(evaluation)
        return write_evaluations(found, photos, stems, folder)


def read_boxes_file(path: str | os.PathLike) -> dict[str, Any]:
    """The boxes file: JSON ``{image file name: {class index or label: [x0, y0, x1, y1], ...}}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"boxes {path}: no such file", parameter="boxes") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"boxes {path}: not a JSON file ({exc})", parameter="boxes") from None
    if not isinstance(data, dict):
        raise InputError(f"boxes {path}: expected {{image file name: {{class: box}}}}", parameter="boxes")
    return data


def plan_evaluate(model: Model, layer: str | None = None, methods: str | Sequence[str] = "all",
                  metrics: str | Sequence[str] = DEFAULT_METRICS, classes: Sequence[int | str] = (),
                  steps: int = STEPS, boxes: str | os.PathLike | None = None, precision: str = MAPS_PRECISION,
                  cascade: bool = True, sanity_seeds: int = SANITY_SEEDS) -> EvaluatePlan:
    """Methods, metrics, steps, layer, classes, the sanity check's seeds and the boxes file, all
    checked before any work."""
    check_at_least("sanity_seeds", sanity_seeds, 1)
    chosen_methods = check_methods(methods)
    chosen_metrics = check_metrics(metrics, boxes is not None or model.target.has_regions)
    check_at_least("steps", steps, 1)
    boxes_file = read_boxes_file(boxes) if boxes is not None else None
    if boxes_file is not None and "pointing" not in chosen_metrics:
        chosen_metrics.append("pointing")
    fixed = tuple(model.class_index(value) for value in classes)
    return EvaluatePlan(cam_layer(model, layer), chosen_methods, chosen_metrics, steps,
                        check_precision(precision, model.device), fixed, boxes_file, cascade, sanity_seeds)


# -- why this class ----------------------------------------------------------------------------------------
#: The recipe of the report's filter pictures and of ``explain``'s: one recipe, so they share the filter cache.
EXPLAIN_FILTER_METHOD = "lucid"


@dataclass(frozen=True)
class ExplainPlan:
    """Which layer, how many channels, which classes (given, or each image's top-1); the conv whose
    filter pictures show the layer's channels (None: no pictures) and their settings."""

    layer: str
    top: int = EXPLAIN_TOP
    classes: tuple[int, ...] = ()
    precision: str = MAPS_PRECISION
    filter_layer: str | None = None
    filters: FilterSettings | None = None

    def explain(self, model: Model, x: torch.Tensor, ranked: Sequence[Sequence[Prediction]]) -> list[Explanation]:
        """Every image's explanations: one per given class, or of the first its target chooses (a
        classifier's top-1; the most probable where none is chosen)."""
        found = []
        for index, predictions in enumerate(ranked):
            classes = list(self.classes) or ([p.index for p in predictions if p.chosen] or [predictions[0].index])[:1]
            for explanation in explanations(model, x[index:index + 1], classes, self.layer, self.top,
                                            self.precision):
                explanation.image = index
                found.append(explanation)
        return found

    def missing_steps(self, model: Model, explanations: Sequence[Explanation], folder: Path) -> int:
        """Ascent steps still to run for the filter pictures of the channels shown (cache in ``folder``)."""
        if self.filters is None:
            return 0
        return missing_steps(model, {self.layer: self.channels(explanations)}, folder, {self.layer: self.filters})

    @staticmethod
    def channels(explanations: Sequence[Explanation]) -> list[int]:
        return sorted({c.index for explanation in explanations for c in explanation.shown})

    def pictures(self, model: Model, explanations: Sequence[Explanation], folder: Path,
                 progress: Callable[[int], None] | None = None) -> dict[int, Path]:
        """The filter pictures of the channels shown, from the cache in ``folder`` (computed where missing)."""
        if self.filters is None:
            return {}
        return cached_filter_pictures(model, self.layer, self.channels(explanations), folder, self.filters,
                                      progress=progress)

    def write(self, model: Model, explanations: Sequence[Explanation], photos: Sequence[Image.Image],
              names: Sequence[str], stems: Sequence[str], out: Path,
              progress: Callable[[int], None] | None = None) -> list[WrittenExplanation]:
        """The pictures (cached in ``out/filters``), then ``out/explain/<stem>_<class>.png`` and ``.json``."""
        pictures = self.pictures(model, explanations, out / FILTERS_DIR, progress)
        return write_explanations(explanations, photos, names, stems, pictures, out / EXPLAIN_DIR, self.filter_layer)


def plan_explain(model: Model, layer: str | None = None, classes: Sequence[int | str] = (), top: int = EXPLAIN_TOP,
                 precision: str = MAPS_PRECISION, filter_steps: int | None = None) -> ExplainPlan:
    """The layer (default: the CAM layer), ``top``, the classes and the filter pictures' settings, checked."""
    layer = cam_layer(model, layer)
    check_explain_top(model, layer, top)
    fixed = tuple(model.class_index(value) for value in classes)
    precision = check_precision(precision, model.device)
    try:
        conv = filter_layer(model, layer)
    except InputError:  # no conv under this layer: the figure goes without filter pictures
        return ExplainPlan(layer, top, fixed, precision)
    return ExplainPlan(layer, top, fixed, precision, conv,
                       filter_settings(model, layer, EXPLAIN_FILTER_METHOD, filter_steps))
