"""`caloforge convert` and `caloforge inspect`: shower files between formats, and what
they hold."""

from __future__ import annotations

import argparse
from pathlib import Path

from caloforge.cli.common import DefaultsFormatter
from caloforge.errors import CaloforgeError


# convert ----------------------------------------------------------------------------
def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert between shower file formats",
        formatter_class=DefaultsFormatter,
        usage="caloforge convert [-h] [OPTIONS] IN [IN ...] OUT",
        description=(
            "Convert a shower file (LCD/3DGAN, CaloChallenge, CaloGAN, LHCb npz, canonical) to "
            "the canonical caloforge format, or a canonical file to CaloChallenge (--to). Options "
            "may come before, between or after the paths; the last path is the output."
        ),
    )
    p.add_argument(
        "input", nargs="+", metavar="IN... OUT", help="input file(s) or globs, then the output file"
    )
    p.add_argument(
        "--format",
        help="input format: caloforge, lcd, calochallenge, calogan or lhcb (default: detected)",
    )
    p.add_argument("--to", default="caloforge", help="output format: caloforge or calochallenge")
    p.add_argument("--binning", help="CaloChallenge binning XML (reading, or writing with --to)")
    p.add_argument(
        "--calibration",
        help="with --to calochallenge: auto (default: grids divided by each layer's sampling "
        "fraction, so E_tot/E_inc is near 1 as in the challenge files; CaloChallenge sets "
        "as they are), sampling-fraction, none, or a factor; recorded in the file",
    )
    p.add_argument(
        "--batch-size", type=int, default=1000, help="showers read and written at a time (memory)"
    )
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
        calibration=args.calibration,
        progress=True,
    )
    print(f"wrote {output}")
    return 0


# inspect ----------------------------------------------------------------------------
def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise shower files, run folders and checkpoints",
        formatter_class=DefaultsFormatter,
        description="Print format, shower count, shapes, units, condition ranges, the mean "
        "visible/primary energy ratio and the cell occupancy of each file; for a run or "
        "checkpoint folder: family, geometry, step and epoch, the best physics check, the "
        "training data and its condition ranges, parameter counts.",
    )
    p.add_argument("files", nargs="+", help="shower files (or globs), run or checkpoint folders")
    p.add_argument("--format", help="input format (default: detected)")
    p.add_argument("--binning", help="CaloChallenge binning XML")
    p.add_argument(
        "--max-showers",
        type=int,
        default=10000,
        help="showers read for the energy ratio and occupancy",
    )
    p.set_defaults(handler=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from caloforge.data.summary import print_summary, summarize

    if args.max_showers < 0:
        raise CaloforgeError(f"--max-showers must be >= 0, got {args.max_showers}")
    options = {"binning": args.binning} if args.binning else {}
    for f in args.files:
        # A run or checkpoint folder, or a shipped one (`pretrained:NAME`; the prefix is
        # spelled here: its module imports torch, which a shower file's summary needs not)
        if Path(f).is_dir() or f.startswith("pretrained:"):
            from caloforge.models.checkpoint import print_checkpoint_summary, summarize_checkpoint

            print_checkpoint_summary(summarize_checkpoint(f))
            continue
        summary = summarize(
            f, format=args.format, max_showers=args.max_showers, progress=True, **options
        )
        print_summary(summary)
    return 0
