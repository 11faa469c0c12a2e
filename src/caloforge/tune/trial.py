"""One trial of a study: the recipe with the trial's values, trained within the budget (stopped
early when its physics checks fall behind the finished trials'), then judged on the held-out
showers and timed.

The trial trains with `caloforge.training.Trainer` in its own run folder
(`OUT/trials/NNNN`), generates showers for the held-out conditions from its best checkpoint
with `caloforge.generation.generate_to_file`, compares them with the held-out showers with
`caloforge.validation.compare` (the metrics of `caloforge validate`), and measures the
generator's cost (`objectives`). Everything it finds goes into the trial's user attributes
in the study's storage, so a report can be drawn from the storage alone.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloforge.errors import CaloforgeError
from caloforge.training.config import RunConfig, apply_overrides, parse_config
from caloforge.training.physics_check import PhysicsCheck
from caloforge.training.trainer import Trainer, TrainingCollapsedError, TrainResult
from caloforge.tune.objectives import fidelity, generation_rate, gflop_per_shower
from caloforge.tune.space import SearchSpace, with_values
from caloforge.validation.timing import StageTimer

# Epochs set when the budget is in steps: `training.max_steps` then ends every trial.
_UNBOUNDED_EPOCHS = 1_000_000


class TrialStoppedError(Exception):
    """Raised inside training to stop a trial that its physics check condemns (`reason`)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Budget:
    """How long each trial trains: steps (`training.max_steps`) and/or wall-clock minutes
    (checked at each physics check, so a trial overruns by at most one check's steps); and
    every how many steps the physics check runs (the pruning's chance to act)."""

    steps: int | None = None
    minutes: float | None = None
    check_every: int = 50

    def overrides(self) -> dict[str, Any]:
        """The recipe entries the budget sets (left out of the chosen preset)."""
        # keep_checkpoints 1: the latest and the best (always kept) are all a trial needs
        out: dict[str, Any] = {"training.check_every": self.check_every}
        out["training.keep_checkpoints"] = 1
        if self.steps is not None:
            out["training.max_steps"] = self.steps
        out["training.epochs"] = _UNBOUNDED_EPOCHS
        return out


@dataclass(frozen=True)
class Pruning:
    """Stop a trial whose best physics-check score so far is worse than the `percentile` of
    the finished trials' scores at the same step (at least `startup` of them, from step
    `warmup` on); a collapsed generator (only empty showers) stops at once."""

    enabled: bool = True
    percentile: float = 50.0
    startup: int = 2
    warmup: int = 0


@dataclass(frozen=True)
class TrialSettings:
    """Everything a worker needs to run trials (plain values: it crosses process bounds)."""

    base: dict[str, Any]  # the raw recipe with the command line's overrides
    data: tuple[str, ...]
    heldout: str  # the held-out showers' file
    out: str  # the study folder
    budget: Budget
    pruning: Pruning = field(default_factory=Pruning)
    cost: str = "flops"
    fidelity_keys: tuple[str, ...] | None = None
    validation: dict[str, Any] = field(default_factory=dict)  # ValidationConfig settings
    data_format: str | None = None
    device: str = "auto"  # where trials train, generate and are timed
    timing_batch: int = 128
    progress: bool = False


def read_recipe(config: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The raw recipe mapping of a preset name or YAML file, with KEY=VALUE overrides, checked
    as `caloforge train --config` checks it."""
    from caloforge.config import read_yaml
    from caloforge.training.config import PRESET_DIR, TrainConfigError, preset_names

    path = Path(config)
    if not path.exists() and config in preset_names():
        path = PRESET_DIR / f"{config}.yaml"
    if not path.exists():
        raise TrainConfigError(
            f"{path}: config file not found (presets: {', '.join(preset_names())})"
        )
    raw = read_yaml(path, "config file", TrainConfigError) or {}
    if not isinstance(raw, Mapping):
        raise TrainConfigError(
            f"{path}: expected a mapping of sections (model, training, ...) at the top level, "
            f"found a {type(raw).__name__}"
        )
    raw = apply_overrides(dict(raw), list(overrides))
    parse_config(raw, source=str(path))
    return raw


def trial_recipe(settings: TrialSettings, values: Mapping[str, Any]) -> RunConfig:
    """The checked run config of a trial: the base recipe, the trial's values, the budget
    and the study's device."""
    overrides = {**settings.budget.overrides(), "training.device": settings.device}
    raw = with_values(with_values(settings.base, values), overrides)
    return parse_config(raw, source="trial recipe")


def prune_reason(
    scores: Sequence[tuple[int, float]],
    finished: Sequence[Sequence[tuple[int, float]]],
    pruning: Pruning,
) -> str | None:
    """Why a trial should stop now, or None. `scores`: its (step, physics-check score) so
    far, the last one just made; `finished`: the same for each finished trial."""
    step, score = scores[-1]
    if not math.isfinite(score):
        return f"physics check at step {step}: score {score}"
    if not pruning.enabled or step < pruning.warmup:
        return None
    best = min(s for _, s in scores)
    references = []
    for checks in finished:
        earlier = [s for at, s in checks if at <= step]
        if earlier:
            references.append(earlier[-1])
    if len(references) < max(1, pruning.startup):
        return None
    cut = float(np.percentile(references, pruning.percentile))
    if best > cut:
        return (
            f"physics check at step {step}: best score {best:.4g} worse than the "
            f"{pruning.percentile:g}th percentile {cut:.4g} of {len(references)} finished trials"
        )
    return None


class TrialTrainer(Trainer):
    """The trainer of one trial: after each physics check it reports to the study (and is
    stopped by `on_check` raising `TrialStoppedError`), and once `minutes` of training have
    passed (counted from `fit`, not from the set-up) it ends the run after one more step,
    which ends with the usual last check and checkpoint."""

    def __init__(
        self,
        *args: Any,
        on_check: Callable[[int, PhysicsCheck], None],
        minutes: float | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_check = on_check
        self.minutes = minutes
        self.deadline: float | None = None

    def fit(self) -> TrainResult:
        if self.minutes is not None:
            self.deadline = time.monotonic() + 60.0 * self.minutes
        return super().fit()

    def physics_check(self) -> PhysicsCheck | None:
        check = super().physics_check()
        if check is not None:
            if check.collapsed:
                raise TrialStoppedError(f"the generator collapsed (step {self.state.step})")
            self.on_check(self.state.step, check)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.total_steps = min(self.total_steps, self.state.step + 1)
        return check


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """The trial's value of every entry of the space, sampled by the study's sampler."""
    values = {}
    for p in space.parameters:
        if p.kind == "choice":
            sampled = trial.suggest_categorical(p.path, list(p.labels))
        elif p.kind == "int":
            assert p.low is not None and p.high is not None
            step = int(p.step) if p.step is not None else 1
            sampled = trial.suggest_int(p.path, int(p.low), int(p.high), step=step, log=p.log)
        else:
            assert p.low is not None and p.high is not None
            sampled = trial.suggest_float(p.path, p.low, p.high, log=p.log, step=p.step)
        values[p.path] = p.value_of(sampled)
    return values


def generate_heldout(checkpoint: Path, output: Path, settings: TrialSettings, seed: int) -> None:
    """Showers of a checkpoint for the held-out showers' conditions, one to one, with the
    eager backend (the model itself, not a faster approximation of it). The held-out showers
    come from the data the model trained on, so the few at the edge of its training range
    are expected, not warned about."""
    from caloforge.generation.run import OutsideTrainingRangeWarning, generate_to_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutsideTrainingRangeWarning)
        generate_to_file(
            checkpoint,
            output,
            conditions_from=settings.heldout,
            seed=seed,
            device=settings.device,
            batch_size=settings.timing_batch,
            backend="eager",
            progress=settings.progress,
        )


def run_trial(
    trial: Any,
    space: SearchSpace,
    settings: TrialSettings,
    finished_checks: Callable[[], list[list[tuple[int, float]]]],
) -> list[float]:
    """Train, judge and time one trial; returns its objective values (fidelity, then the
    cost unless none). Raises `TrialStoppedError` when pruned, `CaloforgeError` when the recipe
    or the run fails (a bad combination of values, a diverged model)."""
    from caloforge.data.io import open_showers
    from caloforge.generation.pipeline import ShowerPipeline
    from caloforge.models.checkpoint import resolve_checkpoint
    from caloforge.validation import ValidationConfig, compare

    values = suggest(trial, space)
    trial.set_user_attr("recipe_values", _jsonable(values))
    config = trial_recipe(settings, values)
    run_dir = Path(settings.out) / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir.relative_to(settings.out)))
    checks: list[tuple[int, float]] = []

    def on_check(step: int, check: PhysicsCheck) -> None:
        checks.append((step, float(check.score)))
        trial.set_user_attr("checks", _jsonable(checks))
        reason = prune_reason(checks, finished_checks(), settings.pruning)
        if reason is not None:
            raise TrialStoppedError(reason)

    start = time.monotonic()
    trainer = TrialTrainer(
        config,
        list(settings.data),
        run_dir,
        progress=settings.progress,
        data_format=settings.data_format,
        on_check=on_check,
        minutes=settings.budget.minutes,
    )
    try:
        result = trainer.fit()
    except TrainingCollapsedError as exc:
        raise TrialStoppedError(str(exc)) from None
    finally:
        trial.set_user_attr("train_seconds", time.monotonic() - start)
        trial.set_user_attr("steps", trainer.state.step)
    timer = StageTimer()

    def lap(stage: str) -> None:
        timer.lap(stage)
        trial.set_user_attr("seconds", timer.timings)

    def say(doing: str) -> None:  # the stages after training take a minute on 2 cores
        if settings.progress:
            print(f"caloforge tune: trial {trial.number}: {doing} ...", flush=True)

    checkpoint = resolve_checkpoint(run_dir)
    trial.set_user_attr("checkpoint", str(checkpoint.relative_to(settings.out)))
    trial.set_user_attr("steps", result.steps)

    generated = run_dir / "heldout-generated.h5"
    seed = config.training.seed
    say("showers for the held-out conditions")
    generate_heldout(checkpoint, generated, settings, seed)
    lap("generate")
    say("validating them against the held-out showers")
    try:
        validation = ValidationConfig(**{**settings.validation, "plots": False})
        with contextlib.ExitStack() as stack:
            reference = open_showers(settings.heldout)
            stack.callback(reference.close)
            ours = open_showers(generated)
            stack.callback(ours.close)
            compared = compare(reference, ours, validation)
    finally:
        generated.unlink(missing_ok=True)
    lap("validate")
    score = fidelity(compared.headline, settings.fidelity_keys)
    trial.set_user_attr("fidelity_parts", _jsonable(score.parts))
    trial.set_user_attr(
        "headline",
        [
            {
                "key": h.key,
                "title": h.title,
                "value": _jsonable(h.value),
                "error": _jsonable(h.error),
                "tolerance": h.tolerance,
                "verdict": h.verdict,
                "text": h.value_text(),
            }
            for h in compared.headline
        ],
    )

    say("the generator's cost (FLOPs, showers/s)")
    pipeline = ShowerPipeline.from_checkpoint(checkpoint, device=settings.device)
    with contextlib.closing(open_showers(settings.heldout)) as reference:
        conditions = {k: v[: settings.timing_batch] for k, v in reference.conditions.items()}
    rate = generation_rate(pipeline, conditions, batch_size=settings.timing_batch, seed=seed)
    flops = gflop_per_shower(pipeline, conditions)
    lap("cost")
    trial.set_user_attr("showers_per_s", rate)
    trial.set_user_attr("gflop_per_shower", flops)
    if not math.isfinite(score.score):
        raise CaloforgeError(
            "no headline metric of the validation could be judged on the held-out showers "
            f"(rows: {', '.join(h.key for h in compared.headline)}); hold out more showers"
        )
    out = [score.score]
    if settings.cost == "flops":
        out.append(flops)
    elif settings.cost == "speed":
        out.append(rate)
    return out
