"""`embodied report RUN_DIR`: one HTML page per run folder (embodied/run_page.py).

A tiny model is trained once (configs/debug.yaml on a 5-episode Reach dataset, ~10 s); its page
is checked bare (nothing planned or validated yet: "not run yet" lines), then with plan and
validation results beside it, and loaded in headless Chromium from file://.
"""
import json
import os
import re
import shutil
import subprocess

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
from test_validate import CHECK_SCRIPT, _chromium  # the report's browser check: lists every image and whether it loaded

from embodied.cli import main
from embodied.collect import collect
from embodied.config import load_config
from embodied.run_page import write_run_page
from embodied.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.deter=32", "model.stoch=8", "train.threads=1", "train.batch=2", "train.seq_len=6",
        "train.eval_windows=2", "train.videos=2"]
SECTIONS = ("header", "curves", "heldout", "videos", "planning", "validation")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished run of `embodied train` (6 steps, two evaluations with videos)."""
    base = tmp_path_factory.mktemp("page")
    collect("reach", 5, base / "data", policy="mixed", workers=1, progress=False)
    cfg = load_config([os.path.join(ROOT, "configs/reach_recurrent.yaml"), os.path.join(ROOT, "configs/debug.yaml")],
                      [f"data={base / 'data'}", f"out={base / 'run'}", *TINY])
    train(cfg, command=f"embodied train --config configs/reach_recurrent.yaml --config configs/debug.yaml "
                       f"data={base / 'data'} out={base / 'run'}", progress=False)
    return base / "run"


@pytest.fixture(scope="module")
def full_run(run_dir, tmp_path_factory):
    """A copy of the run with results around it, as a user (or `embodied demo`) leaves them: the model's plan
    inside the run folder, the oracle's plan and the validation in sibling folders, and another model's plan."""
    base = tmp_path_factory.mktemp("full")
    run = base / "reach_run"
    shutil.copytree(run_dir, run)  # with its page's pictures, if any: they are redrawn only when their sources change
    tiny_plan = ["--task", "reach", "--planner", "cem", "--episodes", "1", "--max-steps", "6", "--horizon", "3",
                 "--samples", "8", "--iterations", "1", "--no-progress"]
    assert main(["plan", *tiny_plan, "--model", str(run), "--videos", "1", "--out", str(run / "plan_cem")]) == 0
    assert main(["plan", *tiny_plan, "--model", "mujoco", "--videos", "0", "--out", str(base / "plan_mujoco")]) == 0
    other = json.loads((run / "plan_cem" / "plan.json").read_text()) | {"model": str(base / "another_run")}
    (base / "plan_other").mkdir()
    (base / "plan_other" / "plan.json").write_text(json.dumps(other))
    assert main(["validate", "--task", "reach", "--model", str(run), "--preset", "quick", "--probes",
                 "controllability", "--no-media", "--out", str(base / "validation")]) == 0
    return run


def _refs(page: str) -> list[str]:
    return re.findall(r"""(?:src|href)=['"]([^'"#]+)(?:#[^'"]*)?['"]""", page)


def _check_links(out, page: str) -> list[str]:
    from urllib.parse import unquote

    assert not re.search(r"(?:src|href)=['\"](?:https?:|file:)?//", page), "links must be relative, never the network"
    refs = _refs(page)
    assert refs and not [r for r in refs if r.startswith("/")], refs
    missing = [r for r in refs if not (out.parent / unquote(r)).is_file()]
    assert not missing, missing
    return refs


def _section(page: str, sid: str) -> str:
    m = re.search(rf"<section id='{sid}'>(.*?)</section>", page, re.DOTALL)
    assert m, sid
    return m.group(1)


def test_page_of_a_fresh_run_shows_curves_metrics_and_videos_and_what_is_not_run_yet(run_dir):
    out = write_run_page(run_dir)
    assert out == run_dir / "index.html"
    page = out.read_text()
    for sid in SECTIONS:
        assert f"id='{sid}'" in page, sid
    refs = _check_links(out, page)
    header = re.search(r"<table class='facts' id='header'>(.*?)</table>", page, re.DOTALL).group(1)
    for fact in ("reach", "recurrent", "6 of 6 (finished)", "embodied train --config configs/reach_recurrent.yaml",
                 str(run_dir.parent / "data"), "wall clock", "M ("):
        assert fact in header, fact
    for png in ("loss.png", "loss_terms.png", "heldout_psnr.png", "optimisation.png"):
        assert f"page/{png}" in refs, png
    heldout = _section(page, "heldout")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for h in (1, 8, 32):
        for key in (f"heldout.psnr_h{h}", f"heldout.copy_last_psnr_h{h}"):
            assert f"{metrics[key]:.4g}" in heldout, key
    assert len(re.findall(r"class='(?:better|worse|same)'", heldout)) == 9  # psnr, ssim, body error x 3 horizons
    assert "page/video_step_0000006.gif" in refs and "page/strip_step_0000006.png" in refs
    assert "videos/step_0000003.mp4" in refs  # earlier videos are linked
    assert "not run yet: <code>embodied plan --task reach --model" in _section(page, "planning")
    assert "--model mujoco" in _section(page, "planning")
    assert "not run yet: <code>embodied validate --task reach --model" in _section(page, "validation")
    assert not list(run_dir.glob("**/.*.tmp*"))  # everything written atomically


def test_the_video_becomes_real_imagined_difference(run_dir):
    import imageio.v3 as iio

    write_run_page(run_dir)
    gif = iio.imread(run_dir / "page" / "video_step_0000006.gif", index=None)[..., :3]
    cfg = json.loads((run_dir / "config.json").read_text())
    context, horizon = cfg["context"], json.loads((run_dir / "metrics.json").read_text())["heldout.max_horizon"]
    w = 2 * cfg["spec"]["image_size"][1]  # the training video's 2x frames
    assert gif.shape[0] == context + horizon and gif.shape[2] >= 3 * w + 4
    real, pred, diff = (gif[:, :w, i * (w + 2):i * (w + 2) + w] for i in range(3))
    assert np.abs(real[0].astype(int) - pred[0].astype(int)).mean() < 3  # a context frame: imagined = real
    assert (diff[context - 1] > 0).mean() < 0.01  # ... so no difference (most codec noise is cut)
    assert diff[-1].mean() > diff[context - 1].mean() and diff[-1].max() == 255  # the untrained model is wrong later
    assert (gif[:, :, w:w + 2] == 255).all()  # white separators: the panels are where they should be


def test_page_with_plans_against_the_oracle_and_probe_scores(full_run):
    out = write_run_page(full_run)
    page = out.read_text()
    refs = _check_links(out, page)
    plan = _section(page, "planning")
    assert "not run yet" not in plan and "this model" in plan and "MuJoCo oracle" in plan
    assert "plan_cem/plan.json" in refs and "../plan_mujoco/plan.json" in refs
    assert "plan_other" not in page  # another model's plan beside this run is not this run's
    assert re.search(r"(?:[+-]\d+%|same) success, [+-]\d+\.\d\d return", plan)  # the model against the oracle
    assert "plan_cem/videos/episode_000.mp4" in refs
    val = _section(page, "validation")
    assert "not run yet" not in val and "controllability" in val
    assert "../validation/report.html" in refs and "href='../validation/report.html#controllability'" in val
    score = json.loads((full_run.parent / "validation" / "validation.json").read_text())["scores"]["controllability"]
    assert f"<b>{score['model']:.3g}</b>" in val


def test_page_loads_in_headless_chromium(full_run, tmp_path):
    """From file://, no server, no network: every plot, strip and GIF loads; the screenshot is a page, not blank."""
    if _chromium() is None:
        pytest.skip("headless browser check needs Chromium: apt-get install -y chromium")
    from PIL import Image

    page = write_run_page(full_run).read_text()
    check = full_run / "_browser_check.html"
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    shot = tmp_path / "page.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
           "--hide-scrollbars", "--window-size=1200,2600", f"--screenshot={shot}", "--dump-dom", check.as_uri()]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=90)
    finally:
        check.unlink()
    m = re.search(r'<pre id="image-check">(.*?)</pre>', proc.stdout, re.DOTALL)
    assert m, f"Chromium did not run the page (rc {proc.returncode}): {proc.stderr[-500:]}"
    images = json.loads(m.group(1).replace("&quot;", '"'))
    srcs = [src for src, _ in images]
    assert {"page/loss.png", "page/heldout_psnr.png", "page/video_step_0000006.gif"} <= set(srcs), srcs
    broken = [src for src, ok in images if not ok]
    assert not broken, f"images that did not load in Chromium: {broken}"
    for sid in SECTIONS:
        assert f'id="{sid}"' in proc.stdout, sid
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.shape == (2600, 1200)
    assert pixels.std() > 30 and (pixels < 128).mean() > 0.03  # text, plots and frames: not a blank page


def test_report_command_prints_the_page_and_takes_out(run_dir, tmp_path, capsys):
    assert main(["report", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == str((run_dir / "index.html").resolve())
    out = tmp_path / "elsewhere" / "push.html"
    out.parent.mkdir()
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    refs = _check_links(out, out.read_text())
    assert any(r.startswith("push_files/") and r.endswith(".png") for r in refs)  # pictures beside the page
    assert any(r.endswith("metrics.json") and r.startswith("..") for r in refs)  # the run's files, relative


@pytest.mark.parametrize("make", ["missing", "empty", "file", "rounds"])
def test_report_command_refuses_what_is_not_a_run_folder(make, tmp_path, capsys):
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("not a folder")
    elif make == "rounds":
        target.mkdir()
        (target / "rounds.json").write_text("{}")
    assert main(["report", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(target) in err and "Traceback" not in err, err
    assert not (target / "index.html").exists() if target.is_dir() else True


def test_missing_and_broken_parts_are_lines_on_the_page_not_errors(run_dir, tmp_path):
    half = tmp_path / "half"  # a run that has evaluated but not logged or recorded anything else
    half.mkdir()
    shutil.copy(run_dir / "metrics.json", half)
    page = write_run_page(half).read_text()
    assert page.count("not run yet") >= 4  # curves, videos, planning (model, oracle), validation
    _check_links(half / "index.html", page)
    (half / "metrics.json").write_text("{not json")
    (half / "config.json").write_text(json.dumps({"step": 3, "task": "reach", "arch": "recurrent"}))
    page = write_run_page(half).read_text()
    assert "metrics.json could not be read" in page and "no held-out metrics yet" in page


@pytest.mark.parametrize("size, windows", [(64, 1), (32, 3), (16, 4)])
def test_split_video_undoes_the_training_video_layout(size, windows):
    """split_video must stay the inverse of embodied.evaluate.side_by_side (the layout of videos/step_*.mp4)."""
    from embodied.evaluate import side_by_side
    from embodied.run_pictures import VIDEO_SCALE, split_video

    rng = np.random.default_rng(0)
    ctx, real, pred = (rng.integers(0, 256, (windows, t, size, size, 3), dtype=np.uint8) for t in (4, 6, 6))
    real_out, pred_out = split_video(side_by_side(ctx, real, pred), (size, size))

    def up(x):
        return x.repeat(VIDEO_SCALE, axis=2).repeat(VIDEO_SCALE, axis=3)

    assert real_out.shape == (windows, 10, VIDEO_SCALE * size, VIDEO_SCALE * size, 3)
    assert (real_out == up(np.concatenate([ctx, real], axis=1))).all()
    inner = (slice(None), slice(None), slice(VIDEO_SCALE, -VIDEO_SCALE), slice(VIDEO_SCALE, -VIDEO_SCALE))
    assert (pred_out[inner] == up(np.concatenate([ctx, pred], axis=1))[inner]).all()  # inside the red border
    assert split_video(side_by_side(ctx, real, pred), (size // 2, size // 2)) is None  # another image size
