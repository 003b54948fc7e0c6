"""Memory that stays flat: the peers' most reported bug class is hooks keeping memory alive
(pytorch-grad-cam #88, #132, #483). 10,000 calls of ``cam`` and of ``filters`` on a tiny model, in a
fresh process, keep its peak resident memory within 5 % of what the first 100 calls reached (the
CUDA side is in test_cuda.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CALLS = 10_000
SCRIPT = """
import json, resource, sys
sys.path.insert(0, {tests!r})
import torch
import convscope
from conftest import tiny_net

torch.set_num_threads(1)
model = convscope.load_model(tiny_net(), input_size=16, labels=list("abcde"))
x = torch.rand(2, 3, 16, 16)


def call(kind):
    if kind == "cam":
        return convscope.cam(model, x, [1, 2], layer="conv2")
    # the classic recipe: the same hooks and capture as every recipe at half the lucid recipe's cost a call
    return convscope.filters(model, "conv1", filters=2, steps=1, size=16, method="classic", precision="fp32")


peaks = {{}}
for kind in ("cam", "filters"):
    for _ in range(100):
        call(kind)
    first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range({calls} - 100):
        call(kind)
    peaks[kind] = [first, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]
print(json.dumps(peaks))
"""


def test_ten_thousand_calls_keep_peak_memory_flat():
    tests = str(Path(__file__).parent)
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests, calls=CALLS)], capture_output=True,
                          text=True, timeout=600, check=True)
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    for kind, (first, last) in peaks.items():
        assert last <= first * 1.05, f"{kind}: peak RSS {first} kB after 100 calls, {last} kB after {CALLS}"
