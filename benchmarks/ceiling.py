"""The arithmetic ceiling of a measurement: how much faster it could get on this machine without doing less work.

A measurement's floating-point work is counted by torch's own
``FlopCounterMode`` (matrix multiplies, convolutions and attention, forward and
backward); its achieved rate is that work over the measured time. The machine's
matmul rate is the best float32 GEMM rate at the same thread count over a few
shapes like the models' own (``bench_matmul`` in :mod:`embodied.benchmarks.bench`).
A measurement running at a share ``s`` of that rate can get at most ``1 / s``
faster at this precision by removing overhead alone; beyond that it needs less
arithmetic (a smaller model, fewer decoded frames) or a cheaper number format.
"""
from __future__ import annotations


def count_gflop(fn) -> float:
    """GFLOP that ``fn()`` runs in matmuls, convolutions and attention (forward, and backward if it runs one)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def share_of_peak(gflop_per_unit: float, units_per_s: float, peak_gflops: float) -> dict:
    """Achieved GFLOP/s of a measurement, its share of the machine's matmul rate, and the most it could speed up."""
    achieved = gflop_per_unit * units_per_s
    share = achieved / peak_gflops
    return {"gflops": achieved, "share_of_matmul_rate": share, "most_speedup_without_less_work": 1 / share}
