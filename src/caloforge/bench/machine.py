"""The machine a benchmark runs on: its instruction sets and a measured peak.

The fraction of peak `caloforge bench` reports divides by a dense matrix product timed in
the same run (`PeakProbe`), one call in each round beside the backends, in the precision of
the backend: the best rate the hardware gave a large GEMM during the run, with the same
threads and clocks, instead of a data-sheet figure that a shared or throttled machine never
reaches. The best call, not the median: a backend's calls that run faster than the probe's
median (a loaded machine's short probe calls are slowed more often) would read above 100 %.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from caloforge.devices import full_fp32

__all__ = ["ISA_FLAGS", "PeakProbe", "cpu_isa"]

# /proc/cpuinfo flags that decide the speed of fp32, bf16 and int8 arithmetic on x86.
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_isa() -> dict[str, Any]:
    """The CPU's model, the vector instruction sets that matter here and a one-line summary.

    `torch_capability` is what PyTorch dispatches to (`torch.backends.cpu.get_cpu_capability`,
    e.g. AVX2, AVX512); `flags` the `ISA_FLAGS` /proc/cpuinfo lists (empty off Linux);
    `native_bf16` whether oneDNN does bfloat16 in hardware.
    """
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not flags:
                model = value.strip()
            if key.strip() == "flags":
                flags = set(value.split())
                break
    present = [flag for flag in ISA_FLAGS if flag in flags]
    capability = torch.backends.cpu.get_cpu_capability()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    native_bf16 = bool(check()) if check is not None else False
    return {
        "model": model,
        "torch_capability": capability,
        "flags": present,
        "native_bf16": native_bf16,
        "summary": _summary(capability, set(present)),
    }


def _summary(capability: str, flags: set[str]) -> str:
    if "avx512f" in flags:
        extras = [
            name
            for flag, name in (
                ("avx512_vnni", "VNNI"),
                ("avx512_bf16", "BF16"),
                ("amx_tile", "AMX"),
            )
            if flag in flags
        ]
        return "AVX-512" + (f" ({', '.join(extras)})" if extras else "")
    if "avx2" in flags:
        return (
            "AVX2"
            + (" + FMA" if "fma" in flags else "")
            + (" + AVX-VNNI" if "avx_vnni" in flags else "")
        )
    return capability or "unknown"


class PeakProbe:
    """A dense matrix product `size x size x size` timed on `device` in fp32 (full precision:
    no TF32) or bf16: `measure(precision)` times one call and keeps its GFLOP/s; `peak` is the
    best of those kept. Called once per benchmark round, it sees the load the backends see.
    """

    def __init__(self, device: torch.device, size: int | None = None) -> None:
        self.device = device
        self.size = size or (8192 if device.type == "cuda" else 1024)
        self.rates: dict[str, list[float]] = {}
        self._operands: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _inputs(self, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
        if precision not in self._operands:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            g = torch.Generator().manual_seed(0)
            a, b = (torch.randn(self.size, self.size, generator=g) for _ in range(2))
            self._operands[precision] = (
                a.to(self.device, dtype),
                b.to(self.device, dtype),
            )
            for _ in range(2):  # warm-up: allocation, thread pool, clocks
                self._call(precision)
        return self._operands[precision]

    def _call(self, precision: str) -> float:
        a, b = self._operands[precision]
        with torch.inference_mode(), full_fp32():
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            torch.mm(a, b)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return time.perf_counter() - start

    def measure(self, precision: str) -> float:
        """Time one product in `precision` ("fp32" or "bf16"); its GFLOP/s (also kept)."""
        self._inputs(precision)
        rate = 2.0 * self.size**3 / self._call(precision) / 1e9
        self.rates.setdefault(precision, []).append(rate)
        return rate

    def peak(self, precision: str) -> float:
        """The best GFLOP/s of the products timed in `precision` (one measured if none)."""
        if not self.rates.get(precision):
            self.measure(precision)
        return max(self.rates[precision])

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            **{
                precision: {
                    "median_gflops": statistics.median(rates),
                    "max_gflops": max(rates),
                    "calls": len(rates),
                }
                for precision, rates in self.rates.items()
            },
        }
