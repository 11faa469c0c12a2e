"""Detector geometries: the cell grid, the layer structure and the conditions of a shower set.

A `Geometry` says everything needed to read, simulate, learn and validate showers of one
detector: the shape of one shower image and the axes' meaning, the cell size, the sampling
layers (absorber and sensor materials and thicknesses, from which the effective radiation
length, Moliere radius and sampling fractions follow), and the conditions that label each
shower with their units and ranges.

Presets (`PRESETS`) cover the seed studies' detectors; a user describes their own in YAML
(`load_geometry("my-ecal.yaml")`), see `Geometry.from_dict` for the keys.

Axis convention for grid geometries: a shower is `(x, y, layer)` for per-layer readout and
`(x, y)` for depth-summed readout; `layer` counts from the front face. The incident angle
`theta` tilts the shower in the (y, depth) plane: at `theta = pi/2` the particle enters
perpendicular to the face.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from caloforge.errors import ConditionError, GeometryError

# Critical energy scale of the Moliere radius, MeV.
ES_MEV = 21.2


@dataclass(frozen=True)
class Material:
    """A pure material or an effective compound (physics.md, section 3)."""

    name: str
    Z: float
    A: float
    density: float  # g/cm3
    X0: float  # radiation length, g/cm2
    Ec: float  # critical energy, MeV
    dedx_min: float  # minimum-ionising stopping power, MeV cm2/g

    @property
    def X0_cm(self) -> float:
        return self.X0 / self.density

    @property
    def RM(self) -> float:
        """Moliere radius in g/cm2."""
        return ES_MEV * self.X0 / self.Ec


# The unit each condition caloforge knows is stored, simulated and learned in.
UNITS = {"energy": "GeV", "theta": "rad", "momentum": "GeV", "point": "mm"}

MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("W", 74, 183.84, 19.3, 6.76, 7.97, 1.145),
        Material("Pb", 82, 207.2, 11.35, 6.37, 7.43, 1.122),
        Material("Si", 14, 28.086, 2.329, 21.82, 40.19, 1.664),
        Material("polystyrene", 5.61, 11.16, 1.06, 43.79, 93.1, 2.052),
    )
}


def _material(name: str) -> Material:
    try:
        return MATERIALS[name]
    except KeyError:
        raise GeometryError(
            f"unknown material '{name}'; known materials: {', '.join(sorted(MATERIALS))}"
        ) from None


@dataclass(frozen=True)
class SamplingProperties:
    """Effective properties of one passive + active sampling layer (physics.md, section 3)."""

    Z: float  # effective atomic number (mass weighted)
    A: float
    density: float  # g/cm3, averaged over the layer's thickness
    X0_cm: float  # effective radiation length, cm
    Ec: float  # effective critical energy, MeV
    RM_cm: float  # effective Moliere radius, cm
    Fs: float  # layer pitch in units of X0_eff
    e_hat: float  # e/mip ratio
    f_mip: float  # sampling fraction for minimum-ionising particles
    f_e: float  # sampling fraction for electrons = e_hat * f_mip


@dataclass(frozen=True)
class Layer:
    """One sampling layer: an absorber plate followed by a sensor plate (thicknesses in mm)."""

    absorber: str
    absorber_mm: float
    sensor: str
    sensor_mm: float

    @property
    def thickness_mm(self) -> float:
        return self.absorber_mm + self.sensor_mm

    @cached_property
    def properties(self) -> SamplingProperties:
        p, a = _material(self.absorber), _material(self.sensor)
        d = (self.absorber_mm / 10.0, self.sensor_mm / 10.0)  # cm
        mass = (d[0] * p.density, d[1] * a.density)  # g/cm2
        w = (mass[0] / sum(mass), mass[1] / sum(mass))
        Z = w[0] * p.Z + w[1] * a.Z
        A = w[0] * p.A + w[1] * a.A
        density = sum(mass) / sum(d)
        X0_g = 1.0 / (w[0] / p.X0 + w[1] / a.X0)
        ec_over_x0 = w[0] * p.Ec / p.X0 + w[1] * a.Ec / a.X0
        Ec = X0_g * ec_over_x0
        RM_g = ES_MEV / ec_over_x0
        X0_cm = X0_g / density
        dedx = (mass[0] * p.dedx_min, mass[1] * a.dedx_min)
        f_mip = dedx[1] / sum(dedx)
        e_hat = 1.0 / (1.0 + 0.007 * (p.Z - a.Z))
        return SamplingProperties(
            Z=Z,
            A=A,
            density=density,
            X0_cm=X0_cm,
            Ec=Ec,
            RM_cm=RM_g / density,
            Fs=X0_cm / sum(d),
            e_hat=e_hat,
            f_mip=f_mip,
            f_e=e_hat * f_mip,
        )

    @property
    def thickness_X0(self) -> float:
        return self.thickness_mm / 10.0 / self.properties.X0_cm


@dataclass(frozen=True)
class Condition:
    """One label of a shower: its name, unit, size per shower and ranges.

    `default` is the range `simulate` draws from when the user gives none; `valid` is where
    the geometry's physics (the simulator's parametrization, a model's training) holds.
    Ranges are in the stored unit. A condition with `derived=True` is computed from the
    others (the LHCb momentum from the energy and the angles) and has no range of its own.
    """

    name: str
    unit: str
    size: int = 1
    default: tuple[float, float] | None = None
    valid: tuple[float, float] | None = None
    derived: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        for which, bounds in (("default", self.default), ("valid", self.valid)):
            if bounds is not None and not (
                all(math.isfinite(b) for b in bounds) and bounds[0] <= bounds[1]
            ):
                raise GeometryError(
                    f"condition '{self.name}': {which} must be a finite range [low, high] "
                    f"with low <= high, got {list(bounds)}"
                )
        d, v = self.default, self.valid
        if d is not None and v is not None and (d[0] < v[0] or d[1] > v[1]):
            raise GeometryError(
                f"condition '{self.name}': default {list(d)} must lie inside valid {list(v)}"
            )

    def check(self, low: float, high: float, source: str = "requested range") -> None:
        """Raise `ConditionError` unless `low <= high` lies inside the valid range."""
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise ConditionError(
                f"{source} for '{self.name}' is {low}:{high}; expected finite low <= high"
            )
        if self.valid is not None and (low < self.valid[0] or high > self.valid[1]):
            raise ConditionError(
                f"{source} for '{self.name}' is {low:g}:{high:g} {self.unit}; this geometry is "
                f"valid for {self.valid[0]:g}:{self.valid[1]:g} {self.unit}"
            )


Readout = Literal["layers", "summed", "voxels"]
# Cells of one shower at most: a shower is one HDF5 chunk (4 GiB at most) and every batch
# holds many; beyond this a geometry is a typing mistake, not a calorimeter.
MAX_CELLS = 1 << 28
MAX_LAYERS = 10_000


@dataclass(frozen=True)
class Geometry:
    """A detector: image shape, cell size, sampling layers, conditions and resolution terms.

    readout:
      - "layers": one image plane per sampling layer, shape `(nx, ny, n_layers)`;
      - "summed": energy summed over all layers, shape `(nx, ny)`;
      - "voxels": a flat list of cells described by `extra` (CaloChallenge, CaloGAN binnings);
        such geometries can be read and validated but not simulated.
    """

    name: str
    shape: tuple[int, ...]
    readout: Readout
    conditions: tuple[Condition, ...]
    cell_size_mm: tuple[float, float] | None = None
    layers: tuple[Layer, ...] = ()
    stochastic_term: float = 0.15  # c_s of sigma/E = c_s/sqrt(E/GeV) (+) c
    constant_term: float = 0.01  # c
    particle: str = "electron"
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise GeometryError("a geometry needs a non-empty 'name'")
        if not self.shape or any(int(s) <= 0 for s in self.shape):
            raise GeometryError(f"geometry '{self.name}': shape must be positive, got {self.shape}")
        if math.prod(self.shape) > MAX_CELLS:
            raise GeometryError(
                f"geometry '{self.name}': shape {self.shape} has {math.prod(self.shape):,} cells "
                f"per shower; at most {MAX_CELLS:,} (1 GiB of float32 a shower)"
            )
        if self.readout == "layers":
            if len(self.shape) != 3 or self.shape[2] != len(self.layers):
                raise GeometryError(
                    f"geometry '{self.name}': per-layer readout needs shape (nx, ny, n_layers) "
                    f"with n_layers = {len(self.layers)} layers, got shape {self.shape}"
                )
        elif self.readout == "summed":
            if len(self.shape) != 2 or not self.layers:
                raise GeometryError(
                    f"geometry '{self.name}': summed readout needs shape (nx, ny) and at least "
                    f"one layer, got shape {self.shape} and {len(self.layers)} layers"
                )
        elif self.readout != "voxels":
            raise GeometryError(
                f"geometry '{self.name}': readout must be 'layers', 'summed' or 'voxels', "
                f"got '{self.readout}'"
            )
        if self.readout != "voxels" and self.cell_size_mm is None:
            raise GeometryError(f"geometry '{self.name}': grid readout needs 'cell_size_mm'")
        if self.cell_size_mm is not None and not all(
            math.isfinite(s) and s > 0 for s in self.cell_size_mm
        ):
            raise GeometryError(
                f"geometry '{self.name}': cell_size_mm must be two positive lengths in mm, "
                f"got {list(self.cell_size_mm)}"
            )
        for term in ("stochastic_term", "constant_term"):
            value = getattr(self, term)
            if not (math.isfinite(value) and value >= 0):
                raise GeometryError(
                    f"geometry '{self.name}': {term} must be a finite number >= 0 (a term of "
                    f"the resolution sigma/E), got {value}"
                )
        for c in self.conditions:
            unit = UNITS.get(c.name)
            if unit is not None and c.unit != unit:
                raise GeometryError(
                    f"geometry '{self.name}': condition '{c.name}' is in {unit}, as caloforge "
                    f"stores and simulates it; got unit '{c.unit}' (convert the values instead)"
                )
        for i, layer in enumerate(self.layers):
            if not all(
                math.isfinite(t) and t >= 0 for t in (layer.absorber_mm, layer.sensor_mm)
            ) or not (layer.sensor_mm > 0):
                raise GeometryError(
                    f"geometry '{self.name}': layer {i} needs absorber_mm >= 0 and sensor_mm "
                    f"> 0 (finite, mm), got {layer.absorber_mm} and {layer.sensor_mm}"
                )
        names = [c.name for c in self.conditions]
        if "energy" not in names or len(set(names)) != len(names):
            raise GeometryError(
                f"geometry '{self.name}': conditions must be unique and include 'energy', "
                f"got {names}"
            )

    # --- conditions -------------------------------------------------------------------
    def condition(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        raise ConditionError(
            f"geometry '{self.name}' has no condition '{name}'; it has "
            f"{', '.join(c.name for c in self.conditions)}"
        )

    @property
    def condition_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.conditions)

    def has_condition(self, name: str) -> bool:
        return name in self.condition_names

    # --- layer structure ----------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return math.prod(self.shape)

    @property
    def simulable(self) -> bool:
        return self.readout in ("layers", "summed")

    @property
    def layer_boundaries_mm(self) -> list[float]:
        """Depths of the layer boundaries from the front face, mm (n_layers + 1 values)."""
        z = [0.0]
        for layer in self.layers:
            z.append(z[-1] + layer.thickness_mm)
        return z

    @property
    def depth_X0(self) -> float:
        """Total depth at perpendicular incidence, in radiation lengths."""
        return sum(layer.thickness_X0 for layer in self.layers)

    @property
    def front(self) -> SamplingProperties:
        """Effective material of the first layer, which sets the shower parametrization."""
        if not self.layers:
            raise GeometryError(f"geometry '{self.name}' has no layer structure")
        return self.layers[0].properties

    # --- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["conditions"] = [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()}
            for c in self.conditions
        ]
        d["layers"] = _compress_layers(self.layers)
        d["extra"] = dict(self.extra)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "geometry description") -> Geometry:
        """Build a geometry from a dict (a YAML file or the JSON stored in a shower file).

        Keys: name, shape, readout, conditions (list of {name, unit, size, default, valid,
        derived, description}), cell_size_mm, layers (list of {absorber, absorber_mm, sensor,
        sensor_mm, repeat}), stochastic_term, constant_term, particle, description, extra.
        """
        if not isinstance(d, Mapping):
            found = f"{type(d).__name__} {d!r:.60}"
            raise GeometryError(f"{source}: expected a mapping of geometry keys, found {found}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise GeometryError(
                f"{source}: unknown key(s) {sorted(unknown)}; known keys: {sorted(known)}"
            )
        for key in ("name", "shape", "readout", "conditions"):
            if key not in d:
                raise GeometryError(f"{source}: missing key '{key}'")
        key = "layers"  # the entry being read, for the message of a bad value
        try:
            layers: list[Layer] = []
            for spec in d.get("layers", ()) or ():
                spec = dict(spec)
                repeat = _whole(spec.pop("repeat", 1))
                layer = Layer(
                    absorber=str(spec["absorber"]),
                    absorber_mm=float(spec["absorber_mm"]),
                    sensor=str(spec["sensor"]),
                    sensor_mm=float(spec["sensor_mm"]),
                )
                for name in (layer.absorber, layer.sensor):
                    if name not in MATERIALS:
                        raise GeometryError(
                            f"{source}: unknown material '{name}'; known materials: "
                            f"{', '.join(sorted(MATERIALS))}"
                        )
                if layer.absorber_mm < 0 or layer.sensor_mm <= 0 or repeat < 1:
                    raise GeometryError(
                        f"{source}: bad layer {spec} with repeat {repeat}: need absorber_mm >= 0, "
                        "sensor_mm > 0 and repeat >= 1"
                    )
                if len(layers) + repeat > MAX_LAYERS:
                    raise GeometryError(f"{source}: more than {MAX_LAYERS} layers")
                layers.extend([layer] * repeat)
            key = "conditions"
            conditions = tuple(
                Condition(
                    name=str(c["name"]),
                    unit=str(c.get("unit", UNITS.get(str(c["name"]), ""))),
                    size=_whole(c.get("size", 1)),
                    default=_range(c.get("default")),
                    valid=_range(c.get("valid")),
                    derived=bool(c.get("derived", False)),
                    description=str(c.get("description", "")),
                )
                for c in d["conditions"]
            )
            key = "cell_size_mm"
            cell = d.get("cell_size_mm")
            cell_size = None if cell is None else _pair(cell)
            key = "shape"
            shape = tuple(_whole(s) for s in _list(d["shape"]))
            terms = {}
            for key, default in (("stochastic_term", 0.15), ("constant_term", 0.01)):
                terms[key] = _number(d.get(key, default))
            key = "extra"
            extra = d.get("extra", {}) or {}
            if not isinstance(extra, Mapping):
                raise ValueError(f"expected a mapping, found {extra!r}")
            key = "the other keys"
            return cls(
                name=str(d["name"]),
                shape=shape,
                readout=d["readout"],
                conditions=conditions,
                cell_size_mm=cell_size,
                layers=tuple(layers),
                particle=str(d.get("particle", "electron")),
                description=str(d.get("description", "")),
                extra=dict(extra),
                **terms,
            )
        except GeometryError as exc:
            if str(exc).startswith(source):
                raise
            raise GeometryError(f"{source}: {exc}") from None  # the file, with the problem
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            problem = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise GeometryError(
                f"{source}: invalid geometry description, key '{key}' ({problem})"
            ) from None

    @classmethod
    def from_json(cls, text: str, source: str = "geometry description") -> Geometry:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GeometryError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(d, Mapping):
            raise GeometryError(
                f"{source}: expected a JSON object of geometry keys, found {type(d).__name__}"
            )
        return cls.from_dict(d, source)


def _list(value: Any) -> Sequence[Any]:
    """A YAML or JSON list (a text such as '25x25x25' is not one: it iterates by letter)."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise ValueError(f"expected a list, found {value!r}")
    return value


def _pair(value: Any) -> tuple[float, float]:
    """Two numbers (x and y); a third would be ignored."""
    values = _list(value)
    if len(values) != 2:
        raise ValueError(f"expected two numbers (x, y), found {list(values)!r}")
    return (_number(values[0]), _number(values[1]))


def _number(value: Any) -> float:
    """A number: float() would take True as 1 and the text '0.2' as 0.2."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, found {value!r}")
    return float(value)


def _whole(value: Any) -> int:
    """A count (a shape, a size, a repeat): an integer or a whole float (25.0); 25.5, True
    or '25' are refused (int() would take 25.5 as 25 and a text as its number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a whole number, found {value!r}")
    if not (math.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"expected a whole number, found {value!r}")
    return int(value)


def _range(value: Sequence[float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    low, high = value
    return (float(low), float(high))


def _compress_layers(layers: Sequence[Layer]) -> list[dict[str, Any]]:
    """Run-length encode identical consecutive layers as {..., repeat: n}."""
    out: list[dict[str, Any]] = []
    for layer in layers:
        spec = asdict(layer)
        if out and {k: v for k, v in out[-1].items() if k != "repeat"} == spec:
            out[-1]["repeat"] += 1
        else:
            out.append({**spec, "repeat": 1})
    return out


# --- presets ----------------------------------------------------------------------------
_DEG = math.pi / 180.0

_CLIC_LAYERS = (Layer("W", 2.4, "Si", 0.5),) * 17 + (Layer("W", 4.8, "Si", 0.5),) * 8

_ENERGY_CLIC = Condition(
    "energy",
    "GeV",
    default=(2.0, 500.0),
    valid=(1.0, 1000.0),
    description="primary electron energy",
)

PRESETS: dict[str, Geometry] = {
    g.name: g
    for g in (
        Geometry(
            name="clic-25",
            shape=(25, 25, 25),
            readout="layers",
            cell_size_mm=(5.1, 5.1),
            layers=_CLIC_LAYERS,
            conditions=(_ENERGY_CLIC,),
            stochastic_term=0.166,
            constant_term=0.011,
            description=(
                "CLIC-like Si-W ECAL (3DGAN/Conv2D LCD data set): 25x25 cells of 5.1 mm, "
                "25 layers (17 x 2.4 mm W then 8 x 4.8 mm W, 0.5 mm Si), perpendicular electrons"
            ),
        ),
        Geometry(
            name="clic-angle-51",
            shape=(51, 51, 25),
            readout="layers",
            cell_size_mm=(5.1, 5.1),
            layers=_CLIC_LAYERS,
            conditions=(
                Condition(
                    "energy",
                    "GeV",
                    default=(100.0, 200.0),
                    valid=(1.0, 1000.0),
                    description="primary electron energy",
                ),
                Condition(
                    "theta",
                    "rad",
                    default=(60 * _DEG, 120 * _DEG),
                    valid=(45 * _DEG, 135 * _DEG),
                    description="polar angle of incidence; pi/2 is perpendicular to the face",
                ),
            ),
            stochastic_term=0.166,
            constant_term=0.011,
            description=(
                "CLIC-like Si-W ECAL, 51x51 cells of 5.1 mm centred on the shower barycentre, "
                "25 layers (17 x 2.4 mm W then 8 x 4.8 mm W, 0.5 mm Si), inclined electrons"
            ),
        ),
        Geometry(
            name="lhcb-30",
            shape=(30, 30),
            readout="summed",
            cell_size_mm=(20.0, 20.0),
            layers=(Layer("Pb", 2.0, "polystyrene", 4.0),) * 66,
            conditions=(
                Condition(
                    "energy",
                    "GeV",
                    default=(1.0, 100.0),
                    valid=(0.5, 200.0),
                    description="primary electron energy (1/E spectrum by default)",
                ),
                Condition(
                    "momentum",
                    "GeV",
                    size=3,
                    derived=True,
                    description="(px, py, pz); angles Gaussian, 20 deg in xz and 10 deg in yz",
                ),
                Condition(
                    "point",
                    "mm",
                    size=2,
                    default=(-5.0, 5.0),
                    valid=(-100.0, 100.0),
                    description="(x, y) entry point on the front face",
                ),
            ),
            stochastic_term=0.10,
            constant_term=0.01,
            description=(
                "LHCb shashlik ECAL: 30x30 cells of 2x2 cm, energy summed over 66 layers of "
                "2 mm Pb + 4 mm scintillator"
            ),
        ),
    )
}


def load_geometry(name_or_path: str | Path) -> Geometry:
    """A preset by name, or a user's geometry from a YAML (or JSON) file."""
    key = str(name_or_path)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        from caloforge.config import read_yaml

        data = read_yaml(path, "geometry file", GeometryError)
        if not isinstance(data, Mapping):
            raise GeometryError(f"{path}: expected a mapping of geometry keys at the top level")
        return Geometry.from_dict(data, source=str(path))
    raise GeometryError(
        f"unknown geometry '{key}'; presets: {', '.join(PRESETS)}, or a path to a .yaml file"
    )
