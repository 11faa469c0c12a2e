"""The model families: build, shapes, parameter counts, seeding, config checks, gradients."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from caloforge.errors import CaloforgeError, ConditionError
from caloforge.geometry import load_geometry
from caloforge.models import MODEL_FAMILIES, ModelBundle, build_model, parameter_counts
from caloforge.models.base import Dropout
from caloforge.models.gan3d_angle import EMPTY_SHOWER_ANGLE, measured_angle

FAMILIES = ["gan3d", "gan3d-angle", "conv2d-g1", "conv2d-g2", "conv2d-g3", "wgan-lhcb"]

# Published parameter counts: (roles summed, count). Conv2D: Rehm et al., table 1 (generator);
# 3DGAN: "about 1 M" in generator + discriminator.
PUBLISHED = {
    "gan3d": (("generator", "discriminator"), 1_000_000),
    "conv2d-g1": (("generator",), 2_052_000),
    "conv2d-g2": (("generator",), 2_131_000),
    "conv2d-g3": (("generator",), 2_397_000),
}

# Exact counts of this implementation, to catch accidental architecture changes.
EXPECTED = {
    "gan3d": {"generator": 872_808, "discriminator": 73_402},
    "gan3d-angle": {"generator": 1_364_982, "discriminator": 87_354},
    "conv2d-g1": {"generator": 2_053_446, "discriminator": 712_888},
    "conv2d-g2": {"generator": 2_125_300, "discriminator": 712_888},
    "conv2d-g3": {"generator": 2_394_774, "discriminator": 712_888},
    "wgan-lhcb": {"generator": 2_778_561, "critic": 661_121, "regressor": 677_509},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conditions_for(family: str, n: int = 2) -> dict[str, torch.Tensor]:
    energy = torch.linspace(50.0, 200.0, n)
    if family == "gan3d-angle":
        return {"energy": energy, "theta": torch.linspace(1.2, 1.9, n)}
    if family == "wgan-lhcb":
        momentum = torch.stack([0.1 * energy, -0.05 * energy, 0.99 * energy], dim=1)
        point = torch.stack([torch.linspace(-4.0, 4.0, n), torch.linspace(3.0, -3.0, n)], dim=1)
        return {"energy": energy, "momentum": momentum, "point": point}
    return {"energy": energy}


def generate(bundle: ModelBundle, n: int = 2, seed: int = 0) -> torch.Tensor:
    noise = bundle.generator.sample_noise(n, torch.Generator().manual_seed(seed))
    return bundle.generator(noise, conditions_for(bundle.family, n))


def test_registry_lists_every_family() -> None:
    # flow-match (any geometry, no discriminator) has its own tests: test_flow_match.py.
    assert sorted(MODEL_FAMILIES) == sorted([*FAMILIES, "flow-match"])


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_from_default_config(family: str) -> None:
    bundle = build_model(family)
    assert bundle.family == family
    assert bundle.config == MODEL_FAMILIES[family]()
    assert bundle.generator.shower_shape == load_geometry(bundle.config.geometry).shape
    expected_roles = (
        {"generator", "critic", "regressor"}
        if family == "wgan-lhcb"
        else {
            "generator",
            "discriminator",
        }
    )
    assert set(bundle.modules) == expected_roles
    assert bundle.discriminator is bundle.modules.get("discriminator", bundle.modules.get("critic"))


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_shapes(family: str) -> None:
    bundle = build_model(family)
    shape = load_geometry(bundle.config.geometry).shape
    with torch.no_grad():
        showers = generate(bundle)
        heads = bundle.discriminator(showers)
    assert showers.shape == (2, *shape)
    assert torch.isfinite(showers).all()
    assert (showers >= 0).all()
    for name, head in heads._asdict().items():
        assert head.shape == (2,), name
        assert torch.isfinite(head).all(), name
    if bundle.regressor is not None:
        with torch.no_grad():
            estimate = bundle.regressor(showers)
        assert estimate.as_vector().shape == (2, 5)


@pytest.mark.parametrize("family", FAMILIES)
def test_parameter_counts(family: str) -> None:
    counts = parameter_counts(build_model(family))
    assert counts == EXPECTED[family]
    if family in PUBLISHED:
        roles, published = PUBLISHED[family]
        assert abs(sum(counts[r] for r in roles) - published) <= 0.10 * published


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_noise_and_weights_are_reproducible(family: str) -> None:
    state = torch.get_rng_state()
    a, b = build_model(family, seed=3), build_model(family, seed=3)
    for p, q in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        assert torch.equal(p, q)
    other = build_model(family, seed=4)
    assert not torch.equal(next(a.generator.parameters()), next(other.generator.parameters()))

    g = a.generator
    n1 = g.sample_noise(2, torch.Generator().manual_seed(11))
    n2 = g.sample_noise(2, torch.Generator().manual_seed(11))
    assert n1.shape == (2, g.noise_size)
    assert torch.equal(n1, n2)
    assert not torch.equal(n1, g.sample_noise(2, torch.Generator().manual_seed(12)))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never used

    a.generator.eval()  # no dropout: the same noise gives the same showers
    with torch.no_grad():
        assert torch.equal(generate(a, seed=5), generate(a, seed=5))


@pytest.mark.parametrize("family", FAMILIES)
def test_backward_reaches_first_layers(family: str) -> None:
    bundle = build_model(family)
    showers = generate(bundle)
    loss = sum(head.sum() for head in bundle.discriminator(showers))
    if bundle.regressor is not None:
        loss = loss + bundle.regressor(showers).as_vector().sum()
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    for role, module in bundle.modules.items():
        first = next(module.parameters())  # the first layer's weight
        assert first.grad is not None, role
        assert first.grad.abs().sum() > 0, role


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_config_key_is_rejected(family: str) -> None:
    with pytest.raises(CaloforgeError, match="'latent_sise'"):
        build_model(family, {"latent_sise": 100})


@pytest.mark.parametrize(
    ("family", "config", "key"),
    [
        ("gan3d", {"latent_size": 0}, "latent_size"),
        ("gan3d", {"latent_size": "200"}, "latent_size"),
        ("gan3d-angle", {"power": -1.0}, "power"),
        ("gan3d-angle", {"geometry": "clic-25"}, "geometry"),
        ("conv2d-g1", {"noise": "poisson"}, "noise"),
        ("conv2d-g2", {"dropout": 1.0}, "dropout"),
        ("wgan-lhcb", {"critic_norm": "batch"}, "critic_norm"),
        ("wgan-lhcb", {"geometry": "no-such-geometry"}, "geometry"),
    ],
)
def test_bad_config_values_name_the_key(family: str, config: dict[str, object], key: str) -> None:
    with pytest.raises(CaloforgeError, match=f"'{key}'"):
        build_model(family, config)


def test_unknown_family_is_rejected() -> None:
    with pytest.raises(CaloforgeError, match="known families"):
        build_model("gan4d")


@pytest.mark.parametrize("family", FAMILIES)
def test_config_dict_rebuilds_the_bundle(family: str) -> None:
    bundle = build_model(family)
    d = bundle.config_dict()
    assert d["family"] == family
    assert build_model(d["family"], d).config == bundle.config


def test_missing_condition_is_named() -> None:
    bundle = build_model("gan3d-angle")
    noise = bundle.generator.sample_noise(2, torch.Generator().manual_seed(0))
    with pytest.raises(ConditionError, match="'theta'"):
        bundle.generator(noise, {"energy": torch.ones(2)})
    with pytest.raises(ConditionError, match="'energy'"):
        bundle.generator(noise, {"energy": torch.ones(3), "theta": torch.ones(2)})


def test_ecal_heads_sum_the_cells() -> None:
    bundle = build_model("gan3d")
    showers = torch.rand(2, 25, 25, 25)
    assert torch.allclose(bundle.discriminator(showers).ecal, showers.sum(dim=(1, 2, 3)))
    angle = build_model("gan3d-angle", {"power": 0.5})
    showers = torch.rand(2, 51, 51, 25)
    expected = (showers**2).sum(dim=(1, 2, 3))
    assert torch.allclose(angle.discriminator(showers).ecal, expected, rtol=1e-5)


def test_measured_angle_of_a_straight_track() -> None:
    # One cell per layer on the line y = 25 + s (layer - 12), layers 0-23 (so that no layer sits
    # at the barycentre's depth): every layer measures the slope s, the angle is pi/2 - atan(s).
    for slope in (-1, 0, 1, 2):
        showers = torch.zeros(1, 51, 51, 25)
        for layer in range(24):
            showers[0, 25, 25 + slope * (layer - 12), layer] = 1.0
        expected = math.pi / 2 - math.atan(slope)
        assert measured_angle(showers).item() == pytest.approx(expected, abs=1e-5)
    empty = torch.zeros(2, 51, 51, 25)
    assert torch.equal(measured_angle(empty), torch.full((2,), EMPTY_SHOWER_ANGLE))


# --- the models' dropout (16-bit uniforms from 64-bit draws on the CPU) ----------------------
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_rate_and_scale(p):
    torch.manual_seed(3)
    x = torch.full((200, 50, 100), 2.0)
    y = Dropout(p)(x)
    dropped = float((y == 0).double().mean())
    # One million Bernoulli draws: standard error <= 5e-4; allow 5 sigma.
    assert abs(dropped - p) < 2.5e-3, dropped
    assert torch.allclose(y[y != 0], torch.tensor(2.0 / (1 - p)))


def test_dropout_uses_every_bit_of_its_draws():
    """Each of the four 16-bit slices of a draw is uniform: a draw whose sign bit were never
    set (`random_()`'s default range) would keep every fourth element far more often."""
    torch.manual_seed(4)
    y = Dropout(0.5)(torch.ones(400_000, 4))
    kept = (y != 0).double().mean(dim=0)
    assert torch.all((kept - 0.5).abs() < 0.004), kept


def test_dropout_mask_does_not_depend_on_layout_and_gradient_is_the_mask():
    x = torch.randn(3, 8, 5, 6, 7)
    channels_last = x.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    torch.manual_seed(5)
    a = Dropout(0.3)(x)
    torch.manual_seed(5)
    b = Dropout(0.3)(channels_last)
    assert torch.equal(a, b)
    assert b.is_contiguous(memory_format=torch.channels_last_3d)  # the next conv's layout
    b.sum().backward()
    assert channels_last.grad is not None
    assert torch.equal(channels_last.grad, (b != 0).float() / 0.7)


def test_dropout_is_identity_in_eval_and_at_zero():
    x = torch.randn(4, 5)
    module = Dropout(0.4)
    module.eval()
    assert torch.equal(module(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
