"""`pretrained:NAME`: the checkpoints shipped in the package, named wherever a path is."""

from __future__ import annotations

import json

import pytest

from caloforge.models import checkpoint
from caloforge.models.checkpoint import CheckpointError, pretrained_models, resolve_checkpoint


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A package whose pretrained folder holds one checkpoint and one folder without one."""
    root = tmp_path / "pretrained"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / checkpoint.CONFIG).write_text(json.dumps({"model": {}}))
    (root / "notes").mkdir()
    monkeypatch.setattr(checkpoint, "PRETRAINED_ROOT", root)
    return root


def test_a_shipped_name_resolves_to_its_folder(shipped):
    assert pretrained_models() == {"tiny": shipped / "tiny"}
    assert resolve_checkpoint("pretrained:tiny") == shipped / "tiny"


def test_an_unknown_name_is_refused_with_the_shipped_names(shipped):
    with pytest.raises(
        CheckpointError,
        match=r"pretrained:nope: no such pretrained model "
        r"\(shipped: pretrained:tiny\)",
    ):
        resolve_checkpoint("pretrained:nope")


def test_without_shipped_weights_the_error_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "PRETRAINED_ROOT", tmp_path / "absent")
    with pytest.raises(CheckpointError, match="none in this installation"):
        resolve_checkpoint("pretrained:clic25-geant4")


def test_the_shipped_geant4_model_generates_showers_with_geant4s_response():
    """The weights in the package (clic-25, trained on Geant4): small, documented, and
    generating showers whose visible energy, depth and transverse widths are Geant4's at 50
    GeV (in the held-out showers of 40-60 GeV: 0.0249 of the primary visible, the profile's
    maximum in layer 11, a mean layer width of 5.27 mm weighting each layer by its share of
    the energy). The model card gives the layer widths within 7 % on the held-out set; the
    weights shipped before were 20-25 % too narrow."""
    import numpy as np
    import torch

    from caloforge.generation.pipeline import ShowerPipeline
    from caloforge.geometry import PRESETS
    from caloforge.training.physics_check import layer_widths

    folder = resolve_checkpoint("pretrained:clic25-geant4")
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 20 * 2**20
    card = (folder / "MODEL_CARD.md").read_text()
    assert "Geant4" in card and "held-out" in card
    pipeline = ShowerPipeline.from_checkpoint("pretrained:clic25-geant4", backend="eager")
    energy = np.full(64, 50.0)
    made = pipeline({"energy": energy}, torch.Generator().manual_seed(0))
    showers = np.asarray(made.showers, dtype=np.float64)
    assert showers.shape == (64, 25, 25, 25)
    assert np.isfinite(showers).all() and (showers >= 0).all()
    ratio = showers.sum(axis=(1, 2, 3)) / energy
    assert abs(ratio.mean() / 0.0249 - 1) < 0.03, ratio.mean()  # 64 showers: 0.4 % error
    profile = showers.sum(axis=(0, 1, 2))
    assert 9 <= int(np.argmax(profile)) <= 13
    widths, layer_energy = layer_widths(showers, PRESETS["clic-25"])
    mean_width = float((widths.mean(axis=0) * layer_energy / layer_energy.sum()).sum())
    assert abs(mean_width / 5.27 - 1) < 0.08, mean_width
