"""`caloforge train --processes N`: the ranks started by the CLI itself, as torchrun would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from caloforge.cli import main
from caloforge.simulation.run import simulate_to_file

pytestmark = pytest.mark.distributed

TINY = [
    "training.batch_size=8",
    "training.max_steps=2",
    "training.optimizer.name=sgd",
    "training.check_showers=4",
    "training.window=8",
    "model.dropout=0",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clic.h5"
    simulate_to_file(path, geometry="clic-25", n=32, energy=(10.0, 100.0), seed=4, workers=1)
    return path


def weights(run: Path) -> dict:
    return load_file(str(run / "checkpoints" / "step-00000002" / "model.safetensors"))


def test_two_ranks_train_exactly_as_under_torchrun(data, tmp_path, capfd, monkeypatch):
    """`--processes 2` is torchrun's path: the same ranks, the same weights to the bit.
    (That two ranks match one process at the same global batch is test_distributed.py's.)"""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as torchrun sets it
    args = ["train", "--config", "conv2d-g1", "--data", str(data)]
    assert main([*args, "--processes", "2", "--out", str(tmp_path / "ours"), *TINY]) == 0
    out = capfd.readouterr().out
    assert "on 2 rank(s)" in out and "trained 2 steps" in out
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    command = [*torchrun, "-m", "caloforge", *args, "--out", str(tmp_path / "torchrun"), *TINY]
    subprocess.run(command, check=True, env=env, capture_output=True)
    ours, theirs = weights(tmp_path / "ours"), weights(tmp_path / "torchrun")
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_resumed_run_on_two_ranks_says_once_what_it_resumes(data, tmp_path, capfd):
    run = str(tmp_path / "run")
    one_step = [t for t in TINY if not t.startswith("training.max_steps")]
    argv = ["train", "--config", "conv2d-g1", "--data", str(data), "--out", run, *one_step]
    assert main([*argv, "training.max_steps=1"]) == 0
    capfd.readouterr()
    command = ["train", "--out", run, "--resume", "--processes", "2", "training.max_steps=2"]
    assert main(command) == 0
    out = capfd.readouterr().out
    assert out.count("resuming") == 1 and "from step 1 to 2" in out


def test_a_mistake_in_the_ranks_is_reported_once_and_ends_them_all(data, tmp_path, capfd):
    missing = tmp_path / "missing.h5"
    argv = ["train", "--config", "conv2d-g1", "--data", str(missing), "--out", str(tmp_path / "r")]
    assert main([*argv, "--processes", "2", *TINY]) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and str(missing) in errors[0]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_process_count_is_refused(data, tmp_path, capsys, value):
    argv = ["train", "--config", "gan3d", "--data", str(data), "--out", str(tmp_path / "r")]
    assert main([*argv, "--processes", value]) == 2
    assert (
        f"--processes must be a positive integer or 'auto', got '{value}'"
        in capsys.readouterr().err
    )
