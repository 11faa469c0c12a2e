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
given wherever a checkpoint can. `summarize_checkpoint` says what a run or checkpoint folder
holds without loading its weights (`caloforge inspect RUN`).

Weights shipped with the package are checkpoint folders under `caloforge/pretrained/NAME/`
(with a `MODEL_CARD.md`: data, training, validation figures); `pretrained:NAME` names one
wherever a checkpoint path is accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from caloforge import __version__
from caloforge.data.transforms import Transform, transform_from_dict
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models.base import ModelBundle, build_model, parameter_counts

__all__ = [
    "BEST",
    "CONFIG",
    "LATEST",
    "WEIGHTS",
    "Checkpoint",
    "CheckpointError",
    "CheckpointSummary",
    "latest_checkpoint",
    "load_checkpoint",
    "pretrained_models",
    "print_checkpoint_summary",
    "read_pointer",
    "resolve_checkpoint",
    "save_model",
    "step_folders",
    "summarize_checkpoint",
]

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKSUM = "weights_sha256"  # config.json: the SHA-256 of model.safetensors, checked on load
LATEST = "latest.json"  # run folder: the newest checkpoint
BEST = "best.json"  # run folder: the checkpoint the training's physics check liked best
_STEP_DIR = re.compile(r"^step-(\d+)$")
PRETRAINED = "pretrained:"  # prefix of the shipped checkpoints' names
MODEL_CARD = "MODEL_CARD.md"
PRETRAINED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"


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


def _pointed(path: Path) -> Path | None:
    """The folder a pointer file names, whether or not it is there (None: no pointer)."""
    try:
        return path.parent / json.loads(path.read_text())["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


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


def pretrained_models() -> dict[str, Path]:
    """The checkpoints shipped with the package: name -> folder."""
    if not PRETRAINED_ROOT.is_dir():
        return {}
    return {p.name: p for p in sorted(PRETRAINED_ROOT.iterdir()) if (p / CONFIG).is_file()}


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder (its best, else latest) or
    `pretrained:NAME` (a checkpoint shipped with the package)."""
    if isinstance(path, str) and path.startswith(PRETRAINED):
        name = path[len(PRETRAINED) :]
        shipped = pretrained_models()
        if name not in shipped:
            known = ", ".join(PRETRAINED + k for k in shipped) or "none in this installation"
            raise CheckpointError(f"{path}: no such pretrained model (shipped: {known})")
        return shipped[name]
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if (p / CONFIG).is_file():
        return p
    if p.is_dir():
        found = read_pointer(p / BEST) or latest_checkpoint(p)
        if found is not None:
            return found
        for pointer in (p / LATEST, p / BEST):  # a run whose checkpoints were removed
            target = _pointed(pointer)
            if target is not None:
                raise CheckpointError(
                    f"{pointer}: names the checkpoint {target}, which holds no {CONFIG} (removed "
                    "or moved?), and the run has no other checkpoints/step-*; expected a "
                    "checkpoint folder"
                )
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
    config, model_config, geometry = _read_config(config_path)
    found_family = model_config["family"]
    transform = _config_part(config_path, "transform", transform_from_dict, config["transform"])
    if family is not None and found_family != family:
        raise CheckpointError(
            f"{folder}: checkpoint of model family '{found_family}', expected '{family}'"
        )
    bundle = _config_part(config_path, "model", build_model, found_family, model_config)
    weights_path = folder / WEIGHTS
    if weights_path.is_dir():  # safetensors would say "No such device (os error 19)"
        raise CheckpointError(f"{weights_path}: is a folder; expected the file of the weights")
    try:
        tensors = load_file(str(weights_path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable weights ({exc})") from None
    _check_weights(weights_path, config, tensors)
    for role, module in bundle.modules.items():
        prefix = f"{role}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        misfit = _misfit(module.state_dict(), state)
        if misfit:
            raise CheckpointError(
                f"{weights_path}: the weights do not fit the '{role}' that {CONFIG} describes "
                f"('{found_family}'): {misfit}; the config was changed after the weights were "
                "written, or they belong to another checkpoint"
            )
        module.load_state_dict(state, strict=True)
    bundle.to(device)
    return Checkpoint(folder, config, bundle, transform, geometry)


@dataclass(frozen=True)
class CheckpointSummary:
    """What a run or checkpoint folder holds (`summarize_checkpoint`).

    checkpoint: the folder summarised (a run's best, else its latest); run: the run folder,
        None for a checkpoint given alone; steps: the run's kept checkpoints, by step.
    planned: the training's length and batch (`max_steps`, `epochs`, `batch_size`) as the
        checkpoint records them, for a run folder its latest (a resume may have changed them);
        best: `best.json` (the step and the physics check's numbers).
    data: the training files the config records (absolute paths; empty where it names none);
    condition_ranges: name -> `(min, max)` pairs of the training data, in `units`.
    parameters: trainable parameters per role (generator, discriminator, ...).
    """

    path: str
    checkpoint: Path
    run: Path | None
    family: str
    geometry: str
    shower_shape: tuple[int, ...]
    units: Mapping[str, str]
    step: int
    epoch: int
    steps: tuple[int, ...]
    planned: Mapping[str, Any]
    best: Mapping[str, Any] | None
    data: tuple[str, ...]
    condition_ranges: Mapping[str, tuple[tuple[float, float], ...]]
    parameters: Mapping[str, int]
    transform: Mapping[str, Any]
    version: str = ""
    latest_step: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _ranges(value: Any) -> tuple[tuple[float, float], ...]:
    """`[min, max]` or `[[min, max], ...]` as pairs (what the trainer records); () if neither."""
    try:
        flat = [float(v) for v in _flatten(value)]
    except (TypeError, ValueError):
        return ()
    if not flat or len(flat) % 2:
        return ()
    return tuple((flat[i], flat[i + 1]) for i in range(0, len(flat), 2))


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flatten(item)]
    return [value]


def _read_config(config_path: Path) -> tuple[dict[str, Any], dict[str, Any], Geometry]:
    """A checkpoint's `config.json`: the whole, its model section (with a family name) and
    its geometry, each refused in one line naming the file and the key: a hand-edited file
    fails here, not later in a traceback."""
    try:
        config = json.loads(config_path.read_text())
        model_config = dict(config["model"])
        if not isinstance(config["transform"], Mapping):
            raise TypeError("transform")
        geometry = Geometry.from_dict(config["geometry"], source=str(config_path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{config_path}: unreadable checkpoint config ({_config_problem(exc)})"
        ) from None
    found_family = model_config.get("family")
    if not isinstance(found_family, str):
        raise CheckpointError(
            f"{config_path}: unreadable checkpoint config (key 'model.family': expected a "
            f"model family name, found {found_family!r})"
        )
    for key in ("step", "epoch"):
        value = config.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(
                f"{config_path}: unreadable checkpoint config (key '{key}': expected a whole "
                f"number >= 0, found {value!r})"
            )
    return config, model_config, geometry


def _misfit(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """How saved tensors differ from a module's (names, then shapes), in a few words; "" when
    they fit."""
    problems = [f"'{k}' missing" for k in expected if k not in found]
    problems += [f"'{k}' not in the model" for k in found if k not in expected]
    problems += [
        f"'{k}' is {tuple(found[k].shape)} in the weights, {tuple(v.shape)} by the config"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    if not problems:
        return ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def _config_part(config_path: Path, key: str, build: Any, *args: Any) -> Any:
    """`build(*args)` of a section of `config.json` (the model, the transform), its errors
    prefixed with the file and the key they come from."""
    try:
        return build(*args)
    except CaloforgeError as exc:
        raise CheckpointError(f"{config_path}, key '{key}': {exc}") from None


def _config_problem(exc: BaseException) -> str:
    """Why a checkpoint's config.json could not be read, in one line of plain words."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not a JSON text file: {exc.reason} at byte {exc.start}"
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    if isinstance(exc, TypeError):
        return "expected a JSON object with the keys model, transform and geometry"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def summarize_checkpoint(path: str | os.PathLike[str]) -> CheckpointSummary:
    """Summarise a run folder (its best checkpoint, else its latest) or a checkpoint folder:
    family, geometry, step and epoch, the run's checkpoints and planned length, the best
    physics check, the training data and its condition ranges, parameter counts. Reads the
    config and pointers; the weights are not loaded (parameters are counted on the model the
    config builds). Raises `CheckpointError` for a folder that is neither."""
    folder = resolve_checkpoint(path)  # the path itself: `pretrained:NAME` is a name
    given = folder if str(path).startswith(PRETRAINED) else Path(path)
    config_path = folder / CONFIG
    config, model_config, geometry = _read_config(config_path)
    family = str(model_config["family"])
    found = config.get("training")
    training: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    # A run folder given, or the run folder a checkpoint given alone lies in.
    run = None if (given / CONFIG).is_file() else given
    if run is None and folder.parent.name == "checkpoints":
        parent = folder.parent.parent
        if (parent / LATEST).is_file() or (parent / BEST).is_file():
            run = parent
    notes = []
    best = None
    steps: tuple[int, ...] = ()
    latest_step = None
    # A run folder's planned length is what its latest checkpoint was trained towards (a
    # resume may have changed it since the best one), the rest what the checkpoint shown says.
    planned_by = training
    if run is not None:
        steps = tuple(step_of(f) for f in step_folders(run))
        latest = latest_checkpoint(run)
        latest_step = step_of(latest) if latest is not None else None
        if given == run and latest is not None and latest != folder:
            planned_by = _training_of(latest / CONFIG) or training
        try:
            best = json.loads((run / BEST).read_text()) if (run / BEST).is_file() else None
        except (OSError, ValueError):
            notes.append(f"{run / BEST} is unreadable")
        notes += _weight_events(run)
    data = training.get("data")
    data_paths = tuple(str(d) for d in (data if isinstance(data, list) else [data] if data else []))
    parameters: dict[str, int] = {}
    try:
        parameters = parameter_counts(build_model(family, model_config))
    except CaloforgeError as exc:
        notes.append(f"parameters not counted ({exc})")
    return CheckpointSummary(
        path=str(given),
        checkpoint=folder,
        run=run,
        family=family,
        geometry=geometry.name,
        shower_shape=tuple(geometry.shape),
        units={c.name: c.unit for c in geometry.conditions},
        step=config.get("step", 0),
        epoch=config.get("epoch", 0),
        steps=steps,
        planned={
            k: planned_by.get(k) for k in ("max_steps", "epochs", "batch_size") if k in planned_by
        },
        best=best,
        data=data_paths,
        condition_ranges={
            str(name): _ranges(value)
            for name, value in (training.get("condition_ranges") or {}).items()
        },
        parameters=parameters,
        transform=dict(config.get("transform") or {}),
        version=str(config.get("caloforge_version", "")),
        latest_step=latest_step,
        notes=tuple(notes),
    )


def _training_of(config_path: Path) -> Mapping[str, Any] | None:
    """The `training` mapping of a checkpoint's config.json, None where unreadable."""
    try:
        found = json.loads(config_path.read_text()).get("training")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, Mapping) else None


def _weight_events(run: Path) -> list[str]:
    """What the run's log says the trainer did to the weights besides training them: stage
    2 of flow-match frozen at its best check (`training.shape_patience`)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()  # training.run_log.METRICS
    except (OSError, ValueError):
        return []
    found = []
    for line in lines:
        if '"shape_frozen"' not in line:
            continue
        try:
            record = json.loads(line)
            found.append(
                f"stage 2 frozen at step {record['step']} with the weights of step "
                f"{record['best_step']} (width error {float(record['width_error']):.4g}; "
                "training.shape_patience)"
            )
        except (ValueError, KeyError, TypeError):
            continue
    return found


def print_checkpoint_summary(summary: CheckpointSummary, file: TextIO | None = None) -> None:
    """Print `summary` as a readable block (`caloforge inspect RUN`)."""
    out = sys.stdout if file is None else file
    given_checkpoint = Path(summary.path) == summary.checkpoint
    kind = "run folder"
    if given_checkpoint:
        kind = "checkpoint" + (f" of the run {summary.run}" if summary.run is not None else "")
    shape = " x ".join(str(s) for s in summary.shower_shape)
    where = summary.checkpoint.name
    if summary.run is not None:
        where = str(summary.checkpoint.relative_to(summary.run))
        best_step = summary.best.get("step") if summary.best is not None else None
        if best_step == summary.step:
            where += " (the run's best)" if given_checkpoint else " (the best)"
        elif given_checkpoint and best_step is not None:
            where += f" (the run's best is step {best_step})"
        elif not given_checkpoint:
            where += " (the latest; no best.json)"
    lines = [
        f"{summary.path} ({kind})",
        f"  family        {summary.family}",
        f"  geometry      {summary.geometry}, showers {shape}, conditions "
        + ", ".join(summary.units),
        f"  checkpoint    {where}: step {summary.step}, epoch {summary.epoch}",
    ]
    if summary.run is not None:
        kept = ", ".join(str(s) for s in summary.steps) or "none"
        lines.append(f"  steps         latest {summary.latest_step}; checkpoints kept at {kept}")
    if summary.planned:
        planned = ", ".join(f"{k} {v}" for k, v in summary.planned.items() if v is not None)
        lines.append(f"  training      {planned}")
    if summary.best is not None:
        check = summary.best.get("check") or {}
        numbers = ", ".join(
            f"{key.replace('_', ' ')} {check[key]:.4g}"
            for key in ("score", "response_error", "profile_error", "width_error", "empty_fraction")
            if isinstance(check.get(key), (int, float))
        )
        lines.append(f"  best check    step {summary.best.get('step')}: {numbers or 'n/a'}")
    elif summary.run is not None:
        lines.append("  best check    none yet (no best.json)")
    lines.append("  data          " + ("; ".join(summary.data) if summary.data else "not recorded"))
    for name, pairs in summary.condition_ranges.items():
        text = ", ".join(f"{lo:.5g} : {hi:.5g}" for lo, hi in pairs) or "n/a"
        unit = summary.units.get(name, "")
        lines.append(f"  {name:<13} {text} {unit} (training data)".rstrip())
    if not summary.condition_ranges:
        lines.append("  conditions    training ranges not recorded")
    if summary.parameters:
        counts = ", ".join(f"{role} {count:,}" for role, count in summary.parameters.items())
        lines.append(f"  parameters    {counts}")
    transform = ", ".join(f"{k}={v}" for k, v in summary.transform.items() if k != "name")
    lines.append(f"  transform     {summary.transform.get('name', '?')}({transform})")
    if summary.version:
        lines.append(f"  written by    caloforge {summary.version}")
    lines += [f"  note          {note}" for note in summary.notes]
    print("\n".join(lines), file=out)
