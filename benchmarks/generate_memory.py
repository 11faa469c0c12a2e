"""Memory of `caloforge generate` as the number of showers grows: it must stay flat.

Generates `--n` showers with a random-weight model of `--family` (speed and memory only) and
samples the resident set size (RSS):
- in this process (default), through `generate_to_file`, after every batch;
- with `--cli`, as the one command a user runs (`caloforge generate ... --backend B`) in a
  child process, every `--every` seconds from /proc.
Prints RSS at 10 %, 50 % and 100 % of the run and the growth from the first tenth to the end,
per million showers (in-process), or the peak RSS of each quarter of the run (`--cli`).
Streamed writes mean the growth is ~0: memory holds one batch.

    python benchmarks/generate_memory.py --family wgan-lhcb --n 200000 --batch-size 2048
    python benchmarks/generate_memory.py --cli --n 10000000 --backend compiled --batch-size 4096
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from caloforge.data.transforms import Identity
from caloforge.generation import run as generation_run
from caloforge.models import build_model
from caloforge.training.checkpoint import save_checkpoint


def rss_mib(pid: str = "self") -> float:
    """Current resident set size of a process, MiB (Linux /proc)."""
    with open(f"/proc/{pid}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def random_checkpoint(family: str, folder: Path) -> Path:
    """A checkpoint of `family` with random weights (seed 0) and no preprocessing."""
    bundle = build_model(family, seed=0)
    return save_checkpoint(
        folder / "run",
        step=1,
        epoch=0,
        bundle=bundle,
        transform=Identity(),
        geometry=bundle.config.resolved_geometry,
        training={},
        trainer_state={},
    )


def in_process(args: argparse.Namespace, folder: Path) -> None:
    samples: list[tuple[int, float]] = []
    writer_class = generation_run.ShowerWriter

    class SampledWriter(writer_class):  # type: ignore[misc, valid-type]
        def write(self, batch):  # type: ignore[no-untyped-def]
            super().write(batch)
            done = (samples[-1][0] if samples else 0) + len(batch)
            samples.append((done, rss_mib()))

    generation_run.ShowerWriter = SampledWriter  # type: ignore[misc]
    checkpoint = random_checkpoint(args.family, folder)
    start = time.perf_counter()
    out = generation_run.generate_to_file(
        checkpoint, folder / "gen.h5", n=args.n, batch_size=args.batch_size, seed=1
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


def as_a_command(args: argparse.Namespace, folder: Path) -> None:
    checkpoint = random_checkpoint(args.family, folder)
    out = folder / "gen.h5"
    command = [
        sys.executable, "-m", "caloforge", "generate", "--checkpoint", str(checkpoint),
        "--num-showers", str(args.n), "--batch-size", str(args.batch_size),
        "--backend", args.backend, "--seed", "1", "-o", str(out),
    ]  # fmt: skip
    print("$", " ".join(command[1:]), flush=True)
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()
    log = folder / "stderr.log"  # its progress bar and any error
    with log.open("w") as stderr, subprocess.Popen(command, stderr=stderr) as child:
        while child.poll() is None:
            try:
                samples.append((time.perf_counter() - start, rss_mib(str(child.pid))))
            except (FileNotFoundError, ProcessLookupError):  # it just ended
                break
            if len(samples) % max(1, round(600 / args.every)) == 0:
                t, rss = samples[-1]
                print(f"  t={t:7.0f} s  RSS {rss:7.1f} MiB", flush=True)
            time.sleep(args.every)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"caloforge generate failed (exit {child.returncode}):\n{tail}")
    size = out.stat().st_size / 2**30
    print(
        f"{args.family} ({args.backend}): {args.n} showers in {seconds:.0f} s "
        f"({args.n / seconds:.0f} showers/s, start-up and writing included), file {size:.1f} GiB"
    )
    quarters = [
        max((rss for t, rss in samples if q * seconds / 4 <= t < (q + 1) * seconds / 4), default=0)
        for q in range(4)
    ]
    print("  peak RSS per quarter of the run (MiB): " + ", ".join(f"{r:.1f}" for r in quarters))
    print(
        f"  peak {max(quarters):.1f} MiB; last quarter minus second: "
        f"{quarters[3] - quarters[1]:+.1f} MiB ({len(samples)} samples, every {args.every} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="wgan-lhcb")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cli", action="store_true", help="run `caloforge generate` itself")
    parser.add_argument("--backend", default="eager", help="with --cli")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--dir", default=None, help="where the file is written (then removed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        (as_a_command if args.cli else in_process)(args, Path(tmp))


if __name__ == "__main__":
    main()
