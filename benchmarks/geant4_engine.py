"""What the Python side of `simulate --engine geant4` costs over Geant4's bare event loop.

    python benchmarks/geant4_engine.py [--energies 10 50 100] [--n 60] [--rounds 3]

Both contenders run clic-25 electrons at one energy with every core busy, timed from start
to end as a user would wait for them (start-up included), in turn, round after round:

- `c++`: the bare event loop, the same compiled application (app.cc built with
  CF_BENCH_MAIN), one process per core, each simulating its share with no Python at all;
- `engine`: `caloforge.simulation.run.simulate_to_file(engine="geant4")` with one worker
  per core: conditions and seeds drawn in Python, batches sent to the workers, cells sent
  back, densified and written to a gzip HDF5 file.

Prints showers/s per energy (medians over the rounds) and the engine's overhead. Run it on
a quiet machine: the ratio is only as good as the machine is idle.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from caloforge._processes import default_workers
from caloforge.simulation.geant4 import build
from caloforge.simulation.geant4.engine import prepare
from caloforge.simulation.run import simulate_to_file


def bare_loop(executable: Path, energy: float, n: int, processes: int, env: dict) -> float:
    start = time.perf_counter()
    share = [n // processes + (k < n % processes) for k in range(processes)]
    running = [
        subprocess.Popen([str(executable), str(energy), str(m)], env=env, stdout=subprocess.DEVNULL)
        for m in share
    ]
    for proc in running:
        if proc.wait() != 0:
            raise RuntimeError(f"the bare loop failed with exit code {proc.returncode}")
    return n / (time.perf_counter() - start)


def engine(energy: float, n: int, workers: int, folder: Path, seed: int) -> float:
    out = folder / f"engine-{energy:g}-{seed}.h5"
    start = time.perf_counter()
    simulate_to_file(
        out,
        geometry="clic-25",
        n=n,
        energy=(energy, energy),
        seed=seed,
        workers=workers,
        engine="geant4",
    )
    rate = n / (time.perf_counter() - start)
    out.unlink()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--energies", type=float, nargs="+", default=[10.0, 50.0, 100.0])
    parser.add_argument("--n", type=int, default=60, help="showers per contender and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    setup = prepare()
    executable = build.build(setup.installation, executable=True)
    env = {**os.environ, **setup.environment}
    workers = default_workers()
    print(f"{setup.describe()}; {workers} processes per contender; {args.n} showers each")
    print(f"{'E (GeV)':>8} {'c++ showers/s':>14} {'engine showers/s':>17} {'overhead':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for energy in args.energies:
            bare, ours = [], []
            for k in range(args.rounds):
                bare.append(bare_loop(executable, energy, args.n, workers, env))
                ours.append(engine(energy, args.n, workers, Path(tmp), seed=k))
            b, o = statistics.median(bare), statistics.median(ours)
            print(f"{energy:8g} {b:14.2f} {o:17.2f} {100 * (b / o - 1):8.1f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
