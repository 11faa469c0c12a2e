"""CaloGAN HDF5 files (Paganini et al.: a three-layer LAr ECAL, positrons, photons and pions).

  layer_0   (N, 3, 96)   cell energies of the first layer, MeV
  layer_1   (N, 12, 12)  second layer, MeV
  layer_2   (N, 12, 6)   third layer, MeV
  overflow  (N, 3)       energy deposited outside the three images, per layer, MeV
  energy    (N, 1)       primary energy, GeV

The three images are read as one flat shower of 3*96 + 12*12 + 12*6 = 504 voxels in GeV (layer 0
first, each image in row-major order); the geometry's `extra` records the layer shapes. The
overflow is not a cell and is not carried over: the visible energy of a converted shower is
the energy in the three images. The particle is taken from the file name as the public files
are named (eplus, gamma, piplus), "unknown" otherwise.
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
    read_all,
    shape_text,
    sniff_hdf5,
)
from caloforge.data.source import check_showers
from caloforge.errors import InputFileError
from caloforge.geometry import Condition, Geometry

FORMAT = "calogan"
LAYERS: dict[str, tuple[int, int]] = {"layer_0": (3, 96), "layer_1": (12, 12), "layer_2": (12, 6)}
N_VOXELS = sum(math.prod(shape) for shape in LAYERS.values())
MEV_PER_GEV = 1000.0
PARTICLES = {"eplus": "positron", "gamma": "photon", "piplus": "pion"}


def geometry_for(particle: str) -> Geometry:
    """The 504-voxel CaloGAN geometry for showers of `particle`."""
    return Geometry(
        name="calogan",
        shape=(N_VOXELS,),
        readout="voxels",
        conditions=(Condition("energy", "GeV", description="primary energy"),),
        particle=particle,
        description=(
            "CaloGAN three-layer LAr ECAL: images of 3x96, 12x12 and 12x6 cells, flattened "
            "and concatenated in that order"
        ),
        extra={
            "format": FORMAT,
            "layers": [{"name": name, "shape": list(shape)} for name, shape in LAYERS.items()],
        },
    )


def _particle(path: Path) -> str:
    name = path.name.lower()
    return next((p for key, p in PARTICLES.items() if key in name), "unknown")


def _sniff(path: Path) -> bool:
    return sniff_hdf5(path, lambda h5: all(k in h5 for k in LAYERS) and not is_canonical(h5))


def _open(path: Path, **options: Any) -> ForeignSource:
    check_options(FORMAT, options, ())
    return open_checked(path, lambda h5: _source(path, h5))


def _source(path: Path, h5: h5py.File) -> ForeignSource:
    layers = [
        dataset(h5, path, key, f"(N, {shape[0]}, {shape[1]}) in MeV", cells=True)
        for key, shape in LAYERS.items()
    ]
    n = int(layers[0].shape[0])
    for ds, (key, shape) in zip(layers, LAYERS.items(), strict=True):
        if ds.shape != (n, *shape):
            raise InputFileError(
                path,
                "wrong shape",
                key=key,
                expected=shape_text((n, *shape)),
                found=shape_text(ds.shape),
            )
    energies = read_all(dataset(h5, path, "energy", f"({n}, 1) in GeV"), path, "energy")
    return ForeignSource(
        path=path,
        format=FORMAT,
        geometry=geometry_for(_particle(path)),
        conditions={"energy": column(energies, path, "energy", n)},
        showers_key=", ".join(LAYERS),
        read_showers=_reader(path, layers),
        close=h5.close,
        options={},
    )


def _reader(path: Path, layers: list[h5py.Dataset]) -> ShowerReader:
    def read(selection: Selection) -> np.ndarray:
        offset = selection.start if isinstance(selection, slice) else int(selection[0])
        parts = []
        for ds, key in zip(layers, LAYERS, strict=True):
            cells = np.asarray(ds[selection], dtype=np.float32)
            check_showers(cells, str(path), key, offset)  # names the layer at fault
            parts.append(cells.reshape(len(cells), -1))
        showers = np.concatenate(parts, axis=1)
        showers /= np.float32(MEV_PER_GEV)
        return showers

    return read


register(
    FileFormat(
        FORMAT,
        "CaloGAN HDF5 (layer_0, layer_1, layer_2 in MeV, energy in GeV)",
        _sniff,
        _open,
    )
)
