"""CaloChallenge 2022 files: reading them, and writing showers in their layout.

A data set is an HDF5 file and the binning XML of its data set (both needed):

  incident_energies  (N, 1) or (N,)  primary energy, MeV (read as GeV)
  showers            (N, n_voxels)   voxel energies, MeV (read as GeV); voxels ordered by
                                     layer, then alpha bin, then r bin (r fastest)

The binning XML (e.g. `binning_dataset_2.xml`) looks like

  <Bins>
     <Bin pid="11" name="electron">
        <Layer id="0" r_edges="0,4.65,9.3,...,41.85" n_bin_alpha="16" />
        ...
     </Bin>
  </Bins>

with one `Layer` per calorimeter layer: `r_edges` are the radial bin edges in mm (a layer with
the single edge "0" has no voxels), `n_bin_alpha` the number of equal angular bins over
(-pi, pi]. A layer has (len(r_edges) - 1) * n_bin_alpha voxels.

`write_calochallenge` writes any set of a CaloChallenge geometry back in this layout, and a set
of a grid geometry (per-layer images such as clic-25) after rebinning each layer's cells into
polar bins around the grid centre.
"""

from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caloforge._files import atomic_output, error_number, is_write_failure, os_error_text
from caloforge.data.canonical import abandon_h5
from caloforge.data.formats import FileFormat, register
from caloforge.data.formats._foreign import (
    ForeignSource,
    Selection,
    ShowerReader,
    check_options,
    column,
    dataset,
    is_canonical,
    open_checked,
    read_all,
    shape_text,
    sniff_hdf5,
)
from caloforge.data.source import ShowerSource, iter_batches, require_file
from caloforge.errors import CaloforgeError, InputFileError
from caloforge.geometry import Condition, Geometry

FORMAT = "calochallenge"
SHOWERS_KEY = "showers"
ENERGY_KEY = "incident_energies"
MEV_PER_GEV = 1000.0
DEFAULT_N_ALPHA = 16
# Default radial edges for rebinning a grid, in cell pitches; the last edge is added to
# enclose every cell centre.
DEFAULT_R_EDGES_IN_CELLS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
CHUNK_BYTES = 1 << 18
PDG_IDS = {"electron": 11, "positron": -11, "photon": 22, "pion": 211}


class ConditionsNotWrittenWarning(UserWarning):
    """Conditions of a set (theta, momentum, point) that a CaloChallenge file cannot hold."""


# --- binning --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BinningLayer:
    """One layer's polar binning: radial edges in mm and the number of alpha bins."""

    id: int
    r_edges: tuple[float, ...]
    n_bin_alpha: int

    @property
    def n_r(self) -> int:
        return max(len(self.r_edges) - 1, 0)

    @property
    def n_voxels(self) -> int:
        return self.n_r * self.n_bin_alpha


@dataclass(frozen=True)
class Binning:
    """A CaloChallenge binning: the `<Bin>` element's attributes (pid, name, ...) and layers."""

    attributes: tuple[tuple[str, str], ...]
    layers: tuple[BinningLayer, ...]

    @property
    def particle(self) -> str:
        return dict(self.attributes).get("name", "unknown")

    @property
    def n_voxels(self) -> int:
        return sum(layer.n_voxels for layer in self.layers)

    def to_extra(self) -> dict[str, Any]:
        """The binning as a geometry's `extra` (JSON-friendly; attribute order kept)."""
        return {
            "format": FORMAT,
            "particle": self.particle,
            "bin_attributes": [list(kv) for kv in self.attributes],
            "layers": [
                {"id": layer.id, "r_edges": list(layer.r_edges), "n_bin_alpha": layer.n_bin_alpha}
                for layer in self.layers
            ],
        }

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> Binning:
        attributes = extra.get("bin_attributes") or [["name", extra.get("particle", "unknown")]]
        return cls(
            attributes=tuple((str(k), str(v)) for k, v in attributes),
            layers=tuple(
                BinningLayer(
                    int(layer["id"]),
                    tuple(float(r) for r in layer["r_edges"]),
                    int(layer["n_bin_alpha"]),
                )
                for layer in extra["layers"]
            ),
        )


def read_binning(path: str | os.PathLike[str]) -> Binning:
    """Parse a CaloChallenge binning XML (one `<Bin>` element of `<Layer>` elements)."""
    try:
        path = require_file(path)
        root = ET.parse(path).getroot()
    except InputFileError as exc:
        raise InputFileError(path, f"binning XML: {exc.problem}") from None
    except ET.ParseError as exc:
        raise InputFileError(path, f"not a valid XML file ({exc})") from None
    bins = root.findall("Bin")
    if root.tag != "Bins" or len(bins) != 1:
        raise InputFileError(
            path,
            "not a CaloChallenge binning",
            expected="a <Bins> root holding one <Bin> element",
            found=f"<{root.tag}> with {len(bins)} <Bin> element(s)",
        )
    layers = tuple(_layer(path, element) for element in bins[0].findall("Layer"))
    if not layers:
        raise InputFileError(path, "no <Layer> elements in <Bin>", key="Layer")
    return Binning(tuple(bins[0].attrib.items()), layers)


def _layer(path: Path, element: ET.Element) -> BinningLayer:
    where = f"Layer id={element.get('id', '?')}"
    name, expected = "r_edges", "comma-separated numbers (mm)"
    try:
        edges = tuple(float(e) for e in element.attrib[name].split(",") if e.strip())
        name, expected = "id", "an integer"
        number = int(element.attrib[name])
        name, expected = "n_bin_alpha", "an integer"
        layer = BinningLayer(number, edges, int(element.attrib[name]))
    except KeyError as exc:
        raise InputFileError(path, f"missing attribute {exc}", key=where) from None
    except ValueError:
        raise InputFileError(
            path,
            f"bad attribute {name}",
            key=where,
            expected=expected,
            found=repr(element.attrib[name])[:60],
        ) from None
    finite = np.isfinite(edges).all()
    if (
        layer.n_bin_alpha < 1
        or not edges
        or not finite
        or (np.diff(edges) <= 0).any()
        or edges[0] < 0
    ):
        raise InputFileError(
            path,
            "bad binning",
            key=where,
            expected="increasing finite r_edges >= 0 and n_bin_alpha >= 1",
            found=f"r_edges={list(edges)}, n_bin_alpha={layer.n_bin_alpha}",
        )
    return layer


def write_binning(binning: Binning, path: str | os.PathLike[str]) -> None:
    """Write `binning` as a CaloChallenge binning XML."""
    root = ET.Element("Bins")
    bin_element = ET.SubElement(root, "Bin", dict(binning.attributes))
    for layer in binning.layers:
        ET.SubElement(
            bin_element,
            "Layer",
            {
                "id": str(layer.id),
                "r_edges": ",".join(_number(r) for r in layer.r_edges),
                "n_bin_alpha": str(layer.n_bin_alpha),
            },
        )
    ET.indent(root, space="   ")
    Path(path).write_text(ET.tostring(root, encoding="unicode") + "\n")


def _number(x: float) -> str:
    """Shortest text that reads back as `x`: 0.0 -> '0', 4.65 -> '4.65'."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def geometry_for(binning: Binning) -> Geometry:
    """The voxel geometry of a CaloChallenge binning."""
    n = binning.n_voxels
    return Geometry(
        name=f"calochallenge-{binning.particle}-{n}",
        shape=(n,),
        readout="voxels",
        conditions=(Condition("energy", "GeV", description="incident energy"),),
        particle=binning.particle,
        description=(
            f"CaloChallenge 2022 binning: {len(binning.layers)} layers, {n} voxels ordered "
            "(layer, alpha, r)"
        ),
        extra=binning.to_extra(),
    )


def is_calochallenge(geometry: Geometry) -> bool:
    return geometry.readout == "voxels" and geometry.extra.get("format") == FORMAT


# --- reading ----------------------------------------------------------------------------------
def _sniff(path: Path) -> bool:
    return sniff_hdf5(
        path, lambda h5: SHOWERS_KEY in h5 and ENERGY_KEY in h5 and not is_canonical(h5)
    )


def _open(path: Path, **options: Any) -> ForeignSource:
    check_options(FORMAT, options, ("binning",))
    if options.get("binning") is None:
        raise CaloforgeError(
            f"{path}: CaloChallenge showers are read with the binning XML of their data set; "
            "pass --binning FILE.xml (binning=... in Python)"
        )
    binning = read_binning(options["binning"])
    return open_checked(path, lambda h5: _source(path, h5, binning, options))


def _source(path: Path, h5: h5py.File, binning: Binning, options: dict[str, Any]) -> ForeignSource:
    n_voxels = binning.n_voxels
    showers = dataset(h5, path, SHOWERS_KEY, f"(N, {n_voxels}) in MeV", cells=True)
    if showers.ndim != 2 or showers.shape[1] != n_voxels:
        raise InputFileError(
            path,
            "showers do not match the binning",
            key=SHOWERS_KEY,
            expected=f"(N, {n_voxels}) as {options['binning']} describes",
            found=shape_text(showers.shape),
        )
    n = int(showers.shape[0])
    energies = read_all(dataset(h5, path, ENERGY_KEY, f"({n}, 1) in MeV"), path, ENERGY_KEY)
    energy = column(energies, path, ENERGY_KEY, n) / MEV_PER_GEV
    return ForeignSource(
        path=path,
        format=FORMAT,
        geometry=geometry_for(binning),
        conditions={"energy": energy},
        showers_key=SHOWERS_KEY,
        read_showers=_mev_reader(showers),
        close=h5.close,
        options=options,
    )


def _mev_reader(showers: h5py.Dataset) -> ShowerReader:
    def read(selection: Selection) -> np.ndarray:
        values = np.asarray(showers[selection], dtype=np.float32)
        values /= np.float32(MEV_PER_GEV)
        return values

    return read


register(
    FileFormat(
        FORMAT,
        "CaloChallenge 2022 HDF5 (incident_energies, showers; needs --binning FILE.xml)",
        _sniff,
        _open,
        ("binning",),
    )
)


# --- polar rebinning of grids -------------------------------------------------------------------
@dataclass(frozen=True)
class PolarRebinning:
    """Sums the cells of each layer of a grid into polar bins around the grid centre.

    A cell goes, whole, to the bin of its centre; `cell_to_bin` is the (cells, bins) 0/1
    matrix for one layer, bins ordered (alpha, r) as CaloChallenge orders them.
    """

    grid_shape: tuple[int, int, int]
    r_edges: tuple[float, ...]
    n_alpha: int
    cell_to_bin: np.ndarray

    def binning(self, particle: str) -> Binning:
        """The XML binning of the rebinned showers, the same in every layer."""
        layers = tuple(
            BinningLayer(i, self.r_edges, self.n_alpha) for i in range(self.grid_shape[2])
        )
        return Binning((("pid", str(PDG_IDS.get(particle, 0))), ("name", particle)), layers)

    def __call__(self, showers: np.ndarray) -> np.ndarray:
        """(n, nx, ny, n_layers) -> (n, n_layers * bins per layer), same units."""
        n = len(showers)
        nx, ny, n_layers = self.grid_shape
        per_layer = showers.reshape(n, nx * ny, n_layers).transpose(0, 2, 1)
        return np.matmul(per_layer, self.cell_to_bin).reshape(n, -1)


def polar_rebinning(
    geometry: Geometry, n_alpha: int = DEFAULT_N_ALPHA, r_edges: Sequence[float] | None = None
) -> PolarRebinning:
    """The rebinning of a grid geometry's layers (readout 'layers' or 'summed').

    `r_edges` in mm default to `DEFAULT_R_EDGES_IN_CELLS` cell pitches, closed by an edge half
    a pitch beyond the farthest cell centre, so every cell lands in a bin and each shower's
    energy is kept.
    """
    if geometry.readout not in ("layers", "summed") or geometry.cell_size_mm is None:
        raise CaloforgeError(
            f"cannot write geometry '{geometry.name}' (readout '{geometry.readout}') as "
            "CaloChallenge: only CaloChallenge sets and grid geometries can be"
        )
    if n_alpha < 1:
        raise CaloforgeError(f"n_alpha must be at least 1, got {n_alpha}")
    nx, ny = geometry.shape[0], geometry.shape[1]
    n_layers = geometry.shape[2] if geometry.readout == "layers" else 1
    dx, dy = geometry.cell_size_mm
    x = (np.arange(nx) - (nx - 1) / 2) * dx
    y = (np.arange(ny) - (ny - 1) / 2) * dy
    xx, yy = np.meshgrid(x, y, indexing="ij")  # cell (i, j) at (x[i], y[j]), flattened i-major
    r = np.hypot(xx, yy).ravel()
    alpha = np.arctan2(yy, xx).ravel()
    edges = _r_edges(r_edges, float(r.max()), min(dx, dy))
    n_r = len(edges) - 1
    r_bin = _bin_of(r, np.asarray(edges))
    # Equal alpha bins over [-pi, pi); alpha = pi is -pi (bin 0).
    turns = (alpha + math.pi) / (2 * math.pi) * n_alpha
    alpha_bin = _bin_of(turns, np.arange(n_alpha + 1, dtype=np.float64)) % n_alpha
    cell_to_bin = np.zeros((nx * ny, n_alpha * n_r), dtype=np.float32)
    cell_to_bin[np.arange(nx * ny), alpha_bin * n_r + r_bin] = 1.0
    return PolarRebinning((nx, ny, n_layers), edges, n_alpha, cell_to_bin)


# A cell centre within this relative distance of a bin edge lies on it (and goes to the bin
# above): rounding in the centres' and edges' arithmetic then cannot decide the bin.
EDGE_TOLERANCE = 1e-9


def _bin_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the half-open bin [edges[i], edges[i+1]) of each value, a value within
    `EDGE_TOLERANCE` (relative to the larger of it and the largest edge) of an edge counting
    as on that edge, so in the bin above it."""
    index = np.searchsorted(edges, values, side="right") - 1
    nearest = np.clip(np.searchsorted(edges, values), 1, len(edges) - 1)
    for candidate in (nearest - 1, nearest):
        on_edge = np.abs(values - edges[candidate]) <= EDGE_TOLERANCE * max(
            float(np.abs(edges).max()), 1e-300
        )
        index = np.where(on_edge, candidate, index)
    return index


def _r_edges(r_edges: Sequence[float] | None, r_max: float, pitch: float) -> tuple[float, ...]:
    """Radial edges in mm whose last edge lies beyond `r_max`, the farthest cell centre."""
    if r_edges is None:
        # 0 always: a grid of one column (r_max 0) has one radial bin, not none.
        inner = [0.0, *(k * pitch for k in DEFAULT_R_EDGES_IN_CELLS[1:] if k * pitch < r_max)]
        return (*inner, math.ceil((r_max + pitch / 2) * 100) / 100)
    edges = tuple(float(r) for r in r_edges)
    if len(edges) < 2 or edges[0] != 0 or (np.diff(edges) <= 0).any():
        raise CaloforgeError(f"r_edges must start at 0 and increase, got {list(edges)}")
    if edges[-1] <= r_max * (1 + EDGE_TOLERANCE):
        raise CaloforgeError(
            f"r_edges end at {edges[-1]:g} mm, but the farthest cell centre is at {r_max:g} mm; "
            "cells beyond the last edge would be lost"
        )
    return edges


# --- calibration --------------------------------------------------------------------------------
CALIBRATIONS = ("auto", "none", "sampling-fraction")
CALIBRATION_ATTR = "caloforge_calibration"
CALIBRATION_FACTORS_ATTR = "caloforge_calibration_factors"


@dataclass(frozen=True)
class Calibration:
    """Factors the visible energy of each layer is multiplied by when written (n_layers,),
    and what they are ("none", "sampling-fraction", or "factor F")."""

    name: str
    factors: np.ndarray

    def describe(self) -> str:
        if self.name == "sampling-fraction":
            return (
                "each layer's visible energy divided by that layer's electron sampling "
                "fraction f_e (the geometry's), so that E_tot / E_inc is near 1"
            )
        if self.name == "none":
            return "visible energy as simulated (not calibrated)"
        return f"every voxel multiplied by {self.factors[0]:g}"


def calibration_for(geometry: Geometry, calibration: str | float | None) -> Calibration:
    """The calibration of a set of `geometry` written as CaloChallenge: "auto" (None) is
    "sampling-fraction" for a grid geometry (its showers hold visible energy) and "none" for
    a CaloChallenge one (already calibrated); "sampling-fraction" divides each layer by its
    electron sampling fraction (summed readout: by the layers' mean); a number multiplies
    every voxel by it."""
    n_layers = (
        len(Binning.from_extra(geometry.extra).layers)
        if is_calochallenge(geometry)
        else (geometry.shape[2] if geometry.readout == "layers" else 1)
    )
    if calibration is None or calibration == "auto":
        calibration = "none" if is_calochallenge(geometry) else "sampling-fraction"
    if isinstance(calibration, str) and calibration not in CALIBRATIONS:
        try:
            calibration = float(calibration)
        except ValueError:
            raise CaloforgeError(
                f"--calibration: expected {', '.join(CALIBRATIONS)} or a positive number, "
                f"got '{calibration}'"
            ) from None
    if not isinstance(calibration, str):
        factor = float(calibration)
        if not (math.isfinite(factor) and factor > 0):
            raise CaloforgeError(f"--calibration: a factor must be positive, got {factor:g}")
        return Calibration(f"factor {factor:g}", np.full(n_layers, factor))
    if calibration == "none":
        return Calibration("none", np.ones(n_layers))
    if is_calochallenge(geometry) or not geometry.layers:
        raise CaloforgeError(
            f"--calibration sampling-fraction: geometry '{geometry.name}' has no sampling "
            "layers to take it from (CaloChallenge sets are calibrated already); use none "
            "or a factor"
        )
    f_e = np.array([layer.properties.f_e for layer in geometry.layers])
    if geometry.readout == "summed":
        f_e = np.array([f_e.mean()])
    if len(f_e) != n_layers:
        raise CaloforgeError(
            f"geometry '{geometry.name}' has {len(f_e)} sampling layers for {n_layers} "
            "image layers; use --calibration none or a factor"
        )
    return Calibration("sampling-fraction", 1.0 / f_e)


# --- writing ------------------------------------------------------------------------------------
def write_calochallenge(
    source: ShowerSource,
    out_path: str | os.PathLike[str],
    binning_out: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 1000,
    n_alpha: int = DEFAULT_N_ALPHA,
    r_edges: Sequence[float] | None = None,
    calibration: str | float | None = "none",
    progress: bool = False,
) -> tuple[Path, Path]:
    """Write `source` as a CaloChallenge HDF5 file and its binning XML; return both paths.

    `calibration` (`calibration_for`: "none", "auto", "sampling-fraction" or a factor) scales
    each layer's voxels; its name and the factors per layer are recorded in the file's
    attributes `caloforge_calibration` and `caloforge_calibration_factors`.

    A set of a CaloChallenge geometry is written back voxel for voxel (GeV -> MeV) with its
    own binning. Read from a CaloChallenge file and written back, the voxels are those of the
    original float32 MeV values, bit for bit for about 98 % of them and one unit in the last
    place off for the rest: float32 GeV cannot hold every float32 MeV value exactly (the
    rounding of MeV / 1000 sometimes loses the last bit).

    A grid set (readout 'layers' or 'summed') is rebinned into `n_alpha` alpha bins and
    `r_edges` (mm) per layer, see `polar_rebinning`; cells are assigned whole by their centre,
    so each shower keeps its total energy. Conditions other than the energy (theta)
    have no place in the format and are not written. `binning_out` defaults to `out_path`
    with the suffix .xml. Both files appear only once complete.
    """
    out_path = Path(out_path)
    xml_path = out_path.with_suffix(".xml") if binning_out is None else Path(binning_out)
    if xml_path.resolve() == out_path.resolve():
        raise CaloforgeError(f"{out_path}: the showers and the binning XML need different paths")
    if batch_size < 1:
        raise CaloforgeError(f"batch_size must be at least 1, got {batch_size}")
    binning, to_voxels, scale = challenge_voxels(source.geometry, calibration, n_alpha, r_edges)
    dropped = [c.name for c in source.geometry.conditions if c.name != "energy"]
    if dropped:
        warnings.warn(
            f"{out_path}: the CaloChallenge format holds the primary energy alone; "
            f"{', '.join(dropped)} of {source.path} not written (keep the canonical file "
            "for them)",
            ConditionsNotWrittenWarning,
            stacklevel=2,
        )
    # The showers' file innermost: a failed write is reported under its name.
    with atomic_output(xml_path) as xml_partial, atomic_output(out_path) as h5_partial:
        write_binning(binning, xml_partial)
        _write_showers(source, h5_partial, binning.n_voxels, to_voxels, batch_size, progress)
        with h5py.File(h5_partial, "a") as h5:
            h5.attrs[CALIBRATION_ATTR] = f"{scale.name}: {scale.describe()}"
            h5.attrs[CALIBRATION_FACTORS_ATTR] = scale.factors
    return out_path, xml_path


def challenge_voxels(
    geometry: Geometry,
    calibration: str | float | None = "none",
    n_alpha: int = DEFAULT_N_ALPHA,
    r_edges: Sequence[float] | None = None,
) -> tuple[Binning, Callable[[np.ndarray], np.ndarray], Calibration]:
    """How showers of `geometry` become CaloChallenge voxels: the binning, the function
    (n, *shape) GeV -> (n, voxels) calibrated GeV, and the calibration (`calibration_for`).
    A CaloChallenge geometry keeps its voxels; a grid is rebinned (`polar_rebinning`)."""
    to_voxels: Callable[[np.ndarray], np.ndarray]
    if is_calochallenge(geometry):
        binning, to_voxels = Binning.from_extra(geometry.extra), _unchanged
    else:
        rebin = polar_rebinning(geometry, n_alpha, r_edges)
        binning, to_voxels = rebin.binning(geometry.particle), rebin
    scale = calibration_for(geometry, calibration)
    return binning, _calibrated(to_voxels, binning, scale), scale


def _calibrated(
    to_voxels: Callable[[np.ndarray], np.ndarray], binning: Binning, scale: Calibration
) -> Callable[[np.ndarray], np.ndarray]:
    """`to_voxels` followed by the calibration's factor on each layer's voxels."""
    if np.all(scale.factors == 1.0):
        return to_voxels
    per_voxel = np.repeat(scale.factors, [layer.n_voxels for layer in binning.layers])
    per_voxel = per_voxel.astype(np.float32)

    def calibrated(showers: np.ndarray) -> np.ndarray:
        return to_voxels(showers).reshape(len(showers), -1) * per_voxel

    return calibrated


def _compressed_rows(n: int, n_voxels: int) -> dict[str, Any]:
    """Storage options: compressed chunks of whole showers, about 256 kB each."""
    if n == 0:
        return {}
    rows = min(n, max(1, CHUNK_BYTES // (4 * n_voxels)))
    return {
        "chunks": (rows, n_voxels),
        "compression": "gzip",
        "compression_opts": 1,
        "shuffle": True,
    }


def _unchanged(showers: np.ndarray) -> np.ndarray:
    return showers


def _write_showers(
    source: ShowerSource,
    path: Path,
    n_voxels: int,
    to_voxels: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    progress: bool,
) -> None:
    from tqdm import tqdm

    n = len(source)
    with (
        h5py.File(path, "w") as h5,
        tqdm(total=n, unit="shower", desc="writing CaloChallenge", disable=not progress) as bar,
    ):
        try:
            energies = h5.create_dataset(ENERGY_KEY, shape=(n, 1), dtype=np.float64)
            showers = h5.create_dataset(
                SHOWERS_KEY, shape=(n, n_voxels), dtype=np.float32, **_compressed_rows(n, n_voxels)
            )
            start = 0
            for batch in iter_batches(source, batch_size):
                stop = start + len(batch)
                voxels = to_voxels(batch.showers) * np.float32(MEV_PER_GEV)
                showers[start:stop] = voxels.reshape(len(batch), n_voxels)
                energies[start:stop] = batch.energy.reshape(-1, 1) * MEV_PER_GEV
                h5.flush()  # a full disk met here, not inside HDF5's clean-up at exit
                bar.update(len(batch))
                start = stop
        except (OSError, RuntimeError) as exc:
            if not is_write_failure(exc):
                raise
            abandon_h5(h5)
            raise OSError(error_number(exc), os_error_text(exc)) from None
