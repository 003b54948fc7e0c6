"""A dataset run, start to end: :func:`run` (``convscope.dataset.run``) checks the options once
(:class:`DatasetOptions`), finds the images and their true classes (:mod:`.sources`), writes or checks
the manifest (a changed folder or changed settings are an error unless ``restart``), then hands the
shards not yet written to an engine -- here, in this process with ``workers`` DataLoader processes
decoding, or on Ray actors (:mod:`.ray_engine`) -- and finally merges the dataset examples
(:mod:`.channel_examples`). What a shard holds and how it is written is :mod:`.shards`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..catalog import DATASET_DIR, DATASET_METRICS, EXAMPLES_TOP, MAPS_PRECISION
from ..errors import InputError, check_at_least, check_choice, check_options
from ..model import Model
from ..precision import check_precision
from ..presentation.files import prepare_out_dir, save_json
from ..specs import parse_metrics
from ..techniques import metrics as measure
from ..techniques.cams import DEFAULT_METHOD as DEFAULT_CAM_METHOD
from ..techniques.cams import cam_method
from ..techniques.capture import cam_layer
from .batches import HalvingBatches
from .channel_examples import (
    ChannelExamples,
    channel_examples,
    check_examples_top,
    examples_layers,
    write_examples,
)
from .shards import DEFAULT_BATCH, SHARD_SIZE, Manifest, Settings, ShardJob, image_entry, shard_work, write_shard
from .sources import file_labels, find_images, folder_labels

#: Where a dataset runs: this process and its DataLoader workers, or Ray actors.
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class DatasetOptions:
    """What a dataset run computes and how (the user's options of :func:`run`).

    ``labels``: a CSV or JSON file of true classes (default: class sub-folders); ``method`` and
    ``layer`` (default: the last feature map before global pooling): the CAM; ``metrics``: none or
    a comma list of :data:`DATASET_METRICS` (``steps`` for deletion and insertion); ``batch_size``:
    default by device, :data:`DEFAULT_BATCH`; ``workers`` decoding images; ``limit``: only the first
    images (sorted by path); ``restart`` where a different run was; ``precision``; ``engine``:
    ``local`` (this process and its DataLoader workers) or ``ray`` (the shards on a pool of Ray
    actors, a local Ray unless ``ray_address`` names a cluster; see :mod:`convscope.dataset.ray_engine`);
    ``examples``: layers (names, lists, globs, or ``default`` for the filter layers) whose channels
    get their ``examples_top`` dataset examples (:mod:`convscope.dataset.channel_examples`).
    """

    labels: str | os.PathLike | None = None
    method: str = DEFAULT_CAM_METHOD
    layer: str | None = None
    metrics: str | Sequence[str] = "none"
    steps: int = measure.STEPS
    batch_size: int | None = None
    workers: int = 0
    limit: int | None = None
    restart: bool = False
    precision: str = MAPS_PRECISION
    engine: str = ENGINES[0]
    ray_address: str | None = None
    examples: str | Sequence[str] | None = None
    examples_top: int = EXAMPLES_TOP

    def settings(self, model: Model, images: int) -> Settings:
        """The manifest's settings of this run over ``images`` images, each option they hold checked
        (the method, the metrics and their steps, the example layers and their count, the CAM layer,
        the precision)."""
        check_at_least("steps", self.steps, 1)
        cam_method(self.method)
        metrics = parse_metrics(self.metrics, DATASET_METRICS)
        if self.examples is not None and (model.frames is not None or model.target.finds_entries):
            what = "takes clips" if model.frames is not None else "is a detector"
            raise InputError(f"examples: {model.name} {what}; dataset examples (crops of each channel's strongest "
                             "units) are made for image classifiers and segmenters only in this version",
                             parameter="examples")
        examples = examples_layers(model, self.examples) if self.examples is not None else []
        if self.examples is not None:
            check_examples_top(self.examples_top, images)
        return Settings(model.name, model.weights, self.method, cam_layer(model, self.layer), metrics, self.steps,
                        check_precision(self.precision, model.device), examples=examples,
                        examples_top=self.examples_top if examples else 0)


def run(model: Model, source: str | os.PathLike, out: str | os.PathLike = "convscope-out",
        options: DatasetOptions | None = None, *, progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None, **keywords: Any) -> Path:
    """Run a dataset (see the module notes) and return ``out/dataset``. ``options``
    (:class:`DatasetOptions`; or its fields as ``keywords``, which replace those of ``options``) say
    what is computed and how. ``progress`` is called with the number of images done (after each
    batch; with Ray, after each shard), after ``on_total`` was told how many images the run has."""
    options = check_options(DatasetOptions, options, keywords)
    check_choice("engine", options.engine, ENGINES)
    if options.engine == "ray":
        from .ray_engine import check_ray

        check_ray()
    images, root = find_images(source, clips=model.frames is not None)
    if options.limit is not None:
        check_at_least("limit", options.limit, 1)
        images = images[:options.limit]
    if on_total is not None:
        on_total(len(images))
    batch_size = options.batch_size
    if batch_size is None:
        batch_size = DEFAULT_BATCH.get(model.device.type, DEFAULT_BATCH["cuda"])
    check_at_least("batch_size", batch_size, 1)
    check_at_least("workers", options.workers, 0)
    settings = options.settings(model, len(images))
    if model.target.finds_entries:  # a detector's rows are its boxes: no class per image to check
        truth = None
    else:
        truth = (file_labels(model, images, options.labels) if options.labels is not None
                 else folder_labels(model, images, root))
    manifest = Manifest(settings, [image_entry(p) for p in images])
    folder = prepare_out_dir(out, DATASET_DIR) / DATASET_DIR
    _check_resume(folder, manifest, options.restart)
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
    if options.engine == "local":
        sizes = HalvingBatches(batch_size)
        for job in jobs:
            write_shard(model, job, settings, batch_size, options.workers, progress, sizes)
    else:
        from .ray_engine import run_on_ray

        run_on_ray(model, jobs, partial(shard_work, settings=settings, batch_size=batch_size), options.ray_address,
                   progress)
    if settings.examples:
        write_examples(folder.parent, model, settings.examples, settings.examples_top, [os.fspath(p) for p in images])
    return folder


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



def examples(out: str | os.PathLike, layer: str, channel: int) -> ChannelExamples:
    """The dataset examples of one channel of a run made with ``examples=``: its images, best first
    (path, maximum, position, box), displayed as crops in a notebook."""
    return channel_examples(out, layer, channel)


