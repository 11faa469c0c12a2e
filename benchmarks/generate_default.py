"""`caloforge generate` with default options against each backend named, side by side.

The target (issue 21): `generate` with default options (`--backend auto`) within 10 % of the
best backend's throughput. Each contender is the command a user types, run as a child
process (`caloforge generate --checkpoint C --n N --seed S -o OUT [--backend B]`); the
contenders are run in turn, round after round (the order rotated each round), so that they
share the machine's load alike, and the medians of the rounds are compared:

- end to end: N over the command's wall time (start-up, model load, compilation or int8
  quantization, generation, writing);
- steady: the showers after the first batch over the time from the first batch written to
  the last (the child records when each batch is written): the generation loop alone.

The ratio of the default to the best backend is taken round by round (the two ran minutes
apart under the same load) and its median printed.

Before the rounds, `--backend int8` runs once with a private cache (`CALOFORGE_CACHE_DIR`), as
a user would once: its guard search keeps the verdict that lets `auto` choose int8. Without
`--checkpoint`, a gan3d checkpoint with random weights is written (speed does not depend on
training; the int8 guard's verdict does, so give a trained checkpoint for that).

    python benchmarks/generate_default.py --checkpoint runs/first --n 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT = "default"


def child(argv: list[str], record: Path) -> None:
    """Run `caloforge generate` in this process, recording when each batch is written."""
    from caloforge.cli import main
    from caloforge.generation import run

    writer_class = run.ShowerWriter
    times: list[tuple[float, int]] = []

    class TimedWriter(writer_class):  # type: ignore[misc, valid-type]
        def write(self, batch):
            super().write(batch)
            times.append((time.perf_counter(), len(batch)))

    run.ShowerWriter = TimedWriter  # type: ignore[misc]
    code = main(["generate", *argv])
    record.write_text(json.dumps({"code": code, "batches": times}))


def run_once(
    checkpoint: str, args: argparse.Namespace, backend: str, folder: Path, env: dict[str, str]
) -> dict[str, Any]:
    """One command; its wall time, its steady rate and the backend the file says it ran."""
    import h5py

    out, record = folder / f"{backend}.h5", folder / f"{backend}.json"
    out.unlink(missing_ok=True)
    argv = ["--checkpoint", checkpoint, "--n", str(args.n), "--seed", "1", "-o", str(out)]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    if backend != DEFAULT:
        argv += ["--backend", backend]
    command = [sys.executable, __file__, "--child", str(record), "--", *argv]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{backend}: exit {done.returncode}\n{done.stderr[-3000:]}")
    batches = json.loads(record.read_text())["batches"]
    (t0, _), (t1, _) = batches[0], batches[-1]
    after_first = sum(n for _, n in batches[1:])
    with h5py.File(out) as f:
        producer = str(f.attrs["producer"])
    ran = producer.split("backend ", 1)[1].split(" (", 1)[0]
    status = [line for line in done.stderr.splitlines() if "backend auto ->" in line]
    return {
        "wall_s": wall,
        "end_to_end": args.n / wall,
        "steady": after_first / (t1 - t0) if t1 > t0 else float("nan"),
        "setup_s": wall - (t1 - t0),
        "ran": ran,
        "auto": status[0].split("caloforge generate: ", 1)[-1] if status else "",
    }


def random_gan3d(folder: Path) -> str:
    from caloforge.data.transforms import Power
    from caloforge.models import build_model
    from caloforge.training.checkpoint import save_checkpoint

    bundle = build_model("gan3d", seed=0)
    save_checkpoint(
        folder / "run",
        step=1,
        epoch=0,
        bundle=bundle,
        transform=Power(0.85, scale=100.0),
        geometry=bundle.config.resolved_geometry,
        training={},
        trainer_state={},
    )
    return str(folder / "run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="run or checkpoint folder (default: random gan3d)")
    parser.add_argument("--n", type=int, default=20000, help="showers per command")
    parser.add_argument("--batch-size", type=int, default=0, help="0: generate's default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--backends", nargs="+", default=["eager", "compiled", "int8"], help="named contenders"
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child([a for a in rest if a != "--"], Path(args.child))
        return

    with tempfile.TemporaryDirectory(prefix="generate-default-") as tmp:
        folder = Path(tmp)
        checkpoint = args.checkpoint or random_gan3d(folder)
        env = {**os.environ, "CALOFORGE_CACHE_DIR": str(folder / "cache")}
        load = os.getloadavg()
        print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
        if "int8" in args.backends:
            first = run_once(checkpoint, args, "int8", folder, env)
            print(
                f"int8 first run (guard search, verdict kept): {first['wall_s']:.1f} s, "
                f"setup {first['setup_s']:.1f} s",
                flush=True,
            )
        contenders = [DEFAULT, *args.backends]
        results: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
        for r in range(args.rounds):
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for contender in order:
                result = run_once(checkpoint, args, contender, folder, env)
                results[contender].append(result)
                print(
                    f"round {r + 1} {contender:9s} ran {result['ran']:8s} "
                    f"{result['wall_s']:7.1f} s, end to end {result['end_to_end']:8.1f} "
                    f"showers/s, steady {result['steady']:8.1f} showers/s",
                    flush=True,
                )
        load = os.getloadavg()
        print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        summary: dict[str, Any] = {
            c: {
                key: statistics.median(r[key] for r in runs)
                for key in ("wall_s", "end_to_end", "steady", "setup_s")
            }
            for c, runs in results.items()
        }
        print(f"\n{args.n} showers per command, {args.rounds} rounds, medians:")
        print(results[DEFAULT][0]["auto"] or "(no auto line)")
        for key in ("end_to_end", "steady"):
            best = max(args.backends, key=lambda c: summary[c][key])
            # Paired: each round's default over that round's best, then the median.
            paired = [d[key] / b[key] for d, b in zip(results[DEFAULT], results[best], strict=True)]
            ratio = statistics.median(paired)
            line = ", ".join(f"{c} {summary[c][key]:.1f}" for c in contenders)
            print(
                f"{key:10s} showers/s: {line}; default / best ({best}) per round "
                f"{' '.join(f'{r:.3f}' for r in paired)}, median {ratio:.3f} "
                f"({'within' if ratio >= 0.9 else 'NOT within'} 10 %)"
            )
            summary[f"default_over_{key}_best"] = {"best": best, "per_round": paired}
        if args.json:
            Path(args.json).write_text(
                json.dumps({"n": args.n, "rounds": results, "medians": summary}, indent=1)
            )


if __name__ == "__main__":
    main()
