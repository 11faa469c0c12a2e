"""`caloforge train`."""

from __future__ import annotations

import argparse

from caloforge.errors import CaloforgeError


def add_train(sub: argparse._SubParsersAction) -> None:
    from caloforge.training.config import preset_names

    p = sub.add_parser(
        "train",
        help="train a model on shower files",
        description=(
            "Train a model family on shower files. The config (configs/<family>.yaml) holds "
            "the model, the preprocessing and the training recipe; KEY=VALUE arguments "
            "override entries by dotted path, e.g. training.batch_size=64 "
            "training.loss.energy=0.2. Runs as one process or under torchrun for "
            "data-parallel training: torchrun --nproc-per-node N -m caloforge train ..."
        ),
    )
    p.add_argument(
        "--config",
        required=True,
        help=f"YAML training config, or a preset name: {', '.join(preset_names())}",
    )
    p.add_argument("--data", required=True, nargs="+", help="shower file(s) or glob")
    p.add_argument("--format", help="input format (default: detected)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from caloforge.devices import shutdown_distributed
    from caloforge.training.config import load_config
    from caloforge.training.trainer import Trainer

    try:
        config = load_config(args.config, args.overrides)
    except UnicodeDecodeError as exc:  # a binary file given as the config
        raise CaloforgeError(
            f"--config {args.config}: not a YAML text file ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        trainer = Trainer(
            config, args.data, args.out, resume=args.resume, progress=True, data_format=args.format
        )
        result = trainer.fit()
    finally:
        shutdown_distributed()
    if trainer.context.is_main:
        check = result.last_check
        summary = (
            f" (last check: response error {check.response_error:.3f}, profile error "
            f"{check.profile_error:.3f})"
            if check is not None
            else ""
        )
        print(f"trained {result.steps} steps, {result.epochs_completed} epoch(s){summary}")
        print(f"run folder: {result.run_dir}; best checkpoint: {result.best_checkpoint}")
    return 0
