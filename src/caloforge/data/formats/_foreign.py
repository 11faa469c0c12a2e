"""Pieces shared by the readers of foreign formats (LCD, CaloChallenge, CaloGAN, LHCb).

A foreign reader checks a file's layout once, converts its small condition arrays to the
geometry's units, and hands `ForeignSource` a function that reads and converts a slice of
showers. `ForeignSource` does the rest of the `ShowerSource` protocol: clamping, the check
of every slice (finite, non-negative, no cell far above its primary energy), and errors that
name the file and the key.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caloforge.data.canonical import open_h5
from caloforge.data.source import Batch, check_conditions, check_showers, h5_member
from caloforge.errors import CaloforgeError, InputFileError
from caloforge.geometry import Geometry

Selection = slice | np.ndarray
ShowerReader = Callable[[Selection], np.ndarray]

# What a truncated or corrupt file raises while its data are read.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
)


class ForeignSource:
    """A `ShowerSource` over a file of a foreign format, in canonical units.

    `read_showers(selection)` returns the showers at `selection` (a slice or increasing
    indices) as float32 GeV of shape `(k, *geometry.shape)`; `showers_key` names the dataset
    they come from in error messages. The format name and the `options` the file was opened
    with are enough to open it again in another process.
    """

    def __init__(
        self,
        *,
        path: Path,
        format: str,
        geometry: Geometry,
        conditions: Mapping[str, np.ndarray],
        showers_key: str,
        read_showers: ShowerReader,
        close: Callable[[], None],
        options: Mapping[str, Any],
    ) -> None:
        self.path = str(path)
        self.format = format
        self.geometry = geometry
        self._conditions = dict(conditions)
        self._n = len(next(iter(self._conditions.values())))
        check_conditions(self._conditions, self.path, self._n, geometry)
        self._showers_key = showers_key
        self._read_showers = read_showers
        self._close = close
        self._options = dict(options)

    def __len__(self) -> int:
        return self._n

    @property
    def conditions(self) -> Mapping[str, np.ndarray]:
        return self._conditions

    def _showers_at(self, selection: Selection, offset: int) -> np.ndarray:
        try:
            showers = self._read_showers(selection)
        except READ_ERRORS as exc:
            raise InputFileError(
                self.path,
                f"unreadable shower data, truncated or corrupt? ({exc})",
                key=self._showers_key,
            ) from None
        energy = self._conditions["energy"][selection]
        check_showers(showers, self.path, self._showers_key, offset, energy=energy)
        return showers

    def read(self, start: int, stop: int) -> Batch:
        start, stop = max(0, start), min(stop, self._n)
        if stop <= start:
            empty = np.zeros((0, *self.geometry.shape), dtype=np.float32)
            return Batch(empty, {k: v[:0] for k, v in self._conditions.items()})
        showers = self._showers_at(slice(start, stop), start)
        return Batch(showers, {k: v[start:stop] for k, v in self._conditions.items()})

    def take(self, indices: np.ndarray) -> Batch:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return self.read(0, 0)
        showers = self._showers_at(indices, int(indices[0]))
        return Batch(showers, {k: v[indices] for k, v in self._conditions.items()})

    def close(self) -> None:
        self._close()

    def __enter__(self) -> ForeignSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes re-open the file themselves: file handles do not cross processes.
        return {"path": self.path, "format": self.format, "options": self._options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from caloforge.data.formats import open_source

        other = open_source(state["path"], state["format"], **state["options"])
        self.__dict__.update(other.__dict__)


# --- options ------------------------------------------------------------------------------
def check_options(format: str, options: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise `CaloforgeError` for an option the format does not take."""
    known = tuple(known)
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = f"takes options {', '.join(known)}" if known else "takes no options"
        raise CaloforgeError(f"format '{format}' {takes}; got {', '.join(unknown)}")


def positive_option(format: str, name: str, value: Any) -> float:
    """An option that must be a positive finite number (a scale factor)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (np.isfinite(number) and number > 0):
        raise CaloforgeError(
            f"format '{format}': option {name} must be a positive number, got {value!r}"
        )
    return number


# --- HDF5 ---------------------------------------------------------------------------------
def sniff_hdf5(path: Path, looks_right: Callable[[h5py.File], bool]) -> bool:
    """Whether `path` is an HDF5 file that `looks_right`; never raises."""
    try:
        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as h5:
            return looks_right(h5)
    except OSError:
        return False


def is_canonical(h5: h5py.File) -> bool:
    return "geometry_json" in h5.attrs


def open_checked(path: Path, check: Callable[[h5py.File], ForeignSource]) -> ForeignSource:
    """Open an HDF5 file and build its source with `check`; close the file on any error."""
    h5 = open_h5(path)
    try:
        return check(h5)
    except BaseException:
        h5.close()
        raise


def dataset(
    h5: h5py.File, path: Path, key: str, expected: str, *, cells: bool = False
) -> h5py.Dataset:
    """The dataset `key`, or an `InputFileError` saying what was expected there.

    Conditions may be integers (10 GeV is 10); `cells` (shower arrays) must be floating
    point, as the canonical reader asks: integer cells are counts or truncated energies
    (every deposit below one MeV or GeV lost), not energies a model should learn."""
    ds = h5_member(h5, path, key)
    if not isinstance(ds, h5py.Dataset):
        if isinstance(ds, h5py.Group):
            raise InputFileError(path, "not a dataset", key=key, expected=expected, found="a group")
        raise InputFileError(path, "missing dataset", key=key, expected=expected)
    kinds = "f" if cells else "fiu"  # not strings, objects, compounds nor booleans
    if ds.dtype.kind not in kinds:
        raise InputFileError(
            path,
            "wrong data type",
            key=key,
            expected=f"floating-point cell energies {expected}" if cells else expected,
            found=f"dtype {ds.dtype}",
        )
    return ds


def read_all(ds: h5py.Dataset, path: Path, key: str) -> np.ndarray:
    """A whole (small) dataset as float64."""
    try:
        return np.asarray(ds[()], dtype=np.float64)
    except READ_ERRORS as exc:
        raise InputFileError(
            path, f"unreadable data, truncated or corrupt? ({exc})", key=key
        ) from None


def column(values: np.ndarray, path: Path, key: str, n: int) -> np.ndarray:
    """A per-shower scalar stored as (N,) or (N, 1), returned as (N,)."""
    if values.shape not in ((n,), (n, 1)):
        raise InputFileError(
            path, "wrong shape", key=key, expected=f"({n},) or ({n}, 1)", found=str(values.shape)
        )
    return values.reshape(n)


def shape_text(shape: tuple[object, ...]) -> str:
    """A shape as text: ('N', 3) -> '(N, 3)'."""
    return "(" + ", ".join(str(s) for s in shape) + ")"
