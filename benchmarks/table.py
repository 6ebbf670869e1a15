"""The README's benchmark table (``bench.md``) from a ``bench.json``."""
from __future__ import annotations

def markdown_table(bench: dict) -> str:
    """The README table of a bench.json."""
    r, task = bench["results"], bench["task"]
    lines = ["| measurement | value |", "| --- | --- |"]
    for t, m in ((name.split(".")[1], m) for name, m in r.items() if name.startswith("mujoco.")):
        par = next(v for k, v in m.items() if k.startswith("steps_per_s_") and k.endswith("workers"))
        lines.append(f"| MuJoCo {t} step + 64x64 render, 1 env / {m['workers']} workers | "
                     f"{m['steps_per_s_1env']:,.0f} / {par:,.0f} steps/s |")
    for a, m in ((name.split(".")[1], m) for name, m in r.items() if name.startswith("imagination.")):
        rates = ", ".join(f"b{k.rsplit('_b', 1)[1]}: {v:,.0f}" for k, v in m.items() if k.startswith("latent_steps"))
        lines.append(f"| {a} latent steps/s ({m['params'] / 1e6:.2f}M params) | {rates} |")
        lines.append(f"| {a} decoded frames/s (batch 64) | {m['decoded_frames_per_s_b64']:,.0f} |")
    for k, v in bench.items():
        if k.startswith("imagine_over_mujoco") and k.endswith("per_arch"):
            lines.append(f"| imagination / MuJoCo ({task}, {k.split('_')[3]}) | "
                         + ", ".join(f"{a}: {x:.1f}x" for a, x in v.items()) + " |")
    labels = {"cem": "CEM", "mppi": "MPPI", "amortised": "CEM h3 16x1 + prior + critic", "policy": "policy prior alone"}
    for name, m in r.items():
        if name.startswith("planning."):
            _, planner, model = name.split(".")
            lines.append(f"| {labels[planner]} ms/action, {model} (median / p95) | "
                         f"{m['ms_per_action_median']:.1f} / {m['ms_per_action_p95']:.1f} |")
    for a, ratio in bench.get("amortised_over_oracle_cem", {}).items():
        lines.append(f"| CEM h3 16x1 + prior + critic, {a} / MuJoCo CEM, ms per action | {ratio:.2f}x |")
    for name, m in r.items():
        if name.startswith("training."):
            lines.append(f"| {name.split('.')[1]} training (batch {m['batch']} x {m['seq_len']}, "
                         f"{_threads(m['threads'])}) | {m['frames_per_s']:,.0f} frames/s |")
    for name, ratio in bench.get("contended_over_idle", {}).items():
        part = name.split(".")
        label = f"{part[1].upper()} planning, {part[2]}" if part[0] == "planning" else f"{part[1]} training"
        lines.append(f"| {label} ({_threads(r[name]['threads'])}): time beside one busy process / alone | "
                     f"{ratio:.2f}x |")
    for m in (m for name, m in r.items() if name.startswith("matmul")):
        lines.append(f"| float32 matmul, best of {len(m['gflops_per_shape'])} shapes ({_threads(m['threads'])}) | "
                     f"{m['gflops']:,.1f} GFLOP/s |")
    for name, a in bench.get("arithmetic", {}).items():
        part = name.split(".")
        m = r[f"{part[0]}.{part[1]}" if part[0] == "imagination" else name]
        work = (f"{m['gflop_per_step'] * 1e3:.2f} MFLOP/step, batch {part[2][1:]}" if part[0] == "imagination"
                else f"{m['gflop_per_frame'] * 1e3:.0f} MFLOP/frame")
        lines.append(f"| {part[1]} {part[0]} ({_threads(m['threads'])}): arithmetic ({work}) | "
                     f"{a['gflops']:,.1f} GFLOP/s = {a['share_of_matmul_rate']:.0%} of the matmul rate: at most "
                     f"{a['most_speedup_without_less_work']:.1f}x faster without less work |")
    lines.append("| peak RSS per measurement | "
                 + ", ".join(f"{k}: {v['peak_rss_mb']:.0f} MB" for k, v in r.items() if "peak_rss_mb" in v) + " |")
    return "\n".join(lines) + "\n"


def _threads(n: int) -> str:
    return f"{n} thread" + "s" * (n != 1)
