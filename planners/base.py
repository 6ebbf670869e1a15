"""What every planner shares: settings, the ``plan(model, state, goal)`` call, scoring and warm start.

A planner searches over action sequences (H, A) with a batched world model:
each iteration it asks ``model.rollout(state, actions (N,H,A))`` for the final
states and (N,H) rewards of N candidate sequences in one call, scores them and
refines its proposal. The model may be a learned latent model or the MuJoCo
oracle: the planner only sees the :class:`embodied.models.base.WorldModel`
interface, never the simulator, the env or ``info["objects"]``.

Objectives (``settings.objective``):

* ``"reward"``: the (optionally discounted) sum of the model's predicted rewards;
* ``"goal"``: ``-goal_weight * model.goal_distance(final_state, goal)`` where
  ``goal`` is the model state of an encoded goal frame, plus
  ``reward_weight *`` the reward sum (0 by default).

Warm start: the plan returned by one call, shifted by the number of actions
the caller executed (:meth:`Planner.advance`, 1 by default) and padded with its
last action, is the starting proposal of the next call. All sampling goes
through a ``torch.Generator`` seeded by ``settings.seed`` (:meth:`Planner.reset`
re-seeds it), so the same seed, model and state give the same plan.

Policy prior (``prior=``, a :class:`embodied.planners.prior.PolicyPrior`): each
call first rolls the policy out in imagination. Its noise-free sequence is the
starting proposal; ``round(prior_share * samples)`` of its rollouts (noise std
``prior_std``) and the previous plan, shifted, join the candidates of every
iteration (:meth:`Planner.start`), taking the place of sampled ones. With
no prior nothing changes, bit for bit. ``terminal_value`` > 0 adds that
weight times the prior's critic value of each sequence's final state
(discounted by ``discount ** horizon``) to its score, as TD-MPC2 does: a short
horizon then still sees what lies beyond it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch

from embodied.models.base import State, WorldModel, state_batch

OBJECTIVES = ("reward", "goal")


@dataclass(frozen=True)
class PlannerSettings:
    """Settings shared by CEM, MPPI and random shooting (each ignores what it does not use).

    The defaults cost ``samples * horizon * iterations`` = 4,608 imagined
    steps per action: ~46-70 ms at 10-15 us per latent sample-step. With the
    MuJoCo oracle as the model they solve Reach and Push (CEM and MPPI; see
    the planners issue note for the measured success rates).
    """

    horizon: int = 12            # actions per planned sequence
    samples: int = 128           # candidate sequences per iteration (one batched rollout)
    iterations: int = 3          # refinement rounds per plan() call
    elites: int = 12             # CEM: sequences the next proposal is fitted to
    temperature: float = 0.1     # CEM elite / MPPI sample weights: softmax(standardised score / temperature)
    noise_std: float = 1.0       # initial (CEM) or fixed (MPPI) sampling std, in action units
    noise_beta: float = 2.0      # temporal colour of the sampling noise: 0 white, 2 smooth (iCEM's 1/f^beta)
    min_std: float = 0.05        # CEM: floor of the refitted std
    momentum: float = 0.1        # CEM/MPPI: weight of the old mean when refitting
    discount: float = 1.0        # per-step discount of predicted rewards
    objective: str = "reward"    # "reward" or "goal"
    goal_weight: float = 1.0     # "goal": weight of the latent goal distance
    reward_weight: float = 0.0   # "goal": weight of the reward sum added to it
    warm_start: bool = True      # start from the previous plan, shifted
    prior_share: float = 0.25    # with a policy prior: the share of candidates it proposes
    prior_std: float = 0.3       # with a policy prior: std of the noise on its proposals (one stays noise-free)
    terminal_value: float = 0.0  # with a policy prior: weight of its critic's value of the final state in the score
    select: str = "mean"         # CEM/MPPI: return the refitted "mean" or the "best" sequence scored
    action_low: float = -1.0
    action_high: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("horizon", "samples", "iterations", "elites"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"planner setting {name}={getattr(self, name)} must be a positive integer")
        if self.elites > self.samples:
            raise ValueError(f"planner setting elites={self.elites} exceeds samples={self.samples}: "
                             "use at most as many elites as samples")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"planner objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.select not in ("mean", "best"):
            raise ValueError(f"planner setting select={self.select!r} is not 'mean' or 'best'")
        if not self.action_low < self.action_high:
            raise ValueError(f"action bounds [{self.action_low}, {self.action_high}] are empty")
        for name in ("temperature", "noise_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"planner setting {name}={getattr(self, name)} must be > 0")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"planner setting momentum={self.momentum} must be in [0, 1)")
        if not 0 <= self.prior_share <= 1:
            raise ValueError(f"planner setting prior_share={self.prior_share} must be in [0, 1]")
        if not self.prior_std >= 0:
            raise ValueError(f"planner setting prior_std={self.prior_std} must be >= 0")
        if not self.terminal_value >= 0:
            raise ValueError(f"planner setting terminal_value={self.terminal_value} must be >= 0")

    @property
    def cost_per_plan(self) -> int:
        """Imagined steps one plan() call asks the model for."""
        return self.samples * self.horizon * self.iterations

    def to_dict(self) -> dict:
        return asdict(self)


def make_settings(base: PlannerSettings | None = None, **overrides) -> PlannerSettings:
    """``base`` (or the defaults) with overrides; ``None`` values are skipped, unknown keys refused."""
    known = {f.name for f in fields(PlannerSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown planner setting(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(base or PlannerSettings(), **overrides)


class Planner:
    """Base class: subclasses implement :meth:`_optimize`; callers use :meth:`plan`."""

    name = "planner"
    defaults = PlannerSettings()

    def __init__(self, settings: PlannerSettings | None = None, prior=None, **overrides):
        self.settings = make_settings(settings or self.defaults, **overrides)
        self.prior = prior
        self.generator = torch.Generator()
        self.info: dict = {}
        self.reset()

    # ---- episode bookkeeping ---------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Forget the warm start and re-seed sampling (``seed`` defaults to ``settings.seed``)."""
        self.generator.manual_seed(int(self.settings.seed if seed is None else seed))
        self._prev: torch.Tensor | None = None
        self._shift = 1

    def advance(self, executed: int = 1) -> None:
        """Tell the planner how many actions of its last plan were executed (the warm-start shift)."""
        if executed < 0:
            raise ValueError(f"executed={executed} must be >= 0")
        self._shift = int(executed)

    def shifted_plan(self, action_dim: int) -> torch.Tensor | None:
        """The previous plan (H, A) shifted by the executed actions and padded with its last, or None."""
        s, prev = self.settings, self._prev
        if not s.warm_start or prev is None or prev.shape[1] != action_dim:
            return None
        shifted = prev[self._shift:]
        if len(shifted) == 0:
            return None
        pad = shifted[-1:].expand(s.horizon - len(shifted), -1) if len(shifted) < s.horizon else shifted[:0]
        return torch.cat([shifted[:s.horizon], pad]).clone()

    def initial_mean(self, action_dim: int) -> torch.Tensor:
        """The starting proposal (H, A): the previous plan shifted, or the middle of the action box."""
        s = self.settings
        shifted = self.shifted_plan(action_dim)
        return torch.full((s.horizon, action_dim), (s.action_low + s.action_high) / 2) if shifted is None else shifted

    def start(self, model: WorldModel, state: State, action_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The starting proposal (H, A) and the extra candidates (K, H, A) scored in every iteration.

        Without a prior: :meth:`initial_mean` and none. With one: its noise-free rollout, and as extras
        ``round(prior_share * samples)`` of its rollouts (the noise-free one first) and the previous
        plan shifted, at most ``samples - 1`` in all.
        """
        s = self.settings
        if self.prior is None:
            return self.initial_mean(action_dim), torch.empty(0, s.horizon, action_dim)
        shifted = self.shifted_plan(action_dim)
        room = s.samples - 1  # the current proposal is always scored too
        warm = ([] if shifted is None else [shifted[None]])[:room]
        n = min(round(s.prior_share * s.samples), room - len(warm))
        rollouts = self.prior.propose(model, state, max(n, 1), s.horizon, s.prior_std, self.generator,
                                      s.action_low, s.action_high)
        return rollouts[0], torch.cat([rollouts[:n], *warm])

    # ---- the shared call -----------------------------------------------------------
    @torch.no_grad()
    def plan(self, model: WorldModel, state: State, goal: State | None = None) -> torch.Tensor:
        """Best action sequence (H, A) from ``state`` (batch 1) under ``model``; first row is executed next."""
        s = self.settings
        if state_batch(state) != 1:
            raise ValueError(f"plan() takes a batch-1 state, got batch {state_batch(state)}")
        if s.objective == "goal" and goal is None:
            raise ValueError("objective 'goal' needs a goal state: pass the model state of the encoded goal frame")
        action_dim = int(model.action_dim)
        if action_dim < 1:
            raise ValueError(f"model {type(model).__name__} has action_dim={action_dim}: set it to the action size")
        mean, extra = self.start(model, state, action_dim)
        actions = self._optimize(model, state, goal, mean, extra).clamp(s.action_low, s.action_high)
        self._prev = actions.clone()
        self._shift = 1
        return actions

    def _optimize(self, model: WorldModel, state: State, goal: State | None, mean: torch.Tensor,
                  extra: torch.Tensor) -> torch.Tensor:
        """The plan (H, A) from the starting proposal ``mean`` (H, A), scoring the ``extra`` (K, H, A) too."""
        raise NotImplementedError

    # ---- helpers for subclasses ------------------------------------------------------
    def clamp(self, actions: torch.Tensor) -> torch.Tensor:
        return actions.clamp(self.settings.action_low, self.settings.action_high)

    def gaussian(self, mean: torch.Tensor, std: torch.Tensor | float, n: int) -> torch.Tensor:
        """``n`` samples of N(mean, std^2), shape (n, H, A), from the planner's generator.

        Not clamped: :meth:`score` clamps what it rolls out, and refitting the
        proposal to the raw samples lets it settle *on* a bound (fitting to
        clamped samples would keep its mean strictly inside, and bang-bang
        optima are common in control).
        """
        horizon = mean.shape[0]
        beta = self.settings.noise_beta
        if beta == 0 or horizon < 2:
            noise = torch.randn((n, *mean.shape), generator=self.generator, dtype=mean.dtype)
        else:  # 1/f^beta noise along time (Pinneri et al. 2020, iCEM), unit variance per step
            freqs = torch.fft.rfftfreq(horizon)
            scale = torch.ones_like(freqs)
            scale[1:] = freqs[1:] ** (-beta / 2)
            scale[0] = scale[1]
            shape = (n, mean.shape[1], len(freqs))
            real = torch.randn(shape, generator=self.generator)
            spec = torch.complex(real, torch.randn(shape, generator=self.generator))
            noise = torch.fft.irfft(spec * scale, n=horizon, dim=-1)
            noise = (noise / noise.std(dim=-1, keepdim=True).clamp_min(1e-8)).transpose(1, 2).to(mean.dtype)
        return mean + noise * std

    def uniform(self, n: int, horizon: int, action_dim: int) -> torch.Tensor:
        """``n`` uniform samples over the action box, shape (n, H, A)."""
        s = self.settings
        u = torch.rand((n, horizon, action_dim), generator=self.generator)
        return s.action_low + u * (s.action_high - s.action_low)

    def score(self, model: WorldModel, state: State, actions: torch.Tensor, goal: State | None = None) -> torch.Tensor:
        """Objective (N,) of each sequence in ``actions`` (N, H, A), clamped to the bounds first; higher is better."""
        s = self.settings
        final, rewards = model.rollout(state, self.clamp(actions.float()))
        rewards = torch.as_tensor(rewards, dtype=torch.float32)
        if s.discount != 1.0:
            rewards = rewards * s.discount ** torch.arange(rewards.shape[1], dtype=torch.float32)
        total = rewards.sum(dim=1)
        if s.terminal_value:
            if self.prior is None:
                raise ValueError("planner setting terminal_value needs a policy prior with a critic (--prior POLICY)")
            total = total + s.terminal_value * s.discount ** rewards.shape[1] * self.prior.value(model, final)
        if s.objective == "goal":
            dist = torch.as_tensor(model.goal_distance(final, goal), dtype=torch.float32).reshape(-1)
            total = -s.goal_weight * dist + s.reward_weight * total
        # a diverged sequence must never win
        return torch.nan_to_num(total, nan=-torch.inf, posinf=-torch.inf)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"
