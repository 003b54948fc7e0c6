"""Benchmark: every layer-map method against its reference library, same inputs, same classes.

ours      = ``compute_cam(model, x, classes, method=M)`` (fp32)
reference = the peer's own class on the same module, layer, inputs and classes: pytorch-grad-cam 1.5.7
            (``loss.backward()`` over the whole network) or torchcam 0.5.0 for ``cam``; each timed after
            a warm-up, the median of ``--repeat`` runs, alternating ours and the peer's
            (``torchcam.<Class>`` for torchcam's, at its defaults but for the number of copies)
floor     = for Ablation-CAM, the forward passes from the layer on of its ablated copies alone (the
            layer's output replaced, the best batch of 16, 64, 256); for SS-CAM and IS-CAM, as many
            whole-network forward passes as convscope made (counted), at the best batch of 1, 2, 4, 8,
            16, 32 (the time per input measured on 256 inputs at each, times the count)

Targets: ours <= the reference's time for every method; Ablation-CAM, SS-CAM and IS-CAM within 1.15x
of their floor. Default model (EfficientNet-Lite0, ImageNet weights), batch 8 of the sample photos,
CPU. SS-CAM and IS-CAM draw ``--copies`` copies (default 1; torchcam's 35 and 10 would take hours for
both libraries; the cost is linear in the copies), Smooth Grad-CAM++ torchcam's 4. Methods without a
reference in the installed peers (none today) are listed as such.

Run alone on the machine (two torch processes distort each other):
    .venv/bin/python benchmarks/methods_vs_references.py [--batch 8] [--repeat 3] [--methods all|LIST]
        [--copies 1]
Needs the test extras (pytorch-grad-cam, torchcam).
"""

from __future__ import annotations

import argparse
import sys

import torch

import convscope
from convscope.allocator import keep_freed_memory
from convscope.catalog import CAM_METHOD_NAMES
from convscope.samples import SAMPLES, sample_array
from convscope.techniques.cams import compute_cam
from convscope.techniques.capture import cam_layer, replaced_pass
from timing import passes_floor, timed

#: convscope method -> pytorch-grad-cam class (``cam`` is torchcam's; Score-CAM's reference is the
#: authors' loop, benchmarked by scorecam_speed.py).
PEERS = {
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
    "hirescam": "HiResCAM", "eigencam": "EigenCAM", "gradcam-elementwise": "GradCAMElementWise",
    "eigengradcam": "EigenGradCAM", "segeigencam": "SegEigenCAM", "kpcacam": "KPCA_CAM", "fem": "FEM",
    "ablationcam": "AblationCAM", "fullgrad": "FullGrad", "finercam": "FinerCAM", "shapleycam": "ShapleyCAM",
    "scorecam": "ScoreCAM", "cam": "torchcam.CAM", "smoothgradcam++": "torchcam.SmoothGradCAMpp",
    "sscam": "torchcam.SSCAM", "iscam": "torchcam.ISCAM",
}
#: The methods whose copies ``--copies`` sets (Smooth Grad-CAM++ keeps torchcam's default of 4).
COPIES_SET = ("sscam", "iscam")


def peer_work(model, x, layer, classes, peer, copies=None):
    if peer == "torchcam.CAM":
        from torchcam.methods import CAM

        def run():
            with CAM(model.module, target_layer=layer, fc_layer="_fc") as extractor, torch.no_grad():
                model.module(x)
                extractor(classes)
        return run
    if peer.startswith("torchcam."):
        import torchcam.methods

        extractor_class = getattr(torchcam.methods, peer.split(".", 1)[1])
        options = {} if copies is None else {"num_samples": copies}

        def run():
            with extractor_class(model.module, target_layer=layer, input_shape=tuple(x.shape[1:]),
                                 **options) as extractor:
                scores = model.module(x)
                extractor(class_idx=classes, scores=scores)
            model.module.zero_grad(set_to_none=True)
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
    parser.add_argument("--copies", type=int, default=1, help="copies SS-CAM and IS-CAM draw (default 1)")
    args = parser.parse_args()
    keep_freed_memory()  # as the command line does: every run, ours, the peers' and the floors, in the same state
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
        # SS-CAM and IS-CAM run the whole network once per channel and copy (a minute a run): one run each
        masks_input = method in COPIES_SET
        repeat, warm_up = (1, False) if method == "ablationcam" or masks_input else (args.repeat, True)
        copies = args.copies if masks_input else None
        passes = []
        options = {"samples": copies, "progress": passes.append} if masks_input else {}
        ours = timed(lambda method=method: compute_cam(model, x, classes, layer, method, **options), repeat, warm_up)
        peer = PEERS.get(method)
        if peer is None:
            print(f"{method:<20} ours {ours:7.2f} s   no reference installed")
            continue
        theirs = timed(peer_work(model, x, layer, classes, peer, copies), repeat, warm_up)
        line = f"{method:<20} ours {ours:7.2f} s   {peer} {theirs:7.2f} s   {theirs / ours:5.1f}x faster"
        ok = ours <= theirs
        if method == "ablationcam":
            floor, batch = ablation_floor(model, x, layer, classes, 1)
            line += f"   floor (from the layer on, batch {batch}) {floor:.2f} s = {ours / floor:.2f}x"
            ok = ok and ours <= 1.15 * floor
        if masks_input:
            count = sum(passes) // repeat + len(x)  # the masked inputs, and each image's own pass
            floor, batch = passes_floor(model, x, count, args.repeat)
            line += (f"   ({copies} copies) floor ({count:,} forward passes, batch {batch}) {floor:.2f} s = "
                     f"{ours / floor:.2f}x")
            ok = ok and ours <= 1.15 * floor
        print(line + ("" if ok else "   FAIL"))
        if not ok:
            failed.append(method)
    print("PASS" if not failed else f"FAIL: {', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
