"""What every validation plot shares: the `Comparison` it draws from, the `PlotSpec` that
names it, the HEP style (applied per figure with `matplotlib.rc_context`, never globally)
and the histogram and ratio-panel helpers.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from caloforge.geometry import Geometry
from caloforge.validation.features import Moments, scalar_features
from caloforge.validation.formatting import measured_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from caloforge.validation.config import Tolerances
    from caloforge.validation.metrics import SSIMScan
    from caloforge.validation.plots.shapes import RadialProfile
    from caloforge.validation.results import ResponseBin

REFERENCE_COLOR = "#3b4252"
REFERENCE_FILL = "#cfd4dc"
GENERATED_COLOR = "#d1293d"
DPI = 100

# Applied inside each plot function only (rc_context), never globally.
HEP_STYLE: dict[str, Any] = {
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "xtick.top": True,
    "ytick.right": True,
    "xtick.minor.visible": True,
    "ytick.minor.visible": True,
    "xtick.major.size": 6,
    "ytick.major.size": 6,
    "xtick.minor.size": 3,
    "ytick.minor.size": 3,
    "axes.linewidth": 1.0,
    "lines.linewidth": 1.5,
    "image.cmap": "viridis",
}


class NotApplicableError(Exception):
    """A plot that does not apply to this comparison; the message says why."""


@dataclass(frozen=True)
class Comparison:
    """What the plots read. `reference` and `generated` are the feature tables of
    `features.compute_features` (or `features.voxel_features`), of the showers compared.

    Optional parts, each used by the plots that need it:
    summaries: per set, `features.Moments` of per-shower vectors the tables leave out (the
        shower shapes, the cell spectrum, the LHCb sparsity levels: `vector_moments`);
    scalars: the two sets' `features.scalar_features` (computed from the features if None);
    separation: separation power (value, error) per scalar feature, shown in the panels;
    response: `results.ResponseBin`s per condition ("energy", "theta", "all");
    tolerances: drawn as bands in the ratio panels;
    mean_images, single_showers, single_conditions, subsample: the cell-level subsample's
        mean shower of each set, one shower of each with similar conditions, and its size;
    radial_profiles: the subsample's radial profiles with their errors
        (`shapes.radial_profiles`; without them the radial plot has no error bars);
    ssim: the SSIM scan of the subsample.
    """

    geometry: Geometry
    reference: Mapping[str, np.ndarray]
    generated: Mapping[str, np.ndarray]
    summaries: tuple[Mapping[str, Moments], Mapping[str, Moments]] | None = None
    labels: tuple[str, str] = ("Reference", "Generated")
    scalars: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]] | None = None
    separation: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    response: Mapping[str, Sequence[ResponseBin]] = field(default_factory=dict)
    tolerances: Tolerances | None = None
    mean_images: tuple[np.ndarray, np.ndarray] | None = None
    radial_profiles: tuple[RadialProfile, RadialProfile] | None = None
    single_showers: tuple[np.ndarray, np.ndarray] | None = None
    single_conditions: tuple[Mapping[str, float], Mapping[str, float]] | None = None
    subsample: int = 0
    ssim: SSIMScan | None = None
    min_showers: int = 50

    def scalar(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """One scalar feature of both sets, finite values only."""
        scalars = self.scalars or (
            scalar_features(self.reference, self.geometry),
            scalar_features(self.generated, self.geometry),
        )
        if key not in scalars[0]:
            raise NotApplicableError(f"no feature '{key}' for this geometry")
        r, g = (np.asarray(s[key], dtype=np.float64) for s in scalars)
        return r[np.isfinite(r)], g[np.isfinite(g)]

    def has_vector(self, key: str) -> bool:
        """Whether both sets have the per-shower vector `key`, per shower or summarised."""
        return all(
            key in table or (self.summaries is not None and key in self.summaries[k])
            for k, table in enumerate((self.reference, self.generated))
        )

    def vector_moments(self, key: str) -> tuple[Moments, Moments]:
        """The mean and spread over each set's showers of the per-shower vector `key` (a
        shower shape, the cell spectrum): from `summaries`, else from the tables."""
        if not self.has_vector(key):
            raise NotApplicableError(f"no feature '{key}' among the features")
        return (
            self._moments(0, self.reference, key),
            self._moments(1, self.generated, key),
        )

    def _moments(self, k: int, table: Mapping[str, np.ndarray], key: str) -> Moments:
        if self.summaries is not None and key in self.summaries[k]:
            return self.summaries[k][key]
        return Moments.of(table[key])

    def has_scalar(self, key: str) -> bool:
        try:
            self.scalar(key)
        except NotApplicableError:
            return False
        return True


@dataclass(frozen=True)
class PlotSpec:
    """A plot of the report: file name (without .png), title, caption and how to draw it."""

    name: str
    title: str
    caption: str
    draw: Callable[[Comparison], Figure]


def png_bytes(figure: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# --- helpers shared by the plots ----------------------------------------------------------------
def styled(draw: Callable[[Comparison], Figure]) -> Callable[[Comparison], Figure]:
    """Draw under HEP_STYLE, restoring matplotlib's settings afterwards."""

    @functools.wraps(draw)
    def wrapper(c: Comparison) -> Figure:
        with matplotlib.rc_context(cast(Any, HEP_STYLE)):
            return draw(c)

    return wrapper


def new_figure(title: str, c: Comparison, width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.suptitle(title, x=0.01, ha="left", fontsize=13, fontweight="bold")
    fig.text(
        0.99,
        0.995,
        f"caloforge · {c.geometry.name}",
        ha="right",
        va="top",
        fontsize=9,
        style="italic",
        color="#555",
    )
    return fig


def with_ratio(fig: Figure, spec: Any) -> tuple[Axes, Axes]:
    """A main panel and a ratio panel below it, sharing x, in one cell of a GridSpec."""
    inner = spec.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.0)
    top = fig.add_subplot(inner[0])
    bottom = fig.add_subplot(inner[1], sharex=top)
    top.tick_params(labelbottom=False)
    return top, bottom


def shared_edges(a: np.ndarray, b: np.ndarray, bins: int = 40, *, log: bool = False) -> np.ndarray:
    """Shared bins over the bulk (0.1 %-99.9 % quantiles) of both sets; integer bins for
    small integer ranges."""
    both = np.concatenate([a, b])
    both = both[np.isfinite(both)]
    if log:
        both = both[both > 0]
    if both.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    low, high = np.quantile(both, [0.001, 0.999])
    if np.all(both == np.round(both)) and high - low <= 2 * bins and not log:
        return np.arange(np.floor(low) - 0.5, np.ceil(high) + 1.5)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    if log:
        return np.geomspace(low, high, bins + 1)
    return np.linspace(low, high, bins + 1)


def density(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histogram (outer values clipped into the outer bins) and its error."""
    counts = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0].astype(float)
    norm = max(counts.sum(), 1.0) * np.diff(edges)
    return counts / norm, np.sqrt(counts) / norm


def pair_hist(
    ax: Axes, c: Comparison, r: np.ndarray, g: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    hr, er = density(r, edges)
    hg, eg = density(g, edges)
    ax.stairs(hr, edges, fill=True, color=REFERENCE_FILL, label=f"{c.labels[0]} ({len(r)})")
    ax.stairs(hr, edges, color=REFERENCE_COLOR, linewidth=1.0)
    ax.stairs(hg, edges, color=GENERATED_COLOR, linewidth=1.6, label=f"{c.labels[1]} ({len(g)})")
    # Headroom for the legend above the histograms.
    ax.set_ylim(0.0, 1.4 * max(float(hr.max(initial=0.0)), float(hg.max(initial=0.0)), 1e-300))
    return hr, er, hg, eg


# How far a ratio panel may widen its nominal range to show every point, as a multiple of
# the nominal half-width: 0.9-1.1 widens to at most 0.6-1.4, 0.5-1.5 to 0-3.
RATIO_WIDEN = 4.0
# Off-scale points are labelled with their value up to this many per panel.
MAX_OFF_SCALE_LABELS = 6


def ratio_range(
    ratios: np.ndarray, nominal: tuple[float, float], widen: float = RATIO_WIDEN
) -> tuple[float, float]:
    """The y range of a ratio panel: `nominal` widened (in steps of 0.05) to hold the
    finite ratios that lie within `widen` times its half-widths around 1 (and above 0);
    ratios beyond that do not widen it (they are marked at the edge instead)."""
    low, high = nominal
    cap_low = max(0.0, 1.0 - widen * (1.0 - low))
    cap_high = 1.0 + widen * (high - 1.0)
    shown = ratios[np.isfinite(ratios) & (ratios >= cap_low) & (ratios <= cap_high)]
    if shown.size:
        pad = 0.05 * (high - low)
        low = min(low, max(cap_low, math.floor((shown.min() - pad) * 20.0) / 20.0))
        high = max(high, min(cap_high, math.ceil((shown.max() + pad) * 20.0) / 20.0))
    return low, high


def ratio_panel(
    ax: Axes,
    x: np.ndarray,
    ref: np.ndarray,
    ref_err: np.ndarray,
    gen: np.ndarray,
    gen_err: np.ndarray,
    *,
    xerr: np.ndarray | None = None,
    band: float | None = None,
    ylim: tuple[float, float] = (0.8, 1.2),
    label: str = "Gen./Ref.",
) -> None:
    """Generated over reference with propagated errors; a grey band of +-`band`.

    The y range starts at `ylim` and widens to show every point (`ratio_range`); a point
    still beyond it is drawn as an arrow head at the edge, labelled with its value, and
    points with generated entries where the reference has none are counted in a note:
    nothing is dropped without a mark."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = gen / ref
        err = np.abs(ratio) * np.hypot(ref_err / ref, gen_err / gen)
    defined = np.isfinite(ratio) & (ref > 0)
    low, high = ratio_range(ratio[defined], ylim)
    inside = defined & (ratio >= low) & (ratio <= high)
    if band is not None:
        ax.axhspan(1 - band, 1 + band, color="#e8eaef", zorder=0)
    ax.axhline(1.0, color=REFERENCE_COLOR, linewidth=0.8)
    ax.errorbar(
        x[inside],
        ratio[inside],
        yerr=np.where(np.isfinite(err), err, 0)[inside],
        xerr=None if xerr is None else xerr[inside],
        fmt="o",
        markersize=3.5,
        color=GENERATED_COLOR,
        linewidth=1.0,
    )
    ax.set_ylim(low, high)
    ax.set_ylabel(label)
    off = np.flatnonzero(defined & ~inside)
    _mark_off_scale(ax, x[off], ratio[off], high)
    notes = []
    if len(off):
        notes.append(f"{len(off)} off scale (arrows)")
    no_reference = int(np.sum((ref <= 0) & (gen > 0)))
    if no_reference:
        notes.append(f"{no_reference} with an empty reference, not drawn")
    if notes:
        # At the bottom unless arrows point down there.
        top = bool(np.any(ratio[off] < low))
        ax.text(
            0.01,
            0.96 if top else 0.04,
            "; ".join(notes),
            transform=ax.transAxes,
            ha="left",
            va="top" if top else "bottom",
            fontsize=7.5,
            color="#444",
            zorder=5,
            bbox={
                "boxstyle": "square,pad=0.15",
                "facecolor": "white",
                "alpha": 0.8,
                "linewidth": 0,
            },
        )


def _mark_off_scale(ax: Axes, x: np.ndarray, ratio: np.ndarray, high: float) -> None:
    """Arrow heads at the top or bottom edge where ratios lie beyond the panel, each
    labelled with its value (up to MAX_OFF_SCALE_LABELS; neighbours on alternate rows)."""
    transform = ax.get_xaxis_transform()  # x in data, y in axes coordinates
    for k, (xi, value) in enumerate(zip(x, ratio, strict=True)):
        above = value > high
        edge = 0.92 if above else 0.08
        ax.plot(
            xi,
            edge,
            marker="^" if above else "v",
            markersize=7,
            color=GENERATED_COLOR,
            transform=transform,
            clip_on=False,
            zorder=6,
        )
        if len(x) > MAX_OFF_SCALE_LABELS:
            continue
        row = 0.1 + 0.13 * (k % 2)
        ax.text(
            xi,
            edge - row if above else edge + row,
            measured_text(float(value), digits=3),
            transform=transform,
            ha="center",
            va="top" if above else "bottom",
            fontsize=7.5,
            color=GENERATED_COLOR,
        )


def energy_label(c: Comparison) -> str:
    return f"primary energy E_p [{c.geometry.condition('energy').unit}]"


def is_wide(values: np.ndarray) -> bool:
    low, high = float(np.min(values)), float(np.max(values))
    return low > 0 and high / low > 10


# Label and unit of each scalar feature in the plots.
FEATURE_LABELS = {
    "response": ("E_vis / E_p", ""),
    "energy_visible": ("visible energy", "GeV"),
    "hits": ("hits", ""),
    "centre_x": ("centre x", "mm"),
    "centre_y": ("centre y", "mm"),
    "centre_z": ("centre z (depth)", "mm"),
    "width_x": ("width x", "mm"),
    "width_y": ("width y", "mm"),
    "width_z": ("width z (depth)", "mm"),
    "mean_layer": ("mean layer", ""),
    "measured_theta": ("measured theta", "deg"),
    "asymmetry_long": ("asymmetry, longitudinal", ""),
    "asymmetry_trans": ("asymmetry, transverse", ""),
    "width_long": ("width along p_T", "cells"),
    "width_trans": ("width across p_T", "cells"),
}


def feature_label(key: str) -> str:
    label, unit = FEATURE_LABELS.get(key, (key, ""))
    return f"{label} [{unit}]" if unit else label


def density_label(key: str) -> str:
    """The y label of a histogram of a feature normalised to unit area: per unit of it."""
    unit = FEATURE_LABELS.get(key, (key, ""))[1]
    return f"normalised [1/{unit}]" if unit else "normalised"
