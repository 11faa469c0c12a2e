"""Checkpoints: self-contained folders, written atomically, found through small pointers.

A run folder looks like:

    runs/NAME/
      checkpoints/step-00001000/     one checkpoint; everything needed to rebuild the model
        config.json                  {"model": ..., "transform": ..., "geometry": ...,
                                      "training": ..., "step", "epoch", "caloforge_version"}
        model.safetensors            weights and buffers, keys "<role>.<name>"
        trainer_state.pt             optimizers, schedulers, RNG states, counters (resume only)
      latest.json                    {"checkpoint": "checkpoints/step-00001000"}
      best.json                      the checkpoint the physics check liked best, and why
      metrics.jsonl, tensorboard/    logs

A checkpoint is written under a temporary folder name and renamed into place only when
complete, and the pointers are replaced atomically after it; a process killed at any moment
leaves the previous checkpoint and pointers intact, at worst with one newer, complete,
not-yet-pointed-to folder, which `latest_checkpoint` also finds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from caloforge import __version__
from caloforge.data.transforms import Transform, transform_from_dict
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models import ModelBundle, build_model

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINER_STATE = "trainer_state.pt"
LATEST = "latest.json"
BEST = "best.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(CaloforgeError):
    """A checkpoint that is missing, incomplete, corrupt or of the wrong kind."""


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers (whose state dicts differ)."""
    while True:
        if hasattr(module, "module") and isinstance(module.module, nn.Module):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    *,
    step: int,
    epoch: int,
    bundle: ModelBundle,
    transform: Transform,
    geometry: Geometry,
    training: dict[str, Any],
    trainer_state: dict[str, Any],
    keep: int = 3,
) -> Path:
    """Write checkpoint `step` atomically, point `latest.json` at it, prune old ones.

    `keep` newest checkpoints are kept, and always the one `best.json` names.
    """
    from safetensors.torch import save_file

    run = Path(run_dir)
    folder = run / "checkpoints" / f"step-{step:08d}"
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        tensors = {
            f"{role}.{name}": value.detach().to("cpu").contiguous()
            for role, module in bundle.modules.items()
            for name, value in unwrap(module).state_dict().items()
        }
        save_file(tensors, str(partial / WEIGHTS))
        config = {
            "model": bundle.config_dict(),
            "transform": transform.to_dict(),
            "geometry": geometry.to_dict(),
            "training": training,
            "step": step,
            "epoch": epoch,
            "caloforge_version": __version__,
        }
        (partial / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        torch.save(trainer_state, partial / TRAINER_STATE)
        if folder.exists():  # the same step written again (a resumed run): replace it
            shutil.rmtree(folder)
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    write_pointer(run / LATEST, folder, {"step": step, "epoch": epoch})
    _prune(run, keep)
    return folder


def write_pointer(path: Path, checkpoint: Path, extra: dict[str, Any] | None = None) -> None:
    """Atomically (re)write a pointer file naming `checkpoint` relative to the run folder."""
    payload = {"checkpoint": str(checkpoint.relative_to(path.parent)), **(extra or {})}
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _read_pointer(path: Path) -> Path | None:
    try:
        target = path.parent / json.loads(path.read_text())["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return target if (target / CONFIG).is_file() else None


def _step_folders(run: Path) -> list[Path]:
    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=_step_of)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    run = Path(run_dir)
    folders = _step_folders(run)
    pointed = _read_pointer(run / LATEST)
    newest = folders[-1] if folders else None
    if pointed is None:
        return newest
    if newest is not None and _step_of(newest) > _step_of(pointed):
        return newest  # written, then killed before the pointer moved
    return pointed


def _step_of(folder: Path) -> int:
    m = _STEP_DIR.match(folder.name)
    return int(m.group(1)) if m else -1


def _prune(run: Path, keep: int) -> None:
    best = _read_pointer(run / BEST)
    folders = _step_folders(run)
    for old in folders[: max(0, len(folders) - keep)]:
        if best is None or old.resolve() != best.resolve():
            shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder from a checkpoint folder or a run folder (its best, else latest)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if (p / CONFIG).is_file():
        return p
    if p.is_dir():
        found = _read_pointer(p / BEST) or latest_checkpoint(p)
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

    def trainer_state(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        path = self.folder / TRAINER_STATE
        if not path.is_file():
            raise CheckpointError(f"{self.folder}: missing {TRAINER_STATE}; cannot resume from it")
        try:
            state: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # corrupt pickle, truncated file
            raise CheckpointError(f"{path}: unreadable trainer state ({exc})") from None
        return state


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
