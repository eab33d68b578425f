"""The C allocator's settings for a command-line run (glibc's malloc; elsewhere nothing).

A run builds its tables and summary from many short-lived numpy arrays of 0.1–30 MB (a
column of 100k requests is 0.8 MB). By default glibc serves a block above its mmap threshold
(128 KiB, raised as such blocks are freed) with a fresh mapping and unmaps it when freed, and
returns the free top of its heap to the system above its trim threshold; either way the next
array of that size starts on pages the kernel must fault in and zero again. On the issue-15
floor (100k requests) that churn is 8k of a run's 40k page faults (≈ 2.5 µs of system time
each on the measuring machine), 7.5k of them in the summary alone.

`keep_freed_memory` raises both thresholds, so freed arrays return to malloc's free lists and
the next ones reuse their pages. The peak RSS is unchanged (a run's arrays are alive at the
peak either way); what changes is that freed memory stays with the process until it exits,
which for a command-line process is what it wants. Library users (`import clustersim`) are
left alone: only the command line calls it.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024  # free heap top kept up to this size


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MiB for reuse; True if it took the
    settings (False elsewhere: another libc, or none that ctypes can load)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt), or no libc symbols
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
