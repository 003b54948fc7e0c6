"""What the benchmarks that time convscope against a peer and against its own passes share:
``timed`` (a warm-up, then the median of runs) and ``passes_floor`` (the model's own passes alone,
at the best batch). Imported by the scripts beside it (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch

from convscope.model import Model
from convscope.precision import computing_in, prepare_input
from convscope.techniques.capture import input_pass


def timed(work: Callable[[], object], repeat: int, warm_up: bool = True) -> float:
    """The median of ``repeat`` runs of ``work``, after one untimed run (the first calls pay for
    kernel selection) unless ``warm_up`` is False."""
    if warm_up:
        work()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def passes_floor(model: Model, x: torch.Tensor, passes: int, repeat: int, *, backward: bool = False,
                 batches: Sequence[int] = (1, 2, 4, 8, 16, 32), sample: int = 256) -> tuple[float, int]:
    """``(seconds, batch)``: ``passes`` passes of inputs shaped as ``x``'s at the best of ``batches``,
    as convscope runs them (fp32, channels-last): whole-network forward passes, or with ``backward``
    forward and backward passes to the input. The time per input is measured on ``sample`` inputs
    at each batch, then multiplied by ``passes``."""
    best = None
    for batch in batches:
        inputs = torch.randn(batch, *x.shape[1:])
        rounds = max(1, sample // batch)

        def run(inputs: torch.Tensor = inputs, batch: int = batch, rounds: int = rounds) -> None:
            for _ in range(rounds):
                if backward:
                    input_pass(model, inputs, "fp32", [0] * batch)
                else:
                    with torch.no_grad(), computing_in(model.device, "fp32"):
                        model.scores(prepare_input(inputs))
        seconds = timed(run, repeat) / (rounds * batch) * passes
        best = (seconds, batch) if best is None or seconds < best[0] else best
    return best
