"""Benchmark: ``--precision auto`` is never slower than fp32, on the work where bf16 loses and where it wins.

filters  = ``convscope filters`` with the default layers of the default model (EfficientNet-Lite0:
           depthwise convolutions, slow in bf16 on CPUs without AMX), all 64 filters of each layer,
           ``--steps`` steps at 64 px, once per precision; ``auto`` includes its own measurement
Grad-CAM = VGG19 (random weights), batch 8, 224 px, ``block5_pool`` (plain convolutions: bf16 wins
           where the CPU has AVX-512 BF16 or AMX); ``auto`` includes its measurement on the first call
Target: auto <= 1.1x the faster of fp32 and bf16 in both, and never more than fp32 + its measurement.

Run: .venv/bin/python benchmarks/precision_auto.py [--steps N] [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import convscope
from convscope.layers import default_filter_layers
from convscope.precision import has_fast_bf16
from convscope.samples import sample_array
from convscope.techniques.cams import compute_cam
from convscope.techniques.filters import optimize_filters


def filters_seconds(model: convscope.Model, precision: str, steps: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    used = [optimize_filters(model, layer, steps=steps, precision=precision).precision
            for layer in default_filter_layers(model.all_layers())]
    return time.perf_counter() - start, used


def cam_seconds(model: convscope.Model, x: torch.Tensor, precision: str, repeat: int) -> tuple[float, float, str]:
    """(first call, median of the next ``repeat``, precision used)."""
    start = time.perf_counter()
    used = compute_cam(model, x, precision=precision).precision
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        compute_cam(model, x, precision=precision)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, fast bf16 on this CPU: {has_fast_bf16(torch.device('cpu'))}")
    ok = True

    lite = convscope.load_model("efficientnet_lite0")
    optimize_filters(lite, "_conv_stem", 2, steps=1, precision="fp32")  # warm-up
    seconds = {}
    for precision in ("fp32", "bf16"):
        seconds[precision], _ = filters_seconds(lite, precision, args.steps)
    fresh = convscope.load_model("efficientnet_lite0")  # auto measures again on a model it has not seen
    seconds["auto"], used = filters_seconds(fresh, "auto", args.steps)
    best = min(seconds["fp32"], seconds["bf16"])
    print(f"filters, default model, 5 layers x 64 filters x {args.steps} steps: fp32 {seconds['fp32']:.1f} s, "
          f"bf16 {seconds['bf16']:.1f} s, auto {seconds['auto']:.1f} s (chose {', '.join(used)}; "
          f"{seconds['auto'] / best:.2f}x the faster)")
    ok &= seconds["auto"] <= 1.1 * best

    vgg = convscope.load_model("vgg19", "random")
    x = vgg.preprocess([sample_array("chelsea"), sample_array("coffee")] * 4)
    compute_cam(vgg, x, precision="fp32")  # warm-up
    results = {precision: cam_seconds(vgg, x, precision, args.repeat) for precision in ("fp32", "bf16", "auto")}
    best = min(results["fp32"][1], results["bf16"][1])
    print(f"Grad-CAM, VGG19, batch 8: fp32 {results['fp32'][1]:.2f} s, bf16 {results['bf16'][1]:.2f} s, auto "
          f"{results['auto'][1]:.2f} s (chose {results['auto'][2]}; {results['auto'][1] / best:.2f}x the faster; "
          f"its first call, with the measurement, {results['auto'][0]:.2f} s)")
    ok &= results["auto"][1] <= 1.1 * best
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
