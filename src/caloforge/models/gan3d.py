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

Speed: two exact rewrites, on by default, run the same function faster (`FastConv3dSequential`;
tests/unit/test_fast_upsample.py checks outputs and gradients against the plain path). The
layers, parameters and state_dict keys are those of the plain path (both keys false), which
runs the literal layers and is kept as the reference.
- `fast_upsample`: each "upsample -> pad -> Conv3D" of the generator runs as one sub-pixel
  convolution (`upsample_conv3d`): the upsampled tensor is never built, and the convolution
  does 4-5x fewer multiply-adds (s^3 = 8, 12 at best) for the same outputs and gradients.
- `fast_discriminator`: the discriminator's activations stay in channels-last layout, where
  oneDNN's kernels for these 8-channel convolutions are about twice as fast on CPU, and its
  1-channel first convolution runs with the W taps as channels (`conv3d_taps_as_channels`).
  Dropout (`caloforge.models.base.Dropout`) draws its masks in logical order, so a seeded run
  is the same either way.
A third, for inference only, needs fixed weights: `Gan3dGenerator.frozen()` folds the dense
layer and the first convolution into one matrix (half the generator's multiply-adds); the
compiled, bf16 and int8 backends and the ONNX export run it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional

from caloforge.models.base import (
    Dropout,
    GanDiscriminatorOutput,
    ModelConfig,
    ShowerGenerator,
    get_condition,
    register,
    same_pad3d,
)

__all__ = [
    "FastConv3dSequential",
    "Gan3dConfig",
    "Gan3dDiscriminator",
    "Gan3dGenerator",
    "PhaseSpaceTail",
    "conv3d_taps_as_channels",
    "upsample_conv3d",
]


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
    fast_upsample: bool = True  # generator: upsample -> pad -> conv as one sub-pixel convolution
    fast_discriminator: bool = True  # discriminator: channels-last layout, 1-channel conv rewritten

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
        self.convs = FastConv3dSequential(
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
            upsample=config.fast_upsample,
        )

    @property
    def noise_size(self) -> int:
        return self.config.latent_size

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        x = self.dense(_conditioned(self.config, noise, conditions))
        x = x.view(-1, 8, 7, 7, 8)
        return self.convs(x).squeeze(1)  # (N, 1, x, y, layer) -> (N, x, y, layer)

    def frozen(self, device_type: str | None = None) -> ShowerGenerator:
        """A copy for inference, on any device: the dense layer and the first convolution
        folded, the last convolution on the sub-pixel phases.

        Nothing lies between the first two (the LeakyReLU comes after the convolution) and
        the 'same' zero padding is linear, so at fixed weights latent -> 64 x 7x7x8 is one
        affine map, a `Linear(200, 25088)`: 5.0 M multiply-adds per shower instead of 58.4 M
        (the convolution spends over half of its taps on the padding), 20 MB of weights for
        the two layers instead of 2.6 MB. The last two convolutions run as a
        `PhaseSpaceTail`. In all 0.145 GFLOP per shower instead of the sub-pixel generator's
        0.233; the same function to fp32 rounding.
        """
        return _FrozenGan3dGenerator(self)


def _conditioned(config: Gan3dConfig, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
    """The latent times Ep / energy_scale: the generator's input (the papers' Hadamard product)."""
    energy = get_condition(conditions, "energy", noise.shape[0], 1, noise)
    return noise * (energy / config.energy_scale)


class _FrozenGan3dGenerator(ShowerGenerator):
    """`Gan3dGenerator.frozen()`: `dense -> view -> pad -> Conv3d` as one `Linear` (`head`),
    the middle layers as they are (sub-pixel), and the last two convolutions as a
    `PhaseSpaceTail`; eval mode, no gradients."""

    def __init__(self, generator: Gan3dGenerator) -> None:
        super().__init__(generator.config)
        self.config: Gan3dConfig = generator.config
        pad, conv, *rest = generator.convs
        block: tuple[type[nn.Module], ...] = (nn.LeakyReLU, nn.BatchNorm3d, nn.Upsample)
        block += (nn.ConstantPad3d, nn.Conv3d)
        expected = block + block + (nn.LeakyReLU, nn.Conv3d, nn.ReLU)
        layers = (pad, conv, *rest)
        if not (
            isinstance(pad, nn.ConstantPad3d)
            and _is_plain_conv(conv)
            and len(rest) == len(expected)
            and all(isinstance(m, t) for m, t in zip(rest, expected, strict=True))
        ):
            kinds = ", ".join(type(m).__name__ for m in layers)
            raise TypeError(f"frozen(): unexpected gan3d generator layers ({kinds})")
        assert isinstance(conv, nn.Conv3d)
        dense = generator.dense
        like = dense.weight
        with torch.no_grad():
            # The images of the latent basis vectors are the matrix's columns.
            basis = _wide(dense.weight).T.reshape(-1, 8, 7, 7, 8)
            columns = functional.conv3d(pad(basis), _wide(conv.weight))
            bias = _wide(conv.bias) if conv.bias is not None else None
            offset = functional.conv3d(
                pad(_wide(dense.bias).view(1, 8, 7, 7, 8)), _wide(conv.weight), bias
            )
        self.features = tuple(columns.shape[1:])  # (64, 7, 7, 8)
        self.head = nn.Linear(
            dense.in_features, columns[0].numel(), device=like.device, dtype=like.dtype
        )
        with torch.no_grad():
            self.head.weight.copy_(columns.reshape(dense.in_features, -1).T)
            self.head.bias.copy_(offset.reshape(-1))
        self.middle = FastConv3dSequential(*copy.deepcopy(rest[:7]), upsample=True)
        upsample, tail_pad, first, activation, last, relu = rest[7:]
        self.tail = PhaseSpaceTail(upsample, tail_pad, first, activation, last)  # type: ignore[arg-type]
        self.relu = copy.deepcopy(relu)
        self.eval().requires_grad_(False)

    @property
    def noise_size(self) -> int:
        return self.config.latent_size

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        x = self.head(_conditioned(self.config, noise, conditions))
        x = self.middle(x.view(-1, *self.features))
        return self.relu(self.tail(x)).squeeze(1)


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
            Dropout(config.dropout),
        ]
        in_channels = 32
        for pad in (2, 2, 1):  # 25 -> 25 -> 25 -> 23 cells per axis
            blocks += [
                _pad3d(pad, pad, pad),
                nn.Conv3d(in_channels, 8, 5),
                nn.LeakyReLU(slope),
                nn.BatchNorm3d(8, eps=eps, momentum=momentum),
                Dropout(config.dropout),
            ]
            in_channels = 8
        blocks += [nn.AvgPool3d(2), nn.Flatten()]  # 8 x 11^3
        self.features = FastConv3dSequential(*blocks, channels_last=config.fast_discriminator)
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


# --- the sub-pixel rewrite of "nearest upsample -> zero pad -> convolution" -----------------
def _phase_taps(scale: int, kernel: int, like: Tensor) -> Tensor:
    """`(scale, taps, kernel)` 0/1 matrix: which original taps sum into each phase's taps.

    Along one axis, output j of "upsample by s, pad p before, convolve with w (k taps)" reads
    the upsampled cells j - p + t, i.e. the input cells (j - p + t) // s. With j - p = s q + r
    (phase r in [0, s)) that is input q + m for m = (r + t) // s: the output is a convolution
    of the input at position q with the phase-r kernel w_r[m] = sum of w[t] over (r + t) // s = m,
    of (s + k - 2) // s + 1 taps. Zero padding of the upsampled tensor is zero padding of the
    input (cell u lies outside [0, s n) exactly when u // s lies outside [0, n)).
    """
    taps = (scale + kernel - 2) // scale + 1
    r = torch.arange(scale, device=like.device)[:, None]
    t = torch.arange(kernel, device=like.device)[None, :]
    # Tensor ops only (no Python loop writing elements): torch.compile traces it as constants.
    matrix = functional.one_hot((r + t) // scale, taps)  # (scale, kernel, taps)
    return matrix.permute(0, 2, 1).to(like.dtype)


def upsample_conv3d(
    x: Tensor,
    scale: Sequence[int],
    padding: Sequence[int],
    weight: Tensor,
    bias: Tensor | None,
) -> Tensor:
    """`conv3d(pad(upsample_nearest(x, scale), padding), weight, bias)` without the upsample.

    x: `(N, C_in, D, H, W)`; scale: integer factors (D, H, W); padding: zero padding of the
    upsampled tensor in `functional.pad` order (W before, W after, H ..., D ...); weight, bias:
    those of a stride-1 `Conv3d` without padding of its own.

    Sub-pixel form (`_phase_taps`): one stride-1 convolution of the (zero-padded) input whose
    output channels are (C_out, phase D, phase H, phase W), with the phase kernels summed from
    `weight` inside the graph (a fixed linear map, so `weight` receives exactly the gradient of
    the plain path), then a pixel shuffle interleaves the phases and a crop takes the outputs
    the plain path has. Equal to it up to the rounding of the reordered sums.
    """
    input_pad, crops = _subpixel_geometry(scale, padding, weight.shape[2:], x.shape[2:])
    phase_weight, phase_bias = _subpixel_kernel(weight, bias, scale)
    y = functional.conv3d(functional.pad(x, input_pad), phase_weight, phase_bias)
    return _crop(_interleave(y, weight.shape[0], scale), crops)


def _subpixel_geometry(
    scale: Sequence[int], padding: Sequence[int], kernel: Sequence[int], size: Sequence[int]
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """For `upsample_conv3d` of an input of spatial `size`: the zero padding of the input in
    `functional.pad` order (a negative entry crops) and, per axis (D, H, W), where the plain
    path's outputs start in the interleaved phases and how many there are."""
    pads = ((padding[4], padding[5]), (padding[2], padding[3]), (padding[0], padding[1]))
    input_pad: list[tuple[int, int]] = []
    crops = []
    for axis in range(3):
        s, k, n = int(scale[axis]), int(kernel[axis]), int(size[axis])
        before, after = pads[axis]
        taps = (s + k - 2) // s + 1
        out = s * n + before + after - k + 1  # the plain path's output size
        q_first = -((before + s - 1) // s)  # input position of output 0's phase kernel
        q_last = (out - 1 - before) // s
        input_pad.append((-q_first, q_last + taps - n))
        crops.append((s * -q_first - before, out))
    (d0, d1), (h0, h1), (w0, w1) = input_pad
    return (w0, w1, h0, h1, d0, d1), tuple(crops)


def _subpixel_kernel(
    weight: Tensor, bias: Tensor | None, scale: Sequence[int]
) -> tuple[Tensor, Tensor | None]:
    """The phase kernels of `upsample_conv3d`: `(C_out x phases, C_in, taps...)`, and the bias
    repeated per phase."""
    n_out, n_in = weight.shape[:2]
    matrices = [_phase_taps(int(scale[a]), int(weight.shape[2 + a]), weight) for a in range(3)]
    with torch.autocast(weight.device.type, enabled=False):  # the taps summed in fp32
        phase_weight = torch.einsum("oiTUV,rmT,snU,tpV->orstimnp", weight, *matrices)
    n_phases = int(scale[0]) * int(scale[1]) * int(scale[2])  # no generator: traceable
    phase_weight = phase_weight.reshape(n_out * n_phases, n_in, *phase_weight.shape[-3:])
    phase_bias = None if bias is None else bias.repeat_interleave(n_phases)
    return phase_weight, phase_bias


def _interleave(y: Tensor, channels: int, scale: Sequence[int]) -> Tensor:
    """The pixel shuffle: `(N, channels x phases, Q_D, Q_H, Q_W)`, phases (D, H, W) innermost,
    to `(N, channels, s_D Q_D, s_H Q_H, s_W Q_W)`, cell s q + r from phase r at q."""
    sd, sh, sw = int(scale[0]), int(scale[1]), int(scale[2])
    n, _, qd, qh, qw = y.shape
    y = y.view(n, channels, sd, sh, sw, qd, qh, qw).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return y.reshape(n, channels, qd * sd, qh * sh, qw * sw)


def _crop(y: Tensor, crops: Sequence[tuple[int, int]]) -> Tensor:
    """`y[:, :, start : start + size, ...]` for the (start, size) of D, H and W."""
    (cd, od), (ch, oh), (cw, ow) = crops
    return y[:, :, cd : cd + od, ch : ch + oh, cw : cw + ow]


class PhaseSpaceTail(nn.Module):
    """`Upsample -> ConstantPad3d -> Conv3d -> activation -> Conv3d`, frozen, with the last
    convolution done on the phases, before they are interleaved.

    The sub-pixel convolution (`upsample_conv3d`) yields C channels x P phases on the coarse
    grid; the pixel shuffle of all C x P channels is a copy as large as the activation. A
    stride-1 convolution on the fine grid is a convolution on the coarse grid too: output
    cell s q' + r' with tap d reads cell s q' + r' + d, which is phase (r' + d) mod s at coarse
    q' + (r' + d) // s. So the last convolution runs on the C x P phase channels and gives its
    C' x P output phases, and only those (C' = 1 for gan3d) are interleaved. That convolution
    has P times the multiply-adds of the plain one (most of its weights are zero), and still
    costs less than the copy it removes: gan3d's frozen generator on OpenVINO, 2 CPU threads,
    ran 16 % faster this way (fp32; 14 % int8).

    Built from the layers of a generator, their weights copied (folded in float64, then
    rounded to the weights' dtype); `activation` must act element by element.
    """

    def __init__(
        self,
        upsample: nn.Upsample,
        pad: nn.ConstantPad3d,
        first: nn.Conv3d,
        activation: nn.Module,
        last: nn.Conv3d,
    ) -> None:
        super().__init__()
        factor = upsample.scale_factor
        factors = factor if isinstance(factor, tuple) else (factor,) * 3
        self.scale = tuple(int(f or 1) for f in factors)
        self.padding = tuple(int(p) for p in pad.padding)
        self.first_kernel = tuple(first.kernel_size)
        self.last_kernel = tuple(last.kernel_size)
        self.channels = last.out_channels
        like = first.weight
        with torch.no_grad():
            first_bias = None if first.bias is None else _wide(first.bias)
            first_weight, first_bias = _subpixel_kernel(_wide(first.weight), first_bias, self.scale)
            last_weight = _phase_space_kernel(_wide(last.weight), self.scale)
            last_bias = None
            if last.bias is not None:
                last_bias = _wide(last.bias).repeat_interleave(math.prod(self.scale))
        self.first = _frozen_conv(first_weight, first_bias, like)
        self.activation = copy.deepcopy(activation)
        self.last = _frozen_conv(last_weight, last_bias, like)

    def forward(self, x: Tensor) -> Tensor:
        input_pad, crops = _subpixel_geometry(
            self.scale, self.padding, self.first_kernel, x.shape[2:]
        )
        y = self.activation(self.first(functional.pad(x, input_pad)))
        # The last convolution's outputs o (valid) are the fine cells o + start of the first's
        # interleaved phases; pad the coarse grid at the end for those the crop drops.
        extra, out = [], []
        for axis, (start, size) in enumerate(crops):
            s, k = self.scale[axis], self.last_kernel[axis]
            out.append((start, size - k + 1))
            taps = (s + k - 2) // s + 1
            needed = (start + size - k) // s + taps
            extra.append(max(0, needed - int(y.shape[2 + axis])))
        z = self.last(functional.pad(y, (0, extra[2], 0, extra[1], 0, extra[0])))
        return _crop(_interleave(z, self.channels, self.scale), out)


def _wide(t: Tensor) -> Tensor:
    """`t` in float64 on the CPU, detached: weights are folded this way, so that only the
    final rounding to their own dtype differs from the exact composition."""
    return t.detach().to("cpu", torch.float64)


def _frozen_conv(weight: Tensor, bias: Tensor | None, like: Tensor) -> nn.Conv3d:
    """A `Conv3d` holding `weight` and `bias`, in the dtype and on the device of `like`."""
    kd, kh, kw = (int(k) for k in weight.shape[2:])
    conv = nn.Conv3d(
        weight.shape[1],
        weight.shape[0],
        (kd, kh, kw),
        bias=bias is not None,
        device=like.device,
        dtype=like.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            assert conv.bias is not None
            conv.bias.copy_(bias)
    return conv.requires_grad_(False)


def _phase_space_kernel(weight: Tensor, scale: Sequence[int]) -> Tensor:
    """`PhaseSpaceTail`'s last kernel: `(C_out x phases, C_in x phases, taps...)`.

    Along an axis, output phase r' with tap d reads input phase r = (r' + d) mod s at coarse
    offset m = (r' + d) // s: a 0/1 tensor `(r', d, r, m)` per axis, and the kernel is the
    weight contracted with the three of them; m takes (s + k - 2) // s + 1 values.
    """
    matrices = []
    for axis in range(3):
        s, k = int(scale[axis]), int(weight.shape[2 + axis])
        taps = (s + k - 2) // s + 1
        total = torch.arange(s)[:, None] + torch.arange(k)[None, :]  # r' + d
        index = (total % s) * taps + total // s
        matrix = functional.one_hot(index, s * taps).view(s, k, s, taps)
        matrices.append(matrix.to(weight.dtype))
    kernel = torch.einsum("oiDHW,aDrm,bHtn,eWup->oabeirtumnp", weight, *matrices)
    n_out, n_in, phases = weight.shape[0], weight.shape[1], math.prod(scale)
    return kernel.reshape(n_out * phases, n_in * phases, *kernel.shape[-3:])


def conv3d_taps_as_channels(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """`conv3d(x, weight, bias)` for a single input channel, with the W taps as channels.

    oneDNN's kernels for one input channel are slow (the input gradient worst: a 1-channel
    output). The k_W shifted copies of the input along W become k_W input channels, and the
    kernel (C_out, 1, kD, kH, kW) the kernel (C_out, kW, kD, kH, 1): the same products, summed
    in another order. Both in channels-last layout, the taps innermost.
    """
    k_w = weight.shape[-1]
    taps = x[:, 0].unfold(3, k_w, 1).permute(0, 4, 1, 2, 3)  # (N, kW, D, H, W - kW + 1)
    taps = taps.contiguous(memory_format=torch.channels_last_3d)
    kernel = weight.permute(0, 4, 2, 3, 1).contiguous(memory_format=torch.channels_last_3d)
    return functional.conv3d(taps, kernel, bias)


class FastConv3dSequential(nn.Sequential):
    """`nn.Sequential` of 3D layers with exact rewrites that change speed, not the function.

    upsample: each nearest `Upsample` [-> zero `ConstantPad3d`] -> `Conv3d` runs as one
    sub-pixel convolution (`upsample_conv3d`).
    channels_last: the activations are kept in channels-last layout (NDHWC), for which oneDNN
    has much faster kernels for these few-channel convolutions, and a `Conv3d` on one input
    channel runs with its W taps as channels (`conv3d_taps_as_channels`).

    The modules, parameters and state_dict keys are those of the plain `nn.Sequential`, so
    checkpoints load either way; the flags are not saved (the model config carries them).
    """

    def __init__(
        self, *modules: nn.Module, upsample: bool = False, channels_last: bool = False
    ) -> None:
        super().__init__(*modules)
        self.upsample = upsample
        self.channels_last = channels_last

    def extra_repr(self) -> str:
        return f"upsample={self.upsample}, channels_last={self.channels_last}"

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        layers = list(self)
        i = 0
        while i < len(layers):
            fused = _fusable(layers, i) if self.upsample else None
            layer = layers[i]
            if fused is not None:
                scale, padding, conv, i = fused
                x = upsample_conv3d(x, scale, padding, conv.weight, conv.bias)
            elif self.channels_last and _is_plain_conv(layer) and x.shape[1] == 1:
                assert isinstance(layer, nn.Conv3d)
                x = conv3d_taps_as_channels(x, layer.weight, layer.bias)
                i += 1
            else:
                x = layer(x)
                i += 1
        return x


def _is_plain_conv(layer: nn.Module) -> bool:
    """A stride-1, undilated, ungrouped `Conv3d` without padding of its own."""
    return (
        isinstance(layer, nn.Conv3d)
        and layer.stride == (1, 1, 1)
        and layer.dilation == (1, 1, 1)
        and layer.groups == 1
        and layer.padding == (0, 0, 0)
    )


def _fusable(
    layers: list[nn.Module], i: int
) -> tuple[tuple[int, int, int], tuple[int, ...], nn.Conv3d, int] | None:
    """(scale, padding, conv, index after the group) if `layers[i:]` starts with a nearest
    Upsample by integers, an optional zero ConstantPad3d and a plain stride-1 Conv3d."""
    up = layers[i]
    if not isinstance(up, nn.Upsample) or up.mode != "nearest" or up.size is not None:
        return None
    factor = up.scale_factor
    factors = tuple(factor) if isinstance(factor, tuple) else (factor,) * 3
    if len(factors) != 3 or any(f is None or float(f) != int(f) or f < 1 for f in factors):
        return None
    scale = (int(factors[0] or 1), int(factors[1] or 1), int(factors[2] or 1))
    j = i + 1
    padding: tuple[int, ...] = (0,) * 6
    if j < len(layers) and isinstance(layers[j], nn.ConstantPad3d):
        pad = layers[j]
        assert isinstance(pad, nn.ConstantPad3d)
        if pad.value != 0 or min(pad.padding) < 0:
            return None
        padding, j = tuple(int(p) for p in pad.padding), j + 1
    conv = layers[j] if j < len(layers) else None
    if not isinstance(conv, nn.Conv3d) or not _is_plain_conv(conv):
        return None
    return scale, padding, conv, j + 1
