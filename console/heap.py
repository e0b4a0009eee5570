"""Keeps a long-running process's C heap from fragmenting (glibc; elsewhere nothing to do).

asyncio reads a socket into a 256 KiB buffer, then shrinks it to what arrived. glibc
serves a request that large with its own mapping, until one such mapping is freed: then
it raises its mmap threshold past it (adapting up to 32 MiB), so from then on every
read's 256 KiB comes from the heap and what is kept of it sits between live blocks.
A console attached at 1,000 events/s kept ~1.5 MB more freed-but-unreturned heap every
minute (`bench/tui_load.py --trace-memory` shows it). Pinning the threshold at glibc's
own starting value keeps big buffers in mappings of their own, returned when freed.
"""

from __future__ import annotations

import ctypes
import gc
import sys

YOUNG_COLLECTION_AFTER = 5000  # allocations per young collection (CPython 3.11 default: 700)
FULL_COLLECTION_EVERY = 100  # gen-1 collections per full one (CPython default: 10)
M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's default, no longer adapted upwards


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (2.33+): what malloc holds, in bytes."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
    ]


def mallinfo2() -> MallInfo2 | None:
    """glibc's figures (`uordblks` in use, `fordblks` freed but kept, `hblkhd` in mappings of
    their own); None without glibc 2.33+."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = MallInfo2
    info: MallInfo2 = function()
    return info


def pin_mmap_threshold() -> bool:
    """True when glibc took it (setting it also turns the adapting off)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to ask, or not one with mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def settle_after_start() -> None:
    """Once a long-running process has started: what exists now (modules, the app, its services)
    lives as long as the process, so it goes out of the collector's sight (collected first, so no
    start-up garbage is frozen with it), and collections come less often.

    A full collection walks every tracked object: `serve` under load did one a second, 36 ms
    each (55 ms with redis-py loaded for team mode), and every request in flight waited for it.
    A young generation of 5,000 instead of 700 lets a request's or a frame's short-lived
    objects die before they are promoted, so the old generations fill ~10x slower; and a full
    collection every 100 middle ones, not 10 (the console measured both: bench/README).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, gc.get_threshold()[1], FULL_COLLECTION_EVERY)
