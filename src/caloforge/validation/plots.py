"""Validation plots: each a function of one `Comparison` returning a matplotlib `Figure`.

Every plot shares one interface, `draw(comparison) -> Figure`, and raises `NotApplicableError`
(with the reason) when the comparison lacks what it needs (a per-layer grid, an angle, the
cell-level subsample, the LHCb conditions). `PLOTS` lists them in the report's order, each
with a file name, a title and a caption that says how to read it.

Style: HEP conventions (step histograms, ticks inside on all sides, a ratio panel where a
ratio reads better than two curves), reference in grey, generated in red. The style is set
per figure with `matplotlib.rc_context`: importing this module changes no global setting,
and no pyplot state machine is used (figures are plain `Figure` objects, freed when dropped).
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
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from caloforge.geometry import Geometry
from caloforge.validation.features import CELL_SPECTRUM_EDGES, HIT_THRESHOLD, SPARSITY_ALPHAS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from caloforge.validation.metrics import SSIMScan
    from caloforge.validation.report import ResponseBin, Tolerances

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
    """What the plots read. `reference` and `generated` are the feature dictionaries of
    `features.compute_features` (or `report.voxel_features`), of the showers compared.

    Optional parts, each used by the plots that need it:
    scalars: the two sets' `report.scalar_features` (computed from the features if None);
    separation: separation power (value, error) per scalar feature, shown in the panels;
    response: `report.ResponseBin`s per condition ("energy", "theta", "all");
    tolerances: drawn as bands in the ratio panels;
    mean_images, single_showers, single_conditions, subsample: the cell-level subsample's
        mean shower of each set, one shower of each with similar conditions, and its size;
    ssim: the SSIM scan of the subsample.
    """

    geometry: Geometry
    reference: Mapping[str, np.ndarray]
    generated: Mapping[str, np.ndarray]
    labels: tuple[str, str] = ("Reference", "Generated")
    scalars: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]] | None = None
    separation: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    response: Mapping[str, Sequence[ResponseBin]] = field(default_factory=dict)
    tolerances: Tolerances | None = None
    mean_images: tuple[np.ndarray, np.ndarray] | None = None
    single_showers: tuple[np.ndarray, np.ndarray] | None = None
    single_conditions: tuple[Mapping[str, float], Mapping[str, float]] | None = None
    subsample: int = 0
    ssim: SSIMScan | None = None
    min_showers: int = 50

    def scalar(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """One scalar feature of both sets, finite values only."""
        from caloforge.validation.report import scalar_features

        scalars = self.scalars or (
            scalar_features(self.reference, self.geometry),
            scalar_features(self.generated, self.geometry),
        )
        if key not in scalars[0]:
            raise NotApplicableError(f"no feature '{key}' for this geometry")
        r, g = (np.asarray(s[key], dtype=np.float64) for s in scalars)
        return r[np.isfinite(r)], g[np.isfinite(g)]

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


# --- helpers ------------------------------------------------------------------------------------
def _styled(draw: Callable[[Comparison], Figure]) -> Callable[[Comparison], Figure]:
    """Draw under HEP_STYLE, restoring matplotlib's settings afterwards."""

    @functools.wraps(draw)
    def wrapper(c: Comparison) -> Figure:
        with matplotlib.rc_context(cast(Any, HEP_STYLE)):
            return draw(c)

    return wrapper


def _figure(title: str, c: Comparison, width: float, height: float) -> Figure:
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


def _with_ratio(fig: Figure, spec: Any) -> tuple[Axes, Axes]:
    """A main panel and a ratio panel below it, sharing x, in one cell of a GridSpec."""
    inner = spec.subgridspec(2, 1, height_ratios=(3, 1), hspace=0.0)
    top = fig.add_subplot(inner[0])
    bottom = fig.add_subplot(inner[1], sharex=top)
    top.tick_params(labelbottom=False)
    return top, bottom


def _edges(a: np.ndarray, b: np.ndarray, bins: int = 40, *, log: bool = False) -> np.ndarray:
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


def _density(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histogram (outer values clipped into the outer bins) and its error."""
    counts = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0].astype(float)
    norm = max(counts.sum(), 1.0) * np.diff(edges)
    return counts / norm, np.sqrt(counts) / norm


def _pair_hist(
    ax: Axes, c: Comparison, r: np.ndarray, g: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    hr, er = _density(r, edges)
    hg, eg = _density(g, edges)
    ax.stairs(hr, edges, fill=True, color=REFERENCE_FILL, label=f"{c.labels[0]} ({len(r)})")
    ax.stairs(hr, edges, color=REFERENCE_COLOR, linewidth=1.0)
    ax.stairs(hg, edges, color=GENERATED_COLOR, linewidth=1.6, label=f"{c.labels[1]} ({len(g)})")
    # Headroom for the legend above the histograms.
    ax.set_ylim(0.0, 1.4 * max(float(hr.max(initial=0.0)), float(hg.max(initial=0.0)), 1e-300))
    return hr, er, hg, eg


def _ratio(
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
    """Generated over reference with propagated errors; a grey band of +-`band`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = gen / ref
        err = np.abs(ratio) * np.hypot(ref_err / ref, gen_err / gen)
    ok = np.isfinite(ratio) & (ref > 0)
    if band is not None:
        ax.axhspan(1 - band, 1 + band, color="#e8eaef", zorder=0)
    ax.axhline(1.0, color=REFERENCE_COLOR, linewidth=0.8)
    ax.errorbar(
        x[ok],
        ratio[ok],
        yerr=np.where(np.isfinite(err), err, 0)[ok],
        xerr=None if xerr is None else xerr[ok],
        fmt="o",
        markersize=3.5,
        color=GENERATED_COLOR,
        linewidth=1.0,
    )
    ax.set_ylim(*ylim)
    ax.set_ylabel(label)


def _energy_label(c: Comparison) -> str:
    return f"primary energy E_p [{c.geometry.condition('energy').unit}]"


def _wide(values: np.ndarray) -> bool:
    low, high = float(np.min(values)), float(np.max(values))
    return low > 0 and high / low > 10


# --- conditions -------------------------------------------------------------------------------
@_styled
def conditions(c: Comparison) -> Figure:
    """The distributions of the scalar conditions (energy, and theta where present)."""
    names = [n for n in ("energy", "theta") if f"condition/{n}" in c.reference]
    fig = _figure("Conditions of the compared showers", c, 5.2 * len(names), 3.8)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        r = np.asarray(c.reference[f"condition/{name}"], dtype=np.float64)
        g = np.asarray(c.generated[f"condition/{name}"], dtype=np.float64)
        unit = c.geometry.condition(name).unit
        if name == "theta":
            r, g, unit = np.degrees(r), np.degrees(g), "deg"
        log = name == "energy" and _wide(np.concatenate([r, g]))
        _pair_hist(ax, c, r, g, _edges(r, g, 30, log=log))
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(f"{name} [{unit}]")
        ax.set_ylabel("normalised")
        ax.legend(loc="upper right")
    return fig


# --- response and resolution --------------------------------------------------------------------
@_styled
def response_vs_energy(c: Comparison) -> Figure:
    """Mean visible / primary energy in fine bins of the primary energy, with a ratio panel
    (generated / reference) and the response tolerance as a grey band."""
    er, eg = (
        np.asarray(s["condition/energy"], dtype=np.float64) for s in (c.reference, c.generated)
    )
    rr, rg = (
        np.asarray(s["total_energy"], dtype=np.float64) / e
        for s, e in ((c.reference, er), (c.generated, eg))
    )
    both = np.concatenate([er, eg])
    low, high = float(both.min()), float(both.max())
    n_bins = int(np.clip(min(len(er), len(eg)) // 40, 1, 20))
    if high <= low:
        edges = np.array([low - 0.5, high + 0.5])
    elif _wide(both):
        edges = np.geomspace(low, high, n_bins + 1)
    else:
        edges = np.linspace(low, high, n_bins + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)
    centre = 0.5 * (edges[1:] + edges[:-1])
    half = 0.5 * np.diff(edges)

    def profile(e: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.digitize(e, edges) - 1
        mean = np.full(len(centre), np.nan)
        err = np.full(len(centre), np.nan)
        for i in range(len(centre)):
            v = ratio[idx == i]
            if len(v) >= 2:
                mean[i], err[i] = v.mean(), v.std(ddof=1) / np.sqrt(len(v))
        return mean, err

    mr, sr = profile(er, rr)
    mg, sg = profile(eg, rg)
    fig = _figure("Visible / primary energy vs primary energy", c, 7.5, 5.4)
    top, bottom = _with_ratio(fig, fig.add_gridspec(1, 1)[0])
    top.errorbar(
        centre,
        mr,
        yerr=sr,
        xerr=half,
        fmt="o",
        color=REFERENCE_COLOR,
        markersize=4,
        label=c.labels[0],
    )
    top.errorbar(
        centre,
        mg,
        yerr=sg,
        xerr=half,
        fmt="s",
        color=GENERATED_COLOR,
        markersize=4,
        mfc="none",
        label=c.labels[1],
    )
    top.set_ylabel("mean E_vis / E_p")
    top.legend(loc="best")
    band = c.tolerances.response_deviation if c.tolerances else None
    _ratio(bottom, centre, mr, sr, mg, sg, xerr=half, band=band, ylim=(0.9, 1.1))
    bottom.set_xlabel(_energy_label(c))
    if _wide(both):
        bottom.set_xscale("log")
    return fig


def _response_resolution(c: Comparison, condition: str) -> Figure:
    bins = [b for b in c.response.get(condition, ()) if b.ok]
    if not bins:
        raise NotApplicableError(
            f"no {condition} bin holds at least {c.min_showers} showers of each set"
            if condition in c.response
            else f"no {condition} bins"
        )
    low = np.array([b.low for b in bins])
    high = np.array([b.high for b in bins])
    unit = c.geometry.condition(condition).unit
    if condition == "theta":
        low, high, unit = np.degrees(low), np.degrees(high), "deg"
    centre, half = 0.5 * (low + high), 0.5 * (high - low)
    fig = _figure(f"Response mu90 and resolution sigma90/mu90 vs {condition}", c, 12.0, 5.2)
    grid = fig.add_gridspec(1, 2)
    tol = c.tolerances
    for k, (key, ylabel, band) in enumerate(
        (
            ("mu90", "mu90 of E_vis / E_p", tol.response_deviation if tol else None),
            (
                "resolution",
                "sigma90 / mu90 of E_vis / E_p",
                tol.resolution_deviation if tol else None,
            ),
        )
    ):
        top, bottom = _with_ratio(fig, grid[k])
        values = np.array([getattr(b, key) for b in bins])
        errors = np.array([getattr(b, f"{key}_error") for b in bins])
        top.errorbar(
            centre,
            values[:, 0],
            yerr=errors[:, 0],
            xerr=half,
            fmt="o",
            color=REFERENCE_COLOR,
            markersize=4,
            label=c.labels[0],
        )
        top.errorbar(
            centre,
            values[:, 1],
            yerr=errors[:, 1],
            xerr=half,
            fmt="s",
            mfc="none",
            color=GENERATED_COLOR,
            markersize=4,
            label=c.labels[1],
        )
        top.set_ylabel(ylabel)
        top.legend(loc="best")
        lim = max(0.1, 2.5 * (band or 0.04))
        _ratio(
            bottom,
            centre,
            values[:, 0],
            errors[:, 0],
            values[:, 1],
            errors[:, 1],
            xerr=half,
            band=band,
            ylim=(1 - lim, 1 + lim),
        )
        bottom.set_xlabel(f"{condition} [{unit}]")
        if condition == "energy" and high.max() / max(low.min(), 1e-12) > 10:
            bottom.set_xscale("log")
    return fig


@_styled
def response_resolution_energy(c: Comparison) -> Figure:
    """mu90 and sigma90/mu90 of E_vis/E_p in the report's energy bins."""
    return _response_resolution(c, "energy")


@_styled
def response_resolution_theta(c: Comparison) -> Figure:
    """mu90 and sigma90/mu90 of E_vis/E_p in the report's angle bins."""
    if "condition/theta" not in c.reference:
        raise NotApplicableError("the geometry has no angle condition")
    return _response_resolution(c, "theta")


# --- cells ------------------------------------------------------------------------------------
@_styled
def cell_spectrum(c: Comparison) -> Figure:
    """Cells per shower in bins of cell energy (log bins, CELL_SPECTRUM_EDGES), with linear
    and logarithmic y axes and ratio panels."""
    if "cell_spectrum" not in c.reference:
        raise NotApplicableError("no cell spectrum among the features")
    edges = CELL_SPECTRUM_EDGES
    counts = []
    for f in (c.reference, c.generated):
        spectrum = np.asarray(f["cell_spectrum"], dtype=np.float64)
        n = max(len(spectrum), 1)
        total = spectrum.sum(axis=0)
        counts.append((total / n, np.sqrt(total) / n))
    (hr, er), (hg, eg) = counts
    centre = np.sqrt(edges[1:] * edges[:-1])
    fig = _figure("Cell energy spectrum", c, 12.0, 5.2)
    grid = fig.add_gridspec(1, 2)
    for k, log in enumerate((False, True)):
        top, bottom = _with_ratio(fig, grid[k])
        top.stairs(hr, edges, fill=True, color=REFERENCE_FILL, label=c.labels[0])
        top.stairs(hr, edges, color=REFERENCE_COLOR, linewidth=1.0)
        top.stairs(hg, edges, color=GENERATED_COLOR, linewidth=1.6, label=c.labels[1])
        top.axvline(HIT_THRESHOLD, color="#888", linestyle=":", linewidth=1.0)
        top.set_ylabel("cells per shower")
        top.set_yscale("log" if log else "linear")
        top.legend(loc="upper right", title=f"{'log' if log else 'linear'} scale")
        _ratio(bottom, centre, hr, er, hg, eg, ylim=(0.5, 1.5))
        bottom.set_xscale("log")
        bottom.set_xlabel("cell energy [GeV]")
    return fig


@_styled
def shower_shapes(c: Comparison) -> Figure:
    """Mean energy per cell column (x), row (y) and layer (z) per shower, on linear and log
    scales, with a ratio row."""
    keys = [("x_profile", "x (cell index)"), ("y_profile", "y (cell index)")]
    if "longitudinal_profile" in c.reference and c.geometry.readout == "layers":
        keys.append(("longitudinal_profile", "z (layer)"))
    if any(k not in c.reference for k, _ in keys):
        raise NotApplicableError("needs a cell grid (x, y profiles)")
    fig = _figure("Shower shapes: mean energy deposit along x, y and z", c, 4.1 * len(keys), 8.4)
    grid = fig.add_gridspec(3, len(keys), height_ratios=(3, 3, 1.3))
    for col, (key, xlabel) in enumerate(keys):
        stats = []
        for f in (c.reference, c.generated):
            p = np.asarray(f[key], dtype=np.float64)
            stats.append((p.mean(axis=0), p.std(axis=0, ddof=1) / np.sqrt(max(len(p), 1))))
        (mr, sr), (mg, sg) = stats
        index = np.arange(len(mr))
        edges = np.arange(len(mr) + 1) - 0.5
        ratio_ax = fig.add_subplot(grid[2, col])
        for row, log in enumerate((False, True)):
            ax = fig.add_subplot(grid[row, col], sharex=ratio_ax)
            ax.stairs(mr, edges, fill=True, color=REFERENCE_FILL, label=c.labels[0])
            ax.stairs(mr, edges, color=REFERENCE_COLOR, linewidth=1.0)
            ax.stairs(mg, edges, color=GENERATED_COLOR, linewidth=1.6, label=c.labels[1])
            ax.errorbar(index, mg, yerr=sg, fmt="none", ecolor=GENERATED_COLOR, linewidth=1.0)
            if log:
                ax.set_yscale("log")
                positive = np.concatenate([mr[mr > 0], mg[mg > 0]])
                if positive.size:
                    ax.set_ylim(positive.min() * 0.5, positive.max() * 3)
            ax.set_ylabel("mean energy [GeV]" + (" (log)" if log else ""))
            ax.tick_params(labelbottom=False)
            if col == 0 and row == 0:
                ax.legend(loc="upper right")
        _ratio(ratio_ax, index.astype(float), mr, sr, mg, sg, ylim=(0.5, 1.5))
        ratio_ax.set_xlabel(xlabel)
    return fig


def fixed_energy_windows(energy: np.ndarray) -> list[tuple[float, float, float]]:
    """Three primary energies to look at, as (centre, low, high) windows in GeV.

    Discrete energies (at most 20 distinct values): three of them (the 15th, 50th and 85th
    percentile of the distinct values), each exactly. Continuous spectra: three points at
    15 %, 50 % and 85 % of the range (in log when it spans more than a factor 10) with a
    window of +-5 % of the energy, at least +-2 GeV (the Conv2D paper's 50, 200, 500 GeV
    +-2 GeV; the 3DGAN's +-5 GeV)."""
    e = np.asarray(energy, dtype=np.float64)
    distinct = np.unique(e)
    if len(distinct) <= 20:
        picks = np.unique(
            distinct[np.round(np.array([0.15, 0.5, 0.85]) * (len(distinct) - 1)).astype(int)]
        )
        return [(float(v), float(v) * (1 - 1e-9), float(v) * (1 + 1e-9)) for v in picks]
    low, high = float(e.min()), float(e.max())
    fractions = np.array([0.15, 0.5, 0.85])
    if low > 0 and high / low > 10:
        centres = low * (high / low) ** fractions
    else:
        centres = low + fractions * (high - low)
    return [
        (float(x), float(x - max(2.0, 0.05 * x)), float(x + max(2.0, 0.05 * x))) for x in centres
    ]


@_styled
def hits_and_energy(c: Comparison) -> Figure:
    """Number of hits and visible energy of the showers at three primary energies."""
    windows = fixed_energy_windows(
        np.concatenate([c.reference["condition/energy"], c.generated["condition/energy"]])
    )
    fig = _figure("Hits and visible energy at three primary energies", c, 4.1 * len(windows), 7.6)
    axes = fig.subplots(2, len(windows), squeeze=False)
    for col, (centre, low, high) in enumerate(windows):
        picks = []
        for f in (c.reference, c.generated):
            e = np.asarray(f["condition/energy"])
            m = (e >= low) & (e <= high)
            picks.append(
                (
                    np.asarray(f["hits"], dtype=np.float64)[m],
                    np.asarray(f["total_energy"], dtype=np.float64)[m],
                )
            )
        (hr, tr), (hg, tg) = picks
        title = (
            f"E_p = {low:.4g}-{high:.4g} GeV"
            if high - low > 1e-6 * high
            else f"E_p = {centre:.4g} GeV"
        )
        for row, (r, g, xlabel) in enumerate(
            (
                (hr, hg, f"hits (cells > {HIT_THRESHOLD:g} GeV)"),
                (tr, tg, "visible energy E_vis [GeV]"),
            )
        ):
            ax = axes[row, col]
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            if min(len(r), len(g)) < 10:
                ax.text(
                    0.5,
                    0.5,
                    f"too few showers\n({len(r)} and {len(g)})",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="#777",
                )
                continue
            _pair_hist(ax, c, r, g, _edges(r, g, 30))
            ax.set_ylabel("normalised")
            ax.legend(loc="upper right")
    return fig


# --- features -------------------------------------------------------------------------------------
_FEATURE_LABELS = {
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


def _feature_label(key: str) -> str:
    label, unit = _FEATURE_LABELS.get(key, (key, ""))
    return f"{label} [{unit}]" if unit else label


@_styled
def feature_distributions(c: Comparison) -> Figure:
    """Histograms of the scalar features with their separation power."""
    keys = [k for k in _FEATURE_LABELS if c.has_scalar(k)]
    ncols = 3
    nrows = math.ceil(len(keys) / ncols)
    fig = _figure("Shower features", c, 4.1 * ncols, 3.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        r, g = c.scalar(key)
        _pair_hist(ax, c, r, g, _edges(r, g, 40))
        ax.set_xlabel(_feature_label(key))
        ax.yaxis.set_major_locator(NullLocator())  # shapes matter here, not the densities
        ax.yaxis.set_minor_locator(NullLocator())
        sep = c.separation.get(key)
        title = f"sep. power {sep[0]:.3f} ± {sep[1]:.3f}" if sep else None
        ax.legend(loc="upper right", title=title, title_fontsize=8, fontsize=7.5)
    for ax in axes[len(keys) :]:
        ax.set_axis_off()
    return fig


def _correlation(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    c = centred / np.where(norm > 0, norm, 1.0)
    corr = c.T @ c
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


@_styled
def correlations(c: Comparison) -> Figure:
    """Pearson correlations of the scalar features in each set, and reference minus
    generated (the 3DGAN's "Geant4 minus GAN" matrix)."""
    keys = [k for k in _FEATURE_LABELS if c.has_scalar(k)]
    scalars = c.scalars
    if scalars is None:
        from caloforge.validation.report import scalar_features

        scalars = (
            scalar_features(c.reference, c.geometry),
            scalar_features(c.generated, c.geometry),
        )
    keys = [k for k in keys if all(np.isfinite(s[k]).all() for s in scalars)]
    if len(keys) < 2 or min(len(s[keys[0]]) for s in scalars) < 3:
        raise NotApplicableError("needs at least two features and three showers per set")
    mats = [_correlation(np.stack([s[k] for k in keys], axis=1)) for s in scalars]
    diff = mats[0] - mats[1]
    # One matrix holds both sets (lower triangle: reference, upper: generated), the other
    # their difference with its values written in.
    k = len(keys)
    both = np.where(np.tril(np.ones((k, k), dtype=bool)), mats[0], mats[1])
    fig = _figure("Correlations of the shower features", c, 12.4, 6.4)
    axes = fig.subplots(1, 2)
    names = [_FEATURE_LABELS[key][0] for key in keys]
    limit = max(0.1, float(np.abs(diff).max()))
    panels = (
        (axes[0], both, f"lower: {c.labels[0]}, upper: {c.labels[1]}", Normalize(-1, 1)),
        (axes[1], diff, f"{c.labels[0]} - {c.labels[1]}", Normalize(-limit, limit)),
    )
    for ax, m, title, norm in panels:
        image = ax.imshow(m, cmap="RdBu_r", norm=norm)
        ax.set_title(title)
        ax.set_xticks(range(k), names, rotation=50, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        ax.minorticks_off()
        ax.tick_params(top=False, right=False)
        fig.colorbar(image, ax=ax, shrink=0.85).ax.minorticks_off()
    axes[0].plot([-0.5, k - 0.5], [-0.5, k - 0.5], color="black", linewidth=0.8)
    if k <= 16:
        for i in range(k):
            for j in range(k):
                value = diff[i, j]
                axes[1].text(
                    j,
                    i,
                    f"{value:.2f}".replace("-0.00", "0.00"),
                    ha="center",
                    va="center",
                    fontsize=6.5 if k > 10 else 7.5,
                    color="white" if abs(value) > 0.7 * limit else "black",
                )
    return fig


# --- cell-level: SSIM and projections ------------------------------------------------------------
@_styled
def ssim_scan(c: Comparison) -> Figure:
    """Mean SSIM of random pairs within each set and between the sets vs the dynamic range L
    (the Conv2D GAN paper's study: stable for L <= 1e-4 GeV; a generated set more alike
    than the reference lacks diversity)."""
    scan = c.ssim
    if scan is None:
        raise NotApplicableError("no SSIM scan (needs a cell grid and a subsample of 20 showers)")
    fig = _figure("Structural similarity (SSIM) vs dynamic range", c, 7.5, 4.8)
    ax = fig.add_subplot()
    ax.axvspan(
        scan.data_ranges.min() / 2,
        1e-4,
        color="#eef0f4",
        zorder=0,
        label="stable region (L <= 1e-4 GeV)",
    )
    curves: list[tuple[np.ndarray, np.ndarray, str, dict[str, Any]]] = [
        (
            scan.ref_ref,
            scan.ref_ref_error,
            f"{c.labels[0]} vs {c.labels[0]}",
            {"color": REFERENCE_COLOR, "marker": "o"},
        ),
        (
            scan.ref_gen,
            scan.ref_gen_error,
            f"{c.labels[0]} vs {c.labels[1]}",
            {"color": "#7b3294", "marker": "D"},
        ),
        (
            scan.gen_gen,
            scan.gen_gen_error,
            f"{c.labels[1]} vs {c.labels[1]}",
            {"color": GENERATED_COLOR, "marker": "s", "mfc": "none"},
        ),
    ]
    for values, errors, label, style in curves:
        ax.errorbar(
            scan.data_ranges, values, yerr=errors, label=label, markersize=5, linewidth=1.2, **style
        )
    ax.set_xscale("log")
    ax.set_xlim(scan.data_ranges.min() / 2, scan.data_ranges.max() * 2)
    ax.set_xlabel("dynamic range L [GeV]")
    ax.set_ylabel("mean SSIM of random pairs")
    ax.legend(loc="best", title=f"{c.subsample} showers per set")
    return fig


def _projections(image: np.ndarray) -> list[tuple[str, np.ndarray, str, str]]:
    """(name, 2D array with rows on the vertical axis, x label, y label) per projection."""
    if image.ndim == 2:
        return [("xy", image.T, "x (cell)", "y (cell)")]
    return [
        ("xy (summed over z)", image.sum(axis=2).T, "x (cell)", "y (cell)"),
        ("xz (summed over y)", image.sum(axis=1), "z (layer)", "x (cell)"),
        ("yz (summed over x)", image.sum(axis=0), "z (layer)", "y (cell)"),
    ]


def _log_norm(a: np.ndarray, b: np.ndarray) -> LogNorm:
    """A shared log colour scale over six decades below the larger peak."""
    top = max(float(a.max()), float(b.max()))
    positive = np.concatenate([a[a > 0], b[b > 0]])
    low = max(top * 1e-6, float(positive.min())) if positive.size else 1e-12
    return LogNorm(low, max(top, low * 10))


def _image(
    fig: Any,
    ax: Axes,
    data: np.ndarray,
    norm: Normalize,
    title: str,
    labels: tuple[str, str],
    *,
    cmap: str | None = None,
    bar: str = "energy [GeV]",
) -> None:
    shown = np.where(data > 0, data, np.nan) if cmap is None else data
    image = ax.imshow(
        shown, origin="lower", norm=norm, cmap=cmap, aspect="auto", interpolation="nearest"
    )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.minorticks_off()
    fig.colorbar(image, ax=ax, label=bar).ax.minorticks_off()


def _ratio_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b / a where a holds at least 1e-3 of its peak, NaN elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 1e-3 * a.max(), b / a, np.nan)


_RATIO_BAR = "ratio (cells > 1e-3 of peak)"


def _projection_figure(
    c: Comparison,
    images: tuple[np.ndarray, np.ndarray],
    titles: tuple[str, str],
    title: str,
    *,
    ratio: bool,
) -> Figure:
    """Reference, generated (and their ratio) side by side: one row each for showers with
    depth (xy, xz, yz in columns), one row of panels for depth-summed images."""
    pr, pg = _projections(images[0]), _projections(images[1])
    ratio_title = f"{c.labels[1]} / {c.labels[0]}"
    if len(pr) == 1:
        (name, a, xl, yl), (_, b, _, _) = pr[0], pg[0]
        fig = _figure(title, c, 12.4 if ratio else 8.6, 4.3)
        axes = fig.subplots(1, 3 if ratio else 2)
        norm = _log_norm(a, b)
        for ax, data, label in zip(axes, (a, b), titles, strict=False):
            _image(fig, ax, data, norm, f"{label}: {name}", (xl, yl))
        if ratio:
            _image(
                fig,
                axes[2],
                _ratio_image(a, b),
                Normalize(0.5, 1.5),
                ratio_title,
                (xl, yl),
                cmap="RdBu_r",
                bar=_RATIO_BAR,
            )
        return fig
    rows = [titles[0], titles[1]] + ([ratio_title] if ratio else [])
    fig = _figure(title, c, 12.4, 3.7 * len(rows) + 0.4)
    norms = [_log_norm(p[1], q[1]) for p, q in zip(pr, pg, strict=True)]
    for row, (subfig, label) in enumerate(
        zip(cast(Any, fig.subfigures(len(rows), 1)), rows, strict=True)
    ):
        subfig.suptitle(label, x=0.01, ha="left", fontsize=11)
        axes = subfig.subplots(1, len(pr))
        for col, (ax, (name, a, xl, yl), (_, b, _, _)) in enumerate(zip(axes, pr, pg, strict=True)):
            if row < 2:
                _image(subfig, ax, (a, b)[row], norms[col], name, (xl, yl))
            else:
                _image(
                    subfig,
                    ax,
                    _ratio_image(a, b),
                    Normalize(0.5, 1.5),
                    name,
                    (xl, yl),
                    cmap="RdBu_r",
                    bar=_RATIO_BAR,
                )
    return fig


@_styled
def projections_mean(c: Comparison) -> Figure:
    """Averaged 2D projections (xy, xz, yz) of the subsample, side by side, and their ratio."""
    if c.mean_images is None:
        raise NotApplicableError("no cell-level subsample (needs a cell grid and subsample > 0)")
    return _projection_figure(
        c,
        c.mean_images,
        c.labels,
        f"Averaged 2D projections ({c.subsample} showers per set)",
        ratio=True,
    )


def _conditions_text(conditions: Mapping[str, float]) -> str:
    parts = []
    for name, value in conditions.items():
        parts.append(
            f"θ = {math.degrees(value):.1f}°"
            if name == "theta"
            else f"E_p = {value:.4g} GeV"
            if name == "energy"
            else f"{name} {value:.3g}"
        )
    return ", ".join(parts)


@_styled
def projections_single(c: Comparison) -> Figure:
    """One shower of each set with similar conditions, as 2D projections side by side."""
    if c.single_showers is None:
        raise NotApplicableError("no cell-level subsample (needs a cell grid and subsample > 0)")
    titles = c.labels
    if c.single_conditions is not None:
        titles = (
            f"{c.labels[0]} ({_conditions_text(c.single_conditions[0])})",
            f"{c.labels[1]} ({_conditions_text(c.single_conditions[1])})",
        )
    return _projection_figure(
        c, c.single_showers, titles, "Single showers, 2D projections", ratio=False
    )


# --- LHCb -----------------------------------------------------------------------------------------
@_styled
def lhcb_features(c: Comparison) -> Figure:
    """The LHCb challenge's metrics: cluster asymmetries and widths along and across the
    transverse momentum, and the sparsity level (fraction of cells above a fraction alpha of
    the shower's energy) vs alpha."""
    keys = ("asymmetry_long", "asymmetry_trans", "width_long", "width_trans")
    if not all(c.has_scalar(k) for k in keys) or "sparsity_level" not in c.reference:
        raise NotApplicableError("needs an LHCb-like geometry (conditions momentum and point)")
    fig = _figure("LHCb challenge metrics", c, 12.4, 7.4)
    axes = fig.subplots(2, 3).ravel()
    for ax, key in zip(axes, keys, strict=False):
        r, g = c.scalar(key)
        _pair_hist(ax, c, r, g, _edges(r, g, 40))
        ax.set_xlabel(_feature_label(key))
        ax.set_ylabel("normalised")
        sep = c.separation.get(key)
        ax.legend(
            loc="upper right",
            title=f"sep. power {sep[0]:.3f}" if sep else None,
            title_fontsize=8,
            fontsize=8,
        )
    ax = axes[4]
    alphas = SPARSITY_ALPHAS
    for f, label, color, fill in (
        (c.reference, c.labels[0], REFERENCE_COLOR, True),
        (c.generated, c.labels[1], GENERATED_COLOR, False),
    ):
        s = np.asarray(f["sparsity_level"], dtype=np.float64)
        mean, std = s.mean(axis=0), s.std(axis=0)
        if fill:
            ax.fill_between(alphas, mean - std, mean + std, color=REFERENCE_FILL, alpha=0.8)
        ax.plot(
            alphas,
            mean,
            color=color,
            label=f"{label} (mean ± std)" if fill else f"{label} (mean)",
            linestyle="-" if fill else "--",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha (fraction of the shower energy)")
    ax.set_ylabel("fraction of cells with E >= alpha E_tot")
    ax.legend(loc="upper right")
    axes[5].set_axis_off()
    axes[5].text(
        0.0,
        0.9,
        "Asymmetry and widths with the impact point at the\n"
        "shower's core depth (features.LHCB_FEATURE_DEPTH_X0);\n"
        "sparsity levels as the challenge defines them.",
        va="top",
        fontsize=9,
        color="#444",
        transform=axes[5].transAxes,
    )
    return fig


PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec(
        "conditions",
        "Conditions",
        "Distributions of the primary energy (and angle) of the compared showers. Overall "
        "metrics assume these match; the binned ones do not.",
        conditions,
    ),
    PlotSpec(
        "response_vs_energy",
        "Visible / primary energy vs primary energy",
        "Mean E_vis/E_p in fine energy bins; ratio panel generated / reference with the "
        "response tolerance as a grey band.",
        response_vs_energy,
    ),
    PlotSpec(
        "mu90_energy",
        "mu90 and sigma90/mu90 vs energy",
        "Mean and relative width of the central 90 % of E_vis/E_p in the report's energy "
        "bins, with ratio panels and the tolerances as grey bands.",
        response_resolution_energy,
    ),
    PlotSpec(
        "mu90_theta",
        "mu90 and sigma90/mu90 vs angle",
        "As above, in bins of the polar angle.",
        response_resolution_theta,
    ),
    PlotSpec(
        "cell_spectrum",
        "Cell energy spectrum",
        "Cells per shower per cell-energy bin, linear and log scales; dotted line: the "
        f"hit threshold {HIT_THRESHOLD:g} GeV.",
        cell_spectrum,
    ),
    PlotSpec(
        "shower_shapes",
        "Shower shapes along x, y and z",
        "Mean energy per cell column, row and layer, linear and log; ratio row generated "
        "/ reference.",
        shower_shapes,
    ),
    PlotSpec(
        "hits_and_energy",
        "Hits and visible energy at three primary energies",
        "Showers in three windows of the primary energy (their counts in the legends).",
        hits_and_energy,
    ),
    PlotSpec(
        "features",
        "Shower features",
        "Distributions of the scalar features with their separation power.",
        feature_distributions,
    ),
    PlotSpec(
        "correlations",
        "Feature correlations",
        "Pearson correlations of the scalar features: reference below the diagonal, "
        "generated above it; right, reference minus generated (the 3DGAN's matrix).",
        correlations,
    ),
    PlotSpec(
        "ssim",
        "SSIM comparison",
        "Mean SSIM of random pairs of showers within and between the sets vs the "
        "dynamic range L: between-set similarity should match within-reference "
        "similarity; a generated set more alike than the reference lacks diversity.",
        ssim_scan,
    ),
    PlotSpec(
        "projections_mean",
        "Averaged 2D projections",
        "Mean shower of the subsample (projected on xy, xz and yz where it has depth; log "
        "colour scale), and generated / reference.",
        projections_mean,
    ),
    PlotSpec(
        "projections_single",
        "Single-shower 2D projections",
        "One reference shower near the median energy and the generated shower closest "
        "to it in the conditions.",
        projections_single,
    ),
    PlotSpec(
        "lhcb",
        "LHCb challenge metrics",
        "Cluster asymmetry and width along and across the transverse momentum, and the "
        "sparsity level vs alpha.",
        lhcb_features,
    ),
)
