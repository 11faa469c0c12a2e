"""`caloforge simulate`: draw conditions, simulate in batches, stream to a canonical file."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import numbers
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

import numpy as np

from caloforge._files import check_output
from caloforge._processes import (
    default_workers,
    die_with_parent,
    signals_held,
    workers_within_descriptors,
)
from caloforge.data.canonical import ShowerWriter, check_batch_memory
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, load_geometry
from caloforge.simulation.calibration import Calibration, for_geometry
from caloforge.simulation.conditions import ConditionRanges, check_drawable, sample_conditions
from caloforge.simulation.simulator import ShowerSimulator


def _simulate_batch(
    geometry: Geometry,
    ranges: ConditionRanges,
    particle: str,
    seed: int,
    start: int,
    size: int,
    calibration: Calibration | str = "auto",
) -> Batch:
    """One batch; its random stream depends only on the seed and its first shower's index."""
    rng = np.random.default_rng([seed, start])
    conditions = sample_conditions(geometry, ranges, size, rng)
    simulator = ShowerSimulator(geometry, particle=particle, calibration=calibration)
    return Batch(simulator.simulate(conditions, rng), conditions)


def _simulate_sparse(
    geometry: Geometry,
    ranges: ConditionRanges,
    particle: str,
    seed: int,
    start: int,
    size: int,
    calibration: Calibration | str = "auto",
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """`_simulate_batch` in a worker process: only the non-zero cells travel back (about 1 %
    of a clic-angle-51 image), which keeps the inter-process copy small."""
    batch = _simulate_batch(geometry, ranges, particle, seed, start, size, calibration)
    flat = batch.showers.reshape(-1)
    index = np.flatnonzero(flat != 0)
    if flat.size < 2**31:
        index = index.astype(np.int32)
    return index, flat[index], dict(batch.conditions)


def _densify(
    geometry: Geometry, sparse: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]
) -> Batch:
    index, values, conditions = sparse
    showers = np.zeros(len(conditions["energy"]) * geometry.n_cells, dtype=np.float32)
    showers[index] = values
    return Batch(showers.reshape((-1, *geometry.shape)), conditions)


class _Job:
    """One batch to make: its arguments, the worker's future, or the batch once made here."""

    def __init__(self, args: tuple[Any, ...], future: Future[Any]) -> None:
        self.args = args
        self.future = future
        self.batch: Batch | None = None

    def take_over(self) -> bool:
        """Make the batch in this process if no worker has started it."""
        if self.batch is None and self.future.cancel():
            self.batch = _simulate_batch(*self.args)
            return True
        return False

    def result(self, geometry: Geometry) -> Batch:
        return self.batch if self.batch is not None else _densify(geometry, self.future.result())


# Workers are started only for runs that would take at least this much CPU (seconds) after
# their first batch: the pool's start costs about one (a server process that imports the
# simulator, a resource tracker) and about as long before the first result.
POOL_MIN_CPU_S = 4.0


def simulate_batches(
    geometry: Geometry,
    ranges: ConditionRanges,
    n: int,
    *,
    seed: int,
    batch_size: int = 256,
    particle: str = "electron",
    first_index: int = 0,
    workers: int = 1,
    calibration: Calibration | str = "auto",
) -> Iterator[Batch]:
    """Yield `n` simulated showers in batches, in order.

    Reproducible: a batch depends only on the seed and the index of its first shower (counted
    from `first_index`), so the showers do not depend on `workers`, and appending 1000 showers
    to a file of 1000 gives the same file as simulating 2000 at once. With `workers > 1` the
    batches are simulated in that many processes, at most two per worker in flight, so memory
    stays bounded however many showers are made; this process makes batches that no worker
    has started whenever the next one in order is not ready, rather than wait. Starting the
    workers costs about a second of CPU: a run whose batches after the first would take
    less than `POOL_MIN_CPU_S` of CPU here is made in this process alone.
    """
    if n < 0 or batch_size <= 0 or workers < 1:
        raise CaloforgeError(
            f"need n >= 0, batch_size > 0 and workers >= 1, got n={n}, "
            f"batch_size={batch_size}, workers={workers}"
        )
    # A range, not a list of jobs: n may be larger than memory holds jobs for.
    starts = range(0, n, batch_size)

    def job(lo: int) -> tuple[Any, ...]:
        size = min(batch_size, n - lo)
        return (geometry, ranges, particle, seed, first_index + lo, size, calibration)

    if not starts:
        return
    start = time.process_time()
    first = _simulate_batch(*job(0))
    workers = workers_within_descriptors(workers)  # under a low `ulimit -n`, fewer
    if workers == 1 or (time.process_time() - start) * (len(starts) - 1) < POOL_MIN_CPU_S:
        yield first
        for lo in starts[1:]:
            yield _simulate_batch(*job(lo))
        return
    context = multiprocessing.get_context("forkserver")
    # Workers are forked from a server that has imported this module (numpy, scipy, h5py:
    # more than half a second of CPU) once, rather than each importing it; the server
    # imports while the caller writes the first batch.
    context.set_forkserver_preload(["__main__", __name__])
    with signals_held():
        forkserver.ensure_running()
    yield first
    # The workers end with this process, even when it is killed by SIGKILL.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        todo = iter(starts[1:])
        pending: deque[_Job] = deque()

        def submit() -> None:
            while len(pending) < 2 * workers:
                lo = next(todo, None)
                if lo is None:
                    break
                args = job(lo)
                with signals_held():  # a submit may start a worker
                    pending.append(_Job(args, pool.submit(_simulate_sparse, *args)))

        submit()
        while pending:
            head = pending[0]
            if head.batch is None and not head.future.done():
                # Rather than wait, make a batch that no worker has started.
                if not any(job.take_over() for job in pending):
                    wait([head.future], return_when=FIRST_COMPLETED)
                continue
            yield pending.popleft().result(geometry)
            submit()


ENGINES = ("gflash", "geant4")
# gflash: "auto", the table fitted to Geant4 for the geometry's material family (if the
# package has one); "none", the bare parametrization.
CALIBRATIONS = ("auto", "none")


def simulate_to_file(
    output: str | os.PathLike[str],
    *,
    geometry: str | Geometry = "clic-25",
    n: int,
    energy: tuple[float, float] | None = None,
    spectrum: str | None = None,
    theta_deg: tuple[float, float] | None = None,
    point: tuple[float, float] | None = None,
    particle: str = "electron",
    seed: int = 0,
    batch_size: int | None = None,
    compression: str = "gzip",
    append: bool = False,
    progress: bool = False,
    workers: int | None = None,
    engine: str = "gflash",
    physics_list: str | None = None,
    range_cut_mm: float | None = None,
    first_index: int | None = None,
    calibration: str = "auto",
) -> Path:
    """Simulate `n` showers into a canonical file; returns its path.

    `engine` is "gflash" (the embedded parametrization, hundreds of showers/s) or "geant4"
    (Monte Carlo with caloforge's Geant4 application, `caloforge.simulation.geant4`; a
    few showers/s per core; `physics_list` and `range_cut_mm` apply to it alone).

    All checks (geometry, ranges, engine) happen before anything is written; the file
    appears under its name only once complete (or, with `append`, grows batch by batch).
    `workers` processes simulate while this one writes (default: one per core, at most 8);
    the showers are the same for any number of workers (with geant4, for any batch size too).
    The file holds showers `first_index` .. `first_index + n - 1` of the seed's sequence
    (default: from 0, or after the showers already in the file when appending), so a large
    set can be made in parts that together equal one run.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise CaloforgeError(f"--n must be a positive number of showers, got {n!r}")
    for option, value, low in (("--seed", seed, 0), ("--batch-size", batch_size, 1)):
        # batch_size=0 was taken as the default, a negative seed failed deep in numpy.
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, numbers.Integral)
        ):
            raise CaloforgeError(f"{option} must be an integer, got {value!r}")
        if value is not None and value < low:
            raise CaloforgeError(f"{option} must be an integer >= {low}, got {value}")
    for option, pair in (("--energy", energy), ("--theta", theta_deg), ("--point", point)):
        if pair is not None and (isinstance(pair, str) or len(pair) != 2):
            raise CaloforgeError(f"{option} must be a pair (low, high), got {pair!r}")
    if first_index is not None and first_index < 0:
        raise CaloforgeError(f"first_index must be >= 0, got {first_index}")
    if engine not in ENGINES:
        raise CaloforgeError(f"unknown engine '{engine}'; choose {', '.join(ENGINES)}")
    if engine == "gflash" and (physics_list is not None or range_cut_mm is not None):
        raise CaloforgeError("--physics-list and --range-cut apply to --engine geant4 only")
    if engine == "geant4" and calibration != "auto":
        raise CaloforgeError("--calibration applies to --engine gflash only")
    check_output(output, option="-o")
    geo = geometry if isinstance(geometry, Geometry) else load_geometry(geometry)
    check_drawable(geo, None if isinstance(geometry, Geometry) else str(geometry))
    theta = None if theta_deg is None else (math.radians(theta_deg[0]), math.radians(theta_deg[1]))
    ranges = ConditionRanges.for_geometry(geo, energy, spectrum, theta, point)
    workers = default_workers() if workers is None else workers
    check_batch_memory(geo, min(n, batch_size or 256))
    if engine == "geant4":
        batches, producer, provenance = _geant4_batches(
            geo,
            ranges,
            n,
            particle,
            seed,
            batch_size,
            workers,
            physics_list,
            range_cut_mm,
            progress,
        )
    else:
        if calibration not in CALIBRATIONS:
            raise CaloforgeError(
                f"unknown calibration '{calibration}'; choose {', '.join(CALIBRATIONS)}"
            )
        chosen = for_geometry(geo) if calibration == "auto" else Calibration()
        ShowerSimulator(geo, particle=particle, calibration=chosen)  # fail on a bad geometry first
        label = chosen.label
        producer = f"caloforge simulate (GFlash-style, {label}, {particle}, seed {seed})"
        provenance = {"engine": "gflash", "calibration": label}

        def batches(first: int) -> Iterator[Batch]:
            return simulate_batches(
                geo,
                ranges,
                n,
                seed=seed,
                batch_size=batch_size or 256,
                particle=particle,
                first_index=first,
                workers=workers,
                calibration=chosen,
            )

    # An append must continue a file of the same particle (the producer line names it too).
    provenance = {**provenance, "particle": particle}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="shower", desc=f"simulate {geo.name} ({engine})", mininterval=0.5)
    try:
        with ShowerWriter(
            output,
            geo,
            producer=producer,
            append=append,
            compression=compression,
            provenance=provenance,
            expected=n,
        ) as writer:
            # Appending continues the seed's sequence after the showers already in the file.
            # closing: an interrupt here ends the batches' workers now, not at exit.
            stream = batches(writer.n if first_index is None else first_index)
            with contextlib.closing(stream):
                for batch in stream:
                    writer.write(batch)
                    if bar is not None:
                        bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return Path(output)


def _geant4_batches(
    geometry: Geometry,
    ranges: ConditionRanges,
    n: int,
    particle: str,
    seed: int,
    batch_size: int | None,
    workers: int,
    physics_list: str | None,
    range_cut_mm: float | None,
    progress: bool,
) -> tuple[Callable[[int], Iterator[Batch]], str, dict[str, Any]]:
    from caloforge.simulation import geant4

    if not geometry.simulable:
        raise CaloforgeError(
            f"geometry '{geometry.name}' has readout '{geometry.readout}' and no cell grid "
            "to simulate into; simulation needs 'layers' or 'summed' readout"
        )
    if particle not in geant4.PARTICLES:
        raise CaloforgeError(f"unknown particle '{particle}'; choose {', '.join(geant4.PARTICLES)}")
    setup = geant4.prepare(
        physics_list,
        geant4.engine.DEFAULT_RANGE_CUT_MM if range_cut_mm is None else range_cut_mm,
        progress=progress,
    )
    producer = f"caloforge simulate (Geant4 engine: {setup.describe()}; {particle}, seed {seed})"

    def batches(first: int) -> Iterator[Batch]:
        for batch, _ in geant4.simulate_geant4(
            geometry,
            ranges,
            n,
            setup=setup,
            seed=seed,
            batch_size=batch_size or 8,
            particle=particle,
            first_index=first,
            workers=workers,
        ):
            yield batch

    return batches, producer, setup.provenance()
