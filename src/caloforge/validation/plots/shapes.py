"""Shower shapes in the detector's own units: the mean energy along x and y (mm, cell index
on the top axis) and along the depth (radiation lengths, layer on the top axis), and the
radial profile about the shower axis (mm, Moliere radii on the top axis).

The geometry gives the units: cell sizes (`cell_size_mm`), the layers' thicknesses in X0
(`Layer.thickness_X0`) and their materials, from which the stack's effective Moliere
radius follows (`stack_moliere_radius_mm`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from caloforge.geometry import ES_MEV, Geometry
from caloforge.validation.plots.base import (
    GENERATED_COLOR,
    REFERENCE_COLOR,
    REFERENCE_FILL,
    Comparison,
    NotApplicableError,
    new_figure,
    ratio_panel,
    styled,
    with_ratio,
)

Mapping = tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


# --- the geometry's units ---------------------------------------------------------------------
def cell_edges_mm(geometry: Geometry, axis: int) -> np.ndarray:
    """Edges of the cells along `axis` (0 = x, 1 = y) in mm, 0 at the centre of the grid."""
    if geometry.cell_size_mm is None or geometry.readout == "voxels":
        raise NotApplicableError("needs a cell grid with a cell size")
    n = geometry.shape[axis]
    return (np.arange(n + 1) - n / 2.0) * geometry.cell_size_mm[axis]


def layer_edges_X0(geometry: Geometry) -> np.ndarray:
    """Depths of the layer boundaries from the front face in radiation lengths (at
    perpendicular incidence), n_layers + 1 values."""
    return np.concatenate([[0.0], np.cumsum([layer.thickness_X0 for layer in geometry.layers])])


def stack_moliere_radius_mm(geometry: Geometry) -> float:
    """The effective Moliere radius of the whole layer stack, mm: the layers mixed by mass
    (1/R_M = sum of w_i E_c,i / (E_s X0,i) over the mass fractions w_i, as for one layer),
    over the stack's mean density."""
    if not geometry.layers:
        raise NotApplicableError("the geometry has no layer structure")
    mass, ec_over_x0, thickness_cm = 0.0, 0.0, 0.0
    for layer in geometry.layers:
        p = layer.properties
        d = layer.thickness_mm / 10.0
        m = p.density * d  # g/cm2
        # ES / (RM in g/cm2) is the layer's mass-weighted E_c / X0.
        ec_over_x0 += m * ES_MEV / (p.RM_cm * p.density)
        mass += m
        thickness_cm += d
    rm_g = ES_MEV / (ec_over_x0 / mass)
    return 10.0 * rm_g / (mass / thickness_cm)


def _piecewise(edges: np.ndarray) -> Mapping:
    """Forward and inverse maps between a coordinate with bin `edges` and the bin index
    (bin i spans i - 0.5 .. i + 0.5), linear inside and extrapolated beyond the edges."""
    index = np.arange(len(edges)) - 0.5
    slope_low = 1.0 / (edges[1] - edges[0])
    slope_high = 1.0 / (edges[-1] - edges[-2])
    far = 1e6 * (edges[-1] - edges[0] + 1.0)
    xs = np.concatenate([[edges[0] - far], edges, [edges[-1] + far]])
    ys = np.concatenate([[index[0] - far * slope_low], index, [index[-1] + far * slope_high]])

    def forward(v: np.ndarray) -> np.ndarray:
        return np.interp(v, xs, ys)

    def inverse(v: np.ndarray) -> np.ndarray:
        return np.interp(v, ys, xs)

    return forward, inverse


def _top_axis(ax: Axes, mapping: Mapping, label: str) -> None:
    """A second x axis on top of `ax`, in the units `mapping` converts to."""
    top = ax.secondary_xaxis("top", functions=cast(Any, mapping))
    top.set_xlabel(label, fontsize=9)
    top.tick_params(labelsize=8)
    ax.tick_params(top=False)


def _pair_stairs(
    ax: Axes, c: Comparison, edges: np.ndarray, ref: np.ndarray, gen: np.ndarray
) -> None:
    ax.stairs(ref, edges, fill=True, color=REFERENCE_FILL, label=c.labels[0])
    ax.stairs(ref, edges, color=REFERENCE_COLOR, linewidth=1.0)
    ax.stairs(gen, edges, color=GENERATED_COLOR, linewidth=1.6, label=c.labels[1])


def _log_limits(ax: Axes, *curves: np.ndarray) -> None:
    positive = np.concatenate([v[v > 0] for v in curves])
    if positive.size:  # all zero (empty showers): a log axis has nothing to show, and warns
        ax.set_yscale("log")
        ax.set_ylim(positive.min() * 0.5, positive.max() * 3)


# --- shower shapes ----------------------------------------------------------------------------
@styled
def plot_shower_shapes(c: Comparison) -> Figure:
    """Mean energy per cell column (x), row (y) and layer (z) per shower, on linear and log
    scales with a ratio row; x and y in mm (cell index on top), z in X0 (layer on top)."""
    g = c.geometry
    if not (c.has_vector("x_profile") and c.has_vector("y_profile")):
        raise NotApplicableError("needs a cell grid (x, y profiles)")
    axes_spec: list[tuple[str, np.ndarray, str, Mapping, str, str]] = []
    for axis, name in ((0, "x"), (1, "y")):
        edges = cell_edges_mm(g, axis)
        axes_spec.append(
            (
                f"{name}_profile",
                edges,
                f"{name} [mm]",
                _piecewise(edges),
                f"{name} [cell index]",
                "mean energy per cell " + ("column" if name == "x" else "row"),
            )
        )
    if c.has_vector("longitudinal_profile") and g.readout == "layers":
        edges = layer_edges_X0(g)
        axes_spec.append(
            (
                "longitudinal_profile",
                edges,
                "depth [X0] (at normal incidence)",
                _piecewise(edges),
                "layer",
                "mean energy per layer",
            )
        )
    along = "x, y and depth" if len(axes_spec) == 3 else "x and y (summed over depth)"
    fig = new_figure(
        f"Shower shapes: mean energy deposit along {along}", c, 4.2 * len(axes_spec), 8.8
    )
    grid = fig.add_gridspec(3, len(axes_spec), height_ratios=(3, 3, 1.4))
    for col, (key, edges, xlabel, mapping, top_label, ylabel) in enumerate(axes_spec):
        (mr, sr), (mg, sg) = ((m.mean, m.standard_error()) for m in c.vector_moments(key))
        centre = 0.5 * (edges[1:] + edges[:-1])
        ratio_ax = fig.add_subplot(grid[2, col])
        for row, log in enumerate((False, True)):
            ax = fig.add_subplot(grid[row, col], sharex=ratio_ax)
            _pair_stairs(ax, c, edges, mr, mg)
            ax.errorbar(centre, mg, yerr=sg, fmt="none", ecolor=GENERATED_COLOR, linewidth=1.0)
            if log:
                _log_limits(ax, mr, mg)
            else:
                _top_axis(ax, mapping, top_label)
            ax.set_ylabel(f"{ylabel} [GeV]" + (" (log)" if log else ""))
            ax.tick_params(labelbottom=False)
            if col == 0 and row == 0:
                ax.legend(loc="upper right")
        ratio_panel(ratio_ax, centre, mr, sr, mg, sg, ylim=(0.5, 1.5))
        ratio_ax.set_xlabel(xlabel)
        ratio_ax.set_xlim(edges[0], edges[-1])
    return fig


# --- radial profile ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RadialProfile:
    """A set's radial profile about fixed axes, with the standard errors of the means over
    its showers: per ring, the mean energy per mm2 (`density`, GeV/mm2) and the fraction of
    the mean shower's energy within the ring's outer edge (`fraction`; its error by the
    delta method for a ratio of means)."""

    density: np.ndarray
    density_error: np.ndarray
    fraction: np.ndarray
    fraction_error: np.ndarray


def radial_edges(geometry: Geometry) -> np.ndarray:
    """Ring edges in mm: one cell pitch wide, out to half the grid's smaller side."""
    if geometry.cell_size_mm is None:
        raise NotApplicableError("the geometry has no cell size")
    half = 0.5 * min(
        geometry.shape[0] * geometry.cell_size_mm[0], geometry.shape[1] * geometry.cell_size_mm[1]
    )
    step = min(geometry.cell_size_mm)
    return np.arange(0.0, half + step, step)


def _rings(
    image: np.ndarray, geometry: Geometry, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ring of every cell of `image` ((nx, ny) or (nx, ny, layers)), flattened in its order,
    about the axis of `image` (each layer's energy-weighted centre): the ring index, -1 for
    cells beyond the last ring and for layers without energy; and each ring's area in mm2
    (its cells of all layers)."""
    if geometry.cell_size_mm is None:
        raise NotApplicableError("the geometry has no cell size")
    layers = image if image.ndim == 3 else image[:, :, None]
    x = 0.5 * (cell_edges_mm(geometry, 0)[1:] + cell_edges_mm(geometry, 0)[:-1])
    y = 0.5 * (cell_edges_mm(geometry, 1)[1:] + cell_edges_mm(geometry, 1)[:-1])
    index = np.full(layers.shape, -1, dtype=np.int64)
    for k in range(layers.shape[2]):
        e = np.asarray(layers[:, :, k], dtype=np.float64)
        total = e.sum()
        if total <= 0:
            continue
        cx = (e.sum(axis=1) * x).sum() / total
        cy = (e.sum(axis=0) * y).sum() / total
        r = np.hypot(x[:, None] - cx, y[None, :] - cy)
        ring = np.searchsorted(edges, r, side="right") - 1
        index[:, :, k] = np.where((r >= edges[0]) & (r <= edges[-1]), ring, -1)
        # A cell on the outer edge belongs to the last ring (np.histogram's closed last bin).
        index[:, :, k] = np.minimum(index[:, :, k], len(edges) - 2)
    flat = index.reshape(-1)
    cells = np.bincount(flat[flat >= 0], minlength=len(edges) - 1)
    return flat, cells * geometry.cell_size_mm[0] * geometry.cell_size_mm[1]


def radial_profile(
    image: np.ndarray, geometry: Geometry, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Energy of a mean shower `image` ((nx, ny) or (nx, ny, layers), GeV) in rings about
    its axis: per ring, the energy per mm2 of the cells whose centres lie in it, and the
    energy summed in it. The axis is the energy-weighted centre of each layer (of the
    image for a depth-summed one), so an inclined shower is measured about its own axis."""
    index, area = _rings(image, geometry, edges)
    inside = index >= 0
    flat = np.asarray(image, dtype=np.float64).reshape(-1)
    energy = np.bincount(index[inside], weights=flat[inside], minlength=len(edges) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_area = np.where(area > 0, energy / area, np.nan)
    return per_area, energy


def radial_profiles(
    showers: np.ndarray, geometry: Geometry, edges: np.ndarray, chunk: int = 256
) -> RadialProfile:
    """The radial profile of `showers` ((n, nx, ny[, layers]), GeV) about the axis of their
    mean shower, with standard errors over the showers. The axis is held fixed, so that
    each ring's mean energy is that of the mean shower (`radial_profile`) and its error
    that of a mean of n independent values."""
    n = len(showers)
    flat = showers.reshape(n, -1)
    mean_image = showers.mean(axis=0, dtype=np.float64)
    index, area = _rings(mean_image, geometry, edges)
    n_rings = len(edges) - 1
    member = np.zeros((flat.shape[1], n_rings))
    inside = np.flatnonzero(index >= 0)
    member[inside, index[inside]] = 1.0
    rings = np.empty((n, n_rings))
    for i in range(0, n, chunk):
        rings[i : i + chunk] = flat[i : i + chunk].astype(np.float64) @ member
    total = flat.sum(axis=1, dtype=np.float64)
    scale = 1.0 / np.sqrt(max(n - 1, 1) * n)  # std (ddof 1) / sqrt(n) of a centred sum
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.where(area > 0, rings.mean(axis=0) / area, np.nan)
        density_error = np.where(
            area > 0,
            np.sqrt(((rings - rings.mean(axis=0)) ** 2).sum(axis=0)) * scale / area,
            np.nan,
        )
        within = np.cumsum(rings, axis=1)
        mean_total = max(float(total.mean()), 1e-300)
        fraction = within.mean(axis=0) / mean_total
        residual = within - fraction * total[:, None]
        fraction_error = (
            np.sqrt(((residual - residual.mean(axis=0)) ** 2).sum(axis=0)) * scale / mean_total
        )
    return RadialProfile(density, density_error, fraction, fraction_error)


@styled
def plot_radial_profile(c: Comparison) -> Figure:
    """Energy density vs distance from the shower axis, and the fraction of the energy
    contained within it, in mm and in Moliere radii, of the subsample's showers: with the
    standard errors of the means when the comparison holds their profiles
    (`Comparison.radial_profiles`), of the mean showers without errors otherwise."""
    if c.mean_images is None and c.radial_profiles is None:
        raise NotApplicableError("no cell-level subsample (needs a cell grid and subsample > 0)")
    g = c.geometry
    if g.cell_size_mm is None or not g.layers:
        raise NotApplicableError("needs a cell grid with a layer structure")
    rm = stack_moliere_radius_mm(g)
    edges = radial_edges(g)
    if c.radial_profiles is not None:
        pr, pg = c.radial_profiles
    else:
        assert c.mean_images is not None
        pr, pg = (_profile_without_errors(image, g, edges) for image in c.mean_images)
    fig = new_figure("Radial profile about the shower axis", c, 12.4, 5.6)
    grid = fig.add_gridspec(1, 2)
    to_rm: Mapping = (lambda r: r / rm, lambda u: u * rm)
    panels = (
        (pr.density, pr.density_error, pg.density, pg.density_error, True),
        (pr.fraction, pr.fraction_error, pg.fraction, pg.fraction_error, False),
    )
    for k, (ref, ref_err, gen, gen_err, log) in enumerate(panels):
        ref, ref_err, gen, gen_err = (np.nan_to_num(v) for v in (ref, ref_err, gen, gen_err))
        top, bottom = with_ratio(fig, grid[k])
        if log:
            _pair_stairs(top, c, edges, ref, gen)
            centre = 0.5 * (edges[1:] + edges[:-1])
            top.errorbar(centre, gen, yerr=gen_err, fmt="none", ecolor=GENERATED_COLOR, lw=1.0)
            _log_limits(top, ref, gen)
            ylabel = "mean energy density [GeV/mm²] (log)"
        else:
            centre = edges[1:]  # contained within the ring's outer edge
            top.errorbar(
                centre,
                ref,
                yerr=ref_err,
                color=REFERENCE_COLOR,
                marker="o",
                markersize=3.5,
                capsize=0,
                label=c.labels[0],
            )
            top.errorbar(
                centre,
                gen,
                yerr=gen_err,
                color=GENERATED_COLOR,
                marker="s",
                mfc="none",
                markersize=3.5,
                linestyle="--",
                capsize=0,
                label=c.labels[1],
            )
            top.axhline(0.9, color="#888", linestyle=":", linewidth=1.0)
            top.axvline(rm, color="#888", linestyle=":", linewidth=1.0)
            top.set_ylim(0.0, 1.05)
            ylabel = "fraction of the energy within r"
        top.set_ylabel(ylabel)
        top.legend(loc="upper right" if log else "lower right")
        _top_axis(top, to_rm, "r [Moliere radii]")
        ratio_panel(
            bottom, centre, ref, ref_err, gen, gen_err, ylim=(0.5, 1.5) if log else (0.9, 1.1)
        )
        bottom.set_xlabel("distance from the shower axis r [mm]")
        bottom.set_xlim(0.0, edges[-1])
    return fig


def _profile_without_errors(image: np.ndarray, g: Geometry, edges: np.ndarray) -> RadialProfile:
    """The radial profile of a mean shower alone (no showers, so no errors: zeros)."""
    density, energy = radial_profile(image, g, edges)
    # Of the whole shower's energy, the grid's corners beyond the last ring included.
    fraction = np.cumsum(energy) / max(float(np.sum(image)), 1e-300)
    zeros = np.zeros_like(fraction)
    return RadialProfile(density, zeros, fraction, zeros)
