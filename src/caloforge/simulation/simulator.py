"""Vectorised GFlash-style shower simulation in a layered sampling calorimeter.

How one batch of showers is made (physics.md, sections 1-4):

1. Per shower, draw the longitudinal profile (T, alpha) from the correlated log-normal of the
   sampling calorimeter, with the front layer's effective material.
2. Step along the particle's track in steps of `step_X0` radiation lengths. Per step, the
   deposited energy dE is the profile's integral over the step and the number of energy spots
   follows the spots' own (deeper, wider) Gamma profile; each spot carries dE / n.
3. Each spot lies uniformly in depth inside its step and at a radius drawn from the
   two-component radial profile evaluated at the step's middle (scaled depth tau), in
   Moliere radii of the layer it falls in, at a uniform azimuth around the track.
4. The track may be inclined (angle theta in the (y, depth) plane, or an LHCb momentum): the
   material crossed per layer grows as 1/cos(angle to the normal), so the profile runs along
   the track and each spot is projected into the grid by its own position.
5. Sampling fluctuations: each spot's energy is replaced by a Gamma draw of mean dE and
   variance c_s^2 dE (GeV), which gives sigma/E = c_s/sqrt(E); a per-shower Gaussian scale
   adds the constant term. The visible energy is the deposit times the electron sampling
   fraction f_e of the layer the spot falls in; energy behind the last layer or outside the
   grid is lost (leakage).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.simulation import gflash
from caloforge.simulation.calibration import Calibration, for_geometry
from caloforge.simulation.conditions import entry_point, track_direction

PARTICLES = ("electron", "photon")
# Mean depth of a photon's first conversion, X0 (9/7 X0: physics.md section 2).
PHOTON_CONVERSION_X0 = 9.0 / 7.0
# Visible cell energies below this are set to zero, GeV: 10 eV is about three electron-hole
# pairs in silicon, below anything a sensor reads. Without it, Gamma draws of tiny shape
# leave cells of 1e-40 GeV that mean nothing and break log transforms and low precision.
MIN_CELL_ENERGY = 1e-8


@dataclass(frozen=True)
class Spots:
    """Energy spots of a batch of showers, flat over all showers.

    shower: index of the shower in the batch; x, y, z: position in mm (z = depth from the
    front face); energy: deposited energy in GeV after sampling fluctuations; layer: index of
    the layer it falls in (-1 behind the calorimeter).
    """

    shower: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    energy: np.ndarray
    layer: np.ndarray


class ShowerSimulator:
    """Simulate showers of one geometry; every call takes its own `numpy.random.Generator`.

    >>> sim = ShowerSimulator(load_geometry("clic-25"))
    >>> showers = sim.simulate({"energy": np.full(10, 100.0)}, np.random.default_rng(1))
    """

    def __init__(
        self,
        geometry: Geometry,
        *,
        particle: str = "electron",
        step_X0: float = 0.25,
        min_cell_energy: float = MIN_CELL_ENERGY,
        calibration: Calibration | str = "auto",
    ) -> None:
        if not geometry.simulable:
            raise CaloforgeError(
                f"geometry '{geometry.name}' has readout '{geometry.readout}' and no cell grid "
                "to simulate into; simulation needs 'layers' or 'summed' readout"
            )
        if particle not in PARTICLES:
            raise CaloforgeError(f"unknown particle '{particle}'; choose {', '.join(PARTICLES)}")
        self.geometry = geometry
        self.particle = particle
        # "auto": the correction table fitted to Geant4 for the geometry's material family,
        # if the package has one; Calibration() is the bare parametrization.
        if isinstance(calibration, str):
            if calibration != "auto":
                raise CaloforgeError(
                    f"calibration must be 'auto' or a Calibration, got {calibration!r}"
                )
            calibration = for_geometry(geometry)
        self.calibration = calibration
        self.stochastic_term = geometry.stochastic_term * calibration.stochastic_scale
        self.step_X0 = step_X0
        self.min_cell_energy = min_cell_energy
        self.material = geometry.front
        layers = geometry.layers
        # Perpendicular depth of every layer boundary, in mm and in X0 (piecewise linear map).
        self._z_mm = np.array(geometry.layer_boundaries_mm)
        self._z_X0 = np.concatenate([[0.0], np.cumsum([lay.thickness_X0 for lay in layers])])
        # The same map extended far behind the back face with the last layer's material, so
        # that spots which leak out keep finite positions (and fall in no layer).
        mm_per_X0 = layers[-1].thickness_mm / layers[-1].thickness_X0
        self._z_X0_ext = np.append(self._z_X0, self._z_X0[-1] + 1e3)
        self._z_mm_ext = np.append(self._z_mm, self._z_mm[-1] + 1e3 * mm_per_X0)
        self._rm_mm = np.array([lay.properties.RM_cm * 10.0 for lay in layers])
        self._f_e = np.array([lay.properties.f_e for lay in layers])
        assert geometry.cell_size_mm is not None
        self._cell = np.array(geometry.cell_size_mm, dtype=np.float64)
        self._nxy = np.array(geometry.shape[:2])

    # --- public API -----------------------------------------------------------------------
    def simulate(
        self, conditions: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        """Visible cell energies (GeV), shape (n, *geometry.shape), float32."""
        spots = self.spots(conditions, rng)
        return self.deposit(spots, len(conditions["energy"]), rng)

    def spots(self, conditions: Mapping[str, np.ndarray], rng: np.random.Generator) -> Spots:
        """The energy spots of a batch, before projection into cells (for tests and studies)."""
        energy = np.asarray(conditions["energy"], dtype=np.float64)
        n = len(energy)
        direction = track_direction(conditions, n)
        entry = entry_point(conditions, n)

        # 1. Longitudinal profile per shower (energy and spot densities).
        fluct = self.calibration.profile(gflash.profile_fluctuation(energy, self.material), energy)
        T, alpha = gflash.sample_profile(fluct, rng)
        T_spot, alpha_spot = gflash.spot_profile(T, alpha, self.material)

        # 2. Steps along the track, in X0 crossed along the track. The calorimeter's depth
        #    along an inclined track is longer by 1/cos(angle to the normal).
        cos_normal = direction[:, 2]
        t_start = np.zeros(n)
        if self.particle == "photon":
            t_start = rng.exponential(PHOTON_CONVERSION_X0, n)
        t_end = t_start + self._z_X0[-1] / cos_normal
        n_steps = int(np.ceil((t_end - t_start).max() / self.step_X0))
        rel = np.arange(n_steps + 1) * self.step_X0  # (S+1,) depth after the shower start
        edges = rel[None, :]
        e_cdf = gflash.gamma_cdf(edges, T[:, None], alpha[:, None])
        n_cdf = gflash.gamma_cdf(edges, T_spot[:, None], alpha_spot[:, None])
        dE = energy[:, None] * np.diff(e_cdf, axis=1)  # (n, S) GeV
        dN = gflash.n_spots(energy, self.stochastic_term)[:, None] * np.diff(n_cdf, axis=1)
        # Stochastic rounding keeps the mean number of spots; every step with energy gets one.
        counts = np.floor(dN + rng.random(dN.shape)).astype(np.int64)
        counts = np.where(dE > 0, np.maximum(counts, 1), 0)

        # Radial profile per (shower, step), at the step's middle.
        tau = gflash.scaled_depth(
            (rel[:-1] + 0.5 * self.step_X0)[None, :],
            T[:, None],
            alpha[:, None],
            fluct.mean_ln_alpha[:, None],
        )
        radial = self.calibration.radial(
            gflash.radial_parameters(energy[:, None], tau, self.material), tau
        )

        # 3. Expand to spots.
        flat_counts = counts.ravel()
        cell_of_spot = np.repeat(np.arange(flat_counts.size), flat_counts)
        shower = cell_of_spot // n_steps
        step = cell_of_spot % n_steps
        e_spot = (dE.ravel() / np.maximum(flat_counts, 1))[cell_of_spot]
        t = t_start[shower] + rel[step] + rng.random(len(step)) * self.step_X0
        r_RM = gflash.sample_radius(
            gflash.RadialParameters(
                radial.Rc.ravel()[cell_of_spot],
                radial.Rt.ravel()[cell_of_spot],
                radial.p.ravel()[cell_of_spot],
            ),
            rng,
        )
        phi = rng.random(len(step)) * (2.0 * np.pi)

        # 4. Position: along the axis to perpendicular depth z, then the lateral offset.
        d = direction[shower]
        z_axis = np.interp(t * cos_normal[shower], self._z_X0_ext, self._z_mm_ext)
        s = z_axis / cos_normal[shower]  # path length along the track, mm
        layer_axis = self._layer_of(z_axis)
        r_mm = r_RM * self._rm_mm[layer_axis]  # behind the back (-1): the last layer's
        e1, e2 = _transverse_basis(direction)
        off1, off2 = r_mm * np.cos(phi), r_mm * np.sin(phi)
        pos = (
            entry[shower] + s[:, None] * d + off1[:, None] * e1[shower] + off2[:, None] * e2[shower]
        )
        z = np.maximum(pos[:, 2], 0.0)  # lateral spread in front of the face: first layer
        layer = self._layer_of(z)

        # 5. Sampling fluctuations on the deposit (GeV), and the constant term per shower.
        c2 = self.stochastic_term**2
        e_dep = rng.gamma(np.maximum(e_spot / c2, 1e-12), c2)
        constant = self.geometry.constant_term * self.calibration.constant_scale
        scale = np.maximum(1.0 + constant * rng.standard_normal(n), 0.0)
        scale *= self.calibration.response(energy)
        return Spots(shower, pos[:, 0], pos[:, 1], z, e_dep * scale[shower], layer)

    def deposit(self, spots: Spots, n: int, rng: np.random.Generator) -> np.ndarray:
        """Bin spots into visible cell energies (GeV), shape (n, *geometry.shape)."""
        inside = spots.layer >= 0
        visible = np.where(inside, spots.energy * self._f_e[np.maximum(spots.layer, 0)], 0.0)
        x, y = spots.x.copy(), spots.y.copy()
        if not self.geometry.has_condition("point"):
            # Centre each image on its shower: the barycentre for inclined showers (as the
            # LCD angle images), the entry point otherwise; a uniform sub-cell offset stands
            # for where in its cell the particle hit.
            if self.geometry.has_condition("theta"):
                w = np.bincount(spots.shower, visible, minlength=n)
                w = np.where(w > 0, w, 1.0)
                x -= (np.bincount(spots.shower, visible * x, minlength=n) / w)[spots.shower]
                y -= (np.bincount(spots.shower, visible * y, minlength=n) / w)[spots.shower]
            jitter = (rng.random((n, 2)) - 0.5) * self._cell
            x += jitter[spots.shower, 0]
            y += jitter[spots.shower, 1]
        nx, ny = int(self._nxy[0]), int(self._nxy[1])
        ix = np.floor(x / self._cell[0] + nx / 2.0).astype(np.int64)
        iy = np.floor(y / self._cell[1] + ny / 2.0).astype(np.int64)
        keep = inside & (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        if self.geometry.readout == "layers":
            n_layers = len(self.geometry.layers)
            cell = (ix * ny + iy) * n_layers + spots.layer
            per_shower = nx * ny * n_layers
        else:
            cell = ix * ny + iy
            per_shower = nx * ny
        flat = spots.shower[keep] * per_shower + cell[keep]
        out = np.bincount(flat, visible[keep], minlength=n * per_shower)
        out[out < self.min_cell_energy] = 0.0
        return out.astype(np.float32).reshape((n, *self.geometry.shape))

    def _layer_of(self, z: np.ndarray) -> np.ndarray:
        """Index of the layer containing perpendicular depth z (mm); -1 behind the last."""
        layer = np.searchsorted(self._z_mm, z, side="right") - 1
        return np.where(layer >= len(self._f_e), -1, layer)


def _transverse_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to each direction d (rows), the first in the x-depth plane."""
    x_hat = np.array([1.0, 0.0, 0.0])
    e1 = x_hat - (d @ x_hat)[:, None] * d
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    return e1, e2
