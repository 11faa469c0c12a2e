"""Measurements: `caloforge bench` (generation speed per backend and batch size)."""

from caloforge.bench.generation import BenchResult, bench_generation, format_table

__all__ = ["BenchResult", "bench_generation", "format_table"]
