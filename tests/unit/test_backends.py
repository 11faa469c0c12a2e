"""Generation backends agree with eager; `caloforge bench` measures what it says."""

from __future__ import annotations

import contextlib
import json

import h5py
import numpy as np
import pytest
import torch

from caloforge.bench import bench_generation
from caloforge.cli import main
from caloforge.devices import full_fp32
from caloforge.errors import CaloforgeError
from caloforge.generation import backends
from caloforge.generation.backends import (
    SlowBackendWarning,
    build_backend,
    native_bf16,
    openvino_available,
)
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import build_model
from model_files import random_checkpoint


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def inputs(family: str, n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    pipeline = ShowerPipeline.random_weights(family, seed=1)
    drawn = pipeline.calibration_conditions(n, seed=seed)
    conditions = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in drawn.items()}
    g = torch.Generator().manual_seed(seed)
    return pipeline.generator.sample_noise(n, g), conditions


# Tolerances per precision: fp32 differs only by the order of sums in fused kernels; bf16
# keeps 8 bits of mantissa, ~0.4 % per rounding, averaging down over a layer's sums.
TOLERANCE = {"compiled": 1e-5, "bf16": 3e-2}


# Every backend on wgan-lhcb; conv2d-g1 (grouped convolutions) through the CPU's default
# compiled engine, OpenVINO. Its inductor and (emulated, on AVX2) bf16 cases repeat those
# backends' checks on a heavier model, and gan3d all of them: the slow run.
SLOW_CASES = {("inductor", "conv2d-g1"), ("auto", "conv2d-g1")}


@pytest.mark.parametrize(
    ("backend", "engine", "family"),
    [
        pytest.param(
            backend,
            engine,
            family,
            id=f"{backend}-{engine}-{family}",
            marks=(
                [pytest.mark.slow] if family == "gan3d" or (engine, family) in SLOW_CASES else []
            ),
        )
        for family in ("wgan-lhcb", "gan3d", "conv2d-g1")
        for backend, engine in (
            ("compiled", "inductor"),
            ("compiled", "openvino"),
            ("bf16", "auto"),
        )
    ],
)
def test_backend_agrees_with_eager_and_pads_small_batches(family, backend, engine):
    if engine == "openvino":
        pytest.importorskip("openvino")
    generator = build_model(family, seed=2).generator.eval()
    noise, conditions = inputs(family, 6, seed=7)
    emulated = backend == "bf16" and not native_bf16()  # this project's AVX2 CPU
    with pytest.warns(SlowBackendWarning) if emulated else contextlib.nullcontext():
        run = build_backend(backend, generator, engine=engine)
    assert engine == "auto" or run.engine.startswith(engine)
    with torch.inference_mode():
        expected = generator(noise, conditions)
        first = run(noise, conditions)
        # A smaller batch is padded to the compiled size; its rows must be its own.
        smaller = run(noise[:4], {k: v[:4] for k, v in conditions.items()})
    assert first.dtype == torch.float32 and first.shape == expected.shape
    assert relative_error(first, expected) < TOLERANCE[backend]
    assert smaller.shape[0] == 4
    assert relative_error(smaller, expected[:4]) < TOLERANCE[backend]
    # Different inputs give different showers (the compiled graph is not a constant).
    other_noise, _ = inputs(family, 6, seed=8)
    with torch.inference_mode():
        assert relative_error(run(other_noise, conditions), first) > 1e-3


@pytest.mark.parametrize("head", [0, 1], ids=["plain", "cell-head"])
def test_flow_match_compiles_for_a_second_batch_size_and_agrees_with_eager(head):
    """Its graph (two ODE solves, a per-layer sort) is exported once and compiled per batch
    size: nothing of the first batch may be baked in (traced at a batch of 1, sizes once
    were, and every other batch failed)."""
    pytest.importorskip("openvino")
    small = {"energy_hidden": 16, "energy_blocks": 1, "shape_hidden": 32, "shape_blocks": 1}
    config = {**small, "shape_skip": True, "shape_head": head}
    generator = build_model("flow-match", config, seed=2).generator.eval()
    run = build_backend("compiled", generator, engine="openvino")
    # Exported at the first call's batch; a batch of 1 is where tracing specialises sizes
    # (the bench's latency call); the second is larger: a compilation of its own.
    for n in (1, 4):
        noise, conditions = inputs("flow-match", n, seed=n)
        with torch.inference_mode():
            expected, got = generator(noise, conditions), run(noise, conditions)
        assert got.shape == expected.shape
        assert relative_error(got, expected) < TOLERANCE["compiled"]


@pytest.mark.gpu
# Inductor's advice to allow TF32 (the fp32 backends keep full fp32 on purpose), and CUDA-graph
# trees capturing an empty partition around the compiled region: notes, not failures.
@pytest.mark.filterwarnings("ignore:TensorFloat32 tensor cores:UserWarning")
@pytest.mark.filterwarnings("ignore:The CUDA Graph is empty:UserWarning")
@pytest.mark.parametrize(
    ("family", "form"),
    [("gan3d-angle", "_DepthAsChannelsGenerator"), ("conv2d-g1", "_SplitBranchesG1")],
)
@pytest.mark.parametrize("backend", ["compiled", "bf16"])
def test_gpu_backends_run_the_gpu_forms_and_agree_with_eager(family, form, backend):
    generator = build_model(family, seed=2).generator.eval().cuda()
    noise, conditions = inputs(family, 6, seed=7)
    noise, conditions = noise.cuda(), {k: v.cuda() for k, v in conditions.items()}
    run = build_backend(backend, generator)
    assert type(run.module).__name__ == form
    with torch.inference_mode(), full_fp32():
        expected, got = generator(noise, conditions), run(noise, conditions)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert relative_error(got, expected) < TOLERANCE[backend]


def test_unknown_backend_and_int8_on_a_gpu_are_refused():
    pipeline = ShowerPipeline.random_weights("wgan-lhcb")
    with pytest.raises(CaloforgeError, match="unknown backend 'fast'; choose one of eager"):
        pipeline.set_backend("fast")
    pipeline.device = torch.device("cuda")  # the check comes before anything runs
    with pytest.raises(CaloforgeError, match="'int8' runs on the CPU"):
        pipeline.set_backend("int8")


def test_compiled_backend_without_a_compiler_names_it(monkeypatch):
    monkeypatch.setattr(backends.shutil, "which", lambda name: None)
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    generator = build_model("wgan-lhcb", seed=2).generator
    with pytest.raises(CaloforgeError, match=r"need a C\+\+ compiler .* g\+\+"):
        build_backend("compiled", generator)


def test_compiled_engine_is_openvino_on_the_cpu_where_installed(monkeypatch):
    pytest.importorskip("openvino")
    generator = build_model("wgan-lhcb", seed=2).generator
    assert build_backend("compiled", generator).engine.startswith("openvino ")
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert build_backend("compiled", generator).engine == "inductor"
    with pytest.raises(CaloforgeError, match="unknown engine 'tvm'"):
        build_backend("compiled", generator, engine="tvm")
    with pytest.raises(CaloforgeError, match="engine 'openvino' runs on the CPU"):
        build_backend("compiled", generator.to("meta"), engine="openvino")  # stands for a GPU


def test_generate_with_the_compiled_backend_writes_the_eager_showers(tmp_path):
    from caloforge.data.io import open_showers
    from caloforge.generation.run import generate_to_file

    checkpoint = random_checkpoint(tmp_path / "run", "wgan-lhcb")
    files = {}
    for backend in ("eager", "compiled"):
        files[backend] = generate_to_file(
            checkpoint, tmp_path / f"{backend}.h5", n=10, batch_size=4, seed=5, backend=backend
        )
    with open_showers(files["eager"]) as eager, open_showers(files["compiled"]) as compiled:
        a, b = eager.take(np.arange(10)).showers, compiled.take(np.arange(10)).showers
    assert a.sum() > 0
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * float(a.max()))
    with h5py.File(files["compiled"]) as f:  # the file says what made it
        assert f"backend compiled ({'openvino' if openvino_available() else 'inductor'}" in str(
            f.attrs["producer"]
        )


def test_bench_times_every_batch_size_and_skips_past_the_budget():
    pipeline = ShowerPipeline.random_weights("wgan-lhcb")
    result = bench_generation(
        pipeline, ["eager"], [2, 4], warmup=1, repeats=3, simulator_showers=4, peak=100.0
    )
    rows = {r["batch_size"]: r for r in result.rows()}
    assert sorted(rows) == [1, 2, 4, 100]  # the latency batches are always there
    for n, row in rows.items():
        assert row["repeats"] == 3
        assert row["showers_per_s"] == pytest.approx(n / np.median(row["seconds_per_batch"]))
        assert row["showers_per_s_min"] <= row["showers_per_s"] <= row["showers_per_s_max"]
    # FLOPs: the dense layers' multiply-adds at least (2 x in x out per shower).
    dense = pipeline.generator.get_submodule("dense")
    assert result.gflop_per_shower >= 2 * dense.in_features * dense.out_features / 1e9
    assert result.simulator_showers_per_s and result.simulator_showers_per_s > 0
    best = result.to_dict()["best"]["eager"]
    assert best["speedup_over_geant4_published"] == pytest.approx(17.0 * best["showers_per_s"])
    assert best["latency_ms_batch_1"] == pytest.approx(rows[1]["latency_ms"])

    # A budget no call can meet: one call at the first size, the larger ones skipped.
    tight = bench_generation(
        pipeline, ["eager"], [2], repeats=3, time_budget=0.0, simulator_showers=0
    )
    assert [(r["batch_size"], r["repeats"]) for r in tight.rows()] == [(1, 1)]
    assert [s["batch_size"] for s in tight.skipped] == [2, 100]


def test_bench_cli_writes_json_and_refuses_an_unknown_family(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        ["bench", "--model", "wgan-lhcb", "--batch-sizes", "2", "--repeats", "2",
         "--warmup", "0", "--simulator-showers", "0", "--backend", "eager", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    data = json.loads(out.read_text())
    assert data["model"] == "wgan-lhcb" and {r["batch_size"] for r in data["rows"]} == {1, 2, 100}
    assert data["engines"] == {"eager": "pytorch"}
    assert data["isa"]["torch_capability"] and data["peak_probe"]["fp32"]["calls"] == 3
    printed = capsys.readouterr().out
    assert "best eager (pytorch): " in printed and "CPU instruction sets: " in printed
    assert main(["bench", "--model", "gan4d"]) == 2
    assert "unknown model family 'gan4d'" in capsys.readouterr().err


def test_auto_compiles_a_long_run_on_this_cpu_and_keeps_eager_the_reference(tmp_path, monkeypatch):
    from caloforge.data.io import open_showers
    from caloforge.generation import auto
    from caloforge.generation.run import generate_to_file

    checkpoint = random_checkpoint(tmp_path / "run", "wgan-lhcb")
    pipeline = ShowerPipeline.from_checkpoint(checkpoint)
    pipeline.set_backend("auto", showers=3)  # a short run stays eager
    assert pipeline.backend == "eager" and pipeline.choice.backend == "eager"
    pipeline.set_backend("auto")  # bench: no run length
    engine = "openvino" if openvino_available() else "inductor"
    assert pipeline.backend == "compiled" and pipeline.engine.startswith(engine)
    assert "int8 not checked for this checkpoint" in pipeline.choice.reason

    monkeypatch.setattr(auto, "eager_seconds", lambda pipeline, showers: 1e4)  # a long run
    files = {}
    for backend in ("auto", "eager"):
        files[backend] = generate_to_file(
            checkpoint, tmp_path / f"{backend}.h5", n=10, batch_size=4, seed=5, backend=backend
        )
    with h5py.File(files["auto"]) as f:
        producer = str(f.attrs["producer"])
    assert f"backend compiled ({engine}" in producer and "chosen by --backend auto" in producer
    with open_showers(files["eager"]) as eager, open_showers(files["auto"]) as chosen:
        a, b = eager.take(np.arange(10)).showers, chosen.take(np.arange(10)).showers
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * float(a.max()))


def test_auto_stays_eager_where_compiling_takes_longer_than_it_saves(tmp_path, monkeypatch):
    from caloforge.generation import auto
    from caloforge.generation.compile_record import compile_seconds, record_compile

    monkeypatch.setenv("CALOFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(auto, "openvino_available", lambda: True)
    monkeypatch.setattr(auto, "eager_seconds", lambda pipeline, showers: 0.01 * showers)
    flow = ShowerPipeline.random_weights("flow-match", seed=1)
    gan = ShowerPipeline.random_weights("wgan-lhcb", seed=1)
    # Not yet compiled here: the family's estimate. The flow-matching exporter's two
    # minutes are repaid only by a run of several minutes in eager (at most half saved).
    assert compile_seconds(flow.generator, "openvino") == (120.0, False)
    choice = auto.choose_backend(flow, showers=5_000)  # 50 s in eager
    assert choice.backend == "eager"
    assert "takes about 120 s (the family's estimate)" in choice.reason
    assert auto.choose_backend(flow, showers=50_000).backend == "compiled"  # 500 s
    assert auto.choose_backend(flow).backend == "compiled"  # bench: steady speed decides
    assert auto.choose_backend(gan, showers=5_000).backend == "compiled"  # 15 s estimate
    # What it took here replaces the estimate, per generator (weights) and engine.
    record_compile(gan.generator, "openvino 2026.4.1", 40.0)
    assert compile_seconds(gan.generator, "openvino") == (40.0, True)
    assert compile_seconds(gan.generator, "inductor") == (15.0, False)
    other = ShowerPipeline.random_weights("wgan-lhcb", seed=2)
    assert compile_seconds(other.generator, "openvino") == (15.0, False)
    choice = auto.choose_backend(gan, showers=5_000)
    assert choice.backend == "eager" and "40 s (as it took here last time)" in choice.reason
    record_compile(flow.generator, "openvino", 10.0)
    assert auto.choose_backend(flow, showers=5_000).backend == "compiled"
    # A record that cannot be read is no record.
    for path in (tmp_path / "cache" / "compiled").glob("*.json"):
        path.write_text("{not json")
    assert compile_seconds(gan.generator, "openvino") == (15.0, False)


@pytest.mark.skipif(not openvino_available(), reason="needs OpenVINO")
def test_the_compiled_backend_records_what_compiling_took(tmp_path, monkeypatch):
    from caloforge.generation.compile_record import compile_seconds

    monkeypatch.setenv("CALOFORGE_CACHE_DIR", str(tmp_path / "cache"))
    # gan3d's frozen copy folds its weights: the record is kept by the trained generator's,
    # which is what `auto` looks it up by.
    pipeline = ShowerPipeline.random_weights("gan3d", seed=1)
    assert compile_seconds(pipeline.generator, "openvino")[1] is False
    pipeline.set_backend("compiled")
    conditions = pipeline.calibration_conditions(2, seed=0)
    pipeline(conditions, torch.Generator().manual_seed(0))
    seconds, measured = compile_seconds(pipeline.generator, "openvino")
    assert measured and 0.0 < seconds < 600.0
