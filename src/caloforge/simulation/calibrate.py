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

The shape factors (profile, fluctuations, radii, stochastic term) are fitted stage by stage,
each on the residuals it moves (`STAGES`), the parametrized showers drawn from the same seed
at every evaluation. The response is linear in its two factors and changes no shape: it is
solved last, in closed form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from caloforge.geometry import Geometry
from caloforge.simulation.calibration import PIVOT_GEV, Calibration
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
    "T_slope": (-1.5, 1.5),
    "alpha_scale": (0.5, 2.0),
    "sigma_T_scale": (0.2, 4.0),
    "sigma_alpha_scale": (0.2, 4.0),
    "Rt_scale": (0.3, 4.0),
    "Rt_front": (-2.0, 4.0),
    "p_shift": (-0.5, 0.5),
    "stochastic_scale": (0.3, 3.0),
    "constant_scale": (0.0, 5.0),
}
LATERAL_PARAMETERS = ("Rt_scale", "Rt_front", "p_shift", "stochastic_scale", "constant_scale")


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


def residual_groups(model: Summary, reference: Summary) -> dict[str, np.ndarray]:
    """Relative differences over their tolerances, by quantity (all but the response)."""
    used = reference.share >= MIN_SHARE
    groups = {
        "share": (model.share[used] / reference.share[used] - 1.0) / TOLERANCE["share"],
        "width": (model.width[used] / reference.width[used] - 1.0) / TOLERANCE["width"],
        "peak": (model.peak[used] / reference.peak[used] - 1.0) / TOLERANCE["peak"],
        "resolution": np.array([model.resolution / reference.resolution - 1.0])
        / TOLERANCE["resolution"],
    }
    if len(reference.share) > 1:  # per-layer readout: the profile's fluctuations, and the
        # sampling term apart from the layers' (the weighted sum is the raw one otherwise)
        groups["spread"] = (model.spread[used] / reference.spread[used] - 1.0) / TOLERANCE["spread"]
        ratio = model.weighted_resolution / reference.weighted_resolution
        groups["weighted_resolution"] = np.array([ratio - 1.0]) / TOLERANCE["resolution"]
    return groups


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


# The fit's stages: which factors each moves, and which residuals it minimises. Each factor
# acts mainly on its own quantity, so stage by stage is robust where a joint gradient is not:
# a parametrized shower changes as a whole when a factor changes its number of energy spots,
# so the objective is noisy on small steps.
STAGES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("T_shift", "T_slope", "alpha_scale"), ("share",)),
    # The profile's fluctuations move the layers' spreads and, through leakage, the
    # resolution: both are held, or the spreads are bought with the resolution.
    (("sigma_T_scale", "sigma_alpha_scale"), ("spread", "resolution", "weighted_resolution")),
    (("Rt_scale", "Rt_front", "p_shift"), ("width", "peak")),
    (("stochastic_scale", "constant_scale"), ("weighted_resolution", "resolution")),
)


def fit(
    geometry: Geometry,
    references: Mapping[float, Reference],
    *,
    start: Calibration | None = None,
    n: int = 200,
    seed: int = 1,
    rounds: int = 2,
    evaluations: int = 40,
    fitted_on: str = "",
) -> tuple[Calibration, dict[str, float]]:
    """The calibration whose showers match the references best; returns it and a report
    (the cost before and after, the evaluations made).

    Stage by stage (`STAGES`), each a Nelder-Mead search over its few factors on its own
    residuals (at most `evaluations` each), all stages `rounds` times over; the response
    last, in closed form. Depth-summed images show no longitudinal profile: their stages
    on the profile are skipped.
    """
    calibration = start or Calibration()
    targets = {
        e: summarize(r.showers, r.conditions["energy"], geometry) for e, r in references.items()
    }
    # The parametrized showers' conditions: the first n of each reference (same distribution).
    conditions = {
        e: {k: np.asarray(v)[:n] for k, v in r.conditions.items()} for e, r in references.items()
    }
    used = 0

    def groups_of(cal: Calibration) -> list[dict[str, np.ndarray]]:
        nonlocal used
        used += 1
        out = []
        for k, (energy, target) in enumerate(sorted(targets.items())):
            showers = simulate(geometry, cal, conditions[energy], seed + k)
            model = summarize(showers, conditions[energy]["energy"], geometry)
            out.append(residual_groups(model, target))
        return out

    def cost(cal: Calibration, *, which: tuple[str, ...]) -> float:
        return float(
            sum(np.sum(_soft(g[name])) for g in groups_of(cal) for name in which if name in g)
        )

    every = tuple(name for _, which in STAGES for name in which)
    before = cost(calibration, which=every)
    for _ in range(rounds):
        for names, which in STAGES:
            if geometry.readout != "layers" and not set(names) <= set(LATERAL_PARAMETERS):
                continue
            calibration = _fit_stage(calibration, names, partial(cost, which=which), evaluations)
    calibration = solve_response(geometry, calibration, references, conditions, targets, seed)
    report = {
        "cost_before": before,
        "cost_after": cost(calibration, which=every),
        "evaluations": float(used),
    }
    return replace(calibration, fitted_on=fitted_on), report


def _fit_stage(
    calibration: Calibration,
    names: tuple[str, ...],
    cost: Callable[[Calibration], float],
    evaluations: int,
) -> Calibration:
    """Nelder-Mead over the factors `names` (inside their bounds), from `calibration`."""
    from scipy.optimize import minimize

    low = np.array([SHAPE_BOUNDS[name][0] for name in names])
    high = np.array([SHAPE_BOUNDS[name][1] for name in names])

    def with_factors(x: np.ndarray) -> Calibration:
        changes: dict[str, Any] = dict(zip(names, map(float, np.clip(x, low, high)), strict=True))
        return replace(calibration, **changes)

    x0 = np.array([getattr(calibration, name) for name in names])
    simplex = np.vstack([x0, x0 + np.diag(0.1 * (high - low))])
    result = minimize(
        lambda x: cost(with_factors(x)),
        x0,
        method="Nelder-Mead",
        options={"initial_simplex": simplex, "maxfev": evaluations, "xatol": 1e-3},
    )
    return with_factors(result.x)


def _soft(r: np.ndarray) -> np.ndarray:
    """Soft L1: quadratic within one tolerance, linear beyond, so that a layer the
    parametrization cannot follow (the first, fed by back-scattered photons) does not steer
    the rest."""
    return 2.0 * (np.sqrt(1.0 + np.square(r)) - 1.0)


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
    slope, scale = np.polyfit(np.log(np.array(energies) / PIVOT_GEV), ratios, 1)
    return replace(calibration, response_scale=float(scale), response_slope=float(slope))


def compare(
    geometry: Geometry,
    calibration: Calibration,
    references: Mapping[float, Reference],
    *,
    n: int = 400,
    seed: int = 101,
) -> list[dict[str, float]]:
    """Per energy, the parametrized showers against the reference (relative differences):
    response, resolution, and over the layers above 1 % the RMS and the largest deviation of
    the share and of the width, and the fraction of those layers within tolerance."""
    rows = []
    for k, (energy, ref) in enumerate(sorted(references.items())):
        target = summarize(ref.showers, ref.conditions["energy"], geometry)
        conditions = {key: np.asarray(v)[:n] for key, v in ref.conditions.items()}
        showers = simulate(geometry, calibration, conditions, seed + k)
        model = summarize(showers, conditions["energy"], geometry)
        used = target.share >= MIN_SHARE
        share = model.share[used] / target.share[used] - 1.0
        width = model.width[used] / target.width[used] - 1.0
        rows.append(
            {
                "energy": energy,
                "response": model.response / target.response - 1.0,
                "resolution": model.resolution / target.resolution - 1.0,
                "share_rms": float(np.sqrt(np.mean(share**2))),
                "share_max": float(np.max(np.abs(share))),
                "share_within": float(np.mean(np.abs(share) <= TOLERANCE["share"])),
                "width_rms": float(np.sqrt(np.mean(width**2))),
                "width_max": float(np.max(np.abs(width))),
                "width_within": float(np.mean(np.abs(width) <= TOLERANCE["width"])),
            }
        )
    return rows
