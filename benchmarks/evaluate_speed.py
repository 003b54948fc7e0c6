"""Benchmark: ``evaluate``'s deletion and insertion against the floor, torchcam and Quantus.

floor    = the forward passes of the same perturbed inputs alone (built beforehand), at the same batch
           size (32) and precision (fp32), no gradients
ours     = ``convscope.evaluate(..., metrics="deletion,insertion")`` on the default model, the six
           methods without Score-CAM, 20 steps (maps included), and ``convscope.techniques.metrics`` deletion +
           insertion of one Grad-CAM map (map included), per image and map
torchcam = ``DeletionInsertionMetric`` (torchcam 0.5.0) with its own Grad-CAM, 20 steps, batch 32
quantus  = ``PixelFlipping`` (Quantus 0.6.0; deletion only) against ``convscope.techniques.metrics.deletion`` on the
           same given Grad-CAM map, 16 steps (Quantus needs steps that split 224 x 224 pixels evenly)
Targets: ours <= 1.2x the floor; faster than torchcam and Quantus per image and map.

torchcam and Quantus are installed only for this benchmark, never in CI:
    .venv/bin/pip install --target .bench --no-deps "torchcam>=0.5" quantus==0.6.0
    .venv/bin/pip install --target .bench pandas scikit-learn opencv-python-headless
Run: PYTHONPATH=.bench .venv/bin/python benchmarks/evaluate_speed.py
(Quantus 0.6.0 calls ``np.trapz``, gone in numpy 2.4: the script puts it back for Quantus.)
"""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial

import numpy as np
import torch

import convscope
from convscope import metrics
from convscope.precision import prepare_input
from convscope.samples import sample_array
from convscope.techniques.cams import METHODS, compute_cam
from convscope.techniques.capture import cam_layer

STEPS, BATCH = 20, 32


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    model = convscope.load_model("efficientnet_lite0")
    layer = cam_layer(model)
    images = [model.preprocess(sample_array(name)) for name in ("chelsea", "coffee")]
    methods = [name for name in METHODS if name != "scorecam"]
    convscope.evaluate(model, images[0], methods="gradcam", metrics="deletion", steps=2)  # warm-up

    ours, floors = [], []
    for x in images:
        ours.append(seconds(lambda: convscope.evaluate(model, x, methods=methods, metrics="deletion,insertion",
                                                       steps=STEPS)))
        maps = torch.stack([compute_cam(model, x, None, layer, m).maps[0] for m in methods])
        inputs = torch.cat([metrics.curve_inputs(x[0], heat, *ends, STEPS) for heat in maps
                            for ends in (metrics._ends(model, x, kind) for kind in metrics.KINDS)
                            for ends in [(ends[0][0], ends[1][0])]])
        with torch.no_grad():  # in the layout convscope runs them (channels_last)
            floors.append(seconds(lambda: [model.module(prepare_input(inputs[i:i + BATCH]))
                                           for i in range(0, len(inputs), BATCH)]))
    ratio = statistics.mean(o / f for o, f in zip(ours, floors))
    count = len(methods) * 2 * (STEPS + 1)
    print(f"evaluate, {len(methods)} methods x deletion + insertion x {STEPS + 1} inputs = {count} per image: "
          f"{statistics.mean(ours):.2f} s per image, "
          f"floor {statistics.mean(floors):.2f} s ({ratio:.2f}x; target <= 1.2x)")
    ok = ratio <= 1.2

    def one_map(x):
        result = compute_cam(model, x, None, layer, "gradcam")
        metrics.deletion(model, x, result.maps, result.classes, STEPS)
        metrics.insertion(model, x, result.maps, result.classes, STEPS)

    per_map = statistics.mean(seconds(lambda x=x: one_map(x)) for x in images)
    print(f"convscope, one Grad-CAM map, deletion + insertion: {per_map:.2f} s per image and map")
    try:
        from torchcam.methods import GradCAM
        from torchcam.metrics import DeletionInsertionMetric
    except ImportError:
        print("torchcam not installed (see the docstring): skipped")
    else:
        def torchcam_one(x):
            extractor = GradCAM(model.module, layer)
            try:
                metric = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=STEPS,
                                                 batch_size=BATCH)
                metric.update(x)
                metric.summary()
            finally:
                extractor.remove_hooks()
        model.module.eval()
        theirs = statistics.mean(seconds(lambda x=x: torchcam_one(x)) for x in images)
        print(f"torchcam DeletionInsertionMetric: {theirs:.2f} s per image and map ({theirs / per_map:.1f}x ours)")
        ok &= per_map < theirs
    try:
        np.trapz = np.trapezoid  # Quantus 0.6.0 needs it; numpy 2.4 removed it
        import quantus
    except ImportError:
        print("Quantus not installed (see the docstring): skipped")
    else:
        results = [compute_cam(model, x, None, layer, "gradcam") for x in images]

        def quantus_one(x, result):
            # Quantus needs steps that split the pixels evenly: 224 * 224 / 16
            metric = quantus.PixelFlipping(features_in_step=x.shape[2] * x.shape[3] // 16, perturb_baseline="black",
                                           disable_warnings=True, display_progressbar=False)
            metric(model=model.module, x_batch=x.numpy(), y_batch=np.array(result.classes),
                   a_batch=result.maps.numpy()[:, None], device="cpu")
        theirs = statistics.mean(seconds(lambda x=x, r=r: quantus_one(x, r)) for x, r in zip(images, results))
        mine = statistics.mean(seconds(lambda x=x, r=r: metrics.deletion(model, x, r.maps, r.classes, 16))
                               for x, r in zip(images, results))
        print(f"deletion alone of a given map, 16 steps: convscope {mine:.2f} s, Quantus PixelFlipping {theirs:.2f} s "
              f"per image and map ({theirs / mine:.1f}x ours)")
        ok &= mine < theirs
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
