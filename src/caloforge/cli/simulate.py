"""`caloforge simulate`: showers from the parametrized engine or Geant4."""

from __future__ import annotations

import argparse

from caloforge.cli.common import DefaultsFormatter, parse_range, seed
from caloforge.errors import CaloforgeError


def add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate showers (embedded parametrization, or Geant4)",
        formatter_class=DefaultsFormatter,
        description=(
            "Simulate electromagnetic showers and write a canonical shower file. Two engines: "
            "gflash, the embedded GFlash-style parametrization (fast, approximate), and "
            "geant4, Monte Carlo with caloforge's own Geant4 application (compiled on first "
            "use; Geant4 from geant4-config on the PATH, else the calzone wheel of "
            "`pip install caloforge[geant4]` with headers from CALOFORGE_GEANT4_INCLUDE). "
            "Without Geant4's data files the geant4 engine runs a data-free electromagnetic "
            "list (option 0 with its data-driven models replaced: see the README). "
            "Ranges are LOW:HIGH or one VALUE."
        ),
    )
    p.add_argument(
        "--engine",
        choices=("gflash", "geant4"),
        default="gflash",
        help="gflash (default): parametrized; geant4: Monte Carlo",
    )
    p.add_argument(
        "--physics-list",
        help="geant4 only: data-free, em-standard (option 0), em-standard-opt1..4 or a Geant4 "
        "reference list; default em-standard with data files, else data-free",
    )
    p.add_argument(
        "--range-cut",
        type=float,
        help="geant4 only: production range cut, mm (default 0.7)",
    )
    p.add_argument(
        "--calibration",
        choices=("auto", "none"),
        default="auto",
        help="gflash only: auto (default) applies the package's correction table fitted to "
        "Geant4 for the geometry's material family; none runs the bare parametrization",
    )
    p.add_argument(
        "--geometry",
        default="clic-25",
        help="preset (clic-25, clic-angle-51, lhcb-30) or a geometry YAML file",
    )
    p.add_argument("--n", type=int, required=True, help="number of showers")
    p.add_argument(
        "--energy",
        type=parse_range,
        help="primary energy range, GeV (default: the geometry's: 2:500 for clic-25, 100:200 "
        "for clic-angle-51, 1:100 for lhcb-30)",
    )
    p.add_argument(
        "--spectrum",
        choices=("uniform", "inverse"),
        help="energy spectrum: flat, or 1/E (log-uniform; default for lhcb-30)",
    )
    p.add_argument(
        "--theta",
        type=parse_range,
        help="polar angle range, degrees (geometries with an angle; default: the geometry's, "
        "60:120 for clic-angle-51)",
    )
    p.add_argument(
        "--point",
        type=parse_range,
        help="entry point range for x and y, mm (lhcb-30; default: the geometry's, -5:5)",
    )
    p.add_argument(
        "--particle",
        choices=("electron", "positron", "photon"),
        default="electron",
        help="primary particle (positron: geant4 only)",
    )
    p.add_argument("--seed", type=seed, default=0, help="same seed, same showers")
    p.add_argument(
        "--batch-size",
        type=int,
        help="showers simulated per step (default 256 for gflash, 8 for geant4)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="processes simulating in parallel (default: one per core, at most 8); "
        "the showers do not depend on it",
    )
    p.add_argument(
        "--compression",
        choices=("gzip", "lzf", "none"),
        default="gzip",
        help="HDF5 compression of the cells: gzip (smallest), lzf (faster) or none",
    )
    p.add_argument(
        "--append", action="store_true", help="append to an existing file made the same way"
    )
    p.add_argument("-o", "--output", required=True, help="output canonical HDF5 file")
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from caloforge._files import check_output
    from caloforge._processes import max_workers
    from caloforge.data.summary import print_summary, summarize
    from caloforge.simulation.run import simulate_to_file

    for option, value in (("--batch-size", args.batch_size), ("--workers", args.workers)):
        if value is not None and value <= 0:
            raise CaloforgeError(f"{option} must be a positive integer, got {value}")
    if args.workers is not None and args.workers > max_workers():
        raise CaloforgeError(
            f"--workers {args.workers}: at most {max_workers()} (four per core of this machine)"
        )
    if Path(args.geometry).is_file():  # a geometry YAML is an input: never the output
        check_output(args.output, inputs=[args.geometry], option="-o")
    path = simulate_to_file(
        args.output,
        geometry=args.geometry,
        n=args.n,
        energy=args.energy,
        spectrum=args.spectrum,
        theta_deg=args.theta,
        point=args.point,
        particle=args.particle,
        seed=args.seed,
        batch_size=args.batch_size,
        compression=args.compression,
        append=args.append,
        progress=True,
        workers=args.workers,
        engine=args.engine,
        physics_list=args.physics_list,
        range_cut_mm=args.range_cut,
        calibration=args.calibration,
    )
    print_summary(summarize(path))
    return 0
