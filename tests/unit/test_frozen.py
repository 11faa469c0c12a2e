"""`ShowerGenerator.frozen()`: the inference copy the compiled, bf16 and int8 backends and the
ONNX export run. The same function as the generator; gan3d's has its dense layer and first
convolution folded into one matrix and its last convolution done on the sub-pixel phases
(`PhaseSpaceTail`), and does about half the multiply-adds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional
from torch.utils.flop_counter import FlopCounterMode

from caloforge.bench import bench_generation
from caloforge.bench import generation as bench_module
from caloforge.generation import pipeline as pipeline_module
from caloforge.generation.backends import EagerBackend
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import MODEL_FAMILIES, ShowerGenerator, build_model
from caloforge.models.gan3d import PhaseSpaceTail
from caloforge.models.gan3d_angle import banded_kernel
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


# The folded form is the same either way (sub-pixel middle, phase-space tail); False checks
# it against the plain layers, which test_fast_upsample.py shows equal to the sub-pixel ones.
@pytest.mark.parametrize("fast_upsample", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_frozen_gan3d_is_the_generator_folded(fast_upsample: bool) -> None:
    generator = build_model("gan3d", {"fast_upsample": fast_upsample}, seed=4).generator
    generator = _trained_looking(generator).double()
    noise, conditions = _inputs(generator, 2)
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
    noise, conditions = _inputs(generator, 2)
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


@pytest.mark.parametrize(
    ("family", "config", "form"),
    [
        ("gan3d-angle", {"fast_upsample": True}, "_DepthAsChannelsGenerator"),
        # The same GPU form (its head is sub-pixel either way) against the plain layers,
        # which test_fast_upsample.py shows equal to the sub-pixel ones: 2x the float64 cost.
        pytest.param(
            "gan3d-angle",
            {"fast_upsample": False},
            "_DepthAsChannelsGenerator",
            marks=pytest.mark.slow,
        ),
        ("conv2d-g1", {}, "_SplitBranchesG1"),
    ],
)
def test_gpu_frozen_forms_are_the_generator(family: str, config: dict, form: str) -> None:
    # The GPU forms are plain PyTorch: checked here on the CPU in float64, on 2 showers (a
    # batch: showers mixed up by the reshapes would show; float64 3D convolutions are slow).
    generator = _trained_looking(build_model(family, config, seed=5).generator).double()
    noise, conditions = _inputs(generator, 2)
    conditions = {k: v.double() for k, v in conditions.items()}
    on_gpu = generator.frozen("cuda")
    assert type(on_gpu).__name__ == form
    assert type(generator.frozen()) is type(generator)  # on the CPU: a plain copy
    with torch.inference_mode():
        expected, got = generator(noise.double(), conditions), on_gpu(noise.double(), conditions)
    assert got.shape == expected.shape
    assert _relative(got, expected) < 1e-12


@pytest.mark.parametrize(("kernel", "pad"), [((3, 2, 4), 1), ((2, 3, 2), 0), ((1, 1, 3), 2)])
def test_banded_kernel_is_the_3d_convolution(kernel: tuple[int, int, int], pad: int) -> None:
    g = torch.Generator().manual_seed(0)
    c_in, c_out, depth = 3, 2, 7
    weight = torch.randn(c_out, c_in, *kernel, generator=g, dtype=torch.float64)
    x = torch.randn(2, c_in, 6, 5, depth, generator=g, dtype=torch.float64)
    expected = functional.conv3d(functional.pad(x, (pad, pad, 1, 1, 1, 1)), weight)
    depth_out = expected.shape[-1]
    rows, columns = depth_out * c_out + 5, depth * c_in + 3  # with alignment padding
    banded = banded_kernel(weight, depth, pad, rows, columns)
    flat = x.permute(0, 4, 1, 2, 3).reshape(2, depth * c_in, 6, 5)  # channels depth-major
    got = functional.conv2d(functional.pad(flat, (0, 0, 0, 0, 0, 3)), banded, padding=1)
    assert torch.all(got[:, depth_out * c_out :] == 0)
    got = got[:, : depth_out * c_out].reshape(2, depth_out, c_out, *got.shape[2:])
    torch.testing.assert_close(got.permute(0, 2, 3, 4, 1), expected, rtol=0, atol=1e-12)


def test_gpu_form_refuses_layers_it_does_not_know() -> None:
    generator = build_model("gan3d-angle", seed=5).generator
    generator.convs[3] = nn.Identity()  # the first BatchNorm gone
    with pytest.raises(TypeError, match="unexpected gan3d-angle generator layers"):
        generator.frozen("cuda")


# The families whose frozen() has a form of its own for a GPU; the others ignore device_type,
# so their "cuda" cases repeat the CPU ones (kept for the slow run).
GPU_FORMS = {"conv2d-g1", "gan3d-angle"}


@pytest.mark.parametrize(
    ("family", "device_type"),
    [
        pytest.param(
            family,
            device_type,
            marks=[pytest.mark.slow] if device_type and family not in GPU_FORMS else [],
        )
        for family in sorted(MODEL_FAMILIES)
        for device_type in (None, "cuda")
    ],
)
def test_frozen_is_a_detached_eval_copy(family: str, device_type: str | None) -> None:
    generator = build_model(family, seed=6).generator
    _trained_looking(generator)
    noise, conditions = _inputs(generator, 3)
    generator.train()
    frozen = generator.frozen(device_type)
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
    # The latency batch of 100 is timed for every bench; the FLOP counts need none of it.
    monkeypatch.setattr(bench_module, "LATENCY_BATCHES", (1,))
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
