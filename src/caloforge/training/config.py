"""The training configuration: one YAML file with three sections, checked strictly.

    model:       {family: gan3d, ...}      the model family and its config (models/)
    transform:   {name: power, power: 0.85, scale: 100.0}   the cell preprocessing
    training:    batch size, epochs, optimizer, loss weights, checkpoints ...  (TrainConfig)

`caloforge train --config FILE key=value ...` overrides any entry by its dotted path, e.g.
`training.batch_size=64`, `training.loss.energy=0.2`, `model.latent_size=100`; values are read
as YAML (`true`, `1e-3`, `[0.9, 0.1]`, `null`).

Each setting is declared once, on its field (type, default, meaning, check), and read and
checked by `caloforge.config` as the model and validation configs are: an unknown key or a
bad value raises a `TrainConfigError` naming its dotted path, e.g.
`training.batch_size must be > 0, got -3`.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from caloforge.config import (
    ConfigError,
    Root,
    at_least,
    check_fields,
    coerce,
    one_of,
    positive,
    read_yaml,
    setting,
)
from caloforge.errors import yaml_problem


class TrainConfigError(ConfigError):
    """A training config with an unknown key or a bad value."""


TRAINING = Root("training", error=TrainConfigError)
# One part of an override's dotted key.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _seed(value: int) -> str | None:
    # torch.Generator.manual_seed takes a signed 64-bit integer, numpy no negative one.
    return None if 0 <= value < 2**63 else "must be an integer from 0 to 2**63 - 1"


def _loss_weight(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0"


def _label_flip(value: float) -> str | None:
    return None if 0 <= value < 0.5 else "must be in [0, 0.5)"


def _soft_labels(value: tuple[float, float] | None) -> str | None:
    return None if value is None or all(0 <= v <= 1 for v in value) else "must be in [0, 1]"


def _fractions(value: tuple[float, float, float]) -> str | None:
    if abs(sum(value) - 1) <= 1e-6 and min(value) >= 0:
        return None
    return "must be three non-negative numbers summing to 1"


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = setting(
        "rmsprop",
        "rmsprop (3DGAN), adam (Conv2D GAN, WGAN-GP) or sgd",
        check=one_of("rmsprop", "adam", "sgd"),
    )
    lr_generator: float = setting(1e-3, "learning rate of the generator", check=positive)
    lr_discriminator: float = setting(
        1e-3, "learning rate of the discriminator or critic", check=positive
    )
    betas: tuple[float, float] = setting((0.5, 0.999), "adam only")
    momentum: float = setting(0.0, "sgd only")
    schedule: str = setting(
        "constant",
        "constant | exponential (gamma per epoch) | cosine (to 0)",
        check=one_of("constant", "exponential", "cosine"),
    )
    gamma: float = setting(1.0, "exponential decay per epoch", check=positive)
    warmup_steps: int = setting(
        0,
        "the rates rise linearly from 1/warmup_steps of the base over these",
        check=at_least(0, words="must be 0 or more"),
    )

    def __post_init__(self) -> None:
        check_fields(self, TRAINING.child("optimizer"))


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (0 switches a term off) and the label treatment."""

    adversarial: float = setting(
        2.0, "BCE real/fake (GAN) or the Wasserstein term (WGAN)", check=_loss_weight
    )
    energy: float = setting(
        0.1, "MAPE (in percent, as Keras) of the regressed primary energy", check=_loss_weight
    )
    ecal: float = setting(0.1, "MAPE (percent) of the total deposited energy", check=_loss_weight)
    angle: float = setting(0.0, "MAE of the measured angle (gan3d-angle)", check=_loss_weight)
    bins: float = setting(
        0.0, "MAPE of the cell-intensity spectrum (bin counts; gan3d-angle)", check=_loss_weight
    )
    label_flip: float = setting(0.05, "fraction of discriminator labels flipped", check=_label_flip)
    soft_labels: tuple[float, float] | None = setting(
        None, "(real, fake) targets, e.g. (0.9, 0.1)", check=_soft_labels
    )
    gradient_penalty: float = setting(10.0, "WGAN-GP lambda", check=_loss_weight)
    regressor: float = setting(
        1.0, "WGAN: weight of the pretrained regressor's error for G", check=_loss_weight
    )

    def __post_init__(self) -> None:
        check_fields(self, TRAINING.child("loss"))


@dataclass(frozen=True)
class TrainConfig:
    """How to train (the `training:` section). Steps count discriminator/critic updates."""

    batch_size: int = setting(
        128, "global batch: split over the ranks under torchrun", check=positive
    )
    epochs: int = setting(60, "passes over the training set", check=positive)
    max_steps: int | None = setting(
        None, "stop after this many steps (whatever the epoch)", check=positive
    )
    generator_steps: int = setting(
        2, "generator updates per discriminator update (3DGAN: 2)", check=positive
    )
    critic_steps: int = setting(5, "WGAN: critic updates per generator update", check=positive)
    regressor_epochs: int = setting(
        5, "WGAN: epochs of regressor pretraining before the GAN", check=at_least(0)
    )
    optimizer: OptimizerConfig = field(
        default_factory=OptimizerConfig, metadata={"help": "the optimizer and its schedule"}
    )
    loss: LossConfig = field(default_factory=LossConfig, metadata={"help": "the loss weights"})
    seed: int = setting(0, "weights, noise, labels, data order", check=_seed)
    split_seed: int = setting(
        0, "train/validation/test split (kept apart from `seed`)", check=_seed
    )
    fractions: tuple[float, float, float] = setting(
        (0.8, 0.1, 0.1), "train/validation/test fractions", check=_fractions
    )
    num_workers: int = setting(0, "DataLoader worker processes per rank", check=at_least(0))
    window: int = setting(256, "showers read per HDF5 access", check=positive)
    checkpoint_every: int = setting(
        500, "steps; a checkpoint is also written at each epoch's end", check=positive
    )
    keep_checkpoints: int = setting(3, "checkpoints kept", check=positive)
    keep_every: int = setting(
        0,
        "steps; the checkpoints of its multiples are never pruned (a learning curve's); 0: none",
        check=at_least(0, words="must be 0 or more"),
    )
    log_every: int = setting(
        20, "steps between progress-bar and TensorBoard updates", check=positive
    )
    check_showers: int = setting(
        256, "validation showers of the per-epoch physics check", check=positive
    )
    check_every: int = setting(
        0, "steps between physics checks (0: at each epoch's end)", check=at_least(0)
    )
    collapse_patience: int = setting(
        3, "consecutive checks with only empty showers before stopping", check=positive
    )
    shape_patience: int = setting(
        0,
        "flow-match: checks without a smaller layer-width error before stage 2 goes back to "
        "its best check's weights and stops training (0: never)",
        check=at_least(0, words="must be 0 or more"),
    )
    device: str = setting("auto", "auto | cpu | cuda | cuda:N")
    precision: str = setting(
        "auto",
        "auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16",
        check=one_of("auto", "fp32", "bf16"),
    )
    sync_batchnorm: bool = setting(True, "under torchrun: batch statistics over all ranks")

    def __post_init__(self) -> None:
        check_fields(self, TRAINING)

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


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides to a raw config mapping (a deep copy is changed)."""
    import copy

    import yaml  # lazy: `caloforge --help` lists the presets without it

    out = copy.deepcopy(config)
    for item in overrides:
        # Messages quote the override as repr does: a line break in it stays on one line.
        if "=" not in item:
            raise TrainConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        if keys[0] not in ("model", "transform", "training") or len(keys) < 2:
            raise TrainConfigError(
                f"override {item!r}: the key must start with model., transform. or training."
            )
        if not all(_NAME.fullmatch(key) for key in keys):
            raise TrainConfigError(
                f"override {item!r}: the key {dotted.strip()!r} is not a dotted name "
                "(letters, digits and _ between the dots)"
            )
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TrainConfigError(
                f"override {item!r}: value is not valid YAML ({yaml_problem(exc)})"
            ) from None
        value = _numbers(value)
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise TrainConfigError(f"override {item!r}: '{key}' is not a section")
        node[keys[-1]] = value
    return out


# A number as YAML 1.2 writes it. PyYAML reads YAML 1.1, where 1e-3 (no dot) is a string.
_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")


def _numbers(value: Any) -> Any:
    """`value` with strings such as '1e-3' (a number to anyone but YAML 1.1) as floats."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


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

    if not isinstance(model["family"], str) or model["family"] not in MODEL_FAMILIES:
        raise TrainConfigError(
            f"{source}: unknown model family '{model['family']}'; known families: "
            f"{', '.join(MODEL_FAMILIES)}"
        )
    MODEL_FAMILIES[model["family"]].from_dict(model)
    transform = raw.get("transform") or {"name": "identity"}
    if not isinstance(transform, dict) or "name" not in transform:
        raise TrainConfigError(f"{source}: section 'transform' needs a 'name' key")
    training = coerce(TrainConfig, raw.get("training") or {}, TRAINING)
    return RunConfig(model=dict(model), transform=dict(transform), training=training)


PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"


def preset_names() -> list[str]:
    """The shipped training presets (one per model family)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(
    path: str | os.PathLike[str], overrides: list[str] | None = None, option: str = ""
) -> RunConfig:
    """Read a YAML config file (or a shipped preset by name, e.g. 'gan3d'), apply overrides,
    check everything. `option` (e.g. '--config') starts the messages about the file."""
    prefix = f"{option} " if option else ""
    p = Path(path)
    if not p.is_file() and str(path) in preset_names():
        p = PRESET_DIR / f"{path}.yaml"
    if not p.exists():
        raise TrainConfigError(
            f"{prefix}{p}: config file not found (presets: {', '.join(preset_names())})"
        )
    # the shared reader: a folder named as one, a key given twice refused, one-line errors
    raw = read_yaml(p, "config file", lambda message: TrainConfigError(prefix + message))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TrainConfigError(
            f"{prefix}{p}: expected a mapping of sections (model, training, ...) at the top "
            f"level, found a {type(raw).__name__}"
        )
    return parse_config(apply_overrides(raw, overrides or []), source=str(p))


def resumed_config(
    saved: dict[str, Any], overrides: list[str] | None = None, source: str = "run"
) -> RunConfig:
    """A run's saved configuration (`checkpoint.saved_run`) with `overrides` applied."""
    return parse_config(apply_overrides(saved, overrides or []), source=source)


def with_training(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy of `config` with some training entries changed (for tests and tools)."""
    return replace(config, training=replace(config.training, **changes))
