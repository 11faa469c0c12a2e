"""LCD / 3DGAN HDF5 files (the CLIC-like Si-W ECAL data sets of the 3DGAN studies).

Two layouts, told apart by the shape of `ECAL` (cells indexed x, y, layer, as caloforge's):

- variable angle, geometry `clic-angle-51`:
    ECAL    (N, 51, 51, 25)  cell energies stored x50 relative to GeV (divided by 50 here)
    energy  (N,) or (N, 1)   primary energy, GeV
    theta   (N,) or (N, 1)   polar angle of incidence, rad. Files whose largest angle exceeds
                             2 pi are taken to be in degrees and converted to rad.
    mtheta, eta, sum         optional (measured angle, pseudorapidity, ECAL sum); not carried
                             over: caloforge recomputes such features from the showers.
- fixed angle, geometry `clic-25`:
    ECAL    (N, 25, 25, 25)  cell energies, GeV
    target  (N, k >= 2)      primary energy, GeV, in column 1   } either one; `energy`
    energy  (N,) or (N, 1)   primary energy, GeV                } is used when both exist

Option `ecal_scale` replaces the divisor that turns `ECAL` into GeV (50 and 1 by default).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

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
    positive_option,
    read_all,
    shape_text,
    sniff_hdf5,
)
from caloforge.errors import InputFileError
from caloforge.geometry import PRESETS

FORMAT = "lcd"
ECAL_KEY = "ECAL"
ANGLE_SHAPE = (51, 51, 25)
FIXED_SHAPE = (25, 25, 25)
# The variable-angle files store cells x50 relative to GeV; the fixed-angle files store GeV.
DEFAULT_ECAL_SCALE = {ANGLE_SHAPE: 50.0, FIXED_SHAPE: 1.0}


def _sniff(path: Path) -> bool:
    return sniff_hdf5(path, lambda h5: ECAL_KEY in h5 and not is_canonical(h5))


def _open(path: Path, **options: Any) -> ForeignSource:
    check_options(FORMAT, options, ("ecal_scale",))
    return open_checked(path, lambda h5: _source(path, h5, options))


def _source(path: Path, h5: h5py.File, options: dict[str, Any]) -> ForeignSource:
    expected = f"{shape_text(('N', *ANGLE_SHAPE))} or {shape_text(('N', *FIXED_SHAPE))}"
    ecal = dataset(h5, path, ECAL_KEY, expected, cells=True)
    shape = tuple(ecal.shape[1:])
    if ecal.ndim != 4 or shape not in DEFAULT_ECAL_SCALE:
        raise InputFileError(
            path,
            "not an LCD shower array",
            key=ECAL_KEY,
            expected=expected,
            found=shape_text(ecal.shape),
        )
    n = int(ecal.shape[0])
    if shape == ANGLE_SHAPE:
        geometry = PRESETS["clic-angle-51"]
        conditions = {"energy": _energy(h5, path, n), "theta": _theta(h5, path, n)}
    else:
        geometry = PRESETS["clic-25"]
        conditions = {"energy": _fixed_angle_energy(h5, path, n)}
    scale = DEFAULT_ECAL_SCALE[shape]
    if "ecal_scale" in options:
        scale = positive_option(FORMAT, "ecal_scale", options["ecal_scale"])
    return ForeignSource(
        path=path,
        format=FORMAT,
        geometry=geometry,
        conditions=conditions,
        showers_key=ECAL_KEY,
        read_showers=_reader(ecal, scale),
        close=h5.close,
        options=options,
    )


def _reader(ecal: h5py.Dataset, scale: float) -> ShowerReader:
    def read(selection: Selection) -> np.ndarray:
        showers = np.asarray(ecal[selection], dtype=np.float32)
        if scale != 1.0:
            showers /= np.float32(scale)
        return showers

    return read


def _energy(h5: h5py.File, path: Path, n: int) -> np.ndarray:
    ds = dataset(h5, path, "energy", f"({n},) primary energies in GeV")
    return column(read_all(ds, path, "energy"), path, "energy", n)


def _theta(h5: h5py.File, path: Path, n: int) -> np.ndarray:
    """Polar angle in rad; files with values above 2 pi store degrees."""
    ds = dataset(h5, path, "theta", f"({n},) polar angles in rad")
    theta = column(read_all(ds, path, "theta"), path, "theta", n)
    if n and np.isfinite(theta).all() and theta.max() > 2 * math.pi:
        theta = np.deg2rad(theta)
    return theta


def _fixed_angle_energy(h5: h5py.File, path: Path, n: int) -> np.ndarray:
    if "energy" in h5:
        return _energy(h5, path, n)
    expected = f"({n}, k >= 2) with the primary energy in GeV in column 1, or an 'energy' dataset"
    target = read_all(dataset(h5, path, "target", expected), path, "target")
    if target.ndim != 2 or target.shape[0] != n or target.shape[1] < 2:
        raise InputFileError(
            path, "wrong shape", key="target", expected=expected, found=shape_text(target.shape)
        )
    return target[:, 1].copy()


register(
    FileFormat(
        FORMAT,
        "LCD / 3DGAN HDF5 (ECAL 51x51x25 with energy and theta, or 25x25x25 with target)",
        _sniff,
        _open,
        ("ecal_scale",),
    )
)
