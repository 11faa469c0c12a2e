"""The parametrization against the published sanity numbers (physics.md, section 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from caloforge.geometry import PRESETS, SamplingProperties
from caloforge.simulation import gflash

# Homogeneous tungsten: no sampling corrections (Fs -> infinity, e/mip = 1).
TUNGSTEN = SamplingProperties(
    Z=74,
    A=183.84,
    density=19.3,
    X0_cm=0.3504,
    Ec=7.97,
    RM_cm=0.933,
    Fs=math.inf,
    e_hat=1.0,
    f_mip=1.0,
    f_e=1.0,
)


@pytest.mark.parametrize(
    ("energy", "T", "alpha", "contained"),
    [
        (2, 4.67, 3.11, 0.997),
        (10, 6.28, 3.95, 0.994),
        (100, 8.58, 5.16, 0.982),
        (500, 10.19, 6.00, 0.965),
    ],
)
def test_mean_profile_matches_sanity_table(energy, T, alpha, contained):
    got_T, got_alpha = gflash.mean_profile(np.array([energy]), TUNGSTEN)
    assert got_T[0] == pytest.approx(T, abs=0.01)
    assert got_alpha[0] == pytest.approx(alpha, abs=0.01)
    assert gflash.gamma_cdf(np.array(22.6), got_T, got_alpha)[0] == pytest.approx(
        contained, abs=0.001
    )


def test_clic_thin_layer_profile_at_100_gev():
    T, alpha = gflash.mean_profile(np.array([100.0]), PRESETS["clic-25"].front)
    assert T[0] == pytest.approx(8.0, abs=0.1)
    assert alpha[0] == pytest.approx(4.84, abs=0.05)


def test_number_of_spots_at_100_gev():
    assert gflash.n_spots(np.array([100.0]), 0.15)[0] == pytest.approx(5.7e3, rel=0.02)


@pytest.mark.parametrize(
    ("tau", "Rc", "Rt", "p"),
    [(0.5, 0.084, 1.02, 0.94), (1.0, 0.128, 0.70, 0.86), (2.0, 0.216, 0.92, 0.47)],
)
def test_radial_parameters_match_sanity_numbers(tau, Rc, Rt, p):
    r = gflash.radial_parameters(np.array([100.0]), np.array([tau]), TUNGSTEN)
    assert r.Rc[0] == pytest.approx(Rc, abs=0.002)
    assert r.Rt[0] == pytest.approx(Rt, abs=0.01)
    assert r.p[0] == pytest.approx(p, abs=0.01)


def test_tungsten_containment_about_90_and_95_percent():
    one = gflash.mean_containment(100.0, TUNGSTEN, 1.0, 22.6)
    two = gflash.mean_containment(100.0, TUNGSTEN, 2.0, 22.6)
    assert one == pytest.approx(0.90, abs=0.02)
    assert two == pytest.approx(0.95, abs=0.02)


def test_sampled_radii_follow_the_profile():
    rng = np.random.default_rng(0)
    params = gflash.radial_parameters(np.full(200_000, 100.0), np.full(200_000, 1.0), TUNGSTEN)
    r = gflash.sample_radius(params, rng)
    for radius in (0.1, 0.5, 1.0, 2.0):
        expected = gflash.radial_containment(radius, params)[0]
        assert (r <= radius).mean() == pytest.approx(expected, abs=0.005)


def test_sampled_profiles_have_the_requested_log_normal():
    rng = np.random.default_rng(1)
    energy = np.full(100_000, 100.0)
    fluct = gflash.profile_fluctuation(energy, PRESETS["clic-25"].front)
    T, alpha = gflash.sample_profile(fluct, rng)
    ln_T, ln_a = np.log(T), np.log(alpha)
    assert ln_T.mean() == pytest.approx(fluct.mean_ln_T[0], abs=0.002)
    assert ln_T.std() == pytest.approx(fluct.sigma_ln_T[0], rel=0.02)
    assert ln_a.std() == pytest.approx(fluct.sigma_ln_alpha[0], rel=0.02)
    assert np.corrcoef(ln_T, ln_a)[0, 1] == pytest.approx(fluct.rho[0], abs=0.02)


def test_low_energy_is_clamped_not_broken():
    fluct = gflash.profile_fluctuation(np.array([0.1, 1.0]), PRESETS["clic-25"].front)
    T, alpha = gflash.sample_profile(fluct, np.random.default_rng(2))
    assert np.all(np.isfinite(T)) and np.all(T >= 1.0) and np.all(alpha >= 1.1)
    assert np.all(fluct.sigma_ln_T <= 0.5) and np.all(fluct.sigma_ln_alpha <= 0.5)


def test_profile_cdf_is_the_gamma_without_a_shape_and_keeps_its_maximum_with_one():
    t = np.linspace(0.0, 40.0, 4001)[None, :]
    T, alpha = np.array([[6.0], [9.0]]), np.array([[4.0], [6.5]])
    zeros = np.zeros((2, 1))
    gamma = gflash.gamma_cdf(t, T, alpha)
    plain = gflash.ProfileShape(origin=zeros, tail=zeros, stretch=1.3)
    np.testing.assert_array_equal(gflash.profile_cdf(t, T, alpha, plain), gamma)

    shifted = gflash.ProfileShape(origin=np.array([[1.5], [3.0]]), tail=zeros, stretch=1.0)
    cdf = gflash.profile_cdf(t, T, alpha, shifted)
    assert np.all(cdf[:, 0] == 0.0) and np.all(np.diff(cdf, axis=1) >= 0)
    assert np.all(cdf[:, -1] > 0.999)
    # The virtual origin puts energy into the first X0; the maximum stays at T.
    first = np.searchsorted(t[0], 1.0)
    assert np.all(cdf[:, first] > 5 * gamma[:, first])
    density = np.diff(cdf, axis=1)
    np.testing.assert_allclose(t[0, density.argmax(axis=1)], T[:, 0], atol=0.02)

    # A stretched fraction moves energy behind the maximum.
    stretched = gflash.ProfileShape(origin=zeros, tail=np.full((2, 1), 0.3), stretch=1.5)
    late = np.searchsorted(t[0], 2.0 * T[:, 0])
    beyond = 1.0 - gflash.profile_cdf(t, T, alpha, stretched)[[0, 1], late]
    assert np.all(beyond > 1.5 * (1.0 - gamma[[0, 1], late]))
