"""How tests/data/lerobot_small was made: the real `lerobot` 0.3.3 library (LeRobotDataset v2.1) writing
two episodes (6 and 5 frames, 16x16) twice: images stored in parquet (PNG, lossless) and as AV1 mp4 videos.

Run in a throwaway venv, not the project's (lerobot 0.3.3 pins torch<2.8, which would pull a CUDA torch):
    python3 -m venv /tmp/lr && /tmp/lr/bin/pip install torch==2.13.0
    /tmp/lr/bin/pip install --no-deps lerobot==0.3.3
    /tmp/lr/bin/pip install "datasets<=3.6.0" huggingface-hub jsonlines av pillow "numpy<2.3"
(plus a stand-in `torchvision.transforms.ToTensor`: the PyPI torchvision wheel does not load beside the CPU torch)
    /tmp/lr/bin/python make_fixture.py tests/data/lerobot_small
"""
import shutil
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def write(out: Path, video: bool) -> None:
    shutil.rmtree(out, ignore_errors=True)
    features = {
        "observation.image": {"dtype": "video" if video else "image", "shape": (16, 16, 3),
                              "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (3,), "names": ["x", "y", "gripper"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["vx", "vy"]},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
    }
    ds = LeRobotDataset.create(repo_id="embodied/lerobot_small", fps=10, features=features, root=out,
                               robot_type="toy_arm", use_videos=video)
    rng = np.random.default_rng(0)
    for ep, n in enumerate([6, 5]):
        for t in range(n):
            img = np.zeros((16, 16, 3), np.uint8)
            img[..., 0] = 16 * t + 40 * ep
            img[t:t + 4, 2 * t:2 * t + 4] = (0, 0, 255)
            img[8:12, 8:12, 1] = rng.integers(0, 256, (4, 4), dtype=np.uint8)
            frame = {"observation.image": img,
                     "observation.state": np.array([0.1 * t, -0.05 * t + ep, 0.5], np.float32),
                     "action": rng.uniform(-1, 1, 2).astype(np.float32),
                     "next.reward": np.array([-0.1 * (n - t)], np.float32),
                     "next.done": np.array([t == n - 1], bool)}
            ds.add_frame(frame, task="push the red block")
        ds.save_episode()
    shutil.rmtree(out / "images", ignore_errors=True)  # the writer's temporary PNGs (not part of the format)


root = Path(sys.argv[1])
write(root / "parquet_images", video=False)
write(root / "av1_video", video=True)
