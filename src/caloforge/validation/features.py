"""Shower features: small, pure, vectorised functions of a batch of showers.

Every function takes `showers` shaped (n, *geometry.shape) in GeV (visible energy) and
returns one value (or one vector) per shower, so that features of files larger than memory
are computed batch by batch and concatenated.
"""

from __future__ import annotations

import numpy as np

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


def measured_theta(
    showers: np.ndarray,
    geometry: Geometry,
    *,
    method: str = "fit",
    min_layer_fraction: float = 0.02,
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
