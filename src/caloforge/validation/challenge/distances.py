"""FPD and KPD as the CaloChallenge computes them: jetnet's estimators and settings.

Kansal et al. 2023, "Evaluating generative models in high energy physics"; the challenge's
`evaluate.py` calls jetnet (jet-net/JetNet, jetnet/evaluation/gen_metrics.py, version 0.2.5)
as `fpd(reference, generated, min_samples=10000)` and `kpd(reference, generated,
batch_size=10000)`. The definitions carried over:

- both divide every feature by its largest magnitude in the reference (a feature that is 0
  throughout is left as it is);
- FPD: at 10 sizes N evenly spaced in 1/N from `min_samples` to `max_samples`, the Frechet
  distance of Gaussians fitted to N showers drawn with replacement from each set, averaged over
  20 draws; a straight line in 1/N with intercept and slope both >= 0 (least squares under
  bounds) is fitted and its intercept is the value, the intercept's standard error from the
  fit's covariance the error. Draws come from one `numpy.random.default_rng(seed)`, reference
  then generated, size after size;
- KPD: the unbiased squared MMD with the polynomial kernel (x.y / d + 1)^4 on 10 batches of
  `batch_size` showers drawn with replacement from each set (batch i from
  `default_rng(seed + 1000 i)`; the batch size is not capped at the sets' sizes), the median
  of the batches the value and half the 16.275-83.725 % interquantile range the error.

With the same seed the draws are jetnet's own, so the numbers agree with jetnet's to rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from caloforge.validation.metrics.distances import _matrix_products, _moments, frechet_distance

JETNET_SEED = 42
# The challenge's settings (evaluate.py) on top of jetnet's defaults.
CHALLENGE_FPD = {"min_samples": 10_000, "max_samples": 50_000, "n_points": 10, "n_batches": 20}
CHALLENGE_KPD = {"batch_size": 10_000, "n_batches": 10, "degree": 4}
KPD_QUANTILES = (16.275, 83.725)


def normalise_by_reference(
    reference: np.ndarray, generated: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each feature divided by its largest magnitude in the reference (1 where that is 0)."""
    scale = np.max(np.abs(reference), axis=0)
    scale = np.where(scale == 0, 1.0, scale)
    return reference / scale, generated / scale


def _as_pair(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reference, dtype=np.float64)
    g = np.asarray(generated, dtype=np.float64)
    if r.ndim != 2 or g.ndim != 2 or r.shape[1] != g.shape[1]:
        raise ValueError(f"need two (n, k) feature sets of the same k, got {r.shape}, {g.shape}")
    if len(r) < 2 or len(g) < 2:
        raise ValueError(f"need at least 2 showers per set, got {len(r)} and {len(g)}")
    if not (np.isfinite(r).all() and np.isfinite(g).all()):
        raise ValueError("the feature vectors contain NaN or infinite values")
    return r, g


def fit_nonnegative_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares line y = a + b x with a >= 0 and b >= 0: (a, b, standard error of a).

    The bounded optimum is the unbounded one when feasible, else the best of the fits with a
    or b held at 0 (or both); the error is that of the linear model's covariance
    (J^T J)^-1 SSR / (n - 2), J = [1, x], at the optimum (what scipy's curve_fit returns)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    if a < 0 or b < 0:
        candidates = [
            (0.0, max(float(x @ y / (x @ x)), 0.0)),
            (max(float(y.mean()), 0.0), 0.0),
        ]
        a, b = min(candidates, key=lambda ab: float(np.sum((y - ab[0] - ab[1] * x) ** 2)))
    residual = y - a - b * x
    dof = max(len(x) - 2, 1)
    cov = np.linalg.pinv(design.T @ design) * float(residual @ residual) / dof
    return float(a), float(b), float(np.sqrt(max(cov[0, 0], 0.0)))


def jetnet_fpd(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    min_samples: int = CHALLENGE_FPD["min_samples"],
    max_samples: int = CHALLENGE_FPD["max_samples"],
    n_points: int = CHALLENGE_FPD["n_points"],
    n_batches: int = CHALLENGE_FPD["n_batches"],
    seed: int = JETNET_SEED,
    threads: int | None = 1,
) -> tuple[float, float]:
    """FPD (value, error) of feature vectors (n, k) as jetnet computes it (module docstring);
    the challenge prints both x 1e3."""
    r, g = normalise_by_reference(*_as_pair(reference, generated))
    sizes = (1.0 / np.linspace(1.0 / min_samples, 1.0 / max_samples, n_points)).astype(np.int32)
    # A shift common to both sets leaves every distance unchanged and keeps the Gram
    # matrices of `_moments` free of cancellation.
    shift = r.mean(axis=0)
    r, g = r - shift, g - shift
    rng = np.random.default_rng(seed)
    values = []
    with _matrix_products(threads) as product:
        for n in sizes:
            draws = []
            for _ in range(n_batches):
                a = rng.choice(len(r), size=n)
                b = rng.choice(len(g), size=n)
                draws.append(
                    frechet_distance(
                        *_moments(np.take(r, a, axis=0), product),
                        *_moments(np.take(g, b, axis=0), product),
                    )
                )
            values.append(np.mean(draws))
    value, _, error = fit_nonnegative_line(1.0 / sizes, np.asarray(values))
    return value, error


def _kernel_sum(
    a: np.ndarray,
    b: np.ndarray,
    degree: int,
    product: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    off_diagonal: bool,
    block: int = 2048,
) -> float:
    """Sum of (a_i . b_j / d + 1)^degree over all i, j (without i = j when
    `off_diagonal`), a block of rows at a time so that no full kernel matrix is held."""
    d = a.shape[1]
    total = 0.0
    for lo in range(0, len(a), block):
        k = product(a[lo : lo + block].T, b.T)  # rows lo.. of a @ b.T
        k /= d
        k += 1.0
        power = k.copy()
        for _ in range(degree - 1):
            power *= k
        total += float(power.sum())
        if off_diagonal:
            rows = np.arange(lo, min(lo + block, len(a)))
            total -= float(power[rows - lo, rows].sum())
    return total


def mmd_poly_unbiased(
    x: np.ndarray,
    y: np.ndarray,
    degree: int,
    product: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> float:
    """The unbiased squared MMD with the kernel (a.b / d + 1)^degree (jetnet's estimator:
    the diagonal terms of the within-set sums left out, whatever the rows hold)."""
    m, n = len(x), len(y)
    xx = _kernel_sum(x, x, degree, product, off_diagonal=True) / (m * (m - 1))
    yy = _kernel_sum(y, y, degree, product, off_diagonal=True) / (n * (n - 1))
    xy = _kernel_sum(x, y, degree, product, off_diagonal=False) / (m * n)
    return xx + yy - 2.0 * xy


def jetnet_kpd(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    batch_size: int = CHALLENGE_KPD["batch_size"],
    n_batches: int = CHALLENGE_KPD["n_batches"],
    degree: int = CHALLENGE_KPD["degree"],
    seed: int = JETNET_SEED,
    threads: int | None = 1,
) -> tuple[float, float]:
    """KPD (value, error) of feature vectors (n, k) as jetnet computes it (module
    docstring); the challenge prints both x 1e3."""
    r, g = normalise_by_reference(*_as_pair(reference, generated))
    values = []
    with _matrix_products(threads) as product:
        for i in range(n_batches):
            rng = np.random.default_rng(seed + i * 1000)
            a = rng.choice(len(r), size=batch_size)
            b = rng.choice(len(g), size=batch_size)
            values.append(
                mmd_poly_unbiased(np.take(r, a, axis=0), np.take(g, b, axis=0), degree, product)
            )
    lo, hi = np.percentile(values, KPD_QUANTILES)
    return float(np.median(values)), float((hi - lo) / 2.0)
