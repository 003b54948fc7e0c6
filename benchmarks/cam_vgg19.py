"""Benchmark: Grad-CAM on VGG19, a batch of 8 at 224 px, against its floor measured in the same run.

floor = one forward pass (no autograd) + the backward from the class scores to the target layer's
        output alone (timed on its own, plain PyTorch), on the input in the layout convscope uses
        (channels_last)
Targets: fp32 Grad-CAM within 1.1x of the floor; bf16 (autocast + channels_last) at least 3x faster
than fp32 on a CPU with AMX (reported elsewhere, not judged). Also reports Score-CAM's cost per
channel on the default model.

Run: .venv/bin/python benchmarks/cam_vgg19.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import convscope
from convscope.techniques.cams import cam_layer, compute_cam
from convscope.precision import cpu_has_amx, prepare_input
from convscope.samples import sample_array


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_times(model, x, layer: str, repeat: int) -> tuple[float, float]:
    module = model.module
    x = prepare_input(x)

    def forward():
        with torch.no_grad():
            module(x)

    target = model.submodule(layer)
    held = {}
    handle = target.register_forward_hook(lambda m, i, o: held.__setitem__("a", o))
    backward_times = []
    try:
        for _ in range(repeat + 1):
            logits = module(x)
            score = logits[:, 0].sum()
            start = time.perf_counter()
            torch.autograd.grad(score, held["a"])
            backward_times.append(time.perf_counter() - start)
    finally:
        handle.remove()
    return median_time(forward, repeat), statistics.median(backward_times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = convscope.load_model("vgg19", "random")
    layer = cam_layer(model)
    x = model.preprocess([sample_array("chelsea"), sample_array("coffee")] * 4)
    forward, backward = floor_times(model, x, layer, args.repeat)
    floor = forward + backward
    fp32 = median_time(lambda: compute_cam(model, x, layer=layer, precision="fp32"), args.repeat)
    bf16 = median_time(lambda: compute_cam(model, x, layer=layer, precision="bf16"), args.repeat)
    print(f"VGG19, batch 8, 224 px, layer {layer}, torch threads {torch.get_num_threads()}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, AMX: {cpu_has_amx()}")
    print(f"floor: forward {forward:.2f} s + backward to the layer {backward:.2f} s = {floor:.2f} s")
    print(f"Grad-CAM fp32: {fp32:.2f} s ({fp32 / floor:.2f}x the floor; target <= 1.1x)")
    print(f"Grad-CAM bf16: {bf16:.2f} s ({fp32 / bf16:.2f}x faster than fp32; target >= 3x on AMX CPUs)")

    default = convscope.load_model("efficientnet_lite0")
    x1 = default.preprocess(sample_array("chelsea"))
    acts = convscope.activations(default, x1, "_act1")["_act1"][0].flatten(1)
    varying = int((acts.max(dim=1).values > acts.min(dim=1).values).sum())
    for precision in ("fp32", "bf16"):
        seconds = median_time(lambda: compute_cam(default, x1, method="scorecam", precision=precision), 1)
        print(f"Score-CAM efficientnet_lite0 _act1 {precision}: {seconds:.1f} s for {acts.shape[0]} channels "
              f"({varying} non-constant, each one masked forward pass): {1000 * seconds / varying:.1f} ms per channel")
    ok = fp32 <= 1.1 * floor and (not cpu_has_amx() or fp32 / bf16 >= 3)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
