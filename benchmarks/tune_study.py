"""Issue 19's target study: `caloforge tune` on flow-match (clic-25), then the chosen preset
against the family's default preset at the same training budget, on showers no part of the
study has seen.

Stages, each kept in OUT and skipped (or continued) when run again, so a killed run resumes:

1. data: `--n` clic-25 electrons, 10-200 GeV (seed 1), the study's data (its recipe's test
   split is what the trials are judged on); and `--final` independent showers (seed 2) for the
   final comparison, which neither the trials nor the choice ever see.
2. study: `--trials` trials of `--budget-steps` steps each over the space written to
   OUT/space.yaml (learning rate, batch size, warm-up, the widths and depths of both stages,
   the solver steps of both stages, the EMA), fidelity against FLOPs per shower, NSGA-II;
   continued with --resume when OUT/study holds it.
3. compare: the default preset and OUT/study/chosen.yaml, each trained `--budget-steps`
   steps on the same data and seed (resumed from their checkpoints), generate showers for the
   final set's conditions, judged with `caloforge.validation.compare` (the headline of
   `caloforge validate`) and the study's fidelity; the cost as FLOPs per shower and
   showers/s, the two models timed interleaved in one process (medians). Written to
   OUT/comparison.json and printed as a Markdown table.

    python benchmarks/tune_study.py --out bench-runs/tune-fm                # the full study
    python benchmarks/tune_study.py --out /tmp/tune-smoke --smoke           # 2 tiny trials
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloforge.data.io import open_showers
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.generation.run import generate_to_file
from caloforge.models.checkpoint import latest_checkpoint, resolve_checkpoint
from caloforge.simulation.run import simulate_to_file
from caloforge.training.config import load_config
from caloforge.training.trainer import Trainer
from caloforge.tune import TuneOptions, run_tune
from caloforge.tune.objectives import fidelity, gflop_per_shower
from caloforge.validation import ValidationConfig, compare

FAMILY = "flow-match"
SPACE = """\
# issue 19's study on flow-match (benchmarks/tune_study.py)
parameters:
  training.optimizer.lr_generator: {low: 2.0e-4, high: 3.0e-3, log: true}
  training.batch_size: {choices: [64, 128, 256]}
  training.optimizer.warmup_steps: {choices: [0, 50, 200]}
  model.energy_hidden: {choices: [64, 128, 192]}
  model.energy_blocks: {low: 1, high: 4}
  model.shape_hidden: {choices: [128, 256, 384]}
  model.shape_blocks: {low: 1, high: 3}
  model.energy_steps: {choices: [8, 16, 24]}
  model.shape_steps: {low: 2, high: 6}
  model.ema_decay: {choices: [0.0, 0.99, 0.999]}
"""
# The smoke run: two trials of a few steps, small sets, the same code path.
SMOKE = {"n": 400, "final": 200, "trials": 2, "budget_steps": 6, "heldout": 40}
SMOKE_VALIDATION = "subsample: 40\nssim_pairs: 20\nmin_showers: 20\nclassifier_showers: 200\n"
SMOKE_OVERRIDES = ["training.check_showers=32", "model.fit_showers=128"]


def simulate(path: Path, n: int, seed: int) -> Path:
    if not path.is_file():
        print(f"simulating {n} clic-25 showers (seed {seed}) into {path}", flush=True)
        simulate_to_file(path, geometry="clic-25", n=n, energy=(10.0, 200.0), seed=seed)
    return path


def train_for_budget(config: str, data: Path, run: Path, steps: int, overrides: list[str]) -> Path:
    """Train `config` for exactly `steps` steps (the study's budget), continuing a run that
    a kill interrupted; returns the run's best checkpoint (else its latest)."""
    budget = [f"training.max_steps={steps}", "training.epochs=1000000"]
    recipe = load_config(config, [*overrides, *budget])
    resume = latest_checkpoint(run) is not None  # a finished run resumes to no step at all
    print(f"training {config} for {steps} steps in {run}", flush=True)
    Trainer(recipe, data, run, resume=resume, progress=True).fit()
    return resolve_checkpoint(run)


def judge(
    checkpoint: Path, final: Path, out: Path, validation: ValidationConfig, seed: int
) -> dict[str, Any]:
    """Headline metrics and fidelity of a checkpoint's showers for the final set's conditions."""
    generated = out / "final-generated.h5"
    generated.unlink(missing_ok=True)
    generate_to_file(checkpoint, generated, conditions_from=final, seed=seed, backend="eager")
    try:
        with contextlib.ExitStack() as stack:
            reference = stack.enter_context(contextlib.closing(open_showers(final)))
            ours = stack.enter_context(contextlib.closing(open_showers(generated)))
            result = compare(reference, ours, validation)
    finally:
        generated.unlink(missing_ok=True)
    score = fidelity(result.headline)
    return {
        "fidelity": score.score,
        "fidelity_parts": score.parts,
        "headline": {
            h.key: {
                "value": h.value,
                "error": h.error,
                "text": h.value_text(),
                "verdict": h.verdict,
            }
            for h in result.headline
        },
    }


def interleaved_rates(
    checkpoints: dict[str, Path], final: Path, batch: int, repeats: int
) -> dict[str, float]:
    """Showers/s of each model, timed in turn (A B A B ...) in this process: medians."""
    pipelines = {k: ShowerPipeline.from_checkpoint(v) for k, v in checkpoints.items()}
    with contextlib.closing(open_showers(final)) as source:
        conditions = {k: np.asarray(v[:batch]) for k, v in source.conditions.items()}
    n = len(conditions["energy"])
    times: dict[str, list[float]] = {k: [] for k in pipelines}
    for pipeline in pipelines.values():  # warm-up
        pipeline(conditions, generator=torch.Generator().manual_seed(0))
    for _ in range(repeats):
        for name, pipeline in pipelines.items():
            start = time.perf_counter()
            pipeline(conditions, generator=torch.Generator().manual_seed(0))
            times[name].append(time.perf_counter() - start)
    return {k: n / statistics.median(v) for k, v in times.items()}


def markdown(doc: dict[str, Any]) -> str:
    keys = list(doc["models"]["default"]["headline"])  # the same keys for every model
    lines = [
        "| | " + " | ".join(["fidelity", *keys, "GFLOP/shower", "showers/s"]) + " |",
        "|---" * (len(keys) + 4) + "|",
    ]
    for name, m in doc["models"].items():
        cells = [f"{m['fidelity']:.3g}", *(m["headline"][k]["text"] for k in keys)]
        cells += [f"{m['gflop_per_shower']:.3g}", f"{m['showers_per_s']:.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--n", type=int, default=6000, help="showers of the study's data")
    parser.add_argument("--final", type=int, default=2000, help="showers of the final set")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--budget-steps", type=int, default=500)
    parser.add_argument("--heldout", type=int, default=600, help="held-out showers per trial")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per model")
    parser.add_argument("--smoke", action="store_true", help="2 tiny trials: the code path")
    parser.add_argument(
        "--control-ema",
        type=float,
        default=0.99,
        help="also compare the default with only this EMA decay (none: --control-ema -1)",
    )
    args = parser.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.control_ema is not None and args.control_ema < 0:
        args.control_ema = None
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = simulate(out / "data" / "study.h5", args.n, seed=1)
    final = simulate(out / "data" / "final.h5", args.final, seed=2)
    space = out / "space.yaml"
    space.write_text(SPACE)
    overrides = SMOKE_OVERRIDES if args.smoke else []
    validation_file = None
    validation = ValidationConfig(workers=1, plots=False, subsample=min(2000, args.final))
    if args.smoke:
        validation_file = out / "validation.yaml"
        validation_file.write_text(SMOKE_VALIDATION)
        validation = ValidationConfig(
            workers=1, plots=False, subsample=40, ssim_pairs=20, min_showers=20
        )

    study = out / "study"
    outcome = run_tune(
        TuneOptions(
            config=FAMILY,
            data=[str(data)],
            space=str(space),
            trials=args.trials,
            out=str(study),
            overrides=overrides,
            budget_steps=args.budget_steps,
            heldout=args.heldout,
            validation=None if validation_file is None else str(validation_file),
            workers=args.workers,
            resume=(study / "study.db").is_file(),
        )
    )
    if outcome.preset is None:
        raise SystemExit("no trial completed: nothing to compare (see the study's report)")

    seed = load_config(FAMILY).training.seed
    # name -> (recipe, run folder, overrides), each trained the study's budget
    runs: dict[str, tuple[str, Path, list[str]]] = {
        "default": (FAMILY, out / "final" / "default", overrides),
        "chosen": (str(outcome.preset), out / "final" / "chosen", overrides),
    }
    if args.control_ema is not None:
        # The default with only its EMA's decay changed: at a short budget the default's
        # long-horizon EMA still holds much of its initial weights, which alone can make it
        # lose; this control says what the search found beyond that.
        runs[f"default, ema_decay {args.control_ema:g}"] = (
            FAMILY,
            out / "final" / f"default-ema{args.control_ema:g}",
            [*overrides, f"model.ema_decay={args.control_ema}"],
        )
    checkpoints = {
        name: train_for_budget(recipe, data, folder, args.budget_steps, extra)
        for name, (recipe, folder, extra) in runs.items()
    }
    rates = interleaved_rates(checkpoints, final, batch=128, repeats=args.repeats)
    doc: dict[str, Any] = {
        "study": str(study),
        "chosen_trial": outcome.chosen,
        "budget_steps": args.budget_steps,
        "final_showers": args.final,
        "smoke": args.smoke,
        "models": {},
    }
    for name, checkpoint in checkpoints.items():
        found = judge(checkpoint, final, runs[name][1], validation, seed)
        pipeline = ShowerPipeline.from_checkpoint(checkpoint)
        with contextlib.closing(open_showers(final)) as source:
            conditions = {k: np.asarray(v[:4]) for k, v in source.conditions.items()}
        found["gflop_per_shower"] = gflop_per_shower(pipeline, conditions)
        found["showers_per_s"] = rates[name]
        found["checkpoint"] = str(checkpoint)
        doc["models"][name] = found
    (out / "comparison.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(markdown(doc))
    print(f"study page: {outcome.report}; comparison: {out / 'comparison.json'}")


if __name__ == "__main__":
    main()
