"""The two simulation engines side by side on one geometry: the README's table.

    python benchmarks/engines_side_by_side.py [--geometry clic-25] [--energies 10 50 100]
        [--n 100] [--markdown]

For each energy, showers of the parametrized engine (gflash) and of Geant4 (same geometry,
conditions and seed; one process each): the response E_vis/E and its spread, the depth of
the shower's centre of energy, the share of the visible energy in the first 8 layers, the
transverse width (RMS in x) at layers 5 and 12, the cells above zero, and the engine's speed
on one core (start-up included). Only grid geometries with per-layer readout.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from caloforge.geometry import load_geometry
from caloforge.simulation.conditions import ConditionRanges, sample_conditions
from caloforge.simulation.geant4 import prepare, simulate_geant4
from caloforge.simulation.simulator import ShowerSimulator
from caloforge.validation.features import centre_and_width, longitudinal_profile, response

COLUMNS = (
    ("E_vis/E", "{:.4f}"),
    ("sigma/mu", "{:.3f}"),
    ("depth mm", "{:.1f}"),
    ("layers 1-8", "{:.3f}"),
    ("RMS x L5 mm", "{:.2f}"),
    ("RMS x L12 mm", "{:.2f}"),
    ("cells > 0", "{:.0f}"),
    ("showers/s", "{:.1f}"),
)


def describe(showers: np.ndarray, energy: np.ndarray, geometry, rate: float) -> list[float]:
    r = response(showers, energy)
    profile = longitudinal_profile(showers)
    depth_centre, _ = centre_and_width(showers, geometry, 2)
    _, width = centre_and_width(showers, geometry, 0, per_layer=True)
    weights = profile / profile.sum(axis=0, keepdims=True)
    return [
        float(r.mean()),
        float(r.std() / r.mean()),
        float(depth_centre.mean()),
        float((profile[:, :8].sum(axis=1) / profile.sum(axis=1)).mean()),
        float((width[:, 4] * weights[:, 4]).sum()),
        float((width[:, 11] * weights[:, 11]).sum()),
        float((showers > 0).reshape(len(showers), -1).sum(axis=1).mean()),
        rate,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--geometry", default="clic-25")
    parser.add_argument("--energies", type=float, nargs="+", default=[10.0, 50.0, 100.0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    geometry = load_geometry(args.geometry)
    setup = prepare()
    rows = []
    for energy in args.energies:
        ranges = ConditionRanges.for_geometry(geometry, (energy, energy))
        rng = np.random.default_rng(args.seed)
        conditions = sample_conditions(geometry, ranges, args.n, rng)
        start = time.perf_counter()
        gflash = ShowerSimulator(geometry).simulate(conditions, rng)
        rate = args.n / (time.perf_counter() - start)
        rows.append((energy, "gflash", describe(gflash, conditions["energy"], geometry, rate)))
        start = time.perf_counter()
        batches = list(
            simulate_geant4(geometry, ranges, args.n, setup=setup, seed=args.seed, workers=1)
        )
        rate = args.n / (time.perf_counter() - start)
        showers = np.concatenate([b.showers for b, _ in batches])
        energy_g4 = np.concatenate([b.energy for b, _ in batches])
        rows.append((energy, "geant4", describe(showers, energy_g4, geometry, rate)))
    header = ["E (GeV)", "engine", *(name for name, _ in COLUMNS)]
    print(f"{geometry.name}, {args.n} electrons per energy and engine; Geant4: {setup.describe()}")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
    for energy, engine, values in rows:
        cells = [f"{energy:g}", engine] + [
            fmt.format(v) for (_, fmt), v in zip(COLUMNS, values, strict=True)
        ]
        print(("| " + " | ".join(cells) + " |") if args.markdown else "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
