"""Scoring a world model against MuJoCo with the validation probes (`embodied validate`, `embodied compare`).

Each probe (one module per probe in this package) starts MuJoCo and the model in
the same state, feeds both the same actions, and scores the model against the
truth. Every probe runs four predictors on the same start states and actions:

* ``model``: the world model under test;
* ``copy_last``: :class:`~embodied.models.baselines.CopyLastFrame` (the world never changes);
* ``action_blind``: :class:`~embodied.models.baselines.ActionBlind` around the model under
  test (every action it sees, in the context and in imagination, replaced by zeros);
* ``mujoco``: the MuJoCo oracle, run through exactly the same reading pipeline.

The truth is what the real env renders and reports (``info["objects"]``) after
``env.set_state(start)`` and the same actions; predictors are read only through
their decoded frames (object positions by colour, :mod:`embodied.vision`) and,
for planning fidelity, their predicted rewards. No predictor reads the truth.

Which probes apply to a task, and their targets, is the task's own
``probes`` (see :mod:`embodied.envs.tasks`). Scores (:mod:`.scoring`) are 0-100
between the best baseline and MuJoCo.

Modules: :mod:`.harness` (start states, truth, predictors, shared helpers),
:mod:`.runner` (run the probes, write ``OUT/validation.json`` with
``probes.<probe>.score.<who>`` beside ``probes.<probe>.metrics.<who>``, and
``OUT/report.html``), :mod:`.compare` (several models side by side), one
module per probe, :mod:`.scoring`.
"""
