"""What the model families share: typed configs, the family registry, the bundle of modules.

A family is a set of `nn.Module`s trained together (a generator, a discriminator or critic, and
for `wgan-lhcb` a condition regressor), described completely by one frozen config dataclass:
the config is the constructor, so `config.json` alone rebuilds the modules, and weights load
into them. Configs are read and checked by `caloforge.config`, as the training and validation
configs are (one rule for values: 100.0 is an integer, 100.5 is not), and name the offending
key in a `ModelConfigError` (a `ConfigError`): `model config 'gan3d': key 'latent_size' must
be a positive integer, got 0`.

Layouts: every module takes and returns showers in caloforge's layout `(N, *geometry.shape)`,
i.e. `(N, x, y, layer)` for per-layer geometries and `(N, x, y)` for depth-summed ones; the
PyTorch layouts `(N, C, D, H, W)` / `(N, C, H, W)` stay inside the modules. Conditions are a
mapping name -> tensor in the geometry's units (energy GeV `(N,)`, theta rad `(N,)`, momentum
GeV `(N, 3)`, point mm `(N, 2)`); each model rescales them itself (energy / 100 GeV as the seed
papers did).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from caloforge.config import ConfigError, Root, check_fields, coerce
from caloforge.errors import CaloforgeError, ConditionError
from caloforge.geometry import Geometry, load_geometry

__all__ = [
    "MODEL_FAMILIES",
    "Dropout",
    "GanDiscriminatorOutput",
    "ModelBundle",
    "ModelConfig",
    "ModelConfigError",
    "ShowerGenerator",
    "build_model",
    "get_condition",
    "init_weights",
    "parameter_counts",
    "register",
    "same_pad2d",
    "same_pad3d",
]


class ModelConfigError(ConfigError):
    """A model config with an unknown key, a value of the wrong type or out of range."""


# --- configs ------------------------------------------------------------------------------
C = TypeVar("C", bound="ModelConfig")


class ModelConfig:
    """Base of the families' config dataclasses (subclasses are `@dataclass(frozen=True)`).

    Subclasses declare their fields with commented defaults, the image shape their
    architecture produces (`shape`), the conditions their geometry must offer
    (`required_conditions`) and how they train (`training_step`), override `_check_values`
    for ranges and `build_modules` to construct their modules by role.
    """

    family: ClassVar[str] = ""  # set by `register`
    shape: ClassVar[tuple[int, ...]] = ()  # the shower shape the architecture produces
    required_conditions: ClassVar[tuple[str, ...]] = ("energy",)
    # How the family trains: the step `caloforge.training.steps.STEPS` names so ("gan": the
    # adversarial GANs with physics heads; "wgan-gp": WGAN-GP with a condition regressor;
    # "flow-matching": the flow-matching losses of a generator alone).
    training_step: ClassVar[Literal["gan", "wgan-gp", "flow-matching"]] = "gan"
    geometry: str  # a dataclass field in every subclass

    def __post_init__(self) -> None:
        check_fields(self, self.config_root())  # the declared types: lists become tuples
        self._check_values()
        self._check_geometry()

    @classmethod
    def config_root(cls) -> Root:
        """How errors name this config's keys: `model config 'gan3d': key 'latent_size'` (a
        model config is also read alone, from a checkpoint's `config.json`)."""
        return Root(label=f"model config '{cls.family}'", error=ModelConfigError)

    # -- (de)serialisation --
    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None = None) -> C:
        """Build from a dict (a `config.json`); unknown keys are an error, missing ones default.

        A `family` key, as written by `to_dict`, must name this config's family.
        """
        values = dict(values or {})
        family = values.pop("family", cls.family)
        if family != cls.family:
            raise ModelConfigError(
                f"model config: key 'family' is '{family}' but a '{cls.family}' config was "
                "requested"
            )
        return coerce(cls, values, cls.config_root())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the family name; `from_dict` of it gives an equal config."""
        out: dict[str, Any] = {"family": self.family}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # -- validation --
    def _fail(self, key: str, expected: str, found: object) -> ConfigError:
        return self.config_root().fail(key, f"must be {expected}, got {found!r}")

    def _check_values(self) -> None:
        """Range checks of the subclass; raise `self._fail(key, expected, found)`."""

    def _require(self, ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise self._fail(key, expected, getattr(self, key))

    def _check_geometry(self) -> None:
        geometry = self.resolved_geometry
        if tuple(geometry.shape) != self.shape:
            raise ModelConfigError(
                f"model config '{self.family}': key 'geometry' names '{geometry.name}' with "
                f"shower shape {tuple(geometry.shape)}; this architecture produces {self.shape}"
            )
        missing = [c for c in self.required_conditions if not geometry.has_condition(c)]
        if missing:
            raise ModelConfigError(
                f"model config '{self.family}': key 'geometry' names '{geometry.name}', which "
                f"lacks the condition(s) {missing} this model is conditioned on"
            )

    @cached_property
    def resolved_geometry(self) -> Geometry:
        """The `Geometry` the `geometry` key names (a preset or a YAML file)."""
        try:
            return load_geometry(self.geometry)
        except CaloforgeError as exc:
            raise ModelConfigError(f"model config '{self.family}': key 'geometry': {exc}") from None

    def build_modules(self) -> dict[str, nn.Module]:
        """The family's modules by role: generator, discriminator or critic, regressor."""
        raise NotImplementedError


# --- registry -----------------------------------------------------------------------------
MODEL_FAMILIES: dict[str, type[ModelConfig]] = {}


def register(name: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: register a config dataclass as the family `name`."""

    def decorator(cls: type[C]) -> type[C]:
        if name in MODEL_FAMILIES:
            raise ValueError(f"model family '{name}' is already registered")
        cls.family = name
        MODEL_FAMILIES[name] = cls
        return cls

    return decorator


@dataclass
class ModelBundle:
    """A family's modules by role, with the config that rebuilds them.

    Roles: "generator" (a `ShowerGenerator`), "discriminator" (3DGAN, Conv2D) or "critic"
    (WGAN-GP), and "regressor" (wgan-lhcb only).
    """

    family: str
    config: ModelConfig
    modules: dict[str, nn.Module]

    @property
    def generator(self) -> ShowerGenerator:
        generator = self.modules["generator"]
        assert isinstance(generator, ShowerGenerator)
        return generator

    @property
    def discriminator(self) -> nn.Module:
        """The discriminator, or the critic of a WGAN family."""
        if "discriminator" in self.modules:
            return self.modules["discriminator"]
        return self.modules["critic"]

    @property
    def adversary(self) -> nn.Module | None:
        """The discriminator or critic; None for a family trained without one (flow-match)."""
        return self.modules.get("discriminator", self.modules.get("critic"))

    @property
    def regressor(self) -> nn.Module | None:
        return self.modules.get("regressor")

    def to(self, device: torch.device | str) -> ModelBundle:
        for module in self.modules.values():
            module.to(device)
        return self

    def config_dict(self) -> dict[str, Any]:
        """What `config.json` holds: `build_model(d["family"], d)` rebuilds this bundle."""
        return self.config.to_dict()


def _family(name: str) -> type[ModelConfig]:
    try:
        return MODEL_FAMILIES[name]
    except KeyError:
        raise ModelConfigError(
            f"unknown model family '{name}'; known families: {', '.join(MODEL_FAMILIES)}"
        ) from None


def build_model(
    family: str,
    config: Mapping[str, Any] | ModelConfig | None = None,
    *,
    seed: int = 0,
) -> ModelBundle:
    """Build the modules of `family` from a config dict (or config object; None: defaults).

    Weights are initialised as the seed studies' Keras code did (He-uniform convolutions,
    Glorot-uniform dense layers, zero biases) from `seed`; the global RNG is left untouched.
    """
    cls = _family(family)
    if isinstance(config, ModelConfig):
        if not isinstance(config, cls):
            raise ModelConfigError(
                f"build_model('{family}') got a config of family '{config.family}'"
            )
        cfg = config
    else:
        cfg = cls.from_dict(config)
    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG
        modules = cfg.build_modules()
    rng = torch.Generator().manual_seed(seed)
    for module in modules.values():
        init_weights(module, rng)
    return ModelBundle(family=family, config=cfg, modules=modules)


def parameter_counts(bundle: ModelBundle) -> dict[str, int]:
    """Number of trainable parameters per role (BatchNorm running statistics excluded)."""
    return {
        role: sum(p.numel() for p in module.parameters() if p.requires_grad)
        for role, module in bundle.modules.items()
    }


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """Keras-like initialisation: He-uniform convolutions, Glorot-uniform dense, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu", generator=generator)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, generator=generator)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# --- modules ------------------------------------------------------------------------------
class ShowerGenerator(nn.Module):
    """A conditional shower generator: `generator(noise, conditions) -> showers`.

    showers: `(N, *geometry.shape)`, non-negative, in the family's preprocessed cell units.
    `sample_noise(n, generator)` draws the noise from an explicit `torch.Generator`.
    `compile_seconds`: about how long exporting and compiling the generator for a faster
    backend takes (2 cores), what `--backend auto` expects before it has timed it here.
    """

    compile_seconds: float = 15.0

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def noise_distribution(self) -> Literal["normal", "uniform"]:
        """N(0, 1) or U[0, 1) per component."""
        return "normal"

    @property
    def noise_size(self) -> int:
        raise NotImplementedError

    @property
    def condition_names(self) -> tuple[str, ...]:
        """The conditions `forward` reads from its mapping."""
        return self.config.required_conditions

    @property
    def shower_shape(self) -> tuple[int, ...]:
        return self.config.shape

    def sample_noise(self, n: int, generator: torch.Generator) -> Tensor:
        """`(n, noise_size)` noise drawn from `generator`, on this module's device and dtype."""
        size = (int(n), self.noise_size)
        if self.noise_distribution == "uniform":
            noise = torch.rand(size, generator=generator, device=generator.device)
        else:
            noise = torch.randn(size, generator=generator, device=generator.device)
        reference = next(self.parameters())
        return noise.to(device=reference.device, dtype=reference.dtype)

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def frozen(self, device_type: str | None = None) -> ShowerGenerator:
        """A copy for inference only: eval mode, no gradients, and the exact rewrites that
        only fixed weights allow (families override it; gan3d folds its first two linear
        layers into one matrix). Same function, same device and dtype; later changes to
        this module's weights do not reach the copy. What the compiled, bf16 and int8
        backends and the ONNX export run.

        device_type: the kind of device the rewrites are chosen for ("cpu", "cuda"; default:
        where the weights are). Some pay on one kind only: on a GPU, conv2d-g1's branches
        run as ungrouped stacks and gan3d-angle's depth axis is folded into the channels.
        """
        return copy.deepcopy(self).eval().requires_grad_(False)

    def _frozen_for(self, device_type: str | None) -> str:
        """The device kind `frozen(device_type)` chooses its rewrites for."""
        return device_type or next(self.parameters()).device.type


class GanDiscriminatorOutput(NamedTuple):
    """Heads of the 3DGAN and Conv2D discriminators; each is `(N,)`."""

    logit: Tensor  # real/fake logit: sigmoid(logit) is the probability that the shower is real
    energy: Tensor  # regressed primary energy in units of `energy_scale` (Ep / 100 GeV)
    ecal: Tensor  # sum of all cells of the input as given (preprocessed units)


def get_condition(
    conditions: Mapping[str, Tensor], name: str, n: int, size: int, like: Tensor
) -> Tensor:
    """Condition `name` as an `(n, size)` tensor with the dtype and device of `like`."""
    if name not in conditions:
        raise ConditionError(
            f"the model needs condition '{name}'; got conditions {sorted(conditions)}"
        )
    value = torch.as_tensor(conditions[name], dtype=like.dtype, device=like.device)
    if value.numel() != n * size:
        expected = f"({n},)" if size == 1 else f"({n}, {size})"
        raise ConditionError(
            f"condition '{name}' has shape {tuple(value.shape)}; expected {expected}"
        )
    return value.reshape(-1, size)  # -1: a traced graph keeps its batch size free


def _same(k: int) -> tuple[int, int]:
    """Zero padding before and after for Keras/TF 'same' (stride 1): even kernels pad one more
    after than before, as TF does."""
    return (k - 1) // 2, k // 2


def same_pad2d(kernel: int) -> nn.ConstantPad2d:
    """Zero padding that makes a stride-1 `kernel` x `kernel` Conv2d keep the size ('same')."""
    before, after = _same(kernel)
    return nn.ConstantPad2d((before, after, before, after), 0.0)


def same_pad3d(kernel: tuple[int, int, int]) -> nn.ConstantPad3d:
    """Zero padding that makes a stride-1 Conv3d with `kernel` (D, H, W) keep the size."""
    (d0, d1), (h0, h1), (w0, w1) = (_same(k) for k in kernel)
    return nn.ConstantPad3d((w0, w1, h0, h1, d0, d1), 0.0)


class Dropout(nn.Dropout):
    """`nn.Dropout` whose CPU masks cost a tenth of ATen's.

    On the CPU, `functional.dropout` draws one Bernoulli number per element from the serial
    Mersenne twister; in a 3DGAN training step that is about a sixth of the time. Here each
    64-bit draw gives four 16-bit uniforms, and an element is kept when its uniform is below
    round((1 - p) * 2^16): the rate is p to within 2^-17, the kept values are scaled by
    1 / (1 - p) as usual, and the mask is drawn in logical (N, C, ...) order whatever the
    input's memory layout, so a seeded run does not depend on it. On other devices, in eval
    mode and for p = 0 it is `functional.dropout`. No parameters: state dicts are
    `nn.Dropout`'s.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and 0 < self.p < 1 and x.device.type == "cpu"):
            return super().forward(x)
        keep = keep_mask(x.shape, 1 - self.p)
        if not x.is_contiguous():  # lay the mask out as x is (channels-last, say): faster
            keep = torch.empty_like(x, dtype=torch.bool).copy_(keep)
        return torch.where(keep, x, 0).mul_(1 / (1 - self.p))


def keep_mask(shape: torch.Size | tuple[int, ...], keep: float) -> Tensor:
    """A boolean tensor of `shape`, each element True with probability `keep` (to within
    2^-17), from the default CPU generator: four 16-bit uniforms per 64-bit draw."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits
    uniforms = words.view(torch.int16)[:n].view(shape)  # uniform on [-2^15, 2^15)
    return uniforms < round(keep * 65536) - 32768
