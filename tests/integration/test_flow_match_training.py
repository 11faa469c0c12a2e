"""flow-match in the trainer and the CLI: exact resume, train then `caloforge generate`."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloforge.cli import main
from caloforge.simulation.run import simulate_to_file
from caloforge.training.config import load_config
from caloforge.training.trainer import Trainer

TINY = {
    "energy_hidden": 16,
    "energy_blocks": 1,
    "shape_hidden": 32,
    "shape_blocks": 1,
    "energy_steps": 3,
    "shape_steps": 2,
    "fit_showers": 32,
}
TINY_OVERRIDES = [f"model.{k}={v}" for k, v in TINY.items()]
FAST = ["training.check_showers=8", "training.window=8", "training.log_every=1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clic.h5"
    simulate_to_file(path, geometry="clic-25", n=48, energy=(10.0, 200.0), seed=3, workers=1)
    return path


def step_records(run: Path) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["fm_energy"], r["fm_shape"]) for r in records if r["event"] == "step"]


def test_resumed_run_gives_the_same_losses(clic_file: Path, tmp_path: Path) -> None:
    # A constant rate: the preset's cosine schedule depends on max_steps, which the
    # interrupted run has shorter.
    common = [*FAST, *TINY_OVERRIDES, "training.batch_size=8", "training.checkpoint_every=3"]
    common.append("training.optimizer.schedule=constant")
    six = load_config("flow-match", [*common, "training.max_steps=6"])
    three = load_config("flow-match", [*common, "training.max_steps=3"])
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    Trainer(six, clic_file, whole).fit()
    Trainer(three, clic_file, parts).fit()
    Trainer(six, clic_file, parts, resume=True).fit()
    expected = step_records(whole)
    assert [s for s, *_ in expected] == list(range(1, 7))
    assert step_records(parts) == expected  # bit for bit on CPU


def test_train_then_generate_from_the_command_line(clic_file: Path, tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "gen.h5"
    overrides = [*FAST, *TINY_OVERRIDES, "training.batch_size=8", "training.max_steps=4"]
    args = ["train", "--config", "flow-match", "--data", str(clic_file), "--out", str(run)]
    assert main([*args, *overrides]) == 0
    generate = ["generate", "--checkpoint", str(run), "--conditions-from", str(clic_file)]
    assert main([*generate, "--n", "5", "--seed", "3", "-o", str(out)]) == 0
    with h5py.File(out) as f, h5py.File(clic_file) as ref:
        showers = f["showers"][:]
        assert showers.shape == (5, 25, 25, 25)
        np.testing.assert_array_equal(f["energy"][:], ref["energy"][:5])
    assert (
        np.isfinite(showers).all()
        and (showers >= 0).all()
        and (showers.sum(axis=(1, 2, 3)) > 0).all()
    )
