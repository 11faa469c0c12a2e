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
