"""Plots of shower images and the LHCb challenge's metrics: the SSIM scan, the averaged and
single-shower 2D projections, the cluster asymmetries, widths and sparsity levels."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from caloforge.geometry import Geometry
from caloforge.validation.features import SPARSITY_ALPHAS
from caloforge.validation.formatting import measured_text
from caloforge.validation.plots.base import (
    GENERATED_COLOR,
    REFERENCE_COLOR,
    REFERENCE_FILL,
    Comparison,
    NotApplicableError,
    density_label,
    feature_label,
    new_figure,
    pair_hist,
    shared_edges,
    styled,
)
from caloforge.validation.plots.shapes import cell_edges_mm, layer_edges_X0


# --- cell-level: SSIM and projections ------------------------------------------------------------
@styled
def plot_ssim_scan(c: Comparison) -> Figure:
    """Mean SSIM of random pairs within each set and between the sets vs the dynamic range L
    (the Conv2D GAN paper's study: stable for L <= 1e-4 GeV; a generated set more alike
    than the reference lacks diversity)."""
    scan = c.ssim
    if scan is None:
        raise NotApplicableError("no SSIM scan (needs a cell grid and a subsample of 20 showers)")
    fig = new_figure("Structural similarity (SSIM) vs dynamic range", c, 7.5, 4.8)
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


Projection = tuple[str, np.ndarray, np.ndarray, np.ndarray, str, str]


def _projections(image: np.ndarray, geometry: Geometry) -> list[Projection]:
    """(name, 2D array with rows on the vertical axis, x edges, y edges, x label, y label)
    per projection: x and y in mm, the depth in radiation lengths."""
    x, y = cell_edges_mm(geometry, 0), cell_edges_mm(geometry, 1)
    if image.ndim == 2:
        return [("xy", image.T, x, y, "x [mm]", "y [mm]")]
    z = layer_edges_X0(geometry)
    return [
        ("xy (summed over z)", image.sum(axis=2).T, x, y, "x [mm]", "y [mm]"),
        ("xz (summed over y)", image.sum(axis=1), z, x, "depth [X0]", "x [mm]"),
        ("yz (summed over x)", image.sum(axis=0), z, y, "depth [X0]", "y [mm]"),
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
    projection: Projection,
    *,
    cmap: str | None = None,
    bar: str = "energy [GeV]",
) -> None:
    """`data` drawn on the cells of `projection` (its edges and labels)."""
    _, _, x_edges, y_edges, x_label, y_label = projection
    shown = np.where(data > 0, data, np.nan) if cmap is None else data
    image = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(shown), norm=norm, cmap=cmap)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.minorticks_off()
    # A ratio map's colour scale is fixed: triangles at the bar's ends mark that values
    # beyond it are drawn in the end colours.
    extend = "neither" if cmap is None else "both"
    fig.colorbar(image, ax=ax, label=bar, extend=extend).ax.minorticks_off()


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
    pr, pg = (_projections(image, c.geometry) for image in images)
    ratio_title = f"{c.labels[1]} / {c.labels[0]}"
    if len(pr) == 1:
        a, b = pr[0][1], pg[0][1]
        fig = new_figure(title, c, 12.4 if ratio else 8.6, 4.3)
        axes = fig.subplots(1, 3 if ratio else 2)
        norm = _log_norm(a, b)
        for ax, data, label in zip(axes, (a, b), titles, strict=False):
            _image(fig, ax, data, norm, f"{label}: {pr[0][0]}", pr[0])
        if ratio:
            _image(
                fig,
                axes[2],
                _ratio_image(a, b),
                Normalize(0.5, 1.5),
                ratio_title,
                pr[0],
                cmap="RdBu_r",
                bar=_RATIO_BAR,
            )
        return fig
    rows = [titles[0], titles[1]] + ([ratio_title] if ratio else [])
    fig = new_figure(title, c, 12.4, 3.7 * len(rows) + 0.4)
    norms = [_log_norm(p[1], q[1]) for p, q in zip(pr, pg, strict=True)]
    for row, (subfig, label) in enumerate(
        zip(cast(Any, fig.subfigures(len(rows), 1)), rows, strict=True)
    ):
        subfig.suptitle(label, x=0.01, ha="left", fontsize=11)
        axes = subfig.subplots(1, len(pr))
        for col, (ax, p, q) in enumerate(zip(axes, pr, pg, strict=True)):
            if row < 2:
                _image(subfig, ax, (p[1], q[1])[row], norms[col], p[0], p)
            else:
                _image(
                    subfig,
                    ax,
                    _ratio_image(p[1], q[1]),
                    Normalize(0.5, 1.5),
                    p[0],
                    p,
                    cmap="RdBu_r",
                    bar=_RATIO_BAR,
                )
    return fig


@styled
def plot_projections_mean(c: Comparison) -> Figure:
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


@styled
def plot_projections_single(c: Comparison) -> Figure:
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
@styled
def plot_lhcb_features(c: Comparison) -> Figure:
    """The LHCb challenge's metrics: cluster asymmetries and widths along and across the
    transverse momentum, and the sparsity level (fraction of cells above a fraction alpha of
    the shower's energy) vs alpha."""
    keys = ("asymmetry_long", "asymmetry_trans", "width_long", "width_trans")
    if not all(c.has_scalar(k) for k in keys) or not c.has_vector("sparsity_level"):
        raise NotApplicableError("needs an LHCb-like geometry (conditions momentum and point)")
    fig = new_figure("LHCb challenge metrics", c, 12.4, 7.4)
    axes = fig.subplots(2, 3).ravel()
    for ax, key in zip(axes, keys, strict=False):
        r, g = c.scalar(key)
        pair_hist(ax, c, r, g, shared_edges(r, g, 40))
        ax.set_xlabel(feature_label(key))
        ax.set_ylabel(density_label(key))
        sep = c.separation.get(key)
        ax.legend(
            loc="upper right",
            title=f"sep. power {measured_text(*sep)}" if sep else None,
            title_fontsize=8,
            fontsize=8,
        )
    ax = axes[4]
    alphas = SPARSITY_ALPHAS
    for moments, label, color, fill in zip(
        c.vector_moments("sparsity_level"),
        c.labels,
        (REFERENCE_COLOR, GENERATED_COLOR),
        (True, False),
        strict=True,
    ):
        mean, std = moments.mean, moments.std()
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
