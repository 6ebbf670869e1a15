"""`embodied train`: train a world model on a dataset made by `embodied collect`.

    embodied train --config configs/reach_recurrent.yaml [--config configs/debug.yaml] \\
        [--resume] [data=DIR] [out=DIR] [train.steps=2000 ...]
    torchrun --nproc_per_node=2 -m embodied.cli train --config ...   # DistributedDataParallel

One loop, nanoGPT style: sample a batch of windows, ``model.loss(batch, step)``,
AdamW step with warm-up + cosine learning rate. Every ``train.eval_every``
steps rank 0 scores open-loop predictions on held-out episodes
(:mod:`embodied.evaluate`), logs TensorBoard scalars under ``out/tb``, writes a
real | imagined video under ``out/videos`` and refreshes ``out/metrics.json``;
every ``train.ckpt_every`` steps it writes a checkpoint (:mod:`embodied.checkpoint`).
``--resume`` continues from the checkpoint in ``out`` with its optimizer state
and step count; batches are drawn from a generator seeded by (seed, rank,
step), so a resumed run sees the same batches an uninterrupted one would.

Under ``torchrun`` (env RANK / WORLD_SIZE) each process trains on its own shard
of the training episodes with DistributedDataParallel (gloo on CPU, nccl on
GPU); ``train.batch`` is the global batch, split over the processes; only
rank 0 writes files.

Episodes without actions are left out unless a recipe for them is on
(``latent_actions.enabled`` or ``train.pretrain_steps``; :mod:`embodied.action_free`).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from embodied import checkpoint
from embodied.action_free import batches, model_config, phase_start, recipe, recipe_metrics
from embodied.config import Config
from embodied.dataset import Dataset
from embodied.io import atomic_write_json
from embodied.errors import UserError
from embodied.pseudo_labels import LabelRefiner, label_unlabelled
from embodied.threads import default_threads

SPEC_SKIP = ("format", "episodes", "episodes_total", "steps_total", "success_rate", "policies")


def dataset_spec(manifest: dict) -> dict:
    """The task and space description of a dataset (what a checkpoint must match)."""
    return {k: v for k, v in manifest.items() if k not in SPEC_SKIP}


def lr_at(step: int, cfg, phase: int = 0) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at ``steps``; with ``phase`` > 0, one
    such schedule over steps [0, phase) and another over [phase, steps)."""
    if phase:
        step, cfg = (step, replace(cfg, steps=phase)) if step < phase else \
            (step - phase, replace(cfg, steps=cfg.steps - phase))
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


class _Loss(torch.nn.Module):
    """Routes DDP's forward to ``model.loss`` so gradients are all-reduced."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch, step):
        return self.model.loss(batch, step)


def _setup_distributed(device_pref: str):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is visible; use train.device=cpu (or auto)")
    cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return rank, world, device


def _finite(metrics: dict) -> dict:
    """NaN/inf -> None, so metrics.json stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def _check_resume_model(model_cfg: dict, saved: dict, out: Path) -> None:
    for key, value in model_cfg.items():
        if key in saved["model"] and saved["model"][key] != value:
            raise UserError(f"{out}: resuming a run whose checkpoint has model.{key}={saved['model'][key]!r} "
                            f"with model.{key}={value!r}; resume with the same model settings or start a new run "
                            "with out=NEW_DIR")


def train(cfg: Config, resume: bool = False, command: str = "", progress: bool = True) -> dict:
    """Train (or resume) the run described by ``cfg``; returns the final metrics (rank 0) or {}."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from embodied.evaluate import evaluate
    from embodied.models import build_model

    t = cfg.train
    rank, world, device = _setup_distributed(t.device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    torch.set_num_threads(t.threads or default_threads(local_world))
    checkpoint.import_plugins(cfg.plugins)
    out = Path(cfg.out)
    if t.batch < world:
        raise UserError(f"train.batch={t.batch} is smaller than the {world} distributed processes; "
                        f"set train.batch to at least {world}")
    batch_per_rank = t.batch // world
    if recipe(cfg) == "pseudo_labels" and cfg.pseudo_labels.refine_lr > 0 and world > 1:
        raise UserError("pseudo_labels.refine_lr refines the inferred actions in one process; train with one "
                        "process, or set pseudo_labels.refine_lr=0")

    ds = Dataset(Path(cfg.data.path), task=cfg.task, heldout_fraction=cfg.data.heldout_fraction,
                 max_episodes=cfg.data.max_episodes, labelled_fraction=cfg.data.labelled_fraction,
                 label_seed=cfg.data.label_seed)
    spec = dataset_spec(ds.manifest)
    model_cfg, phase = model_config(cfg), phase_start(cfg)
    has_ckpt = (out / "config.json").exists()
    if has_ckpt and not resume:
        step = checkpoint.read_config(out).get("step")
        raise UserError(f"{out}: already holds a checkpoint (step {step}); pass --resume to continue it, "
                        "or choose a new run folder with out=DIR")
    pseudo = None
    if recipe(cfg) == "pseudo_labels":
        pseudo = label_unlabelled(cfg.pseudo_labels, ds, out, spec, t.seed, write=rank == 0,
                                  progress=progress and rank == 0)
    draw, sampler = batches(cfg, ds, rank, world)
    start, book = 0, {}
    if resume and has_ckpt:
        _check_resume_model(model_cfg, checkpoint.read_config(out), out)
        model = checkpoint.load(out, task=cfg.task, spec=spec, device=device)
    else:
        if resume and rank == 0:
            print(f"embodied train: {out} has no checkpoint yet, starting from step 0", file=sys.stderr)
        torch.manual_seed(t.seed)
        model = build_model(model_cfg, spec).to(device)
        model.fit_data(sampler.sample(max(64, batch_per_rank), np.random.default_rng([t.seed, 2**31])))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    refine = LabelRefiner(ds, cfg.pseudo_labels.refine_lr, t.steps // 2) if pseudo else None
    if resume and has_ckpt:
        start, book = checkpoint.load_training_state(out, opt)
        if refine is not None:
            refine.load(checkpoint.load_arrays(out), out)
        if start > t.steps:
            raise UserError(f"{out}: checkpoint is at step {start}, beyond train.steps={t.steps}; "
                            f"pass train.steps={start} or more to continue it")
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(_Loss(model), device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=True)
    else:
        net = _Loss(model)

    writer = SummaryWriter(str(out / "tb"), purge_step=start if start else None) if rank == 0 else None
    frames_per_step = batch_per_rank * world * t.seq_len
    wall0, train_s, frames = time.perf_counter(), float(book.get("train_s", 0.0)), int(book.get("frames", 0))
    prior_wall = float(book.get("wall_s", 0.0))
    n_params = sum(p.numel() for p in model.parameters())
    arch = cfg.model["arch"]
    metrics: dict = {}
    last_loss = float(book.get("loss", "nan"))

    def bookkeeping() -> dict:
        return {"wall_s": prior_wall + time.perf_counter() - wall0, "train_s": train_s, "frames": frames,
                "loss": last_loss, "resumed_from": start if resume and has_ckpt else None}

    def save(step: int) -> None:
        if rank == 0:
            checkpoint.save(out, model, opt, step, bookkeeping(), spec=spec, train_config=cfg.to_dict(),
                            arrays=refine.arrays() if refine is not None else None)

    def run_eval(step: int) -> dict:
        res = evaluate(model, ds.heldout, spec.get("objects", []), t.eval_horizons, t.eval_windows, seed=t.seed,
                       video_path=out / "videos" / f"step_{step:07d}.mp4", videos=t.videos)
        res.update(recipe_metrics(model, ds, cfg, pseudo))
        for k, v in res.items():
            if isinstance(v, float) and math.isfinite(v):
                writer.add_scalar(k.replace(".", "/", 1), v, step)
        return res

    def write_metrics(step: int, res: dict, final: bool) -> dict:
        b = bookkeeping()
        m = {"command": command, "run_dir": str(out), "task": cfg.task, "arch": arch, "data": cfg.data.path,
             "checkpoint_step": step, "final": final, "params": n_params, "world_size": world,
             "train.steps": step, "train.loss": b["loss"], "train.wall_s": b["wall_s"], "train.train_s": b["train_s"],
             "train.frames": b["frames"], "train.frames_per_s": b["frames"] / b["train_s"] if b["train_s"] else None,
             "train.resumed_from": b["resumed_from"], **res}
        atomic_write_json(out / "metrics.json", _finite(m))
        return m

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        unlabelled = f" (+{len(ds.unlabelled)} without actions)" if ds.unlabelled else ""
        print(f"embodied train: {arch} ({n_params / 1e6:.2f}M params) on {cfg.task}, "
              f"{len(ds.train)} train{unlabelled} / {len(ds.heldout)} held-out episodes, "
              f"{world} process(es) on {device}, steps {start}->{t.steps}, run folder {out}", file=sys.stderr)
    bar = tqdm(total=t.steps, initial=start, desc=f"train {cfg.task}_{arch}", unit="step",
               disable=rank != 0 or not progress, mininterval=1.0, dynamic_ncols=True)
    step = start
    try:
        for step in range(start, t.steps):
            tic = time.perf_counter()
            lr = lr_at(step, t, phase)
            for g in opt.param_groups:
                g["lr"] = lr
            rng = np.random.default_rng([t.seed, rank, step])
            torch.manual_seed(int(rng.integers(2**62)))
            batch = {k: v.to(device, non_blocking=True) for k, v in draw(batch_per_rank, rng, step).items()}
            loss, logs = net(batch, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip) if t.grad_clip > 0 else None
            opt.step()
            if refine is not None:
                refine.step(step)
            train_s += time.perf_counter() - tic
            frames += frames_per_step
            done = step + 1
            if done % t.log_every == 0 or done == t.steps:
                value = loss.detach().float()
                if world > 1:
                    torch.distributed.all_reduce(value)
                    value /= world
                last_loss = float(value)
                if not math.isfinite(last_loss):
                    raise UserError(f"training diverged: loss is {last_loss} at step {done}; lower train.lr "
                                    f"(now {t.lr}) or raise train.warmup, and resume from the last checkpoint")
                if rank == 0:
                    writer.add_scalar("train/loss", last_loss, done)
                    writer.add_scalar("train/lr", lr, done)
                    step_s = max(time.perf_counter() - tic, 1e-9)
                    writer.add_scalar("train/frames_per_s", frames_per_step / step_s, done)
                    if gnorm is not None:
                        writer.add_scalar("train/grad_norm", float(gnorm), done)
                    for k, v in (logs or {}).items():
                        writer.add_scalar(f"train/{k}", float(v), done)
                    bar.set_postfix(loss=f"{last_loss:.4g}", refresh=False)
            bar.update(1)
            periodic_eval = done % t.eval_every == 0 and done < t.steps
            periodic_ckpt = done % t.ckpt_every == 0 and done < t.steps
            if rank == 0 and periodic_eval:
                metrics = write_metrics(done, run_eval(done), final=False)
            if periodic_ckpt:
                save(done)
            if world > 1 and (periodic_eval or periodic_ckpt):
                torch.distributed.barrier()
            step = done
    except KeyboardInterrupt:
        if world == 1 and step > start:
            save(step)
        raise
    finally:
        bar.close()
    try:
        if rank == 0:
            if (checkpoint.read_config(out).get("step") if (out / "config.json").exists() else None) != t.steps:
                save(t.steps)
            metrics = write_metrics(t.steps, run_eval(t.steps), final=True)
            writer.close()
        if world > 1:
            torch.distributed.barrier()
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()
    return metrics if rank == 0 else {}
