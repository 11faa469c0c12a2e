"""The CaloChallenge's histograms of the high-level features and their separation powers.

Binning and outlier handling are the reference's (`evaluate_plotting_helper.py` of
github.com/CaloChallenge/homepage, code/): each histogram has fixed edges (some from the
reference set's largest value), values outside the edges are left out, and each set's
histogram is normalised over the values inside them (matplotlib's `density=True`). The
separation power is 1/2 sum_i (p_i - q_i)^2 / (p_i + q_i + 1e-16) of those normalised
histograms (0: identical, 1: disjoint). A set with no value inside the edges has no
histogram: its separation power is NaN, as the reference's, and the table says why.

The edges depend on the data set ("1-photons", "1-pions", "2", "3", chosen from the number of
voxels, or "other": the rules of data sets 2 and 3 scaled to the binning's outer radius).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from caloforge.validation.challenge.features import ChallengeFeatures, ChallengeLayout

# Voxels per data set of the challenge, and its readout threshold in MeV (the reference's
# `min_energy`: 1 MeV for data set 1; 0.5 keV over the sampling fraction 0.033 for 2 and 3).
DATASET_VOXELS = {"1-photons": 368, "1-pions": 533, "2": 6480, "3": 40500}
DATASET_MIN_ENERGY = {"1-photons": 1.0, "1-pions": 1.0, "2": 0.5e-3 / 0.033, "3": 0.5e-3 / 0.033}
DATASETS = (*DATASET_VOXELS, "other")
# Data sets 2 and 3's ranges, made for their outer radius of 41.85 mm.
_DS23_RADIUS = 41.85
SEPARATION_GUARD = 1e-16


def dataset_of(n_voxels: int) -> str:
    """The challenge data set with this many voxels, or "other"."""
    for name, n in DATASET_VOXELS.items():
        if n == n_voxels:
            return name
    return "other"


def separation_power(p: np.ndarray, q: np.ndarray) -> float:
    """1/2 sum (p - q)^2 / (p + q + 1e-16) of two histograms normalised to sum 1."""
    return float(0.5 * np.sum((p - q) ** 2 / (p + q + SEPARATION_GUARD)))


def normalised_counts(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts of `values` inside `edges` (the last bin closed) over their number, and how
    many values fell outside (NaN counted outside); all-NaN counts when none fell inside."""
    counts, _ = np.histogram(values, bins=edges)
    inside = int(counts.sum())
    outside = int(np.size(values)) - inside
    if inside == 0:
        return np.full(len(counts), np.nan), outside
    return counts / inside, outside


@dataclass(frozen=True)
class HistogramSpec:
    """One of the reference's histograms: its name as the reference prints it ("E layer 3"),
    the feature family and layer, and how its edges are made from the reference values."""

    name: str
    family: str
    layer: int | None
    edges: Callable[[np.ndarray], np.ndarray]


def _linear(low: float, high: float, n_edges: int = 101) -> Callable[[np.ndarray], np.ndarray]:
    return lambda reference: np.linspace(low, high, n_edges)


def _log_to_max(min_energy: float, n_edges: int) -> Callable[[np.ndarray], np.ndarray]:
    def edges(reference: np.ndarray) -> np.ndarray:
        # The largest value's logarithm in the values' own precision (float32 for the
        # challenge's files), as the reference takes it: the last edge can then fall just
        # below the largest value, which is left out.
        top = np.max(reference) if np.size(reference) else np.float64(0.0)
        if not top > min_energy:
            raise ValueError(
                f"the reference's largest value {float(top):.4g} MeV is not above the "
                f"threshold {min_energy:.4g} MeV"
            )
        return np.logspace(np.log10(min_energy), np.log10(top), n_edges)

    return edges


def _limits(dataset: str, family: str, layer: int, radius: float) -> tuple[float, float]:
    """The reference's plot range of a centre or width family in one layer (mm)."""
    wide = {"ec_r": (12, 13, 14), "width_r": (12, 13, 14)}.get(family, (12, 13))
    if dataset in ("2", "3", "other"):
        high = {"ec": 30.0, "width": 30.0, "ec_r": 42.0, "width_r": 20.0}[family]
        if dataset == "other":
            high *= radius / _DS23_RADIUS
        return (-high, high) if family == "ec" else (0.0, high)
    if layer in wide:
        return {"ec": (-500.0, 500.0), "width": (0.0, 400.0)}.get(family, (0.0, 1500.0))
    return {"ec": (-100.0, 100.0), "width": (0.0, 100.0)}.get(family, (0.0, 500.0))


# (family key, name prefix, limits family); the order of the reference's output file.
LAYER_FAMILIES = (
    ("e_layer", "E layer", None),
    ("ec_eta", "EC Eta layer", "ec"),
    ("ec_phi", "EC Phi layer", "ec"),
    ("width_eta", "Width Eta layer", "width"),
    ("width_phi", "Width Phi layer", "width"),
    ("sparsity", "Sparsity layer", None),
    ("ec_r", "EC r layer", "ec_r"),
    ("width_r", "Width r layer", "width_r"),
)


def _layers(layout: ChallengeLayout, family: str) -> tuple[int, ...]:
    """The layers a family has: eta and phi only where a layer is binned in alpha."""
    alpha = family in ("ec_eta", "ec_phi", "width_eta", "width_phi")
    return layout.alpha_layers if alpha else layout.layers


def histogram_specs(
    layout: ChallengeLayout, dataset: str, min_energy: float, radius: float
) -> list[HistogramSpec]:
    """Every histogram of the reference for this layout: E_tot / E_inc, then each layer
    family, then the voxel spectrum. `radius` (mm): the outer r edge, used for "other"."""
    specs = [HistogramSpec("Etot / Einc", "etot_einc", None, _linear(0.5, 1.5))]
    for family, prefix, limits in LAYER_FAMILIES:
        for layer in _layers(layout, family):
            if family == "e_layer":
                edges = _log_to_max(min_energy, 40)
            elif family == "sparsity":
                edges = _linear(0.0, 1.0, 21)
            else:
                assert limits is not None
                edges = _linear(*_limits(dataset, limits, layer, radius))
            specs.append(HistogramSpec(f"{prefix} {layer}", family, layer, edges))
    specs.append(HistogramSpec("Voxel distribution", "voxels", None, _log_to_max(min_energy, 50)))
    return specs


def spec_values(spec: HistogramSpec, f: ChallengeFeatures, layout: ChallengeLayout) -> np.ndarray:
    """The values a histogram is filled with (not for the voxel spectrum)."""
    if spec.family == "etot_einc":
        return f.e_tot / f.energy
    return getattr(f, spec.family)[:, _layers(layout, spec.family).index(spec.layer)]


@dataclass(frozen=True)
class Separation:
    """One histogram's separation power (NaN without one), its bootstrap error (NaN when
    not computed), and the fractions of each set outside the edges."""

    name: str
    family: str
    layer: int | None
    value: float
    error: float
    outside_reference: float
    outside_generated: float
    reason: str = ""


def separation(
    spec: HistogramSpec,
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    n_bootstrap: int = 10,
    rng: np.random.Generator | None = None,
) -> Separation:
    """The separation power of one histogram, with the reference's edges and outlier
    handling, and its bootstrap error over both sets (`n_bootstrap` resamplings; the edges
    are kept those of the full reference set)."""
    reference = np.asarray(reference).reshape(-1)
    generated = np.asarray(generated).reshape(-1)
    try:
        edges = spec.edges(reference)
        if not (np.all(np.isfinite(edges)) and np.all(np.diff(edges) > 0)):
            raise ValueError(f"edges {edges[0]:.4g} to {edges[-1]:.4g} are not increasing")
    except ValueError as exc:
        return Separation(spec.name, spec.family, spec.layer, np.nan, np.nan, 1.0, 1.0, str(exc))
    p, out_r = normalised_counts(reference, edges)
    q, out_g = normalised_counts(generated, edges)
    value = separation_power(p, q)
    reason = ""
    if not np.isfinite(value):
        which = [n for n, h in (("reference", p), ("generated", q)) if np.isnan(h).any()]
        reason = f"no {' or '.join(which)} value inside {edges[0]:.4g}..{edges[-1]:.4g}"
    error = np.nan
    if n_bootstrap > 1 and np.isfinite(value):
        rng = rng if rng is not None else np.random.default_rng(0)
        draws = []
        for _ in range(n_bootstrap):
            a = normalised_counts(reference[rng.integers(0, len(reference), len(reference))], edges)
            b = normalised_counts(generated[rng.integers(0, len(generated), len(generated))], edges)
            draws.append(separation_power(a[0], b[0]))
        error = float(np.nanstd(draws, ddof=1))
    return Separation(
        spec.name,
        spec.family,
        spec.layer,
        value,
        error,
        out_r / max(len(reference), 1),
        out_g / max(len(generated), 1),
        reason,
    )


def iter_values(
    specs: list[HistogramSpec], f: ChallengeFeatures, layout: ChallengeLayout
) -> Iterator[tuple[HistogramSpec, np.ndarray]]:
    """Each feature histogram's spec with its values (the voxel spectrum left out)."""
    for spec in specs:
        if spec.family != "voxels":
            yield spec, spec_values(spec, f, layout)
