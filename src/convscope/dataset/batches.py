"""Batches that shrink when the device runs out of memory, so that a long run goes on.

:class:`HalvingBatches` runs a function over consecutive slices of a batch; a slice that runs out of
device memory (``torch.cuda.OutOfMemoryError``, what CUDA's allocator raises) is halved and run
again, and every later slice keeps the smaller size. Each halving is said once, in one line (a
:class:`~convscope.errors.ConvscopeWarning`); a slice of one image that still does not fit raises.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

from ..errors import ConvscopeWarning

T = TypeVar("T")

#: What a device's allocator raises when it is out of memory.
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError,)


class HalvingBatches:
    """Runs work in slices of at most ``size`` items, halving ``size`` on an out-of-memory error."""

    def __init__(self, size: int, what: str = "images") -> None:
        self.size, self.what = max(1, int(size)), what

    def run(self, count: int, work: Callable[[slice], T]) -> list[T]:
        """``work`` on consecutive slices covering ``range(count)``, in order; the results in order."""
        results, start = [], 0
        while start < count:
            chunk = slice(start, min(count, start + self.size))
            try:
                results.append(work(chunk))
            except OUT_OF_MEMORY:
                if chunk.stop - chunk.start <= 1:
                    raise
                self._halve(chunk.stop - chunk.start)
                continue
            start = chunk.stop
        return results

    def _halve(self, failed: int) -> None:
        self.size = max(1, failed // 2)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        warnings.warn(f"out of memory on a batch of {failed} {self.what}; going on with batches of {self.size}",
                      ConvscopeWarning, stacklevel=2)


__all__ = ["HalvingBatches", "OUT_OF_MEMORY"]
