"""The arithmetic ceiling of a measurement: how much faster it could get on this machine without doing less work.

A measurement's floating-point work is counted by torch's own
``FlopCounterMode`` (matrix multiplies, convolutions and attention, forward and
backward); its achieved rate is that work over the measured time. The machine's
matmul rate is the best float32 GEMM rate at the same thread count over a few
shapes like the models' own. A measurement running at a share ``s`` of that
rate can get at most ``1 / s`` faster at this precision by removing overhead
alone; beyond that it needs less arithmetic (a smaller model, fewer decoded
frames) or a cheaper number format.
"""
from __future__ import annotations

import statistics
import time

# (m, k, n): a square GEMM, the transformer's fused qkv projection at batch 256 x 2 tokens, a conv-like tall GEMM
GEMM_SHAPES = ((1024, 1024, 1024), (512, 128, 384), (4096, 256, 256))


def count_gflop(fn) -> float:
    """GFLOP that ``fn()`` runs in matmuls, convolutions and attention (forward, and backward if it runs one)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def matmul_gflops(threads: int, repeats: int = 7) -> dict:
    """The best float32 GEMM rate (GFLOP/s) at ``threads`` torch threads, and the rate of each shape."""
    import torch

    torch.set_num_threads(threads)
    rates = {}
    for m, k, n in GEMM_SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        calls = max(1, int(2e9 // (2 * m * k * n)))  # about 2 GFLOP per timed run
        torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            times.append(time.perf_counter() - start)
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n * calls / statistics.median(times) / 1e9
    return {"gflops": max(rates.values()), "gflops_per_shape": rates, "threads": threads}


def share_of_peak(gflop_per_unit: float, units_per_s: float, peak_gflops: float) -> dict:
    """Achieved GFLOP/s of a measurement, its share of the machine's matmul rate, and the most it could speed up."""
    achieved = gflop_per_unit * units_per_s
    share = achieved / peak_gflops
    return {"gflops": achieved, "share_of_matmul_rate": share, "most_speedup_without_less_work": 1 / share}
