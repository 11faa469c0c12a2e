"""Corrections of the GFlash parametrization fitted to the Geant4 engine, per material family.

The parametrization's coefficients come from fits to other detectors (Grindhammer & Peters);
on caloforge's detectors Geant4 differs from it in the sampling fraction, the lateral spread
and the fluctuations. A `Calibration` holds a few factors that act where the physics acts:

- the longitudinal profile: a shift of the depth of maximum T (X0), `T_shift + T_slope
  ln(E/10 GeV)`, and a scale of alpha, `alpha_scale (E/10 GeV)^alpha_slope`, applied to the
  per-shower log-normal's means, scales of its two widths and a shift of their correlation
  `rho_shift` (fluctuations, hence the layer correlations). Its form, which Geant4's is not
  quite a Gamma's: a virtual origin `origin + origin_slope ln(E/10 GeV)` X0 in front of the
  face (energy from the first layer on, where a Gamma starts as t^(alpha-1)), and a fraction
  `tail_fraction + tail_slope ln(E/10 GeV)` of the energy stretched in depth by
  `tail_stretch` (the slower fall-off behind the maximum; `gflash.ProfileShape`). And a
  depth noise: the energy along the track times exp(sigma xi(t) - sigma^2 / 2), rescaled
  to the shower's total, with xi a unit Gaussian process of correlation length
  `noise_length` X0 (Ornstein-Uhlenbeck) and sigma = `depth_noise (E/10 GeV)^noise_slope`.
  A shower is made of sub-showers of a few X0 each: its layers fluctuate together over a
  few X0, more than a per-shower Gamma lets them, and its total no more. And a late start:
  a fraction `start_fraction` of the energy follows the profile from a depth
  `start_length + start_slope ln(E/10 GeV)` X0 (the mean of an exponential draw per shower)
  behind the start, as when the primary hands much of its energy to a hard bremsstrahlung
  photon that converts deep (1: the whole shower starts late). Geant4's depth is skewed so:
  its share of the thick layers has a long upper tail (skewness 1.6-2.7 on clic-25 at
  33-200 GeV against 0.5-0.7 for the log-normal (T, alpha) alone), and with it the visible
  energy a long lower one, which narrows sigma90 for the same standard deviation;
- the sampling per layer: each layer's sampling fraction times (Fs / Fs_front)^
  `sampling_exponent` (the electrons' sampling fraction depends on the sampling frequency
  Fs, not only on the plates' thickness ratio), the last layer's times `back_scale` (no
  absorber behind it to scatter energy back into its sensor), and each layer's c_s^2 times
  (Fs_front / Fs)^`stochastic_exponent` (thicker plates, fewer samples: 1 is the textbook
  sqrt(d / f_samp) law);
- the radial profile: a scale of the tail radius, `Rt_scale + Rt_energy ln(E/10 GeV)` times
  exp(`Rt_depth` (tau - 1)) along the scaled depth tau, and a term added to it near the
  front (times exp(-tau), as the parametrization's own sampling corrections); a shift of the
  core fraction, `p_shift + p_energy ln(E/10 GeV) + p_depth (tau - 1)`. The core radius
  (about a millimetre) is left alone: cells of a few millimetres do not see it, so no fit
  could. And the number of the tail's energy spots, times `tail_spots (E/10 GeV)^
  tail_spots_slope` (each of proportionally less energy): the mean profile stays, but far
  from the axis Geant4 spreads its energy over many cells in small deposits (soft photons),
  where a few spots of the core's energy reach too few cells;
- the sampling fluctuations: scales of the stochastic term c_s and of the constant term;
- the response: the visible energy scaled by `response_scale + response_slope ln(E/10 GeV)`.

Tables are fitted by `benchmarks/calibrate_gflash.py` on Geant4 showers and kept in the
package as `calibrations/<family>.json`, one per material family (absorber-sensor of the
front layer, e.g. `W-Si`). `for_geometry` finds the table of a geometry's family; a family
without one runs the bare parametrization.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.simulation import gflash

TABLES = Path(__file__).with_name("calibrations")
# The energy at which `T_shift` and `response_scale` alone apply, GeV.
PIVOT_GEV = 10.0
# Bounds of the profile's form at any energy: a virtual origin at most this many X0 in front
# of the start, at most this fraction of the energy in the stretched component.
MAX_ORIGIN_X0 = 5.0
MAX_TAIL_FRACTION = 0.9
# The mean late start is at most this many X0.
MAX_START_X0 = 5.0
# The correlation of the profile's fluctuations stays inside (-1, 1) by this much.
MAX_RHO = 0.95


@dataclass(frozen=True)
class Calibration:
    """Correction factors for one material family; the defaults change nothing."""

    family: str = ""
    T_shift: float = 0.0
    T_slope: float = 0.0
    alpha_scale: float = 1.0
    alpha_slope: float = 0.0
    origin: float = 0.0
    origin_slope: float = 0.0
    tail_fraction: float = 0.0
    tail_slope: float = 0.0
    tail_stretch: float = 1.0
    sigma_T_scale: float = 1.0
    sigma_alpha_scale: float = 1.0
    rho_shift: float = 0.0
    depth_noise: float = 0.0
    noise_slope: float = 0.0
    noise_length: float = 2.0
    start_length: float = 0.0
    start_slope: float = 0.0
    start_fraction: float = 1.0
    Rt_scale: float = 1.0
    Rt_energy: float = 0.0
    Rt_depth: float = 0.0
    Rt_front: float = 0.0
    p_shift: float = 0.0
    p_energy: float = 0.0
    p_depth: float = 0.0
    tail_spots: float = 1.0
    tail_spots_slope: float = 0.0
    taper_radius: float = 0.0
    taper_length: float = 1.0
    stochastic_scale: float = 1.0
    constant_scale: float = 1.0
    sampling_exponent: float = 0.0
    back_scale: float = 1.0
    stochastic_exponent: float = 0.0
    response_scale: float = 1.0
    response_slope: float = 0.0
    fitted_on: str = ""

    # The factors a fit varies (everything but the labels), in a fixed order.
    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in ("family", "fitted_on"))

    def parameters(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in self.parameter_names()])

    @property
    def is_identity(self) -> bool:
        return bool(np.array_equal(self.parameters(), Calibration().parameters()))

    @property
    def label(self) -> str:
        """What a shower file records: the family and a digest of the table, or that the
        parametrization ran bare."""
        if self.is_identity:
            return "bare parametrization"
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:8]
        return f"calibrated to Geant4 ({self.family} {digest})"

    # --- what the simulator applies --------------------------------------------------------
    def profile(
        self, fluct: gflash.ProfileFluctuation, energy: np.ndarray
    ) -> gflash.ProfileFluctuation:
        """The per-shower profile distribution at primary energies `energy` (GeV), corrected."""
        log_e = np.log(np.asarray(energy) / PIVOT_GEV)
        shift = self.T_shift + self.T_slope * log_e
        mean_T = np.maximum(np.exp(fluct.mean_ln_T) + shift, 0.1)
        return gflash.ProfileFluctuation(
            mean_ln_T=np.log(mean_T),
            sigma_ln_T=fluct.sigma_ln_T * self.sigma_T_scale,
            mean_ln_alpha=fluct.mean_ln_alpha + np.log(self.alpha_scale) + self.alpha_slope * log_e,
            sigma_ln_alpha=fluct.sigma_ln_alpha * self.sigma_alpha_scale,
            rho=np.clip(fluct.rho + self.rho_shift, -MAX_RHO, MAX_RHO),
        )

    def shape(self, energy: np.ndarray) -> gflash.ProfileShape:
        """The profile's form at primary energies `energy` (GeV; the arrays take its shape)."""
        log_e = np.log(np.asarray(energy, dtype=np.float64) / PIVOT_GEV)
        return gflash.ProfileShape(
            origin=np.clip(self.origin + self.origin_slope * log_e, 0.0, MAX_ORIGIN_X0),
            tail=np.clip(self.tail_fraction + self.tail_slope * log_e, 0.0, MAX_TAIL_FRACTION),
            stretch=self.tail_stretch,
        )

    def start_depth(self, energy: np.ndarray) -> np.ndarray | None:
        """Mean depth (X0) by which the late part of the energy of showers of primary
        energies `energy` (GeV) starts behind the shower's start (each shower's drawn from an
        exponential of this mean); None where there is no late start."""
        if self.start_length == 0.0 and self.start_slope == 0.0:
            return None
        log_e = np.log(np.asarray(energy, dtype=np.float64) / PIVOT_GEV)
        return np.clip(self.start_length + self.start_slope * log_e, 0.0, MAX_START_X0)

    def late_cdf(self, early: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The profile's fraction before each depth with the late part of the energy
        (`start_fraction`) started deeper, and the late part's own share of it, from the
        profile's own fractions before those depths (`early`) and before the depths less
        each shower's shift (`moved`, zero in front of the start)."""
        y = float(np.clip(self.start_fraction, 0.0, 1.0))
        late = y * moved
        return (1.0 - y) * early + late, late

    def depth_noise_factors(
        self, energy: np.ndarray, z: np.ndarray, step_X0: float
    ) -> np.ndarray | None:
        """Factors on the energy of each step of `step_X0` along the track, (n, S), from unit
        normal variates `z` (n, S) and the primary energies (n,) GeV; None without noise.
        Rescaling to each shower's total is the caller's."""
        if self.depth_noise <= 0:
            return None
        sigma = self.depth_noise * (np.asarray(energy, dtype=np.float64) / PIVOT_GEV) ** (
            self.noise_slope
        )
        phi = np.exp(-step_X0 / max(self.noise_length, 1e-6))
        # xi_s = phi xi_{s-1} + sqrt(1 - phi^2) z_s, started from its stationary distribution
        # (a loop over the steps, vectorised over showers: scipy.signal's filter would cost
        # its import, longer than a batch).
        xi = np.empty_like(z, dtype=np.float64)
        xi[:, 0] = z[:, 0]
        innovation = np.sqrt(1.0 - phi**2)
        for s in range(1, z.shape[1]):
            np.multiply(xi[:, s - 1], phi, out=xi[:, s])
            xi[:, s] += innovation * z[:, s]
        return np.exp(sigma[:, None] * xi - 0.5 * sigma[:, None] ** 2)

    def layer_response(self, geometry: Geometry) -> np.ndarray:
        """Factor on each layer's sampling fraction, shape (layers,)."""
        Fs = np.array([layer.properties.Fs for layer in geometry.layers])
        factor = (Fs / geometry.front.Fs) ** self.sampling_exponent
        factor[-1] *= self.back_scale
        return factor

    def layer_stochastic(self, geometry: Geometry) -> np.ndarray:
        """Factor on each layer's c_s^2 (the variance of its sampling), shape (layers,)."""
        Fs = np.array([layer.properties.Fs for layer in geometry.layers])
        return (geometry.front.Fs / Fs) ** self.stochastic_exponent

    def radial(
        self, radial: gflash.RadialParameters, tau: np.ndarray, energy: np.ndarray
    ) -> gflash.RadialParameters:
        """The radial parameters at scaled depth `tau` and primary energy `energy` (GeV,
        broadcast with tau), corrected."""
        log_e = np.log(np.asarray(energy, dtype=np.float64) / PIVOT_GEV)
        scale = (self.Rt_scale + self.Rt_energy * log_e) * np.exp(self.Rt_depth * (tau - 1.0))
        Rt = radial.Rt * scale + self.Rt_front * np.exp(-tau)
        return gflash.RadialParameters(
            Rc=radial.Rc,
            Rt=np.maximum(Rt, radial.Rc),
            p=np.clip(
                radial.p + self.p_shift + self.p_energy * log_e + self.p_depth * (tau - 1.0),
                0.0,
                1.0,
            ),
        )

    def tail_split(self, energy: np.ndarray) -> np.ndarray | None:
        """Factor on the number of the radial tail's spots at primary energies `energy`
        (GeV); None where it is one."""
        if self.tail_spots == 1.0 and self.tail_spots_slope == 0.0:
            return None
        ratio = np.asarray(energy, dtype=np.float64) / PIVOT_GEV
        return self.tail_spots * ratio**self.tail_spots_slope

    def taper(self) -> tuple[float, float] | None:
        """(r1, lambda), Moliere radii: beyond r1 from the axis a spot is kept with probability
        exp(-(r - r1) / lambda) (and drawn again otherwise), so the far halo falls off
        exponentially as Geant4's does, not as the profile's r^-3 tail; None where there is
        no taper (taper_radius 0)."""
        if self.taper_radius <= 0.0:
            return None
        return self.taper_radius, max(self.taper_length, 1e-6)

    def response(self, energy: np.ndarray) -> np.ndarray:
        """Factor on each shower's visible energy (primary energy in GeV)."""
        return self.response_scale + self.response_slope * np.log(
            np.asarray(energy, dtype=np.float64) / PIVOT_GEV
        )

    # --- tables ----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> Calibration:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CaloforgeError(f"{source}: unknown calibration key(s) {sorted(unknown)}")
        labels = ("family", "fitted_on")
        try:
            values: dict[str, Any] = {k: str(v) if k in labels else float(v) for k, v in d.items()}
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise CaloforgeError(f"{source}: invalid calibration ({exc})") from None


def family_of(geometry: Geometry) -> str:
    """The material family of a geometry: its front layer's absorber and sensor."""
    front = geometry.layers[0]
    return f"{front.absorber}-{front.sensor}"


def load(family: str) -> Calibration | None:
    """The package's table for a family, or None."""
    path = TABLES / f"{family}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CaloforgeError(f"{path}: not valid JSON ({exc})") from None
    return Calibration.from_dict(data, str(path))


def for_geometry(geometry: Geometry) -> Calibration:
    """The calibration the simulator uses for a geometry (identity where none is fitted)."""
    if not geometry.layers:
        return Calibration()
    family = family_of(geometry)
    return load(family) or Calibration(family=family)
