"""`caloforge validate`: compare generated showers with reference showers and write the report
folder: index.html (self-contained), metrics.json and the plots as PNG.

The folder is written atomically: everything goes into a temporary folder beside it, renamed
to the report folder only when complete, so a failed run leaves no report behind and a former
report is replaced whole. The page is drawn from the typed results (`results`) by the Jinja2
template templates/report.html.j2, with autoescaping.
"""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caloforge._files import check_report_folder, through_link
from caloforge.validation.comparison import compare
from caloforge.validation.config import ValidationConfig
from caloforge.validation.formatting import Rounded, measured
from caloforge.validation.results import Headline, ValidationResult
from caloforge.validation.sources import source_specs
from caloforge.validation.verdicts import bin_label

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

    from caloforge.validation.metrics import SSIMScan
    from caloforge.validation.plots import PlotSpec


def validate(
    reference: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    generated: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    config: ValidationConfig | None = None,
    *,
    format: str | None = None,
    progress: bool = False,
    **options: Any,
) -> ValidationResult:
    """Compare the generated showers with the reference ones and write the report folder
    `out` (index.html, metrics.json, plots/*.png); returns what was found.

    Each side is a file, several files or a glob, in any format the data layer reads
    (`format` applies to both; `options`, such as a CaloChallenge `binning`, to the sides
    whose format takes them). Problems
    with the input raise `CaloforgeError` before anything is written."""
    config = config or ValidationConfig()
    out = through_link(out)  # a link to the report folder stays a link to it
    _check_out(out)
    first, second = source_specs([reference, generated], format, options)
    specs = (first, second)
    ref = specs[0].open()
    try:
        gen = specs[1].open()
        try:
            result = compare(ref, gen, config, specs=specs, progress=progress)
        finally:
            gen.close()
    finally:
        ref.close()
    write_report(result, out, progress=progress)
    return result


# --- the report folder --------------------------------------------------------------------------
@dataclass(frozen=True)
class DrawnPlot:
    """One plot of the report: drawn (`png`), or not, for `reason`."""

    spec: PlotSpec
    png: bytes | None = None
    reason: str = ""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.title

    @property
    def caption(self) -> str:
        return self.spec.caption

    @property
    def png_base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii") if self.png else ""


def render_plots(
    result: ValidationResult,
    folder: Path | None,
    workers: int | None = None,
    progress: bool = False,
) -> list[DrawnPlot]:
    """Draw every plot of `plots.PLOTS` (those that do not apply say why); the PNGs are also
    written to `folder` when given. The figures are drawn by `workers` processes (None: the
    run's `workers` setting, else one per core; 1: in this process); `progress` shows a bar
    of them."""
    from tqdm import tqdm

    from caloforge._processes import default_workers
    from caloforge.validation.plots import PLOTS
    from caloforge.validation.plots.render import draw_all

    assert result.comparison is not None
    if workers is None:
        workers = result.config.workers or default_workers()
    out = []
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(PLOTS), unit="plot", desc="plots", disable=not progress) as bar:
        drawn = draw_all(result.comparison, workers, on_drawn=bar.update)
    for spec, png, reason in drawn:
        if png is None:
            out.append(DrawnPlot(spec, reason=reason))
            continue
        if folder is not None:
            (folder / f"{spec.name}.png").write_bytes(png)
        out.append(DrawnPlot(spec, png=png))
    return out


def write_report(
    result: ValidationResult, out: str | os.PathLike[str], progress: bool = False
) -> Path:
    """Write index.html, metrics.json and plots/*.png into the folder `out`, atomically: all
    is written into a temporary folder beside it, renamed to `out` when complete; `progress`
    shows a bar of the plots."""
    out = Path(out)
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        plots = (
            render_plots(result, tmp / "plots", progress=progress)
            if result.comparison is not None
            else []
        )
        doc = dict(result.metrics)
        doc["plots"] = [f"plots/{p.name}.png" for p in plots if p.png]
        doc["plots_not_drawn"] = {p.name: p.reason for p in plots if not p.png}
        (tmp / "metrics.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        (tmp / "index.html").write_text(render_html(result, plots))
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_out(out: Path) -> None:
    """Refuse an --out that is a file, or a folder holding something other than a report."""
    check_report_folder(out)


def _replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder `new` in place of `out` (a former report is replaced)."""
    if not out.exists():
        os.replace(new, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


# --- the HTML page ------------------------------------------------------------------------------
VERDICT_TEXT = {
    "pass": "every headline metric is within its tolerance",
    "fail": "at least one headline metric is beyond its tolerance",
    "unclear": "no metric fails, but some are beyond tolerance within their errors",
    "n/a": "no headline metric could be computed",
    "info": "no tolerances set",
}
RESPONSE_TITLES = {
    "all": "All compared showers",
    "energy": "In bins of the primary energy",
    "theta": "In bins of the polar angle",
}


@dataclass(frozen=True)
class BinnedCell:
    """A feature's separation power in one bin, or the number of the note saying why not."""

    value: float
    error: float
    note: int = 0


@dataclass(frozen=True)
class BinnedTable:
    """The separation power of every scalar feature in the bins of one condition; a bin that
    could not be measured points to a note (`notes`: number, reason)."""

    condition: str
    labels: list[str]
    rows: list[tuple[str, list[BinnedCell]]]
    notes: list[tuple[int, str]]


def binned_tables(result: ValidationResult) -> list[BinnedTable]:
    """The tables of the separation power in bins, one per condition, with their notes
    numbered in order of first appearance."""
    measured = [f for f in result.features.values() if f.separation_power is not None]
    if not measured:
        return []
    tables = []
    for name in result.bins:
        labels = [bin_label(name, b.low, b.high) for b in measured[0].binned[name]]
        notes: dict[str, int] = {}
        rows = []
        for f in measured:
            cells = [
                BinnedCell(b.value, b.error, notes.setdefault(b.reason, len(notes) + 1))
                if b.reason
                else BinnedCell(b.value, b.error)
                for b in f.binned[name]
            ]
            rows.append((f.label, cells))
        tables.append(BinnedTable(name, labels, rows, [(k, r) for r, k in notes.items()]))
    return tables


def _markup(text: str) -> Markup:
    from markupsafe import Markup

    return Markup(text)


def num(x: Any, digits: int = 3) -> Markup:
    """A number to `digits` significant digits (a power of ten for very large or small
    ones); a dash where there is none."""
    rounded = measured(x, digits=digits)
    return _markup("&ndash;" if rounded is None else rounded.html())


def pm(value: Any, error: Any, scale: float = 1.0, digits: int = 3) -> Markup:
    """`value ± error` (scaled), the value rounded to the error's precision
    (`formatting.measured`); `digits` significant digits where there is no error."""
    if value is None or not math.isfinite(value):
        return _markup("&ndash;")
    has_error = error is not None and math.isfinite(error)
    rounded = measured(value * scale, error * scale if has_error else None, digits=digits)
    return _markup("&ndash;" if rounded is None else rounded.html())


def signed_percent(value: float | None, error: float | None) -> Markup:
    """`+1.23 ± 0.45 %`, the value rounded to the error's precision; two decimals where
    there is no error (JSON null: NaN)."""
    if value is None or not math.isfinite(value):
        return _markup("&ndash;")
    if error is None or not math.isfinite(error):
        return _markup(f"{100 * value:+.2f}&nbsp;%")
    rounded = measured(100 * value, 100 * error, sign=True, unit="%")
    return _markup("&ndash;" if rounded is None else rounded.html())


def headline_value(h: Headline) -> Markup:
    """A headline row's value as shown: `+1.2 ± 0.4 %` for deviations, `0.512 ± 0.010`,
    FPD and KPD x 1e3; "n/a" without a value."""
    rounded = h.rounded()
    return _markup("n/a" if rounded is None else rounded.html())


def _stable_index(scan: SSIMScan) -> int:
    """The SSIM scan's point nearest L = 1e-4 GeV, the Conv2D paper's stable region."""
    return int(np.argmin(np.abs(np.log10(scan.data_ranges) + 4.0)))


def template_environment() -> jinja2.Environment:
    """The templates' Jinja2 environment (this page's and `--protocol calochallenge`'s):
    autoescaped, strict about undefined names, with the number helpers of this module."""
    import jinja2  # lazy: only writing a report pays for it

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("caloforge.validation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    environment.filters["fmt"] = format
    environment.globals.update(
        degrees=math.degrees,
        bin_label=bin_label,
        num=num,
        pm=pm,
        rounded=rounded_html,
        signed_percent=signed_percent,
        headline_value=headline_value,
        stable_index=_stable_index,
        verdict_text=VERDICT_TEXT,
        response_titles=RESPONSE_TITLES,
    )
    return environment


def rounded_html(value: Rounded | None) -> Markup:
    """A number already rounded (`formatting.Rounded`) as HTML; a dash where there is none."""
    return _markup("&ndash;" if value is None else value.html())


def render_html(result: ValidationResult, plots: Sequence[DrawnPlot] = ()) -> str:
    """The report as one self-contained HTML page (styles inline, images embedded)."""
    template = template_environment().get_template("report.html.j2")
    return template.render(
        result=result,
        plots=list(plots),
        binned_tables=binned_tables(result),
        settings_text=json.dumps(result.metrics["settings"], indent=1),
    )
