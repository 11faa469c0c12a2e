"""The training configuration: one YAML file with three sections, checked strictly.

    model:       {family: gan3d, ...}      the model family and its config (models/)
    transform:   {name: power, power: 0.85, scale: 100.0}   the cell preprocessing
    training:    batch size, epochs, optimizer, loss weights, checkpoints ...  (TrainConfig)

`caloforge train --config FILE key=value ...` overrides any entry by its dotted path, e.g.
`training.batch_size=64`, `training.loss.energy=0.2`, `model.latent_size=100`; values are read
as YAML (`true`, `1e-3`, `[0.9, 0.1]`, `null`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from caloforge.errors import CaloforgeError


class TrainConfigError(CaloforgeError):
    """A training config with an unknown key or a bad value."""


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "rmsprop"  # rmsprop (3DGAN), adam (Conv2D GAN, WGAN-GP) or sgd
    lr_generator: float = 1e-3
    lr_discriminator: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)  # adam only
    momentum: float = 0.0  # sgd only
    schedule: str = "constant"  # constant | exponential (gamma per epoch) | cosine (to 0)
    gamma: float = 1.0  # exponential decay per epoch
    warmup_steps: int = 0  # the rates rise linearly from 1/warmup_steps of the base over these

    def check(self) -> None:
        _one_of("optimizer.name", self.name, ("rmsprop", "adam", "sgd"))
        _one_of("optimizer.schedule", self.schedule, ("constant", "exponential", "cosine"))
        _positive("optimizer.lr_generator", self.lr_generator)
        _positive("optimizer.lr_discriminator", self.lr_discriminator)
        _positive("optimizer.gamma", self.gamma)
        if self.warmup_steps < 0:
            raise TrainConfigError(
                f"optimizer.warmup_steps must be 0 or more, got {self.warmup_steps}"
            )


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (0 switches a term off) and the label treatment."""

    adversarial: float = 2.0  # BCE real/fake (GAN) or the Wasserstein term (WGAN)
    energy: float = 0.1  # MAPE (in percent, as Keras) of the regressed primary energy
    ecal: float = 0.1  # MAPE (percent) of the total deposited energy
    angle: float = 0.0  # MAE of the measured angle (gan3d-angle)
    bins: float = 0.0  # MAPE of the cell-intensity spectrum (bin counts; gan3d-angle)
    label_flip: float = 0.05  # fraction of discriminator labels flipped
    soft_labels: tuple[float, float] | None = None  # (real, fake) targets, e.g. (0.9, 0.1)
    gradient_penalty: float = 10.0  # WGAN-GP lambda
    regressor: float = 1.0  # WGAN: weight of the pretrained regressor's error for G

    def check(self) -> None:
        for name in (
            "adversarial",
            "energy",
            "ecal",
            "angle",
            "bins",
            "gradient_penalty",
            "regressor",
        ):
            if getattr(self, name) < 0:
                raise TrainConfigError(
                    f"training.loss.{name} must be >= 0, got {getattr(self, name)}"
                )
        if not 0 <= self.label_flip < 0.5:
            raise TrainConfigError(
                f"training.loss.label_flip must be in [0, 0.5), got {self.label_flip}"
            )
        if self.soft_labels is not None and not all(0 <= v <= 1 for v in self.soft_labels):
            raise TrainConfigError(
                f"training.loss.soft_labels must be in [0, 1], got {self.soft_labels}"
            )


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the `training:` section). Steps count discriminator/critic updates."""

    batch_size: int = 128  # global batch: split over the ranks under torchrun
    epochs: int = 60
    max_steps: int | None = None  # stop after this many steps (whatever the epoch)
    generator_steps: int = 2  # generator updates per discriminator update (3DGAN: 2)
    critic_steps: int = 5  # WGAN: critic updates per generator update
    regressor_epochs: int = 5  # WGAN: epochs of regressor pretraining before the GAN
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0  # weights, noise, labels, data order
    split_seed: int = 0  # train/validation/test split (kept apart from `seed`)
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    num_workers: int = 0  # DataLoader worker processes per rank
    window: int = 256  # showers read per HDF5 access
    checkpoint_every: int = 500  # steps; a checkpoint is also written at each epoch's end
    keep_checkpoints: int = 3
    log_every: int = 20  # steps between progress-bar and TensorBoard updates
    check_showers: int = 256  # validation showers of the per-epoch physics check
    check_every: int = 0  # steps between physics checks (0: at each epoch's end)
    collapse_patience: int = 3  # consecutive checks with only empty showers before stopping
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    sync_batchnorm: bool = True  # under torchrun: batch statistics over all ranks

    def check(self) -> None:
        for name in (
            "batch_size",
            "epochs",
            "generator_steps",
            "critic_steps",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
            "check_showers",
            "window",
            "collapse_patience",
        ):
            _positive(f"training.{name}", getattr(self, name))
        if self.max_steps is not None:
            _positive("training.max_steps", self.max_steps)
        for name in ("num_workers", "check_every", "regressor_epochs"):
            if getattr(self, name) < 0:
                raise TrainConfigError(f"training.{name} must be >= 0, got {getattr(self, name)}")
        _one_of("training.precision", self.precision, ("auto", "fp32", "bf16"))
        if (
            len(self.fractions) != 3
            or abs(sum(self.fractions) - 1) > 1e-6
            or min(self.fractions) < 0
        ):
            raise TrainConfigError(
                "training.fractions must be three non-negative numbers summing to 1, "
                f"got {self.fractions}"
            )
        self.optimizer.check()
        self.loss.check()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunConfig:
    """The whole config file: model, transform and training."""

    model: dict[str, Any]
    transform: dict[str, Any]
    training: TrainConfig

    @property
    def family(self) -> str:
        return str(self.model["family"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": dict(self.model),
            "transform": dict(self.transform),
            "training": self.training.to_dict(),
        }


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise TrainConfigError(f"{name} must be > 0, got {value}")


def _one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TrainConfigError(f"{name} must be one of {', '.join(choices)}, got '{value}'")


def _build(cls: type, values: Any, path: str) -> Any:
    """A config dataclass from a mapping, rejecting unknown keys (with a suggestion)."""
    if not isinstance(values, dict):
        raise TrainConfigError(f"{path or 'training'}: expected a mapping, got {values!r}")
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise TrainConfigError(
                f"unknown key '{path}.{key}'{hint}; known keys: {', '.join(known)}"
            )
        if key in ("optimizer", "loss"):
            sub = OptimizerConfig if key == "optimizer" else LossConfig
            kwargs[key] = _build(sub, value, f"{path}.{key}")
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise TrainConfigError(f"{path}: {exc}") from None
    _check_types(obj, path)
    return obj


def _check_types(obj: Any, path: str) -> None:
    defaults = type(obj)()
    for f in fields(obj):
        value, default = getattr(obj, f.name), getattr(defaults, f.name)
        if value is None or default is None or hasattr(default, "check"):
            continue
        if (
            isinstance(default, bool) != isinstance(value, bool)
            or (isinstance(default, (int, float)) and not isinstance(value, (int, float)))
            or (isinstance(default, str) and not isinstance(value, str))
        ):
            raise TrainConfigError(
                f"{path}.{f.name} must be of type {type(default).__name__}, got {value!r}"
            )
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            if not value.is_integer():
                raise TrainConfigError(f"{path}.{f.name} must be an integer, got {value}")
            object.__setattr__(obj, f.name, int(value))


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides to a raw config mapping (a deep copy is changed)."""
    import copy

    out = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise TrainConfigError(f"override '{item}' is not of the form section.key=value")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        if keys[0] not in ("model", "transform", "training") or len(keys) < 2:
            raise TrainConfigError(
                f"override '{item}': the key must start with model., transform. or training."
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"override '{item}': value is not valid YAML ({exc})") from None
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise TrainConfigError(f"override '{item}': '{key}' is not a section")
        node[keys[-1]] = value
    return out


def parse_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """A checked `RunConfig` from a raw mapping."""
    if not isinstance(raw, dict):
        raise TrainConfigError(f"{source}: expected a mapping with model, transform, training")
    unknown = set(raw) - {"model", "transform", "training"}
    if unknown:
        raise TrainConfigError(
            f"{source}: unknown section(s) {sorted(unknown)}; sections: model, transform, training"
        )
    model = raw.get("model")
    if not isinstance(model, dict) or "family" not in model:
        raise TrainConfigError(f"{source}: section 'model' needs a 'family' key")
    from caloforge.models import MODEL_FAMILIES  # the model's own keys and values, checked now

    if model["family"] not in MODEL_FAMILIES:
        raise TrainConfigError(
            f"{source}: unknown model family '{model['family']}'; known families: "
            f"{', '.join(MODEL_FAMILIES)}"
        )
    MODEL_FAMILIES[model["family"]].from_dict(model)
    transform = raw.get("transform") or {"name": "identity"}
    if not isinstance(transform, dict) or "name" not in transform:
        raise TrainConfigError(f"{source}: section 'transform' needs a 'name' key")
    training: TrainConfig = _build(TrainConfig, raw.get("training") or {}, "training")
    training.check()
    return RunConfig(model=dict(model), transform=dict(transform), training=training)


PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


def preset_names() -> list[str]:
    """The shipped training presets (one per model family)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file (or a shipped preset by name, e.g. 'gan3d'), apply overrides,
    check everything."""
    p = Path(path)
    if not p.is_file() and str(path) in preset_names():
        p = PRESET_DIR / f"{path}.yaml"
    if not p.is_file():
        raise TrainConfigError(f"{p}: config file not found (presets: {', '.join(preset_names())})")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{p}: not valid YAML ({exc})") from None
    return parse_config(apply_overrides(raw, overrides or []), source=str(p))


def with_training(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy of `config` with some training entries changed (for tests and tools)."""
    return replace(config, training=replace(config.training, **changes))
