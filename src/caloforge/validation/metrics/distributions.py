"""Metrics of one-dimensional distributions and of their correlations, and any metric in bins
of a condition.

Two-set metrics are `f(reference, generated, *, seed=0, ...)` returning `(value, error)`;
errors are bootstrap standard deviations over showers (seeded). `ks_test` alone returns
(statistic, p-value), as the Kolmogorov test of the 3DGAN validation is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

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
def correlation_matrix(x: np.ndarray) -> np.ndarray:
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
        return correlation_matrix(a) - correlation_matrix(b)

    rng = np.random.default_rng(seed)
    return stat(r, g), _bootstrap(stat, r, g, n_bootstrap, rng)


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
