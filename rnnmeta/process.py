"""This process's memory: current and peak resident set size (Linux ``/proc``; ``getrusage`` elsewhere).

One helper for the comparison monitor and the benchmark scripts.
"""

from __future__ import annotations

import os
import resource
import sys

__all__ = ["peak_resident_bytes", "reset_peak_resident", "resident_bytes"]


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def resident_bytes() -> int:
    """Current resident memory of this process (``/proc/self/statm``; the peak where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _max_rss_bytes()


def peak_resident_bytes() -> int:
    """Peak resident memory of this process since it started or since :func:`reset_peak_resident`.

    Linux ``VmHWM`` (``ru_maxrss`` would carry a parent's peak across ``exec``); ``ru_maxrss`` elsewhere.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) * 1024
    except (OSError, StopIteration, ValueError):
        return _max_rss_bytes()


def reset_peak_resident() -> bool:
    """Reset the peak to the current resident memory (Linux ``clear_refs`` 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
