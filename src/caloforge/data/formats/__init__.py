"""The file formats caloforge reads, detected automatically or named by the user.

Each format registers a `FileFormat`: a cheap `sniff(path)` that says whether a file looks like
this format, and `open(path, **options)` that returns a `ShowerSource` in canonical units.
Detection tries the formats in registration order, the canonical format first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caloforge.data.source import ShowerSource, require_file
from caloforge.errors import CaloforgeError, InputFileError


@dataclass(frozen=True)
class FileFormat:
    name: str
    description: str
    sniff: Callable[[Path], bool]
    open: Callable[..., ShowerSource]
    options: tuple[str, ...] = ()  # the reader options `open` takes (a CaloChallenge binning)


FORMATS: dict[str, FileFormat] = {}


def register(fmt: FileFormat) -> None:
    FORMATS[fmt.name] = fmt


_BUILTIN = ("canonical_format", "lcd", "calochallenge", "calogan", "lhcb")
_loaded = False


def _load_builtin() -> None:
    """Import the built-in format modules (each registers itself) once, and put them first in
    detection order whichever of them was imported first: the canonical format, then the
    others."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _BUILTIN:
        importlib.import_module(f"caloforge.data.formats.{module}")
    builtin = ["caloforge", "lcd", "calochallenge", "calogan", "lhcb"]
    ordered = {name: FORMATS[name] for name in builtin if name in FORMATS}
    ordered.update({k: v for k, v in FORMATS.items() if k not in ordered})
    FORMATS.clear()
    FORMATS.update(ordered)


def format_names() -> list[str]:
    _load_builtin()
    return list(FORMATS)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The name of the first registered format whose sniff accepts `path`."""
    _load_builtin()
    p = require_file(path)
    for fmt in FORMATS.values():
        if fmt.sniff(p):
            return fmt.name
    raise InputFileError(
        p,
        "unrecognised shower file format",
        expected=f"one of: {', '.join(FORMATS)}",
        found=f"{_contents(p)}; none matched (name one with --format if the detection is wrong)",
    )


def _contents(path: Path) -> str:
    """What a file of no known format holds, in a few words: its top-level keys."""
    import zipfile

    import h5py

    def listed(names: list[str]) -> str:
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"[{shown}]" if names else "nothing"

    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as h5:
                return f"an HDF5 file holding {listed(list(h5))}"
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return f"a zip archive holding {listed(archive.namelist())}"
    except (OSError, zipfile.BadZipFile):
        pass
    return "another kind of file"


def open_source(
    path: str | os.PathLike[str], format: str | None = None, **options: Any
) -> ShowerSource:
    """Open one file as a `ShowerSource`, detecting the format unless `format` is given."""
    _load_builtin()
    if format is None:
        format = detect_format(path)
    elif format not in FORMATS:
        raise CaloforgeError(f"unknown format '{format}'; known formats: {', '.join(FORMATS)}")
    return FORMATS[format].open(Path(path), **options)
