"""The features of voxel geometries (no cell grid) and the scalar features the report compares
one by one.

Voxel geometries (CaloChallenge, CaloGAN files) have flat (n, cells) showers; where their
`extra` describes the layers, per-layer energies and hit fractions are features too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from caloforge.geometry import Geometry
from caloforge.validation.features.kernels import (
    HIT_THRESHOLD,
    cell_spectrum,
    response_of_total,
    total_energy,
)
from caloforge.validation.features.one_pass import feature_names


def voxel_layers(geometry: Geometry) -> list[int] | None:
    """Cells per layer of a voxel geometry (CaloChallenge, CaloGAN), from its `extra`;
    None when it does not say."""
    layers = geometry.extra.get("layers")
    if not isinstance(layers, Sequence):
        return None
    sizes = []
    for layer in layers:
        if "shape" in layer:
            sizes.append(math.prod(int(s) for s in layer["shape"]))
        elif "r_edges" in layer and "n_bin_alpha" in layer:
            sizes.append(max(len(layer["r_edges"]) - 1, 0) * int(layer["n_bin_alpha"]))
        else:
            return None
    return sizes if sum(sizes) == geometry.n_cells else None


def voxel_feature_names(geometry: Geometry) -> list[str]:
    """Names of the feature vector of a voxel geometry (`voxel_features`)."""
    sizes = voxel_layers(geometry) or []
    used = [i for i, s in enumerate(sizes) if s > 0]
    return (
        ["E_tot/E_inc", "hit_fraction"]
        + [f"E_frac_layer{i}" for i in used]
        + [f"hit_fraction_layer{i}" for i in used]
    )


def voxel_features(
    showers: np.ndarray, conditions: Mapping[str, np.ndarray], geometry: Geometry
) -> dict[str, np.ndarray]:
    """The features of a batch of voxel showers (n, cells), where no cell grid gives shapes:
    total_energy, hits, cell_spectrum, and with a known layer structure longitudinal_profile
    (GeV per layer) and mean_layer (energy-weighted layer index); feature_vector holds
    E_tot/E_inc, the fraction of cells hit and, per non-empty layer, its fraction of E_tot
    and of its cells hit (names: `voxel_feature_names`)."""
    n = len(showers)
    flat = showers.reshape(n, -1)
    out: dict[str, np.ndarray] = {f"condition/{k}": np.asarray(v) for k, v in conditions.items()}
    total = total_energy(showers)
    out["total_energy"] = total
    above = flat > HIT_THRESHOLD
    out["hits"] = above.sum(axis=1)
    out["cell_spectrum"] = cell_spectrum(showers)
    columns = [response_of_total(total, conditions["energy"]), out["hits"] / flat.shape[1]]
    sizes = voxel_layers(geometry)
    if sizes:
        used = [i for i, s in enumerate(sizes) if s > 0]
        starts = np.cumsum([0, *sizes])[:-1][used]
        layer_energy = np.add.reduceat(flat, starts, axis=1, dtype=np.float64)
        layer_hits = np.add.reduceat(above, starts, axis=1, dtype=np.int64)
        out["longitudinal_profile"] = layer_energy
        safe = np.where(total > 0, total, 1.0)
        out["mean_layer"] = (layer_energy * np.asarray(used)).sum(axis=1) / safe
        columns += list((layer_energy / safe[:, None]).T)
        columns += list((layer_hits / np.asarray(sizes)[used]).T)
    out["feature_vector"] = np.stack(columns, axis=1)
    return out


@dataclass(frozen=True)
class ScalarFeature:
    """One number per shower compared between the sets: its key, label and unit."""

    key: str
    label: str
    unit: str = ""


SCALAR_FEATURES = (
    ScalarFeature("response", "E_vis / E_p"),
    ScalarFeature("energy_visible", "E_vis", "GeV"),
    ScalarFeature("hits", f"hits (cells > {HIT_THRESHOLD:g} GeV)"),
    ScalarFeature("centre_x", "centre x", "mm"),
    ScalarFeature("centre_y", "centre y", "mm"),
    ScalarFeature("centre_z", "centre z (depth)", "mm"),
    ScalarFeature("width_x", "width x", "mm"),
    ScalarFeature("width_y", "width y", "mm"),
    ScalarFeature("width_z", "width z (depth)", "mm"),
    ScalarFeature("mean_layer", "mean layer (energy-weighted)"),
    ScalarFeature("measured_theta", "measured theta", "deg"),
    ScalarFeature("asymmetry_long", "asymmetry, longitudinal"),
    ScalarFeature("asymmetry_trans", "asymmetry, transverse"),
    ScalarFeature("width_long", "LHCb width, longitudinal", "cells"),
    ScalarFeature("width_trans", "LHCb width, transverse", "cells"),
)
# The LHCb cluster features are taken from the feature vector (impact point at
# LHCB_FEATURE_DEPTH_X0): at the challenge's own depth the asymmetry saturates.
_LHCB_KEYS = ("asymmetry_long", "asymmetry_trans", "width_long", "width_trans")


def scalar_features(
    features: Mapping[str, np.ndarray], geometry: Geometry
) -> dict[str, np.ndarray]:
    """The scalar features (`SCALAR_FEATURES`) present for this geometry, key -> (n,), from
    a set's feature table (`compute_features` or `voxel_features`)."""
    total = np.asarray(features["total_energy"], dtype=np.float64)
    out = {
        "response": response_of_total(total, features["condition/energy"]),
        "energy_visible": total,
        "hits": np.asarray(features["hits"], dtype=np.float64),
    }
    for key in ("centre_x", "centre_y", "centre_z", "width_x", "width_y", "width_z"):
        if key in features:
            out[key] = np.asarray(features[key], dtype=np.float64)
    if "mean_layer" in features:
        out["mean_layer"] = np.asarray(features["mean_layer"], dtype=np.float64)
    if "measured_theta" in features:
        out["measured_theta"] = np.degrees(features["measured_theta"])
    if "asymmetry_long" in features and geometry.readout != "voxels":
        names = feature_names(geometry)
        for key in _LHCB_KEYS:
            out[key] = features["feature_vector"][:, names.index(key)]
    return out
