"""Per-shower feature kernels: small, pure, vectorised functions of a batch of showers.

Every function takes `showers` shaped (n, *geometry.shape) in GeV (visible energy) and
returns one value (or one vector) per shower, so that features of files larger than memory
are computed batch by batch and concatenated. Per-layer grids (x, y, layer) and depth-summed
images (x, y) are both accepted; the latter count as one layer.

These are the definitions. Training's physics check and the int8 guard use the same ones
(`response`, `normalised_mean_profile`), so that "response" means one number everywhere.
"""

from __future__ import annotations

import numpy as np

from caloforge.geometry import Geometry


def total_energy(showers: np.ndarray) -> np.ndarray:
    """Visible energy per shower, GeV, shape (n,)."""
    return showers.reshape(len(showers), -1).sum(axis=1, dtype=np.float64)


def response(showers: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """The energy response E_vis / E_p of each shower, shape (n,): its visible energy
    (`total_energy`, GeV) over its primary energy `energy` (GeV, shape (n,))."""
    return response_of_total(total_energy(showers), energy)


def response_of_total(visible: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """`response` from the showers' visible energies (GeV, (n,)) when these are at hand
    (a feature table), so that the cells need not be summed again."""
    return np.asarray(visible, dtype=np.float64) / np.asarray(energy, dtype=np.float64)


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
    "fit" is the default: its error is about a third of "3dgan"'s (benchmarks/validation.md).
    Showers with fewer than two usable layers give NaN.
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


def normalised_mean_profile(showers: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A set's mean energy profile along depth (per-layer readout) or along x (depth-summed
    images; the flat cells of a voxel geometry), normalised to sum 1: the shape that
    training's physics check and the int8 guard compare by L1 distance (in [0, 2]).
    A set without energy gives its all-zero profile."""
    if showers.ndim >= 3:
        p = profile(showers, 2 if geometry.readout == "layers" else 0).sum(axis=0)
    else:
        p = showers.reshape(len(showers), -1).sum(axis=0, dtype=np.float64)
    total = p.sum()
    return p / total if total > 0 else p


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
