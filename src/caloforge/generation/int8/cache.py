"""The search's choice of layers, kept per generator, calibration set, tolerance, libraries
and CPU, and checked by the guard again on reuse (the search is minutes for a large
generator; quantizing a known choice once is seconds).

Beside the choices, `caloforge.generation.int8_verdict` keeps the guard's verdict per
checkpoint, which `--backend auto` reads without importing any of this."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caloforge import __version__
from caloforge._files import CACHE_ENVIRONMENT, atomic_output
from caloforge.data.transforms import Transform
from caloforge.errors import OutputError
from caloforge.generation.int8.graph import nodes_of
from caloforge.generation.int8.guard import Guard, Int8Tolerance, cell_energy
from caloforge.generation.int8.report import Int8Report
from caloforge.generation.int8.search import Quantizer, evaluate
from caloforge.generation.int8_verdict import SEARCH_VERSION, cpu_name, int8_cache
from caloforge.generation.openvino import Feed

if TYPE_CHECKING:
    import onnx

__all__ = [
    "CACHE_ENVIRONMENT",
    "CacheNotKeptWarning",
    "cache_key",
    "cached",
    "default_cache",
    "store",
]


def default_cache() -> Path:
    """Where `generate` and `bench` keep int8 choices: $CALOFORGE_CACHE_DIR/int8, else
    $XDG_CACHE_HOME/caloforge/int8, else ~/.cache/caloforge/int8."""
    return int8_cache()


def cache_key(
    model: onnx.ModelProto,
    feeds: Sequence[Feed],
    tolerance: Int8Tolerance,
    threads: int,
    library: str,
    output_threshold: bool,
) -> str:
    """What the search's choice depends on: the exported graph (weights included), the
    calibration set (noise and conditions), the tolerance, the libraries, the search itself
    (`SEARCH_VERSION`, the output threshold on or off) and, for the speed pass, this CPU and
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
        "cpu": cpu_name(),
        "caloforge": __version__,
        "search": SEARCH_VERSION,
        "output_threshold": output_threshold,
    }
    digest.update(json.dumps(context, sort_keys=True).encode())
    return digest.hexdigest()[:40]


def cached(
    backend: Quantizer,
    transform: Transform,
    feeds: list[Feed],
    guard: Guard,
    path: Path,
    log: Callable[[str], None],
) -> tuple[Any, Int8Report] | None:
    """The model of the choice cached at `path`, where it exists and the guard still holds
    with it."""
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
    trial = evaluate(backend, transform, feeds, guard, nodes_of(layers, fp32))
    if not trial.metrics.holds(report.tolerance):
        log(f"the cached choice {path} no longer holds ({trial.describe()}): searching again")
        return None
    report = dataclasses.replace(
        report,
        after=trial.metrics,
        threshold=trial.threshold,
        threshold_gev=cell_energy(transform, trial.threshold),
        seconds=time.perf_counter() - start,
        from_cache=True,
    )
    log(f"{report.summary()} (cached in {path})")
    return trial.model, report


class CacheNotKeptWarning(UserWarning):
    """The int8 choice could not be written to the cache (shown as caloforge's own one-line
    warning: a plain UserWarning came out with Python's file:line and source line)."""


def store(path: Path, report: Int8Report, log: Callable[[str], None]) -> None:
    """Keep the search's choice at `path` (written under a temporary name, then renamed); a
    cache that cannot be written costs the next run the search again, nothing else."""
    try:
        with atomic_output(path) as partial:
            partial.write_text(json.dumps({"report": report.to_dict()}, indent=1))
    except (OSError, OutputError) as error:
        warnings.warn(
            f"could not keep the int8 choice in {path.parent} ({error}); the next run searches "
            f"again (set {CACHE_ENVIRONMENT} to a writable folder)",
            CacheNotKeptWarning,
            stacklevel=3,
        )
        return
    log(f"choice kept in {path}")
