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

from caloforge.validation.metrics.distributions import _bootstrap_indices

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


def _features(x: np.ndarray, name: str) -> np.ndarray:
    """`x` as (n, k) features, n >= 2, all finite; float32 and float64 inputs are used as
    they are (no copy): the metrics convert the rows they draw, a chunk at a time."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"{name} must be (n, k) features with n >= 2, got shape {a.shape}")
    bad = sum(int((~np.isfinite(a[lo : lo + CHUNK])).sum()) for lo in range(0, len(a), CHUNK))
    if bad:
        raise ValueError(f"{name} has {bad} NaN or infinite value(s)")
    return a


# Rows per chunk where the metrics convert drawn rows to float64 (about 10 MB for 150
# features): no float64 copy of a whole set is made.
CHUNK = 8192


def _mean_of_rows(x: np.ndarray) -> np.ndarray:
    """The mean row of x in float64, summed a chunk of rows at a time."""
    total = np.zeros(x.shape[1])
    for lo in range(0, len(x), CHUNK):
        total += x[lo : lo + CHUNK].sum(axis=0, dtype=np.float64)
    return total / len(x)


def _normalisation(reference: np.ndarray, normalise: bool) -> np.ndarray:
    """The divisor of each feature: as jetnet, its largest magnitude in the reference (1
    where that is 0); all ones without `normalise`."""
    k = reference.shape[1]
    if not normalise:
        return np.ones(k)
    largest = np.zeros(k)
    for lo in range(0, len(reference), CHUNK):
        part = reference[lo : lo + CHUNK]
        largest = np.maximum(largest, np.maximum(part.max(axis=0), -part.min(axis=0)))
    return np.where(largest > 0, largest, 1.0)


def _drawn_rows(x: np.ndarray, rows: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The rows `rows` of x divided by `scale`, in float64."""
    return np.divide(np.take(x, rows, axis=0), scale, dtype=np.float64)


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


def _moments_of_rows(
    x: np.ndarray,
    rows: np.ndarray,
    shift: np.ndarray,
    product: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """`_moments` of the rows `rows` (repeats allowed) of x - shift in float64, from sums and
    Gram matrices accumulated a chunk of rows at a time (no float64 copy of all the rows).
    `shift` must centre the rows about roughly 0 (see `_moments`)."""
    n, k = len(rows), x.shape[1]
    total, gram = np.zeros(k), np.zeros((k, k))
    for lo in range(0, n, CHUNK):
        part = np.subtract(np.take(x, rows[lo : lo + CHUNK], axis=0), shift, dtype=np.float64)
        total += part.sum(axis=0)
        gram += product(part, part)
    mean = total / n
    cov = (gram - n * np.outer(mean, mean)) / (n - 1)
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
    r, g = _features(reference, "reference"), _features(generated, "generated")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"reference has {r.shape[1]} features, generated {g.shape[1]}")
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
    scale = _normalisation(r, normalise)
    # A shift common to both sets leaves the distance unchanged and centres them (`_moments`);
    # the moments of the centred rows are then scaled: a mean by `scale`, a covariance by
    # `scale` on both sides.
    shift = _mean_of_rows(r)
    rng = np.random.default_rng(seed)
    with _matrix_products(threads) as product:

        def normalised(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return mean / scale, cov / np.outer(scale, scale)

        def distance(a: np.ndarray, b: np.ndarray) -> float:
            """The Frechet distance of the rows `a` of r and the rows `b` of g."""
            return frechet_distance(
                *normalised(*_moments_of_rows(r, a, shift, product)),
                *normalised(*_moments_of_rows(g, b, shift, product)),
            )

        values = []
        for n in sizes:
            draws = []
            for _ in range(n_batches if n < min(len(r), len(g)) else 1):
                a = rng.choice(len(r), n, replace=False)
                b = rng.choice(len(g), n, replace=False)
                draws.append(distance(a, b))
            values.append(np.mean(draws))
        value, fit_error = _extrapolate(1.0 / sizes, np.asarray(values))
        spread = 0.0
        if n_bootstrap > 1:
            spread = float(_bootstrap_indices(distance, len(r), len(g), n_bootstrap, rng))
    return value, float(np.hypot(fit_error, spread))


def _extrapolate(inv_n: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Intercept (>= 0) and its standard error of a straight line through (1/N, value)."""
    design = np.stack([np.ones_like(inv_n), inv_n], axis=1)
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    dof = max(len(values) - 2, 1)
    resid = values - design @ coef
    cov = np.linalg.inv(design.T @ design) * (resid @ resid) / dof
    return max(float(coef[0]), 0.0), float(np.sqrt(max(cov[0, 0], 0.0)))


# Rows of the kernel matrix computed, raised to the kernel's power and summed at a time: a
# block of 256 x 5000 (10 MB) stays in cache through the element-wise steps, where the whole
# 5000 x 5000 matrix (200 MB, and as much again for its power) streams through memory each.
KERNEL_BLOCK = 256


def _power_in_place(k: np.ndarray, degree: int) -> np.ndarray:
    """k ** degree (an integer >= 1) by repeated squaring; k is overwritten."""
    if degree < 1:
        raise ValueError(f"the kernel's degree must be a positive integer, got {degree}")
    result: np.ndarray | None = None
    while True:
        if degree & 1:
            if result is None:
                if degree == 1:  # the last factor: k itself
                    return k
                result = k.copy()
            else:
                np.multiply(result, k, out=result)
        degree >>= 1
        if not degree:
            assert result is not None
            return result
        np.multiply(k, k, out=k)


def _kernel_sum(
    a: np.ndarray,
    b: np.ndarray,
    degree: int,
    product: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    same: bool,
) -> float:
    """Sum over all pairs (i, j) of (a_i . b_j / d + 1)^degree, the pairs i = j left out when
    `same` (a is b, the unbiased estimator): computed a block of rows at a time, and for
    `same` over the blocks on and above the diagonal only (the kernel matrix is symmetric)."""
    d = a.shape[1]
    total = 0.0
    for lo in range(0, len(a), KERNEL_BLOCK):
        hi = min(lo + KERNEL_BLOCK, len(a))
        first = lo if same else 0
        k = product(a[lo:hi].T, b[first:].T)  # a[lo:hi] @ b[first:].T
        k /= d
        k += 1.0
        k = _power_in_place(k, degree)
        if same:
            diagonal = k[:, : hi - lo]
            # The diagonal block once, less its diagonal; the blocks right of it twice.
            total += float(diagonal.sum() - np.trace(diagonal))
            total += 2.0 * float(k[:, hi - lo :].sum())
        else:
            total += float(k.sum())
    return total


def _mmd_poly_unbiased(
    x: np.ndarray,
    y: np.ndarray,
    degree: int,
    product: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> float:
    """Unbiased MMD^2 with the polynomial kernel k(a, b) = (a.b / d + 1)^degree (float64
    (n, d) arrays); `product` as `_matrix_products`'s."""
    m, n = len(x), len(y)
    sxx = _kernel_sum(x, x, degree, product, same=True) / (m * (m - 1))
    syy = _kernel_sum(y, y, degree, product, same=True) / (n * (n - 1))
    sxy = _kernel_sum(x, y, degree, product, same=False) / (m * n)
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
    r, g = _features(reference, "reference"), _features(generated, "generated")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"reference has {r.shape[1]} features, generated {g.shape[1]}")
    n = min(batch_size, len(r) // 2, len(g) // 2)
    if n < 2:
        raise ValueError(f"KPD needs at least 4 showers per set, got {len(r)} and {len(g)}")
    scale = _normalisation(r, normalise)
    rng = np.random.default_rng(seed)
    with _matrix_products(threads) as product:
        values = np.array(
            [
                _mmd_poly_unbiased(
                    _drawn_rows(r, rng.choice(len(r), n, replace=False), scale),
                    _drawn_rows(g, rng.choice(len(g), n, replace=False), scale),
                    degree,
                    product,
                )
                for _ in range(n_batches)
            ]
        )
    lo, hi = np.percentile(values, [16.0, 84.0])
    return float(np.median(values)), float((hi - lo) / 2.0)
