"""Losses, configs and checkpoints of the trainer, on analytic and synthetic cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from caloforge.data.transforms import Power
from caloforge.geometry import PRESETS
from caloforge.models import build_model
from caloforge.models.checkpoint import (
    BEST,
    CONFIG,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
)
from caloforge.training import losses
from caloforge.training.checkpoint import load_trainer_state, save_checkpoint, write_pointer
from caloforge.training.config import TrainConfigError, apply_overrides, parse_config
from caloforge.training.distributed import SyncedBatchNorm, synchronise_batchnorm


# --- losses --------------------------------------------------------------------------------
def test_labels_soft_and_flipped_in_the_requested_fraction():
    g = torch.Generator().manual_seed(0)
    like = torch.zeros(1)
    real = losses.labels(100_000, True, soft=(0.9, 0.1), flip=0.05, generator=g, like=like)
    assert real.unique().tolist() == pytest.approx([0.1, 0.9])
    assert (real < 0.5).float().mean().item() == pytest.approx(0.05, abs=0.003)
    fake = losses.labels(10, False, soft=None, flip=0.0, generator=g, like=like)
    assert fake.tolist() == [0.0] * 10


def test_mape_and_mae():
    # In percent, as Keras' MAPE that the published loss weights were tuned with.
    assert losses.mape(torch.tensor([1.1, 1.8]), torch.tensor([1.0, 2.0])).item() == pytest.approx(
        10.0
    )
    assert losses.mae(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])).item() == pytest.approx(
        1.0
    )


def test_soft_bin_counts_approach_hard_counts_and_have_gradients():
    x = torch.tensor([[0.0, 0.0, 0.02, 0.5, 1.5, 3.0]], requires_grad=True)
    edges = (0.1, 1.0, 2.0)
    soft = losses.soft_bin_counts(x, edges, temperature=0.01)
    # bins: ==0, (0, 0.1), [0.1, 1), [1, 2), >= 2
    np.testing.assert_allclose(soft.detach().numpy(), [[2, 1, 1, 1, 1]], atol=1e-3)
    assert soft.sum().item() == pytest.approx(6.0)
    losses.soft_bin_counts(x, edges, temperature=0.5)[0, 2].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradient_penalty_of_a_linear_critic():
    w = torch.tensor([3.0, 4.0])  # gradient norm 5 everywhere: penalty (5 - 1)^2 = 16
    g = torch.Generator().manual_seed(1)
    gp = losses.gradient_penalty(lambda x: x @ w, torch.randn(8, 2), torch.randn(8, 2), g)
    assert gp.item() == pytest.approx(16.0)


# --- configs --------------------------------------------------------------------------------
RAW = {
    "model": {"family": "gan3d"},
    "transform": {"name": "power", "power": 0.85},
    "training": {"batch_size": 8, "loss": {"energy": 0.1}},
}


def test_overrides_reach_nested_entries_and_are_checked():
    raw = apply_overrides(
        RAW,
        [
            "training.loss.energy=0.3",
            "training.optimizer.name=adam",
            "training.loss.soft_labels=[0.9, 0.1]",
            "model.latent_size=100",
        ],
    )
    config = parse_config(raw)
    assert config.training.loss.energy == 0.3
    assert config.training.optimizer.name == "adam"
    assert config.training.loss.soft_labels == (0.9, 0.1)
    assert config.model["latent_size"] == 100
    assert RAW["training"]["loss"]["energy"] == 0.1  # the input is not changed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.batch_sise=4", "unknown key 'training.batch_sise' (did you mean 'batch_size'?)"),
        ("training.batch_size=0", "training.batch_size must be > 0"),
        ("training.batch_size=two", "must be of type int"),
        ("training.optimizer.name=lbfgs", "must be one of rmsprop, adam, sgd"),
        ("training.optimizer.warmup_steps=-5", "warmup_steps must be 0 or more"),
        ("training.loss.label_flip=0.7", "label_flip must be in [0, 0.5)"),
        ("optimizer.name=adam", "must start with model., transform. or training."),
        ("training.fractions=[0.5, 0.1, 0.1]", "summing to 1"),
    ],
)
def test_bad_configs_name_the_key(override, message):
    with pytest.raises(TrainConfigError) as error:
        parse_config(apply_overrides(RAW, [override]))
    assert message in str(error.value)


# --- checkpoints ----------------------------------------------------------------------------
def _save(run, step, bundle):
    return save_checkpoint(
        run,
        step=step,
        epoch=0,
        bundle=bundle,
        transform=Power(0.85, 100.0),
        geometry=PRESETS["clic-25"],
        training={},
        trainer_state={"step": step},
        keep=2,
    )


def test_checkpoints_rebuild_the_model_and_keep_the_newest(tmp_path):
    bundle = build_model("gan3d", seed=3)
    for step in (1, 2, 3):
        _save(tmp_path, step, bundle)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000003"]
    loaded = load_checkpoint(tmp_path)  # a run folder resolves to its latest checkpoint
    assert loaded.step == 3 and loaded.transform == Power(0.85, 100.0)
    for key, value in bundle.generator.state_dict().items():
        torch.testing.assert_close(loaded.bundle.generator.state_dict()[key], value)
    assert load_trainer_state(loaded.folder) == {"step": 3}


def test_a_kill_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    bundle = build_model("gan3d")
    _save(tmp_path, 1, bundle)
    import safetensors.torch

    def crash(tensors, path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, bundle)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001"]
    assert json.loads((tmp_path / "latest.json").read_text())["checkpoint"].endswith(
        "step-00000001"
    )
    assert load_checkpoint(tmp_path).step == 1


def test_a_complete_checkpoint_whose_pointer_did_not_move_is_found(tmp_path):
    bundle = build_model("gan3d")
    _save(tmp_path, 1, bundle)
    pointer = (tmp_path / "latest.json").read_text()
    _save(tmp_path, 2, bundle)
    (tmp_path / "latest.json").write_text(pointer)  # killed between rename and pointer
    assert latest_checkpoint(tmp_path).name == "step-00000002"


def test_broken_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        resolve_checkpoint(tmp_path / "empty")
    folder = _save(tmp_path / "run", 1, build_model("gan3d"))
    with pytest.raises(CheckpointError, match="family 'gan3d', expected 'conv2d-g1'"):
        load_checkpoint(folder, family="conv2d-g1")
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_checkpoint(folder)


# --- distribution helpers --------------------------------------------------------------------
def test_synced_batchnorm_is_plain_batchnorm_in_one_process():
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
    synced = synchronise_batchnorm(
        torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3)), torch.device("cpu")
    )
    synced.load_state_dict(plain.state_dict())
    assert isinstance(synced[1], SyncedBatchNorm)
    x = torch.randn(4, 1, 6, 6)
    torch.testing.assert_close(synced(x), plain(x))
    torch.testing.assert_close(synced[1].running_var, plain[1].running_var)


def test_pruning_keeps_the_newest_the_best_and_the_learning_curves_steps(tmp_path):
    from caloforge.training.checkpoint import _prune

    for step in (100, 200, 300, 400, 500, 600):
        folder = tmp_path / "checkpoints" / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / CONFIG).write_text("{}")
    write_pointer(tmp_path / BEST, tmp_path / "checkpoints" / "step-00000100")
    _prune(tmp_path, keep=2, keep_every=300)
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step-00000100", "step-00000300", "step-00000500", "step-00000600"]
