"""Run by torchrun from test_distributed.py: train a few steps, save this rank's weights."""

from __future__ import annotations

import os
import sys

import torch

from caloforge.devices import shutdown_distributed
from caloforge.training.checkpoint import unwrap
from caloforge.training.config import load_config
from caloforge.training.trainer import Trainer


def main() -> None:
    config_path, data, run_dir, *overrides = sys.argv[1:]
    torch.set_num_threads(1)
    # float64 models: DDP and one process then agree to rounding at 1e-16, far below any
    # real error, whereas float32 rounding, amplified by the cancellations of BatchNorm's
    # backward pass, would blur the comparison.
    torch.set_default_dtype(torch.float64)
    trainer = Trainer(load_config(config_path, overrides), data, run_dir)
    trainer.fit()
    rank = int(os.environ.get("RANK", "0"))
    weights = {
        role: {k: v.detach().cpu() for k, v in unwrap(m).state_dict().items()}
        for role, m in trainer.bundle.modules.items()
    }
    torch.save(weights, os.path.join(run_dir, f"weights-rank{rank}.pt"))
    shutdown_distributed()


if __name__ == "__main__":
    main()
