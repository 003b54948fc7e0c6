"""Dataset runs: a whole folder of images through predictions and class activation maps, streamed,
written as Parquet shards, resumable.

* The source is a folder (searched recursively), a glob or a text file listing paths; true labels
  come from class sub-folders (an ImageFolder layout) or a labels file (CSV or JSON).
* ``DIR/dataset/manifest.json`` fixes the image list (sorted paths, sizes, modification times), the
  model and every setting; ``DIR/dataset/shard-NNNNN.parquet`` hold :data:`SHARD_SIZE` images each,
  one row per image, each written atomically when complete. Running again skips complete shards,
  so an interrupted run loses at most the shards in progress and the resumed results equal an
  uninterrupted run's; a changed folder or changed settings are an error unless ``restart``.
* Per image: the top-5 predictions, the true class and whether the top-1 is right (when known), the
  CAM of the predicted class -- and of the true class when it differs -- at the layer's resolution,
  and the requested metrics (``drop``: one forward pass; ``deletion``/``insertion``: S each). An
  unreadable image is a row with its error; it never stops the run.
* Decoding and preprocessing run in ``workers`` DataLoader processes while the model runs in batches.

:func:`run` is the Python entry, :func:`load` reads the results back as a ``pyarrow.Table``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from . import metrics as measure
from .errors import ConvscopeError, InputError, check_at_least, check_choice
from .dataset_examples import (ChannelExamples, ShardExamples, channel_examples, check_examples_top, examples_layers,
                               partial_path, write_examples)
from .dataset_sources import file_labels, find_images, folder_labels
from .drawing import overlay
from .files import prepare_out_dir, save_image, save_json, write_bytes
from .images import load_image
from .model import Model
from .precision import check_precision
from .techniques.cams import cam_layer, cam_method, compute_cam
from .techniques.examples import DEFAULT_TOP
from .writers import resized_map

#: Images per Parquet shard: the unit of work, of writing and of resuming.
SHARD_SIZE = 256
#: The longer side of the report's thumbnails, made while the images are decoded anyway.
THUMB = 128
DATASET_METRICS = ("drop", "deletion", "insertion")
ENGINES = ("local", "ray")
TOP = 5


# -- the manifest -------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """Everything that decides the results; a resumed run must have the same."""

    model: str
    weights: str
    cam_method: str
    cam_layer: str
    metrics: list[str]
    steps: int
    precision: str
    shard_size: int = SHARD_SIZE
    examples: list[str] = field(default_factory=list)
    examples_top: int = 0


@dataclass
class Manifest:
    settings: Settings
    images: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"settings": asdict(self.settings), "images": self.images}

    def differences(self, other: dict) -> list[str]:
        """What changed from ``other`` (a manifest read from disk), in words."""
        before_settings = {**asdict(Settings("", "", "", "", [], 0, "")), **other.get("settings", {})}
        changed = [f"{key} ({before_settings.get(key)!r} -> {value!r})"
                   for key, value in asdict(self.settings).items() if before_settings.get(key) != value]
        before = {entry["path"]: entry for entry in other.get("images", [])}
        now = {entry["path"]: entry for entry in self.images}
        added, removed = sorted(set(now) - set(before)), sorted(set(before) - set(now))
        modified = sorted(p for p in set(now) & set(before) if now[p] != before[p])
        for what, paths in (("added", added), ("removed", removed), ("modified", modified)):
            if paths:
                changed.append(f"{len(paths)} image(s) {what}, e.g. {paths[0]}")
        return changed


def _image_entry(path: Path) -> dict[str, Any]:
    try:
        stat = path.stat()
        return {"path": os.fspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except OSError:
        return {"path": os.fspath(path), "size": None, "mtime_ns": None}


# -- reading the images ---------------------------------------------------------------------------------------
class _Images(Dataset):
    """Decoded, preprocessed images (or the error that stopped them) for a DataLoader."""

    def __init__(self, paths: Sequence[Path], model: Model) -> None:
        self.paths = list(paths)
        self.preprocessing = model.preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, tuple[int, int], str | None,
                                               np.ndarray | None]:
        """(index, model input, photo size, error, the photo at thumbnail size) of image ``index``."""
        try:
            image = load_image(self.paths[index])
            resized = self.preprocessing.resized(image)
            thumb = thumbnail(resized if resized.mode == "RGB" else image, image.size)
            return index, self.preprocessing.from_resized(resized), image.size, None, np.asarray(thumb)
        except ConvscopeError as exc:
            return index, None, (0, 0), str(exc), None


def _collate(items: list) -> list:
    return items


# -- the run ---------------------------------------------------------------------------------------------------
#: Images per model pass by device. A CPU runs small batches fastest: larger ones leave its caches
#: (measured here, forward + backward to the CAM layer: the default model 6.5 ms an image at 4
#: against 20 ms at 32, ResNet-50 25 against 35 ms; VGG19 alone prefers 16, 105 against 121 ms).
DEFAULT_BATCH = {"cpu": 4, "cuda": 32}

SCHEMA = pa.schema([
    ("path", pa.string()), ("error", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("top_classes", pa.list_(pa.int32())), ("top_probabilities", pa.list_(pa.float32())),
    ("true_class", pa.int32()), ("correct", pa.bool_()),
    ("cam_class", pa.int32()), ("cam_shape", pa.list_(pa.int32())), ("cam", pa.list_(pa.float32())),
    ("true_cam", pa.list_(pa.float32())),
    ("drop", pa.float32()), ("deletion", pa.float32()), ("insertion", pa.float32()),
])


def run(model: Model, source: str | os.PathLike, out: str | os.PathLike = "convscope-out", *,
        labels: str | os.PathLike | None = None, cam_method_name: str = "gradcam", layer: str | None = None,
        metrics: str | Sequence[str] = "none", steps: int = measure.STEPS, batch_size: int | None = None, workers: int = 0,
        limit: int | None = None, restart: bool = False, precision: str = "fp32", engine: str = "local",
        ray_address: str | None = None, examples: str | Sequence[str] | None = None,
        examples_top: int = DEFAULT_TOP, progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None) -> Path:
    """Run a dataset (see the module notes) and return ``out/dataset``. ``engine``: ``local`` (this
    process and its DataLoader workers) or ``ray`` (the shards on a pool of Ray actors, a local Ray
    unless ``ray_address`` names a cluster; see :mod:`convscope.dataset_ray`). ``progress`` is
    called with the number of images done (after each batch; with Ray, after each shard), after
    ``on_total`` was told how many images the run has. ``batch_size``: default by device,
    :data:`DEFAULT_BATCH`. ``examples``: layers (names, lists, globs, or ``default`` for the filter
    layers) whose channels get their ``examples_top`` dataset examples (:mod:`convscope.dataset_examples`)."""
    check_choice("engine", engine, ENGINES)
    if engine == "ray":
        from .dataset_ray import check_ray

        check_ray()
    images, root = find_images(source)
    if limit is not None:
        check_at_least("limit", limit, 1)
        images = images[:limit]
    if on_total is not None:
        on_total(len(images))
    batch_size = DEFAULT_BATCH.get(model.device.type, DEFAULT_BATCH["cuda"]) if batch_size is None else batch_size
    check_at_least("batch_size", batch_size, 1)
    check_at_least("workers", workers, 0)
    check_at_least("steps", steps, 1)
    cam_method(cam_method_name)
    chosen_metrics = [] if metrics in ("none", ["none"]) else \
        [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    for name in chosen_metrics:
        if name not in DATASET_METRICS:
            raise InputError(f"metrics: unknown {name!r}; choose none or from {', '.join(DATASET_METRICS)}",
                             parameter="metrics")
    example_layers = examples_layers(model, examples) if examples is not None else []
    if examples is not None:
        check_examples_top(examples_top, len(images))
    truth = file_labels(model, images, labels) if labels is not None else folder_labels(model, images, root)
    settings = Settings(model.name, model.weights, cam_method_name, cam_layer(model, layer), chosen_metrics, steps,
                        check_precision(precision, model.device), examples=example_layers,
                        examples_top=examples_top if example_layers else 0)
    manifest = Manifest(settings, [_image_entry(p) for p in images])
    folder = prepare_out_dir(out, "dataset") / "dataset"
    _check_resume(folder, manifest, restart)
    save_json(manifest.as_json(), folder / "manifest.json")
    truth = truth or [None] * len(images)
    jobs = []
    for number, start in enumerate(range(0, len(images), SHARD_SIZE)):
        job = ShardJob(folder / f"shard-{number:05d}.parquet", images[start:start + SHARD_SIZE],
                       truth[start:start + SHARD_SIZE], start)
        if job.target.exists():  # complete from an earlier run
            if progress is not None:
                progress(len(job.paths))
        else:
            jobs.append(job)
    if engine == "local":
        for job in jobs:
            write_shard(model, job, settings, batch_size, workers, progress)
    else:
        from .dataset_ray import run_on_ray

        run_on_ray(model, jobs, settings, batch_size, ray_address, progress)
    if example_layers:
        write_examples(folder.parent, model, example_layers, examples_top, [os.fspath(p) for p in images])
    return folder


@dataclass(frozen=True)
class ShardJob:
    """One shard to write: its file and its images with their true classes."""

    target: Path
    paths: list[Path]
    truth: list[int | None]
    first: int = 0


def write_shard(model: Model, job: ShardJob, settings: Settings, batch_size: int, workers: int = 0,
                progress: Callable[[int], None] | None = None) -> Path:
    """Compute one shard's rows and write its Parquet file atomically."""
    examples = ShardExamples(settings.examples, settings.examples_top) if settings.examples else None
    rows = _shard_rows(model, job, settings, batch_size, workers, progress, examples)
    if examples is not None:  # before the shard: a complete shard always has its examples
        examples.save(partial_path(job.target))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buffer)
    return write_bytes(job.target, buffer.getvalue())


def _check_resume(folder: Path, manifest: Manifest, restart: bool) -> None:
    existing = folder / "manifest.json"
    if not existing.exists():
        return
    before = json.loads(existing.read_text(encoding="utf-8"))
    changed = manifest.differences(before)
    if changed and not restart:
        raise InputError(f"out: a different run is in {folder} ({'; '.join(changed[:3])}); use restart "
                         "(--restart) to start it again", parameter="out")
    if changed or restart:  # the shards and the report's thumbnails (numbered by image) start again
        for stale in [*folder.glob("shard-*.parquet"), *folder.glob("shard-*.examples.npz"),
                      *folder.glob("thumbs/*.jpg")]:
            stale.unlink()


def _shard_rows(model: Model, job: ShardJob, settings: Settings, batch_size: int, workers: int,
                progress: Callable[[int], None] | None, examples: ShardExamples | None = None) -> list[dict]:
    """The rows of one shard; each readable image's thumbnail with its map is written on the way
    (``thumbs/NNNNNN.jpg`` beside the shards, numbered by image, for the report)."""
    loader = DataLoader(_Images(job.paths, model), batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        worker_init_fn=_one_thread if workers else None)
    thumbs = job.target.parent / "thumbs"
    thumbs.mkdir(exist_ok=True)
    rows: list[dict] = [{}] * len(job.paths)
    with ThreadPoolExecutor(max_workers=1) as drawing:  # thumbnails drawn while the model runs
        pending = []
        for items in loader:
            good = [item for item in items if item[1] is not None]
            for index, _, _, error, _ in items:
                if error is not None:
                    rows[index] = {"path": os.fspath(job.paths[index]), "error": error}
            if good:
                x = torch.stack([item[1] for item in good]).to(model.device, model.dtype)
                batch_rows = _batch_rows(model, x, [job.truth[i] for i, *_ in good], settings,
                                         examples.watchers() if examples is not None else None)
                if examples is not None:
                    examples.keep([job.first + item[0] for item in good])
                for item, row in zip(good, batch_rows):
                    index, _, size, _, thumb = item
                    rows[index] = {"path": os.fspath(job.paths[index]), "error": None, "width": size[0],
                                   "height": size[1], **row}
                    pending.append(drawing.submit(write_thumbnail, thumb, row["cam"], row["cam_shape"],
                                                  thumbs / f"{job.first + index:06d}.jpg"))
            if progress is not None:
                progress(len(items))
        for done in pending:
            done.result()
    return rows


def thumbnail(photo: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
    """The photo within THUMB x THUMB pixels with the aspect ratio of ``size`` (width, height;
    default its own): a box reduction, then bilinear. The run passes the model-sized picture it
    made anyway with the photo's size, a third of the work of shrinking the photo itself."""
    width, height = size or photo.size
    scale = THUMB / max(width, height)
    if scale >= 1 and size is None:
        return photo
    target = (max(1, round(width * min(scale, 1))), max(1, round(height * min(scale, 1))))
    return photo.resize(target, Image.BILINEAR, reducing_gap=2.0)


def write_thumbnail(thumb: np.ndarray, cam: Sequence[float], shape: Sequence[int], target: Path) -> Path:
    """The photo at thumbnail size with the map (low-resolution, upsampled and min-max scaled) laid over."""
    heat = resized_map(torch.tensor(cam, dtype=torch.float32).view(*shape), *thumb.shape[:2])
    return save_image(overlay(Image.fromarray(thumb), heat), target, quality=80)


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process keeps the cores for the model


def _batch_rows(model: Model, x: torch.Tensor, truth: Sequence[int | None], settings: Settings,
                watch: dict[str, Callable[[torch.Tensor], None]] | None = None) -> list[dict]:
    result = compute_cam(model, x, None, settings.cam_layer, settings.cam_method, settings.precision, watch=watch)
    probabilities = result.logits.softmax(dim=1)
    values, indices = probabilities.topk(min(TOP, probabilities.shape[1]), dim=1)
    others = [i for i, (cls, true) in enumerate(zip(result.classes, truth)) if true is not None and true != cls]
    true_maps = {}
    if others:
        true_result = compute_cam(model, x[others], [truth[i] for i in others], settings.cam_layer,
                                  settings.cam_method, settings.precision)
        true_maps = {i: true_result.low_res[row] for row, i in enumerate(others)}
    measured: dict[str, torch.Tensor] = {}
    if "drop" in settings.metrics:
        measured["drop"] = measure.average_drop(model, x, result.maps, result.classes, settings.precision)
    for kind in ("deletion", "insertion"):
        if kind in settings.metrics:
            measured[kind] = measure.auc(measure.curves(model, x, result.maps, result.classes, kind, settings.steps,
                                                        precision=settings.precision))
    rows = []
    for i, (cls, true) in enumerate(zip(result.classes, truth)):
        low = result.low_res[i]
        rows.append({
            "top_classes": indices[i].tolist(), "top_probabilities": [round(v, 6) for v in values[i].tolist()],
            "true_class": true, "correct": None if true is None else bool(cls == true),
            "cam_class": cls, "cam_shape": list(low.shape), "cam": low.flatten().tolist(),
            "true_cam": true_maps[i].flatten().tolist() if i in true_maps else None,
            **{name: float(values_[i]) for name, values_ in measured.items()},
        })
    return rows


def examples(out: str | os.PathLike, layer: str, channel: int) -> ChannelExamples:
    """The dataset examples of one channel of a run made with ``examples=``: its images, best first
    (path, maximum, position, box), displayed as crops in a notebook."""
    return channel_examples(out, layer, channel)


def load(out: str | os.PathLike) -> pa.Table:
    """The results of a dataset run in ``out`` (its ``dataset`` folder, or that folder itself) as one
    ``pyarrow.Table`` in image order (``.to_pandas()`` where pandas is installed)."""
    folder = Path(out)
    folder = folder / "dataset" if (folder / "dataset").is_dir() else folder
    shards = sorted(folder.glob("shard-*.parquet"))
    if not shards:
        raise InputError(f"out {folder}: holds no dataset results", parameter="out")
    return pa.concat_tables([pq.read_table(shard) for shard in shards])


def summary(table: pa.Table) -> dict[str, Any]:
    """Counts, errors and, when labels are known, accuracy: what the command line prints at the end."""
    rows = table.select(["path", "error", "correct"]).to_pylist()
    errors = [(row["path"], row["error"]) for row in rows if row["error"]]
    judged = [row["correct"] for row in rows if row["correct"] is not None]
    return {"images": len(rows), "errors": errors,
            "accuracy": (sum(judged) / len(judged)) if judged else None, "labelled": len(judged)}

