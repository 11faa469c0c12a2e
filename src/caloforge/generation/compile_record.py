"""How long compiling a generator took here, kept where `--backend auto` reads it cheaply.

A faster backend pays before its first batch: the export to ONNX and OpenVINO's compilation
(`compiled` on the CPU), or Inductor's. For a GAN that is seconds; for the flow-matching
family, whose solver the exporter traces unrolled, two minutes, while its compiled graph runs
little faster than eager. `auto` compiles only where the run is long enough to repay that:
it reads the time the last compilation of the same generator took on this machine
(`compile_seconds`), else the family's estimate (`ShowerGenerator.compile_seconds`). The
compiled backends record it (`record_compile`) after their first batch, in
`<cache>/compiled/`, one small JSON per generator, engine, CPU and thread count.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from caloforge._files import atomic_output, cache_root
from caloforge.errors import OutputError
from caloforge.generation.int8_verdict import cpu_name, generator_digest
from caloforge.models import ShowerGenerator

__all__ = ["compile_cache", "compile_seconds", "record_compile"]


def compile_cache() -> Path:
    """$CALOFORGE_CACHE_DIR/compiled, else under $XDG_CACHE_HOME or ~/.cache."""
    return cache_root() / "compiled"


def _key(generator: ShowerGenerator, engine: str) -> str:
    name = engine.split()[0]  # "openvino 2026.4.1" -> "openvino"
    try:
        library = version("openvino") if name == "openvino" else torch.__version__
    except PackageNotFoundError:
        library = ""
    context = {
        "engine": name,
        "library": library,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
    }
    return f"{name}-{generator_digest(generator, context)}"


def compile_seconds(generator: ShowerGenerator, engine: str) -> tuple[float, bool]:
    """(seconds, measured): what compiling `generator` with `engine` took here last time,
    else the family's estimate (measured False)."""
    path = compile_cache() / f"{_key(generator, engine)}.json"
    try:
        return float(json.loads(path.read_text())["setup_seconds"]), True
    except (OSError, ValueError, KeyError, TypeError):
        return float(generator.compile_seconds), False


def record_compile(generator: ShowerGenerator, engine: str, seconds: float) -> None:
    """Keep what compiling took (replacing an older record); a cache that cannot be written
    costs `auto` the measurement, nothing else."""
    path = compile_cache() / f"{_key(generator, engine)}.json"
    try:
        with atomic_output(path) as partial:
            partial.write_text(json.dumps({"setup_seconds": seconds, "engine": engine}))
    except (OSError, OutputError):
        pass
