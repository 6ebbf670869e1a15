"""What a policy argument names (``--policies`` of `embodied policy rank`, ``--prior`` of `embodied plan`).

``random``, ``scripted[:NOISE]``, a folder written by `embodied policy train` or an SB3 zip (a
snapshot of ``--save-every``) become a :class:`PolicySpec`; the run's ``policy.json`` beside the zip (or one
folder up for a snapshot) says its algorithm, what it observes and which world model it was trained in.
:func:`sb3_observations` checks a loaded agent's observation against a model's latent and read-out.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embodied.envs.imagined import ImaginedEnv
from embodied.errors import UserError
from embodied.policies.agents import ALGOS

SB3_OBS = ("latent", "readout")


@dataclass
class PolicySpec:
    """One policy to rank: what it is, and for SB3 where it lives and what it observes."""

    label: str
    kind: str                          # random | scripted | sb3
    noise: float = 0.0                 # scripted: std of the correlated action noise
    path: str | None = None            # sb3: the zip
    algo: str | None = None            # sb3: sac | ppo
    obs: str | None = None             # sb3: latent | readout
    history: str | None = None         # sb3: the real-env latent it was evaluated with (policy.json)
    trained_with: str | None = None    # sb3: the world model it was trained in (policy.json)


def _policy_json(zip_path: Path) -> dict:
    """The policy.json of the run a zip belongs to (beside it, or one folder up for a snapshot), or {}."""
    for folder in (zip_path.parent, zip_path.parent.parent):
        f = folder / "policy.json"
        if f.is_file():
            try:
                return json.loads(f.read_text())
            except (OSError, ValueError):
                raise UserError(f"{f}: not readable JSON; re-run `embodied policy train` or delete it") from None
    return {}


def parse_policy(text: str) -> PolicySpec:
    """A :class:`PolicySpec` from what a user types (see the module docstring); a one-line UserError otherwise."""
    text = str(text).strip()
    if text == "random":
        return PolicySpec("random", "random")
    if text == "scripted" or text.startswith("scripted:"):
        raw = text.partition(":")[2] or "0"
        try:
            noise = float(raw)
        except ValueError:
            noise = float("nan")
        if not (np.isfinite(noise) and noise >= 0):
            raise UserError(f"policy {text!r}: the noise after 'scripted:' must be a number >= 0, e.g. scripted:0.3")
        return PolicySpec(f"scripted:{noise:g}", "scripted", noise=noise)
    path = Path(text)
    if path.is_dir():
        if not (path / "policy.zip").is_file():
            info = _policy_json(path / "policy.zip")
            if info.get("algo") == "random":  # `embodied policy train --baseline random` saves no agent
                return PolicySpec(path.name, "random")
            raise UserError(f"policy {text!r}: no policy.zip in this folder; pass a folder written by "
                            "`embodied policy train`, an SB3 zip, random or scripted[:noise]")
        zip_path, label = path / "policy.zip", path.name
    elif path.is_file() and path.suffix == ".zip":
        zip_path = path
        steps = re.fullmatch(r"policy_(\d+)_steps", path.stem)
        run = path.parent.parent if path.parent.name == "snapshots" else path.parent
        label = f"{run.name}@{steps.group(1)}" if steps else f"{path.parent.name}/{path.stem}"
    else:
        raise UserError(f"policy {text!r}: no such folder or .zip file; pass random, scripted[:noise], a folder "
                        "written by `embodied policy train` or an SB3 zip")
    info = _policy_json(zip_path)
    config = info.get("config") or {}
    obs = info.get("observations") or config.get("obs")
    if obs == "state":
        raise UserError(f"policy {text!r} observes the true simulator state (--real-obs state), which imagination "
                        "does not have; rank policies that observe the model's latent or read-out")
    algo = info.get("algo") if info.get("algo") in ALGOS else None
    return PolicySpec(label, "sb3", path=str(zip_path), algo=algo, obs=obs if obs in SB3_OBS else None,
                      history=config.get("history"), trained_with=info.get("model"))


def parse_policies(items) -> list[PolicySpec]:
    """Every policy of ``--policies``, labels made unique (a repeated label gets #2, #3, ...)."""
    out, seen = [], {}
    for item in items:
        spec = parse_policy(item)
        seen[spec.label] = seen.get(spec.label, 0) + 1
        if seen[spec.label] > 1:
            spec.label = f"{spec.label}#{seen[spec.label]}"
        out.append(spec)
    return out


def _vector_dim(model, mode: str) -> int | None:
    """The size of the model's latent or read-out observation (None when it has no read-out)."""
    if mode == "readout" and not model.abilities.readout:
        return None
    return int(ImaginedEnv(model, obs_mode=mode, task=model.task, horizon=1).observation_space.shape[0])


def sb3_observations(spec: PolicySpec, agent, model) -> str:
    """Which observation the agent takes (policy.json's, else the one whose size fits), checked against the model."""
    want = agent.observation_space.shape
    modes = [spec.obs] if spec.obs else list(SB3_OBS)
    for mode in modes:
        if (_vector_dim(model, mode),) == tuple(want):
            return mode
    have = {m: _vector_dim(model, m) for m in SB3_OBS}
    raise UserError(f"policy {spec.path} observes a {want} vector ({spec.obs or 'latent or readout'}), but the model "
                    f"gives {have}: rank policies trained in this model (--model)")
