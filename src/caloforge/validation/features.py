"""Shower features: small, pure, vectorised functions of a batch of showers.

Every function takes `showers` shaped (n, *geometry.shape) in GeV (visible energy) and
returns one value (or one vector) per shower, so that features of files larger than memory
are computed batch by batch and concatenated. Per-layer grids (x, y, layer) and depth-summed
images (x, y) are both accepted; the latter count as one layer.

- energy: total_energy, longitudinal_profile, calibrated_energy;
- shapes: profile / x_profile / y_profile, centre_and_width (overall or per layer), moments,
  max_position, barycentre_per_layer, measured_theta;
- cells: hits, sparsity (vs threshold, per layer), cell_spectrum;
- the LHCb challenge's: lhcb_impact_point, cluster_asymmetry, lhcb_shower_width,
  sparsity_level;
- feature_vector (the CaloChallenge-style high-level vector for FPD/KPD and classifiers),
  shower_features (everything for one batch) and compute_features (a whole ShowerSource,
  streamed batch by batch).

The single-feature functions are the definitions, each a pass over the whole grid;
shower_features and feature_vector derive the same numbers from one pass (grid_sums).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from caloforge.data.source import ShowerSource, iter_batches
from caloforge.geometry import Geometry


def total_energy(showers: np.ndarray) -> np.ndarray:
    """Visible energy per shower, GeV, shape (n,)."""
    return showers.reshape(len(showers), -1).sum(axis=1, dtype=np.float64)


def longitudinal_profile(showers: np.ndarray) -> np.ndarray:
    """Visible energy per layer (the last axis of a per-layer grid), GeV, shape (n, layers)."""
    return showers.sum(axis=(1, 2), dtype=np.float64)


def calibrated_energy(showers: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Deposited energy estimated from the visible one: each layer's energy divided by its
    electron sampling fraction, GeV, shape (n,). Per-layer readout only."""
    f_e = np.array([layer.properties.f_e for layer in geometry.layers])
    return (longitudinal_profile(showers) / f_e).sum(axis=1)


def cell_centres_mm(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the cell centres in mm, with 0 at the centre of the grid."""
    assert geometry.cell_size_mm is not None
    nx, ny = geometry.shape[:2]
    x = (np.arange(nx) - (nx - 1) / 2.0) * geometry.cell_size_mm[0]
    y = (np.arange(ny) - (ny - 1) / 2.0) * geometry.cell_size_mm[1]
    return x, y


def layer_centres_mm(geometry: Geometry) -> np.ndarray:
    """Depth of the middle of each layer from the front face, mm."""
    z = np.asarray(geometry.layer_boundaries_mm)
    return 0.5 * (z[1:] + z[:-1])


def barycentre_per_layer(
    showers: np.ndarray, geometry: Geometry, axis: int
) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted centre (mm) along `axis` (0 = x, 1 = y) in each layer, and each
    layer's energy; both (n, layers). Empty layers have centre 0."""
    coord = cell_centres_mm(geometry)[axis]
    other = 2 if axis == 0 else 1
    e = showers.sum(axis=other, dtype=np.float64)  # (n, coord, layers)
    w = e.sum(axis=1)
    centre = (e * coord[None, :, None]).sum(axis=1) / np.where(w > 0, w, 1.0)
    return centre, w


# Layers below this fraction of the shower's energy are left out of measured_theta's fit.
THETA_MIN_LAYER_FRACTION = 0.02


def measured_theta(
    showers: np.ndarray,
    geometry: Geometry,
    *,
    method: str = "fit",
    min_layer_fraction: float = THETA_MIN_LAYER_FRACTION,
) -> np.ndarray:
    """Polar angle (rad) measured from the shower's y barycentre in each layer against the
    layer's depth (both in mm): theta = pi/2 - atan(dy/dz).

    method "fit": a straight line through the layer barycentres, weighted by the layers'
    energies (inverse variance), over layers holding at least `min_layer_fraction` of the
    shower's energy: a barycentre built on a few heavy-tailed energy spots mostly adds noise.
    method "3dgan": as the 3DGAN code, the energy-weighted mean of the per-layer angles
    atan((y_l - y_ref) / (z_l - z_ref)) about the shower's overall barycentre, all layers.
    On simulated clic-angle-51 electrons at 150 GeV the RMS error is about 1.2 deg for "fit"
    and 3.4 deg for "3dgan". Showers with fewer than two usable layers give NaN.
    """
    y, w = barycentre_per_layer(showers, geometry, axis=1)
    return _theta_of_barycentres(y, w, geometry, method, min_layer_fraction)


def _theta_of_barycentres(
    y: np.ndarray, w: np.ndarray, geometry: Geometry, method: str, min_layer_fraction: float
) -> np.ndarray:
    """`measured_theta` from the y barycentre (mm) and the energy of each layer, (n, layers)."""
    z = np.broadcast_to(layer_centres_mm(geometry)[None, :], w.shape)
    total = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "fit":
            w = np.where(w >= min_layer_fraction * total, w, 0.0)
            zm = _weighted_mean(z, w)
            ym = _weighted_mean(y, w)
            cov = (w * (z - zm) * (y - ym)).sum(axis=1)
            var = (w * (z - zm) ** 2).sum(axis=1)
            slope = cov / var
            tilt = np.arctan(slope)
        elif method == "3dgan":
            dz = z - _weighted_mean(z, w)
            ok = (w > 0) & (np.abs(dz) > 1e-9)
            angle = np.arctan((y - _weighted_mean(y, w)) / np.where(ok, dz, 1.0))
            w = np.where(ok, w, 0.0)
            tilt = (w * np.where(ok, angle, 0.0)).sum(axis=1) / w.sum(axis=1)
        else:
            raise ValueError(f"unknown method '{method}'; choose 'fit' or '3dgan'")
    tilt = np.where((w > 0).sum(axis=1) >= 2, tilt, np.nan)
    return np.pi / 2.0 - tilt


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Row-wise weighted mean, kept as a column for broadcasting."""
    return ((weights * values).sum(axis=1) / weights.sum(axis=1))[:, None]


# --- grids, profiles, centres and widths ------------------------------------------------------
# Below, a shower is `(x, y, layer)` (per-layer readout) or `(x, y)` (depth-summed readout, the
# lhcb-30 preset); the depth-summed case is treated as a grid of one layer, so every per-layer
# feature has one column for it. x and y are in mm (cell centres, 0 at the grid's centre),
# depth is in mm from the front face (the middle of each layer).

# Hits: cells above this visible energy, GeV (the Conv2D paper's cell-spectrum threshold).
HIT_THRESHOLD = 1e-5
# Default cell-energy spectrum binning, GeV: 5 log bins per decade from 1e-6 to 10 GeV.
CELL_SPECTRUM_EDGES = np.logspace(-6.0, 1.0, 36)
# The LHCb challenge's sparsity levels: fractions alpha of the shower's energy.
SPARSITY_ALPHAS = np.logspace(-5.0, 0.0, 50)
# The LHCb challenge's depth of the impact point, in cells: p = point + 25 (px/pz, py/pz).
LHCB_DEPTH_CELLS = 25.0


def as_layers(showers: np.ndarray) -> np.ndarray:
    """A view of the showers as (n, x, y, layers): depth-summed images get one layer."""
    if showers.ndim == 4:
        return showers
    if showers.ndim == 3:
        return showers[..., None]
    raise ValueError(
        f"expected showers shaped (n, x, y, layer) or (n, x, y), got shape {showers.shape}"
    )


def _coordinates(geometry: Geometry, axis: int, n_layers: int) -> np.ndarray:
    """Coordinate (mm) of each index along `axis` (0 = x, 1 = y, 2 = depth)."""
    if axis in (0, 1):
        return cell_centres_mm(geometry)[axis]
    if axis == 2:
        if geometry.readout != "layers" or n_layers != len(geometry.layers):
            raise ValueError(
                f"geometry '{geometry.name}' has readout '{geometry.readout}': "
                "depth features need one image plane per layer"
            )
        return layer_centres_mm(geometry)
    raise ValueError(f"axis must be 0 (x), 1 (y) or 2 (depth), got {axis}")


def profile(showers: np.ndarray, axis: int) -> np.ndarray:
    """Visible energy (GeV) per index along `axis` (0 = x, 1 = y, 2 = layer), summed over the
    other axes; shape (n, size of that axis)."""
    grid = as_layers(showers)
    others = tuple(a for a in (1, 2, 3) if a != axis + 1)
    return grid.sum(axis=others, dtype=np.float64)


def x_profile(showers: np.ndarray) -> np.ndarray:
    """Visible energy (GeV) per x column, summed over y and the layers; (n, nx)."""
    return profile(showers, 0)


def y_profile(showers: np.ndarray) -> np.ndarray:
    """Visible energy (GeV) per y row, summed over x and the layers; (n, ny)."""
    return profile(showers, 1)


def _weighted_centre_width(energy: np.ndarray, coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and width of `energy` (..., k) distributed over `coord` (k,), along the last axis.

    sigma = sqrt(<x^2> - <x>^2), computed as the weighted mean of (x - <x>)^2, which does not
    lose precision to cancellation. Where there is no energy, both are 0 (as the
    CaloChallenge's features of empty layers)."""
    w = energy.sum(axis=-1)
    safe = np.where(w > 0, w, 1.0)
    centre = (energy * coord).sum(axis=-1) / safe
    var = (energy * (coord - centre[..., None]) ** 2).sum(axis=-1) / safe
    return centre, np.sqrt(np.maximum(var, 0.0))


def centre_and_width(
    showers: np.ndarray, geometry: Geometry, axis: int, *, per_layer: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted centre <x> and width sqrt(<x^2> - <x>^2) along `axis` (0 = x, 1 = y in
    mm; 2 = depth in mm from the front face), overall, shape (n,), or in each layer
    (`per_layer`, x and y only), shape (n, layers). Empty showers or layers give 0 and 0.

    The CaloChallenge's centre of energy and width per layer and direction (systems.md 6)."""
    grid = as_layers(showers)
    coord = _coordinates(geometry, axis, grid.shape[3])
    if per_layer:
        if axis == 2:
            raise ValueError("a depth centre per layer is meaningless; use per_layer=False")
        other = 2 if axis == 0 else 1
        e = np.moveaxis(grid.sum(axis=other, dtype=np.float64), 1, 2)  # (n, layers, coord)
        return _weighted_centre_width(e, coord)
    return _weighted_centre_width(profile(showers, axis), coord)


def moments(showers: np.ndarray, geometry: Geometry, axis: int, m: int = 3) -> np.ndarray:
    """Moments 1..m of the energy distribution along `axis` (0 = x, 1 = y, 2 = depth; mm),
    shape (n, m): the first is the centre <x> (mm), the k-th (k >= 2) the central moment
    <(x - <x>)^k> (mm^k), as the 3DGAN validation's moments per axis (systems.md 2).
    Empty showers give 0."""
    if m < 1:
        raise ValueError(f"need at least one moment, got m={m}")
    grid = as_layers(showers)
    coord = _coordinates(geometry, axis, grid.shape[3])
    e = profile(showers, axis)
    w = e.sum(axis=1)
    safe = np.where(w > 0, w, 1.0)[:, None]
    centre = (e * coord).sum(axis=1, keepdims=True) / safe
    d = coord[None, :] - centre
    out = [centre[:, 0]]
    out += [(e * d**k).sum(axis=1) / safe[:, 0] for k in range(2, m + 1)]
    return np.stack(out, axis=1)


def max_position(showers: np.ndarray) -> np.ndarray:
    """Index (x, y[, layer]) of the cell with the largest deposit, shape (n, ndim), int64.
    An empty shower gives index 0 along every axis."""
    flat = showers.reshape(len(showers), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, showers.shape[1:]), axis=1).astype(np.int64)


# --- hits, sparsity and the cell spectrum -----------------------------------------------------
def hits(
    showers: np.ndarray, threshold: float = HIT_THRESHOLD, *, per_layer: bool = False
) -> np.ndarray:
    """Number of cells above `threshold` (GeV), per shower (n,) or per layer (n, layers)."""
    above = as_layers(showers) > threshold
    if per_layer:
        return above.sum(axis=(1, 2))
    return above.reshape(len(showers), -1).sum(axis=1)


def sparsity(
    showers: np.ndarray, thresholds: np.ndarray | float = HIT_THRESHOLD, *, per_layer: bool = False
) -> np.ndarray:
    """Fraction of cells above each threshold (GeV): the 3DGAN "sparsity vs threshold"
    (systems.md 2) and, with one threshold and `per_layer`, the CaloChallenge's sparsity per
    layer (systems.md 6). Shapes: (n, thresholds), or (n, layers, thresholds) per layer; a
    scalar threshold drops the last axis."""
    t = np.asarray(thresholds, dtype=np.float64)
    grid = as_layers(showers)
    n, nx, ny, n_layers = grid.shape
    cells = grid.reshape(n, nx * ny, n_layers) if per_layer else grid.reshape(n, -1, 1)
    counts = np.stack([(cells > value).sum(axis=1) for value in t.ravel()], axis=-1)
    size = cells.shape[1]
    frac = counts / size
    if not per_layer:
        frac = frac[:, 0]
    return frac if t.ndim else frac[..., 0]


def cell_spectrum(showers: np.ndarray, edges: np.ndarray = CELL_SPECTRUM_EDGES) -> np.ndarray:
    """Per shower, the number of cells in each cell-energy bin (GeV), shape (n, bins), int64.

    The cell energy spectrum of the 3DGAN and Conv2D validations (systems.md 2, 3); summed
    over showers it is the spectrum of the set, and per shower it can be split by conditions.
    Cells outside `edges` (empty cells among them when edges[0] > 0) are not counted."""
    edges = np.asarray(edges, dtype=np.float64)
    n = len(showers)
    flat = showers.reshape(n, -1)
    rows, cols = np.nonzero((flat >= edges[0]) & (flat <= edges[-1]))
    values = flat[rows, cols].astype(np.float64)
    b = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    nb = len(edges) - 1
    return np.bincount(rows * nb + b, minlength=n * nb).reshape(n, nb)


# --- the LHCb challenge's cluster features (depth-summed 30x30 images) ------------------------
def _lhcb_frame(
    momentum: np.ndarray, point: np.ndarray, geometry: Geometry, depth_mm: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates of every cell in the frame of the impact point, in cell units: s along
    the transverse momentum direction u, t along v = u rotated by +90 deg; and u, v."""
    assert geometry.cell_size_mm is not None
    cx, cy = geometry.cell_size_mm
    p = lhcb_impact_point(momentum, point, geometry, depth_mm=depth_mm)
    mom = np.asarray(momentum, dtype=np.float64).reshape(-1, 3)
    pt = np.hypot(mom[:, 0], mom[:, 1])
    # A track along the normal has no transverse direction: take x.
    u = np.where(pt[:, None] > 0, mom[:, :2] / np.where(pt > 0, pt, 1.0)[:, None], [1.0, 0.0])
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)
    x, y = cell_centres_mm(geometry)
    dx = (x / cx)[None, :, None] - p[:, 0, None, None]  # (n, nx, 1)
    dy = (y / cy)[None, None, :] - p[:, 1, None, None]  # (n, 1, ny)
    s = dx * u[:, 0, None, None] + dy * u[:, 1, None, None]
    t = dx * v[:, 0, None, None] + dy * v[:, 1, None, None]
    return s, t, u, v


def lhcb_impact_point(
    momentum: np.ndarray, point: np.ndarray, geometry: Geometry, *, depth_mm: float | None = None
) -> np.ndarray:
    """The LHCb challenge's impact point p = point + depth (px/pz, py/pz), in cell units
    (cell centres at linspace(-14.5, 14.5, 30) for lhcb-30), shape (n, 2).

    caloforge stores the entry point in mm with 0 at the centre of the grid, so the
    challenge's point is `point / cell_size_mm`; the challenge extrapolates 25 cell units in
    depth, which is `depth_mm = 25 * cell_size_mm` (500 mm for lhcb-30), the default."""
    assert geometry.cell_size_mm is not None
    cell = np.asarray(geometry.cell_size_mm, dtype=np.float64)
    depth = LHCB_DEPTH_CELLS * cell[0] if depth_mm is None else float(depth_mm)
    mom = np.asarray(momentum, dtype=np.float64).reshape(-1, 3)
    pos = np.asarray(point, dtype=np.float64).reshape(-1, 2)
    return (pos + depth * mom[:, :2] / mom[:, 2:3]) / cell


def cluster_asymmetry(
    showers: np.ndarray,
    momentum: np.ndarray,
    point: np.ndarray,
    geometry: Geometry,
    *,
    transverse: bool = False,
    depth_mm: float | None = None,
) -> np.ndarray:
    """The LHCb challenge's cluster asymmetry (E_side1 - E_side2) / E_tot, shape (n,).

    Longitudinal (default): the image is split by the line through the impact point p
    (`lhcb_impact_point`) orthogonal to the transverse momentum (px, py); side 1 is
    downstream (along the momentum). Transverse: split by the line through p along the
    momentum; side 1 is the side of larger y, as in the challenge's code (for px = 0, the
    side to the left of the momentum). Cells on a line count on side 1. Empty showers give 0.
    Inputs: depth-summed showers (n, x, y), momentum (n, 3) GeV, point (n, 2) mm."""
    grid = as_layers(showers)[..., 0].astype(np.float64)
    s, t, u, _ = _lhcb_frame(momentum, point, geometry, depth_mm)
    if transverse:
        side = t * np.where(u[:, 0] < 0, -1.0, 1.0)[:, None, None] >= 0
    else:
        side = s >= 0
    total = grid.sum(axis=(1, 2))
    e1 = np.where(side, grid, 0.0).sum(axis=(1, 2))
    return (2.0 * e1 - total) / np.where(total > 0, total, 1.0)


def lhcb_shower_width(
    showers: np.ndarray,
    momentum: np.ndarray,
    point: np.ndarray,
    geometry: Geometry,
    *,
    transverse: bool = False,
    depth_mm: float | None = None,
) -> np.ndarray:
    """The LHCb challenge's shower width, cell units, shape (n,): the energy-weighted sigma of
    the position along a line through the impact point, over the cells the line crosses.

    Longitudinal (default): the line along the transverse momentum; transverse: the line
    orthogonal to it. A cell (a unit square) is crossed when its centre lies within
    (|n_x| + |n_y|) / 2 of the line, n being the line's unit normal. The challenge's code
    picks the crossed cells from the edge of a half-plane mask and scales x to the distance
    along the momentum line for both lines; here the position is the exact distance along
    each line. No energy on the line gives 0."""
    grid = as_layers(showers)[..., 0].astype(np.float64)
    s, t, u, v = _lhcb_frame(momentum, point, geometry, depth_mm)
    if transverse:
        normal, along, across = u, t, s
    else:
        normal, along, across = v, s, t
    half = 0.5 * (np.abs(normal[:, 0]) + np.abs(normal[:, 1]))[:, None, None]
    w = np.where(np.abs(across) <= half, grid, 0.0).reshape(len(grid), -1)
    _, width = _weighted_centre_width(w, along.reshape(len(grid), -1))
    return width


def sparsity_level(showers: np.ndarray, alphas: np.ndarray = SPARSITY_ALPHAS) -> np.ndarray:
    """The LHCb challenge's sparsity levels: for each alpha, the fraction of all cells with
    E >= alpha E_tot, shape (n, alphas). Empty showers give 0."""
    flat = showers.reshape(len(showers), -1).astype(np.float64)
    total = flat.sum(axis=1, keepdims=True)
    a = np.asarray(alphas, dtype=np.float64)
    frac = np.stack([(flat >= alpha * total).mean(axis=1) for alpha in a], axis=1)
    return np.where(total > 0, frac, 0.0)


# --- one pass over the cells: the small sums every feature of a batch derives from -----------
# `shower_features` reads each batch's cells once (plus a threshold compare) and derives every
# profile, centre, width, barycentre and count from a few small per-shower arrays, where the
# single-feature functions above each sum the whole grid again (about 16 passes over
# 51x51x25 float64 cells for clic-angle-51). Simulated showers fill about 1 % of their cells,
# so the pass collects the non-empty cells and bins them; a batch that fills more than
# SPARSE_MAX_FILL of its cells is summed densely. On clic-angle-51 grids (one core) collecting
# took 0.08 ms/shower at 1 % fill against 0.53 for the dense sums, 0.50 against 0.77 at 10 %,
# and broke even near 25 %; 10 % also bounds the collected cells' memory (about 0.2 GB for a
# batch of 128 MB of cells).
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
# features: about the centre of gravity of 1-100 GeV electron showers, where the shower's axis
# crosses its core (on simulated lhcb-30 showers the barycentre follows the slope at 100-115 mm
# deep; 6.5 X0 is 107 mm). The challenge's own 25 cells (500 mm) lie behind the showers in
# caloforge's frame (entry point on the front face): the longitudinal asymmetry saturates
# there (median -0.99 on simulated lhcb-30 showers) and carries no information.
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
    columns = [total / energy]
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
