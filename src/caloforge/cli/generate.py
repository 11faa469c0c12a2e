"""`caloforge generate`, `export` and `bench`: showers from a trained model, the model
for production, and its speed."""

from __future__ import annotations

import argparse

from caloforge.cli.common import DefaultsFormatter, parse_range, seed
from caloforge.errors import CaloforgeError

# Showers calibrating `export --int8` (its guard judges the int8 model on them).
EXPORT_CALIBRATION_SIZE = 512
# The backends `generate` and `bench` take (caloforge.generation.backends.BACKENDS, and auto);
# spelled here so that building the parser imports no torch.
BACKEND_CHOICES = ("auto", "eager", "compiled", "bf16", "int8")
BACKEND_HELP = (
    "auto: the fastest that holds accuracy here, printed and written in the output's "
    "provenance (CPU: int8 where its accuracy guard already passed for this checkpoint and "
    "it ran faster, else compiled; GPU: bf16 where native, else compiled); eager: the "
    "PyTorch module, fp32, the reference; compiled: fp32, OpenVINO on the CPU where "
    "installed, else torch.compile; bf16: compiled in bfloat16 (GPUs, CPUs with native "
    "bf16); int8: CPU, quantized under an accuracy guard whose choice and verdict are kept "
    "in $CALOFORGE_CACHE_DIR or ~/.cache/caloforge"
)


def _families() -> str:
    from caloforge.training.config import preset_names

    return ", ".join(preset_names())


# generate ---------------------------------------------------------------------------
def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate showers from a trained checkpoint",
        formatter_class=DefaultsFormatter,
        description=(
            "Generate showers with a trained model into a canonical file. Conditions are drawn "
            "from ranges (LOW:HIGH or VALUE; what is not given: the checkpoint's training range) "
            "or taken one to one from a reference file. Model families: "
            f"{_families()} (the checkpoint says which)."
        ),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint folder, run folder (its best checkpoint) or pretrained:NAME",
    )
    p.add_argument(
        "--n",
        "--num-showers",
        dest="n",
        type=int,
        help="number of showers (default with --conditions-from: all); under torchrun spell it "
        "--num-showers, as torchrun claims options starting with --n",
    )
    p.add_argument(
        "--energy",
        type=parse_range,
        help="primary energy range, GeV (default: the checkpoint's training range, else the "
        "geometry's)",
    )
    p.add_argument(
        "--spectrum",
        choices=("uniform", "inverse"),
        help="energy spectrum (default: inverse, 1/E, for lhcb-30; uniform otherwise)",
    )
    p.add_argument(
        "--theta",
        type=parse_range,
        help="polar angle range, degrees (default: the training range, else the geometry's)",
    )
    p.add_argument(
        "--point",
        type=parse_range,
        help="entry point range for x and y, mm (default: the training range, else the geometry's)",
    )
    p.add_argument("--conditions-from", help="reuse this file's conditions, one to one")
    p.add_argument(
        "--batch-size",
        type=int,
        default=512,
        help="showers per batch: memory and speed (the file depends on it with --seed)",
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of the drawn conditions and the noise: the same seed and batch size give "
        "the same file",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=BACKEND_HELP)
    p.add_argument(
        "--strict", action="store_true", help="refuse conditions outside the model's training range"
    )
    p.add_argument(
        "--no-merge",
        action="store_true",
        help="under torchrun: keep one file per rank (OUT.rankR-of-N.h5) instead of merging",
    )
    p.add_argument("-o", "--output", required=True, help="canonical shower file to write")
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


# export -----------------------------------------------------------------------------
def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained generator to ONNX (showers in GeV) for other runtimes",
        formatter_class=DefaultsFormatter,
        description=(
            "Export a checkpoint's generator to one ONNX file: inputs 'noise' and one per "
            "condition (any batch size), output 'showers' in GeV (the preprocessing inverse is "
            "inside the graph); the family, geometry, units, noise distribution and conditions "
            "are in the model's metadata. Needs: pip install 'caloforge[onnx]'."
        ),
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint folder, run folder (its best checkpoint) or pretrained:NAME",
    )
    p.add_argument("--format", choices=("onnx",), default="onnx", help="output format")
    p.add_argument(
        "--int8",
        action="store_true",
        help="int8 model (ONNX Runtime static quantization with the accuracy guard)",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument(
        "--calibration-size",
        type=int,
        help=f"showers calibrating --int8 (default: {EXPORT_CALIBRATION_SIZE})",
    )
    p.add_argument("--seed", type=seed, help="seed of the --int8 calibration set (default: 0)")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write")
    p.set_defaults(handler=_export)


def _export(args: argparse.Namespace) -> int:
    from caloforge._files import check_output
    from caloforge.export import export_onnx
    from caloforge.models.checkpoint import resolve_checkpoint

    # Before minutes of export: options of --int8 alone, and its calibration set's size.
    for option, value in (("--calibration-size", args.calibration_size), ("--seed", args.seed)):
        if value is not None and not args.int8:
            raise CaloforgeError(f"{option} applies to --int8 only (the fp32 model needs none)")
    size = EXPORT_CALIBRATION_SIZE if args.calibration_size is None else args.calibration_size
    if size < 2:
        raise CaloforgeError(f"--calibration-size must be at least 2 showers, got {size}")
    files = [p for p in resolve_checkpoint(args.checkpoint).iterdir() if p.is_file()]
    check_output(args.output, inputs=files, option="-o")
    path = export_onnx(
        args.checkpoint,
        args.output,
        int8=args.int8,
        opset=args.opset,
        calibration_size=size,
        seed=0 if args.seed is None else args.seed,
        progress=True,
    )
    print(f"wrote {path}")
    return 0


# bench ------------------------------------------------------------------------------
def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure generation speed per backend and batch size",
        formatter_class=DefaultsFormatter,
        description=(
            "Time a generator (a checkpoint, or a model family with random weights for speed "
            "alone) per backend over a batch-size scan, the backends' calls interleaved round "
            "by round (their ratios come from one run, under one load): showers/s, ms/shower, "
            "latency at batch 1 and 100, FLOPs and the fraction of a peak measured in the same "
            "rounds (a dense matrix product), the CPU's instruction sets, and the speed-up over "
            "the embedded simulator (timed in the same run) and over Geant4's published "
            f"17 s/shower. Model families: {_families()}."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint or run folder, or pretrained:NAME")
    source.add_argument(
        "--model", help=f"a model family with random weights (speed only): {_families()}"
    )
    p.add_argument(
        "--backend",
        nargs="+",
        default=["eager", "auto"],
        choices=BACKEND_CHOICES,
        help="backends to time side by side (default: the reference and what generate would "
        "run); " + BACKEND_HELP,
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
    p.add_argument(
        "--simulator-showers",
        type=int,
        default=64,
        help="showers the embedded simulator is timed on; 0: not timed",
    )
    p.add_argument(
        "--peak-gflops",
        type=float,
        help="the peak the fraction of peak divides by, GFLOP/s (default: measured, a dense "
        "matrix product timed in every round)",
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of the random weights (--model), the timed conditions and noise, and the "
        "int8 calibration",
    )
    p.add_argument("--json", help="also write the results here")
    p.set_defaults(handler=_bench)


def _bench(args: argparse.Namespace) -> int:
    import json
    import math

    from caloforge._files import atomic_output, check_output
    from caloforge.bench import bench_generation, format_table
    from caloforge.generation.pipeline import ShowerPipeline

    if args.json:
        # before the timings, not after; never over the checkpoint it measures
        checkpoint_files = []
        if args.checkpoint:
            from caloforge.models.checkpoint import resolve_checkpoint

            folder = resolve_checkpoint(args.checkpoint)
            checkpoint_files = [p for p in folder.iterdir() if p.is_file()]
        check_output(args.json, inputs=checkpoint_files, option="--json")
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

        from caloforge._processes import max_workers

        if args.threads <= 0:
            raise CaloforgeError(f"--threads must be positive, got {args.threads}")
        if args.threads > max_workers():  # 100000 threads: a crash in the thread pool
            raise CaloforgeError(
                f"--threads {args.threads}: at most {max_workers()} (four per core of this machine)"
            )
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
        progress=True,
        log=lambda line: print(line, flush=True),
    )
    print(format_table(result))
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2))
        print(f"wrote {args.json}")
    return 0
