"""Metrics comparing a reference shower set (Monte Carlo) with a generated one.

A flat functional API: every two-set metric is `f(reference, generated, *, seed=0, ...)` and
returns `(value, error)`; each docstring cites where the metric comes from. Inputs are
per-shower features (n,) or (n, k), or images (n, ...) for the image metrics. Errors are
statistical: bootstraps over showers (seeded), or the spread over batches where the source
metric defines it so. One exception to the pair's meaning: `ks_test` returns
(statistic, p-value), as the Kolmogorov test of the 3DGAN validation is read.

`binned` evaluates any of them in bins of a condition (the 3DGAN and Conv2D papers' energy
and angle bins) and says which bins hold too few showers to mean anything.

NumPy and SciPy throughout. The linear algebra of FPD and KPD (hundreds of Gram matrices,
small eigendecompositions, kernel matrices) runs on a chosen number of threads: the products
in NumPy where threadpoolctl can cap its BLAS threads, else in torch; the eigendecompositions
in torch, imported only when those metrics are called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import ndimage, stats

if TYPE_CHECKING:
    import torch

# --- helpers ----------------------------------------------------------------------------------
N_BOOTSTRAP = 100


def _values(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has {int((~np.isfinite(a)).sum())} NaN or infinite value(s)")
    return a


def _rows(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{name} must be (n, k) features with n >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has {int((~np.isfinite(a)).sum())} NaN or infinite value(s)")
    return a


def _bootstrap(
    statistic: Callable[[np.ndarray, np.ndarray], Any],
    reference: np.ndarray,
    generated: np.ndarray,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Standard deviation of `statistic` over resamplings (with replacement) of both sets."""
    return _bootstrap_indices(
        lambda i, j: statistic(reference.take(i, axis=0), generated.take(j, axis=0)),
        len(reference),
        len(generated),
        n_bootstrap,
        rng,
    )


def _bootstrap_indices(
    statistic: Callable[[np.ndarray, np.ndarray], Any],
    n_reference: int,
    n_generated: int,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """`_bootstrap` for a statistic of the resampled indices (the same draws): a statistic
    that keeps what it can of the full sets (bin indices, a sort order) resamples those."""
    draws = [
        statistic(
            rng.integers(0, n_reference, n_reference), rng.integers(0, n_generated, n_generated)
        )
        for _ in range(n_bootstrap)
    ]
    return np.std(np.asarray(draws, dtype=np.float64), axis=0, ddof=1)


# --- one-dimensional distributions ------------------------------------------------------------
def histogram_edges(reference: np.ndarray, generated: np.ndarray, bins: int = 50) -> np.ndarray:
    """`bins` equal-width bins spanning both sets (a constant set gets a unit-wide bin)."""
    r, g = _values(reference, "reference"), _values(generated, "generated")
    low, high = min(r.min(), g.min()), max(r.max(), g.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The histogram bin of each value (np.histogram's: [e_i, e_i+1), the last bin closed);
    values outside the edges count in the outer bins: a shared binning must not hide them."""
    index = np.searchsorted(edges, np.clip(values, edges[0], edges[-1]), side="right") - 1
    return np.minimum(index, len(edges) - 2)


def _normalised_histogram(bin_index: np.ndarray, n_bins: int) -> np.ndarray:
    """The histogram of values given their `_bin_index`, normalised to unit sum."""
    return np.bincount(bin_index, minlength=n_bins) / len(bin_index)


def _separation(h1: np.ndarray, h2: np.ndarray) -> float:
    s = h1 + h2
    keep = s > 0
    return float(0.5 * ((h1[keep] - h2[keep]) ** 2 / s[keep]).sum())


def separation_power(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    bins: int | np.ndarray = 50,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> tuple[float, float]:
    """Histogram separation power 1/2 sum_i (h1_i - h2_i)^2 / (h1_i + h2_i) of the two
    normalised histograms (CaloChallenge, Krause et al. 2024; systems.md 6): 0 for identical
    histograms, 1 for disjoint ones.

    Binning: `bins` equal-width bins over the range of both sets, or the given edges (values
    beyond them count in the outer bins). Error: the bootstrap standard deviation.
    Two independent samples of one distribution are not at 0: the expected value is about
    (B - 1) (1/n_ref + 1/n_gen) / 4 for B populated bins (0.025 for 50 bins and 1000 + 1000
    showers), the floor against which a difference reads."""
    r, g = _values(reference, "reference"), _values(generated, "generated")
    if isinstance(bins, int | np.integer):
        edges = histogram_edges(r, g, int(bins))
    else:
        edges = np.asarray(bins, dtype=np.float64)

    # Each value's bin is found once; a resampled set's histogram counts its values' bins.
    n_bins = len(edges) - 1
    br, bg = _bin_index(r, edges), _bin_index(g, edges)

    def stat(a: np.ndarray, b: np.ndarray) -> float:
        return _separation(_normalised_histogram(a, n_bins), _normalised_histogram(b, n_bins))

    def resampled(i: np.ndarray, j: np.ndarray) -> float:
        return stat(br[i], bg[j])

    rng = np.random.default_rng(seed)
    error = _bootstrap_indices(resampled, len(r), len(g), n_bootstrap, rng)
    return stat(br, bg), float(error)


def wasserstein(
    reference: np.ndarray, generated: np.ndarray, *, seed: int = 0, n_bootstrap: int = N_BOOTSTRAP
) -> tuple[float, float]:
    """Wasserstein-1 (earth mover's) distance between the two 1D distributions, in the
    values' unit (scipy.stats.wasserstein_distance), as jetnet's W1 metrics (Kansal et al.
    2021, 2023). Error: the bootstrap standard deviation."""
    r, g = _values(reference, "reference"), _values(generated, "generated")
    w1 = _wasserstein_of_counts(r, g)
    rng = np.random.default_rng(seed)

    def resampled(i: np.ndarray, j: np.ndarray) -> float:
        return w1(np.bincount(i, minlength=len(r)), np.bincount(j, minlength=len(g)))

    error = _bootstrap_indices(resampled, len(r), len(g), n_bootstrap, rng)
    return w1(np.ones(len(r)), np.ones(len(g))), float(error)


def _wasserstein_of_counts(
    reference: np.ndarray, generated: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], float]:
    """W1 between the two sets with each value taken `counts` times (a bootstrap resample),
    as a function of the counts: the sets are sorted together once, so that each resample
    costs two cumulative sums instead of three sorts. The formula is that of
    scipy.stats.wasserstein_distance: the integral of |CDF_r - CDF_g| over the merged values."""
    merged = np.concatenate([reference, generated])
    order = np.argsort(merged, kind="stable")
    deltas = np.diff(merged[order])
    from_reference = order < len(reference)
    parts = (
        (order[from_reference], from_reference),
        (order[~from_reference] - len(reference), ~from_reference),
    )

    def w1(reference_counts: np.ndarray, generated_counts: np.ndarray) -> float:
        cdfs = []
        for counts, (index, where) in zip((reference_counts, generated_counts), parts, strict=True):
            weights = np.zeros(len(merged))
            weights[where] = counts[index]
            cdfs.append(np.cumsum(weights)[:-1] / weights.sum())
        return float(np.sum(np.abs(cdfs[0] - cdfs[1]) * deltas))

    return w1


def ks_test(reference: np.ndarray, generated: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its p-value (scipy.stats.ks_2samp), the
    Kolmogorov tests of the 3DGAN validation (Khattak et al.; systems.md 2). Returns
    (statistic, p-value): the second value is a p-value, not an error. `seed` is unused
    (the test is exact) and kept for the common signature."""
    del seed
    r, g = _values(reference, "reference"), _values(generated, "generated")
    result = stats.ks_2samp(r, g)
    return float(result.statistic), float(result.pvalue)


def _central(sorted_values: np.ndarray, fraction: float, interval: str) -> np.ndarray:
    """The values (sorted) of the central or shortest interval holding `fraction` of them."""
    v = sorted_values
    if interval == "central":
        lo, hi = np.quantile(v, [(1 - fraction) / 2, (1 + fraction) / 2])
        return v[(v >= lo) & (v <= hi)]
    if interval == "shortest":
        k = max(1, int(np.ceil(fraction * len(v))))
        start = int(np.argmin(v[k - 1 :] - v[: len(v) - k + 1]))
        return v[start : start + k]
    raise ValueError(f"unknown interval '{interval}'; choose 'central' or 'shortest'")


def _mu_sigma90(sorted_values: np.ndarray, fraction: float, interval: str) -> np.ndarray:
    core = _central(sorted_values, fraction, interval)
    mu = core.mean()
    sigma = core.std(ddof=1) if len(core) > 1 else 0.0
    return np.array([mu, sigma / mu if mu != 0 else np.nan])


def _mu_sigma90_with_errors(
    values: np.ndarray, fraction: float, interval: str, seed: int, n_bootstrap: int
) -> tuple[np.ndarray, np.ndarray]:
    v = _values(values, "values")
    order = np.argsort(v, kind="stable")
    ordered = v[order]
    value = _mu_sigma90(ordered, fraction, interval)
    rng = np.random.default_rng(seed)
    # A resample, sorted, is each sorted value repeated as often as it was drawn: no sort.
    draws = []
    for _ in range(n_bootstrap):
        counts = np.bincount(rng.integers(0, len(v), len(v)), minlength=len(v))
        draws.append(_mu_sigma90(np.repeat(ordered, counts[order]), fraction, interval))
    return value, np.asarray(draws).std(axis=0, ddof=1)


def mu90_sigma90(
    values: np.ndarray,
    *,
    fraction: float = 0.9,
    interval: Literal["central", "shortest"] = "central",
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """`mu90` and `sigma90_over_mu90` of one set from one bootstrap (the same numbers as the
    two calls, at half the cost): ((mu90, error), (sigma90 / mu90, error))."""
    value, error = _mu_sigma90_with_errors(values, fraction, interval, seed, n_bootstrap)
    return (float(value[0]), float(error[0])), (float(value[1]), float(error[1]))


def mu90(
    values: np.ndarray,
    *,
    fraction: float = 0.9,
    interval: Literal["central", "shortest"] = "central",
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> tuple[float, float]:
    """mu90: the mean of the central 90 % of a distribution (Rehm et al., Conv2D GAN, for the
    energy response vs E_p; systems.md 3), with its bootstrap error. One set, not two.

    interval "central" keeps the values between the 5 % and 95 % quantiles; "shortest" the
    smallest window holding 90 % of the values (the CALICE/ILD convention)."""
    value, error = _mu_sigma90_with_errors(values, fraction, interval, seed, n_bootstrap)
    return float(value[0]), float(error[0])


def sigma90_over_mu90(
    values: np.ndarray,
    *,
    fraction: float = 0.9,
    interval: Literal["central", "shortest"] = "central",
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> tuple[float, float]:
    """sigma90 / mu90: the relative width (standard deviation over mean) of the central 90 % of
    a distribution, the resolution measure of the Conv2D GAN paper (systems.md 3), with its
    bootstrap error. One set, not two; `interval` as in `mu90`."""
    value, error = _mu_sigma90_with_errors(values, fraction, interval, seed, n_bootstrap)
    return float(value[1]), float(error[1])


# --- many features at once --------------------------------------------------------------------
def _correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns; a constant column correlates 0 with the others."""
    centred = x - x.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    ok = norm > 0
    c = centred / np.where(ok, norm, 1.0)
    corr = c.T @ c
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def correlation_difference(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
) -> tuple[np.ndarray, np.ndarray]:
    """Correlation matrix of the features of the reference minus that of the generated set,
    (k, k), and its element-wise bootstrap error: the "correlation matrix of shower features
    (Geant4 minus GAN)" of the 3DGAN validation (systems.md 2). Inputs (n, k)."""
    r, g = _rows(reference, "reference"), _rows(generated, "generated")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"reference has {r.shape[1]} features, generated {g.shape[1]}")

    def stat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _correlation(a) - _correlation(b)

    rng = np.random.default_rng(seed)
    return stat(r, g), _bootstrap(stat, r, g, n_bootstrap, rng)


def _sample_sizes(low: int, high: int, n_points: int) -> np.ndarray:
    """Sample sizes evenly spaced in 1/N between low and high (Kansal et al. 2023)."""
    inv = np.linspace(1.0 / low, 1.0 / high, n_points)
    return np.unique((1.0 / inv).astype(np.int64))


def _normalise_pair(
    reference: np.ndarray, generated: np.ndarray, normalise: bool
) -> tuple[np.ndarray, np.ndarray]:
    if not normalise:
        return reference, generated
    # As jetnet: each feature divided by its largest magnitude in the reference.
    scale = np.abs(reference).max(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return reference / scale, generated / scale


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet distance between Gaussians: |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)).

    tr (C1 C2)^(1/2) is the sum of the square roots of the eigenvalues of the symmetric
    C1^(1/2) C2 C1^(1/2), which is stable where a general matrix square root is not."""
    import torch

    t = [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (mu1, cov1, mu2, cov2)]
    return _frechet(*t)


def _frechet(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """`frechet_distance` on float64 torch tensors."""
    import torch

    w, v = torch.linalg.eigh(cov1)
    root1 = (v * w.clamp(min=0.0).sqrt()) @ v.T
    inner = torch.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_root = inner.clamp(min=0.0).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + cov1.trace() + cov2.trace() - 2.0 * trace_root)


def _moments(
    x: np.ndarray, product: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance ((n - 1) normalisation) of the rows of x, from the Gram matrix
    `product(x, x)` = x.T @ x: the rows must be centred about roughly 0 (the caller shifts
    them), so that subtracting n mean mean^T loses no precision to cancellation."""
    n = len(x)
    mean = x.mean(axis=0)
    cov = (product(x, x) - n * np.outer(mean, mean)) / (n - 1)
    return mean, cov


@contextmanager
def _matrix_products(
    threads: int | None,
) -> Iterator[Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Run a block on `threads` CPU threads (None: unchanged) and yield `product(a, b)`,
    a.T @ b of float64 (n, k) arrays.

    NumPy computes a.T @ a as a symmetric rank-k update, half the multiply-adds of torch's
    general product: a 35000 x 151 Gram matrix took 30 ms on one core of this project's CPU,
    80 ms in torch. NumPy's BLAS threads can only be capped through threadpoolctl (installed
    with scikit-learn), and uncapped they made these products 10-30 times slower on two
    shared cores; without threadpoolctl the products run in torch."""
    from caloforge.validation.classifier import torch_threads

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        with torch_threads(threads):
            yield _torch_product
        return
    with torch_threads(threads), threadpool_limits(limits=threads, user_api="blas"):
        yield _numpy_product


def _numpy_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a.T @ b


def _torch_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torch

    return (torch.from_numpy(a).T @ torch.from_numpy(b)).numpy()


def fpd(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    min_samples: int = 20_000,
    max_samples: int = 50_000,
    n_points: int = 10,
    n_batches: int = 20,
    n_bootstrap: int = 20,
    normalise: bool = True,
    seed: int = 0,
    threads: int | None = 1,
) -> tuple[float, float]:
    """Frechet physics distance (Kansal et al. 2023, "Evaluating generative models in high
    energy physics"; the CaloChallenge's FPD, systems.md 6) between feature vectors (n, k).

    The Frechet distance of Gaussians fitted to N showers of each set has a bias of order
    1/N; it is computed at `n_points` sizes N evenly spaced in 1/N from `min_samples` to
    `max_samples` (capped at the smaller set; the smallest at a fifth of the largest when
    the sets are smaller than `min_samples`), averaged over `n_batches` draws each, and a
    straight line in 1/N is extrapolated to N -> infinity. The intercept, kept >= 0 as in the
    paper (a negative intercept is reported as 0), is the value.

    Decisions. Draws are subsets without replacement, so each is an independent sample of
    the distribution and 1/N is the whole finite-size bias: the unclipped intercept is then
    unbiased (on Gaussian tests, 4 and 40 features, 5000 showers a set, its mean over 40
    repetitions was 0 within its error, against a bias of the full sets' distance of 0.006
    and 0.27), where resampling with replacement (as jetnet) extrapolates to the distance
    between the two finite sets and keeps that bias. The points at different N share the two
    sets, so the fit's scatter misses most of the intercept's uncertainty (2x too small on
    those tests); the error is the bootstrap standard deviation of the full sets' distance
    (`n_bootstrap` resamplings) combined in quadrature with the fit's standard error:
    conservative, 1.1x (4 features) to 1.7x (40 features) the spread seen over repetitions.
    With `normalise` each feature is divided by its largest magnitude in the reference
    (as jetnet). The CaloChallenge prints FPD x 1e3.

    The hundreds of covariances (from Gram matrices of the centred sets) and small
    eigendecompositions run in float64 on `threads` CPU threads (None: unchanged; see
    `_matrix_products`): on two shared cores, multithreaded BLAS made each 10-40 times slower
    than one thread.
    """
    r, g = _rows(reference, "reference"), _rows(generated, "generated")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"reference has {r.shape[1]} features, generated {g.shape[1]}")
    r, g = _normalise_pair(r, g, normalise)
    high = min(max_samples, len(r), len(g))
    low = min(min_samples, high)
    if low == high:
        low = max(2 * r.shape[1] + 2, high // 5)
    if low >= high:
        raise ValueError(
            f"FPD needs more showers than {high} for {r.shape[1]} features "
            f"(at least {5 * (2 * r.shape[1] + 2)} per set)"
        )
    sizes = _sample_sizes(low, high, n_points)
    # A shift common to both sets leaves the distance unchanged and centres them (`_moments`).
    shift = r.mean(axis=0)
    r, g = r - shift, g - shift
    rng = np.random.default_rng(seed)
    with _matrix_products(threads) as product:

        def distance(a: np.ndarray, b: np.ndarray) -> float:
            return frechet_distance(*_moments(a, product), *_moments(b, product))

        values = []
        for n in sizes:
            draws = []
            for _ in range(n_batches if n < min(len(r), len(g)) else 1):
                a = rng.choice(len(r), n, replace=False)
                b = rng.choice(len(g), n, replace=False)
                draws.append(distance(np.take(r, a, axis=0), np.take(g, b, axis=0)))
            values.append(np.mean(draws))
        value, fit_error = _extrapolate(1.0 / sizes, np.asarray(values))
        spread = float(_bootstrap(distance, r, g, n_bootstrap, rng)) if n_bootstrap > 1 else 0.0
    return value, float(np.hypot(fit_error, spread))


def _extrapolate(inv_n: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Intercept (>= 0) and its standard error of a straight line through (1/N, value)."""
    design = np.stack([np.ones_like(inv_n), inv_n], axis=1)
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    dof = max(len(values) - 2, 1)
    resid = values - design @ coef
    cov = np.linalg.inv(design.T @ design) * (resid @ resid) / dof
    return max(float(coef[0]), 0.0), float(np.sqrt(max(cov[0, 0], 0.0)))


def _mmd_poly_unbiased(
    x: np.ndarray,
    y: np.ndarray,
    degree: int,
    product: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(a, b) = (a.b / d + 1)^degree (float64
    (n, d) arrays); `product` as `_matrix_products`'s."""
    d = x.shape[1]

    def kernel_sum(a: np.ndarray, b: np.ndarray, *, off_diagonal: bool) -> float:
        # One kernel matrix (n x n) at a time, reduced at once: 200 MB each for n = 5000.
        k = product(a.T, b.T)  # a @ b.T
        k /= d
        k += 1.0
        power = k.copy()
        for _ in range(degree - 1):
            power *= k
        return float(power.sum() - (np.trace(power) if off_diagonal else 0.0))

    m, n = len(x), len(y)
    sxx = kernel_sum(x, x, off_diagonal=True) / (m * (m - 1))
    syy = kernel_sum(y, y, off_diagonal=True) / (n * (n - 1))
    sxy = kernel_sum(x, y, off_diagonal=False) / (m * n)
    return float(sxx + syy - 2.0 * sxy)


def kpd(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    batch_size: int = 5_000,
    n_batches: int = 10,
    degree: int = 3,
    normalise: bool = True,
    seed: int = 0,
    threads: int | None = 1,
) -> tuple[float, float]:
    """Kernel physics distance (Kansal et al. 2023; systems.md 6): the unbiased squared
    maximum mean discrepancy between feature vectors (n, k) with the cubic polynomial kernel
    k(a, b) = (a.b / k + 1)^3, computed on `n_batches` batches of each set; the value is the
    median over batches and the error half the 16-84 % spread of the batches' values, as in
    the paper. Two samples of one distribution give values scattered around 0 (the estimator
    is unbiased, so negative values occur). `normalise` as in `fpd`.

    Decision: the batches are disjoint subsets of `batch_size` showers, or of n / n_batches
    when the smaller set holds fewer than n_batches x batch_size (the paper resamples with
    replacement from sets of 10^5 showers): disjoint batches are independent, so their spread
    is a true error, and no shower meets itself in the unbiased estimator. The kernel
    matrices are computed in float64 on `threads` CPU threads, as in `fpd`."""
    r, g = _rows(reference, "reference"), _rows(generated, "generated")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"reference has {r.shape[1]} features, generated {g.shape[1]}")
    r, g = _normalise_pair(r, g, normalise)
    n = min(batch_size, len(r) // n_batches, len(g) // n_batches)
    if n < 2:
        raise ValueError(
            f"KPD with {n_batches} batches needs at least {2 * n_batches} showers per set, "
            f"got {len(r)} and {len(g)}"
        )
    rng = np.random.default_rng(seed)
    ir, ig = rng.permutation(len(r)), rng.permutation(len(g))
    with _matrix_products(threads) as product:
        values = np.array(
            [
                _mmd_poly_unbiased(
                    np.take(r, ir[i * n : (i + 1) * n], axis=0),
                    np.take(g, ig[i * n : (i + 1) * n], axis=0),
                    degree,
                    product,
                )
                for i in range(n_batches)
            ]
        )
    lo, hi = np.percentile(values, [16.0, 84.0])
    return float(np.median(values)), float((hi - lo) / 2.0)


# --- images -----------------------------------------------------------------------------------
def _projections(images: np.ndarray) -> list[np.ndarray]:
    """Mean 2D projections of a set of showers: (x, y, z) images give the three sums along
    each axis; (x, y) images are their own projection."""
    mean = np.asarray(images, dtype=np.float64).mean(axis=0)
    if mean.ndim not in (2, 3):
        raise ValueError(f"projections need (n, x, y[, z]) showers, got shape {images.shape}")
    return _project(mean, mean.ndim)


def _project(images: np.ndarray, dims: int) -> list[np.ndarray]:
    """The 2D projections of images whose last `dims` axes (2 or 3) are the image: the sums
    along each axis of a 3D image; a 2D image is its own projection."""
    return [images] if dims == 2 else [images.sum(axis=a) for a in (-3, -2, -1)]


def _projection_mse(reference: np.ndarray, generated: np.ndarray) -> float:
    total = 0.0
    ref, gen = _projections(reference), _projections(generated)
    for p, q in zip(ref, gen, strict=True):
        scale = p.max() if p.max() > 0 else 1.0
        total += float(np.mean(((p - q) / scale) ** 2))
    return total / len(ref)


def projection_mse(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    seed: int = 0,
    n_bootstrap: int = 20,
) -> tuple[float, float]:
    """The Conv2D GAN paper's accuracy metric (Rehm et al.; systems.md 3): the mean squared
    error between the averaged 2D projections of two shower sets along x, y and z, averaged
    over the three projections (for depth-summed (x, y) images, the averaged image itself).

    Normalisation (ours, the paper does not state one): each pair of averaged projections is
    divided by the maximum of the reference's, so the value is free of the energy unit and
    reads as a squared fraction of the reference's peak. Error: bootstrap over showers."""
    r = np.asarray(reference)
    g = np.asarray(generated)
    if r.shape[1:] != g.shape[1:]:
        raise ValueError(f"image shapes differ: reference {r.shape[1:]}, generated {g.shape[1:]}")
    rng = np.random.default_rng(seed)
    return _projection_mse(r, g), float(_bootstrap(_projection_mse, r, g, n_bootstrap, rng))


def projection_mse_floor(a: np.ndarray, b: np.ndarray, *, chunk: int = 256) -> float:
    """What `projection_mse(a, b)` is expected to be when a and b differ only by chance: a[i]
    and b[i] drawn under the same conditions (one generator, independent noise), paired.

    Each averaged projection's difference is the mean of the n paired differences d_i, which
    average to zero, so cell by cell E[(mean d)^2] = sum_i d_i^2 / n^2 in expectation; scaled by
    the maximum of a's averaged projection, as `projection_mse` scales by its reference. One
    draw of `projection_mse(a, b)` is a noisy estimate of this where the noise moves a
    shower's cells together (its energy as a whole): the squared mean difference then swings
    like a chi-square of few degrees of freedom (6x between two draws of 1 024 showers of a
    conv2d-g1 generator), while this sum of n squares is steady."""
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(f"need two paired (n, x, y[, z]) shower sets, got {a.shape}, {b.shape}")
    n = len(a)
    references = _projections(a)
    scales = [p.max() if p.max() > 0 else 1.0 for p in references]
    squares = [np.zeros_like(p) for p in references]
    for lo in range(0, n, chunk):
        d = np.asarray(a[lo : lo + chunk], np.float64) - np.asarray(b[lo : lo + chunk], np.float64)
        for square, part in zip(squares, _project(d, a.ndim - 1), strict=True):
            square += (part**2).sum(axis=0)
    terms = [float(np.mean(q / n**2)) / s**2 for q, s in zip(squares, scales, strict=True)]
    return sum(terms) / len(terms)


SSIM_K1, SSIM_K2 = 0.01, 0.03
# Dynamic ranges L (GeV) of the SSIM scan: one per decade from 1e-7 to 1 GeV.
SSIM_DATA_RANGES = tuple(float(x) for x in np.logspace(-7.0, 0.0, 8))


def ssim_pairs(a: np.ndarray, b: np.ndarray, *, data_range: float, win_size: int = 7) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of image a[i] with image b[i], shape (n,).

    Images of any dimension (a 3D shower is one 3D image): local means, variances and
    covariance over a uniform window of `win_size` cells per axis (shrunk to fit, odd), with
    the sample (n - 1) normalisation, C1 = (0.01 L)^2, C2 = (0.03 L)^2 for the dynamic range
    L = `data_range`, averaged over the positions where the window fits (as scikit-image's
    structural_similarity with its defaults)."""
    return _ssim_of_terms(_ssim_terms(a, b, win_size), data_range)


def _ssim_terms(a: np.ndarray, b: np.ndarray, win_size: int) -> tuple[np.ndarray, ...]:
    """The parts of `ssim_pairs` that do not depend on L, over the positions where the window
    fits: 2 ux uy, ux^2 + uy^2, 2 vxy and vx + vy, each (n, positions)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"need two (n, ...) image sets of one shape, got {x.shape}, {y.shape}")
    win = min(win_size, *x.shape[1:])
    win -= 1 - win % 2
    size = (1, *([win] * (x.ndim - 1)))
    n_win = win ** (x.ndim - 1)
    cov_norm = n_win / (n_win - 1) if n_win > 1 else 1.0
    pad = (win - 1) // 2
    inner = (slice(None), *([slice(pad, -pad if pad else None)] * (x.ndim - 1)))

    def mean(z: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(z, size=size, mode="reflect")

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    terms = (2 * ux * uy, ux**2 + uy**2, 2 * vxy, vx + vy)
    return tuple(t[inner].reshape(len(x), -1) for t in terms)


def _ssim_of_terms(terms: tuple[np.ndarray, ...], data_range: float) -> np.ndarray:
    """`ssim_pairs` for the dynamic range L = `data_range` from its `_ssim_terms`."""
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    means_product, means_squared, covariance, variances = terms
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((means_product + c1) * (covariance + c2)) / ((means_squared + c1) * (variances + c2))
    return s.mean(axis=1)


def ssim(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    data_range: float = 1e-4,
    win_size: int = 7,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean SSIM between reference[i] and generated[i] (paired by index: a generated shower
    made from the reference's conditions is compared with its own reference), with the
    standard error of the mean over pairs. The SSIM of the Conv2D GAN paper (Rehm et al.;
    systems.md 3), which found the comparison stable for L <= 1e-4 GeV. A set with itself
    gives 1. `seed` is unused (no randomness) and kept for the common signature."""
    del seed
    n = min(len(reference), len(generated))
    values = ssim_pairs(
        np.asarray(reference[:n]),
        np.asarray(generated[:n]),
        data_range=data_range,
        win_size=win_size,
    )
    error = values.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    return float(values.mean()), float(error)


@dataclass(frozen=True)
class SSIMScan:
    """SSIM vs the dynamic range L for MC vs MC, MC vs generated and generated vs generated;
    each array (len(data_ranges),). A generated set much more self-similar than the
    reference (gen_gen above ref_ref) lacks diversity."""

    data_ranges: np.ndarray
    ref_ref: np.ndarray
    ref_ref_error: np.ndarray
    ref_gen: np.ndarray
    ref_gen_error: np.ndarray
    gen_gen: np.ndarray
    gen_gen_error: np.ndarray


def ssim_scan(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    data_ranges: Sequence[float] = SSIM_DATA_RANGES,
    n_pairs: int = 200,
    win_size: int = 7,
    seed: int = 0,
) -> SSIMScan:
    """The Conv2D paper's SSIM study (systems.md 3): mean SSIM (and its standard error) of
    random pairs of distinct showers within the reference, between the sets, and within the
    generated set, for each dynamic-range constant L (GeV) in `data_ranges`.

    All three use `n_pairs` pairs of different showers drawn at random (seeded), so they are
    comparable with one another (a set paired with itself would give 1)."""
    rng = np.random.default_rng(seed)
    r, g = np.asarray(reference), np.asarray(generated)
    for name, s in (("reference", r), ("generated", g)):
        if len(s) < 2 * n_pairs:
            raise ValueError(f"{name} has {len(s)} showers; {n_pairs} pairs need {2 * n_pairs}")
    ir = rng.permutation(len(r))[: 2 * n_pairs]
    ig = rng.permutation(len(g))[: 2 * n_pairs]
    pairs = {
        "ref_ref": (r[ir[:n_pairs]], r[ir[n_pairs:]]),
        "ref_gen": (r[ir[:n_pairs]], g[ig[:n_pairs]]),
        "gen_gen": (g[ig[:n_pairs]], g[ig[n_pairs:]]),
    }
    ranges = np.asarray(data_ranges, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for key, (a, b) in pairs.items():
        # The local means and variances are the same for every L: computed once per pairing.
        terms = _ssim_terms(a, b, win_size)
        values = np.array([_ssim_of_terms(terms, L) for L in ranges])
        out[key] = values.mean(axis=1)
        out[f"{key}_error"] = values.std(axis=1, ddof=1) / np.sqrt(n_pairs)
    return SSIMScan(data_ranges=ranges, **out)


# --- in bins of a condition -------------------------------------------------------------------
MIN_SHOWERS_PER_BIN = 50


@dataclass(frozen=True)
class BinnedValue:
    """A metric in one bin of a condition [low, high). `ok` is False when the bin holds too
    few showers to mean anything: then value and error are NaN and `reason` says why."""

    low: float
    high: float
    n_reference: int
    n_generated: int
    value: Any
    error: Any
    ok: bool
    reason: str = ""


def binned(
    metric: Callable[..., tuple[Any, Any]],
    reference: np.ndarray,
    generated: np.ndarray,
    reference_conditions: np.ndarray,
    generated_conditions: np.ndarray,
    bins: Sequence[float] | Sequence[tuple[float, float]] | np.ndarray,
    *,
    min_showers: int = MIN_SHOWERS_PER_BIN,
    **kwargs: Any,
) -> list[BinnedValue]:
    """Evaluate `metric(reference_bin, generated_bin, **kwargs)` in bins of one condition.

    `bins` are edges (increasing values: contiguous bins [e_i, e_i+1)) or explicit (low, high)
    windows, such as the 3DGAN's E_p +- 5 GeV or the Conv2D paper's E_p +- 2 GeV. The
    conditions are (n,) arrays aligned with the showers or features. A bin with fewer than
    `min_showers` showers in either set is reported with ok=False and the counts, not with a
    number."""
    rc = np.asarray(reference_conditions, dtype=np.float64)
    gc = np.asarray(generated_conditions, dtype=np.float64)
    if rc.ndim != 1 or gc.ndim != 1:
        raise ValueError(
            f"binned needs one condition per shower, (n,) arrays; got {rc.shape} and {gc.shape}"
        )
    if len(rc) != len(reference) or len(gc) != len(generated):
        raise ValueError(
            f"conditions ({len(rc)}, {len(gc)}) do not match the showers "
            f"({len(reference)}, {len(generated)})"
        )
    b = np.asarray(bins, dtype=np.float64)
    if b.ndim == 1:
        if len(b) < 2 or np.any(np.diff(b) <= 0):
            raise ValueError(f"bin edges must be at least two increasing values, got {b}")
        windows = np.stack([b[:-1], b[1:]], axis=1)
    elif b.ndim == 2 and b.shape[1] == 2:
        windows = b
    else:
        raise ValueError(f"bins must be edges or (low, high) pairs, got shape {b.shape}")
    out = []
    for low, high in windows:
        in_r = (rc >= low) & (rc < high)
        in_g = (gc >= low) & (gc < high)
        nr, ng = int(in_r.sum()), int(in_g.sum())
        if min(nr, ng) < min_showers:
            reason = (
                f"too few showers: {nr} reference and {ng} generated in [{low:g}, {high:g}), "
                f"need at least {min_showers} of each"
            )
            out.append(BinnedValue(low, high, nr, ng, np.nan, np.nan, False, reason))
            continue
        value, error = metric(reference[in_r], generated[in_g], **kwargs)
        out.append(BinnedValue(low, high, nr, ng, value, error, True))
    return out
