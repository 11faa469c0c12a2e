"""What a validation finds, as typed results: the report's HTML is drawn from these, and
metrics.json is their `to_json()`.

Values are in the metric's own units (a deviation is a fraction: 0.05 is 5 %); conditions
are in the geometry's units (energy in GeV, theta in rad). A value that could not be
computed is None (NaN in a bin too small to measure) and comes with a reason; in JSON it is
null.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from caloforge.geometry import Geometry
from caloforge.validation.config import ValidationConfig, settings_json
from caloforge.validation.formatting import Rounded, measured
from caloforge.validation.metrics import BinnedValue, SSIMScan

if TYPE_CHECKING:
    from caloforge.validation.classifier import ClassifierResult
    from caloforge.validation.plots import Comparison
    from caloforge.validation.plots.shapes import RadialProfile

Verdict = Literal["pass", "fail", "unclear", "n/a", "info"]
# How bad a verdict is: the worst of several is the one with the highest severity.
SEVERITY: dict[Verdict, int] = {"fail": 4, "unclear": 3, "pass": 2, "info": 1, "n/a": 0}


# --- JSON -------------------------------------------------------------------------------------
def json_number(x: Any) -> float | None:
    """A float for JSON: None for None, NaN and infinities (strict JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(obj: Any) -> Any:
    """`obj` with dataclasses as dicts, numpy values made plain and NaN/inf made null."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return json_number(obj)
    return obj


# --- pieces -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """A metric's value and error, or None for both and the reason it was not computed."""

    value: float | None
    error: float | None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "error": self.error, "reason": self.reason}


@dataclass(frozen=True)
class Headline:
    """One row of the report's headline table. `value` and `error` in the metric's own
    units; `scale` only multiplies them for display (FPD and KPD x 1e3, deviations x 100
    as percent)."""

    key: str
    title: str
    value: float | None
    error: float | None
    tolerance: float | None
    verdict: Verdict
    detail: str
    scale: float = 1.0

    @property
    def is_percent(self) -> bool:
        return self.scale == 100.0

    def rounded(self) -> Rounded | None:
        """The value (and its error) scaled and rounded as the report shows them
        (`formatting.measured`: the value to the error's precision, a sign and "%" on
        deviations); None without a value."""
        if self.value is None:
            return None
        error = None if self.error is None else self.error * self.scale
        return measured(
            self.value * self.scale,
            error,
            sign=self.is_percent,
            unit="%" if self.is_percent else "",
        )

    def value_text(self) -> str:
        """The value (and its error) as plain text: '+43 ± 4 %', '0.512 ± 0.010',
        '1.00 ± 0' (an error at rounding noise), 'n/a'."""
        rounded = self.rounded()
        return "n/a" if rounded is None else rounded.text()

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "value": json_number(self.value),
            "error": json_number(self.error),
            "tolerance": self.tolerance,
            "verdict": self.verdict,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class ResponseBin:
    """mu90 and sigma90/mu90 of E_vis/E_p of both sets (reference, generated) in one bin of a
    condition [low, high) (geometry units; "all": every compared shower), their deviations
    (generated / reference - 1) with errors, and the verdicts. When `ok` is False the bin
    holds too few showers and `reason` says so."""

    condition: str
    low: float
    high: float
    n_reference: int
    n_generated: int
    ok: bool
    reason: str = ""
    mu90: tuple[float, float] = (math.nan, math.nan)
    mu90_error: tuple[float, float] = (math.nan, math.nan)
    resolution: tuple[float, float] = (math.nan, math.nan)
    resolution_error: tuple[float, float] = (math.nan, math.nan)
    response_deviation: float = math.nan
    response_deviation_error: float = math.nan
    resolution_deviation: float = math.nan
    resolution_deviation_error: float = math.nan
    response_verdict: Verdict = "n/a"
    resolution_verdict: Verdict = "n/a"

    def to_json(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


@dataclass(frozen=True)
class SetInfo:
    """What the report says about one input set: its label, files, format and geometry name,
    showers in it, read (`max_showers`) and compared (inside the overlap of the conditions),
    and the range of each scalar condition (geometry units)."""

    label: str
    path: str
    format: str
    geometry: str
    n_showers: int
    n_read: int
    n_used: int
    ranges: dict[str, tuple[float, float]]

    def to_json(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


@dataclass(frozen=True)
class FeatureComparison:
    """One scalar feature compared overall (separation power, W1 in the feature's unit, each
    (value, error); KS (statistic, p-value)) and its separation power in the bins of each
    condition. Without two finite values in a set the metrics are None and `reason` says so."""

    key: str
    label: str
    unit: str
    separation_power: tuple[float, float] | None = None
    wasserstein: tuple[float, float] | None = None
    ks: tuple[float, float] | None = None
    binned: dict[str, list[BinnedValue]] = field(default_factory=dict)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "unit": self.unit}
        if self.separation_power is None:
            out["reason"] = self.reason
            return out
        out["separation_power"] = self.separation_power
        out["wasserstein"] = self.wasserstein
        out["ks"] = self.ks
        out["binned"] = {
            name: [
                {
                    "low": b.low,
                    "high": b.high,
                    "n_reference": b.n_reference,
                    "n_generated": b.n_generated,
                    "value": b.value,
                    "error": b.error,
                    "reason": b.reason,
                }
                for b in bins
            ]
            for name, bins in self.binned.items()
        }
        return out


@dataclass(frozen=True)
class CorrelationDifference:
    """Reference minus generated correlation matrix of the scalar features `features`
    (k, k), its bootstrap error, and its largest absolute element."""

    features: list[str]
    value: np.ndarray
    error: np.ndarray

    @property
    def max_abs(self) -> float:
        return float(np.abs(self.value).max())

    def to_json(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "value": self.value,
            "error": self.error,
            "max_abs": self.max_abs,
        }


@dataclass(frozen=True)
class VectorMetrics:
    """FPD, KPD and the feature classifier on the feature vectors (`names`, one per column);
    the classifier ran on `classifier_showers` showers per set, or did not (`classifier`
    None) for `classifier_reason`."""

    names: list[str]
    fpd: Measured
    kpd: Measured
    classifier: ClassifierResult | None
    classifier_reason: str
    classifier_showers: int

    @property
    def n_features(self) -> int:
        return len(self.names)

    def to_json(self) -> dict[str, Any]:
        from caloforge.validation.metrics.distances import DEFINITIONS

        return {
            "names": self.names,
            "definitions": DEFINITIONS,
            "fpd": self.fpd.to_json(),
            "kpd": self.kpd.to_json(),
            "classifier_high_level": (
                dataclasses.asdict(self.classifier)
                if self.classifier
                else {"reason": self.classifier_reason}
            ),
        }


@dataclass
class CellLevel:
    """The cell-level metrics of `n` showers per set (a seeded subsample inside the overlap
    of the conditions), and what the plots need of those showers: the mean image of each set,
    their radial profiles with errors (when plots are drawn) and one shower of each with
    similar conditions.

    skipped: why nothing was computed ("" when something was); projection_mse: the raw
    value less `projection_mse_floor` (`metrics.independent_projection_mse_floor`), with
    `projections` naming what was averaged; ssim and ssim_pairs, or ssim_reason."""

    n: int
    skipped: str = ""
    projection_mse: Measured = Measured(None, None)
    projection_mse_raw: float | None = None
    projection_mse_floor: float | None = None
    projections: str = ""
    ssim: SSIMScan | None = None
    ssim_pairs: int = 0
    ssim_reason: str = ""
    classifier: ClassifierResult | None = None
    classifier_reason: str = ""
    mean_images: tuple[np.ndarray, np.ndarray] | None = None
    radial_profiles: tuple[RadialProfile, RadialProfile] | None = None
    single_showers: tuple[np.ndarray, np.ndarray] | None = None
    single_conditions: tuple[dict[str, float], dict[str, float]] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subsample": self.n}
        if self.skipped:
            out["reason"] = self.skipped
            return out
        if self.projection_mse_raw is not None:
            out["projection_mse_raw"] = self.projection_mse_raw
            out["projection_mse_floor"] = self.projection_mse_floor
            out["projections"] = self.projections
        if self.ssim is not None:
            out["ssim_scan"] = dataclasses.asdict(self.ssim) | {"n_pairs": self.ssim_pairs}
        else:
            out["ssim_scan"] = {"reason": self.ssim_reason}
        out["projection_mse"] = self.projection_mse.to_json()
        out["classifier_low_level"] = (
            dataclasses.asdict(self.classifier)
            if self.classifier
            else {"reason": self.classifier_reason}
        )
        return out


# --- the whole result ---------------------------------------------------------------------------
@dataclass
class ValidationResult:
    """Everything `compare` found; `report.write_report` turns it into the report folder.

    headline: the headline rows, in order; verdict: the worst of their verdicts ("pass"
    when none failed and none is unclear); overlap: the compared range of each scalar
    condition; bins: the bin edges per condition (geometry units); response: the response
    bins per condition ("all", "energy", "theta"); features: the scalar features' comparisons;
    warnings: what a reader must know to trust the numbers; comparison: the plots' inputs
    (None when plots are off); created: when (ISO 8601, UTC); timings_s: seconds per stage."""

    config: ValidationConfig
    geometry: Geometry
    sets: tuple[SetInfo, SetInfo]
    headline: list[Headline]
    verdict: Verdict
    overlap: dict[str, tuple[float, float]]
    bins: dict[str, np.ndarray]
    response: dict[str, list[ResponseBin]]
    features: dict[str, FeatureComparison]
    correlation: CorrelationDifference | None
    vector: VectorMetrics
    cell: CellLevel
    warnings: list[str]
    version: str
    created: str
    timings_s: dict[str, float]
    comparison: Comparison | None = None

    @functools.cached_property
    def metrics(self) -> dict[str, Any]:
        """The JSON document of metrics.json (without the list of plots)."""
        return self.to_json()

    def to_json(self) -> dict[str, Any]:
        doc = {
            "caloforge_version": self.version,
            "created": self.created,
            "verdict": self.verdict,
            "headline": {h.key: h.to_json() for h in self.headline},
            "reference": self.sets[0].to_json(),
            "generated": self.sets[1].to_json(),
            "geometry": self.geometry.name,
            "overlap": {k: list(v) for k, v in self.overlap.items()},
            "bins": {k: list(v) for k, v in self.bins.items()},
            "settings": settings_json(self.config),
            "warnings": self.warnings,
            "response": {k: [b.to_json() for b in v] for k, v in self.response.items()},
            "features": {k: f.to_json() for k, f in self.features.items()},
            "correlation_difference": self.correlation.to_json() if self.correlation else None,
            "feature_vector": self.vector.to_json(),
            "cell_level": self.cell.to_json(),
            "timings_s": self.timings_s,
        }
        return jsonable(doc)

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [f"verdict: {self.verdict.upper()}"]
        for h in self.headline:
            lines.append(f"  {h.title:<34} {h.value_text():>22}  {h.verdict}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)
