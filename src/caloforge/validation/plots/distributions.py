"""Plots of distributions: the conditions, the response and resolution, the cell spectrum,
hits and visible energy, the scalar features and their correlations."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from caloforge.validation.features import CELL_SPECTRUM_EDGES, HIT_THRESHOLD, response_of_total
from caloforge.validation.formatting import measured_text
from caloforge.validation.metrics import correlation_matrix
from caloforge.validation.plots.base import (
    FEATURE_LABELS,
    GENERATED_COLOR,
    REFERENCE_COLOR,
    REFERENCE_FILL,
    Comparison,
    NotApplicableError,
    density_label,
    energy_label,
    feature_label,
    is_wide,
    new_figure,
    pair_hist,
    ratio_panel,
    scalar_features,
    shared_edges,
    styled,
    with_ratio,
)


# --- conditions -------------------------------------------------------------------------------
@styled
def plot_conditions(c: Comparison) -> Figure:
    """The distributions of the scalar conditions (energy, and theta where present)."""
    names = [n for n in ("energy", "theta") if f"condition/{n}" in c.reference]
    fig = new_figure("Conditions of the compared showers", c, 5.2 * len(names), 3.8)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        r = np.asarray(c.reference[f"condition/{name}"], dtype=np.float64)
        g = np.asarray(c.generated[f"condition/{name}"], dtype=np.float64)
        unit = c.geometry.condition(name).unit
        if name == "theta":
            r, g, unit = np.degrees(r), np.degrees(g), "deg"
        log = name == "energy" and is_wide(np.concatenate([r, g]))
        pair_hist(ax, c, r, g, shared_edges(r, g, 30, log=log))
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(f"{name} [{unit}]")
        ax.set_ylabel("normalised")
        ax.legend(loc="upper right")
    return fig


# --- response and resolution --------------------------------------------------------------------
@styled
def plot_response_vs_energy(c: Comparison) -> Figure:
    """Mean visible / primary energy in fine bins of the primary energy, with a ratio panel
    (generated / reference) and the response tolerance as a grey band."""
    er, eg = (
        np.asarray(s["condition/energy"], dtype=np.float64) for s in (c.reference, c.generated)
    )
    rr, rg = (
        response_of_total(s["total_energy"], e) for s, e in ((c.reference, er), (c.generated, eg))
    )
    both = np.concatenate([er, eg])
    low, high = float(both.min()), float(both.max())
    n_bins = int(np.clip(min(len(er), len(eg)) // 40, 1, 20))
    if high <= low:
        edges = np.array([low - 0.5, high + 0.5])
    elif is_wide(both):
        edges = np.geomspace(low, high, n_bins + 1)
    else:
        edges = np.linspace(low, high, n_bins + 1)
    edges[-1] = np.nextafter(edges[-1], np.inf)
    centre = 0.5 * (edges[1:] + edges[:-1])
    half = 0.5 * np.diff(edges)

    def binned_mean(e: np.ndarray, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean of `ratio` in each bin of `e` and its standard error (NaN below 2 showers)."""
        idx = np.digitize(e, edges) - 1
        mean = np.full(len(centre), np.nan)
        err = np.full(len(centre), np.nan)
        for i in range(len(centre)):
            v = ratio[idx == i]
            if len(v) >= 2:
                mean[i], err[i] = v.mean(), v.std(ddof=1) / np.sqrt(len(v))
        return mean, err

    mr, sr = binned_mean(er, rr)
    mg, sg = binned_mean(eg, rg)
    fig = new_figure("Visible / primary energy vs primary energy", c, 7.5, 5.4)
    top, bottom = with_ratio(fig, fig.add_gridspec(1, 1)[0])
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
    ratio_panel(bottom, centre, mr, sr, mg, sg, xerr=half, band=band, ylim=(0.9, 1.1))
    bottom.set_xlabel(energy_label(c))
    if is_wide(both):
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
    fig = new_figure(f"Response mu90 and resolution sigma90/mu90 vs {condition}", c, 12.0, 5.2)
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
        top, bottom = with_ratio(fig, grid[k])
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
        ratio_panel(
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


@styled
def plot_response_resolution_energy(c: Comparison) -> Figure:
    """mu90 and sigma90/mu90 of E_vis/E_p in the report's energy bins."""
    return _response_resolution(c, "energy")


@styled
def plot_response_resolution_theta(c: Comparison) -> Figure:
    """mu90 and sigma90/mu90 of E_vis/E_p in the report's angle bins."""
    if "condition/theta" not in c.reference:
        raise NotApplicableError("the geometry has no angle condition")
    return _response_resolution(c, "theta")


# --- cells ------------------------------------------------------------------------------------
@styled
def plot_cell_spectrum(c: Comparison) -> Figure:
    """Cells per shower in bins of cell energy (log bins, CELL_SPECTRUM_EDGES), with linear
    and logarithmic y axes and ratio panels."""
    if not c.has_vector("cell_spectrum"):
        raise NotApplicableError("no cell spectrum among the features")
    edges = CELL_SPECTRUM_EDGES
    counts = []
    for moments in c.vector_moments("cell_spectrum"):
        n = max(moments.n, 1)
        total = moments.total
        counts.append((total / n, np.sqrt(total) / n))
    (hr, er), (hg, eg) = counts
    centre = np.sqrt(edges[1:] * edges[:-1])
    fig = new_figure("Cell energy spectrum", c, 12.0, 5.2)
    grid = fig.add_gridspec(1, 2)
    positive = bool((hr > 0).any() or (hg > 0).any())  # all zero: no log axis (it warns)
    for k, log in enumerate((False, positive)):
        top, bottom = with_ratio(fig, grid[k])
        top.stairs(hr, edges, fill=True, color=REFERENCE_FILL, label=c.labels[0])
        top.stairs(hr, edges, color=REFERENCE_COLOR, linewidth=1.0)
        top.stairs(hg, edges, color=GENERATED_COLOR, linewidth=1.6, label=c.labels[1])
        top.axvline(HIT_THRESHOLD, color="#888", linestyle=":", linewidth=1.0)
        top.set_ylabel("cells per shower")
        top.set_yscale("log" if log else "linear")
        top.legend(loc="upper right", title=f"{'log' if log else 'linear'} scale")
        ratio_panel(bottom, centre, hr, er, hg, eg, ylim=(0.5, 1.5))
        bottom.set_xscale("log")
        bottom.set_xlabel("cell energy [GeV]")
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


@styled
def plot_hits_and_energy(c: Comparison) -> Figure:
    """Number of hits and visible energy of the showers at three primary energies."""
    windows = fixed_energy_windows(
        np.concatenate([c.reference["condition/energy"], c.generated["condition/energy"]])
    )
    fig = new_figure(
        "Hits and visible energy at three primary energies", c, 4.1 * len(windows), 7.6
    )
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
            pair_hist(ax, c, r, g, shared_edges(r, g, 30))
            ax.set_ylabel("normalised")
            ax.legend(loc="upper right")
    return fig


@styled
def plot_feature_distributions(c: Comparison) -> Figure:
    """Histograms of the scalar features with their separation power."""
    keys = [k for k in FEATURE_LABELS if c.has_scalar(k)]
    ncols = 3
    nrows = math.ceil(len(keys) / ncols)
    fig = new_figure("Shower features", c, 4.1 * ncols, 3.0 * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        r, g = c.scalar(key)
        pair_hist(ax, c, r, g, shared_edges(r, g, 40))
        ax.set_xlabel(feature_label(key))
        ax.set_ylabel(density_label(key))
        sep = c.separation.get(key)
        title = f"sep. power {measured_text(*sep)}" if sep else None
        ax.legend(loc="upper right", title=title, title_fontsize=8, fontsize=7.5)
    for ax in axes[len(keys) :]:
        ax.set_axis_off()
    return fig


@styled
def plot_correlations(c: Comparison) -> Figure:
    """Pearson correlations of the scalar features in each set, and reference minus
    generated (the 3DGAN's "Geant4 minus GAN" matrix)."""
    keys = [k for k in FEATURE_LABELS if c.has_scalar(k)]
    scalars = c.scalars
    if scalars is None:
        scalars = (
            scalar_features(c.reference, c.geometry),
            scalar_features(c.generated, c.geometry),
        )
    keys = [k for k in keys if all(np.isfinite(s[k]).all() for s in scalars)]
    if len(keys) < 2 or min(len(s[keys[0]]) for s in scalars) < 3:
        raise NotApplicableError("needs at least two features and three showers per set")
    mats = [correlation_matrix(np.stack([s[k] for k in keys], axis=1)) for s in scalars]
    diff = mats[0] - mats[1]
    # One matrix holds both sets (lower triangle: reference, upper: generated), the other
    # their difference with its values written in.
    k = len(keys)
    both = np.where(np.tril(np.ones((k, k), dtype=bool)), mats[0], mats[1])
    fig = new_figure("Correlations of the shower features", c, 12.4, 6.4)
    axes = fig.subplots(1, 2)
    names = [FEATURE_LABELS[key][0] for key in keys]
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
