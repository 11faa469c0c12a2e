"""Does the int8 guard's verdict hold on showers it never saw?

Quantizes a generator as `--backend int8` does (calibration conditions and noise from seed 0),
then computes the guard's numbers again on `--n` fresh showers (conditions and noise from
`--seed`): projection-MSE degradation, response error, profile L1, relative L2. The
degradation is int8's shift over the metric's noise floor at `--n` showers, which falls as
1 / n: a fixed shift reads about n / 512 times its 512-shower figure, so `--n 512` gives the
guard's own terms and a larger n the sharper test. Then the response by primary energy (int8
against fp32 in `--bins` bins of equal counts, with the standard errors of the per-shower
differences), which the guard does not check: the guard holds the mean over the calibration
set's energies, and int8 errors that do not scale with the shower (rectified rounding noise, a
threshold taking it back) weigh more at low energies.

    python benchmarks/int8_held_out.py --checkpoint runs/gan3d --n 2048
    python benchmarks/int8_held_out.py --model conv2d-g1          # random weights
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from caloforge.generation.int8 import QuantizedGenerator, calibration_conditions
from caloforge.generation.int8.guard import Guard
from caloforge.generation.int8.quantize import held_out_showers
from caloforge.generation.pipeline import ShowerPipeline


def response_by_energy(
    guard: Guard, showers: np.ndarray, bins: int
) -> list[tuple[float, float, float, float]]:
    """(low, high, int8 / fp32 - 1, its standard error) per primary-energy bin of `guard`'s
    showers, `showers` the int8 ones."""
    energy = guard.energy
    int8, fp32 = guard.ratios(showers), guard.ratios(guard.fp32_b)
    edges = np.quantile(energy, np.linspace(0.0, 1.0, bins + 1))
    which = np.clip(np.searchsorted(edges, energy, side="right") - 1, 0, bins - 1)
    rows = []
    for i in range(bins):
        inside = which == i
        differences = (int8[inside] - fp32[inside]) / fp32[inside].mean()
        error = differences.std(ddof=1) / np.sqrt(inside.sum())
        rows.append((float(edges[i]), float(edges[i + 1]), float(differences.mean()), float(error)))
    return rows


def lit_cells(showers: np.ndarray) -> float:
    """Mean number of cells above zero per shower."""
    return float((showers.reshape(len(showers), -1) > 0).sum(1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--model", help="a model family, random weights")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bins", type=int, default=6, help="primary-energy bins (equal counts)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        pipeline = ShowerPipeline.from_checkpoint(args.checkpoint)
    else:
        pipeline = ShowerPipeline.random_weights(args.model)
    pipeline.set_backend("int8", seed=0)
    quantized = pipeline.forward
    assert isinstance(quantized, QuantizedGenerator)
    report = quantized.report
    print(report.summary())
    conditions = calibration_conditions(pipeline, args.n, seed=args.seed)
    parts = (pipeline.generator, pipeline.transform, pipeline.geometry)
    guard, showers = held_out_showers(*parts, quantized, conditions, seed=args.seed)
    m = guard.metrics(showers)  # = held_out_metrics(*parts, quantized, conditions, seed=...)
    t = report.tolerance
    print(
        f"held out ({args.n} showers, seed {args.seed}): projection MSE "
        f"{m.projection_mse_degradation:.1%} (tolerance {t.projection_mse:.0%}), response "
        f"{m.response_error:.2%} ({t.response:.0%}), profile L1 {m.profile_l1:.4f} "
        f"({t.profile}), relative L2 {m.relative_l2:.3f}: "
        + ("within tolerance" if m.holds(t) else "OUTSIDE tolerance")
    )
    print("response by primary energy (int8 / fp32 - 1, +- its standard error):")
    for low, high, difference, error in response_by_energy(guard, showers, args.bins):
        print(f"  {low:8.1f} - {high:8.1f}: {difference:+.2%} +- {error:.2%}")
    print(
        f"cells above zero per shower: int8 {lit_cells(showers):.1f}, "
        f"fp32 {lit_cells(guard.fp32_b):.1f}"
    )


if __name__ == "__main__":
    main()
