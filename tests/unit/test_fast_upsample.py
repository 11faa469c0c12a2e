"""The 3DGANs' fast paths compute what their plain layers compute.

`fast_upsample`: each generator "nearest upsample -> zero pad -> Conv3d" runs as one sub-pixel
convolution (`upsample_conv3d`). `fast_discriminator`: the discriminator runs in
channels-last layout with its 1-channel convolution's W taps as channels
(`conv3d_taps_as_channels`); dropout masks do not depend on the layout.

Each is checked against the literal layers, outputs and gradients (input and every
parameter), for the exact layer configurations of gan3d and gan3d-angle (layer by layer on
inputs of a few cells; whole modules below, gan3d-angle's in the slow run):
- float64 in training mode (batch statistics, dropout): to 1e-10, the same products summed in
  another order; this is the proof of equality;
- float32 in eval mode: as accurate as the plain path. (A direct float32 comparison is no test:
  the plain path itself is up to 2e-2 off the exact first-layer gradients of gan3d-angle's
  generator, the fast path closer.)
- a whole training step (`GanStep`, SGD) gives the same losses and updated weights either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional

from caloforge.devices import Distributed
from caloforge.models import ModelBundle, build_model
from caloforge.models.gan3d import conv3d_taps_as_channels, upsample_conv3d
from caloforge.training.config import TrainConfig
from caloforge.training.steps import GanStep, StepContext, StepModels

FAMILIES = ["gan3d", "gan3d-angle"]
N_UPSAMPLE_GROUPS = {"gan3d": 2, "gan3d-angle": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conditions_for(family: str, n: int) -> dict[str, Tensor]:
    energy = torch.linspace(20.0, 200.0, n)
    if family == "gan3d-angle":
        return {"energy": energy, "theta": torch.linspace(1.2, 1.9, n)}
    return {"energy": energy}


def plain_and_fast(family: str, dtype: torch.dtype = torch.float32) -> tuple[ModelBundle, ...]:
    keys = {"fast_upsample": False, "fast_discriminator": False}
    plain, fast = build_model(family, keys, seed=1), build_model(family, seed=1)
    for bundle in (plain, fast):
        for module in bundle.modules.values():
            module.to(dtype)
    return plain, fast


def assert_same(actual: Tensor, expected: Tensor, rel: float, name: str = "") -> None:
    """Equal up to `rel` times the largest magnitude of `expected` (rounding of reordered sums)."""
    assert actual.shape == expected.shape, name
    actual, expected = actual.detach(), expected.detach()
    scale = float(expected.abs().max()) or 1.0
    error = float((actual - expected).abs().max())
    assert error <= rel * scale, f"{name}: max |difference| {error:.3g}, scale {scale:.3g}"


def upsample_groups(
    generator: nn.Module, noise: Tensor, conditions: dict[str, Tensor]
) -> list[tuple[nn.Upsample, nn.ConstantPad3d | None, nn.Conv3d, torch.Size]]:
    """The generator's (upsample, pad, conv) triples with their input shapes, from a forward."""
    layers = list(generator.convs)  # type: ignore[arg-type]
    shapes: dict[int, torch.Size] = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, args: shapes.__setitem__(id(m), args[0].shape))
        for m in layers
        if isinstance(m, nn.Upsample)
    ]
    generator.convs.upsample = False  # type: ignore[union-attr]  # the plain layers run
    with torch.no_grad():
        generator(noise, conditions)
    generator.convs.upsample = True  # type: ignore[union-attr]
    for hook in hooks:
        hook.remove()
    groups = []
    for i, up in enumerate(layers):
        if not isinstance(up, nn.Upsample):
            continue
        pad = layers[i + 1] if isinstance(layers[i + 1], nn.ConstantPad3d) else None
        conv = layers[i + 2] if pad is not None else layers[i + 1]
        assert isinstance(conv, nn.Conv3d)
        groups.append((up, pad, conv, shapes[id(up)]))
    return groups


def gradients(output: Tensor, inputs: list[Tensor], seed: int = 0) -> list[Tensor]:
    weight = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad((output * weight.to(output)).sum(), inputs))


# --- the sub-pixel convolution, layer by layer ---------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_upsample_conv3d_equals_the_generators_layers(family: str) -> None:
    """Each upsample group of the generator, with its own weights, scale and padding, float64.

    The input has the group's batch and channels but at most ceil(k / s) + 2 cells along an
    axis of kernel k and scale s (gan3d-angle's first group: 3 x 3 x 4 cells, not 9 x 9 x 8):
    outputs whose windows read the first cell, the last cell (and the padding beyond them)
    and cells inside, every phase and tap of the sub-pixel kernel; the full volume costs 30x
    the float64 time and exercises nothing more."""
    generator = build_model(family, seed=2).generator
    noise = generator.sample_noise(1, torch.Generator().manual_seed(0))
    groups = upsample_groups(generator, noise, conditions_for(family, 1))  # float32: shapes
    generator.double()  # in place: the groups' layers are float64 now
    assert len(groups) == N_UPSAMPLE_GROUPS[family]
    for k, (up, pad, conv, shape) in enumerate(groups):
        padding = tuple(pad.padding) if pad is not None else (0,) * 6
        scale = tuple(
            int(s)
            for s in (
                up.scale_factor if isinstance(up.scale_factor, tuple) else (up.scale_factor,) * 3
            )
        )
        cells = [
            min(n, -(-kernel // s) + 2)
            for n, kernel, s in zip(shape[2:], conv.kernel_size, scale, strict=True)
        ]
        x = torch.randn(
            (*shape[:2], *cells), dtype=torch.float64, generator=torch.Generator().manual_seed(k)
        )
        x.requires_grad_(True)
        params = [x, conv.weight, conv.bias]
        plain = conv(pad(up(x)) if pad is not None else up(x))
        fast = upsample_conv3d(x, scale, padding, conv.weight, conv.bias)
        assert_same(fast, plain, 1e-12, f"{family} group {k} output")
        for name, a, b in zip(
            ("input", "weight", "bias"),
            gradients(fast, params),
            gradients(plain, params),
            strict=True,
        ):
            assert_same(a, b, 1e-12, f"{family} group {k} {name} gradient")


@pytest.mark.parametrize(
    ("shape", "scale", "padding", "kernel", "bias"),
    [
        ((2, 3, 5, 4, 6), (3, 2, 2), (1, 3, 2, 0, 0, 2), (4, 3, 5), True),  # asymmetric pads
        ((1, 2, 4, 4, 4), (2, 2, 2), (2, 3, 2, 3, 2, 3), (6, 6, 6), False),  # 'same'-like, even
        ((2, 4, 3, 5, 2), (1, 3, 4), (0, 0, 2, 1, 0, 1), (2, 2, 3), True),  # scale 1, k < s
        ((1, 1, 3, 3, 3), (5, 5, 5), (4, 4, 0, 0, 1, 0), (5, 1, 5), True),  # pad = k - 1
    ],
)
def test_upsample_conv3d_general_cases(
    shape: tuple[int, ...],
    scale: tuple[int, int, int],
    padding: tuple[int, ...],
    kernel: tuple[int, int, int],
    bias: bool,
) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, dtype=torch.float64, generator=g).requires_grad_(True)
    w = torch.randn((3, shape[1], *kernel), dtype=torch.float64, generator=g).requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, generator=g).requires_grad_(True) if bias else None
    up = functional.interpolate(x, scale_factor=tuple(float(s) for s in scale), mode="nearest")
    plain = functional.conv3d(functional.pad(up, padding), w, b)
    fast = upsample_conv3d(x, scale, padding, w, b)
    params = [x, w] + ([b] if b is not None else [])
    assert_same(fast, plain, 1e-12, "output")
    for a, c in zip(gradients(fast, params), gradients(plain, params), strict=True):
        assert_same(a, c, 1e-12, "gradient")


@pytest.mark.parametrize("family", FAMILIES)
def test_conv3d_taps_as_channels_on_the_discriminators_first_layer(family: str) -> None:
    """The discriminator's 1-channel convolution (its weights and kernel), float64, on a
    volume a few cells larger than the kernel (the whole module: tests below)."""
    layers = list(build_model(family, seed=2).discriminator.features)  # type: ignore[arg-type]
    conv = next(m for m in layers if isinstance(m, nn.Conv3d)).double()
    assert conv.in_channels == 1
    g = torch.Generator().manual_seed(4)
    size = [k + 3 for k in conv.kernel_size]
    x = torch.randn((2, 1, *size), dtype=torch.float64, generator=g).requires_grad_(True)
    params = [x, conv.weight, conv.bias]
    plain = conv(x)
    fast = conv3d_taps_as_channels(x, conv.weight, conv.bias)
    assert_same(fast, plain, 1e-12, "output")
    for a, c in zip(gradients(fast, params), gradients(plain, params), strict=True):
        assert_same(a, c, 1e-12, "gradient")


def test_conv3d_taps_as_channels() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn((2, 1, 9, 8, 10), dtype=torch.float64, generator=g).requires_grad_(True)
    w = torch.randn((4, 1, 5, 3, 6), dtype=torch.float64, generator=g).requires_grad_(True)
    b = torch.randn(4, dtype=torch.float64, generator=g).requires_grad_(True)
    plain = functional.conv3d(x, w, b)
    fast = conv3d_taps_as_channels(x, w, b)
    assert_same(fast, plain, 1e-12, "output")
    for a, c in zip(gradients(fast, [x, w, b]), gradients(plain, [x, w, b]), strict=True):
        assert_same(a, c, 1e-12, "gradient")


# --- whole modules -------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_fast_paths_keep_the_parameters_and_state_dict(family: str) -> None:
    plain, fast = plain_and_fast(family)
    for role in plain.modules:
        a, b = plain.modules[role].state_dict(), fast.modules[role].state_dict()
        assert list(a) == list(b)
        assert all(torch.equal(a[k], b[k]) for k in a)
        fast.modules[role].load_state_dict(a, strict=True)  # plain checkpoints load
    assert fast.config.to_dict()["fast_upsample"] is True
    assert plain.config.to_dict()["fast_upsample"] is False


def generator_results(bundle: ModelBundle, n: int, training: bool) -> dict[str, Tensor]:
    """Showers, every parameter's gradient and the BatchNorm running statistics after."""
    generator = bundle.generator
    generator.train(training)
    dtype = next(generator.parameters()).dtype
    noise = generator.sample_noise(n, torch.Generator().manual_seed(5))
    conditions = {k: v.to(dtype) for k, v in conditions_for(bundle.family, n).items()}
    showers = generator(noise, conditions)
    names, params = zip(*generator.named_parameters(), strict=True)
    results = {"showers": showers.detach()}
    results.update(zip(names, gradients(showers, list(params)), strict=True))
    results.update({f"buffer {k}": v.clone() for k, v in generator.named_buffers()})
    return results


def discriminator_results(bundle: ModelBundle, n: int, training: bool) -> dict[str, Tensor]:
    """Every head, the input gradient and every parameter's gradient."""
    discriminator = bundle.discriminator
    discriminator.train(training)
    dtype = next(discriminator.parameters()).dtype
    g = torch.Generator().manual_seed(6)
    showers = (torch.rand((n, *bundle.generator.shower_shape), generator=g) ** 4).to(dtype)
    showers.requires_grad_(True)
    torch.manual_seed(7)  # dropout masks
    heads = discriminator(showers)
    loss = sum(w * head.sum() for w, head in zip((3.0, 0.5, 1.0, 0.2), heads, strict=False))
    names, params = zip(*discriminator.named_parameters(), strict=True)
    grads = torch.autograd.grad(loss, [showers, *params])
    results = {f"head {k}": v.detach() for k, v in heads._asdict().items()}
    results.update(zip(("input gradient", *names), grads, strict=True))
    return results


def relative_error(actual: Tensor, exact: Tensor) -> float:
    exact = exact.double()
    return float((actual.double() - exact).abs().max()) / (float(exact.abs().max()) or 1.0)


RESULTS = {"generator": generator_results, "discriminator": discriminator_results}


@pytest.mark.parametrize("role", list(RESULTS))
@pytest.mark.parametrize("family", ["gan3d", pytest.param("gan3d-angle", marks=pytest.mark.slow)])
def test_fast_equals_plain_in_float64(family: str, role: str) -> None:
    """Training mode (batch statistics, dropout from the same random state): equal to 1e-10."""
    plain, fast = plain_and_fast(family, torch.float64)
    n = 1 if family == "gan3d-angle" or role == "discriminator" else 3  # slow float64 convs
    expected = RESULTS[role](plain, n, training=True)
    actual = RESULTS[role](fast, n, training=True)
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert_same(actual[name], value, 1e-10, name)


@pytest.mark.parametrize("role", list(RESULTS))
@pytest.mark.parametrize("family", ["gan3d", pytest.param("gan3d-angle", marks=pytest.mark.slow)])
def test_fast_is_as_accurate_as_plain_in_float32(family: str, role: str) -> None:
    """Eval mode: against the exact values (the fast path in float64, equal to the plain one
    as the test above shows), the fast path's float32 error is at most twice the plain one's,
    or 1e-4 of the largest value."""
    plain, fast = plain_and_fast(family)
    exact = RESULTS[role](plain_and_fast(family, torch.float64)[1], 2, training=False)
    errors_plain = {
        k: relative_error(v, exact[k]) for k, v in RESULTS[role](plain, 2, False).items()
    }
    errors_fast = {k: relative_error(v, exact[k]) for k, v in RESULTS[role](fast, 2, False).items()}
    for name, error in errors_fast.items():
        assert error <= max(2 * errors_plain[name], 1e-4), (name, error, errors_plain[name])


def one_step(bundle: ModelBundle, real: Tensor, conditions: dict[str, Tensor]) -> dict[str, float]:
    """One `GanStep` (a D update, two G updates), fixed seeds. SGD: RMSprop's first step moves
    each weight by +-lr whatever the gradient's size, so rounding would decide its sign where
    a gradient is near 0 (both paths alike, but then not comparable)."""
    config = TrainConfig(batch_size=len(real), generator_steps=2)
    g, d = bundle.generator, bundle.discriminator
    models = StepModels(
        generator=g,
        discriminator=d,
        generator_plain=g,
        discriminator_plain=d,
        # Small steps: the MAPE terms (in percent) give gradients of order 100, and a large SGD
        # step would carry batch-of-2 BatchNorm's ill-conditioning into every later loss.
        optimizer_g=torch.optim.SGD(g.parameters(), lr=1e-5),
        optimizer_d=torch.optim.SGD(d.parameters(), lr=1e-5),
    )
    rng = torch.Generator().manual_seed(8)  # noise and labels
    context = StepContext(models, config, Distributed(), rng, contextlib.nullcontext)
    torch.manual_seed(9)  # dropout masks
    return GanStep(context, energy_scale=100.0, bin_edges=None)(real, conditions)


@pytest.mark.parametrize(
    ("family", "dtype", "rel"),
    [
        ("gan3d", torch.float32, 1e-2),
        pytest.param("gan3d-angle", torch.float32, 1e-2, marks=pytest.mark.slow),
        pytest.param("gan3d", torch.float64, 1e-10, marks=pytest.mark.slow),
    ],
)
def test_training_step_fast_equals_plain(family: str, dtype: torch.dtype, rel: float) -> None:
    """The fast paths inside a real step: the same losses and, in float64, the same updated
    weights. float32 losses only to 1e-2: with batch statistics of 2 showers the first layers'
    gradients are ill-conditioned (1e-2 off the exact ones on either path)."""
    plain, fast = plain_and_fast(family, dtype)
    n = 2
    g = torch.Generator().manual_seed(10)
    real = (torch.rand((n, *plain.generator.shower_shape), generator=g) ** 4).to(dtype)
    conditions = {k: v.to(dtype) for k, v in conditions_for(family, n).items()}
    losses_plain = one_step(plain, real, conditions)
    losses_fast = one_step(fast, real, conditions)
    assert losses_fast.keys() == losses_plain.keys()
    for key, value in losses_plain.items():
        assert losses_fast[key] == pytest.approx(value, rel=rel, abs=1e-12), key
    if dtype == torch.float64:
        for role, module in plain.modules.items():
            updated = dict(fast.modules[role].named_parameters())
            for name, p in module.named_parameters():
                assert_same(updated[name], p, rel, f"{role}.{name} after the step")
