"""Preprocessing transforms: exact inverses, zeros kept, numpy and torch agree, round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caloforge.data.transforms import BoxCox, Identity, Log, Power, transform_from_dict
from caloforge.errors import CaloforgeError

CELLS = np.concatenate([[0.0, 0.0, 1e-8, 1e-5], np.logspace(-7, 1, 200)])


@pytest.mark.parametrize(
    "transform",
    [Identity(), Power(0.85), Power(0.85, scale=50.0), Log(1e-5), BoxCox(0.2), BoxCox(0.0)],
)
def test_inverse_undoes_forward_on_numpy_and_torch(transform):
    y = transform.forward(CELLS)
    np.testing.assert_allclose(transform.inverse(y), CELLS, rtol=1e-9, atol=1e-15)
    yt = transform.forward(torch.from_numpy(CELLS))
    np.testing.assert_allclose(yt.numpy(), y, rtol=1e-12)
    assert transform.forward(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    assert transform_from_dict(transform.to_dict()) == transform


def test_power_is_monotonic_and_compresses_the_range():
    y = Power(0.85).forward(CELLS[2:])
    assert np.all(np.diff(y[3:]) > 0)
    assert np.log10(y.max() / y.min()) < np.log10(CELLS[2:].max() / CELLS[2:].min())


def test_boxcox_fit_recovers_a_known_lambda():
    rng = np.random.default_rng(0)
    lmbda = 0.25
    normal = rng.normal(2.0, 0.3, 200_000)
    cells = (normal * lmbda + 1.0) ** (1.0 / lmbda)  # Box-Cox of `cells` is exactly normal
    fitted = BoxCox.fit(np.concatenate([cells, np.zeros(1000)]), shift=1e-12)
    assert fitted.lmbda == pytest.approx(lmbda, abs=0.01)


def test_bad_transforms_are_refused():
    with pytest.raises(CaloforgeError, match="unknown transform 'sqrt'"):
        transform_from_dict({"name": "sqrt"})
    with pytest.raises(CaloforgeError, match="parameter 'power' must be > 0"):
        Power(-1.0)
    with pytest.raises(CaloforgeError, match="need at least 10"):
        BoxCox.fit(np.zeros(100))
    with pytest.raises(CaloforgeError, match="bad parameters"):
        transform_from_dict({"name": "power", "exponent": 2})
