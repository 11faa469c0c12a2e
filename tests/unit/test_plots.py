"""Validation plots: every plot draws from a `Comparison` of small simulated sets, returns a
Figure (PNG-able), says why when it does not apply, and leaves matplotlib's settings alone."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from caloforge.geometry import PRESETS
from caloforge.simulation.simulator import ShowerSimulator
from caloforge.validation import metrics
from caloforge.validation.config import Tolerances
from caloforge.validation.features import scalar_features, shower_features, voxel_features
from caloforge.validation.plots import (
    PLOTS,
    Comparison,
    NotApplicableError,
    fixed_energy_windows,
    plot_feature_distributions,
    plot_lhcb_features,
    plot_projections_mean,
    plot_radial_profile,
    plot_response_resolution_theta,
    plot_shower_shapes,
    plot_ssim_scan,
    png_bytes,
)
from caloforge.validation.plots.base import ratio_panel, ratio_range
from caloforge.validation.plots.shapes import (
    cell_edges_mm,
    layer_edges_X0,
    radial_edges,
    radial_profile,
    radial_profiles,
    stack_moliere_radius_mm,
)
from caloforge.validation.verdicts import response_bins

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def simulated(geometry: str, n: int, seed: int, **ranges: tuple[float, float]) -> tuple:
    """n showers of a preset with conditions drawn uniformly in `ranges`, and their features."""
    g = PRESETS[geometry]
    rng = np.random.default_rng(seed)
    conditions = {"energy": rng.uniform(*ranges.get("energy", (20.0, 60.0)), n)}
    if g.has_condition("theta"):
        conditions["theta"] = rng.uniform(*ranges.get("theta", (1.2, 1.9)), n)
    if g.has_condition("point"):
        conditions["point"] = rng.uniform(-5.0, 5.0, (n, 2))
        direction = rng.normal(0.0, 0.2, (n, 2))
        pz = conditions["energy"] / np.sqrt(1.0 + (direction**2).sum(axis=1))
        conditions["momentum"] = np.column_stack([direction * pz[:, None], pz])
    showers = ShowerSimulator(g).simulate(conditions, rng)
    return showers, shower_features(showers, conditions, g)


def comparison(geometry: str, n: int = 120, *, cells: bool = True) -> Comparison:
    g = PRESETS[geometry]
    ref_showers, ref = simulated(geometry, n, 1)
    gen_showers, gen = simulated(geometry, n, 2)
    ref_s, gen_s = scalar_features(ref, g), scalar_features(gen, g)
    response = {}
    for name, edges in (("energy", np.array([20.0, 40.0, 60.0])), ("theta", np.array([1.2, 1.9]))):
        if f"condition/{name}" in ref:
            response[name] = response_bins(
                name,
                ref_s["response"],
                gen_s["response"],
                ref[f"condition/{name}"],
                gen[f"condition/{name}"],
                edges,
                tolerances=Tolerances(),
                min_showers=20,
                significance=2.0,
                seed=0,
            )
    extra = {}
    if cells:
        extra = {
            "mean_images": (ref_showers.mean(axis=0), gen_showers.mean(axis=0)),
            "radial_profiles": tuple(
                radial_profiles(x, g, radial_edges(g)) for x in (ref_showers, gen_showers)
            ),
            "single_showers": (ref_showers[0], gen_showers[0]),
            "single_conditions": ({"energy": 30.0}, {"energy": 31.0}),
            "subsample": n,
            "ssim": metrics.ssim_scan(
                ref_showers, gen_showers, n_pairs=20, data_ranges=(1e-5, 1e-3)
            ),
        }
    return Comparison(
        geometry=g,
        reference=ref,
        generated=gen,
        labels=("Geant4", "GAN"),
        scalars=(ref_s, gen_s),
        separation={"response": (0.01, 0.002)},
        response=response,
        tolerances=Tolerances(),
        min_showers=20,
        **extra,
    )


@pytest.fixture(scope="module")
def clic() -> Comparison:
    return comparison("clic-25")


def test_every_plot_draws_a_figure_or_says_why_not(clic):
    drawn, skipped = [], {}
    before = dict(matplotlib.rcParams)
    for spec in PLOTS:
        try:
            figure = spec.draw(clic)
        except NotApplicableError as exc:
            skipped[spec.name] = str(exc)
            continue
        assert isinstance(figure, Figure), spec.name
        assert figure.axes and figure.get_suptitle(), spec.name
        drawn.append(spec.name)
    # Rendering costs about a second a figure: two here, all of them in the CLI test.
    for name in ("response_vs_energy", "projections_mean"):
        figure = next(spec for spec in PLOTS if spec.name == name).draw(clic)
        assert png_bytes(figure).startswith(PNG_SIGNATURE), name
    # clic-25 has no angle and no LHCb conditions; everything else applies.
    assert set(skipped) == {"mu90_theta", "lhcb"}
    assert "angle" in skipped["mu90_theta"] and "LHCb" in skipped["lhcb"]
    assert len(drawn) == len(PLOTS) - 2
    assert dict(matplotlib.rcParams) == before  # the style was local to each figure


def test_plot_names_are_unique_files_and_each_has_a_caption():
    names = [spec.name for spec in PLOTS]
    assert len(set(names)) == len(names)
    assert all(spec.title and spec.caption for spec in PLOTS)


def test_cell_level_plots_need_the_subsample():
    bare = comparison("clic-25", n=60, cells=False)
    for draw in (plot_projections_mean, plot_ssim_scan, plot_radial_profile):
        with pytest.raises(NotApplicableError, match=r"subsample|SSIM"):
            draw(bare)


def test_the_lhcb_metrics_are_drawn_for_lhcb_30():
    lhcb = comparison("lhcb-30", n=150)
    figure = plot_lhcb_features(lhcb)
    assert png_bytes(figure).startswith(PNG_SIGNATURE)
    # Depth-summed images: one projection (xy), so one column per row.
    assert len(plot_projections_mean(lhcb).axes) == 3 * 2  # 3 rows of image + colour bar


def test_voxel_sets_get_the_plots_that_need_no_cell_grid():
    """CaloChallenge-like showers: the flat (n, voxels) cells of 25 layers of one voxel."""
    g = PRESETS["clic-25"]
    layers = [{"id": i, "r_edges": [0.0, 1000.0], "n_bin_alpha": 1} for i in range(25)]
    voxel = dataclasses.replace(
        g, name="voxels", shape=(25,), readout="voxels", layers=(), extra={"layers": layers}
    )
    sets = []
    for seed in (1, 2):
        showers, features = simulated("clic-25", 100, seed)
        sets.append(
            voxel_features(
                showers.sum(axis=(1, 2)), {"energy": features["condition/energy"]}, voxel
            )
        )
    c = Comparison(geometry=voxel, reference=sets[0], generated=sets[1])
    drawn, skipped = [], []
    for spec in PLOTS:
        try:
            assert isinstance(spec.draw(c), Figure)
            drawn.append(spec.name)
        except NotApplicableError:
            skipped.append(spec.name)
    assert {"cell_spectrum", "features", "hits_and_energy", "correlations"} <= set(drawn)
    assert {"shower_shapes", "radial_profile", "projections_mean", "ssim", "lhcb"} <= set(skipped)


def test_the_angle_plot_is_drawn_for_clic_angle_51():
    angle = comparison("clic-angle-51", n=60, cells=False)
    assert isinstance(plot_response_resolution_theta(angle), Figure)


def test_fixed_energy_windows_pick_three_energies():
    discrete = np.repeat([50.0, 100.0, 200.0, 500.0], 10)
    windows = fixed_energy_windows(discrete)
    assert [w[0] for w in windows] == [50.0, 200.0, 500.0]
    for _, low, high in windows:
        assert ((discrete >= low) & (discrete <= high)).sum() == 10  # that energy only
    continuous = np.random.default_rng(0).uniform(100.0, 200.0, 1000)
    windows = fixed_energy_windows(continuous)
    assert len(windows) == 3
    for centre, low, high in windows:
        assert low < centre < high and high - low >= 4.0  # at least +-2 GeV
    assert windows[0][0] < windows[1][0] < windows[2][0]


def test_importing_the_plots_changes_no_matplotlib_setting():
    code = (
        "import matplotlib; before = dict(matplotlib.rcParams); "
        "import caloforge.validation.plots; "
        "assert dict(matplotlib.rcParams) == before, 'rcParams changed on import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_report_imports_matplotlib_only_to_draw():
    code = (
        "import sys, caloforge.validation.report; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- what is off scale is shown ---------------------------------------------------------------
def test_a_ratio_panel_widens_its_range_to_show_nearby_points():
    assert ratio_range(np.array([0.95, 1.05]), (0.9, 1.1)) == (0.9, 1.1)
    low, high = ratio_range(np.array([1.0, 1.32]), (0.9, 1.1))
    assert low == 0.9 and 1.32 < high <= 1.4
    # Beyond four half-widths a point does not widen the range: it gets an arrow instead.
    assert ratio_range(np.array([1.0, 8.35]), (0.9, 1.1)) == (0.9, 1.1)
    assert ratio_range(np.array([-3.0, 0.02]), (0.5, 1.5))[0] == 0.0  # never below 0


def test_a_ratio_panel_marks_every_point_beyond_its_range():
    figure = Figure()
    ax = figure.add_subplot()
    x = np.arange(5.0)
    ref = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    gen = np.array([1.02, 1.3, 8.35, 0.01, 0.5])  # in, widened to, above, below, no reference
    ratio_panel(ax, x, ref, ref * 0.01, gen, gen * 0.01, ylim=(0.9, 1.1))
    low, high = ax.get_ylim()
    assert low <= 0.9 and 1.3 < high <= 1.4
    arrows = [line.get_marker() for line in ax.lines if line.get_marker() in ("^", "v")]
    assert sorted(arrows) == ["^", "v"]
    texts = [t.get_text() for t in ax.texts]
    assert "8.35" in texts and "0.0100" in texts  # each arrow says its value
    assert any("2 off scale" in t and "1 with an empty reference" in t for t in texts)
    # The points inside the range are drawn as points: the two in range.
    points = ax.containers[0].lines[0].get_xdata()
    assert sorted(points) == [0.0, 1.0]


def test_a_projection_ratio_colour_bar_shows_that_it_is_clipped(clic):
    figure = plot_projections_mean(clic)
    extends = {getattr(ax, "_colorbar", None) and ax._colorbar.extend for ax in figure.axes}
    assert "both" in extends  # the ratio maps' bars end in triangles


# --- physical axes ------------------------------------------------------------------------------
def test_the_moliere_radius_of_a_stack_of_one_layer_kind_is_that_layers():
    uniform = PRESETS["lhcb-30"]  # 66 identical Pb/scintillator layers
    assert stack_moliere_radius_mm(uniform) == pytest.approx(
        10.0 * uniform.layers[0].properties.RM_cm, rel=1e-12
    )
    clic = PRESETS["clic-25"]  # thin and thick W layers: between the two
    rms = sorted({10.0 * layer.properties.RM_cm for layer in clic.layers})
    assert len(rms) == 2 and rms[0] < stack_moliere_radius_mm(clic) < rms[1]


def test_a_radial_profile_is_measured_about_the_showers_own_axis():
    g = PRESETS["clic-25"]
    edges = np.arange(0.0, 60.0, g.cell_size_mm[0])
    point = np.zeros(g.shape)
    point[12, 12, :] = 1.0
    density, energy = radial_profile(point, g, edges)
    assert energy[0] == pytest.approx(25.0) and energy[1:].sum() == 0.0
    assert density[0] == pytest.approx(25.0 / (25 * g.cell_size_mm[0] * g.cell_size_mm[1]))
    # A spread shower moved by three cells, and tilted layer by layer, has the same profile.
    rng = np.random.default_rng(0)
    core = rng.uniform(0.0, 1.0, (7, 7, g.shape[2]))
    centred, tilted = np.zeros(g.shape), np.zeros(g.shape)
    centred[9:16, 9:16] = core
    for k in range(g.shape[2]):
        tilted[12:19, 6 + k // 5 : 13 + k // 5, k] = core[:, :, k]
    assert np.allclose(radial_profile(centred, g, edges)[1], radial_profile(tilted, g, edges)[1])


def test_shower_shapes_are_drawn_in_mm_and_radiation_lengths(clic):
    g = clic.geometry
    figure = plot_shower_shapes(clic)
    labels = {ax.get_xlabel(): ax for ax in figure.axes}
    half = 0.5 * g.shape[0] * g.cell_size_mm[0]
    assert labels["x [mm]"].get_xlim() == pytest.approx((-half, half))
    depth = labels["depth [X0] (at normal incidence)"].get_xlim()
    assert depth == pytest.approx((0.0, g.depth_X0))
    assert layer_edges_X0(g)[-1] == pytest.approx(g.depth_X0)
    # The cell index and the layer beside them, on secondary axes on top.
    tops = [
        child.get_xlabel() for ax in figure.axes for child in ax.child_axes if child.get_xlabel()
    ]
    assert sorted(tops) == ["layer", "x [cell index]", "y [cell index]"]


def test_the_radial_profile_is_in_mm_and_moliere_radii(clic):
    figure = plot_radial_profile(clic)
    xlabels = {ax.get_xlabel() for ax in figure.axes}
    assert "distance from the shower axis r [mm]" in xlabels
    tops = [child.get_xlabel() for ax in figure.axes for child in ax.child_axes]
    assert tops.count("r [Moliere radii]") == 2


def test_the_radial_profile_has_error_bars_and_draws_without_them(clic):
    def bars(figure):  # the error segments of non-zero length of every panel
        return sum(
            int(np.ptp(segment[:, 1]) > 0)
            for ax in figure.axes
            for c in ax.collections
            if hasattr(c, "get_segments")
            for segment in c.get_segments()
        )

    with_errors = plot_radial_profile(clic)
    without = plot_radial_profile(dataclasses.replace(clic, radial_profiles=None))
    rings = len(radial_edges(clic.geometry)) - 1
    # The generated density, both fractions and both ratios; without profiles, the ratios'
    # errors from nothing: none.
    assert bars(with_errors) >= 3 * rings and bars(without) == 0


def test_radial_profile_errors_are_those_of_means_over_the_showers():
    g = PRESETS["clic-25"]
    showers, _ = simulated("clic-25", 30, 4)
    edges = radial_edges(g)
    profile = radial_profiles(showers, g, edges)
    mean = showers.mean(axis=0, dtype=np.float64)
    density, energy = radial_profile(mean, g, edges)
    np.testing.assert_allclose(profile.density, density, rtol=1e-12)
    np.testing.assert_allclose(profile.fraction, np.cumsum(energy) / mean.sum(), rtol=1e-12)
    # Each shower's rings about the mean shower's axis (per layer), by np.histogram.
    x, y = (0.5 * (e[1:] + e[:-1]) for e in (cell_edges_mm(g, 0), cell_edges_mm(g, 1)))
    rings, cells = np.zeros((len(showers), len(edges) - 1)), np.zeros(len(edges) - 1)
    for k in range(g.shape[2]):
        layer = mean[:, :, k]
        cx = (layer.sum(axis=1) * x).sum() / layer.sum()
        cy = (layer.sum(axis=0) * y).sum() / layer.sum()
        r = np.hypot(x[:, None] - cx, y[None, :] - cy).ravel()
        cells += np.histogram(r, edges)[0]
        for i, shower in enumerate(showers):
            rings[i] += np.histogram(r, edges, weights=shower[:, :, k].ravel().astype(np.float64))[
                0
            ]
    n, area = len(showers), cells * g.cell_size_mm[0] * g.cell_size_mm[1]
    np.testing.assert_allclose(
        profile.density_error, rings.std(axis=0, ddof=1) / np.sqrt(n) / area, rtol=1e-9
    )
    # The fraction A / B of two means: var = (var a - 2 f cov(a, b) + f^2 var b) / (n B^2).
    within, total = np.cumsum(rings, axis=1), showers.reshape(n, -1).sum(axis=1, dtype=np.float64)
    f = within.mean(axis=0) / total.mean()
    cov = np.array([np.cov(within[:, j], total) for j in range(within.shape[1])])
    variance = cov[:, 0, 0] - 2 * f * cov[:, 0, 1] + f**2 * cov[:, 1, 1]
    np.testing.assert_allclose(
        profile.fraction_error, np.sqrt(variance / n) / total.mean(), rtol=1e-6, atol=1e-12
    )
    # Showers all alike: nothing to be uncertain about.
    same = radial_profiles(np.repeat(showers[:1], 5, axis=0), g, edges)
    assert np.nanmax(same.density_error) < 1e-12 * np.nanmax(same.density)
    assert same.fraction_error.max() < 1e-12


def test_every_feature_histogram_has_a_y_label(clic):
    figure = plot_feature_distributions(clic)
    shown = [ax for ax in figure.axes if ax.axison]
    assert len(shown) >= 6
    for ax in shown:
        assert ax.get_ylabel().startswith("normalised"), ax.get_xlabel()
        assert ax.get_yticks().size > 0
    assert any(ax.get_ylabel() == "normalised [1/mm]" for ax in shown)


def test_projections_are_drawn_in_mm_and_radiation_lengths(clic):
    g = clic.geometry
    figure = plot_projections_mean(clic)
    images = [ax for ax in figure.axes if ax.get_xlabel()]
    assert {ax.get_xlabel() for ax in images} == {"x [mm]", "depth [X0]"}
    depth = next(ax for ax in images if ax.get_xlabel() == "depth [X0]")
    assert depth.get_xlim() == pytest.approx((0.0, g.depth_X0))
    half = 0.5 * g.shape[0] * g.cell_size_mm[0]  # the xz panel: x along its vertical axis
    assert depth.get_ylim() == pytest.approx((-half, half))
