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

__all__ = ["check_conditions", "draw_conditions"]


def check_conditions(
    conditions: Mapping[str, np.ndarray], needed: Sequence[str], source: str = "generator"
) -> dict[str, np.ndarray]:
    """`conditions` as float64 arrays of one length, each finite, with every name in `needed`;
    else a `ConditionError` naming what is wrong (`source`: the model, for the message)."""
    missing = [name for name in needed if name not in conditions]
    if missing:
        raise ConditionError(
            f"{source}: the model needs condition(s) {missing}; got {sorted(conditions)}"
        )
    arrays = {name: np.asarray(value, dtype=np.float64) for name, value in conditions.items()}
    lengths = {name: (len(a) if a.ndim else -1) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1 or -1 in lengths.values():
        raise ConditionError(
            f"conditions must be arrays of one length n (one row per shower), got lengths {lengths}"
        )
    for name, values in arrays.items():
        if not np.isfinite(values).all():
            raise ConditionError(
                f"condition '{name}' has {int((~np.isfinite(values)).sum())} NaN or "
                "infinite value(s)"
            )
    return arrays


def draw_conditions(
    geometry: Geometry,
    n: int,
    *,
    seed: int = 0,
    training_ranges: Mapping[str, tuple[tuple[float, float], ...]] | None = None,
) -> dict[str, np.ndarray]:
    """`n` conditions drawn as `caloforge simulate` draws them (with `seed`), in the training
    energy (and angle) range where one is given, else the geometry's default ranges: for
    calibrating and for timing."""
    from caloforge.simulation.conditions import ConditionRanges, sample_conditions

    recorded = training_ranges or {}
    energy = recorded["energy"][0] if "energy" in recorded else None
    theta = recorded["theta"][0] if "theta" in recorded else None
    ranges = ConditionRanges.for_geometry(geometry, energy=energy, theta=theta)
    drawn = sample_conditions(geometry, ranges, n, np.random.default_rng(seed))
    return {name: drawn[name] for name in geometry.condition_names}
