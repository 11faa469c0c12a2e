"""Verdicts read a value with its error: a pass must be told apart from a fail, and bins
named for a condition the files lack are refused rather than ignored."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.config import ConfigError
from caloforge.validation.config import ValidationConfig
from caloforge.validation.results import Headline
from caloforge.validation.verdicts import (
    condition_edges,
    no_verdict_reason,
    overall_verdict,
    unclear_reason,
    verdict,
)


@pytest.mark.parametrize(
    ("value", "error", "tolerance", "expected"),
    [
        (0.5, 0.1, 1.0, "pass"),  # within the tolerance and known to better than it
        (0.5, 1.5, 1.0, "unclear"),  # within, but an error above the tolerance cannot show it
        (-0.414, 0.44, 0.001, "unclear"),  # KPD of 6 showers a set, which passed before
        (3.0, 0.5, 1.0, "fail"),  # beyond by more than two errors
        (1.5, 0.5, 1.0, "unclear"),  # beyond by less
        (None, None, 1.0, "n/a"),
        (float("nan"), 0.1, 1.0, "n/a"),
    ],
)
def test_a_verdict_needs_an_error_that_can_tell(value, error, tolerance, expected):
    assert verdict(value, error, tolerance) == expected


def test_no_tolerance_is_information_and_no_error_is_taken_at_its_word():
    assert verdict(0.5, 0.1, None) == "info"
    assert verdict(0.5, None, 1.0) == "pass"


def test_theta_bins_for_files_without_theta_are_refused():
    overlap = {"energy": (10.0, 100.0)}
    assert set(condition_edges(overlap, ValidationConfig())) == {"energy"}
    with pytest.raises(ConfigError, match=r"theta_bins \(--theta-bins 4\).*no theta.*energy"):
        condition_edges(overlap, ValidationConfig(theta_bins=4))


def test_theta_bins_default_to_three_where_there_is_theta():
    overlap = {"energy": (10.0, 100.0), "theta": (1.0, 2.0)}
    edges = condition_edges(overlap, ValidationConfig())
    assert len(edges["theta"]) == 4
    edges = condition_edges(overlap, ValidationConfig(theta_bins=(60.0, 90.0, 120.0)))
    np.testing.assert_allclose(edges["theta"], np.radians([60.0, 90.0, 120.0]))


@pytest.mark.parametrize("bins", [100_000_000, tuple(range(2000))])
def test_bins_past_a_thousand_are_refused(bins):
    with pytest.raises(ConfigError, match="at most"):
        ValidationConfig(energy_bins=bins)


def _row(title: str, value: float | None, tolerance: float | None, detail: str) -> Headline:
    return Headline(
        title.lower(), title, value, 0.01, tolerance, verdict(value, 0.01, tolerance), detail
    )


def test_why_no_verdict_could_be_made_is_said_in_one_line():
    rows = [
        _row("FPD", None, 1.0, "6 showers per set: too few for a verdict on FPD"),
        _row("KPD", None, 1.0, "6 showers per set: too few for a verdict on KPD"),
        _row("Response", 0.01, None, "information only"),
    ]
    assert overall_verdict(rows) == "n/a"
    reason = no_verdict_reason(rows)
    assert reason == (
        "2 of 3 headline metrics have no value (FPD, KPD); FPD: 6 showers per set: too few "
        "for a verdict on FPD"
    )
    info = [_row("Response", 0.01, None, "x")]
    assert overall_verdict(info) == "n/a"
    assert "no headline metric has a tolerance" in no_verdict_reason(info)


def test_why_a_verdict_is_unclear_is_said_in_one_line():
    rows = [
        _row("Response", 0.005, 0.001, "x"),  # within 0.01 of it, but 0.01 > tolerance
        _row("FPD", 0.5, 1.0, "y"),
    ]
    assert overall_verdict(rows) == "unclear"
    reason = unclear_reason(rows)
    assert reason.startswith("1 of 2 headline metrics cannot be told within or beyond")
    assert "(Response " in reason and "tolerance 0.001" in reason and "FPD" not in reason


def test_a_generated_response_of_zero_is_minus_100_percent_without_a_warning():
    from caloforge.validation.verdicts import _ratio_deviation

    a, ea, b, eb = np.float64(0.0244), np.float64(0.0002), np.float64(0.0), np.float64(0.0001)
    deviation, error = _ratio_deviation(a, ea, b, eb)  # numpy scalars warned at eb / b
    assert deviation == -1.0 and error == pytest.approx(eb / a)
    # the usual case: the relative errors add in quadrature
    deviation, error = _ratio_deviation(2.0, 0.02, 3.0, 0.06)
    assert deviation == pytest.approx(0.5) and error == pytest.approx(1.5 * np.hypot(0.01, 0.02))
    assert all(np.isnan(_ratio_deviation(0.0, 0.1, 1.0, 0.1)))
