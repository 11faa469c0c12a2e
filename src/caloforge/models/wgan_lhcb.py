"""WGAN-GP for the LHCb ECAL: 30x30 depth-summed images (Chekalina et al.).

Conditions: momentum (px, py, pz) GeV and entry point (x, y) mm, scaled inside the model to
`momentum / momentum_scale` and `point / point_scale` (`encode_conditions`).

Generator (noise 512 x N(0, 1) concatenated with the 5 scaled conditions):

    Dense(517 -> 4096) -> (256, 4x4) -> BN -> ReLU
    ConvT 128 4x4 stride 2 pad 1 -> BN -> ReLU                     -> 128 x 8x8
    ConvT 64 (3,4) stride 2 pad 1 -> BN -> ReLU                    -> 64 x 15x16 (as published)
    ConvT 32 4x4 stride 2 pad (0,1) -> BN -> ReLU                  -> 32 x 32x32
    Conv2D 1 3x3 pad 1 -> crop the central 30x30 -> ReLU           -> 30x30

Critic ("the reversed generator"), without BatchNorm, which would couple the samples of a
batch and break the per-sample gradient penalty:

    pad 30x30 -> 32x32; Conv2D 32 3x3 pad 1 -> LeakyReLU 0.2         -> 32 x 32x32
    Conv2D 64 4x4 stride 2 pad (0,1) -> LN -> LeakyReLU              -> 64 x 15x16
    Conv2D 128 (3,4) stride 2 pad 1 -> LN -> LeakyReLU               -> 128 x 8x8
    Conv2D 256 4x4 stride 2 pad 1 -> LN -> LeakyReLU                 -> 256 x 4x4
    flatten 4096 -> Dense 1: the Wasserstein score (unbounded, higher = more real)

Regressor: the critic's architecture with a Dense 5 head predicting the scaled conditions from
a shower; the paper pretrains it and uses it to condition the WGAN through the critic's
objective (`RegressorOutput`, `encode_conditions` give targets in the same units).

Spec choices (the paper gives only the layer sizes): kernel sizes, strides and paddings are
the ones that produce those sizes; the 32 -> 1 channel step is a 3x3 convolution before the
crop; the output activation is a ReLU, so that showers are non-negative (the Box-Cox
preprocessing must then map to non-negative values); "LN" is a layer norm over (C, H, W) per
shower with per-channel affine parameters (`GroupNorm(1, C)`), as the WGAN-GP authors
recommend; `critic_norm="none"` drops it. The regressor shares the critic's normalisation.

Parameters (no published figure): generator 2,778,561 (2,777,601 without BatchNorm), critic
661,121, regressor 677,509 (896 fewer each without the layer norm).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import Tensor, nn

from caloforge.models.base import ModelConfig, ShowerGenerator, get_condition, register

__all__ = [
    "ConditionRegressor",
    "CriticOutput",
    "RegressorOutput",
    "WganLhcbConfig",
    "WganLhcbCritic",
    "WganLhcbGenerator",
    "encode_conditions",
]


@register("wgan-lhcb")
@dataclass(frozen=True)
class WganLhcbConfig(ModelConfig):
    """WGAN-GP with a condition regressor for the LHCb 30x30 depth-summed images."""

    shape: ClassVar[tuple[int, ...]] = (30, 30)
    required_conditions: ClassVar[tuple[str, ...]] = ("momentum", "point")
    training_step: ClassVar[Literal["gan", "wgan-gp"]] = "wgan-gp"

    geometry: str = "lhcb-30"  # preset or YAML file; must have showers shaped (30, 30)
    noise_size: int = 512  # Gaussian noise components
    momentum_scale: float = 100.0  # GeV; the model sees (px, py, pz) / momentum_scale
    point_scale: float = 10.0  # mm; the model sees (x, y) / point_scale
    generator_norm: Literal["batch", "none"] = "batch"  # normalisation in the generator
    critic_norm: Literal["layer", "none"] = "layer"  # critic and regressor; never BatchNorm
    leaky_slope: float = 0.2  # critic and regressor LeakyReLU slope

    def _check_values(self) -> None:
        self._require(self.noise_size > 0, "noise_size", "a positive integer")
        self._require(self.momentum_scale > 0, "momentum_scale", "positive (GeV)")
        self._require(self.point_scale > 0, "point_scale", "positive (mm)")
        self._require(self.leaky_slope >= 0, "leaky_slope", "non-negative")

    def build_modules(self) -> dict[str, nn.Module]:
        return {
            "generator": WganLhcbGenerator(self),
            "critic": WganLhcbCritic(self),
            "regressor": ConditionRegressor(self),
        }


N_CONDITIONS = 5  # px, py, pz, x, y


def encode_conditions(
    conditions: Mapping[str, Tensor], config: WganLhcbConfig, like: Tensor
) -> Tensor:
    """`(N, 5)`: (px, py, pz) / momentum_scale, (x, y) / point_scale; dtype/device of `like`."""
    n = like.shape[0]
    momentum = get_condition(conditions, "momentum", n, 3, like) / config.momentum_scale
    point = get_condition(conditions, "point", n, 2, like) / config.point_scale
    return torch.cat([momentum, point], dim=1)


class WganLhcbGenerator(ShowerGenerator):
    """`generator(noise (N, 512), {"momentum": (N, 3) GeV, "point": (N, 2) mm}) -> (N, 30, 30)`."""

    def __init__(self, config: WganLhcbConfig) -> None:
        super().__init__(config)
        self.config: WganLhcbConfig = config

        def norm(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels) if config.generator_norm == "batch" else nn.Identity()

        self.dense = nn.Linear(config.noise_size + N_CONDITIONS, 256 * 4 * 4)
        self.deconvs = nn.Sequential(
            norm(256),
            nn.ReLU(),
            nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1),  # 4x4 -> 8x8
            norm(128),
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, (3, 4), stride=2, padding=1),  # -> 15x16
            norm(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=(0, 1)),  # -> 32x32
            norm(32),
            nn.ReLU(),
            nn.Conv2d(32, 1, 3, padding=1),
        )

    @property
    def noise_size(self) -> int:
        return self.config.noise_size

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        x = torch.cat([noise, encode_conditions(conditions, self.config, noise)], dim=1)
        x = self.deconvs(self.dense(x).view(-1, 256, 4, 4))
        return torch.relu(x[:, 0, 1:31, 1:31])  # crop 32x32 -> 30x30: (N, x, y)


class _CriticBody(nn.Module):
    """Shower (N, 30, 30) -> features (N, 4096): the generator's layers in reverse."""

    def __init__(self, config: WganLhcbConfig) -> None:
        super().__init__()

        def norm(channels: int) -> nn.Module:
            return nn.GroupNorm(1, channels) if config.critic_norm == "layer" else nn.Identity()

        slope = config.leaky_slope
        self.layers = nn.Sequential(
            nn.ConstantPad2d(1, 0.0),  # 30x30 -> 32x32, mirroring the generator's crop
            nn.Conv2d(1, 32, 3, padding=1),
            nn.LeakyReLU(slope),
            nn.Conv2d(32, 64, 4, stride=2, padding=(0, 1)),  # -> 15x16
            norm(64),
            nn.LeakyReLU(slope),
            nn.Conv2d(64, 128, (3, 4), stride=2, padding=1),  # -> 8x8
            norm(128),
            nn.LeakyReLU(slope),
            nn.Conv2d(128, 256, 4, stride=2, padding=1),  # -> 4x4
            norm(256),
            nn.LeakyReLU(slope),
            nn.Flatten(),
        )

    def forward(self, showers: Tensor) -> Tensor:
        return self.layers(showers.unsqueeze(1))


class CriticOutput(NamedTuple):
    """The WGAN critic's head."""

    score: Tensor  # (N,) Wasserstein score: unbounded, higher means judged more real


class WganLhcbCritic(nn.Module):
    """`critic(showers (N, 30, 30)) -> CriticOutput(score (N,))`; no BatchNorm."""

    def __init__(self, config: WganLhcbConfig) -> None:
        super().__init__()
        self.config = config
        self.body = _CriticBody(config)
        self.score = nn.Linear(256 * 4 * 4, 1)

    def forward(self, showers: Tensor) -> CriticOutput:
        return CriticOutput(score=self.score(self.body(showers)).squeeze(1))


class RegressorOutput(NamedTuple):
    """The regressor's estimate of the conditions, in the model's scaled units."""

    momentum: Tensor  # (N, 3) (px, py, pz) / momentum_scale
    point: Tensor  # (N, 2) (x, y) / point_scale

    def as_vector(self) -> Tensor:
        """`(N, 5)`, comparable with `encode_conditions`."""
        return torch.cat([self.momentum, self.point], dim=1)


class ConditionRegressor(nn.Module):
    """`regressor(showers (N, 30, 30)) -> RegressorOutput`: the critic's architecture, 5 outputs."""

    def __init__(self, config: WganLhcbConfig) -> None:
        super().__init__()
        self.config = config
        self.body = _CriticBody(config)
        self.head = nn.Linear(256 * 4 * 4, N_CONDITIONS)

    def forward(self, showers: Tensor) -> RegressorOutput:
        out = self.head(self.body(showers))
        return RegressorOutput(momentum=out[:, :3], point=out[:, 3:])
