"""Fitting a `Calibration` of the parametrized engine to reference showers (Geant4's).

The reference is a few sets of showers, each of one energy or of a narrow band of energies.
Each set and the parametrized showers drawn with its energies are reduced to the quantities
the calibration targets, each with the tolerance it is held to (a residual is the difference
over the tolerance and the reference's statistical error, in quadrature):

- the mean share of the visible energy in each layer (layers over 1 %): 3 %; and in the
  layers between 0.1 and 1 % (the first and the last), which steer the profile's form: 10 %;
- the spread of that share from shower to shower (the profile's fluctuations): 10 %;
- the transverse width (energy-weighted RMS in x) in each of those layers: 5 %;
- the share of each of those layers' energy in its hottest cell (the core against the tail,
  which the width alone confuses): 5 %;
- the resolution, sigma90/mu90 of E_vis/E (as `caloforge validate` measures it): 5 %; and
  the same for the sum with each layer weighted by its inverse sampling fraction, where the
  sampling term shows without the thin/thick-layer fluctuations of the raw sum: 5 %;
- the tails of E_vis/E: its 5 % and 95 % quantiles' distances from the median, relative to
  it (Geant4's lower tail is the longer: sigma90 alone lets a symmetric spread stand in for
  it): 5 %;
- the depth of the shower, the energy-weighted mean layer, at its 5 %, 50 % and 95 %
  quantiles (a long tail of deep showers): 2 %;
- the response, mu90 of E_vis/E: 1 %;
- the mean number of cells above 10 keV and above 100 keV of visible energy (the hits of
  `caloforge validate`, and where a halo of small deposits shows): 5 %.

Two kinds of stages. What acts along the depth (the profile's depth, shape and fluctuations,
the sampling per layer and the stochastic and constant terms) is fitted on `layer_energies`:
the simulator's own layer energies without its energy spots, exact per shower but for the
lateral leakage out of the grid, and smooth in the factors when drawn from one seed. A
least-squares fit of a dozen factors then takes a minute. The lateral factors change only
the spots' positions: they are fitted on simulated showers, with a Nelder-Mead search each
on its own residuals, the showers drawn from the same seed at every evaluation. The
response is linear in its two factors and changes no shape: it is solved last, in closed
form.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from caloforge.geometry import Geometry
from caloforge.simulation import gflash
from caloforge.simulation.calibration import PIVOT_GEV, Calibration
from caloforge.simulation.simulator import STEP_X0, ShowerSimulator
from caloforge.validation.features import HIT_THRESHOLD, centre_and_width, longitudinal_profile

TOLERANCE = {
    "share": 0.03,
    "small_share": 0.10,
    "spread": 0.10,
    "width": 0.05,
    "peak": 0.05,
    "resolution": 0.05,
    "tails": 0.05,
    "depth": 0.02,
    "response": 0.01,
    "hits": 0.05,
}
# The visible energies (GeV) above which cells are counted as hits.
HIT_THRESHOLDS = (HIT_THRESHOLD, 10 * HIT_THRESHOLD)
# Layers holding at least this share of the energy are compared; those between
# MIN_SMALL_SHARE and MIN_SHARE only in their mean share, at the looser tolerance.
MIN_SHARE = 0.01
MIN_SMALL_SHARE = 0.001
# The factors a fit varies and their bounds.
BOUNDS = {
    "T_shift": (-3.0, 3.0),
    "T_slope": (-1.5, 1.5),
    "alpha_scale": (0.5, 2.5),
    "alpha_slope": (-0.5, 0.5),
    "origin": (0.0, 4.0),
    "origin_slope": (-1.0, 1.0),
    "tail_fraction": (0.0, 0.8),
    "tail_slope": (-0.3, 0.3),
    "tail_stretch": (1.0, 3.0),
    "sigma_T_scale": (0.2, 4.0),
    "sigma_alpha_scale": (0.2, 4.0),
    "rho_shift": (-1.5, 0.5),
    "depth_noise": (0.0, 1.0),
    "noise_slope": (-1.0, 1.0),
    "noise_length": (0.3, 8.0),
    "start_length": (0.0, 3.0),
    "start_slope": (-1.0, 1.0),
    "start_fraction": (0.05, 1.0),
    "Rt_scale": (0.3, 4.0),
    "Rt_energy": (-0.5, 0.5),
    "Rt_depth": (-1.0, 1.0),
    "Rt_front": (-2.0, 4.0),
    "p_shift": (-0.5, 0.5),
    "p_energy": (-0.2, 0.2),
    "p_depth": (-0.3, 0.3),
    "tail_spots": (0.5, 8.0),
    "tail_spots_slope": (-0.5, 0.5),
    "stochastic_scale": (0.3, 3.0),
    "constant_scale": (0.0, 5.0),
    "sampling_exponent": (-0.5, 0.5),
    "back_scale": (0.2, 2.0),
    "stochastic_exponent": (-1.0, 3.0),
}
# Fitted on `layer_energies` (per-layer readout), stage by stage: the profile's mean depth
# and form and the sampling per layer on the layer shares; its fluctuations and the sampling
# terms on the shares' spreads and the resolutions. Each stage's factors move mainly its own
# quantities.
PROFILE_STAGES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        (
            "T_shift",
            "T_slope",
            "alpha_scale",
            "alpha_slope",
            "origin",
            "origin_slope",
            "tail_fraction",
            "tail_slope",
            "tail_stretch",
            "sampling_exponent",
            "back_scale",
        ),
        ("share", "small_share"),
    ),
    (
        (
            "sigma_T_scale",
            "sigma_alpha_scale",
            "rho_shift",
            "depth_noise",
            "noise_slope",
            "noise_length",
            "start_length",
            "start_slope",
            "start_fraction",
            "stochastic_scale",
            "constant_scale",
            "stochastic_exponent",
        ),
        # the mean shares too: the late start moves them as it skews the depth
        ("spread", "resolution", "weighted_resolution", "tails", "depth", "share", "small_share"),
    ),
)
PROFILE_QUANTITIES = tuple(dict.fromkeys(q for _, which in PROFILE_STAGES for q in which))
# Where a fit from scratch starts: inside the region where the profile's form can move. At
# the bare parametrization the virtual origin sits on its bound and the stretched fraction
# at zero, where the stretch has no gradient; nor has the noise length without noise.
FIT_START = Calibration(
    origin=1.0, tail_fraction=0.2, tail_stretch=1.3, depth_noise=0.2, noise_length=2.0
)
LATERAL_PARAMETERS = (
    "Rt_scale",
    "Rt_energy",
    "Rt_depth",
    "Rt_front",
    "p_shift",
    "p_energy",
    "p_depth",
)
# Fitted on simulated showers, after the lateral factors: the tail's spot count on the hits.
HALO_STAGE: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("tail_spots", "tail_spots_slope"),
    ("hits",),
)
# Depth-summed images show no profile: their sampling factors are fitted on simulated showers.
SUMMED_STAGES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (LATERAL_PARAMETERS, ("width", "peak")),
    HALO_STAGE,
    (("stochastic_scale", "constant_scale"), ("resolution",)),
)


@dataclass(frozen=True)
class Summary:
    """What the calibration compares, for showers of one energy (or a narrow band)."""

    n: int
    response: float  # mu90 of E_vis / E
    resolution: float  # sigma90 / mu90 of E_vis / E
    weighted_resolution: float  # the same for the layers weighted by 1 / f_e
    tails: np.ndarray  # (2,) median - 5 % quantile, 95 % quantile - median of E_vis/E, / median
    depth: np.ndarray  # (3,) 5, 50, 95 % quantiles of the energy-weighted mean layer (from 1)
    share: np.ndarray  # (layers,) mean share of the visible energy
    spread: np.ndarray  # (layers,) its standard deviation over showers
    width: np.ndarray | None = None  # (layers,) energy-weighted transverse RMS in x, mm
    peak: np.ndarray | None = None  # (layers,) share of a layer's energy in its hottest cell
    hits: np.ndarray | None = None  # (thresholds,) mean number of cells above HIT_THRESHOLDS
    hits_spread: np.ndarray | None = None  # (thresholds,) its standard deviation


def mu90_sigma90(values: np.ndarray) -> tuple[float, float]:
    """mu90 and sigma90/mu90: mean and relative standard deviation of the values between the
    5 % and 95 % quantiles (the definition of `caloforge.validation.metrics.mu90`)."""
    lo, hi = np.quantile(values, [0.05, 0.95])
    core = values[(values >= lo) & (values <= hi)]
    mu = float(core.mean())
    return mu, float(core.std(ddof=1) / mu) if len(core) > 1 else 0.0


def summarize_layers(layers: np.ndarray, energy: np.ndarray, geometry: Geometry) -> Summary:
    """The depth quantities of showers from their visible energy per layer (GeV, (n, L))."""
    visible = layers.sum(axis=1)
    share = layers / np.maximum(visible, 1e-30)[:, None]
    f_e = np.array([layer.properties.f_e for layer in geometry.layers])
    weighted = (layers / f_e[: layers.shape[1]]).sum(axis=1)
    response, resolution = mu90_sigma90(visible / energy)
    low, median, high = np.quantile(visible / energy, [0.05, 0.5, 0.95])
    # mean layer counted from 1: a relative tolerance means the same at the front as deeper
    depth = (share * np.arange(1, layers.shape[1] + 1)).sum(axis=1)
    return Summary(
        n=len(layers),
        response=response,
        resolution=resolution,
        weighted_resolution=mu90_sigma90(weighted / energy)[1],
        tails=np.array([median - low, high - median]) / median,
        depth=np.quantile(depth, [0.05, 0.5, 0.95]),
        share=share.mean(axis=0),
        spread=share.std(axis=0),
    )


def summarize(showers: np.ndarray, energy: np.ndarray, geometry: Geometry) -> Summary:
    """The calibration's quantities of a shower set; depth-summed grids count as one layer."""
    grid = showers if geometry.readout == "layers" else showers[..., None]
    layers = longitudinal_profile(grid)
    _, width = centre_and_width(grid, geometry, 0, per_layer=True)
    weight = layers / np.maximum(layers.sum(axis=0, keepdims=True), 1e-30)
    hottest = grid.max(axis=(1, 2)) / np.maximum(layers, 1e-30)
    summary = summarize_layers(layers, np.asarray(energy, dtype=np.float64), geometry)
    flat = showers.reshape(len(showers), -1)
    counts = np.stack([(flat > t).sum(axis=1) for t in HIT_THRESHOLDS], axis=1)
    return replace(
        summary,
        width=(width * weight).sum(axis=0),
        peak=(hottest * weight).sum(axis=0),
        hits=counts.mean(axis=0),
        hits_spread=counts.std(axis=0),
    )


def layer_energies(
    geometry: Geometry, calibration: Calibration, energy: np.ndarray, seed: int
) -> np.ndarray:
    """Visible energy per layer (GeV, (n, L)) of perpendicular electron showers as
    `ShowerSimulator` makes them, without its energy spots: per shower the calibrated
    profile integrated over the simulator's steps (depth noise included) and shared out to
    the layers, times their sampling fractions, with the sampling fluctuation of each
    layer's total (the simulator's cells' Gamma draws add up to one Gamma per layer, drawn
    here by its Wilson-Hilferty normal approximation, smooth in the factors), the constant
    term and the response. What leaks out of the grid sideways (well under 1 % on 6 Moliere
    radii) is not left out. Every variate is drawn whatever the factors: one seed, one set."""
    rng = np.random.default_rng(seed)
    energy = np.asarray(energy, dtype=np.float64)
    n, material, step = len(energy), geometry.front, STEP_X0
    bounds = np.concatenate([[0.0], np.cumsum([layer.thickness_X0 for layer in geometry.layers])])
    edges = np.arange(int(np.ceil(bounds[-1] / step)) + 1) * step
    fluct = calibration.profile(gflash.profile_fluctuation(energy, material), energy)
    T, alpha = gflash.sample_profile(fluct, rng)
    z_noise = rng.standard_normal((n, len(edges) - 1))
    z_sampling = rng.standard_normal((n, len(bounds) - 1))
    z_constant = rng.standard_normal(n)
    z_start = rng.standard_exponential(n)
    shape = calibration.shape(energy[:, None])
    cdf = gflash.profile_cdf(edges[None, :], T[:, None], alpha[:, None], shape)
    late = calibration.start_depth(energy)
    if late is not None:
        moved = edges[None, :] - (late * z_start)[:, None]
        cdf = calibration.late_cdf(
            cdf, gflash.profile_cdf(moved, T[:, None], alpha[:, None], shape)
        )[0]
    dE = energy[:, None] * np.diff(cdf, axis=1)
    factors = calibration.depth_noise_factors(energy, z_noise, step)
    if factors is not None:
        changed = dE * factors
        dE = changed * (dE.sum(axis=1) / np.maximum(changed.sum(axis=1), 1e-300))[:, None]
    # Each step's energy to the layers it overlaps, in proportion (spots are uniform in it).
    overlap = np.clip(
        np.minimum(edges[1:, None], bounds[None, 1:])
        - np.maximum(edges[:-1, None], bounds[None, :-1]),
        0.0,
        None,
    )
    deposit = dE @ (overlap / step)
    c_s = geometry.stochastic_term * calibration.stochastic_scale
    c2 = c_s**2 * calibration.layer_stochastic(geometry)
    fluctuated = _gamma(deposit / c2, z_sampling) * c2
    f_e = np.array([layer.properties.f_e for layer in geometry.layers])
    visible = fluctuated * f_e * calibration.layer_response(geometry)
    constant = geometry.constant_term * calibration.constant_scale
    scale = np.maximum(1.0 + constant * z_constant, 0.0) * calibration.response(energy)
    return visible * scale[:, None]


def _gamma(shape: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Gamma variates of these shapes from standard normal ones z (Wilson-Hilferty: the cube
    root of a Gamma variate is nearly normal), smooth in the shapes."""
    k = np.maximum(shape, 1e-12)
    return k * np.maximum(1.0 - 1.0 / (9.0 * k) + z / np.sqrt(9.0 * k), 0.0) ** 3


def residual_groups(model: Summary, reference: Summary) -> dict[str, np.ndarray]:
    """Differences over their tolerances and the reference's statistical errors, in
    quadrature, by quantity (all but the response)."""
    used = reference.share >= MIN_SHARE
    n = max(reference.n, 2)

    def relative(m: np.ndarray, r: np.ndarray, tolerance: float, error: np.ndarray) -> np.ndarray:
        return (m / r - 1.0) / np.hypot(tolerance, error)

    spread = reference.spread[used] / reference.share[used]
    resolution_error = np.array([1.0 / np.sqrt(2.0 * n)])
    groups = {
        "share": relative(
            model.share[used], reference.share[used], TOLERANCE["share"], spread / np.sqrt(n)
        ),
        "resolution": relative(
            np.array([model.resolution]),
            np.array([reference.resolution]),
            TOLERANCE["resolution"],
            resolution_error,
        ),
    }
    small = (reference.share >= MIN_SMALL_SHARE) & ~used
    if small.any():
        groups["small_share"] = relative(
            model.share[small],
            reference.share[small],
            TOLERANCE["small_share"],
            reference.spread[small] / reference.share[small] / np.sqrt(n),
        )
    for name in ("width", "peak"):
        m, r = getattr(model, name), getattr(reference, name)
        if m is not None and r is not None:
            groups[name] = relative(m[used], r[used], TOLERANCE[name], np.array(0.0))
    if model.hits is not None and reference.hits is not None and reference.hits_spread is not None:
        seen = reference.hits > 0
        groups["hits"] = relative(
            model.hits[seen],
            reference.hits[seen],
            TOLERANCE["hits"],
            reference.hits_spread[seen] / reference.hits[seen] / np.sqrt(n),
        )
    if len(reference.share) > 1:  # per-layer readout: the profile's fluctuations, and the
        # sampling term apart from the layers' (the weighted sum is the raw one otherwise)
        groups["spread"] = relative(
            model.spread[used],
            reference.spread[used],
            TOLERANCE["spread"],
            np.array(1.0 / np.sqrt(2.0 * n)),
        )
        groups["weighted_resolution"] = relative(
            np.array([model.weighted_resolution]),
            np.array([reference.weighted_resolution]),
            TOLERANCE["resolution"],
            resolution_error,
        )
        # A tail quantile's error is about 1.3 sigma / sqrt(n) for a normal distribution:
        # relative to its distance from the median (1.64 sigma), 0.8 / sqrt(n); the mean
        # layer spreads by about 15 % of itself: its quantiles 0.2 / sqrt(n).
        groups["tails"] = relative(
            model.tails, reference.tails, TOLERANCE["tails"], np.array(0.8 / np.sqrt(n))
        )
        groups["depth"] = relative(
            model.depth, reference.depth, TOLERANCE["depth"], np.array(0.2 / np.sqrt(n))
        )
    return groups


@dataclass(frozen=True)
class Reference:
    """Reference showers of one energy or band: the cells and their conditions."""

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
    rounds: int = 2,
    evaluations: int = 40,
    profile_stages: Sequence[tuple[tuple[str, ...], tuple[str, ...]]] = PROFILE_STAGES,
    profile_showers: int = 800,
    lateral: tuple[str, ...] = LATERAL_PARAMETERS,
    only: Collection[str] | None = None,
    fitted_on: str = "",
) -> tuple[Calibration, dict[str, float]]:
    """The calibration whose showers match the references best; returns it and a report
    (the cost before and after, the simulations made).

    From `start` (default `FIT_START`), `rounds` times: the depth factors stage by stage
    (`profile_stages`) by least squares on the layer model (`fit_profile`,
    `profile_showers` per reference), then the `lateral` factors by a Nelder-Mead search on
    `n` simulated showers per reference (at most `evaluations`); the response last, in
    closed form. Depth-summed images show no longitudinal profile: their lateral and
    sampling factors are fitted on simulated showers (`SUMMED_STAGES`). With `only`, the
    stages vary those factors alone and hold the rest where `start` has them (a refit of a
    table's sampling terms that keeps its lateral factors, say).
    """
    unknown = sorted(set(only or ()) - set(BOUNDS))
    if unknown:
        raise ValueError(f"not factors a fit varies: {unknown}; those are {sorted(BOUNDS)}")
    per_layer = geometry.readout == "layers"
    calibration = start or (FIT_START if per_layer else Calibration())
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

    stages = ((lateral, ("width", "peak")), HALO_STAGE) if per_layer else SUMMED_STAGES
    every = tuple(name for _, which in stages for name in which)
    every += PROFILE_QUANTITIES if per_layer else ()
    depth_stages = tuple(profile_stages) if per_layer else ()
    if only is not None:
        stages, depth_stages = _restricted(stages, only), _restricted(depth_stages, only)
    before = cost(calibration, which=every)
    energies = {e: np.asarray(r.conditions["energy"]) for e, r in references.items()}
    for _ in range(rounds):
        for names, which in depth_stages:
            calibration = fit_profile(
                geometry, calibration, energies, targets, names, which, profile_showers
            )
        for names, which in stages:
            calibration = _fit_stage(calibration, names, partial(cost, which=which), evaluations)
    calibration = solve_response(geometry, calibration, references, conditions, targets, seed)
    report = {
        "cost_before": before,
        "cost_after": cost(calibration, which=every),
        "evaluations": float(used),
    }
    return replace(calibration, fitted_on=fitted_on), report


def _restricted(
    stages: Sequence[tuple[tuple[str, ...], tuple[str, ...]]], only: Collection[str]
) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """The stages with their factors cut to `only`; those left with none dropped."""
    kept = ((tuple(n for n in names if n in only), which) for names, which in stages)
    return tuple((names, which) for names, which in kept if names)


def fit_profile(
    geometry: Geometry,
    calibration: Calibration,
    energies: Mapping[float, np.ndarray],
    targets: Mapping[float, Summary],
    names: Sequence[str],
    quantities: Sequence[str] = PROFILE_QUANTITIES,
    showers: int = 800,
    seed: int = 7,
) -> Calibration:
    """The depth factors `names` by least squares (soft L1) of the `quantities` of
    `layer_energies` against `targets`, each reference's energies repeated to at least
    `showers` showers, from one seed."""
    from scipy.optimize import least_squares

    names = tuple(names)
    low = np.array([BOUNDS[name][0] for name in names])
    high = np.array([BOUNDS[name][1] for name in names])
    repeated = {
        e: np.resize(v, max(showers, len(v))) for e, v in sorted(energies.items()) if len(v)
    }

    # The search runs on u = 1 + (factor - low) / (high - low), in [1, 2]: the same relative
    # finite-difference step is then about a thousandth of every factor's range, also for a
    # factor at zero.
    def with_factors(u: np.ndarray) -> Calibration:
        x = np.clip(low + (u - 1.0) * (high - low), low, high)
        changes: dict[str, Any] = dict(zip(names, map(float, x), strict=True))
        return replace(calibration, **changes)

    def residuals(u: np.ndarray) -> np.ndarray:
        cal = with_factors(u)
        parts = []
        for k, (e, energy) in enumerate(repeated.items()):
            layers = layer_energies(geometry, cal, energy, seed + k)
            groups = residual_groups(summarize_layers(layers, energy, geometry), targets[e])
            parts += [groups[name] for name in quantities if name in groups]
        return np.concatenate(parts)

    x0 = np.clip([getattr(calibration, name) for name in names], low, high)
    u0 = 1.0 + (x0 - low) / (high - low)
    result = least_squares(
        residuals, u0, bounds=(1.0, 2.0), loss="soft_l1", diff_step=1e-3, max_nfev=30 * len(names)
    )
    return with_factors(result.x)


def _fit_stage(
    calibration: Calibration,
    names: tuple[str, ...],
    cost: Callable[[Calibration], float],
    evaluations: int,
) -> Calibration:
    """Nelder-Mead over the factors `names` (inside their bounds), from `calibration`."""
    from scipy.optimize import minimize

    low = np.array([BOUNDS[name][0] for name in names])
    high = np.array([BOUNDS[name][1] for name in names])

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
    reference's response to the uncorrected model's, reference by reference (at the mean
    log energy of a band)."""
    flat = replace(calibration, response_scale=1.0, response_slope=0.0)
    energies, ratios = [], []
    for k, key in enumerate(sorted(references)):
        showers = simulate(geometry, flat, conditions[key], seed + k)
        energy = conditions[key]["energy"]
        model = summarize(showers, energy, geometry)
        energies.append(float(np.exp(np.mean(np.log(energy)))))
        ratios.append(targets[key].response / model.response)
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
        assert model.width is not None and target.width is not None
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
