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

from caloforge.generation.int8 import (
    QuantizedGenerator,
    _feeds,
    _Guard,
    _in_gev,
    calibration_conditions,
    held_out_metrics,
)
from caloforge.generation.pipeline import ShowerPipeline


def response_by_energy(
    pipeline: ShowerPipeline, n: int, seed: int, bins: int
) -> tuple[list[tuple[float, float, float, float]], tuple[float, float]]:
    """(low, high, int8 / fp32 - 1, its standard error) per primary-energy bin, and the mean
    number of cells above zero per shower (int8, fp32), on `n` showers of `seed` (the same
    showers as `held_out_metrics`); `pipeline.forward` is the int8 one."""
    feeds, noise_a, energy = _feeds(pipeline, calibration_conditions(pipeline, n, seed=seed), seed)
    guard = _Guard(pipeline, feeds, noise_a, energy)
    outputs = []
    with torch.inference_mode():
        for feed in feeds:
            named = {k: torch.from_numpy(v) for k, v in feed.items() if k != "noise"}
            outputs.append(pipeline.forward(torch.from_numpy(feed["noise"]), named).numpy())
    showers = _in_gev(pipeline, np.concatenate(outputs))
    lit = tuple(float((x.reshape(n, -1) > 0).sum(1).mean()) for x in (showers, guard.fp32_b))
    int8, fp32 = guard._ratios(showers), guard._ratios(guard.fp32_b)
    edges = np.quantile(energy, np.linspace(0.0, 1.0, bins + 1))
    which = np.clip(np.searchsorted(edges, energy, side="right") - 1, 0, bins - 1)
    rows = []
    for i in range(bins):
        inside = which == i
        low, high = edges[i], edges[i + 1]
        differences = (int8[inside] - fp32[inside]) / fp32[inside].mean()
        error = differences.std(ddof=1) / np.sqrt(inside.sum())
        rows.append((float(low), float(high), float(differences.mean()), float(error)))
    return rows, (lit[0], lit[1])


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
    m = held_out_metrics(pipeline, quantized, args.n, seed=args.seed)
    t = report.tolerance
    print(
        f"held out ({args.n} showers, seed {args.seed}): projection MSE "
        f"{m.projection_mse_degradation:.1%} (tolerance {t.projection_mse:.0%}), response "
        f"{m.response_error:.2%} ({t.response:.0%}), profile L1 {m.profile_l1:.4f} "
        f"({t.profile}), relative L2 {m.relative_l2:.3f}: "
        + ("within tolerance" if m.holds(t) else "OUTSIDE tolerance")
    )
    rows, lit = response_by_energy(pipeline, args.n, args.seed, args.bins)
    print("response by primary energy (int8 / fp32 - 1, +- its standard error):")
    for low, high, difference, error in rows:
        print(f"  {low:8.1f} - {high:8.1f}: {difference:+.2%} +- {error:.2%}")
    print(f"cells above zero per shower: int8 {lit[0]:.1f}, fp32 {lit[1]:.1f}")


if __name__ == "__main__":
    main()
