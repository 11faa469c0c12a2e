"""`caloforge validate` end to end on tiny simulated files: an independent sample passes, a
5 %-scaled copy fails the response verdict, the report is one self-contained page with its
JSON and PNGs, and bad input stops with a clear message (exit 2) and no report folder.

Sets (module fixture): clic-25 electrons of 20-60 GeV, 1600 showers each (enough for FPD of
the 151-feature vector), simulated with two seeds; `scaled` is `same` with every cell x 1.05.
The cell-level metrics run on a subsample of 200 showers to keep the run short.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloforge.cli import main
from caloforge.data.canonical import ShowerWriter
from caloforge.data.io import open_showers
from caloforge.data.source import Batch, iter_batches
from caloforge.simulation.run import simulate_to_file
from caloforge.validation import ValidationConfig, report, validate

N = 1600
HEADLINE = (
    "classifier_auc_low_level",
    "classifier_auc_high_level",
    "fpd",
    "kpd",
    "projection_mse",
    "response_deviation",
    "resolution_deviation",
)
FAST = ["--subsample", "0", "--no-plots"]


def run(*args: str | Path) -> int:
    return main([str(a) for a in args])


def scaled_copy(source: Path, target: Path, factor: float) -> Path:
    with open_showers(source) as s, ShowerWriter(target, s.geometry, producer="test") as w:
        for batch in iter_batches(s, 512):
            w.write(Batch((batch.showers * factor).astype(np.float32), batch.conditions))
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("validate")
    out = {}
    for name, seed in (("reference", 1), ("same", 2)):
        out[name] = simulate_to_file(
            folder / f"{name}.h5",
            geometry="clic-25",
            n=N,
            energy=(20.0, 60.0),
            seed=seed,
            workers=1,
            # The bare parametrization, whose fluctuations these sets' sizes and verdicts were
            # chosen for: the calibrated engine's wider profile fluctuations (Geant4's) make
            # the resolution's error at 1600 showers about twice as large (7.7 %), which
            # turns a 1.7-sigma draw into an UNCLEAR verdict.
            calibration="none",
        )
    out["scaled"] = scaled_copy(out["same"], folder / "scaled.h5", 1.05)
    out["config"] = folder / "validate.yaml"
    out["config"].write_text("subsample: 200\nssim_pairs: 50\ntolerances:\n  kpd: 0.001\n")
    return out


def headline(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())["headline"]


def validate_cli(reference: Path, generated: Path, out: Path, *options: str | Path) -> int:
    return run(
        "validate", "--reference", reference, "--generated", generated, "--out", out, *options
    )


def test_an_independent_sample_passes_and_the_report_is_self_contained(files, tmp_path, capsys):
    out = tmp_path / "report"
    code = validate_cli(
        files["reference"],
        files["same"],
        out,
        "--config",
        files["config"],
        "--labels",
        "Geant4,Simulated again",
    )
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    # No long silence after the features' bar: each stage says when it is done, the plots
    # have a bar of their own.
    for stage in ("fpd", "kpd", "cell_level"):
        assert re.search(rf"^  {stage}: [0-9.]+ s$", printed, flags=re.M), stage
    assert "plots: 100%" in captured.err
    doc = json.loads((out / "metrics.json").read_text())
    # Two samples of one distribution: no verdict may fail, and each figure lies within three
    # of its errors of its ideal. Not every verdict need be PASS: with 200 showers per set
    # (tested on 40) the cell classifier's AUC scatters by about 0.07 around 0.5 (0.34, 0.56,
    # 0.59 and 0.61 for four pairs of seeds), so a draw above the 0.6 tolerance is UNCLEAR,
    # as it should be; and one seed's resolution 1.4 errors low made all its pairs UNCLEAR.
    assert doc["verdict"] in ("pass", "unclear") and "verdict: FAIL" not in printed
    assert set(HEADLINE) <= set(doc["headline"])
    ideal = {"classifier_auc_low_level": 0.5, "classifier_auc_high_level": 0.5}
    for key in HEADLINE:
        entry = doc["headline"][key]
        assert entry["verdict"] in ("pass", "unclear"), (key, entry)
        assert entry["value"] is not None and entry["error"] is not None, key
        if key in ideal or key.endswith("_deviation"):
            assert abs(entry["value"] - ideal.get(key, 0.0)) < 3 * entry["error"], (key, entry)
    assert abs(doc["headline"]["classifier_auc_high_level"]["value"] - 0.5) < 0.1
    assert doc["cell_level"]["subsample"] == 200
    assert doc["reference"]["n_showers"] == N

    # The page: images embedded, nothing fetched from elsewhere, the subsample stated.
    page = (out / "index.html").read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert len(pngs) >= 10 and [f"plots/{p.name}" for p in pngs] == sorted(doc["plots"])
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(embedded) == len(pngs)
    assert all(base64.b64decode(e).startswith(b"\x89PNG") for e in embedded)
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:|plots/)", page)
    assert "<script" not in page and "<link" not in page
    assert "200 showers per set" in page and "Geant4" in page
    # Every table scrolls in its own box: one with many bins does not run off the page.
    assert page.count("<table") == page.count("<div class='table-box'><table") > 5
    assert re.search(r"\.table-box \{[^}]*overflow-x: auto", page)
    for word in ("Classifier AUC", "FPD", "Projection MSE", "Response deviation", "PASS"):
        assert word in page


def test_a_5_percent_energy_scale_fails_the_response_verdict(files, tmp_path, capsys):
    out = tmp_path / "report"
    # --check: exit 1 when a headline verdict fails (the report is still written).
    code = validate_cli(
        files["reference"], files["scaled"], out, "--check", "--max-showers", "800", *FAST
    )
    assert code == 1
    assert "verdict: FAIL" in capsys.readouterr().out
    h = headline(out)
    response = h["response_deviation"]
    assert response["verdict"] == "fail"
    assert response["value"] == pytest.approx(0.05, abs=0.015)  # the bins' worst deviation
    # A scale leaves sigma90/mu90 alone (bins of 160 showers: "unclear" is within errors).
    assert h["resolution_deviation"]["verdict"] != "fail"
    features = json.loads((out / "metrics.json").read_text())["features"]
    assert features["response"]["separation_power"][0] > 0.1  # seen: 0.18 with 3000 showers
    assert features["width_x"]["separation_power"][0] < 0.05  # the shapes did not change
    assert h["classifier_auc_low_level"]["verdict"] == "n/a"  # --subsample 0
    assert "switched off" in h["classifier_auc_low_level"]["detail"]
    assert not (out / "plots").exists()


def test_too_few_showers_in_a_bin_are_reported_not_measured(files, tmp_path):
    out = tmp_path / "report"
    # Bins of 1 GeV and 39 GeV: the first holds about 20 showers of 800.
    code = validate_cli(
        files["reference"],
        files["same"],
        out,
        "--energy-bins",
        "20,21,60",
        "--max-showers",
        "800",
        *FAST,
    )
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    first, second = doc["response"]["energy"]
    assert not first["ok"] and "too few showers" in first["reason"]
    assert first["response_deviation"] is None and first["response_verdict"] == "n/a"
    assert second["ok"] and second["response_verdict"] == "pass"
    binned = doc["features"]["response"]["binned"]["energy"][0]
    assert binned["value"] is None and "too few showers" in binned["reason"]
    page = (out / "index.html").read_text()
    assert "too few showers" in page


def test_a_second_run_replaces_the_report_and_leaves_no_temporary_folder(files, tmp_path):
    out = tmp_path / "report"
    args = (files["reference"], files["same"], out, "--max-showers", "200", *FAST)
    assert validate_cli(*args) == 0
    (out / "stale.txt").write_text("from an older report")
    assert validate_cli(*args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "metrics.json"]
    assert json.loads((out / "metrics.json").read_text())["reference"]["n_read"] == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_failure_while_writing_leaves_no_report_folder(files, tmp_path, monkeypatch):
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "render_html", broken)
    config = ValidationConfig(subsample=0, plots=False, max_showers=300)
    with pytest.raises(RuntimeError, match="disk full"):
        validate(files["reference"], files["same"], tmp_path / "report", config)
    assert list(tmp_path.iterdir()) == []


# --- bad input ----------------------------------------------------------------------------------
def expect_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: object) -> str:
    out = tmp_path / "report"
    code = run("validate", *args, "--out", out, *FAST)
    assert code == 2
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]
    err = capsys.readouterr().err
    assert err.startswith("caloforge: error:") and "Traceback" not in err
    return err


def test_files_of_different_geometries_are_refused(files, tmp_path, capsys):
    lhcb = simulate_to_file(tmp_path / "lhcb.h5", geometry="lhcb-30", n=20, seed=1, workers=1)
    err = expect_error(tmp_path, capsys, "--reference", files["reference"], "--generated", lhcb)
    assert "different geometries" in err and "clic-25" in err and "lhcb-30" in err


def test_condition_ranges_that_do_not_overlap_are_refused(files, tmp_path, capsys):
    high = simulate_to_file(
        tmp_path / "high.h5", geometry="clic-25", n=10, energy=(100.0, 120.0), seed=3, workers=1
    )
    err = expect_error(tmp_path, capsys, "--reference", files["reference"], "--generated", high)
    assert "energy ranges do not overlap" in err and "high.h5" in err and "GeV" in err


def test_empty_files_are_refused(files, tmp_path, capsys):
    empty = tmp_path / "empty.h5"
    empty.touch()
    err = expect_error(tmp_path, capsys, "--reference", files["reference"], "--generated", empty)
    assert "empty.h5" in err and "empty" in err
    no_showers = tmp_path / "none.h5"
    with open_showers(files["reference"]) as s, ShowerWriter(no_showers, s.geometry):
        pass
    err = expect_error(tmp_path, capsys, "--reference", no_showers, "--generated", files["same"])
    assert "none.h5" in err and "no showers" in err


def test_missing_files_and_bad_options_are_refused(files, tmp_path, capsys):
    err = expect_error(
        tmp_path, capsys, "--reference", tmp_path / "nope.h5", "--generated", files["same"]
    )
    assert "nope.h5" in err and "not found" in err
    both = ["--reference", files["reference"], "--generated", files["same"]]
    err = expect_error(tmp_path, capsys, *both, "--energy-bins", "20,ten,60")
    assert "energy_bins" in err
    err = expect_error(tmp_path, capsys, *both, "--energy-bins", "60,20")
    assert "increasing" in err
    err = expect_error(tmp_path, capsys, *both, "--tolerance", "auc=0.6")
    assert "response_deviation" in err  # lists the known names
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("tolerances: {fpd: 0.1}\nsubsampel: 10\n")
    err = expect_error(tmp_path, capsys, *both, "--config", bad_yaml)
    assert "bad.yaml" in err and "subsampel" in err


def test_an_out_folder_that_is_not_a_report_is_left_alone(files, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code = validate_cli(files["reference"], files["same"], out, *FAST)
    assert code == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


# --- other geometries and formats ---------------------------------------------------------------
def layer_sums_as_calochallenge(source: Path, target: Path, xml: Path, n: int) -> None:
    """The first n showers as a CaloChallenge file of one voxel per layer (the layer's sum),
    MeV, with its binning XML: a coarse but valid voxel geometry."""
    with open_showers(source) as s:
        batch = s.read(0, n)
    layers = "".join(
        f'<Layer id="{i}" r_edges="0,1000" n_bin_alpha="1" />'
        for i in range(batch.showers.shape[3])
    )
    xml.write_text(f'<Bins><Bin pid="11" name="electron">{layers}</Bin></Bins>\n')
    with h5py.File(target, "w") as f:
        f["incident_energies"] = 1000.0 * batch.energy.reshape(-1, 1)
        f["showers"] = 1000.0 * batch.showers.sum(axis=(1, 2), dtype=np.float64)


def test_voxel_files_are_validated_on_the_features_they_have(files, tmp_path):
    """CaloChallenge files (voxels, no cell grid): response, features, FPD and the classifiers
    run; the grid-only metrics say why they do not."""
    xml = tmp_path / "binning.xml"
    voxels = {name: tmp_path / f"{name}-cc.h5" for name in ("reference", "same")}
    for name, path in voxels.items():
        layer_sums_as_calochallenge(files[name], path, xml, 800)
    config = ValidationConfig(subsample=200, plots=False)
    result = validate(
        voxels["reference"],
        voxels["same"],
        tmp_path / "report",
        config,
        format="calochallenge",
        binning=str(xml),
    )
    h = result.metrics["headline"]
    assert result.sets[0].format == "calochallenge"
    for key in (
        "response_deviation",
        "fpd",
        "classifier_auc_low_level",
        "classifier_auc_high_level",
    ):
        assert h[key]["verdict"] == "pass", (key, h[key])
    assert h["projection_mse"]["verdict"] == "n/a" and "cell grid" in h["projection_mse"]["detail"]
    assert "mean_layer" in result.metrics["features"]
    assert len(result.metrics["feature_vector"]["names"]) == 2 + 2 * 25


@pytest.mark.slow
@pytest.mark.parametrize(
    ("geometry", "ranges", "plot"),
    [
        ("clic-angle-51", ["--energy", "100:200", "--theta", "60:120"], "mu90_theta"),
        ("lhcb-30", [], "lhcb"),
    ],
)
def test_angle_and_lhcb_geometries_get_their_own_plots(tmp_path, geometry, ranges, plot):
    """3000 showers a set, in 3 energy bins (and 2 angle bins): about a minute each."""
    paths = []
    for seed in (1, 2):
        path = tmp_path / f"{seed}.h5"
        simulate = ["simulate", "--geometry", geometry, "--n", "3000", *ranges]
        assert run(*simulate, "--seed", str(seed), "--workers", "2", "-o", path) == 0
        paths.append(path)
    out = tmp_path / "report"
    # The cell classifier's AUC of two samples of one distribution is 0.5 within an error
    # that falls as 1 / sqrt(subsample): 300 showers of 65 025 cells, 1000 of lhcb-30's 900
    # (0.57 +- 0.05 at 300 read "unclear" against its tolerance).
    options = ["--energy-bins", "3"]
    if geometry == "clic-angle-51":  # refused for files without an angle
        options += ["--subsample", "300", "--theta-bins", "2"]
    else:
        options += ["--subsample", "1000"]
    assert validate_cli(paths[0], paths[1], out, *options) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert f"plots/{plot}.png" in doc["plots"]
    assert doc["verdict"] == "pass", doc["headline"]
    if geometry == "clic-angle-51":
        assert len(doc["response"]["theta"]) == 2
        assert "measured_theta" in doc["features"]
    else:
        assert "asymmetry_long" in doc["features"]


def test_a_deviation_without_an_error_is_shown_without_one():
    # A bin whose bootstrap gives no error (NaN, null in metrics.json): the value alone.
    from caloforge.validation.report import signed_percent

    assert signed_percent(-0.5, None) == "-50.00&nbsp;%"
    assert signed_percent(0.01, float("nan")) == "+1.00&nbsp;%"
    assert signed_percent(0.01, 0.002) == "+1.00 &plusmn;&nbsp;0.20&nbsp;%"
    assert signed_percent(None, 0.1) == "&ndash;"
