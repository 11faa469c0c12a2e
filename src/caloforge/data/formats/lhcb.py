"""LHCb calorimeter challenge files (MLHEP 2019; Chekalina et al.): NumPy .npz archives.

  EnergyDeposit     (N, 30, 30) or (N, 900)  cell energies of the 30x30 image, MeV
  ParticleMomentum  (N, 3)                   (px, py, pz) of the primary, GeV
  ParticlePoint     (N, 3)                   entry point; x, y are used, mm
  ParticlePDG       (N,)                     11 or 22; optional, not carried over

Geometry `lhcb-30`: energy = |p| (GeV), momentum (GeV), point = (x, y) (mm).

Units. The public files do not state them; these defaults follow from the data and the
challenge's own code. Momenta are GeV (pz of order 1-100, mean about 21). Points spread by
about 3 around 0, the few millimetres the preset's default entry range (+-5 mm) describes,
and are read as mm. Image cells peak at a few thousand for primaries up to about 100 GeV,
which fits visible energy in MeV (a GeV reading would exceed the primary energy). Options
`energy_scale` (EnergyDeposit unit in GeV, default 1e-3) and `point_scale` (ParticlePoint unit
in mm, default 1) override them.

Orientation. The challenge's metrics index an image as [y, x] (row = y, the cell grid being
np.meshgrid(x, y)); caloforge stores (x, y), so images are transposed on reading.

Archives are read member by member without loading `EnergyDeposit` whole: uncompressed
members (np.savez) are read by seeking, compressed ones (np.savez_compressed) by streaming.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy

from caloforge.data.formats import FileFormat, register
from caloforge.data.formats._foreign import (
    READ_ERRORS,
    ForeignSource,
    Selection,
    check_options,
    positive_option,
    shape_text,
)
from caloforge.data.source import require_file
from caloforge.errors import InputFileError
from caloforge.geometry import PRESETS

FORMAT = "lhcb"
IMAGE_KEY = "EnergyDeposit"
IMAGE_SHAPE = (30, 30)
DEFAULT_ENERGY_SCALE = 1e-3  # EnergyDeposit in MeV
DEFAULT_POINT_SCALE = 1.0  # ParticlePoint in mm
# What a bad .npy header raises, besides the errors of a truncated archive.
HEADER_ERRORS: tuple[type[BaseException], ...] = (*READ_ERRORS, ValueError)


class NpyMember:
    """One array of an .npz archive, read by rows without loading it whole."""

    def __init__(self, archive: zipfile.ZipFile, name: str, path: Path) -> None:
        self.path = path
        self.key = name.removesuffix(".npy")
        self._file: IO[bytes] = archive.open(name)
        version = npy.read_magic(self._file)
        if version == (1, 0):
            shape, fortran_order, dtype = npy.read_array_header_1_0(self._file)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy.read_array_header_2_0(self._file)
        else:
            raise InputFileError(path, f"unsupported .npy version {version}", key=self.key)
        if dtype.hasobject or not shape:
            raise InputFileError(
                path,
                "cannot read this array by rows",
                key=self.key,
                expected="a numeric array of one row per shower (as np.savez writes)",
                found=f"shape {shape}, dtype {dtype}",
            )
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self._data_start = self._file.tell()
        self._row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        # A Fortran-ordered array (np.save of a transposed array) keeps a row's values apart:
        # it is read whole, once, in row order.
        self._whole: np.ndarray | None = None
        if fortran_order:
            flat = self._read(0, math.prod(self.shape) * self.dtype.itemsize)
            self._whole = np.ascontiguousarray(
                np.frombuffer(flat, dtype=self.dtype).reshape(self.shape[::-1]).T
            )

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` (compressed members seek forward cheaply, backward by rereading)."""
        if self._whole is not None:
            return self._whole[start:stop]
        data = self._read(start * self._row_bytes, (stop - start) * self._row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def _read(self, offset: int, size: int) -> bytes:
        self._file.seek(self._data_start + offset)
        data = self._file.read(size)
        if len(data) != size:
            raise InputFileError(
                self.path,
                "array data end early: truncated file?",
                key=self.key,
                expected=f"{size} bytes",
                found=f"{len(data)} bytes",
            )
        return data

    def all(self) -> np.ndarray:
        return self.rows(0, self.shape[0])

    def close(self) -> None:
        self._file.close()


def _sniff(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return f"{IMAGE_KEY}.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        # A zip signature but unreadable (truncated: the archive's index is at its end):
        # claim a .npz, so that opening it names the problem.
        return path.suffix.lower() == ".npz" and _starts_as_zip(path)


def _starts_as_zip(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _open(path: Path, **options: Any) -> ForeignSource:
    check_options(FORMAT, options, ("energy_scale", "point_scale"))
    energy_scale = positive_option(
        FORMAT, "energy_scale", options.get("energy_scale", DEFAULT_ENERGY_SCALE)
    )
    point_scale = positive_option(
        FORMAT, "point_scale", options.get("point_scale", DEFAULT_POINT_SCALE)
    )
    archive = _archive(path)
    members: list[NpyMember] = []
    try:
        image = _member(archive, path, IMAGE_KEY, members)
        n = image.shape[0]
        if image.dtype.kind != "f":  # as the other readers: integers are not energies
            raise InputFileError(
                path,
                "wrong data type",
                key=IMAGE_KEY,
                expected=f"floating-point cell energies ({n}, 30, 30) in MeV",
                found=f"dtype {image.dtype}",
            )
        if image.shape[1:] not in (IMAGE_SHAPE, (math.prod(IMAGE_SHAPE),)):
            raise InputFileError(
                path,
                "wrong shape",
                key=IMAGE_KEY,
                expected=f"({n}, 30, 30) or ({n}, 900)",
                found=shape_text(image.shape),
            )
        momentum = _vectors(archive, path, "ParticleMomentum", n, 3, members)
        point = _vectors(archive, path, "ParticlePoint", n, 2, members)[:, :2] * point_scale
        conditions = {
            "energy": np.linalg.norm(momentum, axis=1),
            "momentum": momentum,
            "point": point,
        }
        source = ForeignSource(
            path=path,
            format=FORMAT,
            geometry=PRESETS["lhcb-30"],
            conditions=conditions,
            showers_key=IMAGE_KEY,
            read_showers=lambda selection: _images(image, selection, energy_scale),
            close=lambda: _close(archive, members),
            options=options,
        )
    except BaseException:
        _close(archive, members)
        raise
    return source


def _archive(path: Path) -> zipfile.ZipFile:
    require_file(path)
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputFileError(
            path, "not a readable .npz archive (wrong format, truncated or corrupt)", found=str(exc)
        ) from None


def _member(archive: zipfile.ZipFile, path: Path, key: str, members: list[NpyMember]) -> NpyMember:
    if f"{key}.npy" not in archive.namelist():
        raise InputFileError(path, "missing array", key=key)
    try:
        member = NpyMember(archive, f"{key}.npy", path)
    except HEADER_ERRORS as exc:
        raise InputFileError(path, f"unreadable array header ({exc})", key=key) from None
    members.append(member)
    return member


def _vectors(
    archive: zipfile.ZipFile, path: Path, key: str, n: int, columns: int, members: list[NpyMember]
) -> np.ndarray:
    """A small (N, 3) array (of which the first `columns` are used), read whole as float64."""
    member = _member(archive, path, key, members)
    if len(member.shape) != 2 or member.shape[0] != n or member.shape[1] < columns:
        raise InputFileError(
            path, "wrong shape", key=key, expected=f"({n}, 3)", found=shape_text(member.shape)
        )
    try:
        values = np.asarray(member.all(), dtype=np.float64)
    except READ_ERRORS as exc:
        raise InputFileError(
            path, f"unreadable data, truncated or corrupt? ({exc})", key=key
        ) from None
    except (ValueError, TypeError):  # strings, objects
        raise InputFileError(
            path,
            "wrong data type",
            key=key,
            expected="numbers",
            found=f"dtype {getattr(member, 'dtype', 'not numeric')}",
        ) from None
    bad = ~np.isfinite(values[:, :columns]).all(axis=1)
    if bad.any():  # named here: the energy is computed from the momentum
        raise InputFileError(
            path,
            "NaN or infinite values",
            key=key,
            expected="finite numbers",
            found=f"{int(bad.sum())} bad row(s), first at row {int(np.argmax(bad))}",
        )
    return values


def _images(image: NpyMember, selection: Selection, energy_scale: float) -> np.ndarray:
    """Images at `selection` as (k, 30, 30) float32 GeV, indexed (x, y)."""
    if isinstance(selection, slice):
        raw = image.rows(selection.start, selection.stop)
    else:
        raw = np.concatenate([image.rows(int(i), int(i) + 1) for i in selection])
    showers = raw.astype(np.float32).reshape(len(raw), *IMAGE_SHAPE).transpose(0, 2, 1)
    showers = np.ascontiguousarray(showers)
    showers *= np.float32(energy_scale)
    return showers


def _close(archive: zipfile.ZipFile, members: list[NpyMember]) -> None:
    for member in members:
        member.close()
    archive.close()


register(
    FileFormat(
        FORMAT,
        "LHCb calorimeter challenge .npz (EnergyDeposit, ParticleMomentum, ParticlePoint)",
        _sniff,
        _open,
        ("energy_scale", "point_scale"),
    )
)
