"""Every feature of a batch of showers from one pass over its cells, the high-level feature
vector, and a whole `ShowerSource` streamed batch by batch.

`grid_sums` reads the cells once; `shower_features` and `feature_vector` derive the same
numbers as the kernels (`features.kernels`, `features.lhcb`) from those sums, equal to
float64 rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from caloforge.data.source import ShowerSource, iter_batches
from caloforge.geometry import Geometry
from caloforge.validation.features.kernels import (
    CELL_SPECTRUM_EDGES,
    HIT_THRESHOLD,
    THETA_MIN_LAYER_FRACTION,
    _coordinates,
    _theta_of_barycentres,
    _weighted_centre_width,
    as_layers,
    cell_centres_mm,
    cell_spectrum,
    hits,
    max_position,
    response_of_total,
)
from caloforge.validation.features.lhcb import (
    SPARSITY_ALPHAS,
    cluster_asymmetry,
    lhcb_shower_width,
    sparsity_level,
)

# `shower_features` reads each batch's cells once (plus a threshold compare) and derives every
# profile, centre, width, barycentre and count from a few small per-shower arrays, where the
# kernels each sum the whole grid again (about 16 passes over the cells). Simulated showers
# fill about 1 % of their cells, so the pass collects the non-empty cells and bins them; a
# batch filling more than SPARSE_MAX_FILL of its cells is summed densely, which is faster
# there and bounds the collected cells' memory (timings: benchmarks/validation.md).
SPARSE_MAX_FILL = 0.1


@dataclass(frozen=True)
class GridSums:
    """The per-shower sums of a batch (n showers) that its features are derived from.

    x_layer: (n, nx, layers) GeV, the energy in each x column of each layer (summed over y);
    y_layer: (n, ny, layers) GeV, the same per y row; both accumulated in float64.
    hits_layer: (n, layers) int64, cells above `threshold` (GeV) in each layer;
    cell_spectrum: (n, bins) int64, as `cell_spectrum` with `edges` (GeV);
    max_position: (n, ndim) int64, as `max_position`;
    threshold (GeV) and edges (GeV): those the counts were made with.
    Depth-summed images (n, x, y) count as one layer."""

    x_layer: np.ndarray
    y_layer: np.ndarray
    hits_layer: np.ndarray
    cell_spectrum: np.ndarray
    max_position: np.ndarray
    threshold: float
    edges: np.ndarray

    @property
    def layer_energy(self) -> np.ndarray:
        """Energy per layer, GeV, (n, layers)."""
        return self.x_layer.sum(axis=1)


def grid_sums(
    showers: np.ndarray,
    threshold: float = HIT_THRESHOLD,
    edges: np.ndarray = CELL_SPECTRUM_EDGES,
) -> GridSums:
    """`GridSums` of a batch of showers (n, x, y[, layer]) GeV, in one pass over the cells.

    The same numbers as `profile`, `hits`, `cell_spectrum` and `max_position` (sums equal to
    float64 rounding: they are accumulated in another order)."""
    grid = as_layers(showers)
    edges = np.asarray(edges, dtype=np.float64)
    sums = None
    if threshold >= 0 and edges[0] > 0:
        sums = _sparse_sums(grid, showers.shape[1:], threshold, edges)
    if sums is None:
        sums = GridSums(
            x_layer=grid.sum(axis=2, dtype=np.float64),
            y_layer=grid.sum(axis=1, dtype=np.float64),
            hits_layer=hits(showers, threshold, per_layer=True),
            cell_spectrum=cell_spectrum(showers, edges),
            max_position=max_position(showers),
            threshold=threshold,
            edges=edges,
        )
    return sums


def _sparse_sums(
    grid: np.ndarray, shape: tuple[int, ...], threshold: float, edges: np.ndarray
) -> GridSums | None:
    """`grid_sums` from the non-empty cells of a (n, x, y, layer) grid: None when more than
    SPARSE_MAX_FILL of the cells are filled, or some are negative or NaN (the dense sums
    then hold every convention of the single-feature functions)."""
    n, nx, ny, nl = grid.shape
    flat = grid.reshape(-1)
    filled = flat != 0
    if np.count_nonzero(filled) > SPARSE_MAX_FILL * flat.size:
        return None
    index = np.flatnonzero(filled)
    del filled
    values = flat[index].astype(np.float64)
    if not (values > 0).all():
        return None
    # index = ((shower * nx + x) * ny + y) * nl + layer; int32 divides several times faster.
    if flat.size <= np.iinfo(np.int32).max:
        index = index.astype(np.int32)
    column, layer = np.divmod(index, nl)
    shower_x, y = np.divmod(column, ny)
    shower = shower_x // nx
    shower_layer = shower * nl + layer
    x_layer = np.bincount(shower_x * nl + layer, values, minlength=n * nx * nl)
    y_layer = np.bincount((shower * ny + y) * nl + layer, values, minlength=n * ny * nl)
    hits_layer = np.bincount(shower_layer[values > threshold], minlength=n * nl)

    nb = len(edges) - 1
    inside = (values >= edges[0]) & (values <= edges[-1])
    b = np.clip(np.searchsorted(edges, values[inside], side="right") - 1, 0, nb - 1)
    spectrum = np.bincount(shower[inside] * nb + b, minlength=n * nb)

    # The first cell holding each shower's largest deposit (index 0 for an empty shower).
    counts = np.bincount(shower, minlength=n)
    starts = np.cumsum(counts) - counts
    peak = np.zeros(n)
    some = counts > 0
    if some.any():
        peak[some] = np.maximum.reduceat(values, starts[some])
    at_peak = np.flatnonzero(values == peak[shower])
    new_shower = np.ones(len(at_peak), dtype=bool)
    new_shower[1:] = shower[at_peak][1:] != shower[at_peak][:-1]
    first = at_peak[new_shower]
    position = np.zeros(n, dtype=np.int64)
    position[shower[first]] = index[first] - shower[first].astype(np.int64) * (nx * ny * nl)
    return GridSums(
        x_layer=x_layer.reshape(n, nx, nl),
        y_layer=y_layer.reshape(n, ny, nl),
        hits_layer=hits_layer.reshape(n, nl),
        cell_spectrum=spectrum.reshape(n, nb),
        max_position=np.stack(np.unravel_index(position, shape), axis=1).astype(np.int64),
        threshold=threshold,
        edges=edges,
    )


# --- the high-level feature vector and streaming over a file ----------------------------------
# Depth (X0 of the front material) of the impact point used by the feature vector's LHCb
# features: about the showers' centre of gravity, where the shower's axis crosses its core.
# The challenge's own 25 cells (500 mm) lie behind the showers in caloforge's frame (entry
# point on the front face), where the longitudinal asymmetry saturates and carries no
# information (measurements: benchmarks/validation.md).
LHCB_FEATURE_DEPTH_X0 = 6.5
# Sparsity levels of the LHCb feature vector: every fifth of the challenge's 50 alphas.
LHCB_FEATURE_ALPHAS = SPARSITY_ALPHAS[::5]


def _is_lhcb(geometry: Geometry) -> bool:
    """Depth-summed images labelled by momentum and entry point, as the LHCb challenge's."""
    names = geometry.condition_names
    return geometry.readout == "summed" and "momentum" in names and "point" in names


def _lhcb_conditions(
    conditions: Mapping[str, np.ndarray], geometry: Geometry
) -> tuple[np.ndarray, np.ndarray]:
    missing = [name for name in ("momentum", "point") if name not in conditions]
    if missing:
        raise ValueError(
            f"geometry '{geometry.name}' needs the conditions {missing} for its LHCb features; "
            f"got {sorted(conditions)}"
        )
    return np.asarray(conditions["momentum"]), np.asarray(conditions["point"])


def _check_grid(geometry: Geometry) -> int:
    if geometry.readout not in ("layers", "summed"):
        raise ValueError(
            f"geometry '{geometry.name}' has readout '{geometry.readout}': the feature vector "
            "needs a cell grid ('layers' or 'summed' readout)"
        )
    return geometry.shape[2] if geometry.readout == "layers" else 1


def feature_names(geometry: Geometry) -> list[str]:
    """Names of the columns of `feature_vector` for this geometry (units in the names' doc)."""
    n_layers = _check_grid(geometry)
    names = ["E_tot/E_inc"]
    if geometry.readout == "layers":
        per_layer = ("E_frac", "centre_x", "centre_y", "width_x", "width_y", "sparsity")
        names += [f"{name}_layer{i}" for name in per_layer for i in range(n_layers)]
    else:
        names += ["centre_x", "centre_y", "width_x", "width_y", "sparsity"]
    if _is_lhcb(geometry):
        names += ["asymmetry_long", "asymmetry_trans", "width_long", "width_trans"]
        names += [f"sparsity_level_{a:.1e}" for a in LHCB_FEATURE_ALPHAS]
    return names


def feature_vector(
    showers: np.ndarray,
    conditions: Mapping[str, np.ndarray],
    geometry: Geometry,
    *,
    threshold: float = HIT_THRESHOLD,
) -> tuple[np.ndarray, list[str]]:
    """The high-level feature vector of each shower, (n, k) float64, and the k names.

    CaloChallenge-style (systems.md 6), used by FPD/KPD and the feature classifier:
    E_tot/E_inc; for per-layer readout, per layer: the layer's fraction of E_tot, centre and
    width in x and y (mm), and sparsity (fraction of the layer's cells above `threshold`, GeV);
    for depth-summed readout, the same for the one image. For LHCb-like geometries (conditions
    momentum and point) also the challenge's cluster asymmetries and widths (with the impact
    point at LHCB_FEATURE_DEPTH_X0 radiation lengths of the front material; see there why not
    the challenge's 25 cells) and every fifth of its 50 sparsity levels.
    Empty layers give 0 for their centre and width. E_inc is conditions["energy"] (GeV).
    """
    _check_grid(geometry)
    return _feature_vector(grid_sums(showers, threshold), showers, conditions, geometry)


def _feature_vector(
    sums: GridSums,
    showers: np.ndarray,
    conditions: Mapping[str, np.ndarray],
    geometry: Geometry,
) -> tuple[np.ndarray, list[str]]:
    """`feature_vector` from the batch's `grid_sums` (the LHCb features read the showers)."""
    energy = np.asarray(conditions["energy"], dtype=np.float64)
    x, y = cell_centres_mm(geometry)
    layer_energy = sums.layer_energy
    total = layer_energy.sum(axis=1)
    columns = [response_of_total(total, energy)]
    cx, wx = _weighted_centre_width(np.moveaxis(sums.x_layer, 1, 2), x)
    cy, wy = _weighted_centre_width(np.moveaxis(sums.y_layer, 1, 2), y)
    frac = layer_energy / np.where(total > 0, total, 1.0)[:, None]
    occupancy = sums.hits_layer / (sums.x_layer.shape[1] * sums.y_layer.shape[1])
    blocks = (frac, cx, cy, wx, wy, occupancy)
    if geometry.readout == "layers":
        columns += [c for block in blocks for c in block.T]
    else:
        columns += [block[:, 0] for block in blocks[1:]]
    if _is_lhcb(geometry):
        depth = LHCB_FEATURE_DEPTH_X0 * geometry.front.X0_cm * 10.0
        mom, point = _lhcb_conditions(conditions, geometry)
        for transverse in (False, True):
            columns.append(
                cluster_asymmetry(
                    showers, mom, point, geometry, transverse=transverse, depth_mm=depth
                )
            )
        for transverse in (False, True):
            columns.append(
                lhcb_shower_width(
                    showers, mom, point, geometry, transverse=transverse, depth_mm=depth
                )
            )
        columns += list(sparsity_level(showers, LHCB_FEATURE_ALPHAS).T)
    return np.stack(columns, axis=1), feature_names(geometry)


def shower_features(
    showers: np.ndarray, conditions: Mapping[str, np.ndarray], geometry: Geometry
) -> dict[str, np.ndarray]:
    """All per-shower features of one batch, name -> (n, ...) array (see `compute_features`).

    Every feature equals its single-feature function's (`profile`, `centre_and_width`,
    `hits`, `measured_theta`, ...) to float64 rounding, derived from one `grid_sums` pass."""
    _check_grid(geometry)
    sums = grid_sums(showers)
    x, y = cell_centres_mm(geometry)
    layer_energy = sums.layer_energy
    x_profile, y_profile = sums.x_layer.sum(axis=2), sums.y_layer.sum(axis=2)
    out: dict[str, np.ndarray] = {f"condition/{k}": np.asarray(v) for k, v in conditions.items()}
    out["total_energy"] = layer_energy.sum(axis=1)
    if geometry.readout == "layers":
        z = _coordinates(geometry, 2, layer_energy.shape[1])
        out["longitudinal_profile"] = layer_energy
        out["centre_z"], out["width_z"] = _weighted_centre_width(layer_energy, z)
    out["x_profile"] = x_profile
    out["y_profile"] = y_profile
    for name, coord, e_profile, e_layer in (
        ("x", x, x_profile, sums.x_layer),
        ("y", y, y_profile, sums.y_layer),
    ):
        out[f"centre_{name}"], out[f"width_{name}"] = _weighted_centre_width(e_profile, coord)
        c, w = _weighted_centre_width(np.moveaxis(e_layer, 1, 2), coord)
        out[f"centre_{name}_layer"], out[f"width_{name}_layer"] = c, w
    out["hits"] = sums.hits_layer.sum(axis=1)
    out["hits_layer"] = sums.hits_layer
    out["max_position"] = sums.max_position
    out["cell_spectrum"] = sums.cell_spectrum
    if geometry.has_condition("theta") and geometry.readout == "layers":
        out["measured_theta"] = _theta_of_barycentres(
            out["centre_y_layer"], layer_energy, geometry, "fit", THETA_MIN_LAYER_FRACTION
        )
    if _is_lhcb(geometry):
        mom, point = _lhcb_conditions(conditions, geometry)
        for transverse, name in ((False, "long"), (True, "trans")):
            out[f"asymmetry_{name}"] = cluster_asymmetry(
                showers, mom, point, geometry, transverse=transverse
            )
            out[f"width_{name}"] = lhcb_shower_width(
                showers, mom, point, geometry, transverse=transverse
            )
        out["sparsity_level"] = sparsity_level(showers)
    out["feature_vector"], _ = _feature_vector(sums, showers, conditions, geometry)
    return out


def compute_features(
    source: ShowerSource, batch_size: int = 1024, max_showers: int | None = None
) -> dict[str, np.ndarray]:
    """Stream `source` batch by batch (files larger than memory) and return every per-shower
    feature of `shower_features`, concatenated over the first `max_showers` showers.

    Keys: `condition/<name>` (each condition, geometry units), total_energy (GeV),
    longitudinal_profile (GeV per layer), centre_z and width_z (mm; per-layer readout only),
    x_profile and y_profile (GeV per column), centre_x, width_x, centre_y, width_y (mm, overall)
    and their per-layer versions `*_layer` (n, layers), hits and hits_layer (cells above
    HIT_THRESHOLD), max_position (cell index), cell_spectrum (counts per CELL_SPECTRUM_EDGES
    bin), measured_theta (rad, when the geometry has theta), the LHCb challenge features with
    the challenge's own definitions (asymmetry_long/trans, width_long/trans in cell units,
    sparsity_level (n, 50)), and feature_vector (n, k) with names `feature_names(geometry)`.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    stop = len(source) if max_showers is None else min(len(source), max_showers)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in iter_batches(source, batch_size, stop=stop):
        for key, value in shower_features(batch.showers, batch.conditions, source.geometry).items():
            parts.setdefault(key, []).append(value)
    if not parts:
        raise ValueError(f"{source.path}: no showers to compute features of")
    return {key: np.concatenate(values) for key, values in parts.items()}
