"""Benchmark: every layer-map method against its reference library, same inputs, same classes.

ours      = ``compute_cam(model, x, classes, method=M)`` (fp32)
reference = the peer's own class on the same module, layer, inputs and classes: pytorch-grad-cam 1.5.7
            (``loss.backward()`` over the whole network) or torchcam 0.5.0 for ``cam``; each timed after
            a warm-up, the median of ``--repeat`` runs, alternating ours and the peer's
floor     = for Ablation-CAM, the forward passes from the layer on of its ablated copies alone (the
            layer's output replaced, the best batch of 16, 64, 256)

Targets: ours <= the reference's time for every method; Ablation-CAM within 1.15x of its floor.
Default model (EfficientNet-Lite0, ImageNet weights), batch 8 of the sample photos, CPU. Methods
without a reference in the installed peers (none today) are listed as such.

Run alone on the machine (two torch processes distort each other):
    .venv/bin/python benchmarks/methods_vs_references.py [--batch 8] [--repeat 3] [--methods all|LIST]
Needs the test extras (pytorch-grad-cam, torchcam).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import convscope
from convscope.catalog import CAM_METHOD_NAMES
from convscope.samples import SAMPLES, sample_array
from convscope.techniques.cams import compute_cam
from convscope.techniques.capture import cam_layer, replaced_pass

#: convscope method -> pytorch-grad-cam class (``cam`` is torchcam's; Score-CAM's reference is the
#: authors' loop, benchmarked by scorecam_speed.py).
PEERS = {
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
    "hirescam": "HiResCAM", "eigencam": "EigenCAM", "gradcam-elementwise": "GradCAMElementWise",
    "eigengradcam": "EigenGradCAM", "segeigencam": "SegEigenCAM", "kpcacam": "KPCA_CAM", "fem": "FEM",
    "ablationcam": "AblationCAM", "fullgrad": "FullGrad", "finercam": "FinerCAM", "shapleycam": "ShapleyCAM",
    "scorecam": "ScoreCAM", "cam": "torchcam.CAM",
}


def timed(work, repeat: int, warm_up: bool = True) -> float:
    if warm_up:  # the first calls pay for kernel selection
        work()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def peer_work(model, x, layer, classes, peer):
    if peer == "torchcam.CAM":
        from torchcam.methods import CAM

        def run():
            with CAM(model.module, target_layer=layer, fc_layer="_fc") as extractor, torch.no_grad():
                model.module(x)
                extractor(classes)
        return run
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layers = [] if peer == "FullGrad" else [model.submodule(layer)]
    targets = None if peer == "FinerCAM" else [ClassifierOutputTarget(c) for c in classes]

    def run():
        with getattr(pytorch_grad_cam, peer)(model=model.module, target_layers=layers) as extractor:
            extractor(input_tensor=x.clone(), targets=targets)
        model.module.zero_grad(set_to_none=True)
    return run


def ablation_floor(model, x, layer, classes, repeat: int) -> tuple[float, int]:
    """The ablated copies' forward passes from the layer on, at the best batch: the copies of each
    image are made beforehand (not timed), the passes alone are timed."""
    acts = convscope.activations(model, x, layer)[layer]
    channels = acts.shape[1]
    best = None
    for batch in (16, 64, 256):
        seconds = 0.0
        for image in range(len(x)):
            copies = acts[image][None].repeat(channels, 1, 1, 1)
            copies[torch.arange(channels), torch.arange(channels)] = 0

            def run(image=image, copies=copies, batch=batch):
                for start in range(0, channels, batch):
                    replaced_pass(model, x[image:image + 1], layer, copies[start:start + batch], "fp32")
            seconds += timed(run, repeat)
        best = (seconds, batch) if best is None or seconds < best[0] else best
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", default="all")
    args = parser.parse_args()
    model = convscope.load_model("efficientnet_lite0")
    layer = cam_layer(model)
    photos = [sample_array(SAMPLES[i % len(SAMPLES)]) for i in range(args.batch)]
    x = model.preprocess(photos)
    classes = model.predict(x, top=1)
    classes = [p[0].index for p in classes]
    methods = list(CAM_METHOD_NAMES) if args.methods == "all" else args.methods.split(",")
    failed = []
    print(f"{model.name} {layer}, batch {len(x)}, CPU, {torch.get_num_threads()} threads, median of {args.repeat}")
    for method in methods:
        if method == "scorecam":
            print(f"{method:<20} see benchmarks/scorecam_speed.py (its reference is the authors' loop)")
            continue
        # Ablation-CAM: the peer runs the whole network once per channel (minutes): one run each, after
        # the other methods warmed the kernels up
        repeat, warm_up = (1, False) if method == "ablationcam" else (args.repeat, True)
        ours = timed(lambda method=method: compute_cam(model, x, classes, layer, method), repeat, warm_up)
        peer = PEERS.get(method)
        if peer is None:
            print(f"{method:<20} ours {ours:7.2f} s   no reference installed")
            continue
        theirs = timed(peer_work(model, x, layer, classes, peer), repeat, warm_up)
        line = f"{method:<20} ours {ours:7.2f} s   {peer} {theirs:7.2f} s   {theirs / ours:5.1f}x faster"
        ok = ours <= theirs
        if method == "ablationcam":
            floor, batch = ablation_floor(model, x, layer, classes, 1)
            line += f"   floor (from the layer on, batch {batch}) {floor:.2f} s = {ours / floor:.2f}x"
            ok = ok and ours <= 1.15 * floor
        print(line + ("" if ok else "   FAIL"))
        if not ok:
            failed.append(method)
    print("PASS" if not failed else f"FAIL: {', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
