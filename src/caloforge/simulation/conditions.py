"""Drawing the conditions (energy, angle, momentum, entry point) of simulated showers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from caloforge.errors import CaloforgeError, ConditionError
from caloforge.geometry import Geometry

SPECTRA = ("uniform", "inverse")

# LHCb GAN study: angles to the beam axis Gaussian with these widths (physics.md section 4),
# truncated at 3 sigma: an untruncated Gaussian of 20 degrees sends about one track in 70 000
# beyond 87 degrees, or backwards, which no calorimeter face sees.
LHCB_ANGLE_SIGMA_XZ = math.radians(20.0)
LHCB_ANGLE_SIGMA_YZ = math.radians(10.0)
ANGLE_TRUNCATION_SIGMAS = 3.0


def truncated_normal(sigma: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """N(0, sigma) draws limited to +-ANGLE_TRUNCATION_SIGMAS sigma (out-of-range redrawn)."""
    values = rng.normal(0.0, sigma, n)
    limit = ANGLE_TRUNCATION_SIGMAS * sigma
    outside = np.abs(values) > limit
    while outside.any():
        values[outside] = rng.normal(0.0, sigma, int(outside.sum()))
        outside = np.abs(values) > limit
    return values


@dataclass(frozen=True)
class ConditionRanges:
    """What to draw: energy range (GeV) and spectrum, theta range (rad), point range (mm)."""

    energy: tuple[float, float]
    spectrum: str = "uniform"
    theta: tuple[float, float] | None = None
    point: tuple[float, float] | None = None

    @classmethod
    def for_geometry(
        cls,
        geometry: Geometry,
        energy: tuple[float, float] | None = None,
        spectrum: str | None = None,
        theta: tuple[float, float] | None = None,
        point: tuple[float, float] | None = None,
    ) -> ConditionRanges:
        """Fill what the user left out with the geometry's defaults; check against validity.

        Raises `ConditionError` for an option the geometry has no condition for, or a range
        outside the geometry's valid range.
        """
        energy_c = geometry.condition("energy")
        energy = energy or energy_c.default
        assert energy is not None
        energy_c.check(*energy, source="--energy")
        if energy[0] <= 0:
            raise ConditionError(f"--energy must be positive, got {energy[0]}:{energy[1]}")
        if spectrum is None:
            spectrum = "inverse" if geometry.has_condition("point") else "uniform"
        if spectrum not in SPECTRA:
            raise ConditionError(f"unknown spectrum '{spectrum}'; choose {', '.join(SPECTRA)}")
        ranges: dict[str, tuple[float, float] | None] = {"theta": theta, "point": point}
        for name, value in ranges.items():
            if not geometry.has_condition(name):
                if value is not None:
                    raise ConditionError(
                        f"geometry '{geometry.name}' has no '{name}' condition; "
                        f"its conditions are {', '.join(geometry.condition_names)}"
                    )
                continue
            c = geometry.condition(name)
            value = value or c.default
            assert value is not None
            c.check(*value, source=f"--{name}")
            ranges[name] = value
        return cls(energy, spectrum, ranges["theta"], ranges["point"])


def sample_conditions(
    geometry: Geometry, ranges: ConditionRanges, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Conditions of `n` showers in the geometry's units, keyed by the geometry's names."""
    check_drawable(geometry)
    lo, hi = ranges.energy
    u = rng.random(n)
    if ranges.spectrum == "inverse" and hi > lo:
        energy = lo * (hi / lo) ** u  # density proportional to 1/E
    else:
        energy = lo + (hi - lo) * u
    out: dict[str, np.ndarray] = {"energy": energy}
    if geometry.has_condition("theta"):
        assert ranges.theta is not None
        out["theta"] = rng.uniform(ranges.theta[0], ranges.theta[1], n)
    if geometry.has_condition("momentum"):
        slope_x = np.tan(truncated_normal(LHCB_ANGLE_SIGMA_XZ, n, rng))
        slope_y = np.tan(truncated_normal(LHCB_ANGLE_SIGMA_YZ, n, rng))
        pz = energy / np.sqrt(1.0 + slope_x**2 + slope_y**2)
        out["momentum"] = np.stack([pz * slope_x, pz * slope_y, pz], axis=1)
    if geometry.has_condition("point"):
        assert ranges.point is not None
        out["point"] = rng.uniform(ranges.point[0], ranges.point[1], (n, 2))
    return out


DRAWABLE = ("energy", "theta", "momentum", "point")


def check_drawable(geometry: Geometry, source: str | None = None) -> None:
    """Refuse a geometry with conditions the simulator cannot draw; `source`, the file the
    geometry was read from, starts the message."""
    missing = sorted(set(geometry.condition_names) - set(DRAWABLE))
    if missing:
        where = f"{source}: " if source else ""
        raise ConditionError(
            f"{where}geometry '{geometry.name}': the simulator cannot draw condition(s) "
            f"{missing}; it draws {', '.join(DRAWABLE)}"
        )


def track_direction(conditions: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Unit direction of each primary (x, y, depth), shape (n, 3).

    From the LHCb momentum, or the angle theta in the (y, depth) plane (pi/2 enters
    perpendicular to the face), else along the depth axis.
    """
    if "momentum" in conditions:
        p = np.asarray(conditions["momentum"], dtype=np.float64).reshape(n, 3)
        d = p / np.linalg.norm(p, axis=1, keepdims=True)
    elif "theta" in conditions:
        theta = np.asarray(conditions["theta"], dtype=np.float64)
        d = np.stack([np.zeros(n), np.cos(theta), np.sin(theta)], axis=1)
    else:
        d = np.tile([0.0, 0.0, 1.0], (n, 1))
    if (d[:, 2] <= 0.05).any():
        raise CaloforgeError("tracks must enter the calorimeter (angle to the normal < 87 deg)")
    return d


def entry_point(conditions: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Entry point of each primary on the front face (x, y, 0) in mm, shape (n, 3)."""
    entry = np.zeros((n, 3))
    if "point" in conditions:
        entry[:, :2] = np.asarray(conditions["point"], dtype=np.float64).reshape(n, 2)
    return entry
