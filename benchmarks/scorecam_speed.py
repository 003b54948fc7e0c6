"""Benchmark: Score-CAM against its own forward passes, on the default model at its default layer.

floor = the forward passes of Score-CAM's masked inputs alone (built beforehand, one per
        non-constant channel, channels_last, fp32, no gradients) at the best of several batch sizes
ours  = ``compute_cam(..., method="scorecam")`` with its default batch for the device
Both with freed memory kept for reuse, as the command line runs (:mod:`convscope.allocator`).
Target: ours <= 1.15x the floor. Also prints the floor at each batch size (why the default is what it is).

Run: .venv/bin/python benchmarks/scorecam_speed.py
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

import convscope
from convscope.allocator import keep_freed_memory
from convscope.precision import prepare_input
from convscope.samples import sample_array
from convscope.techniques.cams import compute_cam, default_scorecam_batch, minmax
from convscope.techniques.capture import cam_layer


def main() -> int:
    keep_freed_memory()
    model = convscope.load_model("efficientnet_lite0")
    layer = cam_layer(model)
    x = model.preprocess(sample_array("chelsea"))
    acts = convscope.activations(model, x, layer)[layer][0]
    flat = acts.flatten(1)
    varying = torch.nonzero(flat.max(dim=1).values > flat.min(dim=1).values).flatten()
    masks = F.interpolate(acts[varying, None], size=x.shape[2:], mode="bilinear", align_corners=False)
    masked = x * minmax(masks[:, 0])[:, None]
    floors = {}
    with torch.no_grad():
        model.module(prepare_input(masked[:4]))  # warm-up
        for batch in (1, 2, 4, 8, 16, 32):
            start = time.perf_counter()
            for i in range(0, len(masked), batch):
                model.module(prepare_input(masked[i:i + batch]))
            floors[batch] = time.perf_counter() - start
    best = min(floors, key=floors.get)
    start = time.perf_counter()
    compute_cam(model, x, method="scorecam")
    ours = time.perf_counter() - start
    print(f"Score-CAM, {model.name} {layer}: {len(varying)} masked inputs; floor by batch: " +
          ", ".join(f"{b}: {s:.1f} s" for b, s in floors.items()))
    print(f"convscope (batch {default_scorecam_batch(model.device)}): {ours:.1f} s = "
          f"{ours / floors[best]:.2f}x the best "
          f"floor (batch {best}); target <= 1.15x")
    ok = ours <= 1.15 * floors[best]
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
