"""Metrics of shower images: the Conv2D GAN paper's projection MSE (with the part of it that
chance alone gives) and its structural similarity (SSIM) study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from caloforge.validation.metrics.distributions import _bootstrap_indices

# --- projections ------------------------------------------------------------------------------
# Showers per chunk of the passes over a set of images: each chunk is summed in float64 on its
# own, so that no float64 copy of a whole set is ever made.
CHUNK = 256


def _check_images(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim not in (3, 4):
        raise ValueError(f"projections need (n, x, y[, z]) showers, got shape {x.shape}")
    return x


def _mean_image(images: np.ndarray, chunk: int = CHUNK) -> np.ndarray:
    """The mean image of a set, accumulated in float64 a chunk of showers at a time."""
    total = np.zeros(images.shape[1:])
    for lo in range(0, len(images), chunk):
        total += images[lo : lo + chunk].sum(axis=0, dtype=np.float64)
    return total / len(images)


def _projections(images: np.ndarray) -> list[np.ndarray]:
    """Mean 2D projections of a set of showers: (x, y, z) images give the three sums along
    each axis; (x, y) images are their own projection."""
    x = _check_images(images)
    mean = _mean_image(x)
    return _project(mean, mean.ndim)


def _project(images: np.ndarray, dims: int) -> list[np.ndarray]:
    """The 2D projections of images whose last `dims` axes (2 or 3) are the image: the sums
    along each axis of a 3D image; a 2D image is its own projection."""
    return [images] if dims == 2 else [images.sum(axis=a) for a in (-3, -2, -1)]


def _shower_projections(images: np.ndarray, chunk: int = CHUNK) -> tuple[np.ndarray, list[int]]:
    """Each shower's 2D projections (`_project`) flattened side by side, (n, cells of all
    projections) float64, summed from the cells a chunk of showers at a time; and the number
    of cells of each projection. For (n, 25, 25, 25) showers a fifth of the cells' float32
    size: the set's mean projections and every bootstrap resampling of them follow from it
    without reading the cells again."""
    x = _check_images(images)
    n = len(x)
    if x.ndim == 3:
        sizes = [x.shape[1] * x.shape[2]]
    else:
        nx, ny, nz = x.shape[1:]
        sizes = [ny * nz, nx * nz, nx * ny]
    out = np.empty((n, sum(sizes)))
    for lo in range(0, n, chunk):
        part = x[lo : lo + chunk]
        if x.ndim == 3:
            out[lo : lo + len(part)] = part.reshape(len(part), -1)
        else:
            out[lo : lo + len(part)] = np.concatenate(
                [part.sum(axis=a, dtype=np.float64).reshape(len(part), -1) for a in (1, 2, 3)],
                axis=1,
            )
    return out, sizes


def _split(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """`values` (..., sum(sizes)) cut along the last axis into the projections."""
    return np.split(values, np.cumsum(sizes)[:-1], axis=-1)


def _mse_of_means(reference: np.ndarray, generated: np.ndarray, sizes: list[int]) -> float:
    """`projection_mse`'s value from the two sets' mean projections (flattened side by side)."""
    total = 0.0
    for p, q in zip(_split(reference, sizes), _split(generated, sizes), strict=True):
        scale = p.max() if p.max() > 0 else 1.0
        total += float(np.mean(((p - q) / scale) ** 2))
    return total / len(sizes)


def _projection_mse_of(
    reference: np.ndarray,
    generated: np.ndarray,
    sizes: list[int],
    n_bootstrap: int,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """`projection_mse` from each set's shower projections (`_shower_projections`): the
    mean projections of a resampled set are the projections weighted by how often each
    shower was drawn."""
    value = _mse_of_means(reference.mean(axis=0), generated.mean(axis=0), sizes)

    def resampled(i: np.ndarray, j: np.ndarray) -> float:
        mean_r = np.bincount(i, minlength=len(reference)) @ reference / len(i)
        mean_g = np.bincount(j, minlength=len(generated)) @ generated / len(j)
        return _mse_of_means(mean_r, mean_g, sizes)

    error = _bootstrap_indices(resampled, len(reference), len(generated), n_bootstrap, rng)
    return value, float(error)


def _check_shapes(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, g = np.asarray(reference), np.asarray(generated)
    if r.shape[1:] != g.shape[1:]:
        raise ValueError(f"image shapes differ: reference {r.shape[1:]}, generated {g.shape[1:]}")
    return r, g


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
    r, g = _check_shapes(reference, generated)
    (pr, sizes), (pg, _) = _shower_projections(r), _shower_projections(g)
    return _projection_mse_of(pr, pg, sizes, n_bootstrap, np.random.default_rng(seed))


def projection_mse_and_floor(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    seed: int = 0,
    n_bootstrap: int = 20,
) -> tuple[float, float, float]:
    """`projection_mse` (value, error) and `independent_projection_mse_floor` of the same two
    sets, from one pass over each set's showers."""
    r, g = _check_shapes(reference, generated)
    (pr, sizes), (pg, _) = _shower_projections(r), _shower_projections(g)
    value, error = _projection_mse_of(pr, pg, sizes, n_bootstrap, np.random.default_rng(seed))
    return value, error, _independent_floor(pr, pg, sizes)


def paired_projection_mse_floor(a: np.ndarray, b: np.ndarray, *, chunk: int = 256) -> float:
    """What `projection_mse(a, b)` is expected to be when a and b differ only by chance: a[i]
    and b[i] drawn under the same conditions (one generator, independent noise), paired.

    Each averaged projection's difference is the mean of the n paired differences d_i, which
    average to zero, so cell by cell E[(mean d)^2] = sum_i d_i^2 / n^2 in expectation; scaled by
    the maximum of a's averaged projection, as `projection_mse` scales by its reference. One
    draw of `projection_mse(a, b)` is a noisy estimate of this where the noise moves a
    shower's cells together (its energy as a whole): the squared mean difference then swings
    like a chi-square of few degrees of freedom, while this sum of n squares is steady
    (benchmarks/validation.md). The int8 guard's baseline."""
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


def independent_projection_mse_floor(reference: np.ndarray, generated: np.ndarray) -> float:
    """The projection MSE (`projection_mse`) expected between two independent samples of one
    distribution of these sizes: the mean projections fluctuate cell by cell by var / n, so
    E[MSE] = true MSE + mean over cells of (var_r / n_r + var_g / n_g) / peak^2 (averaged
    over the projections). The report subtracts it, so that the metric does not depend on
    the subsample's size."""
    r, g = _check_shapes(reference, generated)
    (pr, sizes), (pg, _) = _shower_projections(r), _shower_projections(g)
    return _independent_floor(pr, pg, sizes)


def _independent_floor(reference: np.ndarray, generated: np.ndarray, sizes: list[int]) -> float:
    """`independent_projection_mse_floor` from each set's shower projections."""
    total = 0.0
    for p_ref, p_gen in zip(_split(reference, sizes), _split(generated, sizes), strict=True):
        parts = [(p.mean(axis=0), p.var(axis=0, ddof=1) / len(p)) for p in (p_ref, p_gen)]
        peak = parts[0][0].max()
        scale = peak if peak > 0 else 1.0
        total += float(np.mean((parts[0][1] + parts[1][1]) / scale**2))
    return total / len(sizes)


# --- structural similarity ----------------------------------------------------------------------
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
