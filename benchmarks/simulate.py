"""Benchmark of `caloforge simulate`: throughput and memory while writing.

Speed: clic-angle-51 electrons at 100-200 GeV written to a canonical file (gzip), with one
process and with the default number of workers, side by side in one run; the median of
`--repeats` runs is reported against the target of 300 showers/s on a 2-core machine.

Memory: the resident memory of the writing process and its workers, sampled while
`--memory-n` showers are streamed to disk; flat means the last samples are no larger than
the early ones (after warm-up).

    python benchmarks/simulate.py                          # speed + a 20k-shower memory trace
    python benchmarks/simulate.py --memory-n 1000000 --memory-geometry lhcb-30
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from caloforge._processes import default_workers
from caloforge.simulation.run import simulate_to_file

TARGET_SHOWERS_PER_S = 300.0


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, MiB (Linux /proc)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        stack.extend(int(c) for c in children)
    return total / 1024.0


def time_simulation(geometry: str, n: int, workers: int, folder: Path, repeats: int) -> list[float]:
    rates = []
    for r in range(repeats):
        out = folder / f"speed-{workers}-{r}.h5"
        start = time.perf_counter()
        simulate_to_file(out, geometry=geometry, n=n, seed=r, workers=workers)
        rates.append(n / (time.perf_counter() - start))
        out.unlink()
    return rates


def memory_trace(
    geometry: str, n: int, folder: Path, interval: float = 1.0
) -> list[tuple[float, float]]:
    """(seconds, MiB) samples while simulating `n` showers into one file."""
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    start = time.perf_counter()

    def sample() -> None:
        while not done.wait(interval):
            samples.append((time.perf_counter() - start, rss_mib(os.getpid())))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out = folder / "memory.h5"
    try:
        simulate_to_file(out, geometry=geometry, n=n, seed=1, progress=True)
    finally:
        done.set()
        thread.join()
    size = out.stat().st_size
    out.unlink()
    print(f"  file size: {size / 1e9:.2f} GB ({size / n / 1e3:.1f} kB/shower)")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--geometry", default="clic-angle-51")
    parser.add_argument("--n", type=int, default=2048, help="showers per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-n", type=int, default=20_000)
    parser.add_argument("--memory-geometry", default="clic-angle-51")
    parser.add_argument("--folder", help="where to write (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        workers = default_workers()
        print(
            f"simulate {args.geometry}, default energies/angles, {args.n} showers per run, "
            f"{args.repeats} runs, gzip output; cores available: {workers}"
        )
        one = time_simulation(args.geometry, args.n, 1, folder, args.repeats)
        many = time_simulation(args.geometry, args.n, workers, folder, args.repeats)
        m1, mw = statistics.median(one), statistics.median(many)
        print(
            f"  1 worker : median {m1:7.1f} showers/s  (runs: {', '.join(f'{r:.0f}' for r in one)})"
        )
        runs = ", ".join(f"{r:.0f}" for r in many)
        print(f"  {workers} workers: median {mw:7.1f} showers/s  (runs: {runs})")
        print(
            f"  speed-up {mw / m1:.2f}x; target {TARGET_SHOWERS_PER_S:.0f} showers/s: "
            f"{mw / TARGET_SHOWERS_PER_S:.2f}x of target -> "
            f"{'MET' if mw >= TARGET_SHOWERS_PER_S else 'NOT MET'}"
        )

        if args.memory_n > 0:
            print(f"memory while writing {args.memory_n} {args.memory_geometry} showers:")
            samples = memory_trace(args.memory_geometry, args.memory_n, folder)
            if len(samples) >= 4:
                quarter = len(samples) // 4
                early = max(s for _, s in samples[quarter : 2 * quarter])
                late = max(s for _, s in samples[-quarter:])
                for t, s in samples[:: max(1, len(samples) // 8)]:
                    print(f"  t={t:7.1f} s  RSS {s:8.1f} MiB")
                print(
                    f"  peak RSS {max(s for _, s in samples):.1f} MiB; second quarter max "
                    f"{early:.1f} MiB, last quarter max {late:.1f} MiB -> growth "
                    f"{late - early:+.1f} MiB "
                    f"({'flat' if late <= early * 1.05 + 16 else 'GROWING'})"
                )
            else:
                print("  run too short to sample; raise --memory-n")


if __name__ == "__main__":
    main()
