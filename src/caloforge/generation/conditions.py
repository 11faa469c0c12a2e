"""The conditions a generator is asked for: checked, and drawn where no one gives them.

Both the pipeline and the int8 quantizer (its calibration set) take conditions as a mapping
name -> `(n,)` or `(n, size)` array in the geometry's units; `check_conditions` is the one
check of names, lengths and finiteness they share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from caloforge.errors import ConditionError
from caloforge.geometry import Geometry

__all__ = ["check_conditions", "draw_conditions", "training_defaults"]

# The conditions drawn from a range (the rest, such as the LHCb momentum, are derived from them).
_RANGED = ("energy", "theta", "point")


def check_conditions(
    conditions: Mapping[str, np.ndarray],
    needed: Sequence[str],
    source: str = "generator",
    geometry: Geometry | None = None,
) -> dict[str, np.ndarray]:
    """`conditions` as float64 arrays of one length, each finite, with every name in `needed`
    and (given the `geometry`) inside the range where the geometry is valid; else a
    `ConditionError` naming what is wrong (`source`: the model, for the message)."""
    if not isinstance(conditions, Mapping):
        raise ConditionError(
            f"{source}: conditions must be a mapping name -> array (one row per shower), got "
            f"{type(conditions).__name__}"
        )
    missing = [name for name in needed if name not in conditions]
    if missing:
        raise ConditionError(
            f"{source}: the model needs condition(s) {missing}; got {sorted(conditions)}"
        )
    if geometry is not None:  # theta for a geometry without one was ignored, silently
        unknown = [name for name in conditions if not geometry.has_condition(name)]
        if unknown:
            known = [c.name for c in geometry.conditions]
            raise ConditionError(
                f"{source}: condition(s) {unknown} are not conditions of geometry "
                f"'{geometry.name}'; expected some of {known}"
            )
    arrays = {}
    for name, value in conditions.items():
        try:
            arrays[name] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConditionError(
                f"{source}: condition '{name}' must hold numbers, found {exc}"
            ) from None
    for name, a in arrays.items():
        if a.ndim == 0:  # a bare number: lengths {'energy': -1} said nothing
            raise ConditionError(
                f"{source}: condition '{name}' is one number ({a}); expected an array of one "
                f"value per shower ([{a}] for one shower)"
            )
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ConditionError(
            f"conditions must be arrays of one length n (one row per shower), got lengths {lengths}"
        )
    for name, values in arrays.items():
        if not np.isfinite(values).all():
            raise ConditionError(
                f"condition '{name}' has {int((~np.isfinite(values)).sum())} NaN or "
                "infinite value(s)"
            )
    for c in geometry.conditions if geometry is not None else ():
        given = arrays.get(c.name)
        if given is None or c.valid is None or c.derived or len(given) == 0:
            continue
        # -5 GeV or 1e9 GeV (a unit mistake) is refused as `generate --energy` refuses it.
        c.check(float(given.min()), float(given.max()), source=f"{source}: conditions")
    return arrays


def training_defaults(
    geometry: Geometry, training_ranges: Mapping[str, tuple[tuple[float, float], ...]] | None
) -> dict[str, tuple[float, float]]:
    """The range to draw each condition from where none is asked for: the training data's
    (name -> `(min, max)` in the geometry's units), for the conditions drawn from a range
    (energy, theta, point) that the checkpoint records; `{}` when it records none.

    A condition of several components drawn from one range (the entry point's x and y) takes
    the range all its components were trained in (the overlap of their ranges), so that no
    drawn component leaves its own; where they do not overlap it is left to the geometry.
    """
    out: dict[str, tuple[float, float]] = {}
    for name in _RANGED:
        pairs = (training_ranges or {}).get(name)
        if not pairs or not geometry.has_condition(name):
            continue
        low, high = max(lo for lo, _ in pairs), min(hi for _, hi in pairs)
        if low <= high:
            out[name] = (low, high)
    return out


def draw_conditions(
    geometry: Geometry,
    n: int,
    *,
    seed: int = 0,
    training_ranges: Mapping[str, tuple[tuple[float, float], ...]] | None = None,
) -> dict[str, np.ndarray]:
    """`n` conditions drawn as `caloforge simulate` draws them (with `seed`), in the training
    ranges where they are given (`training_defaults`), else the geometry's default ranges:
    for calibrating and for timing."""
    from caloforge.simulation.conditions import ConditionRanges, sample_conditions

    defaults = training_defaults(geometry, training_ranges)
    ranges = ConditionRanges.for_geometry(
        geometry,
        energy=defaults.get("energy"),
        theta=defaults.get("theta"),
        point=defaults.get("point"),
    )
    drawn = sample_conditions(geometry, ranges, n, np.random.default_rng(seed))
    return {name: drawn[name] for name in geometry.condition_names}
