"""`caloforge train`."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from caloforge.cli.common import DefaultsFormatter
from caloforge.errors import CaloforgeError

if TYPE_CHECKING:
    from caloforge.training.config import RunConfig


def add_train(sub: argparse._SubParsersAction) -> None:
    from caloforge.training.config import preset_names

    p = sub.add_parser(
        "train",
        help="train a model on shower files",
        formatter_class=DefaultsFormatter,
        description=(
            "Train a model family on shower files. The config (configs/<family>.yaml) holds "
            "the model, the preprocessing and the training recipe; KEY=VALUE arguments "
            "override entries by dotted path, e.g. training.batch_size=64 "
            "training.loss.energy=0.2. With --resume the run in --out continues as it was "
            "configured: its saved config and data, with only the KEY=VALUE entries given "
            "changed (e.g. training.max_steps=2000 to train longer). Runs as one process, as "
            "--processes N ranks on this machine, or under torchrun for data-parallel "
            "training on several GPUs or nodes (torchrun --nproc-per-node N -m caloforge "
            "train ...)."
        ),
    )
    p.add_argument(
        "--config",
        help=f"YAML training config, or a preset name: {', '.join(preset_names())}; "
        "required for a new run (with --resume: the run's own, saved in its checkpoint)",
    )
    p.add_argument(
        "--data",
        nargs="+",
        help="shower file(s) or glob; required for a new run (with --resume: the files the "
        "run was trained on)",
    )
    p.add_argument("--format", help="input format (default: detected)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    p.add_argument(
        "--processes",
        default="1",
        metavar="N",
        help="data-parallel ranks to start on this machine, as torchrun would, each on its "
        "share of the cores; 'auto': one per core (at most 8). On a CPU several ranks "
        "use the cores better than one process (default: 1)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config entries by dotted path, values in YAML, e.g. training.max_steps=400 "
        "(every entry: src/caloforge/training/config.py)",
    )
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from caloforge.devices import shutdown_distributed
    from caloforge.training.launch import launch_ranks, resolve_processes
    from caloforge.training.trainer import Trainer

    processes = resolve_processes(args.processes)
    # the ranks started below say it themselves (rank 0), so the launcher does not
    announce = processes == 1 and os.environ.get("RANK", "0") == "0"
    config, data = _resume_settings(args, announce) if args.resume else _new_settings(args)
    if processes > 1:  # the settings are checked above, once, before any rank starts
        return launch_ranks(_without_processes(args.argv), processes)
    try:
        trainer = Trainer(
            config, data, args.out, resume=args.resume, progress=True, data_format=args.format
        )
        start = trainer.state.step  # a resumed run's step
        result = trainer.fit()
    finally:
        shutdown_distributed()
    if trainer.context.is_main:
        check = result.last_check
        summary = (
            f" (last check: response error {check.response_error:.3f}, profile error "
            f"{check.profile_error:.3f}, width error {check.width_error:.3f})"
            if check is not None
            else ""
        )
        if result.steps == start and args.resume:  # nothing was left to train
            print(
                f"nothing to train: {args.out} is at step {start}, the end its training.max_steps "
                "and training.epochs set; give training.max_steps=N (larger) to train on"
            )
        elif start:
            print(
                f"trained {result.steps - start} steps, from step {start} to {result.steps}, "
                f"{result.epochs_completed} epoch(s) in all{summary}"
            )
        else:
            print(f"trained {result.steps} steps, {result.epochs_completed} epoch(s){summary}")
        print(f"run folder: {result.run_dir}; best checkpoint: {result.best_checkpoint}")
    return 0


def _without_processes(argv: list[str]) -> list[str]:
    """The `train` arguments for each rank: the same, less --processes."""
    words = argv[argv.index("train") + 1 :]
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--processes":
            skip = True
        elif not word.startswith("--processes="):
            kept.append(word)
    return kept


def _new_settings(args: argparse.Namespace) -> tuple[RunConfig, list[str]]:
    from caloforge.training.config import load_config

    for option, value in (("--config", args.config), ("--data", args.data)):
        if not value:
            raise CaloforgeError(f"{option} is required for a new run (or give --resume)")
    return load_config(args.config, args.overrides, option="--config"), args.data


def _resume_settings(args: argparse.Namespace, announce: bool) -> tuple[RunConfig, list[str]]:
    """The run's own configuration and data, changed only where KEY=VALUE says; `announce`
    prints what is resumed."""
    from caloforge.training.checkpoint import saved_run
    from caloforge.training.config import load_config, resumed_config

    folder, saved, saved_data = saved_run(args.out)
    config = resumed_config(saved, args.overrides, source=f"{folder}/config.json")
    if args.config is not None:
        given = load_config(args.config, option="--config").family
        if given != config.family:
            raise CaloforgeError(
                f"--config {args.config} is a {given} config but {args.out} is a "
                f"{config.family} run; --resume continues the run with its own configuration "
                "(leave --config out, or start a new run in another --out)"
            )
    step = int(folder.name.rpartition("-")[2]) if folder.name.startswith("step-") else 0
    max_steps = config.training.max_steps
    if max_steps is not None and max_steps < step:
        raise CaloforgeError(
            f"training.max_steps={max_steps}: {args.out} is already at step {step} "
            f"({folder.name}), past it; give a larger training.max_steps to train on"
        )
    data = args.data or saved_data
    if not data:
        raise CaloforgeError(
            f"{args.out}: the run does not record its training data (made before caloforge "
            "recorded it): give --data"
        )
    changed = f", changed: {' '.join(args.overrides)}" if args.overrides else ""
    if args.config is not None:
        changed += f" (--config {args.config} is not read again)"
    if announce:
        print(f"caloforge train: resuming {args.out} from {folder.name}, as configured{changed}")
    return config, data
