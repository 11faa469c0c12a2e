"""Training checkpoints: the saved model plus the trainer's state, written atomically, found
through small pointers.

A run folder looks like:

    runs/NAME/
      checkpoints/step-00001000/     one checkpoint
        config.json                  the model's (`caloforge.models.checkpoint`), with the
        model.safetensors            "training" section, "step" and "epoch" added
        trainer_state.pt             optimizers, schedulers, RNG states, counters (resume only)
      latest.json                    {"checkpoint": "checkpoints/step-00001000"}
      best.json                      the checkpoint the physics check liked best, and why
      metrics.jsonl, tensorboard/    logs

Reading a checkpoint or a run folder is `caloforge.models.checkpoint`'s (`load_checkpoint`,
`resolve_checkpoint`); writing a run's checkpoints and the trainer state is this module's.
A checkpoint is written under a temporary folder name and renamed into place only when
complete, and the pointers are replaced atomically after it; a process killed at any moment
leaves the previous checkpoint and pointers intact, at worst with one newer, complete,
not-yet-pointed-to folder, which `latest_checkpoint` also finds.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from caloforge._files import is_write_failure, os_error_text, partial_path
from caloforge.data.transforms import Transform
from caloforge.errors import CaloforgeError, OutputError
from caloforge.geometry import Geometry
from caloforge.models import ModelBundle
from caloforge.models.checkpoint import (
    BEST,
    CONFIG,
    LATEST,
    CheckpointError,
    latest_checkpoint,
    read_pointer,
    save_model,
    step_folders,
)

# What `Trainer.save` adds to the training section beside the training config itself.
RUN_RECORD = ("condition_ranges", "family", "data", "data_showers", "data_total")

__all__ = [
    "RESUME_FIXED",
    "RESUME_STATE",
    "TRAINER_STATE",
    "check_resumable",
    "load_trainer_state",
    "save_checkpoint",
    "unwrap",
    "write_pointer",
]

TRAINER_STATE = "trainer_state.pt"
# The settings that decide which showers each step sees: a resume must keep them.
RESUME_FIXED = ("batch_size", "seed", "split_seed", "fractions", "window")
# what a resume reads of the trainer state beside a checkpoint (the trainer's `_trainer_state`)
RESUME_STATE = ("optimizer_g", "optimizer_d", "rng", "torch_rng", "train_state")


@dataclass
class TrainState:
    """Counters that a checkpoint carries for an exact resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    best_score: float = math.inf
    collapse_count: int = 0
    regressor_done: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    # The current epoch's loss sums, steps and seconds so far: its summary record covers
    # the whole epoch, also across a resume.
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_steps: int = 0
    epoch_seconds: float = 0.0
    epoch_cpu_seconds: float = 0.0  # CPU time of this process (all its threads)


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
    keep_every: int = 0,
) -> Path:
    """Write checkpoint `step` atomically, point `latest.json` at it, prune old ones.

    `keep` newest checkpoints are kept, and always the one `best.json` names and those of
    steps that are multiples of `keep_every` (0: none), a learning curve's.
    """
    run = Path(run_dir)
    folder = run / "checkpoints" / f"step-{step:08d}"
    partial = partial_path(folder)  # also removes those of killed runs
    try:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        plain = ModelBundle(
            bundle.family, bundle.config, {r: unwrap(m) for r, m in bundle.modules.items()}
        )
        extra = {"training": training, "step": step, "epoch": epoch}
        save_model(partial, plain, transform, geometry, extra)
        # Serialised in memory, then written: torch.save writing to a full disk itself fails
        # with an error that does not say so ("unexpected pos").
        state = io.BytesIO()
        torch.save(trainer_state, state)
        (partial / TRAINER_STATE).write_bytes(state.getbuffer())
        if folder.exists():  # the same step written again (a resumed run): replace it
            shutil.rmtree(folder)
        os.replace(partial, folder)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        # safetensors and torch.save report a full disk as their own errors: by its errno.
        if isinstance(exc, Exception) and is_write_failure(exc):
            raise OutputError(
                f"{folder}: the checkpoint could not be written ({os_error_text(exc)}); the "
                "run folder keeps its previous checkpoints"
            ) from None
        raise
    write_pointer(run / LATEST, folder, {"step": step, "epoch": epoch})
    _prune(run, keep, keep_every)
    return folder


def write_pointer(path: Path, checkpoint: Path, extra: dict[str, Any] | None = None) -> None:
    """Atomically (re)write a pointer file naming `checkpoint` relative to the run folder."""
    payload = {"checkpoint": str(checkpoint.relative_to(path.parent)), **(extra or {})}
    tmp = partial_path(path)  # also removes what killed runs left in the run folder
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _prune(run: Path, keep: int, keep_every: int = 0) -> None:
    best = read_pointer(run / BEST)
    folders = step_folders(run)
    for old in folders[: max(0, len(folders) - keep)]:
        if best is not None and old.resolve() == best.resolve():
            continue
        if keep_every and int(old.name.removeprefix("step-")) % keep_every == 0:
            continue
        shutil.rmtree(old, ignore_errors=True)


def load_trainer_state(
    folder: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The trainer state saved beside a checkpoint's model (for `--resume`), a mapping
    holding at least the `required` keys."""
    path = Path(folder) / TRAINER_STATE
    if not path.is_file():
        raise CheckpointError(f"{folder}: missing {TRAINER_STATE}; cannot resume from it")
    try:
        state: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # corrupt pickle, truncated file
        raise CheckpointError(f"{path}: unreadable trainer state ({exc})") from None
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: no {', '.join(missing)} in it; it was not written by a caloforge "
            "training, or not whole: resume from an earlier checkpoint (remove this one)"
        )
    return state


def check_resumable(
    saved: dict[str, Any],
    cfg: Any,
    split: int,
    run_dir: Path,
    folder: Path,
    *,
    total: int | None = None,
) -> None:
    """Refuse a resume whose settings (`cfg`, a TrainConfig; `split` training showers of
    `total` in the data) would feed other data than the run's (`saved`, the checkpoint's
    training record): the run would go on, but no longer as the uninterrupted one."""
    changed = []
    for key in RESUME_FIXED:
        mine = json.loads(json.dumps(getattr(cfg, key)))
        if key in saved and saved[key] != mine:
            changed.append(f"training.{key}={mine} (the run used {saved[key]})")
    if saved.get("data_showers", split) != split:  # another data file under the name
        changed.append(f"--data: {split} training showers (the run had {saved['data_showers']})")
    elif total is not None and saved.get("data_total", total) != total:
        # Showers appended (or the file replaced) leaving the training split as large: its
        # showers, drawn from all of them, are others all the same.
        changed.append(f"--data: {total} showers in all (the run had {saved['data_total']})")
    if changed:
        raise CaloforgeError(
            f"{run_dir}: --resume continues the run of {folder.name} exactly only with the "
            f"settings that order its data; changed: {'; '.join(changed)}. Give the run's "
            "values, or start a new run in another --out"
        )


def saved_run(run_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], list[str] | None]:
    """The latest checkpoint of a run folder, the run's configuration as its checkpoint saved
    it (a raw mapping with model, transform and training) and the training data it named
    (None for runs saved before caloforge recorded it); for `train --resume`."""
    folder = latest_checkpoint(run_dir)
    if folder is None:
        raise CheckpointError(f"{run_dir}: --resume given but no checkpoint found")
    path = folder / CONFIG
    try:
        saved = json.loads(path.read_text())
        training = dict(saved["training"])
        raw = {"model": dict(saved["model"]), "transform": dict(saved["transform"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint config ({exc!r})") from None
    data = training.get("data")
    raw["training"] = {k: v for k, v in training.items() if k not in RUN_RECORD}
    return folder, raw, list(data) if isinstance(data, list) else None
