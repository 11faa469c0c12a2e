"""The GFlash parametrization of electromagnetic showers in a sampling calorimeter.

Pure, vectorised functions of the primary energy and the effective material. Source:
Grindhammer & Peters, hep-ex/0001020, Appendix A (facts collected in
shared/reference/physics.md, sections 1-2, including the pitfalls of public implementations
that are avoided here). Units: depth `t` in radiation lengths X0, radius in Moliere radii RM,
energy `E` in GeV, `y = E / Ec`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import gammainc

from caloforge.geometry import SamplingProperties

# Clamps used in practice at the edge of the fits' validity (low y): physics.md section 1.
_MIN_LOG_ARG = 0.1
_MAX_SIGMA = 0.5
_MIN_T = 1.0
_MIN_ALPHA = 1.1


def ln_y(energy: np.ndarray, material: SamplingProperties) -> np.ndarray:
    """ln(E / Ec_eff) with E in GeV."""
    return np.log(np.asarray(energy, dtype=np.float64) * 1000.0 / material.Ec)


def mean_profile(energy: np.ndarray, material: SamplingProperties) -> tuple[np.ndarray, np.ndarray]:
    """Average longitudinal profile (T, alpha) in a sampling calorimeter.

    T_sam = ln y - 0.858 - 0.59/Fs - 0.53 (1 - e_hat);
    alpha_sam = 0.21 + (0.492 + 2.38/Z) ln y - 0.444/Fs.
    """
    ly = ln_y(energy, material)
    T = ly - 0.858 - 0.59 / material.Fs - 0.53 * (1.0 - material.e_hat)
    alpha = 0.21 + (0.492 + 2.38 / material.Z) * ly - 0.444 / material.Fs
    return np.maximum(T, _MIN_T), np.maximum(alpha, _MIN_ALPHA)


@dataclass(frozen=True)
class ProfileFluctuation:
    """Per-shower log-normal distribution of (T, alpha): means, widths, correlation."""

    mean_ln_T: np.ndarray
    sigma_ln_T: np.ndarray
    mean_ln_alpha: np.ndarray
    sigma_ln_alpha: np.ndarray
    rho: np.ndarray


def profile_fluctuation(energy: np.ndarray, material: SamplingProperties) -> ProfileFluctuation:
    """Correlated log-normal fluctuations of T and alpha, sampling-calorimeter version."""
    ly = ln_y(energy, material)
    Z, Fs, e_hat = material.Z, material.Fs, material.e_hat
    # Homogeneous means, then the sampling shift applied to their exponentials.
    exp_ln_T_hom = np.maximum(ly - 0.812, _MIN_LOG_ARG)
    exp_ln_alpha_hom = np.maximum(0.81 + (0.458 + 2.26 / Z) * ly, _MIN_LOG_ARG)
    mean_ln_T = np.log(np.maximum(exp_ln_T_hom - 0.55 / Fs - 0.69 * (1.0 - e_hat), _MIN_LOG_ARG))
    mean_ln_alpha = np.log(np.maximum(exp_ln_alpha_hom - 0.476 / Fs, _MIN_LOG_ARG))
    sigma_ln_T = _sigma(-2.5 + 1.25 * ly)
    sigma_ln_alpha = _sigma(-0.82 + 0.79 * ly)
    rho = np.clip(0.784 - 0.023 * ly, -1.0, 1.0)
    return ProfileFluctuation(mean_ln_T, sigma_ln_T, mean_ln_alpha, sigma_ln_alpha, rho)


def _sigma(denominator: np.ndarray) -> np.ndarray:
    """1/denominator clamped to (0, 0.5]; a non-positive denominator is past the fit's edge."""
    with np.errstate(divide="ignore"):
        s = np.where(denominator > 0, 1.0 / np.maximum(denominator, 1e-12), _MAX_SIGMA)
    return np.minimum(s, _MAX_SIGMA)


def sample_profile(
    fluct: ProfileFluctuation, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one (T, alpha) per shower from the correlated log-normal."""
    n = fluct.mean_ln_T.shape
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    a, b = np.sqrt((1.0 + fluct.rho) / 2.0), np.sqrt((1.0 - fluct.rho) / 2.0)
    ln_T = fluct.mean_ln_T + fluct.sigma_ln_T * (a * z1 + b * z2)
    ln_alpha = fluct.mean_ln_alpha + fluct.sigma_ln_alpha * (a * z1 - b * z2)
    return np.maximum(np.exp(ln_T), _MIN_T), np.maximum(np.exp(ln_alpha), _MIN_ALPHA)


def gamma_cdf(t: np.ndarray, T: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Fraction of the energy deposited before depth t: P(alpha, beta t), beta = (alpha-1)/T."""
    beta = (alpha - 1.0) / T
    return gammainc(alpha, beta * np.maximum(t, 0.0))


@dataclass(frozen=True)
class ProfileShape:
    """How a shower's mean profile departs from a Gamma of the depth t after its start.

    origin: X0 before the start where the Gamma starts (a virtual origin: the profile then
    holds energy right from t = 0, as a charged primary's does); its depth of maximum T stays
    measured from the start. tail: the fraction of the energy in a second Gamma of the same
    shape stretched in depth by `stretch`, the photons that carry energy beyond the first's
    exponential fall-off. Arrays broadcast with the depths they are used with."""

    origin: np.ndarray
    tail: np.ndarray
    stretch: float

    @property
    def is_gamma(self) -> bool:
        return not (np.any(self.origin) or np.any(self.tail))


def profile_cdf(
    t: np.ndarray, T: np.ndarray, alpha: np.ndarray, shape: ProfileShape | None = None
) -> np.ndarray:
    """Fraction of the energy deposited before depth t (X0 after the start) of the profile
    (T, alpha) of `shape`: `gamma_cdf` where the shape is a plain Gamma. The part of the
    virtual profile in front of the start is left out and the rest renormalised."""
    if shape is None or shape.is_gamma:
        return gamma_cdf(t, T, alpha)
    origin = np.maximum(shape.origin, 0.0)
    beta = (alpha - 1.0) / (T + origin)
    tail = np.clip(shape.tail, 0.0, 1.0)

    def before(u: np.ndarray) -> np.ndarray:
        core = gammainc(alpha, beta * u)
        if not np.any(tail):
            return core
        return (1.0 - tail) * core + tail * gammainc(alpha, beta * u / shape.stretch)

    front = before(origin)
    return (before(np.maximum(t, 0.0) + origin) - front) / (1.0 - front)


def spot_profile(
    T: np.ndarray, alpha: np.ndarray, material: SamplingProperties
) -> tuple[np.ndarray, np.ndarray]:
    """Longitudinal (T, alpha) of the energy spots' density (sampling calorimeter)."""
    return T * (0.813 + 0.0019 * material.Z), alpha * (0.844 + 0.0026 * material.Z)


def n_spots(energy: np.ndarray, stochastic_term: float) -> np.ndarray:
    """Mean number of energy spots per shower, N = (10.3 / c_s) E^0.959."""
    return (10.3 / stochastic_term) * np.asarray(energy, dtype=np.float64) ** 0.959


@dataclass(frozen=True)
class RadialParameters:
    """Two-component radial profile: core radius Rc, tail radius Rt (RM), core fraction p."""

    Rc: np.ndarray
    Rt: np.ndarray
    p: np.ndarray


def radial_parameters(
    energy: np.ndarray, tau: np.ndarray, material: SamplingProperties
) -> RadialParameters:
    """Rc, Rt and p at scaled depth tau (broadcast with energy), sampling-corrected."""
    lnE = np.log(np.asarray(energy, dtype=np.float64))
    Z, Fs, e_hat = material.Z, material.Fs, material.e_hat
    Rc = (0.0251 + 0.00319 * lnE) + (0.1162 - 0.000381 * Z) * tau
    k1, k2, k3, k4 = 0.659 - 0.00309 * Z, 0.645, -2.59, 0.3585 + 0.0421 * lnE
    Rt = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2, p3 = 2.632 - 0.00094 * Z, 0.401 + 0.00187 * Z, 1.313 - 0.0686 * lnE
    x = (p2 - tau) / p3
    p = p1 * np.exp(x - np.exp(x))
    # Sampling corrections (physics.md section 2).
    Rc = Rc - 0.0203 * (1.0 - e_hat) + 0.0397 * np.exp(-tau) / Fs
    Rt = Rt - 0.14 * (1.0 - e_hat) - 0.495 * np.exp(-tau) / Fs
    p = p + (1.0 - e_hat) * (0.348 - 0.642 * np.exp(-((tau - 1.0) ** 2)) / Fs)
    Rc = np.maximum(Rc, 1e-3)
    return RadialParameters(Rc=Rc, Rt=np.maximum(Rt, Rc), p=np.clip(p, 0.0, 1.0))


def radial_containment(radius: np.ndarray | float, params: RadialParameters) -> np.ndarray:
    """Fraction of the energy within `radius` (RM) of the axis: the profile's integral,
    p R^2/(R^2 + Rc^2) + (1 - p) R^2/(R^2 + Rt^2)."""
    r2 = np.asarray(radius, dtype=np.float64) ** 2
    return params.p * r2 / (r2 + params.Rc**2) + (1.0 - params.p) * r2 / (r2 + params.Rt**2)


def sample_radius(params: RadialParameters, rng: np.random.Generator) -> np.ndarray:
    """One radius (RM) per entry of `params`: core with probability p, else tail;
    r = R sqrt(u / (1 - u)) inverts the profile's cumulative distribution."""
    shape = np.shape(params.p)
    u, w = rng.random(shape), rng.random(shape)
    R = np.where(w < params.p, params.Rc, params.Rt)
    return R * np.sqrt(u / (1.0 - u))


def scaled_depth(
    t: np.ndarray, T: np.ndarray, alpha: np.ndarray, mean_ln_alpha: np.ndarray
) -> np.ndarray:
    """tau = (t / <t>_i) exp<ln alpha> / (exp<ln alpha> - 1), <t>_i = alpha_i / beta_i."""
    beta = (alpha - 1.0) / T
    mean_t = alpha / beta
    a = np.exp(mean_ln_alpha)
    return (t / mean_t) * a / np.maximum(a - 1.0, 1e-6)


def mean_containment(
    energy: float, material: SamplingProperties, radius: float, depth_X0: float, n_steps: int = 400
) -> float:
    """The parametrization's own prediction of the fraction of the deposited energy within
    `radius` (RM) of the axis, for the mean profile over `depth_X0`: the radial containment
    at each depth, weighted by the energy deposited there."""
    e = np.array([energy], dtype=np.float64)
    T, alpha = mean_profile(e, material)
    fluct = profile_fluctuation(e, material)
    edges = np.linspace(0.0, depth_X0, n_steps + 1)
    dE = np.diff(gamma_cdf(edges, T, alpha))
    tau = scaled_depth(0.5 * (edges[1:] + edges[:-1]), T, alpha, fluct.mean_ln_alpha)
    inside = radial_containment(radius, radial_parameters(e, tau, material))
    return float((dE * inside).sum() / dE.sum())
