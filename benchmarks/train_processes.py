"""Training throughput of one process against `--processes N` ranks at the same global batch.

    python benchmarks/train_processes.py [--family gan3d] [--batch-size 32] [--steps 12]
                                         [--repeats 3] [--processes 2] [--showers 1200]

Runs `caloforge train` as a user would, alternately as one process (torch's default threads:
every core) and as N ranks (`--processes N`, one thread each), each run in a fresh folder on
the same simulated clic-25 showers, and reads the training rate each run logs itself (the
`epoch` record of metrics.jsonl: showers per second over the steps, without start-up and the
physics check). Prints every run, the medians and their ratio (issue 21's target: one
process at >= 90 % of the ranks).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from caloforge.simulation.run import simulate_to_file


def rate(run: Path) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("event") == "epoch"]
    return float(epochs[-1]["showers_per_s"])


def train(data: Path, run: Path, args: argparse.Namespace, processes: int) -> float:
    command = [
        sys.executable,
        "-m",
        "caloforge",
        "train",
        "--config",
        args.family,
        "--data",
        str(data),
        "--processes",
        str(processes),
        "--out",
        str(run),
        f"training.batch_size={args.batch_size}",
        f"training.max_steps={args.steps}",
        "training.check_showers=16",
        "training.log_every=1",
    ]
    subprocess.run(command, check=True, capture_output=True)
    return rate(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="gan3d")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--showers",
        type=int,
        default=1200,
        help="simulated (80 %% train): the rate read is "
        "the last epoch's, so give one epoch at least --steps batches",
    )
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "showers.h5"
        simulate_to_file(data, geometry="clic-25", n=args.showers, energy=(10.0, 200.0), seed=1)
        rates: dict[int, list[float]] = {1: [], args.processes: []}
        for repeat in range(args.repeats):
            for processes in (1, args.processes):
                start = time.perf_counter()
                value = train(data, Path(tmp) / f"run-{repeat}-{processes}", args, processes)
                rates[processes].append(value)
                print(
                    f"repeat {repeat}: {processes} process(es): {value:.1f} showers/s "
                    f"({time.perf_counter() - start:.0f} s with start-up)",
                    flush=True,
                )
    one, many = statistics.median(rates[1]), statistics.median(rates[args.processes])
    print(
        f"{args.family}, global batch {args.batch_size}: one process {one:.1f} showers/s, "
        f"{args.processes} ranks {many:.1f} showers/s (medians of {args.repeats}); "
        f"one process at {one / many:.0%} of the ranks"
    )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
