"""The report's numbers: a value rounded to its error's precision (the Particle Data Group's
rule), tiny errors said plainly, powers of ten for very large and small magnitudes; and the
page's CSS that keeps its tables inside the page where no browser can check it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from caloforge.validation.formatting import measured, measured_text
from caloforge.validation.report import headline_value, num, pm, signed_percent
from caloforge.validation.results import Headline

TEMPLATES = Path(__file__).resolve().parents[2] / "src/caloforge/validation/templates"


@pytest.mark.parametrize(
    ("value", "error", "text"),
    [
        (0.575, 0.017, "0.575 ± 0.017"),
        (0.02279, 0.00024, "0.02279 ± 0.00024"),  # the value to the error's last digit
        (0.5751234, 0.0173, "0.575 ± 0.017"),
        (42.72, 4.34, "43 ± 4"),  # one digit for an error of 355-949
        (620.62, 25.52, "621 ± 26"),
        (12_345.0, 450.0, "12300 ± 500"),  # halves round up, as printed
        (1.0, 6.2e-17, "1.00 ± 0"),  # floating-point noise, as a bootstrap of equal values
        (1.0, 0.0, "1.00 ± 0"),
        (1.0, 1e-7, "1.0000 ± <0.0001"),  # real but below the last digit worth printing
        (1.54e6, 4.5e4, "(1.54 ± 0.05) ×10^6"),
        (1.0, 0.0996, "1.00 ± 0.10"),  # 950-999: up to the next power, two digits
        (3e-5, 1e-6, "(3.00 ± 0.10) ×10^-5"),
        (-0.0001, 0.3, "0.00 ± 0.30"),  # no "-0.00"
        (0.5, None, "0.500"),
        (0.5, math.nan, "0.500"),
        (7.2e-117, None, "7.20×10^-117"),
    ],
)
def test_a_value_is_rounded_to_its_errors_precision(value, error, text):
    assert measured_text(value, error) == text


def test_deviations_carry_their_sign_and_no_value_is_a_dash():
    assert measured_text(1.0, 0.2, sign=True) == "+1.00 ± 0.20"
    assert measured_text(-0.004, 0.002, sign=True) == "-0.0040 ± 0.0020"
    assert measured_text(-1e-9, 0.3, sign=True) == "+0.00 ± 0.30"
    assert measured(None) is None and measured(math.inf, 1.0) is None
    assert measured_text(math.nan) == "n/a"
    assert num(None) == "&ndash;" and pm(math.nan, 0.1) == "&ndash;"


def test_html_escapes_and_wraps_only_before_the_plus_minus():
    assert measured(1.0, 1e-7).html() == "1.0000 &plusmn;&nbsp;&lt;0.0001"
    assert measured(1.54e6, 4.5e4).html() == (
        "(1.54 &plusmn;&nbsp;0.05)&nbsp;&times;10<sup>6</sup>"
    )
    assert num(7.2e-117, 2) == "7.2&times;10<sup>&minus;117</sup>"
    text = signed_percent(4.272, 0.434)
    assert text == "+430 &plusmn;&nbsp;40&nbsp;%"
    assert text.count(" ") == 1  # the one place a narrow cell may break


def test_headline_values_are_scaled_and_rounded():
    def row(value, error, scale):
        return Headline("k", "t", value, error, None, "pass", "", scale)

    assert headline_value(row(1.0, 6.2e-17, 1.0)) == "1.00 &plusmn;&nbsp;0"
    assert headline_value(row(0.4272, 0.0434, 100.0)) == "+43 &plusmn;&nbsp;4&nbsp;%"
    assert headline_value(row(1540.0, 45.0, 1e3)) == (
        "(1.54 &plusmn;&nbsp;0.05)&nbsp;&times;10<sup>6</sup>"
    )
    assert headline_value(row(None, None, 1.0)) == "n/a"


def test_headline_value_text_rounds_as_the_page_does():
    def row(value, error, scale):
        return Headline("k", "t", value, error, None, "pass", "", scale)

    # The terminal's summary and the page round alike: no "1 ± 6.2e-17".
    assert row(1.0, 6.2e-17, 1.0).value_text() == "1.00 ± 0"
    assert row(0.4272, 0.0434, 100.0).value_text() == "+43 ± 4 %"
    assert row(0.51234, 0.0101, 1.0).value_text() == "0.512 ± 0.010"
    assert row(1540.0, 45.0, 1e3).value_text() == "(1.54 ± 0.05) ×10^6"
    assert row(-0.00231, None, 100.0).value_text() == "-0.231 %"
    assert row(None, None, 1.0).value_text() == "n/a"


def test_numbers_wrap_only_where_the_formatter_allows_and_tables_scroll_in_their_box():
    """What can be read off the CSS (the browser test measures the real layout)."""
    css = re.sub(r"/\*.*?\*/", "", (TEMPLATES / "report.css").read_text(), flags=re.S)
    rules = {m[0].strip(): m[1] for m in re.findall(r"([^{}]+)\{([^}]*)\}", css)}
    assert "nowrap" not in rules["td.num"]
    assert "overflow-x: auto" in rules[".table-box"]
    template = (TEMPLATES / "report.html.j2").read_text()
    # The deviation and its badge share a cell: the badge wraps under the value if needed.
    assert template.count("<td class='num verdict'>") == 2
    assert "<td>{{ badge(b." not in template


def test_values_beyond_floating_points_powers_of_ten_are_written():
    # A KS p-value of two 10 000-shower sets reached 5e-324, whose power 10.0**-324 is 0:
    # the report divided by it (ZeroDivisionError).
    from caloforge.validation.formatting import measured
    from caloforge.validation.report import num

    tiny = measured(5e-324)
    assert tiny is not None and (tiny.value, tiny.exponent) == ("4.94", -324)
    assert "324" in num(5e-324)
    assert measured(1e300) == measured(1e300, None)
