"""Reading showers from a canonical file: HDF5's own filters against caloforge's chunk reader.

    python benchmarks/read_speed.py [--showers 2000] [--batch 128] [--repeats 7]

Simulates clic-25 showers into a file as `caloforge simulate` writes it, then reads, round
robin in one run, (a) a training batch of scattered rows (a shuffled batch, as
`ShowerStream` takes it) and (b) a contiguous block (as `validate` and `convert` read), once
through h5py's fancy indexing / slicing and once through `deflate.read_chunks`. Prints the
medians in ms and ms per shower, and the ratios; the showers read are checked equal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from caloforge.data import deflate
from caloforge.simulation.run import simulate_to_file


def timed(read: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = read()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--showers", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}; isal: {deflate.deflater() is not None}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "showers.h5"
        simulate_to_file(path, geometry="clic-25", n=args.showers, energy=(10.0, 200.0), seed=1)
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(args.showers, args.batch, replace=False))
        block = slice(0, args.batch)
        with h5py.File(path) as f:
            showers = f["showers"]
            cases = {
                "scattered": (lambda: showers[rows], lambda: deflate.read_chunks(showers, rows)),
                "contiguous": (
                    lambda: showers[block],
                    lambda: deflate.read_chunks(showers, np.arange(args.batch)),
                ),
            }
            results: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in cases}
            for _ in range(args.repeats):  # round robin: the load moves both alike
                for name, (hdf5, here) in cases.items():
                    t_hdf5, a = timed(hdf5)
                    t_here, b = timed(here)
                    assert np.array_equal(a, b), name
                    results[name][0].append(t_hdf5)
                    results[name][1].append(t_here)
    for name, (hdf5, here) in results.items():
        a, b = statistics.median(hdf5), statistics.median(here)
        print(
            f"{name:10s} {args.batch} showers: h5py {a * 1e3:.1f} ms "
            f"({a / args.batch * 1e3:.3f} ms/shower), read_chunks {b * 1e3:.1f} ms "
            f"({b / args.batch * 1e3:.3f} ms/shower): {a / b:.2f}x (medians of {args.repeats})"
        )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
