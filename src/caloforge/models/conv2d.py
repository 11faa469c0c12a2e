"""Conv2D GANs for the 25x25x25 CLIC-like ECAL (Rehm, Vallecorsa, Borras, Kruecker).

Three generators that build a 3D shower from 2D convolutions, all trained against the same
three-branch discriminator. Conditioning as in 3DGAN: 200 latent numbers, uniform in [0, 1)
as the paper says (`noise="normal"` for N(0, 1), as the public code drew them), multiplied by
Ep / 100 GeV, then Dense(125) -> a 5x5x5 volume. "conv(c, k, same|valid)" below is
Conv2D c kxk, no bias -> LeakyReLU -> BatchNorm -> Dropout 0.2; "up(c, k, s)" is a transposed
Conv2D c kxk with stride s and 'same' output size (input x s), with bias and no activation.

G1, three branches (`conv2d-g1`, 28 convolutions): three copies of the 5x5x5 volume, permuted
so each axis serves once as the channel axis, each through
    conv(32,5,same) up(64,5,3) conv(64,5,same) up(64,5,2) conv(64,8,same) conv(64,5,valid)
    conv(32,4,same) conv(32,3,same) conv(25,2,valid)                  5 -> 15 -> 30 -> 25
permuted back, concatenated (75 channels) -> Conv2D 25 3x3 same, no bias -> ReLU.

G2, 25 branches (`conv2d-g2`, 177 convolutions): one branch per calorimeter layer, each
    up(32,5,3) conv(32,4,same) up(32,5,2) conv(32,5,valid) conv(32,3,same) conv(16,2,valid)
    Conv2D 1 1x1 with bias -> LeakyReLU -> BN -> Dropout               5 -> 15 -> 30 -> 25
gives one 25x25 image; the 25 images stacked as channels (the layer axis) ->
conv(25,5,same) -> Conv2D 25 3x3 same, no bias -> ReLU.

G3, single branch (`conv2d-g3`, 25 convolutions):
    conv(32,5,same) up(64,5,3) conv(64,5,same) up(64,5,2) conv(64,6,valid)    -> 64 x 25x25
then three paths of conv(64,9) conv(64,7) conv(64,5) conv(64,5) conv(32,4) conv(25,4), all
'same', each with a different image axis as its channel axis: p1 on the stem (x as channels),
p2 on p1 with the layer axis as channels, p3 on p1 + p2 with y as channels; the three skip
connections feed p1 + p2 + p3 -> conv(25,4,same) -> Conv2D 25 3x3 same, no bias -> ReLU.

Discriminator (all three): the shower permuted three ways (x, layer, y as channels), each through
    conv(64,8,same) conv(32,6,valid) conv(32,5,valid) conv(32,4,valid) conv(32,3,valid)
    conv(9,3,valid)                                                   25 -> 9
flattened and concatenated (3 x 9 x 9 x 9 = 2187) -> Dense 10 -> LeakyReLU -> BN;
heads: real/fake logit (Dense 1), energy Ep / 100 GeV (Dense 1, linear), ECAL sum of the input.

Spec choices, where the papers' figures are not in the reference: layer sizes, paddings and
biases follow the authors' public Keras code, which reproduces the published parameter counts
(Keras counts also the BatchNorm running statistics: 2,055k / 2,131k / 2,397k against the
published 2,052k / 2,131k / 2,397k). Where that code differs from the paper, the paper wins:
uniform latent noise; G2's branches stack along the layer axis ("one for each of the 25 layers
along z"); G1 ends with a ReLU, as its ReLU variant did, and G2 and G3 do too so that every
generator emits non-negative showers; G3 permutes each path's output back before the skip
sums, so that the summed tensors share their axes and each axis is the channel axis once.
LeakyReLU slope 0.3 and the BatchNorm constants are Keras' defaults. The parallel branches
are computed as grouped convolutions (branch b owns group b): the same network and parameter
count, one kernel launch instead of 3 or 25.

Parameters (trainable): G1 2,053,446, G2 2,125,300, G3 2,394,774; discriminator 712,888.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import Tensor, nn

from caloforge.models.base import (
    Dropout,
    GanDiscriminatorOutput,
    ModelConfig,
    ShowerGenerator,
    get_condition,
    register,
    same_pad2d,
)

__all__ = [
    "Conv2dConfig",
    "Conv2dDiscriminator",
    "Conv2dG1Config",
    "Conv2dG1Generator",
    "Conv2dG2Config",
    "Conv2dG2Generator",
    "Conv2dG3Config",
    "Conv2dG3Generator",
]


@dataclass(frozen=True)
class Conv2dConfig(ModelConfig):
    """Shared by the three Conv2D GAN families; each registers its own subclass."""

    shape: ClassVar[tuple[int, ...]] = (25, 25, 25)
    required_conditions: ClassVar[tuple[str, ...]] = ("energy",)

    geometry: str = "clic-25"  # preset or YAML file; must have showers shaped (25, 25, 25)
    latent_size: int = 200  # latent numbers, multiplied by energy / energy_scale
    noise: Literal["uniform", "normal"] = "uniform"  # U[0, 1) per the paper; the code used N(0, 1)
    energy_scale: float = 100.0  # GeV; the conditioning and the energy head use Ep / this
    leaky_slope: float = 0.3  # LeakyReLU negative slope (Keras' default, used by the paper code)
    dropout: float = 0.2  # dropout rate after every convolution block, generator and discriminator
    batchnorm_eps: float = 1e-3  # Keras' default
    batchnorm_momentum: float = 0.01  # PyTorch convention; = 1 - Keras' 0.99

    def _check_values(self) -> None:
        self._require(self.latent_size > 0, "latent_size", "a positive integer")
        self._require(self.energy_scale > 0, "energy_scale", "positive (GeV)")
        self._require(self.leaky_slope >= 0, "leaky_slope", "non-negative")
        self._require(0 <= self.dropout < 1, "dropout", "in [0, 1)")
        self._require(self.batchnorm_eps > 0, "batchnorm_eps", "positive")
        self._require(0 < self.batchnorm_momentum <= 1, "batchnorm_momentum", "in (0, 1]")


@register("conv2d-g1")
@dataclass(frozen=True)
class Conv2dG1Config(Conv2dConfig):
    """Conv2D GAN with the three-branch generator G1."""

    def build_modules(self) -> dict[str, nn.Module]:
        return {"generator": Conv2dG1Generator(self), "discriminator": Conv2dDiscriminator(self)}


@register("conv2d-g2")
@dataclass(frozen=True)
class Conv2dG2Config(Conv2dConfig):
    """Conv2D GAN with the 25-branch (one per layer) generator G2."""

    def build_modules(self) -> dict[str, nn.Module]:
        return {"generator": Conv2dG2Generator(self), "discriminator": Conv2dDiscriminator(self)}


@register("conv2d-g3")
@dataclass(frozen=True)
class Conv2dG3Config(Conv2dConfig):
    """Conv2D GAN with the single-branch, three-skip generator G3."""

    def build_modules(self) -> dict[str, nn.Module]:
        return {"generator": Conv2dG3Generator(self), "discriminator": Conv2dDiscriminator(self)}


# --- building blocks ----------------------------------------------------------------------
class Conv(NamedTuple):
    """Conv2D -> LeakyReLU -> BatchNorm -> Dropout."""

    channels: int
    kernel: int
    padding: Literal["same", "valid"]
    bias: bool = False


class Up(NamedTuple):
    """Transposed Conv2D with stride, output size input x stride (Keras 'same'), with bias."""

    channels: int
    kernel: int
    stride: int


def _layers(
    steps: Sequence[Conv | Up], c_in: int, config: Conv2dConfig, branches: int = 1
) -> list[nn.Module]:
    """The modules of `branches` parallel copies of `steps` (grouped convolutions).

    Channels are branch-major: branch b holds channels [b * c, (b + 1) * c) at every step.
    """
    g = branches
    layers: list[nn.Module] = []
    for step in steps:
        if isinstance(step, Up):
            k, s = step.kernel, step.stride
            padding = math.ceil((k - s) / 2)  # crop so that the output is input x stride
            layers.append(
                nn.ConvTranspose2d(
                    c_in * g, step.channels * g, k, s, padding, 2 * padding - (k - s), groups=g
                )
            )
        else:
            k = step.kernel
            if step.padding == "same":
                layers.append(same_pad2d(k))
            layers += [
                nn.Conv2d(c_in * g, step.channels * g, k, groups=g, bias=step.bias),
                nn.LeakyReLU(config.leaky_slope),
                nn.BatchNorm2d(
                    step.channels * g, eps=config.batchnorm_eps, momentum=config.batchnorm_momentum
                ),
                Dropout(config.dropout),
            ]
        c_in = step.channels
    return layers


def _final_conv(c_in: int) -> nn.Sequential:
    """Conv2D 25 3x3 same, no bias -> ReLU: the (x or layer) axis as the 25 output channels."""
    return nn.Sequential(
        same_pad2d(3),
        nn.Conv2d(c_in, 25, 3, bias=False),
        nn.ReLU(),
    )


# Permutations of a (N, a, b, c) volume putting each axis in the channel position, and back.
# x as channels: the volume itself; layer as channels: (N, c, a, b); y as channels: (N, b, c, a).
def _layer_first(v: Tensor) -> Tensor:
    return v.permute(0, 3, 1, 2)


def _from_layer_first(v: Tensor) -> Tensor:
    return v.permute(0, 2, 3, 1)


def _y_first(v: Tensor) -> Tensor:
    return v.permute(0, 2, 3, 1)


def _from_y_first(v: Tensor) -> Tensor:
    return v.permute(0, 3, 1, 2)


class _Conv2dGenerator(ShowerGenerator):
    """Latent x Ep / 100 GeV -> Dense(125) -> (N, 5, 5, 5); subclasses go on from there."""

    def __init__(self, config: Conv2dConfig) -> None:
        super().__init__(config)
        self.config: Conv2dConfig = config
        self.dense = nn.Linear(config.latent_size, 5 * 5 * 5)

    @property
    def noise_size(self) -> int:
        return self.config.latent_size

    @property
    def noise_distribution(self) -> Literal["normal", "uniform"]:
        return self.config.noise

    def _volume(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        energy = get_condition(conditions, "energy", noise.shape[0], 1, noise)
        return self.dense(noise * (energy / self.config.energy_scale)).view(-1, 5, 5, 5)


_G1_BRANCH = (
    Conv(32, 5, "same"),
    Up(64, 5, 3),
    Conv(64, 5, "same"),
    Up(64, 5, 2),
    Conv(64, 8, "same"),
    Conv(64, 5, "valid"),
    Conv(32, 4, "same"),
    Conv(32, 3, "same"),
    Conv(25, 2, "valid"),
)


class Conv2dG1Generator(_Conv2dGenerator):
    """G1: `generator(noise (N, 200), {"energy": GeV}) -> showers (N, 25, 25, 25)`, >= 0."""

    def __init__(self, config: Conv2dConfig) -> None:
        super().__init__(config)
        self.branches = nn.Sequential(*_layers(_G1_BRANCH, 5, config, branches=3))
        self.mix = _final_conv(3 * 25)

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        v = self._volume(noise, conditions)
        h = self.branches(torch.cat([v, _layer_first(v), _y_first(v)], dim=1))
        hx, hz, hy = h.split(25, dim=1)
        h = torch.cat([hx, _from_layer_first(hz), _from_y_first(hy)], dim=1)
        return self.mix(h)  # (N, x, y, layer)

    def frozen(self, device_type: str | None = None) -> ShowerGenerator:
        """A copy for inference; on a GPU, with the three branches as three ungrouped
        stacks in channels-last layout (`_SplitBranchesG1`).

        cuDNN runs the grouped convolutions in NCHW, transposing around each; three plain
        NHWC stacks ran 1.4x faster on an H100 (bf16, compiled; benchmarks/gpu_variants.py).
        On the CPU it is a plain copy (OpenVINO runs the grouped form well, and the int8
        search would see three times the layers).
        """
        if self._frozen_for(device_type) == "cuda":
            return _SplitBranchesG1(self)
        return super().frozen()


def _branch_layer(layer: nn.Module, b: int, groups: int) -> nn.Module:
    """Branch `b`'s part of a layer of `groups` grouped branches, as an ungrouped layer."""
    if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d) and layer.groups == groups:
        branch = copy.deepcopy(layer)
        branch.groups = 1
        branch.in_channels //= groups
        branch.out_channels //= groups
        # A Conv2d's weight is (out, in / groups, ...), a ConvTranspose2d's (in, out / groups, ...).
        rows = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.in_channels
        own = slice(b * rows // groups, (b + 1) * rows // groups)
        out = slice(b * branch.out_channels, (b + 1) * branch.out_channels)
        branch.weight = nn.Parameter(layer.weight.detach()[own].clone())
        if layer.bias is not None:
            branch.bias = nn.Parameter(layer.bias.detach()[out].clone())
        return branch
    if isinstance(layer, nn.BatchNorm2d):
        k = layer.num_features // groups
        own = slice(b * k, (b + 1) * k)
        norm = copy.deepcopy(layer)
        norm.num_features = k
        for name in ("weight", "bias"):
            setattr(norm, name, nn.Parameter(getattr(layer, name).detach()[own].clone()))
        for name in ("running_mean", "running_var"):
            setattr(norm, name, getattr(layer, name)[own].clone())
        return norm
    if any(True for _ in layer.parameters()):
        raise TypeError(f"frozen(): cannot split {type(layer).__name__} into branches")
    return copy.deepcopy(layer)


class _SplitBranchesG1(_Conv2dGenerator):
    """`Conv2dG1Generator.frozen()` on a GPU: branch b of the grouped layers as stack b of
    ungrouped ones, activations channels-last; the dense layer and the mixing convolution
    as they are."""

    def __init__(self, generator: Conv2dG1Generator) -> None:
        super().__init__(generator.config)
        self.dense = copy.deepcopy(generator.dense)
        self.stacks = nn.ModuleList(
            nn.Sequential(*(_branch_layer(layer, b, 3) for layer in generator.branches))
            for b in range(3)
        )
        self.mix = copy.deepcopy(generator.mix)
        self.eval().requires_grad_(False)

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        v = self._volume(noise, conditions)
        last = torch.channels_last
        hx, hz, hy = (
            stack(x.contiguous(memory_format=last))
            for stack, x in zip(self.stacks, (v, _layer_first(v), _y_first(v)), strict=True)
        )
        h = torch.cat([hx, _from_layer_first(hz), _from_y_first(hy)], dim=1)
        return self.mix(h.contiguous(memory_format=last))


_G2_BRANCH = (
    Up(32, 5, 3),
    Conv(32, 4, "same"),
    Up(32, 5, 2),
    Conv(32, 5, "valid"),
    Conv(32, 3, "same"),
    Conv(16, 2, "valid"),
    Conv(1, 1, "valid", bias=True),
)


class Conv2dG2Generator(_Conv2dGenerator):
    """G2: `generator(noise (N, 200), {"energy": GeV}) -> showers (N, 25, 25, 25)`, >= 0."""

    def __init__(self, config: Conv2dConfig) -> None:
        super().__init__(config)
        self.layers = nn.Sequential(*_layers(_G2_BRANCH, 5, config, branches=25))
        self.mix = nn.Sequential(
            *_layers([Conv(25, 5, "same")], 25, config),
            _final_conv(25),
        )

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        v = self._volume(noise, conditions)
        images = self.layers(v.repeat(1, 25, 1, 1))  # every branch sees the whole volume
        return _from_layer_first(self.mix(images))  # (N, layer, x, y) -> (N, x, y, layer)


_G3_STEM = (
    Conv(32, 5, "same"),
    Up(64, 5, 3),
    Conv(64, 5, "same"),
    Up(64, 5, 2),
    Conv(64, 6, "valid"),
)
_G3_PATH = (
    Conv(64, 9, "same"),
    Conv(64, 7, "same"),
    Conv(64, 5, "same"),
    Conv(64, 5, "same"),
    Conv(32, 4, "same"),
    Conv(25, 4, "same"),
)


class Conv2dG3Generator(_Conv2dGenerator):
    """G3: `generator(noise (N, 200), {"energy": GeV}) -> showers (N, 25, 25, 25)`, >= 0."""

    def __init__(self, config: Conv2dConfig) -> None:
        super().__init__(config)
        self.stem = nn.Sequential(*_layers(_G3_STEM, 5, config))
        self.path1 = nn.Sequential(*_layers(_G3_PATH, 64, config))
        self.path2 = nn.Sequential(*_layers(_G3_PATH, 25, config))
        self.path3 = nn.Sequential(*_layers(_G3_PATH, 25, config))
        self.mix = nn.Sequential(*_layers([Conv(25, 4, "same")], 25, config), _final_conv(25))

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        h = self.stem(self._volume(noise, conditions))  # (N, 64, y, layer)
        p1 = self.path1(h)  # (N, x, y, layer)
        p2 = _from_layer_first(self.path2(_layer_first(p1)))
        p3 = _from_y_first(self.path3(_y_first(p1 + p2)))
        return self.mix(p1 + p2 + p3)  # (N, x, y, layer)


_D_BRANCH = (
    Conv(64, 8, "same"),
    Conv(32, 6, "valid"),
    Conv(32, 5, "valid"),
    Conv(32, 4, "valid"),
    Conv(32, 3, "valid"),
    Conv(9, 3, "valid"),
)


class Conv2dDiscriminator(nn.Module):
    """`discriminator(showers (N, 25, 25, 25)) -> GanDiscriminatorOutput` (logit, energy, ecal).

    In training mode the batch needs at least 2 showers (BatchNorm after the dense layer).
    """

    def __init__(self, config: Conv2dConfig) -> None:
        super().__init__()
        self.config = config
        self.branches = nn.Sequential(*_layers(_D_BRANCH, 25, config, branches=3), nn.Flatten())
        self.dense = nn.Sequential(
            nn.Linear(3 * 9 * 9 * 9, 10),
            nn.LeakyReLU(config.leaky_slope),
            nn.BatchNorm1d(10, eps=config.batchnorm_eps, momentum=config.batchnorm_momentum),
        )
        self.real_fake = nn.Linear(10, 1)
        self.energy = nn.Linear(10, 1)

    def forward(self, showers: Tensor) -> GanDiscriminatorOutput:
        h = self.branches(torch.cat([showers, _layer_first(showers), _y_first(showers)], dim=1))
        h = self.dense(h)
        return GanDiscriminatorOutput(
            logit=self.real_fake(h).squeeze(1),
            energy=self.energy(h).squeeze(1),
            ecal=showers.sum(dim=(1, 2, 3)),
        )
