"""The `caloforge` command line: parses arguments and calls the package; nothing more.

A user's mistake (a `CaloforgeError`) prints one line `caloforge: error: ...` and exits with
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from collections.abc import Callable, Sequence

from caloforge import __version__
from caloforge.errors import CaloforgeError

Handler = Callable[[argparse.Namespace], int]


def parse_range(text: str) -> tuple[float, float]:
    """'100:200' -> (100.0, 200.0); '150' -> (150.0, 150.0)."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH or VALUE, got '{text}'") from None
    if len(parts) == 1:
        return (parts[0], parts[0])
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH or VALUE, got '{text}'")
    return (parts[0], parts[1])


# --- simulate -----------------------------------------------------------------------------
def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate showers (embedded parametrization, or Geant4)",
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
    p.add_argument("--energy", type=parse_range, help="primary energy range, GeV")
    p.add_argument(
        "--spectrum",
        choices=("uniform", "inverse"),
        help="energy spectrum: flat, or 1/E (log-uniform; default for lhcb-30)",
    )
    p.add_argument("--theta", type=parse_range, help="polar angle range, degrees")
    p.add_argument("--point", type=parse_range, help="entry point range for x and y, mm (lhcb-30)")
    p.add_argument(
        "--particle",
        choices=("electron", "positron", "photon"),
        default="electron",
        help="primary particle (positron: geant4 only)",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same showers")
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
    p.add_argument("--compression", choices=("gzip", "lzf", "none"), default="gzip")
    p.add_argument("--append", action="store_true", help="append to an existing file")
    p.add_argument("-o", "--output", required=True, help="output canonical HDF5 file")
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from caloforge._files import check_output
    from caloforge.data.summary import print_summary, summarize
    from caloforge.simulation.run import simulate_to_file

    for option, value in (("--batch-size", args.batch_size), ("--workers", args.workers)):
        if value is not None and value <= 0:
            raise CaloforgeError(f"{option} must be a positive integer, got {value}")
    if args.seed < 0:
        raise CaloforgeError(f"--seed must be a non-negative integer, got {args.seed}")
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


# --- convert ----------------------------------------------------------------------------
def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert between shower file formats",
        description=(
            "Convert a shower file (LCD/3DGAN, CaloChallenge, CaloGAN, LHCb npz, canonical) to "
            "the canonical caloforge format, or a canonical file to CaloChallenge (--to)."
        ),
    )
    p.add_argument("input", nargs="+", help="input file(s) or glob; the last path is OUT")
    p.add_argument("--format", help="input format (default: detected)")
    p.add_argument("--to", default="caloforge", help="output format: caloforge or calochallenge")
    p.add_argument("--binning", help="CaloChallenge binning XML (reading, or writing with --to)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.set_defaults(handler=_convert)


def _convert(args: argparse.Namespace) -> int:
    from caloforge.data.convert import convert

    if len(args.input) < 2:
        raise CaloforgeError("convert needs at least one input and an output: convert IN... OUT")
    *inputs, output = args.input
    convert(
        inputs,
        output,
        format=args.format,
        to=args.to,
        binning=args.binning,
        batch_size=args.batch_size,
        progress=True,
    )
    print(f"wrote {output}")
    return 0


# --- inspect ----------------------------------------------------------------------------
def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise shower files",
        description="Print format, shower count, shapes, units, condition ranges, the mean "
        "visible/primary energy ratio and the cell occupancy of each file.",
    )
    p.add_argument("files", nargs="+")
    p.add_argument("--format", help="input format (default: detected)")
    p.add_argument("--binning", help="CaloChallenge binning XML")
    p.add_argument(
        "--max-showers",
        type=int,
        default=10000,
        help="showers read for the energy ratio and occupancy (default 10000)",
    )
    p.set_defaults(handler=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from caloforge.data.summary import print_summary, summarize

    if args.max_showers < 0:
        raise CaloforgeError(f"--max-showers must be >= 0, got {args.max_showers}")
    options = {"binning": args.binning} if args.binning else {}
    for f in args.files:
        print_summary(summarize(f, format=args.format, max_showers=args.max_showers, **options))
    return 0


# --- train ------------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    from caloforge.training.config import preset_names

    p = sub.add_parser(
        "train",
        help="train a model on shower files",
        description=(
            "Train a model family on shower files. The config (configs/<family>.yaml) holds "
            "the model, the preprocessing and the training recipe; KEY=VALUE arguments "
            "override entries by dotted path, e.g. training.batch_size=64 "
            "training.loss.energy=0.2. Runs as one process or under torchrun for "
            "data-parallel training: torchrun --nproc-per-node N -m caloforge train ..."
        ),
    )
    p.add_argument(
        "--config",
        required=True,
        help=f"YAML training config, or a preset name: {', '.join(preset_names())}",
    )
    p.add_argument("--data", required=True, nargs="+", help="shower file(s) or glob")
    p.add_argument("--format", help="input format (default: detected)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from caloforge.devices import shutdown_distributed
    from caloforge.training.config import load_config
    from caloforge.training.trainer import Trainer

    try:
        config = load_config(args.config, args.overrides)
    except UnicodeDecodeError as exc:  # a binary file given as the config
        raise CaloforgeError(
            f"--config {args.config}: not a YAML text file ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        trainer = Trainer(
            config, args.data, args.out, resume=args.resume, progress=True, data_format=args.format
        )
        result = trainer.fit()
    finally:
        shutdown_distributed()
    if trainer.context.is_main:
        check = result.last_check
        summary = (
            f" (last check: response error {check.response_error:.3f}, profile error "
            f"{check.profile_error:.3f})"
            if check is not None
            else ""
        )
        print(f"trained {result.steps} steps, {result.epochs_completed} epoch(s){summary}")
        print(f"run folder: {result.run_dir}; best checkpoint: {result.best_checkpoint}")
    return 0


# --- generate ---------------------------------------------------------------------------
def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate showers from a trained checkpoint",
        description=(
            "Generate showers with a trained model into a canonical file. Conditions are drawn "
            "from ranges (LOW:HIGH or VALUE) or taken one to one from a reference file."
        ),
    )
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint folder, or run folder (its best checkpoint)"
    )
    p.add_argument(
        "--n",
        "--num-showers",
        dest="n",
        type=int,
        help="number of showers (default with --conditions-from: all); under torchrun spell it "
        "--num-showers, as torchrun claims options starting with --n",
    )
    p.add_argument("--energy", type=parse_range, help="primary energy range, GeV")
    p.add_argument("--spectrum", choices=("uniform", "inverse"))
    p.add_argument("--theta", type=parse_range, help="polar angle range, degrees")
    p.add_argument("--point", type=parse_range, help="entry point range for x and y, mm")
    p.add_argument("--conditions-from", help="reuse this file's conditions, one to one")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--backend",
        default="eager",
        choices=("eager", "compiled", "bf16", "int8"),
        help="eager (fp32 reference), compiled (fastest fp32: OpenVINO on the CPU where "
        "installed, else torch.compile), bf16, int8 (CPU, guarded; the guard's choice of "
        "layers is kept in $CALOFORGE_CACHE_DIR or ~/.cache/caloforge for the next run)",
    )
    p.add_argument(
        "--strict", action="store_true", help="refuse conditions outside the model's training range"
    )
    p.add_argument(
        "--no-merge",
        action="store_true",
        help="under torchrun: keep one file per rank (OUT.rankR-of-N.h5) instead of merging",
    )
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    from caloforge.devices import shutdown_distributed
    from caloforge.generation.run import generate_to_file

    try:
        path = generate_to_file(
            args.checkpoint,
            args.output,
            n=args.n,
            energy=args.energy,
            theta_deg=args.theta,
            point=args.point,
            spectrum=args.spectrum,
            conditions_from=args.conditions_from,
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            backend=args.backend,
            strict=args.strict,
            progress=True,
            merge=not args.no_merge,
        )
    finally:
        shutdown_distributed()
    print(f"wrote {path}")
    return 0


# --- validate ---------------------------------------------------------------------------
def _add_validate(sub: argparse._SubParsersAction) -> None:
    from caloforge.validation.config import add_cli_options

    p = sub.add_parser(
        "validate",
        help="compare generated showers with reference (Monte Carlo) showers",
        description=(
            "Compare generated showers with reference showers (any readable format) and write "
            "a report folder: index.html (self-contained), metrics.json and plots/*.png. "
            "Metrics overall and in bins of energy and angle; a verdict per headline metric "
            "against a tolerance. Exit code 0 when the report is written (with --check: 1 "
            "when a headline verdict fails), 2 for bad input."
        ),
    )
    p.add_argument("--reference", required=True, nargs="+", help="reference file(s) or glob")
    p.add_argument("--generated", required=True, nargs="+", help="generated file(s) or glob")
    p.add_argument("--out", required=True, help="report folder (replaced if it holds a report)")
    p.add_argument("--format", help="input format of both sets (default: detected)")
    p.add_argument("--binning", help="CaloChallenge binning XML (for that format)")
    p.add_argument("--config", help="YAML settings: tolerances, bins, subsample, ...")
    # One flag per setting, generated from its declaration in ValidationConfig.
    add_cli_options(p)
    p.add_argument("--check", action="store_true", help="exit 1 when a headline verdict fails")
    p.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from caloforge._files import (
        check_output,
        is_write_failure,
        os_error_text,
        remove_stale_partials,
    )
    from caloforge.validation.config import config_from_cli
    from caloforge.validation.report import validate

    if not Path(args.out).exists():  # an existing one is validate's to judge
        check_output(args.out, folder=True, option="--out")
    remove_stale_partials(args.out)  # report folders of killed runs
    try:
        config = config_from_cli(args, args.config)
    except UnicodeDecodeError as exc:  # a binary file given as the config
        raise CaloforgeError(
            f"--config {args.config}: not a YAML text file ({exc.reason} at byte {exc.start})"
        ) from None
    options = {"binning": args.binning} if args.binning else {}
    try:
        result = validate(
            args.reference,
            args.generated,
            args.out,
            config,
            format=args.format,
            progress=True,
            **options,
        )
    except OSError as exc:  # the report folder's partial is already removed
        if not is_write_failure(exc):
            raise
        raise CaloforgeError(
            f"--out {args.out}: the report could not be written ({os_error_text(exc)})"
        ) from None
    print(result.summary())
    print(f"report: {args.out}/index.html")
    return 1 if args.check and result.verdict == "fail" else 0


# --- export -----------------------------------------------------------------------------
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained generator to ONNX (showers in GeV) for other runtimes",
        description=(
            "Export a checkpoint's generator to one ONNX file: inputs 'noise' and one per "
            "condition (any batch size), output 'showers' in GeV (the preprocessing inverse is "
            "inside the graph); the family, geometry, units, noise distribution and conditions "
            "are in the model's metadata. Needs: pip install 'caloforge[onnx]'."
        ),
    )
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint folder, or run folder (its best checkpoint)"
    )
    p.add_argument("--format", choices=("onnx",), default="onnx", help="output format")
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8 model (ONNX Runtime static quantization with the accuracy guard)",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--calibration-size", type=int, default=512, help="showers calibrating --int8 (default 512)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --int8 calibration set")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from caloforge._files import check_output
    from caloforge.export import export_onnx
    from caloforge.models.checkpoint import resolve_checkpoint

    files = [p for p in resolve_checkpoint(args.checkpoint).iterdir() if p.is_file()]
    check_output(args.output, inputs=files, option="-o")  # before minutes of export
    path = export_onnx(
        args.checkpoint,
        args.output,
        int8=args.int8,
        opset=args.opset,
        calibration_size=args.calibration_size,
        seed=args.seed,
        progress=True,
    )
    print(f"wrote {path}")
    return 0


# --- bench ------------------------------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure generation speed per backend and batch size",
        description=(
            "Time a generator (a checkpoint, or a model family with random weights for speed "
            "alone) per backend over a batch-size scan: showers/s, ms/shower, latency at batch "
            "1 and 100, FLOPs and the fraction of peak, and the speed-up over the embedded "
            "simulator (timed in the same run) and over Geant4's published 17 s/shower."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint or run folder")
    source.add_argument("--model", help="a model family with random weights (speed only)")
    p.add_argument(
        "--backend",
        nargs="+",
        default=["eager"],
        choices=("eager", "compiled", "bf16", "int8"),
        help="backends to time, side by side (default eager)",
    )
    p.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 8, 64, 128, 512, 2048],
        help="batch sizes to scan (1 and 100 are always added, for the latencies)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per batch size")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per batch size")
    p.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        help="seconds of timed calls per batch size; beyond, fewer repeats or larger sizes skipped",
    )
    p.add_argument("--simulator-showers", type=int, default=64, help="0: do not time it")
    p.add_argument("--peak-gflops", type=float, help="the hardware's peak (default: known)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results here")
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    import json
    import math

    from caloforge._files import atomic_output, check_output
    from caloforge.bench import bench_generation, format_table
    from caloforge.generation.pipeline import ShowerPipeline

    if args.json:
        check_output(args.json, option="--json")  # before the timings, not after
    for option, value, least in (
        ("--warmup", args.warmup, 0),
        ("--repeats", args.repeats, 1),
        ("--simulator-showers", args.simulator_showers, 0),
    ):
        if value < least:
            raise CaloforgeError(f"{option} must be >= {least}, got {value}")
    for option, number in (
        ("--time-budget", args.time_budget),
        ("--peak-gflops", args.peak_gflops),
    ):
        if number is not None and not (math.isfinite(number) and number > 0):
            raise CaloforgeError(f"{option} must be a positive number, got {number}")
    if args.threads is not None:
        import torch

        if args.threads <= 0:
            raise CaloforgeError(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        pipeline = ShowerPipeline.from_checkpoint(args.checkpoint, device=args.device)
    else:
        pipeline = ShowerPipeline.random_weights(args.model, device=args.device, seed=args.seed)
    result = bench_generation(
        pipeline,
        args.backend,
        args.batch_sizes,
        warmup=args.warmup,
        repeats=args.repeats,
        time_budget=args.time_budget,
        simulator_showers=args.simulator_showers,
        peak=args.peak_gflops,
        seed=args.seed,
        log=lambda line: print(line, flush=True),
    )
    print(format_table(result))
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2))
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caloforge",
        description="Fast calorimeter shower simulation with deep generative models.",
    )
    parser.add_argument("--version", action="version", version=f"caloforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (
        _add_simulate,
        _add_convert,
        _add_inspect,
        _add_train,
        _add_generate,
        _add_validate,
        _add_export,
        _add_bench,
    ):
        add(sub)
    return parser


# The commands whose paths (or KEY=VALUE overrides) may also follow their options, as in
# `convert IN --binning X OUT`; argparse alone takes only the first run of them.
_TRAILING = {"convert": "input", "inspect": "files", "train": "overrides"}
# Options taking a range, whose value may start with a minus sign (`--energy -5:10`), which
# argparse would otherwise read as another option.
_RANGE_OPTIONS = ("--energy", "--theta", "--point")
_NEGATIVE = re.compile(r"^-\.?\d")


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    words = list(sys.argv[1:] if argv is None else argv)
    joined: list[str] = []
    while words:
        word = words.pop(0)
        if word in _RANGE_OPTIONS and words and _NEGATIVE.match(words[0]):
            word = f"{word}={words.pop(0)}"
        joined.append(word)
    args, extra = parser.parse_known_args(joined)
    if extra:
        dest = _TRAILING.get(args.command)
        if dest is None or any(word.startswith("-") for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        getattr(args, dest).extend(extra)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    handler: Handler = args.handler
    # SIGTERM (a batch system ending the job, `kill`) is handled as Ctrl-C: outputs in
    # progress are removed and workers ended.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return handler(args)
    except CaloforgeError as exc:
        print(f"caloforge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("caloforge: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
