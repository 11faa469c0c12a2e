"""flow-match against the targets of issue 16: fidelity and generation speed per solver-step count.

For each number of stage-2 solver steps (`--steps`), a copy of the checkpoint with that
`shape_steps` generates `--n` showers with the conditions of a held-out reference file;
`caloforge validate` compares them with it (classifier AUCs, response and resolution per
energy bin), and this script adds the deviations the issue names that the report does not
give as one number: the mean longitudinal profile (the largest deviation of a layer holding
at least 1 % of the energy, and the L1 distance of the normalised profiles) and the mean
transverse widths (x, y: energy-weighted RMS of each shower's projection), overall and per
energy bin, generated / reference - 1. Speed: showers/s at
`--batch-size` per backend, on `--threads` threads, the best of `--repeats` timed calls after
one warm-up.

    python benchmarks/flow_match.py --run runs/fm --reference test.h5 --n 5000 --steps 3 6
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from caloforge.cli import main as cli
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models.checkpoint import CONFIG, resolve_checkpoint

TARGETS = {
    "auc_high_level": 0.60,
    "auc_low_level": 0.70,
    "response": 0.01,
    "resolution": 0.05,
    "profile": 0.03,
    "width": 0.03,
}


def with_steps(checkpoint: Path, steps: int, hit_fraction: float, out: Path) -> Path:
    """A copy of `checkpoint` whose model samples stage 2 in `steps` steps and empties the
    cells below `hit_fraction` of their layer (0: the model's own cut)."""
    folder = out / f"checkpoint-steps{steps}"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / CONFIG).read_text())
    config["model"]["shape_steps"] = steps
    if hit_fraction:
        config["model"]["hit_fraction"] = hit_fraction
    (folder / CONFIG).write_text(json.dumps(config, indent=1))
    return folder


def widths(showers: np.ndarray) -> np.ndarray:
    """(n, 2): energy-weighted RMS of each shower's x and y projections, in cells."""
    out = []
    for axis in (0, 1):
        other = tuple(a for a in range(1, showers.ndim) if a != axis + 1)
        projection = showers.sum(axis=other).astype(np.float64)
        c = np.arange(projection.shape[1], dtype=np.float64)
        total = np.maximum(projection.sum(axis=1), 1e-30)
        mean = (projection * c).sum(axis=1) / total
        var = (projection * c**2).sum(axis=1) / total - mean**2
        out.append(np.sqrt(np.maximum(var, 0.0)))
    return np.stack(out, axis=1)


def shape_deviations(
    reference: np.ndarray,
    generated: np.ndarray,
    energy: np.ndarray,
    edges: np.ndarray,
    generated_energy: np.ndarray | None = None,
) -> dict[str, object]:
    """Profile and width deviations (generated / reference - 1), overall and per bin of the
    primary energy (`generated_energy`: the generated showers' own, when they are not
    `energy`, as for a file simulated independently)."""
    gen_energy = energy if generated_energy is None else generated_energy

    def profile(s: np.ndarray) -> np.ndarray:
        p = s.sum(axis=(1, 2)).astype(np.float64).sum(axis=0)
        return p / p.sum()

    def one(lo: float, hi: float) -> dict[str, float]:
        sel, sel_gen = (energy >= lo) & (energy < hi), (gen_energy >= lo) & (gen_energy < hi)
        p_ref, p_gen = profile(reference[sel]), profile(generated[sel_gen])
        used = p_ref >= 0.01
        w_ref = widths(reference[sel]).mean(axis=0)
        w_gen = widths(generated[sel_gen]).mean(axis=0)
        return {
            "profile_max_abs": float(np.abs(p_gen[used] / p_ref[used] - 1).max()),
            "profile_l1": float(np.abs(p_gen - p_ref).sum()),
            "width_x": float(w_gen[0] / w_ref[0] - 1),
            "width_y": float(w_gen[1] / w_ref[1] - 1),
        }

    bins = [
        {"low": float(lo), "high": float(hi), **one(lo, hi)} for lo, hi in itertools.pairwise(edges)
    ]
    return {"all": one(-np.inf, np.inf), "bins": bins}


def speed(checkpoint: Path, backends: list[str], batch_size: int, repeats: int) -> dict:
    out = {}
    conditions = {"energy": np.linspace(10.0, 200.0, batch_size)}
    for backend in backends:
        try:
            pipeline = ShowerPipeline.from_checkpoint(checkpoint, backend=backend)
        except Exception as exc:  # a backend this machine lacks: say so, time the others
            out[backend] = f"unavailable: {exc}"
            continue
        pipeline(conditions, torch.Generator().manual_seed(0))  # warm-up (and compile)
        best = np.inf
        for i in range(repeats):
            start = time.perf_counter()
            pipeline(conditions, torch.Generator().manual_seed(i + 1))
            best = min(best, time.perf_counter() - start)
        out[backend] = {"engine": pipeline.engine, "showers_per_s": batch_size / best}
    return out


def run_cli(argv: list[str]) -> None:
    """`caloforge ARGV`, stopping the benchmark when it fails."""
    code = cli(argv)
    if code:
        raise SystemExit(f"caloforge {argv[0]} exited with {code}: {' '.join(argv)}")


def evaluate(
    checkpoint: Path,
    reference_file: Path,
    n: int,
    seed: int,
    batch_size: int,
    out: Path,
    backend: str = "eager",
) -> dict:
    """Generate `n` showers from `checkpoint` with the conditions of `reference_file`'s first
    `n` (on `backend`: eager needs no compilation), validate them against those (cell-level
    subsample: all of them) and add the shape deviations: the figures of issue 16 for one
    checkpoint."""
    with h5py.File(reference_file) as f:
        reference = f["showers"][:n]
        energy = f["energy"][:n]
    edges = np.geomspace(energy.min(), energy.max() * (1 + 1e-9), 6)
    generated_file, report = out / "generated.h5", out / "report"
    generated_file.unlink(missing_ok=True)
    start = time.perf_counter()
    run_cli(
        [
            *("generate", "--checkpoint", str(checkpoint), "--conditions-from"),
            *(str(reference_file), "--n", str(n), "--seed", str(seed), "-o", str(generated_file)),
            *("--batch-size", str(batch_size), "--backend", backend),
        ]
    )
    generation_s = time.perf_counter() - start
    run_cli(
        [
            *("validate", "--reference", str(reference_file)),
            *("--generated", str(generated_file), "--out", str(report)),
            *("--max-showers", str(n), "--subsample", str(n), "--no-plots", "--seed", "0"),
        ]
    )
    metrics = json.loads((report / "metrics.json").read_text())
    with h5py.File(generated_file) as f:
        generated = f["showers"][:]
    return {
        "generation_s": generation_s,
        "auc_low_level": metrics["headline"]["classifier_auc_low_level"]["value"],
        "auc_high_level": metrics["headline"]["classifier_auc_high_level"]["value"],
        "fpd_x1e3": metrics["headline"]["fpd"]["value"],
        "response_bins": [
            {
                "low": b["low"],
                "high": b["high"],
                "response": b.get("response_deviation"),
                "resolution": b.get("resolution_deviation"),
            }
            for b in metrics["response"]["energy"]
        ],
        "hits_per_shower": [
            float((reference > 1e-5).sum() / len(reference)),
            float((generated > 1e-5).sum() / len(generated)),
        ],
        "shapes": shape_deviations(reference, generated, energy, edges),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run or checkpoint folder")
    parser.add_argument("--reference", type=Path, required=True, help="held-out showers")
    parser.add_argument("--out", type=Path, default=Path("flow-match-bench"))
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--steps", type=int, nargs="+", default=[3])
    parser.add_argument("--hit-fraction", type=float, default=0.0, help="0: the model's")
    parser.add_argument("--backends", nargs="+", default=["eager", "compiled"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = resolve_checkpoint(args.run)
    results = {"checkpoint": str(checkpoint), "targets": TARGETS, "by_steps": {}}
    for steps in args.steps:
        folder = with_steps(checkpoint, steps, args.hit_fraction, args.out)
        out = args.out / f"steps{steps}"
        out.mkdir(exist_ok=True)
        entry = {
            "hit_fraction": args.hit_fraction,
            **evaluate(folder, args.reference, args.n, args.seed, args.batch_size, out),
            "speed": speed(folder, args.backends, args.batch_size, args.repeats),
        }
        results["by_steps"][str(steps)] = entry
        print(json.dumps({"steps": steps, **entry}, indent=1))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
