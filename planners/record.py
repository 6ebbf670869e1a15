"""Real episodes of a control loop added to a dataset (``embodied plan --record``).

On-policy data: the episodes where a model's plans met the real task, in the
dataset layout of :mod:`embodied.data`, so a model can be fine-tuned on its own
mistakes. Seeds never clash with episodes the dataset already holds.
"""
from __future__ import annotations

from pathlib import Path

from embodied.collect import EpisodeBuffer, dataset_spec
from embodied.data import build_manifest, check_dataset_task, episode_path, write_episode
from embodied.errors import UserError
from embodied.io import atomic_write_json


class EpisodeRecorder:
    """Writes each real episode of ``env`` (a task of the registry) into the dataset at ``root``."""

    def __init__(self, root, env, seeds, label: str):
        self.root, self.env, self.label = Path(root), env.unwrapped, label
        check_dataset_task(self.root, self.env.task_name, "--record", size=int(self.env.height),
                           factors=getattr(self.env, "fov", None) or {})
        taken = sorted(s for s in seeds if episode_path(self.root, s).exists())
        if taken:
            raise UserError(f"{self.root} already holds episodes with seeds {taken[0]}..{taken[-1]}: "
                            "pick an unused --seed (e.g. 100000)")
        self.buffer: EpisodeBuffer | None = None

    def start(self, obs, info: dict) -> None:
        """Begin an episode at its first observation."""
        self.buffer = EpisodeBuffer(self.env, obs, info)

    def add(self, action, obs, reward: float, terminated: bool, info: dict) -> None:
        """Record one real step."""
        self.buffer.add(action, obs, reward, terminated, info)

    def save(self, seed: int) -> None:
        """Write the episode just ended (reset seed ``seed``)."""
        write_episode(episode_path(self.root, seed), *self.buffer.episode(seed, self.label))

    def close(self) -> None:
        """Rebuild the dataset's manifest from its episodes."""
        spec = dataset_spec(self.env.task_name, int(self.env.height), getattr(self.env, "fov", None))
        atomic_write_json(self.root / "manifest.json", build_manifest(self.root, spec))
