"""Benchmark: do the channels ``explain`` ranks first carry the class score? Zeroing them must hurt most.

For each sample photo and its top-1 class on the default model, at the explained layer (default:
the CAM layer; ``--layer`` for another, e.g. ``_blocks.10``), with K = ``--top``:

top      = the class score's drop when the K channels with the largest contributions are set to zero
           (a forward hook on the layer)
smallest = the drop when the K channels with the smallest |contribution| are zeroed
random   = the median drop over 20 random K-channel sets (seeded)
first    = the sum of the top K contributions: the first-order prediction of ``top``'s drop

Target: top > smallest and top > random on every photo. Also reports the time of one explanation
(forward + backward to the layer) against one Grad-CAM map, which does the same passes.

Run: .venv/bin/python benchmarks/explain_faithfulness.py [--top 6] [--layer NAME]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import convscope
from convscope.samples import SAMPLES, sample_array
from convscope.techniques.explain import explain, score_without


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument("--layer")
    args = parser.parse_args()
    model = convscope.load_model()
    ok = True
    print(f"{model.name}, K = {args.top}; drops of the class score (logit) when K channels are zeroed")
    print(f"{'photo':<14} {'class':<22} {'layer':<14} {'score':>6} {'top':>7} {'first':>7} {'smallest':>8} "
          f"{'random':>7}")
    for sample in SAMPLES:
        x = model.preprocess([convscope.load_image(sample_array(sample))])
        (found,) = explain(model, x, layer=args.layer, top=args.top)
        ranked = [c.index for c in found.ranked()]
        contributions = found.contributions.numpy()
        smallest = sorted(ranked, key=lambda k: abs(contributions[k]))[:args.top]
        top = found.score - score_without(model, x, found.layer, ranked[:args.top], found.class_index)
        low = found.score - score_without(model, x, found.layer, smallest, found.class_index)
        rng = np.random.default_rng(0)
        randoms = [found.score - score_without(model, x, found.layer, rng.choice(len(ranked), args.top, replace=False),
                                              found.class_index) for _ in range(20)]
        median = float(np.median(randoms))
        first = float(contributions[ranked[:args.top]].sum())
        ok &= top > low and top > median
        print(f"{sample:<14} {found.label[:22]:<22} {found.layer:<14} {found.score:6.2f} {top:7.3f} {first:7.3f} "
              f"{low:8.4f} {median:7.4f}")
    x = model.preprocess([convscope.load_image(sample_array(name)) for name in SAMPLES][:1])
    timings = {}
    for name, work in (("explain", lambda: explain(model, x, layer=args.layer, top=args.top)),
                       ("gradcam", lambda: convscope.compute_cam(model, x, layer=args.layer))):
        work()
        start = time.perf_counter()
        for _ in range(10):
            work()
        timings[name] = (time.perf_counter() - start) / 10
    print(f"one explanation {timings['explain'] * 1000:.1f} ms, one Grad-CAM map {timings['gradcam'] * 1000:.1f} ms "
          f"({timings['explain'] / timings['gradcam']:.2f}x)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
