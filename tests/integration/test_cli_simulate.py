"""`caloforge simulate` end to end: files, reproducibility, appending, bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from caloforge.cli import main


def run(*args: str) -> int:
    return main(list(args))


def test_simulate_writes_a_canonical_file_and_prints_its_summary(tmp_path, capsys):
    out = tmp_path / "showers.h5"
    code = run(
        "simulate",
        "--geometry",
        "clic-angle-51",
        "--n",
        "12",
        "--energy",
        "100:200",
        "--theta",
        "60:120",
        "--seed",
        "1",
        "--workers",
        "1",
        "-o",
        str(out),
    )
    assert code == 0
    with h5py.File(out) as f:
        assert f["showers"].shape == (12, 51, 51, 25)
        assert f.attrs["geometry"] == "clic-angle-51"
        assert f["theta"][:].min() >= np.radians(60) and f["theta"][:].max() <= np.radians(120)
        assert f["energy"][:].min() >= 100 and f["energy"][:].max() <= 200
    printed = capsys.readouterr().out
    assert "clic-angle-51" in printed and "12" in printed


def test_workers_do_not_change_the_showers_and_append_continues_the_sequence(tmp_path):
    whole, parts, parallel = tmp_path / "whole.h5", tmp_path / "parts.h5", tmp_path / "par.h5"
    common = ["--geometry", "lhcb-30", "--seed", "4", "--batch-size", "8"]
    assert run("simulate", *common, "--n", "32", "--workers", "1", "-o", str(whole)) == 0
    assert run("simulate", *common, "--n", "32", "--workers", "2", "-o", str(parallel)) == 0
    assert run("simulate", *common, "--n", "16", "--workers", "1", "-o", str(parts)) == 0
    assert (
        run("simulate", *common, "--n", "16", "--workers", "1", "--append", "-o", str(parts)) == 0
    )
    with h5py.File(whole) as a, h5py.File(parts) as b, h5py.File(parallel) as c:
        np.testing.assert_array_equal(a["showers"][:], b["showers"][:])
        np.testing.assert_array_equal(a["showers"][:], c["showers"][:])
        np.testing.assert_array_equal(a["point"][:], b["point"][:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--geometry", "nope"], "unknown geometry 'nope'"),
        (["--energy", "0.01:5"], "valid for 1:1000 GeV"),
        (["--theta", "60:120"], "no 'theta' condition"),
        (["--n", "0"], "--n must be a positive number"),
        (["--geometry", "missing.yaml"], "geometry file not found"),
    ],
)
def test_bad_options_fail_clearly_and_leave_no_file(tmp_path, capsys, args, message):
    out = tmp_path / "out.h5"
    argv = ["simulate", "--n", "4", "--workers", "1", "-o", str(out), *args]
    assert run(*argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_appending_another_geometry_is_refused_and_keeps_the_file(tmp_path, capsys):
    out = tmp_path / "s.h5"
    assert (
        run("simulate", "--geometry", "lhcb-30", "--n", "4", "--workers", "1", "-o", str(out)) == 0
    )
    before = out.read_bytes()
    assert (
        run(
            "simulate",
            "--geometry",
            "clic-25",
            "--n",
            "4",
            "--workers",
            "1",
            "--append",
            "-o",
            str(out),
        )
        == 2
    )
    assert "another geometry" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_a_user_geometry_from_yaml_simulates(tmp_path):
    yaml_file = tmp_path / "mini.yaml"
    yaml_file.write_text(
        "name: mini-ecal\nshape: [11, 11, 6]\nreadout: layers\ncell_size_mm: [10, 10]\n"
        "layers:\n  - {absorber: Pb, absorber_mm: 4, sensor: Si, sensor_mm: 0.5, repeat: 6}\n"
        "conditions:\n  - {name: energy, unit: GeV, default: [5, 10], valid: [1, 100]}\n"
    )
    out = tmp_path / "mini.h5"
    assert (
        run("simulate", "--geometry", str(yaml_file), "--n", "5", "--workers", "1", "-o", str(out))
        == 0
    )
    with h5py.File(out) as f:
        assert f["showers"].shape == (5, 11, 11, 6)
        assert f.attrs["geometry"] == "mini-ecal"


def test_the_calibration_is_chosen_and_recorded(tmp_path):
    calibrated, bare = tmp_path / "calibrated.h5", tmp_path / "bare.h5"
    common = ("simulate", "--n", "20", "--energy", "50", "--seed", "3", "--workers", "1")
    assert run(*common, "-o", str(calibrated)) == 0
    assert run(*common, "--calibration", "none", "-o", str(bare)) == 0
    with h5py.File(calibrated) as f, h5py.File(bare) as g:
        assert "calibrated to Geant4 (W-Si" in f.attrs["producer"]
        assert "bare parametrization" in g.attrs["simulation"]
        # The table raises the response by about 19 % (the sampling fraction Geant4 gives).
        ratio = f["showers"][:].sum() / g["showers"][:].sum()
        assert 1.1 < ratio < 1.3
    # Showers of another calibration are not appended.
    assert run(*common, "--calibration", "none", "--append", "-o", str(calibrated)) == 2
    assert (
        run(
            "simulate",
            "--engine",
            "geant4",
            "--n",
            "2",
            "--calibration",
            "none",
            "-o",
            str(tmp_path / "x.h5"),
        )
        == 2
    )


def test_showers_of_another_particle_are_not_appended(tmp_path, capsys):
    out = tmp_path / "electrons.h5"
    common = ("simulate", "--n", "4", "--energy", "20", "--seed", "3", "--workers", "1")
    assert run(*common, "-o", str(out)) == 0
    with h5py.File(out) as f:
        assert json.loads(f.attrs["simulation"])["particle"] == "electron"
    before = out.read_bytes()
    capsys.readouterr()
    assert run(*common, "--particle", "photon", "--append", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "photon" in err and "electron" in err
    assert out.read_bytes() == before
    assert run(*common, "--append", "-o", str(out)) == 0


def test_a_file_made_before_the_particle_was_recorded_appends_by_its_producer_line(tmp_path):
    out = tmp_path / "photons.h5"
    common = ("simulate", "--n", "4", "--energy", "20", "--seed", "3", "--workers", "1")
    assert run(*common, "--particle", "photon", "-o", str(out)) == 0
    with h5py.File(out, "a") as f:  # as files of caloforge before the record
        record = json.loads(f.attrs["simulation"])
        del record["particle"]
        f.attrs["simulation"] = json.dumps(record)
    assert run(*common, "--append", "-o", str(out)) == 2
    assert run(*common, "--particle", "photon", "--append", "-o", str(out)) == 0
    with h5py.File(out) as f:
        assert len(f["showers"]) == 8
