"""Shower features: what is measured on each shower before two sets are compared.

- `kernels`: the definitions, small pure functions of a batch of showers (n, *shape) GeV:
  energy and the response E_vis / E_p, profiles, centres and widths, moments, the measured
  angle, hits, sparsity, the cell spectrum. Training's physics check and the int8 guard use
  these too (`response`, `normalised_mean_profile`).
- `lhcb`: the LHCb challenge's cluster asymmetries, widths and sparsity levels.
- `one_pass`: every feature of a batch from one pass over its cells (`shower_features`), the
  high-level feature vector for FPD, KPD and the classifiers, and `compute_features` for a
  whole source streamed batch by batch.
- `scalars`: the features of voxel geometries (no cell grid) and the scalar features the
  report compares one by one.
- `summaries`: a set's mean and spread of a per-shower quantity, merged chunk by chunk.
"""

from caloforge.validation.features.kernels import (
    CELL_SPECTRUM_EDGES,
    HIT_THRESHOLD,
    THETA_MIN_LAYER_FRACTION,
    as_layers,
    barycentre_per_layer,
    calibrated_energy,
    cell_centres_mm,
    cell_spectrum,
    centre_and_width,
    hits,
    layer_centres_mm,
    longitudinal_profile,
    max_position,
    measured_theta,
    moments,
    normalised_mean_profile,
    profile,
    response,
    response_of_total,
    sparsity,
    total_energy,
    x_profile,
    y_profile,
)
from caloforge.validation.features.lhcb import (
    LHCB_DEPTH_CELLS,
    SPARSITY_ALPHAS,
    cluster_asymmetry,
    lhcb_impact_point,
    lhcb_shower_width,
    sparsity_level,
)
from caloforge.validation.features.one_pass import (
    LHCB_FEATURE_ALPHAS,
    LHCB_FEATURE_DEPTH_X0,
    GridSums,
    compute_features,
    feature_names,
    feature_vector,
    grid_sums,
    shower_features,
)
from caloforge.validation.features.scalars import (
    SCALAR_FEATURES,
    ScalarFeature,
    scalar_features,
    voxel_feature_names,
    voxel_features,
    voxel_layers,
)
from caloforge.validation.features.summaries import Moments

__all__ = [
    "CELL_SPECTRUM_EDGES",
    "HIT_THRESHOLD",
    "LHCB_DEPTH_CELLS",
    "LHCB_FEATURE_ALPHAS",
    "LHCB_FEATURE_DEPTH_X0",
    "SCALAR_FEATURES",
    "SPARSITY_ALPHAS",
    "THETA_MIN_LAYER_FRACTION",
    "GridSums",
    "Moments",
    "ScalarFeature",
    "as_layers",
    "barycentre_per_layer",
    "calibrated_energy",
    "cell_centres_mm",
    "cell_spectrum",
    "centre_and_width",
    "cluster_asymmetry",
    "compute_features",
    "feature_names",
    "feature_vector",
    "grid_sums",
    "hits",
    "layer_centres_mm",
    "lhcb_impact_point",
    "lhcb_shower_width",
    "longitudinal_profile",
    "max_position",
    "measured_theta",
    "moments",
    "normalised_mean_profile",
    "profile",
    "response",
    "response_of_total",
    "scalar_features",
    "shower_features",
    "sparsity",
    "sparsity_level",
    "total_energy",
    "voxel_feature_names",
    "voxel_features",
    "voxel_layers",
    "x_profile",
    "y_profile",
]
