"""Metrics and the classifier test on cases with known answers (issue: physics validation):
a set against itself, identical distributions, known shifts and analytic distances."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import expit

from caloforge.validation.classifier import (
    calibrated_jsd,
    calibration,
    classifier_test,
    high_level_inputs,
    low_level_inputs,
    roc_auc,
)
from caloforge.validation.metrics import (
    binned,
    correlation_difference,
    fpd,
    frechet_distance,
    kpd,
    ks_test,
    mu90,
    mu90_sigma90,
    paired_projection_mse_floor,
    projection_mse,
    separation_power,
    sigma90_over_mu90,
    ssim,
    ssim_pairs,
    ssim_scan,
    wasserstein,
)


def gaussian(n: int, seed: int, mean: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sigma, n)


# --- one-dimensional metrics ------------------------------------------------------------------
def test_a_set_against_itself_is_at_zero_distance():
    x = gaussian(2000, 1)
    # The errors are bootstraps of two sets of 2000, not 0.
    assert separation_power(x, x)[0] == 0.0
    assert wasserstein(x, x)[0] == 0.0
    assert ks_test(x, x) == (0.0, 1.0)


def test_separation_power_of_disjoint_sets_is_one():
    value, _ = separation_power(gaussian(500, 1), gaussian(500, 2, mean=100.0))
    assert value == pytest.approx(1.0)


def test_separation_power_of_identical_gaussians_sits_at_its_statistical_floor():
    n, bins = 4000, 40
    value, error = separation_power(gaussian(n, 1), gaussian(n, 2), bins=bins)
    # About (B - 1)(1/n + 1/n)/4 for B populated bins; the tails leave some bins near empty.
    floor = (bins - 1) * (2.0 / n) / 4.0
    assert 0.3 * floor < value < 2.0 * floor  # seen: 0.0042 against a floor of 0.0049
    assert error > 0
    shifted, shifted_error = separation_power(gaussian(n, 1), gaussian(n, 2, mean=0.5), bins=bins)
    assert shifted > value + 5 * shifted_error  # seen: 0.062 +- 0.005


def test_separation_power_counts_values_beyond_given_edges_in_the_outer_bins():
    x = np.array([-5.0, 0.5, 0.5, 5.0])
    value, _ = separation_power(x, np.array([0.5, 0.5, 0.5, 0.5]), bins=np.array([0.0, 1.0]))
    assert value == 0.0  # one bin holds everything of both sets
    value, _ = separation_power(x, x + 10, bins=np.array([0.0, 1.0, 2.0]))
    assert value > 0.0


def test_wasserstein_of_a_shifted_copy_is_the_shift():
    x = gaussian(3000, 3)
    value, error = wasserstein(x, x + 0.3)
    assert value == pytest.approx(0.3, abs=1e-12)
    assert 0 < error < 0.05
    independent, independent_error = wasserstein(x, gaussian(3000, 4, mean=0.3))
    assert independent == pytest.approx(0.3, abs=4 * independent_error + 0.03)


def test_ks_detects_a_shift_and_not_a_fresh_sample():
    x = gaussian(2000, 5)
    statistic, p = ks_test(x, gaussian(2000, 6))
    assert p > 0.01 and statistic < 0.05
    statistic, p = ks_test(x, gaussian(2000, 6, mean=0.3))
    assert p < 1e-10 and statistic > 0.1


def test_mu90_follows_a_known_shift_and_the_truncated_gaussian_width():
    x = gaussian(20000, 7, mean=10.0, sigma=1.0)
    mu, mu_error = mu90(x)
    assert mu == pytest.approx(10.0, abs=4 * mu_error)
    shifted, _ = mu90(x + 0.5)
    assert shifted - mu == pytest.approx(0.5, abs=1e-9)
    # Central 90 % of a Gaussian: cut at +-1.645 sigma, standard deviation 0.7893 sigma.
    z = stats.norm.ppf(0.95)
    expected = math.sqrt(1 - 2 * z * stats.norm.pdf(z) / 0.9) / 10.0
    ratio, ratio_error = sigma90_over_mu90(x)
    assert ratio == pytest.approx(expected, abs=4 * ratio_error)
    assert ratio_error < 0.002
    # The shortest 90 % window of a symmetric distribution is the central one.
    assert mu90(x, interval="shortest")[0] == pytest.approx(10.0, abs=0.03)
    with pytest.raises(ValueError, match="unknown interval"):
        mu90(x, interval="widest")  # type: ignore[arg-type]


def straightforward_bootstrap(statistic, reference, generated, n_bootstrap, seed):
    """Resample both sets and recompute from scratch, with the metrics' draws."""
    rng = np.random.default_rng(seed)
    draws = [
        statistic(
            reference[rng.integers(0, len(reference), len(reference))],
            generated[rng.integers(0, len(generated), len(generated))],
        )
        for _ in range(n_bootstrap)
    ]
    return np.std(draws, axis=0, ddof=1)


def test_the_bootstraps_equal_resampling_and_recomputing_from_scratch():
    # The metrics resample bin indices, counts of sorted values or a sort order, kept once.
    r = np.round(gaussian(3000, 40), 2)  # ties, within and across the sets
    g = np.round(gaussian(2500, 41, mean=0.2, sigma=1.3), 2)
    edges = np.linspace(-2.0, 2.0, 21)  # values beyond them count in the outer bins

    def separation(a, b):
        ha = np.histogram(np.clip(a, edges[0], edges[-1]), bins=edges)[0] / len(a)
        hb = np.histogram(np.clip(b, edges[0], edges[-1]), bins=edges)[0] / len(b)
        keep = ha + hb > 0
        return 0.5 * ((ha - hb)[keep] ** 2 / (ha + hb)[keep]).sum()

    value, error = separation_power(r, g, bins=edges, seed=3, n_bootstrap=30)
    assert value == pytest.approx(separation(r, g), rel=1e-12)
    assert error == pytest.approx(straightforward_bootstrap(separation, r, g, 30, 3), rel=1e-12)

    value, error = wasserstein(r, g, seed=4, n_bootstrap=30)
    assert value == pytest.approx(stats.wasserstein_distance(r, g), rel=1e-12)
    expected = straightforward_bootstrap(stats.wasserstein_distance, r, g, 30, 4)
    assert error == pytest.approx(expected, rel=1e-9)

    for interval in ("central", "shortest"):
        (mu, mu_error), (res, res_error) = mu90_sigma90(r + 5, interval=interval, seed=5)
        assert (mu, mu_error) == mu90(r + 5, interval=interval, seed=5)
        assert (res, res_error) == sigma90_over_mu90(r + 5, interval=interval, seed=5)
        rng = np.random.default_rng(5)
        draws = []
        for _ in range(100):
            resample = (r + 5)[rng.integers(0, len(r), len(r))]
            draws.append(mu90(resample, interval=interval, n_bootstrap=2)[0])
        assert mu_error == pytest.approx(np.std(draws, ddof=1), rel=1e-9)


def test_metrics_refuse_nan_input():
    with pytest.raises(ValueError, match="NaN"):
        wasserstein(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


# --- feature sets -----------------------------------------------------------------------------
def correlated(n: int, rho: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, rho, 0.0], [rho, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return rng.multivariate_normal(np.zeros(3), cov, n)


def test_correlation_difference_finds_a_lost_correlation():
    ref = correlated(5000, 0.6, 1)
    diff, error = correlation_difference(ref, ref)
    assert np.all(diff == 0)
    diff, error = correlation_difference(ref, correlated(5000, 0.0, 2))
    assert diff.shape == error.shape == (3, 3)
    assert diff[0, 1] == pytest.approx(0.6, abs=4 * error[0, 1])
    assert abs(diff[0, 2]) < 4 * error[0, 2] + 0.01
    # A constant feature correlates 0 with the others instead of giving NaN.
    const = ref.copy()
    const[:, 2] = 1.0
    diff, _ = correlation_difference(const, const)
    assert np.isfinite(diff).all()


def test_frechet_distance_of_diagonal_gaussians_is_analytic():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([0.5, -1.0])
    var1, var2 = np.array([1.0, 4.0]), np.array([2.0, 0.5])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)
    assert frechet_distance(mu1, np.diag(var1), mu1, np.diag(var1)) == pytest.approx(0, abs=1e-12)


def multivariate(n: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [1.0, 2.0, 0.5, 1.0]
    x[:, 1] += 0.5 * x[:, 0]
    x[:, 0] += shift
    x[:, 3] *= scale
    return x


def test_fpd_of_two_samples_of_one_gaussian_is_consistent_with_zero():
    ref, gen = multivariate(10000, 1), multivariate(10000, 2)
    value, error = fpd(ref, gen, normalise=False)
    assert 0 < error < 0.005
    assert value <= 3 * error  # seen: 0.0008 +- 0.0012
    # The extrapolation removes the finite-size bias of the distance between the full sets
    # (0.0041 here).
    full = frechet_distance(ref.mean(0), np.cov(ref.T), gen.mean(0), np.cov(gen.T))
    assert value < full


def test_fpd_of_shifted_gaussians_is_the_analytic_frechet_distance():
    # Mean shift 0.3 in x0, width of x3 scaled by 1.5: FD = 0.09 + (1.5 - 1)^2 = 0.34.
    value, error = fpd(
        multivariate(10000, 3), multivariate(10000, 4, shift=0.3, scale=1.5), normalise=False
    )
    assert value == pytest.approx(0.34, abs=max(4 * error, 0.02))  # seen: 0.339 +- 0.015


def test_fpd_normalises_by_the_reference_maximum_and_checks_sizes():
    ref, gen = multivariate(3000, 5), multivariate(3000, 6, shift=0.3)
    # Scaling a feature in both sets changes nothing once normalised.
    scaled = np.array([1.0, 1e3, 1.0, 1e-3])
    assert fpd(ref * scaled, gen * scaled)[0] == pytest.approx(fpd(ref, gen)[0], rel=1e-6)
    with pytest.raises(ValueError, match="more showers"):
        fpd(ref[:8], gen[:8])


def test_kpd_is_zero_for_one_distribution_and_positive_for_a_shift():
    # Sets of 2000: batches of 1000 (half a set), each kernel matrix 1000 x 1000.
    ref = multivariate(2000, 7)
    value, error = kpd(ref, multivariate(2000, 8))
    assert abs(value) < 3 * error  # seen: -1.3e-4 +- 2.4e-4
    value, error = kpd(ref, multivariate(2000, 8, shift=0.5))
    assert value > 5 * error  # seen: 0.0228 +- 0.0023


def straightforward_fpd(r, g, *, min_samples, max_samples, n_points, n_batches, n_bootstrap):
    """`fpd` (normalise=False) with two-pass covariances (np.cov) and the same draws."""
    rng = np.random.default_rng(0)

    def distance(a, b):
        return frechet_distance(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))

    inv = np.linspace(1 / min_samples, 1 / max_samples, n_points)
    sizes = np.unique((1 / inv).astype(np.int64))
    values = []
    for n in sizes:
        draws = []
        for _ in range(n_batches):
            a = rng.choice(len(r), n, replace=False)
            b = rng.choice(len(g), n, replace=False)
            draws.append(distance(r[a], g[b]))
        values.append(np.mean(draws))
    design = np.stack([np.ones(len(sizes)), 1 / sizes], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.asarray(values), rcond=None)
    resid = values - design @ coef
    fit_error = np.sqrt(np.linalg.inv(design.T @ design)[0, 0] * resid @ resid / (len(sizes) - 2))
    spread = np.std(
        [
            distance(r[rng.integers(0, len(r), len(r))], g[rng.integers(0, len(g), len(g))])
            for _ in range(n_bootstrap)
        ],
        ddof=1,
    )
    return max(coef[0], 0.0), np.hypot(fit_error, spread)


@pytest.mark.parametrize("threadpoolctl", [True, False])
def test_fpd_and_kpd_equal_straightforward_computations(threadpoolctl, monkeypatch):
    # Far from the origin: covariances from Gram matrices must not lose it to cancellation.
    ref, gen = multivariate(4000, 30) + 50.0, multivariate(3000, 31, shift=0.3) + 50.0
    if not threadpoolctl:  # the products in torch instead of NumPy
        monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    settings = {"min_samples": 1000, "max_samples": 2500, "n_points": 4, "n_batches": 3}
    value, error = fpd(ref, gen, normalise=False, n_bootstrap=5, **settings)
    expected = straightforward_fpd(ref, gen, n_bootstrap=5, **settings)
    assert (value, error) == pytest.approx(expected, rel=1e-8)

    def mmd(x, y):
        kxx, kyy, kxy = ((a @ b.T / 4 + 1) ** 4 for a, b in ((x, x), (y, y), (x, y)))
        m, n = len(x), len(y)
        return (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean()
        )

    rng = np.random.default_rng(0)
    values = []
    for _ in range(10):  # fixed-size batches, without replacement within each
        a = rng.choice(len(ref), 300, replace=False)
        b = rng.choice(len(gen), 300, replace=False)
        values.append(mmd(ref[a], gen[b]))
    lo, hi = np.percentile(values, [16.0, 84.0])
    expected = (np.median(values), (hi - lo) / 2)
    assert kpd(ref, gen, batch_size=300, normalise=False) == pytest.approx(expected, rel=1e-9)


# --- images -----------------------------------------------------------------------------------
def test_ssim_of_a_set_with_itself_is_one_and_of_constants_is_analytic():
    rng = np.random.default_rng(9)
    images = rng.exponential(1e-3, (6, 12, 12, 10))
    assert ssim(images, images, data_range=1e-3) == pytest.approx((1.0, 0.0))
    a, b, L = 0.3, 0.7, 1.0
    c1 = (0.01 * L) ** 2
    values = ssim_pairs(np.full((2, 9, 9), a), np.full((2, 9, 9), b), data_range=L)
    assert values == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_ssim_falls_with_noise_and_window_fits_small_images():
    rng = np.random.default_rng(10)
    images = rng.random((4, 16, 16))
    noise = rng.normal(0, 1.0, images.shape)
    values = [ssim(images, images + s * noise, data_range=1.0)[0] for s in (0.03, 0.1, 0.3)]
    assert 1.0 > values[0] > values[1] > values[2]  # seen: 0.98, 0.85, 0.66
    tiny = rng.random((3, 4, 5, 3))  # a 7-cell window does not fit: shrunk to 3
    assert np.isfinite(ssim_pairs(tiny, tiny[::-1], data_range=1.0)).all()


def test_ssim_scan_shows_a_generator_without_diversity():
    rng = np.random.default_rng(11)
    reference = rng.exponential(1e-3, (40, 10, 10)) * (rng.random((40, 10, 10)) < 0.3)
    collapsed = np.repeat(reference[:1], 40, axis=0)  # one shower, generated 40 times
    scan = ssim_scan(reference, collapsed, data_ranges=[1e-4, 1e-2], n_pairs=20)
    assert scan.gen_gen == pytest.approx([1.0, 1.0])
    assert np.all(scan.ref_ref < 0.9)
    assert np.all(scan.ref_gen_error > 0)
    with pytest.raises(ValueError, match="pairs need"):
        ssim_scan(reference, collapsed, n_pairs=30)


def test_ssim_scan_equals_ssim_pairs_at_each_dynamic_range():
    # The scan computes the local means and variances once for all L.
    rng = np.random.default_rng(12)
    reference = rng.exponential(1e-3, (30, 9, 8, 7)) * (rng.random((30, 9, 8, 7)) < 0.3)
    generated = rng.exponential(2e-3, (30, 9, 8, 7)) * (rng.random((30, 9, 8, 7)) < 0.3)
    ranges = [1e-6, 1e-4, 1e-2]
    scan = ssim_scan(reference, generated, data_ranges=ranges, n_pairs=10, seed=4)
    pick = np.random.default_rng(4)
    ir, ig = pick.permutation(30)[:20], pick.permutation(30)[:20]
    pairs = {
        "ref_ref": (reference[ir[:10]], reference[ir[10:]]),
        "ref_gen": (reference[ir[:10]], generated[ig[:10]]),
        "gen_gen": (generated[ig[:10]], generated[ig[10:]]),
    }
    for key, (a, b) in pairs.items():
        values = np.array([ssim_pairs(a, b, data_range=L) for L in ranges])
        assert getattr(scan, key) == pytest.approx(values.mean(axis=1), rel=1e-12)
        expected_error = values.std(axis=1, ddof=1) / np.sqrt(10)
        assert getattr(scan, f"{key}_error") == pytest.approx(expected_error, rel=1e-9)


def test_projection_mse_is_zero_for_a_set_with_itself_and_analytic_for_a_scale():
    rng = np.random.default_rng(12)
    showers = rng.exponential(1.0, (50, 5, 6, 7))
    assert projection_mse(showers, showers)[0] == 0.0
    value, error = projection_mse(showers, 2.0 * showers)
    # Each averaged projection p against 2p: mean((p / max p)^2), averaged over the three.
    projections = [showers.mean(axis=0).sum(axis=a) for a in range(3)]
    expected = np.mean([np.mean((p / p.max()) ** 2) for p in projections])
    assert value == pytest.approx(expected)
    assert error > 0


def _paired_draws(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two shower sets of the same conditions, independent noise that scales each shower as a
    whole (all its cells move together) plus a little cell noise."""
    template = np.exp(-np.add.outer(np.add.outer(np.arange(6.0), np.arange(6.0)), np.arange(5.0)))
    energy = rng.uniform(1.0, 3.0, n)[:, None, None, None]

    def draw() -> np.ndarray:
        scale = rng.lognormal(0.0, 0.3, (n, 1, 1, 1))
        return energy * scale * template * rng.lognormal(0.0, 0.05, (n, 6, 6, 5))

    return draw(), draw()


def test_the_paired_projection_mse_floor_is_its_expected_value_and_steadier_than_one_draw():
    rng = np.random.default_rng(21)
    draws = [_paired_draws(rng, 200) for _ in range(300)]
    one = np.array([projection_mse(a, b, n_bootstrap=2)[0] for a, b in draws])
    floor = np.array([paired_projection_mse_floor(a, b) for a, b in draws])
    # unbiased: the floor's mean is the mean of the metric over draws (300 draws: the mean of a
    # chi-square-like variable of few degrees of freedom is known to ~8 %)
    assert floor.mean() == pytest.approx(one.mean(), rel=0.15)
    # steadier: one draw scatters like a chi-square of ~1 degree of freedom (coherent cells)
    # (coefficients of variation over the 300 draws: 1.4 against 0.13)
    assert one.std() / one.mean() > 1.0
    assert floor.std() / floor.mean() < one.std() / one.mean() / 5
    # it falls as 1 / n, and is zero for identical sets
    a, b = _paired_draws(rng, 800)
    assert paired_projection_mse_floor(a, b) == pytest.approx(floor.mean() / 4, rel=0.15)
    assert paired_projection_mse_floor(a, a) == 0.0
    with pytest.raises(ValueError, match="paired"):
        paired_projection_mse_floor(a, b[:-1])


# --- binned -----------------------------------------------------------------------------------
def test_binned_reports_thin_bins_instead_of_numbers():
    rng = np.random.default_rng(13)
    e_ref, e_gen = rng.uniform(0, 100, 2000), rng.uniform(0, 100, 1500)
    ref, gen = rng.normal(size=2000), rng.normal(size=1500) + (e_gen > 50)
    results = binned(wasserstein, ref, gen, e_ref, e_gen, [0, 50, 100, 200], min_showers=100)
    assert [r.ok for r in results] == [True, True, False]
    low, high, empty = results
    assert low.value < 0.2 < 0.8 < high.value
    assert low.value == wasserstein(ref[e_ref < 50], gen[e_gen < 50])[0]
    assert np.isnan(empty.value) and "too few showers: 0 reference and 0 generated" in empty.reason
    # Windows around chosen energies, as the 3DGAN's E_p +- 5 GeV.
    windows = binned(ks_test, ref, gen, e_ref, e_gen, [(20, 30), (70, 80)], min_showers=50)
    assert windows[0].ok and windows[0].error > 0.01  # p-value: same distribution
    assert windows[1].ok and windows[1].error < 1e-6
    with pytest.raises(ValueError, match="one condition per shower"):
        binned(wasserstein, ref, gen, np.zeros((2000, 2)), e_gen, [0, 1])


# --- classifier -------------------------------------------------------------------------------
def test_roc_auc_of_perfect_reversed_and_tied_scores():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(labels, np.zeros(4)) == 0.5


def test_classifier_cannot_tell_one_distribution_from_itself():
    result = classifier_test(
        multivariate(3000, 14), multivariate(3000, 15), epochs=10, split=(0.4, 0.1, 0.5)
    )
    assert result.n_test == 1500
    assert abs(result.auc - 0.5) < max(3 * result.auc_error, 0.03)  # seen: 0.493 +- 0.009
    assert abs(result.jsd) < 0.02


def test_classifier_reaches_the_optimal_auc_of_a_known_shift():
    # x0 has unit width: a mean shift of 1 gives the best possible AUC Phi(1 / sqrt 2) = 0.760.
    result = classifier_test(
        multivariate(3000, 16), multivariate(3000, 17, shift=1.0), epochs=20, seed=3
    )
    optimal = stats.norm.cdf(1 / math.sqrt(2))
    assert result.auc == pytest.approx(optimal, abs=max(3 * result.auc_error, 0.02))
    assert result.jsd > 0.1  # seen: 0.19, with an AUC of 0.780 +- 0.012
    again = classifier_test(
        multivariate(3000, 16), multivariate(3000, 17, shift=1.0), epochs=20, seed=3
    )
    assert again == result  # seeded end to end


def js_divergence_bits(p, q) -> float:
    """Jensen-Shannon divergence of two densities on the real line, in bits, by integration."""

    def integrand(x):
        px, qx = p(x), q(x)
        m = 0.5 * (px + qx)
        terms = [0.5 * f * math.log2(f / m) for f in (px, qx) if f > 0]
        return sum(terms)

    return integrate.quad(integrand, -30, 30, limit=400, points=[0.0])[0]


def labelled(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n showers of each class: x ~ N(0, 1) (label 0) and N(shift, 1) (label 1)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0.0, 1.0, n), rng.normal(shift, 1.0, n)])
    return x, np.repeat([0.0, 1.0], n)


@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_calibrated_jsd_of_the_optimal_classifier_is_the_divergence_in_bits(shift):
    # The optimal logit of N(shift, 1) against N(0, 1) is shift x - shift^2 / 2; an
    # overconfident network (logits x 10) ranks the showers the same way, and the calibration
    # (fitted on other showers) recovers the probabilities: both give the divergence.
    expected = js_divergence_bits(stats.norm(0, 1).pdf, stats.norm(shift, 1).pdf)
    x_val, y_val = labelled(40_000, shift, seed=1)
    x_test, y_test = labelled(40_000, shift, seed=2)
    for scale in (1.0, 10.0):

        def logit(x, scale=scale):
            return scale * (shift * x - shift**2 / 2)

        probabilities = calibration(y_val, logit(x_val))(logit(x_test))
        assert calibrated_jsd(y_test, probabilities) == pytest.approx(expected, abs=0.006)
    # Uncalibrated, the overconfident logits would give a BCE far above ln 2 - JSD.
    raw = expit(logit(x_test, scale=10.0))
    assert calibrated_jsd(y_test, np.clip(raw, 1e-12, 1 - 1e-12)) < expected - 0.5


def test_calibrated_jsd_is_0_for_a_blind_classifier_and_1_for_disjoint_sets():
    rng = np.random.default_rng(3)
    x_val, y_val = labelled(20_000, 0.0, seed=4)
    x_test, y_test = labelled(20_000, 0.0, seed=5)
    noise = calibration(y_val, rng.normal(size=len(x_val)))(rng.normal(size=len(x_test)))
    assert calibrated_jsd(y_test, noise) == pytest.approx(0.0, abs=0.005)
    x_val, y_val = labelled(2000, 20.0, seed=6)
    x_test, y_test = labelled(2000, 20.0, seed=7)
    perfect = calibration(y_val, 20.0 * x_val - 200.0)(20.0 * x_test - 200.0)
    assert perfect.min() == 1e-6 and perfect.max() == 1 - 1e-6  # the calibration's clip
    assert calibrated_jsd(y_test, perfect) == pytest.approx(1.0, abs=1e-5)


def test_classifier_jsd_of_perfectly_separable_sets_is_one():
    result = classifier_test(
        multivariate(2000, 18), multivariate(2000, 19, shift=30.0), epochs=5, seed=1
    )
    assert result.auc == 1.0
    assert result.jsd == pytest.approx(1.0, abs=0.01)


def test_classifier_inputs_carry_log_energy_and_scaled_cells():
    showers = np.ones((2, 3, 3, 2), dtype=np.float32)
    energy = np.array([10.0, 100.0])
    x = low_level_inputs(showers, energy)
    assert x.shape == (2, 19) and x[:, 0] == pytest.approx([1.0, 2.0])
    assert x[1, 1:] == pytest.approx(0.01)
    h = high_level_inputs(np.zeros((2, 4)), energy)
    assert h.shape == (2, 5) and h.dtype == np.float32
    with pytest.raises(ValueError, match="same d"):
        classifier_test(x, h)
