"""The CaloChallenge's high-level features of voxel showers, with the reference's names.

The definitions are those of the challenge's evaluation (`HighLevelFeatures.py` and
`XMLHandler.py` of github.com/CaloChallenge/homepage, code/): showers in MeV, voxels ordered
(layer, alpha bin, r bin) with r fastest, after the readout threshold (voxels below
`min_energy` set to 0):

- E_tot, the sum of all voxels, and E_layer, the sum of each layer's voxels;
- the centre of energy in "eta" and "phi" of each layer binned in alpha, each voxel placed at
  x = r_mid cos(alpha_mid), y = r_mid sin(alpha_mid) (bin centres), and in r (r_mid);
- their widths sqrt(max(<x^2> - <x>^2, 0)); energy-weighted means divide by (E + 1e-16), so
  an empty layer has centre and width 0;
- sparsity: the fraction of a layer's voxels with no energy (1 - the fraction above 0).

Layers are keyed by their position in the binning (the reference's `relevantLayers`); a layer
without r bins has no voxels and no features. The high-level vector of the classifier, FPD and
KPD (the reference's `prepare_high_data_for_classifier`) is `high_level_vector`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from caloforge.data.formats.calochallenge import Binning

# The reference's guards: energy-weighted means divide by E + 1e-16, logarithms take E + 1e-8.
MEAN_GUARD = 1e-16
LOG_GUARD = 1e-8


@dataclass(frozen=True)
class ChallengeLayout:
    """Where each voxel lies, from a CaloChallenge binning.

    layers: positions of the layers with voxels; alpha_layers: those of them with more than
    one alpha bin (centres in eta and phi); slices[l]: the voxel columns of layer l;
    eta, phi, r: (voxels of the layer,) bin-centre coordinates in mm per layer."""

    layers: tuple[int, ...]
    alpha_layers: tuple[int, ...]
    slices: dict[int, slice]
    eta: dict[int, np.ndarray]
    phi: dict[int, np.ndarray]
    r: dict[int, np.ndarray]
    n_voxels: int

    @classmethod
    def from_binning(cls, binning: Binning) -> ChallengeLayout:
        layers, alpha_layers = [], []
        slices, eta, phi, r = {}, {}, {}, {}
        start = 0
        for position, layer in enumerate(binning.layers):
            n = layer.n_voxels
            if layer.n_r > 0:
                edges = np.asarray(layer.r_edges, dtype=np.float64)
                r_mid = edges[:-1] + (edges[1:] - edges[:-1]) / 2.0
                a_edges = np.linspace(-math.pi, math.pi, layer.n_bin_alpha + 1)
                a_mid = a_edges[:-1] + (a_edges[1:] - a_edges[:-1]) / 2.0
                # alpha outer, r inner: voxel (a, i) at column a * n_r + i.
                rr = np.tile(r_mid, layer.n_bin_alpha)
                aa = np.repeat(a_mid, layer.n_r)
                layers.append(position)
                slices[position] = slice(start, start + n)
                r[position] = rr
                eta[position] = rr * np.cos(aa)
                phi[position] = rr * np.sin(aa)
                if layer.n_bin_alpha > 1:
                    alpha_layers.append(position)
            start += n
        return cls(tuple(layers), tuple(alpha_layers), slices, eta, phi, r, start)


@dataclass
class ChallengeFeatures:
    """The high-level features of n showers (MeV, mm). Per-layer arrays are (n, layers) in
    the order of `layout.layers` (or `layout.alpha_layers` for eta and phi)."""

    energy: np.ndarray  # (n,) incident energy, MeV
    e_tot: np.ndarray
    e_layer: np.ndarray
    sparsity: np.ndarray
    ec_r: np.ndarray
    width_r: np.ndarray
    ec_eta: np.ndarray
    ec_phi: np.ndarray
    width_eta: np.ndarray
    width_phi: np.ndarray

    def __len__(self) -> int:
        return len(self.e_tot)

    @staticmethod
    def concatenate(parts: list[ChallengeFeatures]) -> ChallengeFeatures:
        return ChallengeFeatures(
            *(
                np.concatenate([getattr(p, name) for p in parts])
                for name in ChallengeFeatures.__dataclass_fields__
            )
        )


def threshold(showers: np.ndarray, min_energy: float) -> np.ndarray:
    """Voxels below `min_energy` (MeV) set to 0, as the reference reads every set."""
    return np.where(showers < min_energy, np.zeros_like(showers), showers)


def _centre_and_width(
    coordinate: np.ndarray, energy: np.ndarray, layer_energy: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    denominator = layer_energy + MEAN_GUARD
    centre = energy @ coordinate / denominator
    second = energy @ (coordinate * coordinate) / denominator
    return centre, np.sqrt(np.clip(second - centre**2, 0.0, None))


def challenge_features(
    showers: np.ndarray, energy: np.ndarray, layout: ChallengeLayout
) -> ChallengeFeatures:
    """The high-level features of thresholded showers (n, voxels) MeV with incident energies
    (n,) MeV (`threshold` first). The energy sums are taken in the showers' own precision
    (float32 for the challenge's files) and kept so, as the reference takes them: a sum sets a
    histogram's edges (its largest value, through a logarithm in that precision) and can put
    a shower on either side of one; the rest is computed in float64."""
    x = np.asarray(showers).reshape(len(showers), -1)
    if x.shape[1] != layout.n_voxels:
        raise ValueError(f"showers have {x.shape[1]} voxels, the binning {layout.n_voxels}")
    n = len(x)
    per_layer: dict[str, list[np.ndarray]] = {k: [] for k in ("e", "sp", "cr", "wr")}
    per_alpha: dict[str, list[np.ndarray]] = {k: [] for k in ("ce", "cp", "we", "wp")}
    for layer in layout.layers:
        cells = x[:, layout.slices[layer]]
        e_layer = cells.sum(axis=-1)
        cells = cells.astype(np.float64)
        per_layer["e"].append(e_layer)
        per_layer["sp"].append(1.0 - (cells > 0).mean(axis=1))
        centre, width = _centre_and_width(layout.r[layer], cells, e_layer)
        per_layer["cr"].append(centre)
        per_layer["wr"].append(width)
        if layer in layout.alpha_layers:
            ce, we = _centre_and_width(layout.eta[layer], cells, e_layer)
            cp, wp = _centre_and_width(layout.phi[layer], cells, e_layer)
            per_alpha["ce"].append(ce)
            per_alpha["cp"].append(cp)
            per_alpha["we"].append(we)
            per_alpha["wp"].append(wp)

    def stack(values: list[np.ndarray]) -> np.ndarray:
        return np.stack(values, axis=1) if values else np.zeros((n, 0))

    return ChallengeFeatures(
        energy=np.asarray(energy, dtype=np.float64).reshape(-1),
        e_tot=x.sum(axis=-1),
        e_layer=stack(per_layer["e"]),
        sparsity=stack(per_layer["sp"]),
        ec_r=stack(per_layer["cr"]),
        width_r=stack(per_layer["wr"]),
        ec_eta=stack(per_alpha["ce"]),
        ec_phi=stack(per_alpha["cp"]),
        width_eta=stack(per_alpha["we"]),
        width_phi=stack(per_alpha["wp"]),
    )


def high_level_vector(f: ChallengeFeatures) -> np.ndarray:
    """The reference's high-level vector, (n, 2 + 3 layers + 4 alpha layers) float64:
    [log10 E_inc, log10(E_layer + 1e-8), EC eta / 100, EC phi / 100, width eta / 100,
    width phi / 100, log10(E_tot + 1e-8), sparsity, EC r / 100, width r / 100] (MeV, mm)."""
    return np.concatenate(
        [
            np.log10(f.energy)[:, None],
            np.log10(f.e_layer + LOG_GUARD),
            f.ec_eta / 1e2,
            f.ec_phi / 1e2,
            f.width_eta / 1e2,
            f.width_phi / 1e2,
            np.log10(f.e_tot + LOG_GUARD)[:, None],
            f.sparsity,
            f.ec_r / 1e2,
            f.width_r / 1e2,
        ],
        axis=1,
    )


def high_level_names(layout: ChallengeLayout) -> list[str]:
    """Names of the columns of `high_level_vector`."""
    names = ["log10 Einc"]
    names += [f"log10 E layer {k}" for k in layout.layers]
    for what in ("EC Eta", "EC Phi", "Width Eta", "Width Phi"):
        names += [f"{what} layer {k} / 100" for k in layout.alpha_layers]
    names.append("log10 Etot")
    names += [f"Sparsity layer {k}" for k in layout.layers]
    names += [f"EC r layer {k} / 100" for k in layout.layers]
    names += [f"Width r layer {k} / 100" for k in layout.layers]
    return names


def low_level_inputs(
    showers: np.ndarray, energy: np.ndarray, min_energy: float = 0.0
) -> np.ndarray:
    """The reference's low-level classifier input [log10 E_inc, voxels / E_inc] of showers
    (n, voxels) and energies (n,), MeV, voxels below `min_energy` taken as 0 (its "cls-low"
    reads the file and applies the readout threshold); float32 (n, 1 + voxels)."""
    e = np.asarray(energy, dtype=np.float64).reshape(-1, 1)
    out = np.zeros((len(showers), 1 + showers.shape[1]), dtype=np.float32)
    out[:, :1] = np.log10(e)
    np.divide(showers, e, out=out[:, 1:], where=showers >= min_energy)
    return out


def low_level_normalised_inputs(
    showers: np.ndarray, energy: np.ndarray, layout: ChallengeLayout, e_layer: np.ndarray
) -> np.ndarray:
    """The reference's "cls-low-normed" input [log10 E_inc, each layer's voxels / (E_layer +
    1e-16), log10(E_layer + 1e-8)] (MeV); float32 (n, 1 + voxels + layers). `e_layer` is
    (n, layers) as `ChallengeFeatures.e_layer`.

    As the reference builds it: `showers` are the voxels as read, before the readout
    threshold (its "cls-low-normed" reads the file without one), and `e_layer` the layer
    energies after it (of its high-level features). A layer whose voxels all lie below the
    threshold but not all at 0 so gives ratios of order 1e16, in the reference as here."""
    e = np.asarray(energy, dtype=np.float64).reshape(-1, 1)
    n_layers = len(layout.layers)
    out = np.empty((len(showers), 1 + showers.shape[1] + n_layers), dtype=np.float32)
    out[:, :1] = np.log10(e)
    for k, layer in enumerate(layout.layers):
        s = layout.slices[layer]
        out[:, 1 + s.start : 1 + s.stop] = showers[:, s] / (e_layer[:, k : k + 1] + MEAN_GUARD)
    out[:, 1 + showers.shape[1] :] = np.log10(e_layer + LOG_GUARD)
    return out
