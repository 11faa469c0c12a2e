"""`caloforge convert` and `caloforge inspect` end to end, on every format and on bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloforge.cli import main
from caloforge.data.canonical import open_canonical
from caloforge.data.formats import open_source
from shower_files import (
    make_calochallenge,
    make_calogan,
    make_lcd_angle,
    make_lcd_fixed,
    make_lhcb,
    truncate,
)


def run(*args: object) -> int:
    return main([str(a) for a in args])


def leftovers(folder: Path) -> list[str]:
    """Temporary files a failed or finished write may have left behind."""
    return [p.name for p in folder.iterdir() if ".partial" in p.name]


# Each case: input file builder -> (input path, extra CLI options, geometry, N, E_vis / E truth).
Case = Callable[[Path], tuple[Path, list[str], str, int, float]]


def lcd_angle(tmp: Path) -> tuple[Path, list[str], str, int, float]:
    path = tmp / "EleEscan_1_1.h5"
    t = make_lcd_angle(path)
    return (
        path,
        [],
        "clic-angle-51",
        4,
        float(np.mean(t["ECAL"].sum(axis=(1, 2, 3)) / 50 / t["energy"])),
    )


def lcd_fixed(tmp: Path) -> tuple[Path, list[str], str, int, float]:
    path = tmp / "Ele_1.h5"
    t = make_lcd_fixed(path)
    return path, [], "clic-25", 3, float(np.mean(t["ECAL"].sum(axis=(1, 2, 3)) / t["energy"]))


def calochallenge(tmp: Path) -> tuple[Path, list[str], str, int, float]:
    path, xml = tmp / "dataset_2_1.hdf5", tmp / "binning_dataset_2.xml"
    t = make_calochallenge(path, xml)
    ratio = np.mean(t["showers"].sum(axis=1) / t["incident_energies"][:, 0])
    return path, ["--binning", str(xml)], "calochallenge-electron-16", 5, float(ratio)


def calogan(tmp: Path) -> tuple[Path, list[str], str, int, float]:
    path = tmp / "eplus.hdf5"
    t = make_calogan(path)
    visible = sum(t[k].reshape(3, -1).sum(axis=1) for k in ("layer_0", "layer_1", "layer_2"))
    return path, [], "calogan", 3, float(np.mean(visible / 1000 / t["energy"][:, 0]))


def lhcb(tmp: Path) -> tuple[Path, list[str], str, int, float]:
    path = tmp / "data_val.npz"
    t = make_lhcb(path)
    energy = np.linalg.norm(t["ParticleMomentum"].astype(np.float64), axis=1)
    return (
        path,
        [],
        "lhcb-30",
        4,
        float(np.mean(t["EnergyDeposit"].sum(axis=(1, 2)) / 1000 / energy)),
    )


CASES: dict[str, Case] = {
    "lcd": lcd_angle,
    "lcd-fixed": lcd_fixed,
    "calochallenge": calochallenge,
    "calogan": calogan,
    "lhcb": lhcb,
}


@pytest.mark.parametrize("name", CASES)
def test_convert_then_inspect_each_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    source_path, options, geometry, n, ratio = CASES[name](tmp_path)
    out = tmp_path / "out" / "showers.h5"
    assert run("convert", source_path, out, "--batch-size", 2, *options) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert leftovers(out.parent) == []
    binning = {"binning": options[1]} if options else {}
    with open_canonical(out) as converted, open_source(source_path, **binning) as original:
        assert converted.geometry == original.geometry and converted.geometry.name == geometry
        assert len(converted) == n
        np.testing.assert_array_equal(converted.read(0, n).showers, original.read(0, n).showers)
        for key, values in original.conditions.items():
            np.testing.assert_array_equal(converted.conditions[key], values)

    for path, fmt, args in (
        (out, "caloforge", []),
        (source_path, name.removesuffix("-fixed"), options),
    ):
        assert run("inspect", path, *args) == 0
        printed = capsys.readouterr().out
        assert str(path) in printed
        assert f"format        {fmt}" in printed
        assert f"geometry      {geometry}" in printed
        assert f"showers       {n} of" in printed
        assert f"E_vis/E       {ratio:.4g} (mean of the first {n} showers)" in printed


def test_convert_several_files_by_glob(tmp_path: Path) -> None:
    for i in range(3):
        make_lcd_fixed(tmp_path / f"Ele_{i}.h5", seed=i)
    out = tmp_path / "all.h5"
    assert run("convert", tmp_path / "Ele_*.h5", out) == 0
    with open_canonical(out) as converted:
        assert len(converted) == 9
        np.testing.assert_array_equal(
            converted.read(3, 6).showers, make_lcd_fixed(tmp_path / "again.h5", seed=1)["ECAL"]
        )


def test_inspect_reads_only_max_showers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "EleEscan.h5"
    make_lcd_angle(path)
    with h5py.File(path, "a") as f:
        f["ECAL"][3, 0, 0, 0] = np.nan  # beyond the showers inspect reads
    assert run("inspect", path, "--max-showers", 3) == 0
    out, err = capsys.readouterr()
    assert "mean of the first 3 showers" in out
    # A bar while the showers are read (25 s on a 10 000-shower clic-angle-51 file), on
    # standard error, counting to the showers it reads and no more.
    assert f"reading {path}" in err and "/3 " in err and "reading" not in out


def test_grid_to_calochallenge_and_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lcd = tmp_path / "Ele.h5"
    truth = make_lcd_fixed(lcd)
    canonical, cc = tmp_path / "showers.h5", tmp_path / "cc" / "showers.hdf5"
    assert run("convert", lcd, canonical) == 0
    assert run("convert", canonical, cc, "--to", "calochallenge", "--calibration", "none") == 0
    xml = cc.with_suffix(".xml")
    assert xml.is_file() and leftovers(cc.parent) == []
    capsys.readouterr()
    assert run("inspect", cc, "--binning", xml) == 0
    assert "format        calochallenge" in capsys.readouterr().out
    with h5py.File(cc, "r") as f:
        np.testing.assert_allclose(
            f["showers"][()].sum(axis=1) / 1000, truth["ECAL"].sum(axis=(1, 2, 3)), rtol=1e-5
        )


def test_calochallenge_round_trip_through_canonical(tmp_path: Path) -> None:
    original, xml = tmp_path / "ds.hdf5", tmp_path / "binning.xml"
    truth = make_calochallenge(original, xml)
    canonical, back = tmp_path / "ds.h5", tmp_path / "back.hdf5"
    assert run("convert", original, canonical, "--binning", xml) == 0
    assert (
        run("convert", canonical, back, "--to", "calochallenge", "--binning", tmp_path / "b.xml")
        == 0
    )
    assert (tmp_path / "b.xml").read_text() == xml.read_text()
    with h5py.File(back, "r") as f:
        np.testing.assert_array_max_ulp(f["showers"][()], truth["showers"], maxulp=1)
        np.testing.assert_allclose(
            f["incident_energies"][()], truth["incident_energies"], rtol=1e-15
        )


def test_unknown_output_format_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lcd = tmp_path / "Ele.h5"
    make_lcd_fixed(lcd)
    assert run("convert", lcd, tmp_path / "out.root", "--to", "root") == 2
    assert "unknown output format 'root'" in capsys.readouterr().err
    assert not (tmp_path / "out.root").exists()


def test_convert_refuses_to_overwrite_its_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lcd = tmp_path / "Ele.h5"
    make_lcd_fixed(lcd)
    assert run("convert", lcd, lcd) == 2
    assert "overwrite an input" in capsys.readouterr().err
    assert h5py.is_hdf5(lcd)


# --- bad input: exit code 2, a message naming the file (and key), no output ----------------------


def _text(tmp: Path) -> Path:
    path = tmp / "notes.h5"
    path.write_text("these are not showers\n")
    return path


def _text_npz(tmp: Path) -> Path:
    path = tmp / "notes.npz"
    path.write_text("these are not showers either\n")
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.h5"
    path.touch()
    return path


def _truncated_h5(tmp: Path) -> Path:
    path = tmp / "EleEscan_cut.h5"
    make_lcd_angle(path)
    truncate(path)
    return path


def _truncated_npz(tmp: Path) -> Path:
    path = tmp / "data_cut.npz"
    make_lhcb(path)
    truncate(path)
    return path


def _lcd_without_theta(tmp: Path) -> Path:
    path = tmp / "no_theta.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"] = np.zeros((2, 51, 51, 25), dtype=np.float32)
        f["energy"] = np.full(2, 150.0)
    return path


def _lcd_without_energy(tmp: Path) -> Path:
    path = tmp / "no_energy.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"] = np.zeros((2, 25, 25, 25), dtype=np.float32)
    return path


def _lhcb_without_momentum(tmp: Path) -> Path:
    path = tmp / "no_momentum.npz"
    np.savez(path, EnergyDeposit=np.zeros((2, 30, 30)), ParticlePoint=np.zeros((2, 3)))
    return path


def _wrong_ecal_shape(tmp: Path) -> Path:
    path = tmp / "small.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"] = np.zeros((2, 10, 10, 10), dtype=np.float32)
        f["energy"] = np.ones(2)
    return path


def _wrong_calogan_shape(tmp: Path) -> Path:
    path = tmp / "gamma.hdf5"
    make_calogan(path)
    with h5py.File(path, "a") as f:
        del f["layer_1"]
        f["layer_1"] = np.zeros((3, 12, 11), dtype=np.float32)
    return path


def _nan_energy(tmp: Path) -> Path:
    path = tmp / "nan_energy.h5"
    make_lcd_fixed(path, target=False)
    with h5py.File(path, "a") as f:
        f["energy"][1] = np.nan
    return path


def _negative_energy(tmp: Path) -> Path:
    path = tmp / "piplus.hdf5"
    make_calogan(path)
    with h5py.File(path, "a") as f:
        f["energy"][2] = -5.0
    return path


def _inf_cell_in_last_shower(tmp: Path) -> Path:
    path = tmp / "inf.h5"
    make_lcd_angle(path)
    with h5py.File(path, "a") as f:
        f["ECAL"][3, 20, 20, 5] = np.inf  # found only after three showers were written
    return path


def _negative_cells(tmp: Path) -> Path:
    path, xml = tmp / "cc.hdf5", tmp / "binning.xml"
    make_calochallenge(path, xml)
    with h5py.File(path, "a") as f:
        f["showers"][4, 3] = -1.0
    return path


BAD: dict[str, tuple[Callable[[Path], Path], list[str], str | None, str]] = {
    # name: (builder, extra options, key named, words of the message)
    "missing file": (lambda tmp: tmp / "nowhere.h5", [], None, "file not found"),
    "text, not HDF5": (_text, [], None, "unrecognised shower file format"),
    "text, not npz": (_text_npz, ["--format", "lhcb"], None, "not a readable .npz archive"),
    "empty file": (_empty, [], None, "file is empty"),
    "truncated HDF5": (_truncated_h5, [], None, "not a readable HDF5 file"),
    "truncated HDF5, format named": (_truncated_h5, ["--format", "lcd"], None, "truncated"),
    "truncated npz": (_truncated_npz, ["--format", "lhcb"], None, "not a readable .npz archive"),
    "missing theta": (_lcd_without_theta, [], "theta", "missing dataset"),
    "missing energy": (_lcd_without_energy, [], "target", "missing dataset"),
    "missing momentum": (_lhcb_without_momentum, [], "ParticleMomentum", "missing array"),
    "wrong ECAL shape": (_wrong_ecal_shape, [], "ECAL", "(2, 10, 10, 10)"),
    "wrong layer shape": (_wrong_calogan_shape, [], "layer_1", "(3, 12, 11)"),
    "NaN energy": (_nan_energy, [], "energy", "NaN or infinite"),
    "negative energy": (_negative_energy, [], "energy", "must be positive"),
    "inf cell": (_inf_cell_in_last_shower, ["--batch-size", "1"], "ECAL", "first at row 3"),
    "negative cells": (_negative_cells, ["--binning", "{tmp}/binning.xml"], "showers", "negative"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_naming_file_and_key_and_leaves_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    build, options, key, words = BAD[case]
    bad = build(tmp_path)
    out = tmp_path / "out.h5"
    options = [o.format(tmp=tmp_path) for o in options]
    assert run("convert", bad, out, *options) == 2
    error = capsys.readouterr().err
    assert "caloforge: error: " in error
    assert str(bad) in error and words in error
    if key is not None:
        assert f"key '{key}'" in error
    assert not out.exists() and leftovers(tmp_path) == []
    inspect_options = [o for o in options if o != "--batch-size" and o != "1"]
    assert run("inspect", bad, *inspect_options) == 2
    assert str(bad) in capsys.readouterr().err
