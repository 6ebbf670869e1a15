"""The benchmark: a smoke run of every measurement, the competing busy process, and the default thread count."""
import json
import math
import multiprocessing
import os
import time

import pytest
import torch

from embodied.benchmarks.bench import busy_process, contended, run_bench
from embodied.benchmarks.ceiling import count_gflop, share_of_peak
from embodied.threads import default_threads


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow
def test_quick_bench_writes_json_and_table(tmp_path):
    bench = run_bench(tmp_path, quick=True, workers=2, threads=1, progress=False)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["imagine_over_mujoco_b64"] == pytest.approx(bench["imagine_over_mujoco_b64"])
    r = on_disk["results"]
    assert r["mujoco.push"]["steps_per_s_1env"] > 0 and r["mujoco.push"]["steps_per_s_2workers"] > 0
    assert r["imagination.recurrent"]["latent_steps_per_s_b64"] > r["imagination.recurrent"]["latent_steps_per_s_b1"]
    assert r["imagination.slots"]["latent_steps_per_s_b64"] > 0
    assert 0 < on_disk["cem_ms_per_action_median"] < 60_000
    for arch in ("slots", "recurrent"):  # the amortised end of the dial: a prior and a one-step search
        assert r[f"planning.amortised.{arch}"]["settings"]["terminal_value"] == 1.0
        cem = r[f"planning.cem.{arch}"]["ms_per_action_median"]
        assert r[f"planning.policy.{arch}"]["ms_per_action_median"] < cem
        assert r[f"planning.amortised.{arch}"]["ms_per_action_median"] < cem
        assert 0 < on_disk["amortised_over_oracle_cem"][arch] < 1
    assert r["training.recurrent"]["frames_per_s"] > 0 and r["training.slots"]["frames_per_s"] > 0
    assert all(v["peak_rss_mb"] > 0 for k, v in r.items() if not k.startswith("matmul"))
    assert r["matmul"]["gflops"] == max(r["matmul"]["gflops_per_shape"].values()) > 0
    arithmetic = on_disk["arithmetic"]
    assert set(arithmetic) == {"imagination.slots.b64", "imagination.recurrent.b64", "training.slots",
                               "training.recurrent", "training.slots.all_cores", "training.recurrent.all_cores"}
    assert r["matmul.all_cores"]["threads"] == os.cpu_count() > 1
    for a in arithmetic.values():  # a real measurement runs below the best matmul rate, and not at nothing
        assert 0.001 < a["share_of_matmul_rate"] < 1.5
        assert a["most_speedup_without_less_work"] == pytest.approx(1 / a["share_of_matmul_rate"])
    assert r["training.recurrent"]["gflop_per_frame"] > r["training.slots"]["gflop_per_frame"] > 0
    ratios = on_disk["contended_over_idle"]
    assert set(ratios) == {"training.slots", "training.recurrent", "training.slots.all_cores",
                           "training.recurrent.all_cores", "planning.cem.slots", "planning.cem.recurrent"}
    assert all(math.isfinite(x) and x > 0 for x in ratios.values())
    assert on_disk["machine"]["torch_threads"] == 1 and r["training.slots.all_cores"]["threads"] == os.cpu_count()
    table = (tmp_path / "bench.md").read_text()
    assert "| CEM ms/action, recurrent" in table and "| CEM planning, slots (1 thread): time beside" in table
    assert "| CEM h3 16x1 + prior + critic, slots / MuJoCo CEM, ms per action |" in table
    assert "| float32 matmul, best of 3 shapes (1 thread) |" in table
    assert f"| recurrent training ({os.cpu_count()} threads): arithmetic (" in table
    assert "| slots imagination (1 thread): arithmetic (" in table
    assert not multiprocessing.active_children()


def test_flops_are_counted_forward_and_backward():
    a = torch.randn(64, 32, requires_grad=True)
    b = torch.randn(32, 16)
    assert count_gflop(lambda: a @ b) == pytest.approx(2 * 64 * 32 * 16 / 1e9)
    assert count_gflop(lambda: (a @ b).sum().backward()) == pytest.approx(2 * 2 * 64 * 32 * 16 / 1e9)
    ceiling = share_of_peak(gflop_per_unit=0.5, units_per_s=40, peak_gflops=80)
    assert ceiling == pytest.approx({"gflops": 20, "share_of_matmul_rate": 0.25, "most_speedup_without_less_work": 4})


def test_contended_reports_a_ratio_and_stops_the_busy_process():
    def measure():
        start = time.perf_counter()
        sum(range(200_000))
        return time.perf_counter() - start

    out = contended(measure)
    assert all(math.isfinite(out[k]) and out[k] > 0 for k in ("idle_s", "contended_s", "contended_over_idle"))
    assert out["contended_over_idle"] == pytest.approx(out["contended_s"] / out["idle_s"])
    assert not multiprocessing.active_children()


def test_busy_process_is_stopped_after_an_error():
    with pytest.raises(RuntimeError, match="measurement failed"):
        with busy_process() as proc:
            assert proc.is_alive()
            raise RuntimeError("measurement failed")
    assert proc.exitcode is not None and _gone(proc.pid)
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("cores, processes, expected", [(2, 1, 1), (8, 2, 3), (1, 1, 1), (4, 8, 1)])
def test_default_threads_leaves_one_core(monkeypatch, cores, processes, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_threads(processes) == expected
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert default_threads(processes) == expected
