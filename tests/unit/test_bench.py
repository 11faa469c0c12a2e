"""`caloforge bench` times its contenders in turn, divides by a peak it measures, and names
the machine's instruction sets (no compiled backend needed: a stand-in runs the frozen copy)."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

import pytest
import torch

from caloforge.bench import bench_generation
from caloforge.bench import generation as bench_module
from caloforge.bench.machine import ISA_FLAGS, PeakProbe, cpu_isa
from caloforge.generation import pipeline as pipeline_module
from caloforge.generation.backends import EagerBackend
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import ShowerGenerator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _StandIn(EagerBackend):
    """'compiled' for the test: the frozen copy, run eagerly."""

    name = "compiled"
    engine = "stand-in"


def _stand_in(name: str, generator: ShowerGenerator, **_: object) -> EagerBackend:
    return _StandIn(generator.frozen()) if name == "compiled" else EagerBackend(generator)


def test_contenders_are_timed_round_robin_with_the_peak_probe(monkeypatch):
    monkeypatch.setattr(pipeline_module, "build_backend", _stand_in)
    pipeline = ShowerPipeline.random_weights("wgan-lhcb", seed=1)
    calls: list[str] = []
    timed = bench_module._time_call

    def record(call, device):  # type: ignore[no-untyped-def]
        forward = getattr(call, "func", None)
        calls.append(getattr(forward, "name", "pipeline"))
        return timed(call, device)

    measure = PeakProbe.measure

    def probe(self, precision):  # type: ignore[no-untyped-def]
        calls.append(f"peak {precision}")
        return measure(self, precision)

    monkeypatch.setattr(bench_module, "_time_call", record)
    monkeypatch.setattr(PeakProbe, "measure", probe)
    result = bench_generation(
        pipeline, ["eager", "compiled", "eager"], [4], warmup=1, repeats=4, simulator_showers=0
    )
    assert result.engines == {"eager": "pytorch", "compiled": "stand-in"}  # eager timed once
    # Per batch size: a warm-up and a first call of each, then 3 rounds in a rotated order.
    order = ["eager", "compiled", "peak fp32"]
    rounds = [name for r in range(3) for name in order[r:] + order[:r]]
    per_size = ["eager", "eager", "compiled", "compiled", *rounds]
    assert calls[: 3 * len(per_size)] == per_size * 3  # batch sizes 1, 4 and 100
    assert all(len(t.seconds) == 4 for t in result.timings)
    # The fraction of peak divides by the probe's best call, in this run.
    rates = result.peak_probe["fp32"]
    assert rates["calls"] == 9 and rates["max_gflops"] >= rates["median_gflops"] > 0
    for row in result.rows():
        assert row["fraction_of_peak"] == pytest.approx(row["gflops"] / rates["max_gflops"])
    assert result.to_dict()["peaks"]["compiled"] == rates["max_gflops"]


def test_a_long_batch_size_is_announced_before_its_calls(monkeypatch):
    """Between two result lines a large batch took minutes without a word (2048 on 2 cores)."""
    monkeypatch.setattr(bench_module, "ANNOUNCE_AFTER_S", 0.0)
    pipeline = ShowerPipeline.random_weights("wgan-lhcb", seed=1)
    said: list[str] = []
    bench_generation(
        pipeline,
        ["eager"],
        [4],
        warmup=0,
        repeats=1,
        simulator_showers=0,
        peak=1.0,
        log=said.append,
    )
    announced = [line for line in said if line.endswith("s) ...")]
    # batch sizes 1, 4 and 100: each after the first is announced before its result line
    assert [line.split(":")[0] for line in announced] == ["batch 4", "batch 100"]
    assert said.index(announced[0]) < next(i for i, x in enumerate(said) if "batch     4:" in x)
    assert said[-1].startswith("end to end: ")  # after the last batch size: its own line


def test_a_given_peak_is_used_and_nothing_is_probed(monkeypatch):
    monkeypatch.setattr(PeakProbe, "measure", lambda *_: pytest.fail("probed"))
    pipeline = ShowerPipeline.random_weights("wgan-lhcb", seed=1)
    result = bench_generation(
        pipeline, ["eager"], [2], warmup=0, repeats=2, simulator_showers=0, peak=50.0
    )
    assert result.peaks == {"eager": 50.0} and result.peak_probe == {"given_gflops": 50.0}
    assert "given with --peak-gflops" in bench_module.format_table(result)


def test_the_probe_measures_a_matrix_product():
    probe = PeakProbe(torch.device("cpu"), size=128)
    rates = [probe.measure("fp32") for _ in range(3)]
    assert all(rate > 0 for rate in rates)
    assert probe.peak("fp32") == max(rates)
    assert probe.to_dict()["fp32"]["median_gflops"] == statistics.median(rates)
    assert probe.to_dict()["fp32"]["calls"] == 3 and probe.to_dict()["size"] == 128


def test_the_isa_is_read_from_the_cpu_flags():
    isa = cpu_isa()
    assert isa["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    flags = next(
        set(line.split(":", 1)[1].split())
        for line in cpuinfo.read_text().splitlines()
        if line.startswith("flags")
    )
    assert isa["flags"] == [flag for flag in ISA_FLAGS if flag in flags]
    expected = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    if expected is not None:
        assert isa["summary"].startswith(expected)


def test_auto_without_openvino_or_a_compiler_runs_eager_and_says_why(monkeypatch):
    from caloforge.generation import auto

    pipeline = ShowerPipeline.random_weights("wgan-lhcb", seed=1)
    monkeypatch.setattr(auto, "openvino_available", lambda: False)
    monkeypatch.setattr(auto.shutil, "which", lambda name: "/usr/bin/g++")
    choice = auto.choose_backend(pipeline)
    assert choice.backend == "compiled" and "Inductor" in choice.reason
    assert "OpenVINO, which runs the fastest fp32 and the int8 backend here" in choice.reason
    monkeypatch.setattr(auto.shutil, "which", lambda name: None)
    choice = auto.choose_backend(pipeline)
    assert choice.backend == "eager" and "neither OpenVINO" in choice.reason
    # A run shorter than a compilation is eager whatever is installed.
    monkeypatch.setattr(auto, "eager_seconds", lambda pipeline, showers: 0.01 * showers)
    assert auto.choose_backend(pipeline, showers=100).backend == "eager"
    monkeypatch.setattr(auto.shutil, "which", lambda name: "/usr/bin/g++")
    assert auto.choose_backend(pipeline, showers=10_000).backend == "compiled"


def test_the_eager_estimate_scales_with_the_showers():
    from caloforge.generation.auto import eager_seconds

    pipeline = ShowerPipeline.random_weights("wgan-lhcb", seed=1)
    small, large = eager_seconds(pipeline, 8), eager_seconds(pipeline, 8_000)
    assert 0 < small < large and large / small > 100  # noisy timings, same order as 1000x


def test_auto_takes_int8_where_its_verdict_allows_and_the_run_repays_its_set_up(monkeypatch):
    from caloforge.generation import auto
    from caloforge.generation import int8_verdict as verdicts

    pipeline = ShowerPipeline.random_weights("wgan-lhcb", seed=1)
    verdict = verdicts.Verdict(
        holds=True,
        int8_layers=3,
        layers=4,
        speedup=2.0,
        seed=7,
        calibration_showers=512,
        library="openvino + nncf",
        fp32_seconds_per_shower=0.01,  # int8 saves 5 ms a shower
        setup_seconds=50.0,  # repaid from 10 000 showers on
    )
    found = {"verdict": verdict}
    monkeypatch.setattr(verdicts, "int8_verdict", lambda *a, **k: found["verdict"])
    monkeypatch.setattr(auto, "openvino_available", lambda: True)
    monkeypatch.setattr(auto, "eager_seconds", lambda pipeline, showers: 1e3)  # not short
    choice = auto.choose_backend(pipeline)  # bench: no run length, steady speed decides
    assert (choice.backend, choice.seed) == ("int8", 7) and "guard held" in choice.reason
    assert auto.choose_backend(pipeline, showers=20_000).backend == "int8"
    choice = auto.choose_backend(pipeline, showers=5_000)
    assert choice.backend == "compiled"
    assert "would save about 25 s on 5000 showers, less than the 50 s" in choice.reason
    for change in ({"holds": False}, {"int8_layers": 0}, {"speedup": 1.05}):
        found["verdict"] = dataclasses.replace(verdict, **change)
        assert auto.choose_backend(pipeline, showers=10**6).backend == "compiled", change
