"""Geometries: the presets' sampling properties against physics.md section 3, (de)serialisation,
user YAML files and the errors of bad descriptions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from caloforge.errors import ConditionError, GeometryError
from caloforge.geometry import PRESETS, Geometry, Layer, load_geometry


def close_to(quoted: float, decimals: int) -> Any:
    """Equal to `quoted` at the precision it is quoted with (half a unit of the last digit)."""
    return pytest.approx(quoted, abs=0.5 * 10.0**-decimals + 1e-12)


# physics.md section 3, "Worked values": (attribute, quoted value, decimals, scale)
CLIC_THIN = [
    ("Z", 72.5, 1, 1.0),
    ("A", 180.0, 1, 1.0),
    ("density", 16.37, 2, 1.0),
    ("X0_cm", 0.420, 3, 1.0),
    ("Ec", 8.22, 2, 1.0),
    ("RM_cm", 1.08, 2, 1.0),
    ("Fs", 1.448, 3, 1.0),
    ("e_hat", 0.704, 3, 1.0),
    ("f_mip", 3.5, 1, 100.0),
    ("f_e", 2.5, 1, 100.0),
]
CLIC_THICK = [("Fs", 0.727, 3, 1.0), ("f_mip", 1.8, 1, 100.0), ("f_e", 1.3, 1, 100.0)]
LHCB = [
    ("Z", 70.0, 1, 1.0),
    ("A", 176.3, 1, 1.0),
    ("density", 4.49, 2, 1.0),
    ("X0_cm", 1.64, 2, 1.0),
    ("Ec", 9.70, 2, 1.0),
    ("RM_cm", 3.58, 2, 1.0),
    ("Fs", 2.73, 2, 1.0),
    ("e_hat", 0.652, 3, 1.0),
    ("f_mip", 25.5, 1, 100.0),
    ("f_e", 16.6, 1, 100.0),  # quoted as "about 16.6 %"
]
WORKED = (
    [("clic-25", 0, *row) for row in CLIC_THIN]
    + [("clic-angle-51", 0, *row) for row in CLIC_THIN]
    + [("clic-25", 24, *row) for row in CLIC_THICK]
    + [("clic-angle-51", 17, *row) for row in CLIC_THICK]
    + [("lhcb-30", 0, *row) for row in LHCB]
)


@pytest.mark.parametrize(("preset", "layer", "attribute", "quoted", "decimals", "scale"), WORKED)
def test_preset_sampling_properties_match_the_worked_values(
    preset: str, layer: int, attribute: str, quoted: float, decimals: int, scale: float
) -> None:
    properties = PRESETS[preset].layers[layer].properties
    assert getattr(properties, attribute) * scale == close_to(quoted, decimals)


def test_clic_layer_structure() -> None:
    g = PRESETS["clic-25"]
    assert g.shape == (25, 25, 25) and len(g.layers) == 25
    assert [layer.absorber_mm for layer in g.layers] == [2.4] * 17 + [4.8] * 8
    assert g.layer_boundaries_mm[-1] == pytest.approx(17 * 2.9 + 8 * 5.3)
    assert g.depth_X0 == pytest.approx(23, abs=1.0)  # "about 23 X0"
    assert PRESETS["lhcb-30"].depth_X0 == pytest.approx(66 * 0.6 / 1.639, rel=1e-3)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name: str) -> None:
    g = PRESETS[name]
    again = Geometry.from_json(g.to_json())
    assert again == g
    assert again.to_dict() == g.to_dict()
    assert again.layers[-1].properties == g.layers[-1].properties


def test_layers_are_stored_run_length_encoded() -> None:
    layers = json.loads(PRESETS["clic-25"].to_json())["layers"]
    assert [(spec["absorber_mm"], spec["repeat"]) for spec in layers] == [(2.4, 17), (4.8, 8)]


USER_YAML = """\
name: my-ecal
shape: [4, 4, 5]
readout: layers
cell_size_mm: [10, 10]
layers:
  - {absorber: Pb, absorber_mm: 3.0, sensor: polystyrene, sensor_mm: 2.0, repeat: 3}
  - {absorber: W, absorber_mm: 1.0, sensor: Si, sensor_mm: 0.3, repeat: 2}
conditions:
  - {name: energy, unit: GeV, default: [1, 50], valid: [0.5, 100]}
  - {name: theta, unit: rad, valid: [0.5, 2.5]}
stochastic_term: 0.12
"""


def test_user_yaml_geometry(tmp_path: Path) -> None:
    path = tmp_path / "my-ecal.yaml"
    path.write_text(USER_YAML)
    g = load_geometry(path)
    assert g.name == "my-ecal" and g.shape == (4, 4, 5) and g.cell_size_mm == (10.0, 10.0)
    assert (
        g.layers == (Layer("Pb", 3.0, "polystyrene", 2.0),) * 3 + (Layer("W", 1.0, "Si", 0.3),) * 2
    )
    assert g.layer_boundaries_mm == pytest.approx([0, 5, 10, 15, 16.3, 17.6])
    assert g.condition_names == ("energy", "theta")
    assert g.condition("energy").default == (1.0, 50.0)
    assert g.condition("theta").valid == (0.5, 2.5)
    assert g.stochastic_term == 0.12 and g.constant_term == 0.01  # the default
    assert Geometry.from_json(g.to_json()) == g
    assert load_geometry(str(path)) == g


def test_preset_by_name() -> None:
    assert load_geometry("lhcb-30") is PRESETS["lhcb-30"]


def _yaml_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GeometryError) as error:
        load_geometry(path)
    return str(error.value)


def test_unknown_key(tmp_path: Path) -> None:
    message = _yaml_error(tmp_path, USER_YAML + "colour: red\n")
    assert "bad.yaml" in message and "unknown key(s) ['colour']" in message
    assert "known keys" in message and "cell_size_mm" in message


def test_unknown_material(tmp_path: Path) -> None:
    message = _yaml_error(tmp_path, USER_YAML.replace("absorber: W", "absorber: Unobtainium"))
    assert "unknown material 'Unobtainium'" in message
    assert "known materials: Pb, Si, W, polystyrene" in message


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("[4, 4]", "per-layer readout needs shape (nx, ny, n_layers) with n_layers = 5 layers"),
        ("[4, 4, 6]", "got shape (4, 4, 6)"),
        ("[4, 0, 5]", "shape must be positive"),
        ("[4, four, 5]", "bad.yaml: invalid geometry description"),
    ],
)
def test_bad_shape(tmp_path: Path, shape: str, expected: str) -> None:
    message = _yaml_error(tmp_path, USER_YAML.replace("[4, 4, 5]", shape))
    assert expected in message


def test_bad_readout_and_conditions(tmp_path: Path) -> None:
    assert "readout must be 'layers', 'summed' or 'voxels'" in _yaml_error(
        tmp_path, USER_YAML.replace("readout: layers", "readout: cubes")
    )
    assert "must be unique and include 'energy'" in _yaml_error(
        tmp_path, USER_YAML.replace("name: energy", "name: momentum")
    )
    assert "missing key 'shape'" in _yaml_error(
        tmp_path, USER_YAML.replace("shape: [4, 4, 5]\n", "")
    )
    assert "bad layer" in _yaml_error(tmp_path, USER_YAML.replace("repeat: 2", "repeat: 0"))


def test_bad_yaml_files(tmp_path: Path) -> None:
    assert "expected a mapping" in _yaml_error(tmp_path, "- just\n- a list\n")
    assert "not valid YAML" in _yaml_error(tmp_path, "name: [unclosed\n")
    with pytest.raises(GeometryError, match="geometry file not found"):
        load_geometry(tmp_path / "absent.yaml")


def test_unknown_preset() -> None:
    with pytest.raises(GeometryError) as error:
        load_geometry("clic-26")
    message = str(error.value)
    assert "unknown geometry 'clic-26'" in message
    assert all(name in message for name in PRESETS) and ".yaml" in message


def test_unknown_condition() -> None:
    with pytest.raises(ConditionError, match="no condition 'theta'; it has energy"):
        PRESETS["clic-25"].condition("theta")


def test_condition_check() -> None:
    energy = PRESETS["clic-25"].condition("energy")  # valid 1:1000 GeV
    energy.check(1.0, 1000.0)
    energy.check(100.0, 100.0)
    with pytest.raises(ConditionError, match="valid for 1:1000 GeV"):
        energy.check(0.5, 100.0)
    with pytest.raises(ConditionError, match=r"'energy' is 10(\.0)?:2000(\.0)? GeV"):
        energy.check(10.0, 2000.0)
    with pytest.raises(ConditionError, match="expected finite low <= high"):
        energy.check(200.0, 100.0)
    with pytest.raises(ConditionError, match="expected finite low <= high"):
        energy.check(math.nan, 100.0)
    theta = PRESETS["clic-angle-51"].condition("theta")  # valid 45:135 degrees
    theta.check(math.radians(60), math.radians(120))
    with pytest.raises(ConditionError, match="theta"):
        theta.check(math.radians(30), math.radians(120))
