"""`caloforge bench`: how fast a generator makes showers, per backend and batch size.

For each backend and batch size: warm-up calls (they include compilation), then `repeats` timed
calls of the backend on inputs already on the device, each closed by a device synchronisation;
the median, min and max of the per-call times give showers/s and ms/shower. The FLOPs per
shower (`torch.utils.flop_counter`, 2 per multiply-add, convolutions and matrix products) of
the module a backend runs (`backend.module`: the generator for eager, its `frozen()` copy,
which may fold layers and do fewer, for the others) over the median time give the achieved rate
and the fraction of the hardware's peak: executed FLOPs, never more than were done; int8 is
counted against the fp32 peak. Latencies are the per-call times at batch 1 and 100, what one
event asks for. The end-to-end rate at the largest batch adds the noise, the inverse
preprocessing, the checks and the copy to host memory (`ShowerPipeline.__call__`).

The embedded simulator is timed in the same run, on the same conditions (one process), and
the speed-up over it is reported beside the speed-up over Geant4's published 17 s/shower.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from caloforge.devices import full_fp32
from caloforge.errors import CaloforgeError
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import ShowerGenerator
from caloforge.simulation.simulator import ShowerSimulator

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "GEANT4_SECONDS_PER_SHOWER",
    "BenchResult",
    "Timing",
    "bench_generation",
    "format_table",
    "peak_gflops",
]

DEFAULT_BATCH_SIZES = (1, 8, 64, 128, 512, 2048)
LATENCY_BATCHES = (1, 100)
# Published: Geant4 on one CLIC-like ECAL electron shower, Xeon Platinum 8180 (3DGAN paper).
GEANT4_SECONDS_PER_SHOWER = 17.0
# fp32 peak of this project's reference CPU (2 cores, AVX2 FMA; systems.md section 7).
CPU_PEAK_GFLOPS = 215.0
# Dense peaks from the vendors' data sheets, TFLOP/s: (fp32 without tensor cores, bf16).
GPU_PEAK_TFLOPS = {"H100": (67.0, 989.0), "H200": (67.0, 989.0), "A100": (19.5, 312.0)}


@dataclass
class Timing:
    backend: str
    batch_size: int
    seconds: list[float] = field(default_factory=list)  # per timed call

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_dict(self, gflop_per_shower: float, peak: float) -> dict[str, Any]:
        n, median = self.batch_size, self.median
        return {
            "backend": self.backend,
            "batch_size": n,
            "repeats": len(self.seconds),
            "seconds_per_batch": self.seconds,
            "showers_per_s": n / median,
            "showers_per_s_min": n / max(self.seconds),
            "showers_per_s_max": n / min(self.seconds),
            "ms_per_shower": 1e3 * median / n,
            "latency_ms": 1e3 * median,
            "gflops": gflop_per_shower * n / median,
            "fraction_of_peak": gflop_per_shower * n / median / peak,
        }


@dataclass
class BenchResult:
    """Everything one `caloforge bench` run measured; `to_dict()` is its JSON."""

    model: str
    source: str
    device: str
    hardware: str
    threads: int
    gflop_per_shower: float
    peaks: dict[str, float]  # backend -> GFLOP/s peak used for its fraction
    timings: list[Timing]
    skipped: list[dict[str, Any]]
    end_to_end: dict[str, float]  # backend -> showers/s through the whole pipeline
    simulator_showers_per_s: float | None
    load_average: tuple[float, float, float]
    reports: dict[str, Any] = field(default_factory=dict)  # backend -> e.g. the int8 guard's
    engines: dict[str, str] = field(default_factory=dict)  # backend -> what runs it
    # backend -> GFLOP/shower of the module it runs (gflop_per_shower is the eager model's)
    executed_gflop_per_shower: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return [
            t.to_dict(
                self.executed_gflop_per_shower.get(t.backend, self.gflop_per_shower),
                self.peaks[t.backend],
            )
            for t in self.timings
        ]

    def best(self, backend: str) -> dict[str, Any] | None:
        rows = [r for r in self.rows() if r["backend"] == backend]
        return max(rows, key=lambda r: r["showers_per_s"]) if rows else None

    def latency_ms(self, backend: str, batch_size: int) -> float | None:
        rows = [r for r in self.rows() if r["backend"] == backend and r["batch_size"] == batch_size]
        return rows[0]["latency_ms"] if rows else None

    def to_dict(self) -> dict[str, Any]:
        best = {}
        for backend in dict.fromkeys(t.backend for t in self.timings):
            row = self.best(backend)
            assert row is not None
            entry = {"batch_size": row["batch_size"], "showers_per_s": row["showers_per_s"]}
            if self.simulator_showers_per_s:
                entry["speedup_over_simulator"] = (
                    row["showers_per_s"] / self.simulator_showers_per_s
                )
            entry["speedup_over_geant4_published"] = (
                row["showers_per_s"] * GEANT4_SECONDS_PER_SHOWER
            )
            for b in LATENCY_BATCHES:
                entry[f"latency_ms_batch_{b}"] = self.latency_ms(backend, b)
            best[backend] = entry
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("timings",)},
            "torch": torch.__version__,
            "geant4_seconds_per_shower_published": GEANT4_SECONDS_PER_SHOWER,
            "rows": self.rows(),
            "best": best,
        }


def peak_gflops(device: torch.device, backend: str) -> float:
    """The hardware's dense peak for the backend's arithmetic, GFLOP/s (CPU: the reference
    2-core machine's fp32 figure; GPU: the data-sheet figure of a known model)."""
    if device.type != "cuda":
        return CPU_PEAK_GFLOPS
    name = torch.cuda.get_device_name(device)
    for key, (fp32, bf16) in GPU_PEAK_TFLOPS.items():
        if key in name:
            return 1e3 * (bf16 if backend == "bf16" else fp32)
    raise CaloforgeError(
        f"no peak known for GPU '{name}'; give it with --peak-gflops (its dense fp32 GFLOP/s)"
    )


def count_gflop_per_shower(
    generator: ShowerGenerator, conditions: Mapping[str, torch.Tensor]
) -> float:
    """FLOPs of a generator's forward on these conditions, per shower, in GFLOP."""
    n = len(next(iter(conditions.values())))
    noise = generator.sample_noise(n, torch.Generator().manual_seed(0))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        generator(noise, conditions)
    return counter.get_total_flops() / n / 1e9


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(call: Callable[[], object], device: torch.device) -> float:
    _synchronise(device)
    start = time.perf_counter()
    call()
    _synchronise(device)
    return time.perf_counter() - start


def simulator_rate(pipeline: ShowerPipeline, n: int, seed: int) -> float:
    """Showers/s of the embedded simulator on `n` showers of the pipeline's geometry."""
    simulator = ShowerSimulator(pipeline.geometry)
    conditions = pipeline.calibration_conditions(n, seed=seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    simulator.simulate(conditions, rng)
    return n / (time.perf_counter() - start)


def bench_generation(
    pipeline: ShowerPipeline,
    backends: Sequence[str],
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    *,
    warmup: int = 2,
    repeats: int = 5,
    time_budget: float = 60.0,
    simulator_showers: int = 64,
    peak: float | None = None,
    seed: int = 0,
    model: str = "",
    log: Callable[[str], None] = lambda _: None,
) -> BenchResult:
    """Time `pipeline`'s generator through each backend at each batch size.

    time_budget: seconds a batch size may take for its timed calls; fewer repeats (at
        least 1) are made where `repeats` would exceed it, and the larger batch sizes of a
        backend are skipped (and listed as such) once one call alone exceeds it.
    simulator_showers: showers the embedded simulator is timed on (0: not timed).
    peak: the hardware's peak in GFLOP/s for every backend (default `peak_gflops`).
    """
    device = pipeline.device
    sizes = sorted(set(batch_sizes) | set(LATENCY_BATCHES))
    if not sizes or sizes[0] <= 0:
        raise CaloforgeError(f"batch sizes must be positive, got {sorted(set(batch_sizes))}")
    generator = pipeline.generator
    torch_generator = torch.Generator().manual_seed(seed)
    reference = next(generator.parameters())

    def inputs(n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        drawn = pipeline.calibration_conditions(n, seed=seed)
        tensors = {
            k: torch.as_tensor(v, dtype=reference.dtype, device=device) for k, v in drawn.items()
        }
        return generator.sample_noise(n, torch_generator), tensors

    counted = inputs(4)[1]  # conditions of the FLOP counts
    gflop = count_gflop_per_shower(generator, counted)
    executed: dict[str, float] = {}
    timings: list[Timing] = []
    skipped: list[dict[str, Any]] = []
    end_to_end: dict[str, float] = {}
    peaks: dict[str, float] = {}
    reports: dict[str, Any] = {}
    engines: dict[str, str] = {}
    for backend in backends:
        pipeline.set_backend(backend, seed=seed)
        report = getattr(pipeline.forward, "report", None)
        if report is not None:
            reports[backend] = report.to_dict()
            log(report.summary())
        engines[backend] = pipeline.engine
        peaks[backend] = peak if peak is not None else peak_gflops(device, backend)
        forward = pipeline.forward
        module = getattr(forward, "module", generator)
        executed[backend] = (
            gflop if module is generator else count_gflop_per_shower(module, counted)
        )
        too_slow = False
        for n in sizes:
            if too_slow:
                skipped.append({"backend": backend, "batch_size": n, "reason": "time budget"})
                continue
            noise, conditions = inputs(n)
            with torch.inference_mode(), full_fp32():
                call = functools.partial(forward, noise, conditions)
                for _ in range(warmup):
                    _time_call(call, device)
                first = _time_call(call, device)
                count = max(1, min(repeats, int(time_budget / max(first, 1e-9))))
                timing = Timing(backend, n, [first])
                timing.seconds += [_time_call(call, device) for _ in range(count - 1)]
            timings.append(timing)
            row = timing.to_dict(executed[backend], peaks[backend])
            log(
                f"{backend:9s} batch {n:5d}: {row['showers_per_s']:10.1f} showers/s "
                f"({row['showers_per_s_min']:.1f}-{row['showers_per_s_max']:.1f}), "
                f"{row['ms_per_shower']:.3f} ms/shower, {len(timing.seconds)} calls"
            )
            too_slow = first > time_budget
        largest = max(t.batch_size for t in timings if t.backend == backend)
        drawn = pipeline.calibration_conditions(largest, seed=seed)
        whole = functools.partial(pipeline, drawn, torch.Generator().manual_seed(seed))
        _time_call(whole, device)  # warm-up
        seconds = statistics.median(_time_call(whole, device) for _ in range(3))
        end_to_end[backend] = largest / seconds
    pipeline.set_backend("eager")

    sim = simulator_rate(pipeline, simulator_showers, seed) if simulator_showers > 0 else None
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = platform.processor() or platform.machine()
    return BenchResult(
        model=model or pipeline.generator.config.family,
        source=pipeline.source,
        device=str(device),
        hardware=hardware,
        threads=torch.get_num_threads(),
        gflop_per_shower=gflop,
        peaks=peaks,
        timings=timings,
        skipped=skipped,
        end_to_end=end_to_end,
        simulator_showers_per_s=sim,
        load_average=os.getloadavg(),
        reports=reports,
        engines=engines,
        executed_gflop_per_shower=executed,
    )


def format_table(result: BenchResult) -> str:
    """The human-readable summary of a `BenchResult`."""
    fewer = {
        b: g
        for b, g in result.executed_gflop_per_shower.items()
        if abs(g - result.gflop_per_shower) > 1e-3 * result.gflop_per_shower
    }
    folded = (
        " (executed: " + ", ".join(f"{b} {g:.3f}" for b, g in fewer.items()) + ")" if fewer else ""
    )
    lines = [
        f"{result.model} ({result.source}) on {result.device}, {result.hardware}, "
        f"{result.threads} threads; {result.gflop_per_shower:.3f} GFLOP/shower{folded}; "
        "load average " + " ".join(f"{x:.2f}" for x in result.load_average),
        f"{'backend':9s} {'batch':>6s} {'showers/s':>11s} {'min-max':>21s} {'ms/shower':>10s} "
        f"{'GFLOP/s':>9s} {'of peak':>8s}",
    ]
    for r in result.rows():
        lines.append(
            f"{r['backend']:9s} {r['batch_size']:6d} {r['showers_per_s']:11.1f} "
            f"{r['showers_per_s_min']:10.1f}-{r['showers_per_s_max']:<10.1f} "
            f"{r['ms_per_shower']:10.4f} {r['gflops']:9.1f} {r['fraction_of_peak']:8.2%}"
        )
    peaks = ", ".join(f"{b} {v:g}" for b, v in result.peaks.items())
    lines.append(
        f"peak GFLOP/s used for 'of peak': {peaks} (executed FLOPs; int8 is counted against fp32's)"
    )
    for s in result.skipped:
        lines.append(f"{s['backend']:9s} {s['batch_size']:6d}  skipped ({s['reason']})")
    summary = result.to_dict()["best"]
    sim = result.simulator_showers_per_s
    lines.append("")
    lines.append(
        f"embedded simulator: {sim:.1f} showers/s (1 process)" if sim else "simulator not timed"
    )
    lines.append(
        f"Geant4: {GEANT4_SECONDS_PER_SHOWER:g} s/shower (published figure, Xeon Platinum 8180)"
    )
    for backend, best in summary.items():
        eager = summary.get("eager")
        vs_eager = f", {best['showers_per_s'] / eager['showers_per_s']:.2f}x eager" if eager else ""
        over_sim = (
            f", {best['speedup_over_simulator']:.3g}x the simulator"
            if "speedup_over_simulator" in best
            else ""
        )
        lat = ", ".join(
            f"batch {b}: {best[f'latency_ms_batch_{b}']:.2f} ms"
            for b in LATENCY_BATCHES
            if best.get(f"latency_ms_batch_{b}") is not None
        )
        label = f"{backend} ({result.engines[backend]})" if backend in result.engines else backend
        lines.append(
            f"best {label:9s}: {best['showers_per_s']:.1f} showers/s at batch "
            f"{best['batch_size']}{vs_eager}{over_sim}, "
            f"{best['speedup_over_geant4_published']:.0f}x Geant4 (published); latency {lat}; "
            f"end to end {result.end_to_end[backend]:.1f} showers/s"
        )
    return "\n".join(lines)
