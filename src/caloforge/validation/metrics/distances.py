"""Distances between sets of feature vectors (n, k): the Frechet and kernel physics distances
(FPD, KPD) of Kansal et al. 2023 (caloforge's own estimators; `validation.challenge.distances`
has jetnet's, as the CaloChallenge runs them). `DEFINITIONS` says what each computes.

The linear algebra (hundreds of Gram matrices, small eigendecompositions, kernel matrices)
runs on a chosen number of CPU threads: the products in NumPy where threadpoolctl can cap its
BLAS threads, else in torch; the eigendecompositions in torch, imported only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from caloforge.validation.metrics.distributions import _bootstrap, _rows

if TYPE_CHECKING:
    import torch


DEFINITIONS = {
    "fpd": {
        "features": "each divided by its largest magnitude in the reference",
        "sizes": "10 sizes N evenly spaced in 1/N from min(20 000, sets) to min(50 000, sets), "
        "20 subsets each drawn without replacement",
        "extrapolation": "straight line in 1/N to N -> infinity; value: intercept (>= 0)",
        "error": "bootstrap spread of the full sets' distance (20 resamplings) and the fit's "
        "standard error, in quadrature",
    },
    "kpd": {
        "kernel": "polynomial (x.y / d + 1)^4 (degree 4, gamma 1/d, coef0 1)",
        "estimator": "unbiased squared MMD",
        "batches": "10 batches of min(5 000, half the smaller set) per set, without replacement "
        "within a batch, independent batches",
        "value": "median over batches",
        "error": "half the 16-84 % spread of the batches",
    },
}


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
    general product. NumPy's BLAS threads can only be capped through threadpoolctl, and
    uncapped they made these products many times slower on a few shared cores
    (benchmarks/validation.md); without threadpoolctl the products run in torch."""
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
    unbiased, where resampling with replacement (as jetnet) extrapolates to the distance
    between the two finite sets and keeps that bias. The points at different N share the two
    sets, so the fit's scatter misses most of the intercept's uncertainty; the error is the
    bootstrap standard deviation of the full sets' distance (`n_bootstrap` resamplings)
    combined in quadrature with the fit's standard error, which is conservative (the checks
    on Gaussian sets: benchmarks/validation.md). With `normalise` each feature is divided by
    its largest magnitude in the reference (as jetnet). The CaloChallenge prints FPD x 1e3.

    The covariances (from Gram matrices of the centred sets) and eigendecompositions run in
    float64 on `threads` CPU threads (None: unchanged; see `_matrix_products`).
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
    degree: int = 4,
    normalise: bool = True,
    seed: int = 0,
    threads: int | None = 1,
) -> tuple[float, float]:
    """Kernel physics distance (Kansal et al. 2023; systems.md 6): the unbiased squared
    maximum mean discrepancy between feature vectors (n, k) with the polynomial kernel
    k(a, b) = (a.b / k + 1)^degree (degree 4, gamma 1/k, coef0 1: the paper's, jetnet's and
    the CaloChallenge's), computed on `n_batches` batches of each set; the value is the
    median over batches and the error half the 16-84 % spread of the batches' values, as in
    the paper. Two samples of one distribution give values scattered around 0 (the estimator
    is unbiased, so negative values occur). `normalise` as in `fpd`.

    Batches have a fixed size, as in jetnet, so the cost does not grow with the sets:
    min(`batch_size`, half the smaller set) showers of each set, drawn without replacement
    within a batch and independently for each batch (jetnet draws with replacement, which
    lets a shower meet itself in the unbiased estimator and biases it upward). The kernel
    matrices are computed in float64 on `threads` CPU threads, as in `fpd`."""
    r, g = _rows(reference, "reference"), _rows(generated, "generated")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"reference has {r.shape[1]} features, generated {g.shape[1]}")
    r, g = _normalise_pair(r, g, normalise)
    n = min(batch_size, len(r) // 2, len(g) // 2)
    if n < 2:
        raise ValueError(f"KPD needs at least 4 showers per set, got {len(r)} and {len(g)}")
    rng = np.random.default_rng(seed)
    with _matrix_products(threads) as product:
        values = np.array(
            [
                _mmd_poly_unbiased(
                    np.take(r, rng.choice(len(r), n, replace=False), axis=0),
                    np.take(g, rng.choice(len(g), n, replace=False), axis=0),
                    degree,
                    product,
                )
                for _ in range(n_batches)
            ]
        )
    lo, hi = np.percentile(values, [16.0, 84.0])
    return float(np.median(values)), float((hi - lo) / 2.0)
