"""Bins of the conditions, the response and resolution in them, and the verdicts: each headline
metric read with its error against its tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from caloforge.config import ConfigError
from caloforge.validation import metrics
from caloforge.validation.config import DEFAULT_THETA_BINS, Tolerances, ValidationConfig
from caloforge.validation.results import (
    SEVERITY,
    CellLevel,
    Headline,
    Measured,
    ResponseBin,
    VectorMetrics,
    Verdict,
)


# --- bins -------------------------------------------------------------------------------------
def bin_edges(
    spec: int | Sequence[float], low: float, high: float, *, log_if_wide: bool
) -> np.ndarray:
    """Edges of `spec` bins over [low, high] (the last edge just above high, so the highest
    value counts), log-spaced when `log_if_wide` and high / low > 10; or the given edges."""
    if not isinstance(spec, int):
        return np.asarray(spec, dtype=np.float64)
    if high <= low:
        return np.array([low, np.nextafter(high, np.inf)])
    if log_if_wide and low > 0 and high / low > 10:
        edges = np.geomspace(low, high, spec + 1)
    else:
        edges = np.linspace(low, high, spec + 1)
    edges[-1] = np.nextafter(high, np.inf)
    return edges


def condition_edges(
    overlap: Mapping[str, tuple[float, float]], config: ValidationConfig
) -> dict[str, np.ndarray]:
    """Bin edges per condition over the overlap of the sets, in the geometry's units (theta
    in rad; the config gives its edges in degrees). Angle bins asked for files without a
    theta condition are refused: silently ignored, they would look applied."""
    if config.theta_bins is not None and "theta" not in overlap:
        given = config.theta_bins
        text = str(given) if isinstance(given, int) else ",".join(f"{t:g}" for t in given)
        raise ConfigError(
            f"validation.theta_bins (--theta-bins {text}): the files have no theta condition "
            f"(their conditions: {', '.join(overlap)}); leave the option out",
            path="validation.theta_bins",
        )
    edges = {"energy": bin_edges(config.energy_bins, *overlap["energy"], log_if_wide=True)}
    if "theta" in overlap:
        spec = DEFAULT_THETA_BINS if config.theta_bins is None else config.theta_bins
        if not isinstance(spec, int):
            spec = tuple(math.radians(t) for t in spec)
        edges["theta"] = bin_edges(spec, *overlap["theta"], log_if_wide=False)
    return edges


def bin_label(condition: str, low: float, high: float) -> str:
    """'energy 20-40 GeV', 'theta 60-90 deg' (from rad), 'all showers'."""
    if condition == "theta":
        return f"theta {math.degrees(low):.4g}-{math.degrees(high):.4g} deg"
    if condition == "all":
        return "all showers"
    return f"{condition} {low:.4g}-{high:.4g} GeV"


# --- verdicts ---------------------------------------------------------------------------------
def verdict(
    value: float | None,
    error: float | None,
    tolerance: float | None,
    *,
    absolute: bool = False,
    significance: float = 2.0,
) -> Verdict:
    """'pass' when `value` (|value| if `absolute`) is within `tolerance` and known to better
    than it (an error above the tolerance cannot show that a value is within it: too few
    showers); 'fail' when it exceeds the tolerance by more than `significance` errors;
    'unclear' otherwise; 'n/a' without a value, 'info' without a tolerance."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if tolerance is None:
        return "info"
    v = abs(value) if absolute else value
    e = error if error is not None and math.isfinite(error) else 0.0
    if v <= tolerance:
        return "pass" if e <= tolerance else "unclear"
    return "fail" if v - significance * e > tolerance else "unclear"


def overall_verdict(headline: Sequence[Headline]) -> Verdict:
    """The worst verdict of the headline; "pass" when none failed or is unclear and at least
    one passed, "n/a" when none could be judged."""
    worst = max((h.verdict for h in headline), key=lambda v: SEVERITY[v])
    if worst in ("fail", "unclear"):
        return worst
    return "pass" if any(h.verdict == "pass" for h in headline) else "n/a"


def no_verdict_reason(headline: Sequence[Headline]) -> str:
    """Why the overall verdict is "n/a", in one line for `validate --check` (which does not
    pass a comparison it could not judge): the headline rows without a value and the first
    one's reason (too few showers, switched off), or that no row has a tolerance."""
    missing = [h for h in headline if h.verdict == "n/a"]
    if not missing:
        return "no headline metric has a tolerance to judge it by (all are information only)"
    first = missing[0]
    return (
        f"{len(missing)} of {len(headline)} headline metrics have no value "
        f"({', '.join(h.title for h in missing)}); {first.title}: {first.detail}"
    )


def unclear_reason(headline: Sequence[Headline]) -> str:
    """Why the overall verdict is "unclear", in one line for `validate --check` (which does
    not pass a comparison it could not decide): the unclear rows, each value against its
    tolerance, an error too large to tell."""
    unclear = [h for h in headline if h.verdict == "unclear"]

    def tolerance(h: Headline) -> str:  # in the row's displayed units, as its value
        shown = f"{(h.tolerance or 0.0) * h.scale:g}"
        return f"{shown} %" if h.is_percent else shown

    rows = "; ".join(f"{h.title} {h.value_text()} (tolerance {tolerance(h)})" for h in unclear)
    return (
        f"{len(unclear)} of {len(headline)} headline metrics cannot be told within or beyond "
        f"their tolerance ({rows}): more showers would decide"
    )


# --- response and resolution in bins ------------------------------------------------------------
def _ratio_deviation(a: float, ea: float, b: float, eb: float) -> tuple[float, float]:
    """b / a - 1 and its error, from independent errors on a and b (written without a
    division by b: a generator whose showers are empty gives b = 0, a deviation of -100 %
    and the error eb / a). NaN for a = 0."""
    if a == 0:
        return math.nan, math.nan
    ratio = b / a
    return ratio - 1.0, math.hypot(eb / a, ratio * ea / a)


def _response_pair(r: np.ndarray, g: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[mu90_ref, mu90_gen, res_ref, res_gen] and their bootstrap errors."""
    (mr, emr), (sr, esr) = metrics.mu90_sigma90(r, seed=seed)
    (mg, emg), (sg, esg) = metrics.mu90_sigma90(g, seed=seed)
    return np.array([mr, mg, sr, sg]), np.array([emr, emg, esr, esg])


def response_bins(
    condition: str,
    reference_ratio: np.ndarray,
    generated_ratio: np.ndarray,
    reference_condition: np.ndarray,
    generated_condition: np.ndarray,
    edges: np.ndarray,
    *,
    tolerances: Tolerances,
    min_showers: int,
    significance: float,
    seed: int,
) -> list[ResponseBin]:
    """The response (mu90 of E_vis/E_p) and resolution (sigma90/mu90 of E_vis/E_p) of both
    sets in bins of `condition` (`metrics.binned`), with deviations and verdicts."""
    out = []
    for b in metrics.binned(
        _response_pair,
        reference_ratio,
        generated_ratio,
        reference_condition,
        generated_condition,
        edges,
        min_showers=min_showers,
        seed=seed,
    ):
        if not b.ok:
            out.append(
                ResponseBin(condition, b.low, b.high, b.n_reference, b.n_generated, False, b.reason)
            )
            continue
        v, e = b.value, b.error
        dr, edr = _ratio_deviation(v[0], e[0], v[1], e[1])
        ds, eds = _ratio_deviation(v[2], e[2], v[3], e[3])
        out.append(
            ResponseBin(
                condition,
                b.low,
                b.high,
                b.n_reference,
                b.n_generated,
                True,
                mu90=(float(v[0]), float(v[1])),
                mu90_error=(float(e[0]), float(e[1])),
                resolution=(float(v[2]), float(v[3])),
                resolution_error=(float(e[2]), float(e[3])),
                response_deviation=dr,
                response_deviation_error=edr,
                resolution_deviation=ds,
                resolution_deviation_error=eds,
                response_verdict=verdict(
                    dr, edr, tolerances.response_deviation, absolute=True, significance=significance
                ),
                resolution_verdict=verdict(
                    ds,
                    eds,
                    tolerances.resolution_deviation,
                    absolute=True,
                    significance=significance,
                ),
            )
        )
    return out


def _worst_bin(
    bins: Sequence[ResponseBin], which: Literal["response", "resolution"]
) -> ResponseBin | None:
    ok = [b for b in bins if b.ok]
    if not ok:
        return None

    def rank(b: ResponseBin) -> tuple[int, float]:
        v = getattr(b, f"{which}_verdict")
        return SEVERITY[v], abs(getattr(b, f"{which}_deviation"))

    return max(ok, key=rank)


# --- the headline -----------------------------------------------------------------------------
def _response_headline(
    which: Literal["response", "resolution"],
    response: Mapping[str, Sequence[ResponseBin]],
    tolerance: float | None,
    significance: float,
) -> Headline:
    """The deviation of the worst bin of any condition (or of all showers when no bin holds
    enough of them)."""
    binned_ = [b for name, bins in response.items() if name != "all" for b in bins]
    worst = _worst_bin(binned_, which)
    quantity = "mu90" if which == "response" else "sigma90/mu90"
    title = "Response deviation" if which == "response" else "Resolution deviation"
    few = sum(not b.ok for b in binned_)
    if worst is None:
        worst = _worst_bin(response["all"], which)
        where = "all showers (no bin holds enough)"
    else:
        label = bin_label(worst.condition, worst.low, worst.high)
        where = f"worst of {len(binned_) - few} bins: {label}"
    if worst is None:
        reason = response["all"][0].reason
        return Headline(
            f"{which}_deviation",
            title,
            None,
            None,
            tolerance,
            "n/a",
            f"{quantity} of E_vis/E_p: {reason}",
            scale=100.0,
        )
    value = getattr(worst, f"{which}_deviation")
    error = getattr(worst, f"{which}_deviation_error")
    detail = f"{quantity} of E_vis/E_p, generated / reference - 1; {where}"
    if few:
        detail += f"; {few} bin(s) with too few showers"
    return Headline(
        f"{which}_deviation",
        title,
        value,
        error,
        tolerance,
        verdict(value, error, tolerance, absolute=True, significance=significance),
        detail,
        scale=100.0,
    )


def headline(
    config: ValidationConfig,
    response: Mapping[str, Sequence[ResponseBin]],
    vector: VectorMetrics,
    cell: CellLevel,
) -> list[Headline]:
    """The headline rows, in the report's order, each with its verdict."""
    tol, sig = config.tolerances, config.significance

    def row(
        key: str,
        title: str,
        value: float | None,
        error: float | None,
        detail: str,
        scale: float = 1.0,
    ) -> Headline:
        tolerance = getattr(tol, key)
        return Headline(
            key,
            title,
            value,
            error,
            tolerance,
            verdict(value, error, tolerance, significance=sig),
            detail,
            scale,
        )

    def enough(measured: Measured, n: int, what: str) -> Measured:
        """No value for a distance of sets smaller than min_showers (as a bin's): on a few
        showers its error is itself too uncertain to read a verdict from."""
        if measured.value is None or n >= config.min_showers:
            return measured
        return Measured(
            None,
            None,
            f"{n} showers per set: too few for a verdict on {what} (validation.min_showers "
            f"{config.min_showers})",
        )

    whole = response["all"][0]
    n_sets = min(whole.n_reference, whole.n_generated)
    low, high = cell.classifier, vector.classifier
    rows = [
        row(
            "classifier_auc_low_level",
            "Classifier AUC, cells",
            low.auc if low else None,
            low.auc_error if low else None,
            f"[log10 E_p, cells / E_p] of {cell.n} showers per set (the subsample), tested on "
            f"{low.n_test} per set; 0.5 = indistinguishable"
            if low
            else cell.classifier_reason,
        ),
        row(
            "classifier_auc_high_level",
            "Classifier AUC, features",
            high.auc if high else None,
            high.auc_error if high else None,
            f"[log10 E_p, {vector.n_features} features] of {vector.classifier_showers} showers "
            f"per set, tested on {high.n_test} per set"
            if high
            else vector.classifier_reason,
        ),
    ]
    for key, title, measured, what in (
        ("fpd", "FPD (x1e3)", vector.fpd, "Frechet distance"),
        ("kpd", "KPD (x1e3)", vector.kpd, "kernel distance (MMD, degree-4 polynomial kernel)"),
    ):
        measured = enough(measured, n_sets, key.upper())
        detail = (
            f"{what} of the {vector.n_features}-feature vectors (Kansal et al. 2023)"
            if measured.value is not None
            else measured.reason
        )
        rows.append(row(key, title, measured.value, measured.error, detail, scale=1e3))
    projection = enough(cell.projection_mse, cell.n, "the projection MSE")
    detail = projection.reason
    if projection.value is not None:
        detail = (
            f"mean {cell.projections} of {cell.n} showers per set, in units of the "
            f"reference's peak, squared: {cell.projection_mse_raw:.3g}, less "
            f"{cell.projection_mse_floor:.3g} expected from the showers' fluctuations alone"
        )
    rows.append(row("projection_mse", "Projection MSE", projection.value, projection.error, detail))
    rows.append(_response_headline("response", response, tol.response_deviation, sig))
    rows.append(_response_headline("resolution", response, tol.resolution_deviation, sig))
    return rows
