"""Fitting the far halo's taper (`Calibration.taper_radius`, `taper_length`) to wide showers.

The other lateral factors are fitted on clic-25's grid, 25 cells of 5.1 mm: nothing beyond
6.4 cm of the axis. On a wider grid (clic-angle-51's 51 cells) the parametrization puts 2 to
9 times Geant4's energy beyond 6.4 cm at 100-200 GeV: the profile's tail falls as r^-3 there,
Geant4's exponentially. Little energy (0.3 % against 0.1 %), but a second moment weighs it
by r^2, and the transverse widths came out 15-35 % above Geant4's in every layer.

The quantity: the mean share of a shower's visible energy in rings about each layer's own
barycentre (`RING_EDGES_RM`, Moliere radii of the front material), layers summed. A
residual is the difference over `TOLERANCE` of the reference's share and both sets'
statistical errors, in quadrature; the two factors are found by a Nelder-Mead search on
showers drawn from one seed at every evaluation, with the reference's own conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from caloforge.geometry import Geometry
from caloforge.simulation.calibrate import simulate
from caloforge.simulation.calibration import Calibration
from caloforge.validation.features import barycentre_per_layer, cell_centres_mm

__all__ = ["BOUNDS", "RING_EDGES_RM", "TOLERANCE", "fit_taper", "ring_shares"]

# Ring edges about each layer's barycentre, in Moliere radii of the front material.
RING_EDGES_RM = (0.0, 0.5, 1.0, 2.0, 3.0, 4.5, 6.4, 9.0, 13.0, 20.0)
# Relative tolerance of a ring's mean share.
TOLERANCE = 0.05
BOUNDS = {"taper_radius": (1.0, 20.0), "taper_length": (0.2, 20.0)}


def ring_shares(showers: np.ndarray, geometry: Geometry, chunk: int = 100) -> np.ndarray:
    """`(n, rings)`: each shower's share of its visible energy in the rings of
    `RING_EDGES_RM` about each layer's barycentre (energy beyond the last edge counts in the
    last ring). `showers`: `(n, x, y, layers)` GeV, a per-layer readout."""
    x, y = cell_centres_mm(geometry)
    edges = np.asarray(RING_EDGES_RM) * geometry.front.RM_cm * 10.0
    out = np.zeros((len(showers), len(edges) - 1))
    for a in range(0, len(showers), chunk):
        s = np.asarray(showers[a : a + chunk], dtype=np.float64)
        cx, _ = barycentre_per_layer(s, geometry, axis=0)  # (n, layers)
        cy, _ = barycentre_per_layer(s, geometry, axis=1)
        r = np.hypot(
            x[None, :, None, None] - cx[:, None, None, :],
            y[None, None, :, None] - cy[:, None, None, :],
        )
        ring = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, len(edges) - 2)
        for k in range(len(edges) - 1):
            out[a : a + chunk, k] = np.where(ring == k, s, 0.0).sum(axis=(1, 2, 3))
        out[a : a + chunk] /= np.maximum(out[a : a + chunk].sum(axis=1, keepdims=True), 1e-30)
    return out


def residuals(model: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per ring: the difference of the mean shares over the tolerance and both sets'
    statistical errors in quadrature. `model`, `reference`: `ring_shares` of each set."""
    m, r = model.mean(axis=0), reference.mean(axis=0)
    se = np.hypot(
        model.std(axis=0) / np.sqrt(len(model)), reference.std(axis=0) / np.sqrt(len(reference))
    )
    scale = np.hypot(TOLERANCE * r, se)
    # a ring empty in both sets (beyond the grid but for its corners) agrees
    return np.divide(m - r, scale, out=np.zeros_like(m), where=scale > 0)


def fit_taper(
    geometry: Geometry,
    reference: np.ndarray,
    conditions: Mapping[str, np.ndarray],
    start: Calibration,
    *,
    seed: int = 1,
    evaluations: int = 40,
) -> tuple[Calibration, dict[str, Any]]:
    """`start` with the taper that brings the parametrized showers' ring shares closest to
    those of `reference` (`ring_shares` of the reference showers, whose `conditions` the
    parametrized showers are drawn with); returns it and a report (cost before and after,
    each ring's shares and residuals)."""
    from scipy.optimize import minimize

    def shares(calibration: Calibration) -> np.ndarray:
        return ring_shares(simulate(geometry, calibration, conditions, seed), geometry)

    low, high = np.array(list(BOUNDS.values())).T

    def cost(x: np.ndarray) -> float:
        if np.any(x < low) or np.any(x > high):
            return 1e12
        calibration = replace(start, taper_radius=float(x[0]), taper_length=float(x[1]))
        return float((residuals(shares(calibration), reference) ** 2).sum())

    untapered = shares(replace(start, taper_radius=0.0))
    before = float((residuals(untapered, reference) ** 2).sum())
    x0 = np.array([start.taper_radius or 5.0, start.taper_length if start.taper_radius else 4.0])
    # A simplex a few Moliere radii across: the cost is flat for small steps (noise).
    simplex = np.array([x0, x0 * [0.6, 1.0], x0 * [1.0, 0.5]])
    result = minimize(
        cost,
        x0,
        method="Nelder-Mead",
        options={
            "maxfev": evaluations,
            "xatol": 0.05,
            "fatol": 0.5,
            "initial_simplex": simplex,
        },
    )
    fitted = replace(start, taper_radius=float(result.x[0]), taper_length=float(result.x[1]))
    model = shares(fitted)
    report = {
        "cost_untapered": before,
        "cost": float(result.fun),
        "evaluations": int(result.nfev),
        "taper_radius": fitted.taper_radius,
        "taper_length": fitted.taper_length,
        "ring_edges_rm": list(RING_EDGES_RM),
        "reference_shares": reference.mean(axis=0).tolist(),
        "untapered_shares": untapered.mean(axis=0).tolist(),
        "fitted_shares": model.mean(axis=0).tolist(),
    }
    return fitted, report
