"""Checkpoints of untrained models for tests (weights seeded, nothing trained)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from caloforge.data.transforms import Power
from caloforge.models import build_model
from caloforge.training.checkpoint import save_checkpoint


def random_checkpoint(
    run_dir: Path,
    family: str,
    *,
    seed: int = 3,
    transform: Any = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint folder of `family` with random weights and the 3DGAN power transform."""
    bundle = build_model(family, seed=seed)
    return save_checkpoint(
        run_dir,
        step=1,
        epoch=0,
        bundle=bundle,
        transform=transform or Power(0.85, scale=100.0),
        geometry=bundle.config.resolved_geometry,
        training=training or {},
        trainer_state={},
    )
