"""Benchmark: the default model's forward pass with glibc's allocator as it comes and with freed
memory kept for reuse (:func:`convscope.allocator.keep_freed_memory`, which the command line sets).

Each setting runs in a process of its own, one after the other (the setting is the process's): a
warm-up pass, then 32 passes of a batch of 4 random images (fp32, channels-last, no gradients), the
time per image and the process's peak memory. Target: faster with the setting, the same peak memory
within 10 %.

Run alone on the machine (two torch processes distort each other):
    .venv/bin/python benchmarks/allocator.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import torch
import convscope
from convscope.allocator import keep_freed_memory
from convscope.precision import computing_in, prepare_input
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
model = convscope.load_model()
x = torch.randn(4, 3, 224, 224)
with torch.no_grad(), computing_in(model.device, "fp32"):
    model.scores(prepare_input(x))
    start = time.perf_counter()
    for _ in range(32):
        model.scores(prepare_input(x))
    seconds = (time.perf_counter() - start) / (32 * 4)
print(json.dumps({"kept": kept, "ms_per_image": seconds * 1000,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(setting: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, setting], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    plain, kept = run("plain"), run("keep")
    print(f"as it comes:          {plain['ms_per_image']:6.2f} ms per image, peak {plain['peak_mb']:6.0f} MB")
    print(f"freed memory kept:    {kept['ms_per_image']:6.2f} ms per image, peak {kept['peak_mb']:6.0f} MB "
          f"(setting taken: {kept['kept']})")
    speedup = plain["ms_per_image"] / kept["ms_per_image"]
    ok = kept["kept"] and speedup > 1 and kept["peak_mb"] <= 1.1 * plain["peak_mb"]
    print(f"{speedup:.2f}x faster -- {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
