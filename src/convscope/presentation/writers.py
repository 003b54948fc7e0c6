"""Writers: each takes a technique's computed result, draws it and writes the files into an output
folder (atomically, with sanitized names), returning what it wrote. They never compute a technique."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..catalog import MAPS_PRECISION
from ..clips import Clip
from ..techniques.attributions import METHODS as ATTRIBUTION_METHODS
from ..techniques.attributions import AttributionResult
from ..techniques.cams import METHODS, CamResult, minmax, resized_linearly
from ..techniques.concepts import Concepts
from ..techniques.evaluate import Evaluation, group_title
from ..techniques.explain import Explanation
from ..techniques.filters import FilterResult
from .drawing import (
    PICTURE_COLUMNS,
    clip_overlays,
    colorize,
    concept_overlay,
    concepts_png,
    curves_png,
    diverging_png,
    explanation_png,
    frame_strip,
    frames_side_by_side,
    heatmap_png,
    kernel_patches,
    methods_png,
    outlined,
    overlay,
    picture_grid,
    render_frame_grids,
    render_grid,
    resized_map,
    signed_overlay,
    transparent_grid,
)
from .files import distinct_safe_names, safe_name, save_animation, save_image, save_json, save_npy, write_bytes


def unique_file_names(names: Sequence[str]) -> dict[str, str]:
    """Layer name -> safe file stem, distinct even when two names sanitize alike."""
    return dict(zip(names, distinct_safe_names(names)))


@dataclass(frozen=True)
class WrittenGrid:
    """One layer's grid as written: layer name, PNG path, raw path (or None), shape C x H x W (a
    video network's C x T x H x W: ``png`` the first frame's grid, ``frames`` every frame's)."""

    layer: str
    png: Path
    raw: Path | None
    shape: tuple[int, ...]
    frames: tuple[Path, ...] = ()


def write_activation_grids(outputs: Mapping[str, torch.Tensor], folder: str | os.PathLike, *,
                           per_row: int = 16, normalize: str = "channel", cmap: str = "viridis",
                           save_raw: bool = False, index: int = 0,
                           workers: int | None = None) -> list[WrittenGrid]:
    """Write ``folder/<layer>.png`` (and ``<layer>.npy``, float32 C x H x W, with ``save_raw``) for
    image ``index`` of each captured feature map, rendering and encoding layers in parallel. A video
    network's C x T x H x W map gets a grid per frame, ``<layer>_t00.png``, ``<layer>_t01.png``, ...
    (each channel normalized over all its frames), and ``<layer>.png`` is the first frame's."""
    folder = Path(folder)
    stems = unique_file_names(list(outputs))

    def write_one(name: str) -> WrittenGrid:
        maps = outputs[name][index].float().cpu()
        raw = save_npy(maps.numpy().astype(np.float32), folder / f"{stems[name]}.npy") if save_raw else None
        if maps.dim() == 4:
            grids = render_frame_grids(maps, per_row=per_row, normalize=normalize, cmap=cmap)
            frames = tuple(save_image(grid, folder / f"{stems[name]}_t{t:02d}.png") for t, grid in enumerate(grids))
            png = save_image(grids[0], folder / f"{stems[name]}.png")
            return WrittenGrid(name, png, raw, tuple(maps.shape), frames)
        png = save_image(render_grid(maps, per_row=per_row, normalize=normalize, cmap=cmap),
                         folder / f"{stems[name]}.png")
        return WrittenGrid(name, png, raw, tuple(maps.shape))

    spatial = [name for name, value in outputs.items() if value.dim() in (4, 5)]
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(write_one, spatial))


@dataclass(frozen=True)
class WrittenCam:
    """One image-and-class map as written: image index, class, and the files."""

    image: int
    class_index: int
    heatmap: Path
    overlay: Path
    raw: Path | None
    color_map: Path | None = None
    precision: str = MAPS_PRECISION
    precision_reason: str = "as asked"
    animation: Path | None = None


@dataclass(frozen=True)
class WrittenAttribution:
    """One image-and-class attribution as written: image index, class, the files and, for integrated
    gradients, the score's change from the baseline ``Y(x) - Y(x')`` and the completeness gap
    ``sum(attr) - change``."""

    image: int
    class_index: int
    heatmap: Path
    overlay: Path
    raw: Path | None
    change: float | None = None
    gap: float | None = None
    animation: Path | None = None


def write_attribution_files(result: AttributionResult, images: Sequence[int], photos: Sequence[Image.Image],
                            stems: Sequence[str], labels: Sequence[str], folder: str | os.PathLike, *,
                            alpha: float, save_raw: bool) -> list[WrittenAttribution]:
    """For row r of ``result`` (image ``images[r]``), write ``<stem>_<class>_<method>_heatmap.png``
    (the attribution summed over the input channels, zero at white), ``..._overlay.jpg`` (that map
    over the photo at its own resolution, red positive, blue negative) and, with ``save_raw``,
    ``<stem>_<class>_<method>.npy`` (float32 C x H x W at the model input size) into ``folder``. A
    clip's overlay is a strip of frames, and every frame's in ``..._overlay.webp`` (animated)."""
    folder = Path(folder)
    method = ATTRIBUTION_METHODS[result.method]
    written = []
    for row, (i, cls) in enumerate(zip(images, result.classes)):
        base = folder / f"{stems[i]}_{cls}_{result.method}"
        signed = result.maps[row]
        change = None if result.change is None else float(result.change[row])
        gap = None if result.gap is None else float(result.gap[row])
        title = f"{method.title}: {labels[cls]} ({cls})"
        photo = photos[i]
        if isinstance(photo, Clip):
            title += f"\n{signed.shape[0]} frames, left to right"
        heat = write_bytes(f"{base}_heatmap.png", diverging_png(frames_side_by_side(signed.cpu().numpy()), title))
        if isinstance(photo, Clip):  # every frame on the clip's one scale
            at_frames = resized_linearly(signed[None, None], (len(photo.frames), photo.height, photo.width))[0, 0]
            peak = float(at_frames.abs().max())
            overlays = [signed_overlay(frame, values.cpu().numpy(), alpha, peak)
                        for frame, values in zip(photo.frames, at_frames)]
            jpg = save_image(frame_strip(overlays), f"{base}_overlay.jpg", quality=90)
            animation = save_animation(overlays, f"{base}_overlay.webp")
        else:
            animation = None
            at_photo = F.interpolate(signed[None, None].float(), size=(photo.height, photo.width), mode="bilinear",
                                     align_corners=False)[0, 0].cpu().numpy()
            jpg = save_image(signed_overlay(photo, at_photo, alpha), f"{base}_overlay.jpg", quality=90)
        raw = save_npy(result.attributions[row].cpu().numpy().astype(np.float32), f"{base}.npy") if save_raw else None
        written.append(WrittenAttribution(i, cls, heat, jpg, raw, change, gap, animation))
    return written


def concept_names(found: Concepts, labels: Sequence[str]) -> list[str]:
    """Each concept's name: ``concept k: label (probability), ...`` from its top classes, or ``concept k``."""
    names = []
    for k in range(len(found.vectors)):
        tops = found.top[k] if found.top is not None else []
        described = ", ".join(f"{labels[c]} {p:.0%}" for c, p in tops)
        names.append(f"concept {k}" + (f": {described}" if described else ""))
    return names


def write_concept_files(found: Concepts, photos: Sequence[Image.Image], stems: Sequence[str],
                        labels: Sequence[str], folder: str | os.PathLike, *, alpha: float) -> tuple[list[Path], Path]:
    """``<stem>_concepts.png`` per image (its concepts over the photo, each pixel in its strongest
    concept's colour, with a legend) and ``concepts.json`` (the layer; each concept's index, vector
    norm and top classes) into ``folder``."""
    folder = Path(folder)
    names = concept_names(found, labels)
    pictures = []
    for image, (photo, stem) in enumerate(zip(photos, stems)):
        maps = found.maps[image]
        title = f"{len(names)} concepts of layer {found.layer}"
        if isinstance(photo, Clip):  # a clip's concepts on its middle frame
            middle = len(photo.frames) // 2
            maps = resized_linearly(maps[None], (len(photo.frames), *maps.shape[-2:]))[0, :, middle]
            photo = photo.frames[middle]
            title += f", frame {middle + 1}"
        at_photo = F.interpolate(maps[None].float(), size=(photo.height, photo.width), mode="bilinear",
                                 align_corners=False)[0].clamp(0, 1).cpu().numpy()
        pictures.append(write_bytes(folder / f"{stem}_concepts.png",
                                    concepts_png(concept_overlay(photo, at_photo, alpha), names, title)))
    rows = [{"concept": k, "name": names[k], "norm": round(float(found.vectors[k].norm()), 4),
             "top": [] if found.top is None else [{"class": c, "label": labels[c], "probability": round(p, 4)}
                                                   for c, p in found.top[k]]}
            for k in range(len(names))]
    table = save_json({"layer": found.layer, "images": list(stems), "concepts": rows}, folder / "concepts.json")
    return pictures, table


def image_stems(names: Sequence[str]) -> list[str]:
    """File stems for images given on the command line (``sample:NAME`` -> NAME), made distinct."""
    return distinct_safe_names([Path(name.split(":", 1)[1] if name.startswith("sample:") else name).stem
                                for name in names], fallback="image")


def report_size(width: int, height: int, limit: tuple[int, int]) -> tuple[int, int]:
    """(width, height) scaled down (never up) to fit ``limit``, keeping the aspect ratio."""
    scale = min(1.0, limit[0] / width, limit[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def write_cam_files(result: CamResult, images: Sequence[int], photos: Sequence[Image.Image], stems: Sequence[str],
                    labels: Sequence[str], folder: str | os.PathLike, *, alpha: float, save_raw: bool,
                    map_size: tuple[int, int] | None = None,
                    regions: torch.Tensor | None = None) -> list[WrittenCam]:
    """For row r of ``result`` (image ``images[r]``, of ``photos`` and ``stems``), write
    ``<stem>_<class>_heatmap.png``, ``<stem>_<class>_cam.jpg`` and, with ``save_raw``,
    ``<stem>_<class>.npy`` into ``folder``. With ``map_size`` (the largest width, height the report
    shows a photo at, see :func:`report_size`), also the colour-mapped map alone,
    ``<stem>_<class>_map.png``. Every picture of a map is min-max normalized, as the map itself.
    ``regions`` (one H x W mask per row: what a segmentation map explains) are outlined on the overlays.
    A clip (:class:`~convscope.clips.Clip`, a video network's input) gets the overlay of every frame as
    an animated ``<stem>_<class>_cam.webp`` and a strip of frames as ``<stem>_<class>_cam.jpg``; its
    heatmap shows the map's frames left to right."""
    folder = Path(folder)
    written = []
    for row, (i, cls) in enumerate(zip(images, result.classes)):
        base = folder / f"{stems[i]}_{cls}"
        low = result.low_res[row]
        title = f"{METHODS[result.method].title}: {labels[cls]} ({cls})\n{METHODS[result.method].where(result.layer)}"
        photo = photos[i]
        if isinstance(photo, Clip):
            title += f"\n{low.shape[0]} frames of the map, left to right"
        heat = write_bytes(f"{base}_heatmap.png",
                           heatmap_png(frames_side_by_side(minmax(low[None])[0].cpu().numpy()), title))
        animation = color_map = None
        if isinstance(photo, Clip):
            overlays = clip_overlays(photo.frames, low, alpha)
            jpg = save_image(frame_strip(overlays), f"{base}_cam.jpg", quality=90)
            animation = save_animation(overlays, f"{base}_cam.webp")
        else:
            blended = overlay(photo, resized_map(low, photo.height, photo.width), alpha)
            if regions is not None:
                blended = outlined(blended, regions[row].cpu().numpy(), labels[cls])
            jpg = save_image(blended, f"{base}_cam.jpg", quality=90)
            if map_size is not None:
                width, height = report_size(photo.width, photo.height, map_size)
                color_map = save_image(Image.fromarray(colorize(resized_map(low, height, width))), f"{base}_map.png")
        raw = save_npy(result.maps[row].cpu().numpy().astype(np.float32), f"{base}.npy") if save_raw else None
        written.append(WrittenCam(i, cls, heat, jpg, raw, color_map, result.precision, result.precision_reason,
                                  animation))
    return written


def write_filter_grids(result: FilterResult, folder: str | os.PathLike, *, save_raw: bool = False,
                       columns: int = PICTURE_COLUMNS, direction: str = "", transparency: bool = False,
                       kernels: torch.Tensor | None = None) -> Path:
    """Write ``folder/<layer>.png`` (the pictures in unit order, ``columns`` per row; with diversity
    a row per unit, its pictures side by side; class pictures: ``logits.png``; a direction:
    ``<layer>_direction.png``), ``<layer>.json`` (the settings, and each picture's unit ``index``,
    ``label`` for a class, ``copy`` with diversity, score, the ``objective`` it maximizes, whether
    it was ``reached`` and, where marked, its ``status`` in words) and, with ``save_raw``,
    ``<layer>.npy`` (float32 N x 3 x S x S, RGB in [0, 1]); with ``transparency``, a recipe's
    transparency maps (``maco``'s) as ``<layer>_transparency.png`` (the grid with each map as its
    alpha channel, see :func:`~convscope.presentation.drawing.transparent_grid`; with ``save_raw``
    also ``<layer>_transparency.npy``, float32 N x S x S scaled to [0, 1]); with ``kernels`` (a first
    layer's, N x 3 x kh x kw), ``<layer>_kernels.png``: each drawn filter's kernel as an RGB patch
    (:func:`~convscope.presentation.drawing.kernel_patches`) in the same places."""
    folder = Path(folder)
    stem = safe_name(result.layer) + ("_direction" if result.direction else "")
    columns = result.copies if result.copies > 1 else columns
    png = save_image(picture_grid(result.images, columns=columns), folder / f"{stem}.png")
    if save_raw:
        save_npy(result.images.numpy().astype(np.float32), folder / f"{stem}.npy")
    if transparency and result.transparency is not None:
        save_image(transparent_grid(result.images, result.transparency, columns=columns),
                   folder / f"{stem}_transparency.png")
        if save_raw:
            save_npy(result.transparency.numpy().astype(np.float32), folder / f"{stem}_transparency.npy")
    if kernels is not None:
        patches = kernel_patches(kernels, result.size)[list(result.filters)]  # one scale: the whole layer's
        save_image(picture_grid(patches, columns=columns), folder / f"{stem}_kernels.png")
    filters = []
    for position, (index, score) in enumerate(zip(result.filters, result.scores.tolist())):
        entry = {"index": index, "score": float(score), "objective": result.objectives[position],
                 "reached": bool(result.reached[position])}
        if result.labels:
            entry["label"] = result.labels[position]
        if result.copies > 1:
            entry["copy"] = position % result.copies
        if result.status(position):
            entry["status"] = result.status(position)
        filters.append(entry)
    facts = {"layer": result.layer, "method": result.method, "steps": result.steps, "size": result.size,
             "seed": result.seed, "precision": result.precision, "objective": result.objective,
             "flat": sum(result.flat), "not_reached": result.not_reached, "dead": sum(result.dead),
             "diversity": result.copies}
    if direction or result.direction:
        facts["direction"] = direction or True
    save_json({**facts, "filters": filters}, folder / f"{stem}.json")
    return png


@dataclass(frozen=True)
class WrittenEvaluation:
    """One image-and-class evaluation as written: the curves plot and the methods side by side."""

    evaluation: Evaluation
    curves: Path
    methods: Path


def _caption(group: list) -> str:
    names = group_title(group)
    best = group[0]
    if best.empty:
        return f"{names}\nempty map"
    return names if best.score is None else f"{names}\nscore {best.score:.3f}"


def write_evaluations(evaluations: Sequence[Evaluation], photos: Sequence[Image.Image], stems: Sequence[str],
                      folder: str | os.PathLike) -> tuple[Path, list[WrittenEvaluation]]:
    """``folder/metrics.json`` (one object per image, class and method) and, per image and class,
    ``<stem>_<class>_curves.png`` (deletion and insertion curves of every method) and
    ``<stem>_<class>_methods.png`` (each group of identical maps over the photo, best first, with
    its score)."""
    folder = Path(folder)
    written = []
    for evaluation in evaluations:
        base = folder / f"{stems[evaluation.image]}_{evaluation.class_index}"
        photo = photos[evaluation.image]
        title = f"{evaluation.name}: {evaluation.label} ({evaluation.class_index}), layer {evaluation.layer}"
        lines = [(group_title(group), group[0].deletion_curve, group[0].insertion_curve)
                 for group in evaluation.groups()]
        curves = write_bytes(f"{base}_curves.png", curves_png(lines, title))
        middle = None
        if isinstance(photo, Clip):  # a clip's methods side by side on its middle frame
            middle = len(photo.frames) // 2
            photo = photo.frames[middle]
        entries = [(_caption(group) + ("" if middle is None else f" (frame {middle + 1})"),
                    _still(group[0].map, photo, middle)) for group in evaluation.groups()]
        methods = write_bytes(f"{base}_methods.png", methods_png(photo, entries))
        written.append(WrittenEvaluation(evaluation, curves, methods))
    rows = [row for evaluation in evaluations for row in evaluation.as_json()]
    return save_json(rows, folder / "metrics.json"), written


def _still(low_res: torch.Tensor, photo: Image.Image, frame: int | None, frames: int | None = None) -> np.ndarray:
    """A map at the photo's size: an image's, or frame ``frame`` of a clip's upsampled to ``frames``
    (default its own count)."""
    if frame is None:
        return resized_map(low_res, photo.height, photo.width)
    return resized_map(low_res, photo.height, photo.width, frames or low_res.shape[0])[frame]


@dataclass(frozen=True)
class WrittenExplanation:
    """One image-and-class explanation as written: the figure, the JSON and the filter picture of
    each channel shown (where it has one)."""

    explanation: Explanation
    figure: Path
    json: Path
    pictures: dict[int, Path] = field(default_factory=dict)


def explanation_figure(explanation: Explanation, photo: Image.Image | Clip, pictures: Mapping[int, Image.Image | None],
                       filter_layer: str | None = None) -> bytes:
    """The figure of :func:`~convscope.presentation.drawing.explanation_png` for ``explanation`` over ``photo``,
    with the filter pictures of its channels (``pictures``: channel -> picture). A clip's class map is
    drawn on its middle frame, each channel's activation on the frame of its peak."""
    clip = photo if isinstance(photo, Clip) else None
    middle = len(clip.frames) // 2 if clip else None
    still = clip.frames[middle] if clip else photo
    height, width = still.height, still.width
    map_height, map_width = explanation.maps.shape[-2:]
    rows = []
    for kind, c in explanation.sides():
        share = "" if c.share is None else f", {c.share:.1%} of the total"
        row, column = c.peak[-2:]
        peak = ((column + 0.5) * width / map_width, (row + 0.5) * height / map_height)
        activation = explanation.activations[c.index]
        if clip is None:
            heat, under, where = resized_map(activation, height, width), None, ""
        else:  # the clip's frame nearest the peak's
            frames = len(clip.frames)
            frame = min(frames - 1, int((c.peak[0] + 0.5) * frames / activation.shape[0]))
            heat, under, where = resized_map(activation, height, width, frames)[frame], clip.frames[frame], \
                f" (frame {frame + 1})"
        rows.append((f"{kind}: channel {c.index}{share}{where}", pictures.get(c.index), heat, c.contribution, peak,
                     under))
    supported = sum(c.contribution for c in explanation.supporting)
    summary = [f"layer {explanation.layer}", f"contributions sum to {explanation.total:.4g}",
               f"the top {len(explanation.supporting)} channels carry {supported:.4g}"]
    if filter_layer is not None and filter_layer != explanation.layer:
        summary.append(f"pictures: the channels of {filter_layer}")
    title = (f"{explanation.label} (class {explanation.class_index})\nscore {explanation.score:.4g}, "
             f"probability {explanation.probability:.1%}")
    cam = _still(explanation.cam, still, middle, len(clip.frames) if clip else None)
    return explanation_png(still, cam, title, "\n".join(summary), rows)


def write_explanations(explanations: Sequence[Explanation], photos: Sequence[Image.Image], names: Sequence[str],
                       stems: Sequence[str], pictures: Mapping[int, Path], folder: str | os.PathLike,
                       filter_layer: str | None = None) -> list[WrittenExplanation]:
    """Per image and class, ``<stem>_<class>.png`` (the figure) and ``<stem>_<class>.json``
    (:meth:`Explanation.as_json` with the image's name and the layer of the filter pictures) in
    ``folder``; ``pictures``: channel -> its filter picture's PNG."""
    folder = Path(folder)
    written = []
    for explanation in explanations:
        base = folder / f"{stems[explanation.image]}_{explanation.class_index}"
        shown = {c.index: Image.open(pictures[c.index]).convert("RGB") if c.index in pictures else None
                 for c in explanation.shown}
        figure = write_bytes(f"{base}.png", explanation_figure(explanation, photos[explanation.image], shown,
                                                                filter_layer))
        data = {"image": names[explanation.image], **explanation.as_json(), "filter_layer": filter_layer}
        written.append(WrittenExplanation(explanation, figure, save_json(data, f"{base}.json"),
                                          {c.index: pictures[c.index] for c in explanation.shown
                                           if c.index in pictures}))
    return written
