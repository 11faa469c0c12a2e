"""Vectorised GFlash-style shower simulation in a layered sampling calorimeter.

How one batch of showers is made (physics.md, sections 1-4):

1. Per shower, draw the longitudinal profile (T, alpha) from the correlated log-normal of the
   sampling calorimeter, with the front layer's effective material.
2. Step along the particle's track in steps of `step_X0` radiation lengths. Per step, the
   deposited energy dE is the profile's integral over the step and the number of energy spots
   follows the spots' own (deeper, wider) Gamma profile; each spot carries dE / n.
3. Each spot lies uniformly in depth inside its step and at a radius drawn from the
   two-component radial profile evaluated at the step's middle (scaled depth tau), in
   Moliere radii of the layer it falls in, at a uniform azimuth around the track. The spots
   of a step are exchangeable, so the number in the core is one binomial draw per step.
   Where the calibration has a taper, a spot beyond its radius is kept with a probability
   falling exponentially with the distance, else drawn again (Geant4's far halo).
4. The track may be inclined (angle theta in the (y, depth) plane, or an LHCb momentum): the
   material crossed per layer grows as 1/cos(angle to the normal), so the profile runs along
   the track and each spot is projected into the grid by its own position.
5. Sampling fluctuations: each spot's energy is replaced by a Gamma draw of mean dE and
   variance c_s^2 dE (GeV), which gives sigma/E = c_s/sqrt(E); a per-shower Gaussian scale
   adds the constant term. The visible energy is the deposit times the electron sampling
   fraction f_e of the layer the spot falls in; energy behind the last layer or outside the
   grid is lost (leakage).

Gamma variates of one scale add up to a Gamma variate of the summed shapes, so the spots that
share a cell (one layer, one sampling fraction) need one draw per cell, not one per spot;
only the images centred on their barycentre (inclined `theta` showers), whose centre depends
on every spot's fluctuated energy, draw per spot. Spots are placed about 65 000 at a
time (`CHUNK_SPOTS`), in float32 (positions to 0.1 um at a metre), so that the arrays of a
chunk stay in the processor's cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from caloforge.errors import CaloforgeError, ConditionError
from caloforge.geometry import Geometry, load_geometry
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
# Step along the track, X0: a fraction of the thinnest layers' X0 (0.7 in clic-25).
STEP_X0 = 0.25
# Spots placed per pass: 256 kB per float32 array, which a core's cache holds.
CHUNK_SPOTS = 1 << 16

_F32 = np.float32


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


@dataclass(frozen=True)
class _Plan:
    """A batch before its spots are placed: per shower, and per (shower, step) group."""

    counts: np.ndarray  # (n, S) spots per step
    core: np.ndarray  # (n, S) how many of them in the radial core
    e_spot: np.ndarray  # (n, S) mean deposited energy of each spot, GeV
    # (n, S) that of each tail spot where the tail is split finer than the core, else None
    e_tail: np.ndarray | None
    depth0: np.ndarray  # (n, S) perpendicular depth of the step's start, X0 (float32)
    depth_step: np.ndarray  # (n,) perpendicular X0 of one step (float32)
    Rc: np.ndarray  # (n, S) core radius, RM (float32)
    Rt: np.ndarray  # (n, S) tail radius, RM (float32)
    direction: np.ndarray  # (n, 3)
    entry: np.ndarray  # (n, 3) mm
    scale: np.ndarray  # (n,) factor on the deposits: constant term and response
    spot_rng: np.random.Generator  # the spots' own random stream

    @property
    def n(self) -> int:
        return len(self.scale)

    @property
    def perpendicular(self) -> bool:
        return not self.direction[:, :2].any()


@dataclass(frozen=True)
class _Cloud:
    """The spots of showers [a, b) of a batch: float32 positions (mm), layer (n_layers
    behind the calorimeter) and the mean deposited energy of each spot (GeV)."""

    shower: np.ndarray  # index within the chunk
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray | None  # only where asked for
    layer: np.ndarray
    e_mean: np.ndarray


class _DepthMap:
    """Layer of a depth, by a table on a grid finer than the thinnest layer and one
    comparison (a binary search per spot costs several times more); the depth in another
    unit by the layer's linear map. Depths past the last boundary give `n_layers`."""

    def __init__(self, bounds: np.ndarray, other: np.ndarray) -> None:
        n_layers = len(bounds) - 1
        self._h = float(np.diff(bounds).min()) / 2.0
        n_bins = int(np.ceil(bounds[-1] / self._h)) + 2
        # Each bin's layer at (just before) its start: one comparison moves to the next.
        starts = np.arange(n_bins) * self._h * (1.0 - 1e-6)
        self._table = np.minimum(np.searchsorted(bounds, starts, side="right") - 1, n_layers)
        self._table = self._table.astype(np.intp)
        self._upper = np.append(bounds[1:], np.inf).astype(_F32)
        # Behind the back face the map goes on with the last layer's material.
        slope = np.diff(other) / np.diff(bounds)
        self._start = bounds.astype(_F32)
        self._other0 = other.astype(_F32)
        self._slope = np.append(slope, slope[-1]).astype(_F32)
        self._last = n_bins - 1

    def layer(self, depth: np.ndarray) -> np.ndarray:
        """Layer index of each depth (>= 0, float32)."""
        i = (depth * _F32(1.0 / self._h)).astype(np.intp)
        np.minimum(i, self._last, out=i)
        layer = self._table[i]
        layer += depth >= self._upper[layer]
        return layer

    def convert(self, depth: np.ndarray, layer: np.ndarray) -> np.ndarray:
        """The depths in the other unit, given their layers."""
        out = depth - self._start[layer]
        out *= self._slope[layer]
        out += self._other0[layer]
        return out


class ShowerSimulator:
    """Simulate showers of one geometry; every call takes its own `numpy.random.Generator`.

    >>> sim = ShowerSimulator(load_geometry("clic-25"))
    >>> showers = sim.simulate({"energy": np.full(10, 100.0)}, np.random.default_rng(1))
    """

    def __init__(
        self,
        geometry: Geometry | str,
        *,
        particle: str = "electron",
        step_X0: float = STEP_X0,
        min_cell_energy: float = MIN_CELL_ENERGY,
        calibration: Calibration | str = "auto",
    ) -> None:
        if not isinstance(geometry, Geometry):  # a preset's name or a YAML file
            geometry = load_geometry(geometry)
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
        self._n_layers = len(layers)
        # Perpendicular depth of every layer boundary, in mm and in X0 (piecewise linear map).
        self._z_mm = np.array(geometry.layer_boundaries_mm)
        self._z_X0 = np.concatenate([[0.0], np.cumsum([lay.thickness_X0 for lay in layers])])
        self._x0_map = _DepthMap(self._z_X0, self._z_mm)
        self._mm_map = _DepthMap(self._z_mm, self._z_X0)
        # Per layer, and one more entry for "behind the last layer": Moliere radius, sampling
        # fraction and the variance of the sampling per GeV deposited (c_s^2), calibrated.
        rm_mm = np.array([lay.properties.RM_cm * 10.0 for lay in layers])
        self._rm_mm = np.append(rm_mm, rm_mm[-1]).astype(_F32)
        self._taper = calibration.taper()
        f_e = np.array([lay.properties.f_e for lay in layers]) * calibration.layer_response(
            geometry
        )
        self._f_e = np.append(f_e, 0.0)
        c2 = self.stochastic_term**2 * calibration.layer_stochastic(geometry)
        self._c2 = np.append(c2, c2[-1])
        # Per-spot draws (float32): a spot's Gamma shape per GeV (0 behind the calorimeter)
        # and the visible GeV per unit of its draw, c_s^2 f_e (0 behind).
        self._inv_c2 = np.append(1.0 / c2, 0.0).astype(_F32)
        self._visible_per_draw = (self._c2 * self._f_e).astype(_F32)
        assert geometry.cell_size_mm is not None
        self._cell = np.array(geometry.cell_size_mm, dtype=np.float64)
        self._nxy = (int(geometry.shape[0]), int(geometry.shape[1]))
        # Cells of one shower as drawn: (x, y, layer) for per-layer readout; for summed
        # readout (x, y, class of the layers' sampling fraction), summed over classes after
        # the fluctuations, as layers of different f_e cannot share a Gamma draw.
        self._per_layer = geometry.readout == "layers"
        classes, self._f_class = np.unique(
            np.stack([self._f_e[:-1], self._c2[:-1]], axis=1), axis=0, return_inverse=True
        )
        self._n_classes = len(classes)
        self._f_class = np.append(self._f_class.ravel(), 0).astype(np.intp)
        self._class_f_e, self._class_c2 = classes[:, 0], classes[:, 1]
        depth_keys = self._n_layers if self._per_layer else self._n_classes
        self._keys_per_shower = self._nxy[0] * self._nxy[1] * depth_keys

    # --- public API -----------------------------------------------------------------------
    def simulate(
        self, conditions: Mapping[str, np.ndarray], rng: np.random.Generator
    ) -> np.ndarray:
        """Visible cell energies (GeV), shape (n, *geometry.shape), float32."""
        plan = self._plan(conditions, rng)
        n = plan.n
        per_shower = self.geometry.n_cells
        out = np.zeros((n, per_shower), dtype=_F32)
        offset = np.zeros((n, 2), dtype=_F32)
        if not self.geometry.has_condition("point"):
            # Centre each image on its shower (the entry point, or for inclined showers the
            # barycentre, as the LCD angle images); a uniform sub-cell offset stands for where
            # in its cell the particle hit.
            offset = ((rng.random((n, 2)) - 0.5) * self._cell).astype(_F32)
        per_spot = self.geometry.has_condition("theta")
        deposit = self._deposit_per_spot if per_spot else self._deposit_per_cell
        for a, b in self._chunks(plan):
            cloud = self._place(plan, a, b)
            deposit(cloud, plan, a, b, offset[a:b], rng, out[a:b].reshape(-1))
        return out.reshape((n, *self.geometry.shape))

    def spots(self, conditions: Mapping[str, np.ndarray], rng: np.random.Generator) -> Spots:
        """The energy spots of a batch, before projection into cells (for tests and studies);
        each spot's energy is its own Gamma draw."""
        plan = self._plan(conditions, rng)
        cloud = self._place(plan, 0, plan.n, with_z=True)
        assert cloud.z is not None
        c2 = self._c2[cloud.layer]
        energy = plan.spot_rng.standard_gamma(cloud.e_mean / c2) * c2 * plan.scale[cloud.shower]
        layer = np.where(cloud.layer >= self._n_layers, -1, cloud.layer)
        x, y, z = (v.astype(np.float64) for v in (cloud.x, cloud.y, cloud.z))
        return Spots(cloud.shower, x, y, z, energy, layer)

    def deposit(self, spots: Spots, n: int, rng: np.random.Generator) -> np.ndarray:
        """Bin spots into visible cell energies (GeV), shape (n, *geometry.shape)."""
        inside = spots.layer >= 0
        visible = np.where(inside, spots.energy * self._f_e[np.maximum(spots.layer, 0)], 0.0)
        x, y = spots.x.copy(), spots.y.copy()
        if not self.geometry.has_condition("point"):
            if self.geometry.has_condition("theta"):
                x, y = _centred(spots.shower, visible, x, y, n)
            jitter = (rng.random((n, 2)) - 0.5) * self._cell
            x += jitter[spots.shower, 0]
            y += jitter[spots.shower, 1]
        layer = np.where(inside, spots.layer, self._n_layers)
        key = self._cell_keys(spots.shower, x, y, layer, n, self.geometry.n_cells)
        out = np.bincount(key, visible, minlength=n * self.geometry.n_cells + 1)[:-1]
        out[out < self.min_cell_energy] = 0.0
        return out.astype(_F32).reshape((n, *self.geometry.shape))

    # --- one batch, step by step ----------------------------------------------------------
    def _plan(self, conditions: Mapping[str, np.ndarray], rng: np.random.Generator) -> _Plan:
        """Profiles, steps, spot counts and radial parameters of every shower (steps 1-2)."""
        missing = [name for name in self.geometry.condition_names if name not in conditions]
        if missing:
            raise ConditionError(
                f"geometry '{self.geometry.name}': the simulator needs condition(s) {missing}, "
                f"got {sorted(conditions)}"
            )
        energy = np.asarray(conditions["energy"], dtype=np.float64)
        n = len(energy)
        direction = track_direction(conditions, n)
        entry = entry_point(conditions, n)
        # Two random streams: each shower's own draws (profile, conversion depth, constant
        # term, then image offset and total deposit) from `rng` in a fixed order, the spots'
        # from a stream of their own. A change that moves the number of spots (a step of a
        # calibration fit) then redraws the spots but keeps every shower's fluctuations.
        spot_rng = np.random.default_rng(rng.integers(0, 2**63, size=2))

        # 1. Longitudinal profile per shower (energy and spot densities).
        fluct = self.calibration.profile(gflash.profile_fluctuation(energy, self.material), energy)
        T, alpha = gflash.sample_profile(fluct, rng)
        T_spot, alpha_spot = gflash.spot_profile(T, alpha, self.material)
        shape = self.calibration.shape(energy[:, None])

        # 2. Steps along the track, in X0 crossed along the track. The calorimeter's depth
        #    along an inclined track is longer by 1/cos(angle to the normal).
        cos_normal = direction[:, 2]
        t_start = np.zeros(n)
        if self.particle == "photon":
            t_start = rng.exponential(PHOTON_CONVERSION_X0, n)
        late = self.calibration.start_depth(energy)
        shift = None  # the late start's depth per shower, X0 (see Calibration.late_cdf)
        if late is not None:  # drawn only where the table has it: others keep their streams
            shift = late * rng.standard_exponential(n)
        # 5. (per shower) The constant term and the response.
        constant = self.geometry.constant_term * self.calibration.constant_scale
        scale = np.maximum(1.0 + constant * rng.standard_normal(n), 0.0)
        scale *= self.calibration.response(energy)
        t_end = t_start + self._z_X0[-1] / cos_normal
        n_steps = int(np.ceil((t_end - t_start).max() / self.step_X0)) if n else 0
        rel = np.arange(n_steps + 1) * self.step_X0  # (S+1,) depth after the shower start
        edges = rel[None, :]
        e_cdf = gflash.profile_cdf(edges, T[:, None], alpha[:, None], shape)
        n_cdf = gflash.profile_cdf(edges, T_spot[:, None], alpha_spot[:, None], shape)
        # X0 by which a step's energy is younger than its depth says (the late start's part)
        age_shift: float | np.ndarray = 0.0
        if shift is not None:
            moved = edges - shift[:, None]
            e_cdf, late = self.calibration.late_cdf(
                e_cdf, gflash.profile_cdf(moved, T[:, None], alpha[:, None], shape)
            )
            n_cdf = self.calibration.late_cdf(
                n_cdf, gflash.profile_cdf(moved, T_spot[:, None], alpha_spot[:, None], shape)
            )[0]
            # The late part of a step's energy started `shift` deeper: the step's radial
            # profile is taken at its energy-weighted age (the scaled depth is linear in t).
            late_share = np.diff(late, axis=1) / np.maximum(np.diff(e_cdf, axis=1), 1e-300)
            age_shift = np.clip(late_share, 0.0, 1.0) * shift[:, None]
        dE = energy[:, None] * np.diff(e_cdf, axis=1)  # (n, S) GeV
        if self.calibration.depth_noise > 0:
            factors = self.calibration.depth_noise_factors(
                energy, rng.standard_normal(dE.shape), self.step_X0
            )
            assert factors is not None
            dE = _keep_total(dE, dE * factors)
        dN = gflash.n_spots(energy, self.stochastic_term)[:, None] * np.diff(n_cdf, axis=1)
        # Stochastic rounding keeps the mean number of spots; every step with energy gets one.
        counts = np.floor(dN + spot_rng.random(dN.shape)).astype(np.int64)
        counts = np.where(dE > 0, np.maximum(counts, 1), 0)

        # Radial profile per (shower, step), at the step's middle.
        tau = gflash.scaled_depth(
            (rel[:-1] + 0.5 * self.step_X0)[None, :] - age_shift,
            T[:, None],
            alpha[:, None],
            fluct.mean_ln_alpha[:, None],
        )
        radial = self.calibration.radial(
            gflash.radial_parameters(energy[:, None], tau, self.material), tau, energy[:, None]
        )
        core = spot_rng.binomial(counts, radial.p)
        e_spot = dE / np.maximum(counts, 1)
        e_tail = None
        split_factor = self.calibration.tail_split(energy)
        if split_factor is not None:
            # The tail's energy in more (or fewer) spots of less (or more) energy each: the
            # same mean radial profile, more cells reached far from the axis.
            tail = counts - core
            split = np.floor(tail * split_factor[:, None] + spot_rng.random(tail.shape))
            split = np.where(tail > 0, np.maximum(split, 1), 0).astype(np.int64)
            e_tail = e_spot * tail / np.maximum(split, 1)
            counts = core + split
        return _Plan(
            counts=counts,
            core=core,
            e_spot=e_spot,
            e_tail=e_tail,
            depth0=((t_start[:, None] + rel[None, :-1]) * cos_normal[:, None]).astype(_F32),
            depth_step=(self.step_X0 * cos_normal).astype(_F32),
            Rc=radial.Rc.astype(_F32),
            Rt=radial.Rt.astype(_F32),
            direction=direction,
            entry=entry,
            scale=scale,
            spot_rng=spot_rng,
        )

    def _chunks(self, plan: _Plan) -> Iterator[tuple[int, int]]:
        """Consecutive ranges of showers of about CHUNK_SPOTS spots (at least one shower)."""
        ends = np.cumsum(plan.counts.sum(axis=1))
        a = 0
        while a < plan.n:
            base = ends[a - 1] if a else 0
            b = max(int(np.searchsorted(ends, base + CHUNK_SPOTS, side="right")), a + 1)
            yield a, b
            a = b

    def _taper_radii(
        self, radius: np.ndarray, u: np.ndarray, rm: np.ndarray, rng: np.random.Generator
    ) -> None:
        """The calibration's taper, in place: a spot beyond r1 (Moliere radii) from the axis is
        kept with probability exp(-(r - r1) / lambda), else its radius is drawn again from
        its own component, until every spot is kept. The energy stays; it moves inwards.
        radius: mm, drawn as R sqrt(u / (1 - u)) from the uniform draws `u`."""
        assert self._taper is not None
        r1, length = self._taper
        todo = np.flatnonzero(radius > rm * _F32(r1))
        # each spot's component radius R (mm), recovered from its draw
        scale = radius[todo] / np.sqrt(u[todo] / (_F32(1.0) - u[todo]))
        while todo.size:
            beyond = radius[todo] > rm[todo] * _F32(r1)
            todo, scale = todo[beyond], scale[beyond]
            excess = (radius[todo] - rm[todo] * _F32(r1)) / (rm[todo] * _F32(length))
            again = rng.random(todo.size, dtype=_F32) >= np.exp(-excess)
            todo, scale = todo[again], scale[again]
            draw = rng.random(todo.size, dtype=_F32)
            radius[todo] = scale * np.sqrt(draw / (_F32(1.0) - draw))

    def _place(self, plan: _Plan, a: int, b: int, *, with_z: bool = False) -> _Cloud:
        """Positions of the spots of showers [a, b) (steps 3-4)."""
        rng = plan.spot_rng
        counts = plan.counts[a:b].ravel()
        per_shower = plan.counts[a:b].sum(axis=1)
        m = int(per_shower.sum())
        shower = np.repeat(np.arange(b - a), per_shower)

        def each(values: np.ndarray) -> np.ndarray:  # a value per shower, per spot
            return np.repeat(values[a:b].astype(_F32), per_shower)

        # Depth of the axis point, perpendicular X0, uniform within the step.
        depth = rng.random(m, dtype=_F32)
        if plan.perpendicular:
            depth *= _F32(self.step_X0)
        else:
            depth *= each(plan.depth_step)
        depth += np.repeat(plan.depth0[a:b].ravel(), counts)
        axis_layer = self._x0_map.layer(depth)

        # Radius (Moliere radii of the layer at the axis point) and azimuth: core or tail
        # radius by the step's binomial split; r = R sqrt(u / (1 - u)).
        core = plan.core[a:b].ravel()
        radius = np.repeat(
            np.stack([plan.Rc[a:b].ravel(), plan.Rt[a:b].ravel()], axis=1).ravel(),
            np.stack([core, counts - core], axis=1).ravel(),
        )
        rm = self._rm_mm[axis_layer]
        radius *= rm
        u = rng.random(m, dtype=_F32)
        radius *= np.sqrt(u / (_F32(1.0) - u))
        if self._taper is not None:
            self._taper_radii(radius, u, rm, rng)
        phi = rng.random(m, dtype=_F32)
        phi *= _F32(2.0 * np.pi)
        off1 = radius * np.cos(phi)
        off2 = radius * np.sin(phi)
        if plan.e_tail is None:
            e_mean = np.repeat(plan.e_spot[a:b].ravel(), counts)
        else:
            e_mean = np.repeat(
                np.stack([plan.e_spot[a:b].ravel(), plan.e_tail[a:b].ravel()], axis=1).ravel(),
                np.stack([core, counts - core], axis=1).ravel(),
            )

        z_axis = None
        if with_z or not plan.perpendicular:
            z_axis = self._x0_map.convert(depth, axis_layer)
        if plan.perpendicular:
            # Along the depth axis the lateral offsets are x and y themselves.
            x, y = off1, off2
            if plan.entry.any():
                x += each(plan.entry[:, 0])
                y += each(plan.entry[:, 1])
            return _Cloud(shower, x, y, z_axis, axis_layer, e_mean)

        # Along the axis to perpendicular depth z, then the lateral offsets along two unit
        # vectors orthogonal to the track; terms whose coefficient is zero for the whole
        # batch (theta tracks lie in the (y, depth) plane) are skipped.
        assert z_axis is not None
        d = plan.direction
        e1, e2 = _transverse_basis(d)
        path = z_axis / each(d[:, 2])  # mm along the track

        def coordinate(
            start: np.ndarray, terms: tuple[tuple[np.ndarray, np.ndarray], ...]
        ) -> np.ndarray:
            for coefficient, factor in terms:
                if coefficient[a:b].any():
                    start += each(coefficient) * factor
            return start

        lateral = ((e1[:, 0], off1), (e2[:, 0], off2))
        x = coordinate(each(plan.entry[:, 0]), ((d[:, 0], path), *lateral))
        lateral = ((e1[:, 1], off1), (e2[:, 1], off2))
        y = coordinate(each(plan.entry[:, 1]), ((d[:, 1], path), *lateral))
        z = coordinate(z_axis, ((e1[:, 2], off1), (e2[:, 2], off2)))  # z_axis = path * cos
        np.maximum(z, 0.0, out=z)  # lateral spread in front of the face: first layer
        return _Cloud(shower, x, y, z, self._mm_map.layer(z), e_mean)

    def _cell_keys(
        self,
        shower: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        layer: np.ndarray,
        n: int,
        per_shower: int,
    ) -> np.ndarray:
        """Flat index of each spot's cell over `n` showers of `per_shower` keys; spots
        outside the grid or behind the calorimeter get the index n * per_shower."""
        nx, ny = self._nxy
        fx = x * _F32(1.0 / self._cell[0])
        fx += _F32(nx / 2.0)
        fy = y * _F32(1.0 / self._cell[1])
        fy += _F32(ny / 2.0)
        inside = (fx >= 0) & (fx < nx) & (fy >= 0) & (fy < ny) & (layer < self._n_layers)
        key = fx.astype(np.intp)  # truncation is floor where inside
        key *= ny
        key += fy.astype(np.intp)
        depth_keys = per_shower // (nx * ny)
        if self._per_layer:
            key *= depth_keys
            key += layer
        elif depth_keys > 1:
            key *= depth_keys
            key += self._f_class[layer]
        key += shower * per_shower
        return np.where(inside, key, n * per_shower)

    def _deposit_per_cell(
        self,
        cloud: _Cloud,
        plan: _Plan,
        a: int,
        b: int,
        offset: np.ndarray,
        rng: np.random.Generator,
        out: np.ndarray,
    ) -> None:
        """Write the visible cell energies (GeV) of showers [a, b) into `out` (flat, zeros):
        the spots' mean energies summed per cell, then one Gamma draw per cell (step 5)."""
        n = b - a
        x, y = cloud.x, cloud.y
        if offset.any():
            per_shower = np.bincount(cloud.shower, minlength=n)
            x = x + np.repeat(offset[:, 0], per_shower)
            y = y + np.repeat(offset[:, 1], per_shower)
        keys = self._keys_per_shower
        key = self._cell_keys(cloud.shower, x, y, cloud.layer, n, keys)
        mean = np.bincount(key, cloud.e_mean, minlength=n * keys + 1)[:-1]
        hit = np.flatnonzero(mean != 0)  # on a mask: several times faster
        if self._per_layer:
            layer = hit % self._n_layers
            f_class = self._f_class[layer]
        else:
            f_class = hit % self._n_classes
        c2 = self._class_c2[f_class]
        group = (hit // keys) * self._n_classes + f_class
        deposit = self._fluctuate(mean[hit] / c2, group, n * self._n_classes, plan, rng) * c2
        if self._per_layer:
            deposit *= self._f_e[layer]
        else:
            deposit *= self._class_f_e[f_class]
            hit //= self._n_classes
        deposit *= plan.scale[a:b][hit // self.geometry.n_cells]
        if not self._per_layer and self._n_classes > 1:
            # Summed readout: the classes of one cell are neighbours; add them up.
            first = np.flatnonzero(np.diff(hit, prepend=-1))
            hit, deposit = hit[first], np.add.reduceat(deposit, first)
        keep = deposit >= self.min_cell_energy
        out[hit[keep]] = deposit[keep]

    def _fluctuate(
        self,
        shape: np.ndarray,
        group: np.ndarray,
        n_groups: int,
        plan: _Plan,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Independent Gamma(shape) draws (unit scale), the entries labelled by group
        (shower and sampling-fraction class).

        Drawn as each group's total, Gamma(sum of its shapes), from the showers' stream
        `rng`, split by Gamma draws from the spots' stream normalised to one (a Dirichlet
        split): the same joint distribution, and a shower's visible energy keeps its
        fluctuation when the spots are redrawn."""
        draws = plan.spot_rng.standard_gamma(shape.astype(_F32, copy=False), dtype=_F32)
        total_shape = np.bincount(group, shape, minlength=n_groups)
        drawn = np.bincount(group, draws, minlength=n_groups)
        total = rng.standard_gamma(total_shape)
        factor = np.divide(total, drawn, out=np.zeros(n_groups), where=drawn > 0)
        # In float64: a group of tiny draws has a factor beyond float32's range, while each
        # product is at most the group's total.
        np.multiply(draws, factor[group], out=draws, casting="unsafe")
        return draws

    def _deposit_per_spot(
        self,
        cloud: _Cloud,
        plan: _Plan,
        a: int,
        b: int,
        offset: np.ndarray,
        rng: np.random.Generator,
        out: np.ndarray,
    ) -> None:
        """Write the visible cell energies (GeV) of showers [a, b) into `out` (flat, zeros),
        images centred on their barycentre: every spot its own Gamma draw (step 5). Spots
        behind the calorimeter get shape 0, a draw of 0 that adds nothing to their group."""
        n = b - a
        layer = cloud.layer
        shape = cloud.e_mean * self._inv_c2[layer]
        group = cloud.shower * self._n_classes
        group += self._f_class[layer]
        visible = self._fluctuate(shape, group, n * self._n_classes, plan, rng)
        visible *= self._visible_per_draw[layer]
        visible *= plan.scale[a:b].astype(_F32)[cloud.shower]
        x, y = _centred(cloud.shower, visible, cloud.x, cloud.y, n, offset)
        outside = n * self.geometry.n_cells
        key = self._cell_keys(cloud.shower, x, y, layer, n, outside // n)
        inside = key < outside
        key, visible = key[inside], visible[inside]
        np.add.at(out, key, visible)
        low = out[key] < self.min_cell_energy
        out[key[low]] = 0.0


def _keep_total(dE: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """`changed` (n, S) rescaled so that each shower keeps the total of `dE` (n, S)."""
    total, now = dE.sum(axis=1), changed.sum(axis=1)
    return changed * np.divide(total, now, out=np.zeros_like(total), where=now > 0)[:, None]


def _centred(
    shower: np.ndarray,
    visible: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    n: int,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """x and y less their shower's barycentre, weighted by the visible energy, plus the
    shower's `offset` (n, 2) where given."""
    w = np.bincount(shower, visible, minlength=n)
    w = np.where(w > 0, w, 1.0)
    bx = np.bincount(shower, visible * x, minlength=n) / w
    by = np.bincount(shower, visible * y, minlength=n) / w
    if offset is not None:
        bx -= offset[:, 0]
        by -= offset[:, 1]
    return x - bx.astype(x.dtype)[shower], y - by.astype(y.dtype)[shower]


def _transverse_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to each direction d (rows), the first in the x-depth plane."""
    x_hat = np.array([1.0, 0.0, 0.0])
    e1 = x_hat - (d @ x_hat)[:, None] * d
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    return e1, e2
