"""The CaloChallenge evaluation as tables: the published layout (one row per metric:
classifier AUC and JSD low level, low level normalised and high level, FPD and KPD x 1e3;
beside it the Geant4-vs-Geant4 floor), the separation power per layer and feature, and the
report folder (metrics.json, tables.txt, a plain index.html) written atomically.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caloforge.errors import CaloforgeError
from caloforge.validation.challenge.classifier import RecipeResult
from caloforge.validation.challenge.histograms import LAYER_FAMILIES

if TYPE_CHECKING:
    from caloforge.validation.challenge.features import ChallengeLayout
    from caloforge.validation.challenge.protocol import ChallengeResult, Comparison

CLASSIFIER_TITLES = {
    "low": "low level",
    "low-normed": "low level, normalised",
    "high": "high level",
}
WHOLE_SHOWER = ("Etot / Einc", "Voxel distribution")


def separation_table(layout: ChallengeLayout, c: Comparison) -> dict[str, Any]:
    """Separation powers as a table: one row per layer, one column per feature family (the
    reference's names without the layer), and the whole-shower histograms."""
    by_name = {s.name: s.value for s in c.separation}
    columns = [prefix.removesuffix(" layer") for _, prefix, _ in LAYER_FAMILIES]
    rows = []
    for layer in layout.layers:
        row: dict[str, Any] = {"layer": layer}
        for (_, prefix, _), column in zip(LAYER_FAMILIES, columns, strict=True):
            row[column] = by_name.get(f"{prefix} {layer}")
        rows.append(row)
    return {
        "columns": ["layer", *columns],
        "rows": rows,
        "whole_shower": {name: by_name.get(name) for name in WHOLE_SHOWER},
    }


def _pm(value: float | None, error: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    if error is not None and math.isfinite(error):
        text += f" ± {error:.{digits}f}"
    return text


def _metric_rows(c: Comparison) -> list[tuple[str, str]]:
    rows = []
    for key, title in CLASSIFIER_TITLES.items():
        result = c.classifiers.get(key)
        if result is None:
            continue
        if isinstance(result, RecipeResult):
            rows.append((f"AUC, {title}", _pm(result.auc, result.auc_error)))
            rows.append((f"JSD, {title}", _pm(result.jsd, result.jsd_error)))
        else:
            rows.append((f"AUC, {title}", f"n/a ({result})"))
    for name, value in (("FPD x1e3", c.fpd), ("KPD x1e3", c.kpd)):
        if value is None:
            rows.append((name, f"n/a ({c.reasons.get(name[:3].lower(), '')})"))
        else:
            rows.append((name, _pm(value[0] * 1e3, value[1] * 1e3)))
    return rows


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def _number(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4f}"


def text_tables(result: ChallengeResult) -> str:
    """Everything as plain text: the headline table, then the separation powers."""
    main, floor = result.main, result.floor
    lines = [
        "CaloChallenge evaluation (reference: CaloChallenge evaluate.py, jetnet 0.2.5)",
        f"data set {result.dataset}, threshold {result.min_energy:.4g} MeV per voxel, "
        f"calibration: {result.calibration['name']}, classifier epochs "
        f"{result.settings['epochs']}",
        "sets: " + ", ".join(f"{s['label']} {s['n_showers']} showers" for s in result.sets),
        "",
    ]
    header = ["metric", f"{main.against} vs reference"]
    rows = [list(r) for r in _metric_rows(main)]
    if floor is not None:
        header.append("floor: second reference vs reference")
        for row, (_, value) in zip(rows, _metric_rows(floor), strict=True):
            row.append(value)
    lines += _grid(header, rows)
    for c, title in ((main, main.against), (floor, "second reference (floor)")):
        if c is None:
            continue
        table = separation_table(result.layout, c)
        lines += ["", f"Separation power, {title} vs reference"]
        lines += [f"  {name}: {_number(value)}" for name, value in table["whole_shower"].items()]
        grid_rows = [
            [str(row["layer"])] + [_number(row[col]) for col in table["columns"][1:]]
            for row in table["rows"]
        ]
        lines += _grid(table["columns"], grid_rows)
        notes = sorted({f"{s.name}: {s.reason}" for s in c.separation if s.reason})
        lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _page(result: ChallengeResult, text: str) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        "<title>CaloChallenge evaluation</title></head><body>"
        "<h1>CaloChallenge evaluation</h1>"
        f"<p>created {html.escape(result.created)}; every number in metrics.json</p>"
        f"<pre>{html.escape(text)}</pre></body></html>\n"
    )


def write_challenge_report(result: ChallengeResult, out: str | os.PathLike[str]) -> Path:
    """Write metrics.json, tables.txt and index.html into the folder `out`, atomically (a
    temporary folder beside it, renamed when complete; a former report is replaced, any
    other folder with contents refused)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CaloforgeError(f"{out}: exists and is not a folder; choose another --out")
    report = (out / "index.html").exists() and (out / "metrics.json").exists()
    if out.is_dir() and any(out.iterdir()) and not report:
        raise CaloforgeError(
            f"{out}: the folder exists and does not hold a caloforge report "
            "(index.html and metrics.json); refusing to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        text = text_tables(result)
        doc = result.to_json()
        (tmp / "metrics.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        (tmp / "tables.txt").write_text(text)
        (tmp / "index.html").write_text(_page(result, text))
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
