"""The int8 backend: quantized generators agree with fp32 within the guard, fall back when not."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from caloforge.data.transforms import Identity, Power
from caloforge.export import MissingDependencyError
from caloforge.generation.int8 import (
    GuardMetrics,
    Int8Error,
    Int8Report,
    Int8Tolerance,
    QuantizedGenerator,
    calibration_conditions,
    held_out_metrics,
    quantize_int8,
)
from caloforge.generation.int8 import quantize as quantize_module
from caloforge.generation.int8.guard import Guard, cell_energy, in_gev, make_feeds
from caloforge.generation.int8.openvino_nncf import OpenVinoQuantizer
from caloforge.generation.int8.search import QuantizerDefaults, output_threshold
from caloforge.generation.int8.search import search as search_fallback
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import build_model

pytest.importorskip("onnxscript")
pytest.importorskip("openvino")
pytest.importorskip("nncf")

# Small models: the architectures are the real ones, the latent vectors short.
TINY = {"gan3d": {"latent_size": 16}, "wgan-lhcb": {"noise_size": 16}}
# int8 against fp32 on the same noise: relative L2 over all cells (int8 has 256 levels per
# tensor; the guard itself bounds the physics numbers, this bounds the cells).
INT8_RELATIVE_L2 = 0.25


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def parts(pipeline: ShowerPipeline):
    """What the int8 functions take of a pipeline: its generator, transform and geometry."""
    return pipeline.generator, pipeline.transform, pipeline.geometry


def tiny_pipeline(family: str) -> ShowerPipeline:
    bundle = build_model(family, TINY[family], seed=3)
    geometry = bundle.config.resolved_geometry
    return ShowerPipeline(bundle.generator, Power(0.85, scale=100.0), geometry, source=family)


@pytest.fixture(scope="module")
def quantized() -> dict[str, tuple[ShowerPipeline, QuantizedGenerator]]:
    out = {}
    for family in TINY:
        pipeline = tiny_pipeline(family)
        calibration = calibration_conditions(pipeline, 128, seed=1)
        out[family] = (pipeline, quantize_int8(*parts(pipeline), calibration, seed=2, threads=1))
    return out


@pytest.mark.parametrize("family", list(TINY))
def test_quantized_generator_agrees_with_fp32_and_the_guard_holds(quantized, family):
    pipeline, int8 = quantized[family]
    report = int8.report
    assert report.holds and report.after.holds(report.tolerance)
    assert report.library.startswith("openvino")
    parts = (report.int8_layers, report.fp32_layers, report.faster_in_fp32)
    assert sorted(label for part in parts for label in part) == sorted(report.layers)
    # (a layer may still run fp32 for speed: faster_in_fp32)
    assert len(report.fp32_layers) < len(report.layers), "the guard gave up every layer"
    json.dumps(report.to_dict())  # serialisable as is

    # fresh conditions and noise, not the calibration set; any batch size
    conditions = calibration_conditions(pipeline, 37, seed=9)
    tensors = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in conditions.items()}
    noise = pipeline.generator.sample_noise(37, torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = pipeline.generator(noise, tensors)
    found = int8(noise, tensors)
    assert found.shape == expected.shape and found.dtype == torch.float32
    error = float(torch.linalg.norm(found - expected) / torch.linalg.norm(expected))
    assert error < INT8_RELATIVE_L2, error


def test_quantized_generator_slots_into_the_pipeline(quantized):
    pipeline, int8 = quantized["gan3d"]
    int8_pipeline = ShowerPipeline(int8, pipeline.transform, pipeline.geometry)
    conditions = {"energy": np.array([20.0, 80.0, 150.0])}
    fp32 = pipeline(conditions, torch.Generator().manual_seed(5)).showers
    out = int8_pipeline(conditions, torch.Generator().manual_seed(5)).showers
    assert out.shape == fp32.shape == (3, 25, 25, 25) and out.min() >= 0
    assert np.linalg.norm(out - fp32) / np.linalg.norm(fp32) < INT8_RELATIVE_L2
    assert int8.noise_size == 16 and int8.condition_names == ("energy",)
    assert int8.engine == int8.report.library and int8.engine.startswith("openvino ")


def test_an_impossible_tolerance_falls_back_layer_by_layer_and_says_so():
    pipeline = tiny_pipeline("wgan-lhcb")
    calibration = calibration_conditions(pipeline, 64, seed=1)
    tight = Int8Tolerance(projection_mse=1e-9, response=1e-9, profile=1e-9)
    int8 = quantize_int8(*parts(pipeline), calibration, seed=2, tolerance=tight, threads=1)
    report = int8.report
    assert not report.before.holds(tight)
    assert set(report.sensitivity) == set(report.layers)  # measured for every layer
    # most sensitive first: the fallback order follows the measured sensitivity
    order = [report.sensitivity[label] for label in report.fp32_layers]
    assert order == sorted(order, reverse=True)
    assert report.fp32_layers  # it did fall back
    if report.holds:
        assert report.after.holds(tight)
    else:  # every layer went back to fp32 and the tiny float differences still count
        assert set(report.fp32_layers) == set(report.layers) and not report.int8_layers
    assert "fp32:" in report.summary()


class _AdditiveLayers(QuantizerDefaults):
    """A stand-in quantizer: each int8 layer adds its own error to the guard's number."""

    library = "fake"
    output = "gev"

    def __init__(self, errors: dict[str, float]) -> None:
        self.errors = errors
        self.quantizations = 0

    def layers(self) -> dict[str, tuple[str, ...]]:
        return {label: (f"node_{label}",) for label in self.errors}

    def quantize(self, fp32_nodes: frozenset[str]) -> float:
        self.quantizations += 1
        return sum(e for label, e in self.errors.items() if f"node_{label}" not in fp32_nodes)

    def runner(self, model: float):
        return lambda feed: np.full((len(feed["noise"]), 1), model)


class _ErrorIsTheOutput:
    feeds_a: list = []  # noqa: RUF012

    def metrics(self, out: np.ndarray) -> GuardMetrics:
        return GuardMetrics(float(out[0, 0]), 0.0, 0.0, 0.0)


def search_fake(backend: _AdditiveLayers, projection_mse: float):
    """`_search` on a stand-in quantizer whose models' output is their guard error."""
    return search_fallback(
        backend,
        transform=Identity(),
        feeds=[{"noise": np.zeros((4, 2), np.float32)}],
        guard=_ErrorIsTheOutput(),
        tolerance=Int8Tolerance(projection_mse=projection_mse),
        log=lambda message: None,
    )


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize(
    ("tolerance", "n_fp32", "left"),
    # 0.9581 with all int8. 0.1: the 20 small ones, g, f, e int8 leave 0.0681 (d too: 0.1081).
    # 0.0018: a-g fail alone; the 5 smallest small ones leave 0.00165 (6: 0.00201).
    [(0.1, 4, 0.0681), (0.0018, 22, 0.00165)],
)
def test_fallback_keeps_int8_the_layers_of_least_error_first(shuffled, tolerance, n_fp32, left):
    errors = {"a": 0.5, "b": 0.3, "c": 0.05, "d": 0.04, "e": 0.03, "f": 0.02, "g": 0.01}
    errors |= {f"small{i:02d}": 0.0005 - 1e-5 * i for i in range(20)}  # 27 layers
    if shuffled:  # graph order is not error order
        errors = dict(sorted(errors.items(), key=lambda item: item[0][::-1]))
    backend = _AdditiveLayers(errors)
    _, report = search_fake(backend, tolerance)
    by_error = sorted(errors, key=lambda label: -errors[label])
    assert report.fp32_layers == tuple(by_error[:n_fp32])  # the most sensitive first
    # each layer's guard score alone: its error over the tolerance
    assert report.sensitivity == pytest.approx({k: e / tolerance for k, e in errors.items()})
    assert report.holds and report.after.projection_mse_degradation == pytest.approx(left)
    # All int8, one per layer alone, all fp32, then one per layer kept int8 and the first
    # that does not fit: the larger ones after it are not tried.
    assert backend.quantizations == 1 + 27 + 1 + (27 - n_fp32) + 1
    assert report.int8_share == pytest.approx((27 - n_fp32) / 27)  # uncounted: 1 each


class _CountedLayers(_AdditiveLayers):
    """`_AdditiveLayers` that counts each layer's multiply-adds."""

    def __init__(self, errors: dict[str, float], work: dict[str, float]) -> None:
        super().__init__(errors)
        self.work = work

    def multiply_adds(self) -> dict[str, float]:
        return dict(self.work)


def test_the_error_budget_goes_to_the_layers_that_do_the_work():
    # Two cheap layers with the smallest errors would fill the budget (0.05 + 0.05 = 0.1); the
    # large one's error per multiply-add is the least, so it goes int8 first, and one cheap
    # one with it would exceed the tolerance (0.11).
    errors = {"cheap1": 0.05, "large": 0.06, "cheap2": 0.05}
    backend = _CountedLayers(errors, {"cheap1": 1e6, "large": 1e8, "cheap2": 1e6})
    _, report = search_fake(backend, 0.1)
    assert report.int8_layers == ("large",)
    assert report.int8_share == pytest.approx(100 / 102)
    assert "98% of the multiply-adds" in report.summary()
    assert report.to_dict()["multiply_adds"] == backend.work
    # without the counts, the two cheap ones (equal errors) would have been chosen
    _, uncounted = search_fake(_AdditiveLayers(errors), 0.1)
    assert uncounted.int8_layers == ("cheap1", "cheap2")


@pytest.mark.parametrize("family", list(TINY))
def test_the_layers_multiply_adds_are_counted_from_the_graph(quantized, family):
    pipeline, int8 = quantized[family]
    report = int8.report
    assert set(report.multiply_adds) == set(report.layers)
    generator = pipeline.generator.frozen()
    noise = generator.sample_noise(4, torch.Generator().manual_seed(0))
    conditions = {k: torch.as_tensor(v) for k, v in calibration_conditions(pipeline, 4).items()}
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        generator(noise, conditions)
    # torch's count of the layers' FLOPs; it also counts gan3d's sub-pixel kernels, built
    # from the weights by an einsum on each call (constants in the exported graph)
    aten = torch.ops.aten
    layers = (aten.convolution, aten.addmm, aten.mm)
    flops = sum(n for op, n in counter.get_flop_counts()["Global"].items() if op in layers)
    assert 2 * sum(report.multiply_adds.values()) == pytest.approx(flops / 4, rel=1e-9)
    assert 0 < report.int8_share <= 1


@pytest.mark.parametrize("family", list(TINY))
def test_the_guard_carries_over_to_showers_it_never_saw(quantized, family):
    pipeline, int8 = quantized[family]
    tolerance = int8.report.tolerance
    # 512 showers: with 128, the response's standard error on a random-weight gan3d (whose
    # showers do not scale with the energy, so low energies dominate the ratio) was 0.6 %
    fresh = calibration_conditions(pipeline, 512, seed=5)
    held_out = held_out_metrics(*parts(pipeline), int8, fresh, seed=5)
    assert held_out.relative_l2 > 0  # int8 does change the showers
    assert held_out.response_standard_error > 0
    # a fresh draw, near what the search saw (within twice the tolerance)
    assert held_out != int8.report.after
    assert held_out.holds(
        Int8Tolerance(2 * tolerance.projection_mse, 2 * tolerance.response, 2 * tolerance.profile)
    )
    assert held_out_metrics(*parts(pipeline), int8, fresh, seed=5) == held_out  # reproducible


class _TimedLayers(_AdditiveLayers):
    """`_AdditiveLayers` whose models also take time: each layer its int8 or fp32 seconds."""

    def __init__(self, errors: dict[str, float], int8_s: dict[str, float], fp32_s: float):
        super().__init__(errors)
        self.int8_s, self.fp32_s = int8_s, fp32_s
        self.fp32_of: dict[float, frozenset[str]] = {}

    def quantize(self, fp32_nodes: frozenset[str]) -> float:
        model = super().quantize(fp32_nodes) + 1e-9 * len(self.fp32_of)  # distinct models
        self.fp32_of[model] = fp32_nodes
        return model

    def seconds(self, model: float) -> float:
        fp32 = self.fp32_of[model]
        return sum(
            self.fp32_s if f"node_{label}" in fp32 else self.int8_s[label] for label in self.errors
        )


def test_layers_slower_in_int8_go_back_to_fp32_where_the_guard_allows():
    # a goes back to fp32 for accuracy; b is slower in int8 (2.0 s against 1.0 s in fp32)
    # and goes back for speed; c is 2 % slower, within the margin, and d faster: both stay.
    errors = {"a": 0.5, "b": 0.01, "c": 0.01, "d": 0.01}
    backend = _TimedLayers(errors, {"a": 0.5, "b": 2.0, "c": 1.02, "d": 0.5}, fp32_s=1.0)
    _, report = search_fake(backend, 0.1)
    assert report.fp32_layers == ("a",)
    assert report.faster_in_fp32 == ("b",)
    assert report.int8_layers == ("c", "d")
    assert report.after.projection_mse_degradation == pytest.approx(0.02, abs=1e-6)
    assert "fp32 as faster: b" in report.summary()
    assert report.to_dict()["faster_in_fp32"] == ["b"]


class _OnceFastTimedLayers(_TimedLayers):
    """`_TimedLayers` whose first timing of each model with `fluke` fp32 reads 10x too fast."""

    def __init__(self, *args, fluke: str, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fluke = fluke
        self.timed: set[float] = set()

    def seconds(self, model: float) -> float:
        first = model not in self.timed
        self.timed.add(model)
        fluke = first and f"node_{self.fluke}" in self.fp32_of[model]
        return super().seconds(model) / (10.0 if fluke else 1.0)


def test_one_noisy_timing_does_not_send_a_layer_to_fp32():
    # b is 2x faster in int8; its fp32 model's first timing reads 10x too fast
    errors = {"a": 0.01, "b": 0.01}
    times = {"a": 2.0, "b": 0.5}
    backend = _OnceFastTimedLayers(errors, times, fp32_s=1.0, fluke="b")
    _, report = search_fake(backend, 0.1)
    assert report.faster_in_fp32 == ("a",) and report.int8_layers == ("b",)


class _TwoSchemes(_AdditiveLayers):
    """`_AdditiveLayers` whose errors scale with the activation scheme in use."""

    schemes = ("asymmetric", "symmetric")
    scheme = schemes[0]

    def __init__(self, errors: dict[str, float], factors: dict[str, float]) -> None:
        super().__init__(errors)
        self.factors = factors

    def quantize(self, fp32_nodes: frozenset[str]) -> float:
        return super().quantize(fp32_nodes) * self.factors[self.scheme]


@pytest.mark.parametrize(("factors", "chosen", "n_fp32"), [
    ({"asymmetric": 1.0, "symmetric": 0.5}, "symmetric", 1),  # 0.3, 0.1 with a back
    ({"asymmetric": 0.3, "symmetric": 1.0}, "asymmetric", 0),  # all int8 holds: 0.18
    ({"asymmetric": 1.0, "symmetric": 1.0}, "asymmetric", 1),  # a tie: the first
])  # fmt: skip
def test_the_activation_scheme_that_scores_best_is_used(factors, chosen, n_fp32):
    backend = _TwoSchemes({"a": 0.4, "b": 0.2}, factors)
    model, report = search_fake(backend, 0.2)
    assert report.scheme == chosen and backend.scheme == chosen
    assert len(report.fp32_layers) == n_fp32
    assert report.holds and model == pytest.approx(report.after.projection_mse_degradation)
    assert f"({chosen})" in report.summary()


def test_the_response_is_held_to_two_standard_errors_beyond_it():
    tolerance = Int8Tolerance(response=0.01)
    assert GuardMetrics(0.0, 0.008, 0.0, 0.0, response_standard_error=0.0009).holds(tolerance)
    close = GuardMetrics(0.0, 0.008, 0.0, 0.0, response_standard_error=0.0011)
    assert not close.holds(tolerance)  # 0.8 % measured, but 1.02 % is within two errors
    assert close.response_bound == pytest.approx(0.0102)


def test_a_missing_library_names_the_package_and_the_extra(monkeypatch):
    pipeline = tiny_pipeline("wgan-lhcb")
    monkeypatch.setitem(sys.modules, "nncf", None)  # `import nncf` raises ImportError
    with pytest.raises(MissingDependencyError, match=r"'nncf'.*caloforge\[int8\]"):
        quantize_int8(*parts(pipeline), calibration_conditions(pipeline, 8))


def test_bad_calibration_sets_and_tolerances_are_user_errors():
    pipeline = tiny_pipeline("wgan-lhcb")
    with pytest.raises(Int8Error, match="at least 2"):
        calibration_conditions(pipeline, 1)
    with pytest.raises(Int8Error, match="'response' must be positive"):
        Int8Tolerance(response=0.0)


def test_export_int8_writes_an_onnx_runtime_qdq_model_that_keeps_the_guard(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from caloforge.export import export_onnx
    from caloforge.export.onnx import read_metadata
    from caloforge.training.checkpoint import save_checkpoint

    pipeline = tiny_pipeline("wgan-lhcb")
    save_checkpoint(
        tmp_path / "run",
        step=1,
        epoch=0,
        bundle=build_model("wgan-lhcb", TINY["wgan-lhcb"], seed=3),
        transform=pipeline.transform,
        geometry=pipeline.geometry,
        training={},
        trainer_state={},
    )
    out = export_onnx(tmp_path / "run", tmp_path / "int8.onnx", int8=True, calibration_size=64)
    meta = read_metadata(out)
    report = json.loads(meta["int8_report"])
    assert meta["precision"] == "int8" and report["holds"]
    assert report["library"].startswith("onnxruntime")
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert report["int8_layers"] and {"QuantizeLinear", "DequantizeLinear"} <= ops

    conditions = calibration_conditions(pipeline, 16, seed=7)
    expected = pipeline(conditions, torch.Generator().manual_seed(8)).showers
    noise = pipeline.generator.sample_noise(16, torch.Generator().manual_seed(8)).numpy()
    feed = {"noise": noise} | {
        k: conditions[k].astype(np.float32) for k in pipeline.condition_names
    }
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (found,) = session.run(["showers"], feed)
    error = np.linalg.norm(found - expected) / np.linalg.norm(expected)
    assert found.shape == expected.shape and error < INT8_RELATIVE_L2, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx", "run"]


class _Counting:
    """Counts the quantizations `_OpenVino` makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        quantize = OpenVinoQuantizer.quantize

        def counted(backend, fp32_nodes):  # type: ignore[no-untyped-def]
            self.calls += 1
            return quantize(backend, fp32_nodes)

        monkeypatch.setattr(OpenVinoQuantizer, "quantize", counted)


class _Searches:
    """Counts the searches `quantize_int8` runs; the first is real, later ones give its result
    again (a search of the tiny wgan-lhcb is ~16 quantizations). For the tests of when a
    search happens (a cache miss), not of what it finds: that is the first call's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.first: tuple | None = None
        real = quantize_module.search

        def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.first is None:
                self.first = real(*args, **kwargs)
            return self.first

        monkeypatch.setattr(quantize_module, "search", counted)


def test_the_search_choice_is_cached_and_checked_again(tmp_path, monkeypatch):
    pipeline = tiny_pipeline("wgan-lhcb")
    calibration = calibration_conditions(pipeline, 64, seed=1)
    counting = _Counting(monkeypatch)
    searches = _Searches(monkeypatch)
    first = quantize_int8(*parts(pipeline), calibration, seed=2, threads=1, cache=tmp_path)
    searched = counting.calls
    assert not first.report.from_cache and len(list(tmp_path.glob("*.json"))) == 1
    assert searches.calls == 1
    counting.calls = 0
    again = quantize_int8(*parts(pipeline), calibration, seed=2, threads=1, cache=tmp_path)
    assert again.report.from_cache and counting.calls == 1 < searched
    assert "cached" in again.report.summary() and again.report.to_dict()["from_cache"]
    for key in ("int8_layers", "fp32_layers", "faster_in_fp32", "scheme", "sensitivity"):
        assert getattr(again.report, key) == getattr(first.report, key)
    assert again.report.after == first.report.after  # the guard ran again, on the same model
    noise = torch.rand(5, 16, generator=torch.Generator().manual_seed(0))
    named = {k: torch.as_tensor(v[:5]) for k, v in calibration.items()}
    assert torch.equal(again(noise, named), first(noise, named))
    assert searches.calls == 1
    # another tolerance or calibration set is another choice: searched, kept beside the first
    other = quantize_int8(*parts(pipeline), calibration, seed=3, threads=1, cache=tmp_path)
    assert not other.report.from_cache and len(list(tmp_path.glob("*.json"))) == 2
    assert searches.calls == 2


def test_a_cached_choice_that_no_longer_holds_is_searched_again(tmp_path, monkeypatch):
    pipeline = tiny_pipeline("wgan-lhcb")
    calibration = calibration_conditions(pipeline, 64, seed=1)
    tight = Int8Tolerance(projection_mse=1e-9, response=1e-9, profile=1e-9)
    searches = _Searches(monkeypatch)
    first = quantize_int8(
        *parts(pipeline), calibration, seed=2, tolerance=tight, threads=1, cache=tmp_path
    )
    assert first.report.fp32_layers  # it fell back
    assert searches.calls == 1
    (record,) = tmp_path.glob("*.json")
    tampered = json.loads(record.read_text())
    tampered["report"]["fp32_layers"], tampered["report"]["faster_in_fp32"] = [], []
    record.write_text(json.dumps(tampered))  # "every layer int8", which fails the guard
    again = quantize_int8(
        *parts(pipeline), calibration, seed=2, tolerance=tight, threads=1, cache=tmp_path
    )
    assert not again.report.from_cache and searches.calls == 2
    assert json.loads(record.read_text())["report"]["fp32_layers"]  # the search's, kept
    record.write_text("{not json")  # unreadable: ignored, searched, written again
    third = quantize_int8(
        *parts(pipeline), calibration, seed=2, tolerance=tight, threads=1, cache=tmp_path
    )
    assert not third.report.from_cache and json.loads(record.read_text())["report"]
    assert searches.calls == 3


def test_a_cache_that_cannot_be_written_costs_a_warning(tmp_path):
    pipeline = tiny_pipeline("wgan-lhcb")
    calibration = calibration_conditions(pipeline, 16, seed=1)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.warns(UserWarning, match="could not keep the int8 choice"):
        int8 = quantize_int8(
            *parts(pipeline), calibration, seed=2, threads=1, cache=blocked / "int8"
        )
    assert int8.report.layers and blocked.read_text() == ""


# --- the output threshold -------------------------------------------------------------------
class _Cells:
    """Synthetic showers: cells max(z, 0) with most z below zero (like gan3d's, 99 % dark),
    and the guard's view of them (its ratios, fp32 on noise A) without a generator."""

    transform = Power(0.85, scale=100.0)

    def __init__(
        self, seed: int, n: int = 400, cells: int = 2000, energies: tuple[float, float] = (10, 100)
    ) -> None:
        rng = np.random.default_rng(seed)
        self.z = rng.normal(-0.6, 0.25, (n, cells)).astype(np.float32)  # preprocessed units
        self.guard = object.__new__(Guard)
        self.guard.energy = rng.uniform(*energies, n)
        self.guard.fp32_a = self.gev(self.z)
        self.guard.ratio_a = self.guard.mean_ratio(self.guard.fp32_a)

    def gev(self, before_clamp: np.ndarray) -> np.ndarray:
        return in_gev(self.transform, before_clamp)

    def response(self, before_clamp: np.ndarray) -> float:
        return self.guard.mean_ratio(self.gev(before_clamp)) / self.guard.ratio_a - 1.0


def test_the_output_threshold_takes_back_the_energy_rectified_noise_adds():
    cells = _Cells(seed=0)
    rng = np.random.default_rng(1)
    noisy = cells.z + rng.normal(0.0, 0.05, cells.z.shape).astype(np.float32)  # int8's rounding
    assert cells.response(noisy) > 0.05  # zero-mean noise, but the clamp keeps its positive part
    threshold = output_threshold(cells.transform, cells.guard, noisy)
    assert threshold > 0
    assert abs(cells.response(noisy - threshold)) < 1e-6  # fitted on these showers (noise A)
    # on other showers of the same generator and the same int8 noise level it holds too
    other = _Cells(seed=0)
    fresh = other.z + rng.normal(0.0, 0.05, other.z.shape).astype(np.float32)
    assert abs(other.response(fresh - threshold)) < 0.1 * other.response(fresh)
    # the noise lit 13 % more cells than fp32; with the threshold the count is within 5 %
    lit = (cells.z > 0).sum()
    assert (noisy > 0).sum() > 1.1 * lit and abs((noisy > threshold).sum() - lit) < 0.05 * lit
    # preprocessed units -> a cell energy in GeV, as the report gives it
    assert cell_energy(cells.transform, threshold) == pytest.approx(
        (threshold ** (1 / 0.85)) / 100.0, rel=1e-9
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda z, rng: z - 0.01,  # int8 darker than fp32: a threshold only darkens more
        lambda z, rng: z + rng.normal(0.0, 1e-4, z.shape).astype(np.float32),  # within noise
        lambda z, rng: z,  # the same
    ],
)
def test_no_threshold_where_int8_does_not_add_energy_beyond_its_error(change):
    cells = _Cells(seed=2)
    before = change(cells.z, np.random.default_rng(3))
    assert output_threshold(cells.transform, cells.guard, before) == 0.0


def test_the_threshold_goes_into_the_openvino_graph_before_the_output_clamp():
    from caloforge.data.transforms import Identity
    from caloforge.generation.onnx_graph import GeVGenerator, module_to_onnx

    pipeline = tiny_pipeline("gan3d")
    calibration = calibration_conditions(pipeline, 6, seed=1)
    feeds, _, _ = make_feeds(pipeline.generator, pipeline.geometry, calibration, 0)
    module = GeVGenerator(pipeline.generator.eval(), Identity(), pipeline.condition_names)
    example = {k: torch.from_numpy(v[:2]) for k, v in feeds[0].items()}
    graph = module_to_onnx(module, example, output_name="showers", what="gan3d")
    backend = OpenVinoQuantizer(graph, feeds, threads=1)
    before = backend.before_clamp(backend.model, feeds)
    with torch.inference_mode():
        expected = pipeline.generator(
            torch.from_numpy(feeds[0]["noise"]),
            {k: torch.from_numpy(v) for k, v in feeds[0].items() if k != "noise"},
        ).numpy()
    np.testing.assert_allclose(np.maximum(before, 0.0), expected, atol=1e-5)
    threshold = float(np.quantile(before[before > 0], 0.5))
    out = backend.runner(backend.thresholded(backend.model, threshold))(feeds[0])
    np.testing.assert_allclose(out, np.maximum(before - threshold, 0.0), atol=1e-6)
    assert (out > 0).sum() < 0.6 * (before > 0).sum()
    off = OpenVinoQuantizer(graph, feeds, threads=1, output_threshold=False)
    assert off.before_clamp(off.model, feeds) is None


@pytest.mark.parametrize("family", list(TINY))
def test_the_report_gives_the_threshold_and_keeps_it(quantized, family):
    pipeline, int8 = quantized[family]
    report = int8.report
    assert report.threshold >= 0
    expected = pipeline.transform.inverse(np.array([report.threshold]))[0]
    assert report.threshold_gev == pytest.approx(expected if report.threshold > 0 else 0.0)
    assert (" output threshold " in report.summary()) == (report.threshold > 0)
    again = Int8Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report


class _NoisyClampedLayers(QuantizerDefaults):
    """A stand-in OpenVINO: each int8 layer adds zero-mean noise before the output clamp of
    `_Cells` showers; a model is (noise level, threshold)."""

    library = "fake"
    output = "preprocessed"

    def __init__(self, cells: _Cells, fresh: _Cells, noise: dict[str, float], threshold: bool):
        self.noise, self.threshold = noise, threshold
        rng = np.random.default_rng(7)
        self.a = (cells.z, rng.standard_normal(cells.z.shape).astype(np.float32))
        self.b = (fresh.z, rng.standard_normal(fresh.z.shape).astype(np.float32))

    def layers(self) -> dict[str, tuple[str, ...]]:
        return {label: (f"node_{label}",) for label in self.noise}

    def quantize(self, fp32_nodes: frozenset[str]) -> tuple[float, float]:
        return sum(s for k, s in self.noise.items() if f"node_{k}" not in fp32_nodes), 0.0

    def _before(self, model: tuple[float, float], which) -> np.ndarray:
        z, eps = which
        return z + np.float32(model[0]) * eps - np.float32(model[1])

    def runner(self, model: tuple[float, float]):
        return lambda feed: np.maximum(self._before(model, self.b), 0.0)

    def before_clamp(self, model, feeds) -> np.ndarray | None:
        return self._before(model, self.a) if self.threshold else None

    def thresholded(self, model, threshold: float) -> tuple[float, float]:
        return model[0], threshold


class _ResponseGuard(Guard):
    """The guard's response check alone, on `_Cells` showers (fp32 B: `fresh`)."""

    def __init__(self, cells: _Cells, fresh: _Cells) -> None:
        self.__dict__.update(cells.guard.__dict__)
        self.feeds_a = [{"noise": np.zeros((len(cells.z), 1), np.float32)}]
        self.fp32_b = fresh.gev(fresh.z)
        self.ratio = self.mean_ratio(self.fp32_b)

    def metrics(self, int8_b: np.ndarray) -> GuardMetrics:
        differences = self.ratios(int8_b) - self.ratios(self.fp32_b)
        error = float(differences.std(ddof=1) / np.sqrt(len(differences)) / self.ratio)
        return GuardMetrics(0.0, abs(self.mean_ratio(int8_b) / self.ratio - 1), 0.0, 0.0, error)


@pytest.mark.parametrize("threshold", [True, False])
def test_the_search_judges_each_model_with_its_threshold(threshold):
    # these showers do not grow with the energy: a narrow range, or the ratio's error is the
    # low energies' (each shower's lit cells, ~0.8 %, vary as a count)
    cells, fresh = (_Cells(seed, n=1000, cells=8000, energies=(50, 100)) for seed in (4, 5))
    fresh.guard.energy = cells.guard.energy  # the same conditions, other noise: A and B
    backend = _NoisyClampedLayers(cells, fresh, {"big": 0.05, "small": 0.002}, threshold)
    report = search_fallback(
        backend,
        transform=cells.transform,
        feeds=[{"noise": np.zeros((len(fresh.z), 1), np.float32)}],
        guard=_ResponseGuard(cells, fresh),
        tolerance=Int8Tolerance(response=0.01),
        log=lambda message: None,
    )[1]
    assert report.holds
    if threshold:  # the noisy layer's rectified energy is taken back: it stays int8
        assert report.int8_layers == ("big", "small") and report.threshold > 0
        assert report.threshold_gev == pytest.approx(cell_energy(cells.transform, report.threshold))
        assert report.before.response_bound < 0.01
    else:  # +17 % response with it int8: fp32
        assert report.fp32_layers == ("big",) and report.threshold == 0.0
        assert report.before.response_error > 0.1


# --- the verdict `--backend auto` reads -----------------------------------------------------
def test_building_int8_keeps_a_verdict_that_auto_reads(monkeypatch, capsys):
    from caloforge.generation import auto
    from caloforge.generation.int8_verdict import int8_verdict

    pipeline = tiny_pipeline("wgan-lhcb")
    assert len(pipeline.calibration_conditions()["energy"]) == 512  # what set_backend draws
    # 64 calibration showers here (a search on 512 is ~4x the time); the verdict records it.
    draw = pipeline.calibration_conditions
    monkeypatch.setattr(
        pipeline, "calibration_conditions", lambda n=64, *, seed=0: draw(n, seed=seed)
    )
    other = tiny_pipeline("wgan-lhcb")
    with torch.no_grad():
        next(other.generator.parameters()).add_(1e-3)  # other weights: another checkpoint
    assert int8_verdict(pipeline.generator, pipeline.transform) is None
    assert auto.choose_backend(pipeline).backend == "compiled"  # int8 never tried here
    started = time.perf_counter()
    pipeline.set_backend("int8", seed=5, progress=True)
    err = capsys.readouterr().err
    for phase in ("exporting the generator", "fp32 reference showers", "searching which of"):
        assert phase in err  # a line as each long phase starts, with the seconds elapsed
    assert err.startswith("int8 [")
    verdict = int8_verdict(pipeline.generator, pipeline.transform)
    assert verdict is not None and verdict.seed == 5 and verdict.calibration_showers == 64
    report = pipeline.forward.report
    assert verdict.holds == report.holds and verdict.int8_layers == len(report.int8_layers)
    assert verdict.speedup == pipeline.forward.speedup and verdict.speedup > 0
    assert verdict.fp32_seconds_per_shower > 0 and verdict.setup_seconds > 0
    searched = pipeline.forward.report.seconds  # not in the set-up a later run pays
    assert verdict.setup_seconds < time.perf_counter() - started - searched
    assert int8_verdict(other.generator, other.transform) is None
    assert int8_verdict(pipeline.generator, pipeline.transform, threads=7) is None

    # auto takes int8 exactly where the verdict allows it, with the verdict's seed
    monkeypatch.setattr(auto, "INT8_MIN_SPEEDUP", 0.0)
    choice = auto.choose_backend(pipeline)
    assert (choice.backend, choice.seed) == ("int8", 5) and "guard held" in choice.reason
    pipeline.set_backend("auto")
    assert pipeline.backend == "int8" and pipeline.forward.report.from_cache
    monkeypatch.setattr(auto, "INT8_MIN_SPEEDUP", float("inf"))
    choice = auto.choose_backend(pipeline)
    assert choice.backend == "compiled" and "int8 not used: guard held" in choice.reason


class _Repeated(torch.nn.Module):
    """A network called several times in one graph, as a flow's solver calls its field."""

    def __init__(self) -> None:
        super().__init__()
        self.field = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, noise: torch.Tensor, *conditions: torch.Tensor) -> torch.Tensor:
        x = noise * conditions[0][:, None]
        for _ in range(3):
            x = x + torch.relu(self.field(x))
        return self.head(x)


def test_a_layer_is_every_call_of_one_weight_tensor():
    # Each call of a network a graph repeats was one "layer" of its own (the shipped
    # flow-match model had hundreds, and the guard's search, two quantizations per layer,
    # ran for hours); a layer is now every node that reads one weight tensor.
    pytest.importorskip("onnxscript")
    from caloforge.generation.int8.graph import labelled, layer_labels, multiply_adds, nodes_of
    from caloforge.generation.onnx_graph import module_to_onnx

    example = {"noise": torch.randn(2, 8), "energy": torch.tensor([1.0, 2.0])}
    graph = module_to_onnx(_Repeated(), example, output_name="out", what="repeated")
    labels = layer_labels(graph)
    assert sorted(labels) == ["field/linear", "head/linear"]
    field, head = "field/linear", "head/linear"
    assert len(labels[field]) == 3 and len(labels[head]) == 1
    assert nodes_of(labels, [field, head]) == [*labels[field], labels[head][0]]
    work = labelled(labels, multiply_adds(graph))
    assert work == {field: 3 * 64.0, head: 32.0}
