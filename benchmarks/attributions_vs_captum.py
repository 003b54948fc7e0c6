"""Benchmark: every pixel attribution against Captum 0.9 on the same inputs, classes and settings.

ours   = ``convscope.attribute(model, x, classes, method, ...)`` (fp32, the default batch of 16 rows a pass)
Captum = its own class on the same module (``internal_batch_size`` / ``perturbations_per_eval`` /
         ``nt_samples_batch_size`` 16 where it has one), each timed after a warm-up, the median of
         ``--repeat`` runs
floor  = for integrated gradients, its forward and backward passes alone (steps x images rows at the
         best batch of 4, 8, 16, 32, the time per row measured on 64 rows, times the rows); for
         occlusion, its forward passes alone (squares x images inputs, likewise); channels-last, as
         convscope runs them

Targets: ours <= Captum's time for every method; integrated gradients and occlusion within 1.15x of
their floor. Batch 8 of the sample photos, CPU, freed memory kept (as the command line). The default
model at its defaults but for the copies; VGG19 (random weights) with fewer steps, copies and
squares, the whole network being 16x the default model's work: ``--steps``, ``--samples``, ``--window``.

Run alone on the machine (two torch processes distort each other):
    .venv/bin/python benchmarks/attributions_vs_captum.py [--model default|vgg19] [--repeat 3]
Needs the test extras (captum).
"""

from __future__ import annotations

import argparse
import sys

import torch

import convscope
from convscope.allocator import keep_freed_memory
from convscope.catalog import ATTRIBUTION_METHOD_NAMES
from convscope.samples import SAMPLES, sample_array
from convscope.techniques.attributions import attribute, black_baseline
from convscope.techniques.capture import cam_layer
from timing import passes_floor, timed

SETTINGS = {"default": {"steps": 50, "samples": 16, "window": 16, "stride": 16},
            "vgg19": {"steps": 8, "samples": 4, "window": 56, "stride": 56}}


#: The options each method takes.
OPTIONS_OF = {"integratedgradients": ("steps",), "smoothgrad": ("samples",), "occlusion": ("window", "stride")}


def captum_work(model, x, method, classes, options):
    import captum.attr as ca

    module = model.module
    baselines = black_baseline(model).expand_as(x).contiguous()

    def run():
        if method == "saliency":
            ca.Saliency(module).attribute(x, target=classes)
        elif method == "inputxgradient":
            ca.InputXGradient(module).attribute(x, target=classes)
        elif method == "integratedgradients":
            ca.IntegratedGradients(module).attribute(x, baselines=baselines, target=classes, n_steps=options["steps"],
                                                     internal_batch_size=16)
        elif method == "smoothgrad":
            stdevs = 0.15 * float(x.max() - x.min())  # one stdev for the batch: Captum's is absolute
            ca.NoiseTunnel(ca.Saliency(module)).attribute(x, nt_type="smoothgrad", nt_samples=options["samples"],
                                                          nt_samples_batch_size=16, stdevs=stdevs, target=classes)
        elif method == "guidedbackprop":
            ca.GuidedBackprop(module).attribute(x, target=classes)
        elif method == "deconvolution":
            ca.Deconvolution(module).attribute(x, target=classes)
        elif method == "guidedgradcam":
            ca.GuidedGradCam(module, model.submodule(cam_layer(model))).attribute(x, target=classes,
                                                                                  interpolate_mode="bilinear")
        elif method == "occlusion":
            window, stride = options["window"], options["stride"]
            ca.Occlusion(module).attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                           baselines=baselines, target=classes, perturbations_per_eval=16)
        module.zero_grad(set_to_none=True)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("default", "vgg19"), default="default")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods", default=",".join(ATTRIBUTION_METHOD_NAMES))
    args = parser.parse_args()
    keep_freed_memory()
    model = convscope.load_model("vgg19", "random") if args.model == "vgg19" else convscope.load_model()
    options = SETTINGS[args.model]
    x = model.preprocess([sample_array(SAMPLES[i % len(SAMPLES)]) for i in range(args.batch)])
    classes = [p[0].index for p in model.predict(x, top=1)]
    print(f"{model.name}, batch {len(x)}, CPU, {torch.get_num_threads()} threads, median of {args.repeat}, {options}")
    failed = []
    for method in args.methods.split(","):
        chosen = {key: options[key] for key in OPTIONS_OF.get(method, ())}
        ours = timed(lambda method=method, chosen=chosen: attribute(model, x, classes, method, **chosen), args.repeat)
        theirs = timed(captum_work(model, x, method, classes, options), args.repeat)
        line = f"{method:<20} ours {ours:7.2f} s   Captum {theirs:7.2f} s   {theirs / ours:5.2f}x"
        ok = ours <= theirs
        if method in ("integratedgradients", "occlusion"):
            size = x.shape[2]
            squares = (-(-(size - options["window"]) // options["stride"]) + 1) ** 2
            rows = len(x) * (options["steps"] if method == "integratedgradients" else squares)
            seconds, batch = passes_floor(model, x, rows, args.repeat, backward=method == "integratedgradients",
                                          batches=(4, 8, 16, 32), sample=64)
            line += f"   floor ({rows} rows, batch {batch}) {seconds:.2f} s = {ours / seconds:.2f}x"
            ok = ok and ours <= 1.15 * seconds
        print(line + ("" if ok else "   FAIL"), flush=True)
        if not ok:
            failed.append(method)
    print("PASS" if not failed else f"FAIL: {', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
