"""Registers the canonical caloforge file with the format registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from caloforge.data.canonical import FORMAT, ShowerFile, open_canonical
from caloforge.data.formats import FileFormat, register
from caloforge.errors import CaloforgeError


def _sniff(path: Path) -> bool:
    if not h5py.is_hdf5(path):
        return False
    try:
        with h5py.File(path, "r") as h5:
            return "geometry_json" in h5.attrs
    except OSError:
        # An HDF5 signature but unreadable (truncated, corrupt): claim it, so that
        # open_canonical names the file and the problem instead of h5py's bare OSError.
        return True


def _open(path: Path, **options: Any) -> ShowerFile:
    if options:
        raise CaloforgeError(f"format '{FORMAT}' takes no options, got {sorted(options)}")
    return open_canonical(path)


register(FileFormat(FORMAT, "caloforge canonical HDF5 (any geometry)", _sniff, _open))
