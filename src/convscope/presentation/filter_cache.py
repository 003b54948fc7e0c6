"""Filter pictures cached on disk, one PNG per channel, computed only where missing.

``FOLDER/<key>/<layer>/<channel>.png`` with ``FOLDER/<key>/<layer>.json`` (each channel's score,
its starting picture's score and the precision it was computed in); ``key`` is a short hash of
everything that decides a picture: the model (name, weights, input size), the recipe, steps,
picture size and seed -- so pictures made with other settings are never mixed up, and a second
run, a resumed run or another command with the same settings reuses them (``convscope run``'s
filter section, ``explain``, the dataset examples' pages). A layer that is not a convolution
(an activation, a norm, a pooling layer) shows the channels of the conv under it
(:func:`~convscope.layers.producing_conv`): its pictures are that conv's. Class pictures are cached
under ``logits``. Each filter's picture is
independent of the others in its batch (its random start is seeded by its own index), so computing
the missing ones alone gives the same pictures as computing them all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..catalog import FILTERS_PRECISION
from ..layers import producing_conv
from ..model import Model
from ..techniques.filters import (
    DEFAULT_METHOD,
    DEFAULT_SIZE,
    FilterResult,
    check_filter_settings,
    draw_filters,
    picture_size_for,
    total_steps,
)
from ..techniques.units import LOGITS, reads_class_scores
from .drawing import filter_pictures
from .files import safe_name, save_image, save_json


@dataclass(frozen=True)
class FilterSettings:
    """What decides a filter picture besides the model and the channel (``steps``: the recipe's
    default when None)."""

    method: str = DEFAULT_METHOD
    steps: int | None = None
    size: int = DEFAULT_SIZE
    seed: int = 0
    objective: str = "mean"


def filter_settings(model: Model, layer: str, method: str = DEFAULT_METHOD, steps: int | None = None,
                    size: int = DEFAULT_SIZE, seed: int = 0, objective: str = "mean") -> FilterSettings:
    """One layer's settings, checked: ``steps`` resolved (the recipe's default for None) and ``size``
    raised to what reaches the layer (:func:`~convscope.techniques.filters.picture_size_for`), so
    every command asking for the same pictures names them with the same key."""
    steps = check_filter_settings(method, steps, size, objective)
    return FilterSettings(method, steps, picture_size_for(model, filter_layer(model, layer), size), seed, objective)


def filter_layer(model: Model, layer: str) -> str:
    """The conv whose pictures stand for ``layer``'s channels (``layer`` itself for a conv; the class
    scores, ``"logits"``, for class pictures)."""
    if reads_class_scores(model, layer):
        return LOGITS
    return producing_conv(model.all_layers(), layer)


def cache_key(model: Model, settings: FilterSettings) -> str:
    """12 hex digits naming the model (name, weights -- a file's size and time too --, input size)
    and the settings."""
    weights: list = [model.weights]
    if os.path.isfile(model.weights):
        stat = os.stat(model.weights)
        weights += [stat.st_size, stat.st_mtime_ns]
    described = json.dumps([model.name, weights, list(model.input_size), asdict(settings)], sort_keys=True)
    return hashlib.sha256(described.encode("utf-8")).hexdigest()[:12]


def layer_folder(folder: str | os.PathLike, model: Model, layer: str, settings: FilterSettings | None = None) -> Path:
    """Where the pictures of ``layer``'s channels are cached (default settings: :func:`filter_settings`)."""
    settings = settings or filter_settings(model, layer)
    return Path(folder) / cache_key(model, settings) / safe_name(filter_layer(model, layer))


def missing_channels(target: Path, channels: Sequence[int]) -> list[int]:
    """The channels (each once, in order) with no picture in the cache folder ``target``."""
    return [c for c in dict.fromkeys(channels) if not (target / f"{c}.png").exists()]


def cached_filter_pictures(model: Model, layer: str, channels: Sequence[int], folder: str | os.PathLike,
                           settings: FilterSettings | None = None, precision: str = FILTERS_PRECISION,
                           progress: Callable[[int], None] | None = None) -> dict[int, Path]:
    """The picture of each of ``channels`` of ``layer``, computing (in one batched ascent) only
    those not in the cache under ``folder``; returns channel -> PNG path."""
    settings = settings or filter_settings(model, layer)
    target = layer_folder(folder, model, layer, settings)
    missing = missing_channels(target, channels)
    if missing:
        result = draw_filters(model, filter_layer(model, layer), missing, steps=settings.steps, size=settings.size,
                              method=settings.method, seed=settings.seed, precision=precision, progress=progress,
                              objective=settings.objective)
        target.mkdir(parents=True, exist_ok=True)
        for channel, picture in zip(result.filters, filter_pictures(result.images)):
            save_image(picture, target / f"{channel}.png")
        scores = read_scores(target)
        for position, (channel, score, initial) in enumerate(zip(result.filters, result.scores.tolist(),
                                                                 result.initial_scores.tolist())):
            scores[str(channel)] = {"score": score, "initial_score": initial, "precision": result.precision,
                                    "objective": result.objectives[position], "reached": result.reached[position],
                                    "flat": result.flat[position], "dead": result.dead[position]}
        save_json({"layer": filter_layer(model, layer), "scores": scores}, target.with_suffix(".json"))
        if not (target.parent / "settings.json").exists():  # what the key stands for, for people
            save_json({"model": model.name, "weights": model.weights, "input_size": list(model.input_size),
                       **asdict(settings)}, target.parent / "settings.json")
    return {c: target / f"{c}.png" for c in channels}


def cached_filter_result(model: Model, layer: str, channels: Sequence[int], folder: str | os.PathLike,
                         settings: FilterSettings | None = None, precision: str = FILTERS_PRECISION,
                         progress: Callable[[int], None] | None = None) -> FilterResult:
    """:func:`cached_filter_pictures` as a :class:`~convscope.techniques.filters.FilterResult`
    (pictures read back from the PNGs, scores from the cache; no step history)."""
    settings = settings or filter_settings(model, layer)
    target = layer_folder(folder, model, layer, settings)
    computed = len(missing_channels(target, channels))
    paths = cached_filter_pictures(model, layer, channels, folder, settings, precision, progress)
    scores = read_scores(target)
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(paths[c]).convert("RGB"), np.float32) / 255.0)
                          .permute(2, 0, 1) for c in channels]) if channels else torch.zeros(0, 3, settings.size,
                                                                                               settings.size)
    facts = [scores.get(str(c), {}) for c in channels]
    used = "/".join(dict.fromkeys(f.get("precision", "fp32") for f in facts)) or "fp32"
    reason = f"{computed} computed, {len(channels) - computed} from the cache" if computed else "from the cache"
    return FilterResult(images=images, scores=torch.tensor([f.get("score", float("nan")) for f in facts]),
                        filters=list(channels), layer=filter_layer(model, layer), method=settings.method,
                        steps=settings.steps, size=settings.size, seed=settings.seed, precision=used,
                        initial_scores=torch.tensor([f.get("initial_score", float("nan")) for f in facts]),
                        history=torch.zeros(0, len(channels)), precision_reason=reason, objective=settings.objective,
                        objectives=[f.get("objective", settings.objective) for f in facts],
                        reached=[bool(f.get("reached", True)) for f in facts],
                        flat=[bool(f.get("flat", False)) for f in facts],
                        dead=[bool(f.get("dead", False)) for f in facts],
                        labels=[model.labels[c] for c in channels] if reads_class_scores(model, layer) else [])


def filter_picture_images(model: Model, layer: str, channels: Sequence[int], settings: FilterSettings | None = None,
                          folder: str | os.PathLike | None = None,
                          precision: str = FILTERS_PRECISION) -> dict[int, Image.Image]:
    """channel -> its filter picture as a PIL image: from (and into) the cache under ``folder``, or
    computed in memory without one."""
    settings = settings or filter_settings(model, layer)
    if folder is not None:
        paths = cached_filter_pictures(model, layer, channels, folder, settings, precision)
        return {c: Image.open(path).convert("RGB") for c, path in paths.items()}
    wanted = list(dict.fromkeys(channels))
    if not wanted:
        return {}
    result = draw_filters(model, filter_layer(model, layer), wanted, steps=settings.steps, size=settings.size,
                          method=settings.method, seed=settings.seed, precision=precision, objective=settings.objective)
    return {c: picture.convert("RGB") for c, picture in zip(result.filters, filter_pictures(result.images))}


def read_scores(target: Path) -> dict[str, dict]:
    """channel (as text) -> {"score", "initial_score"} of the pictures cached in ``target``."""
    path = target.with_suffix(".json")
    return json.loads(path.read_text(encoding="utf-8"))["scores"] if path.exists() else {}


def missing_steps(model: Model, layers: dict[str, Sequence[int]], folder: str | os.PathLike,
                  settings: dict[str, FilterSettings] | None = None) -> int:
    """The ascent steps :func:`cached_filter_pictures` would run for these layers and channels (the
    unit of its ``progress``); ``settings`` per layer (default: :func:`filter_settings`)."""
    total = 0
    for layer, channels in layers.items():
        chosen = (settings or {}).get(layer) or filter_settings(model, layer)
        count = len(missing_channels(layer_folder(folder, model, layer, chosen), channels))
        total += total_steps([count], chosen.steps) if count else 0
    return total


__all__ = ["FilterSettings", "cache_key", "cached_filter_pictures", "cached_filter_result", "filter_layer",
           "filter_picture_images", "filter_settings", "layer_folder", "missing_channels", "missing_steps",
           "read_scores"]
