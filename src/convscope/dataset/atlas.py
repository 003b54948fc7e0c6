"""The atlas (``convscope atlas``, :func:`atlas`): every unit of every chosen layer of a model, on
the user's own dataset, in one resumable job on this machine or a Ray cluster, browsed afterwards.

The job has two kinds of shard, each written atomically and skipped when already complete, so a
killed run resumes where it stopped and a lost node only costs its shards in progress:

* **image shards** -- a dataset run (:mod:`.pipeline`, ``DIR/dataset``) that keeps, for every unit
  of the atlas's layers (the class scores, ``logits``, included), its top-K dataset examples, how
  often it fires and its mean (:mod:`.channel_examples`, ``DIR/examples``);
* **picture shards** -- :data:`~convscope.catalog.ATLAS_UNITS_PER_SHARD` units of one layer: their
  feature pictures (:func:`~convscope.techniques.filters.draw_filters`, each layer's own units: a
  block's output is drawn as itself) as PNGs in the filter cache (``DIR/filters/<key>/<layer>/``, so
  ``convscope run`` and the dataset report reuse them), then the shard's record
  ``DIR/atlas/shards/<layer>-<first unit>.json`` (scores, dead and flat flags, seconds), written last:
  a shard is complete when its record exists.

``DIR/atlas/manifest.json`` fixes the settings (a resumed run must have the same, unless
``restart``) and each layer's precision (``auto`` measured once, by the driver: see
:func:`layer_precisions`); ``DIR/atlas/timing.json`` says where the time went. The site (:mod:`.atlas_site`)
and the dataset report are written at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from ..catalog import (
    ATLAS_DIR,
    ATLAS_SIZE,
    ATLAS_STEPS,
    ATLAS_UNITS_PER_SHARD,
    EXAMPLES_DIR,
    EXAMPLES_TOP,
    FILTERS_DIR,
    FILTERS_PRECISION,
    MAPS_PRECISION,
    PHOTO_RECIPES,
)
from ..errors import InputError, check_at_least, check_choice, check_options
from ..layers import default_atlas_layers
from ..model import Model
from ..precision import check_precision
from ..presentation.drawing import filter_pictures
from ..presentation.files import prepare_out_dir, safe_name, save_image, save_json
from ..presentation.filter_cache import FilterSettings, cache_key
from ..techniques.filter_recipes import RECIPES
from ..techniques.filters import (
    DEFAULT_METHOD,
    check_filter_settings,
    draw_filters,
    filters_precision,
    picture_size_for,
)
from ..techniques.units import LOGITS, reads_class_scores, unit_count
from .batches import HalvingBatches
from .channel_examples import examples_layers
from .pipeline import ENGINES, DatasetOptions
from .pipeline import run as run_dataset

#: Phases of the job, in order, as ``progress`` and ``timing.json`` name them.
PHASES = ("images", "pictures", "pages")


@dataclass(frozen=True)
class AtlasOptions:
    """What an atlas holds and how it is computed (the options of :func:`atlas`).

    ``layers``: names, lists, globs, ``logits`` for the class scores (default: every conv layer and
    block output, and the logits of a classifier); ``top`` dataset examples per unit; the pictures'
    ``method``, ``steps``, ``size`` and ``seed`` (as ``convscope filters``), ``units_per_shard``
    pictures a shard, in ``precision``; ``labels``, ``limit``, ``batch_size``, ``workers``,
    ``engine``, ``ray_address`` and ``restart`` as for a dataset run (the engine runs both kinds of
    shard)."""

    layers: str | Sequence[str] | None = None
    top: int = EXAMPLES_TOP
    method: str = DEFAULT_METHOD
    steps: int = ATLAS_STEPS
    size: int = ATLAS_SIZE
    seed: int = 0
    units_per_shard: int = ATLAS_UNITS_PER_SHARD
    precision: str = FILTERS_PRECISION
    labels: str | os.PathLike | None = None
    limit: int | None = None
    batch_size: int | None = None
    workers: int = 0
    engine: str = ENGINES[0]
    ray_address: str | None = None
    restart: bool = False

    def dataset_options(self, layers: Sequence[str]) -> DatasetOptions:
        return DatasetOptions(labels=self.labels, limit=self.limit, batch_size=self.batch_size, workers=self.workers,
                              engine=self.engine, ray_address=self.ray_address, restart=self.restart,
                              precision=MAPS_PRECISION, examples=list(layers), examples_top=self.top)


def atlas_layers(model: Model, spec: str | Sequence[str] | None = None) -> list[str]:
    """The atlas's layers: ``spec`` resolved (see :class:`AtlasOptions`), each with a feature map
    or the class scores. LayerError/InputError name the parameter ``layers``."""
    if spec is None:
        names = default_atlas_layers(model.all_layers())
        if reads_class_scores(model, LOGITS) and model.target.ranks_classes and not model.target.finds_entries:
            names.append(LOGITS)
        return names
    try:
        return examples_layers(model, spec)
    except InputError as exc:
        raise _renamed(exc) from None


#: The dataset run's parameters under the names the atlas gives them.
_RENAMED = {"source": "dataset", "examples": "layers", "examples_top": "top"}


def _renamed(exc: InputError) -> InputError:
    """``exc`` worded with the atlas's parameter names (the dataset run's ``source`` is ``dataset``)."""
    name = _RENAMED.get(exc.parameter or "")
    if name is None:
        return exc
    return type(exc)(name + str(exc)[len(exc.parameter):], parameter=name, mentions=exc.mentions)


def picture_settings(model: Model, layer: str, options: AtlasOptions) -> FilterSettings:
    """What decides ``layer``'s pictures: the options, the size raised to what reaches the layer
    itself (the atlas draws each layer's own units, a block's output too)."""
    steps = check_filter_settings(options.method, options.steps, options.size)
    return FilterSettings(options.method, steps, picture_size_for(model, layer, options.size), options.seed)


@dataclass(frozen=True)
class PictureJob:
    """One picture shard: ``units`` of ``layer``, drawn with ``settings`` into ``folder``; complete
    when ``target`` (its record) exists."""

    target: Path
    layer: str
    units: tuple[int, ...]
    folder: Path
    settings: FilterSettings
    precision: str = FILTERS_PRECISION


def write_picture_shard(model: Model, job: PictureJob, sizes: HalvingBatches | None = None) -> int:
    """Draw the shard's pictures, write them (PNG, atomically) and then its record; nothing when the
    record exists (a complete shard is never written twice). ``sizes``: pictures per ascent, halved
    when the device runs out of memory (shared by a run's shards; default: the shard's units).
    Returns the number of pictures."""
    if job.target.exists():
        return len(job.units)
    start = time.perf_counter()
    settings, units = job.settings, list(job.units)
    sizes = sizes or HalvingBatches(len(units), "pictures")
    results = sizes.run(len(units), lambda part: draw_filters(
        model, job.layer, units[part], steps=settings.steps, size=settings.size, method=settings.method,
        seed=settings.seed, precision=job.precision, objective=settings.objective))
    job.folder.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"layer": job.layer, "units": {}}
    for result in results:
        for position, (unit, picture) in enumerate(zip(result.filters, filter_pictures(result.images))):
            save_image(picture, job.folder / f"{unit}.png")
            record["units"][str(unit)] = {
                "score": float(result.scores[position]), "initial_score": float(result.initial_scores[position]),
                "objective": result.objectives[position], "reached": result.reached[position],
                "flat": result.flat[position], "dead": result.dead[position], "precision": result.precision}
    record["seconds"] = round(time.perf_counter() - start, 3)
    save_json(record, job.target)
    return len(units)


@dataclass
class AtlasTiming:
    """Where an atlas's time went (seconds): each phase, and the pictures per layer."""

    phases: dict[str, float] = field(default_factory=dict)
    layers: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        total = sum(self.phases.values()) or 1.0
        said = [f"{phase}: {seconds:.1f} s ({seconds / total:.0%})" for phase, seconds in self.phases.items()]
        slowest = sorted(self.layers.items(), key=lambda item: -item[1])[:3]
        if slowest:
            said.append("slowest pictures: " + ", ".join(f"{layer} {seconds:.1f} s" for layer, seconds in slowest))
        return said


def atlas(model: Model, dataset: str | os.PathLike, out: str | os.PathLike = "convscope-out",
          options: AtlasOptions | None = None, *, progress: Callable[[str, int], None] | None = None,
          on_total: Callable[[str, int], None] | None = None, **keywords: Any) -> Path:
    """Write the atlas of ``model`` on the images under ``dataset`` into ``out`` (see the module
    notes) and return its site, ``out/atlas/index.html``. ``options`` (:class:`AtlasOptions`, or its
    fields as ``keywords``) say what and how; ``on_total(phase, n)`` and ``progress(phase, done)``
    follow the phases (:data:`PHASES`: images, then pictures)."""
    options = check_options(AtlasOptions, options, keywords)
    _check(model, options)
    layers = atlas_layers(model, options.layers)
    settings = {layer: picture_settings(model, layer, options) for layer in layers}
    with _engine_session(options):
        return _run(model, dataset, Path(out), options, layers, settings, progress, on_total)


def _engine_session(options: AtlasOptions) -> contextlib.AbstractContextManager:
    """One Ray session for both phases on the Ray engine (started once); nothing for the local one."""
    if options.engine != "ray":
        return contextlib.nullcontext()
    from .ray_engine import ray_session

    return ray_session(options.ray_address)


def _run(model: Model, dataset: str | os.PathLike, out: Path, options: AtlasOptions, layers: list[str],
         settings: dict[str, FilterSettings], progress: Callable[[str, int], None] | None,
         on_total: Callable[[str, int], None] | None) -> Path:
    """The atlas's phases (see :func:`atlas`), timed."""
    from .atlas_site import write_atlas_site
    from .report import write_dataset_report

    timing = AtlasTiming()

    def phase_progress(phase: str) -> Callable[[int], None] | None:
        return None if progress is None else partial(progress, phase)

    start = time.perf_counter()
    try:
        run_dataset(model, dataset, out, options.dataset_options(layers), progress=phase_progress("images"),
                    on_total=None if on_total is None else partial(on_total, "images"))
    except InputError as exc:
        raise _renamed(exc) from None
    timing.phases["images"] = time.perf_counter() - start

    folder = prepare_out_dir(out, ATLAS_DIR) / ATLAS_DIR
    manifest = {"model": model.name, "weights": model.weights, "layers": layers, "method": options.method,
                "steps": options.steps, "size": options.size, "seed": options.seed, "top": options.top,
                "units_per_shard": options.units_per_shard, "precision": options.precision}
    _check_resume(folder, manifest, options.restart)
    jobs = plan_pictures(model, layers, settings, out, options)
    precisions = layer_precisions(model, jobs, options, folder / "manifest.json")
    save_json({"settings": manifest, "precisions": precisions}, folder / "manifest.json")
    jobs = [replace(job, precision=precisions[job.layer]) for job in jobs]
    if on_total is not None:
        on_total("pictures", sum(len(job.units) for job in jobs))
    start = time.perf_counter()
    _draw_pictures(model, jobs, options, phase_progress("pictures"))
    timing.phases["pictures"] = time.perf_counter() - start
    _gather_pictures(model, layers, settings, jobs, out)
    for job in jobs:
        record = json.loads(job.target.read_text(encoding="utf-8"))
        timing.layers[job.layer] = timing.layers.get(job.layer, 0.0) + record.get("seconds", 0.0)

    start = time.perf_counter()
    write_dataset_report(out, model.class_labels)
    index = write_atlas_site(out, model, layers)
    timing.phases["pages"] = time.perf_counter() - start
    save_json({"phases": {k: round(v, 2) for k, v in timing.phases.items()},
               "picture_layers": {k: round(v, 2) for k, v in timing.layers.items()}}, folder / "timing.json")
    return index


def _draw_pictures(model: Model, jobs: Sequence[PictureJob], options: AtlasOptions,
                   progress: Callable[[int], None] | None) -> None:
    """The picture shards not yet complete, on the options' engine (those complete count as done)."""
    done = [job for job in jobs if job.target.exists()]
    waiting = [job for job in jobs if not job.target.exists()]
    if progress is not None and done:
        progress(sum(len(job.units) for job in done))
    if options.engine == "local":
        sizes = HalvingBatches(options.units_per_shard, "pictures")
        for job in waiting:
            write_picture_shard(model, job, sizes)
            if progress is not None:
                progress(len(job.units))
    else:
        from .ray_engine import run_on_ray

        run_on_ray(model, waiting, write_picture_shard, options.ray_address, progress)


def _check(model: Model, options: AtlasOptions) -> None:
    """The options that need no images, checked before any work."""
    check_choice("engine", options.engine, ENGINES)
    check_at_least("top", options.top, 1)
    check_at_least("units_per_shard", options.units_per_shard, 1)
    check_precision(options.precision, model.device)
    if options.method in PHOTO_RECIPES:
        raise InputError(f"method: {options.method} starts from a photo; the atlas draws every unit from noise "
                         f"({', '.join(name for name in RECIPES if name not in PHOTO_RECIPES)})", parameter="method")
    if options.engine == "ray":
        from .ray_engine import check_ray, check_reachable

        check_ray()
        check_reachable(options.ray_address)


def layer_precisions(model: Model, jobs: Sequence[PictureJob], options: AtlasOptions,
                     manifest: Path) -> dict[str, str]:
    """The precision each layer's pictures compute in, fixed once per atlas by the driver: the
    options' precision, or for ``auto`` the one measured on the layer's first shard of ``jobs``
    (:func:`~convscope.techniques.filters.filters_precision`) -- every shard of a layer, on any
    engine or node, then computes alike. A resumed atlas keeps the choices in its ``manifest``
    (a restarted one measures again)."""
    first = {}
    for job in jobs:
        first.setdefault(job.layer, job)
    if options.precision != "auto":
        return {layer: options.precision for layer in first}
    resumed = manifest.exists() and not options.restart
    known = json.loads(manifest.read_text(encoding="utf-8")).get("precisions", {}) if resumed else {}
    return {layer: known.get(layer) or filters_precision(model, layer, list(job.units), job.settings.size,
                                                         job.settings.method, job.settings.seed, "auto")
            for layer, job in first.items()}


def plan_pictures(model: Model, layers: Sequence[str], settings: dict[str, FilterSettings], out: Path,
                  options: AtlasOptions) -> list[PictureJob]:
    """Every picture shard of the atlas, layer by layer in network order, in the options' precision
    (the atlas then fixes each layer's: :func:`layer_precisions`)."""
    jobs = []
    records = out / ATLAS_DIR / "shards"
    records.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        count, folder = unit_count(model, layer), picture_folder(model, layer, settings[layer], out)
        for first in range(0, count, options.units_per_shard):
            units = tuple(range(first, min(count, first + options.units_per_shard)))
            jobs.append(PictureJob(records / f"{safe_name(layer)}-{first:05d}.json", layer, units, folder,
                                   settings[layer], options.precision))
    return jobs


def picture_folder(model: Model, layer: str, settings: FilterSettings, out: Path) -> Path:
    """Where ``layer``'s pictures go: the filter cache's folder for the settings, named after the
    layer itself (a block output's pictures are its own, not its last conv's)."""
    return out / FILTERS_DIR / cache_key(model, settings) / safe_name(layer)


def _gather_pictures(model: Model, layers: Sequence[str], settings: dict[str, FilterSettings],
                     jobs: Sequence[PictureJob], out: Path) -> None:
    """The shard records joined into the filter cache's per-layer score files, and
    ``examples/filters.json`` (layer -> its pictures' folder) for the dataset report's pages."""
    scores: dict[str, dict[str, dict]] = {}
    for job in jobs:
        record = json.loads(job.target.read_text(encoding="utf-8"))
        scores.setdefault(job.layer, {}).update(record["units"])
    folders = {}
    for layer in layers:
        folder = picture_folder(model, layer, settings[layer], out)
        save_json({"layer": layer, "scores": scores.get(layer, {})}, folder.with_suffix(".json"), indent=None)
        if not (folder.parent / "settings.json").exists():
            save_json({"model": model.name, "weights": model.weights, "input_size": list(model.input_size),
                       **asdict(settings[layer])}, folder.parent / "settings.json")
        folders[layer] = folder.relative_to(out).as_posix()
    save_json(folders, out / EXAMPLES_DIR / "filters.json")


def _check_resume(folder: Path, manifest: dict, restart: bool) -> None:
    """A different atlas in ``folder`` is an error unless ``restart``, which drops its shard records."""
    existing = folder / "manifest.json"
    if existing.exists():
        before = json.loads(existing.read_text(encoding="utf-8")).get("settings", {})
        changed = [f"{key} ({before.get(key)!r} -> {value!r})" for key, value in manifest.items()
                   if before.get(key) != value]
        if changed and not restart:
            raise InputError(f"out: a different atlas is in {folder} ({'; '.join(changed[:3])}); use restart "
                             "(--restart) to start it again", parameter="out")
    if restart and (folder / "shards").exists():
        shutil.rmtree(folder / "shards")


def read_timing(out: str | os.PathLike) -> AtlasTiming:
    """The timing an atlas in ``out`` wrote."""
    data = json.loads((Path(out) / ATLAS_DIR / "timing.json").read_text(encoding="utf-8"))
    return AtlasTiming(data["phases"], data["picture_layers"])


__all__ = ["AtlasOptions", "AtlasTiming", "PHASES", "PictureJob", "atlas", "atlas_layers", "layer_precisions",
           "plan_pictures", "picture_folder", "read_timing", "write_picture_shard"]
