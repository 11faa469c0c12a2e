"""Fitting a `Calibration` of the parametrized engine to reference showers (Geant4's).

The reference is a set of showers at a ladder of fixed energies. At each energy both sets are
reduced to the quantities the calibration targets, each with the tolerance it is held to:

- the mean share of the visible energy in each layer (layers over 1 %): 3 %;
- the spread of that share from shower to shower (the profile's fluctuations): 10 %;
- the transverse width (energy-weighted RMS in x) in each of those layers: 5 %;
- the share of each of those layers' energy in its hottest cell (the core against the tail,
  which the width alone confuses): 5 %;
- the resolution, sigma/median of the visible energy (sigma from the interquartile range,
  so that a few back-scattered showers do not dominate it): 5 %; and the same for the sum
  with each layer weighted by its inverse sampling fraction, where the sampling term shows
  without the thin/thick-layer fluctuations of the raw sum: 5 %;
- the response, mean E_vis/E: 1 %.

The shape parameters (profile, fluctuations, radii, stochastic term) are fitted by
`scipy.optimize.least_squares` on the residuals divided by their tolerances, the
parametrized showers drawn with the same random numbers at every evaluation so that the
objective moves only with the parameters. The response is linear in its two factors and
changes no shape: it is solved last, in closed form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from caloforge.geometry import Geometry
from caloforge.simulation.calibration import RESPONSE_PIVOT_GEV, Calibration
from caloforge.simulation.simulator import ShowerSimulator
from caloforge.validation.features import centre_and_width, longitudinal_profile

TOLERANCE = {
    "share": 0.03,
    "spread": 0.10,
    "width": 0.05,
    "peak": 0.05,
    "resolution": 0.05,
    "response": 0.01,
}
# Layers holding at least this share of the energy are compared.
MIN_SHARE = 0.01
# The shape parameters a fit varies, their starting point and bounds.
SHAPE_BOUNDS = {
    "T_shift": (-3.0, 3.0),
    "alpha_scale": (0.5, 2.0),
    "sigma_T_scale": (0.2, 4.0),
    "sigma_alpha_scale": (0.2, 4.0),
    "Rt_scale": (0.3, 4.0),
    "Rt_front": (-2.0, 4.0),
    "p_shift": (-0.5, 0.5),
    "stochastic_scale": (0.3, 3.0),
}
LATERAL_PARAMETERS = ("Rt_scale", "Rt_front", "p_shift", "stochastic_scale")


@dataclass(frozen=True)
class Summary:
    """What the calibration compares, for showers of one energy."""

    response: float
    resolution: float
    weighted_resolution: float
    share: np.ndarray  # (layers,) mean share of the visible energy
    spread: np.ndarray  # (layers,) its standard deviation over showers
    width: np.ndarray  # (layers,) energy-weighted transverse RMS in x, mm
    peak: np.ndarray  # (layers,) energy-weighted share of a layer's energy in its hottest cell


def summarize(showers: np.ndarray, energy: np.ndarray, geometry: Geometry) -> Summary:
    """The calibration's quantities of a shower set; depth-summed grids count as one layer."""
    grid = showers if geometry.readout == "layers" else showers[..., None]
    visible = grid.reshape(len(grid), -1).sum(axis=1, dtype=np.float64)
    layers = longitudinal_profile(grid)
    share = layers / np.maximum(visible, 1e-30)[:, None]
    _, width = centre_and_width(grid, geometry, 0, per_layer=True)
    weight = layers / np.maximum(layers.sum(axis=0, keepdims=True), 1e-30)
    hottest = grid.max(axis=(1, 2)) / np.maximum(layers, 1e-30)
    f_e = np.array([layer.properties.f_e for layer in geometry.layers])
    weighted = (layers / f_e[: layers.shape[1]]).sum(axis=1)
    return Summary(
        response=float((visible / energy).mean()),
        resolution=_robust_resolution(visible),
        weighted_resolution=_robust_resolution(weighted),
        share=share.mean(axis=0),
        spread=share.std(axis=0),
        width=(width * weight).sum(axis=0),
        peak=(hottest * weight).sum(axis=0),
    )


def _robust_resolution(total: np.ndarray) -> float:
    """sigma/median with sigma from the interquartile range (1.349 sigma for a Gaussian)."""
    q1, q3 = np.percentile(total, [25, 75])
    return float((q3 - q1) / 1.349 / np.median(total))


def shape_residuals(model: Summary, reference: Summary) -> np.ndarray:
    """Relative differences over their tolerances (everything but the response)."""
    used = reference.share >= MIN_SHARE
    parts = [
        (model.share[used] / reference.share[used] - 1.0) / TOLERANCE["share"],
        (model.width[used] / reference.width[used] - 1.0) / TOLERANCE["width"],
        (model.peak[used] / reference.peak[used] - 1.0) / TOLERANCE["peak"],
        [(model.resolution / reference.resolution - 1.0) / TOLERANCE["resolution"]],
    ]
    if len(reference.share) > 1:  # per-layer readout: the profile's fluctuations, and the
        # sampling term apart from the layers' (the weighted sum is the raw one otherwise)
        parts.append((model.spread[used] / reference.spread[used] - 1.0) / TOLERANCE["spread"])
        ratio = model.weighted_resolution / reference.weighted_resolution
        parts.append([(ratio - 1.0) / TOLERANCE["resolution"]])
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])


@dataclass(frozen=True)
class Reference:
    """Reference showers at one energy: the cells and their conditions."""

    showers: np.ndarray
    conditions: Mapping[str, np.ndarray]


def simulate(
    geometry: Geometry, calibration: Calibration, conditions: Mapping[str, np.ndarray], seed: int
) -> np.ndarray:
    """Parametrized showers with `calibration` for these conditions, always from `seed`."""
    simulator = ShowerSimulator(geometry, calibration=calibration)
    return simulator.simulate(conditions, np.random.default_rng(seed))


def fit(
    geometry: Geometry,
    references: Mapping[float, Reference],
    *,
    start: Calibration | None = None,
    n: int = 200,
    seed: int = 1,
    max_steps: int = 30,
    fitted_on: str = "",
) -> tuple[Calibration, dict[str, float]]:
    """The calibration whose showers match the references best; returns it and a report
    (the cost before and after, the steps taken). Each step simulates every energy once and
    once more per shape parameter for the Jacobian."""
    from scipy.optimize import least_squares

    start = start or Calibration()
    # A depth-summed image does not show the longitudinal profile: only the lateral and
    # sampling factors are fitted there.
    names = tuple(SHAPE_BOUNDS) if geometry.readout == "layers" else LATERAL_PARAMETERS
    targets = {
        e: summarize(r.showers, r.conditions["energy"], geometry) for e, r in references.items()
    }
    # The parametrized showers' conditions: the first n of each reference (same distribution).
    conditions = {
        e: {k: np.asarray(v)[:n] for k, v in r.conditions.items()} for e, r in references.items()
    }

    def calibration_of(x: np.ndarray) -> Calibration:
        changes: dict[str, Any] = dict(zip(names, map(float, x), strict=True))
        return replace(start, **changes)

    def residuals(x: np.ndarray) -> np.ndarray:
        cal = calibration_of(x)
        out = []
        for k, (energy, target) in enumerate(sorted(targets.items())):
            showers = simulate(geometry, cal, conditions[energy], seed + k)
            out.append(
                shape_residuals(summarize(showers, conditions[energy]["energy"], geometry), target)
            )
        return np.concatenate(out)

    x0 = np.array([getattr(start, name) for name in names])
    lower, upper = (np.array(b) for b in zip(*(SHAPE_BOUNDS[k] for k in names), strict=True))
    before = float(np.sum(residuals(x0) ** 2))
    result = least_squares(
        residuals,
        x0,
        bounds=(lower, upper),
        diff_step=0.1,
        max_nfev=max_steps,
        x_scale=np.maximum(np.abs(x0), 0.1),
    )
    shaped = calibration_of(result.x)
    calibrated = solve_response(geometry, shaped, references, conditions, targets, seed)
    report = {
        "cost_before": before,
        "cost_after": float(np.sum(result.fun**2)),
        "steps": float(result.nfev),
        "residuals": float(len(result.fun)),
    }
    return replace(calibrated, fitted_on=fitted_on), report


def solve_response(
    geometry: Geometry,
    calibration: Calibration,
    references: Mapping[float, Reference],
    conditions: Mapping[float, Mapping[str, np.ndarray]],
    targets: Mapping[float, Summary],
    seed: int,
) -> Calibration:
    """`response_scale + response_slope ln(E/pivot)` by least squares on the ratio of the
    reference's response to the uncorrected model's, energy by energy."""
    flat = replace(calibration, response_scale=1.0, response_slope=0.0)
    energies, ratios = [], []
    for k, energy in enumerate(sorted(references)):
        showers = simulate(geometry, flat, conditions[energy], seed + k)
        model = summarize(showers, conditions[energy]["energy"], geometry)
        energies.append(energy)
        ratios.append(targets[energy].response / model.response)
    slope, scale = np.polyfit(np.log(np.array(energies) / RESPONSE_PIVOT_GEV), ratios, 1)
    return replace(calibration, response_scale=float(scale), response_slope=float(slope))


def compare(
    geometry: Geometry,
    calibration: Calibration,
    references: Mapping[float, Reference],
    *,
    n: int = 400,
    seed: int = 101,
) -> list[dict[str, float]]:
    """Per energy, the parametrized showers against the reference: response ratio, resolution
    ratio, the largest share and width deviations over the layers above 1 %."""
    rows = []
    for k, (energy, ref) in enumerate(sorted(references.items())):
        target = summarize(ref.showers, ref.conditions["energy"], geometry)
        conditions = {key: np.asarray(v)[:n] for key, v in ref.conditions.items()}
        showers = simulate(geometry, calibration, conditions, seed + k)
        model = summarize(showers, conditions["energy"], geometry)
        used = target.share >= MIN_SHARE
        rows.append(
            {
                "energy": energy,
                "response": model.response / target.response - 1.0,
                "resolution": model.resolution / target.resolution - 1.0,
                "share_max": float(np.max(np.abs(model.share[used] / target.share[used] - 1.0))),
                "width_max": float(np.max(np.abs(model.width[used] / target.width[used] - 1.0))),
            }
        )
    return rows
