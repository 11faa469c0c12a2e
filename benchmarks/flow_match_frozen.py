"""What a flow-match training step costs with stage 2 trained and with it frozen.

`training.shape_patience` freezes stage 2 at its best check and trains stage 1 alone; this
measures what a step then costs against a step of both stages. Two generators of the preset
(plus any `model.KEY=VALUE` overrides) from the same seed, one with `freeze_shape()` called,
are timed in alternating rounds on the same batch of parametrized clic-25 showers (the
model's forward, backward, Adam update and EMA: what `FlowMatchStep` does; the data loader
is not part of it). Medians of the per-step times; their ratio is the figure.

    python benchmarks/flow_match_frozen.py --threads 1 --rounds 7 model.shape_head=1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from caloforge.devices import Distributed
from caloforge.geometry import PRESETS
from caloforge.models import build_model
from caloforge.simulation.conditions import ConditionRanges
from caloforge.simulation.run import simulate_batches
from caloforge.training.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="model.KEY=VALUE of the preset")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7, help="alternating timed rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps per round and variant")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config("flow-match", args.overrides)
    geometry = PRESETS["clic-25"]
    ranges = ConditionRanges.for_geometry(geometry, energy=(10.0, 200.0))
    n = args.batch_size
    batch = next(simulate_batches(geometry, ranges, n, seed=1, batch_size=n))
    showers = torch.from_numpy(batch.showers)
    conditions = {k: torch.from_numpy(v).float() for k, v in batch.conditions.items()}
    variants = {}
    for name in ("trained", "frozen"):
        torch.manual_seed(0)
        g = build_model("flow-match", config.model).generator
        g.fit_preprocessing([(showers, conditions)], Distributed())
        if name == "frozen":
            g.freeze_shape()
        trainable = [p for p in g.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=1e-3)
        variants[name] = (g, optimizer, torch.Generator().manual_seed(0))

    def step(name: str) -> None:
        g, optimizer, rng = variants[name]
        noise = g.sample_noise(args.batch_size, rng)
        draws = g.sample_draws(args.batch_size, rng)
        loss = g(noise, conditions, showers, draws).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        g.update_ema()

    times: dict[str, list[float]] = {name: [] for name in variants}
    for name in variants:  # warm-up
        for _ in range(2):
            step(name)
    for _ in range(args.rounds):
        for name in variants:
            for _ in range(args.steps):
                start = time.perf_counter()
                step(name)
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    overrides = " ".join(args.overrides) or "none"
    print(
        f"flow-match preset (overrides: {overrides}), batch {args.batch_size}, "
        f"{args.threads} thread(s), {args.rounds} x {args.steps} steps each"
    )
    for name, median in medians.items():
        spread = f"{min(times[name]):.4f}-{max(times[name]):.4f}"
        print(f"  stage 2 {name:<8} {median:.4f} s a step (min-max {spread})")
    print(f"  frozen / trained: {medians['frozen'] / medians['trained']:.3f}")


if __name__ == "__main__":
    main()
