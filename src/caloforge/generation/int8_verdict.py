"""The int8 guard's verdict on a checkpoint, kept where `--backend auto` reads it cheaply.

When an int8 backend is built (`ShowerPipeline.set_backend("int8")`), beside the search's
choice of layers (`caloforge.generation.int8.cache`) a `Verdict` is kept per checkpoint in
`<cache>/int8/verdicts/`: whether the guard held for the generator's weights on this CPU with
these libraries and threads, with which calibration seed, how much faster than the fp32 graph
the int8 model ran, the fp32 graph's time per shower and what building int8 took besides the
search. `--backend auto` reads it (`int8_verdict`) without exporting, quantizing or even
importing the int8 machinery (which pulls in SciPy through the guard's metrics): it chooses
int8 at no cost where int8 is known to hold and to pay, and never runs the search itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from caloforge import __version__
from caloforge._files import atomic_output, cache_root
from caloforge.data.transforms import Transform
from caloforge.errors import OutputError
from caloforge.models import ShowerGenerator

__all__ = [
    "SEARCH_VERSION",
    "Verdict",
    "cpu_name",
    "generator_digest",
    "int8_cache",
    "int8_verdict",
    "verdict_key",
    "write_verdict",
]

# Raised when the search would choose differently for the same inputs (2: the output threshold;
# 3: the projection-MSE baseline from the paired showers; 4: a layer is every node of one
# weight tensor, named without the exporter's call count); part of both keys.
SEARCH_VERSION = 4
VERDICTS = "verdicts"  # the folder of the verdicts, inside the int8 cache


def int8_cache() -> Path:
    """The int8 choices and verdicts: $CALOFORGE_CACHE_DIR/int8, else
    $XDG_CACHE_HOME/caloforge/int8, else ~/.cache/caloforge/int8."""
    return cache_root() / "int8"


def cpu_name() -> str:
    """The CPU's model and instruction sets (Linux), else what `platform` knows."""
    with contextlib.suppress(OSError):
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
        found = [line for line in first if line.startswith(("model name", "flags"))]
        if found:
            return "\n".join(found)
    return f"{platform.machine()} {platform.processor()}"


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
    tolerance: Mapping[str, float] | None = None,
    output_threshold: bool = True,
) -> str | None:
    """What a verdict depends on, as a file name: the generator's weights and config, the
    preprocessing, the tolerance, the output threshold, the libraries, the search, this CPU and
    the thread count (default `torch.get_num_threads()`, as `quantize_int8`'s). tolerance: the
    guard's, as a mapping; None for its default (what `generate` and `bench` use). None where
    the int8 libraries are not installed. Cheap: nothing is exported or quantized."""
    library = _library_versions()
    if not library:
        return None
    context = {
        "transform": transform.to_dict(),
        "tolerance": dict(tolerance) if tolerance is not None else "default",
        "output_threshold": output_threshold,
        "threads": threads or torch.get_num_threads(),
        "library": library,
        "cpu": cpu_name(),
        "search": SEARCH_VERSION,
    }
    return generator_digest(generator, context)


def generator_digest(generator: ShowerGenerator, context: Mapping[str, object]) -> str:
    """A digest of the generator's weights and config and of `context` (JSON-able)."""
    digest = hashlib.sha256()
    for name, value in sorted(generator.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().to("cpu", copy=True).contiguous().numpy().tobytes())
    full = {"family": repr(generator.config), "caloforge": __version__, **context}
    digest.update(json.dumps(full, sort_keys=True, default=str).encode())
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
    path = Path(cache if cache is not None else int8_cache()) / VERDICTS / f"{key}.json"
    try:
        return Verdict(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
