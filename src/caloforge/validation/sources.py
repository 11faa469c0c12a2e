"""Opening the two shower sets, checking that they can be compared, and computing every
per-shower feature of each, streamed in chunks over worker processes.

Worker processes re-open a set from its `SourceSpec` (files, format, reader options) and
hold one batch of showers at a time, so memory stays bounded by the features (a few kB per
shower) plus one batch per worker.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from caloforge.data.io import open_showers
from caloforge.data.source import Batch, ShowerSource, iter_batches
from caloforge.errors import CaloforgeError, InputFileError
from caloforge.geometry import Geometry
from caloforge.validation.features import compute_features, voxel_features


# --- opening and checking the two sets ----------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    """How to open a shower set (files, format, reader options): worker processes re-open
    it from this."""

    paths: tuple[str, ...]
    format: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def open(self) -> ShowerSource:
        return open_showers(list(self.paths), self.format, **dict(self.options))


def source_spec(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    format: str | None,
    options: Mapping[str, Any],
) -> SourceSpec:
    """The `SourceSpec` of a file, several files or a glob, read with `format` (None:
    detected) and the reader's `options`."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    return SourceSpec(tuple(str(p) for p in items), format, tuple(sorted(options.items())))


def _geometry_difference(a: Geometry, b: Geometry) -> str:
    """'' when a and b describe the same detector (names and descriptions aside)."""
    if tuple(a.shape) != tuple(b.shape):
        return f"shower shapes {tuple(a.shape)} and {tuple(b.shape)}"
    da, db = a.to_dict(), b.to_dict()
    keys = sorted(k for k in da if k not in ("name", "description") and da[k] != db.get(k))
    return f"different {', '.join(keys)}" if keys else ""


def value_range(values: np.ndarray) -> tuple[float, float]:
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
    for name in scalar_conditions(reference.geometry):
        unit = reference.geometry.condition(name).unit
        r = value_range(reference.conditions[name])
        g = value_range(generated.conditions[name])
        low, high = max(r[0], g[0]), min(r[1], g[1])
        if low > high:
            raise CaloforgeError(
                f"the {name} ranges do not overlap: reference {reference.path} has "
                f"{r[0]:.4g}:{r[1]:.4g} {unit}, generated {generated.path} has "
                f"{g[0]:.4g}:{g[1]:.4g} {unit}; nothing can be compared"
            )
        overlap[name] = (low, high)
    return overlap


def scalar_conditions(geometry: Geometry) -> list[str]:
    """The conditions the sets are binned in: energy, and theta where the geometry has it."""
    return [name for name in ("energy", "theta") if geometry.has_condition(name)]


# --- features, streamed in chunks over processes ----------------------------------------------
# Below this many cells in both sets together, features are computed in this process: starting
# worker processes costs more than it saves.
PARALLEL_MIN_CELLS = 5e8


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


def in_overlap(
    features: Mapping[str, np.ndarray], overlap: Mapping[str, tuple[float, float]]
) -> np.ndarray:
    """Which showers of a feature table lie inside the overlap of the conditions, (n,) bool."""
    mask = np.ones(len(features["total_energy"]), dtype=bool)
    for name, (low, high) in overlap.items():
        values = features[f"condition/{name}"]
        mask &= (values >= low) & (values <= high)
    return mask
