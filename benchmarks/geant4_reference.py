"""Make caloforge's Geant4 reference sets, reproducibly and resumably.

    python benchmarks/geant4_reference.py clic25-10-200 [--workers 2] [--out FOLDER]
    python benchmarks/geant4_reference.py clic25-10-200 --start 7 --parts 10   # held out
    python benchmarks/geant4_reference.py --list

Each set is a recipe (geometry, conditions, seed, size) run by `caloforge simulate --engine
geant4`. A set is made in parts of `--part` showers, each written atomically as
`<out>/<set>/part-NNNN.h5` (showers k*part .. (k+1)*part - 1 of the seed's sequence), so a
run stopped at any moment loses at most the part in progress and the next run goes on from
there. When every part is there they are joined into `<out>/<set>.h5`, identical to one
uninterrupted run, since every shower depends only on the seed and its index.

The files stay out of git (about 4 KB a shower with gzip; 50 000 showers make 200 MB); this
recipe makes them again. The provenance of each file (Geant4 version, physics list, range
cut, data files) is in its `simulation` attribute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from caloforge.data.canonical import PROVENANCE_KEY, ShowerWriter, open_canonical
from caloforge.data.source import iter_batches
from caloforge.errors import CaloforgeError
from caloforge.simulation.run import simulate_to_file


@dataclass(frozen=True)
class Recipe:
    geometry: str
    n: int
    seed: int
    energy: tuple[float, float]
    theta: tuple[float, float] | None = None
    note: str = ""


RECIPES = {
    "clic25-10-200": Recipe("clic-25", 50_000, 101, (10.0, 200.0), note="the main training set"),
    "clic25-2-500": Recipe("clic-25", 20_000, 102, (2.0, 500.0)),
    "clic-angle51-100-200": Recipe(
        "clic-angle-51", 10_000, 103, (100.0, 200.0), theta=(60.0, 120.0)
    ),
    "lhcb30": Recipe("lhcb-30", 20_000, 104, (1.0, 100.0)),
}


def make(
    name: str, out: Path, part: int, workers: int, parts: int | None, start: int = 0
) -> Path | None:
    """Make the missing parts of a set from part `start` on (at most `parts` of them), then
    join them if all are there; returns the joined file, or None while parts are missing.

    A held-out set beside a training set is parts `start`.. of the same sequence: the
    showers differ from the training parts' and need none of them made first."""
    recipe = RECIPES[name]
    folder = out / name
    n_parts = -(-recipe.n // part)
    made = 0
    for k in range(start, n_parts):
        path = folder / f"part-{k:04d}.h5"
        if path.exists():
            continue
        if parts is not None and made >= parts:
            break
        first = k * part
        size = min(part, recipe.n - first)
        start = time.perf_counter()
        simulate_to_file(
            path,
            geometry=recipe.geometry,
            n=size,
            energy=recipe.energy,
            theta_deg=recipe.theta,
            seed=recipe.seed,
            first_index=first,
            workers=workers,
            engine="geant4",
            progress=True,
        )
        made += 1
        print(
            f"{name}: part {k + 1}/{n_parts} ({size} showers) in "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    missing = [k for k in range(n_parts) if not (folder / f"part-{k:04d}.h5").exists()]
    if missing:
        print(f"{name}: {n_parts - len(missing)}/{n_parts} parts made; run again to go on")
        return None
    return join(sorted(folder.glob("part-*.h5")), out / f"{name}.h5")


def join(paths: list[Path], output: Path) -> Path:
    with open_canonical(paths[0]) as first:
        geometry, producer = first.geometry, first.attrs.get("producer", "")
        provenance = first.attrs.get(PROVENANCE_KEY)
    with ShowerWriter(
        output,
        geometry,
        producer=f"geant4_reference.py join of {len(paths)} parts: {producer}",
        provenance=None if provenance is None else json.loads(provenance),
    ) as writer:
        for path in paths:
            with open_canonical(path) as source:
                for batch in iter_batches(source, 1000):
                    writer.write(batch)
    print(f"wrote {output} ({writer.n} showers)")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="*", help=f"sets to make: {', '.join(RECIPES)}")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("CALOFORGE_DATA", "~/caloforge-data")).expanduser() / "geant4",
        help="folder of the sets (default $CALOFORGE_DATA/geant4, else ~/caloforge-data/geant4)",
    )
    parser.add_argument("--part", type=int, default=1000, help="showers per part file")
    parser.add_argument("--parts", type=int, help="make at most this many parts, then stop")
    parser.add_argument(
        "--start", type=int, default=0, help="first part to make (earlier parts are left alone)"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if args.list or not args.sets:
        for name, r in RECIPES.items():
            print(f"{name}: {r}")
        return 0
    try:
        for name in args.sets:
            if name not in RECIPES:
                raise CaloforgeError(f"unknown set '{name}'; sets: {', '.join(RECIPES)}")
            if args.start < 0:
                raise CaloforgeError(f"--start must be 0 or more, not {args.start}")
            make(name, args.out, args.part, args.workers, args.parts, args.start)
    except CaloforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
