"""The ranking's pictures for people: ``scatter.png`` (matplotlib, Agg) and ``rank.html``."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from embodied.policies.rank_stats import METRICS, STATISTICS
from embodied.report import _plt, save_figure


def plot_scatter(path: Path, rows: list[dict]) -> Path:
    """scatter.png: imagined against real success rate and return, one labelled point per policy."""
    plt = _plt()
    panels = [m for m in METRICS if all(r["imagined"][f"{m}_rate" if m == "success" else f"{m}_mean"] is not None
                                        for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), dpi=100, squeeze=False)
    for ax, metric in zip(axes[0], panels):
        key = "success_rate" if metric == "success" else "return_mean"
        x = np.array([r["real"][key] for r in rows])
        y = np.array([r["imagined"][key] for r in rows])
        ax.scatter(x, y, color="tab:blue", zorder=3)
        at: dict = {}  # policies on the same point share one label
        for xi, yi, r in zip(x, y, rows):
            at.setdefault((round(float(xi), 9), round(float(yi), 9)), []).append(r["label"])
        for (xi, yi), labels in at.items():
            ax.annotate(", ".join(labels), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls=":", color="gray", label="imagined = real")
        ax.set_xlabel(f"real {metric}")
        ax.set_ylabel(f"imagined {metric}")
    return save_figure(plt, fig, path, [(ax, f"{m}: one point per policy") for ax, m in zip(axes[0], panels)])


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}code{background:#f5f5f5;padding:1px 4px}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:90%}
"""


def _f(v, fmt: str = "{:.3g}") -> str:
    return "n/a" if v is None else html.escape(fmt.format(v))


def rank_html(result: dict) -> str:
    """rank.html: the policies' real and imagined numbers, the ranking statistics with intervals, the scatter."""
    e = html.escape
    rows = []
    for r in result["policies"]:
        real, imag = r["real"], r["imagined"]
        rows.append(f"<tr><td>{e(r['label'])}</td><td>{e(r['kind'])}</td><td>{_f(real['success_rate'], '{:.0%}')}</td>"
                    f"<td>{_f(imag['success_rate'], '{:.0%}')}</td><td>{_f(real['return_mean'], '{:.2f}')}</td>"
                    f"<td>{_f(imag['return_mean'], '{:.2f}')}</td>"
                    f"<td>{_f((r.get('real_rank') or {}).get('return'), '{:g}')}</td>"
                    f"<td>{_f((r.get('imagined_rank') or {}).get('return'), '{:g}')}</td></tr>")
    stat_rows = []
    for name in STATISTICS:
        cells = []
        for metric in METRICS:
            s = (result["statistics"].get(metric) or {}).get(name)
            cells.append("n/a" if s is None else f"{_f(s['value'])} [{_f(s['ci'][0])}, {_f(s['ci'][1])}]")
        stat_rows.append(f"<tr><td>{name}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
    b = result["bootstrap"]
    factors = ", ".join(f"{k}={v:g}" for k, v in result["factors"].items()) or "none (the task as built)"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>policy ranking: {e(result['task'])}</title>
<style>{CSS}</style></head><body>
<h1>Policy ranking in imagination: {e(result['task'])}</h1>
<p>Model <code>{e(result['model'])}</code>; {result['episodes']} episodes per policy in each world, {result['steps']}
steps, the same start states (reset seeds {result['seeds'][0]}..{result['seeds'][-1]}); factors of variation:
{e(factors)}. Imagined success from: {e(str(result['imagined_success_from']))}.</p>
<h2>Policies</h2>
<table><tr><th>policy</th><th>kind</th><th>real success</th><th>imagined success</th><th>real return</th>
<th>imagined return</th><th>real rank (return)</th><th>imagined rank (return)</th></tr>
{''.join(rows)}</table>
<h2>Does imagination rank them as reality does?</h2>
<table><tr><th>statistic</th><th>success: value [{b['level']:.0%} CI]</th>
<th>return: value [{b['level']:.0%} CI]</th></tr>
{''.join(stat_rows)}</table>
<p class="note">spearman, pearson: correlation of the per-policy means; top1: of the policies best in imagination,
the share also best in reality; pairwise: the share of policy pairs (ordered in reality) that imagination orders
the same way, ties counting one half. Intervals: {b['samples']} bootstrap resamples of the episodes (seed
{b['seed']}); n/a: undefined (every policy scored the same in one of the worlds).</p>
<figure><img src="scatter.png" alt="imagined against real success and return"></figure>
<p class="note">Command: <code>{e(result['command'] or '')}</code></p>
</body></html>
"""
