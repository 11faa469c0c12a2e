"""`caloforge tune`."""

from __future__ import annotations

import argparse

from caloforge.cli.common import DefaultsFormatter, seed


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_tune(sub: argparse._SubParsersAction) -> None:
    from caloforge.training.config import preset_names

    p = sub.add_parser(
        "tune",
        help="search a recipe's hyper-parameters and architecture",
        formatter_class=DefaultsFormatter,
        description=(
            "Search entries of a training recipe (learning rates, batch size, loss weights, "
            "transform parameters, network widths, solver steps...) declared in a YAML search "
            "space, trading the fidelity on held-out showers (the headline of caloforge "
            "validate) against the generator's cost with NSGA-II (Optuna; pip install "
            "'caloforge[tune]'). Writes OUT/report.html and OUT/chosen.yaml, a preset for "
            "caloforge train --config. KEY=VALUE arguments override the recipe as in "
            "caloforge train."
        ),
    )
    p.add_argument(
        "--config", required=True, help=f"YAML recipe, or a preset: {', '.join(preset_names())}"
    )
    p.add_argument("--data", required=True, nargs="+", help="shower file(s) or glob")
    p.add_argument("--format", help="input format (default: detected)")
    p.add_argument("--space", required=True, help="search space YAML (parameters: {path: ...})")
    p.add_argument("--trials", required=True, type=int, help="trials of the study in all")
    p.add_argument("--out", required=True, help="study folder (storage, trials, report)")
    budget = p.add_argument_group("budget and pruning")
    budget.add_argument(
        "--budget-steps",
        type=int,
        help="training steps of each trial (give this, --budget-minutes or both)",
    )
    budget.add_argument(
        "--budget-minutes", type=float, help="training minutes of each trial (checked at checks)"
    )
    budget.add_argument(
        "--check-every",
        type=int,
        help="steps between physics checks, where trials are pruned (default: budget / 5)",
    )
    budget.add_argument("--no-prune", action="store_true", help="train every trial to its budget")
    budget.add_argument(
        "--prune-percentile",
        type=float,
        default=50.0,
        help="prune a trial whose best check is worse than this percentile of the finished "
        "trials' at the same step (default 50: the median)",
    )
    budget.add_argument(
        "--prune-startup",
        type=int,
        default=2,
        help="finished trials needed before any pruning",
    )
    goal = p.add_argument_group("objectives and sampler")
    goal.add_argument(
        "--cost",
        default="flops",
        choices=("flops", "speed", "none"),
        help="the second objective: FLOPs per shower (counted), measured showers/s, or none "
        "(fidelity alone, TPE)",
    )
    goal.add_argument(
        "--fidelity",
        type=_names,
        help="headline metrics of the fidelity, comma-separated (default: all)",
    )
    goal.add_argument(
        "--validation",
        help="validation settings YAML, as caloforge validate --config takes (default: "
        "validate's own defaults)",
    )
    goal.add_argument(
        "--heldout",
        type=int,
        help="at most this many held-out (test split) showers (default: the whole split)",
    )
    goal.add_argument(
        "--sampler",
        default="auto",
        choices=("auto", "nsga2", "tpe", "random"),
        help="auto: NSGA-II for two objectives, TPE for one",
    )
    goal.add_argument("--population", type=int, default=8, help="NSGA-II population")
    goal.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="the sampler's seed (the same study draws the same trials)",
    )
    goal.add_argument(
        "--choose",
        default="fidelity",
        choices=("fidelity", "balanced"),
        help="the chosen trial on the Pareto front: best fidelity, or nearest the ideal "
        "corner with both objectives scaled to [0, 1]",
    )
    goal.add_argument(
        "--reports",
        default="chosen",
        choices=("chosen", "pareto", "none"),
        help="full validation reports (with plots) for these trials (default: chosen)",
    )
    run = p.add_argument_group("running")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    run.add_argument(
        "--storage",
        help="Optuna storage: a database URL (sqlite:///..., postgresql://...) or a journal "
        "file path on a shared disk (default: sqlite OUT/study.db)",
    )
    run.add_argument(
        "--study-name", default="caloforge-tune", help="the study's name in its storage"
    )
    run.add_argument(
        "--resume", action="store_true", help="continue the study (or join it from another machine)"
    )
    run.add_argument(
        "--device",
        help="cpu | cuda | cuda:N | auto: where trials train, generate and are timed "
        "(default: the recipe's training.device)",
    )
    run.add_argument(
        "--timing-batch", type=int, default=128, help="batch size of generation and timing"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="recipe entries by dotted path, values in YAML, as caloforge train takes them",
    )
    p.set_defaults(handler=_tune)


def _tune(args: argparse.Namespace) -> int:
    from caloforge.tune import TuneOptions, run_tune

    outcome = run_tune(
        TuneOptions(
            config=args.config,
            data=args.data,
            space=args.space,
            trials=args.trials,
            out=args.out,
            overrides=args.overrides,
            budget_steps=args.budget_steps,
            budget_minutes=args.budget_minutes,
            check_every=args.check_every,
            cost=args.cost,
            sampler=args.sampler,
            population=args.population,
            seed=args.seed,
            workers=args.workers,
            storage=args.storage,
            study_name=args.study_name,
            resume=args.resume,
            heldout=args.heldout,
            fidelity=args.fidelity,
            validation=args.validation,
            prune=not args.no_prune,
            prune_percentile=args.prune_percentile,
            prune_startup=args.prune_startup,
            choose=args.choose,
            reports=args.reports,
            device=args.device,
            data_format=args.format,
            timing_batch=args.timing_batch,
        )
    )
    counts = ", ".join(f"{n} {state}" for state, n in outcome.counts.items())
    print(f"study: {counts}; report: {outcome.report}")
    if outcome.preset is None:
        print("no trial completed: no configuration chosen (see the report)")
        return 1
    print(f"chosen: trial {outcome.chosen}, preset {outcome.preset}")
    return 0
