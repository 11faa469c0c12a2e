"""Evidence that training learns: a GAN trained on CPU on simulated clic-25 showers
reproduces the response in energy bins and the longitudinal shape far better than at
initialisation. Slow (56 min on 2 CPU cores, about 90 s on an H100): run it with
`make test-all` or `pytest -m slow`.
`CALOFORGE_TEST_DEVICE=cuda` runs the same recipe on a GPU (in fp32, as on the CPU).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from caloforge.data.dataset import split_indices
from caloforge.data.io import open_showers
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.simulation.run import simulate_to_file
from caloforge.training.config import load_config
from caloforge.training.physics_check import binned_response
from caloforge.training.trainer import Trainer
from caloforge.validation.features import normalised_mean_profile

ENERGY_BINS = [(10.0, 70.0), (70.0, 130.0), (130.0, 200.0)]


def response_and_profile(pipeline: ShowerPipeline, real, conditions) -> tuple[list[float], float]:
    """Generated / real mean visible-primary ratio per energy bin, and the L1 profile error."""
    generated = pipeline(conditions, torch.Generator().manual_seed(99)).showers
    ratios = binned_response(real, generated, conditions["energy"], ENERGY_BINS)
    geometry = pipeline.geometry
    error = float(
        np.abs(
            normalised_mean_profile(generated, geometry) - normalised_mean_profile(real, geometry)
        ).sum()
    )
    return ratios, error


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gan3d"])
def test_training_learns_response_and_shape(family, tmp_path):
    torch.set_num_threads(2)
    data = tmp_path / "clic.h5"
    simulate_to_file(data, geometry="clic-25", n=3000, energy=(10.0, 200.0), seed=11)
    run = tmp_path / "run"
    config = load_config(
        family,
        [
            "training.batch_size=32",
            "training.max_steps=500",
            "training.check_every=50",
            "training.check_showers=256",
            f"training.device={os.environ.get('CALOFORGE_TEST_DEVICE', 'cpu')}",
            "training.precision=fp32",
        ],
    )
    trainer = Trainer(config, data, run)
    with open_showers(data) as source:
        test = source.take(split_indices(len(source))["test"])  # never trained on
    real, conditions = test.showers, dict(test.conditions)
    # A copy: the pipeline puts its generator in eval mode, the trainer's must stay in train.
    initial = ShowerPipeline(
        copy.deepcopy(trainer.bundle.generator), trainer.transform, trainer.geometry
    )
    ratios_before, error_before = response_and_profile(initial, real, conditions)
    trainer.fit()
    trained = ShowerPipeline.from_checkpoint(run)
    ratios_after, error_after = response_and_profile(trained, real, conditions)
    print(
        f"{family}: generated/real response per bin before {ratios_before}, after "
        f"{ratios_after}; profile error before {error_before:.3f}, after {error_after:.3f}"
    )
    for (lo, hi), ratio in zip(ENERGY_BINS, ratios_after, strict=True):
        assert abs(ratio - 1.0) < 0.15, f"{lo}-{hi} GeV: generated/real response {ratio:.3f}"
    assert error_after < 0.5 * error_before
