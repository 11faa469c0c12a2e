"""What every readable shower set offers: a geometry, a length, conditions and batches.

Each file format (the canonical one and every format users bring) is opened as a
`ShowerSource`. Readers never load a whole file: conditions are small and read at once,
showers are read in slices. Energies are always returned in GeV, angles in rad, points in mm,
whatever the file stores.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from caloforge.errors import InputFileError
from caloforge.geometry import Geometry


@dataclass(frozen=True)
class Batch:
    """A slice of showers with their conditions.

    showers: (n, *geometry.shape) float32, visible cell energy in GeV.
    conditions: name -> (n,) or (n, size) float64 array in the geometry's units
        (energy GeV, theta rad, momentum GeV, point mm).
    """

    showers: np.ndarray
    conditions: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.showers.shape[0])

    @property
    def energy(self) -> np.ndarray:
        return self.conditions["energy"]

    def subset(self, index: np.ndarray | slice) -> Batch:
        return Batch(self.showers[index], {k: v[index] for k, v in self.conditions.items()})

    @staticmethod
    def concatenate(batches: Sequence[Batch]) -> Batch:
        if not batches:
            raise ValueError("cannot concatenate zero batches")
        return Batch(
            np.concatenate([b.showers for b in batches]),
            {k: np.concatenate([b.conditions[k] for b in batches]) for k in batches[0].conditions},
        )


@runtime_checkable
class ShowerSource(Protocol):
    """A readable shower set. Implementations: canonical files, foreign formats, collections."""

    path: str
    format: str
    geometry: Geometry

    def __len__(self) -> int: ...

    @property
    def conditions(self) -> Mapping[str, np.ndarray]:
        """All conditions of the set, name -> (N,) or (N, size), in the geometry's units."""
        ...

    def read(self, start: int, stop: int) -> Batch:
        """Showers `start:stop`, checked to be finite, non-negative and not absurd (no cell
        above MAX_CELL_PER_PRIMARY times its primary energy)."""
        ...

    def take(self, indices: np.ndarray) -> Batch:
        """Showers at increasing `indices`."""
        ...

    def close(self) -> None: ...


def iter_batches(
    source: ShowerSource, batch_size: int, start: int = 0, stop: int | None = None
) -> Iterator[Batch]:
    """Consecutive batches of `source[start:stop]`, each at most `batch_size` showers."""
    stop = len(source) if stop is None else min(stop, len(source))
    for lo in range(start, stop, batch_size):
        yield source.read(lo, min(lo + batch_size, stop))


def require_file(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path, or an `InputFileError` if it is missing (a broken link too), a
    folder, not a regular file (a pipe or a device, which would block or never end), not
    readable or empty."""
    p = Path(path)
    try:
        info = p.stat()
    except OSError as exc:
        if p.is_symlink():
            target = os.readlink(p)
            problem = "a symbolic link loop" if exc.errno == errno.ELOOP else "a broken link"
            raise InputFileError(p, f"{problem} (to {target}); no file to read") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise InputFileError(p, "file not found") from None
        raise InputFileError(p, f"cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(p, "is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(p, f"is {_special(info.st_mode)}, not a regular file")
    if not os.access(p, os.R_OK):
        raise InputFileError(p, "no permission to read it")
    if info.st_size == 0:
        raise InputFileError(p, "file is empty")
    return p


def h5_member(h5: Any, path: str | os.PathLike[str], key: str) -> Any:
    """`h5[key]` of an open HDF5 file (None where there is no such name), or an
    `InputFileError` for a name that cannot be opened: an external link to a file or object
    that is not there, a soft link to nothing or a loop of links."""
    import h5py

    try:
        link = h5.get(key, getlink=True)
        if link is None:
            return None
        member = h5[key]
    except (KeyError, RuntimeError, OSError) as exc:
        if isinstance(link, h5py.ExternalLink):
            found = f"an external link to {link.filename}:{link.path}"
        elif isinstance(link, h5py.SoftLink):
            found = f"a link to {link.path}"
        else:
            found = type(link).__name__
        text = str(exc.args[0]) if exc.args else type(exc).__name__
        reason = text.rpartition("(")[2].rstrip(")") or text
        raise InputFileError(
            path, f"cannot be opened ({reason})", key=key, expected="a dataset", found=found
        ) from None
    if isinstance(member, h5py.Dataset):
        _check_storage(member, path, key)
    return member


def _check_storage(ds: Any, path: str | os.PathLike[str], key: str) -> None:
    """Refuse a dataset HDF5 would read wrongly or not at all: compressed with a filter this
    installation lacks (read as "corrupt"), or virtual with a source file or dataset that is
    not there (read as its fill value: zeros, without a word)."""
    import h5py

    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            label = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            raise InputFileError(
                path,
                "compressed with an HDF5 filter this installation does not have",
                key=key,
                expected="a filter h5py can read (gzip, lzf, szip, or its plugin on "
                "HDF5_PLUGIN_PATH, e.g. from the hdf5plugin package)",
                found=f"filter {code}" + (f" ({label})" if label else ""),
            )
    if not ds.is_virtual:
        return
    folder = Path(path).absolute().parent
    for source in ds.virtual_sources():
        name, member = source.file_name, source.dset_name
        if name == ".":
            continue  # the file itself
        file = Path(name) if Path(name).is_absolute() else folder / name
        problem = None
        if not file.is_file():
            problem = f"{name} is not there"
        else:
            try:
                with h5py.File(file, "r") as f:
                    if not isinstance(f.get(member), h5py.Dataset):
                        problem = f"{name} has no dataset '{member}'"
            except OSError:
                problem = f"{name} is not a readable HDF5 file"
        if problem is not None:
            raise InputFileError(
                path,
                "a virtual dataset whose source is missing (HDF5 would read zeros for it)",
                key=key,
                expected="every source file and dataset of the virtual dataset",
                found=problem,
            )


def _special(mode: int) -> str:
    """What a file that is neither a regular file nor a folder is, in words."""
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


# No cell of a shower holds more than its primary energy (visible or calibrated, energy is
# conserved); ten times it leaves room for any calibration and still refuses a unit mistake
# (MeV read as GeV), an overflow or a corrupted file (3e38 GeV in one cell).
MAX_CELL_PER_PRIMARY = 10.0


def check_showers(
    showers: np.ndarray,
    path: str,
    key: str,
    offset: int = 0,
    rows: np.ndarray | None = None,
    energy: np.ndarray | None = None,
) -> None:
    """Raise `InputFileError` naming the first shower with a NaN, inf or negative cell, or,
    given the showers' primary `energy` (GeV), a cell above MAX_CELL_PER_PRIMARY times it.

    The showers are the file's rows `offset:offset + len(showers)`, or `rows` when given.
    """
    bad = ~np.isfinite(showers)
    problem = "NaN or infinite cell energies"
    expected = "finite energies >= 0"
    value = ""
    if not bad.any():
        bad = showers < 0
        problem = "negative cell energies"
        if not bad.any():
            if energy is None or len(showers) == 0:
                return
            peak = showers.reshape(len(showers), -1).max(axis=1)
            limit = MAX_CELL_PER_PRIMARY * np.asarray(energy, dtype=np.float64)
            bad = peak > limit
            if not bad.any():
                return
            worst = int(np.argmax(bad))
            problem = "cell energies far above the primary energy"
            expected = f"cells <= {MAX_CELL_PER_PRIMARY:g} x the primary energy (GeV)"
            value = f": a cell of {peak[worst]:.4g} GeV, primary energy {energy[worst]:.4g} GeV"
    per_shower = bad.reshape(len(showers), -1).any(axis=1)
    first = int(np.argmax(per_shower))
    if rows is None:
        where, first_row = f"rows {offset}:{offset + len(showers)}", offset + first
    else:
        where, first_row = f"{len(rows)} rows read from {rows[0]} to {rows[-1]}", int(rows[first])
    found = f"{int(per_shower.sum())} bad shower(s) in {where}, first at row {first_row}"
    raise InputFileError(path, problem, key=key, expected=expected, found=found + value)


def check_conditions(
    conditions: Mapping[str, np.ndarray], path: str, n: int, geometry: Geometry | None = None
) -> None:
    """Raise `InputFileError` for conditions of the wrong length or with NaN/inf values,
    primary energies that are not positive, or (given the `geometry`) values outside the
    range where the geometry is valid."""
    for name, values in conditions.items():
        if values.shape[0] != n:
            raise InputFileError(
                path,
                "condition length does not match the number of showers",
                key=name,
                expected=f"{n} rows",
                found=f"shape {values.shape}",
            )
        if not np.isfinite(values).all():
            raise InputFileError(
                path,
                "NaN or infinite values",
                key=name,
                expected="finite values",
                found=f"{int((~np.isfinite(values)).sum())} bad value(s)",
            )
    energy = conditions.get("energy")
    if energy is not None and (energy <= 0).any():
        raise InputFileError(
            path,
            "primary energies must be positive",
            key="energy",
            expected="energy > 0 GeV",
            found=f"{int((energy <= 0).sum())} value(s) <= 0, min {energy.min():g}",
        )
    if geometry is not None:
        _check_valid_ranges(conditions, path, geometry)


def _check_valid_ranges(
    conditions: Mapping[str, np.ndarray], path: str, geometry: Geometry
) -> None:
    """Raise `ConditionError` (naming the file and the condition) for values outside the range
    where `geometry` is valid: 1e9 GeV in a clic-25 file is a unit mistake, not a shower to
    learn from."""
    for c in geometry.conditions:
        values = conditions.get(c.name)
        if values is None or c.valid is None or c.derived or len(values) == 0:
            continue
        c.check(float(values.min()), float(values.max()), source=f"{path}: the values")
