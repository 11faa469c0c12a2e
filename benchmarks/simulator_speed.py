"""The parametrized simulator against a frozen earlier version of itself, side by side.

The reference is the package as it was at a git commit (`--reference`, default: the last
commit before the simulator was restructured for issue 21), unpacked with `git archive` into
a temporary folder. Each run is a child process (`PYTHONPATH` picks the version), timed
around the call alone, not the interpreter's start: the two versions alternate run by run
(which goes first alternates too), so that a machine whose load drifts slows both alike.
Reported: medians of showers/s (wall clock) and of CPU milliseconds per shower (the process
and its workers; on a machine shared with other jobs the wall clock follows the share of the
processor the run gets, the CPU time much less), the ratios of the medians, the load average.

Modes: `file`, `caloforge simulate` end to end (default conditions, gzip, the workers as
given; 0 = the default, one per core); `memory`, `ShowerSimulator.simulate` on batches of 256
in one process, no file.

    python benchmarks/simulator_speed.py                      # clic-25 and clic-angle-51
    python benchmarks/simulator_speed.py --geometry lhcb-30 --modes memory --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REFERENCE = "36fc763195b3ccda9dc4a63779f2b5ab84b30431"
ROOT = Path(__file__).resolve().parents[1]
# Issue 21's targets for the new version against the reference, end to end (file mode).
TARGET_RATIO = 2.0
TARGET_RATE = {"clic-25": 600.0}

# CPU time of the process tree: the workers of a forkserver pool are the server's children,
# which this process never waits for, so their time is sampled from /proc while they run.
SAMPLE_S = 0.05


def tree_cpu_seconds(pid: int, last: dict[int, float]) -> None:
    """Update `last` with the CPU seconds of every descendant of `pid` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if p != pid:
            last[p] = (int(fields[11]) + int(fields[12])) / tick
        stack.extend(int(c) for c in children)


def child(mode: str, geometry: str, n: int, workers: int, seed: int) -> None:
    """One timed run with the caloforge that Python imports; prints a JSON line."""
    import threading
    import time

    import numpy as np

    import caloforge

    descendants: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_S):
            tree_cpu_seconds(os.getpid(), descendants)

    if mode == "file":
        from caloforge.simulation.run import simulate_to_file

        def work() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "s.h5"
                simulate_to_file(out, geometry=geometry, n=n, seed=seed, workers=workers or None)
    else:
        from caloforge.geometry import load_geometry
        from caloforge.simulation.conditions import ConditionRanges, sample_conditions
        from caloforge.simulation.simulator import ShowerSimulator

        geo = load_geometry(geometry)
        ranges = ConditionRanges.for_geometry(geo)
        simulator = ShowerSimulator(geo)

        def work() -> None:
            for start in range(0, n, 256):
                rng = np.random.default_rng([seed, start])
                conditions = sample_conditions(geo, ranges, min(256, n - start), rng)
                simulator.simulate(conditions, rng)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    work()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done.set()
    thread.join()
    cpu += sum(descendants.values())
    result = {"rate": n / wall, "cpu_ms": 1e3 * cpu / n, "module": caloforge.__file__}
    print(json.dumps(result))


def unpack(commit: str, folder: Path) -> Path:
    """The package's source at `commit`, unpacked under `folder`; returns its src path."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def run_child(src: Path, mode: str, geometry: str, n: int, workers: int, seed: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = [sys.executable, __file__, "--child", mode, geometry, str(n), str(workers), str(seed)]
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if not result["module"].startswith(str(src)):
        raise RuntimeError(f"the child imported {result['module']}, not the copy in {src}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--geometry", nargs="+", default=["clic-25", "clic-angle-51"])
    parser.add_argument("--modes", nargs="+", default=["file", "memory"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 0])
    parser.add_argument("--n", type=int, default=1024, help="showers per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference", default=REFERENCE, help="git commit of the reference")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, geometry, n, workers, seed = args.child
        child(mode, geometry, int(n), int(workers), int(seed))
        return

    with tempfile.TemporaryDirectory() as tmp:
        versions = {"reference": unpack(args.reference, Path(tmp)), "current": ROOT / "src"}
        print(f"reference: {args.reference[:10]}; current: {ROOT / 'src'} (working tree)")
        print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
        configs = [
            (mode, geometry, workers)
            for geometry in args.geometry
            for mode in args.modes
            for workers in (args.workers if mode == "file" else [1])
        ]
        for mode, geometry, workers in configs:
            runs: dict[str, list[dict]] = {"reference": [], "current": []}
            for r in range(args.repeats):
                order = ["reference", "current"] if r % 2 == 0 else ["current", "reference"]
                for name in order:
                    runs[name].append(
                        run_child(versions[name], mode, geometry, args.n, workers, seed=r)
                    )
            rate = {k: statistics.median(x["rate"] for x in v) for k, v in runs.items()}
            cpu = {k: statistics.median(x["cpu_ms"] for x in v) for k, v in runs.items()}
            ratio = rate["current"] / rate["reference"]
            label = "default" if workers == 0 else str(workers)
            print(
                f"{geometry:14s} {mode:6s} workers {label:7s}: reference {rate['reference']:7.1f}"
                f" showers/s ({cpu['reference']:.2f} CPU ms/shower), current "
                f"{rate['current']:7.1f} ({cpu['current']:.2f}); ratio {ratio:.2f}x wall, "
                f"{cpu['reference'] / cpu['current']:.2f}x CPU; load {os.getloadavg()[0]:.1f}"
            )
            runs_text = "  ".join(
                f"{k}: " + ", ".join(f"{x['rate']:.0f}" for x in v) for k, v in runs.items()
            )
            print(f"    runs (showers/s) {runs_text}")
            if mode == "file" and workers == 0:
                target = TARGET_RATE.get(geometry)
                verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
                line = f"    target >= {TARGET_RATIO:.0f}x end to end: {verdict}"
                if target is not None:
                    line += (
                        f"; >= {target:.0f} showers/s: "
                        f"{'MET' if rate['current'] >= target else 'NOT MET'} (this machine, now)"
                    )
                print(line)
        print(f"load average after: {os.getloadavg()}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
