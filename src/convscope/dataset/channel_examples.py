"""The dataset examples of a dataset run (``convscope dataset --examples``): what each channel of
the chosen layers responds to in the user's own images.

* During the run, each shard keeps, per layer, every image's channel maxima and their positions
  (the hooks of :func:`convscope.techniques.cams.cam_maps`'s pass, no extra forward) and writes
  ``shard-NNNNN.examples.npz`` just before its Parquet file: the shard's top-K per channel (exact),
  how many images fired each channel (maximum > 0), and the maxima in float16 for the histograms.
* At the end the partial files are merged in shard order (:class:`~convscope.techniques.examples.TopK`:
  the same examples whatever the grouping, so a resumed run and the Ray engine equal one
  uninterrupted local run), and ``DIR/examples/<layer>.json`` and ``DIR/examples/<layer>/<channel>.png``
  are written: the K crops of each channel, best first, each the receptive field of the unit at the
  maximum, cut from the picture the model saw (the photo resized to the input size), shown at
  :data:`CROP` pixels with the unit's own cell outlined.
* A channel is *dead* when its maximum is never above zero over the dataset, *rare* when it is
  above zero on fewer than :data:`RARE` of the images; its *mean* is its activation averaged over
  positions and images.
* A classifier's class scores (:data:`~convscope.techniques.units.LOGITS`, ``logits``) are a layer
  here too: a class's examples are the images with its highest logit, their crop the whole picture.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..catalog import DATASET_DIR, EXAMPLES_DIR
from ..errors import ConvscopeError, InputError, LayerError, check_at_least
from ..images import load_image
from ..layers import default_filter_layers, select_layers
from ..model import Model
from ..presentation.drawing import crop_grid, receptive_field_crop
from ..presentation.files import safe_name, save_image, save_json, write_bytes
from ..presentation.html import data_uri_img
from ..techniques.examples import ReceptiveField, TopK, channel_maxima, receptive_field
from ..techniques.units import LOGITS, check_class_scores, reads_class_scores

#: Bins of each channel's histogram of maxima.
BINS = 20
#: A channel firing on fewer than this share of the images is flagged rare.
RARE = 0.001
#: Threads decoding photos and encoding grids at the end of a run (the model is done by then).
THREADS = min(4, os.cpu_count() or 1)


def examples_layers(model: Model, spec: str | Sequence[str] | None) -> list[str]:
    """The layers to collect examples of (default: the model's filter layers); each must output a
    feature map (C x h x w). LayerError/InputError name the parameter ``examples``."""
    layers = model.layers()
    if spec in (None, "default"):
        names = default_filter_layers(layers)
    else:
        names = [name for part in _spec_parts(spec) for name in
                 ([LOGITS] if part == LOGITS and reads_class_scores(model, LOGITS) else select_layers(part, layers))]
        names = list(dict.fromkeys(names))
    shapes = {layer.name: layer.shape for layer in layers}
    for name in names:
        if name == LOGITS and reads_class_scores(model, name):
            check_class_scores(model)
            continue
        shape = shapes.get(name) or model.layer(name).shape
        if len(shape) != 3:
            raise LayerError(f"examples: layer {name!r} is not spatial (its output is "
                             f"{'x'.join(map(str, shape)) or 'not a tensor'}, not C x H x W)", parameter="examples")
    return names


def _spec_parts(spec: str | Sequence[str]) -> list[str]:
    return [part.strip() for part in (spec.split(",") if isinstance(spec, str) else spec) if part.strip()]


def check_examples_top(top: int, images: int) -> int:
    """``top`` examples per channel: at least 1, at most the number of images."""
    check_at_least("examples_top", top, 1)
    if top > images:
        raise InputError(f"examples_top must be at most the number of images ({images}), got {top}",
                         parameter="examples_top")
    return top


def partial_path(shard: Path) -> Path:
    """The examples file of a shard (``shard-NNNNN.examples.npz`` beside ``shard-NNNNN.parquet``)."""
    return shard.with_name(shard.stem + ".examples.npz")


class ShardExamples:
    """Collects the channel maxima of one shard's images, batch by batch (:meth:`watchers` go to
    ``cam_maps(watch=...)``, :meth:`keep` names the images of the batch just run)."""

    def __init__(self, layers: Sequence[str], top: int) -> None:
        self.layers, self.top = list(layers), top
        self._batch: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.maxima: dict[str, list[np.ndarray]] = {name: [] for name in self.layers}
        self.positions: dict[str, list[np.ndarray]] = {name: [] for name in self.layers}
        self.mean_sums: dict[str, np.ndarray | float] = {name: 0.0 for name in self.layers}
        self.images: list[int] = []

    def watchers(self) -> dict[str, Callable[[torch.Tensor], None]]:
        """layer -> a function of its output (B x C x h x w; the class scores B x N x 1 x 1)."""
        def watcher(name: str) -> Callable[[torch.Tensor], None]:
            def watch(output: torch.Tensor) -> None:
                means = output.detach().float().flatten(2).mean(dim=2).cpu().numpy()
                self._batch[name] = (*channel_maxima(output), means)
            return watch
        return {name: watcher(name) for name in self.layers}

    def keep(self, images: Sequence[int]) -> None:
        for name in self.layers:
            maxima, positions, means = self._batch.pop(name)
            self.maxima[name].append(maxima[:len(images)])
            self.positions[name].append(positions[:len(images)])
            self.mean_sums[name] = self.mean_sums[name] + means[:len(images)].astype(np.float64).sum(axis=0)
        self.images.extend(images)

    def save(self, path: Path) -> Path:
        arrays: dict[str, np.ndarray] = {"images": np.asarray(self.images, np.int64)}
        for number, name in enumerate(self.layers):
            if self.images:
                maxima = np.concatenate(self.maxima[name])
                positions = np.concatenate(self.positions[name])
            else:
                maxima, positions = np.zeros((0, 0), np.float32), np.zeros((0, 0, 2), np.int32)
            best = TopK.empty(maxima.shape[1], self.top).add(maxima, positions, arrays["images"]) \
                if self.images else TopK.empty(0, self.top)
            arrays.update({f"{number}.values": best.values, f"{number}.images": best.images,
                           f"{number}.positions": best.positions, f"{number}.fired": (maxima > 0).sum(axis=0),
                           f"{number}.maxima": maxima.astype(np.float16),
                           f"{number}.mean_sums": np.asarray(self.mean_sums[name], np.float64)})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return write_bytes(path, buffer.getvalue())


@dataclass
class LayerExamples:
    """The merged examples of one layer: ``top`` (channels x K), over ``images`` readable images;
    ``fired`` images per channel with a maximum above zero; a histogram of the maxima per channel;
    ``means`` each channel's mean activation (None for partial files written before means were kept)."""

    layer: str
    top: TopK
    images: int
    fired: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    means: np.ndarray | None = None


def merge_partials(folder: Path, layers: Sequence[str], top: int) -> list[LayerExamples]:
    """Merge the shards' examples files in shard order; memory: layers x channels x K (and one shard)."""
    partials = sorted(folder.glob("shard-*.examples.npz"))
    tops: dict[int, TopK] = {}
    fired: dict[int, np.ndarray] = {}
    low: dict[int, np.ndarray] = {}
    high: dict[int, np.ndarray] = {}
    mean_sums: dict[int, np.ndarray | None] = {}
    images = 0
    for path in partials:
        with np.load(path) as part:
            images += len(part["images"])
            for number in range(len(layers)):
                values = part[f"{number}.values"]
                if values.shape[0] == 0:
                    continue
                key = f"{number}.mean_sums"
                summed = part[key] if key in part.files else None
                before = mean_sums.get(number, 0.0)
                mean_sums[number] = None if summed is None or before is None else before + summed
                shard_top = TopK(values, part[f"{number}.images"], part[f"{number}.positions"])
                tops[number] = tops[number].merge(shard_top) if number in tops else shard_top
                fired[number] = fired.get(number, 0) + part[f"{number}.fired"]
                maxima = part[f"{number}.maxima"].astype(np.float32)
                low[number] = np.minimum(low.get(number, np.inf), maxima.min(axis=0))
                high[number] = np.maximum(high.get(number, -np.inf), maxima.max(axis=0))
    counts: dict[int, np.ndarray] = {n: np.zeros((len(low[n]), BINS), np.int64) for n in low}
    for path in partials:  # second pass: the histograms, on ranges now known
        with np.load(path) as part:
            for number in counts:
                maxima = part[f"{number}.maxima"].astype(np.float32)
                if maxima.shape[0]:
                    counts[number] += _bin_counts(maxima, low[number], high[number])
    merged = []
    for number, name in enumerate(layers):
        if number not in tops:
            raise InputError(f"examples: no readable image reached layer {name!r}", parameter="examples")
        spans = high[number] - low[number]
        edges = low[number][:, None] + np.linspace(0, 1, BINS + 1)[None, :] * spans[:, None]
        summed = mean_sums.get(number)
        merged.append(LayerExamples(name, tops[number], images, fired[number], edges, counts[number],
                                    None if summed is None else summed / max(images, 1)))
    return merged


def _bin_counts(maxima: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per channel (column), how many maxima fall in each of BINS equal bins of [low, high]."""
    spans = np.where(high > low, high - low, 1.0)
    bins = np.clip(((maxima - low) / spans * BINS).astype(np.int64), 0, BINS - 1)
    channels = maxima.shape[1]
    flat = bins + np.arange(channels)[None, :] * BINS
    return np.bincount(flat.ravel(), minlength=channels * BINS).reshape(channels, BINS)


def write_examples(out: str | os.PathLike, model: Model, layers: Sequence[str], top: int,
                   paths: Sequence[str]) -> list[Path]:
    """Merge the run's partial files in ``out/dataset`` and write ``out/examples/<layer>.json`` and
    ``out/examples/<layer>/<channel>.png``; ``paths``: the run's images by number. Returns the JSON files."""
    out = Path(out)
    merged = merge_partials(out / DATASET_DIR, layers, top)
    fields = {name: receptive_field(model, name) for name in layers}
    crops = _crops(merged, fields, paths, model)
    folder = out / EXAMPLES_DIR
    written, saving = [], []
    with ThreadPoolExecutor(max_workers=THREADS) as pool:  # PNG encoding releases the GIL
        for number, examples in enumerate(merged):
            name, field = examples.layer, fields[examples.layer]
            layer_folder = folder / safe_name(name)
            layer_folder.mkdir(parents=True, exist_ok=True)
            channels = []
            for channel in range(examples.top.values.shape[0]):
                filled = examples.top.filled(channel)
                tiles = [crops.pop((number, channel, rank)) for rank in range(filled)]
                if tiles:
                    saving.append(pool.submit(save_image, crop_grid(tiles), layer_folder / f"{channel}.png"))
                channels.append(_channel_json(examples, channel, filled, field, paths, flagged=name != LOGITS))
            fired = examples.fired
            rare = (fired > 0) & (fired < RARE * examples.images)
            if name == LOGITS:  # a logit below zero is no sign of a dead class
                fired, rare = np.ones_like(fired), np.zeros_like(rare)
            written.append(save_json({
                "layer": name, "top": top, "images": examples.images, "folder": f"{EXAMPLES_DIR}/{safe_name(name)}",
                "receptive_field": {"size": list(field.size), "stride": list(field.stride),
                                    "offset": list(field.offset), "input_size": list(field.input_size)},
                "dead": int((fired == 0).sum()), "rare": int(rare.sum()), "channels": channels,
            }, folder / f"{safe_name(name)}.json", indent=None))  # compact: 5x faster to write, read by tools
        for saved in saving:
            saved.result()
    return written


def _channel_json(examples: LayerExamples, channel: int, filled: int, field: ReceptiveField,
                  paths: Sequence[str], flagged: bool = True) -> dict[str, Any]:
    """One channel's entry; ``flagged``: whether dead and rare apply (not to class scores)."""
    fired = int(examples.fired[channel])
    rows = []
    for rank in range(filled):
        image = int(examples.top.images[channel, rank])
        row, column = (int(v) for v in examples.top.positions[channel, rank])
        rows.append({"image": image, "path": paths[image], "value": float(examples.top.values[channel, rank]),
                     "position": [row, column], "input_box": list(field.box(row, column))})
    mean = None if examples.means is None else float(examples.means[channel])
    return {"channel": channel, "fired": fired, "fired_share": fired / max(examples.images, 1), "mean": mean,
            "dead": flagged and fired == 0, "rare": flagged and 0 < fired < RARE * examples.images,
            "histogram": {"edges": [float(v) for v in examples.edges[channel]],
                          "counts": [int(v) for v in examples.counts[channel]]},
            "examples": rows}


def _crops(merged: Sequence[LayerExamples], fields: dict[str, ReceptiveField], paths: Sequence[str],
           model: Model) -> dict[tuple[int, int, int], Image.Image]:
    """Every example's crop, keyed (layer number, channel, rank); each photo is decoded once, into
    the picture the model saw, in a few threads (decoding and resizing release the GIL)."""
    wanted: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for number, examples in enumerate(merged):
        for channel in range(examples.top.values.shape[0]):
            for rank in range(examples.top.filled(channel)):
                row, column = (int(v) for v in examples.top.positions[channel, rank])
                wanted.setdefault(int(examples.top.images[channel, rank]), []).append(
                    (number, channel, rank, row, column))

    def crops_of(image: int) -> list[tuple[tuple[int, int, int], Image.Image]]:
        try:
            seen = model.preprocessing.resized(load_image(paths[image])).convert("RGB")
        except ConvscopeError:  # changed or gone since the run: blank tiles keep the grid's order
            seen = None
        return [((number, channel, rank), receptive_field_crop(seen, fields[merged[number].layer], row, column))
                for number, channel, rank, row, column in wanted[image]]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return dict(pair for pairs in pool.map(crops_of, sorted(wanted)) for pair in pairs)


class ChannelExamples(list):
    """The examples of one channel, best first: dicts with ``image``, ``path``, ``value``,
    ``position`` (row, column in the layer's output) and ``input_box`` (left, top, right, bottom in
    model input pixels). ``picture`` is the grid of their crops; in a notebook it shows itself."""

    def __init__(self, rows: Sequence[dict], layer: str, channel: int, picture: Path | None, facts: dict) -> None:
        super().__init__(rows)
        self.layer, self.channel, self.picture = layer, channel, picture
        self.fired, self.dead, self.rare = facts["fired"], facts["dead"], facts["rare"]

    def __repr__(self) -> str:
        return (f"<ChannelExamples {self.layer} channel {self.channel}: {len(self)} images"
                f"{', dead' if self.dead else ', rare' if self.rare else ''}>")

    def _repr_html_(self) -> str:
        from html import escape

        picture = ""
        if self.picture is not None and self.picture.exists():
            picture = data_uri_img(self.picture.read_bytes(), alt=f"the crops of channel {self.channel}",
                                   style="image-rendering: pixelated; width: 240px")
        rows = "".join(f"<tr><td>{i + 1}</td><td>{escape(str(r['path']))}</td><td>{r['value']:.4g}</td>"
                       f"<td>{r['position'][0]}, {r['position'][1]}</td></tr>" for i, r in enumerate(self))
        return (f"<p><b>{escape(self.layer)}</b>, channel {self.channel}: fired on {self.fired} images"
                f"{' (dead)' if self.dead else ' (rare)' if self.rare else ''}</p>{picture}"
                f"<table><tr><th>#</th><th>image</th><th>maximum</th><th>position</th></tr>{rows}</table>")


def channel_examples(out: str | os.PathLike, layer: str, channel: int) -> ChannelExamples:
    """The examples of ``channel`` of ``layer`` from the dataset run in ``out``."""
    facts = read_layer(out, layer)
    channels = facts["channels"]
    if not isinstance(channel, int) or not 0 <= channel < len(channels):
        raise InputError(f"channel must be between 0 and {len(channels) - 1} for {layer!r}, got {channel!r}",
                         parameter="channel")
    entry = channels[channel]
    picture = Path(out) / facts["folder"] / f"{channel}.png"
    return ChannelExamples(entry["examples"], facts["layer"], channel, picture if picture.exists() else None, entry)


def read_layer(out: str | os.PathLike, layer: str) -> dict[str, Any]:
    """``out/examples/<layer>.json``; InputError naming ``layer`` when the run has no examples of it."""
    path = Path(out) / EXAMPLES_DIR / f"{safe_name(layer)}.json"
    if not path.exists():
        found = sorted(p.stem for p in (Path(out) / EXAMPLES_DIR).glob("*.json"))
        raise InputError(f"layer: the dataset run in {out} has no examples of {layer!r}"
                         + (f" (it has {', '.join(found)})" if found else " (run it with --examples)"),
                         parameter="layer")
    return json.loads(path.read_text(encoding="utf-8"))


__all__ = ["BINS", "RARE", "ChannelExamples", "channel_examples", "ShardExamples", "LayerExamples", "examples_layers",
           "merge_partials", "write_examples", "read_layer", "partial_path"]
