"""A smoke run of the benchmark: every measurement runs and bench.json has the keys the README quotes."""
import json

import pytest

from embodied.benchmarks.bench import run_bench


@pytest.mark.slow
def test_quick_bench_writes_json_and_table(tmp_path):
    bench = run_bench(tmp_path, quick=True, workers=2, threads=1, progress=False)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["imagine_over_mujoco_b64"] == pytest.approx(bench["imagine_over_mujoco_b64"])
    r = on_disk["results"]
    assert r["mujoco.push"]["steps_per_s_1env"] > 0 and r["mujoco.push"]["steps_per_s_2workers"] > 0
    assert r["imagination.recurrent"]["latent_steps_per_s_b64"] > r["imagination.recurrent"]["latent_steps_per_s_b1"]
    assert 0 < on_disk["cem_ms_per_action_median"] < 60_000
    assert r["training.recurrent"]["frames_per_s"] > 0
    assert all(v["peak_rss_mb"] > 0 for v in r.values())
    assert "| CEM ms/action, recurrent" in (tmp_path / "bench.md").read_text()
