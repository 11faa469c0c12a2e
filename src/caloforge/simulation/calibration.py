"""Corrections of the GFlash parametrization fitted to the Geant4 engine, per material family.

The parametrization's coefficients come from fits to other detectors (Grindhammer & Peters);
on caloforge's detectors Geant4 differs from it in the sampling fraction, the lateral spread
and the fluctuations. A `Calibration` holds a few factors that act where the physics acts:

- the longitudinal profile: a shift of the depth of maximum T (X0), `T_shift + T_slope
  ln(E/10 GeV)`, and a scale of alpha, applied to the per-shower log-normal's means, and
  scales of its two widths (fluctuations, hence the layer correlations);
- the radial profile: a scale of the tail radius and a term added to it near the front
  (times exp(-tau), as the parametrization's own sampling corrections), a shift of the core
  fraction. The core radius (about a millimetre) is left alone: cells of a few millimetres
  do not see it, so no fit could;
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


@dataclass(frozen=True)
class Calibration:
    """Correction factors for one material family; the defaults change nothing."""

    family: str = ""
    T_shift: float = 0.0
    T_slope: float = 0.0
    alpha_scale: float = 1.0
    sigma_T_scale: float = 1.0
    sigma_alpha_scale: float = 1.0
    Rt_scale: float = 1.0
    Rt_front: float = 0.0
    p_shift: float = 0.0
    stochastic_scale: float = 1.0
    constant_scale: float = 1.0
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
        shift = self.T_shift + self.T_slope * np.log(np.asarray(energy) / PIVOT_GEV)
        mean_T = np.maximum(np.exp(fluct.mean_ln_T) + shift, 0.1)
        return gflash.ProfileFluctuation(
            mean_ln_T=np.log(mean_T),
            sigma_ln_T=fluct.sigma_ln_T * self.sigma_T_scale,
            mean_ln_alpha=fluct.mean_ln_alpha + np.log(self.alpha_scale),
            sigma_ln_alpha=fluct.sigma_ln_alpha * self.sigma_alpha_scale,
            rho=fluct.rho,
        )

    def radial(self, radial: gflash.RadialParameters, tau: np.ndarray) -> gflash.RadialParameters:
        """The radial parameters at scaled depth `tau`, corrected."""
        Rt = radial.Rt * self.Rt_scale + self.Rt_front * np.exp(-tau)
        return gflash.RadialParameters(
            Rc=radial.Rc,
            Rt=np.maximum(Rt, radial.Rc),
            p=np.clip(radial.p + self.p_shift, 0.0, 1.0),
        )

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
