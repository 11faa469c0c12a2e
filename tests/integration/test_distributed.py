"""Data-parallel training on two CPU processes (gloo) under torchrun.

The ranks must end with identical weights, and, with dropout off and BatchNorm statistics
synchronised, two ranks of batch B/2 must match one process of batch B: DDP's gradient
averaging, the per-rank slices of data, noise and labels, and the synchronised BatchNorm are
then right. The models run in float64 (see ddp_worker.py), where the two agree to about
1e-15; in float32 they differ by up to 1e-3 relative after a few steps, rounding amplified
by the cancellations in BatchNorm's backward pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from caloforge.simulation.run import simulate_to_file

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")
# SGD: its update is linear in the gradient. RMSprop and Adam take steps of about +-lr
# whatever a gradient's size, so rounding noise in a near-zero gradient becomes a full step
# and a comparison would test the optimizer's sensitivity rather than the averaging.
COMMON = [
    "training.batch_size=8",
    "training.max_steps=3",
    "training.optimizer.name=sgd",
    "training.check_showers=4",
    "training.window=8",
    "training.log_every=1",
]
# conv2d-g1: the adversarial step with BatchNorm, label flips and the physics heads (2D
# convolutions: float64 runs fast, unlike 3D ones, but still ~5 s a shower-step: a global
# batch of 4 (2 per rank), 2 steps; flips at 40 % so that each rank's slice of the labels
# has some, where the recipe's 5 % would leave most batches without). wgan-lhcb: regressor
# pretraining and the gradient penalty under DDP. The later overrides win.
CASES = {
    "conv2d-g1": (
        "clic-25",
        [
            "model.dropout=0",
            "training.batch_size=4",
            "training.max_steps=2",
            "training.loss.label_flip=0.4",
        ],
    ),
    "wgan-lhcb": ("lhcb-30", ["training.regressor_epochs=1", "training.critic_steps=2"]),
    # flow-match: the preprocessing fitted over both ranks, and stage 2 frozen at its best
    # check part-way (a check at every step, patience 1), after which DDP must go on with
    # stage 1 alone.
    "flow-match": (
        "clic-25",
        [
            "model.energy_hidden=16",
            "model.energy_blocks=1",
            "model.shape_hidden=32",
            "model.shape_blocks=1",
            "model.energy_steps=2",
            "model.shape_steps=2",
            "training.max_steps=5",
            "training.check_every=1",
            "training.shape_patience=1",
        ],
    ),
}


def run(nproc: int, family: str, data: Path, run_dir: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": str(ROOT / "src"),
    }
    if nproc == 1:
        cmd = [sys.executable, str(WORKER)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            str(WORKER),
        ]
    cmd += [
        str(ROOT / "configs" / f"{family}.yaml"),
        str(data),
        str(run_dir),
        *COMMON,
        *CASES[family][1],
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.parametrize("family", list(CASES))
def test_two_ranks_match_one_process_with_the_same_global_batch(family, tmp_path):
    data = tmp_path / "showers.h5"
    simulate_to_file(data, geometry=CASES[family][0], n=40, seed=5, workers=1)
    run(2, family, data, tmp_path / "ddp")
    run(1, family, data, tmp_path / "single")
    rank0 = torch.load(tmp_path / "ddp" / "weights-rank0.pt")
    rank1 = torch.load(tmp_path / "ddp" / "weights-rank1.pt")
    single = torch.load(tmp_path / "single" / "weights-rank0.pt")
    for role, weights in rank0.items():
        for key, value in weights.items():
            torch.testing.assert_close(rank1[role][key], value, rtol=0, atol=0)  # identical
            torch.testing.assert_close(value, single[role][key], rtol=1e-9, atol=1e-12)
    # Training moved the weights (a comparison of untouched weights would prove nothing).
    from caloforge.models import build_model

    fresh = build_model(family).generator.state_dict()
    moved = [
        k
        for k, v in single["generator"].items()
        # (the family's defaults: a weight the preset adds, as flow-match's skip, is not there)
        if k in fresh and v.dtype.is_floating_point and not torch.equal(v, fresh[k].double())
    ]
    assert len(moved) > 5
    assert (tmp_path / "ddp" / "metrics.jsonl").exists()  # written by rank 0
    if family == "flow-match":  # stage 2 did stop, at the same step in both runs
        events = [
            [
                line
                for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
                if "shape_frozen" in line
            ]
            for name in ("ddp", "single")
        ]
        assert len(events[0]) == 1 and events[0] == events[1]
