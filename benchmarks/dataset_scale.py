"""Benchmark: ``convscope dataset`` against the loop users write today, and its memory as the dataset grows.

loop   = pytorch-grad-cam's ``GradCAM`` one image at a time over the same folder with PIL decoding and
         the model's preprocessing (the top-1 class; the loop a user writes by hand), on ``--loop``
         images; convscope on the same images
memory = peak RSS of ``convscope dataset`` (a fresh process each) on 500 and on 5,000 photos
Targets: >= 5x faster than the loop; peak RSS on 5,000 within 10 % of that on 500.

pytorch-grad-cam is installed only for this benchmark, never in CI:
    .venv/bin/pip install --target .bench --no-deps grad-cam ttach   (it also needs opencv: see
    benchmarks/evaluate_speed.py)
Run: PYTHONPATH=.bench .venv/bin/python benchmarks/dataset_scale.py [--loop N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import convscope
from convscope import dataset
from convscope.images import load_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataset_speed import make_photos  # noqa: E402


def peak_rss_mb(folder: Path, out: Path, limit: int) -> float:
    """Peak RSS of a fresh process running ``convscope dataset`` on the first ``limit`` photos."""
    code = ("import resource, convscope; from convscope import dataset; "
            f"dataset.run(convscope.load_model(), {str(folder)!r}, {str(out)!r}, limit={limit}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", type=int, default=200)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=5000)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = make_photos(folder, args.large)
        model = convscope.load_model()
        try:
            from pytorch_grad_cam import GradCAM
        except ImportError:
            print("pytorch-grad-cam not installed (see the docstring): the loop is skipped")
        else:
            target = model.submodule(convscope.techniques.cams.cam_layer(model))
            start = time.perf_counter()
            with GradCAM(model=model.module.eval(), target_layers=[target]) as explain:
                for path in paths[:args.loop]:
                    x = model.preprocessing.to_tensor(load_image(path))[None]
                    explain(input_tensor=x, targets=None)
            loop = time.perf_counter() - start
            start = time.perf_counter()
            dataset.run(model, folder, Path(tmp) / "mine", limit=args.loop)
            ours = time.perf_counter() - start
            print(f"{args.loop} photos: pytorch-grad-cam loop {loop:.1f} s, convscope dataset {ours:.1f} s "
                  f"({loop / ours:.1f}x faster; target >= 5x)")
            ok &= loop >= 5 * ours
        small = peak_rss_mb(folder, Path(tmp) / "small", args.small)
        large = peak_rss_mb(folder, Path(tmp) / "large", args.large)
        print(f"peak RSS: {args.small} photos {small:.0f} MB, {args.large} photos {large:.0f} MB "
              f"({large / small:.2f}x; target within 1.10x)")
        ok &= large <= 1.1 * small
    print(f"torch threads {torch.get_num_threads()}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
