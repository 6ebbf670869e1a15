"""An episode dataset loaded into memory: episodes split by seed, and the training windows sampled from them.

The files on disk (episodes, manifest, their checks) are :mod:`embodied.data`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from embodied.data import is_heldout, labelled_subset, read_episode, read_manifest, reconcile_manifest
from embodied.dataset_checks import check_episode_values
from embodied.errors import UserError


@dataclass
class Episode:
    """One loaded episode as torch tensors."""

    seed: int
    frames: torch.Tensor     # (T+1, H, W, 3) uint8
    proprio: torch.Tensor    # (T+1, P) float32
    actions: torch.Tensor | None  # (T, A) float32; None: action-free (unlabelled)
    rewards: torch.Tensor    # (T,) float32
    sim_states: np.ndarray   # (T+1, S) float64
    objects: dict[str, np.ndarray]
    inferred: bool = False   # the actions were inferred (embodied.pseudo_labels), not recorded

    def __len__(self) -> int:
        return self.rewards.shape[0]

    @property
    def labelled(self) -> bool:
        """Whether the episode's actions are known."""
        return self.actions is not None


def _objects_in_manifest_order(arrays: dict, manifest: dict) -> dict[str, np.ndarray]:
    """``objects.<name>`` tracks of one episode, ordered as the manifest lists the task's objects."""
    order = {o["name"]: i for i, o in enumerate(manifest.get("objects", []))}
    names = sorted((k.split(".", 1)[1] for k in arrays if k.startswith("objects.")),
                   key=lambda n: (order.get(n, len(order)), n))
    return {n: arrays[f"objects.{n}"] for n in names}


class Dataset:
    """An episode dataset held in memory, split by seed into train and held-out episodes.

    ``train``, ``heldout`` and ``episodes`` (the two together) hold labelled episodes only;
    ``unlabelled`` holds the action-free ones and the train episodes left out by
    ``labelled_fraction`` (:func:`labelled_subset`), with their actions dropped.
    """

    def __init__(self, root: Path, task: str | None = None, heldout_fraction: float = 0.1,
                 max_episodes: int | None = None, labelled_fraction: float = 1.0, label_seed: int = 0):
        if max_episodes is not None and max_episodes < 0:
            raise ValueError(f"max_episodes={max_episodes} is negative; pass at least 1 (or 0 for all episodes)")
        if not 0 <= heldout_fraction < 1:
            raise ValueError(f"heldout_fraction={heldout_fraction} is not in [0, 1); "
                             "e.g. 0.1 holds out 10% of episodes")
        if not 0 < labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction={labelled_fraction} is not in (0, 1]; e.g. 0.1 keeps the actions "
                             "of 10% of the train episodes")
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if task is not None and self.manifest["task"] != task:
            raise UserError(f"{self.root}: dataset is for task {self.manifest['task']!r}, not {task!r}; "
                            f"collect one with `embodied collect --task {task}`")
        self.manifest = reconcile_manifest(self.root, self.manifest)
        rows = self.manifest["episodes"]
        if not rows:
            raise UserError(f"{self.root}: dataset has no episodes; run `embodied collect --out {self.root}`")
        if max_episodes:
            rows = rows[:max_episodes]
        loaded = [self._load(self.root / r["file"]) for r in rows]
        self.unlabelled = [e for e in loaded if not e.labelled]
        labelled = [e for e in loaded if e.labelled]
        if not labelled:
            raise UserError(f"{self.root}: every episode is action-free; a world model needs some with actions: "
                            f"run `embodied collect --out {self.root}` without --no-actions")
        self.train = [e for e in labelled if not is_heldout(e.seed, heldout_fraction)]
        self.heldout = [e for e in labelled if is_heldout(e.seed, heldout_fraction)]
        if not self.heldout:  # tiny datasets: keep at least one held-out episode
            self.heldout = self.train[-1:]
            self.train = self.train[:-1] or self.heldout
        if labelled_fraction < 1:
            keep = labelled_subset([e.seed for e in self.train], labelled_fraction, label_seed)
            self.unlabelled += [replace(e, actions=None) for e in self.train if e.seed not in keep]
            self.unlabelled.sort(key=lambda e: e.seed)
            self.train = [e for e in self.train if e.seed in keep]
        used = {id(e) for e in self.train + self.heldout}
        self.episodes = [e for e in labelled if id(e) in used]

    def _load(self, path: Path) -> Episode:
        """One episode whose header :func:`reconcile_manifest` checked; its checksum and values are checked here."""
        a, meta = read_episode(path)
        check_episode_values(path, a)
        actions = torch.from_numpy(a["action"]) if "action" in a else None
        return Episode(seed=int(meta["seed"]), frames=torch.from_numpy(a["observation.image"]),
                       proprio=torch.from_numpy(a["observation.state"]), actions=actions,
                       rewards=torch.from_numpy(a["reward"]), sim_states=a["sim_state"],
                       objects=_objects_in_manifest_order(a, self.manifest))

    @property
    def task(self) -> str:
        return self.manifest["task"]

    def split(self, name: str) -> list[Episode]:
        """'train' or 'heldout' episodes."""
        if name not in ("train", "heldout"):
            raise ValueError(f"split {name!r} is not 'train' or 'heldout'")
        return self.train if name == "train" else self.heldout


class WindowSampler:
    """Random (B, T) windows from a list of episodes, optionally one shard per distributed rank.

    A window holds T frames and proprio readings, the T-1 actions between them
    and the T-1 rewards of arriving at frames 1..T-1; when every episode has
    object tracks, also their planar world positions (T, K, 2) in the
    dataset's object order (a training-only signal: models never read it when
    they predict or plan). With ``actions=False`` windows come from every
    episode, labelled or not, and hold no actions; else only from labelled
    episodes (unlabelled ones are skipped), so a loss that reads actions never
    gets a window without them.
    """

    def __init__(self, episodes: list[Episode], length: int, rank: int = 0, world_size: int = 1,
                 actions: bool = True):
        if length < 2:
            raise ValueError(f"window length {length} is below 2 frames (one step); set train.seq_len to at least 2")
        if actions and episodes and not any(e.labelled for e in episodes):
            raise UserError(f"none of the {len(episodes)} episodes has actions, and these windows need them; "
                            "collect episodes without --no-actions or raise data.labelled_fraction")
        self.actions = actions
        episodes = [e for e in episodes if e.labelled or not actions]
        shard = episodes[rank::world_size] or episodes
        self.episodes = [e for e in shard if len(e) >= length - 1]
        if not self.episodes:
            raise UserError(f"no episode has {length} frames; shorten the window (train.seq_len) "
                            "or collect longer episodes")
        self.length = length
        counts = np.array([len(e) - length + 2 for e in self.episodes], dtype=np.float64)
        self._probs = counts / counts.sum()
        names = [tuple(e.objects) for e in self.episodes]
        self.object_names = list(names[0]) if names[0] and len(set(names)) == 1 else []
        # (T+1, K, 2) planar tracks per episode, stacked once here rather than for every window
        self._tracks = [torch.from_numpy(np.stack([e.objects[n][:, :2] for n in self.object_names], 1)
                                         .astype(np.float32)) for e in self.episodes] if self.object_names else []

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """frames (B,T,H,W,3) uint8, proprio (B,T,P), actions (B,T-1,A) (unless ``actions=False``), rewards (B,T-1)
        [, objects (B,T,K,2)]."""
        idx = rng.choice(len(self.episodes), size=batch, p=self._probs)
        out = {"frames": [], "proprio": [], "actions": [], "rewards": []}
        if not self.actions:
            del out["actions"]
        if self.object_names:
            out["objects"] = []
        for i in idx:
            ep = self.episodes[i]
            t = int(rng.integers(0, len(ep) - self.length + 2))
            out["frames"].append(ep.frames[t:t + self.length])
            out["proprio"].append(ep.proprio[t:t + self.length])
            if self.actions:
                out["actions"].append(ep.actions[t:t + self.length - 1])
            out["rewards"].append(ep.rewards[t:t + self.length - 1])
            if self.object_names:
                out["objects"].append(self._tracks[i][t:t + self.length])
        return {k: torch.stack(v) for k, v in out.items()}
