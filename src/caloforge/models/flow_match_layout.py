"""What `flow-match` learns in: the showers of any geometry as layers of cells, and the two
invertible preprocessings of its stages (fitted on training showers, kept as buffers).

Layout (`LayerLayout`): a shower `(N, *geometry.shape)` becomes `(N, L, C)`, L layers of at most
C cells, and back. Per-layer grids `(nx, ny, L)` give L layers of nx * ny cells; depth-summed
grids `(nx, ny)` one layer; voxel geometries (CaloChallenge, CaloGAN) the layers their `extra`
describes (cells ordered layer by layer), shorter layers padded with cells that are always
empty and masked out of the loss; a voxel geometry that describes no layers is one layer.

Stage 1 (energies) learns, per shower, F = L + 1 numbers: log(E_tot / E_p) and, per layer,
log(E_l / E_tot + eps); with `counts`, also L more: log(1 + n_l), n_l the number of hit cells
of layer l, so that the sparsity of each layer is learnt with the energies (its spread and
its correlations with them), not left to where a few-step flow lands. Each feature is
standardised by the training showers' mean and spread.
Stage 2 (shapes) learns the cells of each layer divided by that layer's energy, u in [0, 1],
as logit(a + (1 - 2 a) u) with a = alpha / 100 (the CaloFlow preprocessing), standardised per
cell. Empty cells are dequantised: in training each gets u drawn uniformly in [0, alpha), a
band the flow can fill (a point mass, which a few-step ODE can only smear, would come out as
thousands of tiny spurious hits). In generation a layer keeps its n_l brightest cells (with
`counts`), else the cells above alpha; alpha lies below almost every hit of the data
(clic-25: 99 % of hits have u > 1.7e-5).

Empty cells (`empty`, with `counts`): `band` as above; `floor` puts them a few decades below
the faintest hit of their layer; `below` standardises each cell by its hits alone and puts
its empty values in a band under them. With `band` or `floor`, a cell that is sometimes empty
has two modes of its logit, so its standardisation squeezes the spread of its hits into a
part of the flow's unit scale (Geant4 clic-25, layer 14, two cells off axis: 2.7 logit units
of spread with the floor, 1.2 of its hits alone), and an error of the flow's velocity there
is a larger error of the cell's energy. With `below` the hits of every cell fill the unit
scale, and a layer keeps the n_l cells that lie furthest above their own empty values, in
their own hits' units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from caloforge.geometry import Geometry

__all__ = ["LayerLayout", "Preprocessing", "layer_sizes"]


def layer_sizes(geometry: Geometry) -> list[int]:
    """Cells per layer, in the order the flat shower holds them."""
    shape = tuple(int(s) for s in geometry.shape)
    if geometry.readout == "layers":
        return [shape[0] * shape[1]] * shape[2]
    if geometry.readout == "summed":
        return [math.prod(shape)]
    sizes: list[int] = []
    for layer in geometry.extra.get("layers") or ():
        if "shape" in layer:
            sizes.append(math.prod(int(s) for s in layer["shape"]))
        elif "r_edges" in layer and "n_bin_alpha" in layer:
            sizes.append(max(len(layer["r_edges"]) - 1, 0) * int(layer["n_bin_alpha"]))
        else:
            return [geometry.n_cells]
    sizes = [s for s in sizes if s > 0]
    return sizes if sizes and sum(sizes) == geometry.n_cells else [geometry.n_cells]


class LayerLayout(nn.Module):
    """`to_layers(showers) -> (N, L, C)` and `from_layers(cells) -> (N, *shape)`; `mask`
    `(L, C)` is True for real cells (False for padding). No parameters, no saved state."""

    gather: Tensor
    scatter: Tensor
    mask: Tensor

    def __init__(self, geometry: Geometry) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in geometry.shape)
        self.n_cells = geometry.n_cells
        sizes = layer_sizes(geometry)
        self.n_layers, self.layer_cells = len(sizes), max(sizes)
        self.grid = geometry.readout == "layers"
        # gather: slot (l, c) of the layered view reads flat cell gather[l, c]; padding reads
        # the extra zero appended at index n_cells. scatter: flat cell i is slot scatter[i].
        gather = torch.full((self.n_layers, self.layer_cells), self.n_cells, dtype=torch.long)
        start = 0
        for layer, size in enumerate(sizes):
            gather[layer, :size] = torch.arange(start, start + size)
            start += size
        mask = gather < self.n_cells
        scatter = torch.nonzero(mask.reshape(-1)).squeeze(1)
        self.register_buffer("gather", gather.reshape(-1), persistent=False)
        self.register_buffer("scatter", scatter, persistent=False)
        self.register_buffer("mask", mask, persistent=False)
        self.padded = not bool(mask.all())

    def to_layers(self, showers: Tensor) -> Tensor:
        n = showers.shape[0]
        if self.grid:  # (N, x, y, L) -> (N, L, x * y)
            return showers.permute(0, 3, 1, 2).reshape(-1, self.n_layers, self.layer_cells)
        flat = showers.reshape(-1, self.n_cells)
        if not self.padded:
            return flat.view(-1, self.n_layers, self.layer_cells)
        flat = torch.cat([flat, flat.new_zeros(n, 1)], dim=1)
        return flat[:, self.gather].view(-1, self.n_layers, self.layer_cells)

    def from_layers(self, cells: Tensor) -> Tensor:
        if self.grid:
            nx, ny, n_layers = self.shape
            return cells.reshape(-1, n_layers, nx, ny).permute(0, 2, 3, 1).contiguous()
        flat = cells.flatten(1)
        if self.padded:
            flat = flat[:, self.scatter]
        return flat.reshape(-1, *self.shape)


class Preprocessing(nn.Module):
    """The standardisation statistics of both stages and of the conditions, and the readout
    threshold: buffers, fitted by `fit` on training showers and saved with the weights.

    conditions: the geometry's condition columns; energy enters as log(E / GeV).
    """

    energy_mean: Tensor
    energy_std: Tensor
    cell_mean: Tensor
    cell_std: Tensor
    condition_mean: Tensor
    condition_std: Tensor
    threshold: Tensor
    fitted: Tensor

    def __init__(
        self,
        n_layers: int,
        layer_cells: int,
        condition_columns: int,
        *,
        alpha: float,
        energy_eps: float,
        hit_fraction: float | None = None,
        counts: bool = False,
        empty: str = "band",
        empty_gap: float = 1.0,
    ) -> None:
        super().__init__()
        if empty != "band" and not counts:
            raise ValueError(f"flow-match: empty cells '{empty}' need the learnt hit counts")
        self.alpha, self.energy_eps = alpha, energy_eps
        self.empty, self.empty_gap = empty, empty_gap
        self.hit_fraction = hit_fraction or 0.0
        self.n_layers, self.layer_cells, self.counts = n_layers, layer_cells, counts
        features = n_layers + 1 + (n_layers if counts else 0)
        self.register_buffer("energy_mean", torch.zeros(features))
        self.register_buffer("energy_std", torch.ones(features))
        self.register_buffer("cell_mean", torch.zeros(n_layers, layer_cells))
        self.register_buffer("cell_std", torch.ones(n_layers, layer_cells))
        self.register_buffer("condition_mean", torch.zeros(condition_columns))
        self.register_buffer("condition_std", torch.ones(condition_columns))
        self.register_buffer("threshold", torch.zeros(()))  # GeV
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # -- stage 1 --
    def energy_features(
        self, layer_energy: Tensor, energy: Tensor, hits: Tensor | None = None
    ) -> Tensor:
        """Raw (unstandardised) stage-1 features `(N, F)` of layer energies `(N, L)` GeV and
        primary energies `(N,)` GeV; with `counts`, `hits` `(N, L)` are the layers' numbers of
        hit cells (`hit_counts` of the cells)."""
        total = layer_energy.sum(dim=1)
        tiny = torch.finfo(layer_energy.dtype).tiny
        log_total = torch.log(total.clamp_min(tiny) / energy)
        fractions = layer_energy / total.clamp_min(tiny)[:, None]
        parts = [log_total[:, None], torch.log(fractions + self.energy_eps)]
        if self.counts:
            if hits is None:
                raise ValueError("flow-match: the stage-1 features need the layers' hit counts")
            parts.append(torch.log1p(hits.to(layer_energy.dtype)))
        return torch.cat(parts, dim=1)

    @staticmethod
    def hit_counts(cells: Tensor) -> Tensor:
        """`(N, L)`: the hit (non-zero) cells of each layer of `cells` `(N, L, C)`."""
        return (cells > 0).sum(dim=2)

    def layer_features(self, features: Tensor) -> Tensor:
        """`(N, L, 1 or 2)`: each layer's own stage-1 features (energy, and hit count)."""
        layers = self.n_layers
        own = [features[:, 1 : 1 + layers]]
        if self.counts:
            own.append(features[:, 1 + layers : 1 + 2 * layers])
        return torch.stack(own, dim=2)

    def counts_from_features(self, features: Tensor, layer_energy: Tensor) -> Tensor | None:
        """With `counts`: the hit counts `(N, L)` of raw stage-1 features, whole numbers in
        [1, C] for a layer with energy and 0 for an empty one; else None."""
        if not self.counts:
            return None
        layers = self.n_layers
        counts = torch.round(torch.expm1(features[:, 1 + layers : 1 + 2 * layers]))
        counts = counts.clamp(1, self.layer_cells)
        return torch.where(layer_energy > 0, counts, 0.0)

    def layer_energies(self, features: Tensor, energy: Tensor) -> Tensor:
        """Layer energies `(N, L)` GeV from raw stage-1 features: the total from the first,
        the fractions (clamped at 0, layers below the threshold emptied, renormalised) from
        the next L, so that the layers sum exactly to the total."""
        total = energy * torch.exp(features[:, 0])
        fractions = torch.exp(features[:, 1 : 1 + self.n_layers]) - self.energy_eps
        fractions = fractions.clamp_min(0.0)
        fractions = fractions / fractions.sum(dim=1, keepdim=True).clamp_min(1e-30)
        keep = total[:, None] * fractions >= self.threshold
        fractions = torch.where(keep, fractions, 0.0)
        fractions = fractions / fractions.sum(dim=1, keepdim=True).clamp_min(1e-30)
        return total[:, None] * fractions

    def standardise_energy(self, features: Tensor) -> Tensor:
        return (features - self.energy_mean) / self.energy_std

    def unstandardise_energy(self, z: Tensor) -> Tensor:
        return z * self.energy_std + self.energy_mean

    # -- stage 2 --
    @property
    def offset(self) -> float:
        """The logit's offset a: logit(a + (1 - 2 a) u)."""
        return self.alpha / 100

    def cell_logits(self, cells: Tensor, layer_energy: Tensor, uniform: Tensor) -> Tensor:
        """Raw logits `(N, L, C)` of cells `(N, L, C)` GeV normalised per layer; empty cells
        take fractions alpha * `uniform` (`(N, L, C)` in [0, 1))."""
        u = cells / layer_energy.clamp_min(1e-30)[..., None]
        empty = self.alpha * uniform
        if self.empty == "floor":  # empty_gap to 2 empty_gap decades below the faintest hit
            faintest = torch.where(cells > 0, u, torch.inf).amin(dim=2, keepdim=True)
            faintest = torch.where(torch.isinf(faintest), self.alpha, faintest.clamp(max=1.0))
            empty = faintest * torch.pow(10.0, -self.empty_gap * (1.0 + uniform))
        u = torch.where(cells > 0, u.clamp(0.0, 1.0), empty)
        a = self.offset
        # 1 - s written out: exact for u = 1 (a layer's only hit), where s rounds to 1.
        return torch.log(a + (1 - 2 * a) * u) - torch.log(a + (1 - 2 * a) * (1 - u))

    def cells_forward(self, cells: Tensor, layer_energy: Tensor, uniform: Tensor) -> Tensor:
        """Standardised logits `(N, L, C)` of cells `(N, L, C)` GeV (see `cell_logits`).

        `below`: each cell's hits standardised by the statistics of its hits, no lower than
        -empty_gap; its empty values drawn in [-empty_gap - 1, -empty_gap)."""
        z = (self.cell_logits(cells, layer_energy, uniform) - self.cell_mean) / self.cell_std
        if self.empty == "below":
            gap = self.empty_gap
            z = torch.where(cells > 0, z.clamp_min(-gap), -gap - uniform)
        return z

    def cell_sums(self, cells: Tensor, layer_energy: Tensor, uniform: Tensor) -> list[Tensor]:
        """What `fit` accumulates of cells `(N, L, C)` GeV for the cell statistics, summed
        over the showers in float64: the logits' sum and sum of squares; `below`, the same
        of the hits alone and the number of hits."""
        logits = self.cell_logits(cells, layer_energy, uniform).double()
        if self.empty != "below":
            return [logits.sum(0), (logits * logits).sum(0)]
        hit = (cells > 0).double()
        return [(logits * hit).sum(0), (logits * logits * hit).sum(0), hit.sum(0)]

    def cells_inverse(
        self, z: Tensor, layer_energy: Tensor, mask: Tensor, counts: Tensor | None = None
    ) -> Tensor:
        """Cells `(N, L, C)` in GeV from standardised logits: each layer's cells sum exactly
        (to rounding) to `layer_energy` `(N, L)`.

        A layer keeps its `counts` `(N, L)` brightest cells when they are given, else the
        cells whose fraction is above alpha (outside the empty cells' band); of those, a
        cell is empty when its share of the layer's kept cells is below `hit_fraction` (a
        relative readout threshold; 0: none) or its energy below the readout threshold. The
        brightest cell of a layer always stays, so a layer with energy is never emptied. The
        kept fractions are renormalised to 1: kept cells only grow, and stay above both
        thresholds.
        """
        a = self.offset
        u = (torch.sigmoid(z * self.cell_std + self.cell_mean) - a) / (1 - 2 * a)
        u = torch.where(mask, u.clamp_min(0.0), 0.0)
        brightest = u == u.amax(dim=2, keepdim=True)
        if counts is None:
            chosen = u >= self.alpha  # the flow's own decision: above the band
        else:  # the n_l brightest: at or above the n_l-th largest fraction of the layer;
            # below: the n_l cells furthest above their empty values, in their own hits' units
            # (by fraction, a bright cell's empty value can outrank a faint cell's hit)
            score = torch.where(mask, z if self.empty == "below" else u, -torch.inf)
            ranked = torch.sort(score, dim=2, descending=True).values
            last = (counts.long() - 1).clamp_min(0)[..., None]
            chosen = (score >= ranked.gather(2, last)) & (counts[..., None] > 0) & mask
        hits = torch.where(chosen, u, 0.0)
        share = hits / hits.sum(dim=2, keepdim=True).clamp_min(1e-30)
        keep = (hits > 0) & (share >= self.hit_fraction)
        keep = keep & (share * layer_energy[..., None] >= self.threshold)
        weight = torch.where(keep | brightest, u.clamp_min(1e-30), 0.0)
        weight = torch.where(mask, weight, 0.0)
        return layer_energy[..., None] * weight / weight.sum(dim=2, keepdim=True)

    # -- conditions --
    def condition_vector(self, columns: Tensor) -> Tensor:
        """Standardised condition columns `(N, k)` (energy already as log E)."""
        return (columns - self.condition_mean) / self.condition_std

    # -- fitting --
    @torch.no_grad()
    def fit(self, sums: Sequence[Tensor], count: int, threshold: float) -> None:
        """Set the statistics from accumulated sums over `count` showers: the energy
        features' sum and sum of squares, the cells' `cell_sums`, the condition columns' sum
        and sum of squares, in this order; `threshold` (GeV) is the readout threshold."""
        cells = 3 if self.empty == "below" else 2  # the cells' part of `sums`
        # A scale floor per kind: a cell hit once in thousands of showers has a tiny spread
        # of its logit and would put its hits tens of sigmas out, so cells get at least one
        # logit unit; a constant feature or condition gets unit scale.
        _set_statistics(self.energy_mean, self.energy_std, sums[0], sums[1], count, 1e-3)
        if self.empty == "below":
            self._fit_hits(sums[2], sums[3], sums[4])
        else:
            _set_statistics(self.cell_mean, self.cell_std, sums[2], sums[3], count, 1.0)
        total, squares = sums[2 + cells], sums[3 + cells]
        _set_statistics(self.condition_mean, self.condition_std, total, squares, count, 1e-3)
        self.threshold.fill_(threshold)
        self.fitted.fill_(True)

    def _fit_hits(self, total: Tensor, squares: Tensor, hits: Tensor) -> None:
        """`below`: each cell's mean and spread of the logits of its hits, shrunk towards its
        layer's (all hits of the layer pooled) by HIT_PRIOR hits' worth: a cell hit a few
        times (or never) takes its layer's, a cell hit often its own."""
        layer_hits = hits.sum(dim=1, keepdim=True).clamp_min(1.0)
        layer_mean = total.sum(dim=1, keepdim=True) / layer_hits
        layer_squares = squares.sum(dim=1, keepdim=True) / layer_hits
        weight = hits + HIT_PRIOR
        mean = (total + HIT_PRIOR * layer_mean) / weight
        var = (squares + HIT_PRIOR * layer_squares) / weight - mean * mean
        self.cell_mean.copy_(mean)
        self.cell_std.copy_(var.clamp_min(0.0).sqrt().clamp_min(HIT_SCALE_FLOOR))


# `below`: the pseudo-hits of a cell's layer its hit statistics are shrunk towards, and the
# least spread of a cell's hit logits (a core cell's share spreads by about 0.5 logit units)
HIT_PRIOR = 10.0
HIT_SCALE_FLOOR = 0.1


def _set_statistics(
    mean: Tensor, std: Tensor, total: Tensor, squares: Tensor, count: int, floor: float
) -> None:
    """mean and spread from a sum and a sum of squares over `count`; the spread at least
    `floor`, and 1 where there is none (a constant)."""
    m = total / count
    s = (squares / count - m * m).clamp_min(0.0).sqrt()
    mean.copy_(m)
    std.copy_(torch.where(s > 1e-3, s.clamp_min(floor), torch.ones_like(s)))
