"""The canonical caloforge shower file (HDF5, self-describing).

Layout (format version 1):

  showers     (N, *geometry.shape) float32   visible cell energy, GeV; one chunk per shower,
                                             compressed
  energy      (N,)  float64                  primary energy, GeV
  theta       (N,)  float64                  polar angle, rad (geometries with an angle)
  momentum    (N, 3) float64                 (px, py, pz), GeV (lhcb-30)
  point       (N, 2) float64                 entry point (x, y), mm (lhcb-30)
  attributes: geometry (name), geometry_json (the full description, enough to rebuild it),
              units (JSON map key -> unit), format_version, producer (a line saying what
              made the file), simulation (JSON, simulated files: the engine and, for Geant4,
              its version, physics list, range cut and whether data files were used)

Every dataset is resizable along N, so a file is written batch by batch and can be appended
to later. A new file is written under a temporary name and renamed on `close`. Appending
copies the file to that name, grows the copy and renames it over the file on `close`: a kill
at any moment leaves the file as it was, never half-appended.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caloforge import __version__
from caloforge._files import (
    check_output,
    commit,
    copy_file,
    discard,
    os_error_text,
    partial_path,
    remove_stale_partials,
    through_link,
)
from caloforge.data import deflate
from caloforge.data.source import Batch, check_conditions, check_showers, h5_member, require_file
from caloforge.errors import CaloforgeError, GeometryError, InputFileError, OutputError
from caloforge.geometry import Geometry

FORMAT = "caloforge"
FORMAT_VERSION = 1
SHOWERS_KEY = "showers"
COMPRESSIONS = ("gzip", "lzf", "none")
PROVENANCE_KEY = "simulation"


def units_of(geometry: Geometry) -> dict[str, str]:
    units = {SHOWERS_KEY: "GeV"}
    units.update({c.name: c.unit for c in geometry.conditions})
    return units


def _provenance_of(f: h5py.File) -> dict[str, Any] | None:
    """The engine record of a file; files simulated before it was written down were made by
    the bare parametrized engine, which their producer line names."""
    recorded = f.attrs.get(PROVENANCE_KEY)
    producer = str(f.attrs.get("producer", ""))
    if recorded is not None:
        record = dict(json.loads(recorded))
    elif "GFlash" in producer:
        record = {"engine": "gflash", "calibration": "bare parametrization"}
    else:
        return None
    # Files simulated before the particle was recorded name it in their producer line
    # ("..., photon, seed 1)"; electrons when none is named).
    if "particle" not in record:
        named = re.search(r"\b(electron|positron|photon), seed", producer)
        record["particle"] = named.group(1) if named else "electron"
    return record


def check_room(path: str | os.PathLike[str], geometry: Geometry, n: int) -> None:
    """Refuse, before any work, `n` showers whose conditions alone (float64, stored
    uncompressed) would not fit on the disk of `path`: a bound that compression cannot
    undercut (the showers' own size is known only once a batch is written, which
    `ShowerWriter(expected=...)` checks)."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    per_shower = 8 * sum(c.size for c in geometry.conditions)
    usage = shutil.disk_usage(folder)
    free = usage.free
    # A file system of no size (/proc) says nothing of room: creating the file there fails
    # with its own message.
    if usage.total and n * per_shower > free:
        raise OutputError(
            f"{path}: the conditions of {n:,} showers alone take {_size(n * per_shower)} and "
            f"{_size(free)} is free on its disk: write fewer showers or free space"
        )


def check_batch_memory(geometry: Geometry, batch: int, option: str = "--batch-size") -> None:
    """Refuse a batch whose showers alone (float32, as written) exceed this machine's memory:
    one line now, not a MemoryError after minutes of drawing its conditions."""
    need = 4 * batch * math.prod(geometry.shape)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every system says
        return
    if need > have:
        raise CaloforgeError(
            f"a batch of {batch:,} {geometry.name} showers takes {_size(need)}, more than this "
            f"machine's {_size(have)}: it would run out of memory; ask for a smaller {option}"
        )


def _size(n_bytes: float) -> str:
    """A byte count as people read it: 3.2 GB, 512 kB."""
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes:.0f} B"


class ShowerWriter:
    """Write showers and their conditions batch by batch to a canonical file.

    >>> with ShowerWriter("out.h5", geometry, producer="caloforge simulate") as w:
    ...     w.write(batch)

    `append=True` adds to an existing file of the same geometry; otherwise the file is written
    under a temporary name and appears at `path` only when the writer closes without error.
    `expected`: the showers the caller will write; after the first batch the writer projects
    the file's size from it (compression makes a shower's size unknown until written) and
    stops, the partial removed, if the disk has not that much free.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        geometry: Geometry,
        *,
        producer: str = "caloforge",
        append: bool = False,
        compression: str = "gzip",
        provenance: Mapping[str, Any] | None = None,
        expected: int | None = None,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise CaloforgeError(
                f"unknown compression '{compression}'; choose one of {', '.join(COMPRESSIONS)}"
            )
        self.path = Path(path)
        self.geometry = geometry
        self._partial: Path | None = None
        self._fd: int | None = None
        self._held: int | None = None  # a descriptor of the file appended to, locked
        self._n_before: int | None = None  # the showers in it before, when appending
        self._names = geometry.condition_names
        self._expected = expected
        self._size_before = 0  # bytes of the partial before the first batch
        self._deflate_here: bool | None = None  # chunks compressed here (`deflate`); unknown
        check_output(self.path)
        if expected is not None:
            check_room(self.path, geometry, expected)
        # Whatever stops the construction once the partial exists (an error, Ctrl-C, SIGTERM
        # handled as Ctrl-C) takes the partial with it: no writer, nothing left behind.
        try:
            if append and self.path.exists():
                self._open_for_appending(provenance)
            else:
                self.path = through_link(self.path)
                self._create(producer, compression, provenance)
        except BaseException:
            self.abort()
            raise

    def _create(
        self, producer: str, compression: str, provenance: Mapping[str, Any] | None
    ) -> None:
        """Create the partial file with the geometry's attributes and empty datasets."""
        geometry = self.geometry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._partial = partial_path(self.path)
            self._file = h5py.File(self._partial, "w")
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot be created ({os_error_text(exc)})") from None
        self._fd = _descriptor(self._file)
        self._size_before = self._partial.stat().st_size
        self.n = 0
        f = self._file
        f.attrs["geometry"] = geometry.name
        f.attrs["geometry_json"] = geometry.to_json()
        f.attrs["units"] = json.dumps(units_of(geometry))
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["producer"] = f"{producer} (caloforge {__version__})"
        if provenance is not None:
            f.attrs[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True)
        filters: dict[str, Any] = {}
        if compression == "gzip":
            filters = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        elif compression == "lzf":
            filters = {"compression": "lzf", "shuffle": True}
        shape = tuple(geometry.shape)
        f.create_dataset(
            SHOWERS_KEY,
            shape=(0, *shape),
            maxshape=(None, *shape),
            dtype=np.float32,
            chunks=(1, *shape),
            **filters,
        )
        for c in geometry.conditions:
            tail = () if c.size == 1 else (c.size,)
            f.create_dataset(
                c.name,
                shape=(0, *tail),
                maxshape=(None, *tail),
                dtype=np.float64,
                chunks=(4096, *tail),
            )

    def _open_for_appending(self, provenance: Mapping[str, Any] | None) -> None:
        """Check the existing file, then copy it to the partial name and append to the copy,
        which replaces the file on `close`: a kill, an interrupt or a full disk at any moment
        leaves the file as it was. The file is locked (flock, as HDF5 locks) until then, so
        that no other process reads a file about to be replaced or appends beside us."""
        remove_stale_partials(self.path)  # what killed runs left beside it
        with open_canonical(self.path) as existing:
            if existing.geometry.to_dict() != self.geometry.to_dict():
                raise InputFileError(
                    self.path,
                    "cannot append showers of another geometry",
                    key="geometry",
                    expected=self.geometry.name,
                    found=existing.geometry.name,
                )
            h5 = existing._h5
            for key in (SHOWERS_KEY, *self._names):
                maxshape = h5[key].maxshape
                if maxshape[0] is not None:
                    raise InputFileError(
                        self.path,
                        "cannot append: the dataset has a fixed number of rows",
                        key=key,
                        expected="a dataset resizable along N (maxshape (None, ...)), as "
                        "caloforge writes them; convert the file to append to the copy",
                        found=f"maxshape {maxshape}",
                    )
            recorded = _provenance_of(h5)
            if provenance is not None and recorded != json.loads(json.dumps(provenance)):
                raise InputFileError(
                    self.path,
                    "cannot append showers made another way",
                    key=PROVENANCE_KEY,
                    expected=json.dumps(provenance, sort_keys=True),
                    found=json.dumps(recorded, sort_keys=True),
                )
            self.n = self._n_before = len(existing)
        # The copy replaces the file itself, not a symbolic link to it.
        self.path = Path(os.path.realpath(self.path))
        links = self.path.stat().st_nlink
        if links > 1:
            raise InputFileError(
                self.path,
                "cannot append to a file with other hard links",
                expected="a file of one name (appending replaces that name, and the other "
                "links would keep the showers before); append to a copy",
                found=f"{links} links",
            )
        self._held = _hold(self.path)
        self._partial = partial_path(self.path)
        try:
            copy_file(self.path, self._partial)
            self._file = h5py.File(self._partial, "a")
        except OSError as exc:  # the constructor removes the partial
            raise OutputError(
                f"{self.path}: cannot append, the copy to append to could not be made "
                f"({os_error_text(exc)}); the file is unchanged"
            ) from None
        self._fd = _descriptor(self._file)
        self._size_before = self._partial.stat().st_size

    def _release_hold(self) -> None:
        if self._held is not None:
            os.close(self._held)
            self._held = None

    def write(self, batch: Batch) -> None:
        """Append a batch; its conditions must be exactly the geometry's."""
        n = len(batch)
        shape = tuple(self.geometry.shape)
        if batch.showers.shape[1:] != shape:
            raise ValueError(f"showers of shape {batch.showers.shape[1:]}, geometry has {shape}")
        if set(batch.conditions) != set(self._names):
            raise ValueError(
                f"conditions {sorted(batch.conditions)} do not match the geometry's "
                f"{sorted(self._names)}"
            )
        if n == 0:
            return
        f, lo, hi = self._file, self.n, self.n + n
        try:
            # Grow and fill every dataset, then publish the new length through 'showers'
            # last: readers take the number of showers from it.
            for name in self._names:
                ds = f[name]
                ds.resize(hi, axis=0)
                ds[lo:hi] = np.asarray(batch.conditions[name], dtype=np.float64).reshape(
                    (n, *ds.shape[1:])
                )
            showers = f[SHOWERS_KEY]
            showers.resize(hi, axis=0)
            if self._deflate_here is None:
                self._deflate_here = deflate.compresses_here(showers)
            if self._deflate_here:
                deflate.write_chunks(showers, lo, batch.showers)
            else:
                showers[lo:hi] = np.asarray(batch.showers, dtype=np.float32)
            # Each batch reaches the device now: a full disk is met here, as an exception,
            # and not later inside HDF5's own clean-up (where it ends the process).
            f.flush()
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from None
        first = self.n == (self._n_before or 0)
        self.n = hi
        if first and self._expected is not None:
            self._check_room(n, self._expected - n)

    def _check_room(self, written: int, remaining: int) -> None:
        """Stop now if the showers still to come, at the size the first batch took, need
        more than the disk has free (a typo as `--n 1e14` would otherwise run until the
        disk is full)."""
        assert self._partial is not None
        per_shower = (self._partial.stat().st_size - self._size_before) / written
        needed = per_shower * remaining
        usage = shutil.disk_usage(self._partial.parent)
        free = usage.free
        if needed <= free or not usage.total:
            return
        self._release()
        self.abort()
        total = remaining + written
        raise OutputError(
            f"{self.path}: {total:,} showers need about {_size(needed)} more on disk "
            f"({_size(per_shower)} a shower, measured on the first {written}) and "
            f"{_size(free)} is free: write fewer showers or free space; nothing was written"
            + (f" (the file keeps its {self._n_before} showers)" if self._n_before else "")
        )

    def _failed(self, exc: BaseException) -> OutputError:
        """After a write the file system refused: give up the file without another write to
        the device, remove the partial, and say what happened."""
        self._release()
        self.abort()
        kept = ""
        if self._n_before is not None:
            kept = f"; the file keeps the {self._n_before} showers it had, none were appended"
        return OutputError(f"{self.path}: writing failed ({os_error_text(exc)}){kept}")

    def _release(self) -> None:
        """Point HDF5's file descriptor at /dev/null and close the file: what HDF5 still
        has to write goes nowhere, instead of failing again (and crashing) at exit."""
        if self._fd is not None and self._file.id.valid:
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, self._fd)
            finally:
                os.close(null)
            self._fd = None
            with contextlib.suppress(OSError, RuntimeError):
                self._file.close()

    def close(self) -> None:
        try:
            if self._file.id.valid:
                self._file.close()
            if self._partial is not None:
                commit(self._partial, self.path)
                self._partial = None
        except (OSError, RuntimeError) as exc:
            raise self._failed(exc) from None
        finally:
            self._release_hold()

    def abort(self) -> None:
        """Close and throw the partial away: no new file, or the appended-to file unchanged.
        Also after a construction stopped half-way (the partial may have no HDF5 file open)."""
        if getattr(self, "_file", None) is not None and self._file.id.valid:
            try:
                self._file.close()
            except (OSError, RuntimeError):
                self._release()
        if self._partial is not None:
            discard(self._partial)
            self._partial = None
        self._release_hold()

    def __enter__(self) -> ShowerWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def abandon_h5(h5: h5py.File) -> None:
    """Close an HDF5 file whose writes the file system refused, without another write to the
    device: its descriptor is pointed at /dev/null first. Closing it plainly would try the
    writes again and fail, and HDF5 would try once more at exit and crash the process."""
    fd = _descriptor(h5)
    if fd is not None and h5.id.valid:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    with contextlib.suppress(OSError, RuntimeError):
        if h5.id.valid:
            h5.close()


def _hold(path: Path) -> int:
    """A descriptor of `path` holding an exclusive flock, the lock HDF5 takes: another
    process opening the file meets it as a file in use."""
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InputFileError(
            path,
            "in use: another process has it open (file lock)",
            expected="a file free for appending",
            found="locked; wait for the other process to finish",
        ) from None
    return fd


def _descriptor(h5: h5py.File) -> int | None:
    """The operating-system file descriptor under an HDF5 file (the default driver's)."""
    try:
        fd = h5.id.get_vfd_handle()
    except (OSError, RuntimeError, ValueError, TypeError):
        return None
    return fd if isinstance(fd, int) else None


def _open_error(path: Path, exc: OSError, purpose: str) -> CaloforgeError:
    """What failed opening `path` with HDF5: in use by another process, or another reason."""
    if _locked(exc):
        return InputFileError(
            path,
            "in use: another process has it open for writing (HDF5 file lock)",
            expected=f"a file free {purpose}",
            found="locked; wait for the other process to finish",
        )
    return OutputError(f"{path}: cannot be opened {purpose} ({os_error_text(exc)})")


def _locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "unable to lock file" in text or ("lock" in text and "errno = 11" in text)


class ShowerFile:
    """A canonical file opened for reading; showers are read lazily in slices."""

    format = FORMAT

    def __init__(self, path: str | os.PathLike[str], h5: h5py.File, geometry: Geometry) -> None:
        self.path = str(path)
        self.geometry = geometry
        self._h5 = h5
        self._showers = h5[SHOWERS_KEY]
        self._n = int(self._showers.shape[0])
        self._conditions: dict[str, np.ndarray] | None = None
        # Chunks caloforge wrote are inflated here: far faster for a batch of scattered rows.
        self._direct = deflate.reads_here(self._showers)

    @property
    def attrs(self) -> Mapping[str, Any]:
        return dict(self._h5.attrs)

    def __len__(self) -> int:
        return self._n

    @property
    def conditions(self) -> Mapping[str, np.ndarray]:
        if self._conditions is None:
            conditions = {}
            for c in self.geometry.conditions:
                try:
                    values = self._h5[c.name][: self._n]
                except OSError as exc:
                    raise InputFileError(
                        self.path, f"unreadable data ({exc})", key=c.name
                    ) from None
                conditions[c.name] = np.asarray(values, dtype=np.float64)
            check_conditions(conditions, self.path, self._n, self.geometry)
            self._conditions = conditions
        return self._conditions

    def _showers_at(
        self, selection: slice | np.ndarray, offset: int, rows: np.ndarray | None = None
    ) -> np.ndarray:
        try:
            if self._direct:
                if isinstance(selection, slice):
                    wanted = np.arange(*selection.indices(self._n))
                else:
                    wanted = selection
                showers = deflate.read_chunks(self._showers, wanted)
            else:
                showers = np.asarray(self._showers[selection], dtype=np.float32)
        except OSError as exc:
            raise InputFileError(
                self.path,
                f"unreadable shower data, truncated or corrupt? ({exc})",
                key=SHOWERS_KEY,
            ) from None
        energy = self.conditions["energy"][selection]
        check_showers(showers, self.path, SHOWERS_KEY, offset, rows, energy)
        return showers

    def read(self, start: int, stop: int) -> Batch:
        start, stop = max(0, start), min(stop, self._n)
        showers = self._showers_at(slice(start, stop), start)
        return Batch(showers, {k: v[start:stop] for k, v in self.conditions.items()})

    def take(self, indices: np.ndarray) -> Batch:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return self.read(0, 0)
        showers = self._showers_at(indices, int(indices[0]), rows=indices)
        return Batch(showers, {k: v[indices] for k, v in self.conditions.items()})

    def close(self) -> None:
        if self._h5.id.valid:
            self._h5.close()

    def __enter__(self) -> ShowerFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes re-open the file themselves: h5py handles do not cross processes.
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = open_canonical(state["path"])
        self.__dict__.update(other.__dict__)


def open_h5(path: str | os.PathLike[str]) -> h5py.File:
    """Open an HDF5 file for reading with errors that name the file."""
    p = require_file(path)
    try:
        return h5py.File(p, "r")
    except OSError as exc:
        if _locked(exc):
            raise InputFileError(
                p,
                "in use: another process is writing it (HDF5 file lock)",
                expected="a file no process is writing",
                found="locked; wait for the writer to finish",
            ) from None
        raise InputFileError(
            p,
            "not a readable HDF5 file (wrong format, truncated or corrupt)",
            found=str(exc).split("(")[0].strip() or None,
        ) from None


def is_canonical(h5: h5py.File) -> bool:
    return "geometry_json" in h5.attrs and SHOWERS_KEY in h5


def open_canonical(path: str | os.PathLike[str]) -> ShowerFile:
    """Open a canonical file, checking its layout against its own geometry."""
    h5 = open_h5(path)
    try:
        return _checked(path, h5)
    except BaseException:
        h5.close()
        raise


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _numeric_dataset(
    h5: h5py.File, path: str | os.PathLike[str], key: str, kinds: str, expected: str
) -> h5py.Dataset:
    """`h5[key]`, refused unless it is a dataset (not a group) with at least one axis and
    numbers of the kinds `kinds` (numpy dtype kinds: 'f' float, 'i'/'u' integers)."""
    ds = h5_member(h5, path, key)
    if not isinstance(ds, h5py.Dataset):
        raise InputFileError(
            path, "not a dataset", key=key, expected=f"a dataset of {expected}", found="a group"
        )
    if ds.dtype.kind not in kinds:
        raise InputFileError(
            path, "wrong data type", key=key, expected=expected, found=f"dtype {ds.dtype}"
        )
    if ds.ndim == 0:
        raise InputFileError(
            path, "wrong shape", key=key, expected="one row per shower", found="a scalar"
        )
    return ds


def _check_format_version(path: str | os.PathLike[str], value: Any) -> None:
    """Refuse a `format_version` attribute that is not a whole number from 1 to
    FORMAT_VERSION (1.0 is 1; 0, -1, 1.5, true, text or a list are refused); a file without
    one is read as version 1."""
    if value is None:
        return
    number = value.item() if isinstance(value, np.generic) else value
    if isinstance(number, int | float) and not isinstance(number, bool):
        if math.isfinite(number) and float(number).is_integer() and number > FORMAT_VERSION:
            raise InputFileError(
                path,
                "written by a newer caloforge",
                key="format_version",
                expected=f"<= {FORMAT_VERSION}",
                found=str(int(number)),
            )
        if math.isfinite(number) and float(number).is_integer() and number >= 1:
            return
    raise InputFileError(
        path,
        "bad format version",
        key="format_version",
        expected=f"an integer from 1 to {FORMAT_VERSION}",
        found=repr(number)[:60],
    )


def _check_units(path: str | os.PathLike[str], value: Any, geometry: Geometry) -> None:
    """Refuse a `units` attribute that says a dataset holds other units than the geometry's
    (showers in MeV read as GeV would be a thousand times too much); a file without one is
    read in the geometry's units."""
    if value is None:
        return
    expected = units_of(geometry)
    try:
        units = json.loads(_text(value))
    except (ValueError, TypeError):
        units = None
    if not isinstance(units, dict):
        raise InputFileError(
            path,
            "bad units attribute",
            key="units",
            expected=f"a JSON map of dataset to unit, {json.dumps(expected)}",
            found=repr(value)[:60],
        )
    for key, unit in expected.items():
        if key in units and units[key] != unit:
            raise InputFileError(
                path,
                "a dataset in other units than caloforge reads",
                key="units",
                expected=f"'{key}' in {unit}",
                found=f"{units[key]!r} (convert the values and the attribute)",
            )


def _check_geometry_name(path: str | os.PathLike[str], name: Any, geometry: Geometry) -> None:
    """Refuse a `geometry` attribute naming another geometry than `geometry_json` describes
    (an edited file: which of the two is meant cannot be told). Absent: the description
    alone says it."""
    if name is None:
        return
    if isinstance(name, np.ndarray) and name.size == 1:  # ['clic-25'], as some tools write
        name = name.reshape(()).item()
    if _text(name) != geometry.name:
        raise InputFileError(
            path,
            "the geometry's name and its description disagree",
            key="geometry",
            expected=f"'{geometry.name}', the name in the attribute geometry_json",
            found=f"{name!r}",
        )


def _checked(path: str | os.PathLike[str], h5: h5py.File) -> ShowerFile:
    if "geometry_json" not in h5.attrs:
        raise InputFileError(
            path,
            "not a caloforge shower file",
            key="geometry_json",
            expected="the attribute written by caloforge",
            found="no such attribute (use 'caloforge convert' for other formats)",
        )
    _check_format_version(path, h5.attrs.get("format_version"))
    try:
        geometry = Geometry.from_json(_text(h5.attrs["geometry_json"]), source=f"{path}")
    except GeometryError as exc:
        raise InputFileError(
            path, f"bad geometry description ({exc})", key="geometry_json"
        ) from None
    _check_geometry_name(path, h5.attrs.get("geometry"), geometry)
    _check_units(path, h5.attrs.get("units"), geometry)
    if SHOWERS_KEY not in h5:
        raise InputFileError(
            path,
            "missing dataset",
            key=SHOWERS_KEY,
            expected=f"(N, {', '.join(map(str, geometry.shape))}) float32",
        )
    ds = _numeric_dataset(h5, path, SHOWERS_KEY, "f", "float32 cell energies in GeV")
    if tuple(ds.shape[1:]) != tuple(geometry.shape):
        raise InputFileError(
            path,
            "showers do not match the file's geometry",
            key=SHOWERS_KEY,
            expected=f"(N, {', '.join(map(str, geometry.shape))})",
            found=f"{ds.shape}",
        )
    n = int(ds.shape[0])
    for c in geometry.conditions:
        want = () if c.size == 1 else (c.size,)
        if c.name not in h5:
            raise InputFileError(
                path,
                "missing condition dataset",
                key=c.name,
                expected=f"({n}{', ' + str(c.size) if c.size > 1 else ''}) in {c.unit}",
            )
        found = _numeric_dataset(h5, path, c.name, "fiu", f"numbers in {c.unit}").shape
        if tuple(found[1:]) != want or found[0] != n:
            raise InputFileError(
                path,
                "condition has the wrong shape",
                key=c.name,
                expected=f"({n}{', ' + str(c.size) if c.size > 1 else ''})",
                found=str(found),
            )
    return ShowerFile(path, h5, geometry)
