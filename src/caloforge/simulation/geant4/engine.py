"""Run caloforge's Geant4 application in worker processes and collect cell energies.

Geant4's run manager is one per process and the libraries are sequential, so every
simulation runs in processes of its own, even with one worker: each builds the calorimeter
once and then simulates the batches it is sent. The parent draws every shower's conditions
and random seeds, so a shower depends only on the run's seed and its own index: the same
whatever the number of workers, the batch size, or whether it was appended later.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from caloforge._processes import die_with_parent
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.simulation.conditions import (
    ConditionRanges,
    entry_point,
    sample_conditions,
    track_direction,
)
from caloforge.simulation.geant4 import build
from caloforge.simulation.simulator import MIN_CELL_ENERGY  # the same readout floor

# caloforge's material names and Geant4's NIST database names for them.
NIST_MATERIALS = {"W": "G4_W", "Pb": "G4_Pb", "Si": "G4_Si", "polystyrene": "G4_POLYSTYRENE"}
PARTICLES = {"electron": "e-", "positron": "e+", "photon": "gamma"}
DATA_FREE = "data-free"
STANDARD_EM = "em-standard"
DEFAULT_RANGE_CUT_MM = 0.7
# The primary starts this far in front of the face, in the vacuum of the world volume.
GUN_SETBACK_MM = 1e-3
# Slabs extend this far beyond the grid and any track's reach, so that energy leaves the
# image sideways (as in a large detector) but not the material.
LATERAL_MARGIN_MM = 500.0


@dataclass(frozen=True)
class Geant4Setup:
    """What runs: the compiled application, its Geant4, the physics list and range cut."""

    installation: build.Geant4Installation
    library: Path
    physics_list: str
    range_cut_mm: float

    @property
    def environment(self) -> dict[str, str]:
        if self.installation.has_data:
            return dict(self.installation.datasets)
        return build.data_free_environment()

    def provenance(self) -> dict[str, Any]:
        """What a shower file records of the engine that made it."""
        return {
            "engine": "geant4",
            "geant4_version": self.installation.version,
            "geant4_from": self.installation.source,
            "physics_list": self.physics_list,
            "range_cut_mm": self.range_cut_mm,
            "data_files": self.installation.has_data,
        }

    def describe(self) -> str:
        data = "with data files" if self.installation.has_data else "no data files"
        return (
            f"Geant4 {self.installation.version}, physics list {self.physics_list}, "
            f"range cut {self.range_cut_mm:g} mm, {data}"
        )


def prepare(
    physics_list: str | None = None,
    range_cut_mm: float = DEFAULT_RANGE_CUT_MM,
    *,
    progress: bool = False,
) -> Geant4Setup:
    """Find Geant4, choose the physics list and compile the application (cached).

    The default physics list is Geant4's standard EM physics (option 0) where the datasets
    are installed, else caloforge's data-free list; a list that reads data is refused
    without them.
    """
    if not (math.isfinite(range_cut_mm) and range_cut_mm > 0):
        raise CaloforgeError(f"--range-cut must be a positive length in mm, got {range_cut_mm}")
    installation = build.find_geant4()
    if physics_list is None:
        physics_list = STANDARD_EM if installation.has_data else DATA_FREE
    if physics_list != DATA_FREE and not installation.has_data:
        raise CaloforgeError(
            f"--physics-list {physics_list} reads Geant4's data files, and this Geant4 "
            f"({installation.source}, {installation.version}) has none: use --physics-list "
            f"{DATA_FREE}, or a Geant4 installation whose geant4-config lists its datasets"
        )
    library = build.build(installation, progress=progress)
    return Geant4Setup(installation, library, physics_list, float(range_cut_mm))


# --- what each shower needs -----------------------------------------------------------------
@dataclass(frozen=True)
class GunBatch:
    """Showers to simulate: conditions, the gun, image offsets (mm) and Geant4 seeds."""

    conditions: dict[str, np.ndarray]
    position: np.ndarray  # (n, 3) mm
    direction: np.ndarray  # (n, 3)
    offsets: np.ndarray  # (n, 2) mm
    seeds: np.ndarray  # (n, 4) int64, each below 2**31

    def __len__(self) -> int:
        return len(self.conditions["energy"])


def draw_showers(
    geometry: Geometry, ranges: ConditionRanges, seed: int, start: int, size: int
) -> GunBatch:
    """Showers start .. start + size - 1 of a run; each from its own generator [seed, index]."""
    assert geometry.cell_size_mm is not None
    cell = np.asarray(geometry.cell_size_mm)
    parts: list[dict[str, np.ndarray]] = []
    jitter = np.empty((size, 2))
    seeds = np.empty((size, 4), dtype=np.int64)
    for k in range(size):
        rng = np.random.default_rng([seed, start + k])
        parts.append(sample_conditions(geometry, ranges, 1, rng))
        jitter[k] = (rng.random(2) - 0.5) * cell
        seeds[k] = rng.integers(1, 2**31, 4)
    conditions = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    direction = track_direction(conditions, size)
    position = entry_point(conditions, size) - GUN_SETBACK_MM * direction
    # Images are centred as the parametrized engine centres them: on the entry point plus a
    # sub-cell offset (where in its cell the particle hit), on the barycentre plus that offset
    # for inclined showers; LHCb's entry point is absolute.
    offsets = np.zeros((size, 2)) if geometry.has_condition("point") else jitter
    return GunBatch(conditions, position, direction, offsets, seeds)


# --- the library, inside a worker -------------------------------------------------------------
class _Application:
    """The compiled application loaded into this process (one per process)."""

    def __init__(self, library: Path, geometry: Geometry, setup_args: Mapping[str, Any]):
        lib = ctypes.CDLL(str(library))
        f64p = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
        lib.cf_init.restype = ctypes.c_int
        lib.cf_init.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_char_p),
            f64p,
            ctypes.POINTER(ctypes.c_char_p),
            f64p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_double,
            ctypes.c_double,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_double,
            ctypes.c_double,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.cf_simulate.restype = ctypes.c_int
        lib.cf_simulate.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            f64p,
            f64p,
            f64p,
            f64p,
            np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS"),
            np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS"),
            f64p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        self._lib = lib
        self.geometry = geometry
        layers = geometry.layers
        absorbers = (ctypes.c_char_p * len(layers))(
            *(NIST_MATERIALS[layer.absorber].encode() for layer in layers)
        )
        sensors = (ctypes.c_char_p * len(layers))(
            *(NIST_MATERIALS[layer.sensor].encode() for layer in layers)
        )
        assert geometry.cell_size_mm is not None
        nx, ny = geometry.shape[:2]
        depth = geometry.layer_boundaries_mm[-1]
        half_grid = 0.5 * max(nx * geometry.cell_size_mm[0], ny * geometry.cell_size_mm[1])
        # A track at the steepest angle any condition allows (87 deg) crosses the whole depth
        # within 20 depths sideways; entry points lie inside the grid's half width plus 100 mm.
        half_width = half_grid + 100.0 + 20.0 * depth + LATERAL_MARGIN_MM
        error = ctypes.create_string_buffer(16384)
        status = lib.cf_init(
            len(layers),
            absorbers,
            np.array([layer.absorber_mm for layer in layers], dtype=np.float64),
            sensors,
            np.array([layer.sensor_mm for layer in layers], dtype=np.float64),
            nx,
            ny,
            geometry.cell_size_mm[0],
            geometry.cell_size_mm[1],
            int(geometry.readout == "summed"),
            int(geometry.has_condition("theta")),
            half_width,
            float(setup_args["range_cut_mm"]),
            str(setup_args["physics_list"]).encode(),
            error,
            len(error),
        )
        if status != 0:
            raise CaloforgeError(
                f"Geant4 could not set up geometry '{geometry.name}': {error.value.decode()}"
            )
        self._particle = PARTICLES[str(setup_args["particle"])].encode()
        self._error = error

    def simulate(self, showers: GunBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat indices and energies (GeV) of the non-zero cells, and per shower the energy
        in the sensors, in the absorbers and leaving the calorimeter (GeV, shape (n, 3))."""
        n = len(showers)
        cells = np.zeros(n * self.geometry.n_cells, dtype=np.float32)
        bookkeeping = np.zeros((n, 3), dtype=np.float64)
        status = self._lib.cf_simulate(
            n,
            self._particle,
            np.ascontiguousarray(showers.conditions["energy"], dtype=np.float64),
            np.ascontiguousarray(showers.position, dtype=np.float64),
            np.ascontiguousarray(showers.direction, dtype=np.float64),
            np.ascontiguousarray(showers.offsets, dtype=np.float64),
            np.ascontiguousarray(showers.seeds, dtype=np.int64),
            cells,
            bookkeeping,
            self._error,
            len(self._error),
        )
        if status != 0:
            raise CaloforgeError(f"Geant4 failed: {self._error.value.decode()}")
        cells[cells < MIN_CELL_ENERGY] = 0.0
        index = np.flatnonzero(cells)
        return index, cells[index], bookkeeping


def write_message(fd: int, message: Any) -> None:
    """One pickled message on a raw pipe, preceded by its length (8 bytes, little endian)."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:
        view = view[os.write(fd, view) :]


def read_message(fd: int) -> Any:
    """The next message of `write_message`; EOFError when the other end has closed."""
    size = int.from_bytes(_read_exactly(fd, 8), "little")
    return pickle.loads(_read_exactly(fd, size))


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, missing = [], size
    while missing:
        chunk = os.read(fd, min(missing, 1 << 24))
        if not chunk:
            raise EOFError("the pipe was closed")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def serve(receive: int, send: int) -> None:
    """A worker's life (`python -m caloforge.simulation.geant4.worker`): read the set-up,
    build the calorimeter, then simulate each batch read until None arrives. Messages travel
    on two pipes of their own (Geant4 may print on stdout)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends us
    library, geometry_json, args = read_message(receive)
    try:
        app = _Application(Path(library), Geometry.from_json(geometry_json), args)
    except CaloforgeError as exc:
        write_message(send, ("error", str(exc)))
        return
    write_message(send, ("ready", None))
    while (job := read_message(receive)) is not None:
        index, batch = job
        try:
            write_message(send, ("ok", (index, app.simulate(batch))))
        except CaloforgeError as exc:
            write_message(send, ("error", str(exc)))
            return


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    send: int  # file descriptors of the two pipes
    receive: int
    log: BinaryIO
    busy: int = 0  # batches sent and not yet returned


class Geant4Workers:
    """`workers` processes, each with the calorimeter built, simulating batches.

    >>> with Geant4Workers(setup, geometry, "electron", workers=2) as pool:
    ...     for cells in pool.run(batches): ...
    """

    # Batches in flight per worker: one running, one waiting, so a worker never idles
    # while the parent writes.
    IN_FLIGHT = 2

    def __init__(
        self, setup: Geant4Setup, geometry: Geometry, particle: str, *, workers: int = 1
    ) -> None:
        if particle not in PARTICLES:
            raise CaloforgeError(f"unknown particle '{particle}'; choose {', '.join(PARTICLES)}")
        unknown = {m for layer in geometry.layers for m in (layer.absorber, layer.sensor)}
        unknown -= set(NIST_MATERIALS)
        if unknown:
            raise CaloforgeError(
                f"geometry '{geometry.name}': no Geant4 material for {sorted(unknown)}; "
                f"the Geant4 engine knows {', '.join(sorted(NIST_MATERIALS))}"
            )
        self.geometry = geometry
        args = {
            "physics_list": setup.physics_list,
            "range_cut_mm": setup.range_cut_mm,
            "particle": particle,
        }
        environment = {**os.environ, **setup.environment}
        self._workers: list[_Worker] = []
        try:
            for _ in range(max(1, workers)):
                self._workers.append(_start_worker(environment))
            for worker in self._workers:
                write_message(worker.send, (str(setup.library), geometry.to_json(), args))
            for worker in self._workers:
                self._receive(worker)
        except BaseException:
            self.close()
            raise

    def _receive(self, worker: _Worker) -> Any:
        try:
            kind, payload = read_message(worker.receive)
        except (EOFError, OSError, pickle.UnpicklingError):
            code = worker.process.wait(timeout=10)
            worker.log.seek(0)
            said = worker.log.read().decode(errors="replace").strip().splitlines()[-8:]
            raise CaloforgeError(
                f"a Geant4 worker process ended unexpectedly (exit code {code})"
                + (":\n" + "\n".join(said) if said else "")
            ) from None
        if kind == "error":
            raise CaloforgeError(payload)
        return payload

    def run(
        self, batches: Iterable[GunBatch]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Simulate each batch; results in the order given. The next batch goes to whichever
        worker is free first, so one slow batch does not leave the other workers idle; at
        most two batches per worker are in flight or waiting for their turn, so memory stays
        bounded."""
        todo = enumerate(batches)
        done: dict[int, Any] = {}
        next_out, exhausted = 0, False
        limit = 2 * self.IN_FLIGHT * len(self._workers)
        while True:
            for worker in self._workers:
                while not exhausted and worker.busy < self.IN_FLIGHT and len(done) < limit:
                    job = next(todo, None)
                    if job is None:
                        exhausted = True
                        break
                    write_message(worker.send, job)
                    worker.busy += 1
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1
            busy = [w for w in self._workers if w.busy]
            if not busy:
                return
            ready, _, _ = select.select([w.receive for w in busy], [], [])
            for worker in busy:
                if worker.receive in ready:
                    index, result = self._receive(worker)
                    worker.busy -= 1
                    done[index] = result

    def close(self) -> None:
        """End the workers: politely, then by force; nothing is left running."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                write_message(worker.send, None)
        for worker in self._workers:
            try:
                worker.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            os.close(worker.send)
            os.close(worker.receive)
            worker.log.close()
        self._workers = []

    def __enter__(self) -> Geant4Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_worker(environment: dict[str, str]) -> _Worker:
    down_read, down_write = os.pipe()
    up_read, up_write = os.pipe()
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by Geant4Workers.close)
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "caloforge.simulation.geant4.worker",
                str(down_read),
                str(up_write),
            ],
            pass_fds=(down_read, up_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=environment,
        )
    except BaseException:
        for fd in (down_write, up_read):
            os.close(fd)
        log.close()
        raise
    finally:
        os.close(down_read)
        os.close(up_write)
    return _Worker(process, down_write, up_read, log)


def densify(geometry: Geometry, n: int, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    showers = np.zeros(n * geometry.n_cells, dtype=np.float32)
    showers[index] = values
    return showers.reshape((n, *geometry.shape))


def simulate_geant4(
    geometry: Geometry,
    ranges: ConditionRanges,
    n: int,
    *,
    setup: Geant4Setup,
    seed: int,
    batch_size: int = 16,
    particle: str = "electron",
    first_index: int = 0,
    workers: int = 1,
) -> Iterator[tuple[Batch, np.ndarray]]:
    """Yield `n` Geant4 showers in batches, in order, each with its energy bookkeeping:
    (n, 3) GeV in the sensors (all cells, also outside the grid), in the absorbers, and
    leaving the calorimeter (a positron leaving counts its two annihilation masses)."""
    if n < 0 or batch_size <= 0 or workers < 1:
        raise CaloforgeError(
            f"need n >= 0, batch_size > 0 and workers >= 1, got n={n}, "
            f"batch_size={batch_size}, workers={workers}"
        )
    starts = range(first_index, first_index + n, batch_size)
    sizes = [min(batch_size, first_index + n - lo) for lo in starts]
    if not sizes:
        return
    gun_batches = (
        draw_showers(geometry, ranges, seed, lo, size)
        for lo, size in zip(starts, sizes, strict=True)
    )
    drawn: deque[GunBatch] = deque()

    def remembered() -> Iterator[GunBatch]:
        for batch in gun_batches:
            drawn.append(batch)
            yield batch

    with Geant4Workers(setup, geometry, particle, workers=min(workers, len(sizes))) as pool:
        for index, values, bookkeeping in pool.run(remembered()):
            gun = drawn.popleft()
            showers = densify(geometry, len(gun), index, values)
            yield Batch(showers, gun.conditions), bookkeeping
