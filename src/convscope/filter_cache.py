"""Filter pictures cached on disk, one PNG per channel, computed only where missing.

``FOLDER/<key>/<layer>/<channel>.png`` with ``FOLDER/<key>/<layer>.json`` (each channel's score and
its starting picture's score); ``key`` is a short hash of everything that decides a picture: the
model (name, weights, input size), the recipe, steps, picture size and seed -- so pictures made
with other settings are never mixed up, and a second run, a resumed run or another command with
the same settings reuses them. Each filter's picture is independent of the others in its batch
(its random start is seeded by its own index), so computing the missing ones alone gives the
same pictures as computing them all.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .files import safe_name, save_image, save_json
from .model import Model
from .techniques.filters import DEFAULT_METHOD, DEFAULT_SIZE, check_filter_settings, optimize_filters, total_steps


@dataclass(frozen=True)
class FilterSettings:
    """What decides a filter picture besides the model and the channel (``steps``: the recipe's
    default when None)."""

    method: str = DEFAULT_METHOD
    steps: int | None = None
    size: int = DEFAULT_SIZE
    seed: int = 0


def cache_key(model: Model, settings: FilterSettings) -> str:
    """12 hex digits naming the model (name, weights -- a file's size and time too --, input size)
    and the settings."""
    weights: list = [model.weights]
    if os.path.isfile(model.weights):
        stat = os.stat(model.weights)
        weights += [stat.st_size, stat.st_mtime_ns]
    described = json.dumps([model.name, weights, list(model.input_size), asdict(settings)], sort_keys=True)
    return hashlib.sha256(described.encode("utf-8")).hexdigest()[:12]


def layer_folder(folder: str | os.PathLike, model: Model, layer: str, settings: FilterSettings) -> Path:
    return Path(folder) / cache_key(model, settings) / safe_name(layer)


def cached_filter_pictures(model: Model, layer: str, channels: Sequence[int], folder: str | os.PathLike,
                           settings: FilterSettings = FilterSettings(), precision: str = "auto",
                           progress: Callable[[int], None] | None = None) -> dict[int, Path]:
    """The picture of each of ``channels`` of ``layer``, computing (in one batched ascent) only
    those not in the cache under ``folder``; returns channel -> PNG path."""
    target = layer_folder(folder, model, layer, settings)
    missing = [c for c in channels if not (target / f"{c}.png").exists()]
    if missing:
        result = optimize_filters(model, layer, missing, steps=settings.steps, size=settings.size,
                                  method=settings.method, seed=settings.seed, precision=precision,
                                  progress=progress)
        target.mkdir(parents=True, exist_ok=True)
        pixels = (result.images.permute(0, 2, 3, 1).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        for channel, picture in zip(result.filters, pixels):
            save_image(Image.fromarray(picture.squeeze(-1) if picture.shape[-1] == 1 else picture),
                       target / f"{channel}.png")
        scores = read_scores(target)
        for channel, score, initial in zip(result.filters, result.scores.tolist(), result.initial_scores.tolist()):
            scores[str(channel)] = {"score": score, "initial_score": initial}
        save_json({"layer": layer, "scores": scores}, target.with_suffix(".json"))
        if not (target.parent / "settings.json").exists():  # what the key stands for, for people
            save_json({"model": model.name, "weights": model.weights, "input_size": list(model.input_size),
                       **asdict(settings)}, target.parent / "settings.json")
    return {c: target / f"{c}.png" for c in channels}


def read_scores(target: Path) -> dict[str, dict]:
    """channel (as text) -> {"score", "initial_score"} of the pictures cached in ``target``."""
    path = target.with_suffix(".json")
    return json.loads(path.read_text(encoding="utf-8"))["scores"] if path.exists() else {}


def missing_steps(model: Model, layers: dict[str, Sequence[int]], folder: str | os.PathLike,
                  settings: FilterSettings = FilterSettings()) -> int:
    """The ascent steps :func:`cached_filter_pictures` would run for these layers and channels (the
    unit of its ``progress``)."""
    steps = check_filter_settings(settings.method, settings.steps, settings.size)
    counts = [sum(not (layer_folder(folder, model, layer, settings) / f"{c}.png").exists() for c in channels)
              for layer, channels in layers.items()]
    return total_steps([count for count in counts if count], steps)


__all__ = ["FilterSettings", "cache_key", "cached_filter_pictures", "layer_folder", "read_scores", "missing_steps"]
