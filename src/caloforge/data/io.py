"""Open one file, several files or a glob as one shower set."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caloforge.data.formats import open_source
from caloforge.data.source import Batch, ShowerSource
from caloforge.errors import CaloforgeError, InputFileError


def expand_paths(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Paths in the order given, each glob pattern expanded in sorted order (a bytes path,
    as os functions take it, is decoded as they decode it)."""
    if isinstance(paths, bytes):  # a Sequence too: its bytes were taken for paths (got 47)
        paths = os.fsdecode(paths)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, Sequence):
        raise CaloforgeError(
            f"expected a path, a glob pattern or a list of them, got {type(paths).__name__}"
        )
    out: list[Path] = []
    for p in paths:
        if isinstance(p, bytes):
            p = os.fsdecode(p)
        if not isinstance(p, (str, os.PathLike)):
            raise CaloforgeError(f"expected a path or a glob pattern, got {p!r}")
        s = str(p)
        if any(ch in s for ch in "*?["):
            matches = sorted(glob.glob(s))
            if not matches:
                raise InputFileError(s, "no file matches this pattern")
            out.extend(Path(m) for m in matches)
        else:
            out.append(Path(s))
    if not out:
        raise CaloforgeError("no input files given")
    _refuse_repeats(out)
    return out


def _refuse_repeats(paths: list[Path]) -> None:
    """One file named twice (also through a link, or by a pattern and by name) would be read
    twice: its showers counted twice, in a training set, a validation set or a converted file."""
    seen: dict[tuple[int, int] | str, Path] = {}
    for path in paths:
        try:
            info = path.stat()
            key: tuple[int, int] | str = (info.st_dev, info.st_ino)
        except OSError:  # missing or unreadable: the reader says so
            key = os.path.realpath(path)
        if key in seen:
            first = seen[key]
            also = "" if str(first) == str(path) else f" (the same file as {first})"
            raise InputFileError(
                path,
                f"given twice{also}; each input file is read once (its showers would count twice)",
            )
        seen[key] = path
    if len(paths) > 1:  # one file's showers also read through another's HDF5 links
        from caloforge._files import hdf5_linked_files, same_file

        for path in paths:
            for linked in hdf5_linked_files(path):
                other = next((p for p in paths if same_file(p, linked)), None)
                if other is not None:
                    raise InputFileError(
                        path,
                        f"reads data from {other} (through an HDF5 external link or virtual "
                        "dataset), which is given too; each input file is read once (its "
                        "showers would count twice)",
                    )


class ShowerCollection:
    """Several sources of the same geometry read as one, in order."""

    format = "collection"

    def __init__(self, sources: Sequence[ShowerSource]) -> None:
        first = sources[0]
        for s in sources[1:]:
            if s.geometry.to_dict() != first.geometry.to_dict():
                raise InputFileError(
                    s.path,
                    "files of different geometries cannot be read as one set",
                    key="geometry",
                    expected=f"'{first.geometry.name}' like {first.path}",
                    found=f"'{s.geometry.name}'",
                )
        self.sources = list(sources)
        self.geometry = first.geometry
        self.path = ", ".join(s.path for s in sources)
        self._offsets = np.cumsum([0] + [len(s) for s in sources])
        self._conditions: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def conditions(self) -> Mapping[str, np.ndarray]:
        if self._conditions is None:
            self._conditions = {
                name: np.concatenate([s.conditions[name] for s in self.sources])
                for name in self.geometry.condition_names
            }
        return self._conditions

    def read(self, start: int, stop: int) -> Batch:
        start, stop = max(0, start), min(stop, len(self))
        parts = []
        for i, s in enumerate(self.sources):
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            if hi > start and lo < stop:
                parts.append(s.read(max(start, lo) - lo, min(stop, hi) - lo))
        return Batch.concatenate(parts) if parts else self.sources[0].read(0, 0)

    def take(self, indices: np.ndarray) -> Batch:
        indices = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self._offsets, indices, side="right") - 1
        parts = [
            self.sources[i].take(indices[which == i] - self._offsets[i]) for i in np.unique(which)
        ]
        return Batch.concatenate(parts) if parts else self.sources[0].read(0, 0)

    def close(self) -> None:
        for s in self.sources:
            s.close()

    def __enter__(self) -> ShowerCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_showers(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    format: str | None = None,
    **options: Any,
) -> ShowerSource:
    """Open a file, several files or a glob; several files must share one geometry."""
    files = expand_paths(paths)
    sources: list[ShowerSource] = []
    try:
        for f in files:
            sources.append(open_source(f, format, **options))
        return sources[0] if len(sources) == 1 else ShowerCollection(sources)
    except BaseException:
        for s in sources:
            s.close()
        raise
