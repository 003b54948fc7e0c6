"""Benchmark: what the dataset examples (``--examples``, the default layers, K = 9) add to a dataset run.

base     = ``convscope.dataset.run`` on ``--images`` JPEGs of 500 x 375, default model, CPU defaults
examples = the same run with ``examples="default"``: the hooks in the same pass, the shards' partial
           files, the merge, the receptive fields, the crops and the grids of every channel
The two alternate (``--repeats`` times; the median of the ratios is reported) on this shared machine.
Target: examples <= 1.15x base. The filter pictures of the report are not part of it (computed once
for a dataset's channels and cached; reported separately by ``convscope dataset``).

The crops and grids are a fixed cost of channels x K examples (about 3 s for the default layers'
10,656), so the ratio falls as the dataset grows: the target is for a dataset of 5,000 images (the
default); at 1,000 the figure is reported in the README too.

Run: .venv/bin/python benchmarks/examples_speed.py [--images 5000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import convscope
import convscope.dataset.channel_examples
from convscope import dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset_speed import make_photos  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    model = convscope.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        make_photos(folder, args.images)
        dataset.run(model, folder, Path(tmp) / "warm-up", limit=16, examples="default", examples_top=4)
        trials = []
        for trial in range(args.repeats):
            start = time.perf_counter()
            dataset.run(model, folder, Path(tmp) / f"base{trial}")
            base = time.perf_counter() - start
            start = time.perf_counter()
            dataset.run(model, folder, Path(tmp) / f"examples{trial}", examples="default")
            trials.append((base, time.perf_counter() - start))
        channels = sum(len(convscope.dataset.channel_examples.read_layer(Path(tmp) / "examples0", layer)["channels"])
                       for layer in convscope.dataset.channel_examples.examples_layers(model, None))
    ratios = sorted((with_examples / base, base, with_examples) for base, with_examples in trials)
    ratio, base, with_examples = ratios[len(ratios) // 2]
    print(f"{args.images} JPEGs of 500x375, {model.name}, torch threads {torch.get_num_threads()}; "
          f"{channels} channels x 9 examples; the median of {args.repeats} trials "
          f"(ratios {', '.join(f'{r:.2f}' for r, *_ in ratios)})")
    print(f"dataset run {base:.1f} s; with --examples {with_examples:.1f} s = {ratio:.2f}x (target <= 1.15x)")
    ok = ratio <= 1.15
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
