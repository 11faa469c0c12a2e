"""3DGAN, fixed angle: electrons at perpendicular incidence, 25x25x25 cells (Khattak et al.).

Generator (conditioning is multiplicative: the latent vector z ~ N(0, 1)^200 is multiplied
by Ep / 100 GeV, the Hadamard product of the papers):

    Dense(3136) -> (8 ch, 7x7x8)
    Conv3D 64 (6,6,8) same -> LeakyReLU -> BN -> upsample (2,2,2)            -> 14x14x16
    pad (2,2,0) -> Conv3D 6 (6,5,8) valid -> LeakyReLU -> BN -> upsample (2,2,3) -> 26x28x27
    pad (1,0,3) -> Conv3D 6 (3,3,8) valid -> LeakyReLU                       -> 26x26x26
    Conv3D 1 (2,2,2) valid, no bias -> ReLU                                   -> 25x25x25

Discriminator:

    Conv3D 32 5^3 same -> LeakyReLU -> Dropout 0.2
    3 x [pad p -> Conv3D 8 5^3 valid -> LeakyReLU -> BN -> Dropout], p = 2, 2, 1 -> 23^3
    AvgPool3D 2 -> flatten (8 x 11^3 = 10648)
    heads: real/fake logit (Dense 1), energy regression Ep / 100 GeV (Dense 1, linear),
           ECAL sum = sum of the input cells (no parameters).

Spec choices, where the reference (systems.md, section 1) leaves them open: the pads of the
discriminator (2, 2, 1) are those of the public Keras code and give the 10648 flattened
values; LeakyReLU slope 0.3 and BatchNorm eps 1e-3 / momentum 0.01 are Keras' defaults, which
that code used; the real/fake head returns a logit (apply a sigmoid, or use
`binary_cross_entropy_with_logits`, which is the numerically stable form of the paper's BCE).

Parameters: generator 872,808 + discriminator 73,402 = 946,210 (published: "about 1 M" in
G + D; the Conv2D paper's 752k for its Conv3D baseline generator is not this network's count,
whose first dense layer alone has the 630k it quotes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from caloforge.models.base import (
    GanDiscriminatorOutput,
    ModelConfig,
    ShowerGenerator,
    get_condition,
    register,
    same_pad3d,
)

__all__ = ["Gan3dConfig", "Gan3dDiscriminator", "Gan3dGenerator"]


@register("gan3d")
@dataclass(frozen=True)
class Gan3dConfig(ModelConfig):
    """3DGAN for the 25x25x25 CLIC-like ECAL, conditioned on the primary energy."""

    shape: ClassVar[tuple[int, ...]] = (25, 25, 25)
    required_conditions: ClassVar[tuple[str, ...]] = ("energy",)

    geometry: str = "clic-25"  # preset or YAML file; must have showers shaped (25, 25, 25)
    latent_size: int = 200  # z ~ N(0, 1)^latent_size, multiplied by energy / energy_scale
    energy_scale: float = 100.0  # GeV; the conditioning and the energy head use Ep / this
    leaky_slope: float = 0.3  # LeakyReLU negative slope (Keras' default, used by the paper code)
    dropout: float = 0.2  # discriminator dropout rate
    batchnorm_eps: float = 1e-3  # Keras' default
    batchnorm_momentum: float = 0.01  # PyTorch convention; = 1 - Keras' 0.99

    def _check_values(self) -> None:
        self._require(self.latent_size > 0, "latent_size", "a positive integer")
        self._require(self.energy_scale > 0, "energy_scale", "positive (GeV)")
        self._require(self.leaky_slope >= 0, "leaky_slope", "non-negative")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")
        self._require(self.batchnorm_eps > 0, "batchnorm_eps", "positive")
        self._require(0 < self.batchnorm_momentum <= 1, "batchnorm_momentum", "in (0, 1]")

    def build_modules(self) -> dict[str, nn.Module]:
        return {"generator": Gan3dGenerator(self), "discriminator": Gan3dDiscriminator(self)}


def _pad3d(x: int, y: int, z: int) -> nn.ConstantPad3d:
    """Symmetric zero padding of (x, y, layer) = (D, H, W), as Keras' ZeroPadding3D."""
    return nn.ConstantPad3d((z, z, y, y, x, x), 0.0)


class Gan3dGenerator(ShowerGenerator):
    """`generator(noise (N, 200), {"energy": (N,) GeV}) -> showers (N, 25, 25, 25)`, >= 0."""

    def __init__(self, config: Gan3dConfig) -> None:
        super().__init__(config)
        self.config: Gan3dConfig = config
        slope, eps, momentum = config.leaky_slope, config.batchnorm_eps, config.batchnorm_momentum
        self.dense = nn.Linear(config.latent_size, 8 * 7 * 7 * 8)
        self.convs = nn.Sequential(
            same_pad3d((6, 6, 8)),
            nn.Conv3d(8, 64, (6, 6, 8)),
            nn.LeakyReLU(slope),
            nn.BatchNorm3d(64, eps=eps, momentum=momentum),
            nn.Upsample(scale_factor=(2, 2, 2), mode="nearest"),
            _pad3d(2, 2, 0),
            nn.Conv3d(64, 6, (6, 5, 8)),
            nn.LeakyReLU(slope),
            nn.BatchNorm3d(6, eps=eps, momentum=momentum),
            nn.Upsample(scale_factor=(2, 2, 3), mode="nearest"),
            _pad3d(1, 0, 3),
            nn.Conv3d(6, 6, (3, 3, 8)),
            nn.LeakyReLU(slope),
            nn.Conv3d(6, 1, (2, 2, 2), bias=False),
            nn.ReLU(),
        )

    @property
    def noise_size(self) -> int:
        return self.config.latent_size

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        energy = get_condition(conditions, "energy", noise.shape[0], 1, noise)
        x = self.dense(noise * (energy / self.config.energy_scale))
        x = x.view(-1, 8, 7, 7, 8)
        return self.convs(x).squeeze(1)  # (N, 1, x, y, layer) -> (N, x, y, layer)


class Gan3dDiscriminator(nn.Module):
    """`discriminator(showers (N, 25, 25, 25)) -> GanDiscriminatorOutput` (logit, energy, ecal)."""

    def __init__(self, config: Gan3dConfig) -> None:
        super().__init__()
        self.config = config
        slope, eps, momentum = config.leaky_slope, config.batchnorm_eps, config.batchnorm_momentum

        blocks: list[nn.Module] = [
            _pad3d(2, 2, 2),  # "same" for a 5^3 kernel
            nn.Conv3d(1, 32, 5),
            nn.LeakyReLU(slope),
            nn.Dropout(config.dropout),
        ]
        in_channels = 32
        for pad in (2, 2, 1):  # 25 -> 25 -> 25 -> 23 cells per axis
            blocks += [
                _pad3d(pad, pad, pad),
                nn.Conv3d(in_channels, 8, 5),
                nn.LeakyReLU(slope),
                nn.BatchNorm3d(8, eps=eps, momentum=momentum),
                nn.Dropout(config.dropout),
            ]
            in_channels = 8
        blocks += [nn.AvgPool3d(2), nn.Flatten()]  # 8 x 11^3
        self.features = nn.Sequential(*blocks)
        n_features = 8 * 11 * 11 * 11
        self.real_fake = nn.Linear(n_features, 1)
        self.energy = nn.Linear(n_features, 1)

    def forward(self, showers: Tensor) -> GanDiscriminatorOutput:
        h = self.features(showers.unsqueeze(1))
        return GanDiscriminatorOutput(
            logit=self.real_fake(h).squeeze(1),
            energy=self.energy(h).squeeze(1),
            ecal=showers.sum(dim=(1, 2, 3)),
        )
