"""flow-match: a two-stage conditional flow-matching model for any caloforge geometry.

The design of CaloFlow and CaloDREAM (systems.md, section 6), sized for CPUs:

1. Energies. The energy of each layer given the conditions: F = L + 1 numbers per shower
   (log E_tot / E_p and the log layer fractions, `flow_match_layout.Preprocessing`), and by
   default (`sparsity: count`) the number of hit cells of each layer (L more), from
   Gaussian noise, by conditional flow matching with a small residual MLP velocity field
   (`EnergyField`). This stage alone fixes the response, the resolution, the longitudinal
   profile and the correlations between layers.
2. Shapes. The cells of every layer normalised to the layer's energy (logit-transformed),
   given all layer energies and the conditions, by conditional flow matching with one MLP
   shared by all layers (`ShapeField`): each layer's velocity reads that layer's cells and
   its `neighbours` on each side, so the layers evolve jointly along the ODE; the shower
   (time, conditions, every layer energy) modulates the blocks (FiLM), with a learnt
   per-layer offset. An MLP over whole layers runs as large matrix products, the fastest
   arithmetic a CPU has. Its width is far below a layer's cell count, so what it cannot give
   is a sharp function of each cell's own value: a cell hit in a few showers in a hundred
   must split its noise into the empty band and its hits, and through the network alone it
   smears into faint ghost hits (showers too narrow, `benchmarks/flow_match.md`). A per-cell
   `shape_skip` (linear) and `shape_head` (tanh steps placed by the network, `CellHead`)
   give it that.

Both stages learn the rectified-flow path x_t = (1 - t) x_0 + t x_1 from noise x_0 to data
x_1 with the velocity target x_1 - x_0 (Lipman et al. 2023; Liu et al. 2023), and are sampled
with a fixed number of steps of a midpoint (or Heun, Euler) solver: many for the cheap stage
1, few for stage 2. Generation keeps each layer's stage-1 number of brightest cells
(`sparsity: count`; `band`: the cells the flow puts above the empty cells' band) and
renormalises every layer to stage 1's energy after the readout threshold, so the energy
bookkeeping is exact by construction and the sparsity is learnt by stage 1, with its
correlations to the energies, not smeared by a few-step ODE.

Training (`caloforge.training.steps.FlowMatchStep`): the two stages' flow-matching losses are
summed and minimised together, stage 2 seeing the true layer energies. Their parameters are
disjoint, so the sum's gradient is each stage's own, and Adam scales each parameter on its
own: one pass over a batch trains both as two separate runs would. An exponential moving
average (EMA) of the weights is kept inside the generator and is what eval mode (the physics
check, generation) runs.

Noise: `(N, F + L * C)` standard normal numbers, the starting points of both ODEs; the
sampling is deterministic given the noise.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from caloforge.devices import Distributed
from caloforge.models.base import (
    ModelConfig,
    ModelConfigError,
    ShowerGenerator,
    get_condition,
    register,
)
from caloforge.models.flow_match_layout import LayerLayout, Preprocessing

__all__ = [
    "CellHead",
    "EnergyField",
    "FlowMatchConfig",
    "FlowMatchGenerator",
    "FlowMatchSample",
    "ShapeField",
    "integrate",
]

Solver = Literal["euler", "midpoint", "heun"]


@register("flow-match")
@dataclass(frozen=True)
class FlowMatchConfig(ModelConfig):
    """Two-stage conditional flow matching on any geometry (its shape and conditions)."""

    required_conditions: ClassVar[tuple[str, ...]] = ("energy",)
    training_step: ClassVar[Literal["flow-matching"]] = "flow-matching"

    geometry: str = "clic-25"  # preset or YAML file: any readout (layers, summed, voxels)
    energy_hidden: int = 128  # width of the stage-1 (layer energies) MLP
    energy_blocks: int = 3  # its residual blocks
    shape_hidden: int = 256  # width of the stage-2 (cells per layer) MLP
    shape_blocks: int = 2  # its residual blocks
    neighbours: int = 1  # layers on each side whose cells stage 2 reads for a layer
    shape_skip: bool = False  # stage 2 adds a per-cell, time-dependent multiple of its input
    # to the velocity: the full-rank part a width-`shape_hidden` network cannot carry
    shape_head: int = 0  # > 0: each cell's velocity is a sum of this many tanh steps of its
    # own value (`CellHead`) placed by the network: the nonlinear function of its own value a
    # cell hit in few showers needs to split its noise into empty and hit, which a
    # width-`shape_hidden` network cannot give every cell (0: the network's output is the velocity)
    time_frequencies: int = 6  # sin/cos features of the flow time t
    alpha: float = 1.0e-6  # normalised cells u < alpha are empty (training: u ~ U[0, alpha))
    energy_eps: float = 1.0e-6  # log(E_layer / E_tot + energy_eps)
    energy_steps: int = 16  # solver steps of stage 1 (cheap)
    shape_steps: int = 3  # solver steps of stage 2 (the cost of generation)
    solver: Solver = "midpoint"  # midpoint and heun: 2 evaluations per step, euler 1
    ema_decay: float = 0.999  # EMA of the weights used in eval mode; 0: the raw weights
    fit_showers: int = 4096  # training showers that fix the preprocessing statistics
    threshold: float = 0.0  # GeV, cells below are empty; 0: the data's smallest cell
    hit_fraction: float = 0.0  # generation: cells below this share of their layer are
    # empty (a relative readout threshold); 0: none
    sparsity: Literal["count", "band"] = "count"  # count: stage 1 learns each layer's number
    # of hits, a layer keeps that many brightest cells; band: cells above alpha are hits
    empty: Literal["band", "floor", "below"] = "band"  # training value of an empty cell:
    # u ~ U[0, alpha) (band); or (count only) empty_gap to 2 empty_gap decades below the
    # faintest hit of its layer (floor); or (count only) each cell standardised by its hits
    # alone, its empty values empty_gap to empty_gap + 1 standard deviations below them
    # (below: the spread of a cell's hits is the flow's unit, not a part of it)
    empty_gap: float = 1.0  # decades (floor) or standard deviations (below), see `empty`

    def _check_values(self) -> None:
        for key in ("energy_hidden", "energy_blocks", "shape_hidden", "shape_blocks"):
            self._require(getattr(self, key) > 0, key, "a positive integer")
        for key in ("energy_steps", "shape_steps", "fit_showers"):
            self._require(getattr(self, key) > 0, key, "a positive integer")
        self._require(0 <= self.shape_head <= 4, "shape_head", "0 to 4")
        self._require(self.neighbours >= 0, "neighbours", "0 or more")
        self._require(self.time_frequencies >= 0, "time_frequencies", "0 or more")
        self._require(0 < self.alpha < 0.01, "alpha", "in (0, 0.01)")
        self._require(0 < self.energy_eps < 0.01, "energy_eps", "in (0, 0.01)")
        self._require(0 <= self.ema_decay < 1, "ema_decay", "in [0, 1)")
        self._require(self.threshold >= 0, "threshold", "0 or more (GeV)")
        self._require(0 <= self.hit_fraction < 0.1, "hit_fraction", "in [0, 0.1)")
        self._require(self.sparsity in ("count", "band"), "sparsity", "'count' or 'band'")
        self._require(
            self.empty in ("band", "floor", "below"), "empty", "'band', 'floor' or 'below'"
        )
        if self.empty != "band":
            self._require(self.sparsity == "count", "empty", "'band' unless sparsity is 'count'")
        self._require(0 < self.empty_gap <= 6, "empty_gap", "in (0, 6]")

    def _check_geometry(self) -> None:
        """Any shape: the geometry must only offer the primary energy."""
        geometry = self.resolved_geometry
        if not geometry.has_condition("energy"):
            raise ModelConfigError(
                f"model config '{self.family}': key 'geometry' names '{geometry.name}', which "
                "has no 'energy' condition"
            )

    def build_modules(self) -> dict[str, nn.Module]:
        return {"generator": FlowMatchGenerator(self)}


# --- velocity fields ------------------------------------------------------------------------
def time_features(t: Tensor, frequencies: int) -> Tensor:
    """`(N, 1 + 2 frequencies)`: t and sin/cos(pi 2^k t) for k < frequencies."""
    t = t[:, None]
    if frequencies == 0:
        return t
    scales = math.pi * 2.0 ** torch.arange(frequencies, device=t.device, dtype=t.dtype)
    return torch.cat([t, torch.sin(t * scales), torch.cos(t * scales)], dim=1)


class ResidualBlock(nn.Module):
    """x + W2 silu(W1 film(LayerNorm(x))), film(h) = h (1 + scale) + shift."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)

    def forward(self, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        h = self.norm(x) * (1 + scale) + shift
        return x + self.second(functional.silu(self.first(functional.silu(h))))


class EnergyField(nn.Module):
    """Stage 1: `field(x (N, F), t (N,), conditions (N, k)) -> velocity (N, F)`."""

    def __init__(self, features: int, conditions: int, config: FlowMatchConfig) -> None:
        super().__init__()
        width, self.frequencies = config.energy_hidden, config.time_frequencies
        context = 1 + 2 * config.time_frequencies + conditions
        self.input = nn.Linear(features + context, width)
        self.context = nn.Linear(context, 2 * width * config.energy_blocks)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(config.energy_blocks))
        self.output = nn.Linear(width, features)

    def forward(self, x: Tensor, t: Tensor, conditions: Tensor) -> Tensor:
        context = torch.cat([time_features(t, self.frequencies), conditions], dim=1)
        h = self.input(torch.cat([x, context], dim=1))
        films = self.context(functional.silu(context)).chunk(2 * len(self.blocks), dim=1)
        for i, block in enumerate(self.blocks):
            h = block(h, films[2 * i], films[2 * i + 1])
        return self.output(functional.silu(h))


class ShapeField(nn.Module):
    """Stage 2: `field(x (N, L, C), t (N,), shower (N, k + F), own (N, L, s)) -> (N, L, C)`.

    One MLP for every layer: its input is the layer's cells, those of `neighbours` layers on
    each side (zeros beyond the first and last) and the `s` standardised stage-1 features of
    the same layers (energy, hit count); the shower context (t, conditions, all stage-1
    features) and a learnt offset per layer scale and shift each block."""

    def __init__(
        self, n_layers: int, cells: int, shower: int, config: FlowMatchConfig, scalars: int = 1
    ) -> None:
        super().__init__()
        width, self.frequencies = config.shape_hidden, config.time_frequencies
        self.k, self.n_layers, self.scalars = config.neighbours, n_layers, scalars
        window = 2 * self.k + 1
        context = 1 + 2 * config.time_frequencies + shower
        self.input = nn.Linear(window * (cells + scalars), width)
        self.context = nn.Sequential(nn.Linear(context, width), nn.SiLU())
        self.film = nn.Linear(width, 2 * width * config.shape_blocks)
        self.layer_film = nn.Linear(n_layers, 2 * width * config.shape_blocks, bias=False)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(config.shape_blocks))
        self.head: CellHead | None = None
        if config.shape_head:
            self.head = CellHead(cells, config.shape_head, 1 + 2 * config.time_frequencies)
        self.output = nn.Linear(width, cells * (1 + 2 * config.shape_head))
        self.skip: nn.Linear | None = None
        if config.shape_skip:  # v += x * skip(t): a factor per cell and flow time
            self.skip = nn.Linear(1 + 2 * config.time_frequencies, cells)

    def forward(self, x: Tensor, t: Tensor, shower: Tensor, own: Tensor) -> Tensor:
        h = self._input(x, own)  # (N, L, width)
        times = time_features(t, self.frequencies)
        context = self.context(torch.cat([times, shower], dim=1))
        films = self.film(context)[:, None] + self.layer_film.weight.T  # (N, L, 2 width B)
        parts = films.chunk(2 * len(self.blocks), dim=2)
        for i, block in enumerate(self.blocks):
            h = block(h, parts[2 * i], parts[2 * i + 1])
        v = self.output(functional.silu(h))
        if self.head is not None:
            v = self.head(x, v, times)
        if self.skip is not None:
            v = v + x * self.skip(times)[:, None, :]
        return v

    def _input(self, x: Tensor, own: Tensor) -> Tensor:
        """`self.input` of the rows [cells, own features] of layers l - k .. l + k (zeros
        beyond the first and last), without building them: one product of every layer's
        cells and features with the window's weights stacked, then the window's parts summed
        with their shifts."""
        n_layers = x.shape[1]
        window = 2 * self.k + 1
        weight = self.input.weight.view(-1, window, x.shape[2] + self.scalars).transpose(0, 1)
        width = weight.shape[1]
        rows = torch.cat([x, own], dim=2)  # (N, L, C + s)
        parts = functional.linear(rows, weight.reshape(window * width, -1))
        parts = parts.view(-1, x.shape[1], window, width)  # (N, L, w, H)
        h = parts[:, :, self.k] + self.input.bias
        for i in range(window):
            d = i - self.k  # part i of layer l reads layer l + d
            if d < 0:
                h = h + functional.pad(parts[:, : n_layers + d, i], (0, 0, -d, 0))
            elif d > 0:
                h = h + functional.pad(parts[:, d:, i], (0, 0, 0, d))
        return h


class CellHead(nn.Module):
    """`head(x (N, L, C), codes (N, L, (1 + 2 k) C), times (N, T)) -> (N, L, C)`: each
    cell's velocity, a + sum_u b_u tanh(s_u (x - m_u)) over k steps u, a nonlinear function
    of the cell's own value x whose offset a, heights b_u and centres m_u the network gives
    per cell and shower (its codes: all offsets, then each step's heights, then each step's
    centres); the slopes s_u are learnt per cell, scaled by the flow time. Elementwise: it
    costs a few passes over the cells, no product per cell."""

    def __init__(self, cells: int, units: int, times: int) -> None:
        super().__init__()
        self.units, self.cells = units, cells
        self.log_slope = nn.Parameter(torch.zeros(units, cells))
        self.time = nn.Linear(times, units)
        nn.init.zeros_(self.time.weight)
        nn.init.zeros_(self.time.bias)

    def forward(self, x: Tensor, codes: Tensor, times: Tensor) -> Tensor:
        # slices of the last axis, no reshape: a traced graph keeps N free
        c, k = self.cells, self.units
        v = codes[..., :c]
        scales = self.time(times)  # (N, k)
        for u in range(k):
            height = codes[..., (1 + u) * c : (2 + u) * c]
            centre = codes[..., (1 + k + u) * c : (2 + k + u) * c]
            slope = torch.exp(self.log_slope[u] + scales[:, u, None, None])  # (N, 1, C)
            v = v + height * torch.tanh(slope * (x - centre))
        return v


def integrate(
    field: Callable[[Tensor, Tensor], Tensor], x: Tensor, steps: int, solver: Solver
) -> Tensor:
    """x(1) of dx/dt = field(x, t) from x(0) = `x`, in `steps` equal steps of `solver`."""
    dt = 1.0 / steps
    first = x
    while first.dim() > 1:  # slices, not a reshape: a traced graph keeps N free
        first = first[..., 0]
    zero = first * 0  # (N,)
    for i in range(steps):
        t = zero + i * dt
        v = field(x, t)
        if solver == "euler":
            x = x + dt * v
        elif solver == "midpoint":
            x = x + dt * field(x + 0.5 * dt * v, t + 0.5 * dt)
        else:  # heun
            v_end = field(x + dt * v, t + dt)
            x = x + 0.5 * dt * (v + v_end)
    return x


# --- the generator --------------------------------------------------------------------------
def _as_buffers(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters are buffers of the same names (the EMA's store)."""
    module = copy.deepcopy(module)
    for m in module.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            delattr(m, name)
            m.register_buffer(name, p.detach().clone())
    return module


def _sums(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per column, the sum and the sum of squares of `x` `(N, ...)` in float64."""
    x = x.double()
    return x.sum(0), (x * x).sum(0)


class FlowMatchSample(NamedTuple):
    """A generated batch: `showers` (N, *geometry.shape) GeV, `layer_energy` (N, L) GeV, the
    stage-1 energies each layer of `showers` sums to."""

    showers: Tensor
    layer_energy: Tensor


class FlowMatchGenerator(ShowerGenerator):
    """`generator(noise (N, F + L C), conditions) -> showers (N, *geometry.shape)` in GeV.

    In training mode with `showers` given, `forward` returns the two stages' flow-matching
    losses `(2,)` instead (energies, shapes): the training step calls it so, through DDP,
    which synchronises gradients only of what runs in `forward`. `draws` `(N, 2 + L C)`
    uniform in [0, 1) (`sample_draws`) are the flow times of the two stages and the
    dequantisation of the empty cells.
    """

    ema_updates: Tensor
    # The exporter traces the solver unrolled, every network call of every step: 98 s of the
    # 125 s that `compiled` took before its first batch (preset, 2 cores).
    compile_seconds = 120.0

    def __init__(self, config: FlowMatchConfig) -> None:
        super().__init__(config)
        self.config: FlowMatchConfig = config
        geometry = config.resolved_geometry
        self.geometry_shape = tuple(int(s) for s in geometry.shape)
        self.names = geometry.condition_names
        self.sizes = tuple(geometry.condition(c).size for c in self.names)
        self.layout = LayerLayout(geometry)
        n_layers, cells = self.layout.n_layers, self.layout.layer_cells
        counts = config.sparsity == "count"
        self.n_features = n_layers + 1 + (n_layers if counts else 0)
        columns = sum(self.sizes)
        self.prep = Preprocessing(
            n_layers,
            cells,
            columns,
            alpha=config.alpha,
            energy_eps=config.energy_eps,
            hit_fraction=config.hit_fraction,
            counts=counts,
            empty=config.empty,
            empty_gap=config.empty_gap,
        )
        self.energy_net = EnergyField(self.n_features, columns, config)
        scalars = 2 if counts else 1
        self.shape_net = ShapeField(n_layers, cells, columns + self.n_features, config, scalars)
        # The EMA copies hold their weights as buffers: saved with the model, never trained
        # (the generator's parameters are the trained weights alone). They take the trained
        # weights at the first update (`ema_updates` counts them).
        self.ema = nn.ModuleDict(
            {"energy_net": _as_buffers(self.energy_net), "shape_net": _as_buffers(self.shape_net)}
        )
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self._ema_resolved = False  # frozen(): the networks already hold the EMA weights
        self.shape_frozen = False  # freeze_shape(): stage 2 no longer trains

    @property
    def noise_size(self) -> int:
        return self.n_features + self.layout.n_layers * self.layout.layer_cells

    @property
    def condition_names(self) -> tuple[str, ...]:
        return tuple(self.names)

    @property
    def shower_shape(self) -> tuple[int, ...]:
        return self.geometry_shape

    # -- conditions and data --
    def condition_columns(self, conditions: Mapping[str, Tensor], n: int, like: Tensor) -> Tensor:
        """Raw condition columns `(N, k)`: log E / GeV, then the others in geometry order."""
        columns = []
        for name, size in zip(self.names, self.sizes, strict=True):
            value = get_condition(conditions, name, n, size, like)
            columns.append(torch.log(value) if name == "energy" else value)
        return torch.cat(columns, dim=1)

    # -- training --
    def forward(
        self,
        noise: Tensor,
        conditions: Mapping[str, Tensor],
        showers: Tensor | None = None,
        draws: Tensor | None = None,
    ) -> Tensor:
        if showers is None:
            return self.sample(noise, conditions).showers
        if draws is None:
            raise ValueError("flow-match: training forward needs `draws` (sample_draws)")
        return self.losses(noise, conditions, showers, draws)

    def sample_draws(self, n: int, generator: torch.Generator) -> Tensor:
        """`(n, 2 + L C)` uniform numbers for training: flow times, dequantisation."""
        size = 2 + self.layout.n_layers * self.layout.layer_cells
        draws = torch.rand((n, size), generator=generator, device=generator.device)
        return draws.to(self.prep.cell_mean.device, self.prep.cell_mean.dtype)

    def losses(
        self, noise: Tensor, conditions: Mapping[str, Tensor], showers: Tensor, draws: Tensor
    ) -> Tensor:
        """`(2,)`: mean squared error of the stage-1 and stage-2 velocities on `showers`
        (GeV) with their conditions, from `noise` and `draws` (`sample_draws`)."""
        n = showers.shape[0]
        energy = self.condition_columns(conditions, n, showers)
        cond = self.prep.condition_vector(energy)
        cells = self.layout.to_layers(showers)
        layer_energy = cells.sum(dim=2)
        e_target = self.prep.standardise_energy(
            self.prep.energy_features(
                layer_energy, torch.exp(energy[:, 0]), self.prep.hit_counts(cells)
            )
        )
        e_noise, c_noise = self._split(noise)
        t1, t2 = draws[:, 0], draws[:, 1]
        x1 = (1 - t1[:, None]) * e_noise + t1[:, None] * e_target
        loss_e = functional.mse_loss(self.energy_net(x1, t1, cond), e_target - e_noise)
        if self.shape_frozen:  # stage 2 is not run: no gradient reaches it, none is computed
            return torch.stack([loss_e, torch.zeros_like(loss_e)])
        uniform = draws[:, 2:].reshape(cells.shape)
        c_target = self.prep.cells_forward(cells, layer_energy, uniform)
        x2 = (1 - t2[:, None, None]) * c_noise + t2[:, None, None] * c_target
        own = self.prep.layer_features(e_target)
        v2 = self.shape_net(x2, t2, torch.cat([cond, e_target], dim=1), own)
        error = (v2 - (c_target - c_noise)) ** 2
        if self.layout.padded:
            loss_c = (error * self.layout.mask).sum() / (n * self.layout.mask.sum())
        else:
            loss_c = error.mean()
        return torch.stack([loss_e, loss_c])

    def _split(self, noise: Tensor) -> tuple[Tensor, Tensor]:
        layers, cells = self.layout.n_layers, self.layout.layer_cells
        return noise[:, : self.n_features], noise[:, self.n_features :].reshape(-1, layers, cells)

    @torch.no_grad()
    def fit_preprocessing(
        self, batches: Iterable[tuple[Tensor, Mapping[str, Tensor]]], context: Distributed
    ) -> dict[str, float]:
        """Fit the standardisation statistics and (unless the config sets one) the readout
        threshold on the first `fit_showers` showers of `batches` (GeV; under DDP each
        rank's, summed over the ranks). Returns what was fitted, for the log."""
        prep, layout = self.prep, self.layout
        sums: list[Tensor] | None = None
        count, smallest = 0, math.inf
        rng = torch.Generator().manual_seed(0)  # the dequantisation of the fit
        for showers, conditions in batches:
            showers = showers.to(prep.cell_mean.device, prep.cell_mean.dtype)
            n = showers.shape[0]
            columns = self.condition_columns(conditions, n, showers)
            cells = layout.to_layers(showers)
            layer_energy = cells.sum(dim=2)
            features = prep.energy_features(
                layer_energy, torch.exp(columns[:, 0]), prep.hit_counts(cells)
            )
            uniform = torch.rand(cells.shape, generator=rng).to(cells.device, cells.dtype)
            batch_sums = [
                *_sums(features),
                *prep.cell_sums(cells, layer_energy, uniform),
                *_sums(columns),
            ]
            sums = (
                batch_sums
                if sums is None
                else [a + b for a, b in zip(sums, batch_sums, strict=True)]
            )
            hits = showers[showers > 0]
            if hits.numel():
                smallest = min(smallest, float(hits.min()))
            count += n
            if count >= self.config.fit_showers:
                break
        if sums is None:
            raise ValueError("flow-match: no training showers to fit the preprocessing on")
        if context.enabled:
            import torch.distributed as dist

            flat = torch.cat([s.reshape(-1) for s in sums] + [sums[0].new_tensor([count])])
            flat = flat.to(context.device)
            dist.all_reduce(flat)
            low = torch.tensor([smallest], dtype=torch.float64, device=context.device)
            dist.all_reduce(low, op=dist.ReduceOp.MIN)
            smallest, count = float(low.item()), int(flat[-1].item())
            offset, gathered = 0, []
            for s in sums:
                gathered.append(flat[offset : offset + s.numel()].view_as(s).cpu())
                offset += s.numel()
            sums = gathered
        threshold = self.config.threshold or (0.0 if math.isinf(smallest) else smallest)
        like = prep.cell_mean
        prep.fit([s.to(like.device) for s in sums], count, threshold)
        return {"fit_showers": count, "threshold_gev": threshold}

    @torch.no_grad()
    def update_ema(self) -> None:
        """Move the EMA weights towards the trained ones (copy them at the first call)."""
        decay = self.config.ema_decay if int(self.ema_updates) > 0 else 0.0
        for name in ("energy_net",) if self.shape_frozen else ("energy_net", "shape_net"):
            average = dict(self.ema[name].named_buffers())
            for key, p in getattr(self, name).named_parameters():
                average[key].lerp_(p.detach(), 1.0 - decay)
        self.ema_updates += 1

    def freeze_shape(self) -> None:
        """Stop training stage 2: its weights (and their EMA) stay as they are, the training
        loss no longer runs it (its term reads 0). For a run whose cell shapes were best
        before its layer energies (`training.shape_patience`)."""
        self.shape_frozen = True
        self.shape_net.requires_grad_(False)

    def _nets(self) -> tuple[nn.Module, nn.Module]:
        """The networks that generate: the EMA in eval mode once it exists."""
        if self._ema_resolved:
            return self.energy_net, self.shape_net
        if not self.training and self.config.ema_decay > 0 and int(self.ema_updates) > 0:
            return self.ema["energy_net"], self.ema["shape_net"]
        return self.energy_net, self.shape_net

    def frozen(self, device_type: str | None = None) -> ShowerGenerator:
        """An eval copy whose networks hold the weights eval mode generates with (the EMA
        once it exists), so that nothing in `forward` depends on a buffer's value (what
        `torch.export` and the compiled backends need). Same function as eval mode."""
        copy_ = copy.deepcopy(self).eval()
        with torch.no_grad():
            if self.config.ema_decay > 0 and int(self.ema_updates) > 0:
                for name in ("energy_net", "shape_net"):
                    average = dict(copy_.ema[name].named_buffers())
                    for key, p in getattr(copy_, name).named_parameters():
                        p.copy_(average[key])
        copy_._ema_resolved = True
        return copy_.requires_grad_(False)

    # -- generation --
    def sample(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> FlowMatchSample:
        """Showers (GeV) and the stage-1 layer energies they sum to, from `noise`."""
        cfg, prep = self.config, self.prep
        n = noise.shape[0]
        energy_net, shape_net = self._nets()
        columns = self.condition_columns(conditions, n, noise)
        cond = prep.condition_vector(columns)
        e_noise, c_noise = self._split(noise)
        z = integrate(lambda x, t: energy_net(x, t, cond), e_noise, cfg.energy_steps, cfg.solver)
        primary = torch.exp(columns[:, 0])
        raw = prep.unstandardise_energy(z)
        layer_energy = prep.layer_energies(raw, primary)
        counts = prep.counts_from_features(raw, layer_energy)
        # Stage 2 sees the features of the energies (and counts) it must match, as in training.
        features = prep.standardise_energy(prep.energy_features(layer_energy, primary, counts))
        shower, own = torch.cat([cond, features], dim=1), prep.layer_features(features)
        y = integrate(
            lambda x, t: shape_net(x, t, shower, own), c_noise, cfg.shape_steps, cfg.solver
        )
        cells = prep.cells_inverse(y, layer_energy, self.layout.mask, counts)
        return FlowMatchSample(self.layout.from_layers(cells), layer_energy)
