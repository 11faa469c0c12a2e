"""Time a full `caloforge validate --protocol calochallenge` run on clic-25 showers.

Target (issue 22): 20 000 against 20 000 clic-25 showers within 30 minutes on 2 cores. The
embedded simulator makes three sets of --n showers (reference, generated with a 5 % energy
scale, second reference); the protocol then runs with the recipe's classifiers
(--epochs, default the recipe's 50), stage by stage (the run's timings_s), and the cost of each
stage is extrapolated to --target showers: the histograms and distances linearly in N (FPD and
KPD draw fixed sizes: constant), the classifiers linearly in N and in epochs.

    python benchmarks/calochallenge_protocol.py --n 2000 --epochs 2 --target 20000

On a loaded machine the seconds are inflated; the printout says which stages dominate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Stages whose cost does not grow with the number of showers (fixed draw sizes).
CONSTANT = ("fpd", "kpd")


def simulate(path: Path, n: int, seed: int) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "caloforge",
            "simulate",
            "--geometry",
            "clic-25",
            "--n",
            str(n),
            "--energy",
            "10:200",
            "--seed",
            str(seed),
            "-o",
            str(path),
            "--workers",
            "2",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def scaled_copy(source: Path, out: Path, factor: float) -> None:
    """The showers of `source` with every cell multiplied by `factor` (an energy scale)."""
    from caloforge.data.canonical import ShowerWriter
    from caloforge.data.io import open_showers
    from caloforge.data.source import Batch, iter_batches

    with open_showers([str(source)]) as src, ShowerWriter(out, src.geometry) as writer:
        for batch in iter_batches(src, 1000):
            writer.write(Batch(batch.showers * factor, batch.conditions))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="showers per set measured")
    p.add_argument("--epochs", type=int, default=2, help="classifier epochs measured")
    p.add_argument("--target", type=int, default=20000, help="showers per set extrapolated to")
    p.add_argument("--target-epochs", type=int, default=50)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        simulate(d / "ref.h5", args.n, 1)
        simulate(d / "g.h5", args.n, 2)
        simulate(d / "ref2.h5", args.n, 3)
        scaled_copy(d / "g.h5", d / "gen.h5", 1.05)
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "caloforge",
                "validate",
                "--protocol",
                "calochallenge",
                "--reference",
                str(d / "ref.h5"),
                "--generated",
                str(d / "gen.h5"),
                "--second-reference",
                str(d / "ref2.h5"),
                "--out",
                str(d / "report"),
                "--challenge-epochs",
                str(args.epochs),
            ],
            check=True,
        )
        wall = time.perf_counter() - start
        doc = json.loads((d / "report" / "metrics.json").read_text())
    timings = doc["timings_s"]
    scale_n = args.target / args.n
    extrapolated = {}
    for stage, seconds in timings.items():
        factor = 1.0 if stage.removeprefix("floor_") in CONSTANT else scale_n
        if "classifier" in stage:
            factor *= args.target_epochs / args.epochs
        extrapolated[stage] = seconds * factor
    main_only = {k: v for k, v in extrapolated.items() if not k.startswith("floor_")}
    print(
        f"cores: {os.cpu_count()}; measured {args.n} showers per set, {args.epochs} epochs: "
        f"{wall:.0f} s wall (with the floor)"
    )
    for stage, seconds in timings.items():
        print(
            f"  {stage:<28} {seconds:8.1f} s  -> {extrapolated[stage]:9.0f} s at "
            f"{args.target} showers, {args.target_epochs} epochs"
        )
    print(
        f"extrapolated, without the floor: {sum(main_only.values()) / 60:.1f} min "
        f"(classifiers {sum(v for k, v in main_only.items() if 'classifier' in k) / 60:.1f})"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "measured": timings,
                    "wall_s": wall,
                    "extrapolated": extrapolated,
                    "n": args.n,
                    "epochs": args.epochs,
                    "target": args.target,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
