"""A world model as a Gymnasium environment: imagined rollouts behind ``reset`` / ``step``.

``gymnasium.make("embodied/Imagined-v0", model=RUN_DIR)`` is a normal
``gymnasium.Env`` (:class:`ImaginedEnv`); ``gymnasium.make_vec("embodied/Imagined-v0",
num_envs=N, vectorization_mode="vector_entry_point", model=RUN_DIR)`` (or
:class:`ImaginedVectorEnv` directly) advances N imagined rollouts in one
batched ``model.step``. ``model`` is a run folder or a world-model object.

Modules: ``core`` (:class:`ImaginationCore`: batched state, contexts, step
counters, read-outs), ``contexts`` (where reset frames come from), ``env``
(the two Gymnasium envs), ``sb3`` (``make_sb3_vec_env``: the vector env for
stable-baselines3, imported on its own so plain Gymnasium use does not load
SB3) and ``real`` (:class:`LatentObservation`: a real env's observations
turned into the same latent observations, so a policy trained in imagination
acts in the real task).

Episodes
    ``reset()`` encodes ``model.max_context`` real frames (with their proprio and
    the actions between them): by default from the dataset the model was
    trained on (recorded in its run folder), a held-out episode
    (``split="heldout"``) drawn with ``self.np_random``, so the checkers'
    determinism tests hold. ``start="first"`` (default) seeds from the
    episode's first frame padded by repetition with zero actions, exactly
    what the real-env wrapper sees after ``reset`` (a robot at rest);
    ``start="any"`` from a uniformly drawn step. A live env passed as ``env=``
    is reset instead, and ``reset(options={"context": {"frames", "actions",
    "proprio"}})`` seeds from frames you hand in. ``step(action)`` returns the
    observation and ``model.reward`` of the new state; ``terminated`` is always
    False (our tasks never terminate), ``truncated`` comes at ``horizon`` steps
    (default: the real task's episode length). ``info["is_success"]`` is
    ``model.success(state)`` when the model declares that ability, else the
    task's rule on the predicted reward (reward > -``reward_success_margin``)
    where the task has one.

Observations (``obs_mode``)
    ``"latent"``: ``model.features(state)`` as float32. ``"readout"``:
    ``model.readout(state)`` (normalised proprio and object positions: a few
    numbers that mean the same in imagination and in the real env; needs
    ``model.abilities.readout``). ``"pixels"``: decoded uint8 frames (H, W, 3).
    ``"pixels_proprio"``: ``{"pixels", "proprio"}`` like the real tasks (needs
    ``model.abilities.proprio``).
"""
from embodied.envs.imagined.contexts import dataset_path_of
from embodied.envs.imagined.core import OBS_MODES, ImaginationCore
from embodied.envs.imagined.env import ImaginedEnv, ImaginedVectorEnv
from embodied.envs.imagined.real import LatentObservation

__all__ = ["OBS_MODES", "ImaginationCore", "ImaginedEnv", "ImaginedVectorEnv", "LatentObservation",
           "dataset_path_of"]
