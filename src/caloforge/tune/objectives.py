"""What a study weighs: the fidelity of a trained model on held-out showers, and its cost.

Fidelity is read from the headline of `caloforge validate` (`caloforge.validation.compare` on
the held-out showers and the model's showers for the same conditions): each judged row is
turned into how far it is from ideal in units of its tolerance, and the fidelity is their
mean (lower is better; 1 means "at the tolerance" on average):

- a classifier AUC: (AUC - 0.5) / (tolerance - 0.5), 0 when indistinguishable;
- a deviation (response, resolution): |deviation| / tolerance;
- a distance (FPD, KPD, projection MSE): max(value, 0) / tolerance.

Rows without a value (too few showers) or without a tolerance are left out, and the study
records which were used. The cost is the generator's: showers per second measured on the
held-out conditions (the pipeline `caloforge generate` runs), or its FLOPs per shower
(counted, so the same on any machine and unaffected by other jobs).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

COSTS = {
    "flops": ("gflop_per_shower", "minimize", "GFLOP per shower"),
    "speed": ("showers_per_s", "maximize", "showers/s"),
}
FIDELITY = ("fidelity", "minimize", "fidelity (mean headline / tolerance)")


@dataclass(frozen=True)
class Fidelity:
    """The fidelity score and the normalised rows it is the mean of (key -> badness)."""

    score: float
    parts: dict[str, float]


def row_badness(key: str, value: float | None, tolerance: float | None) -> float | None:
    """How far a headline row is from ideal, in units of its tolerance (None: not judged)."""
    if value is None or tolerance is None or not math.isfinite(value):
        return None
    if key.startswith("classifier_auc"):
        span = tolerance - 0.5
        return max(value - 0.5, 0.0) / span if span > 0 else None
    if tolerance <= 0:
        return None
    if key.endswith("_deviation"):
        return abs(value) / tolerance
    return max(value, 0.0) / tolerance


def fidelity(headline: Iterable[Any], keys: Sequence[str] | None = None) -> Fidelity:
    """The fidelity of a validation headline (`caloforge.validation.Headline` rows), over
    `keys` (None: every row); inf when no row could be judged."""
    parts = {}
    for row in headline:
        if keys is not None and row.key not in keys:
            continue
        badness = row_badness(row.key, row.value, row.tolerance)
        if badness is not None:
            parts[row.key] = badness
    score = float(np.mean(list(parts.values()))) if parts else math.inf
    return Fidelity(score, parts)


def generation_rate(
    pipeline: Any,
    conditions: Mapping[str, np.ndarray],
    *,
    batch_size: int,
    repeats: int = 3,
    seed: int = 0,
) -> float:
    """Showers/s of a `ShowerPipeline` on a batch of these conditions: the median of
    `repeats` timed calls after one warm-up call (the first call pays one-off costs)."""
    n = min(batch_size, len(next(iter(conditions.values()))))
    batch = {k: np.asarray(v)[:n] for k, v in conditions.items()}
    generator = torch.Generator().manual_seed(seed)
    pipeline(batch, generator=generator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pipeline(batch, generator=generator)
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def gflop_per_shower(pipeline: Any, conditions: Mapping[str, np.ndarray]) -> float:
    """The generator's FLOPs per shower (`caloforge.bench`'s count) on four held-out showers'
    conditions."""
    from caloforge.bench.generation import count_gflop_per_shower

    reference = next(pipeline.generator.parameters())
    tensors = {
        k: torch.as_tensor(np.asarray(v)[:4], dtype=reference.dtype, device=reference.device)
        for k, v in conditions.items()
    }
    return count_gflop_per_shower(pipeline.generator, tensors)


def objective_names(cost: str) -> list[str]:
    """The study's objectives, in order: fidelity, then the cost unless `cost` is "none"."""
    return ["fidelity"] + ([COSTS[cost][0]] if cost != "none" else [])


def directions(cost: str) -> list[str]:
    return ["minimize"] + ([COSTS[cost][1]] if cost != "none" else [])


def objective_label(name: str) -> str:
    if name == "fidelity":
        return FIDELITY[2]
    return next(label for key, _, label in COSTS.values() if key == name)


def pareto_front(points: Sequence[Sequence[float]], directions_: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (at least as good in every objective,
    better in one), for objectives to minimize or maximize."""
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions_])
    values = np.asarray(points, dtype=np.float64).reshape(len(points), len(signs)) * signs
    front = []
    for i, p in enumerate(values):
        dominated = np.any(np.all(values <= p, axis=1) & np.any(values < p, axis=1))
        if not dominated:
            front.append(i)
    return front
