"""Readers of the foreign formats: units, values, geometry, detection; CaloChallenge export."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloforge.data.canonical import ShowerWriter, open_canonical
from caloforge.data.formats import detect_format, open_source
from caloforge.data.formats.calochallenge import (
    Binning,
    polar_rebinning,
    read_binning,
    write_binning,
    write_calochallenge,
)
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError, InputFileError
from caloforge.geometry import PRESETS
from shower_files import (
    BINNING_VOXELS,
    BINNING_XML,
    make_calochallenge,
    make_calogan,
    make_lcd_angle,
    make_lcd_fixed,
    make_lhcb,
)

# --- LCD ---------------------------------------------------------------------------------------


def test_lcd_angle_divides_by_50_and_keeps_angles(tmp_path: Path) -> None:
    path = tmp_path / "EleEscan_1_1.h5"
    truth = make_lcd_angle(path)
    with open_source(path) as source:
        assert source.format == "lcd"
        assert source.geometry == PRESETS["clic-angle-51"]
        assert len(source) == 4
        batch = source.read(1, 3)
        assert batch.showers.dtype == np.float32
        np.testing.assert_allclose(batch.showers, truth["ECAL"][1:3] / 50, rtol=1e-6)
        np.testing.assert_allclose(source.conditions["energy"], truth["energy"])
        np.testing.assert_allclose(source.conditions["theta"], truth["theta"])
        taken = source.take(np.array([0, 3]))
        np.testing.assert_array_equal(taken.showers[1], source.read(3, 4).showers[0])


def test_lcd_theta_in_degrees_is_converted_to_rad(tmp_path: Path) -> None:
    path = tmp_path / "deg.h5"
    truth = make_lcd_angle(path, theta_degrees=True)
    with open_source(path) as source:
        np.testing.assert_allclose(source.conditions["theta"], truth["theta"], rtol=1e-12)
        assert source.conditions["theta"].max() < math.pi


@pytest.mark.parametrize("target", [True, False])
def test_lcd_fixed_angle_energy_from_target_or_energy(tmp_path: Path, target: bool) -> None:
    path = tmp_path / "Ele.h5"
    truth = make_lcd_fixed(path, target=target)
    with open_source(path) as source:
        assert source.geometry == PRESETS["clic-25"]
        assert source.geometry.condition_names == ("energy",)
        np.testing.assert_allclose(source.conditions["energy"], truth["energy"])
        np.testing.assert_array_equal(source.read(0, 3).showers, truth["ECAL"])  # GeV as stored


def test_lcd_ecal_scale_option_overrides_the_divisor(tmp_path: Path) -> None:
    path = tmp_path / "Ele.h5"
    truth = make_lcd_fixed(path)
    with open_source(path, ecal_scale=100) as source:
        np.testing.assert_allclose(source.read(0, 1).showers[0], truth["ECAL"][0] / 100, rtol=1e-6)
    with pytest.raises(CaloforgeError, match="ecal_scale"):
        open_source(path, ecal_scale=-1)
    with pytest.raises(CaloforgeError, match="takes options ecal_scale"):
        open_source(path, binning="x.xml")


def test_lcd_wrong_ecal_shape_names_key_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"] = np.zeros((2, 10, 10, 10), dtype=np.float32)
        f["energy"] = np.ones(2)
    with pytest.raises(InputFileError) as info:
        open_source(path, "lcd")
    assert info.value.key == "ECAL"
    assert "(2, 10, 10, 10)" in str(info.value) and "(N, 51, 51, 25)" in str(info.value)


def test_lcd_missing_theta_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no_theta.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"] = np.zeros((2, 51, 51, 25), dtype=np.float32)
        f["energy"] = np.full(2, 150.0)
    with pytest.raises(InputFileError) as info:
        open_source(path, "lcd")
    assert info.value.key == "theta" and str(path) in str(info.value)


def test_negative_cells_are_reported_with_row(tmp_path: Path) -> None:
    path = tmp_path / "neg.h5"
    with h5py.File(path, "w") as f:
        ecal = np.zeros((3, 25, 25, 25), dtype=np.float32)
        ecal[2, 1, 1, 1] = -1
        f["ECAL"] = ecal
        f["energy"] = np.ones(3)
    with open_source(path) as source:
        source.read(0, 2)  # rows without the bad cell read fine
        with pytest.raises(InputFileError, match=r"negative.*first at row 2"):
            source.read(0, 3)


# --- CaloChallenge ------------------------------------------------------------------------------


def test_read_binning_parses_layers_and_attributes(tmp_path: Path) -> None:
    xml = tmp_path / "binning.xml"
    xml.write_text(BINNING_XML)
    binning = read_binning(xml)
    assert binning.particle == "electron"
    assert dict(binning.attributes)["pid"] == "11"
    assert [layer.id for layer in binning.layers] == [0, 1, 2]
    assert binning.layers[0].r_edges == (0.0, 4.65, 9.3, 13.95)
    assert [layer.n_voxels for layer in binning.layers] == [12, 0, 4]
    assert binning.n_voxels == BINNING_VOXELS


def test_binning_xml_round_trips_text_and_structure(tmp_path: Path) -> None:
    xml = tmp_path / "binning.xml"
    xml.write_text(BINNING_XML)
    out = tmp_path / "again.xml"
    write_binning(read_binning(xml), out)
    assert read_binning(out) == read_binning(xml)
    assert out.read_text() == BINNING_XML
    assert Binning.from_extra(read_binning(xml).to_extra()) == read_binning(xml)


def test_calochallenge_reads_mev_as_gev_with_binning_geometry(tmp_path: Path) -> None:
    path, xml = tmp_path / "dataset_2_1.hdf5", tmp_path / "binning.xml"
    truth = make_calochallenge(path, xml)
    with open_source(path, binning=xml) as source:
        assert source.format == "calochallenge"
        geometry = source.geometry
        assert geometry.readout == "voxels" and geometry.shape == (BINNING_VOXELS,)
        assert geometry.extra["format"] == "calochallenge"
        assert geometry.extra["particle"] == "electron"
        assert geometry.extra["layers"][2] == {
            "id": 2,
            "r_edges": [0, 2.325, 4.65],
            "n_bin_alpha": 2,
        }
        np.testing.assert_allclose(
            source.conditions["energy"], truth["incident_energies"][:, 0] / 1000
        )
        np.testing.assert_allclose(source.read(0, 5).showers, truth["showers"] / 1000, rtol=1e-6)


def test_calochallenge_without_binning_says_how_to_pass_it(tmp_path: Path) -> None:
    path = tmp_path / "ds.hdf5"
    make_calochallenge(path, tmp_path / "binning.xml")
    with pytest.raises(CaloforgeError, match=r"--binning FILE\.xml"):
        open_source(path)


def test_calochallenge_voxel_count_must_match_binning(tmp_path: Path) -> None:
    path, xml = tmp_path / "ds.hdf5", tmp_path / "binning.xml"
    make_calochallenge(path, xml)
    xml.write_text(BINNING_XML.replace('n_bin_alpha="4"', 'n_bin_alpha="16"'))
    with pytest.raises(InputFileError) as info:
        open_source(path, binning=xml)
    assert info.value.key == "showers"
    assert "(N, 52)" in str(info.value) and f"(5, {BINNING_VOXELS})" in str(info.value)


def test_calochallenge_export_round_trip(tmp_path: Path) -> None:
    path, xml = tmp_path / "ds.hdf5", tmp_path / "binning.xml"
    truth = make_calochallenge(path, xml, n=7)
    with open_source(path, binning=xml) as source:
        out, out_xml = write_calochallenge(source, tmp_path / "out.hdf5", batch_size=3)
    assert out_xml == tmp_path / "out.xml"
    assert out_xml.read_text() == xml.read_text()
    with h5py.File(out, "r") as f:
        showers, energies = f["showers"][()], f["incident_energies"][()]
    assert showers.dtype == np.float32 and showers.shape == truth["showers"].shape
    np.testing.assert_array_equal(showers == 0, truth["showers"] == 0)
    # MeV -> float32 GeV -> MeV is bit-exact unless rounding to float32 GeV lost the last bit:
    # then it is 1 ulp off (about 2 % of random values; see write_calochallenge).
    np.testing.assert_array_max_ulp(showers, truth["showers"], maxulp=1)
    assert np.mean(showers == truth["showers"]) > 0.9
    np.testing.assert_allclose(energies, truth["incident_energies"], rtol=1e-15)


def test_calochallenge_export_is_exact_for_values_exact_in_gev(tmp_path: Path) -> None:
    path, xml = tmp_path / "ds.hdf5", tmp_path / "binning.xml"
    make_calochallenge(path, xml, n=2)
    exact = (np.arange(2 * BINNING_VOXELS, dtype=np.float32) * np.float32(125)).reshape(2, -1)
    with h5py.File(path, "a") as f:
        f["showers"][...] = exact  # multiples of 0.125 GeV: exact in float32 GeV
    with open_source(path, binning=xml) as source:
        out, _ = write_calochallenge(source, tmp_path / "out.hdf5")
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["showers"][()], exact)


def _clic25_file(tmp_path: Path, n: int = 4) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(5)
    showers = (rng.exponential(0.02, (n, 25, 25, 25)) * (rng.random((n, 25, 25, 25)) < 0.4)).astype(
        np.float32
    )
    path = tmp_path / "grid.h5"
    with ShowerWriter(path, PRESETS["clic-25"]) as writer:
        writer.write(Batch(showers, {"energy": rng.uniform(10, 100, n)}))
    return path, showers


def test_grid_export_conserves_energy_per_shower_and_layer(tmp_path: Path) -> None:
    path, showers = _clic25_file(tmp_path)
    with open_canonical(path) as source:
        out, out_xml = write_calochallenge(
            source, tmp_path / "cc.hdf5", tmp_path / "cc.xml", batch_size=3
        )
    binning = read_binning(out_xml)
    assert len(binning.layers) == 25 and binning.particle == "electron"
    layer = binning.layers[0]
    assert layer.n_bin_alpha == 16 and layer.r_edges[0] == 0
    assert layer.r_edges[-1] > 12 * 5.1 * math.sqrt(2)  # beyond the corner cells' centres
    with h5py.File(out, "r") as f:
        voxels = f["showers"][()] / 1000  # MeV -> GeV
        energies = f["incident_energies"][()]
    assert voxels.shape == (4, 25 * layer.n_voxels)
    np.testing.assert_allclose(voxels.sum(axis=1), showers.sum(axis=(1, 2, 3)), rtol=1e-5)
    per_layer = voxels.reshape(4, 25, -1).sum(axis=2)
    np.testing.assert_allclose(per_layer, showers.sum(axis=(1, 2)), rtol=1e-5)
    with open_canonical(path) as source:
        np.testing.assert_allclose(energies[:, 0], source.conditions["energy"] * 1000)
    with open_source(out, binning=out_xml) as back:  # the export reads as CaloChallenge
        assert len(back) == 4 and back.geometry.shape == (25 * layer.n_voxels,)


def test_grid_export_puts_a_cell_in_its_polar_voxel(tmp_path: Path) -> None:
    geometry = PRESETS["clic-25"]
    rebin = polar_rebinning(geometry, n_alpha=16)
    shower = np.zeros((1, 25, 25, 25), dtype=np.float32)
    shower[0, 16, 13, 3] = 2.0  # x = 4 cells, y = 1 cell from the centre cell (12, 12)
    voxels = rebin(shower)[0]
    x, y = 4 * 5.1, 1 * 5.1
    r_bin = int(np.searchsorted(rebin.r_edges, math.hypot(x, y)) - 1)
    alpha_bin = int((math.atan2(y, x) + math.pi) // (2 * math.pi / 16))
    n_r = len(rebin.r_edges) - 1
    expected = 3 * 16 * n_r + alpha_bin * n_r + r_bin  # (layer, alpha, r), r fastest
    assert np.flatnonzero(voxels).tolist() == [expected]
    assert voxels[expected] == 2.0


def test_grid_export_rejects_edges_that_lose_cells(tmp_path: Path) -> None:
    with pytest.raises(CaloforgeError, match="farthest cell centre"):
        polar_rebinning(PRESETS["clic-25"], r_edges=[0, 10, 50])


def test_export_refuses_voxel_geometries_it_cannot_rebin(tmp_path: Path) -> None:
    path = tmp_path / "calogan_eplus.h5"
    make_calogan(path)
    with (
        open_source(path) as source,
        pytest.raises(CaloforgeError, match="cannot write geometry 'calogan'"),
    ):
        write_calochallenge(source, tmp_path / "cc.hdf5")
    assert not (tmp_path / "cc.hdf5").exists() and not (tmp_path / "cc.xml").exists()


# --- CaloGAN -------------------------------------------------------------------------------------


def test_calogan_concatenates_layers_in_gev(tmp_path: Path) -> None:
    path = tmp_path / "eplus.hdf5"
    truth = make_calogan(path)
    with open_source(path) as source:
        assert source.format == "calogan"
        geometry = source.geometry
        assert geometry.shape == (504,) and geometry.readout == "voxels"
        assert geometry.particle == "positron"
        assert [layer["shape"] for layer in geometry.extra["layers"]] == [
            [3, 96],
            [12, 12],
            [12, 6],
        ]
        showers = source.read(0, 3).showers
        expected = np.concatenate(
            [truth[k].reshape(3, -1) for k in ("layer_0", "layer_1", "layer_2")], axis=1
        )
        np.testing.assert_allclose(showers, expected / 1000, rtol=1e-6)
        np.testing.assert_allclose(source.conditions["energy"], truth["energy"][:, 0])


def test_calogan_nan_cell_names_its_layer(tmp_path: Path) -> None:
    path = tmp_path / "gamma.hdf5"
    make_calogan(path)
    with h5py.File(path, "a") as f:
        f["layer_1"][1, 5, 5] = np.nan
    with open_source(path) as source, pytest.raises(InputFileError) as info:
        source.read(0, 3)
    assert info.value.key == "layer_1" and "row 1" in str(info.value)


# --- LHCb ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flat", "compressed"), [(False, True), (True, False)])
def test_lhcb_units_orientation_and_conditions(
    tmp_path: Path, flat: bool, compressed: bool
) -> None:
    path = tmp_path / "data_train.npz"
    truth = make_lhcb(path, flat=flat, compressed=compressed)
    with open_source(path) as source:
        assert source.format == "lhcb"
        assert source.geometry == PRESETS["lhcb-30"]
        images = truth["EnergyDeposit"].reshape(4, 30, 30)  # [y, x] as the challenge stores
        showers = source.read(1, 4).showers
        assert showers.shape == (3, 30, 30)
        np.testing.assert_allclose(showers, images[1:].transpose(0, 2, 1) / 1000, rtol=1e-6)
        momentum = truth["ParticleMomentum"].astype(np.float64)
        np.testing.assert_allclose(source.conditions["momentum"], momentum)
        np.testing.assert_allclose(source.conditions["energy"], np.linalg.norm(momentum, axis=1))
        np.testing.assert_allclose(source.conditions["point"], truth["ParticlePoint"][:, :2])
        np.testing.assert_array_equal(
            source.take(np.array([0, 2])).showers[1], source.read(2, 3).showers[0]
        )


def test_lhcb_scale_options(tmp_path: Path) -> None:
    path = tmp_path / "val.npz"
    truth = make_lhcb(path)
    with open_source(path, energy_scale=2e-3, point_scale=10.0) as source:
        np.testing.assert_allclose(
            source.read(0, 1).showers[0], 2e-3 * truth["EnergyDeposit"][0].T, rtol=1e-6
        )
        np.testing.assert_allclose(
            source.conditions["point"], 10 * truth["ParticlePoint"][:, :2], rtol=1e-6
        )
    # The file's MeV read as GeV: cells of up to 2 TeV from primaries of 1-100 GeV.
    source = open_source(path, energy_scale=1.0)
    with source, pytest.raises(InputFileError, match="far above the primary energy") as error:
        source.read(0, 4)
    assert "key 'EnergyDeposit'" in str(error.value) and "a cell of " in str(error.value)


def test_lhcb_missing_array_and_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    truth = make_lhcb(path)
    np.savez(path, EnergyDeposit=truth["EnergyDeposit"], ParticlePoint=truth["ParticlePoint"])
    with pytest.raises(InputFileError) as info:
        open_source(path)
    assert info.value.key == "ParticleMomentum"
    np.savez(path, **{**truth, "EnergyDeposit": np.zeros((4, 20, 20), dtype=np.float32)})
    with pytest.raises(InputFileError, match=r"\(4, 20, 20\)") as info:
        open_source(path)
    assert info.value.key == "EnergyDeposit"


# --- detection, pickling -------------------------------------------------------------------------


def _files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "lcd": tmp_path / "lcd.h5",
        "calochallenge": tmp_path / "cc.hdf5",
        "calogan": tmp_path / "calogan.hdf5",
        "lhcb": tmp_path / "lhcb.npz",
    }
    make_lcd_fixed(paths["lcd"])
    make_calochallenge(paths["calochallenge"], tmp_path / "binning.xml")
    make_calogan(paths["calogan"])
    make_lhcb(paths["lhcb"])
    with (
        open_source(paths["lcd"]) as source,
        ShowerWriter(tmp_path / "canonical.h5", source.geometry) as w,
    ):
        w.write(source.read(0, len(source)))
    paths["caloforge"] = tmp_path / "canonical.h5"
    return paths


def test_detection_picks_each_format(tmp_path: Path) -> None:
    for name, path in _files(tmp_path).items():
        assert detect_format(path) == name, path


def test_foreign_sources_pickle_by_reopening(tmp_path: Path) -> None:
    path = tmp_path / "lhcb.npz"
    make_lhcb(path)
    with open_source(path, point_scale=2.0) as source:
        clone = pickle.loads(pickle.dumps(source))
        try:
            np.testing.assert_array_equal(clone.read(0, 4).showers, source.read(0, 4).showers)
            np.testing.assert_array_equal(clone.conditions["point"], source.conditions["point"])
        finally:
            clone.close()


def test_a_file_without_read_permission_is_named(tmp_path: Path, monkeypatch) -> None:
    """Tests may run as root, who reads everything: the check is what is tested."""
    import os

    path = tmp_path / "Ele.h5"
    make_lcd_fixed(path)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(InputFileError, match=r"Ele\.h5: no permission to read it"):
        open_source(path)
