"""`--backend auto`: the fastest backend that holds accuracy on this machine, chosen before
any work and said out loud.

- CPU: `int8` where its accuracy guard already passed for this checkpoint on this CPU, with
  these libraries and thread count, the int8 model was measured faster than the fp32 one by
  `INT8_MIN_SPEEDUP`, and, where the number of showers is known, the time it saves on them
  exceeds its set-up (export, guard, quantization: tens of seconds to minutes), all as
  measured when int8 was last built (the verdict `caloforge.generation.int8_verdict` keeps);
  else `compiled` (OpenVINO fp32 where installed, else Inductor where a
  C++ compiler is found); else `eager`. int8 is never tried on the way: its guard search
  takes minutes, so it runs only when asked for (`--backend int8`), once per checkpoint.
- GPU: `bf16` where the GPU does bfloat16 natively (compute capability 8.0 or newer),
  else `compiled` where Triton is installed, else `eager`.
- Short runs: where the number of showers is known (`generate`) and eager would make them
  all in less than `SHORT_RUN_SECONDS` (estimated from one timed call on a few showers),
  `eager`: compiling a graph alone costs about that (seconds for the GANs; an int8 backend
  tens of seconds more), so a faster graph cannot pay for itself. Nor where compiling this
  generator took longer than half the run's eager time (`caloforge.generation.
  compile_record`: as timed here the last time it was compiled, else the family's
  estimate; the flow-matching family's exporter takes two minutes).

`compiled` fp32 gives eager's showers to float rounding (reordered sums, about 1e-6
relative); `bf16` keeps 8 bits of mantissa per value; `int8` is held by its guard (response,
profile and projection MSE against fp32). `eager` stays the reference: ask for it by name.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from caloforge.devices import full_fp32
from caloforge.generation import int8_verdict as verdicts
from caloforge.generation.backends import openvino_available
from caloforge.generation.compile_record import compile_seconds

if TYPE_CHECKING:
    from caloforge.generation.pipeline import ShowerPipeline

__all__ = ["AUTO", "INT8_MIN_SPEEDUP", "SHORT_RUN_SECONDS", "BackendChoice", "choose_backend"]

AUTO = "auto"
# Below this many seconds of eager work, compiling cannot pay for itself (an OpenVINO export and
# compilation of a GAN takes 5-15 s on 2 loaded cores).
SHORT_RUN_SECONDS = 15.0
# What a compiled fp32 graph gains over eager at best on the CPU (1.5-2x measured for the GANs,
# 1.0-1.3x for flow-match): a run repays compiling only if that share of its eager time
# exceeds what compiling takes.
COMPILED_SPEEDUP = 2.0
# int8 replaces compiled fp32 only when measured at least this much faster (beyond the timing
# noise of a shared machine: below it, the exact fp32 path costs next to nothing).
INT8_MIN_SPEEDUP = 1.10


@dataclass(frozen=True)
class BackendChoice:
    """What `auto` chose and why.

    backend: a concrete backend name (eager, compiled, bf16, int8).
    reason: one line for the user and the output file's provenance.
    seed: for int8, the calibration seed whose guard verdict passed (building it again with
        that seed reuses the kept choice of layers); None otherwise.
    """

    backend: str
    reason: str
    seed: int | None = None

    def describe(self) -> str:
        return f"auto -> {self.backend}: {self.reason}"


def choose_backend(pipeline: ShowerPipeline, showers: int | None = None) -> BackendChoice:
    """The backend `auto` runs `pipeline`'s generator with (see the module docstring);
    `showers`: how many the run makes, where known (a short run stays eager)."""
    device = pipeline.device
    seconds = None
    if showers is not None:
        seconds = eager_seconds(pipeline, showers)
        if seconds < SHORT_RUN_SECONDS:
            return BackendChoice(
                "eager",
                f"{showers} showers take about {seconds:.2g} s in eager, less than compiling "
                "a faster graph would cost (name a backend to force one)",
            )
    if device.type == "cuda":
        return _gpu_choice(device)
    if device.type != "cpu":
        return BackendChoice("eager", f"no compiled backend for device type '{device.type}'")
    return _cpu_choice(pipeline, showers, seconds)


def eager_seconds(pipeline: ShowerPipeline, showers: int, probe: int = 8) -> float:
    """About how long eager takes for `showers` showers: one call on `probe` showers timed
    after one untimed call, scaled. Batches larger than the probe run faster per shower, so
    this overestimates, which errs towards compiling."""
    n = max(1, min(probe, showers))
    conditions = pipeline.calibration_conditions(n, seed=0)
    device = pipeline.device
    reference = next(pipeline.generator.parameters())
    tensors = {
        k: torch.as_tensor(v, dtype=reference.dtype, device=device) for k, v in conditions.items()
    }
    noise = pipeline.generator.sample_noise(n, torch.Generator().manual_seed(0))
    with torch.inference_mode(), full_fp32():
        pipeline.generator(noise, tensors)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        pipeline.generator(noise, tensors)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / n * showers


def _gpu_choice(device: torch.device) -> BackendChoice:
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if major >= 8:
        return BackendChoice(
            "bf16", f"{name} does bfloat16 natively (compute capability {major}.{minor})"
        )
    if importlib.util.find_spec("triton") is not None:
        return BackendChoice(
            "compiled", f"{name} has no native bfloat16 (compute capability {major}.{minor})"
        )
    return BackendChoice("eager", f"{name}: torch.compile needs Triton, which is not installed")


def _compiling_costs_more(
    pipeline: ShowerPipeline, engine: str, showers: int | None, eager: float | None
) -> BackendChoice | None:
    """Eager, where compiling with `engine` would take more than a compiled graph could save
    on a run that takes `eager` seconds in eager (it saves at most 1 - 1/COMPILED_SPEEDUP of
    them); None where it pays or the run's length is unknown."""
    if showers is None or eager is None:
        return None
    setup, measured = compile_seconds(pipeline.generator, engine)
    if eager * (1.0 - 1.0 / COMPILED_SPEEDUP) > setup:
        return None
    source = "as it took here last time" if measured else "the family's estimate"
    return BackendChoice(
        "eager",
        f"compiling ({engine}) takes about {setup:.0f} s ({source}), more than it could save "
        f"on {showers} showers (about {eager:.0f} s in eager; name a backend to force one)",
    )


def _cpu_choice(
    pipeline: ShowerPipeline, showers: int | None, eager: float | None = None
) -> BackendChoice:
    verdict = verdicts.int8_verdict(pipeline.generator, pipeline.transform)
    int8_note = (
        "int8 not checked for this checkpoint here yet: `--backend int8` runs its accuracy "
        "guard once, and auto uses int8 afterwards where it holds and is faster"
    )
    if verdict is not None and verdict.usable(INT8_MIN_SPEEDUP):
        saving = verdict.saving(showers) if showers is not None else None
        if saving is None or verdict.setup_seconds is None or saving > verdict.setup_seconds:
            return BackendChoice(
                "int8",
                f"its accuracy guard passed for this checkpoint on this CPU ({verdict.describe()})",
                seed=verdict.seed,
            )
        int8_note = (
            f"int8 not used: it would save about {saving:.0f} s on {showers} showers, less "
            f"than the {verdict.setup_seconds:.0f} s its set-up took here ({verdict.describe()})"
        )
    elif verdict is not None:
        int8_note = f"int8 not used: {verdict.describe()}"
    if openvino_available():
        costly = _compiling_costs_more(pipeline, "openvino", showers, eager)
        return costly or BackendChoice("compiled", f"OpenVINO fp32 on the CPU; {int8_note}")
    if any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        costly = _compiling_costs_more(pipeline, "inductor", showers, eager)
        return costly or BackendChoice(
            "compiled",
            "torch.compile (Inductor) fp32 on the CPU; OpenVINO, which runs the fastest fp32 "
            "and the int8 backend here, is not installed (pip install 'caloforge[int8]')",
        )
    return BackendChoice(
        "eager",
        "neither OpenVINO (pip install 'caloforge[int8]') nor a C++ compiler for "
        "torch.compile is installed",
    )
