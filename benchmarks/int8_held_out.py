"""Does the int8 guard's verdict hold on showers it never saw?

Quantizes a generator as `--backend int8` does (calibration conditions and noise from seed 0),
then computes the guard's numbers again on `--n` fresh showers (conditions and noise from
`--seed`): projection-MSE degradation, response error, profile L1, relative L2.

    python benchmarks/int8_held_out.py --checkpoint runs/gan3d --n 2048
    python benchmarks/int8_held_out.py --model conv2d-g1          # random weights
"""

from __future__ import annotations

import argparse

import torch

from caloforge.generation.int8 import held_out_metrics
from caloforge.generation.pipeline import ShowerPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--model", help="a model family, random weights")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        pipeline = ShowerPipeline.from_checkpoint(args.checkpoint)
    else:
        pipeline = ShowerPipeline.random_weights(args.model)
    pipeline.set_backend("int8", seed=0)
    report = pipeline.forward.report  # type: ignore[union-attr]
    print(report.summary())
    m = held_out_metrics(pipeline, pipeline.forward, args.n, seed=args.seed)  # type: ignore[arg-type]
    t = report.tolerance
    print(
        f"held out ({args.n} showers, seed {args.seed}): projection MSE "
        f"{m.projection_mse_degradation:.1%} (tolerance {t.projection_mse:.0%}), response "
        f"{m.response_error:.2%} ({t.response:.0%}), profile L1 {m.profile_l1:.4f} "
        f"({t.profile}), relative L2 {m.relative_l2:.3f}: "
        + ("within tolerance" if m.holds(t) else "OUTSIDE tolerance")
    )


if __name__ == "__main__":
    main()
