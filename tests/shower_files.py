"""Builders of tiny shower files in the exact layouts of the formats caloforge reads.

Each builder writes one file (in `tmp_path`, by the tests) and returns the arrays it wrote,
in the file's own units, so that tests can compare what a reader returns with the truth.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

# A small CaloChallenge binning in the layout of binning_dataset_*.xml: layer 0 has 3 r bins
# x 4 alpha bins, layer 1 none (like the empty layers of data set 1), layer 2 2 x 2.
BINNING_XML = """<Bins>
   <Bin pid="11" etaMin="0" etaMax="130" name="electron">
      <Layer id="0" r_edges="0,4.65,9.3,13.95" n_bin_alpha="4" />
      <Layer id="1" r_edges="0" n_bin_alpha="1" />
      <Layer id="2" r_edges="0,2.325,4.65" n_bin_alpha="2" />
   </Bin>
</Bins>
"""
BINNING_VOXELS = 3 * 4 + 0 + 2 * 2


def sparse_cells(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Float32 cell energies, about a third of them non-zero."""
    cells = rng.exponential(scale, size=shape) * (rng.random(shape) < 0.3)
    return cells.astype(np.float32)


def make_lcd_angle(
    path: Path, n: int = 4, *, seed: int = 0, theta_degrees: bool = False
) -> dict[str, np.ndarray]:
    """Variable-angle LCD file: ECAL (n, 51, 51, 25) x50 of GeV, energy, theta, extras."""
    rng = np.random.default_rng(seed)
    truth = {
        "ECAL": sparse_cells(rng, (n, 51, 51, 25), 50 * 0.01),
        "energy": rng.uniform(100, 200, n),
        "theta": rng.uniform(np.radians(60), np.radians(120), n),
    }
    with h5py.File(path, "w") as f:
        f["ECAL"] = truth["ECAL"]
        f["energy"] = truth["energy"]
        f["theta"] = np.degrees(truth["theta"]) if theta_degrees else truth["theta"]
        f["mtheta"] = truth["theta"] + 0.01
        f["eta"] = -np.log(np.tan(truth["theta"] / 2))
        f["sum"] = truth["ECAL"].sum(axis=(1, 2, 3)) / 50
    return truth


def make_lcd_fixed(
    path: Path, n: int = 3, *, seed: int = 1, target: bool = True
) -> dict[str, np.ndarray]:
    """Fixed-angle LCD file: ECAL (n, 25, 25, 25) in GeV and target (n, 2), or energy (n, 1)."""
    rng = np.random.default_rng(seed)
    truth = {"ECAL": sparse_cells(rng, (n, 25, 25, 25), 0.05), "energy": rng.uniform(2, 500, n)}
    with h5py.File(path, "w") as f:
        f["ECAL"] = truth["ECAL"]
        if target:
            f["target"] = np.stack([np.full(n, 11.0), truth["energy"]], axis=1)
        else:
            f["energy"] = truth["energy"].reshape(n, 1)
    return truth


def make_calochallenge(
    path: Path, xml_path: Path, n: int = 5, *, seed: int = 2
) -> dict[str, np.ndarray]:
    """CaloChallenge file with `BINNING_XML`: incident_energies (n, 1), showers (n, 16), MeV."""
    rng = np.random.default_rng(seed)
    truth = {
        "incident_energies": rng.uniform(1e3, 1e6, (n, 1)),
        "showers": sparse_cells(rng, (n, BINNING_VOXELS), 200.0),
    }
    xml_path.write_text(BINNING_XML)
    with h5py.File(path, "w") as f:
        for key, values in truth.items():
            f[key] = values
    return truth


def make_calogan(path: Path, n: int = 3, *, seed: int = 3) -> dict[str, np.ndarray]:
    """CaloGAN file: layer_0 (n, 3, 96), layer_1 (n, 12, 12), layer_2 (n, 12, 6) MeV, etc."""
    rng = np.random.default_rng(seed)
    truth = {
        "layer_0": sparse_cells(rng, (n, 3, 96), 100.0),
        "layer_1": sparse_cells(rng, (n, 12, 12), 500.0),
        "layer_2": sparse_cells(rng, (n, 12, 6), 50.0),
        "overflow": rng.uniform(0, 10, (n, 3)),
        "energy": rng.uniform(1, 100, (n, 1)),
    }
    with h5py.File(path, "w") as f:
        for key, values in truth.items():
            f[key] = values
    return truth


def make_lhcb(
    path: Path, n: int = 4, *, seed: int = 4, flat: bool = False, compressed: bool = True
) -> dict[str, np.ndarray]:
    """LHCb challenge .npz: EnergyDeposit (n, 30, 30) or (n, 900) MeV, momentum, point, PDG."""
    rng = np.random.default_rng(seed)
    images = sparse_cells(rng, (n, 30, 30), 300.0)
    truth = {
        "EnergyDeposit": images.reshape(n, 900) if flat else images,
        "ParticleMomentum": np.stack(
            [rng.normal(0, 5, n), rng.normal(0, 5, n), rng.uniform(1, 100, n)], axis=1
        ).astype(np.float32),
        "ParticlePoint": rng.normal(0, 3, (n, 3)).astype(np.float32),
        "ParticlePDG": np.full(n, 11, dtype=np.int64),
    }
    save = np.savez_compressed if compressed else np.savez
    save(path, **truth)
    return truth


def truncate(path: Path) -> None:
    """Cut a file to half its length, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
