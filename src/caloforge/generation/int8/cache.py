"""The search's choice of layers, kept per generator, calibration set, tolerance, libraries
and CPU, and checked by the guard again on reuse (the search is minutes for a large
generator; quantizing a known choice once is seconds).

Beside the choices, a verdict per checkpoint (`Verdict`, in `verdicts/`): whether the guard
held for the generator's weights on this CPU with these libraries and threads, with which
calibration seed, and how much faster than the fp32 graph the int8 model ran. `--backend auto`
reads it without exporting or quantizing anything (`int8_verdict`), so it can choose int8 at
no cost where int8 is known to hold, and never runs the search on its own."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from caloforge import __version__
from caloforge._files import CACHE_ENVIRONMENT, atomic_output, cache_root
from caloforge.data.transforms import Transform
from caloforge.errors import OutputError
from caloforge.generation.int8.guard import Guard, Int8Tolerance, cell_energy
from caloforge.generation.int8.report import Int8Report
from caloforge.generation.int8.search import Quantizer, evaluate
from caloforge.generation.openvino import Feed
from caloforge.models import ShowerGenerator

if TYPE_CHECKING:
    import onnx

__all__ = [
    "CACHE_ENVIRONMENT",
    "Verdict",
    "cache_key",
    "cached",
    "default_cache",
    "int8_verdict",
    "store",
    "verdict_key",
    "write_verdict",
]

# Raised when the search would choose differently for the same inputs (2: the output threshold;
# 3: the projection-MSE baseline from the paired showers).
_SEARCH_VERSION = 3
VERDICTS = "verdicts"  # the folder of the verdicts, inside the cache


def default_cache() -> Path:
    """Where `generate` and `bench` keep int8 choices: $CALOFORGE_CACHE_DIR/int8, else
    $XDG_CACHE_HOME/caloforge/int8, else ~/.cache/caloforge/int8."""
    return cache_root() / "int8"


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
    trial = evaluate(backend, transform, feeds, guard, [layers[k] for k in fp32])
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
            stacklevel=3,
        )
        return
    log(f"choice kept in {path}")


@dataclass(frozen=True)
class Verdict:
    """The int8 guard's last verdict on a checkpoint here (see the module docstring).

    holds: the guard held with the choice made; int8_layers / layers: how many layers run
    int8 of those that could; speedup: time of the fp32 graph over that of the int8 model on
    a calibration batch (None where not timed); seed, calibration_showers: the calibration set
    it was judged on (building int8 again with them reuses the kept choice);
    fp32_seconds_per_shower: the fp32 graph's time there; setup_seconds: what building int8
    took besides the search (what a later run pays before its first batch).
    """

    holds: bool
    int8_layers: int
    layers: int
    speedup: float | None
    seed: int
    calibration_showers: int
    library: str
    fp32_seconds_per_shower: float | None = None
    setup_seconds: float | None = None

    def saving(self, showers: int) -> float | None:
        """Seconds int8 saves over the fp32 graph on `showers` showers, as timed when it was
        built (None where not timed)."""
        if not self.speedup or self.fp32_seconds_per_shower is None:
            return None
        return showers * self.fp32_seconds_per_shower * (1.0 - 1.0 / self.speedup)

    def usable(self, min_speedup: float) -> bool:
        """Whether `auto` may run int8: the guard held, some layer is int8, and the int8 model
        was measured at least `min_speedup` times as fast as fp32."""
        return (
            self.holds
            and self.int8_layers > 0
            and self.speedup is not None
            and self.speedup >= min_speedup
        )

    def describe(self) -> str:
        speed = f"{self.speedup:.2f}x the fp32 graph" if self.speedup else "not timed"
        guard = "guard held" if self.holds else "guard FAILED"
        return (
            f"{guard} with {self.int8_layers} of {self.layers} layers int8 on "
            f"{self.calibration_showers} calibration showers (seed {self.seed}), {speed}"
        )


def _library_versions() -> str:
    """The int8 libraries' versions, read without importing them ('' if one is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"openvino {version('openvino')} + nncf {version('nncf')}"
    except PackageNotFoundError:
        return ""


def verdict_key(
    generator: ShowerGenerator,
    transform: Transform,
    *,
    threads: int | None = None,
    tolerance: Int8Tolerance | None = None,
    output_threshold: bool = True,
) -> str | None:
    """What a verdict depends on, as a file name: the generator's weights and config, the
    preprocessing, the tolerance, the output threshold, the libraries, the search, this CPU and
    the thread count (default `torch.get_num_threads()`, as `quantize_int8`'s). None where the
    int8 libraries are not installed. Cheap: nothing is exported or quantized."""
    library = _library_versions()
    if not library:
        return None
    digest = hashlib.sha256()
    for name, value in sorted(generator.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().to("cpu", copy=True).contiguous().numpy().tobytes())
    context = {
        "family": repr(generator.config),
        "transform": transform.to_dict(),
        "tolerance": asdict(tolerance or Int8Tolerance()),
        "output_threshold": output_threshold,
        "threads": threads or torch.get_num_threads(),
        "library": library,
        "cpu": _cpu_name(),
        "caloforge": __version__,
        "search": _SEARCH_VERSION,
    }
    digest.update(json.dumps(context, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:40]


def write_verdict(cache: Path, key: str, verdict: Verdict, log: Callable[[str], None]) -> None:
    """Keep `verdict` under `key` (replacing an older one); a cache that cannot be written
    costs `auto` the int8 choice, nothing else."""
    path = cache / VERDICTS / f"{key}.json"
    try:
        with atomic_output(path) as partial:
            partial.write_text(json.dumps(asdict(verdict), indent=1))
    except (OSError, OutputError) as error:
        log(f"could not keep the int8 verdict in {path.parent} ({error})")


def int8_verdict(
    generator: ShowerGenerator,
    transform: Transform,
    *,
    cache: str | os.PathLike[str] | None = None,
    threads: int | None = None,
) -> Verdict | None:
    """The verdict kept for this generator here (default tolerance, output threshold on), or
    None where int8 was never built for it with these libraries, CPU and threads."""
    key = verdict_key(generator, transform, threads=threads)
    if key is None:
        return None
    path = Path(cache if cache is not None else default_cache()) / VERDICTS / f"{key}.json"
    try:
        return Verdict(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
