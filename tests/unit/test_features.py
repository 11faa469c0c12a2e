"""Shower features on hand-made showers whose answers are known exactly (issue: physics
validation). Hand-made showers put energy in chosen cells; clic-25 cells are 5.1 mm with
centres at (i - 12) * 5.1 mm, lhcb-30 cells 20 mm with centres at (i - 14.5) cells."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.data.canonical import ShowerWriter, open_canonical
from caloforge.data.source import Batch
from caloforge.geometry import PRESETS
from caloforge.simulation.simulator import ShowerSimulator
from caloforge.validation.features import (
    CELL_SPECTRUM_EDGES,
    HIT_THRESHOLD,
    as_layers,
    cell_spectrum,
    centre_and_width,
    cluster_asymmetry,
    compute_features,
    feature_names,
    feature_vector,
    grid_sums,
    hits,
    layer_centres_mm,
    lhcb_impact_point,
    lhcb_shower_width,
    max_position,
    measured_theta,
    moments,
    one_pass,
    profile,
    shower_features,
    sparsity,
    sparsity_level,
    x_profile,
    y_profile,
)

CLIC = PRESETS["clic-25"]
LHCB = PRESETS["lhcb-30"]
CELL = 5.1


def clic_showers(n: int = 1) -> np.ndarray:
    return np.zeros((n, *CLIC.shape), dtype=np.float32)


def lhcb_showers(n: int = 1) -> np.ndarray:
    return np.zeros((n, *LHCB.shape), dtype=np.float32)


def test_profiles_sum_the_other_axes_and_keep_the_energy():
    rng = np.random.default_rng(0)
    showers = rng.random((3, *CLIC.shape)).astype(np.float32)
    for axis, expected in ((0, showers.sum(axis=(2, 3))), (1, showers.sum(axis=(1, 3)))):
        assert np.allclose(profile(showers, axis), expected, rtol=1e-5)
    assert np.allclose(x_profile(showers), showers.sum(axis=(2, 3)), rtol=1e-5)
    assert np.allclose(y_profile(showers), showers.sum(axis=(1, 3)), rtol=1e-5)
    assert np.allclose(profile(showers, 2).sum(axis=1), showers.sum(axis=(1, 2, 3)), rtol=1e-5)
    # A depth-summed image is one layer.
    image = showers[..., 0]
    assert as_layers(image).shape == (3, 25, 25, 1)
    assert np.allclose(x_profile(image), image.sum(axis=2), rtol=1e-5)


def test_centre_and_width_of_two_equal_deposits():
    showers = clic_showers(2)
    showers[0, 10, 12, 3] = 1.0  # x = -2 cells
    showers[0, 16, 12, 3] = 1.0  # x = +4 cells
    showers[1, 12, 5, 7] = 2.0  # one cell: no width
    centre, width = centre_and_width(showers, CLIC, 0)
    assert centre == pytest.approx([1.0 * CELL, 0.0], abs=1e-9)
    assert width == pytest.approx([3.0 * CELL, 0.0], abs=1e-9)
    centre_y, width_y = centre_and_width(showers, CLIC, 1)
    assert centre_y == pytest.approx([0.0, -7 * CELL], abs=1e-9)
    assert width_y == pytest.approx([0.0, 0.0], abs=1e-9)
    # Per layer: only layers 3 (shower 0) and 7 (shower 1) hold energy; empty layers give 0.
    c, w = centre_and_width(showers, CLIC, 0, per_layer=True)
    assert c.shape == w.shape == (2, 25)
    assert c[0, 3] == pytest.approx(CELL) and w[0, 3] == pytest.approx(3 * CELL)
    assert np.count_nonzero(c[0]) == 1 and np.count_nonzero(w[1]) == 0
    # Depth: the middle of layer 3 for shower 0.
    cz, wz = centre_and_width(showers, CLIC, 2)
    assert cz[0] == pytest.approx(layer_centres_mm(CLIC)[3]) and wz[0] == pytest.approx(0.0)


def test_depth_summed_images_are_one_layer():
    showers = lhcb_showers(1)
    showers[0, 20, 3] = 1.0  # x = +5.5 cells = 110 mm, y = -11.5 cells = -230 mm
    showers[0, 22, 3] = 1.0  # x = +7.5 cells
    centre, width = centre_and_width(showers, LHCB, 0)
    assert centre[0] == pytest.approx(130.0) and width[0] == pytest.approx(20.0)
    c, w = centre_and_width(showers, LHCB, 1, per_layer=True)
    assert c.shape == (1, 1) and c[0, 0] == pytest.approx(-230.0) and w[0, 0] == 0.0
    assert hits(showers, per_layer=True).tolist() == [[2]]
    assert np.allclose(sparsity(showers, 0.5, per_layer=True), [[2 / 900]])
    assert max_position(showers).tolist() == [[20, 3]]


def test_centre_and_width_of_an_empty_shower_are_zero_not_nan():
    centre, width = centre_and_width(clic_showers(1), CLIC, 0)
    assert centre[0] == 0.0 and width[0] == 0.0
    features, _ = feature_vector(clic_showers(1), {"energy": np.array([10.0])}, CLIC)
    assert np.isfinite(features).all()


def test_width_is_not_lost_to_cancellation_far_from_the_origin():
    # sqrt(<x^2> - <x>^2) computed naively loses a narrow width at a large offset.
    showers = clic_showers(1)
    showers[0, 24, 0, 0] = 1.0
    showers[0, 23, 0, 0] = 1e-6
    _, width = centre_and_width(showers, CLIC, 0)
    expected = CELL * np.sqrt(1e-6) / (1 + 1e-6)  # two-point distribution
    assert width[0] == pytest.approx(expected, rel=1e-3)


def test_moments_of_a_two_point_distribution():
    showers = clic_showers(1)
    showers[0, 10, 12, 0] = 1.0
    showers[0, 14, 12, 0] = 3.0  # x = -2 and +2 cells, weights 1:3 -> mean +1 cell
    m = moments(showers, CLIC, 0, m=4)[0]
    d = np.array([-3.0, 1.0]) * CELL  # offsets from the mean
    w = np.array([0.25, 0.75])
    expected = [CELL, *[(w * d**k).sum() for k in (2, 3, 4)]]
    assert m == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="at least one moment"):
        moments(showers, CLIC, 0, m=0)


def test_depth_features_refuse_depth_summed_images():
    with pytest.raises(ValueError, match="one image plane per layer"):
        centre_and_width(lhcb_showers(1), LHCB, 2)


def test_max_position_hits_and_sparsity():
    showers = clic_showers(2)
    showers[0, 3, 4, 5] = 2.0
    showers[0, 1, 1, 1] = 1e-6  # below the default hit threshold of 1e-5 GeV
    showers[1, 7, 8, 9] = 0.5
    showers[1, 7, 8, 10] = 0.4
    assert max_position(showers).tolist() == [[3, 4, 5], [7, 8, 9]]
    assert hits(showers).tolist() == [1, 2]
    assert hits(showers, threshold=1e-7).tolist() == [2, 2]
    per_layer = hits(showers, per_layer=True)
    assert per_layer.shape == (2, 25) and per_layer[1, 9] == 1 and per_layer[1, 10] == 1
    frac = sparsity(showers, np.array([1e-7, 0.45]))
    assert frac.shape == (2, 2)
    assert np.allclose(frac * CLIC.n_cells, [[2, 1], [2, 1]])
    layer_frac = sparsity(showers, 1e-5, per_layer=True)
    assert layer_frac.shape == (2, 25) and layer_frac[0, 5] == pytest.approx(1 / 625)


def test_cell_spectrum_counts_cells_per_energy_bin():
    showers = clic_showers(2)
    showers[0, 0, 0, 0] = 0.5
    showers[0, 0, 0, 1] = 0.05
    showers[1, 0, 0, 0] = 0.05
    showers[1, 0, 0, 2] = 50.0  # above the last edge: not counted
    edges = np.array([0.01, 0.1, 1.0, 10.0])
    counts = cell_spectrum(showers, edges)
    assert counts.tolist() == [[1, 1, 0], [1, 0, 0]]
    assert counts.dtype == np.int64


def test_lhcb_impact_point_maps_mm_and_slopes_to_cell_units():
    momentum = np.array([[1.0, -2.0, 10.0]])
    point = np.array([[40.0, 10.0]])  # mm -> (2, 0.5) cells
    # The challenge's 25 cells of depth are 500 mm: p = (2 + 25 * 0.1, 0.5 - 25 * 0.2).
    assert lhcb_impact_point(momentum, point, LHCB)[0] == pytest.approx([4.5, -4.5])
    assert lhcb_impact_point(momentum, point, LHCB, depth_mm=0.0)[0] == pytest.approx([2, 0.5])


def test_lhcb_asymmetries_of_single_cells():
    # Momentum along +x, impact point at the grid's centre (between cells 14 and 15).
    momentum = np.tile([1.0, 0.0, 10.0], (4, 1))
    point = np.zeros((4, 2))
    showers = lhcb_showers(4)
    showers[0, 15, 3] = 1.0  # downstream (x = +0.5)
    showers[1, 14, 3] = 1.0  # upstream
    showers[2, 3, 20] = 1.0  # above the momentum line (y = +5.5)
    showers[3, 3, 20] = 3.0
    showers[3, 3, 2] = 1.0  # 3:1 above:below -> +0.5
    long = cluster_asymmetry(showers, momentum, point, LHCB, depth_mm=0.0)
    trans = cluster_asymmetry(showers, momentum, point, LHCB, transverse=True, depth_mm=0.0)
    assert long[:2] == pytest.approx([1.0, -1.0])
    assert trans[2:] == pytest.approx([1.0, 0.5])
    # Side 1 of the transverse split is the larger-y side for px < 0 too (the challenge's).
    flipped = cluster_asymmetry(
        showers[2:3], -momentum[:1] * [1, 1, -1], point[:1], LHCB, transverse=True, depth_mm=0.0
    )
    assert flipped[0] == pytest.approx(1.0)


def _asymmetry_by_lines(image, momentum, point, transverse):
    """An independent per-shower form of the challenge's asymmetry, in its own line
    equations y = p1 + (x - p0) py/px (transverse) and y = p1 - (x - p0) px/py
    (longitudinal), with its sign conventions."""
    x = np.linspace(-14.5, 14.5, 30)
    xx, yy = np.meshgrid(x, x, indexing="ij")  # caloforge images are (x, y)
    px, py, pz = momentum
    p0, p1 = point[0] / 20.0 + 25 * px / pz, point[1] / 20.0 + 25 * py / pz
    if transverse:
        side1 = yy - (p1 + (xx - p0) * py / px) >= 0
    else:
        above = yy - (p1 - (xx - p0) * px / py) >= 0
        side1 = above if py > 0 else ~above | np.isclose(yy, p1 - (xx - p0) * px / py)
    return (image[side1].sum() - image[~side1].sum()) / image.sum()


def test_lhcb_asymmetry_matches_the_challenge_line_equations():
    rng = np.random.default_rng(3)
    n = 40
    momentum = np.stack([rng.normal(0, 0.3, n), rng.normal(0, 0.2, n), np.ones(n)], axis=1) * 10
    point = rng.uniform(-60, 60, (n, 2))
    showers = (rng.random((n, 30, 30)) ** 8).astype(np.float32)
    for transverse in (False, True):
        ours = cluster_asymmetry(showers, momentum, point, LHCB, transverse=transverse)
        theirs = [
            _asymmetry_by_lines(showers[i].astype(np.float64), momentum[i], point[i], transverse)
            for i in range(n)
        ]
        assert ours == pytest.approx(theirs, abs=1e-6)


def test_lhcb_shower_width_along_and_across_the_momentum():
    momentum = np.array([[1.0, 0.0, 10.0]])
    point = np.zeros((1, 2))
    showers = lhcb_showers(1)
    showers[0, 13, 15] = 1.0  # on the momentum line (row y = +0.5 touches it), s = -1.5
    showers[0, 17, 15] = 1.0  # s = +2.5 -> sigma 2
    showers[0, 5, 25] = 5.0  # far from both lines: ignored
    width = lhcb_shower_width(showers, momentum, point, LHCB, depth_mm=0.0)
    assert width[0] == pytest.approx(2.0)
    # Across: the line x = 0 touches the columns x = -0.5 and +0.5 only.
    showers = lhcb_showers(1)
    showers[0, 14, 10] = 1.0  # t = -4.5
    showers[0, 15, 20] = 1.0  # t = +5.5 -> sigma 5
    showers[0, 20, 20] = 7.0  # off the line
    across = lhcb_shower_width(showers, momentum, point, LHCB, transverse=True, depth_mm=0.0)
    assert across[0] == pytest.approx(5.0)


def test_lhcb_sparsity_level_counts_cells_above_fractions_of_the_total():
    showers = lhcb_showers(2)
    showers[0, 0, 0] = 0.9
    showers[0, 0, 1] = 0.09
    showers[0, 0, 2] = 0.01  # total 1
    alphas = np.array([1e-3, 0.05, 0.5, 1.0])
    level = sparsity_level(showers, alphas)
    assert level[0] * 900 == pytest.approx([3, 2, 1, 0])
    assert level[1] == pytest.approx([0, 0, 0, 0])  # empty shower
    assert sparsity_level(showers).shape == (2, 50)


def test_feature_vector_of_clic_25_has_named_finite_columns():
    rng = np.random.default_rng(5)
    energy = np.array([20.0, 50.0, 80.0])
    showers = ShowerSimulator(CLIC).simulate({"energy": energy}, rng)
    features, names = feature_vector(showers, {"energy": energy}, CLIC)
    assert features.shape == (3, 1 + 6 * 25) and names == feature_names(CLIC)
    assert len(set(names)) == len(names)
    assert np.isfinite(features).all()
    col = {name: features[:, i] for i, name in enumerate(names)}
    assert col["E_tot/E_inc"] == pytest.approx(showers.sum(axis=(1, 2, 3)) / energy, rel=1e-5)
    fractions = features[:, [names.index(f"E_frac_layer{i}") for i in range(25)]]
    assert fractions.sum(axis=1) == pytest.approx(1.0)
    _, wx = centre_and_width(showers, CLIC, 0, per_layer=True)
    assert col["width_x_layer10"] == pytest.approx(wx[:, 10])


def test_feature_vector_of_lhcb_30_includes_the_challenge_features():
    rng = np.random.default_rng(6)
    conditions = {
        "energy": np.array([10.0, 40.0]),
        "momentum": np.array([[1.0, 0.5, 9.9], [-5.0, 2.0, 39.6]]),
        "point": np.array([[1.0, -2.0], [3.0, 0.0]]),
    }
    showers = ShowerSimulator(LHCB).simulate(conditions, rng)
    features, names = feature_vector(showers, conditions, LHCB)
    assert features.shape == (2, len(names)) and np.isfinite(features).all()
    for name in ("asymmetry_long", "asymmetry_trans", "width_long", "width_trans", "centre_x"):
        assert name in names
    assert sum(name.startswith("sparsity_level") for name in names) == 10
    assert np.abs(features[:, names.index("asymmetry_long")]).max() <= 1.0
    with pytest.raises(ValueError, match="needs the conditions"):
        feature_vector(showers, {"energy": conditions["energy"]}, LHCB)


def test_feature_vector_refuses_voxel_geometries():
    voxel = PRESETS["clic-25"].__class__.from_dict(
        {"name": "v", "shape": [16], "readout": "voxels", "conditions": [{"name": "energy"}]}
    )
    with pytest.raises(ValueError, match="needs a cell grid"):
        feature_names(voxel)


def test_compute_features_streams_a_file_in_batches(tmp_path):
    rng = np.random.default_rng(7)
    energy = rng.uniform(10, 50, 25)
    showers = ShowerSimulator(CLIC).simulate({"energy": energy}, rng)
    path = tmp_path / "showers.h5"
    with ShowerWriter(path, CLIC) as writer:
        writer.write(Batch(showers, {"energy": energy}))
    whole = shower_features(showers, {"energy": energy}, CLIC)
    with open_canonical(path) as source:
        streamed = compute_features(source, batch_size=7)
        first = compute_features(source, batch_size=4, max_showers=10)
    assert set(streamed) == set(whole)
    for key, value in whole.items():
        assert streamed[key].shape == value.shape, key
        assert np.allclose(streamed[key], value), key
    assert len(first["total_energy"]) == 10
    assert np.allclose(first["feature_vector"], whole["feature_vector"][:10])
    assert streamed["condition/energy"] == pytest.approx(energy)


# --- the one-pass path of shower_features against the single-feature functions ---------------
ANGLE = PRESETS["clic-angle-51"]


def reference_features(showers, conditions, geometry):
    """`shower_features` written the straightforward way: every feature by its own
    single-feature function, each summing the whole grid again (as before the one-pass
    `grid_sums`)."""
    out = {f"condition/{k}": np.asarray(v) for k, v in conditions.items()}
    out["total_energy"] = showers.reshape(len(showers), -1).sum(axis=1, dtype=np.float64)
    if geometry.readout == "layers":
        out["longitudinal_profile"] = showers.sum(axis=(1, 2), dtype=np.float64)
        out["centre_z"], out["width_z"] = centre_and_width(showers, geometry, 2)
    out["x_profile"] = x_profile(showers)
    out["y_profile"] = y_profile(showers)
    for axis, name in ((0, "x"), (1, "y")):
        out[f"centre_{name}"], out[f"width_{name}"] = centre_and_width(showers, geometry, axis)
        c, w = centre_and_width(showers, geometry, axis, per_layer=True)
        out[f"centre_{name}_layer"], out[f"width_{name}_layer"] = c, w
    out["hits"] = hits(showers)
    out["hits_layer"] = hits(showers, per_layer=True)
    out["max_position"] = max_position(showers)
    out["cell_spectrum"] = cell_spectrum(showers)
    if geometry.has_condition("theta"):
        out["measured_theta"] = measured_theta(showers, geometry)
    if geometry.readout == "summed":
        mom, point = conditions["momentum"], conditions["point"]
        for transverse, name in ((False, "long"), (True, "trans")):
            out[f"asymmetry_{name}"] = cluster_asymmetry(
                showers, mom, point, geometry, transverse=transverse
            )
            out[f"width_{name}"] = lhcb_shower_width(
                showers, mom, point, geometry, transverse=transverse
            )
        out["sparsity_level"] = sparsity_level(showers)
    # The feature vector, column by column from its definition.
    total = out["total_energy"]
    layer_energy = as_layers(showers).sum(axis=(1, 2), dtype=np.float64)
    cx, wx = centre_and_width(showers, geometry, 0, per_layer=True)
    cy, wy = centre_and_width(showers, geometry, 1, per_layer=True)
    occupancy = sparsity(showers, HIT_THRESHOLD, per_layer=True)
    blocks = (layer_energy / np.where(total > 0, total, 1.0)[:, None], cx, cy, wx, wy, occupancy)
    columns = [total / conditions["energy"]]
    if geometry.readout == "layers":
        columns += [c for block in blocks for c in block.T]
    else:
        columns += [block[:, 0] for block in blocks[1:]]
        lhcb, _ = feature_vector(showers, conditions, geometry)
        columns += list(lhcb[:, len(columns) :].T)
    out["feature_vector"] = np.stack(columns, axis=1)
    return out


def awkward_showers(shape: tuple[int, ...], n: int, fill: float, seed: int) -> np.ndarray:
    """Random showers filling about `fill` of their cells with energies over eight decades
    (from below the hit threshold and the spectrum's first edge to above its last), plus
    the edge cases: an empty shower, one with its largest deposit in two cells (the first
    must be found), and cells exactly at the spectrum's edges and the hit threshold."""
    rng = np.random.default_rng(seed)
    energy = 10.0 ** rng.uniform(-8.0, 1.5, (n, *shape))
    showers = np.where(rng.random((n, *shape)) < fill, energy, 0.0).astype(np.float32)
    showers[0] = 0.0
    flat = showers[1].reshape(-1)
    flat[[5, 17]] = 40.0
    flat[[3, 4, 6]] = [CELL_SPECTRUM_EDGES[0], CELL_SPECTRUM_EDGES[-1], HIT_THRESHOLD]
    return showers


def assert_same_features(fast, reference):
    assert list(fast) == list(reference)
    for key, expected in reference.items():
        got = fast[key]
        assert got.shape == expected.shape and got.dtype == expected.dtype, key
        if expected.dtype.kind in "iub":
            assert np.array_equal(got, expected), key
        else:
            assert np.allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True), key


@pytest.mark.parametrize("fill", [0.01, 0.3])  # the sparse pass, and the dense sums
def test_one_pass_features_of_per_layer_grids_equal_the_single_feature_functions(fill):
    n = 6
    showers = awkward_showers(ANGLE.shape, n, fill, seed=21)
    rng = np.random.default_rng(22)
    conditions = {"energy": rng.uniform(100, 200, n), "theta": rng.uniform(1.1, 2.0, n)}
    fast = shower_features(showers, conditions, ANGLE)
    assert_same_features(fast, reference_features(showers, conditions, ANGLE))
    assert fast["max_position"][1].tolist() == list(np.unravel_index(5, ANGLE.shape))
    assert fast["hits"][0] == 0 and np.isnan(fast["measured_theta"][0])


@pytest.mark.parametrize("fill", [0.05, 0.5])
def test_one_pass_features_of_lhcb_images_equal_the_single_feature_functions(fill):
    n = 12
    showers = awkward_showers(LHCB.shape, n, fill, seed=23)
    rng = np.random.default_rng(24)
    energy = rng.uniform(1, 100, n)
    momentum = np.stack([rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), np.ones(n)], axis=1)
    conditions = {"energy": energy, "momentum": momentum * energy[:, None]}
    conditions["point"] = rng.uniform(-50, 50, (n, 2))
    fast = shower_features(showers, conditions, LHCB)
    assert_same_features(fast, reference_features(showers, conditions, LHCB))


def test_the_sparse_and_dense_grid_sums_agree(monkeypatch):
    showers = awkward_showers(CLIC.shape, 5, 0.05, seed=25)
    sparse = grid_sums(showers)
    monkeypatch.setattr(one_pass, "SPARSE_MAX_FILL", 0.0)  # every batch summed densely
    dense = grid_sums(showers)
    for field in ("x_layer", "y_layer", "hits_layer", "cell_spectrum", "max_position"):
        a, b = getattr(sparse, field), getattr(dense, field)
        assert a.dtype == b.dtype and np.allclose(a, b, rtol=1e-12, atol=0), field
    # Negative cells (not a valid shower, but a valid array) take the dense sums: the largest
    # deposit of a shower whose only filled cell is negative is its first, empty, cell.
    showers[0, 3, 3, 3] = -1.0
    monkeypatch.undo()
    assert grid_sums(showers).max_position[0].tolist() == [0, 0, 0]
