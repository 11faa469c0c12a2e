"""`ShowerGenerator.frozen()`: the inference copy the compiled, bf16 and int8 backends and the
ONNX export run. The same function as the generator; gan3d's has its dense layer and first
convolution folded into one matrix and its last convolution done on the sub-pixel phases
(`PhaseSpaceTail`), and does about half the multiply-adds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from caloforge.bench import bench_generation
from caloforge.generation import pipeline as pipeline_module
from caloforge.generation.backends import EagerBackend
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import MODEL_FAMILIES, ShowerGenerator, build_model
from caloforge.models.gan3d import PhaseSpaceTail
from caloforge.simulation.conditions import ConditionRanges, sample_conditions


def _inputs(generator: ShowerGenerator, n: int, seed: int = 3) -> tuple[torch.Tensor, dict]:
    """Noise and conditions drawn in the geometry's default ranges."""
    geometry = generator.config.resolved_geometry
    ranges = ConditionRanges.for_geometry(geometry)
    drawn = sample_conditions(geometry, ranges, n, np.random.default_rng(seed))
    conditions = {k: torch.as_tensor(drawn[k]) for k in generator.condition_names}
    return generator.sample_noise(n, torch.Generator().manual_seed(seed)), conditions


def _trained_looking(generator: ShowerGenerator) -> ShowerGenerator:
    """Running statistics away from (0, 1), so that BatchNorm does something in eval mode."""
    g = torch.Generator().manual_seed(11)
    for m in generator.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return generator.eval()


def _flops(generator: ShowerGenerator, noise: torch.Tensor, conditions: dict) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        generator(noise, conditions)
    return int(counter.get_total_flops())


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("fast_upsample", [True, False])
def test_frozen_gan3d_is_the_generator_folded(fast_upsample: bool) -> None:
    generator = build_model("gan3d", {"fast_upsample": fast_upsample}, seed=4).generator
    generator = _trained_looking(generator).double()
    noise, conditions = _inputs(generator, 5)
    frozen = generator.frozen()
    assert not hasattr(frozen, "dense")  # folded, not a copy of the same layers
    with torch.inference_mode():
        expected, got = generator(noise.double(), conditions), frozen(noise.double(), conditions)
    # float64: only the order of the sums differs (a float32 fold would be ~1e-7 off).
    assert got.dtype == torch.float64
    assert _relative(got, expected) < 1e-12
    # The folded head: one 200 x 25088 matrix where the dense layer and the first convolution
    # did 200 x 3136 and 7x7x8 x 64 outputs of 8 x 6x6x8 taps: 0.107 GFLOP of the sub-pixel
    # generator's 0.233 saved; the phase-space tail adds back 0.019 (0.145 in all, 0.62x).
    assert tuple(frozen.head.weight.shape) == (7 * 7 * 8 * 64, 200)
    fast = build_model("gan3d", {"fast_upsample": True}, seed=4).generator.double().eval()
    after = _flops(frozen, noise.double(), conditions)
    assert after < 0.65 * _flops(fast, noise.double(), conditions)


@pytest.mark.parametrize(
    ("scale", "padding", "first", "last", "size"),
    [
        ((2, 2, 3), (3, 3, 0, 0, 1, 1), (3, 3, 8), (2, 2, 2), (13, 14, 9)),  # gan3d's tail
        ((2, 3, 1), (0, 0, 1, 2, 0, 1), (4, 2, 3), (3, 1, 2), (5, 4, 6)),
        ((3, 2, 2), (2, 1, 0, 0, 1, 0), (2, 5, 1), (1, 3, 4), (4, 6, 5)),
    ],
)
@pytest.mark.parametrize("last_bias", [False, True])
def test_phase_space_tail_is_the_plain_layers(scale, padding, first, last, size, last_bias):
    torch.manual_seed(0)
    layers = nn.Sequential(
        nn.Upsample(scale_factor=scale, mode="nearest"),
        nn.ConstantPad3d(padding, 0.0),
        nn.Conv3d(3, 4, first),
        nn.LeakyReLU(0.3),
        nn.Conv3d(4, 2, last, bias=last_bias),
    ).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    tail = PhaseSpaceTail(*layers)
    with torch.inference_mode():
        expected, got = layers(x), tail(x)
    assert got.shape == expected.shape
    assert _relative(got, expected) < 1e-12


def test_frozen_gan3d_in_float32_is_accurate() -> None:
    generator = _trained_looking(build_model("gan3d", seed=5).generator)
    noise, conditions = _inputs(generator, 4)
    exact = generator.double().frozen()
    generator = generator.float()
    frozen = generator.frozen()
    with torch.inference_mode():
        reference = exact(noise.double(), conditions)
        plain, folded = generator(noise, conditions), frozen(noise, conditions)
    assert folded.dtype == torch.float32
    # As close to the float64 function as the generator itself, and to it within 1e-5.
    assert _relative(folded, reference) < 2 * max(_relative(plain, reference), 1e-7)
    assert _relative(folded, plain) < 1e-5


@pytest.mark.parametrize("family", sorted(MODEL_FAMILIES))
def test_frozen_is_a_detached_eval_copy(family: str) -> None:
    generator = build_model(family, seed=6).generator
    _trained_looking(generator)
    noise, conditions = _inputs(generator, 3)
    generator.train()
    frozen = generator.frozen()
    assert generator.training  # the original is left as it was
    assert not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in generator.parameters())
    assert (frozen.noise_size, frozen.condition_names, frozen.shower_shape) == (
        generator.noise_size,
        generator.condition_names,
        generator.shower_shape,
    )
    generator.eval()
    with torch.inference_mode():
        before = frozen(noise, conditions)
        assert _relative(before, generator(noise, conditions)) < 1e-5
        for p in generator.parameters():  # training the original on does not reach the copy
            p.add_(1.0)
        assert torch.equal(frozen(noise, conditions), before)


def test_bench_counts_the_flops_each_backend_executes(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in 'compiled' backend that runs the frozen copy eagerly.
    def build(name: str, generator: ShowerGenerator, **_: object) -> EagerBackend:
        return EagerBackend(generator.frozen() if name == "compiled" else generator)

    monkeypatch.setattr(pipeline_module, "build_backend", build)
    pipeline = ShowerPipeline.random_weights("gan3d", seed=1)
    result = bench_generation(
        pipeline, ["eager", "compiled"], [2], warmup=0, repeats=1, simulator_showers=0
    )
    executed = result.executed_gflop_per_shower
    assert executed["eager"] == result.gflop_per_shower
    assert 0.3 * result.gflop_per_shower < executed["compiled"] < 0.65 * result.gflop_per_shower
    for row in result.rows():
        rate = executed[row["backend"]] * row["showers_per_s"]
        assert row["gflops"] == pytest.approx(rate)
    assert result.to_dict()["executed_gflop_per_shower"] == executed
