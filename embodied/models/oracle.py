"""The MuJoCo simulator behind the world-model interface: the yardstick, never a planner's input.

Its state is a batch of exact MuJoCo states (``embodied.envs.mujoco_base.get_sim_state``
vectors), handed to ``encode(..., sim_state=...)`` by the evaluator that owns the
real env (it declares ``abilities.simulator_state``). It simulates in a private
copy of the task (its own MjModel and MjData), so it never reads or moves a
live env. ``rollout`` steps a whole batch of action sequences through
``mujoco.rollout`` (C, multithreaded); ``step`` replays one env step per batch
element exactly as the env does. Rewards come from the task's own
``reward_from_sensors``, so oracle returns equal real-env returns.
"""
from __future__ import annotations

import mujoco
import mujoco.rollout
import numpy as np
import torch

from embodied.envs.registry import make_task
from embodied.models.base import Abilities, State, WorldModel, repeat_state
from embodied.envs.actions import check_actions
from embodied.envs.mujoco_base import STATE_SPEC, get_sim_state, set_sim_state


class MujocoOracle(WorldModel):
    """World model whose state is the true simulator state of a task (built from the task's name)."""

    abilities = Abilities(success=True, goal_distance=True, simulator_state=True)

    def __init__(self, task: str, image_size: int = 64, n_threads: int = 2, **task_kwargs):
        super().__init__()
        self._sim_task = make_task(task, obs_type="pixels", width=image_size, height=image_size, **task_kwargs)
        self.task = self._sim_task.task_name
        self.image_size = int(image_size)
        self.model = self._sim_task.model
        self.action_dim = self._sim_task.action_space.shape[0]
        self.frame_skip = self._sim_task.frame_skip
        self._data = [mujoco.MjData(self.model) for _ in range(n_threads)]
        self._scratch = mujoco.MjData(self.model)
        self._nphys = mujoco.mj_stateSize(self.model, STATE_SPEC)
        self._rollout = mujoco.rollout.Rollout(nthread=n_threads) if hasattr(mujoco.rollout, "Rollout") else None

    def encode(self, frames, actions, proprio=None, sim_state=None) -> State:
        if sim_state is None:
            raise ValueError("the MuJoCo oracle is encoded from the simulator state: pass sim_state "
                             "(env.get_state() at the last context frame)")
        sim = torch.as_tensor(sim_state, dtype=torch.float64)
        return {"sim": sim.reshape(-1, sim.shape[-1]).clone()}

    def features(self, state: State) -> torch.Tensor:
        return state["sim"].float()

    def _sensordata(self, sim: np.ndarray) -> np.ndarray:
        out = np.empty((sim.shape[0], self.model.nsensordata))
        for i, s in enumerate(sim):
            set_sim_state(self.model, self._scratch, s)
            out[i] = self._scratch.sensordata
        return out

    def step(self, state: State, action: torch.Tensor) -> State:
        sim = state["sim"].numpy()
        action = action.detach().cpu().numpy().reshape(sim.shape[0], -1)
        out = np.empty_like(sim)
        for i in range(sim.shape[0]):
            steps = set_sim_state(self.model, self._scratch, sim[i])
            self._scratch.ctrl[:] = self._sim_task.action_to_ctrl(check_actions(action[i], self._sim_task.action_space))
            mujoco.mj_step(self.model, self._scratch, nstep=self.frame_skip)
            mujoco.mj_forward(self.model, self._scratch)
            out[i] = get_sim_state(self.model, self._scratch, steps + 1)
        return {"sim": torch.from_numpy(out)}

    def reward(self, state: State) -> torch.Tensor:
        reward, _ = self._sim_task.reward_from_sensors(self._sensordata(state["sim"].numpy()))
        return torch.as_tensor(reward, dtype=torch.float32)

    def success(self, state: State) -> torch.Tensor:
        _, success = self._sim_task.reward_from_sensors(self._sensordata(state["sim"].numpy()))
        return torch.as_tensor(success)

    def decode(self, state: State) -> torch.Tensor:
        frames = []
        for s in state["sim"].numpy():
            set_sim_state(self.model, self._scratch, s)
            frames.append(self._sim_task.render_data(self._scratch))
        return torch.from_numpy(np.stack(frames))

    def goal_distance(self, state: State, goal: State) -> torch.Tensor:
        a = self._sensordata(state["sim"].numpy())
        b = self._sensordata(repeat_state(goal, state["sim"].shape[0])["sim"].numpy())
        return torch.as_tensor(np.linalg.norm(a - b, axis=-1), dtype=torch.float32)

    @torch.no_grad()
    def rollout(self, state: State, actions: torch.Tensor) -> tuple[State, torch.Tensor]:
        """All sequences in one ``mujoco.rollout`` call; rewards read from sensors after each env step."""
        n, horizon, _ = actions.shape
        sim = repeat_state(state, n)["sim"].numpy()
        acts = self._sim_task.action_to_ctrl(actions.detach().cpu().numpy().astype(np.float64))
        # one extra physics step: mj_step computes sensors before integrating, so the sensors
        # recorded at step k * frame_skip describe the state reached after env step k
        control = np.concatenate([np.repeat(acts, self.frame_skip, axis=1), acts[:, -1:]], axis=1)
        nv = self.model.nv
        kwargs = dict(initial_warmstart=sim[:, self._nphys:self._nphys + nv])
        if self._rollout is not None:
            states, sensors = self._rollout.rollout(self.model, self._data, sim[:, :self._nphys], control, **kwargs)
        else:
            states, sensors = mujoco.rollout.rollout(self.model, self._data, sim[:, :self._nphys], control, **kwargs)
        per_step = sensors[:, self.frame_skip::self.frame_skip]
        reward, _ = self._sim_task.reward_from_sensors(per_step)
        last = states[:, horizon * self.frame_skip - 1]
        # mujoco.rollout does not return the final warm start; the next replan starts from a real env state anyway
        final = np.concatenate([last, np.zeros((n, nv)), sim[:, -1:] + horizon], axis=1)
        return {"sim": torch.from_numpy(final)}, torch.as_tensor(reward, dtype=torch.float32)
