"""Benchmark: the full VGG19 activation dump at 224 px against its floor, measured in the same run.

floor  = one forward pass + PNG encoding of the same pixels (the finished grids, encoded in memory with the
         same encoder settings and the same number of threads)
dump   = convscope's whole job: capture every conv/pool layer, normalize, colour-map, grid, write PNGs
Target: dump <= 2x floor. Also reports peak RSS of the process (target: under 2 GB).

Run: .venv/bin/python benchmarks/activations_vgg19.py [--repeat N]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

import convscope
from convscope.layers import default_activation_layers
from convscope.presentation.writers import write_activation_grids
from convscope.samples import sample_array

WORKERS = min(4, os.cpu_count() or 1)


def encode(image: Image.Image) -> int:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.tell()


def floor_once(model, x, grids: list[Image.Image]) -> float:
    """One forward pass, then PNG-encode the finished grid pictures (same threads as the dump)."""
    start = time.perf_counter()
    with torch.no_grad():
        model.module(x)
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(encode, grids))
    return time.perf_counter() - start


def dump_once(model, x, out: Path) -> tuple[float, list]:
    start = time.perf_counter()
    outputs = convscope.activations(model, x)
    written = write_activation_grids(outputs, out, workers=WORKERS)
    return time.perf_counter() - start, written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = convscope.load_model("vgg19", "random")
    x = model.preprocess(sample_array("chelsea"))
    assert len(default_activation_layers(model.all_layers())) == 21
    with tempfile.TemporaryDirectory() as tmp:
        _, written = dump_once(model, x, Path(tmp))  # warm-up; also gives the grid sizes
        grids = [Image.open(w.png).convert("RGB") for w in written]
        sizes = [grid.size for grid in grids]
        floors, dumps = [], []
        for _ in range(args.repeat):
            floors.append(floor_once(model, x, grids))
            dumps.append(dump_once(model, x, Path(tmp))[0])
    floor, dump = statistics.median(floors), statistics.median(dumps)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    megapixels = sum(w * h for w, h in sizes) / 1e6
    print(f"VGG19 224px, 21 layers, {megapixels:.1f} Mpx of grids, torch threads {torch.get_num_threads()}")
    print(f"floor (forward + PNG encode): {floor:.2f} s   full dump: {dump:.2f} s   ratio {dump / floor:.2f}x "
          f"(target <= 2x)")
    print(f"peak RSS: {peak_rss_gb:.2f} GB (target < 2 GB)")
    ok = dump <= 2 * floor and peak_rss_gb < 2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
