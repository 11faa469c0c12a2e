"""The CaloChallenge evaluation as tables: the published layout (one row per metric:
classifier AUC and JSD low level, low level normalised and high level, FPD and KPD x 1e3;
beside it the Geant4-vs-Geant4 floor), the separation power per layer and feature, and the
report folder (metrics.json, tables.txt, and index.html with the same tables in HTML, drawn
by templates/challenge.html.j2) written atomically. Numbers are rounded as the rest of the
report rounds them (`formatting.measured`: a value to the precision of its error).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caloforge._files import check_report_folder, through_link
from caloforge.validation.challenge.classifier import RecipeResult
from caloforge.validation.challenge.histograms import LAYER_FAMILIES, Separation
from caloforge.validation.formatting import Rounded, measured, measured_text

if TYPE_CHECKING:
    from caloforge.validation.challenge.features import ChallengeLayout
    from caloforge.validation.challenge.protocol import ChallengeResult, Comparison

CLASSIFIER_TITLES = {
    "low": "low level",
    "low-normed": "low level, normalised",
    "high": "high level",
}
WHOLE_SHOWER = ("Etot / Einc", "Voxel distribution")
FEATURES_TEST = "High-level features"


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


@dataclass(frozen=True)
class MetricCell:
    """One number of the headline table: `metric` ("AUC", "JSD", "FPD x1e3", "KPD x1e3") of
    `test` (a classifier's inputs, or the high-level features), rounded as the report rounds
    (`formatting.measured`), or None with the reason."""

    test: str
    metric: str
    value: Rounded | None
    reason: str = ""

    @property
    def label(self) -> str:
        """The row's name in tables.txt: "AUC, low level", "FPD x1e3"."""
        if self.metric in ("AUC", "JSD"):
            return f"{self.metric}, {self.test.removeprefix('Classifier, ')}"
        return self.metric

    def text(self) -> str:
        if self.value is not None:
            return self.value.text()
        return f"n/a ({self.reason})" if self.reason else "n/a"


def metric_cells(c: Comparison) -> list[MetricCell]:
    """The headline numbers of one comparison in the published order: AUC and JSD of each
    classifier run (low level, low level normalised, high level), then FPD and KPD x 1e3.
    A classifier that could not run has both rows, without values, so that the rows of a
    comparison and of its floor line up."""
    cells = []
    for key, title in CLASSIFIER_TITLES.items():
        result = c.classifiers.get(key)
        if result is None:
            continue
        test = f"Classifier, {title}"
        if isinstance(result, RecipeResult):
            cells.append(MetricCell(test, "AUC", measured(result.auc, result.auc_error)))
            cells.append(MetricCell(test, "JSD", measured(result.jsd, result.jsd_error)))
        else:
            cells += [MetricCell(test, metric, None, result) for metric in ("AUC", "JSD")]
    for key in ("fpd", "kpd"):
        value = c.fpd if key == "fpd" else c.kpd
        metric = f"{key.upper()} x1e3"
        if value is None:
            cells.append(MetricCell(FEATURES_TEST, metric, None, c.reasons.get(key, "")))
        else:
            cells.append(
                MetricCell(FEATURES_TEST, metric, measured(value[0] * 1e3, value[1] * 1e3))
            )
    return cells


@dataclass(frozen=True)
class MetricGroup:
    """Rows of the headline table under one test: (metric, the comparison's cell, the
    floor's cell or None)."""

    test: str
    rows: list[tuple[str, MetricCell, MetricCell | None]]


def metric_groups(result: ChallengeResult) -> list[MetricGroup]:
    """The headline table as the page lays it out: rows grouped by test, a column for the
    generated set and one for the floor (None without a second reference)."""
    main = metric_cells(result.main)
    floor = metric_cells(result.floor) if result.floor is not None else [None] * len(main)
    groups: list[MetricGroup] = []
    for cell, floor_cell in zip(main, floor, strict=True):
        if not groups or groups[-1].test != cell.test:
            groups.append(MetricGroup(cell.test, []))
        groups[-1].rows.append((cell.metric, cell, floor_cell))
    return groups


@dataclass(frozen=True)
class SeparationCell:
    """One separation power as the page shows it: the comparison's and the floor's (None
    where there is no number: no such histogram, or none computable)."""

    value: Rounded | None
    floor: Rounded | None = None


def separation_grid(
    result: ChallengeResult,
) -> tuple[
    list[str], list[tuple[str, list[SeparationCell | None]]], list[tuple[str, SeparationCell]]
]:
    """The separation powers as the page lays them out: the column names, one row per layer
    (None where the layer has no such histogram) and the whole-shower histograms."""
    main = {s.name: s for s in result.main.separation}
    floor = {s.name: s for s in result.floor.separation} if result.floor is not None else {}

    def cell(name: str) -> SeparationCell | None:
        if name not in main:
            return None
        other = floor.get(name)
        return SeparationCell(
            _separation_value(main[name]), _separation_value(other) if other else None
        )

    columns = [prefix.removesuffix(" layer") for _, prefix, _ in LAYER_FAMILIES]
    rows = [
        (str(layer), [cell(f"{prefix} {layer}") for _, prefix, _ in LAYER_FAMILIES])
        for layer in result.layout.layers
    ]
    whole = [(name, c) for name in WHOLE_SHOWER if (c := cell(name)) is not None]
    return columns, rows, whole


def _separation_value(s: Separation) -> Rounded | None:
    return measured(s.value, s.error if math.isfinite(s.error) else None)


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)) for r in rows]
    return out


def _number(x: float | None) -> str:
    return measured_text(x if x is not None and math.isfinite(x) else None)


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
    rows = [[cell.label, cell.text()] for cell in metric_cells(main)]
    if floor is not None:
        header.append("floor: second reference vs reference")
        for row, cell in zip(rows, metric_cells(floor), strict=True):
            row.append(cell.text())
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
        lines += [f"  note: {n}" for n in separation_notes(c)]
    return "\n".join(lines) + "\n"


def separation_notes(c: Comparison) -> list[str]:
    """Why some separation powers are missing, one line per histogram."""
    return sorted({f"{s.name}: {s.reason}" for s in c.separation if s.reason})


def render_challenge_html(result: ChallengeResult, definitions: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page (templates/challenge.html.j2): the
    headline table (classifier AUC and JSD, FPD and KPD x 1e3, with the Geant4-vs-Geant4
    floor beside them when there is a second reference) and the separation powers per layer
    and feature as HTML tables; `definitions` as metrics.json records them."""
    from caloforge.validation.report import template_environment

    columns, rows, whole = separation_grid(result)
    notes = [("", n) for n in separation_notes(result.main)]
    if result.floor is not None:
        notes += [("floor", n) for n in separation_notes(result.floor)]
    template = template_environment().get_template("challenge.html.j2")
    return template.render(
        result=result,
        groups=metric_groups(result),
        separation_columns=columns,
        separation_rows=rows,
        whole_shower=whole,
        separation_notes=notes,
        definitions_text=json.dumps(definitions, indent=1),
        settings_text=json.dumps(result.settings, indent=1),
    )


def write_challenge_report(result: ChallengeResult, out: str | os.PathLike[str]) -> Path:
    """Write metrics.json, tables.txt and index.html into the folder `out`, atomically (a
    temporary folder beside it, renamed when complete; a former report is replaced, any
    other folder with contents refused)."""

    out = through_link(out)  # a link to the report folder stays a link to it
    check_report_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        text = text_tables(result)
        doc = result.to_json()
        (tmp / "metrics.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        (tmp / "tables.txt").write_text(text)
        (tmp / "index.html").write_text(render_challenge_html(result, doc["definitions"]))
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
