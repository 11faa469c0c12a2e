"""`caloforge tune`: check everything, open the study, run the trials, write what it found.

    outcome = run_tune(TuneOptions(config="flow-match", data=["showers.h5"],
                                   space="space.yaml", trials=30, out="study",
                                   budget_steps=2000))
    outcome.preset      # study/chosen.yaml, for `caloforge train --config`
    outcome.report      # study/report.html

Every input is checked before anything is written (the recipe, the space against it, the
data, the options); then the held-out showers are set aside, the workers run the trials, and
the page, `trials.json` and the chosen preset are written, each atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caloforge._files import check_output
from caloforge._processes import max_workers
from caloforge.errors import CaloforgeError
from caloforge.training.config import parse_config
from caloforge.tune import report as pages
from caloforge.tune.objectives import COSTS, objective_label
from caloforge.tune.runner import WorkerJob, load, run_workers
from caloforge.tune.space import load_space
from caloforge.tune.study import (
    HELDOUT,
    StorageSpec,
    StudySpec,
    choose,
    completed,
    counted_trials,
    front,
    open_study,
    trial_values,
    write_heldout,
)
from caloforge.tune.trial import (
    Budget,
    Pruning,
    TrialSettings,
    generate_heldout,
    read_recipe,
    trial_recipe,
)

SAMPLERS = ("auto", "nsga2", "tpe", "random")
CHOICE_RULES = ("fidelity", "balanced")
REPORTS = ("chosen", "pareto", "none")
HEADLINE_KEYS = (
    "classifier_auc_low_level",
    "classifier_auc_high_level",
    "fpd",
    "kpd",
    "projection_mse",
    "response_deviation",
    "resolution_deviation",
)


@dataclass(frozen=True)
class TuneOptions:
    """Everything `caloforge tune` can be told (the command line's options, by name)."""

    config: str
    data: Sequence[str]
    space: str
    trials: int
    out: str
    overrides: Sequence[str] = ()
    budget_steps: int | None = None
    budget_minutes: float | None = None
    check_every: int | None = None
    cost: str = "flops"
    sampler: str = "auto"
    population: int = 8
    seed: int = 0
    workers: int = 1
    storage: str | None = None
    study_name: str = "caloforge-tune"
    resume: bool = False
    heldout: int | None = None
    fidelity: Sequence[str] | None = None
    validation: str | None = None
    prune: bool = True
    prune_percentile: float = 50.0
    prune_startup: int = 2
    choose: str = "fidelity"
    reports: str = "chosen"
    device: str | None = None  # None: the recipe's training.device
    data_format: str | None = None
    timing_batch: int = 128
    progress: bool = True


@dataclass(frozen=True)
class TuneOutcome:
    out: Path
    report: Path
    summary: Path
    preset: Path | None
    chosen: int | None
    counts: dict[str, int] = field(default_factory=dict)


def _check_options(o: TuneOptions) -> None:
    def positive(name: str, value: float | None) -> None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise CaloforgeError(f"{name} must be a positive number, got {value}")

    positive("--trials", o.trials)
    positive("--workers", o.workers)
    positive("--budget-steps", o.budget_steps)
    positive("--budget-minutes", o.budget_minutes)
    positive("--check-every", o.check_every)
    positive("--population", o.population)
    if o.population < 2:  # NSGA-II breeds pairs
        raise CaloforgeError(f"--population must be at least 2, got {o.population}")
    if o.workers > max_workers():  # 100000 processes: the machine's limits first
        raise CaloforgeError(
            f"--workers {o.workers}: at most {max_workers()} (four per core of this machine)"
        )
    positive("--heldout", o.heldout)
    positive("--timing-batch", o.timing_batch)
    if o.budget_steps is None and o.budget_minutes is None:
        raise CaloforgeError(
            "give the budget of each trial: --budget-steps N and/or --budget-minutes M"
        )
    if o.cost not in (*COSTS, "none"):
        raise CaloforgeError(f"--cost must be one of {', '.join([*COSTS, 'none'])}, got {o.cost}")
    for name, value, allowed in (
        ("--sampler", o.sampler, SAMPLERS),
        ("--choose", o.choose, CHOICE_RULES),
        ("--reports", o.reports, REPORTS),
    ):
        if value not in allowed:
            raise CaloforgeError(f"{name} must be one of {', '.join(allowed)}, got {value}")
    if o.sampler == "nsga2" and o.cost == "none":
        raise CaloforgeError("--sampler nsga2 needs two objectives; --cost none leaves one")
    unknown = [k for k in o.fidelity or () if k not in HEADLINE_KEYS]
    if unknown:
        raise CaloforgeError(
            f"--fidelity: unknown metric(s) {', '.join(unknown)}; choose from "
            f"{', '.join(HEADLINE_KEYS)}"
        )
    if not 0 < o.prune_percentile <= 100:
        raise CaloforgeError(f"--prune-percentile must be in (0, 100], got {o.prune_percentile}")
    if o.prune_startup < 1:
        raise CaloforgeError(f"--prune-startup must be at least 1, got {o.prune_startup}")


def _validation_settings(path: str | None) -> dict[str, Any]:
    """The validation settings of every trial: a `caloforge validate --config` file, or the
    defaults; features in the worker's own process."""
    from caloforge.validation import ValidationConfig, load_config

    config = load_config(path) if path is not None else ValidationConfig()
    settings = dataclasses.asdict(config)
    settings["workers"] = 1
    settings["plots"] = False
    return settings


def prepare(options: TuneOptions) -> tuple[WorkerJob, StudySpec]:
    """Check every input and build the job, writing nothing."""
    from caloforge.data.io import expand_paths

    _check_options(options)
    base = read_recipe(options.config, list(options.overrides))
    space = load_space(options.space, base)
    data = [str(p.resolve()) for p in expand_paths(list(options.data))]
    out = check_output(options.out, folder=True, option="--out")
    check_every = options.check_every
    if check_every is None:
        check_every = max(1, options.budget_steps // 5) if options.budget_steps else 50
    budget = Budget(options.budget_steps, options.budget_minutes, check_every)
    validation = _validation_settings(options.validation)
    device = options.device or parse_config(base).training.device
    spec = StudySpec(
        config=options.config,
        base=base,
        space=space.to_dict(),
        data=data,
        cost=options.cost,
        sampler=options.sampler,
        population=options.population,
        seed=options.seed,
        budget=dataclasses.asdict(budget),
        fidelity_keys=None if options.fidelity is None else list(options.fidelity),
        heldout_showers=options.heldout,
        validation=validation,
    )
    settings = TrialSettings(
        base=base,
        data=tuple(data),
        heldout=str((out / HELDOUT).resolve()),
        out=str(out.resolve()),
        budget=budget,
        pruning=Pruning(
            enabled=options.prune,
            percentile=options.prune_percentile,
            startup=options.prune_startup,
            warmup=2 * check_every,  # from the second check on: the first is noisy
        ),
        cost=options.cost,
        fidelity_keys=None if options.fidelity is None else tuple(options.fidelity),
        validation=validation,
        data_format=options.data_format,
        device=device,
        timing_batch=options.timing_batch,
        progress=options.progress and options.workers == 1,
    )
    # The recipe of the space's first corner: a value the recipe refuses in combination
    # (not one by one) shows now, not in a trial.
    trial_recipe(settings, {})
    storage = StorageSpec.parse(options.storage, out)
    job = WorkerJob(spec, storage, options.study_name, options.trials, space, settings)
    return job, spec


def run_tune(options: TuneOptions) -> TuneOutcome:
    """Run (or continue) a study and write its page, `trials.json` and the chosen preset."""
    job, spec = prepare(options)
    out = Path(job.settings.out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        open_study(spec, job.storage, job.study_name, resume=options.resume, out=out)
        recipe = trial_recipe(job.settings, {})
        shown = write_heldout(
            job.settings.data,
            Path(job.settings.heldout),
            fractions=recipe.training.fractions,
            split_seed=recipe.training.split_seed,
            max_showers=options.heldout,
            data_format=options.data_format,
            min_showers=int(job.settings.validation.get("min_showers", 1)),
        )
    except BaseException:
        if created:  # a storage or held-out set that fails leaves no study folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    if options.progress:
        print(
            f"caloforge tune: study '{job.study_name}' in {job.storage.describe()}; "
            f"{shown} held-out showers; objectives: "
            + ", ".join(objective_label(o) for o in spec.objectives),
            file=sys.stderr,
        )
    run_workers(job, options.workers, progress=options.progress)
    return finish(job, options)


def _regenerate_and_validate(job: WorkerJob, number: int, values: dict[str, Any]) -> None:
    """The full `caloforge validate` report (with plots) of one trial, in its run folder."""
    from caloforge.models.checkpoint import resolve_checkpoint
    from caloforge.validation import ValidationConfig, validate

    run_dir = Path(job.settings.out) / "trials" / f"{number:04d}"
    folder = run_dir / "validation"
    if (folder / "index.html").is_file():
        return
    generated = run_dir / "heldout-generated.h5"
    seed = trial_recipe(job.settings, values).training.seed
    try:
        generate_heldout(resolve_checkpoint(run_dir), generated, job.settings, seed)
        config = ValidationConfig(
            **{
                **job.settings.validation,
                "plots": True,
                "labels": ("held-out", f"trial {number}"),
            }
        )
        validate(job.settings.heldout, generated, folder, config)
    finally:
        generated.unlink(missing_ok=True)


def finish(job: WorkerJob, options: TuneOptions) -> TuneOutcome:
    """Choose, validate the chosen (and Pareto) trials in full, write the page and preset."""
    from caloforge.models.checkpoint import CheckpointError

    study, _ = load(job)
    spec = job.spec
    out = Path(job.settings.out)
    done = completed(study)
    chosen = choose(done, spec.directions, options.choose)
    reported = []
    if options.reports == "pareto":
        reported = front(done, spec.directions)
    elif options.reports == "chosen" and chosen is not None:
        reported = [chosen]
    for trial in reported:
        if options.progress:  # showers, metrics and plots: a minute on 2 cores
            print(
                f"caloforge tune: the full validation report of trial {trial.number} ...",
                file=sys.stderr,
                flush=True,
            )
        with contextlib.suppress(CheckpointError):  # its run folder removed by hand
            _regenerate_and_validate(job, trial.number, trial_values(trial, job.space.parameters))
    preset, text = None, ""
    if chosen is not None:
        objectives = ", ".join(
            f"{objective_label(n)} {v:.4g}"
            for n, v in zip(spec.objectives, chosen.values, strict=True)
        )
        header = (
            f"Chosen by caloforge tune: trial {chosen.number} of study '{job.study_name}' "
            f"({objectives}).\nFrom {spec.config} with the searched entries set; each trial "
            f"trained {_budget_words(job.settings.budget)} on {', '.join(spec.data)}."
        )
        text = pages.preset_text(spec, trial_values(chosen, job.space.parameters), header)
        preset = pages.write_preset(out / pages.PRESET, text)
    rows, done, optimal = pages.trial_rows(study, spec, job.space, chosen, out)
    counts: dict[str, int] = {}
    for t in counted_trials(study):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    importance_rows, importance_png, reason = pages.importances(study, spec)
    figures = []
    if done:
        figures.append(
            pages.Figure(
                "Fidelity against cost" if len(spec.objectives) > 1 else "Fidelity by trial",
                "Completed trials; the Pareto front joined; the chosen trial starred.",
                pages.front_figure(done, optimal, chosen, spec),
            )
        )
        png = pages.parameter_figure(done, job.space)
        if png:
            figures.append(pages.Figure("Each parameter", "Fidelity of each completed trial.", png))
        if importance_png:
            figures.append(pages.Figure("Parameter importance", "", importance_png))
    page = pages.Page(
        title=f"caloforge tune: {spec.base['model']['family']}, study '{job.study_name}'",
        spec=spec,
        storage=job.storage.describe(),
        counts=counts,
        objectives=[objective_label(o) for o in spec.objectives],
        chosen=next((r for r in rows if r.chosen), None),
        preset_text=text,
        figures=figures,
        importances=importance_rows,
        importance_reason=reason,
        trials=rows,
        chosen_plots=[] if chosen is None else pages.chosen_plots(out, chosen.number),
        created=pages.now(),
    )
    report = pages.write_page(out / pages.PAGE, page)
    summary = out / pages.SUMMARY
    from caloforge._files import atomic_output

    with atomic_output(summary) as partial:
        partial.write_text(pages.summary_json(page))
    return TuneOutcome(
        out=out,
        report=report,
        summary=summary,
        preset=preset,
        chosen=None if chosen is None else chosen.number,
        counts=counts,
    )


def _budget_words(budget: Budget) -> str:
    parts = []
    if budget.steps is not None:
        parts.append(f"{budget.steps} steps")
    if budget.minutes is not None:
        parts.append(f"{budget.minutes:g} minutes")
    return " or ".join(parts)
