"""How a model learns: the physics check along a training run, checkpoint by checkpoint.

Trains a family on simulated showers (or `--data`), keeping a checkpoint every `--every`
steps, then reads each back and compares its showers with held-out test showers of the same
conditions: generated/real mean visible/primary ratio in three primary-energy bins, and the
L1 distance of the normalised longitudinal profiles. Step 0 is the untrained generator. This
is the learning evidence of tests/integration/test_learning.py, as a curve, to find how long
a recipe needs.

    python benchmarks/learning_curve.py --family gan3d --steps 600 --every 100
    python benchmarks/learning_curve.py --device cuda --steps 3000 --set training.batch_size=64

With `--run RUN --reference HELD_OUT.h5` it trains nothing: it reads the checkpoints a run
kept (`training.keep_every`) at multiples of `--every` steps and gives each the full
evaluation of benchmarks/flow_match.py (classifier AUCs, response and resolution per energy
bin, profile and widths) against `--n` held-out showers, with the training time to that
step from the run's epoch records: issue 16's figures against training time.

    python benchmarks/learning_curve.py --run runs/fm --reference heldout.h5 --every 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from caloforge.data.dataset import split_indices
from caloforge.data.io import open_showers
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models.checkpoint import step_folders, step_of
from caloforge.simulation.run import simulate_to_file
from caloforge.training.config import load_config
from caloforge.training.physics_check import binned_response
from caloforge.training.trainer import Trainer
from caloforge.validation.features import normalised_mean_profile

ENERGY_BINS = [(10.0, 70.0), (70.0, 130.0), (130.0, 200.0)]
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
GEOMETRY = {"gan3d": "clic-25", "conv2d-g1": "clic-25", "conv2d-g3": "clic-25"}


def evaluate(pipeline: ShowerPipeline, real, conditions) -> dict[str, float | list[float]]:
    generated = pipeline(conditions, torch.Generator().manual_seed(99)).showers
    energy = conditions["energy"]
    geometry = pipeline.geometry
    error = float(
        abs(
            normalised_mean_profile(generated, geometry) - normalised_mean_profile(real, geometry)
        ).sum()
    )
    return {"response": binned_response(real, generated, energy, ENERGY_BINS), "profile": error}


def curve_of_run(args: argparse.Namespace) -> None:
    """The figures of each kept checkpoint of `args.run` against the training time."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import flow_match  # benchmarks/flow_match.py: one checkpoint's evaluation

    records = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r.get("event") == "epoch"]
    out = args.json.with_suffix("") if args.json else Path("learning-curve")
    rows = []
    for folder in step_folders(args.run):
        step = step_of(folder)
        if step % args.every:
            continue
        done = [e for e in epochs if e["step"] <= step]
        row = {
            "step": step,
            "train_s": sum(e["seconds"] for e in done),
            "train_cpu_s": sum(e.get("cpu_seconds", float("nan")) for e in done),
        }
        (out / folder.name).mkdir(parents=True, exist_ok=True)
        row |= flow_match.evaluate(folder, args.reference, args.n, 7, 256, out / folder.name)
        rows.append(row)
        response = max(abs(b["response"] or 0.0) for b in row["response_bins"])
        print(
            f"step {step:6d}  {row['train_s'] / 3600:5.2f} h  AUC cells {row['auc_low_level']:.3f}"
            f"  high-level {row['auc_high_level']:.3f}  worst response {response:+.3f}"
            f"  widths x {row['shapes']['all']['width_x']:+.3f}",
            flush=True,
        )
        if args.json:
            args.json.write_text(json.dumps({"run": str(args.run), "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="gan3d", choices=sorted(GEOMETRY))
    parser.add_argument("--data", type=Path, default=None, help="default: simulate --n showers")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    parser.add_argument("--set", nargs="*", default=[], help="more key=value config overrides")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--run", type=Path, default=None, help="evaluate a run's checkpoints")
    parser.add_argument("--reference", type=Path, default=None, help="--run: held-out showers")
    args = parser.parse_args()
    if args.run is not None:
        if args.reference is None:
            parser.error("--run needs --reference (held-out showers)")
        curve_of_run(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "showers.h5"
            start = time.perf_counter()
            simulate_to_file(
                data, geometry=GEOMETRY[args.family], n=args.n, energy=(10.0, 200.0), seed=11
            )
            print(f"simulated {args.n} showers in {time.perf_counter() - start:.0f} s", flush=True)
        config = load_config(
            CONFIGS / f"{args.family}.yaml",
            [
                f"training.batch_size={args.batch_size}",
                f"training.max_steps={args.steps}",
                f"training.checkpoint_every={args.every}",
                f"training.keep_checkpoints={args.steps // args.every + 2}",
                f"training.check_every={args.every}",
                "training.check_showers=256",
                f"training.device={args.device}",
                f"training.precision={args.precision}",
                *args.set,
            ],
        )
        run = Path(tmp) / "run"
        trainer = Trainer(config, data, run, progress=True)
        with open_showers(data) as source:
            test = source.take(split_indices(len(source))["test"])  # never trained on
        real, conditions = test.showers, dict(test.conditions)
        device = trainer.context.device
        initial = ShowerPipeline(
            trainer.bundle.generator, trainer.transform, trainer.geometry, device
        )
        rows = [{"step": 0, **evaluate(initial, real, conditions)}]
        trainer.bundle.generator.train()  # the pipeline switched it to eval
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
        for folder in sorted((run / "checkpoints").glob("step-*")):
            pipeline = ShowerPipeline.from_checkpoint(folder, device=device)
            rows.append({"step": int(folder.name[5:]), **evaluate(pipeline, real, conditions)})

    print(
        f"\n{args.family}, batch {args.batch_size}, {args.steps} steps on {device}, {seconds:.0f} s"
    )
    bins = "  ".join(f"{lo:.0f}-{hi:.0f} GeV" for lo, hi in ENERGY_BINS)
    print(f"{'step':>6s}  generated/real response: {bins}   profile L1")
    for row in rows:
        ratios = "  ".join(f"{r:10.3f}" for r in row["response"])  # type: ignore[union-attr]
        print(f"{row['step']:6d}  {'':24s}{ratios}   {row['profile']:.4f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"data": str(args.data), "json": None},
                    "rows": rows,
                    "seconds": seconds,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
