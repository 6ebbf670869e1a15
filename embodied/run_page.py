"""One HTML page per run folder: what `embodied train` made, and what was done with it since.

``write_run_page(run_dir)`` writes ``run_dir/index.html`` and its pictures under
``run_dir/page/``:

- a header: task, architecture, parameters, steps, training time, data folder and the command;
- training curves from the TensorBoard event files in ``tb/`` (loss, its terms, held-out PSNR
  against copy-last during training, gradient norm and learning rate), as PNGs (matplotlib, Agg);
- the held-out metrics of ``metrics.json`` against the copy-last-frame baseline, per horizon;
- the latest ``videos/step_*.mp4`` as an animated GIF of real | imagined | difference and a PNG
  strip of the first window at a few horizons;
- planning results (``plan.json`` of `embodied plan` with this model) beside the MuJoCo oracle's;
- probe scores of `embodied validate` (``validation.json``), linked to its ``report.html``.

Plan and validation results are found inside the run folder (any depth up to two), in the run
folder's sibling folders (the layout of `embodied demo`) and in ``runs/plan/`` (where `embodied
plan` writes by default); a result belongs to this run when the model path it records is this
folder. A missing part is one line saying which command makes it. Every link is relative and
nothing is loaded from the network. With ``out`` outside the run folder, the pictures go to
``<out stem>_files/`` beside it and the run folder is only read.
"""
from __future__ import annotations

import html
import math
import os
import re
import shlex
import time
from pathlib import Path
from urllib.parse import quote


from embodied.errors import UserError
from embodied.io import atomic_write_bytes, atomic_write_json
from embodied.report import CSS, _fmt
from embodied.run_pictures import CURVES_VERSION, plot_training, video_pictures
from embodied.run_results import PAGE_DIR, find_results, is_run_folder, read_json, read_scalars, same_path

METRIC_NAMES = {"psnr": ("PSNR", "dB", True), "ssim": ("SSIM", "", True),  # (label, unit, higher is better)
                "body_err": ("body position error", "px", False)}

PAGE_CSS = CSS + """
.facts td,.facts th{text-align:left;border:none;padding:2px 12px 2px 0}
.facts th{background:none;color:#555;font-weight:normal;white-space:nowrap}
#plan-table td:nth-child(7){white-space:nowrap}
.better{color:#070;font-weight:600}.worse{color:#b00;font-weight:600}.same{color:#555}
.notrun{color:#666;font-style:italic}.notrun code{font-style:normal}
nav a{margin-right:1em}section{margin-top:2em;border-top:1px solid #ddd}
.plots img{max-width:49%}.wide img{max-width:100%}
.validation-table td:nth-child(2),.validation-table th:nth-child(2){text-align:left}
"""


def _heldout_rows(metrics: dict) -> list[tuple[str, int, float | None, float | None]]:
    """(metric, horizon, model, copy_last) for every held-out metric that has a copy-last twin."""
    rows = []
    for key, value in metrics.items():
        m = re.fullmatch(r"heldout\.(?!copy_last_)(\w+)_h(\d+)", key)
        if m and f"heldout.copy_last_{m.group(1)}_h{m.group(2)}" in metrics:
            rows.append((m.group(1), int(m.group(2)), value, metrics[f"heldout.copy_last_{m.group(1)}_h{m.group(2)}"]))
    order = list(METRIC_NAMES)
    return sorted(rows, key=lambda r: (order.index(r[0]) if r[0] in order else len(order), r[0], r[1]))


# ---------------------------------------------------------------------------------------------- sections

class _Page:
    """Relative links from the page's folder, and the "not run yet" line."""

    def __init__(self, out: Path):
        self.base = out.parent.resolve()

    def rel(self, path: Path) -> str:
        return quote(Path(os.path.relpath(Path(path).resolve(), self.base)).as_posix())

    def link(self, path: Path, text: str | None = None) -> str:
        return f"<a href='{self.rel(path)}'>{html.escape(text or Path(path).name)}</a>"

    @staticmethod
    def not_run(what: str, command: str, why: str = "not run yet") -> str:
        return (f"<p class='notrun'>{html.escape(what)}{': ' if what else ''}{why}: "
                f"<code>{html.escape(command)}</code></p>")


def _header(run_dir: Path, cfg: dict | None, metrics: dict | None, page: _Page, notes: list[str]) -> str:
    cfg, m = cfg or {}, metrics or {}
    run_cfg = cfg.get("run_config") or {}
    task = m.get("task") or cfg.get("task") or run_cfg.get("task")
    arch = m.get("arch") or cfg.get("arch") or (cfg.get("model") or {}).get("arch")
    target = (run_cfg.get("train") or {}).get("steps")
    step = cfg.get("step", m.get("checkpoint_step"))  # the checkpoint on disk, which plan and validate load
    if m.get("final"):
        status = "finished"
    elif step is not None:
        status = "stopped or still running; --resume continues it"
    else:
        status = "no checkpoint yet"
    steps = f"{_fmt(step)}{f' of {target}' if target else ''} ({status})" if step is not None else status
    wall, train_s = m.get("train.wall_s"), m.get("train.train_s")
    minutes = (f"{_duration(wall)} wall clock" + (f", {_duration(train_s)} in training steps" if train_s else "")
               + (f", {_fmt(m['train.frames_per_s'])} frames/s" if m.get("train.frames_per_s") else "")) \
        if isinstance(wall, (int, float)) else "n/a"
    params = m.get("params")
    data = m.get("data") or (run_cfg.get("data") or {}).get("path")
    command = m.get("command")
    files = " ".join(page.link(run_dir / f) for f in ("config.json", "metrics.json") if (run_dir / f).is_file())
    rows = [("task", f"<code>{html.escape(str(task))}</code>"), ("architecture", html.escape(str(arch))),
            ("parameters", f"{params / 1e6:.2f}M ({params:,})" if isinstance(params, int) else "n/a"),
            ("steps", html.escape(steps)), ("training time", html.escape(minutes)),
            ("data folder", f"<code>{html.escape(str(data))}</code>" if data else "n/a"),
            ("command", f"<code>{html.escape(command)}</code>" if command else
             "<span class='note'>not recorded (trained from Python, or no evaluation yet)</span>"),
            ("run folder", f"<code>{html.escape(str(run_dir.resolve()))}</code>"), ("files", files or "none")]
    if isinstance(m.get("world_size"), int) and m["world_size"] > 1:
        rows.insert(5, ("processes", str(m["world_size"])))
    if m.get("train.resumed_from"):
        rows.insert(5, ("resumed from step", str(m["train.resumed_from"])))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    model = cfg.get("model")
    details = ("<details><summary>model settings</summary><p class='note'>"
               + html.escape(", ".join(f"{k}={v}" for k, v in model.items())) + "</p></details>"
               ) if isinstance(model, dict) else ""
    warn = "".join(f"<p class='bad'>{html.escape(n)}</p>" for n in notes)
    return f"<table class='facts' id='header'>{body}</table>{details}{warn}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _train_command(run_dir: Path, task, arch, data) -> str:
    config = f"configs/{task}_{arch}.yaml" if task and arch else "CONFIG.yaml"
    return shlex.join(["embodied", "train", "--config", config, f"data={data or 'DATA_DIR'}", f"out={run_dir}",
                       "--resume"])


def _curves_section(run_dir: Path, assets: Path, page: _Page, resume_cmd: str) -> str:
    tb = run_dir / "tb"
    events = sorted(tb.glob("**/events.out.tfevents.*")) if tb.is_dir() else []
    if not events:
        return page.not_run("no TensorBoard logs in tb/", resume_cmd)
    # the plots are redrawn only when the event files changed (a refresh of a finished run's page is quick)
    signature = [CURVES_VERSION] + [[e.relative_to(tb).as_posix(), e.stat().st_size, e.stat().st_mtime_ns]
                                    for e in events]
    cached, _ = read_json(assets / "curves.json")
    if cached and cached.get("signature") == signature and all((assets / f).is_file() for f, _ in cached["plots"]):
        plots, n = [(assets / f, c) for f, c in cached["plots"]], cached["steps"]
    else:
        try:
            scalars = read_scalars(tb)
        except (OSError, RuntimeError, ValueError) as err:  # a corrupt event file: say so, keep the rest of the page
            return (f"<p class='bad'>the TensorBoard logs in tb/ could not be read "
                    f"({html.escape(type(err).__name__)}: {html.escape(str(err))})</p>")
        plots = plot_training(scalars, assets)
        n = max((len(st) for st, _ in scalars.values()), default=0)
        atomic_write_json(assets / "curves.json", {"signature": signature, "steps": n,
                                                   "plots": [[p.name, c] for p, c in plots]})
    if not plots:
        return page.not_run("no training scalars logged yet", resume_cmd)
    imgs = "".join(f"<img src='{page.rel(p)}' alt='{html.escape(c)}' title='{html.escape(c)}'>" for p, c in plots)
    return (f"<div class='plots'>{imgs}</div><p class='note'>{n} logged steps; the full logs: "
            f"<code>tensorboard --logdir {html.escape(shlex.quote(str(tb)))}</code></p>")


def _heldout_section(metrics: dict | None, page: _Page, resume_cmd: str) -> str:
    rows = _heldout_rows(metrics or {})
    if not rows:
        return page.not_run("no held-out metrics yet (written at every evaluation, train.eval_every)", resume_cmd)
    out = []
    for name, h, model, copy in rows:
        label, unit, higher = METRIC_NAMES.get(name, (name, "", "err" not in name and "loss" not in name))
        if model is None or copy is None or not (math.isfinite(model) and math.isfinite(copy)):
            verdict = "<td class='same'>n/a</td>"
        elif abs(model - copy) <= 1e-9 * max(1.0, abs(copy)):
            verdict = "<td class='same'>same</td>"
        else:
            better = (model > copy) == higher
            verdict = (f"<td class='{'better' if better else 'worse'}'>{'better' if better else 'worse'} by "
                       f"{_fmt(abs(model - copy))}{(' ' + unit) if unit else ''}</td>")
        what = f"{label} ({unit + ', ' if unit else ''}{'higher' if higher else 'lower'} is better)"
        out.append(f"<tr><td>{html.escape(what)}</td><td>{h}</td><td>{_fmt(model, 4)}</td><td>{_fmt(copy, 4)}</td>"
                   f"{verdict}</tr>")
    m = metrics or {}
    wins = sum("class='better'" in r for r in out)
    return (f"<p>{wins} of {len(out)} held-out numbers beat the copy-last-frame baseline (which repeats the last "
            f"real frame; {_fmt(m.get('heldout.windows'))} held-out windows, open loop from the context frames).</p>"
            "<table id='heldout-table'><tr><th>metric</th><th>horizon (steps)</th><th>model</th><th>copy-last</th>"
            f"<th>model against copy-last</th></tr>{''.join(out)}</table>")


def _videos_section(run_dir: Path, cfg: dict | None, assets: Path, page: _Page, resume_cmd: str) -> str:
    videos = sorted((p for p in (run_dir / "videos").glob("step_*") if p.suffix in (".mp4", ".gif")),
                    key=lambda p: (int(re.sub(r"\D", "", p.stem) or 0), p.suffix != ".mp4"))
    if not videos:
        n = ((cfg or {}).get("run_config") or {}).get("train", {}).get("videos")
        if n == 0:
            return "<p class='notrun'>no videos: this run was trained with <code>train.videos=0</code></p>"
        return page.not_run("no videos yet (written at every evaluation, train.eval_every)", resume_cmd)
    latest = videos[-1]
    step = int(re.sub(r"\D", "", latest.stem) or 0)
    spec = (cfg or {}).get("spec") or {}
    image = spec.get("image_size") or [64, 64]
    pics = None
    try:
        pics = video_pictures(latest, (int(image[0]), int(image[1])), int((cfg or {}).get("context") or 1), assets)
    except (OSError, ValueError, RuntimeError) as err:
        pics = None
        note = f"<p class='note'>could not convert {html.escape(latest.name)} ({html.escape(str(err))})</p>"
    else:
        note = ""
    if pics:
        gif, strip = pics
        body = (f"<figure class='media'><img src='{page.rel(gif)}' alt='real, imagined and difference at step {step}'>"
                f"<figcaption>step {step}: each row one held-out window; real | imagined (red border: predicted "
                "open loop from the real context frames) | difference (white: wrong pixels)</figcaption></figure>"
                f"<figure class='wide'><img src='{page.rel(strip)}' alt='first window at a few horizons'>"
                "<figcaption>the first window at a few horizons</figcaption></figure>")
    else:
        body = (f"<video src='{page.rel(latest)}' controls loop muted></video>"
                "<p class='note'>(the recorded video as it is: its layout could not be split into real and "
                "imagined)</p>")
    others = " ".join(page.link(v, v.stem.replace("step_", "step ").lstrip("0")) for v in videos)
    return f"{note}{body}<p class='note'>recorded videos (real | imagined): {others}</p>"


def _task_key(task) -> str:
    from embodied.envs.registry import canonical_task

    return canonical_task(str(task))


def _plan_section(run_dir: Path, task, page: _Page) -> str:
    rd = shlex.quote(str(run_dir))
    make_model = (f"embodied plan --task {task} --model {rd} --planner cem --episodes 10 "
                  f"--out {shlex.quote(str(run_dir / 'plan_cem'))}")
    make_oracle = (f"embodied plan --task {task} --model mujoco --planner cem --episodes 10 "
                   f"--out {shlex.quote(str(run_dir / 'plan_mujoco_cem'))}")
    results = find_results(run_dir, "plan.json")
    ours = [(p, r) for p, r in results if not r.get("oracle") and same_path(r.get("model", ""), run_dir)]
    oracles = []
    if results and task:
        key = _task_key(task)
        oracles = [(p, r) for p, r in results if r.get("oracle") and _task_key(r.get("task", "")) == key]
    planners = {r.get("planner") for _, r in ours}
    if ours and any(r.get("planner") in planners for _, r in oracles):
        oracles = [(p, r) for p, r in oracles if r.get("planner") in planners]
    if not ours and not oracles:
        return page.not_run("planning with this model", make_model) + page.not_run("the MuJoCo oracle", make_oracle)

    def oracle_for(r):
        same = [o for _, o in oracles if o.get("planner") == r.get("planner")]
        exact = [o for o in same if (o.get("seed"), o.get("episodes")) == (r.get("seed"), r.get("episodes"))]
        return (exact or same or [None])[0]

    rows = []
    for path, r in ours + oracles:
        who = "MuJoCo oracle" if r.get("oracle") else "this model"
        o = None if r.get("oracle") else oracle_for(r)
        if r.get("oracle"):
            gap = "<td class='same'>(reference)</td>"
        elif o is None:
            gap = "<td class='same'>no oracle run with this planner</td>"
        else:
            d = (r.get("success_rate") or 0) - (o.get("success_rate") or 0)
            dr = (r.get("return_mean") or 0) - (o.get("return_mean") or 0)
            lead = d if d else dr  # success first; on equal success, the return
            cls = "better" if lead > 0 else ("same" if lead == 0 else "worse")
            gap = f"<td class='{cls}'>{f'{d:+.0%}' if d else 'same'} success, {dr:+.2f} return</td>"
        vids = sorted((path.parent / "videos").glob("episode_*.mp4"))
        links = page.link(path) + "".join(" " + page.link(v, v.stem.replace("_", " ")) for v in vids[:3])
        rows.append(f"<tr><td>{who}</td><td>{html.escape(str(r.get('planner')))}</td><td>{_fmt(r.get('episodes'))}</td>"
                    f"<td>{_fmt(r.get('seed'))}</td><td>{_pct(r.get('success_rate'))}</td>"
                    f"<td>{_pct(r.get('success_any_rate'))}</td>"
                    f"<td>{_fmt(r.get('return_mean'))} &plusmn; {_fmt(r.get('return_std'))}</td>"
                    f"<td>{_fmt(r.get('ms_per_action_median'))}</td>{gap}<td>{links}</td></tr>")
    table = ("<table id='plan-table'><tr><th>model</th><th>planner</th><th>episodes</th><th>seed</th><th>success</th>"
             "<th>success at any step</th><th>return</th><th>ms/action (median)</th><th>against the oracle</th>"
             f"<th>files</th></tr>{''.join(rows)}</table>")
    missing = ("" if ours else page.not_run("planning with this model", make_model)) + \
              ("" if oracles else page.not_run("the MuJoCo oracle", make_oracle))
    return ("<p class='note'>Receding-horizon MPC in the real MuJoCo task (<code>embodied plan</code>); the oracle "
            "plans with the simulator itself, the best a planner can do with these settings.</p>" + table + missing)


def _pct(v) -> str:
    return f"{v:.0%}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _validation_section(run_dir: Path, task, step, page: _Page) -> str:
    make = (f"embodied validate --task {task} --model {shlex.quote(str(run_dir))} --preset quick "
            f"--out {shlex.quote(str(run_dir / 'validation'))}")
    found = [(p, v) for p, v in find_results(run_dir, "validation.json") if isinstance(v.get("probes"), dict)
             and same_path((v.get("checkpoint") or {}).get("run_dir", ""), run_dir)]
    if not found:
        return page.not_run("validation probes", make)
    found.sort(key=lambda pv: str(pv[1].get("created", "")), reverse=True)
    parts = [("<p class='note'>Scores are 0-100 between the best baseline (0) and MuJoCo (100), as in the report "
              "of <code>embodied validate</code>.</p>")]
    for path, v in found[:5]:
        report = path.parent / "report.html"
        link = page.link(report, "report.html") if report.is_file() else "no report.html"
        vstep = (v.get("checkpoint") or {}).get("step")
        stale = (f" <span class='bad'>(validated at step {vstep}; the checkpoint is now at step {step}: "
                 "re-run it)</span>" if vstep is not None and step is not None and vstep != step else "")
        rows = []
        for probe, r in v["probes"].items():
            s = r.get("score") or {}
            anchor = f"{page.rel(report)}#{quote(probe)}" if report.is_file() else ""
            name = f"<a href='{anchor}'>{html.escape(probe)}</a>" if anchor else html.escape(probe)
            sep = "yes" if r.get("separates") else "<span class='bad'>no: score not meaningful</span>"
            rows.append(f"<tr><td>{name}</td><td>{html.escape(str(r.get('question', '')))}</td>"
                        f"<td><b>{_fmt(s.get('model'), 3)}</b></td><td>{_fmt(s.get('copy_last'), 3)}</td>"
                        f"<td>{_fmt(s.get('action_blind'), 3)}</td><td>{_fmt(s.get('mujoco'), 3)}</td>"
                        f"<td>{sep}</td></tr>")
        settings = v.get("settings") or {}
        parts.append(
            f"<p>{'quick' if settings.get('quick') else 'full'} preset, seed {_fmt(settings.get('seed'))}, "
            f"{html.escape(str(v.get('created', '')))}: {link}, {page.link(path)}{stale}</p>"
            "<table class='validation-table'><tr><th>probe</th><th>question</th><th>model</th><th>copy-last</th>"
            f"<th>action-blind</th><th>MuJoCo</th><th>separates baselines</th></tr>{''.join(rows)}</table>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------- the page

def write_run_page(run_dir, out=None) -> Path:
    """Write the run folder's page (default ``run_dir/index.html``) and its pictures; returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{run_dir}: no such folder; pass the out=DIR folder of an `embodied train` run")
    if not is_run_folder(run_dir):
        hint = (" (it holds on-policy rounds: pass one of its round_NN folders)"
                if (run_dir / "rounds.json").is_file() else "")
        raise UserError(f"{run_dir}: not a run folder of `embodied train` (no config.json or metrics.json){hint}; "
                        "pass the out=DIR folder of a training run")
    out = Path(out) if out is not None else run_dir / "index.html"
    if out.is_dir():
        out = out / "index.html"
    inside = out.parent.resolve() == run_dir.resolve()
    assets = run_dir / PAGE_DIR if inside else out.parent / f"{out.stem}_files"
    page = _Page(out)

    cfg, cfg_err = read_json(run_dir / "config.json")
    metrics, m_err = read_json(run_dir / "metrics.json")
    notes = [e for e in (cfg_err, m_err) if e]
    m, c = metrics or {}, cfg or {}
    run_cfg = c.get("run_config") or {}
    task = m.get("task") or c.get("task") or run_cfg.get("task") or "TASK"
    arch = m.get("arch") or c.get("arch")
    data = m.get("data") or (run_cfg.get("data") or {}).get("path")
    step = c.get("step", m.get("checkpoint_step"))
    resume_cmd = _train_command(run_dir, task, arch, data)

    sections = [
        ("curves", "Training curves", _curves_section(run_dir, assets, page, resume_cmd)),
        ("heldout", "Held-out predictions against copy-last", _heldout_section(metrics, page, resume_cmd)),
        ("videos", "Real | imagined | difference", _videos_section(run_dir, cfg, assets, page, resume_cmd)),
        ("planning", "Planning in the real task, against the MuJoCo oracle", _plan_section(run_dir, task, page)),
        ("validation", "Validation probes against MuJoCo", _validation_section(run_dir, task, step, page)),
    ]
    nav = " ".join(f"<a href='#{sid}'>{html.escape(title)}</a>" for sid, title, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{html.escape(title)}</h2>{content}</section>"
                   for sid, title, content in sections)
    title = f"{run_dir.resolve().name}: {task} {arch or ''}".strip()
    remake = ["embodied", "report", str(run_dir)] + ([] if inside else ["--out", str(out)])
    page_html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{PAGE_CSS}</style></head><body>
<h1>World-model run <code>{html.escape(run_dir.resolve().name)}</code></h1>
{_header(run_dir, cfg, metrics, page, notes)}
<nav>{nav}</nav>
{body}
<p class="note">Written by <code>{html.escape(shlex.join(remake))}</code> on
{time.strftime('%Y-%m-%d %H:%M')}; re-run it to refresh this page.</p>
</body></html>
"""
    atomic_write_bytes(out, page_html.encode())
    return out
