"""Validation plots: each a function of one `Comparison` returning a matplotlib `Figure`.

Every plot shares one interface, `draw(comparison) -> Figure`, and raises `NotApplicableError`
(with the reason) when the comparison lacks what it needs (a per-layer grid, an angle, the
cell-level subsample, the LHCb conditions). `PLOTS` lists them in the report's order, each
with a file name, a title and a caption that says how to read it.

Style: HEP conventions (step histograms, ticks inside on all sides, a ratio panel where a
ratio reads better than two curves), reference in grey, generated in red. The style is set
per figure with `matplotlib.rc_context`: importing this package changes no global setting,
and no pyplot state machine is used (figures are plain `Figure` objects, freed when dropped).

- `base`: `Comparison`, `PlotSpec`, the style and the shared helpers;
- `distributions`: conditions, response and resolution, cell spectrum, hits and energy,
  features, correlations;
- `shapes`: shower shapes in mm and X0, the radial profile in mm and Moliere radii;
- `images`: SSIM scan, 2D projections, the LHCb challenge's metrics.
"""

from caloforge.validation.features import HIT_THRESHOLD
from caloforge.validation.plots.base import (
    Comparison,
    NotApplicableError,
    PlotSpec,
    png_bytes,
)
from caloforge.validation.plots.distributions import (
    fixed_energy_windows,
    plot_cell_spectrum,
    plot_conditions,
    plot_correlations,
    plot_feature_distributions,
    plot_hits_and_energy,
    plot_response_resolution_energy,
    plot_response_resolution_theta,
    plot_response_vs_energy,
)
from caloforge.validation.plots.images import (
    plot_lhcb_features,
    plot_projections_mean,
    plot_projections_single,
    plot_ssim_scan,
)
from caloforge.validation.plots.shapes import plot_radial_profile, plot_shower_shapes

PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec(
        "conditions",
        "Conditions",
        "Distributions of the primary energy (and angle) of the compared showers. Overall "
        "metrics assume these match; the binned ones do not.",
        plot_conditions,
    ),
    PlotSpec(
        "response_vs_energy",
        "Visible / primary energy vs primary energy",
        "Mean E_vis/E_p in fine energy bins; ratio panel generated / reference with the "
        "response tolerance as a grey band.",
        plot_response_vs_energy,
    ),
    PlotSpec(
        "mu90_energy",
        "mu90 and sigma90/mu90 vs energy",
        "Mean and relative width of the central 90 % of E_vis/E_p in the report's energy "
        "bins, with ratio panels and the tolerances as grey bands.",
        plot_response_resolution_energy,
    ),
    PlotSpec(
        "mu90_theta",
        "mu90 and sigma90/mu90 vs angle",
        "As above, in bins of the polar angle.",
        plot_response_resolution_theta,
    ),
    PlotSpec(
        "cell_spectrum",
        "Cell energy spectrum",
        "Cells per shower per cell-energy bin, linear and log scales; dotted line: the "
        f"hit threshold {HIT_THRESHOLD:g} GeV.",
        plot_cell_spectrum,
    ),
    PlotSpec(
        "shower_shapes",
        "Shower shapes along x, y and depth",
        "Mean energy per cell column and row against x and y in mm (cell index on the top "
        "axis), and per layer against the depth in radiation lengths X0 at normal incidence "
        "(layer on the top axis); linear and log, ratio row generated / reference.",
        plot_shower_shapes,
    ),
    PlotSpec(
        "radial_profile",
        "Radial profile",
        "Energy per mm² in rings about the shower axis (the energy-weighted centre of each "
        "layer) and the fraction of the energy within r, in mm and in Moliere radii of the "
        "layer stack (dotted: 1 R_M and 90 %), of the cell-level subsample's showers about "
        "the axis of their mean shower; error bars: standard errors of the means over the "
        "subsample.",
        plot_radial_profile,
    ),
    PlotSpec(
        "hits_and_energy",
        "Hits and visible energy at three primary energies",
        "Showers in three windows of the primary energy (their counts in the legends).",
        plot_hits_and_energy,
    ),
    PlotSpec(
        "features",
        "Shower features",
        "Distributions of the scalar features with their separation power.",
        plot_feature_distributions,
    ),
    PlotSpec(
        "correlations",
        "Feature correlations",
        "Pearson correlations of the scalar features: reference below the diagonal, "
        "generated above it; right, reference minus generated (the 3DGAN's matrix).",
        plot_correlations,
    ),
    PlotSpec(
        "ssim",
        "SSIM comparison",
        "Mean SSIM of random pairs of showers within and between the sets vs the "
        "dynamic range L: between-set similarity should match within-reference "
        "similarity; a generated set more alike than the reference lacks diversity.",
        plot_ssim_scan,
    ),
    PlotSpec(
        "projections_mean",
        "Averaged 2D projections",
        "Mean shower of the subsample (projected on xy, xz and yz where it has depth; log "
        "colour scale; x and y in mm, the depth in radiation lengths X0), and generated / "
        "reference (values beyond 0.5-1.5 in the end colours).",
        plot_projections_mean,
    ),
    PlotSpec(
        "projections_single",
        "Single-shower 2D projections",
        "One reference shower near the median energy and the generated shower closest "
        "to it in the conditions.",
        plot_projections_single,
    ),
    PlotSpec(
        "lhcb",
        "LHCb challenge metrics",
        "Cluster asymmetry and width along and across the transverse momentum, and the "
        "sparsity level vs alpha.",
        plot_lhcb_features,
    ),
)

__all__ = [
    "PLOTS",
    "Comparison",
    "NotApplicableError",
    "PlotSpec",
    "fixed_energy_windows",
    "plot_cell_spectrum",
    "plot_conditions",
    "plot_correlations",
    "plot_feature_distributions",
    "plot_hits_and_energy",
    "plot_lhcb_features",
    "plot_projections_mean",
    "plot_projections_single",
    "plot_radial_profile",
    "plot_response_resolution_energy",
    "plot_response_resolution_theta",
    "plot_response_vs_energy",
    "plot_shower_shapes",
    "plot_ssim_scan",
    "png_bytes",
]
