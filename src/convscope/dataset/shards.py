"""The shards of a dataset run, shared by the local and the Ray engine.

* :class:`Settings` is everything that decides the results (a resumed run must have the same);
  :class:`Manifest` fixes them with the image list (sorted paths, sizes, modification times) in
  ``DIR/dataset/manifest.json``.
* A :class:`ShardJob` is :data:`SHARD_SIZE` images; :func:`write_shard` computes their rows (the
  top-5 predictions, the true class and whether the top-1 is right when known, the CAM of the
  predicted class -- and of the true class where it differs -- at the layer's resolution, the
  chosen metrics; an unreadable image is a row with its error; a detector's image a row per box) and
  writes ``shard-NNNNN.parquet`` atomically, with each row's thumbnail in ``thumbs/`` on the way.
* :func:`load` reads the shards back as one table, :func:`summary` counts it.
"""

from __future__ import annotations

import io
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
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset

from ..catalog import DATASET_DIR
from ..clips import read_clip
from ..errors import ConvscopeError, InputError
from ..images import load_image
from ..model import Model
from ..presentation.drawing import map_over, thumbnail
from ..presentation.files import save_image, write_bytes
from ..techniques import metrics as measure
from ..techniques.cams import METHODS, CamSettings, cam_maps
from ..techniques.units import LOGITS, reads_class_scores
from .batches import HalvingBatches
from .channel_examples import (
    ShardExamples,
    partial_path,
)

#: Images per Parquet shard: the unit of work, of writing and of resuming.
SHARD_SIZE = 256

TOP = 5


# -- the manifest -------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """Everything that decides the results; a resumed run must have the same."""

    model: str
    weights: str
    method: str
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


def image_entry(path: Path) -> dict[str, Any]:
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
        """(index, model input, photo size, error, the photo at thumbnail size) of image ``index`` (a
        video network's clip: its middle frame at thumbnail size)."""
        try:
            if self.preprocessing.frames is not None:
                clip = read_clip(self.paths[index], self.preprocessing.frames)
                middle = clip.frames[len(clip.frames) // 2]
                return (index, self.preprocessing.clip_tensor(clip.frames), clip.size, None,
                        np.asarray(thumbnail(middle)))
            image = load_image(self.paths[index])
            resized = self.preprocessing.resized(image)
            thumb = thumbnail(resized if resized.mode == "RGB" else image, image.size)
            return index, self.preprocessing.from_resized(resized), image.size, None, np.asarray(thumb)
        except ConvscopeError as exc:
            return index, None, (0, 0), str(exc), None


def _collate(items: list) -> list:
    return items



# -- the shards ---------------------------------------------------------------------------------------------------
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
    ("image", pa.int32()), ("box", pa.list_(pa.float32())), ("thumb", pa.string()),
])



@dataclass(frozen=True)
class ShardJob:
    """One shard to write: its file and its images with their true classes."""

    target: Path
    paths: list[Path]
    truth: list[int | None]
    first: int = 0


def write_shard(model: Model, job: ShardJob, settings: Settings, batch_size: int, workers: int = 0,
                progress: Callable[[int], None] | None = None, sizes: HalvingBatches | None = None) -> Path:
    """Compute one shard's rows and write its Parquet file atomically. ``sizes``: the model passes'
    batch size, halved when the device runs out of memory (shared by a run's shards; default: a new
    one at ``batch_size``)."""
    examples = ShardExamples(settings.examples, settings.examples_top) if settings.examples else None
    sizes = sizes or HalvingBatches(batch_size)
    rows = _shard_rows(model, job, settings, batch_size, workers, progress, examples, sizes)
    if examples is not None:  # before the shard: a complete shard always has its examples
        examples.save(partial_path(job.target))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), buffer)
    return write_bytes(job.target, buffer.getvalue())



def shard_work(model: Model, job: ShardJob, settings: Settings, batch_size: int) -> int:
    """A Ray actor's shard: written unless a complete one is already there (its first writer finished
    it before its node was lost); returns the number of images."""
    if not job.target.exists():
        write_shard(model, job, settings, batch_size)
    return len(job.paths)


def _shard_rows(model: Model, job: ShardJob, settings: Settings, batch_size: int, workers: int,
                progress: Callable[[int], None] | None, examples: ShardExamples | None,
                sizes: HalvingBatches) -> list[dict]:
    """The rows of one shard; each readable image's thumbnail with its map is written on the way
    (``thumbs/NNNNNN.jpg`` beside the shards, numbered by image, for the report)."""
    loader = DataLoader(_Images(job.paths, model), batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        worker_init_fn=_one_thread if workers else None)
    thumbs = job.target.parent / "thumbs"
    thumbs.mkdir(exist_ok=True)
    rows: list[list[dict]] = [[]] * len(job.paths)  # each image's rows: one, or a detector's one per box
    with ThreadPoolExecutor(max_workers=1) as drawing:  # thumbnails drawn while the model runs
        pending = []
        for items in loader:
            good = [item for item in items if item[1] is not None]
            for index, _, _, error, _ in items:
                if error is not None:
                    rows[index] = [{"path": os.fspath(job.paths[index]), "error": error, "image": job.first + index}]
            if good:
                x = torch.stack([item[1] for item in good]).to(model.device, model.dtype)
                truth = [job.truth[i] for i, *_ in good]
                numbers = [job.first + item[0] for item in good]

                def rows_of(part: slice) -> list[list[dict]]:
                    found = _batch_rows(model, x[part], truth[part], settings,
                                        examples.watchers() if examples is not None else None)
                    if examples is not None:
                        examples.keep(numbers[part])
                    return found

                batch_rows = [rows for part in sizes.run(len(good), rows_of) for rows in part]
                for item, image_rows in zip(good, batch_rows):
                    index, _, size, _, thumb = item
                    number = job.first + index
                    rows[index] = []
                    for k, row in enumerate(image_rows):
                        name = f"{number:06d}.jpg" if not model.target.finds_entries else f"{number:06d}-{k:02d}.jpg"
                        rows[index].append({"path": os.fspath(job.paths[index]), "error": None, "width": size[0],
                                            "height": size[1], "image": number, "thumb": name, **row})
                        pending.append(drawing.submit(write_thumbnail, thumb, row["cam"], row["cam_shape"],
                                                      thumbs / name, row.get("box"), model.input_size))
            if progress is not None:
                progress(len(items))
        for done in pending:
            done.result()
    return [row for image_rows in rows for row in image_rows]


def write_thumbnail(thumb: np.ndarray, cam: Sequence[float] | None, shape: Sequence[int] | None, target: Path,
                    box: Sequence[float] | None = None, input_size: tuple[int, int] | None = None) -> Path:
    """``target``: the photo at thumbnail size with its low-resolution map laid over (a clip's middle
    frame with its map's middle frame; a detection's box, in the model input's pixels of
    ``input_size`` (H, W), outlined); the photo alone where there is no map (a detector that found
    no box)."""
    picture = Image.fromarray(thumb)
    if cam is not None:
        low = torch.tensor(cam, dtype=torch.float32).view(*shape)
        if low.dim() == 3:
            low = low[len(low) // 2]
        picture = map_over(picture, low)
    if box is not None and input_size is not None:
        x_scale, y_scale = picture.width / input_size[1], picture.height / input_size[0]
        x0, y0, x1, y1 = box
        ImageDraw.Draw(picture).rectangle((x0 * x_scale, y0 * y_scale, x1 * x_scale, y1 * y_scale),
                                          outline=(255, 255, 255), width=2)
    return save_image(picture, target, quality=80)


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # workers decode; the main process keeps the cores for the model


def _batch_rows(model: Model, x: torch.Tensor, truth: Sequence[int | None], settings: Settings,
                watch: dict[str, Callable[[torch.Tensor], None]] | None = None) -> list[list[dict]]:
    """Each image's rows: one (its top classes, its map and metrics), or a detector's one per box."""
    checked = CamSettings(settings.cam_layer, METHODS[settings.method], settings.precision)  # checked by run()
    if model.target.finds_entries:
        return _detection_rows(model, x, settings, checked)
    watch = dict(watch or {})
    on_scores = watch.pop(LOGITS, None) if reads_class_scores(model, LOGITS) else None
    result = cam_maps(model, x, checked, None, watch=watch)
    if on_scores is not None:  # the class scores as a layer of N channels of 1 x 1
        on_scores(result.logits.detach()[:, :, None, None])
    if model.target.ranks_classes:  # a classifier's ranking comes from the pass the maps made
        values, indices = result.logits.softmax(dim=1).topk(min(TOP, result.logits.shape[1]), dim=1)
        tops = list(zip(indices.tolist(), values.tolist()))
    else:  # other targets rank from the whole output (a segmentation's pixel shares): one more pass
        tops = [([p.index for p in ranked], [p.value for p in ranked])
                for ranked in model.predict(x, top=model.shown(TOP))]
    others = [i for i, (cls, true) in enumerate(zip(result.classes, truth)) if true is not None and true != cls]
    true_maps = {}
    if others:
        true_result = cam_maps(model, x[others], checked, [truth[i] for i in others])
        true_maps = {i: true_result.low_res[row] for row, i in enumerate(others)}
    measured = _measured(model, x, result.maps, result.classes, settings)
    rows = []
    for i, (cls, true) in enumerate(zip(result.classes, truth)):
        low = result.low_res[i]
        rows.append([{
            "top_classes": tops[i][0], "top_probabilities": [round(v, 6) for v in tops[i][1]],
            "true_class": true, "correct": None if true is None else bool(cls == true),
            "cam_class": cls, "cam_shape": list(low.shape), "cam": low.flatten().tolist(),
            "true_cam": true_maps[i].flatten().tolist() if i in true_maps else None,
            **{name: float(values_[i]) for name, values_ in measured.items()},
        }])
    return rows


def _measured(model: Model, x: torch.Tensor, maps: torch.Tensor, classes: Sequence[int],
              settings: Settings) -> dict[str, torch.Tensor]:
    """The chosen metrics of each row's map."""
    measured: dict[str, torch.Tensor] = {}
    if "drop" in settings.metrics:
        measured["drop"] = measure.average_drop(model, x, maps, classes, settings.precision)
    for kind in ("deletion", "insertion"):
        if kind in settings.metrics:
            measured[kind] = measure.auc(measure.curves(model, x, maps, classes, kind, settings.steps,
                                                        precision=settings.precision))
    return measured


def _detection_rows(model: Model, x: torch.Tensor, settings: Settings, checked: CamSettings) -> list[list[dict]]:
    """A detector's rows: one per box above the score threshold (``top_classes`` and
    ``top_probabilities`` its class and score, ``box`` in the model input's pixels, its map and
    metrics), each image's boxes best first; an image without a box one row without a map. The boxes
    are those ``predict`` finds in the batch (the target adopts them)."""
    try:
        ranked = model.predict(x, top=TOP)
    except InputError as exc:
        if exc.parameter != "score_threshold":
            raise
        ranked = [[] for _ in range(len(x))]  # no box in any image of the batch
    pairs = [(image, p) for image, predictions in enumerate(ranked) for p in predictions]
    maps = measured = None
    if pairs:
        rows_x = x[[image for image, _ in pairs]]
        boxes = [p.index for _, p in pairs]
        result = cam_maps(model, rows_x, checked, boxes)
        maps, measured = result.low_res, _measured(model, rows_x, result.maps, boxes, settings)
    rows: list[list[dict]] = [[] for _ in range(len(x))]
    for row, (image, p) in enumerate(pairs):
        rows[image].append({
            "top_classes": [p.class_index], "top_probabilities": [round(p.value, 6)],
            "true_class": None, "correct": None, "cam_class": p.class_index, "box": [round(v, 2) for v in p.box],
            "cam_shape": list(maps[row].shape), "cam": maps[row].flatten().tolist(), "true_cam": None,
            **{name: float(values[row]) for name, values in measured.items()}})
    for image in range(len(x)):
        if not rows[image]:
            rows[image].append({"top_classes": [], "top_probabilities": [], "true_class": None, "correct": None,
                                "cam_class": None, "box": None, "cam_shape": None, "cam": None, "true_cam": None})
    return rows


def load(out: str | os.PathLike) -> pa.Table:
    """The results of a dataset run in ``out`` (its ``dataset`` folder, or that folder itself) as one
    ``pyarrow.Table`` in image order (``.to_pandas()`` where pandas is installed)."""
    folder = Path(out)
    folder = folder / DATASET_DIR if (folder / DATASET_DIR).is_dir() else folder
    shards = sorted(folder.glob("shard-*.parquet"))
    if not shards:
        raise InputError(f"out {folder}: holds no dataset results", parameter="out")
    return pa.concat_tables([pq.read_table(shard) for shard in shards], promote_options="default")


def summary(table: pa.Table) -> dict[str, Any]:
    """Counts (images; rows, one per box for a detector), errors and, when labels are known, accuracy:
    what the command line prints at the end."""
    rows = table.select(["path", "error", "correct"]).to_pylist()
    errors = [(row["path"], row["error"]) for row in rows if row["error"]]
    judged = [row["correct"] for row in rows if row["correct"] is not None]
    return {"images": len({row["path"] for row in rows}), "rows": len(rows), "errors": errors,
            "accuracy": (sum(judged) / len(judged)) if judged else None, "labelled": len(judged)}

