"""`caloforge bench`: how fast a generator makes showers, per backend and batch size.

Every backend is built first (`auto`: the one `caloforge generate` would choose). For each
batch size: warm-up calls of each (they include compilation), then `repeats` rounds of timed
calls on inputs already on the device, each closed by a device synchronisation, one call of
every backend per round in an order rotated from round to round: the backends share the
machine's load alike, so their ratios hold on a loaded machine where absolute rates drift
(timed one backend after another, they do not). The median, min and max of the per-call
times give showers/s and ms/shower. The FLOPs per shower (`torch.utils.flop_counter`, 2 per
multiply-add, convolutions and matrix products) of the module a backend runs
(`backend.module`: the generator for eager, its `frozen()` copy, which may fold layers and do
fewer, for the others) over the median time give the achieved rate and the fraction of the
peak: executed FLOPs, never more than were done. The peak is measured, not looked up: a dense
matrix product in the backend's precision timed once in every round beside the backends
(`caloforge.bench.machine.PeakProbe`, the best of those calls); int8 is counted against the
fp32 product (so it can read above 100 %). The CPU's instruction sets (AVX2, AVX-512, VNNI,
BF16, AMX) are reported with the results. Latencies are the per-call times at batch 1 and
100, what one event asks for. The end-to-end rate at the largest batch adds the noise, the
inverse preprocessing, the checks and the copy to host memory (`ShowerPipeline.__call__`).

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

from caloforge.bench.machine import PeakProbe, cpu_isa
from caloforge.devices import full_fp32
from caloforge.errors import CaloforgeError
from caloforge.generation.auto import AUTO, BackendChoice, choose_backend
from caloforge.generation.backends import Backend
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
]

DEFAULT_BATCH_SIZES = (1, 8, 64, 128, 512, 2048)
# A batch size expected to take longer than this (from the previous one's calls) is announced
# before its calls: the larger sizes take minutes on a small CPU, between two result lines.
ANNOUNCE_AFTER_S = 10.0
LATENCY_BATCHES = (1, 100)
# Published: Geant4 on one CLIC-like ECAL electron shower, Xeon Platinum 8180 (3DGAN paper).
GEANT4_SECONDS_PER_SHOWER = 17.0


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
    peaks: dict[str, float]  # backend -> GFLOP/s peak used for its fraction (measured)
    timings: list[Timing]
    skipped: list[dict[str, Any]]
    end_to_end: dict[str, float]  # backend -> showers/s through the whole pipeline
    simulator_showers_per_s: float | None
    load_average: tuple[float, float, float]
    reports: dict[str, Any] = field(default_factory=dict)  # backend -> e.g. the int8 guard's
    engines: dict[str, str] = field(default_factory=dict)  # backend -> what runs it
    # backend -> GFLOP/shower of the module it runs (gflop_per_shower is the eager model's)
    executed_gflop_per_shower: dict[str, float] = field(default_factory=dict)
    isa: dict[str, Any] = field(default_factory=dict)  # `caloforge.bench.machine.cpu_isa()`
    # the matrix-product probe's GFLOP/s per precision (median, max, calls), or the given peak
    peak_probe: dict[str, Any] = field(default_factory=dict)
    choice: str | None = None  # what `auto` chose and why, where it was asked for

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


def _precision(backend: str) -> str:
    """The arithmetic a backend's peak is measured in (int8 is counted against fp32's)."""
    return "bf16" if backend == "bf16" else "fp32"


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
    progress: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> BenchResult:
    """Time `pipeline`'s generator through each backend at each batch size, interleaved.

    backends: names (`caloforge.generation.backends.BACKENDS`) or "auto" (the backend
        `generate` would choose; `BenchResult.choice` says which and why); a backend named
        twice is timed once.
    Every backend is built first; then, per batch size, each is warmed up (compilation for
    that size happens there) and the timed calls go round-robin, one call of each backend
    (and of the peak probe) per round, the order rotated each round: the backends share the
    machine's load alike, so their ratios hold even where the absolute rates drift.
    time_budget: seconds a batch size may take for one backend's timed calls; fewer rounds
        (at least 1) are made where `repeats` would exceed it for the slowest, and a
        backend's larger batch sizes are skipped (and listed as such) once one of its calls
        alone exceeds it.
    simulator_showers: showers the embedded simulator is timed on (0: not timed).
    peak: the hardware's peak in GFLOP/s for every backend; default: measured, a dense
        matrix product in the backend's precision timed in every round (`PeakProbe`).
    progress: the int8 backend's status lines while it quantizes (on stderr).
    """
    device = pipeline.device
    sizes = sorted(set(batch_sizes) | set(LATENCY_BATCHES))
    if not sizes or sizes[0] <= 0:
        raise CaloforgeError(  # the option named as the CLI spells it (batch_sizes in Python)
            f"--batch-sizes: batch sizes must be positive, got {sorted(set(batch_sizes))}"
        )
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
    contenders, choice = _build(pipeline, backends, seed, progress, log)
    names = list(contenders)
    executed: dict[str, float] = {}
    for name, contender in contenders.items():
        module = getattr(contender.forward, "module", generator)
        executed[name] = gflop if module is generator else count_gflop_per_shower(module, counted)
    probe = PeakProbe(device) if peak is None else None
    precisions = sorted({_precision(name) for name in names})

    timings: list[Timing] = []
    skipped: list[dict[str, Any]] = []
    too_slow: set[str] = set()
    per_shower = 0.0  # the slowest backend's seconds per shower at the previous batch size
    for n in sizes:
        for name in [b for b in names if b in too_slow]:
            skipped.append({"backend": name, "batch_size": n, "reason": "time budget"})
        active = [b for b in names if b not in too_slow]
        if not active:
            continue
        expected = per_shower * n * len(active) * (warmup + repeats)
        if expected > ANNOUNCE_AFTER_S:
            log(f"batch {n}: timing {', '.join(active)} (about {expected:.0f} s) ...")
        noise, conditions = inputs(n)
        calls = {b: functools.partial(contenders[b].forward, noise, conditions) for b in active}
        first: dict[str, float] = {}
        with torch.inference_mode(), full_fp32():
            for b in active:
                if n == sizes[0] and b != "eager":
                    log(f"{b}: compiling for batch {n} (first calls) ...")
                for _ in range(warmup):
                    _time_call(calls[b], device)
                first[b] = _time_call(calls[b], device)
            rounds = max(1, min(repeats, int(time_budget / max(max(first.values()), 1e-9))))
            per_shower = max(first.values()) / n
            found = {b: Timing(b, n, [first[b]]) for b in active}
            order = [*active, *(f"peak {p}" for p in precisions if probe is not None)]
            for r in range(rounds - 1):
                shift = r % len(order)
                for item in order[shift:] + order[:shift]:
                    if item.startswith("peak "):
                        assert probe is not None
                        probe.measure(item.removeprefix("peak "))
                    else:
                        found[item].seconds.append(_time_call(calls[item], device))
            if probe is not None and rounds == 1:
                for precision in precisions:
                    probe.measure(precision)
        peaks = _peaks(names, peak, probe)
        for b in active:
            timing = found[b]
            timings.append(timing)
            row = timing.to_dict(executed[b], peaks[b])
            log(
                f"{b:9s} batch {n:5d}: {row['showers_per_s']:10.1f} showers/s "
                f"({row['showers_per_s_min']:.1f}-{row['showers_per_s_max']:.1f}), "
                f"{row['ms_per_shower']:.3f} ms/shower, {len(timing.seconds)} calls"
            )
            if first[b] > time_budget:
                too_slow.add(b)

    largest = max(t.batch_size for t in timings) if timings else 0
    if per_shower * largest * len(contenders) * 4 > ANNOUNCE_AFTER_S:
        log("end to end: each backend through the whole pipeline at its largest batch ...")
    end_to_end = _end_to_end(pipeline, contenders, timings, seed)
    pipeline.set_backend("eager")
    sim = None
    if simulator_showers > 0:
        log(f"the embedded simulator on {simulator_showers} showers ...")
        sim = simulator_rate(pipeline, simulator_showers, seed)
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = platform.processor() or platform.machine()
    isa = cpu_isa()
    if device.type == "cpu":
        hardware = f"{isa['model']} ({isa['summary']})"
    return BenchResult(
        model=model or pipeline.generator.config.family,
        source=pipeline.source,
        device=str(device),
        hardware=hardware,
        threads=torch.get_num_threads(),
        gflop_per_shower=gflop,
        peaks=_peaks(names, peak, probe),
        timings=timings,
        skipped=skipped,
        end_to_end=end_to_end,
        simulator_showers_per_s=sim,
        load_average=os.getloadavg(),
        reports={b: c.report for b, c in contenders.items() if c.report is not None},
        engines={b: c.engine for b, c in contenders.items()},
        executed_gflop_per_shower=executed,
        isa=isa,
        peak_probe=probe.to_dict() if probe is not None else {"given_gflops": peak},
        choice=None if choice is None else choice.describe(),
    )


def _peaks(names: Sequence[str], peak: float | None, probe: PeakProbe | None) -> dict[str, float]:
    """backend -> the peak its fraction divides by: given, or the probe's in its precision."""
    if probe is None:
        assert peak is not None
        return dict.fromkeys(names, peak)
    return {b: probe.peak(_precision(b)) for b in names}


@dataclass
class _Contender:
    forward: Backend
    engine: str
    report: dict[str, Any] | None


def _build(
    pipeline: ShowerPipeline,
    backends: Sequence[str],
    seed: int,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[dict[str, _Contender], BackendChoice | None]:
    """Each backend built once (`auto` resolved to the one it chooses), by its name, and
    what `auto` chose (None where it was not asked for)."""
    contenders: dict[str, _Contender] = {}
    choice = None
    for backend in backends:
        calibration_seed = seed
        if backend == AUTO:
            choice = choose_backend(pipeline)
            log(choice.describe())
            backend = choice.backend
            if choice.seed is not None:  # int8: the seed its guard verdict was made with
                calibration_seed = choice.seed
        if backend in contenders:
            continue
        if backend == "int8":
            log("int8: quantizing under the accuracy guard (status lines follow on stderr)")
        pipeline.set_backend(backend, seed=calibration_seed, progress=progress)
        report = getattr(pipeline.forward, "report", None)
        if report is not None:
            log(report.summary())
        contenders[backend] = _Contender(
            pipeline.forward, pipeline.engine, None if report is None else report.to_dict()
        )
    return contenders, choice


def _end_to_end(
    pipeline: ShowerPipeline,
    contenders: Mapping[str, _Contender],
    timings: Sequence[Timing],
    seed: int,
) -> dict[str, float]:
    """Showers/s through the whole pipeline at each backend's largest timed batch: noise,
    inverse preprocessing, checks and the copy to host memory; one warm-up call each, then
    three rounds in turn, medians."""
    device = pipeline.device
    seconds: dict[str, list[float]] = {b: [] for b in contenders}
    largest = {b: max(t.batch_size for t in timings if t.backend == b) for b in contenders}

    def call(backend: str) -> float:
        pipeline.forward = contenders[backend].forward
        drawn = pipeline.calibration_conditions(largest[backend], seed=seed)
        whole = functools.partial(pipeline, drawn, torch.Generator().manual_seed(seed))
        return _time_call(whole, device)

    for backend in contenders:
        call(backend)  # warm-up
    for _ in range(3):
        for backend in contenders:
            seconds[backend].append(call(backend))
    return {b: largest[b] / statistics.median(seconds[b]) for b in contenders}


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
    ]
    if result.isa:
        isa = result.isa
        lines.append(
            f"CPU instruction sets: {isa['summary']} (torch dispatches {isa['torch_capability']}; "
            f"flags: {' '.join(isa['flags']) or 'n/a'}; native bf16: "
            f"{'yes' if isa['native_bf16'] else 'no'})"
        )
    if result.choice:
        lines.append(f"backend {result.choice}")
    lines.append(
        f"{'backend':9s} {'batch':>6s} {'showers/s':>11s} {'min-max':>21s} {'ms/shower':>10s} "
        f"{'GFLOP/s':>9s} {'of peak':>8s} {'x eager':>8s}"
    )
    rows = result.rows()
    eager_rate = {r["batch_size"]: r["showers_per_s"] for r in rows if r["backend"] == "eager"}
    for r in rows:
        ratio = (
            r["showers_per_s"] / eager_rate[r["batch_size"]]
            if r["batch_size"] in eager_rate
            else None
        )
        lines.append(
            f"{r['backend']:9s} {r['batch_size']:6d} {r['showers_per_s']:11.1f} "
            f"{r['showers_per_s_min']:10.1f}-{r['showers_per_s_max']:<10.1f} "
            f"{r['ms_per_shower']:10.4f} {r['gflops']:9.1f} {r['fraction_of_peak']:8.2%} "
            + (f"{ratio:7.2f}x" if ratio is not None else f"{'':8s}")
        )
    peaks = ", ".join(f"{b} {v:.1f}" for b, v in result.peaks.items())
    probe = result.peak_probe
    how = (
        f"measured: the best of a {probe['size']}^3 matrix product timed once per round "
        "beside the backends"
        if "size" in probe
        else "given with --peak-gflops"
    )
    lines.append(
        f"peak GFLOP/s for 'of peak': {peaks} ({how}; executed FLOPs; int8 is counted "
        "against fp32's); 'x eager': the ratio at the same batch size, timed in turn"
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
