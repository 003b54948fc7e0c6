"""The file-writing steps behind the commands: each takes computed results and writes them into an
output folder (atomically, with sanitized names), returning what it wrote."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .output import safe_name, save_image, save_npy
from .render import render_grid


def unique_file_names(names: Sequence[str]) -> dict[str, str]:
    """Layer name -> safe file stem, distinct even when two names sanitize alike."""
    stems: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        stem = base = safe_name(name)
        counter = 2
        while stem.lower() in used:
            stem = f"{base}-{counter}"
            counter += 1
        used.add(stem.lower())
        stems[name] = stem
    return stems


@dataclass(frozen=True)
class WrittenGrid:
    """One layer's grid as written: layer name, PNG path, raw path (or None), shape C x H x W."""

    layer: str
    png: Path
    raw: Path | None
    shape: tuple[int, ...]


def write_activation_grids(outputs: Mapping[str, torch.Tensor], folder: str | os.PathLike, *,
                           per_row: int = 16, normalize: str = "channel", cmap: str = "viridis",
                           save_raw: bool = False, index: int = 0,
                           workers: int | None = None) -> list[WrittenGrid]:
    """Write ``folder/<layer>.png`` (and ``<layer>.npy``, float32 C x H x W, with ``save_raw``) for
    image ``index`` of each captured feature map, rendering and encoding layers in parallel."""
    folder = Path(folder)
    stems = unique_file_names(list(outputs))

    def write_one(name: str) -> WrittenGrid:
        maps = outputs[name][index].float().cpu()
        png = save_image(render_grid(maps, per_row=per_row, normalize=normalize, cmap=cmap),
                         folder / f"{stems[name]}.png")
        raw = save_npy(maps.numpy().astype(np.float32), folder / f"{stems[name]}.npy") if save_raw else None
        return WrittenGrid(name, png, raw, tuple(maps.shape))

    spatial = [name for name, value in outputs.items() if value.dim() == 4]
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(write_one, spatial))
