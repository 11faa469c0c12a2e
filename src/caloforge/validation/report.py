"""`caloforge validate`: compare generated showers with reference (Monte Carlo) showers and
write a report folder: index.html (self-contained), metrics.json and the plots as PNG.

The flow, top to bottom:
1. open both sets (any format the data layer reads) and check that they can be compared:
   neither empty, one geometry, overlapping condition ranges (`check_comparable`);
2. compute every per-shower feature once per set (`features.compute_features`), streamed in
   chunks over worker processes, and keep the showers inside the overlap of the conditions;
3. feature-level metrics: separation power, W1 and KS of the scalar features, overall and in
   bins of energy and angle; the response mu90 and resolution sigma90/mu90 of E_vis/E_p per
   bin; correlations; FPD, KPD and the high-level classifier;
4. cell-level metrics (low-level classifier, projection MSE, SSIM) on a seeded subsample;
5. a verdict per headline metric against a tolerance (`Tolerances`, settable from YAML or
   the command line);
6. plots (`plots.PLOTS`), written with the HTML and JSON into a temporary folder that is
   renamed to the report folder only at the end, so a failed run leaves no report behind.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import json
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from caloforge import __version__
from caloforge.data.io import open_showers
from caloforge.data.source import Batch, ShowerSource, iter_batches
from caloforge.errors import CaloforgeError, InputFileError
from caloforge.geometry import Geometry
from caloforge.validation import metrics
from caloforge.validation.features import (
    HIT_THRESHOLD,
    cell_spectrum,
    compute_features,
    feature_names,
    total_energy,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from caloforge.validation.plots import Comparison

Verdict = Literal["pass", "fail", "unclear", "n/a", "info"]


# --- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerances:
    """The largest acceptable value of each headline metric; None gives no verdict.

    A verdict reads the value with its error: "pass" when the value (the absolute value of a
    deviation) is within the tolerance, "fail" when it exceeds the tolerance by more than
    `ValidationConfig.significance` errors, "unclear" in between (more showers would tell).

    Defaults, checked on simulated clic-25 electrons of 20-60 GeV, 3000 showers a set
    (2000 for the cell-level metrics) against an independent sample ("same") and distorted
    copies of it (5 % energy scale; one layer deeper; a 10 % wider lateral profile):
    - classifier AUCs 0.6 (0.5 = indistinguishable; the CaloChallenge's best models reach
      0.52-0.58 against Geant4). Same 0.50; scale 0.78 (cells) and 0.83 (features);
      deeper 0.91 and 0.99; wider 0.69 and 0.86.
    - fpd 0.02 (20 x 1e-3 as the CaloChallenge prints it; its Geant4 vs Geant4 is 10.8e-3 on
      its own features). Same 0.001 +- 0.003; scale 0.003; wider 0.057; deeper 0.53.
    - kpd 0.001. Same -0.0001 +- 0.0001; scale -0.0001; wider 0.0013 +- 0.0004; deeper 0.009.
    - projection_mse 1e-4, an RMS difference of 1 % of the reference's peak (see
      `metrics.projection_mse`; the report subtracts the part expected from the subsample's
      own fluctuations, `projection_mse_floor`). Same 0; wider 1.3e-5; scale 2.5e-5;
      deeper 2.2e-4.
    - response_deviation 0.02: mu90 of E_vis/E_p of the generated set over the reference's,
      minus 1, in the worst bin. Same +0.5 +- 0.3 %; scale +5.6 +- 0.3 %.
    - resolution_deviation 0.10: the same for sigma90/mu90 (the 3DGAN's "within 10 %").
      Same +4 +- 5 % in the worst of five bins of 600 showers.
    """

    classifier_auc_low_level: float | None = 0.6
    classifier_auc_high_level: float | None = 0.6
    fpd: float | None = 0.02
    kpd: float | None = 0.001
    projection_mse: float | None = 1e-4
    response_deviation: float | None = 0.02
    resolution_deviation: float | None = 0.10


@dataclass(frozen=True)
class ValidationConfig:
    """Everything `validate` can be told; every field has a default.

    energy_bins: a number of bins over the overlap of the two sets' energies (log-spaced when
        they span more than a factor 10), or the bin edges in GeV.
    theta_bins: the same for the polar angle, edges in degrees (geometries with theta only).
    subsample: showers per set for the cell-level metrics (low-level classifier, projection
        MSE, SSIM, projections); 0 skips them. The showers are held in memory: 2000 showers
        of 51x51x25 cells are 0.5 GB per set, and the classifier holds about three copies.
    ssim_pairs: random pairs of showers per SSIM comparison (at most subsample / 2).
    max_showers: use only the first showers of each file (None: all).
    classifier_showers: showers per set for the high-level classifier (a seeded subset).
    min_showers: fewer showers than this in a bin of either set, and the bin's metrics are
        reported as "too few showers" instead of a number.
    significance: errors beyond its tolerance a value must be to fail (see `Tolerances`).
    labels: names of the two sets in the plots and the report.
    workers: processes computing features (None: one per core, at most 8).
    batch_size: showers per feature batch (None: about 128 MB of cells).
    """

    tolerances: Tolerances = field(default_factory=Tolerances)
    energy_bins: int | tuple[float, ...] = 5
    theta_bins: int | tuple[float, ...] = 3
    subsample: int = 2000
    ssim_pairs: int = 100
    max_showers: int | None = None
    classifier_showers: int = 50_000
    min_showers: int = metrics.MIN_SHOWERS_PER_BIN
    significance: float = 2.0
    seed: int = 0
    plots: bool = True
    labels: tuple[str, str] = ("Reference", "Generated")
    workers: int | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.subsample < 0:
            problems.append(f"subsample must be >= 0, got {self.subsample}")
        if self.max_showers is not None and self.max_showers <= 0:
            problems.append(f"max_showers must be positive, got {self.max_showers}")
        if self.ssim_pairs < 1:
            problems.append(f"ssim_pairs must be at least 1, got {self.ssim_pairs}")
        if self.classifier_showers < 0:
            problems.append(f"classifier_showers must be >= 0, got {self.classifier_showers}")
        if self.min_showers < 2:
            problems.append(f"min_showers must be at least 2, got {self.min_showers}")
        if not self.significance >= 0:
            problems.append(f"significance must be >= 0, got {self.significance}")
        if self.workers is not None and self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        if self.batch_size is not None and self.batch_size < 1:
            problems.append(f"batch_size must be at least 1, got {self.batch_size}")
        if len(self.labels) != 2:
            problems.append(f"labels must be two names, got {self.labels}")
        for name in ("energy_bins", "theta_bins"):
            bins = getattr(self, name)
            if isinstance(bins, int):
                if bins < 1:
                    problems.append(f"{name} must be at least 1 bin, got {bins}")
            elif len(bins) < 2 or np.any(np.diff(bins) <= 0):
                problems.append(f"{name} edges must be at least two increasing values: {bins}")
        for name, value in dataclasses.asdict(self.tolerances).items():
            if value is not None and not (math.isfinite(value) and value >= 0):
                problems.append(f"tolerance {name} must be a number >= 0, got {value}")
        if problems:
            raise CaloforgeError("validation settings: " + "; ".join(problems))


_TOLERANCE_NAMES = tuple(f.name for f in dataclasses.fields(Tolerances))
_CONFIG_NAMES = tuple(f.name for f in dataclasses.fields(ValidationConfig))


def parse_bins(text: str | int | Sequence[float], name: str = "bins") -> int | tuple[float, ...]:
    """'5' -> 5 bins; '100,150,200' -> edges (100.0, 150.0, 200.0); lists pass through."""
    if isinstance(text, bool):
        raise CaloforgeError(f"{name}: expected a number of bins or edges, got {text!r}")
    if isinstance(text, int):
        return text
    if isinstance(text, str):
        parts = [p for p in text.replace(" ", "").split(",") if p]
        if len(parts) == 1 and parts[0].isdigit():
            return int(parts[0])
        items: Sequence[Any] = parts
    else:
        items = text
    try:
        return tuple(float(p) for p in items)
    except (TypeError, ValueError):
        raise CaloforgeError(
            f"{name}: expected a number of bins (5) or comma-separated edges (100,150,200), "
            f"got {text!r}"
        ) from None


def parse_tolerances(items: Sequence[str]) -> dict[str, float | None]:
    """['fpd=0.1', 'kpd=none'] -> {'fpd': 0.1, 'kpd': None} (none: no verdict)."""
    out: dict[str, float | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in _TOLERANCE_NAMES:
            raise CaloforgeError(
                f"--tolerance expects NAME=VALUE with NAME one of {', '.join(_TOLERANCE_NAMES)}; "
                f"got '{item}'"
            )
        out[name] = _tolerance_value(value.strip(), f"--tolerance {name}")
    return out


def _tolerance_value(value: Any, where: str) -> float | None:
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "off")):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CaloforgeError(f"{where}: expected a number or 'none', got {value!r}") from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    tolerances: Mapping[str, float | None] | None = None,
    **overrides: Any,
) -> ValidationConfig:
    """A `ValidationConfig` from a YAML file (keys as the fields of `ValidationConfig`, with
    `tolerances` a mapping of `Tolerances` fields and theta_bins in degrees), then
    `overrides` (None values are ignored) and `tolerances` on top.

    Example file:
        tolerances: {response_deviation: 0.03, fpd: 0.1, kpd: none}
        energy_bins: [100, 125, 150, 175, 200]
        theta_bins: 4
        subsample: 1000
    """
    values: dict[str, Any] = {}
    tol: dict[str, float | None] = {}
    if path is not None:
        import yaml  # lazy: only a user with a config file pays for it

        p = Path(path)
        if not p.is_file():
            raise InputFileError(p, "validation config not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputFileError(p, f"not valid YAML ({exc})") from None
        if not isinstance(data, Mapping):
            raise InputFileError(p, "expected a mapping of settings at the top level")
        unknown = sorted(set(data) - set(_CONFIG_NAMES))
        if unknown:
            raise InputFileError(
                p, f"unknown setting(s) {unknown}", expected=f"some of {list(_CONFIG_NAMES)}"
            )
        file_tol = data.get("tolerances") or {}
        if not isinstance(file_tol, Mapping) or set(file_tol) - set(_TOLERANCE_NAMES):
            raise InputFileError(
                p,
                "bad 'tolerances'",
                key="tolerances",
                expected=f"a mapping with keys among {list(_TOLERANCE_NAMES)}",
                found=repr(file_tol),
            )
        tol.update({k: _tolerance_value(v, f"{p}: tolerance {k}") for k, v in file_tol.items()})
        values.update({k: v for k, v in data.items() if k != "tolerances"})
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(_CONFIG_NAMES))
    if unknown:
        raise CaloforgeError(f"unknown validation setting(s) {unknown}")
    tol.update(tolerances or {})
    for name in ("energy_bins", "theta_bins"):
        if name in values:
            values[name] = parse_bins(values[name], name)
    if "labels" in values:
        labels = values["labels"]
        values["labels"] = tuple(labels.split(",") if isinstance(labels, str) else labels)
    try:
        return ValidationConfig(tolerances=dataclasses.replace(Tolerances(), **tol), **values)
    except TypeError as exc:
        raise CaloforgeError(f"validation settings: {exc}") from None


# --- opening and checking the two sets ----------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    """How to open a shower set: worker processes re-open it from this."""

    paths: tuple[str, ...]
    format: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def open(self) -> ShowerSource:
        return open_showers(list(self.paths), self.format, **dict(self.options))


def _spec(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    format: str | None,
    options: Mapping[str, Any],
) -> SourceSpec:
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    return SourceSpec(tuple(str(p) for p in items), format, tuple(sorted(options.items())))


def _geometry_difference(a: Geometry, b: Geometry) -> str:
    """'' when a and b describe the same detector (names and descriptions aside)."""
    if tuple(a.shape) != tuple(b.shape):
        return f"shower shapes {tuple(a.shape)} and {tuple(b.shape)}"
    da, db = a.to_dict(), b.to_dict()
    keys = sorted(k for k in da if k not in ("name", "description") and da[k] != db.get(k))
    return f"different {', '.join(keys)}" if keys else ""


def _range(values: np.ndarray) -> tuple[float, float]:
    return float(np.min(values)), float(np.max(values))


def check_comparable(
    reference: ShowerSource, generated: ShowerSource
) -> dict[str, tuple[float, float]]:
    """Raise a `CaloforgeError` unless the two sets can be compared: each holds showers, both
    have one geometry, and their energies (and angles) overlap. Returns the overlap of each
    scalar condition, name -> (low, high), in the geometry's units."""
    for source in (reference, generated):
        if len(source) == 0:
            raise InputFileError(source.path, "holds no showers; nothing to validate")
    difference = _geometry_difference(reference.geometry, generated.geometry)
    if difference:
        raise CaloforgeError(
            f"the sets have different geometries ({difference}): reference {reference.path} "
            f"is '{reference.geometry.name}', generated {generated.path} is "
            f"'{generated.geometry.name}'; showers of one detector are needed"
        )
    overlap: dict[str, tuple[float, float]] = {}
    for name in _scalar_conditions(reference.geometry):
        unit = reference.geometry.condition(name).unit
        r = _range(reference.conditions[name])
        g = _range(generated.conditions[name])
        low, high = max(r[0], g[0]), min(r[1], g[1])
        if low > high:
            raise CaloforgeError(
                f"the {name} ranges do not overlap: reference {reference.path} has "
                f"{r[0]:.4g}:{r[1]:.4g} {unit}, generated {generated.path} has "
                f"{g[0]:.4g}:{g[1]:.4g} {unit}; nothing can be compared"
            )
        overlap[name] = (low, high)
    return overlap


def _scalar_conditions(geometry: Geometry) -> list[str]:
    """The conditions the sets are binned in: energy, and theta where the geometry has it."""
    return [name for name in ("energy", "theta") if geometry.has_condition(name)]


# --- features, streamed in chunks over processes ----------------------------------------------
# Below this many cells in both sets together, features are computed in this process: starting
# worker processes costs more than it saves.
PARALLEL_MIN_CELLS = 5e8


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
    energy = np.asarray(conditions["energy"], dtype=np.float64)
    columns = [total / energy, out["hits"] / flat.shape[1]]
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


def set_features(source: ShowerSource, batch_size: int) -> dict[str, np.ndarray]:
    """Every per-shower feature of `source`, streamed: `compute_features` for cell grids,
    `voxel_features` for voxel geometries."""
    if source.geometry.readout != "voxels":
        return compute_features(source, batch_size=batch_size)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in iter_batches(source, batch_size):
        for key, value in voxel_features(batch.showers, batch.conditions, source.geometry).items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


class _Slice:
    """Showers start:stop of a source, seen as a source of their own (one chunk's work)."""

    format = "slice"

    def __init__(self, source: ShowerSource, start: int, stop: int) -> None:
        self._source, self._start, self._stop = source, start, stop
        self.path = source.path
        self.geometry = source.geometry

    def __len__(self) -> int:
        return self._stop - self._start

    @property
    def conditions(self) -> Mapping[str, np.ndarray]:
        return {k: v[self._start : self._stop] for k, v in self._source.conditions.items()}

    def read(self, start: int, stop: int) -> Batch:
        stop = min(stop, len(self))
        return self._source.read(self._start + start, self._start + stop)

    def take(self, indices: np.ndarray) -> Batch:
        return self._source.take(np.asarray(indices) + self._start)

    def close(self) -> None:
        """The underlying source belongs to the caller."""


def _chunk_features(spec: SourceSpec, start: int, stop: int, batch_size: int) -> dict:
    """A worker's job: open the set and compute the features of showers start:stop."""
    try:
        source = spec.open()
        try:
            return set_features(_Slice(source, start, stop), batch_size)
        finally:
            source.close()
    except CaloforgeError as exc:
        # An InputFileError cannot be unpickled in the parent (its __init__ takes more than
        # the message): the message travels in a plain CaloforgeError.
        raise CaloforgeError(str(exc)) from None


def default_batch_size(geometry: Geometry) -> int:
    """About 128 MB of float32 cells per batch, between 64 and 4096 showers."""
    return int(np.clip(2**25 // max(geometry.n_cells, 1), 64, 4096))


def features_of_sets(
    sources: Sequence[ShowerSource],
    specs: Sequence[SourceSpec] | None,
    counts: Sequence[int],
    *,
    batch_size: int,
    workers: int,
    progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """The features of the first `counts[i]` showers of each source, in order.

    The sets are cut into chunks; with `workers` > 1 (and enough cells to pay for the
    processes) the chunks of all sets are computed at once by that many processes, each
    re-opening its set from `specs` and holding one batch of showers at a time, so memory
    stays bounded by the features (a few kB per shower) plus one batch per worker."""
    cells = sum(counts) * sources[0].geometry.n_cells
    parallel = workers > 1 and specs is not None and cells >= PARALLEL_MIN_CELLS
    chunk = batch_size * (8 if parallel else 16)
    jobs = [(k, lo, min(lo + chunk, n)) for k, n in enumerate(counts) for lo in range(0, n, chunk)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(counts), unit="shower", desc="features", mininterval=0.5)
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in sources]
    try:
        if parallel:
            assert specs is not None
            context = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = [
                    pool.submit(_chunk_features, specs[k], lo, hi, batch_size) for k, lo, hi in jobs
                ]
                for (k, lo, hi), future in zip(jobs, futures, strict=True):
                    parts[k].append(future.result())
                    if bar is not None:
                        bar.update(hi - lo)
        else:
            for k, lo, hi in jobs:
                parts[k].append(set_features(_Slice(sources[k], lo, hi), batch_size))
                if bar is not None:
                    bar.update(hi - lo)
    finally:
        if bar is not None:
            bar.close()
    return [_concatenate(chunks) for chunks in parts]


def _concatenate(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join the chunks' features key by key, dropping each key's parts once joined, so that
    the features are held about once, not twice."""
    out = {}
    for key in list(chunks[0]):
        out[key] = np.concatenate([chunk.pop(key) for chunk in chunks])
    return out


# --- scalar features, bins and conditions -----------------------------------------------------
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
# features.LHCB_FEATURE_DEPTH_X0): at the challenge's own depth the asymmetry saturates.
_LHCB_KEYS = ("asymmetry_long", "asymmetry_trans", "width_long", "width_trans")


def scalar_features(
    features: Mapping[str, np.ndarray], geometry: Geometry
) -> dict[str, np.ndarray]:
    """The scalar features (`SCALAR_FEATURES`) present for this geometry, key -> (n,)."""
    total = np.asarray(features["total_energy"], dtype=np.float64)
    out = {
        "response": total / np.asarray(features["condition/energy"], dtype=np.float64),
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


def bin_edges(
    spec: int | Sequence[float], low: float, high: float, *, log_if_wide: bool
) -> np.ndarray:
    """Edges of `spec` bins over [low, high] (the last edge just above high, so the highest
    value counts), log-spaced when `log_if_wide` and high / low > 10; or the given edges."""
    if not isinstance(spec, int):
        return np.asarray(spec, dtype=np.float64)
    if high <= low:
        return np.array([low, np.nextafter(high, np.inf)])
    if log_if_wide and low > 0 and high / low > 10:
        edges = np.geomspace(low, high, spec + 1)
    else:
        edges = np.linspace(low, high, spec + 1)
    edges[-1] = np.nextafter(high, np.inf)
    return edges


def _in_overlap(
    features: Mapping[str, np.ndarray], overlap: Mapping[str, tuple[float, float]]
) -> np.ndarray:
    mask = np.ones(len(features["total_energy"]), dtype=bool)
    for name, (low, high) in overlap.items():
        values = features[f"condition/{name}"]
        mask &= (values >= low) & (values <= high)
    return mask


# --- verdicts ---------------------------------------------------------------------------------
def verdict(
    value: float | None,
    error: float | None,
    tolerance: float | None,
    *,
    absolute: bool = False,
    significance: float = 2.0,
) -> Verdict:
    """'pass' when `value` (|value| if `absolute`) is within `tolerance`; 'fail' when it
    exceeds it by more than `significance` errors; 'unclear' in between; 'n/a' without a
    value, 'info' without a tolerance."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if tolerance is None:
        return "info"
    v = abs(value) if absolute else value
    if v <= tolerance:
        return "pass"
    e = error if error is not None and math.isfinite(error) else 0.0
    return "fail" if v - significance * e > tolerance else "unclear"


_SEVERITY = {"fail": 4, "unclear": 3, "pass": 2, "info": 1, "n/a": 0}


@dataclass(frozen=True)
class Headline:
    """One row of the report's headline table. `value` and `error` in the metric's own
    units; `scale` only multiplies them for display (FPD and KPD x 1e3)."""

    key: str
    title: str
    value: float | None
    error: float | None
    tolerance: float | None
    verdict: Verdict
    detail: str
    scale: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "value": _json_number(self.value),
            "error": _json_number(self.error),
            "tolerance": self.tolerance,
            "verdict": self.verdict,
            "detail": self.detail,
        }


# --- response and resolution in bins ------------------------------------------------------------
@dataclass(frozen=True)
class ResponseBin:
    """mu90 and sigma90/mu90 of E_vis/E_p of both sets in one bin of a condition [low, high)
    (geometry units), their deviations (generated / reference - 1) with errors, and the
    verdicts. When `ok` is False the bin holds too few showers and `reason` says so."""

    condition: str
    low: float
    high: float
    n_reference: int
    n_generated: int
    ok: bool
    reason: str = ""
    mu90: tuple[float, float] = (math.nan, math.nan)
    mu90_error: tuple[float, float] = (math.nan, math.nan)
    resolution: tuple[float, float] = (math.nan, math.nan)
    resolution_error: tuple[float, float] = (math.nan, math.nan)
    response_deviation: float = math.nan
    response_deviation_error: float = math.nan
    resolution_deviation: float = math.nan
    resolution_deviation_error: float = math.nan
    response_verdict: Verdict = "n/a"
    resolution_verdict: Verdict = "n/a"

    def to_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def _ratio_deviation(a: float, ea: float, b: float, eb: float) -> tuple[float, float]:
    """b / a - 1 and its error, from independent errors on a and b."""
    ratio = b / a
    return ratio - 1.0, abs(ratio) * math.hypot(ea / a, eb / b)


def _response_pair(r: np.ndarray, g: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[mu90_ref, mu90_gen, res_ref, res_gen] and their bootstrap errors."""
    (mr, emr), (sr, esr) = metrics.mu90_sigma90(r, seed=seed)
    (mg, emg), (sg, esg) = metrics.mu90_sigma90(g, seed=seed)
    return np.array([mr, mg, sr, sg]), np.array([emr, emg, esr, esg])


def response_bins(
    condition: str,
    reference_ratio: np.ndarray,
    generated_ratio: np.ndarray,
    reference_condition: np.ndarray,
    generated_condition: np.ndarray,
    edges: np.ndarray,
    *,
    tolerances: Tolerances,
    min_showers: int,
    significance: float,
    seed: int,
) -> list[ResponseBin]:
    """The response (mu90 of E_vis/E_p) and resolution (sigma90/mu90 of E_vis/E_p) of both
    sets in bins of `condition` (`metrics.binned`), with deviations and verdicts."""
    out = []
    for b in metrics.binned(
        _response_pair,
        reference_ratio,
        generated_ratio,
        reference_condition,
        generated_condition,
        edges,
        min_showers=min_showers,
        seed=seed,
    ):
        if not b.ok:
            out.append(
                ResponseBin(condition, b.low, b.high, b.n_reference, b.n_generated, False, b.reason)
            )
            continue
        v, e = b.value, b.error
        dr, edr = _ratio_deviation(v[0], e[0], v[1], e[1])
        ds, eds = _ratio_deviation(v[2], e[2], v[3], e[3])
        out.append(
            ResponseBin(
                condition,
                b.low,
                b.high,
                b.n_reference,
                b.n_generated,
                True,
                mu90=(float(v[0]), float(v[1])),
                mu90_error=(float(e[0]), float(e[1])),
                resolution=(float(v[2]), float(v[3])),
                resolution_error=(float(e[2]), float(e[3])),
                response_deviation=dr,
                response_deviation_error=edr,
                resolution_deviation=ds,
                resolution_deviation_error=eds,
                response_verdict=verdict(
                    dr,
                    edr,
                    tolerances.response_deviation,
                    absolute=True,
                    significance=significance,
                ),
                resolution_verdict=verdict(
                    ds,
                    eds,
                    tolerances.resolution_deviation,
                    absolute=True,
                    significance=significance,
                ),
            )
        )
    return out


def _bin_label(condition: str, low: float, high: float) -> str:
    if condition == "theta":
        return f"theta {math.degrees(low):.4g}-{math.degrees(high):.4g} deg"
    if condition == "all":
        return "all showers"
    return f"{condition} {low:.4g}-{high:.4g} GeV"


def _worst_bin(
    bins: Sequence[ResponseBin], which: Literal["response", "resolution"]
) -> ResponseBin | None:
    ok = [b for b in bins if b.ok]
    if not ok:
        return None

    def rank(b: ResponseBin) -> tuple[int, float]:
        v = getattr(b, f"{which}_verdict")
        return _SEVERITY[v], abs(getattr(b, f"{which}_deviation"))

    return max(ok, key=rank)


# --- the whole comparison -----------------------------------------------------------------------
@dataclass
class SetInfo:
    """What the report says about one input set."""

    label: str
    path: str
    format: str
    geometry: str
    n_showers: int
    n_read: int
    n_used: int
    ranges: dict[str, tuple[float, float]]

    def to_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


@dataclass
class ValidationResult:
    """Everything `compare` found; `write_report` turns it into the report folder.

    headline: the headline rows, in order; verdict: the worst of their verdicts ("pass"
    when none failed and none is unclear); metrics: the JSON document (metrics.json);
    warnings: what a reader must know to trust the numbers; comparison: the plots' inputs
    (None when plots are off)."""

    config: ValidationConfig
    geometry: Geometry
    sets: tuple[SetInfo, SetInfo]
    headline: list[Headline]
    verdict: Verdict
    metrics: dict[str, Any]
    warnings: list[str]
    comparison: Comparison | None = None

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"verdict: {self.verdict.upper()}"]
        for h in self.headline:
            lines.append(f"  {h.title:<34} {_format_value(h):>22}  {h.verdict}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _attempt(fn: Callable[[], tuple[float, float]]) -> tuple[float | None, float | None, str]:
    """Run a metric; a ValueError (too few showers, say) becomes a reason instead of a value."""
    try:
        value, error = fn()
    except ValueError as exc:
        return None, None, str(exc)
    return float(value), float(error), ""


def _draw_subsample(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.flatnonzero(mask)
    return np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))


def _low_level_inputs(showers: np.ndarray, energy: np.ndarray, chunk: int = 256) -> np.ndarray:
    """`classifier.low_level_inputs` built a chunk at a time, so that no float64 copy of all
    cells is ever held."""
    from caloforge.validation.classifier import low_level_inputs

    out = np.empty((len(showers), 1 + showers[0].size), dtype=np.float32)
    for lo in range(0, len(showers), chunk):
        out[lo : lo + chunk] = low_level_inputs(showers[lo : lo + chunk], energy[lo : lo + chunk])
    return out


def compare(
    reference: ShowerSource,
    generated: ShowerSource,
    config: ValidationConfig | None = None,
    *,
    specs: tuple[SourceSpec, SourceSpec] | None = None,
    progress: bool = False,
) -> ValidationResult:
    """Compute every metric of the report for two open shower sets (`check_comparable` first).

    `specs` lets worker processes re-open the sets to compute features in parallel; without
    them everything runs in this process."""
    from caloforge.simulation.run import default_workers

    config = config or ValidationConfig()
    overlap = check_comparable(reference, generated)
    geometry = reference.geometry
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now

    sources = (reference, generated)
    counts = [
        len(s) if config.max_showers is None else min(len(s), config.max_showers) for s in sources
    ]
    all_features = features_of_sets(
        sources,
        specs,
        counts,
        batch_size=config.batch_size or default_batch_size(geometry),
        workers=config.workers or default_workers(),
        progress=progress,
    )
    lap("features")
    masks = [_in_overlap(f, overlap) for f in all_features]
    infos = tuple(
        SetInfo(
            label=label,
            path=source.path,
            format=source.format,
            geometry=source.geometry.name,
            n_showers=len(source),
            n_read=n,
            n_used=int(mask.sum()),
            ranges={k: _range(f[f"condition/{k}"]) for k in _scalar_conditions(geometry)},
        )
        for label, source, f, mask, n in zip(
            config.labels, sources, all_features, masks, counts, strict=True
        )
    )
    ref_f, gen_f = (
        f if m.all() else {k: v[m] for k, v in f.items()}
        for f, m in zip(all_features, masks, strict=True)
    )
    del all_features
    warnings = _input_warnings(infos, ref_f, gen_f, overlap, geometry, config)
    ref_s, gen_s = scalar_features(ref_f, geometry), scalar_features(gen_f, geometry)
    edges = _condition_edges(overlap, config)

    # Response and resolution over all showers ("all": one bin, the condition a dummy 0) and
    # in bins of each condition.
    common: dict[str, Any] = {
        "tolerances": config.tolerances,
        "min_showers": config.min_showers,
        "significance": config.significance,
        "seed": config.seed,
    }
    response = {
        "all": response_bins(
            "all",
            ref_s["response"],
            gen_s["response"],
            np.zeros(len(ref_s["response"])),
            np.zeros(len(gen_s["response"])),
            np.array([[-1.0, 1.0]]),
            **common,
        )
    }
    for name, e in edges.items():
        response[name] = response_bins(
            name,
            ref_s["response"],
            gen_s["response"],
            ref_f[f"condition/{name}"],
            gen_f[f"condition/{name}"],
            e,
            **common,
        )
    lap("response")
    table = _scalar_table(ref_s, gen_s, ref_f, gen_f, edges, config)
    correlation = _correlation_doc(ref_s, gen_s, config.seed)
    lap("scalar_features")
    rng = np.random.default_rng(config.seed)
    vector = _vector_metrics(ref_f, gen_f, geometry, config, rng, lap)
    cell = _cell_level(reference, generated, masks, geometry, config, rng)
    lap("cell_level")
    warnings += cell.warnings
    headline = _headline(config, response, vector, cell)

    worst = max((h.verdict for h in headline), key=lambda v: _SEVERITY[v])
    overall: Verdict = worst
    if worst not in ("fail", "unclear"):
        overall = "pass" if any(h.verdict == "pass" for h in headline) else "n/a"
    doc = {
        "caloforge_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "verdict": overall,
        "headline": {h.key: h.to_json() for h in headline},
        "reference": infos[0].to_json(),
        "generated": infos[1].to_json(),
        "geometry": geometry.name,
        "overlap": {k: list(v) for k, v in overlap.items()},
        "bins": {k: list(v) for k, v in edges.items()},
        "settings": _settings_json(config),
        "warnings": warnings,
        "response": {k: [b.to_json() for b in v] for k, v in response.items()},
        "features": table,
        "correlation_difference": correlation,
        "feature_vector": vector.doc,
        "cell_level": cell.doc,
        "timings_s": timings,
    }
    comparison = None
    if config.plots:
        from caloforge.validation.plots import Comparison

        comparison = Comparison(
            geometry=geometry,
            reference=ref_f,
            generated=gen_f,
            labels=config.labels,
            scalars=(ref_s, gen_s),
            separation={
                k: tuple(v["separation_power"]) for k, v in table.items() if "separation_power" in v
            },
            response=response,
            tolerances=config.tolerances,
            mean_images=cell.mean_images,
            single_showers=cell.single_showers,
            single_conditions=cell.single_conditions,
            subsample=cell.n,
            ssim=cell.ssim,
            min_showers=config.min_showers,
        )
    return ValidationResult(
        config=config,
        geometry=geometry,
        sets=(infos[0], infos[1]),
        headline=headline,
        verdict=overall,
        metrics=_jsonable(doc),
        warnings=warnings,
        comparison=comparison,
    )


def _input_warnings(
    infos: Sequence[SetInfo],
    ref_f: Mapping[str, np.ndarray],
    gen_f: Mapping[str, np.ndarray],
    overlap: Mapping[str, tuple[float, float]],
    geometry: Geometry,
    config: ValidationConfig,
) -> list[str]:
    """What a reader must know about the inputs: showers left out, different mixtures of
    conditions (which bias every overall metric)."""
    warnings = []
    for info in infos:
        left_out = info.n_read - info.n_used
        if left_out > 0.01 * info.n_read:
            ranges = ", ".join(
                f"{k} {lo:.4g}:{hi:.4g} {geometry.condition(k).unit}"
                for k, (lo, hi) in overlap.items()
            )
            warnings.append(
                f"{info.label}: {left_out} of {info.n_read} showers lie outside the overlap of "
                f"the two sets' conditions ({ranges}) and are left out"
            )
    if config.max_showers is not None and any(i.n_showers > config.max_showers for i in infos):
        warnings.append(f"only the first {config.max_showers} showers of each set are used")
    for name in _scalar_conditions(geometry):
        value, _ = metrics.separation_power(
            ref_f[f"condition/{name}"], gen_f[f"condition/{name}"], n_bootstrap=2
        )
        # Two samples of one distribution: about 49 (1/n1 + 1/n2) / 4 for 50 bins.
        floor = 49 * (1 / len(ref_f[f"condition/{name}"]) + 1 / len(gen_f[f"condition/{name}"]))
        if value > max(0.05, 2 * floor / 4):
            warnings.append(
                f"the {name} distributions of the two sets differ (separation power "
                f"{value:.2f}): overall metrics mix different populations; read the binned ones"
            )
    return warnings


def _condition_edges(
    overlap: Mapping[str, tuple[float, float]], config: ValidationConfig
) -> dict[str, np.ndarray]:
    """Bin edges per condition, in the geometry's units (theta in rad)."""
    edges = {"energy": bin_edges(config.energy_bins, *overlap["energy"], log_if_wide=True)}
    if "theta" in overlap:
        spec = config.theta_bins
        if not isinstance(spec, int):
            spec = tuple(math.radians(t) for t in spec)
        edges["theta"] = bin_edges(spec, *overlap["theta"], log_if_wide=False)
    return edges


def _scalar_table(
    ref_s: Mapping[str, np.ndarray],
    gen_s: Mapping[str, np.ndarray],
    ref_f: Mapping[str, np.ndarray],
    gen_f: Mapping[str, np.ndarray],
    edges: Mapping[str, np.ndarray],
    config: ValidationConfig,
) -> dict[str, dict[str, Any]]:
    """Separation power, W1 and KS of each scalar feature overall, and its separation power
    in the bins of each condition (fewer bootstraps: 20)."""
    seed = config.seed
    table: dict[str, dict[str, Any]] = {}
    for feature in SCALAR_FEATURES:
        if feature.key not in ref_s:
            continue
        entry: dict[str, Any] = {"label": feature.label, "unit": feature.unit}
        table[feature.key] = entry
        rm, gm = np.isfinite(ref_s[feature.key]), np.isfinite(gen_s[feature.key])
        r, g = ref_s[feature.key][rm], gen_s[feature.key][gm]
        if min(len(r), len(g)) < 2:
            entry["reason"] = "fewer than two finite values in a set"
            continue
        entry["separation_power"] = metrics.separation_power(r, g, seed=seed)
        entry["wasserstein"] = metrics.wasserstein(r, g, seed=seed, n_bootstrap=20)
        entry["ks"] = metrics.ks_test(r, g)
        entry["binned"] = {
            name: [
                {
                    "low": b.low,
                    "high": b.high,
                    "n_reference": b.n_reference,
                    "n_generated": b.n_generated,
                    "value": b.value,
                    "error": b.error,
                    "reason": b.reason,
                }
                for b in metrics.binned(
                    metrics.separation_power,
                    r,
                    g,
                    ref_f[f"condition/{name}"][rm],
                    gen_f[f"condition/{name}"][gm],
                    e,
                    min_showers=config.min_showers,
                    n_bootstrap=20,
                    seed=seed,
                )
            ]
            for name, e in edges.items()
        }
    return table


def _correlation_doc(
    ref_s: Mapping[str, np.ndarray], gen_s: Mapping[str, np.ndarray], seed: int
) -> dict[str, Any] | None:
    """Reference minus generated correlation matrix of the scalar features (the 3DGAN's
    "Geant4 minus GAN"), over the features finite for every shower."""
    keys = [k for k in ref_s if np.isfinite(ref_s[k]).all() and np.isfinite(gen_s[k]).all()]
    if len(keys) < 2 or min(len(ref_s[keys[0]]), len(gen_s[keys[0]])) < 3:
        return None
    diff, error = metrics.correlation_difference(
        np.stack([ref_s[k] for k in keys], axis=1),
        np.stack([gen_s[k] for k in keys], axis=1),
        seed=seed,
        n_bootstrap=20,
    )
    return {"features": keys, "value": diff, "error": error, "max_abs": float(np.abs(diff).max())}


@dataclass
class VectorMetrics:
    """FPD, KPD and the high-level classifier on the feature vectors; a metric that could
    not be computed has value None and a reason."""

    n_features: int
    fpd: tuple[float | None, float | None, str]
    kpd: tuple[float | None, float | None, str]
    classifier: Any  # classifier.ClassifierResult | None
    classifier_reason: str
    classifier_showers: int
    doc: dict[str, Any]


def _vector_metrics(
    ref_f: Mapping[str, np.ndarray],
    gen_f: Mapping[str, np.ndarray],
    geometry: Geometry,
    config: ValidationConfig,
    rng: np.random.Generator,
    lap: Callable[[str], None] = lambda stage: None,
) -> VectorMetrics:
    """FPD, KPD and the high-level classifier; `lap(stage)` is called after each."""
    seed = config.seed
    ref_fv, gen_fv = ref_f["feature_vector"], gen_f["feature_vector"]
    names = (
        voxel_feature_names(geometry) if geometry.readout == "voxels" else feature_names(geometry)
    )
    fpd = _attempt(lambda: metrics.fpd(ref_fv, gen_fv, seed=seed))
    lap("fpd")
    kpd = _attempt(lambda: metrics.kpd(ref_fv, gen_fv, seed=seed))
    lap("kpd")
    n = min(config.classifier_showers, len(ref_fv), len(gen_fv))
    result, reason = None, ""
    if n < 100:
        reason = f"{n} showers per set; the classifier needs at least 100"
    else:
        from caloforge.validation.classifier import high_level_classifier_test

        ir = np.sort(rng.choice(len(ref_fv), n, replace=False))
        ig = np.sort(rng.choice(len(gen_fv), n, replace=False))
        try:
            result = high_level_classifier_test(
                ref_fv[ir],
                gen_fv[ig],
                ref_f["condition/energy"][ir],
                gen_f["condition/energy"][ig],
                seed=seed,
            )
        except ValueError as exc:
            reason = str(exc)
    lap("classifier_high_level")
    doc = {
        "names": names,
        "fpd": dict(zip(("value", "error", "reason"), fpd, strict=True)),
        "kpd": dict(zip(("value", "error", "reason"), kpd, strict=True)),
        "classifier_high_level": dataclasses.asdict(result) if result else {"reason": reason},
    }
    return VectorMetrics(len(names), fpd, kpd, result, reason, n, doc)


# --- cell-level metrics on a subsample --------------------------------------------------------
@dataclass
class CellLevel:
    """The cell-level metrics of `n` showers per set (a seeded subsample inside the overlap
    of the conditions), and what the plots need of those showers: the mean image of each
    set and one shower of each with similar conditions."""

    n: int
    doc: dict[str, Any]
    classifier: Any = None  # classifier.ClassifierResult
    classifier_reason: str = ""
    projection_mse: tuple[float | None, float | None, str] = (None, None, "")
    ssim: metrics.SSIMScan | None = None
    mean_images: tuple[np.ndarray, np.ndarray] | None = None
    single_showers: tuple[np.ndarray, np.ndarray] | None = None
    single_conditions: tuple[dict[str, float], dict[str, float]] | None = None
    warnings: list[str] = field(default_factory=list)


def projection_mse_floor(reference: np.ndarray, generated: np.ndarray) -> float:
    """The projection MSE (`metrics.projection_mse`) expected between two independent samples
    of one distribution of these sizes: the mean projections fluctuate cell by cell by
    var / n, so E[MSE] = true MSE + mean over cells of (var_r / n_r + var_g / n_g) / peak^2
    (averaged over the projections). Subtracting it makes the metric comparable between
    subsample sizes; without it 300 lhcb-30 showers of one simulation give about 5e-4."""
    total = 0.0
    axes = (None,) if reference.ndim == 3 else (1, 2, 3)
    for axis in axes:
        parts = []
        for images in (reference, generated):
            p = (
                images.astype(np.float64)
                if axis is None
                else images.sum(axis=axis, dtype=np.float64)
            )
            parts.append((p.mean(axis=0), p.var(axis=0, ddof=1) / len(p)))
        peak = parts[0][0].max()
        scale = peak if peak > 0 else 1.0
        total += float(np.mean((parts[0][1] + parts[1][1]) / scale**2))
    return total / len(axes)


def _conditions_of(batch: Batch, i: int, names: Sequence[str]) -> dict[str, float]:
    return {name: float(batch.conditions[name][i]) for name in names}


def _matching_pair(ref: Batch, gen: Batch, names: Sequence[str]) -> tuple[int, int]:
    """A reference shower near the median energy and the generated shower closest to it in
    the scalar conditions (each scaled by the reference's spread)."""
    e = ref.conditions["energy"]
    i = int(np.argmin(np.abs(e - np.median(e))))
    distance = np.zeros(len(gen))
    for name in names:
        spread = float(np.std(ref.conditions[name])) or 1.0
        distance += ((gen.conditions[name] - ref.conditions[name][i]) / spread) ** 2
    return i, int(np.argmin(distance))


def _cell_level(
    reference: ShowerSource,
    generated: ShowerSource,
    masks: Sequence[np.ndarray],
    geometry: Geometry,
    config: ValidationConfig,
    rng: np.random.Generator,
) -> CellLevel:
    n = int(min(config.subsample, masks[0].sum(), masks[1].sum()))
    if config.subsample == 0:
        reason = "switched off (subsample 0)"
        return CellLevel(
            0,
            {"subsample": 0, "reason": reason},
            classifier_reason=reason,
            projection_mse=(None, None, reason),
        )
    if n < 2:
        reason = f"{n} shower(s) per set in the overlap of the conditions"
        return CellLevel(
            n,
            {"subsample": n, "reason": reason},
            classifier_reason=reason,
            projection_mse=(None, None, reason),
        )
    seed = config.seed
    ref = reference.take(_draw_subsample(masks[0], n, rng))
    gen = generated.take(_draw_subsample(masks[1], n, rng))
    names = _scalar_conditions(geometry)
    cell = CellLevel(n, {"subsample": n})
    if geometry.readout != "voxels":
        raw, error, reason = _attempt(
            lambda: metrics.projection_mse(ref.showers, gen.showers, seed=seed)
        )
        if raw is not None:
            floor = projection_mse_floor(ref.showers, gen.showers)
            cell.projection_mse = (raw - floor, error, reason)
            cell.doc["projection_mse_raw"] = raw
            cell.doc["projection_mse_floor"] = floor
            depth = ref.showers.ndim == 4
            cell.doc["projections"] = "xy, xz, yz projections" if depth else "image"
        else:
            cell.projection_mse = (raw, error, reason)
        n_pairs = min(config.ssim_pairs, n // 2)
        if n_pairs >= 10:
            cell.ssim = metrics.ssim_scan(ref.showers, gen.showers, n_pairs=n_pairs, seed=seed)
            cell.doc["ssim_scan"] = dataclasses.asdict(cell.ssim) | {"n_pairs": n_pairs}
            cell.warnings += _diversity_warning(cell.ssim, config.labels)
        else:
            cell.doc["ssim_scan"] = {"reason": f"{n} showers per set; SSIM needs at least 20"}
        cell.mean_images = (
            ref.showers.mean(axis=0, dtype=np.float64),
            gen.showers.mean(axis=0, dtype=np.float64),
        )
        i, j = _matching_pair(ref, gen, names)
        cell.single_showers = (ref.showers[i].copy(), gen.showers[j].copy())
        cell.single_conditions = (_conditions_of(ref, i, names), _conditions_of(gen, j, names))
    else:
        reason = "needs a cell grid; voxel geometries have none"
        cell.projection_mse = (None, None, reason)
        cell.doc["ssim_scan"] = {"reason": reason}
    value, error, reason = cell.projection_mse
    cell.doc["projection_mse"] = {"value": value, "error": error, "reason": reason}

    # The low-level classifier last: its inputs replace the showers, one set at a time.
    if n < 100:
        cell.classifier_reason = f"{n} showers per set; the classifier needs at least 100"
    else:
        from caloforge.validation.classifier import classifier_test

        x_ref = _low_level_inputs(ref.showers, ref.conditions["energy"])
        del ref
        x_gen = _low_level_inputs(gen.showers, gen.conditions["energy"])
        del gen
        try:
            cell.classifier = classifier_test(x_ref, x_gen, standardise="cells", seed=seed)
        except ValueError as exc:
            cell.classifier_reason = str(exc)
    cell.doc["classifier_low_level"] = (
        dataclasses.asdict(cell.classifier)
        if cell.classifier
        else {"reason": cell.classifier_reason}
    )
    return cell


def _diversity_warning(scan: metrics.SSIMScan, labels: Sequence[str]) -> list[str]:
    """A warning when the generated showers are more alike than the reference's (SSIM at
    L = 1e-4 GeV, the Conv2D paper's stable region): a sign of too little diversity."""
    i = int(np.argmin(np.abs(np.log10(scan.data_ranges) + 4.0)))
    excess = scan.gen_gen[i] - scan.ref_ref[i]
    error = math.hypot(scan.gen_gen_error[i], scan.ref_ref_error[i])
    if excess > 3 * error and excess > 0.02:
        return [
            f"{labels[1]} showers are more alike than the {labels[0]} ones (SSIM at "
            f"L = {scan.data_ranges[i]:.0e} GeV: {scan.gen_gen[i]:.3f} within {labels[1]}, "
            f"{scan.ref_ref[i]:.3f} within {labels[0]}): too little diversity?"
        ]
    return []


# --- headline ---------------------------------------------------------------------------------
def _response_headline(
    which: Literal["response", "resolution"],
    response: Mapping[str, Sequence[ResponseBin]],
    tolerance: float | None,
    significance: float,
) -> Headline:
    binned_ = [b for name, bins in response.items() if name != "all" for b in bins]
    worst = _worst_bin(binned_, which)
    quantity = "mu90" if which == "response" else "sigma90/mu90"
    title = "Response deviation" if which == "response" else "Resolution deviation"
    few = sum(not b.ok for b in binned_)
    if worst is None:
        worst = _worst_bin(response["all"], which)
        where = "all showers (no bin holds enough)"
    else:
        label = _bin_label(worst.condition, worst.low, worst.high)
        where = f"worst of {len(binned_) - few} bins: {label}"
    if worst is None:
        reason = response["all"][0].reason
        return Headline(
            f"{which}_deviation",
            title,
            None,
            None,
            tolerance,
            "n/a",
            f"{quantity} of E_vis/E_p: {reason}",
            scale=100.0,
        )
    value = getattr(worst, f"{which}_deviation")
    error = getattr(worst, f"{which}_deviation_error")
    detail = f"{quantity} of E_vis/E_p, generated / reference - 1; {where}"
    if few:
        detail += f"; {few} bin(s) with too few showers"
    return Headline(
        f"{which}_deviation",
        title,
        value,
        error,
        tolerance,
        verdict(value, error, tolerance, absolute=True, significance=significance),
        detail,
        scale=100.0,
    )


def _headline(
    config: ValidationConfig,
    response: Mapping[str, Sequence[ResponseBin]],
    vector: VectorMetrics,
    cell: CellLevel,
) -> list[Headline]:
    tol, sig = config.tolerances, config.significance

    def row(
        key: str,
        title: str,
        value: float | None,
        error: float | None,
        detail: str,
        scale: float = 1.0,
    ) -> Headline:
        tolerance = getattr(tol, key)
        return Headline(
            key,
            title,
            value,
            error,
            tolerance,
            verdict(value, error, tolerance, significance=sig),
            detail,
            scale,
        )

    low, high = cell.classifier, vector.classifier
    rows = [
        row(
            "classifier_auc_low_level",
            "Classifier AUC, cells",
            low.auc if low else None,
            low.auc_error if low else None,
            f"[log10 E_p, cells / E_p] of {cell.n} showers per set (the subsample), tested on "
            f"{low.n_test} per set; 0.5 = indistinguishable"
            if low
            else cell.classifier_reason,
        ),
        row(
            "classifier_auc_high_level",
            "Classifier AUC, features",
            high.auc if high else None,
            high.auc_error if high else None,
            f"[log10 E_p, {vector.n_features} features] of {vector.classifier_showers} showers "
            f"per set, tested on {high.n_test} per set"
            if high
            else vector.classifier_reason,
        ),
    ]
    for key, title, (value, error, reason), what in (
        ("fpd", "FPD (x1e3)", vector.fpd, "Frechet distance"),
        ("kpd", "KPD (x1e3)", vector.kpd, "kernel distance (MMD, cubic kernel)"),
    ):
        detail = (
            f"{what} of the {vector.n_features}-feature vectors (Kansal et al. 2023)"
            if value is not None
            else reason
        )
        rows.append(row(key, title, value, error, detail, scale=1e3))
    value, error, reason = cell.projection_mse
    detail = reason
    if value is not None:
        raw, floor = cell.doc["projection_mse_raw"], cell.doc["projection_mse_floor"]
        detail = (
            f"mean {cell.doc['projections']} of {cell.n} showers per set, in units of the "
            f"reference's peak, squared: {raw:.3g}, less {floor:.3g} expected from the "
            "showers' fluctuations alone"
        )
    rows.append(row("projection_mse", "Projection MSE", value, error, detail))
    rows.append(_response_headline("response", response, tol.response_deviation, sig))
    rows.append(_response_headline("resolution", response, tol.resolution_deviation, sig))
    return rows


# --- JSON -------------------------------------------------------------------------------------
def _json_number(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    """`obj` with numpy values made plain and NaN/inf made null, for strict JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _json_number(obj)
    return obj


def _settings_json(config: ValidationConfig) -> dict[str, Any]:
    d = _jsonable(config)
    d["theta_bins_unit"] = "deg"
    return d


# --- writing the report folder -----------------------------------------------------------------
def _check_out(out: Path) -> None:
    """Refuse an --out that is a file, or a folder holding something other than a report."""
    if out.exists() and not out.is_dir():
        raise CaloforgeError(f"{out}: exists and is not a folder; choose another --out")
    report = (out / "index.html").exists() and (out / "metrics.json").exists()
    if out.is_dir() and any(out.iterdir()) and not report:
        raise CaloforgeError(
            f"{out}: the folder exists and does not hold a caloforge report "
            "(index.html and metrics.json); refusing to replace it"
        )


def _replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder `new` in place of `out` (a former report is replaced)."""
    if not out.exists():
        os.replace(new, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def render_plots(result: ValidationResult, folder: Path | None) -> list[tuple[Any, bytes | str]]:
    """Draw every plot of `plots.PLOTS`: (spec, PNG bytes) for each drawn, (spec, reason) for
    each that does not apply; the PNGs are also written to `folder` when given."""
    from caloforge.validation.plots import PLOTS, NotApplicableError, png_bytes

    assert result.comparison is not None
    out: list[tuple[Any, bytes | str]] = []
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for spec in PLOTS:
        try:
            figure: Figure = spec.draw(result.comparison)
        except NotApplicableError as exc:
            out.append((spec, str(exc)))
            continue
        png = png_bytes(figure)
        if folder is not None:
            (folder / f"{spec.name}.png").write_bytes(png)
        out.append((spec, png))
    return out


def write_report(result: ValidationResult, out: str | os.PathLike[str]) -> Path:
    """Write index.html, metrics.json and plots/*.png into the folder `out`, atomically: all
    is written into a temporary folder beside it, renamed to `out` when complete."""
    out = Path(out)
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        plots = render_plots(result, tmp / "plots") if result.comparison is not None else []
        doc = dict(result.metrics)
        doc["plots"] = [f"plots/{spec.name}.png" for spec, png in plots if isinstance(png, bytes)]
        doc["plots_not_drawn"] = {spec.name: png for spec, png in plots if isinstance(png, str)}
        (tmp / "metrics.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        (tmp / "index.html").write_text(render_html(result, plots))
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def validate(
    reference: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    generated: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: ValidationConfig | None = None,
    *,
    format: str | None = None,
    progress: bool = False,
    **options: Any,
) -> ValidationResult:
    """Compare the generated showers with the reference ones and write the report folder
    `out` (index.html, metrics.json, plots/*.png); returns what was found.

    Each side is a file, several files or a glob, in any format the data layer reads
    (`format` and `options`, such as a CaloChallenge `binning`, apply to both). Problems
    with the input raise `CaloforgeError` before anything is written."""
    config = config or ValidationConfig()
    out = Path(out)
    _check_out(out)
    specs = (_spec(reference, format, options), _spec(generated, format, options))
    ref = specs[0].open()
    try:
        gen = specs[1].open()
        try:
            result = compare(ref, gen, config, specs=specs, progress=progress)
        finally:
            gen.close()
    finally:
        ref.close()
    write_report(result, out)
    return result


# --- the HTML page ------------------------------------------------------------------------------
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2330; background: #f6f7f9; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #d5d9e0; }
h3 { font-size: 15px; margin: 22px 0 6px; }
p, li { line-height: 1.45; }
.sub { color: #5a6273; margin: 0 0 14px; font-size: 14px; }
.banner { display: flex; align-items: center; gap: 18px; padding: 14px 20px; border-radius: 8px;
          margin: 14px 0 8px; font-size: 17px; color: #fff; }
.banner b { font-size: 22px; letter-spacing: 0.05em; }
.banner.pass { background: #1e8e3e; } .banner.fail { background: #c5221f; }
.banner.unclear { background: #b06000; } .banner.na, .banner.info { background: #6b7280; }
.table-box { max-width: 100%; overflow-x: auto; margin: 6px 0 10px; padding-bottom: 2px; }
table { border-collapse: separate; border-spacing: 0; background: #fff; font-size: 13.5px;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.table-box td:first-child, .table-box th:first-child { position: sticky; left: 0; z-index: 1;
        background: #fff; box-shadow: 1px 0 0 #e4e7ec; }
.table-box th:first-child { background: #eef0f4; }
table.binned th { min-width: 5.5em; }
th, td { padding: 6px 10px; border-bottom: 1px solid #e4e7ec; text-align: left;
         vertical-align: top; }
th { background: #eef0f4; font-weight: 600; }
td:first-child { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.headline td, table.headline th { font-size: 14.5px; padding: 8px 12px; }
.badge { display: inline-block; min-width: 58px; text-align: center; padding: 2px 8px;
         border-radius: 10px; font-weight: 700; font-size: 12px; color: #fff; }
.badge.pass { background: #1e8e3e; } .badge.fail { background: #c5221f; }
.badge.unclear { background: #b06000; } .badge.na { background: #9aa0aa; }
.badge.info { background: #5f6f8f; }
.muted { color: #6b7280; } .small { font-size: 12.5px; }
.warn { background: #fff4e5; border-left: 4px solid #b06000; padding: 8px 14px; margin: 10px 0; }
.warn li { margin: 3px 0; }
figure { background: #fff; margin: 16px 0; padding: 12px 14px;
         box-shadow: 0 1px 2px rgba(0,0,0,.08); }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: 13px; color: #3c4454; margin-top: 6px; }
figcaption b { color: #1d2330; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 0 24px; }
code { background: #eef0f4; padding: 1px 4px; border-radius: 3px; font-size: 12.5px; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _badge(v: str) -> str:
    css = {"n/a": "na"}.get(v, v)
    return f'<span class="badge {css}">{_e(v.upper())}</span>'


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "&ndash;"
    return f"{x:.{digits}g}"


def _pm(value: Any, error: Any, scale: float = 1.0, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "&ndash;"
    text = f"{value * scale:.{digits}g}"
    if error is not None and math.isfinite(error):
        text += f" &plusmn; {error * scale:.2g}"
    return text


def _signed_percent(value: float | None, error: float | None) -> str:
    """`+1.23 ± 0.45 %`; the error is left out where there is none (JSON null: NaN)."""
    if value is None or not math.isfinite(value):
        return "&ndash;"
    if error is None or not math.isfinite(error):
        return f"{100 * value:+.2f} %"
    return f"{100 * value:+.2f} &plusmn; {100 * error:.2f} %"


def _format_value(h: Headline) -> str:
    if h.value is None:
        return "n/a"
    unit = " %" if h.scale == 100.0 else ""
    sign = "+" if h.scale == 100.0 and h.value > 0 else ""
    text = f"{sign}{h.value * h.scale:.3g}"
    if h.error is not None and math.isfinite(h.error):
        text += f" ± {h.error * h.scale:.2g}"
    return text + unit


def _tolerance_text(h: Headline) -> str:
    if h.tolerance is None:
        return "none"
    if h.scale == 100.0:
        return f"|dev| &le; {100 * h.tolerance:.3g} %"
    return f"&le; {h.tolerance * h.scale:.3g}"


_HEADLINE_TITLES = {
    "fpd": "FPD &times;10<sup>3</sup>",
    "kpd": "KPD &times;10<sup>3</sup>",
}


def _table(rows: str, css_class: str = "") -> str:
    """A table in its own horizontally scrolling box: a table wider than the page (many bins,
    long labels) scrolls there, with its first column kept in view, instead of running off
    the page."""
    attribute = f" class='{css_class}'" if css_class else ""
    return f"<div class='table-box'><table{attribute}>{rows}</table></div>"


def _headline_html(result: ValidationResult) -> str:
    rows = []
    for h in result.headline:
        title = _HEADLINE_TITLES.get(h.key, _e(h.title))
        value = _e(_format_value(h)) if h.value is not None else "&ndash;"
        rows.append(
            f"<tr><td><b>{title}</b></td><td class='num'>{value}</td>"
            f"<td class='num'>{_tolerance_text(h)}</td><td>{_badge(h.verdict)}</td>"
            f"<td class='small'>{_e(h.detail)}</td></tr>"
        )
    return (
        _table(
            "<tr><th>Metric</th><th>Value</th><th>Tolerance</th><th>Verdict</th>"
            "<th>What and on how many showers</th></tr>" + "".join(rows),
            "headline",
        )
        + f"<p class='small muted'>PASS: within the tolerance. FAIL: beyond it by more than "
        f"{result.config.significance:g} standard errors. UNCLEAR: beyond it, but within "
        f"{result.config.significance:g} errors (more showers would tell). N/A: not "
        "computable here, the reason is given. Tolerances are set with <code>--tolerance "
        "NAME=VALUE</code> or a <code>--config</code> YAML file.</p>"
    )


def _sets_html(result: ValidationResult) -> str:
    geometry = result.geometry
    rows = []
    for s in result.sets:
        ranges = "<br>".join(
            f"{name} {_range_text(name, lo, hi, geometry)}" for name, (lo, hi) in s.ranges.items()
        )
        rows.append(
            f"<tr><td><b>{_e(s.label)}</b></td><td class='small'>{_e(s.path)}</td>"
            f"<td>{_e(s.format)}</td><td class='num'>{s.n_showers}</td>"
            f"<td class='num'>{s.n_used}</td><td class='small'>{ranges}</td></tr>"
        )
    overlap = result.metrics.get("overlap", {})
    cell = result.metrics.get("cell_level", {})
    lines = [
        f"Geometry <b>{_e(geometry.name)}</b>: {_e(geometry.description)}",
        "Compared: showers inside the overlap of the conditions, "
        + ", ".join(f"{k} {_range_text(k, lo, hi, geometry)}" for k, (lo, hi) in overlap.items()),
        f"Cell-level metrics (cells classifier, projection MSE, SSIM, 2D projections) on a "
        f"seeded subsample of <b>{cell.get('subsample', 0)} showers per set</b>; the rest "
        "on all compared showers.",
    ]
    return (
        _table(
            "<tr><th>Set</th><th>Files</th><th>Format</th><th>Showers</th>"
            "<th>Compared</th><th>Condition ranges</th></tr>" + "".join(rows)
        )
        + "<ul class='small'>"
        + "".join(f"<li>{line}</li>" for line in lines)
        + "</ul>"
    )


def _range_text(name: str, low: float, high: float, geometry: Geometry) -> str:
    if name == "theta":
        return f"{math.degrees(low):.4g}&ndash;{math.degrees(high):.4g} deg"
    return f"{low:.4g}&ndash;{high:.4g} {_e(geometry.condition(name).unit)}"


def _response_html(result: ValidationResult) -> str:
    out = []
    response = result.metrics["response"]
    labels = result.config.labels
    for name, bins in response.items():
        rows = []
        for b in bins:
            label = _e(_bin_label(name, b["low"], b["high"]))
            counts = (
                f"<td class='num'>{b['n_reference']}</td><td class='num'>{b['n_generated']}</td>"
            )
            if not b["ok"]:
                rows.append(
                    f"<tr><td>{label}</td>{counts}<td colspan='8' class='muted'>"
                    f"{_e(b['reason'])}</td></tr>"
                )
                continue
            cells = []
            for key, dev, ver in (
                ("mu90", "response_deviation", "response_verdict"),
                ("resolution", "resolution_deviation", "resolution_verdict"),
            ):
                for k in (0, 1):
                    cells.append(
                        f"<td class='num'>{_pm(b[key][k], b[key + '_error'][k], digits=4)}</td>"
                    )
                cells.append(
                    f"<td class='num'>{_signed_percent(b[dev], b[dev + '_error'])}</td>"
                    f"<td>{_badge(b[ver])}</td>"
                )
            rows.append(f"<tr><td>{label}</td>{counts}{''.join(cells)}</tr>")
        title = {
            "all": "All compared showers",
            "energy": "In bins of the primary energy",
            "theta": "In bins of the polar angle",
        }[name]
        out.append(
            f"<h3>{title}</h3>"
            + _table(
                f"<tr><th>Bin</th><th>n {_e(labels[0])}</th>"
                f"<th>n {_e(labels[1])}</th><th>&mu;90 {_e(labels[0])}</th>"
                f"<th>&mu;90 {_e(labels[1])}</th><th>Response deviation</th><th></th>"
                f"<th>&sigma;90/&mu;90 {_e(labels[0])}</th>"
                f"<th>&sigma;90/&mu;90 {_e(labels[1])}</th>"
                "<th>Resolution deviation</th><th></th></tr>" + "".join(rows)
            )
        )
    return "".join(out)


def _features_html(result: ValidationResult) -> str:
    table = result.metrics["features"]
    rows = []
    for f in table.values():
        unit = f" [{_e(f['unit'])}]" if f.get("unit") else ""
        if "separation_power" not in f:
            rows.append(
                f"<tr><td>{_e(f['label'])}{unit}</td><td colspan='4' class='muted'>"
                f"{_e(f.get('reason', ''))}</td></tr>"
            )
            continue
        sp, w1, ks = f["separation_power"], f["wasserstein"], f["ks"]
        rows.append(
            f"<tr><td>{_e(f['label'])}{unit}</td><td class='num'>{_pm(sp[0], sp[1])}</td>"
            f"<td class='num'>{_pm(w1[0], w1[1])}</td><td class='num'>{_num(ks[0])}</td>"
            f"<td class='num'>{_num(ks[1], 2)}</td></tr>"
        )
    overall = (
        _table(
            "<tr><th>Feature</th><th>Separation power</th><th>W1 (feature unit)</th>"
            "<th>KS statistic</th><th>KS p-value</th></tr>" + "".join(rows)
        )
        + "<p class='small muted'>Separation power: 0 for identical histograms, 1 for disjoint "
        "ones; two independent samples of one distribution give about (bins - 1)(1/n<sub>1</sub> "
        "+ 1/n<sub>2</sub>)/4, the floor a difference reads against.</p>"
    )
    binned_html = []
    for name in result.metrics["bins"]:
        first = next((f for f in table.values() if "binned" in f), None)
        if first is None:
            break
        bins = first["binned"][name]
        head = "".join(f"<th>{_e(_bin_label(name, b['low'], b['high']))}</th>" for b in bins)
        rows = []
        reasons: dict[str, int] = {}
        for f in table.values():
            if "binned" not in f:
                continue
            cells = []
            for b in f["binned"][name]:
                if b["reason"]:
                    mark = reasons.setdefault(b["reason"], len(reasons) + 1)
                    cells.append(f"<td class='num muted'>n/a<sup>{mark}</sup></td>")
                else:
                    cells.append(f"<td class='num'>{_pm(b['value'], b['error'], digits=2)}</td>")
            rows.append(f"<tr><td>{_e(f['label'])}</td>{''.join(cells)}</tr>")
        notes = "".join(f"<li><sup>{k}</sup> {_e(reason)}</li>" for reason, k in reasons.items())
        binned_html.append(
            f"<h3>Separation power in bins of {_e(name)}</h3>"
            + _table(f"<tr><th>Feature</th>{head}</tr>{''.join(rows)}", "binned")
            + (f"<ul class='small muted'>{notes}</ul>" if notes else "")
        )
    return overall + "".join(binned_html)


def _cell_html(result: ValidationResult) -> str:
    cell = result.metrics["cell_level"]
    items = [f"Subsample: <b>{cell.get('subsample', 0)} showers per set</b>."]
    clf = cell.get("classifier_low_level", {})
    if "auc" in clf:
        items.append(
            f"Cells classifier: AUC {_pm(clf['auc'], clf['auc_error'])}, JSD "
            f"{_pm(clf['jsd'], clf['jsd_error'])}; trained on {clf['n_train']}, validated on "
            f"{clf['n_validation']}, tested on {clf['n_test']} showers per set; best epoch "
            f"{clf['epochs']}."
        )
    elif clf:
        items.append(f"Cells classifier: not run ({_e(clf.get('reason', ''))}).")
    hl = result.metrics["feature_vector"]["classifier_high_level"]
    if "auc" in hl:
        items.append(
            f"Features classifier: AUC {_pm(hl['auc'], hl['auc_error'])}, JSD "
            f"{_pm(hl['jsd'], hl['jsd_error'])}; trained on {hl['n_train']}, tested on "
            f"{hl['n_test']} showers per set."
        )
    scan = cell.get("ssim_scan", {})
    labels = result.config.labels
    if "data_ranges" in scan:
        i = int(np.argmin(np.abs(np.log10(np.asarray(scan["data_ranges"])) + 4.0)))
        items.append(
            f"SSIM at L = {scan['data_ranges'][i]:.0e} GeV over {scan['n_pairs']} random pairs: "
            f"within {_e(labels[0])} {_pm(scan['ref_ref'][i], scan['ref_ref_error'][i])}, "
            f"between the sets {_pm(scan['ref_gen'][i], scan['ref_gen_error'][i])}, within "
            f"{_e(labels[1])} {_pm(scan['gen_gen'][i], scan['gen_gen_error'][i])}."
        )
    elif scan:
        items.append(f"SSIM: not computed ({_e(scan.get('reason', ''))}).")
    corr = result.metrics.get("correlation_difference")
    if corr:
        items.append(
            f"Largest difference between the correlation matrices of the scalar features: "
            f"{corr['max_abs']:.3f}."
        )
    note = ""
    if "auc" in clf or "auc" in hl:
        note = (
            "<p class='small muted'>AUC: 0.5 when the classifier cannot tell the sets apart, "
            "1 when it separates them fully. JSD: the Jensen-Shannon divergence in bits from "
            "the classifier's output calibrated on the validation showers (as the "
            "CaloChallenge): 0 for indistinguishable sets, 1 for disjoint ones.</p>"
        )
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>" + note


def _plots_html(plots: Sequence[tuple[Any, bytes | str]]) -> str:
    out, skipped = [], []
    for spec, png in plots:
        if isinstance(png, str):
            skipped.append(f"<li><b>{_e(spec.title)}</b>: {_e(png)}</li>")
            continue
        data = base64.b64encode(png).decode("ascii")
        out.append(
            f"<figure id='{_e(spec.name)}'><img alt='{_e(spec.title)}' "
            f"src='data:image/png;base64,{data}'><figcaption><b>{_e(spec.title)}.</b> "
            f"{_e(spec.caption)} <span class='muted'>(plots/{_e(spec.name)}.png)</span>"
            "</figcaption></figure>"
        )
    if skipped:
        out.append(
            "<p class='small'>Not drawn:</p><ul class='small muted'>" + "".join(skipped) + "</ul>"
        )
    return "".join(out)


def render_html(result: ValidationResult, plots: Sequence[tuple[Any, bytes | str]] = ()) -> str:
    """The report as one self-contained HTML page (styles inline, images embedded)."""
    ref, gen = result.sets
    created = result.metrics.get("created", "")
    verdict_text = {
        "pass": "every headline metric is within its tolerance",
        "fail": "at least one headline metric is beyond its tolerance",
        "unclear": "no metric fails, but some are beyond tolerance within their errors",
        "n/a": "no headline metric could be computed",
        "info": "no tolerances set",
    }[result.verdict]
    css_verdict = {"n/a": "na"}.get(result.verdict, result.verdict)
    warnings = (
        "<div class='warn'><b>Read with care:</b><ul>"
        + "".join(f"<li>{_e(w)}</li>" for w in result.warnings)
        + "</ul></div>"
        if result.warnings
        else ""
    )
    body = [
        f"<h1>Shower validation: {_e(gen.label)} vs {_e(ref.label)}</h1>",
        f"<p class='sub'>{_e(gen.path)} against {_e(ref.path)} &middot; geometry "
        f"{_e(result.geometry.name)} &middot; caloforge {_e(__version__)} &middot; "
        f"{_e(created)}</p>",
        f"<div class='banner {_e(css_verdict)}'><b>{_e(result.verdict.upper())}</b>"
        f"<span>{verdict_text}</span></div>",
        _headline_html(result),
        warnings,
        "<h2>Inputs</h2>",
        _sets_html(result),
        "<h2>Response and resolution</h2>",
        "<p class='small'>&mu;90 and &sigma;90/&mu;90: mean and relative width of the central "
        "90 % of E<sub>vis</sub>/E<sub>p</sub> (Conv2D GAN paper); deviation = generated / "
        "reference &minus; 1, errors from bootstraps.</p>",
        _response_html(result),
        "<h2>Shower features</h2>",
        _features_html(result),
        "<h2>Cells and classifiers</h2>",
        _cell_html(result),
    ]
    if plots:
        body += ["<h2>Plots</h2>", _plots_html(plots)]
    body.append(
        "<h2>Settings</h2><details><summary class='small'>the settings of this run "
        "(metrics.json holds them too)</summary><pre class='small'>"
        + _e(json.dumps(result.metrics.get("settings", {}), indent=1))
        + "</pre></details>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>caloforge validation: {_e(gen.label)} vs {_e(ref.label)}</title>"
        f"<style>{_CSS}</style></head><body><main>" + "\n".join(body) + "</main></body></html>\n"
    )
