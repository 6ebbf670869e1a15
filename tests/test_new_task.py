"""Adding a task is one class and one registry call: this file defines one and runs the whole pipeline on it.

collect -> train (debug config) -> plan -> validate on "dot" (a point robot that moves onto a target),
with no change to any other module of the project.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from embodied.cli import main as cli
from embodied.envs.mujoco_base import MujocoTaskEnv, ObjectSpec
from embodied.envs.registry import register_task

ROOT = Path(__file__).resolve().parents[1]

DOT_XML = """
<mujoco model="dot">
  <option timestep="0.005" gravity="0 0 0"/>
  <visual><quality shadowsize="0" offsamples="0"/><headlight ambient="1 1 1" diffuse="0 0 0" specular="0 0 0"/></visual>
  <default><geom contype="0" conaffinity="0"/></default>
  <worldbody>
    <camera name="top" pos="0 0 1" projection="orthographic" fovy="0.6"/>
    <geom type="plane" size="0.5 0.5 0.01" rgba="0.15 0.15 0.15 1"/>
    <body name="target" pos="0 0 0.001">
      <joint name="target_x" type="slide" axis="1 0 0"/><joint name="target_y" type="slide" axis="0 1 0"/>
      <geom type="cylinder" size="0.05 0.001" rgba="0 0.8 0 1" mass="1"/>
    </body>
    <body name="dot" pos="0 0 0.04">
      <joint name="dot_x" type="slide" axis="1 0 0" limited="true" range="-0.27 0.27" damping="0.1"/>
      <joint name="dot_y" type="slide" axis="0 1 0" limited="true" range="-0.27 0.27" damping="0.1"/>
      <geom type="sphere" size="0.04" rgba="0.1 0.3 1 1" mass="1"/>
    </body>
  </worldbody>
  <actuator>
    <general biastype="affine" joint="dot_x" ctrllimited="true" ctrlrange="-1 1" gainprm="20" biasprm="0 0 -40"/>
    <general biastype="affine" joint="dot_y" ctrllimited="true" ctrlrange="-1 1" gainprm="20" biasprm="0 0 -40"/>
  </actuator>
  <sensor>
    <framepos name="dot_pos" objtype="body" objname="dot"/>
    <framepos name="target_pos" objtype="body" objname="target"/>
  </sensor>
</mujoco>
"""


class DotEnv(MujocoTaskEnv):
    """A point robot moves onto a target: everything the project needs to know about the task is here."""

    task_name = "dot"
    xml = DOT_XML
    max_episode_steps = 20
    objects = (ObjectSpec("dot", (25, 76, 255), actuated=True), ObjectSpec("target", (0, 204, 0)))
    reward_success_margin = 0.05
    planner_defaults = {"horizon": 8, "samples": 32, "elites": 4, "iterations": 2}
    probes = {"fidelity": {}, "controllability": {}, "planning_fidelity": {}}

    def _reset_task(self, rng):
        self.data.qpos[:] = np.concatenate([rng.uniform(-0.2, 0.2, 2), rng.uniform(-0.2, 0.2, 2)])

    def reward_from_sensors(self, sensordata):
        dist = np.linalg.norm(self.sensor(sensordata, "dot_pos")[..., :2]
                              - self.sensor(sensordata, "target_pos")[..., :2], axis=-1)
        return -dist, dist < 0.05

    def proprio(self):
        return np.concatenate([self.data.qpos[2:4], self.data.qvel[2:4]])

    def expert(self):
        objs = self.object_positions()
        return np.clip(10.0 * (objs["target"][:2] - objs["dot"][:2]), -1.0, 1.0)

    def goal_qpos(self):
        qpos = self.data.qpos.copy()
        qpos[2:4] = qpos[0:2]
        return qpos


register_task(DotEnv)


@pytest.mark.slow
def test_a_task_defined_here_runs_the_whole_pipeline(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert cli(["collect", "--task", "dot", "--episodes", "6", "--workers", "1", "--out", str(data)]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["task"] == "dot" and manifest["episodes_total"] == 6
    assert any(p.startswith("scripted") for p in manifest["policies"])  # the task's own expert collected data

    assert cli(["train", "--config", str(ROOT / "configs/reach_recurrent.yaml"), "--config",
                str(ROOT / "configs/debug.yaml"), "task=dot", f"data={data}", f"out={run}", "train.threads=1",
                "train.seq_len=6", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["task"] == "dot"

    for model, out in ((str(run), tmp_path / "plan"), ("mujoco", tmp_path / "oracle")):
        assert cli(["plan", "--task", "dot", "--model", model, "--episodes", "1", "--videos", "0", "--out", str(out),
                    "--no-progress"]) == 0
        result = json.loads((out / "plan.json").read_text())
        assert result["planner_settings"]["horizon"] == 8  # the task's own planner defaults
        assert result["per_episode"][0]["steps"] == 20     # the task's own episode length
    assert json.loads((tmp_path / "oracle" / "plan.json").read_text())["success_rate"] == 1.0

    assert cli(["validate", "--task", "dot", "--model", str(run), "--preset", "quick",
                "--out", str(tmp_path / "val")]) == 0
    validation = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert set(validation["probes"]) == set(DotEnv.probes)  # the probes the task declares, and only those
    assert validation["probes"]["controllability"]["score"]["mujoco"] == pytest.approx(100, abs=1e-6)
