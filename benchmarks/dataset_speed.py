"""Benchmark: ``convscope dataset`` throughput against its floor, on a folder of ordinary JPEG photos.

photos = ``--images`` JPEGs of 500 x 375 (crops of the sample photos, shifted and flipped so no two
         are alike), written to a temporary folder once
floor  = measured in the same run: decoding and preprocessing the same images in one process, plus
         the model's forward and backward to the CAM layer on the already decoded tensors, at the same
         batch size (``--batch``, default the run's on a CPU) and precision (fp32)
ours   = what ``convscope dataset`` does, after one small warm-up run (imports): ``convscope.dataset.run``
         (local engine, ``--workers`` decoding
         processes; Parquet and the thumbnails included) and the report
ray    = the same run with ``--engine ray`` on this machine (Ray's start-up reported separately)
Targets: ours <= 1.1x the floor (with decoding overlapped in workers it may beat it; on 2 cores it
mostly cannot); ray <= 1.3x ours.

Run: .venv/bin/python benchmarks/dataset_speed.py [--images N] [--workers N] [--batch B] [--repeats R]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import convscope
from convscope import dataset
from convscope.dataset import shards
from convscope.dataset.report import write_dataset_report
from convscope.images import load_image
from convscope.samples import sample_array
from convscope.techniques.cams import compute_cam
from convscope.techniques.capture import cam_layer

BATCH = shards.DEFAULT_BATCH["cpu"]


def make_photos(folder: Path, count: int) -> list[Path]:
    sources = [Image.fromarray(sample_array(name)) for name in ("chelsea", "coffee", "grace_hopper")]
    paths = []
    for index in range(count):
        source = sources[index % len(sources)].resize((640, 480))
        left, top = (index * 7) % 140, (index * 5) % 105
        photo = source.crop((left, top, left + 500, top + 375))
        if index % 2:
            photo = photo.transpose(Image.FLIP_LEFT_RIGHT)
        path = folder / f"photo{index:05d}.jpg"
        photo.save(path, quality=90)
        paths.append(path)
    return paths


def ray_seconds(model, folder: Path, out: Path, batch: int) -> tuple[float, float] | None:
    """(Ray's start-up, the run on Ray) or None without Ray."""
    try:
        import ray
    except ImportError:
        print("Ray not installed: --engine ray skipped")
        return None
    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - start
    try:
        start = time.perf_counter()
        dataset.run(model, folder, out, batch_size=batch, engine="ray")
        return startup, time.perf_counter() - start
    finally:
        ray.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batch = args.batch
    model = convscope.load_model("efficientnet_lite0")
    layer = cam_layer(model)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = make_photos(folder, args.images)
        compute_cam(model, model.preprocess(paths[:batch]), layer=layer)  # warm-up
        dataset.run(model, folder, Path(tmp) / "warm-up", batch_size=batch, limit=batch)  # imports, first loader
        trials = []  # (decode, compute, run, report): the floor and ours alternate on this shared machine
        for trial in range(args.repeats):
            start = time.perf_counter()
            tensors = [model.preprocessing.to_tensor(load_image(p)) for p in paths]
            decode = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(0, len(tensors), batch):
                compute_cam(model, torch.stack(tensors[i:i + batch]), layer=layer)
            compute = time.perf_counter() - start
            del tensors
            out = Path(tmp) / f"out{trial}"
            start = time.perf_counter()
            dataset.run(model, folder, out, batch_size=batch, workers=args.workers)
            run_only = time.perf_counter() - start
            start = time.perf_counter()
            write_dataset_report(out, model.labels)
            trials.append((decode, compute, run_only, time.perf_counter() - start))
        on_ray = ray_seconds(model, folder, Path(tmp) / "ray", batch)
    ratios = sorted(((run_only + report) / (decode + compute), n) for n, (decode, compute, run_only, report)
                    in enumerate(trials))
    decode, compute, run_only, report = trials[ratios[len(ratios) // 2][1]]  # the median trial
    floor, ours = decode + compute, run_only + report
    print(f"{args.images} JPEGs of 500x375, {model.name}, batch {batch}, {args.workers} decoding worker(s), "
          f"torch threads {torch.get_num_threads()}; the median of {args.repeats} trials "
          f"(whole-command ratios {', '.join(f'{r:.2f}' for r, _ in ratios)})")
    print(f"floor: decode + preprocess {decode:.1f} s + forward/backward to {layer} {compute:.1f} s = {floor:.1f} s "
          f"({args.images / floor:.1f} images/s)")
    print(f"convscope dataset: {ours:.1f} s ({args.images / ours:.1f} images/s) = {ours / floor:.2f}x the floor "
          f"(target <= 1.1x); of which the run {run_only:.1f} s ({run_only / floor:.2f}x) and the report "
          f"{report:.1f} s")
    ok = ours <= 1.1 * floor
    if on_ray is not None:
        startup, seconds = on_ray
        print(f"--engine ray on this machine: {seconds:.1f} s = {seconds / run_only:.2f}x the local engine's run "
              f"(target <= 1.3x); Ray's own start-up {startup:.1f} s besides")
        ok &= seconds <= 1.3 * run_only
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    np.random.seed(0)
    sys.exit(main())
