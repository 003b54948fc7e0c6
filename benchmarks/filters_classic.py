"""Benchmark: the ``classic`` filter method against a plain batched pixel-space ascent, same work.

plain   = the textbook loop, batched: start gray + noise, each step add ``g / rms(g)`` on the 0..255
          pixel scale (1/255 on ours) with one RMS over the whole batch, no clipping (the classic
          tutorials' recipe, all filters at once)
classic = convscope's method: the same start, step 0.01 with the RMS per picture, clipped to [0, 1]
Both are judged by the mean of the filter's pre-activation on the final picture (fp32). Target: in
the same number of steps, classic reaches at least the activation the plain loop reaches.

Run: .venv/bin/python benchmarks/filters_classic.py [--model M --weights W --layer L --steps N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import convscope
from convscope.techniques.filters import optimize_filters

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference_ascent import plain_batched_ascent  # noqa: E402  (the test suite's reference)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--layers",
                        default="_blocks.3._depthwise_conv,_blocks.5._depthwise_conv,_blocks.11._depthwise_conv")
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    model = convscope.load_model(args.model, args.weights)
    ok = True
    for layer in args.layers.split(","):
        ours = optimize_filters(model, layer, args.filters, steps=args.steps, size=args.size, method="classic",
                              precision="fp32")
        plain = plain_batched_ascent(model, layer, ours.filters, steps=args.steps, size=args.size)
        better = int((ours.scores >= plain).sum())
        print(f"{layer}: classic {ours.scores.mean():.3f}, plain batched ascent {plain.mean():.3f} "
              f"(classic at least as high on {better} of {len(ours.filters)} filters)")
        ok &= bool(ours.scores.mean() >= plain.mean())
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
