"""3DGAN, variable angle: electrons at polar angle theta, 51x51x25 cells (Khattak et al.).

The showers this model sees are preprocessed as cells^power (power 0.85 in the paper); its
angle and ECAL-sum heads undo that power before measuring.

Generator (input 256 = [Ep / 100 GeV, theta in rad, 254 x N(0, 1)]):

    Dense(5184) -> (8 ch, 9x9x8) -> upsample 6                                  -> 54x54x48
    Conv3D 8 (6,6,8) valid -> ReLU -> BN                                        -> 49x49x41
    3 x [pad (2,2,1) -> Conv3D 6 (4,4,6) valid -> ReLU -> BN]                   -> 52x52x32
    pad (1,1,0) -> Conv3D 6 (3,3,5) valid -> ReLU -> BN                         -> 52x52x28
    pad (1,1,0) -> Conv3D 6 (3,3,3) valid -> ReLU                               -> 52x52x26
    Conv3D 1 (2,2,2) valid, no bias -> ReLU                                     -> 51x51x25

Discriminator:

    Conv3D 16 (5,6,6) same -> LeakyReLU -> Dropout 0.2
    pad (0,0,1) -> Conv3D 8 (5,6,6) valid -> LeakyReLU -> BN -> Dropout         -> 47x46x22
    pad (0,0,1) -> Conv3D 8 (5,6,6) valid -> LeakyReLU -> BN -> Dropout         -> 43x41x19
    Conv3D 8 (5,6,6) valid -> LeakyReLU -> BN -> Dropout                        -> 39x36x14
    AvgPool3D 2 -> flatten (8 x 19x18x7 = 19152)
    heads: real/fake logit; Ep / 100 GeV regression; measured angle (`measured_angle` of
           showers^(1/power)); ECAL sum (sum of showers^(1/power)).

Spec choices: the pads of the discriminator ((0,0,1) before the first two valid convolutions,
none before the third) are those of the public Keras code and the only ones that give the
published 19152 flattened values; the last generator convolution has no bias, as in the
fixed-angle model; LeakyReLU slope 0.3 and the BatchNorm constants are Keras' defaults; the
real/fake head returns a logit. The pixel-intensity bin counts of the paper's loss are not a
head: they have no gradient, so they belong with the loss.

Parameters (no published figure for this variant): generator 1,364,982, discriminator 87,354,
G + D 1,452,336 (the paper says "slightly more than a million").

Speed (exact rewrites, on by default, as in `gan3d`; the layers and state_dict keys are those
of the plain path): `fast_upsample`: the generator's "upsample 6 -> Conv3D 8 (6,6,8)" runs as
one sub-pixel convolution (`caloforge.models.gan3d.upsample_conv3d`), about 24x fewer
multiply-adds in that layer, and the 54x54x48 upsampled tensor is never built;
`fast_discriminator`: the discriminator's convolutions run in channels-last layout, its first
(1-channel) one with the W taps as channels. For inference on a GPU, `frozen()` folds the
depth axis into the channels (`_DepthAsChannelsGenerator`): 16.7x eager in bf16 on an H100.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from caloforge.models.base import (
    Dropout,
    ModelConfig,
    ShowerGenerator,
    get_condition,
    register,
    same_pad3d,
)
from caloforge.models.gan3d import FastConv3dSequential, _is_plain_conv, _wide

__all__ = [
    "EMPTY_SHOWER_ANGLE",
    "AngleDiscriminatorOutput",
    "Gan3dAngleConfig",
    "Gan3dAngleDiscriminator",
    "Gan3dAngleGenerator",
    "measured_angle",
]

# What `measured_angle` returns for a shower without energy (the public 3DGAN code's value).
EMPTY_SHOWER_ANGLE = 100.0


@register("gan3d-angle")
@dataclass(frozen=True)
class Gan3dAngleConfig(ModelConfig):
    """3DGAN for the 51x51x25 CLIC-like ECAL, conditioned on energy and polar angle."""

    shape: ClassVar[tuple[int, ...]] = (51, 51, 25)
    required_conditions: ClassVar[tuple[str, ...]] = ("energy", "theta")

    geometry: str = "clic-angle-51"  # preset or YAML file; showers shaped (51, 51, 25)
    latent_size: int = 256  # generator input: [Ep / energy_scale, theta, latent_size - 2 noise]
    energy_scale: float = 100.0  # GeV; the generator input and the energy head use Ep / this
    power: float = 0.85  # cells are preprocessed as E^power; angle and sum heads undo it
    leaky_slope: float = 0.3  # discriminator LeakyReLU slope (Keras' default)
    dropout: float = 0.2  # discriminator dropout rate
    batchnorm_eps: float = 1e-3  # Keras' default
    batchnorm_momentum: float = 0.01  # PyTorch convention; = 1 - Keras' 0.99
    fast_upsample: bool = True  # generator: upsample -> conv as one sub-pixel convolution
    fast_discriminator: bool = True  # discriminator: channels-last layout, 1-channel conv rewritten

    def _check_values(self) -> None:
        self._require(self.latent_size > 2, "latent_size", "an integer > 2")
        self._require(self.energy_scale > 0, "energy_scale", "positive (GeV)")
        self._require(self.power > 0, "power", "positive")
        self._require(self.leaky_slope >= 0, "leaky_slope", "non-negative")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")
        self._require(self.batchnorm_eps > 0, "batchnorm_eps", "positive")
        self._require(0 < self.batchnorm_momentum <= 1, "batchnorm_momentum", "in (0, 1]")

    def build_modules(self) -> dict[str, nn.Module]:
        return {
            "generator": Gan3dAngleGenerator(self),
            "discriminator": Gan3dAngleDiscriminator(self),
        }


def _pad3d(x: int, y: int, z: int) -> nn.ConstantPad3d:
    """Symmetric zero padding of (x, y, layer) = (D, H, W), as Keras' ZeroPadding3D."""
    return nn.ConstantPad3d((z, z, y, y, x, x), 0.0)


class Gan3dAngleGenerator(ShowerGenerator):
    """`generator(noise (N, 254), {"energy": GeV, "theta": rad}) -> showers (N, 51, 51, 25)`."""

    def __init__(self, config: Gan3dAngleConfig) -> None:
        super().__init__(config)
        self.config: Gan3dAngleConfig = config
        eps, momentum = config.batchnorm_eps, config.batchnorm_momentum

        def block(c_in: int, c_out: int, kernel: tuple[int, int, int], bn: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, kernel), nn.ReLU()]
            return layers + ([nn.BatchNorm3d(c_out, eps=eps, momentum=momentum)] if bn else [])

        self.dense = nn.Linear(config.latent_size, 8 * 9 * 9 * 8)
        layers: list[nn.Module] = [nn.Upsample(scale_factor=6, mode="nearest")]
        layers += block(8, 8, (6, 6, 8), bn=True)
        for c_in in (8, 6, 6):
            layers += [_pad3d(2, 2, 1), *block(c_in, 6, (4, 4, 6), bn=True)]
        layers += [_pad3d(1, 1, 0), *block(6, 6, (3, 3, 5), bn=True)]
        layers += [_pad3d(1, 1, 0), *block(6, 6, (3, 3, 3), bn=False)]
        layers += [nn.Conv3d(6, 1, (2, 2, 2), bias=False), nn.ReLU()]
        self.convs = FastConv3dSequential(*layers, upsample=config.fast_upsample)

    @property
    def noise_size(self) -> int:
        return self.config.latent_size - 2

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        x = _dense_volume(self.config, self.dense, noise, conditions)
        return self.convs(x).squeeze(1)  # (N, 1, x, y, layer) -> (N, x, y, layer)

    def frozen(self, device_type: str | None = None) -> ShowerGenerator:
        """A copy for inference; on a GPU, with the depth axis folded into the channels after
        the first convolution (`_DepthAsChannelsGenerator`).

        cuDNN runs these 3D convolutions on 6-8 channels at about 1 % of an H100's bf16 peak;
        as 2D convolutions over (x, y) with (layer, channel) as channels they are large
        matrix products: 6.3x the multiply-adds (each kernel's depth band is stored dense),
        8.1x the showers/s (bf16, compiled; benchmarks/gpu_variants.py). On the CPU the
        extra multiply-adds cost more than they gain: there it is a plain copy.
        """
        if self._frozen_for(device_type) == "cuda":
            return _DepthAsChannelsGenerator(self)
        return super().frozen()


def _dense_volume(
    config: Gan3dAngleConfig, dense: nn.Linear, noise: Tensor, conditions: Mapping[str, Tensor]
) -> Tensor:
    """[Ep / energy_scale, theta, noise] -> Dense -> the `(N, 8, 9, 9, 8)` starting volume."""
    n = noise.shape[0]
    energy = get_condition(conditions, "energy", n, 1, noise) / config.energy_scale
    theta = get_condition(conditions, "theta", n, 1, noise)
    return dense(torch.cat([energy, theta, noise], dim=1)).view(-1, 8, 9, 9, 8)


def banded_kernel(weight: Tensor, depth: int, pad: int, rows: int, columns: int) -> Tensor:
    """A Conv3d kernel `(C_out, C_in, kx, ky, kz)` on inputs `depth` deep (zero padded by `pad`
    at both ends) as a Conv2d kernel `(rows, columns, kx, ky)` over (x, y) whose channels are
    (depth, channel), depth-major: output (z', c') reads input (z' + dz - pad, c) through tap
    dz. Taps that would read the padding are left out (they read zeros); rows and columns
    past depth x channels (alignment) are zero."""
    c_out, c_in, kx, ky, kz = weight.shape
    depth_out = depth + 2 * pad - kz + 1
    band = weight.new_zeros(depth_out, c_out, depth, c_in, kx, ky)
    for z_out in range(depth_out):
        for dz in range(kz):
            z_in = z_out + dz - pad
            if 0 <= z_in < depth:
                band[z_out, :, z_in] = weight[..., dz]
    kernel = weight.new_zeros(rows, columns, kx, ky)
    kernel[: depth_out * c_out, : depth * c_in] = band.reshape(depth_out * c_out, -1, kx, ky)
    return kernel


def _aligned(n: int, multiple: int = 8) -> int:
    """`n` rounded up: bf16 tensor-core convolutions want channel rows of 16 bytes."""
    return -(-n // multiple) * multiple


class _DepthStep(nn.Module):
    """`pad (x, y) -> Conv3d -> ReLU [-> BatchNorm]` on `(N, depth x C, x, y)` activations
    (channels-last 2D): a banded Conv2d, the ReLU, and the BatchNorm as a per-channel affine
    map (zero on the alignment channels)."""

    def __init__(
        self,
        conv: nn.Conv3d,
        pad: tuple[int, int, int],
        depth: int,
        columns: int,
        norm: nn.BatchNorm3d | None,
    ) -> None:
        super().__init__()
        like = conv.weight
        kx, ky, kz = conv.kernel_size
        self.depth = depth + 2 * pad[2] - kz + 1
        self.channels = self.depth * conv.out_channels
        rows = _aligned(self.channels)
        self.conv = nn.Conv2d(
            columns, rows, (kx, ky), padding=pad[:2], device=like.device, dtype=like.dtype
        )
        # Folded in float64 on the CPU (`_wide`), rounded once to the weights' dtype and device.
        bias, scale, shift = (torch.zeros(rows, dtype=torch.float64) for _ in range(3))
        if conv.bias is not None:
            bias[: self.channels] = _wide(conv.bias).repeat(self.depth)
        if norm is None:
            scale[: self.channels] = 1.0
        else:
            assert norm.running_var is not None and norm.running_mean is not None
            s = _wide(norm.weight) / torch.sqrt(_wide(norm.running_var) + norm.eps)
            scale[: self.channels] = s.repeat(self.depth)
            shift[: self.channels] = (_wide(norm.bias) - _wide(norm.running_mean) * s).repeat(
                self.depth
            )
        kernel = banded_kernel(_wide(conv.weight), depth, pad[2], rows, columns)
        self.conv.weight = nn.Parameter(
            kernel.to(like).contiguous(memory_format=torch.channels_last)
        )
        self.conv.bias = nn.Parameter(bias.to(like))
        self.scale: Tensor
        self.shift: Tensor
        self.register_buffer("scale", scale.to(like).view(1, -1, 1, 1))
        self.register_buffer("shift", shift.to(like).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x)) * self.scale + self.shift


class _DepthAsChannelsGenerator(ShowerGenerator):
    """`Gan3dAngleGenerator.frozen()` on a GPU: the dense layer and the first (sub-pixel)
    convolution block as they are; then the activations as `(N, depth x C, x, y)` in
    channels-last layout, whose memory is the NDHWC 3D layout's, so no layer moves data to
    change form, and each later Conv3d a `_DepthStep`. The last step's channels are the
    shower's layers: `(N, x, y, layer)` is its output viewed channels-last."""

    def __init__(self, generator: Gan3dAngleGenerator) -> None:
        super().__init__(generator.config)
        self.config: Gan3dAngleConfig = generator.config
        layers = list(generator.convs)
        kinds = ", ".join(type(m).__name__ for m in layers)
        if not (
            isinstance(layers[0], nn.Upsample)
            and _is_plain_conv(layers[1])
            and isinstance(layers[2], nn.ReLU)
            and isinstance(layers[3], nn.BatchNorm3d)
        ):
            raise TypeError(f"frozen(): unexpected gan3d-angle generator layers ({kinds})")
        self.dense = copy.deepcopy(generator.dense)
        self.head = FastConv3dSequential(*copy.deepcopy(layers[:4]), upsample=True).eval()
        like = generator.dense.weight
        with torch.no_grad():
            probe = like.new_zeros(1, self.dense.out_features).view(1, 8, 9, 9, 8)
            _, channels, *self.head_shape = self.head(probe).shape
        depth = self.head_shape[2]
        self.head_channels = depth * channels
        columns = _aligned(self.head_channels)
        steps: list[_DepthStep] = []
        pad, i = (0, 0, 0), 4
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, nn.ConstantPad3d) and pad == (0, 0, 0):
                z0, z1, y0, y1, x0, x1 = (int(p) for p in layer.padding)
                if layer.value != 0 or (z0, y0, x0) != (z1, y1, x1) or min(z0, y0, x0) < 0:
                    raise TypeError(f"frozen(): unexpected gan3d-angle padding {layer.padding}")
                pad, i = (x0, y0, z0), i + 1
                continue
            after = layers[i + 1 : i + 3]
            if not (_is_plain_conv(layer) and after and isinstance(after[0], nn.ReLU)):
                raise TypeError(f"frozen(): unexpected gan3d-angle generator layers ({kinds})")
            assert isinstance(layer, nn.Conv3d)
            norm = after[1] if len(after) > 1 and isinstance(after[1], nn.BatchNorm3d) else None
            steps.append(_DepthStep(layer, pad, depth, columns, norm))
            depth, columns = steps[-1].depth, steps[-1].conv.out_channels
            pad, i = (0, 0, 0), i + (3 if norm is not None else 2)
        if not steps or steps[-1].channels != self.config.shape[2]:
            raise TypeError(f"frozen(): unexpected gan3d-angle generator layers ({kinds})")
        self.steps = nn.Sequential(*steps)
        self.columns = steps[0].conv.in_channels
        self.eval().requires_grad_(False)

    @property
    def noise_size(self) -> int:
        return self.config.latent_size - 2

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        n = noise.shape[0]
        h = self.head(_dense_volume(self.config, self.dense, noise, conditions))  # (N, C, x, y, z)
        h = h.permute(0, 2, 3, 4, 1).reshape(n, *self.head_shape[:2], self.head_channels)
        if self.columns > self.head_channels:
            h = functional.pad(h, (0, self.columns - self.head_channels))
        h = self.steps(h.permute(0, 3, 1, 2))  # channels-last 2D: (N, depth x C, x, y)
        return h.permute(0, 2, 3, 1)[..., : self.config.shape[2]]


class AngleDiscriminatorOutput(NamedTuple):
    """Heads of the variable-angle 3DGAN discriminator; each is `(N,)`."""

    logit: Tensor  # real/fake logit: sigmoid(logit) is the probability that the shower is real
    energy: Tensor  # regressed primary energy in units of `energy_scale` (Ep / 100 GeV)
    theta: Tensor  # measured angle of showers^(1/power), rad (EMPTY_SHOWER_ANGLE if empty)
    ecal: Tensor  # sum of showers^(1/power): the deposited energy in the files' cell units


class Gan3dAngleDiscriminator(nn.Module):
    """`discriminator(showers (N, 51, 51, 25)) -> AngleDiscriminatorOutput`."""

    def __init__(self, config: Gan3dAngleConfig) -> None:
        super().__init__()
        self.config = config
        slope, eps, momentum = config.leaky_slope, config.batchnorm_eps, config.batchnorm_momentum
        kernel = (5, 6, 6)
        layers: list[nn.Module] = [
            same_pad3d(kernel),
            nn.Conv3d(1, 16, kernel),
            nn.LeakyReLU(slope),
            Dropout(config.dropout),
        ]
        for c_in, pad_layers in ((16, 1), (8, 1), (8, 0)):
            layers += [
                _pad3d(0, 0, pad_layers),
                nn.Conv3d(c_in, 8, kernel),
                nn.LeakyReLU(slope),
                nn.BatchNorm3d(8, eps=eps, momentum=momentum),
                Dropout(config.dropout),
            ]
        layers += [nn.AvgPool3d(2), nn.Flatten()]
        self.features = FastConv3dSequential(*layers, channels_last=config.fast_discriminator)
        n_features = 8 * 19 * 18 * 7
        self.real_fake = nn.Linear(n_features, 1)
        self.energy = nn.Linear(n_features, 1)

    def forward(self, showers: Tensor) -> AngleDiscriminatorOutput:
        h = self.features(showers.unsqueeze(1))
        # Undo the preprocessing power; clamp keeps the power's gradient finite at 0.
        cells = showers.clamp_min(0.0) ** (1.0 / self.config.power)
        return AngleDiscriminatorOutput(
            logit=self.real_fake(h).squeeze(1),
            energy=self.energy(h).squeeze(1),
            theta=measured_angle(cells),
            ecal=cells.sum(dim=(1, 2, 3)),
        )


def measured_angle(showers: Tensor) -> Tensor:
    """Polar angle of each shower from its per-layer barycentres, rad; `(N, x, y, layer) -> (N,)`.

    The 3DGAN definition (physics.md, section 4), in cell/layer index units: with the shower
    barycentre (x0, y0, z0) and the barycentre (x_l, y_l) of each layer l at depth z_l
    (cell centres at index + 0.5), the slope of layer l is
    m_l = (y_l - y0) / sqrt((x_l - x0)^2 + (z_l - z0)^2), sign-flipped for layers in front of
    z0; the angle is the mean of pi/2 - atan(m_l) over the layers with energy, weighted by z_l.
    pi/2 is perpendicular incidence. A shower without energy gives EMPTY_SHOWER_ANGLE.
    Showers must be non-negative energies (undo any preprocessing power first).
    """
    _, nx, ny, nz = showers.shape
    x, y, z = (
        torch.arange(size, dtype=showers.dtype, device=showers.device) + 0.5
        for size in (nx, ny, nz)
    )

    total = showers.sum(dim=(1, 2, 3))
    empty = total == 0
    total = torch.where(empty, torch.ones_like(total), total)  # no 0/0 even in unused branches
    x0 = (showers.sum(dim=(2, 3)) * x).sum(1) / total
    y0 = (showers.sum(dim=(1, 3)) * y).sum(1) / total
    z0 = (showers.sum(dim=(1, 2)) * z).sum(1) / total

    per_layer = showers.sum(dim=(1, 2))  # (N, layer)
    has_energy = per_layer > 0
    per_layer = torch.where(has_energy, per_layer, torch.ones_like(per_layer))
    x_l = (showers.sum(dim=2) * x[:, None]).sum(1) / per_layer  # (N, layer)
    y_l = (showers.sum(dim=1) * y[:, None]).sum(1) / per_layer

    dz = z - z0[:, None]
    distance = torch.sqrt(((x_l - x0[:, None]) ** 2 + dz**2).clamp_min(1e-7))
    slope = (y_l - y0[:, None]) / distance
    slope = torch.where(dz < 0, -slope, slope)
    angle = math.pi / 2 - torch.atan(slope)

    weight = z * has_energy
    theta = (angle * weight).sum(1) / weight.sum(1).clamp_min(1e-12)
    return torch.where(empty, torch.full_like(theta, EMPTY_SHOWER_ANGLE), theta)
