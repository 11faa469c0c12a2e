"""The CaloChallenge evaluation, number for number (`caloforge validate --protocol
calochallenge`).

Its definitions are those of the challenge's reference code (github.com/CaloChallenge/homepage,
code/evaluate.py, HighLevelFeatures.py, evaluate_plotting_helper.py) and of jetnet's FPD and
KPD (jetnet 0.2.5), written anew: `features` (the high-level features and classifier inputs),
`histograms` (binning, outlier handling, separation power), `distances` (FPD, KPD),
`classifier` (the recipe), `protocol` (the run), `tables` (the published tables, the report
folder).

    from caloforge.validation.challenge import validate_calochallenge
    result = validate_calochallenge("ref.hdf5", "gen.hdf5", "report", binning="ds2.xml")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caloforge.validation.challenge.protocol import ChallengeResult
    from caloforge.validation.config import ValidationConfig

Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def validate_calochallenge(
    reference: Paths,
    generated: Paths,
    out: str | os.PathLike[str],
    config: ValidationConfig | None = None,
    *,
    second_reference: Paths | None = None,
    format: str | None = None,
    calibration: str | float | None = "auto",
    progress: bool = False,
    **options: Any,
) -> ChallengeResult:
    """Evaluate `generated` against `reference` as the CaloChallenge does and write the
    report folder `out` (metrics.json, tables.txt, index.html); with `second_reference`, the
    reference against it too (the floor). Files in any readable format (`format` applies to
    all, `options` such as a CaloChallenge `binning` to the sets whose format takes them);
    grid sets are rebinned and calibrated (`calibration`) as `convert --to calochallenge`
    writes them."""
    from caloforge._files import check_report_folder, through_link
    from caloforge.validation.challenge.protocol import run_calochallenge
    from caloforge.validation.challenge.tables import write_challenge_report
    from caloforge.validation.sources import source_specs

    # Before the work (the classifiers: an hour on a CPU), not when the report is written.
    check_report_folder(through_link(out))
    paths = [reference, generated] + ([second_reference] if second_reference is not None else [])
    sources = []
    try:
        for spec in source_specs(paths, format, options):
            sources.append(spec.open())
        result = run_calochallenge(
            sources[0],
            sources[1],
            config,
            second_reference=sources[2] if len(sources) == 3 else None,
            calibration=calibration,
            progress=progress,
        )
    finally:
        for s in sources:
            s.close()
    write_challenge_report(result, out)
    return result


__all__ = ["validate_calochallenge"]
