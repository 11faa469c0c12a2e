"""Checks of the Python API's arguments, in the words of the command line's options.

The commands' options arrive typed by argparse; the same functions called from Python can
get any object. A wrong type is refused here as a `CaloforgeError` naming the option ("--n
must be an integer, got '5'"), not as a TypeError from deep inside (`'<=' not supported
between instances of 'str' and 'int'`).
"""

from __future__ import annotations

import numbers
import os
from typing import Any

from caloforge.errors import CaloforgeError

__all__ = ["check_integer", "check_pair", "check_path"]


def check_integer(option: str, value: Any, low: int | None = None) -> int:
    """`value` as an int: an integer (numpy's too, not a bool) of at least `low` (if given)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        bound = "" if low is None else f" >= {low}"
        raise CaloforgeError(f"{option} must be an integer{bound}, got {value!r}")
    if low is not None and value < low:
        raise CaloforgeError(f"{option} must be an integer >= {low}, got {value}")
    return int(value)


def check_pair(option: str, value: Any) -> None:
    """Refuse a range that is not two numbers (low, high); None (not given) passes."""
    if value is None:
        return
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise CaloforgeError(f"{option} must be a pair (low, high), got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise CaloforgeError(f"{option} must be a pair of numbers (low, high), got {value!r}")


def check_path(option: str, value: Any) -> None:
    """Refuse a path argument that is not a str or os.PathLike."""
    if not isinstance(value, str | os.PathLike):
        raise CaloforgeError(
            f"{option}: expected a path (str or os.PathLike), got {type(value).__name__}"
        )
