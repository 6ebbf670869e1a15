"""Run configs: small dataclasses loaded from YAML files plus dotted ``key=value`` overrides.

The one config mechanism of every command (train, plan, policy, validate):
each command declares a dataclass; a config is its defaults, then one or more
YAML files merged in order (later files win), then the command-line
overrides, e.g.::

    embodied train --config configs/reach_recurrent.yaml --config configs/debug.yaml \\
        train.steps=200 model.hidden=64 data=data/reach out=runs/try1
    embodied plan --config configs/plan.yaml task=push planner.horizon=24

Override values are parsed with ``yaml.safe_load`` (``3`` is an int, ``1.0e-3``
a float, ``[1, 8]`` a list, ``null`` None); float fields also take ``3e-4``,
which YAML 1.1 would leave as a string. ``data=DIR`` is short for
``data.path=DIR``. The ``model`` section is a free dict handed to
``embodied.models.build_model`` (its ``arch`` key picks the architecture, the
model checks its own keys); every other key is checked here, and a missing
key, an unknown key or a wrong type is a one-line ``UserError`` that says how
to fix it.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from embodied.errors import UserError

REQUIRED = dataclasses.MISSING


@dataclass
class DataConfig:
    path: str                          # dataset folder made by `embodied collect`
    heldout_fraction: float = 0.1      # episodes held out by seed (stable split)
    max_episodes: int | None = None    # use only the first N episodes (debugging)
    labelled_fraction: float = 1.0     # keep the actions of this share of the train episodes (a seeded subset)
    label_seed: int = 0                # picks that subset (data.labelled_subset)


@dataclass
class TrainConfig:
    steps: int                         # optimizer updates in total (a resumed run continues to this)
    batch: int                         # windows per update, summed over all distributed ranks
    seq_len: int                       # frames per training window (context + predicted)
    lr: float
    weight_decay: float = 0.0
    warmup: int = 0                    # linear warm-up steps, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0             # max global grad norm; 0 disables clipping
    log_every: int = 10                # TensorBoard scalars every N steps
    eval_every: int = 500              # held-out evaluation every N steps (and at the end)
    ckpt_every: int = 500              # checkpoint every N steps (and at the end)
    eval_windows: int = 32             # held-out windows scored per evaluation
    eval_horizons: list[int] = field(default_factory=lambda: [1, 8, 32])
    videos: int = 4                    # sample windows in each real | imagined video (0: none)
    seed: int = 0
    threads: int = 0                   # torch CPU threads per process; 0: (cores - 1) / processes, at least 1
    device: str = "auto"               # auto | cpu | cuda
    pretrain_steps: int = 0            # the first N steps: every episode, actions unknown; then the labelled ones


@dataclass
class LatentActionsConfig:
    """The ``latent_actions`` section: a latent action model learned from frames drives the world model
    (:mod:`embodied.models.latent_actions`)."""

    enabled: bool = False
    steps: int = 1000        # the first N of train.steps train the latent action model; the rest the world model
    code_dim: int = 0        # size of a latent action; 0: the dataset's action size
    channels: int = 8        # conv width of its inverse-dynamics and forward models
    pairs: int = 64          # frame pairs it trains on per step, drawn from the batch's windows
    hidden: int = 128        # MLP width of the inverse dynamics' head and of the action -> code map
    noise: float = 0.1       # Gaussian noise on the tanh-bounded code while it trains: the bottleneck
    align: float = 0.0       # weight of a code -> action read-out on labelled windows (0: frames alone, as Genie)

    def check(self, source: str, train_steps: int) -> None:
        if not self.enabled:
            return
        check_range(source, {"latent_actions.steps": self.steps}, low=1, high=train_steps, below=True)
        check_range(source, {"latent_actions.channels": self.channels, "latent_actions.hidden": self.hidden,
                             "latent_actions.pairs": self.pairs}, low=1)
        check_range(source, {"latent_actions.code_dim": self.code_dim, "latent_actions.noise": self.noise,
                             "latent_actions.align": self.align}, low=0)


@dataclass
class PseudoLabelsConfig:
    """The ``pseudo_labels`` section: an inverse-dynamics model fit on the labelled episodes labels the others
    (as VPT does), and the world model trains on every episode (:mod:`embodied.pseudo_labels`)."""

    enabled: bool = False
    steps: int = 1500        # optimizer steps of the inverse-dynamics model (before the world model's train.steps)
    batch: int = 64          # frame steps per update
    channels: int = 16       # conv width
    hidden: int = 128        # MLP width of its head
    lr: float = 1.0e-3
    proprio: bool = True     # it also reads the proprioception the action-free episodes recorded (false: frames only)
    recorded_share: float = 0.5  # share of each batch drawn from the episodes whose actions were recorded (0: as
                                 # many as their share of the episodes)
    refine_lr: float = 0.01  # Adam step on the inferred actions through the world model's own loss in the second
                             # half of training, so they come to explain what the model sees (0: kept as inferred)

    def check(self, source: str) -> None:
        if not self.enabled:
            return
        check_range(source, {"pseudo_labels.steps": self.steps, "pseudo_labels.batch": self.batch,
                             "pseudo_labels.channels": self.channels, "pseudo_labels.hidden": self.hidden}, low=1)
        check_range(source, {"pseudo_labels.lr": self.lr}, low=0, above=True)
        check_range(source, {"pseudo_labels.recorded_share": self.recorded_share}, low=0, high=1)
        check_range(source, {"pseudo_labels.refine_lr": self.refine_lr}, low=0)


@dataclass
class RoundsConfig:
    """The ``rounds`` section of a training config: on-policy rounds (:mod:`embodied.rounds`)."""

    rounds: int = 0          # on-policy rounds after the base training (0: none)
    episodes: int = 40       # real MPC episodes recorded per round
    steps: int = 1000        # optimizer steps added per round
    seq_len: int = 24        # training window of the rounds (frames)
    planner: str = "cem"     # the planner that records the episodes (task defaults for its settings)
    seed: int = 100000       # reset seed of round 1's first episode; round r starts at seed + (r-1) * episodes

    def check(self, source: str) -> None:
        for key in ("episodes", "steps"):
            if getattr(self, key) < 1:
                raise UserError(f"rounds.{key} = {getattr(self, key)} in {source} must be at least 1")
        if self.rounds < 0:
            raise UserError(f"rounds.rounds = {self.rounds} in {source} must be 0 or more")
        if self.seq_len < 2:
            raise UserError(f"rounds.seq_len = {self.seq_len} in {source} must be at least 2")
        if self.seed < 0:
            raise UserError(f"rounds.seed = {self.seed} in {source} must be 0 or more")


@dataclass
class Config:
    task: str                          # reach | push | occlusion | a Gymnasium MuJoCo id
    data: DataConfig
    out: str                           # run folder: checkpoints, metrics.json, videos, tensorboard
    model: dict                        # free dict for build_model; needs `arch`
    train: TrainConfig
    plugins: list[str] = field(default_factory=list)  # modules imported first (they may register models)
    rounds: RoundsConfig = field(default_factory=RoundsConfig)
    latent_actions: LatentActionsConfig = field(default_factory=LatentActionsConfig)
    pseudo_labels: PseudoLabelsConfig = field(default_factory=PseudoLabelsConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self, source: str) -> None:
        if "arch" not in self.model:
            raise UserError(f"config key 'model.arch' is missing from {source}; set it, e.g. model.arch=recurrent")
        _check_values(self, source)
        self.rounds.check(source)
        self.latent_actions.check(source, self.train.steps)
        self.pseudo_labels.check(source)
        recipes = [name for name, on in (("latent_actions.enabled", self.latent_actions.enabled),
                                         ("train.pretrain_steps", self.train.pretrain_steps),
                                         ("pseudo_labels.enabled", self.pseudo_labels.enabled)) if on]
        if len(recipes) > 1:
            raise UserError(f"{' and '.join(recipes)} in {source} are recipes for action-free data; pick one "
                            "(latent_actions.enabled=false, train.pretrain_steps=0 or pseudo_labels.enabled=false)")
        if self.rounds.rounds and recipes:
            raise UserError(f"on-policy rounds in {source} fine-tune on labelled episodes only; run them without "
                            "latent_actions.enabled, train.pretrain_steps or pseudo_labels.enabled")


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        item = typing.get_args(tp)[0]
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(item, _type_name(item))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", dict: "a mapping"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(value, tp, key: str, source: str):
    """Check ``value`` against the annotation ``tp``; returns the (possibly converted) value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key, source)
            except UserError:
                pass
    elif tp is type(None):
        if value is None:
            return None
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(v, item, key, source) for v in value]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number):
            return float(number)
        if isinstance(number, float):
            raise UserError(f"{key} = {value!r} in {source} must be a finite number; "
                            f"fix it there or override it with {key}=VALUE")
    elif tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
    elif tp is dict:
        if isinstance(value, dict):
            return value
    raise UserError(f"{key} = {value!r} in {source} must be {_type_name(tp)}; "
                    f"fix it there or override it with {key}=VALUE")


def _build(cls, raw: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            full = f"{prefix}{key}"
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else \
                f"valid keys here: {', '.join(prefix + k for k in fields)}"
            raise UserError(f"unknown config key {full!r} in {source}; {hint}")
    kwargs = {}
    for name, f in fields.items():
        full = f"{prefix}{name}"
        if name not in raw:
            if f.default is REQUIRED and f.default_factory is REQUIRED:
                raise UserError(f"config key {full!r} is missing from {source}; add it to the YAML file "
                                f"or pass {full}=VALUE on the command line")
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(raw[name], dict):
                keys = ", ".join(f"{full}.{k}" for k in typing.get_type_hints(tp))
                raise UserError(f"{full} in {source} must be a mapping of {keys}, got {raw[name]!r}")
            kwargs[name] = _build(tp, raw[name], f"{full}.", source)
        else:
            kwargs[name] = _coerce(raw[name], tp, full, source)
    return cls(**kwargs)


def _merge(base: dict, new: dict) -> dict:
    """Deep merge of nested dicts; values of ``new`` win."""
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such config file; pick one of configs/*.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise UserError(f"{path}: not valid YAML{at} ({getattr(err, 'problem', err)}); fix the file") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a YAML mapping of keys (task, data, out, model, train), "
                        f"got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[list[str], object]:
    """``'train.lr=1e-3'`` -> (['train', 'lr'], value parsed by yaml.safe_load)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {text!r} is not key=value; write e.g. train.steps=100 or data=data/reach")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value  # e.g. an unquoted path with a colon: keep the text
    return key.split("."), parsed


def apply_override(raw: dict, text: str) -> dict:
    path, value = parse_override(text)
    if path == ["data"] and not isinstance(value, dict):
        path = ["data", "path"]  # data=DIR shorthand
    return _set(raw, path, value, text)


def _set(raw: dict, path: list[str], value, text: str) -> dict:
    node = raw
    for i, part in enumerate(path[:-1]):
        if not isinstance(node.get(part), dict):
            if part in node:
                raise UserError(f"override {text!r}: {'.'.join(path[:i + 1])} is not a section")
            node[part] = {}
        node = node[part]
    node[path[-1]] = value
    return raw


def add_config_arguments(parser, required: bool = False) -> None:
    """``--config FILE`` (repeatable, merged in order) and positional ``key=value`` overrides.

    Options and overrides may come in any order (``... out=runs/x --resume seed=3``).
    """
    parser.add_argument("--config", action="append", default=[], required=required, metavar="FILE",
                        help="YAML config file; several are merged in order (later files win)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides after the files and flags, e.g. planner.horizon=24")
    plain = parser.parse_known_args

    def intermixed(args=None, namespace=None):
        parser.parse_known_args = plain  # parse_known_intermixed_args calls it internally
        try:
            return parser.parse_known_intermixed_args(args, namespace)
        finally:
            parser.parse_known_args = intermixed

    parser.parse_known_args = intermixed


def load_config(paths, overrides=(), cls=None, values: dict | None = None):
    """Merge the YAML files in ``paths`` in order, apply ``values`` then ``key=value`` overrides, build ``cls``.

    ``cls`` is the command's config dataclass (default: the training
    :class:`Config`, which needs at least one file). ``values`` maps dotted
    keys to Python values (a command's flags; None values are skipped). A
    ``check(source)`` method of the dataclass, if it has one, validates values
    across fields.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths or ())
    if cls is None:
        cls = Config
        if not paths:
            raise UserError("no config file given; pass --config configs/<task>_<arch>.yaml")
    raw: dict = {}
    for p in paths:
        file_raw = read_yaml(p)
        if isinstance(file_raw.get("data"), (str, Path)):
            file_raw["data"] = {"path": file_raw["data"]}
        raw = _merge(raw, file_raw)
    flags = {k: v for k, v in (values or {}).items() if v is not None}
    for key, value in flags.items():
        _set(raw, key.split("."), value, key)
    for text in overrides:
        raw = apply_override(raw, text)
    parts = [str(p) for p in paths] + (["the command line"] if overrides or flags else [])
    source = " + ".join(parts) if parts else "the defaults"
    cfg = _build(cls, raw, "", source)
    if hasattr(cfg, "check"):
        cfg.check(source)
    return cfg


def check_range(source: str, values: dict, low=None, high=None, above: bool = False, below: bool = False) -> None:
    """A one-line UserError for the first of ``values`` ({dotted key: number or None}) out of range.

    ``low`` / ``high`` are inclusive bounds unless ``above`` / ``below`` make
    them strict; None values (an unset optional key) pass.
    """
    rules = []
    if low is not None:
        rules.append(f"more than {low}" if above else ("0 or more" if low == 0 else f"at least {low}"))
    if high is not None:
        rules.append(f"less than {high}" if below else f"at most {high}")
    for key, value in values.items():
        if value is None:
            continue
        if (low is not None and (value <= low if above else value < low)) or \
                (high is not None and (value >= high if below else value > high)):
            raise UserError(f"{key} = {value} in {source} must be {' and '.join(rules)}; "
                            f"fix it there or override it with {key}=VALUE")


def _check_values(cfg: Config, source: str) -> None:
    t = cfg.train
    check_range(source, {"train.steps": t.steps, "train.batch": t.batch, "train.eval_every": t.eval_every,
                         "train.ckpt_every": t.ckpt_every, "train.log_every": t.log_every,
                         "train.eval_windows": t.eval_windows, "data.max_episodes": cfg.data.max_episodes}, low=1)
    check_range(source, {"train.seq_len": t.seq_len}, low=2)  # a context frame and a frame to predict
    check_range(source, {"train.threads": t.threads, "train.seed": t.seed, "train.warmup": t.warmup,
                         "train.videos": t.videos, "train.weight_decay": t.weight_decay,
                         "train.grad_clip": t.grad_clip}, low=0)
    check_range(source, {"train.lr": t.lr}, low=0, above=True)
    check_range(source, {"train.min_lr_ratio": t.min_lr_ratio}, low=0, high=1)
    if any(h < 1 for h in t.eval_horizons):
        raise UserError(f"train.eval_horizons = {t.eval_horizons} in {source} must be positive step counts")
    if t.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"train.device = {t.device!r} in {source} must be auto, cpu or cuda")
    if not 0.0 < cfg.data.heldout_fraction < 1.0:
        raise UserError(f"data.heldout_fraction = {cfg.data.heldout_fraction} in {source} must be between 0 and 1")
    check_range(source, {"data.labelled_fraction": cfg.data.labelled_fraction}, low=0, high=1, above=True)
    check_range(source, {"data.label_seed": cfg.data.label_seed}, low=0)
    check_range(source, {"train.pretrain_steps": t.pretrain_steps}, low=0, high=t.steps, below=True)
