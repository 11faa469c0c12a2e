"""The simulator's mechanics: shapes, seeds, geometry handling, conditions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caloforge.errors import CaloforgeError, ConditionError
from caloforge.geometry import PRESETS, Geometry
from caloforge.simulation.calibration import Calibration
from caloforge.simulation.conditions import ConditionRanges, sample_conditions
from caloforge.simulation.run import simulate_batches
from caloforge.simulation.simulator import MIN_CELL_ENERGY, ShowerSimulator
from caloforge.validation.features import cell_centres_mm


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_simulates_non_negative_finite_showers(name):
    geometry = PRESETS[name]
    ranges = ConditionRanges.for_geometry(geometry)
    batch = next(simulate_batches(geometry, ranges, 8, seed=1, batch_size=8))
    assert batch.showers.shape == (8, *geometry.shape)
    assert batch.showers.dtype == np.float32
    assert np.isfinite(batch.showers).all() and (batch.showers >= 0).all()
    assert set(batch.conditions) == set(geometry.condition_names)
    nonzero = batch.showers[batch.showers > 0]
    assert nonzero.min() >= MIN_CELL_ENERGY * (1 - 1e-6)


def test_same_seed_same_showers_other_seed_other_showers():
    geometry = PRESETS["clic-25"]
    ranges = ConditionRanges.for_geometry(geometry, energy=(10.0, 20.0))
    a = next(simulate_batches(geometry, ranges, 4, seed=5))
    b = next(simulate_batches(geometry, ranges, 4, seed=5))
    c = next(simulate_batches(geometry, ranges, 4, seed=6))
    np.testing.assert_array_equal(a.showers, b.showers)
    assert not np.array_equal(a.showers, c.showers)


def test_batches_do_not_depend_on_batch_position_only_on_first_index():
    geometry = PRESETS["lhcb-30"]
    ranges = ConditionRanges.for_geometry(geometry)
    whole = list(simulate_batches(geometry, ranges, 20, seed=3, batch_size=10))
    tail = list(simulate_batches(geometry, ranges, 10, seed=3, batch_size=10, first_index=10))
    np.testing.assert_array_equal(whole[1].showers, tail[0].showers)


def test_the_first_batch_of_a_huge_request_costs_no_memory_in_n():
    # The batches are made as they are asked for: a request of a million batches holds no
    # list of a million jobs (a typo as `--n 1e14` once filled the memory before the disk).
    import tracemalloc

    geometry = PRESETS["clic-25"]
    ranges = ConditionRanges.for_geometry(geometry, energy=(10.0, 20.0))
    small = next(simulate_batches(geometry, ranges, 2, seed=5, batch_size=2))
    tracemalloc.start()
    try:
        stream = simulate_batches(geometry, ranges, 2_000_000, seed=5, batch_size=2)
        huge = next(stream)
        stream.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(huge.showers, small.showers)
    assert peak < 20e6, f"{peak / 1e6:.0f} MB traced for one batch of two showers"


def test_perpendicular_shower_is_centred_and_inclined_one_moves_along_y():
    # The track geometry of the parametrization itself (bare): the front-to-back shift is
    # 20.1 mm here; Geant4 gives 22.3 mm, the engine calibrated on perpendicular showers 18.0.
    sim = ShowerSimulator(PRESETS["clic-angle-51"], calibration=Calibration())
    rng = np.random.default_rng(0)
    n = 50
    showers = sim.simulate(
        {"energy": np.full(n, 150.0), "theta": np.full(n, math.radians(60))}, rng
    )
    x, y = cell_centres_mm(PRESETS["clic-angle-51"])
    ey = showers.sum(axis=(1,))  # (n, y, layer)
    front = (ey[:, :, :5] * y[None, :, None]).sum() / ey[:, :, :5].sum()
    back = (ey[:, :, 15:] * y[None, :, None]).sum() / ey[:, :, 15:].sum()
    assert back - front > 20.0  # mm: cot(60 deg) times about 50 mm of depth
    bary_x = (showers.sum(axis=(2, 3)) * x).sum() / showers.sum()
    assert abs(bary_x) < 2.55  # within half a cell of the centre


def test_lhcb_showers_move_with_entry_point_and_momentum():
    geometry = PRESETS["lhcb-30"]
    sim = ShowerSimulator(geometry)
    x, _ = cell_centres_mm(geometry)
    n = 40

    def mean_x(point_x: float, slope_x: float) -> float:
        momentum = np.tile([slope_x * 20.0, 0.0, 20.0], (n, 1))
        cond = {
            "energy": np.full(n, 20.0),
            "momentum": momentum,
            "point": np.tile([point_x, 0.0], (n, 1)),
        }
        s = sim.simulate(cond, np.random.default_rng(1))
        return float((s.sum(axis=2) * x).sum() / s.sum())

    straight = mean_x(0.0, 0.0)
    assert abs(straight) < 3.0
    assert mean_x(40.0, 0.0) - straight == pytest.approx(40.0, abs=4.0)
    assert mean_x(0.0, 0.3) - straight > 20.0  # about 0.3 times the depth of the maximum


def test_lhcb_conditions_follow_the_study():
    geometry = PRESETS["lhcb-30"]
    ranges = ConditionRanges.for_geometry(geometry)
    assert ranges.spectrum == "inverse"
    c = sample_conditions(geometry, ranges, 20_000, np.random.default_rng(2))
    p = c["momentum"]
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), c["energy"], rtol=1e-12)
    assert np.degrees(np.arctan(p[:, 0] / p[:, 2])).std() == pytest.approx(20.0, rel=0.05)
    assert np.degrees(np.arctan(p[:, 1] / p[:, 2])).std() == pytest.approx(10.0, rel=0.05)
    # 1/E: equal counts per decade.
    decade = (c["energy"] < 10.0).mean()
    assert decade == pytest.approx(0.5, abs=0.02)
    assert np.abs(c["point"]).max() <= 5.0


def test_lhcb_angles_stay_within_three_sigma_even_in_the_tails():
    geometry = PRESETS["lhcb-30"]
    ranges = ConditionRanges.for_geometry(geometry)
    c = sample_conditions(geometry, ranges, 2_000_000, np.random.default_rng(3))
    p = c["momentum"]
    angle_xz = np.degrees(np.arctan(p[:, 0] / p[:, 2]))
    angle_yz = np.degrees(np.arctan(p[:, 1] / p[:, 2]))
    assert np.abs(angle_xz).max() <= 60.0 and np.abs(angle_xz).max() > 55.0
    assert np.abs(angle_yz).max() <= 30.0
    assert (p[:, 2] > 0).all()


def test_condition_ranges_are_checked_against_the_geometry():
    clic = PRESETS["clic-25"]
    with pytest.raises(ConditionError, match="valid for 1:1000 GeV"):
        ConditionRanges.for_geometry(clic, energy=(0.01, 10.0))
    with pytest.raises(ConditionError, match="no 'theta' condition"):
        ConditionRanges.for_geometry(clic, theta=(1.0, 2.0))
    with pytest.raises(ConditionError, match="low <= high"):
        ConditionRanges.for_geometry(clic, energy=(50.0, 10.0))
    with pytest.raises(ConditionError, match="theta"):
        ConditionRanges.for_geometry(PRESETS["clic-angle-51"], theta=(0.1, 1.0))


def test_voxel_geometries_cannot_be_simulated():
    voxels = Geometry(
        name="v", shape=(10,), readout="voxels", conditions=PRESETS["clic-25"].conditions
    )
    with pytest.raises(CaloforgeError, match="readout 'voxels'"):
        ShowerSimulator(voxels)


@pytest.mark.parametrize("name", ["clic-25", "lhcb-30"])
def test_the_layer_table_agrees_with_a_binary_search(name):
    sim = ShowerSimulator(PRESETS[name])
    rng = np.random.default_rng(4)
    for depth_map, bounds in ((sim._x0_map, sim._z_X0), (sim._mm_map, sim._z_mm)):
        edges = bounds.astype(np.float32)
        depth = np.concatenate(
            [
                rng.uniform(0.0, 1.2 * bounds[-1], 100_000).astype(np.float32),
                edges,
                np.nextafter(edges[1:], np.float32(0.0)),  # just before each boundary
            ]
        )
        expected = np.searchsorted(edges, depth, side="right") - 1
        np.testing.assert_array_equal(depth_map.layer(depth), np.minimum(expected, len(bounds) - 1))


def response_and_hits(showers: np.ndarray, energy: float) -> tuple[np.ndarray, np.ndarray]:
    flat = showers.reshape(len(showers), -1)
    return flat.sum(axis=1, dtype=np.float64) / energy, (flat > 0).sum(axis=1)


def assert_same_mean(a: np.ndarray, b: np.ndarray, sigmas: float = 4.0) -> None:
    error = np.hypot(a.std() / np.sqrt(len(a)), b.std() / np.sqrt(len(b)))
    assert abs(a.mean() - b.mean()) < sigmas * error, (a.mean(), b.mean(), error)


def test_one_gamma_draw_per_cell_matches_one_per_spot():
    # simulate() draws the sampling fluctuations per cell (a shower's total, split among its
    # cells); deposit(spots()) draws every spot's own. Same distribution of the cells.
    geometry = PRESETS["clic-25"]
    sim = ShowerSimulator(geometry, calibration=Calibration())
    n, energy = 300, 20.0
    conditions = {"energy": np.full(n, energy)}
    per_cell = sim.simulate(conditions, np.random.default_rng(1))
    spots = sim.spots(conditions, np.random.default_rng(2))
    per_spot = sim.deposit(spots, n, np.random.default_rng(3))
    (ra, hits_a), (rb, hits_b) = (
        response_and_hits(per_cell, energy),
        response_and_hits(per_spot, energy),
    )
    assert_same_mean(ra, rb)
    assert_same_mean(hits_a, hits_b)
    assert ra.std() == pytest.approx(rb.std(), rel=0.15)  # 300 showers: 4 % errors
    hottest_a = per_cell.reshape(n, -1).max(axis=1)
    hottest_b = per_spot.reshape(n, -1).max(axis=1)
    assert_same_mean(hottest_a, hottest_b)


def test_summed_readout_of_layers_with_two_sampling_fractions():
    # clic-25's thin and thick layers differ in f_e: summed readout draws them apart.
    layered = PRESETS["clic-25"]
    summed = Geometry.from_dict(
        {**layered.to_dict(), "name": "s", "shape": [25, 25], "readout": "summed"}
    )
    n, energy = 300, 30.0
    conditions = {"energy": np.full(n, energy)}
    a = ShowerSimulator(layered).simulate(conditions, np.random.default_rng(5)).sum(axis=3)
    b = ShowerSimulator(summed).simulate(conditions, np.random.default_rng(6))
    assert b.shape == (n, 25, 25)
    ra, rb = response_and_hits(a, energy)[0], response_and_hits(b, energy)[0]
    assert_same_mean(ra, rb)
    assert ra.std() == pytest.approx(rb.std(), rel=0.15)
    assert_same_mean(a.reshape(n, -1).max(axis=1), b.reshape(n, -1).max(axis=1))


def test_workers_give_the_showers_of_one_process(monkeypatch):
    monkeypatch.setattr("caloforge.simulation.run.POOL_MIN_CPU_S", 0.0)  # a pool for 60 showers
    geometry = PRESETS["clic-25"]
    ranges = ConditionRanges.for_geometry(geometry, energy=(5.0, 10.0))
    one = list(simulate_batches(geometry, ranges, 60, seed=8, batch_size=8, workers=1))
    two = list(simulate_batches(geometry, ranges, 60, seed=8, batch_size=8, workers=2))
    assert [len(b) for b in two] == [8] * 7 + [4]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.showers, b.showers)
        np.testing.assert_array_equal(a.conditions["energy"], b.conditions["energy"])


def test_fluctuations_of_groups_of_tiny_draws_stay_finite_and_keep_the_totals():
    """A group whose float32 draws are tiny (shape 0.01 draws values far below 1e-38) has a
    scale factor beyond float32's range: the draws must still come out finite, each group's
    adding up to its total (one draw a group: the total itself)."""
    from types import SimpleNamespace

    sim = ShowerSimulator(PRESETS["clic-25"])
    n_groups = 4000
    shape = np.full(n_groups, 0.01)
    group = np.arange(n_groups)
    plan = SimpleNamespace(spot_rng=np.random.default_rng(1))
    with np.errstate(over="raise", invalid="raise"):
        draws = sim._fluctuate(shape, group, n_groups, plan, np.random.default_rng(2))
    assert np.isfinite(draws).all()
    totals = np.random.default_rng(2).standard_gamma(shape)
    kept = draws > 0
    assert kept.sum() > n_groups // 4
    # to float32 precision (values under its smallest normal number have fewer digits)
    tiny = np.finfo(np.float32).tiny
    assert np.allclose(draws[kept], totals[kept], rtol=1e-6, atol=tiny)


def test_the_simulator_takes_a_presets_name_and_names_missing_conditions():
    by_name = ShowerSimulator("lhcb-30")
    assert by_name.geometry == PRESETS["lhcb-30"]
    with pytest.raises(ConditionError, match=r"needs condition\(s\) \['momentum', 'point'\]"):
        by_name.simulate({"energy": np.array([10.0])}, np.random.default_rng(0))
    with pytest.raises(ConditionError, match="needs condition"):
        ShowerSimulator("clic-25").simulate({}, np.random.default_rng(0))
