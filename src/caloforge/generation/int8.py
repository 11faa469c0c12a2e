"""int8 generation: a generator quantized to int8, kept only where an accuracy guard allows.

>>> quantized = quantize_int8(pipeline, calibration_conditions(pipeline, 512))   # doctest: +SKIP
>>> pipeline_int8 = ShowerPipeline(quantized, pipeline.transform, pipeline.geometry)
>>> quantized.report.to_dict()                       # which layers stayed int8, the guard's numbers

In the spirit of the accuracy-driven int8 tool of the Conv2D GAN study (Intel LPOT; systems.md,
section 3): post-training static quantization, then a guard that compares the int8 showers with
the fp32 ones, and a layer-by-layer fallback to fp32 until the guard holds.

1. Calibrate and quantize: the generator's `frozen()` copy, exported to ONNX
   (`caloforge.export.onnx`), is quantized by NNCF for OpenVINO (`nncf.quantize`, static:
   activation ranges from the calibration conditions with noise drawn from `seed`; weights
   int8 symmetric per channel, activations per tensor, asymmetric (NNCF's MIXED preset) or
   symmetric (PERFORMANCE), whichever scores better with every layer int8; full bias
   correction. On the gan3d demo generator with every layer int8 the response error is 0.8 %
   with asymmetric activations, 5.1 % with symmetric ones and the fast correction). Only the
   layers are int8 (convolutions, transposed convolutions, dense layers); the conditioning
   arithmetic and the output stay fp32, as the guard would otherwise always trip on them.
2. Guard (`GuardMetrics`, on the calibration conditions, showers in GeV): the int8 showers
   against the fp32 showers of the same noise B, with fp32 showers of an independent noise A as
   the statistical baseline:
   - projection MSE (`caloforge.validation.metrics.projection_mse`, the Conv2D paper's metric):
     `degradation = mse(fp32 B, int8 B) / mse(fp32 A, fp32 B)`, default tolerance 10 %. This is
     the expected relative increase of the paper's number, fp32 A against the generator, when
     int8 replaces fp32: E[mse(A, int8 B)] = E[mse(A, fp32 B)] + mse(fp32 B, int8 B) up to a
     cross term that averages to zero over A (the direct ratio of mse(A, int8 B) to
     mse(A, fp32 B) swings by tens of % with that cross term at a few hundred showers). The
     baseline is the metric's noise floor at the calibration set's size (it falls as 1 / n):
     with 512 showers, 10 % there is 10 % x N / 512 of the floor of an N-shower comparison.
     It is the expected mse(fp32 A, fp32 B), estimated from the paired showers
     (`caloforge.validation.metrics.projection_mse_floor`): one draw of it swung 6x between
     held-out sets of a conv2d-g1 generator, whose noise moves a shower's cells together;
   - response: `|mean(sum / E) int8 / mean(sum / E) fp32 - 1|`, default 1 % (E: the primary
     energy, or |momentum| for geometries conditioned on a momentum), held to that error plus
     two of its standard errors (from the per-shower differences, same noise): measured on
     512 showers it is itself uncertain by a quarter of the tolerance (gan3d), and the
     tolerance is meant for showers the guard never saw (`held_out_metrics` checks them);
   - profile: L1 distance of the normalised mean longitudinal profiles
     (`caloforge.training.physics_check.profile`, the x profile of depth-summed geometries),
     default 0.02 (2 % of the energy shifted between layers).
3. Fallback: if the guard fails, each layer's error is measured alone (the guard's normalised
   score, `GuardMetrics.score`, with that one layer int8 and the rest fp32); from every layer
   fp32, the layers then go to int8 one at a time, least error per multiply-add first (the
   layers' multiply-adds are counted from the graph), each kept where the guard still holds:
   the guard's budget goes to the layers that do the work. The report gives the share of the
   multiply-adds left int8.
4. Output threshold (OpenVINO; every model the guard judges): where the output is clamped at
   zero (a final ReLU), zero-mean rounding noise before the clamp adds energy, as only its
   positive part is kept; where nearly every cell is zero (gan3d) that alone broke the response
   tolerance. A threshold t, fitted on the guard's noise A (independent of the B it compares),
   is subtracted before the clamp, `max(y - t, 0)`, so that the int8 response matches fp32's
   there (`_output_threshold`; `Int8Report.threshold`, with the cell energy it is in GeV). On
   the gan3d demo generator it let the last convolution go int8: 4.2-4.5x eager, not 3.96x,
   held-out response 0.01 %, cells above zero per shower 147.0 against fp32's 146.9 (2 048
   showers). It does not scale with the shower: the response by primary energy
   moved by up to +1.1 % (71-100 GeV) and -0.2 % (165-200 GeV) against the fp32-last-layer
   choice (`benchmarks/int8_held_out.py` prints it); `output_threshold=False` turns it off.

Why OpenVINO + NNCF: measured against ONNX Runtime QDQ and PyTorch PT2E on this project's CPU
(benchmarks/int8_libraries.md): the only one running the 3D convolutions of 3DGAN in int8 with a
real speed-up, and its fp32 is already faster than the others. `export_onnx(..., int8=True)`
writes an ONNX Runtime QDQ model instead (a portable file for ONNX Runtime in C++), made by the
same guard and fallback with ONNX Runtime's quantizer (`quantize_onnx_model`).

Dependencies: `pip install caloforge[int8]` (openvino, nncf) for `quantize_int8`;
`caloforge[onnx]` for the export either way.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import platform
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np
import torch

from caloforge import __version__
from caloforge._files import atomic_output
from caloforge.data.transforms import Identity
from caloforge.errors import CaloforgeError, ConditionError
from caloforge.export.onnx import (
    GeVGenerator,
    import_optional,
    module_to_onnx,
)
from caloforge.generation.openvino import (
    Feed,
    OpenVinoGenerator,
    OpenVinoRunner,
    Runner,
    openvino_model,
)
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import ShowerGenerator
from caloforge.training.physics_check import profile
from caloforge.validation.metrics import projection_mse, projection_mse_floor

if TYPE_CHECKING:
    import onnx

__all__ = [
    "GuardMetrics",
    "Int8Error",
    "Int8Report",
    "Int8Tolerance",
    "QuantizedGenerator",
    "calibration_conditions",
    "default_cache",
    "held_out_metrics",
    "quantize_int8",
    "quantize_onnx_model",
]


ONNX_LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
OPENVINO_LAYER_OPS = frozenset(
    {
        "Convolution",
        "GroupConvolution",
        "ConvolutionBackpropData",
        "GroupConvolutionBackpropData",
        "MatMul",
    }
)
_BATCH = 64  # showers per calibration and guard batch


class Int8Error(CaloforgeError):
    """Quantization that cannot be done as asked (bad calibration set, failing library)."""


# --- the guard ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Int8Tolerance:
    """How far the int8 showers may be from the fp32 ones (see the module docstring)."""

    projection_mse: float = 0.10  # int8's projection MSE shift over fp32's noise floor
    response: float = 0.01  # relative difference of the mean visible / primary energy ratio
    profile: float = 0.02  # L1 distance of the normalised longitudinal profiles (in [0, 2])

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if not value > 0:
                raise Int8Error(f"int8 tolerance '{key}' must be positive, got {value}")


@dataclass(frozen=True)
class GuardMetrics:
    """The guard's numbers for one quantized generator (int8 vs fp32, showers in GeV)."""

    projection_mse_degradation: float  # mse(fp32 B, int8 B) / mse(fp32 A, fp32 B)
    response_error: float  # |ratio int8 / ratio fp32 - 1|, same noise
    profile_l1: float  # L1 of the normalised longitudinal profiles, same noise
    relative_l2: float  # ||int8 - fp32|| / ||fp32|| over all cells, same noise (not guarded)
    # statistical error of response_error: the per-shower ratio differences' standard error
    response_standard_error: float = 0.0

    @property
    def response_bound(self) -> float:
        """What the response is held to: its error plus two standard errors. A difference
        measured on a few hundred showers is itself uncertain (gan3d: 0.8 % +- 0.2 % on 512;
        0.4 % to 1.2 % on other draws of 512), and the tolerance is meant for any showers."""
        return self.response_error + 2.0 * self.response_standard_error

    def holds(self, tolerance: Int8Tolerance) -> bool:
        return (
            self.projection_mse_degradation <= tolerance.projection_mse
            and self.response_bound <= tolerance.response
            and self.profile_l1 <= tolerance.profile
        )

    def score(self, tolerance: Int8Tolerance) -> float:
        """Sum of each guarded number over its tolerance, where positive (ranks layers)."""
        return (
            self.projection_mse_degradation / tolerance.projection_mse
            + self.response_bound / tolerance.response
            + self.profile_l1 / tolerance.profile
        )


@dataclass(frozen=True)
class Int8Report:
    """What `quantize_int8` / `quantize_onnx_model` did, and the guard's verdict.

    layers: every quantizable layer (label -> graph node), in graph order;
    int8_layers / fp32_layers: the labels left int8 / fallen back to fp32 (the most sensitive
        first);
    faster_in_fp32: labels the guard allowed in int8 but that made the generator slower there,
        so they run fp32 too (OpenVINO only, see `_search`);
    sensitivity: label -> `GuardMetrics.score` with that layer alone int8 (measured only when
        the all-int8 model fails the guard);
    multiply_adds: label -> multiply-adds per shower (1 each where the backend cannot count
        them), for `int8_share`;
    before: the guard with every layer int8; after: with the final choice.
    """

    library: str
    layers: Mapping[str, str]
    int8_layers: tuple[str, ...]
    fp32_layers: tuple[str, ...]
    sensitivity: Mapping[str, float]
    before: GuardMetrics
    after: GuardMetrics
    tolerance: Int8Tolerance
    holds: bool
    calibration_showers: int
    seconds: float = 0.0  # time the search took
    faster_in_fp32: tuple[str, ...] = ()
    scheme: str = ""  # the activation quantization chosen, where the library offers several
    multiply_adds: Mapping[str, float] = field(default_factory=dict)
    from_cache: bool = False  # the layer choice came from `cache` (the guard checked it again)
    # subtracted before the output's clamp at zero (`_output_threshold`), preprocessed units,
    # and the cell energy that is in GeV; 0: none
    threshold: float = 0.0
    threshold_gev: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Int8Report:
        """The report `to_dict` wrote."""
        fields = dict(data)
        fields.pop("int8_share", None)
        for key in ("before", "after"):
            fields[key] = GuardMetrics(**fields[key])
        fields["tolerance"] = Int8Tolerance(**fields["tolerance"])
        for key in ("int8_layers", "fp32_layers", "faster_in_fp32"):
            fields[key] = tuple(fields[key])
        return cls(**fields)

    @property
    def int8_share(self) -> float | None:
        """Fraction of the layers' multiply-adds that run int8 (None without them)."""
        total = sum(self.multiply_adds.values())
        if not self.multiply_adds or total <= 0:
            return None
        return sum(self.multiply_adds.get(label, 0.0) for label in self.int8_layers) / total

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = dict(self.layers)
        out["sensitivity"] = dict(self.sensitivity)
        out["multiply_adds"] = dict(self.multiply_adds)
        out["int8_share"] = self.int8_share
        out["int8_layers"], out["fp32_layers"] = list(self.int8_layers), list(self.fp32_layers)
        out["faster_in_fp32"] = list(self.faster_in_fp32)
        return out

    def summary(self) -> str:
        kept = f"{len(self.int8_layers)} of {len(self.layers)} layers int8"
        if self.int8_share is not None:
            kept += f", {self.int8_share:.0%} of the multiply-adds"
        if self.scheme:
            kept += f" ({self.scheme})"
        if self.from_cache:
            kept += " [the choice cached, checked again]"
        fallen = f"; fp32: {', '.join(self.fp32_layers)}" if self.fp32_layers else ""
        if self.faster_in_fp32:
            fallen += f"; fp32 as faster: {', '.join(self.faster_in_fp32)}"
        if self.threshold > 0:
            fallen += (
                f"; output threshold {self.threshold:.3g} ({self.threshold_gev:.2g} GeV a cell)"
            )
        a = self.after
        return (
            f"int8 ({self.library}): {kept}{fallen}; projection MSE "
            f"{a.projection_mse_degradation:.1%}, response {a.response_error:.2%} +- "
            f"{a.response_standard_error:.2%}, profile L1 {a.profile_l1:.4f} "
            f"({'within' if self.holds else 'OUTSIDE'} tolerance)"
        )


def primary_energy(conditions: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n,) primary energy, GeV: `energy`, or the norm of `momentum`."""
    if "energy" in conditions:
        return np.asarray(conditions["energy"], dtype=np.float64).reshape(-1)
    if "momentum" in conditions:
        momentum = np.asarray(conditions["momentum"], dtype=np.float64)
        return np.linalg.norm(momentum.reshape(len(momentum), -1), axis=1)
    raise ConditionError(
        f"the int8 guard needs an 'energy' or 'momentum' condition, got {sorted(conditions)}"
    )


class _Guard:
    """The fp32 references on the calibration set, and the guard's numbers for int8 showers."""

    def __init__(
        self,
        pipeline: ShowerPipeline,
        feeds: Sequence[Feed],
        noise_a: Sequence[np.ndarray],
        energy: np.ndarray,
    ) -> None:
        self.geometry = pipeline.geometry
        self.energy = energy
        generator = _cpu_generator(pipeline)
        module = GeVGenerator(generator, pipeline.transform, pipeline.condition_names)
        module = module.eval()

        def gev(feed: Feed) -> np.ndarray:
            with torch.inference_mode():
                return module(*(torch.from_numpy(v) for v in feed.values())).numpy()

        self.fp32_b = np.concatenate([gev(f) for f in feeds])
        # the same conditions with the independent noise A (the output threshold is fitted there)
        self.feeds_a = [{**f, "noise": a} for f, a in zip(feeds, noise_a, strict=True)]
        self.fp32_a = np.concatenate([gev(f) for f in self.feeds_a])
        # what mse(fp32 A, fp32 B) is expected to be, from the paired showers (one draw of it
        # swung 6x on conv2d-g1, whose noise moves a shower's cells together)
        self.baseline = projection_mse_floor(self.fp32_b, self.fp32_a)
        self.ratio = self._ratio(self.fp32_b)
        self.ratio_a = self._ratio(self.fp32_a)
        self.profile = profile(self.fp32_b, self.geometry)

    def _ratios(self, showers: np.ndarray) -> np.ndarray:
        return showers.reshape(len(showers), -1).sum(1, dtype=np.float64) / self.energy

    def _ratio(self, showers: np.ndarray) -> float:
        return float(self._ratios(showers).mean())

    def metrics(self, int8_b: np.ndarray) -> GuardMetrics:
        shift = _projection(self.fp32_b, int8_b)
        if self.baseline > 0:
            degradation = shift / self.baseline
        else:  # the generator ignores its noise: any change is a degradation
            degradation = 0.0 if shift == 0 else float("inf")
        ratio = self._ratio(int8_b)
        norm = float(np.linalg.norm(self.fp32_b))
        # Paired: the same noise and conditions, so the per-shower differences carry the error.
        differences = self._ratios(int8_b) - self._ratios(self.fp32_b)
        spread = float(differences.std(ddof=1)) / np.sqrt(len(differences))
        return GuardMetrics(
            projection_mse_degradation=float(degradation),
            response_error=abs(ratio / self.ratio - 1.0) if self.ratio > 0 else float(ratio > 0),
            profile_l1=float(np.abs(profile(int8_b, self.geometry) - self.profile).sum()),
            relative_l2=float(np.linalg.norm(int8_b - self.fp32_b)) / (norm if norm > 0 else 1.0),
            response_standard_error=float(spread / self.ratio) if self.ratio > 0 else 0.0,
        )


def _projection(reference: np.ndarray, showers: np.ndarray) -> float:
    return projection_mse(reference, showers, n_bootstrap=2)[0]


# --- calibration set ------------------------------------------------------------------------
def calibration_conditions(
    pipeline: ShowerPipeline, n: int = 512, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """`n` conditions for calibrating: `ShowerPipeline.calibration_conditions`."""
    if n < 2:
        raise Int8Error(f"the int8 calibration set needs at least 2 showers, got {n}")
    return pipeline.calibration_conditions(n, seed=seed)


def _cpu_generator(pipeline: ShowerPipeline) -> ShowerGenerator:
    """The pipeline's generator in eval mode on the CPU (a copy if it is elsewhere: the
    pipeline keeps working where it is): the guard's fp32 reference."""
    generator = pipeline.generator
    if next(generator.parameters()).device.type != "cpu":
        generator = copy.deepcopy(generator).to("cpu")
    return generator.eval()


def _feeds(
    pipeline: ShowerPipeline, calibration: Mapping[str, np.ndarray], seed: int
) -> tuple[list[Feed], list[np.ndarray], np.ndarray]:
    """Calibration batches (noise B), the independent noise A per batch, primary energies."""
    arrays = pipeline._check(calibration)  # names, lengths, finiteness
    n = len(next(iter(arrays.values())))
    if n < 2:
        raise Int8Error(f"the int8 calibration set needs at least 2 showers, got {n}")
    generator = _cpu_generator(pipeline)
    noise_b = generator.sample_noise(n, torch.Generator().manual_seed(seed))
    noise_a = generator.sample_noise(n, torch.Generator().manual_seed(seed + 1_000_003))
    feeds, other = [], []
    for lo in range(0, n, _BATCH):
        feed = {"noise": noise_b[lo : lo + _BATCH].numpy()}
        for name in pipeline.condition_names:
            size = pipeline.geometry.condition(name).size
            values = arrays[name][lo : lo + _BATCH]
            shape = (len(values),) if size == 1 else (len(values), size)
            feed[name] = np.ascontiguousarray(values.reshape(shape), dtype=np.float32)
        feeds.append(feed)
        other.append(noise_a[lo : lo + _BATCH].numpy())
    return feeds, other, primary_energy(arrays)


# --- the search -----------------------------------------------------------------------------
class _Backend(Protocol):
    library: str
    output: Literal["preprocessed", "gev"]

    def layers(self) -> dict[str, str]: ...  # label -> node name

    def quantize(self, fp32_nodes: frozenset[str]) -> Any: ...  # the quantized model

    def runner(self, model: Any) -> Runner: ...


# A layer the guard allows in int8 goes back to fp32 for speed only when that makes the whole
# generator faster by more than this (the timing noise of a few repeated calls).
SPEED_MARGIN = 0.03
# A layer that looks faster in fp32 is timed again this many times, in turn with the current
# choice, and goes to fp32 only if the medians agree.
_RETIMES = 3


def _search(
    backend: _Backend,
    pipeline: ShowerPipeline,
    feeds: list[Feed],
    guard: _Guard,
    tolerance: Int8Tolerance,
    log: Callable[[str], None],
) -> tuple[Any, Int8Report]:
    """Quantize every layer; if the guard fails, keep int8 the layers that cost it least.

    Each layer's error is the guard's `score` with that layer alone int8 (`sensitivity`):
    what it adds on its own, unmasked by the others (the error of all the others minus one
    ranks layers by how broken the rest is: on a conv2d-g1 generator, it sent back to fp32
    the largest convolutions, whose int8 error alone was well within the tolerance). From every
    layer fp32, the layers go to int8 one at a time, least error per multiply-add first
    (where the backend counts them: the most work moved to int8 for the guard's budget), each
    kept where the guard still holds: up to 2L quantizations for L layers.

    Then speed, where the backend can time a model (`seconds`, OpenVINO): int8 is not faster
    for every layer (without VNNI, gan3d's folded dense layer ran at 0.87x its fp32 speed), so
    each layer left int8 is tried in fp32 too, in graph order, and stays there when the guard
    still holds and the generator is more than `SPEED_MARGIN` faster: L more quantizations."""
    start = time.perf_counter()
    layers = backend.layers()
    if not layers:
        raise Int8Error(
            f"{pipeline.source}: the generator has no layer that {backend.library} quantizes"
        )

    def evaluate(fp32: Sequence[str]) -> _Trial:
        return _evaluate(backend, pipeline, feeds, guard, [layers[label] for label in fp32])

    # The activation scheme (where the backend offers several): the one whose all-int8
    # model scores best, the first on a tie.
    schemes: tuple[str, ...] = getattr(backend, "schemes", ())
    best: _Trial | None = None
    for scheme in schemes or ("",):
        if scheme:
            backend.scheme = scheme  # type: ignore[attr-defined]
        candidate = evaluate(())
        log(f"all {len(layers)} layers int8{f' ({scheme})' if scheme else ''}: {_told(candidate)}")
        if best is None or candidate.metrics.score(tolerance) < best.metrics.score(tolerance):
            best, chosen = candidate, scheme
    assert best is not None
    if chosen:
        backend.scheme = chosen  # type: ignore[attr-defined]
    before, fallen, sensitivity = best.metrics, [], {}
    costs = _costs(backend, layers)
    if not before.holds(tolerance):
        alone: dict[str, GuardMetrics] = {}
        for label in layers:
            trial = evaluate([other for other in layers if other != label])
            alone[label], sensitivity[label] = trial.metrics, trial.metrics.score(tolerance)
            log(f"{label} alone int8: {_told(trial)}")
        best = evaluate(list(layers))
        log(f"all {len(layers)} layers back to fp32: {_told(best)}")
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
                trial = evaluate([k for k in layers if k not in {*int8, label}])
                log(f"{label} int8 too: {_told(trial)}")
                if trial.metrics.holds(tolerance):
                    int8.append(label)
                    best = trial
                else:
                    too_much = sensitivity[label]
        fallen = sorted((k for k in layers if k not in int8), key=lambda k: -sensitivity[k])
    timer: Callable[[Any], float] | None = getattr(backend, "seconds", None)
    faster: list[str] = []
    if timer is not None and best.metrics.holds(tolerance):
        fastest = timer(best.model)
        for label in [label for label in layers if label not in fallen]:
            trial = evaluate([*fallen, *faster, label])
            seconds = timer(trial.model) if trial.metrics.holds(tolerance) else fastest
            log(f"{label} in fp32: {seconds / fastest:.3f}x the time")
            if seconds < (1 - SPEED_MARGIN) * fastest:
                # Timed again, the two in turn: one noisy timing on a shared machine once sent
                # gan3d's largest convolution to fp32 "as faster", at 0.8x the speed.
                again = [(timer(trial.model), timer(best.model)) for _ in range(_RETIMES)]
                seconds = statistics.median(pair[0] for pair in again)
                current = statistics.median(pair[1] for pair in again)
                log(f"{label} in fp32, timed again: {seconds / current:.3f}x the time")
                if seconds < (1 - SPEED_MARGIN) * current:
                    faster.append(label)
                    best, fastest = trial, seconds
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
        threshold_gev=_cell_energy(pipeline, best.threshold),
    )
    log(report.summary())
    return best.model, report


class _Trial(NamedTuple):
    """A quantized model, the guard's numbers for it, and its output threshold (0: none)."""

    model: Any
    metrics: GuardMetrics
    threshold: float = 0.0


def _evaluate(
    backend: _Backend,
    pipeline: ShowerPipeline,
    feeds: list[Feed],
    guard: _Guard,
    fp32_nodes: Sequence[str],
) -> _Trial:
    """The model quantized with `fp32_nodes` left fp32, its output threshold where the backend
    applies one (`_output_threshold`), and the guard's numbers for that model."""
    model = backend.quantize(frozenset(fp32_nodes))
    threshold = 0.0
    before_clamp: Callable[[Any, list[Feed]], np.ndarray | None] | None = getattr(
        backend, "before_clamp", None
    )
    if before_clamp is not None:
        values = before_clamp(model, guard.feeds_a)
        if values is not None:
            threshold = _output_threshold(pipeline, guard, values)
        if threshold > 0:
            model = backend.thresholded(model, threshold)  # type: ignore[attr-defined]
    run = backend.runner(model)
    out = np.concatenate([run(f) for f in feeds])
    if backend.output == "preprocessed":
        return _Trial(model, guard.metrics(_in_gev(pipeline, out)), threshold)
    return _Trial(model, guard.metrics(np.maximum(out, 0.0)), threshold)


# Bisection steps of the threshold fit: the bracket's width over 2^40, far below float32's
# resolution of the outputs.
_THRESHOLD_STEPS = 40
# Response differences below this (relative) are float32 rounding, not int8's: no threshold.
_RESPONSE_RESOLUTION = 1e-6


def _output_threshold(pipeline: ShowerPipeline, guard: _Guard, before_clamp: np.ndarray) -> float:
    """The output threshold of an int8 generator: t >= 0 such that `max(y - t, 0)` in place of
    the output's clamp `max(y, 0)` gives the fp32 response on the guard's noise A (0 where the
    int8 response there is not above fp32's by more than two standard errors).

    Why: rounding noise is zero-mean, but a clamp at zero (a final ReLU) keeps only its positive
    part. Where nearly every cell is zero (gan3d: 99 % of the cells), int8 noise before the
    clamp lights cells that are zero in fp32 and the shower gains energy: the gan3d demo
    generator's last convolution in int8 added 0.9 % to the response, most of it in cells
    that are zero in fp32, over the tolerance with its error, and no NNCF option changed that.
    Subtracting a small t before the clamp removes that rectified noise (and t from each lit
    cell, in preprocessed units). It is fitted on the noise A (the same conditions, noise
    independent of the B the guard compares) and the guard then judges the model with it like
    any other; `held_out_metrics` checks it on showers neither saw.

    before_clamp: the model's outputs before the clamp on the noise A, preprocessed units. The
    preprocessing keeps zero at zero cell by cell (`caloforge.data.transforms`), so only the
    positive values count."""
    n = len(before_clamp)
    flat = before_clamp.reshape(n, -1)
    shower, cell = np.nonzero(flat > 0)
    values = flat[shower, cell]  # float32, like the guard's showers
    reference = guard._ratios(guard.fp32_a)
    if not values.size or guard.ratio_a <= 0 or n < 2:
        return 0.0

    def excess(threshold: float) -> np.ndarray:  # per shower, over fp32's ratio
        energies = np.maximum(pipeline.transform.inverse(np.maximum(values - threshold, 0.0)), 0)
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


def _costs(backend: _Backend, layers: Mapping[str, str]) -> dict[str, float]:
    """label -> multiply-adds per shower where the backend counts them all; else 1 each."""
    count: Callable[[], Mapping[str, float]] | None = getattr(backend, "multiply_adds", None)
    counted = dict(count()) if count is not None else {}
    if all(counted.get(label, 0) > 0 for label in layers):
        return {label: float(counted[label]) for label in layers}
    return dict.fromkeys(layers, 1.0)


def multiply_adds(model: onnx.ModelProto) -> dict[str, float]:
    """ONNX node name -> multiply-adds per shower (batch axis first) of each layer (Conv,
    ConvTranspose, Gemm, MatMul) whose shapes are known past the batch axis."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}  # one shower's
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim[1:]  # past the batch axis
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [1, *(d.dim_value for d in dims)]
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    counts: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type not in ONNX_LAYER_OPS or len(node.input) < 2:
            continue
        x, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        w = weights.get(node.input[1])
        if x is None or y is None or w is None:
            continue
        if node.op_type == "Conv":  # weights (out, in / groups, *kernel)
            macs = math.prod(y) * math.prod(w[1:])
        elif node.op_type == "ConvTranspose":  # weights (in, out / groups, *kernel)
            macs = math.prod(x) * math.prod(w[1:])
        elif not any(a.name == "transA" and a.i for a in node.attribute):  # Gemm, MatMul
            macs = math.prod(y) * x[-1]  # each output a dot product over the last axis
        else:  # the batch axis is not first
            continue
        counts[node.name] = float(macs)
    return counts


def _labelled(labels: Mapping[str, str], by_node: Mapping[str, float]) -> dict[str, float]:
    return {label: by_node[node] for label, node in labels.items() if node in by_node}


def _in_gev(pipeline: ShowerPipeline, out: np.ndarray) -> np.ndarray:
    """Generator outputs in preprocessed units as showers in GeV, clamped at zero before and
    after the inverse preprocessing, as `ShowerPipeline` does."""
    showers = pipeline.transform.inverse(np.maximum(out, 0.0))
    return np.maximum(np.asarray(showers, dtype=np.float32), 0.0)


def _cell_energy(pipeline: ShowerPipeline | None, value: float) -> float:
    """A cell's energy in GeV for `value` in preprocessed units (0 for 0)."""
    if pipeline is None or value <= 0:
        return 0.0
    return float(pipeline.transform.inverse(np.array([value], dtype=np.float64))[0])


def _told(trial: _Trial) -> str:
    threshold = f"; output threshold {trial.threshold:.3g}" if trial.threshold > 0 else ""
    return _describe(trial.metrics) + threshold


def _describe(m: GuardMetrics) -> str:
    return (
        f"projection MSE {m.projection_mse_degradation:.1%}, response {m.response_error:.2%} "
        f"+- {m.response_standard_error:.2%}, profile L1 {m.profile_l1:.4f}, "
        f"rel. L2 {m.relative_l2:.3f}"
    )


def _layer_labels(model: onnx.ModelProto) -> dict[str, str]:
    """label -> ONNX node name of the quantizable layers, labels from the torch module path
    the exporter records (e.g. `generator.convs.1`), or the node name."""
    labels: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in ONNX_LAYER_OPS:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        label = node.name
        with contextlib.suppress(ValueError, SyntaxError):
            recorded = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
            scopes = [s for s in recorded if s]
            if len(scopes) >= 2:
                label = f"{scopes[-2]}/{scopes[-1]}"
        label = re.sub(r"^(g|generator)\.", "generator.", label)
        while label in labels:
            label += "'"
        labels[label] = node.name
    return labels


# --- OpenVINO + NNCF --------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs each step and draws progress bars; the guard's log says what matters."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


class _OpenVino:
    library = "openvino+nncf"
    output: Literal["preprocessed", "gev"] = "preprocessed"
    # NNCF's presets: weights symmetric per channel either way; activations asymmetric
    # (MIXED) or symmetric (PERFORMANCE) per tensor. Asymmetric suits activations after a
    # LeakyReLU or BatchNorm, far from symmetric about zero: with every layer int8 the gan3d
    # demo generator's response error fell from 5.1 % to 0.8 %; on conv2d-g1 (random weights)
    # the guard kept fewer layers int8 with it. So `_search` tries both.
    schemes = ("asymmetric activations", "symmetric activations")
    scheme = schemes[0]

    def __init__(
        self,
        model: onnx.ModelProto,
        feeds: list[Feed],
        threads: int,
        output_threshold: bool = True,
    ) -> None:
        self.ov = import_optional(
            "openvino", package="openvino", extra="int8", purpose="the int8 backend"
        )
        self.nncf = import_optional(
            "nncf", package="nncf", extra="int8", purpose="the int8 backend"
        )
        self.output_threshold = output_threshold
        version = self.ov.__version__.split("-")[0]
        self.library = f"openvino {version} + nncf {self.nncf.__version__}"
        self.feeds, self.threads = feeds, threads
        self.model = openvino_model(self.ov, model)
        self.labels = _layer_labels(model)
        self._multiply_adds = multiply_adds(model)
        # ONNX node name -> the OpenVINO ops made from it ("node_Gemm_7/WithoutBiases", ...)
        types = {op.get_type_name() for op in self.model.get_ordered_ops()}
        self.other_types = sorted(types - OPENVINO_LAYER_OPS)

    def layers(self) -> dict[str, str]:
        names = {op.get_friendly_name().split("/")[0] for op in self.model.get_ordered_ops()}
        return {label: node for label, node in self.labels.items() if node in names}

    def multiply_adds(self) -> dict[str, float]:
        return _labelled(self.labels, self._multiply_adds)

    def quantize(self, fp32_nodes: frozenset[str]) -> Any:
        nncf = self.nncf
        scope = nncf.IgnoredScope(
            types=self.other_types,
            patterns=[rf"^{re.escape(node)}(/.*)?$" for node in sorted(fp32_nodes)],
            validate=False,
        )
        with _quiet_nncf():
            return nncf.quantize(
                self.model.clone(),
                nncf.Dataset(self.feeds),
                subset_size=len(self.feeds),  # dataset items (batches), not showers
                ignored_scope=scope,
                preset=(
                    nncf.QuantizationPreset.MIXED
                    if self.scheme == self.schemes[0]
                    else nncf.QuantizationPreset.PERFORMANCE
                ),
                fast_bias_correction=False,  # the full correction: better, and ~20 % slower
            )

    def runner(self, model: Any) -> Runner:
        return OpenVinoRunner(self.ov, model, self.threads)

    @staticmethod
    def _output_clamp(model: Any) -> Any:
        """The op clamping the output at zero (the exported `clamp_min(0)`), or None."""
        op = model.get_results()[0].input_value(0).get_node()
        if op.get_type_name() != "Clamp" or op.get_attributes().get("min") != 0:
            return None
        return op

    def before_clamp(self, model: Any, feeds: list[Feed]) -> np.ndarray | None:
        """`model`'s outputs on `feeds` before its output's clamp at zero (None where the
        output is not clamped, or the threshold is off)."""
        if not self.output_threshold or self._output_clamp(model) is None:
            return None
        probe = model.clone()
        probe.get_results()[0].input(0).replace_source_output(
            self._output_clamp(probe).input_value(0)
        )
        run = self.runner(probe)
        return np.concatenate([run(feed) for feed in feeds])

    def thresholded(self, model: Any, threshold: float) -> Any:
        """A copy of `model` computing `max(y - threshold, 0)` at its output clamp."""
        ops = import_optional(
            "openvino.opset13", package="openvino", extra="int8", purpose="the int8 backend"
        )
        out = model.clone()
        clamp = self._output_clamp(out)
        lowered = ops.subtract(clamp.input_value(0), ops.constant(np.float32(threshold)))
        clamp.input(0).replace_source_output(lowered.output(0))
        out.validate_nodes_and_infer_types()
        return out

    def seconds(self, model: Any, repeats: int = 5) -> float:
        """Median time of `model` on the largest calibration batch (after one warm-up call)."""
        run, feed = self.runner(model), max(self.feeds, key=lambda f: len(f["noise"]))
        run(feed)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(feed)
            times.append(time.perf_counter() - start)
        return statistics.median(times)


# --- ONNX Runtime (for the int8 ONNX export) ---------------------------------------------------
class _OnnxRuntime:
    output: Literal["preprocessed", "gev"] = "gev"

    def __init__(self, model: onnx.ModelProto, feeds: list[Feed], threads: int) -> None:
        self.ort = import_optional(
            "onnxruntime", package="onnxruntime", extra="onnx", purpose="int8 ONNX export"
        )
        self.quantization = import_optional(
            "onnxruntime.quantization", package="onnxruntime", extra="onnx", purpose="int8 export"
        )
        self.library = f"onnxruntime {self.ort.__version__} (static QDQ)"
        self.feeds, self.threads = feeds, threads
        self.tmp = tempfile.TemporaryDirectory(prefix="caloforge-int8-")
        exported = Path(self.tmp.name) / "exported.onnx"
        exported.write_bytes(model.SerializeToString())
        # ONNX Runtime's recommended pre-processing (shape inference, graph clean-up)
        self.source = Path(self.tmp.name) / "fp32.onnx"
        self.quantization.quant_pre_process(
            str(exported), str(self.source), skip_symbolic_shape=True
        )
        self.labels = _layer_labels(model)
        self._multiply_adds = multiply_adds(model)

    def layers(self) -> dict[str, str]:
        return dict(self.labels)

    def multiply_adds(self) -> dict[str, float]:
        return _labelled(self.labels, self._multiply_adds)

    def quantize(self, fp32_nodes: frozenset[str]) -> Any:
        import onnx

        q = self.quantization
        feeds = iter(self.feeds)

        class Reader(q.CalibrationDataReader):  # type: ignore[name-defined]
            def get_next(self) -> Feed | None:
                return next(feeds, None)

        target = Path(self.tmp.name) / "int8.onnx"
        q.quantize_static(
            str(self.source),
            str(target),
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(ONNX_LAYER_OPS),
            nodes_to_exclude=sorted(fp32_nodes),
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            # u8 x s8 products summed in 16 bits saturate on AVX2 without VNNI: 7-bit weights
            reduce_range=True,
        )
        return onnx.load(str(target))

    def runner(self, model: Any) -> Runner:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        session = self.ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return lambda feed: session.run(None, feed)[0]

    def close(self) -> None:
        self.tmp.cleanup()


# --- public API -------------------------------------------------------------------------------
class QuantizedGenerator(OpenVinoGenerator):
    """The int8 generator: `generator(noise, conditions) -> showers` like the fp32 one.

    An `OpenVinoGenerator` whose model is the quantized `openvino.Model` (dynamic batch);
    `report` says what was quantized and how well.
    """

    def __init__(
        self, reference: ShowerGenerator, model: Any, runner: Runner, report: Int8Report
    ) -> None:
        super().__init__(reference, model, runner)
        self.report = report
        self.engine = report.library


def quantize_int8(
    pipeline: ShowerPipeline,
    calibration: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    tolerance: Int8Tolerance | None = None,
    progress: bool = False,
    threads: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    output_threshold: bool = True,
) -> QuantizedGenerator:
    """The pipeline's generator quantized to int8 with the accuracy guard (module docstring).

    calibration: conditions name -> (n,) or (n, size) in the geometry's units (for example
        `calibration_conditions(pipeline, 512)`); the noise is drawn from `seed`.
    threads: OpenVINO inference threads (default: `torch.get_num_threads()`).
    cache: a folder for the search's choice of layers (`default_cache()` is where `generate`
        keeps them). The search is minutes for a large generator; with the same generator,
        calibration set, tolerance, libraries, CPU and threads, a later call quantizes the
        cached choice once and runs the guard on it again, and searches only if it fails.
    output_threshold: fit a threshold subtracted before the output's clamp at zero, which
        removes the energy int8 rounding noise adds where the clamp keeps only its positive
        part (`_output_threshold`; in `report.threshold`). Off: the layers alone decide.

    Raises `MissingDependencyError` without openvino / nncf (`pip install caloforge[int8]`) or
    onnx / onnxscript, `ConditionError` for a malformed calibration set.
    """
    tolerance = tolerance or Int8Tolerance()
    threads = threads or torch.get_num_threads()
    log = _logger(progress)
    import_optional("openvino", package="openvino", extra="int8", purpose="the int8 backend")
    import_optional("nncf", package="nncf", extra="int8", purpose="the int8 backend")
    feeds, noise_a, energy = _feeds(pipeline, calibration, seed)
    # What is quantized is the generator's frozen() copy (gan3d: its first layers folded).
    generator = _cpu_generator(pipeline).frozen()
    module = GeVGenerator(generator, Identity(), pipeline.condition_names)
    example = {k: torch.from_numpy(v[:2]) for k, v in feeds[0].items()}
    if len(feeds[0]["noise"]) < 2:
        example = {k: torch.from_numpy(np.concatenate([v, v])) for k, v in feeds[0].items()}
    log("exporting the generator ...")
    model = module_to_onnx(module, example, output_name="showers", what=pipeline.source)
    guard = _Guard(pipeline, feeds, noise_a, energy)
    backend = _OpenVino(model, feeds, threads, output_threshold)
    found = None
    if cache is not None:
        key = _cache_key(model, feeds, tolerance, threads, backend.library, output_threshold)
        found = _cached(backend, pipeline, feeds, guard, Path(cache), key, log)
    if found is not None:
        quantized, report = found
    else:
        quantized, report = _search(backend, pipeline, feeds, guard, tolerance, log)
        if cache is not None:
            _store(Path(cache), key, report, log)
    return QuantizedGenerator(generator, quantized, backend.runner(quantized), report)


# --- the search's choice, cached ---------------------------------------------------------------
CACHE_ENVIRONMENT = "CALOFORGE_CACHE_DIR"
# Raised when the search would choose differently for the same inputs (2: the output threshold;
# 3: the projection-MSE baseline from the paired showers).
_SEARCH_VERSION = 3


def default_cache() -> Path:
    """Where `generate` and `bench` keep int8 choices: $CALOFORGE_CACHE_DIR/int8, else
    $XDG_CACHE_HOME/caloforge/int8, else ~/.cache/caloforge/int8."""
    if os.environ.get(CACHE_ENVIRONMENT):
        return Path(os.environ[CACHE_ENVIRONMENT]) / "int8"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "caloforge" / "int8"


def _cache_key(
    model: onnx.ModelProto,
    feeds: Sequence[Feed],
    tolerance: Int8Tolerance,
    threads: int,
    library: str,
    output_threshold: bool,
) -> str:
    """What the search's choice depends on: the exported graph (weights included), the
    calibration set (noise and conditions), the tolerance, the libraries, the search itself
    (`_SEARCH_VERSION`, the output threshold on or off) and, for the speed pass, this CPU and
    the thread count."""
    digest = hashlib.sha256(model.SerializeToString())
    for feed in feeds:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    context = {
        "tolerance": asdict(tolerance),
        "threads": threads,
        "library": library,
        "cpu": _cpu_name(),
        "caloforge": __version__,
        "search": _SEARCH_VERSION,
        "output_threshold": output_threshold,
    }
    digest.update(json.dumps(context, sort_keys=True).encode())
    return digest.hexdigest()[:40]


def _cpu_name() -> str:
    """The CPU's model and instruction sets (Linux), else what `platform` knows."""
    with contextlib.suppress(OSError):
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
        found = [line for line in first if line.startswith(("model name", "flags"))]
        if found:
            return "\n".join(found)
    return f"{platform.machine()} {platform.processor()}"


def _cached(
    backend: _OpenVino,
    pipeline: ShowerPipeline,
    feeds: list[Feed],
    guard: _Guard,
    folder: Path,
    key: str,
    log: Callable[[str], None],
) -> tuple[Any, Int8Report] | None:
    """The model of a cached choice, where one exists and the guard still holds with it."""
    path = folder / f"{key}.json"
    if not path.exists():
        return None
    start = time.perf_counter()
    try:
        record = json.loads(path.read_text())
        report = Int8Report.from_dict(record["report"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        log(f"ignoring the unreadable cached choice {path} ({error})")
        return None
    layers = backend.layers()
    fp32 = [*report.fp32_layers, *report.faster_in_fp32]
    if set(report.layers) != set(layers) or report.scheme not in backend.schemes:
        log(f"ignoring the cached choice {path}: made for other layers")
        return None
    backend.scheme = report.scheme
    trial = _evaluate(backend, pipeline, feeds, guard, [layers[k] for k in fp32])
    if not trial.metrics.holds(report.tolerance):
        log(f"the cached choice {path} no longer holds ({_told(trial)}): searching again")
        return None
    report = dataclasses.replace(
        report,
        after=trial.metrics,
        threshold=trial.threshold,
        threshold_gev=_cell_energy(pipeline, trial.threshold),
        seconds=time.perf_counter() - start,
        from_cache=True,
    )
    log(f"{report.summary()} (cached in {path})")
    return trial.model, report


def _store(folder: Path, key: str, report: Int8Report, log: Callable[[str], None]) -> None:
    """Keep the search's choice (written under a temporary name, then renamed); a cache that
    cannot be written costs the next run the search again, nothing else."""
    path = folder / f"{key}.json"
    try:
        with atomic_output(path) as partial:
            partial.write_text(json.dumps({"report": report.to_dict()}, indent=1))
    except OSError as error:
        warnings.warn(
            f"could not keep the int8 choice in {folder} ({error}); the next run searches again "
            f"(set {CACHE_ENVIRONMENT} to a writable folder)",
            stacklevel=3,
        )
        return
    log(f"choice kept in {path}")


def held_out_metrics(
    pipeline: ShowerPipeline, quantized: QuantizedGenerator, n: int = 1024, *, seed: int = 1
) -> GuardMetrics:
    """The guard's numbers for `quantized` on `n` showers it was not calibrated or checked on.

    The conditions and both noises are drawn from `seed` (the search uses its own seed, 0 by
    default: pass another one here). What a user's own comparison of fp32 and int8 files of
    fresh showers would see.
    """
    guard, showers = _held_out(pipeline, quantized, n, seed)
    return guard.metrics(showers)


def _held_out(
    pipeline: ShowerPipeline, quantized: QuantizedGenerator, n: int, seed: int
) -> tuple[_Guard, np.ndarray]:
    """`held_out_metrics`' guard (fp32 references) and its int8 showers in GeV."""
    conditions = calibration_conditions(pipeline, n, seed=seed)
    feeds, noise_a, energy = _feeds(pipeline, conditions, seed)
    guard = _Guard(pipeline, feeds, noise_a, energy)
    outputs = []
    with torch.inference_mode():
        for feed in feeds:
            named = {k: torch.from_numpy(v) for k, v in feed.items() if k != "noise"}
            outputs.append(quantized(torch.from_numpy(feed["noise"]), named).numpy())
    return guard, _in_gev(pipeline, np.concatenate(outputs))


def quantize_onnx_model(
    model: onnx.ModelProto,
    pipeline: ShowerPipeline,
    calibration: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    tolerance: Int8Tolerance | None = None,
    progress: bool = False,
    threads: int | None = None,
) -> tuple[onnx.ModelProto, Int8Report]:
    """An exported fp32 GeV graph (`caloforge.export.onnx.pipeline_to_onnx`) quantized by ONNX
    Runtime (static QDQ, per channel) with the same guard and fallback as `quantize_int8`."""
    tolerance = tolerance or Int8Tolerance()
    threads = threads or torch.get_num_threads()
    feeds, noise_a, energy = _feeds(pipeline, calibration, seed)
    guard = _Guard(pipeline, feeds, noise_a, energy)
    backend = _OnnxRuntime(model, feeds, threads)
    try:
        quantized, report = _search(backend, pipeline, feeds, guard, tolerance, _logger(progress))
    finally:
        backend.close()
    result: onnx.ModelProto = quantized
    return result, report


def _logger(progress: bool) -> Callable[[str], None]:
    import sys

    def log(message: str) -> None:
        if progress:
            print(f"int8: {message}", file=sys.stderr, flush=True)

    return log
