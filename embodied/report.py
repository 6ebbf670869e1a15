"""Static HTML reports of validation results: score tables, PNG plots, animated GIFs.

``write_report(out, validation, cases)`` writes ``out/report.html`` beside
``out/plots/*.png`` (matplotlib, Agg backend) and ``out/media/*.gif`` (real |
imagined | difference of each probe's best and worst case, imageio). Every link
is relative and nothing is loaded from the network, so the folder can be
copied anywhere and opened from disk in any browser, without a server.
``write_compare_report(out, validations)`` does the same for several models on
the same probes (``embodied compare``).
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from embodied.io import atomic_write_bytes, write_video

STYLE = {"model": dict(color="tab:blue", lw=2), "copy_last": dict(color="tab:gray", ls="--"),
         "action_blind": dict(color="tab:orange", ls="--"), "mujoco": dict(color="black", ls=":", lw=2),
         "truth": dict(color="black", ls=":", lw=2)}
WHO_ORDER = ("model", "copy_last", "action_blind", "mujoco")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.bad{color:#b00}.plots img{max-width:48%;margin:4px;border:1px solid #eee}
figure{display:inline-block;margin:6px;text-align:center}figcaption{font-size:85%;color:#555;max-width:600px}
.media img{image-rendering:pixelated;border:1px solid #ccc}code{background:#f5f5f5;padding:1px 4px}
.note{color:#555;font-size:90%}
"""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return html.escape(str(v))


def plot_curve(path: Path, title: str, curve: dict, labels: dict | None = None) -> Path:
    """One PNG: every predictor's curve against horizon step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
    x = curve["x"]
    for who, ys in curve.items():
        if who in ("x", "ylabel") or ys is None:
            continue
        y = [np.nan if v is None else v for v in ys]
        ax.plot(x[:len(y)], y, label=(labels or {}).get(who, who), **STYLE.get(who, {}))
    ax.set_xlabel("horizon (steps)")
    ax.set_ylabel(curve.get("ylabel", ""), fontsize=8)
    return save_figure(plt, fig, path, [(ax, title)])


def save_figure(plt, fig, path: Path, titles) -> Path:
    """Title, grid and legend on each (axis, title) of ``titles``, then write the figure to path and free it."""
    for ax, title in titles:
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_scatter(path: Path, title: str, scatter: dict) -> Path:
    """Predicted against true returns of the candidates of one start state."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
    for who, d in scatter.items():
        ax.scatter(d["true"], d["pred"], s=14, label=who, color=STYLE.get(who, {}).get("color"), alpha=0.8)
    ax.set_xlabel("true return (MuJoCo)")
    ax.set_ylabel("predicted return")
    return save_figure(plt, fig, path, [(ax, title)])


def triptych(real: np.ndarray, pred: np.ndarray, scale: int = 3) -> np.ndarray:
    """(T, h, 3w+2*sep, 3) uint8: real | imagined | amplified absolute difference, upscaled."""
    real, pred = np.asarray(real, np.uint8), np.asarray(pred, np.uint8)
    diff = np.abs(real.astype(np.int16) - pred.astype(np.int16)).max(axis=-1)
    diff = np.clip(diff * 2, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=-1)
    sep = np.full((*real.shape[:2], 2, 3), 255, np.uint8)
    frames = np.concatenate([real, sep, pred, sep, diff], axis=2)
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)


def write_gif(path: Path, real: np.ndarray, pred: np.ndarray, fps: float = 5.0) -> Path:
    """Animated GIF of real | imagined | difference that loops forever."""
    return write_video(Path(path).with_suffix(".gif"), triptych(real, pred), fps=fps)


def _score_table(validation: dict) -> str:
    rows = []
    for probe, r in validation["probes"].items():
        cells = "".join(f"<td>{_fmt(r['score'].get(w), 4)}</td>" for w in WHO_ORDER)
        sep = f"<td class='{'' if r['separates'] else 'bad'}'>{_fmt(r['separation'])}</td>"
        rows.append(f"<tr><td><a href='#{probe}'>{probe}</a></td>{cells}{sep}"
                    f"<td>{html.escape(r['reference'])}</td></tr>")
    head = "".join(f"<th>{w}</th>" for w in WHO_ORDER)
    return (f"<table id='scores'><tr><th>probe</th>{head}<th>separation</th><th>best baseline</th></tr>"
            + "".join(rows) + "</table>")


def _metrics_table(metrics: dict) -> str:
    keys = []
    for w in WHO_ORDER:
        for k in metrics.get(w, {}):
            if k not in keys:
                keys.append(k)
    head = "".join(f"<th>{w}</th>" for w in WHO_ORDER if w in metrics)
    rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{_fmt(metrics[w].get(k))}</td>"
                                                            for w in WHO_ORDER if w in metrics) + "</tr>"
                   for k in keys)
    return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"


def write_report(out: Path, validation: dict, cases: dict | None = None) -> Path:
    """Write report.html (and its plots and media) for one validation; returns its path."""
    out = Path(out)
    cases = cases or {}
    sections = []
    for probe, r in validation["probes"].items():
        plots = []
        for name, c in r.get("curves", {}).items():
            rel = f"plots/{probe}_{name}.png"
            plot_curve(out / rel, f"{probe}: {name}", c)
            plots.append(f"<img src='{rel}' alt='{probe} {name} against horizon'>")
        if r.get("scatter"):
            rel = f"plots/{probe}_scatter.png"
            plot_scatter(out / rel, f"{probe}: predicted vs true returns (one start state)", r["scatter"])
            plots.append(f"<img src='{rel}' alt='{probe} predicted against true returns'>")
        media = []
        for case in cases.get(probe, []):
            slug = case["label"].replace(" ", "_")
            rel = f"media/{probe}_{slug}.gif"
            write_gif(out / rel, case["real"], case["pred"])
            media.append(f"<figure><img src='{rel}' alt='{probe} {html.escape(case['label'])} case'>"
                         f"<figcaption>{html.escape(case['label'])} case (seed {case['seed']}, "
                         f"{html.escape(case['error_name'])} {_fmt(case['error'])}): real | imagined | difference"
                         "</figcaption></figure>")
        warn = "" if r["separates"] else ("<p class='bad'>This probe did not separate the baselines from MuJoCo "
                                          "on these start states: its scores are not meaningful.</p>")
        sections.append(
            f"<section id='{probe}'><h2>{probe}: {html.escape(r.get('question', ''))}</h2>{warn}"
            f"<p class='note'>settings: {html.escape(', '.join(f'{k}={v}' for k, v in r.get('settings', {}).items()))}"
            f"; {r.get('wall_s', 0):.1f}s</p>"
            + (f"<details><summary>what this probe measures</summary><p class='note'>{html.escape(r['description'])}"
               "</p></details>" if r.get("description") else "") +
            f"{_metrics_table(r['metrics'])}<div class='plots'>{''.join(plots)}</div>"
            f"<div class='media'>{''.join(media)}</div></section>")
    cmd = validation.get("command")
    title = f"validation: {html.escape(str(validation['model']))} on {html.escape(validation['task'])}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{CSS}</style></head><body>
<h1>World-model validation against MuJoCo</h1>
<p>model <code>{html.escape(str(validation['model']))}</code> ({html.escape(validation.get('model_class', ''))}),
task <code>{html.escape(validation['task'])}</code>, settings {html.escape(str(validation.get('settings', {})))},
{validation.get('wall_s', 0):.0f}s{', command <code>' + html.escape(cmd) + '</code>' if cmd else ''}.</p>
<p class="note">Scores are 0-100 between the best baseline (0) and MuJoCo (100). <b>copy_last</b> repeats the
last real frame; <b>action_blind</b> is the model under test with every action replaced by zeros; <b>mujoco</b>
is the simulator read through the same pipeline. <b>separation</b> is how far the best baseline is from MuJoCo
on the probe's combined error (a probe below 0.1 cannot tell them apart). Raw numbers: \
<a href="validation.json">validation.json</a>.</p>
{_score_table(validation)}
{''.join(sections)}
</body></html>
"""
    path = out / "report.html"

    atomic_write_bytes(path, page.encode())
    return path


def write_compare_report(out: Path, validations: dict[str, dict]) -> Path:
    """compare.html: one score table and overlaid curves for several models on the same probes."""
    out = Path(out)
    names = list(validations)
    probes = []
    for v in validations.values():
        for p in v["probes"]:
            if p not in probes:
                probes.append(p)
    first = validations[names[0]]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names) + "<th>copy_last</th><th>mujoco</th>"
    rows = []
    for p in probes:
        cells = "".join(f"<td>{_fmt(validations[n]['probes'].get(p, {}).get('score', {}).get('model'), 4)}</td>"
                        for n in names)
        base = first["probes"].get(p, {}).get("score", {})
        rows.append(f"<tr><td>{p}</td>{cells}<td>{_fmt(base.get('copy_last'), 4)}</td>"
                    f"<td>{_fmt(base.get('mujoco'), 4)}</td></tr>")
    plots = []
    plt = _plt()
    colours = plt.get_cmap("tab10")
    for p in probes:
        for cname, c in first["probes"].get(p, {}).get("curves", {}).items():
            fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=100)
            for i, n in enumerate(names):
                cc = validations[n]["probes"].get(p, {}).get("curves", {}).get(cname, {})
                ys = cc.get("model")
                if ys:
                    ax.plot(cc["x"][:len(ys)], [np.nan if y is None else y for y in ys], label=n,
                            color=colours(i % 10), lw=2)
            for who in ("copy_last", "mujoco", "truth"):
                if c.get(who):
                    ax.plot(c["x"][:len(c[who])], [np.nan if y is None else y for y in c[who]], label=who,
                            **STYLE[who])
            ax.set_xlabel("horizon (steps)")
            ax.set_ylabel(c.get("ylabel", ""), fontsize=8)
            ax.set_title(f"{p}: {cname}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            rel = f"plots/compare_{p}_{cname}.png"
            (out / "plots").mkdir(parents=True, exist_ok=True)
            fig.savefig(out / rel)
            plt.close(fig)
            plots.append(f"<img src='{rel}' alt='{p} {cname} of every model'>")
    links = "".join(f"<li><a href='{html.escape(n)}/report.html'>{html.escape(n)}</a></li>" for n in names)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>compare: {html.escape(first['task'])}</title>
<style>{CSS}</style></head><body>
<h1>World models compared against MuJoCo on {html.escape(first['task'])}</h1>
<p class="note">Same probes, same start states and actions (seed {first['settings'].get('seed')}). Scores 0-100
between the best baseline and MuJoCo. Raw numbers: <a href="compare.json">compare.json</a>.</p>
<table id="scores"><tr><th>probe</th>{head}</tr>{''.join(rows)}</table>
<div class="plots">{''.join(plots)}</div>
<h2>Reports of each model</h2><ul>{links}</ul>
</body></html>
"""

    path = out / "compare.html"
    atomic_write_bytes(path, page.encode())
    return path
