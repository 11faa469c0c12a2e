"""Memory of `caloforge generate` as the number of showers grows: it must stay flat.

Generates `--n` showers with a random-weight model of `--family` (speed and memory only)
through `generate_to_file` in this process, sampling the resident set size (RSS) after every
batch. Prints RSS at 10 %, 50 % and 100 % of the run and the growth from the first tenth to the
end, per million showers. Streamed writes mean the growth is ~0: memory holds one batch.

    python benchmarks/generate_memory.py --family wgan-lhcb --n 200000 --batch-size 2048
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from caloforge.data.transforms import Identity
from caloforge.generation import run as generation_run
from caloforge.models import build_model
from caloforge.training.checkpoint import save_checkpoint


def rss_mib() -> float:
    """Current resident set size, MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="wgan-lhcb")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    samples: list[tuple[int, float]] = []
    writer_class = generation_run.ShowerWriter

    class SampledWriter(writer_class):  # type: ignore[misc, valid-type]
        def write(self, batch):  # type: ignore[no-untyped-def]
            super().write(batch)
            done = (samples[-1][0] if samples else 0) + len(batch)
            samples.append((done, rss_mib()))

    generation_run.ShowerWriter = SampledWriter  # type: ignore[misc]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_model(args.family, seed=0)
        checkpoint = save_checkpoint(
            Path(tmp) / "run",
            step=1,
            epoch=0,
            bundle=bundle,
            transform=Identity(),
            geometry=bundle.config.resolved_geometry,
            training={},
            trainer_state={},
        )
        start = time.perf_counter()
        out = generation_run.generate_to_file(
            checkpoint, Path(tmp) / "gen.h5", n=args.n, batch_size=args.batch_size, seed=1
        )
        seconds = time.perf_counter() - start
        size = out.stat().st_size / 2**20
    at = {f: samples[min(len(samples) - 1, int(f * len(samples)))] for f in (0.1, 0.5, 1.0)}
    growth = (at[1.0][1] - at[0.1][1]) / max(at[1.0][0] - at[0.1][0], 1) * 1e6
    print(
        f"{args.family}: {args.n} showers in {seconds:.0f} s ({args.n / seconds:.0f} showers/s), "
        f"file {size:.0f} MiB"
    )
    for fraction, (done, rss) in at.items():
        print(f"  after {done:9d} showers ({fraction:4.0%}): RSS {rss:8.1f} MiB")
    print(f"  growth from 10 % to the end: {growth:+.1f} MiB per million showers")


if __name__ == "__main__":
    main()
