"""The LHCb calorimeter challenge's cluster features of depth-summed images (lhcb-30):
the impact point, the cluster asymmetries and widths along and across the transverse
momentum, and the sparsity levels. Inputs: showers (n, x, y) GeV, momentum (n, 3) GeV,
entry point (n, 2) mm."""

from __future__ import annotations

import numpy as np

from caloforge.geometry import Geometry
from caloforge.validation.features.kernels import (
    _weighted_centre_width,
    as_layers,
    cell_centres_mm,
)

# The challenge's sparsity levels: fractions alpha of the shower's energy.
SPARSITY_ALPHAS = np.logspace(-5.0, 0.0, 50)
# The challenge's depth of the impact point, in cells: p = point + 25 (px/pz, py/pz).
LHCB_DEPTH_CELLS = 25.0


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
