"""The C allocator, tuned for tensor work: on Linux with glibc, a block larger than the mmap
threshold (128 KiB, raised on the fly to at most 32 MiB) is mapped from the kernel when a tensor
is made and unmapped when it is freed, so every forward pass pays page faults for its activations
again. Keeping such blocks for reuse makes the default model's forward pass 2x faster on a
2-core CPU (batch 4: 10.3 ms -> 5.2 ms per image, ``benchmarks/allocator.py``) at the same peak
memory; the memory stays with the process until it exits instead of going back at each free.

It is a setting of the whole process, so the command line sets it for itself and the library never
does on its own; a program of the user's may call :func:`keep_freed_memory` too."""

from __future__ import annotations

import ctypes
import sys

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap and freed memory is kept up to it: 1 GiB.
KEEP_BYTES = 1 << 30


_kept = False


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process (batch sizes can then be larger:
    a large block no longer costs page faults at every pass)."""
    return _kept


def keep_freed_memory(limit: int = KEEP_BYTES) -> bool:
    """Serve blocks up to ``limit`` bytes from the heap and keep freed memory for reuse (glibc's
    ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``); True where glibc took both settings, False
    elsewhere (another C library or operating system: nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    global _kept
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = _kept or (mallopt(M_MMAP_THRESHOLD, limit) == 1 and mallopt(M_TRIM_THRESHOLD, limit) == 1)
    return _kept
