"""Opening the two shower sets, checking that they can be compared, and computing every
per-shower feature of each, streamed in chunks over worker processes.

Worker processes re-open a set from its `SourceSpec` (files, format, reader options) and
hold one batch of showers at a time; the one pass over each set also copies out the
cell-level subsample, so memory stays bounded by the kept features (about 1 kB per shower),
the subsample and one batch per worker, whatever the size of the sets.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from caloforge._processes import signals_held, workers_within_descriptors
from caloforge.data.io import open_showers
from caloforge.data.source import Batch, ShowerSource, iter_batches
from caloforge.errors import CaloforgeError, InputFileError
from caloforge.geometry import Geometry
from caloforge.validation.features import Moments, shower_features, voxel_features


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


def source_specs(
    sets: Sequence[str | os.PathLike[str] | Sequence[str | os.PathLike[str]]],
    format: str | None,
    options: Mapping[str, Any],
) -> list[SourceSpec]:
    """The `SourceSpec` of each set. Reader options given for all the sets together (a
    CaloChallenge `binning`) go, with the format detected, to the sets whose format takes
    them: a CaloChallenge reference and a canonical generated set are compared with one
    `--binning` (its reader alone reads it). Where no set takes them, an error names them."""
    if format is not None or not options:
        return [source_spec(paths, format, options) for paths in sets]
    from caloforge.data.formats import FORMATS, detect_format
    from caloforge.data.io import expand_paths

    takes, formats = [], []
    for paths in sets:
        files = expand_paths(paths)
        detected = detect_format(files[0]) if files else None
        formats.append(detected)
        takes.append(detected is not None and set(options) <= set(FORMATS[detected].options))
    if not any(takes):
        given = ", ".join(f"--{name.replace('_', '-')}" for name in sorted(options))
        raise CaloforgeError(
            f"{given}: no set is of a format that takes it; found "
            + ", ".join(
                f"{' '.join(map(str, expand_paths(paths)))} ({fmt})"
                for paths, fmt in zip(sets, formats, strict=True)
            )
        )
    return [
        source_spec(paths, format, options if take else {})
        for paths, take in zip(sets, takes, strict=True)
    ]


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
# Per-shower vectors the report reads only as a set's mean and spread (shower shapes, cell
# spectrum, LHCb sparsity levels): summarised chunk by chunk (`Moments`), not held per shower.
SUMMARISED = ("longitudinal_profile", "x_profile", "y_profile", "cell_spectrum", "sparsity_level")
# Per-shower features the report does not read (their information is in the feature vector).
UNUSED = (
    "centre_x_layer",
    "width_x_layer",
    "centre_y_layer",
    "width_y_layer",
    "hits_layer",
    "max_position",
)
# The feature vectors are held for every shower of both sets (FPD, KPD and the feature
# classifier draw from all of them): in float32, half the memory of float64, which they are
# computed in; the classifier reads them in float32 anyway.
FEATURE_VECTOR_DTYPE = np.float32


def batch_features(
    showers: np.ndarray, conditions: Mapping[str, np.ndarray], geometry: Geometry
) -> dict[str, np.ndarray]:
    """Every per-shower feature of one batch: `shower_features` for cell grids,
    `voxel_features` for voxel geometries."""
    if geometry.readout != "voxels":
        return shower_features(showers, conditions, geometry)
    return voxel_features(showers, conditions, geometry)


@dataclass
class SetFeatures:
    """What one pass over a set keeps of the showers it is told to keep (those inside the
    overlap of the conditions).

    table: per-shower features, name -> (n, ...), as `batch_features` gives them less
        UNUSED and SUMMARISED, the feature vector in FEATURE_VECTOR_DTYPE;
    summaries: name -> `Moments` over the kept showers of each SUMMARISED feature present;
    subsample: the showers asked for by index (`Batch`: float32 cells and conditions), in
        the order of their indices; None when none were asked for."""

    table: dict[str, np.ndarray]
    summaries: dict[str, Moments]
    subsample: Batch | None = None


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


@dataclass
class _Chunk:
    """One chunk's share of a `SetFeatures`: its table, its summaries and its picked
    showers (float32 cells; their conditions are the caller's to take)."""

    table: dict[str, np.ndarray]
    summaries: dict[str, Moments]
    picked: np.ndarray | None


def _pass(
    source: ShowerSource,
    batch_size: int,
    keep: np.ndarray,
    picks: np.ndarray,
    out: np.ndarray | None = None,
) -> _Chunk:
    """One pass over `source`, batch by batch: the features of the showers where `keep`
    (bool, one per shower) is set, and a copy of the showers at `picks` (increasing
    indices, among the kept ones), written into `out` when given.

    Features are computed on whole batches and then selected, so that every shower's
    features are those of the same batches whatever is kept."""
    parts: dict[str, list[np.ndarray]] = {}
    summaries: dict[str, Moments] = {}
    if out is None and len(picks):
        out = np.empty((len(picks), *source.geometry.shape), dtype=np.float32)
    filled, lo = 0, 0
    for batch in iter_batches(source, batch_size):
        hi = lo + len(batch)
        mask = keep[lo:hi]
        features = batch_features(batch.showers, batch.conditions, source.geometry)
        for key, value in features.items():
            if key in UNUSED:
                continue
            kept = value if mask.all() else value[mask]
            if key in SUMMARISED:
                moments = Moments.of(kept)
                summaries[key] = summaries[key].merge(moments) if key in summaries else moments
            else:
                if key == "feature_vector":
                    kept = kept.astype(FEATURE_VECTOR_DTYPE)
                parts.setdefault(key, []).append(kept)
        here = picks[(picks >= lo) & (picks < hi)] - lo
        if len(here):
            assert out is not None
            out[filled : filled + len(here)] = batch.showers[here]
            filled += len(here)
        lo = hi
    table = {key: np.concatenate(values) for key, values in parts.items()}
    return _Chunk(table, summaries, out)


def _chunk_features(
    spec: SourceSpec, start: int, stop: int, batch_size: int, keep: np.ndarray, picks: np.ndarray
) -> _Chunk:
    """A worker's job: open the set and make one pass over showers start:stop (`_pass`;
    `keep` and `picks` relative to `start`)."""
    try:
        source = spec.open()
        try:
            return _pass(_Slice(source, start, stop), batch_size, keep, picks)
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
    keep: Sequence[np.ndarray],
    *,
    picks: Sequence[np.ndarray] | None = None,
    batch_size: int,
    workers: int,
    progress: bool = False,
) -> list[SetFeatures]:
    """One pass over each source: the features of its first len(keep[i]) showers where
    `keep[i]` is set, and a copy of its showers at `picks[i]` (increasing indices among the
    kept ones; the cell-level subsample), in order.

    The sets are cut into chunks; with `workers` > 1 (and enough cells to pay for the
    processes) the chunks of all sets are computed at once by that many processes, each
    re-opening its set from `specs` and holding one batch of showers at a time. Memory stays
    bounded by the kept features (`SetFeatures`: about 1 kB per shower for a 25-layer grid),
    the picked showers and one batch per worker: no set is ever held whole."""
    counts = [len(k) for k in keep]
    chosen = [np.zeros(0, dtype=np.int64) for _ in sources] if picks is None else list(picks)
    cells = sum(counts) * sources[0].geometry.n_cells
    workers = workers_within_descriptors(workers)  # under a low `ulimit -n`, fewer
    parallel = workers > 1 and specs is not None and cells >= PARALLEL_MIN_CELLS
    chunk = batch_size * (8 if parallel else 16)
    jobs = [(k, lo, min(lo + chunk, n)) for k, n in enumerate(counts) for lo in range(0, n, chunk)]
    subsamples = [
        np.empty((len(p), *s.geometry.shape), dtype=np.float32) if len(p) else None
        for s, p in zip(sources, chosen, strict=True)
    ]

    def job_picks(k: int, lo: int, hi: int) -> tuple[int, np.ndarray]:
        first, last = np.searchsorted(chosen[k], [lo, hi])
        return int(first), chosen[k][first:last] - lo

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(counts), unit="shower", desc="features", mininterval=0.5)
    tables: list[list[dict[str, np.ndarray]]] = [[] for _ in sources]
    summaries: list[dict[str, Moments]] = [{} for _ in sources]

    def collect(k: int, lo: int, hi: int, result: _Chunk, copy: bool) -> None:
        tables[k].append(result.table)
        for key, moments in result.summaries.items():
            s = summaries[k]
            s[key] = s[key].merge(moments) if key in s else moments
        first, here = job_picks(k, lo, hi)
        target = subsamples[k]
        if copy and len(here) and result.picked is not None and target is not None:
            target[first : first + len(here)] = result.picked
        if bar is not None:
            bar.update(hi - lo)

    try:
        if parallel:
            assert specs is not None
            context = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:

                def submit(k: int, lo: int, hi: int) -> Future[_Chunk]:
                    here = job_picks(k, lo, hi)[1]
                    args = (specs[k], lo, hi, batch_size, keep[k][lo:hi], here)
                    return pool.submit(_chunk_features, *args)

                # Results are taken in order, with at most two jobs per worker in flight, so
                # that finished chunks do not pile up waiting for an earlier one.
                # A submit may start a worker: SIGTERM or Ctrl-C in the middle of that start
                # leaves a half-started worker that fails loudly after the clean-up.
                queue = iter(jobs)
                with signals_held():
                    pending = deque((job, submit(*job)) for job in islice(queue, 2 * workers))
                while pending:
                    (k, lo, hi), future = pending.popleft()
                    collect(k, lo, hi, future.result(), copy=True)
                    del future
                    job = next(queue, None)
                    if job is not None:
                        with signals_held():
                            pending.append((job, submit(*job)))
        else:
            for k, lo, hi in jobs:
                first, here = job_picks(k, lo, hi)
                target = subsamples[k]
                out = None if target is None else target[first : first + len(here)]
                result = _pass(_Slice(sources[k], lo, hi), batch_size, keep[k][lo:hi], here, out)
                collect(k, lo, hi, result, copy=False)  # written in place
    finally:
        if bar is not None:
            bar.close()
    done = []
    for k, source in enumerate(sources):
        subsample = None
        showers = subsamples[k]
        if showers is not None:
            rows = chosen[k]
            conditions = {name: np.asarray(v)[rows] for name, v in source.conditions.items()}
            subsample = Batch(showers, conditions)
        done.append(SetFeatures(_concatenate(tables[k]), summaries[k], subsample))
    return done


def _concatenate(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join the chunks' features key by key, dropping each key's parts once joined, so that
    the features are held about once, not twice."""
    out = {}
    for key in list(chunks[0]):
        out[key] = np.concatenate([chunk.pop(key) for chunk in chunks])
    return out


def read_conditions(source: ShowerSource, count: int) -> dict[str, np.ndarray]:
    """The conditions of the first `count` showers of `source`, name -> array."""
    return {name: np.asarray(v)[:count] for name, v in source.conditions.items()}


def in_overlap(
    conditions: Mapping[str, np.ndarray], overlap: Mapping[str, tuple[float, float]]
) -> np.ndarray:
    """Which showers lie inside the overlap of the scalar conditions, (n,) bool, from their
    conditions (name -> (n,) array)."""
    n = len(next(iter(conditions.values())))
    mask = np.ones(n, dtype=bool)
    for name, (low, high) in overlap.items():
        values = conditions[name]
        mask &= (values >= low) & (values <= high)
    return mask
