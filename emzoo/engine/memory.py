"""Keeps the resident memory of long volume jobs flat by handing freed heap memory back.

Slices are arrays of about a megabyte, allocated and freed between TensorFlow's own allocations;
glibc's adaptive mmap threshold then serves them from the heap, whose free holes are not returned,
so without trimming the resident size creeps up with the number of slices. The jobs call
:func:`release_freed_memory` after each chunk (``benchmarks/bench_upscale_memory.py`` checks that
peak memory does not grow with the number of slices).
"""

import sys


def _load_malloc_trim():
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None


def release_freed_memory():
    """Returns freed heap memory to the system (glibc ``malloc_trim``; a no-op elsewhere)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
