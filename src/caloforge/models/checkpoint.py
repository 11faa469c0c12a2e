"""A saved model: a folder with `config.json` and `model.safetensors` that rebuilds it alone.

    checkpoints/step-00001000/
      config.json          {"model": ..., "transform": ..., "geometry": ..., and whatever the
                            writer adds (training: "training", "step", "epoch")}
      model.safetensors    weights and buffers of each module, keys "<role>.<name>"

`load_checkpoint` rebuilds the model family's modules from `config.json` (the config is the
constructor), loads the weights and returns them with the preprocessing and the geometry:
all generation needs. A run folder written by `caloforge train` (`caloforge.training`, which
also keeps the optimizer and RNG state beside these files) names its checkpoints through
`best.json` and `latest.json`; `resolve_checkpoint` follows them, so a run folder can be
given wherever a checkpoint can.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from caloforge import __version__
from caloforge.data.transforms import Transform, transform_from_dict
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models.base import ModelBundle, build_model

__all__ = [
    "BEST",
    "CONFIG",
    "LATEST",
    "WEIGHTS",
    "Checkpoint",
    "CheckpointError",
    "latest_checkpoint",
    "load_checkpoint",
    "read_pointer",
    "resolve_checkpoint",
    "save_model",
    "step_folders",
]

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKSUM = "weights_sha256"  # config.json: the SHA-256 of model.safetensors, checked on load
LATEST = "latest.json"  # run folder: the newest checkpoint
BEST = "best.json"  # run folder: the checkpoint the training's physics check liked best
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(CaloforgeError):
    """A checkpoint that is missing, incomplete, corrupt or of the wrong kind."""


def save_model(
    folder: str | os.PathLike[str],
    bundle: ModelBundle,
    transform: Transform,
    geometry: Geometry,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write `config.json` and `model.safetensors` of `bundle` into `folder` (which exists).

    The modules must be plain (no DDP or torch.compile wrapper: their state dicts differ).
    extra: more top-level entries of `config.json` (the training's settings, step, epoch).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors = {
        f"{role}.{name}": value.detach().to("cpu").contiguous()
        for role, module in bundle.modules.items()
        for name, value in module.state_dict().items()
    }
    save_file(tensors, str(folder / WEIGHTS))
    config = {
        "model": bundle.config_dict(),
        "transform": transform.to_dict(),
        "geometry": geometry.to_dict(),
        **(extra or {}),
        "caloforge_version": __version__,
        CHECKSUM: weights_checksum(folder / WEIGHTS),
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))


def weights_checksum(path: Path) -> str:
    """The SHA-256 of a weights file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_weights(
    weights_path: Path, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> None:
    """Refuse weights whose bytes are not those written (`config.json` records their
    checksum) or that hold NaN or infinite numbers: either would generate nonsense showers."""
    recorded = config.get(CHECKSUM)
    if recorded is not None:
        found = weights_checksum(weights_path)
        if found != recorded:
            raise CheckpointError(
                f"{weights_path}: corrupt weights: their SHA-256 is {found[:16]}..., "
                f"{CONFIG} records {str(recorded)[:16]}... (the file changed after it was "
                "written); use another checkpoint"
            )
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{weights_path}: tensor '{key}' holds {bad} NaN or infinite value(s); "
                "expected finite weights (a diverged run or a corrupt file)"
            )


def read_pointer(path: Path) -> Path | None:
    """The checkpoint folder a pointer file (`best.json`, `latest.json`) names, or None."""
    try:
        target = path.parent / json.loads(path.read_text())["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return target if (target / CONFIG).is_file() else None


def step_of(folder: Path) -> int:
    """The step of a `step-NNNNNNNN` folder (-1 for another name)."""
    m = _STEP_DIR.match(folder.name)
    return int(m.group(1)) if m else -1


def step_folders(run: Path) -> list[Path]:
    """The `checkpoints/step-*` folders of a run folder, oldest first."""
    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=step_of)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    run = Path(run_dir)
    folders = step_folders(run)
    pointed = read_pointer(run / LATEST)
    newest = folders[-1] if folders else None
    if pointed is None:
        return newest
    if newest is not None and step_of(newest) > step_of(pointed):
        return newest  # written, then killed before the pointer moved
    return pointed


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder (its best, else latest)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if (p / CONFIG).is_file():
        return p
    if p.is_dir():
        found = read_pointer(p / BEST) or latest_checkpoint(p)
        if found is not None:
            return found
    raise CheckpointError(
        f"{p}: not a checkpoint (no {CONFIG}) nor a run folder with checkpoints "
        f"(no {BEST}, {LATEST} or checkpoints/step-*)"
    )


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model with its weights, its preprocessing and geometry."""

    folder: Path
    config: dict[str, Any]
    bundle: ModelBundle
    transform: Transform
    geometry: Geometry

    @property
    def step(self) -> int:
        return int(self.config.get("step", 0))


def load_checkpoint(
    path: str | os.PathLike[str], *, family: str | None = None, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Rebuild model, preprocessing and geometry from a checkpoint (or run) folder.

    `family`, when given, must match the checkpoint's model family.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_checkpoint(path)
    config_path = folder / CONFIG
    try:
        config = json.loads(config_path.read_text())
        model_config = dict(config["model"])
        transform = transform_from_dict(config["transform"])
        geometry = Geometry.from_dict(config["geometry"], source=str(config_path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: unreadable checkpoint config ({exc!r})") from None
    found_family = model_config.get("family")
    if family is not None and found_family != family:
        raise CheckpointError(
            f"{folder}: checkpoint of model family '{found_family}', expected '{family}'"
        )
    bundle = build_model(str(found_family), model_config)
    weights_path = folder / WEIGHTS
    try:
        tensors = load_file(str(weights_path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable weights ({exc})") from None
    _check_weights(weights_path, config, tensors)
    for role, module in bundle.modules.items():
        prefix = f"{role}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{weights_path}: weights do not fit the '{role}' of '{found_family}' ({exc})"
            ) from None
    bundle.to(device)
    return Checkpoint(folder, config, bundle, transform, geometry)
