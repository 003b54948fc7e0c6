"""Benchmark: cost per image-step of filter ascent against its floor and against one filter at a time.

Work: VGG19 (random weights; speed does not depend on them) block3_conv1, 16 filters x 20 steps at
128 px, the lucid method (GUIDE's reference set-up), in the precision ``auto`` picks here.
floor          = the truncated forward (stopped at the layer) + backward to the input alone, on a
                 batch of 16 at the transformed size, same precision and layout
batched        = convscope.optimize_filters (all 16 in one batch)
one at a time  = the same, batch_size=1 (16 separate optimizations)

Run: .venv/bin/python benchmarks/filters_speed.py [--model M --weights W --layer L]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import convscope
from convscope.precision import has_fast_bf16
from convscope.techniques.filter_recipes import random_transform
from convscope.techniques.filters import optimize_filters, truncated_at


def floor_seconds(model, layer: str, count: int, size: int, steps: int, precision: str) -> float:
    generators = [torch.Generator().manual_seed(i) for i in range(count)]
    shape = random_transform(torch.rand(count, 3, size, size), generators).shape
    x = torch.rand(shape, requires_grad=True)
    with convscope.hooks.evaluating(model.module), truncated_at(model, layer) as run:
        for step in range(steps + 1):
            if step == 1:
                start = time.perf_counter()
            acts = run(x, precision)
            torch.autograd.grad(acts.float().mean(), x)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--layer", default="block3_conv1")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    model = convscope.load_model(args.model, args.weights)
    precision = "bf16" if has_fast_bf16(model.device) else "fp32"
    image_steps = args.filters * args.steps
    optimize_filters(model, args.layer, 2, steps=2, size=args.size)  # warm-up

    floor = floor_seconds(model, args.layer, args.filters, args.size, args.steps, precision)
    start = time.perf_counter()
    optimize_filters(model, args.layer, args.filters, steps=args.steps, size=args.size, precision=precision)
    batched = time.perf_counter() - start
    start = time.perf_counter()
    optimize_filters(model, args.layer, args.filters, steps=args.steps, size=args.size, precision=precision,
                   batch_size=1)
    single = time.perf_counter() - start

    per = lambda seconds: 1000 * seconds / image_steps  # noqa: E731
    print(f"{args.model} {args.layer}, {args.filters} filters x {args.steps} steps at {args.size} px, "
          f"precision {precision}, torch threads {torch.get_num_threads()}")
    print(f"floor (truncated forward + backward): {floor:6.2f} s  {per(floor):6.1f} ms per image-step")
    print(f"convscope, one batch:                 {batched:6.2f} s  {per(batched):6.1f} ms per image-step "
          f"({batched / floor:.2f}x the floor)")
    print(f"convscope, one filter at a time:      {single:6.2f} s  {per(single):6.1f} ms per image-step "
          f"(batching is {single / batched:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
