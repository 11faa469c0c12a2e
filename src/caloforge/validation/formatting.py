"""Numbers as the report shows them: a value rounded to the precision its error allows.

`measured(value, error)` rounds the error to one or two significant digits by the Particle
Data Group's rule (two when its three leading digits are 100-354, one for 355-949, and
950-999 round up to two digits of the next power) and the value to the same decimal place
(`0.02279 ± 0.00024`, `+43 ± 4`), factors out a power of ten for very large or very small
magnitudes (`(1.54 ± 0.05) x 10^6`), and says plainly when an error is negligible: `± 0`
for an error at floating-point noise (a bootstrap of identical values), `± <0.0001` when it
lies below the last digit worth printing. The result is a `Rounded` that renders as plain
text (plot labels, the terminal) or HTML (the page).

Pure string work: no numpy, no matplotlib, so the report's page can use it without either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

# Fixed notation for magnitudes in [FIXED_LOW, FIXED_HIGH); a power of ten outside.
FIXED_LOW = 1e-3
FIXED_HIGH = 1e5
# An error below this fraction of the value is rounding noise: shown as 0.
NOISE = 1e-9
# At most this many significant digits of a value are printed; an error below the last of
# them is shown as "<" that digit.
MAX_DIGITS = 5


@dataclass(frozen=True)
class Rounded:
    """A value (and error) as strings sharing one power of ten `exponent` (0: none).

    error: None when there is none to show, "0" when negligible, "<0.001" when below the
    last printed digit, else the rounded error."""

    value: str
    error: str | None = None
    exponent: int = 0
    unit: str = ""

    def text(self) -> str:
        """Plain text: `0.575 ± 0.017`, `(1.54 ± 0.05) ×10^6`."""
        return self._join("±", "×10^{}", "")

    def mathtext(self) -> str:
        """For matplotlib labels: the power of ten as mathtext."""
        return self._join("±", r"$\times10^{{{}}}$", "")

    def html(self) -> str:
        """HTML (the caller marks it safe): `&plusmn;`, `&times;10<sup>6</sup>`, `&minus;`;
        non-breaking spaces but before the "±", so that a cell wraps only there."""
        escaped = Rounded(
            self.value, self.error and self.error.replace("<", "&lt;"), self.exponent, self.unit
        )
        return escaped._join("&plusmn;", "&times;10<sup>{}</sup>", "&minus;", "&nbsp;")

    def _join(self, pm: str, power: str, minus: str, space: str = " ") -> str:
        """The parts joined; `space` joins all but the value and the "±", the one place a
        narrow table cell may wrap."""
        body = self.value if self.error is None else f"{self.value} {pm}{space}{self.error}"
        if self.exponent:
            exponent = str(self.exponent)
            if minus and self.exponent < 0:
                exponent = minus + exponent[1:]
            times = power.format(exponent)
            body = f"{body}{times}" if self.error is None else f"({body}){space}{times}"
        return f"{body}{space}{self.unit}" if self.unit else body


def _decimals_for(x: float, digits: int) -> int:
    """Decimals that show `x` (non-zero) to `digits` significant digits (may be negative)."""
    return digits - 1 - math.floor(math.log10(abs(x)))


def error_decimals(error: float) -> int:
    """Decimal places to print a (positive) error to, by the Particle Data Group's rule: two
    significant digits when its three leading digits are 100-354, one for 355-949, and
    950-999 rounded up to the next power of ten with two (0.0996 -> 0.10)."""
    power = math.floor(math.log10(error))
    lead = round(error / 10.0 ** (power - 2))
    if lead >= 950:
        return -power
    return (0 if lead >= 355 else 1) - power


def _fixed(x: float, decimals: int, sign: bool) -> str:
    """`x` to `decimals` places (tens, hundreds for negative ones), halves rounded away from
    zero on the number as printed (0.045 -> 0.05, where binary floats give 0.04)."""
    step = Decimal(1).scaleb(-decimals)
    rounded = Decimal(repr(float(x))).quantize(step, rounding=ROUND_HALF_UP)
    places = max(decimals, 0)
    text = f"{rounded:+.{places}f}" if sign else f"{rounded:.{places}f}"
    # No "-0.00": a value that rounds to zero has no sign worth showing.
    if float(text) == 0.0:
        text = text.replace("-", "+" if sign else "")
    return text


def _exponent(value: float, error: float | None) -> int:
    """The power of ten to factor out: 0 in the fixed range, else the order of magnitude of
    the value or of the error, whichever is larger."""
    size = max(abs(value), error or 0.0)
    if size == 0 or FIXED_LOW <= size < FIXED_HIGH:
        return 0
    return math.floor(math.log10(size))


def _scaled(x: float, exponent: int) -> float:
    """x / 10**exponent, also where 10**exponent is beyond floating point (a KS p-value of
    5e-324: 10.0**-324 is 0)."""
    if abs(exponent) < 300:
        return x / 10.0**exponent
    half = exponent // 2
    return x * 10.0**-half * 10.0 ** (half - exponent)


def measured(
    value: float | None,
    error: float | None = None,
    *,
    digits: int = 3,
    sign: bool = False,
    unit: str = "",
) -> Rounded | None:
    """`value ± error` rounded for reading; None when there is no finite value.

    Without a (finite) error the value gets `digits` significant digits. With one, the
    error gets one or two significant digits (`error_decimals`) and the value the same
    decimal place, up to
    MAX_DIGITS significant digits of the value: a smaller error is shown as "<" the last
    printed digit, and one at floating-point noise (below NOISE of the value) as 0.
    `sign` prints a "+" on positive values (deviations)."""
    if value is None or not math.isfinite(value):
        return None
    value = float(value)
    if error is not None and (not math.isfinite(error) or error < 0):
        error = None
    exponent = _exponent(value, error)
    v = _scaled(value, exponent)
    if error is None:
        decimals = _decimals_for(v, digits) if v != 0 else digits - 1
        return Rounded(_fixed(v, max(decimals, 0), sign), None, exponent, unit)
    e = _scaled(error, exponent)
    if e <= NOISE * abs(v) or e == 0:
        decimals = _decimals_for(v, digits) if v != 0 else digits - 1
        return Rounded(_fixed(v, max(decimals, 0), sign), "0", exponent, unit)
    decimals = error_decimals(e)
    if v != 0 and decimals > _decimals_for(v, MAX_DIGITS):
        decimals = max(_decimals_for(v, MAX_DIGITS), 0)
        below = "<" + _fixed(10.0**-decimals, decimals, False)
        return Rounded(_fixed(v, decimals, sign), below, exponent, unit)
    return Rounded(_fixed(v, decimals, sign), _fixed(e, decimals, False), exponent, unit)


def measured_text(
    value: float | None, error: float | None = None, *, digits: int = 3, sign: bool = False
) -> str:
    """`measured(...)` as plain text; "n/a" when there is no value."""
    rounded = measured(value, error, digits=digits, sign=sign)
    return "n/a" if rounded is None else rounded.text()
