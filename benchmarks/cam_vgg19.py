"""Benchmark: Grad-CAM on VGG19, a batch of 8 at 224 px, against its floor measured in the same run.

floor = one forward pass (no autograd) + the backward from the class scores to the target layer's
        output alone (timed on its own, plain PyTorch), on the input in the layout convscope uses
        (channels_last)
Targets: fp32 Grad-CAM within 1.1x of the floor; bf16 (autocast + channels_last) at least 3x faster
than fp32 on a CPU with AMX (reported elsewhere, not judged). Also reports Score-CAM's cost per
channel on the default model.

On a GPU (``--device cuda``, e.g. ``--model torchvision:resnet50 --batch 64``) the target is
<= 1.15x the floor in the precision ``auto`` chooses, and the Score-CAM part is skipped.

Run: .venv/bin/python benchmarks/cam_vgg19.py [--repeat N] [--model M] [--device D] [--batch B]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import convscope
from convscope.precision import computing_in, cpu_has_amx, prepare_input
from convscope.samples import sample_array
from convscope.techniques.cams import compute_cam
from convscope.techniques.capture import cam_layer


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def floor_times(model, x, layer: str, repeat: int, precision: str = "fp32") -> tuple[float, float]:
    """(forward, backward from the class scores to the layer's output), plain PyTorch in ``precision``."""
    module = model.module
    x = prepare_input(x)

    def forward():
        with torch.no_grad(), computing_in(model.device, precision):
            module(x)

    target = model.submodule(layer)
    held = {}
    handle = target.register_forward_hook(lambda m, i, o: held.__setitem__("a", o))
    backward_times = []
    try:
        for _ in range(repeat + 1):
            with computing_in(model.device, precision):
                logits = module(x)
                score = logits[:, 0].float().sum()
                _sync()
                start = time.perf_counter()
                torch.autograd.grad(score, held["a"])
                _sync()
            backward_times.append(time.perf_counter() - start)
    finally:
        handle.remove()
    return median_time(forward, repeat), statistics.median(backward_times[1:])


def gpu(model, x, layer: str, repeat: int) -> bool:
    """On a GPU: Grad-CAM in the precision ``auto`` chooses against the floor in that precision."""
    chosen = compute_cam(model, x, layer=layer, precision="auto")
    forward, backward = floor_times(model, x, layer, repeat, chosen.precision)
    floor = forward + backward
    seconds = {p: median_time(lambda p=p: compute_cam(model, x, layer=layer, precision=p), repeat)
               for p in ("fp32", "tf32", "bf16")}
    auto = median_time(lambda: compute_cam(model, x, layer=layer, precision="auto"), repeat)
    print(f"{model.name}, batch {len(x)}, layer {layer}, {torch.cuda.get_device_name()}")
    print(f"floor in {chosen.precision}: forward {1000 * forward:.1f} ms + backward {1000 * backward:.1f} ms")
    print("Grad-CAM: " + ", ".join(f"{p} {1000 * t:.1f} ms" for p, t in seconds.items()) +
          f"; auto ({chosen.precision_reason}) {1000 * auto:.1f} ms = {auto / floor:.2f}x the floor (target <= 1.15x)")
    return auto <= 1.15 * floor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default="vgg19")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    model = convscope.load_model(args.model, "random", device=args.device)
    layer = cam_layer(model)
    x = model.preprocess([sample_array("chelsea"), sample_array("coffee")] * (args.batch // 2))
    if model.device.type == "cuda":
        ok = gpu(model, x, layer, args.repeat)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    forward, backward = floor_times(model, x, layer, args.repeat)
    floor = forward + backward
    fp32 = median_time(lambda: compute_cam(model, x, layer=layer, precision="fp32"), args.repeat)
    bf16 = median_time(lambda: compute_cam(model, x, layer=layer, precision="bf16"), args.repeat)
    print(f"{model.name}, batch {len(x)}, 224 px, layer {layer}, torch threads {torch.get_num_threads()}, "
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
