"""Benchmark: the default model's whole atlas, against the floor of its forward and backward passes.

The atlas: every conv layer and block output of EfficientNet-Lite0 and its logits (``--layers``;
default all), 64-step pictures at 64 px, 9 examples per unit over ``--images`` photos (5,000; made
from the bundled sample photos: crops and flips of three photos, as benchmarks/dataset_speed.py),
on ``--device``, alone on the machine. The floor, on the same machine:

* images: the model's forward pass and the backward to the CAM layer on the same number of images
  (already decoded, batch 4 on a CPU), what the dataset pass does per image at the least;
* pictures: per layer, the ascent's forward (to the layer, at the picture's size; class pictures at
  the model's input size) and backward to the picture, in the precision the atlas chose for the
  layer, ``--steps`` times per shard of 64 units (measured on 2 steps per shard and scaled).

``--sample N`` (for a machine where the whole atlas takes hours: on this 2-core CPU about six):
the images phase runs in full, the picture phase only the first N shards of each layer, each
layer's time then being the mean shard's time times its shards (every shard of a layer is the same
work: the same unit count, steps and size; a last, smaller shard counted by its units); the pages
are not measured (they need every picture). Without it the atlas runs end to end
(``convscope.atlas``).

``--floor-only`` measures the floor again beside an earlier run's figures in ``--out``.

Writes ``--out``/results_<device>.json (each phase's seconds, the floor, per-layer pictures) and
prints a table.
Run: .venv/bin/python benchmarks/atlas_scale.py [--images N] [--layers SPEC] [--device cuda] [--sample N]
     [--floor-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import convscope
from convscope.catalog import ATLAS_SIZE, ATLAS_STEPS, ATLAS_UNITS_PER_SHARD
from convscope.dataset.atlas import (
    AtlasOptions,
    atlas_layers,
    layer_precisions,
    picture_settings,
    plan_pictures,
    write_picture_shard,
)
from convscope.dataset.pipeline import run as run_dataset
from convscope.hooks import evaluating
from convscope.techniques.capture import cam_layer
from convscope.techniques.filters import truncated_at
from convscope.techniques.units import LOGITS, unit_count

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset_speed import make_photos  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def images_floor(model: convscope.Model, count: int, batch: int) -> float:
    """Seconds of the forward pass and the backward to the CAM layer for ``count`` images."""
    layer = model.submodule(cam_layer(model, None))
    kept = {}
    handle = layer.register_forward_hook(lambda _m, _i, output: kept.__setitem__("out", output))
    x = torch.rand(batch, 3, *model.input_size, device=model.device)
    try:
        with evaluating(model.module), torch.enable_grad():
            start = time.perf_counter()
            for _ in range(0, count, batch):
                scores = model.module(x)
                torch.autograd.grad(scores.max(dim=1).values.sum(), kept["out"])
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - start
    finally:
        handle.remove()


def pictures_floor(model: convscope.Model, layer: str, size: int, units: int, steps: int, per_shard: int,
                   precision: str) -> float:
    """Seconds of the ascent's bare passes for ``units`` pictures of ``layer`` in ``precision`` (the
    one the atlas chose for the layer): the forward to the layer (class pictures: enlarged to the
    model's input, the whole network) and the backward to the picture; 2 steps measured per shard
    size, scaled to ``steps``."""
    total = 0.0
    for first in range(0, units, per_shard):
        batch = min(per_shard, units - first)
        picture = torch.rand(batch, 3, size, size, device=model.device, requires_grad=True)
        with evaluating(model.module), torch.enable_grad(), truncated_at(model, layer) as run:
            run(picture, precision)  # warm-up
            start = time.perf_counter()
            for _ in range(2):
                out = run(picture, precision)
                torch.autograd.grad(out[:, 0].float().sum(), picture)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            total += (time.perf_counter() - start) / 2 * steps
    return total


def whole_atlas(model: convscope.Model, photos: Path, out: Path, options: AtlasOptions) -> dict:
    """The atlas end to end: its timing.json."""
    start = time.perf_counter()
    last = {"phase": None, "at": start}

    def progress(phase: str, count: int) -> None:
        if phase != last["phase"] or time.perf_counter() - last["at"] > 60:
            print(f"{time.perf_counter() - start:8.0f} s  {phase} +{count}", flush=True)
            last.update(phase=phase, at=time.perf_counter())

    convscope.atlas(model, photos, out, options, progress=progress)
    manifest = json.loads((out / "atlas" / "manifest.json").read_text())
    return {**json.loads((out / "atlas" / "timing.json").read_text()), "precisions": manifest["precisions"]}


def sampled_atlas(model: convscope.Model, photos: Path, out: Path, options: AtlasOptions, layers: list[str],
                  sample: int) -> dict:
    """The images phase in full and ``sample`` picture shards per layer, scaled (see the module notes)."""
    start = time.perf_counter()
    run_dataset(model, photos, out, options.dataset_options(layers))
    phases = {"images": time.perf_counter() - start}
    print(f"images: {phases['images']:.0f} s", flush=True)
    settings = {layer: picture_settings(model, layer, options) for layer in layers}
    begin = time.perf_counter()  # as the atlas: ``auto`` measured once per layer by the driver
    jobs = plan_pictures(model, layers, settings, out, options)
    precisions = layer_precisions(model, jobs, options, out / "atlas" / "manifest.json")
    jobs = [dataclasses.replace(job, precision=precisions[job.layer]) for job in jobs]
    choosing = time.perf_counter() - begin
    print(f"precisions chosen in {choosing:.0f} s: {precisions}", flush=True)
    per_layer, measured = {}, {}
    for layer in layers:
        mine = [job for job in jobs if job.layer == layer]
        seconds = []
        for job in mine[:sample]:
            begin = time.perf_counter()
            write_picture_shard(model, job)
            seconds.append(time.perf_counter() - begin)
        per_unit = sum(seconds) / sum(len(job.units) for job in mine[:sample])
        full = max(len(job.units) for job in mine)
        per_shard = per_unit * full  # a full shard's time (the first shard is always full when there are more)
        per_layer[layer] = sum(seconds) + sum(per_shard * len(job.units) / full for job in mine[sample:])
        measured[layer] = len(seconds)
        print(f"{layer:32} {len(mine):3} shards  {sum(seconds) / len(seconds):7.1f} s a shard  "
              f"layer {per_layer[layer]:8.0f} s", flush=True)
    phases["pictures"] = choosing + sum(per_layer.values())
    return {"phases": phases, "picture_layers": per_layer, "shards_measured": measured, "precisions": precisions}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--layers", default=None, help="as convscope atlas --layers (default: all)")
    parser.add_argument("--steps", type=int, default=ATLAS_STEPS)
    parser.add_argument("--size", type=int, default=ATLAS_SIZE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sample", type=int, default=None, help="picture shards measured per layer (default: all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "atlas_scale"))
    parser.add_argument("--floor-only", action="store_true",
                        help="measure the floor again beside the figures of an earlier run in --out")
    args = parser.parse_args()
    model = convscope.load_model(device=args.device)
    options = AtlasOptions(layers=args.layers, steps=args.steps, size=args.size)
    layers = atlas_layers(model, args.layers)
    units = {layer: unit_count(model, layer) for layer in layers}
    print(f"{len(layers)} layers, {sum(units.values())} units, {args.images} images on {args.device}", flush=True)
    out, sample = Path(args.out), args.sample
    if args.floor_only:  # the floor again, beside an earlier run's figures (same machine, alone)
        earlier = json.loads((out / f"results_{args.device}.json").read_text())
        timing = {"phases": earlier["phases"], "picture_layers": earlier["picture_layers"],
                  "precisions": earlier["precisions"]}
        total, sample = earlier["total_seconds"], earlier["sampled_shards_per_layer"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            photos = Path(tmp) / "photos"
            photos.mkdir()
            make_photos(photos, args.images)
            start = time.perf_counter()
            if args.sample is None:
                timing = whole_atlas(model, photos, Path(tmp) / "out", options)
            else:
                timing = sampled_atlas(model, photos, Path(tmp) / "out", options, layers, args.sample)
            total = time.perf_counter() - start if args.sample is None else sum(timing["phases"].values())
    batch = 4 if args.device == "cpu" else 32
    floor = {"images": images_floor(model, args.images, batch)}
    per_layer = {}
    for layer in layers:
        size = picture_settings(model, layer, options).size
        precision = (timing.get("precisions") or {}).get(layer, "fp32")
        per_layer[layer] = pictures_floor(model, layer, size, units[layer], args.steps, ATLAS_UNITS_PER_SHARD,
                                          precision)
    floor["pictures"] = sum(per_layer.values())
    result = {"device": args.device, "images": args.images, "layers": len(layers), "units": sum(units.values()),
              "steps": args.steps, "size": args.size, "total_seconds": round(total, 1),
              "sampled_shards_per_layer": sample,
              "phases": {k: round(v, 1) for k, v in timing["phases"].items()},
              "floor": {k: round(v, 1) for k, v in floor.items()},
              "picture_layers": {k: round(v, 1) for k, v in timing["picture_layers"].items()},
              "picture_layers_floor": {k: round(v, 2) for k, v in per_layer.items()},
              "logits_units": units.get(LOGITS, 0), "precisions": timing.get("precisions")}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results_{args.device}.json").write_text(json.dumps(result, indent=2))
    print(f"{'phase':10} {'seconds':>9} {'floor':>9} {'x floor':>8}")
    for phase in ("images", "pictures"):
        seconds = timing["phases"][phase]
        print(f"{phase:10} {seconds:9.1f} {floor[phase]:9.1f} {seconds / floor[phase]:8.2f}")
    if "pages" in timing["phases"]:
        print(f"{'pages':10} {timing['phases']['pages']:9.1f}")
    print(f"total {total / 60:.1f} min" + (f" (pictures: {sample} shards a layer measured, scaled)"
                                          if sample else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
