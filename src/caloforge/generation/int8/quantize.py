"""The int8 generator: quantize, guard, search (or reuse a cached choice), and check on
showers the guard never saw."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from caloforge._optional import import_optional
from caloforge.data.transforms import Identity, Transform
from caloforge.generation.int8.cache import cache_key, cached, store
from caloforge.generation.int8.guard import (
    Guard,
    GuardMetrics,
    Int8Error,
    Int8Tolerance,
    cpu_generator,
    in_gev,
    make_feeds,
)
from caloforge.generation.int8.onnxruntime_qdq import OnnxRuntimeQuantizer
from caloforge.generation.int8.openvino_nncf import OpenVinoQuantizer
from caloforge.generation.int8.report import Int8Report
from caloforge.generation.int8.search import search
from caloforge.generation.onnx_graph import GeVGenerator, module_to_onnx
from caloforge.generation.openvino import OpenVinoGenerator, Runner
from caloforge.geometry import Geometry
from caloforge.models import ShowerGenerator

if TYPE_CHECKING:
    import onnx

__all__ = [
    "QuantizedGenerator",
    "calibration_conditions",
    "held_out_metrics",
    "held_out_showers",
    "quantize_int8",
    "quantize_onnx_model",
]


class QuantizedGenerator(OpenVinoGenerator):
    """The int8 generator: `generator(noise, conditions) -> showers` like the fp32 one.

    An `OpenVinoGenerator` whose model is the quantized `openvino.Model` (dynamic batch);
    `report` says what was quantized and how well. Measured while it was built (None where
    not): `speedup`, how much faster than the fp32 graph it ran on a calibration batch;
    `fp32_seconds_per_shower`, the fp32 graph's time there; `setup_seconds`, what building it
    took besides the search (export, the guard's references, quantizing, the checks).
    """

    def __init__(
        self,
        reference: ShowerGenerator,
        model: Any,
        runner: Runner,
        report: Int8Report,
        speedup: float | None = None,
        fp32_seconds_per_shower: float | None = None,
        setup_seconds: float | None = None,
    ) -> None:
        super().__init__(reference, model, runner)
        self.report = report
        self.engine = report.library
        self.speedup = speedup
        self.fp32_seconds_per_shower = fp32_seconds_per_shower
        self.setup_seconds = setup_seconds


class DrawsConditions(Protocol):
    """What draws calibration conditions: `ShowerPipeline` (in its training ranges)."""

    def calibration_conditions(self, n: int = 512, *, seed: int = 0) -> dict[str, np.ndarray]: ...


def calibration_conditions(
    source: DrawsConditions, n: int = 512, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """`n` conditions for calibrating: `source.calibration_conditions` (`ShowerPipeline`'s:
    in the checkpoint's training ranges), at least 2."""
    if n < 2:
        raise Int8Error(f"the int8 calibration set needs at least 2 showers, got {n}")
    return source.calibration_conditions(n, seed=seed)


def quantize_int8(
    generator: ShowerGenerator,
    transform: Transform,
    geometry: Geometry,
    calibration: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    tolerance: Int8Tolerance | None = None,
    progress: bool = False,
    threads: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    output_threshold: bool = True,
    source: str = "generator",
) -> QuantizedGenerator:
    """`generator` quantized to int8 with the accuracy guard (`caloforge.generation.int8`).

    transform: the preprocessing the generator was trained in (the guard compares showers in
        GeV); geometry: the showers'.
    calibration: conditions name -> (n,) or (n, size) in the geometry's units (for example
        `calibration_conditions(pipeline, 512)`); the noise is drawn from `seed`.
    threads: OpenVINO inference threads (default: `torch.get_num_threads()`).
    cache: a folder for the search's choice of layers (`default_cache()` is where `generate`
        keeps them). With the same generator, calibration set, tolerance, libraries, CPU and
        threads, a later call quantizes the cached choice once and runs the guard on it
        again, and searches only if it fails.
    output_threshold: fit a threshold subtracted before the output's clamp at zero, which
        removes the energy int8 rounding noise adds where the clamp keeps only its positive
        part (`search.output_threshold`; in `report.threshold`). Off: the layers alone decide.
    source: what the generator is (a checkpoint folder), for messages.

    Raises `MissingDependencyError` without openvino / nncf (`pip install caloforge[int8]`) or
    onnx / onnxscript, `ConditionError` for a malformed calibration set.
    """
    start = time.perf_counter()
    tolerance = tolerance or Int8Tolerance()
    threads = threads or torch.get_num_threads()
    log = _logger(progress)
    import_optional("openvino", package="openvino", extra="int8", purpose="the int8 backend")
    import_optional("nncf", package="nncf", extra="int8", purpose="the int8 backend")
    feeds, noise_a, energy = make_feeds(generator, geometry, calibration, seed, source)
    # What is quantized is the generator's frozen() copy (gan3d: its first layers folded).
    frozen = cpu_generator(generator).frozen()
    module = GeVGenerator(frozen, Identity(), generator.condition_names)
    example = {k: torch.from_numpy(v[:2]) for k, v in feeds[0].items()}
    if len(feeds[0]["noise"]) < 2:
        example = {k: torch.from_numpy(np.concatenate([v, v])) for k, v in feeds[0].items()}
    log("exporting the generator to ONNX ...")
    model = module_to_onnx(module, example, output_name="showers", what=source)
    n = sum(len(f["noise"]) for f in feeds)
    log(f"fp32 reference showers for the guard ({2 * n}: two noises of {n}) ...")
    guard = Guard(generator, transform, geometry, feeds, noise_a, energy)
    backend = OpenVinoQuantizer(model, feeds, threads, output_threshold)
    found = None
    path = None
    if cache is not None:
        key = cache_key(model, feeds, tolerance, threads, backend.library, output_threshold)
        path = Path(cache) / f"{key}.json"
        if path.exists():
            log("quantizing the kept choice of layers and checking the guard on it ...")
        found = cached(backend, transform, feeds, guard, path, log)
    if found is not None:
        quantized, report = found
    else:
        log(
            f"searching which of the {len(backend.layers())} layers stay int8 (the guard on "
            "each choice: minutes for a large generator; the choice is kept for the next run)"
        )
        quantized, report = search(backend, transform, feeds, guard, tolerance, log, source=source)
        if path is not None:
            store(path, report, log)
    log("timing the int8 model against the fp32 graph ...")
    fp32_seconds, int8_seconds, showers = backend.compare_speed(quantized)
    speedup = fp32_seconds / int8_seconds
    log(f"int8 runs {speedup:.2f}x the fp32 graph's speed on a calibration batch")
    searched = 0.0 if report.from_cache else report.seconds
    return QuantizedGenerator(
        frozen,
        quantized,
        backend.runner(quantized),
        report,
        speedup=speedup,
        fp32_seconds_per_shower=fp32_seconds / showers,
        setup_seconds=time.perf_counter() - start - searched,
    )


def held_out_showers(
    generator: ShowerGenerator,
    transform: Transform,
    geometry: Geometry,
    quantized: QuantizedGenerator,
    conditions: Mapping[str, np.ndarray],
    *,
    seed: int = 1,
) -> tuple[Guard, np.ndarray]:
    """A guard (fp32 references) on `conditions` with noise from `seed`, and `quantized`'s
    showers in GeV for the same noise: what `held_out_metrics` compares."""
    feeds, noise_a, energy = make_feeds(generator, geometry, conditions, seed)
    guard = Guard(generator, transform, geometry, feeds, noise_a, energy)
    outputs = []
    with torch.inference_mode():
        for feed in feeds:
            named = {k: torch.from_numpy(v) for k, v in feed.items() if k != "noise"}
            outputs.append(quantized(torch.from_numpy(feed["noise"]), named).numpy())
    return guard, in_gev(transform, np.concatenate(outputs))


def held_out_metrics(
    generator: ShowerGenerator,
    transform: Transform,
    geometry: Geometry,
    quantized: QuantizedGenerator,
    conditions: Mapping[str, np.ndarray],
    *,
    seed: int = 1,
) -> GuardMetrics:
    """The guard's numbers for `quantized` on showers it was not calibrated or checked on.

    conditions: fresh ones (e.g. `calibration_conditions(pipeline, 1024, seed=1)`); both
    noises are drawn from `seed` (the search uses its own seed, 0 by default: pass another
    one here). What a user's own comparison of fp32 and int8 files of fresh showers would see.
    """
    guard, showers = held_out_showers(
        generator, transform, geometry, quantized, conditions, seed=seed
    )
    return guard.metrics(showers)


def quantize_onnx_model(
    model: onnx.ModelProto,
    generator: ShowerGenerator,
    transform: Transform,
    geometry: Geometry,
    calibration: Mapping[str, np.ndarray],
    *,
    seed: int = 0,
    tolerance: Int8Tolerance | None = None,
    progress: bool = False,
    threads: int | None = None,
    source: str = "generator",
) -> tuple[onnx.ModelProto, Int8Report]:
    """An exported fp32 GeV graph of `generator` (`caloforge.export.onnx.pipeline_to_onnx`)
    quantized by ONNX Runtime (static QDQ, per channel) with the same guard and fallback as
    `quantize_int8`."""
    tolerance = tolerance or Int8Tolerance()
    threads = threads or torch.get_num_threads()
    feeds, noise_a, energy = make_feeds(generator, geometry, calibration, seed, source)
    guard = Guard(generator, transform, geometry, feeds, noise_a, energy)
    backend = OnnxRuntimeQuantizer(model, feeds, threads)
    try:
        quantized, report = search(
            backend, transform, feeds, guard, tolerance, _logger(progress), source=source
        )
    finally:
        backend.close()
    result: onnx.ModelProto = quantized
    return result, report


def _logger(progress: bool) -> Callable[[str], None]:
    """Status lines on stderr with the seconds since the start, where `progress`."""
    start = time.perf_counter()

    def log(message: str) -> None:
        if progress:
            elapsed = time.perf_counter() - start
            print(f"int8 [{elapsed:4.0f} s]: {message}", file=sys.stderr, flush=True)

    return log
