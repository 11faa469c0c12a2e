"""The CaloChallenge protocol against numbers computed by the reference code.

The reference numbers below were computed once, on the seeded inputs of `_showers` (400
showers per set, the binning of the challenge's data set 1 photons, threshold 1 MeV), with:
- CaloChallenge/homepage code/ at commit 9b41df72a03aeecb48bfbaa946f9792f255e0ba7:
  HighLevelFeatures.CalculateFeatures, then evaluate_plotting_helper's plot_Etot_Einc,
  plot_E_layers, plot_ECEtas, plot_ECPhis, plot_ECWidthEtas, plot_ECWidthPhis, plot_sparsity,
  plot_ECR, plot_ECWidthR and plot_cell_dist (mode hist-chi, dataset 1-photons, x_scale log),
  the separation powers read from the histogram_chi2 file they write; evaluate.py's
  prepare_high_data_for_classifier for the high-level vectors;
- jetnet 0.2.5 (pip), jetnet.evaluation.fpd(ref, gen, min_samples=1000, max_samples=5000)
  and kpd(ref, gen, batch_size=1000), default seed 42; numpy 2.4.6, scipy 1.17.1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloforge.data.formats.calochallenge import Binning, BinningLayer, read_binning
from caloforge.validation.challenge import distances, histograms
from caloforge.validation.challenge.classifier import recipe_classifier_test
from caloforge.validation.challenge.features import (
    ChallengeLayout,
    challenge_features,
    high_level_names,
    high_level_vector,
    threshold,
)

# Data set 1 photons: layers 0-3 and 12 hold voxels; 1 and 2 are binned in alpha.
DS1_PHOTON_LAYERS = {
    0: ((0, 5, 10, 30, 50, 100, 200, 400, 600), 1),
    1: ((0, 2, 4, 6, 8, 10, 12, 15, 20, 30, 40, 50, 70, 90, 120, 150, 200), 10),
    2: ((0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200, 250, 300, 350, 400), 10),
    3: ((0, 50, 100, 200, 400, 600), 1),
    12: ((0, 100, 200, 400, 1000, 2000), 1),
}
REFERENCE_SEPARATION = {
    "Etot / Einc": 0.09059721285820417,
    "E layer 0": 0.053290058054886694,
    "E layer 1": 0.02816729007666935,
    "E layer 2": 0.027602119267443992,
    "E layer 3": 0.0417646492331333,
    "E layer 12": 0.054154797810775215,
    "EC Eta layer 1": 0.024598643785031835,
    "EC Eta layer 2": 0.07606120911739034,
    "EC Phi layer 1": 0.03031829725045041,
    "EC Phi layer 2": 0.08814215577800802,
    "Width Eta layer 1": 0.04810491209676403,
    "Width Eta layer 2": 0.1921231136693402,
    "Width Phi layer 1": 0.061330767808769754,
    "Width Phi layer 2": 0.15034887646875567,
    "Sparsity layer 0": 0.014916658440467807,
    "Sparsity layer 1": 0.004471829553937049,
    "Sparsity layer 2": 0.0031561793185961497,
    "Sparsity layer 3": 0.007097820321823298,
    "Sparsity layer 12": 0.011546566947236773,
    "EC r layer 0": 0.09970842505036764,
    "EC r layer 1": 0.005571515095970012,
    "EC r layer 2": 0.0255191480860444,
    "EC r layer 3": 0.1328269974843023,
    "EC r layer 12": 0.10900587490302924,
    "Width r layer 0": 0.08162203727474626,
    "Width r layer 1": 0.00716419366633679,
    "Width r layer 2": 0.01455835025298899,
    "Width r layer 3": 0.07369249804270309,
    "Width r layer 12": 0.05887140258388249,
    "Voxel distribution": 0.0011061611260439826,
}
# jetnet 0.2.5 (value, error): generated vs reference, and a second reference vs reference.
REFERENCE_FPD = (0.04145107524555391, 0.0010363090849417579)
REFERENCE_KPD = (0.0017434618997320683, 0.0007427093195797907)
REFERENCE_FPD_SAME = (0.036800580658983846, 0.0006698565614503161)
REFERENCE_KPD_SAME = (0.001576155160611048, 0.0006218536740441017)


def ds1_photon_binning() -> Binning:
    layers = tuple(
        BinningLayer(
            i,
            tuple(float(r) for r in DS1_PHOTON_LAYERS.get(i, ((0,), 1))[0]),
            DS1_PHOTON_LAYERS.get(i, ((0,), 1))[1],
        )
        for i in range(24)
    )
    return Binning((("pid", "22"), ("name", "photon")), layers)


def _showers(seed: int, n: int, n_voxels: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The seeded inputs: ds1 energies 2^8..2^22 MeV, half the voxels hit, a response near
    0.95 (times `scale`), float32 MeV."""
    rng = np.random.default_rng(seed)
    energy = 2.0 ** rng.integers(8, 23, n)
    w = rng.exponential(1.0, (n, n_voxels)) * (rng.random((n, n_voxels)) < 0.5)
    w *= np.exp((-np.arange(n_voxels)) % 7 / 3.0)
    w /= w.sum(axis=1, keepdims=True)
    total = energy * rng.normal(0.95, 0.08, n) * scale
    return (w * total[:, None]).astype(np.float32), energy.astype(np.float64)


@pytest.fixture(scope="module")
def sets() -> dict[str, object]:
    layout = ChallengeLayout.from_binning(ds1_photon_binning())
    out: dict[str, object] = {"layout": layout}
    for name, (seed, scale) in {"ref": (1, 1.0), "gen": (2, 1.03), "ref2": (3, 1.0)}.items():
        showers, energy = _showers(seed, 400, 368, scale)
        showers = threshold(showers, 1.0)
        out[name] = (showers, challenge_features(showers, energy, layout))
    return out


def test_layout_has_the_reference_layers_and_202_features_for_clic25() -> None:
    layout = ChallengeLayout.from_binning(ds1_photon_binning())
    assert layout.n_voxels == 368 and layout.layers == (0, 1, 2, 3, 12)
    assert layout.alpha_layers == (1, 2)
    assert len(high_level_names(layout)) == 2 + 4 * 5 + 4 * 2  # the reference: (400, 30)
    # 25 layers of 16 alpha bins (a converted clic-25 set): the 202 features of the issue.
    grid = Binning(
        (("name", "electron"),), tuple(BinningLayer(i, (0, 1, 2), 16) for i in range(25))
    )
    assert len(high_level_names(ChallengeLayout.from_binning(grid))) == 202


def test_every_separation_power_agrees_with_the_reference_code(sets: dict) -> None:
    layout = sets["layout"]
    (ref, fr), (gen, fg) = sets["ref"], sets["gen"]
    specs = histograms.histogram_specs(layout, "1-photons", 1.0, 2000.0)
    found = {}
    for spec in specs:
        if spec.family == "voxels":
            s = histograms.separation(spec, ref.ravel(), gen.ravel(), n_bootstrap=0)
        else:
            s = histograms.separation(
                spec,
                histograms.spec_values(spec, fr, layout),
                histograms.spec_values(spec, fg, layout),
                n_bootstrap=0,
            )
        found[spec.name] = s.value
    assert set(found) == set(REFERENCE_SEPARATION)
    for name, value in REFERENCE_SEPARATION.items():
        assert found[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name


def test_fpd_and_kpd_agree_with_jetnet(sets: dict) -> None:
    r, g, r2 = (high_level_vector(sets[k][1]) for k in ("ref", "gen", "ref2"))
    small = {"min_samples": 1000, "max_samples": 5000}
    for (value, error), expected in (
        (distances.jetnet_fpd(r, g, **small), REFERENCE_FPD),
        (distances.jetnet_fpd(r, r2, **small), REFERENCE_FPD_SAME),
    ):
        # The same draws; jetnet's curve_fit stops at its tolerance (1e-8).
        assert value == pytest.approx(expected[0], rel=1e-6)
        assert error == pytest.approx(expected[1], rel=1e-4)
    for (value, error), expected in (
        (distances.jetnet_kpd(r, g, batch_size=1000), REFERENCE_KPD),
        (distances.jetnet_kpd(r, r2, batch_size=1000), REFERENCE_KPD_SAME),
    ):
        assert value == pytest.approx(expected[0], rel=1e-8)
        assert error == pytest.approx(expected[1], rel=1e-6)


def test_bounded_line_fit_keeps_intercept_and_slope_non_negative() -> None:
    x = np.linspace(0.1, 1.0, 10)
    a, b, _ = distances.fit_nonnegative_line(x, 2.0 + 3.0 * x)
    assert (a, b) == (pytest.approx(2.0), pytest.approx(3.0))
    a, b, _ = distances.fit_nonnegative_line(x, -1.0 + 3.0 * x)  # unbounded intercept < 0
    assert a == 0.0 and b == pytest.approx(float(x @ (-1 + 3 * x) / (x @ x)))


def test_histogram_without_values_in_range_has_no_separation_and_says_why() -> None:
    spec = histograms.HistogramSpec(
        "Etot / Einc", "etot_einc", None, lambda r: np.linspace(0.5, 1.5, 101)
    )
    s = histograms.separation(spec, np.full(50, 0.02), np.full(50, 1.0), n_bootstrap=0)
    assert math.isnan(s.value) and "no reference value" in s.reason
    assert s.outside_reference == 1.0 and s.outside_generated == 0.0


def test_recipe_classifier_separates_shifted_sets_and_not_identical_ones() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(600, 5)), rng.normal(size=(600, 5))
    same = recipe_classifier_test(a, b, epochs=5, hidden_units=32, lr=1e-2, n_bootstrap=10)
    shifted = recipe_classifier_test(a, b + 1.5, epochs=5, hidden_units=32, lr=1e-2, n_bootstrap=10)
    assert abs(same.auc - 0.5) < 0.1 and shifted.auc > 0.9
    assert shifted.n_train == 360 and shifted.n_test == 120 and shifted.n_validation == 120
    assert 1 <= shifted.best_epoch <= 5


def _write_cc(path: Path, showers: np.ndarray, energy: np.ndarray) -> None:
    with h5py.File(path, "w") as h5:
        h5["showers"] = showers
        h5["incident_energies"] = energy.reshape(-1, 1)


@pytest.mark.slow  # the challenge's FPD and KPD sizes (50 000 draws, batches of 10 000): ~3 min
def test_cli_calochallenge_protocol_writes_the_tables_with_the_floor(tmp_path: Path) -> None:
    from caloforge.cli import main
    from caloforge.data.formats.calochallenge import write_binning

    xml = tmp_path / "ds1.xml"
    write_binning(ds1_photon_binning(), xml)
    assert read_binning(xml).n_voxels == 368
    for name, seed, scale in (("ref", 1, 1.0), ("gen", 2, 1.03), ("ref2", 3, 1.0)):
        _write_cc(tmp_path / f"{name}.hdf5", *_showers(seed, 300, 368, scale))
    out = tmp_path / "report"
    code = main(
        [
            "validate",
            "--protocol",
            "calochallenge",
            "--binning",
            str(xml),
            "--reference",
            str(tmp_path / "ref.hdf5"),
            "--generated",
            str(tmp_path / "gen.hdf5"),
            "--second-reference",
            str(tmp_path / "ref2.hdf5"),
            "--out",
            str(out),
            "--challenge-epochs",
            "1",
            "--challenge-classifiers",
            "high",
        ]
    )
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["protocol"] == "calochallenge" and doc["dataset"] == "1-photons"
    main_ = doc["generated_vs_reference"]
    assert main_["fpd_x1e3"][0] > 0 and "high" in main_["classifiers"]
    assert doc["reference_vs_second_reference"]["against"] == "Second reference"
    rows = main_["separation_power"]["rows"]
    assert [r["layer"] for r in rows] == [0, 1, 2, 3, 12] and rows[0]["EC Eta"] is None
    text = (out / "tables.txt").read_text()
    assert "floor: second reference vs reference" in text and "FPD x1e3" in text
    assert (out / "index.html").is_file()


def test_diversity_warning_needs_less_spread_not_only_smoother_showers() -> None:
    from caloforge.validation.comparison import _diversity_warning
    from caloforge.validation.metrics import SSIMScan

    ranges = np.array([1e-5, 1e-4, 1e-3])
    flat = np.full(3, 0.001)
    # Generated showers more alike pixel by pixel (as a transverse blur makes them).
    scan = SSIMScan(ranges, np.full(3, 0.30), flat, np.full(3, 0.3), flat, np.full(3, 0.60), flat)
    labels = ("Reference", "Generated")
    assert _diversity_warning(scan, labels, spread_ratio=1.0) == []  # a blur: features vary
    assert "too little diversity" in _diversity_warning(scan, labels, spread_ratio=0.3)[0]


def test_convert_calibrates_by_sampling_fraction_and_records_it(tmp_path: Path) -> None:
    from caloforge.data.canonical import ShowerWriter
    from caloforge.data.convert import convert
    from caloforge.data.source import Batch
    from caloforge.geometry import PRESETS

    geometry = PRESETS["clic-25"]
    rng = np.random.default_rng(5)
    showers = (rng.exponential(0.02, (3, 25, 25, 25)) * (rng.random((3, 25, 25, 25)) < 0.4)).astype(
        np.float32
    )
    path = tmp_path / "grid.h5"
    with ShowerWriter(path, geometry) as writer:
        writer.write(Batch(showers, {"energy": rng.uniform(10, 100, 3)}))
    out = tmp_path / "cc.hdf5"
    convert([path], out, to="calochallenge")
    f_e = np.array([layer.properties.f_e for layer in geometry.layers])
    with h5py.File(out, "r") as h5:
        voxels = h5["showers"][()] / 1000
        assert h5.attrs["caloforge_calibration"].startswith("sampling-fraction")
        np.testing.assert_allclose(h5.attrs["caloforge_calibration_factors"], 1 / f_e)
    per_layer = voxels.reshape(3, 25, -1).sum(axis=2)
    np.testing.assert_allclose(per_layer, showers.sum(axis=(1, 2)) / f_e, rtol=1e-5)
    with pytest.raises(Exception, match="calibration"):
        convert([path], tmp_path / "bad.hdf5", to="calochallenge", calibration="-2")


def test_cells_on_bin_edges_go_to_the_bin_above_whatever_the_rounding() -> None:
    from caloforge.data.formats.calochallenge import polar_rebinning
    from caloforge.geometry import PRESETS

    geometry = PRESETS["clic-25"]
    pitch = 5.1
    # 15.3 as typed is one unit in the last place above 3 x 5.1 (the cell centre's arithmetic):
    # the cell lies on the edge and goes above it, not below by rounding.
    assert 3 * pitch < 15.3
    edges = [0.0, 5.0, 15.3, 100.0]
    rebin = polar_rebinning(geometry, n_alpha=4, r_edges=edges)
    shower = np.zeros((1, 25, 25, 25), dtype=np.float32)
    shower[0, 12 + 3, 12, 0] = 1.0  # x = 3 pitches: on the edge 3 x 5.1 mm
    voxels = rebin(shower)[0]
    n_r = len(rebin.r_edges) - 1
    # alpha = 0 is the edge between alpha bins 1 and 2 of 4 (over [-pi, pi)): bin 2; r bin 2.
    assert np.flatnonzero(voxels).tolist() == [2 * n_r + 2]
