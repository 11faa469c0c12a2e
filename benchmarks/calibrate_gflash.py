"""Calibrate the parametrized (gflash) engine to the Geant4 engine, per material family.

    python benchmarks/calibrate_gflash.py sample clic-25      # Geant4 showers at fixed energies
    python benchmarks/calibrate_gflash.py fit clic-25         # fit, write the package's table
    python benchmarks/calibrate_gflash.py compare clic-25     # before/after, per energy

`sample` makes Geant4 showers at a ladder of fixed energies (the geometry's other conditions
drawn as `simulate` draws them) into `$CALOFORGE_DATA/geant4/calibration/` (default
~/caloforge-data), one file per energy, each made once. `fit` adjusts the correction factors
of `caloforge.simulation.calibration` so that the parametrized showers match those samples
in the quantities the issue names (longitudinal profile and its fluctuations, transverse
width per layer, response, resolution), and writes the fitted table into the package.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from caloforge.simulation.run import simulate_to_file

LADDERS = {
    "clic-25": (2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0),
    "lhcb-30": (2.0, 5.0, 10.0, 20.0, 50.0, 100.0),
}
SAMPLE_SEED = 2001


def data_folder() -> Path:
    root = Path(os.environ.get("CALOFORGE_DATA", "~/caloforge-data")).expanduser()
    return root / "geant4" / "calibration"


def sample_path(geometry: str, energy: float) -> Path:
    return data_folder() / f"{geometry}-{energy:g}GeV.h5"


def sample(geometry: str, n: int, workers: int) -> None:
    for energy in LADDERS[geometry]:
        path = sample_path(geometry, energy)
        if path.exists():
            continue
        simulate_to_file(
            path,
            geometry=geometry,
            n=n,
            energy=(energy, energy),
            seed=SAMPLE_SEED,
            workers=workers,
            engine="geant4",
            progress=True,
        )
        print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("sample",))
    parser.add_argument("geometry", choices=sorted(LADDERS))
    parser.add_argument("--n", type=int, default=300, help="Geant4 showers per energy")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "sample":
        sample(args.geometry, args.n, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
