"""The search: which layers stay int8 while the guard holds, and the output threshold.

Quantize every layer; if the guard fails, measure each layer's error alone (the guard's
normalised score with that one layer int8) and, from every layer fp32, move the layers to
int8 one at a time, least error per multiply-add first, each kept where the guard still
holds: the guard's budget goes to the layers that do the work. Where the runtime can time a
model, a layer the guard allows in int8 but that is slower there goes back to fp32.

Where the output is clamped at zero (a final ReLU), zero-mean rounding noise before the clamp
adds energy, as only its positive part is kept. A threshold t, fitted on the guard's noise A
(independent of the B it compares), is subtracted before the clamp, `max(y - t, 0)`, so that
the int8 response matches fp32's there (`output_threshold`); the guard then judges the model
with it like any other.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import numpy as np

from caloforge.data.transforms import Transform
from caloforge.generation.int8.graph import nodes_of
from caloforge.generation.int8.guard import (
    Guard,
    GuardMetrics,
    Int8Error,
    Int8Tolerance,
    cell_energy,
    in_gev,
)
from caloforge.generation.int8.report import Int8Report
from caloforge.generation.openvino import Feed, Runner

__all__ = [
    "SPEED_MARGIN",
    "Quantizer",
    "QuantizerDefaults",
    "Trial",
    "evaluate",
    "output_threshold",
    "search",
]

# A layer the guard allows in int8 goes back to fp32 for speed only when that makes the whole
# generator faster by more than this (the timing noise of a few repeated calls).
SPEED_MARGIN = 0.03
# A layer that looks faster in fp32 is timed again this many times, in turn with the current
# choice, and goes to fp32 only if the medians agree.
_RETIMES = 3
# Bisection steps of the threshold fit: the bracket's width over 2^40, far below float32's
# resolution of the outputs.
_THRESHOLD_STEPS = 40
# Response differences below this (relative) are float32 rounding, not int8's: no threshold.
_RESPONSE_RESOLUTION = 1e-6


class Quantizer(Protocol):
    """What the search asks of a quantization library (one adapter per runtime).

    library: the library and its version, for the report.
    output: the unit of the models' output: "preprocessed" (the generator's) or "gev".
    schemes: the activation schemes the library offers (empty: one, unnamed); the search sets
        `scheme` to each in turn and keeps the best.
    """

    library: str
    output: Literal["preprocessed", "gev"]
    schemes: ClassVar[tuple[str, ...]]
    scheme: str

    def layers(self) -> dict[str, tuple[str, ...]]:
        """label -> graph node of each quantizable layer, in graph order."""
        ...

    def quantize(self, fp32_nodes: frozenset[str]) -> Any:
        """The model with every layer int8 but `fp32_nodes`."""
        ...

    def runner(self, model: Any) -> Runner: ...

    def multiply_adds(self) -> Mapping[str, float]:
        """label -> multiply-adds per shower; empty where the library cannot count them."""
        ...

    def seconds(self, model: Any) -> float | None:
        """The time of `model` on a calibration batch; None where the library is not timed."""
        ...

    def before_clamp(self, model: Any, feeds: list[Feed]) -> np.ndarray | None:
        """`model`'s outputs on `feeds` before its output's clamp at zero; None where it has
        no such clamp or the output threshold is off."""
        ...

    def thresholded(self, model: Any, threshold: float) -> Any:
        """A copy of `model` computing `max(y - threshold, 0)` at its output clamp."""
        ...


class QuantizerDefaults:
    """The optional parts of `Quantizer` for a library without them: one scheme, no counts,
    no timing, no output threshold."""

    schemes: ClassVar[tuple[str, ...]] = ()
    scheme = ""

    def multiply_adds(self) -> Mapping[str, float]:
        return {}

    def seconds(self, model: Any) -> float | None:
        return None

    def before_clamp(self, model: Any, feeds: list[Feed]) -> np.ndarray | None:
        return None

    def thresholded(self, model: Any, threshold: float) -> Any:
        raise NotImplementedError(f"{type(self).__name__} applies no output threshold")


class Trial(NamedTuple):
    """A quantized model, the guard's numbers for it, and its output threshold (0: none)."""

    model: Any
    metrics: GuardMetrics
    threshold: float = 0.0

    def describe(self) -> str:
        threshold = f"; output threshold {self.threshold:.3g}" if self.threshold > 0 else ""
        return self.metrics.describe() + threshold


def search(
    backend: Quantizer,
    transform: Transform,
    feeds: list[Feed],
    guard: Guard,
    tolerance: Int8Tolerance,
    log: Callable[[str], None],
    *,
    source: str = "generator",
) -> tuple[Any, Int8Report]:
    """Quantize every layer; if the guard fails, keep int8 the layers that cost it least.

    Each layer's error is the guard's `score` with that layer alone int8 (`sensitivity`):
    what it adds on its own, unmasked by the others (the error of all the others minus one
    ranks layers by how broken the rest is, and sent back to fp32 layers whose int8 error alone
    was well within the tolerance). From every layer fp32, the layers go to int8 one at a
    time, least error per multiply-add first (where the backend counts them: the most work
    moved to int8 for the guard's budget), each kept where the guard still holds: up to 2L
    quantizations for L layers.

    Then speed, where the backend can time a model: int8 is not faster for every layer (on a
    CPU without VNNI a dense layer can run slower in int8), so each layer left int8 is tried
    in fp32 too, in graph order, and stays there when the guard still holds and the generator
    is more than `SPEED_MARGIN` faster: L more quantizations."""
    start = time.perf_counter()
    layers = backend.layers()
    if not layers:
        raise Int8Error(f"{source}: the generator has no layer that {backend.library} quantizes")

    def trial(fp32: Sequence[str]) -> Trial:
        return evaluate(backend, transform, feeds, guard, nodes_of(layers, fp32))

    # The activation scheme (where the backend offers several): the one whose all-int8
    # model scores best, the first on a tie.
    best: Trial | None = None
    chosen = ""
    for scheme in backend.schemes or ("",):
        if scheme:
            backend.scheme = scheme
        candidate = trial(())
        named = f" ({scheme})" if scheme else ""
        log(f"all {len(layers)} layers int8{named}: {candidate.describe()}")
        if best is None or candidate.metrics.score(tolerance) < best.metrics.score(tolerance):
            best, chosen = candidate, scheme
    assert best is not None
    if chosen:
        backend.scheme = chosen
    before = best.metrics
    fallen: list[str] = []
    sensitivity: dict[str, float] = {}
    costs = _costs(backend, layers)
    if not before.holds(tolerance):
        best, fallen, sensitivity = _fall_back(trial, layers, costs, tolerance, log)
    faster: list[str] = []
    if best.metrics.holds(tolerance):
        best, faster = _faster_in_fp32(backend, trial, layers, fallen, best, tolerance, log)
    report = Int8Report(
        library=backend.library,
        layers=layers,
        int8_layers=tuple(label for label in layers if label not in fallen + faster),
        fp32_layers=tuple(fallen),
        sensitivity=sensitivity,
        before=before,
        after=best.metrics,
        tolerance=tolerance,
        holds=best.metrics.holds(tolerance),
        calibration_showers=sum(len(f["noise"]) for f in feeds),
        seconds=time.perf_counter() - start,
        faster_in_fp32=tuple(faster),
        scheme=chosen,
        multiply_adds=costs,
        threshold=best.threshold,
        threshold_gev=cell_energy(transform, best.threshold),
    )
    log(report.summary())
    return best.model, report


def _fall_back(
    trial: Callable[[Sequence[str]], Trial],
    layers: Mapping[str, tuple[str, ...]],
    costs: Mapping[str, float],
    tolerance: Int8Tolerance,
    log: Callable[[str], None],
) -> tuple[Trial, list[str], dict[str, float]]:
    """The all-int8 model fails the guard: (the best model, the labels fallen back to fp32 by
    sensitivity, each label's sensitivity)."""
    alone: dict[str, GuardMetrics] = {}
    sensitivity: dict[str, float] = {}
    for label in layers:
        measured = trial([other for other in layers if other != label])
        alone[label], sensitivity[label] = measured.metrics, measured.metrics.score(tolerance)
        log(f"{label} alone int8: {measured.describe()}")
    best = trial(list(layers))
    log(f"all {len(layers)} layers back to fp32: {best.describe()}")
    int8: list[str] = []
    # (else the fp32 differences alone exceed it: nothing to search)
    if best.metrics.holds(tolerance):
        # The least error per multiply-add moved to int8 first; a layer that fails alone
        # stays fp32, as does one whose error alone is at least that of a layer that did
        # not fit (errors add, near enough, when each is small).
        candidates = [label for label in layers if alone[label].holds(tolerance)]
        candidates.sort(key=lambda label: sensitivity[label] / costs[label])
        too_much = float("inf")
        for label in candidates:
            if sensitivity[label] >= too_much:
                continue
            measured = trial([k for k in layers if k not in {*int8, label}])
            log(f"{label} int8 too: {measured.describe()}")
            if measured.metrics.holds(tolerance):
                int8.append(label)
                best = measured
            else:
                too_much = sensitivity[label]
    fallen = sorted((k for k in layers if k not in int8), key=lambda k: -sensitivity[k])
    return best, fallen, sensitivity


def _faster_in_fp32(
    backend: Quantizer,
    trial: Callable[[Sequence[str]], Trial],
    layers: Mapping[str, tuple[str, ...]],
    fallen: list[str],
    best: Trial,
    tolerance: Int8Tolerance,
    log: Callable[[str], None],
) -> tuple[Trial, list[str]]:
    """The speed pass: (the fastest model the guard allows, the labels that went to fp32 for
    speed). Nothing where the backend is not timed."""
    fastest = backend.seconds(best.model)
    if fastest is None:
        return best, []

    def timed(model: Any) -> float:
        seconds = backend.seconds(model)
        assert seconds is not None
        return seconds

    faster: list[str] = []
    for label in [label for label in layers if label not in fallen]:
        measured = trial([*fallen, *faster, label])
        seconds = timed(measured.model) if measured.metrics.holds(tolerance) else fastest
        log(f"{label} in fp32: {seconds / fastest:.3f}x the time")
        if seconds < (1 - SPEED_MARGIN) * fastest:
            # Timed again, the two in turn: one noisy timing on a shared machine can send a
            # layer to fp32 "as faster" that is slower there.
            again = [(timed(measured.model), timed(best.model)) for _ in range(_RETIMES)]
            seconds = statistics.median(pair[0] for pair in again)
            current = statistics.median(pair[1] for pair in again)
            log(f"{label} in fp32, timed again: {seconds / current:.3f}x the time")
            if seconds < (1 - SPEED_MARGIN) * current:
                faster.append(label)
                best, fastest = measured, seconds
    return best, faster


def evaluate(
    backend: Quantizer,
    transform: Transform,
    feeds: list[Feed],
    guard: Guard,
    fp32_nodes: Sequence[str],
) -> Trial:
    """The model quantized with `fp32_nodes` left fp32, its output threshold where the backend
    applies one (`output_threshold`), and the guard's numbers for that model."""
    model = backend.quantize(frozenset(fp32_nodes))
    threshold = 0.0
    values = backend.before_clamp(model, guard.feeds_a)
    if values is not None:
        threshold = output_threshold(transform, guard, values)
        if threshold > 0:
            model = backend.thresholded(model, threshold)
    run = backend.runner(model)
    out = np.concatenate([run(f) for f in feeds])
    if backend.output == "preprocessed":
        return Trial(model, guard.metrics(in_gev(transform, out)), threshold)
    return Trial(model, guard.metrics(np.maximum(out, 0.0)), threshold)


def output_threshold(transform: Transform, guard: Guard, before_clamp: np.ndarray) -> float:
    """The output threshold of an int8 generator: t >= 0 such that `max(y - t, 0)` in place of
    the output's clamp `max(y, 0)` gives the fp32 response on the guard's noise A (0 where the
    int8 response there is not above fp32's by more than two standard errors).

    Why: rounding noise is zero-mean, but a clamp at zero (a final ReLU) keeps only its positive
    part. Where nearly every cell is zero, int8 noise before the clamp lights cells that are
    zero in fp32 and the shower gains energy. Subtracting a small t before the clamp removes
    that rectified noise (and t from each lit cell, in preprocessed units). It is fitted on the
    noise A (the same conditions, noise independent of the B the guard compares) and the guard
    then judges the model with it like any other; `held_out_metrics` checks it on showers
    neither saw.

    before_clamp: the model's outputs before the clamp on the noise A, preprocessed units. The
    preprocessing keeps zero at zero cell by cell (`caloforge.data.transforms`), so only the
    positive values count."""
    n = len(before_clamp)
    flat = before_clamp.reshape(n, -1)
    shower, cell = np.nonzero(flat > 0)
    values = flat[shower, cell]  # float32, like the guard's showers
    reference = guard.ratios(guard.fp32_a)
    if not values.size or guard.ratio_a <= 0 or n < 2:
        return 0.0

    def excess(threshold: float) -> np.ndarray:  # per shower, over fp32's ratio
        energies = transform.to_gev(values - threshold)
        sums = np.bincount(shower, weights=energies, minlength=n)
        return np.asarray(sums / guard.energy - reference)

    differences = excess(0.0)
    noise = 2.0 * differences.std(ddof=1) / math.sqrt(n)
    if differences.mean() <= max(noise, _RESPONSE_RESOLUTION * guard.ratio_a):
        return 0.0
    low, high = 0.0, float(values.max())
    for _ in range(_THRESHOLD_STEPS):
        middle = 0.5 * (low + high)
        if excess(middle).mean() > 0:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _costs(backend: Quantizer, layers: Mapping[str, tuple[str, ...]]) -> dict[str, float]:
    """label -> multiply-adds per shower where the backend counts them all; else 1 each."""
    counted = dict(backend.multiply_adds())
    if all(counted.get(label, 0) > 0 for label in layers):
        return {label: float(counted[label]) for label in layers}
    return dict.fromkeys(layers, 1.0)
