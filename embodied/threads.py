"""The default number of torch intra-op threads."""
from __future__ import annotations

import os


def default_threads(processes: int = 1) -> int:
    """Torch intra-op threads per process: all usable cores but one, shared between ``processes``, at least 1.

    One core is left to the rest of the machine: when another busy process takes a core, all-core OpenMP
    threads wait on each other at every barrier and a run slows several-fold instead of by a core's share.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, (cores - 1) // max(1, processes))
