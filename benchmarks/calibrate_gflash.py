"""Calibrate the parametrized (gflash) engine to the Geant4 engine, per material family.

    python benchmarks/calibrate_gflash.py sample clic-25      # Geant4 showers at fixed energies
    python benchmarks/calibrate_gflash.py fit clic-25         # fit, write the package's table
    python benchmarks/calibrate_gflash.py compare clic-25     # before/after, per energy

`sample` makes Geant4 showers at a ladder of fixed energies (the geometry's other conditions
drawn as `simulate` draws them) into `$CALOFORGE_DATA/geant4/calibration/` (default
~/caloforge-data), one file per energy, each made once. `fit` adjusts the correction factors
of `caloforge.simulation.calibration` so that the parametrized showers match the first half
of those samples in the quantities the issue names (longitudinal profile and its
fluctuations, transverse width per layer, response, resolution; `caloforge.simulation.
calibrate`), and writes the fitted table into the package. `compare` holds the bare and the
calibrated engine to the second half.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from caloforge.data.canonical import open_canonical
from caloforge.geometry import load_geometry
from caloforge.simulation import calibrate
from caloforge.simulation.calibration import TABLES, Calibration, family_of, for_geometry
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


def references(geometry: str, fold: str) -> dict[float, calibrate.Reference]:
    """The Geant4 samples: the first half of each file (`fit`) or the second (`held-out`)."""
    out = {}
    for energy in LADDERS[geometry]:
        path = sample_path(geometry, energy)
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `sample {geometry}` first")
        with open_canonical(path) as source:
            batch = source.read(0, len(source))
        half = len(batch) // 2
        part = batch.subset(slice(0, half) if fold == "fit" else slice(half, None))
        out[energy] = calibrate.Reference(part.showers, dict(part.conditions))
    return out


def fit(geometry_name: str, n: int, rounds: int, out: Path | None, resume: bool) -> Calibration:
    geometry = load_geometry(geometry_name)
    refs = references(geometry_name, "fit")
    start = time.perf_counter()
    result, report = calibrate.fit(
        geometry,
        refs,
        n=n,
        rounds=rounds,
        start=for_geometry(geometry) if resume else None,
        fitted_on=(
            f"Geant4 engine ({geometry_name}, energies {', '.join(f'{e:g}' for e in refs)} GeV,"
            f" {len(next(iter(refs.values())).showers)} showers each; seed {SAMPLE_SEED})"
        ),
    )
    report["seconds"] = time.perf_counter() - start
    print(json.dumps(report, indent=1))
    path = out or TABLES / f"{family_of(geometry)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace(result, family=family_of(geometry)).to_json())
    print(f"wrote {path}:\n{result.to_json()}")
    return result


def compare(geometry_name: str, n: int) -> None:
    geometry = load_geometry(geometry_name)
    held_out = references(geometry_name, "held-out")
    rows = {
        "bare": calibrate.compare(geometry, Calibration(), held_out, n=n),
        "calibrated": calibrate.compare(geometry, for_geometry(geometry), held_out, n=n),
    }
    print(f"{geometry_name}: the parametrized engine against held-out Geant4 showers")
    print("(relative differences; share and width over the layers above 1 %: RMS, max, in tol.)")
    columns = (
        "response",
        "resolution",
        "share_rms",
        "share_max",
        "share_within",
        "width_rms",
        "width_max",
        "width_within",
    )
    print(f"{'E GeV':>6} {'engine':>10} " + " ".join(f"{c:>12}" for c in columns))
    for label, table in rows.items():
        for row in table:
            print(
                f"{row['energy']:6g} {label:>10} " + " ".join(f"{row[c]:+12.3f}" for c in columns)
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("sample", "fit", "compare"))
    parser.add_argument("geometry", choices=sorted(LADDERS))
    parser.add_argument(
        "--n",
        type=int,
        help="showers per energy (sample: Geant4, 300; "
        "fit: parametrized per evaluation, 150; compare: 400)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="fit: passes over the stages")
    parser.add_argument("--out", type=Path, help="fit: write the table here, not into the package")
    parser.add_argument(
        "--resume", action="store_true", help="fit: start from the package's table, not bare"
    )
    args = parser.parse_args(argv)
    if args.command == "sample":
        sample(args.geometry, args.n or 300, args.workers)
    elif args.command == "fit":
        fit(args.geometry, args.n or 150, args.rounds, args.out, args.resume)
    else:
        compare(args.geometry, args.n or 400)
    return 0


if __name__ == "__main__":
    sys.exit(main())
