"""Benchmark: ``convscope dataset`` against the loop users write today, and its memory as the dataset grows.

loop   = pytorch-grad-cam's ``GradCAM`` one image at a time over the same folder with PIL decoding and
         the model's preprocessing (the top-1 class; the loop a user writes by hand), on ``--loop``
         images; convscope on the same images in fp32 (the default) and with ``--precision bf16``
         (each after a warm-up run on 8 images, as the loop)
memory = peak RSS of ``convscope dataset`` (a fresh process each) on 500 and on 5,000 photos
Targets: >= 5x faster than the loop (the faster precision counts); peak RSS on 5,000 within 10 % of that on 500.

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
            target = model.submodule(convscope.techniques.capture.cam_layer(model))
            loop_paths = paths[:args.loop]
            with GradCAM(model=model.module.eval(), target_layers=[target]) as explain:
                for warm in (True, False):  # a warm-up pass over a few images first, as for convscope
                    start = time.perf_counter()
                    for path in loop_paths[:8] if warm else loop_paths:
                        x = model.preprocessing.to_tensor(load_image(path))[None]
                        explain(input_tensor=x, targets=None)
            loop = time.perf_counter() - start
            ours = {}
            for precision in ("fp32", "bf16"):
                dataset.run(model, folder, Path(tmp) / f"warm-{precision}", limit=8, precision=precision)
                start = time.perf_counter()
                dataset.run(model, folder, Path(tmp) / precision, limit=args.loop, precision=precision)
                ours[precision] = time.perf_counter() - start
            print(f"{args.loop} photos: pytorch-grad-cam loop {loop:.1f} s; convscope dataset {ours['fp32']:.1f} s "
                  f"({loop / ours['fp32']:.1f}x faster), with --precision bf16 {ours['bf16']:.1f} s "
                  f"({loop / ours['bf16']:.1f}x faster); target >= 5x")
            ok &= loop >= 5 * min(ours.values())
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
