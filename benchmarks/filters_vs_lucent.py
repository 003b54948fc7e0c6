"""Benchmark: convscope's lucid filters against the Lucent library's render_vis, on the same work.

Same model (the default, trained), layer, filters, steps and size. Lucent renders one filter per
render_vis call (its documented use); convscope renders them all in one batch. Both optimize the
same tensor (the BatchNorm output before the ReLU6, which Lucent names ``_blocks_5__bn1``), and both
pictures are judged the same way: the mean of the filter's pre-activation on the picture (no
transforms, fp32). Targets: a higher mean achieved activation, and at least 5x faster.

Lucent 0.1.8 needs kornia 0.4.1, both without their pinned dependencies:
    .venv/bin/pip install --target .lucent --no-deps torch-lucent==0.1.8 kornia==0.4.1 decorator tqdm
    PYTHONPATH=.lucent .venv/bin/python benchmarks/filters_vs_lucent.py
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

import convscope
from convscope.techniques.filters import optimize_filters, preactivation_path, score_images

warnings.filterwarnings("ignore")


def lucent_render(model, lucent_layer: str, filters: list[int], steps: int, size: int) -> torch.Tensor:
    from lucent.optvis import param, render

    pictures = []
    for index in filters:
        torch.manual_seed(index)
        images = render.render_vis(model.module, f"{lucent_layer}:{index}", param_f=lambda: param.image(size),
                                   thresholds=(steps,), show_image=False, show_inline=False, progress=False)
        pictures.append(torch.from_numpy(images[-1][0]).permute(2, 0, 1))
    return torch.stack(pictures)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--layer", default="_blocks.5._depthwise_conv")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    try:
        import lucent  # noqa: F401
    except ImportError:
        print("Lucent is not installed; see this script's docstring for how to install it.")
        return 2
    model = convscope.load_model(args.model, args.weights)
    filters = list(range(args.filters))
    lucent_layer = preactivation_path(model, args.layer).replace(".", "_")

    start = time.perf_counter()
    ours = optimize_filters(model, args.layer, filters, steps=args.steps, size=args.size, method="lucid",
                          precision=args.precision)
    ours_seconds = time.perf_counter() - start

    model.module.eval()
    start = time.perf_counter()
    theirs = lucent_render(model, lucent_layer, filters, args.steps, args.size)
    theirs_seconds = time.perf_counter() - start
    theirs_scores = score_images(model, args.layer, theirs, filters)

    print(f"{args.model} ({args.weights}) {args.layer} (Lucent: {lucent_layer}), "
          f"{args.filters} filters x {args.steps} steps at {args.size} px, "
          f"torch threads {torch.get_num_threads()}, convscope precision {ours.precision}")
    print(f"convscope lucid: {ours_seconds:6.1f} s   mean activation {ours.scores.mean():.3f}   "
          f"(better than Lucent on {int((ours.scores > theirs_scores).sum())} of {args.filters} filters)")
    print(f"Lucent render_vis: {theirs_seconds:6.1f} s   mean activation {theirs_scores.mean():.3f}")
    speedup = theirs_seconds / ours_seconds
    print(f"speed-up {speedup:.1f}x (target >= 5x); activation {ours.scores.mean():.3f} vs "
          f"{theirs_scores.mean():.3f} (target: higher)")
    ok = speedup >= 5 and ours.scores.mean() > theirs_scores.mean()
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
