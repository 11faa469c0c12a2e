"""Benchmark of `caloforge validate`: features and feature-level metrics, time and memory.

Target: 100 000 vs 100 000 clic-angle-51 showers (51x51x25 cells, gzip files) in under five
minutes on a 2-core machine, with memory bounded by a few GB: the features are streamed in
chunks over worker processes, and only they (a few kB per shower) are held.

Measured: `validation.compare` without the cell-level metrics (subsample 0) and without plots,
i.e. reading, features, response and resolution per bin, separation power / W1 / KS of the
scalar features overall and per bin, correlations, FPD, KPD and the high-level classifier.
Reported: the wall time per stage and in all; the peak resident memory of this process and
its worker processes together (sampled every 0.2 s from /proc), next to this process's own
peak (getrusage); and the CPU time of the serial (this process) and parallel (feature
workers) parts, from which the wall time on an otherwise idle machine follows: on a shared
machine the wall time measures the neighbours too (the load average before and after is
printed). First, in this process, the cost per shower of reading (HDF5 decompression and the
reader's checks) and of computing the features, on the first --breakdown showers.

Input: two shower files (the same file twice is fine: every metric is computed all the
same), or, without --reference, simulated ones: `--n` showers each, written once into
--data-dir and reused by later runs.

    python benchmarks/validate.py --n 20000
    python benchmarks/validate.py --reference ref.h5 --generated gen.h5 --n 100000
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from pathlib import Path

from caloforge.data.source import ShowerSource
from caloforge.validation import ValidationConfig, compare
from caloforge.validation.features import shower_features
from caloforge.validation.sources import SourceSpec, default_batch_size

TARGET_S = 300.0
TARGET_N = 100_000


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc); the feature workers are
    grandchildren (through multiprocessing's forkserver)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out.append(p)
        stack.extend(int(c) for c in children)
    return out


def rss_and_cpu(pid: int) -> tuple[float, float]:
    """Resident memory (MiB) and CPU time (user + system, s) of one process; 0 when gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    rss = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    ticks = os.sysconf("SC_CLK_TCK")
    return rss / 1024.0, (int(fields[11]) + int(fields[12])) / ticks


class ProcessTreeMonitor:
    """Samples this process and its descendants in a thread: `peak_mib`, the largest sum of
    their resident memory, and `cpu_s`, the CPU time they used (each process's last sample;
    a worker's last 0.2 s may be missed). From CPU times the wall time on an otherwise idle
    machine follows, whatever else shares it now: this process's (serial) CPU time plus the
    workers' divided by the cores."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_mib = 0.0
        self._cpu: dict[int, float] = {}
        self._start_cpu = rss_and_cpu(os.getpid())[1]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def own_cpu_s(self) -> float:
        """CPU time of this process: the serial stages (metrics)."""
        return self._cpu.get(os.getpid(), self._start_cpu) - self._start_cpu

    @property
    def workers_cpu_s(self) -> float:
        """CPU time of the descendants: the parallel stage (features)."""
        return sum(cpu for p, cpu in self._cpu.items() if p != os.getpid())

    def _sample(self) -> None:
        total = 0.0
        for p in process_tree(os.getpid()):
            rss, cpu = rss_and_cpu(p)
            total += rss
            if cpu > 0:
                self._cpu[p] = cpu
        self.peak_mib = max(self.peak_mib, total)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self._sample()

    def __enter__(self) -> ProcessTreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._sample()


def read_and_compute_ms(source: ShowerSource, n: int, batch_size: int) -> tuple[float, float]:
    """CPU milliseconds per shower spent reading (decompressing and checking) and computing the
    features of the first `n` showers of `source`, batch by batch, in this process."""
    read = compute = 0.0
    stop = min(n, len(source))
    for lo in range(0, stop, batch_size):
        start = time.process_time()
        batch = source.read(lo, min(lo + batch_size, stop))
        middle = time.process_time()
        shower_features(batch.showers, batch.conditions, source.geometry)
        read, compute = read + middle - start, compute + time.process_time() - middle
    return 1e3 * read / max(stop, 1), 1e3 * compute / max(stop, 1)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"


def simulated(folder: Path, geometry: str, n: int, seed: int, workers: int | None) -> Path:
    """A file of at least `n` simulated showers in `folder`, made once and reused."""
    import h5py

    from caloforge.simulation.run import simulate_to_file

    path = folder / f"{geometry}-seed{seed}.h5"
    if path.exists():
        with h5py.File(path, "r") as f:
            if f["showers"].shape[0] >= n:
                return path
    folder.mkdir(parents=True, exist_ok=True)
    print(f"simulating {n} {geometry} showers into {path} (once; reused by later runs)")
    simulate_to_file(path, geometry=geometry, n=n, seed=seed, workers=workers, progress=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=TARGET_N, help="showers per set")
    parser.add_argument("--reference", help="reference file (default: simulated)")
    parser.add_argument("--generated", help="generated file (default: --reference, or simulated)")
    parser.add_argument("--geometry", default="clic-angle-51", help="for simulated inputs")
    parser.add_argument("--data-dir", default="benchmark-data", help="for simulated inputs")
    parser.add_argument("--workers", type=int, help="feature processes (default: cores)")
    parser.add_argument(
        "--classifier-showers", type=int, default=50_000, help="high-level classifier, per set"
    )
    parser.add_argument(
        "--breakdown", type=int, default=2000, help="showers timed for read vs compute (0: skip)"
    )
    args = parser.parse_args()

    if args.reference is None:
        folder = Path(args.data_dir)
        reference = simulated(folder, args.geometry, args.n, 1, args.workers)
        generated = simulated(folder, args.geometry, args.n, 2, args.workers)
    else:
        reference = Path(args.reference)
        generated = Path(args.generated or args.reference)
    config = ValidationConfig(
        subsample=0,
        plots=False,
        max_showers=args.n,
        workers=args.workers,
        classifier_showers=args.classifier_showers,
    )
    ref, gen = SourceSpec((str(reference),)), SourceSpec((str(generated),))
    sources = ref.open(), gen.open()
    try:
        n = [min(len(s), args.n) for s in sources]
        geometry = sources[0].geometry
        print(f"{n[0]} vs {n[1]} {geometry.name} showers: {reference} vs {generated}")
        print(f"load average before: {load_average()} on {len(os.sched_getaffinity(0))} cores")
        if args.breakdown > 0:
            read_ms, compute_ms = read_and_compute_ms(
                sources[0], args.breakdown, default_batch_size(geometry)
            )
            print(
                f"per shower, one process, first {min(args.breakdown, n[0])} showers: reading "
                f"{read_ms:.3f} ms CPU, features {compute_ms:.3f} ms CPU "
                f"({1e3 / (read_ms + compute_ms):.0f} showers/s per core)"
            )
        start = time.perf_counter()
        with ProcessTreeMonitor() as monitor:
            result = compare(*sources, config, specs=(ref, gen), progress=True)
        elapsed = time.perf_counter() - start
    finally:
        for s in sources:
            s.close()
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("stages (s):")
    for stage, seconds in result.metrics["timings_s"].items():
        print(f"  {stage:<24} {seconds:8.1f}")
    features_s = result.metrics["timings_s"]["features"]
    print(f"features: {sum(n) / features_s:.0f} showers/s over {sum(n)} showers (wall time)")
    print(f"total: {elapsed:.1f} s for {n[0]} + {n[1]} showers ({sum(n) / elapsed:.0f} showers/s)")
    print(
        f"peak memory: {monitor.peak_mib / 1024:.2f} GiB for this process and its workers "
        f"together (this process alone: {own_peak / 1024:.2f} GiB)"
    )
    cores = len(os.sched_getaffinity(0))
    own, workers = monitor.own_cpu_s, monitor.workers_cpu_s
    idle = own + workers / cores
    print(
        f"CPU time: {own:.0f} s in this process (serial), {workers:.0f} s in the feature "
        f"workers (parallel): on {cores} otherwise idle cores about {idle:.0f} s of wall time"
    )
    print(f"load average after: {load_average()}")
    scaled = elapsed * TARGET_N / max(min(n), 1)
    verdict = "meets" if scaled < TARGET_S else "misses"
    print(
        f"wall time scaled to {TARGET_N} vs {TARGET_N}: about {scaled:.0f} s, {verdict} the "
        f"target of {TARGET_S:.0f} s (features scale linearly; FPD and KPD grow faster, up to "
        "their caps of 50000 and 5000 showers per draw: only a full-size run measures them)"
    )
    print(result.summary())


if __name__ == "__main__":
    main()
