"""The training's physics check: the transverse-width term that sees what the response and
the longitudinal profile cannot."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.geometry import PRESETS
from caloforge.training.physics_check import check_showers, layer_widths, width_error


def gaussian_showers(
    n: int, sigma_cells: np.ndarray, size: int = 25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size, layers) showers whose layer l is a centred Gaussian spot of width
    `sigma_cells[l]` (cells), scaled by a random energy per shower, and the primary energies."""
    rng = np.random.default_rng(seed)
    c = np.arange(size) - (size - 1) / 2
    spot = np.exp(-0.5 * (c[:, None, None] ** 2 + c[None, :, None] ** 2) / sigma_cells**2)
    spot /= spot.sum(axis=(0, 1))
    energy = rng.uniform(10, 100, n)
    depth = np.exp(-0.5 * ((np.arange(len(sigma_cells)) - 10) / 5.0) ** 2)  # layer shares
    showers = 0.02 * energy[:, None, None, None] * spot[None] * depth
    return showers.astype(np.float32), energy


def test_a_set_compared_with_itself_has_no_width_error() -> None:
    showers, energy = gaussian_showers(16, np.full(25, 2.5))
    check = check_showers(showers, showers, energy, PRESETS["clic-25"])
    assert check.width_error == 0.0
    assert check.score == pytest.approx(check.response_error + check.profile_error)


def test_wider_layers_raise_the_width_error_and_the_score_by_their_excess() -> None:
    sigma = np.linspace(1.5, 3.5, 25)
    real, energy = gaussian_showers(16, sigma)
    wide, _ = gaussian_showers(16, 1.2 * sigma)
    check = check_showers(real, wide, energy, PRESETS["clic-25"])
    # the same layer energies: response and profile see nothing, the widths 20 % too wide:
    # 2 x 0.2 / 2.2 (the grid's discreteness and edges make it a little less)
    assert check.response_error < 1e-6 and check.profile_error < 1e-6
    assert 0.16 < check.width_error < 0.19
    assert check.score == pytest.approx(check.width_error, abs=1e-5)
    narrow, _ = gaussian_showers(16, 0.8 * sigma)  # 2 x 0.2 / 1.8
    assert width_error(real, narrow, PRESETS["clic-25"]) == pytest.approx(0.222, abs=0.02)


def test_the_width_term_is_bounded_as_the_profile_term_is() -> None:
    """A GAN early in training spreads noise over every cell (widths four times the real
    ones): the term saturates towards 2, as the profile's L1 distance does, instead of
    growing with the width ratio and outweighing the response of a generator whose showers
    are mostly empty (the demo's check once kept its step 20: 62 % empty showers)."""
    real, energy = gaussian_showers(16, np.full(25, 1.5))
    rng = np.random.default_rng(3)
    per_cell = real.sum(axis=(1, 2), keepdims=True) / 625
    noise = (2 * rng.random(real.shape) * per_cell).astype(np.float32)  # same layer energies
    geometry = PRESETS["clic-25"]
    check = check_showers(real, noise, energy, geometry)
    assert check.response_error < 0.05 and check.profile_error < 0.05
    w_real, _ = layer_widths(real, geometry)
    w_noise, _ = layer_widths(noise, geometry)
    ratio = float((w_noise / w_real).mean())
    assert ratio > 3.5  # the old |ratio - 1| would read over 2.5
    assert check.width_error == pytest.approx(2 * (ratio - 1) / (ratio + 1), rel=0.05)
    assert check.width_error < 2.0


def test_layers_weigh_by_their_share_of_the_real_energy() -> None:
    sigma = np.full(25, 2.5)
    real, _ = gaussian_showers(8, sigma)
    wrong = sigma.copy()
    wrong[0] = 5.0  # the first layer, which holds almost no energy, twice too wide
    generated, _ = gaussian_showers(8, wrong)
    _, layer_energy = layer_widths(real, PRESETS["clic-25"])
    share = layer_energy[0] / layer_energy.sum()
    error = width_error(real, generated, PRESETS["clic-25"])
    assert 0 < error < 1.1 * share  # about share x 100 %, nowhere near 1


def test_depth_summed_images_have_one_layer_and_flat_cells_none() -> None:
    real, _ = gaussian_showers(8, np.array([2.0]), size=30)
    wide, _ = gaussian_showers(8, np.array([3.0]), size=30)
    lhcb = PRESETS["lhcb-30"]
    assert width_error(real[..., 0], wide[..., 0], lhcb) == pytest.approx(0.4, abs=0.04)
    flat = real.reshape(8, -1)
    assert width_error(flat, 2 * flat, lhcb) == 0.0


def test_an_empty_generated_set_is_a_full_width_error_not_a_crash() -> None:
    real, energy = gaussian_showers(8, np.full(25, 2.5))
    check = check_showers(real, np.zeros_like(real), energy, PRESETS["clic-25"])
    assert check.width_error == pytest.approx(2.0)
    assert check.collapsed


def test_empty_showers_count_in_the_score() -> None:
    """A generated set of which half the showers are empty scores half a point worse than
    its other terms: the demo's short gan3d run otherwise kept a step whose showers were
    53 % empty (response 94 % low) as its best."""
    real, energy = gaussian_showers(16, np.full(25, 2.5))
    half = real.copy()
    half[::2] = 0.0
    check = check_showers(real, half, energy, PRESETS["clic-25"])
    assert check.empty_fraction == 0.5
    terms = check.response_error + check.profile_error + check.width_error
    assert check.score == pytest.approx(terms + 0.5)
