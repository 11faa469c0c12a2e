"""`caloforge validate`: generated showers against a reference, with a report."""

from __future__ import annotations

import argparse
from typing import Any

from caloforge.cli.common import DefaultsFormatter
from caloforge.errors import CaloforgeError, InputFileError


# validate ---------------------------------------------------------------------------
def add_validate(sub: argparse._SubParsersAction) -> None:
    from caloforge.validation.config import add_cli_options

    p = sub.add_parser(
        "validate",
        help="compare generated showers with reference (Monte Carlo) showers",
        formatter_class=DefaultsFormatter,
        description=(
            "Compare generated showers with reference showers (any readable format) and write "
            "a report folder: index.html (self-contained), metrics.json and plots/*.png. "
            "Metrics overall and in bins of energy and angle; a verdict per headline metric "
            "against a tolerance. Exit code 0 when the report is written (with --check: 1 "
            "unless the verdict is a pass: a headline verdict fails, is unclear or none could "
            "be made), 2 for bad input."
        ),
    )
    p.add_argument("--reference", required=True, nargs="+", help="reference file(s) or glob")
    p.add_argument("--generated", required=True, nargs="+", help="generated file(s) or glob")
    p.add_argument("--out", required=True, help="report folder (replaced if it holds a report)")
    p.add_argument("--format", help="input format of both sets (default: detected)")
    p.add_argument("--binning", help="CaloChallenge binning XML (for that format)")
    p.add_argument("--config", help="YAML settings: tolerances, bins, subsample, ...")
    p.add_argument(
        "--second-reference",
        nargs="+",
        help="with --protocol calochallenge: a second reference sample (file(s) or glob), "
        "evaluated against the reference too: the Geant4-vs-Geant4 floor",
    )
    p.add_argument(
        "--calibration",
        default="auto",
        help="with --protocol calochallenge, for grid sets: auto (each layer divided by its "
        "sampling fraction), none or a factor, as convert --to calochallenge",
    )
    # One flag per setting, generated from its declaration in ValidationConfig.
    add_cli_options(p)
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the overall verdict is a pass: when a headline verdict fails, is "
        "unclear (an error too large to tell) or none could be made (n/a: too few showers, "
        "metrics switched off, no tolerances), with the reason on stderr; the report is "
        "written either way",
    )
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
    except InputFileError as exc:  # the config file itself: named by its option too
        if args.config is None or exc.path != str(args.config):
            raise
        raise CaloforgeError(f"--config {exc}") from None
    options = {"binning": args.binning} if args.binning else {}
    if config.protocol == "calochallenge":
        return _validate_calochallenge(args, config, options)
    if args.second_reference:
        raise CaloforgeError("--second-reference is for --protocol calochallenge")
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
    if args.check and result.verdict == "n/a":  # nothing was judged: not a pass
        import sys

        from caloforge.errors import one_line
        from caloforge.validation.verdicts import no_verdict_reason

        reason = one_line(no_verdict_reason(result.headline))
        print(f"caloforge: check not passed: no verdict could be made; {reason}", file=sys.stderr)
        return 1
    if args.check and result.verdict == "unclear":  # not shown to pass: not a pass
        import sys

        from caloforge.errors import one_line
        from caloforge.validation.verdicts import unclear_reason

        reason = one_line(unclear_reason(result.headline))
        print(f"caloforge: check not passed: verdict unclear; {reason}", file=sys.stderr)
        return 1
    return 1 if args.check and result.verdict == "fail" else 0


def _validate_calochallenge(args: argparse.Namespace, config: Any, options: dict[str, Any]) -> int:
    from caloforge._files import is_write_failure, os_error_text
    from caloforge.validation.challenge import validate_calochallenge

    if args.check:  # ignored, it would look applied
        raise CaloforgeError(
            "--check judges caloforge's protocol's verdicts; --protocol calochallenge gives "
            "the challenge's numbers without verdicts"
        )
    try:
        result = validate_calochallenge(
            args.reference,
            args.generated,
            args.out,
            config,
            second_reference=args.second_reference,
            format=args.format,
            calibration=args.calibration,
            progress=True,
            **options,
        )
    except OSError as exc:
        if not is_write_failure(exc):
            raise
        raise CaloforgeError(
            f"--out {args.out}: the report could not be written ({os_error_text(exc)})"
        ) from None
    from caloforge.validation.challenge.tables import text_tables

    print(text_tables(result), end="")
    print(f"report: {args.out}/index.html")
    return 0
