"""`caloforge validate` makes every pass over the showers a chunk at a time (the features and
their summaries, the cell-level subsample, the projections, FPD and KPD), so that no set is
ever held whole: each chunked pass gives the numbers of one pass over the whole set, to
float rounding."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.data.canonical import ShowerWriter, open_canonical
from caloforge.data.source import Batch
from caloforge.geometry import PRESETS
from caloforge.simulation.simulator import ShowerSimulator
from caloforge.validation import sources
from caloforge.validation.features import Moments, shower_features
from caloforge.validation.metrics import distances, fpd, kpd, projection_mse_and_floor
from caloforge.validation.metrics.images import _shower_projections

CLIC = PRESETS["clic-25"]


def _simulated_file(tmp_path, n: int, seed: int):
    rng = np.random.default_rng(seed)
    energy = rng.uniform(10, 80, n)
    showers = ShowerSimulator(CLIC).simulate({"energy": energy}, rng)
    path = tmp_path / f"{seed}.h5"
    with ShowerWriter(path, CLIC) as writer:
        writer.write(Batch(showers, {"energy": energy}))
    return path, showers, energy


def _check_against_one_pass(one, showers, energy, keep, picks):
    whole = shower_features(showers, {"energy": energy}, CLIC)
    kept = set(whole) - set(sources.SUMMARISED) - set(sources.UNUSED)
    assert set(one.table) == kept
    for key in kept:
        expected = whole[key][keep]
        assert one.table[key].shape == expected.shape, key
        if key == "feature_vector":  # held in float32
            assert one.table[key].dtype == np.float32
            assert np.allclose(one.table[key], expected, rtol=1e-6, atol=1e-9), key
        else:
            assert np.allclose(one.table[key], expected, rtol=1e-12, equal_nan=True), key
    for key in set(sources.SUMMARISED) & set(whole):
        m, values = one.summaries[key], whole[key][keep].astype(np.float64)
        assert m.n == keep.sum(), key
        assert np.allclose(m.mean, values.mean(axis=0), rtol=1e-12, atol=1e-15), key
        assert np.allclose(m.std(ddof=1), values.std(axis=0, ddof=1), rtol=1e-9, atol=1e-15), key
    assert np.array_equal(one.subsample.showers, showers[picks])
    assert np.array_equal(one.subsample.conditions["energy"], energy[picks])


def test_the_features_pass_in_chunks_keeps_what_one_pass_over_the_set_gives(tmp_path):
    # Batches of 3 and chunks of 48 showers: 2 chunks, 19 batches, a subsample across both.
    path, showers, energy = _simulated_file(tmp_path, 55, seed=3)
    rng = np.random.default_rng(0)
    keep = rng.random(len(energy)) > 0.3
    picks = np.sort(rng.choice(np.flatnonzero(keep), 9, replace=False))
    with open_canonical(path) as source:
        [one] = sources.features_of_sets(
            [source], None, [keep], picks=[picks], batch_size=3, workers=1
        )
    _check_against_one_pass(one, showers, energy, keep, picks)


def test_the_features_pass_over_worker_processes_keeps_the_same(tmp_path, monkeypatch):
    """The chunks computed by worker processes (which send back the subsample's showers)."""
    monkeypatch.setattr(sources, "PARALLEL_MIN_CELLS", 0)
    path, showers, energy = _simulated_file(tmp_path, 40, seed=4)
    keep = np.ones(len(energy), dtype=bool)
    keep[[0, 17, 39]] = False
    picks = np.array([1, 2, 16, 18, 30, 38])
    spec = sources.source_spec(path, None, {})
    with spec.open() as source:
        [one] = sources.features_of_sets(
            [source], [spec], [keep], picks=[picks], batch_size=2, workers=2
        )
    _check_against_one_pass(one, showers, energy, keep, picks)


def test_moments_merged_chunk_by_chunk_equal_those_of_all_values():
    values = np.random.default_rng(1).gamma(0.5, 3.0, (101, 4, 3)) + 1e6  # far from 0
    merged = Moments.of(values[:0])
    for lo in range(0, len(values), 17):
        merged = merged.merge(Moments.of(values[lo : lo + 17]))
    assert merged.n == len(values)
    assert np.allclose(merged.mean, values.mean(axis=0), rtol=1e-15)
    assert np.allclose(merged.std(ddof=1), values.std(axis=0, ddof=1), rtol=1e-9)
    assert np.allclose(merged.total, values.sum(axis=0), rtol=1e-14)


def _whole_set_projections(images):
    """The projections the straightforward way: the whole set in float64 at once."""
    x = np.asarray(images, dtype=np.float64)
    return [x.sum(axis=a) for a in (1, 2, 3)]


def test_projections_in_chunks_equal_the_whole_set_in_float64():
    rng = np.random.default_rng(2)
    reference = rng.gamma(0.2, 1.0, (300, 5, 6, 7)).astype(np.float32)  # more than a chunk
    generated = (1.05 * rng.gamma(0.2, 1.0, (280, 5, 6, 7))).astype(np.float32)
    chunked, sizes = _shower_projections(reference, chunk=32)
    assert sizes == [6 * 7, 5 * 7, 5 * 6]
    whole = np.concatenate([p.reshape(len(p), -1) for p in _whole_set_projections(reference)], 1)
    assert np.allclose(chunked, whole, rtol=1e-12)

    def mse(r, g):
        total = 0.0
        for p, q in zip(_whole_set_projections(r), _whole_set_projections(g), strict=True):
            p, q = p.mean(axis=0), q.mean(axis=0)
            total += np.mean(((p - q) / p.max()) ** 2)
        return total / 3

    def floor(r, g):
        total = 0.0
        for p, q in zip(_whole_set_projections(r), _whole_set_projections(g), strict=True):
            noise = p.var(axis=0, ddof=1) / len(p) + q.var(axis=0, ddof=1) / len(q)
            total += np.mean(noise / p.mean(axis=0).max() ** 2)
        return total / 3

    value, error, chance = projection_mse_and_floor(reference, generated, seed=5, n_bootstrap=6)
    assert value == pytest.approx(mse(reference, generated), rel=1e-10)
    assert chance == pytest.approx(floor(reference, generated), rel=1e-10)
    # The bootstrap resamples the showers themselves, with the same draws.
    draws = np.random.default_rng(5)
    resampled = []
    for _ in range(6):
        i = draws.integers(0, len(reference), len(reference))
        j = draws.integers(0, len(generated), len(generated))
        resampled.append(mse(reference[i], generated[j]))
    assert error == pytest.approx(np.std(resampled, ddof=1), rel=1e-8)


def test_fpd_and_kpd_in_chunks_equal_one_piece(monkeypatch):
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(3000, 6)) * [1, 2, 3, 4, 5, 6]
    generated = 1.02 * rng.normal(size=(2600, 6)) * [1, 2, 3, 4, 5, 6] + 0.05
    options = {"seed": 4, "min_samples": 800, "max_samples": 2000, "n_points": 4}
    options |= {"n_batches": 4, "n_bootstrap": 5}
    one_piece = fpd(reference, generated, **options), kpd(reference, generated, batch_size=900)
    monkeypatch.setattr(distances, "CHUNK", 97)
    monkeypatch.setattr(distances, "KERNEL_BLOCK", 41)
    chunked = fpd(reference, generated, **options), kpd(reference, generated, batch_size=900)
    for (a, a_error), (b, b_error) in zip(one_piece, chunked, strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-14)
        assert a_error == pytest.approx(b_error, rel=1e-7, abs=1e-14)
    # float32 features are converted row by row: as if converted first.
    r32, g32 = reference.astype(np.float32), generated.astype(np.float32)
    assert fpd(r32, g32, **options) == fpd(
        r32.astype(np.float64), g32.astype(np.float64), **options
    )
    assert kpd(r32, g32) == kpd(r32.astype(np.float64), g32.astype(np.float64))


def test_the_kernel_sum_in_blocks_equals_the_whole_kernel_matrix(monkeypatch):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(130, 5)), rng.normal(size=(120, 5))
    monkeypatch.setattr(distances, "KERNEL_BLOCK", 16)

    def product(a, b):
        return a.T @ b

    for degree in (1, 2, 3, 4):
        whole_xy = ((x @ y.T / 5 + 1.0) ** degree).sum()
        kxx = (x @ x.T / 5 + 1.0) ** degree
        whole_xx = kxx.sum() - np.trace(kxx)
        blocked_xy = distances._kernel_sum(x, y, degree, product, same=False)
        blocked_xx = distances._kernel_sum(x, x, degree, product, same=True)
        assert blocked_xy == pytest.approx(whole_xy, rel=1e-12)
        assert blocked_xx == pytest.approx(whole_xx, rel=1e-12)
