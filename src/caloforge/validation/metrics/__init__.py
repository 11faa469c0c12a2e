"""Metrics comparing a reference shower set (Monte Carlo) with a generated one.

A flat functional API: every two-set metric is `f(reference, generated, *, seed=0, ...)` and
returns `(value, error)`; each docstring cites where the metric comes from. Inputs are
per-shower features (n,) or (n, k), or images (n, ...) for the image metrics. Errors are
statistical: bootstraps over showers (seeded), or the spread over batches where the source
metric defines it so. `ks_test` alone returns (statistic, p-value).

- `distributions`: separation power, Wasserstein-1, KS, mu90 and sigma90/mu90, correlation
  differences, and `binned` (any metric in bins of a condition);
- `distances`: FPD and KPD of feature vectors;
- `images`: projection MSE and its chance floors, SSIM.
"""

from caloforge.validation.metrics.distances import fpd, frechet_distance, kpd
from caloforge.validation.metrics.distributions import (
    MIN_SHOWERS_PER_BIN,
    N_BOOTSTRAP,
    BinnedValue,
    binned,
    correlation_difference,
    correlation_matrix,
    histogram_edges,
    ks_test,
    mu90,
    mu90_sigma90,
    separation_power,
    sigma90_over_mu90,
    wasserstein,
)
from caloforge.validation.metrics.images import (
    SSIM_DATA_RANGES,
    SSIMScan,
    independent_projection_mse_floor,
    paired_projection_mse_floor,
    projection_mse,
    projection_mse_and_floor,
    ssim,
    ssim_pairs,
    ssim_scan,
)

__all__ = [
    "MIN_SHOWERS_PER_BIN",
    "N_BOOTSTRAP",
    "SSIM_DATA_RANGES",
    "BinnedValue",
    "SSIMScan",
    "binned",
    "correlation_difference",
    "correlation_matrix",
    "fpd",
    "frechet_distance",
    "histogram_edges",
    "independent_projection_mse_floor",
    "kpd",
    "ks_test",
    "mu90",
    "mu90_sigma90",
    "paired_projection_mse_floor",
    "projection_mse",
    "projection_mse_and_floor",
    "separation_power",
    "sigma90_over_mu90",
    "ssim",
    "ssim_pairs",
    "ssim_scan",
    "wasserstein",
]
