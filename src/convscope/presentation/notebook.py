"""Results that display themselves in a notebook: the public ``convscope.activations``,
``convscope.filters`` and ``convscope.cam`` return thin types around the techniques' results --
still a dict, a tuple and a tensor -- whose ``_repr_png_`` / ``_repr_html_`` show layer grids,
filter pictures and overlays, kept small (thumbnails, a few layers, a few images).

This module sits on the presentation side: it calls the techniques and draws their results.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..catalog import FILTERS_PRECISION, MAPS_PRECISION
from ..clips import Clip
from ..errors import ConvscopeError
from ..images import ImageSource
from ..model import Model, as_input, as_model
from ..techniques import activations as activations_technique
from ..techniques import attributions as attributions_technique
from ..techniques import cams as cams_technique
from ..techniques import evaluate as evaluate_technique
from ..techniques import explain as explain_technique
from ..techniques import filters as filters_technique
from ..techniques.attributions import AttributionResult
from .drawing import (
    PICTURE_COLUMNS,
    overlay,
    photo_of_input,
    picture_grid,
    png_bytes,
    render_frame_grids,
    render_grid,
    side_by_side,
    signed_overlay,
)
from .filter_cache import filter_picture_images
from .html import data_uri_img
from .plans import plan_explain
from .writers import explanation_figure

#: Largest width of a picture shown in a notebook, and how many layers / images are shown at most.
NOTEBOOK_WIDTH = 480
NOTEBOOK_LAYERS = 12
NOTEBOOK_IMAGES = 8


def _still(image: torch.Tensor, heat: torch.Tensor) -> tuple[Image.Image, np.ndarray]:
    """An input (C x H x W) as a photo with its map; a clip's (C x T x H x W, a T x H x W map) middle frame."""
    if image.dim() == 4:
        middle = image.shape[1] // 2
        return photo_of_input(image[:, middle]), (heat[middle] if heat.dim() == 3 else heat).numpy()
    return photo_of_input(image), heat.numpy()


def _photo_or_clip(image: torch.Tensor) -> Image.Image | Clip:
    """An input as a photo (C x H x W) or a clip of its frames (C x T x H x W)."""
    if image.dim() == 4:
        return Clip(tuple(photo_of_input(image[:, t]) for t in range(image.shape[1])), "clip")
    return photo_of_input(image)


class Activations(dict):
    """``{layer: B x C x H x W}`` as :func:`convscope.activations` returns it; in a notebook, the
    first image's grid of each layer (the first :data:`NOTEBOOK_LAYERS`, as thumbnails; a video
    network's first frame)."""

    def _repr_html_(self) -> str:
        parts = []
        for name, value in list(self.items())[:NOTEBOOK_LAYERS]:
            shape = "x".join(map(str, value.shape[1:]))
            if value.dim() == 5:
                shape += f" (frame 1 of {value.shape[2]})"
                picture = data_uri_img(png_bytes(render_frame_grids(value[0])[0], NOTEBOOK_WIDTH), alt=name)
            elif value.dim() == 4:
                picture = data_uri_img(png_bytes(render_grid(value[0]), NOTEBOOK_WIDTH), alt=name)
            else:
                picture = "(not a feature map)"
            parts.append(f"<figure><figcaption><code>{html.escape(name)}</code> {shape}</figcaption>{picture}</figure>")
        more = len(self) - NOTEBOOK_LAYERS
        if more > 0:
            parts.append(f"<p>... and {more} more layers</p>")
        return "".join(parts)


class FilterPictures(tuple):
    """``(images, scores)`` as :func:`convscope.filters` returns it; in a notebook, the pictures in a
    grid (with diversity, a row per unit), class pictures each captioned with its class. ``result``
    is the whole :class:`~convscope.techniques.filters.FilterResult` (statuses, transparency, ...)."""

    result: filters_technique.FilterResult | None = None

    @property
    def images(self) -> torch.Tensor:
        return self[0]

    @property
    def scores(self) -> torch.Tensor:
        return self[1]

    def _columns(self) -> int:
        copies = self.result.copies if self.result is not None else 1
        return copies if copies > 1 else PICTURE_COLUMNS

    def _repr_png_(self) -> bytes:
        return png_bytes(picture_grid(self.images, self._columns()), NOTEBOOK_WIDTH)

    def _repr_html_(self) -> str | None:
        if self.result is None or not self.result.labels:
            return None  # the PNG grid
        figures = []
        for picture, label, score in zip(self.images, self.result.labels, self.scores.tolist()):
            image = data_uri_img(png_bytes(picture_grid(picture[None], 1), 160), alt=f"class picture of {label}")
            figures.append(f"<figure style='display:inline-block;margin:4px'>{image}<figcaption>"
                           f"{html.escape(label)} (logit {score:.2f})</figcaption></figure>")
        return "".join(figures)


class CamMaps(torch.Tensor):
    """B x H x W maps as :func:`convscope.cam` returns them; in a notebook, each map over the image
    it explains (the first :data:`NOTEBOOK_IMAGES`). Any tensor operation gives a plain view of the
    same kind, drawn as heatmaps where the images are not known."""

    rgb: torch.Tensor | None = None

    def _repr_png_(self) -> bytes:
        maps = self.detach().float().cpu().as_subclass(torch.Tensor)
        if maps.dim() == 2:
            maps = maps[None]
        rgb = self.rgb if self.rgb is not None and len(self.rgb) == len(maps) else \
            torch.zeros(len(maps), 3, *maps.shape[1:])
        pictures = []
        for heat, image in zip(maps[:NOTEBOOK_IMAGES], rgb[:NOTEBOOK_IMAGES]):
            pictures.append(overlay(*_still(image, heat), alpha=0.4 if self.rgb is not None else 1.0))
        return png_bytes(side_by_side(pictures), width=NOTEBOOK_WIDTH * 2)


class Attributions(AttributionResult):
    """:class:`~convscope.techniques.attributions.AttributionResult` as :func:`convscope.attribute`
    returns it; in a notebook, each attribution (summed over the channels) over the image it
    explains, red for the class and blue against (the first :data:`NOTEBOOK_IMAGES`)."""

    rgb: torch.Tensor | None = None

    def _repr_png_(self) -> bytes:
        maps = self.maps.detach().float().cpu()
        rgb = self.rgb if self.rgb is not None and len(self.rgb) == len(maps) else \
            torch.zeros(len(maps), 3, *maps.shape[1:])
        pictures = [signed_overlay(*_still(image, signed))
                    for signed, image in zip(maps[:NOTEBOOK_IMAGES], rgb[:NOTEBOOK_IMAGES])]
        return png_bytes(side_by_side(pictures), width=NOTEBOOK_WIDTH * 2)


class Evaluations(list):
    """The :class:`~convscope.techniques.evaluate.Evaluation` of each image and class, as
    :func:`convscope.evaluate` returns them; in a notebook, a ranked table per image and class with
    each group of identical maps as a small overlay."""

    rgb: torch.Tensor | None = None

    def _repr_html_(self) -> str:
        parts = []
        for evaluation in self[:NOTEBOOK_IMAGES]:
            rows = []
            image = self.rgb[evaluation.image] if self.rgb is not None else None
            for rank, group in enumerate(evaluation.groups(), 1):
                best = group[0]
                picture = ""
                if image is not None:
                    picture = data_uri_img(png_bytes(overlay(*_still(image, best.map)), 160), alt=best.title)
                sanity = "" if best.sanity is None or not best.sanity.spearman else (
                    ("passed" if best.sanity.passed else "failed") + f" ({best.sanity.spearman[0]:.2f})")
                methods = html.escape(evaluate_technique.group_title(group)) + (" (empty)" if best.empty else "")
                cells = [f"{rank}", methods,
                         *(f"{v:.3f}" if v is not None else "-" for v in (best.deletion, best.insertion, best.score)),
                         sanity, picture]
                rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            notes = "".join(f"<p>{html.escape(note)}</p>" for note in evaluation.notes)
            parts.append(f"<h4>{html.escape(evaluation.name)}: {html.escape(evaluation.label)} "
                         f"({evaluation.class_index})</h4><table><tr><th>#</th><th>method</th><th>deletion</th>"
                         f"<th>insertion</th><th>score</th><th>sanity</th><th>map</th></tr>{''.join(rows)}</table>{notes}")
        return "".join(parts)


class Explanations(list):
    """The :class:`~convscope.techniques.explain.Explanation` of each image and class, as
    :func:`convscope.explain` returns them (each with its ``table``); in a notebook, each one's
    figure -- the filter pictures of its channels computed at the first display, or read from the
    ``filters_cache`` folder -- and its channels in a table."""

    rgb: torch.Tensor | None = None
    model: Model | None = None
    filters_steps: int | None = None
    filters_cache: str | None = None
    _pictures: dict[int, Image.Image] | None = None

    def pictures(self) -> dict[int, Image.Image]:
        """The filter pictures of every channel shown (computed once; ``explain``'s recipe and settings)."""
        if self._pictures is None:
            self._pictures = {}
            if self.model is not None and self:
                try:
                    plan = plan_explain(self.model, self[0].layer, top=self[0].top, filter_steps=self.filters_steps)
                except ConvscopeError:  # pictures that cannot be drawn: the figure goes without them
                    return self._pictures
                if plan.filters is not None:  # None: no conv under the layer
                    channels = plan.channels(self[:NOTEBOOK_IMAGES])
                    self._pictures = filter_picture_images(self.model, plan.layer, channels, plan.filters,
                                                           self.filters_cache)
        return self._pictures

    def _repr_html_(self) -> str:
        parts = []
        pictures = self.pictures()
        for e in self[:NOTEBOOK_IMAGES]:
            figure = ""
            if self.rgb is not None:
                figure = data_uri_img(explanation_figure(e, _photo_or_clip(self.rgb[e.image]), pictures),
                                      width=f"{NOTEBOOK_WIDTH * 2 // 1.25:.0f}",
                                      alt=f"Why {e.label}: the channels of {e.layer}")
            rows = "".join(f"<tr><td>{kind}</td><td>{c.index}</td><td>{c.contribution:+.4g}</td>"
                           f"<td>{'-' if c.share is None else f'{c.share:.1%}'}</td><td>{c.peak}</td></tr>"
                           for kind, c in e.sides())
            parts.append(f"<h4>{html.escape(e.label)} ({e.class_index}): score {e.score:.4g}, contributions of "
                         f"<code>{html.escape(e.layer)}</code> sum to {e.total:.4g}</h4>{figure}<table><tr><th></th>"
                         f"<th>channel</th><th>contribution</th><th>share</th><th>peak</th></tr>{rows}</table>")
        return "".join(parts)


def activations(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
                layers: str | Sequence[str] | None = None,
                max_bytes: int = activations_technique.DEFAULT_MAX_BYTES) -> Activations:
    return Activations(activations_technique.activations(model, x, layers, max_bytes))


def filters(model: Model | nn.Module, layer: str, filters: str | int | Sequence[int] | None = None,
            steps: int | None = None, size: int = filters_technique.DEFAULT_SIZE,
            method: str = filters_technique.DEFAULT_METHOD, seed: int = 0,
            precision: str = FILTERS_PRECISION, objective: str = "mean", *, diversity: int = 1,
            direction: torch.Tensor | None = None, photo: ImageSource | torch.Tensor | None = None,
            reg_layer: str | None = None) -> FilterPictures:
    result = filters_technique.optimize_filters(model, layer, filters, steps, size, method, seed, precision,
                                                objective=objective, diversity=diversity, direction=direction,
                                                photo=photo, reg_layer=reg_layer)
    pictures = FilterPictures((result.images, result.scores))
    pictures.result = result
    return pictures


def cam(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
        classes: int | str | Sequence[int | str] | None = None, layer: str | Sequence[str] | None = None,
        method: str = cams_technique.DEFAULT_METHOD, precision: str = MAPS_PRECISION, **options: Any) -> CamMaps:
    model = as_model(model, x)
    inputs = as_input(model, x)
    maps = cams_technique.cam(model, inputs, classes, layer, method, precision, **options).as_subclass(CamMaps)
    rgb = model.preprocessing.denormalize(inputs.detach().float()).cpu()
    maps.rgb = rgb.expand(len(maps), *rgb.shape[1:]) if len(rgb) == 1 else rgb
    return maps


def attribute(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
              classes: int | str | Sequence[int | str] | None = None, method: str = "saliency",
              **options: Any) -> Attributions:
    model = as_model(model, x)
    inputs = as_input(model, x)
    found = attributions_technique.attribute(model, inputs, classes, method, **options)
    result = Attributions(**{name: getattr(found, name) for name in found.__dataclass_fields__})
    rgb = model.preprocessing.denormalize(inputs.detach().float()).cpu()
    result.rgb = rgb.expand(len(found.classes), *rgb.shape[1:]) if len(rgb) == 1 else rgb
    return result


def evaluate(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
             classes: int | str | Sequence[int | str] | None = None, layer: str | None = None,
             methods: str | Sequence[str] = "all",
             metrics: str | Sequence[str] = evaluate_technique.DEFAULT_METRICS, **options) -> Evaluations:
    model = as_model(model, x)
    inputs = as_input(model, x)
    result = Evaluations(evaluate_technique.evaluate(model, inputs, classes, layer, methods, metrics, **options))
    result.rgb = model.preprocessing.denormalize(inputs.detach().float()).cpu()
    return result


def explain(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
            classes: int | str | Sequence[int | str] | None = None, layer: str | None = None,
            top: int = explain_technique.DEFAULT_TOP, precision: str = MAPS_PRECISION, filters_steps: int | None = None,
            filters_cache: str | None = None) -> Explanations:
    model = as_model(model, x)
    inputs = as_input(model, x)
    result = Explanations(explain_technique.explain(model, inputs, classes, layer, top, precision))
    result.rgb = model.preprocessing.denormalize(inputs.detach().float()).cpu()
    result.model, result.filters_steps, result.filters_cache = model, filters_steps, filters_cache
    return result


explain.__doc__ = (explain_technique.explain.__doc__ or "") + """

    ``filters_steps`` and ``filters_cache`` (a folder, as ``convscope explain``'s ``DIR/filters``)
    are for the filter pictures the notebook display draws."""

for _public, _technique in ((activations, activations_technique.activations), (filters, filters_technique.filters),
                            (cam, cams_technique.cam), (evaluate, evaluate_technique.evaluate),
                            (explain, explain), (attribute, attributions_technique.attribute)):
    _public.__doc__ = (_technique.__doc__ or "") + "\n\n    The result displays itself in a notebook."
