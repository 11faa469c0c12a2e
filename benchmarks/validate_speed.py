"""Wall time, CPU time and peak memory of `caloforge validate`, before and after a change, side
by side in one run.

    python benchmarks/validate_speed.py --before <commit> --sizes 5000 20000 --repeats 3
    python benchmarks/validate_speed.py --before <commit> --sizes 100000 --repeats 1

Each size N compares N simulated clic-25 showers (seed 1) with N others (seed 2); the files
are made once with `caloforge simulate` into --data. "before" is the package at <commit>,
checked out once as a git worktree under --data and run with PYTHONPATH pointing at it;
"after" is this working tree, or the commit --after names (checked out the same way). The
runs are interleaved (for each repeat and size: before then after, the order swapped every
other repeat), one at a time, and medians are reported.

Per run: wall seconds; CPU seconds of the `validate` process and of its feature and plot
workers (/proc sampled every 0.2 s, so a worker's last fraction of a second can be missed),
and from them an estimate of the wall time on two idle cores (the main process's CPU plus
half the workers'); peak RSS of the largest single process (`ru_maxrss` of `os.wait4`, the
memory figure of the issue) and the peak of the whole tree's summed RSS (sampled); and the
stage timings of metrics.json. The headline values of both sides are compared, so that a
speed-up that changed the results shows. Results: a table on stdout, and JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


class TreeSampler(threading.Thread):
    """Samples the process tree under `pid`: the peak of its summed RSS (bytes) and each
    process's CPU seconds (user + system, the last value seen)."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = 0
        self.cpu: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = 0
            for p in _descendants(self.pid):
                try:
                    stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                    rss = int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
                except (OSError, IndexError):
                    continue
                # Fields after the name: state is [0], utime [11], stime [12].
                self.cpu[p] = (int(stat[11]) + int(stat[12])) / TICKS
                total += rss
            self.peak_rss = max(self.peak_rss, total)
            self.done.wait(self.interval)


def simulate(path: Path, n: int, seed: int) -> None:
    if path.exists():
        return
    command = [sys.executable, "-m", "caloforge", "simulate", "--geometry", "clic-25"]
    command += ["--n", str(n), "--seed", str(seed), "-o", str(path)]
    print(f"making {path} ...", flush=True)
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def worktree(data: Path, commit: str) -> Path:
    """A worktree of `commit` under `data` (made once)."""
    tree = data / f"tree-{commit[:12]}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit])
    return tree


def run_validate(src: Path, reference: Path, generated: Path, threads: str) -> dict:
    """One `caloforge validate` with the package at `src`: its measurements."""
    with tempfile.TemporaryDirectory(prefix="validate-speed-") as tmp:
        out = Path(tmp) / "report"
        env = {**os.environ, "PYTHONPATH": str(src)}
        if threads:
            env["OMP_NUM_THREADS"] = threads
        command = [sys.executable, "-m", "caloforge", "validate", "--reference", str(reference)]
        command += ["--generated", str(generated), "--out", str(out)]
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        sampler = TreeSampler(child.pid)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        if status != 0:
            raise RuntimeError(f"validate with {src} failed (status {status})")
        metrics = json.loads((out / "metrics.json").read_text())
    # wait4's CPU is the process's and that of the children it waited for; the forkserver's
    # workers are not among them, so theirs comes from the samples.
    main_cpu = usage.ru_utime + usage.ru_stime
    workers_cpu = sum(cpu for pid, cpu in sampler.cpu.items() if pid != child.pid)
    return {
        "wall_s": wall,
        "cpu_s": main_cpu + workers_cpu,
        "cpu_main_s": main_cpu,
        "cpu_workers_s": workers_cpu,
        # On two idle cores the workers (two by default there) share the second core with
        # the waiting main process: wall ~ main + workers / 2, in this machine's CPU seconds.
        "two_core_estimate_s": main_cpu + workers_cpu / 2,
        "max_rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "tree_rss_mb": sampler.peak_rss / 2**20,
        "timings_s": metrics["timings_s"],
        "headline": {k: v["value"] for k, v in metrics["headline"].items()},
    }


COLUMNS = (("wall_s", 8), ("cpu_s", 8), ("cpu_main_s", 6), ("cpu_workers_s", 8))
COLUMNS += (("two_core_estimate_s", 10),)
MEMORY_COLUMNS = (("max_rss_mb", 11), ("tree_rss_mb", 12))


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(results: dict[int, dict[str, list[dict]]]) -> list[str]:
    lines = [
        f"{'N':>7} {'side':<6} {'wall s':>8} {'cpu s':>8} {'main':>6} {'workers':>8} "
        f"{'2-core est':>10} {'max RSS MB':>11} {'tree RSS MB':>12}  runs",
    ]
    for n, sides in sorted(results.items()):
        for side in ("before", "after"):
            runs = sides[side]
            if not runs:
                continue
            cells = [f"{n:>7} {side:<6}"]
            cells += [f"{_median(runs, k):{w}.1f}" for k, w in COLUMNS]
            cells += [f"{_median(runs, k):{w}.0f}" for k, w in MEMORY_COLUMNS]
            lines.append(" ".join(cells) + f"  {len(runs)}")
        before, after = sides["before"], sides["after"]
        if before and after:
            ratios = "  ".join(
                f"{key.split('_s')[0]} {_median(after, key) / _median(before, key):.2f}"
                for key in ("wall_s", "cpu_s", "two_core_estimate_s", "max_rss_mb")
            )
            lines.append(f"{'':>7} after/before: {ratios}")
            worst = max(
                abs(a - b) / max(abs(a), abs(b), 1e-300)
                for a, b in zip(
                    before[0]["headline"].values(), after[0]["headline"].values(), strict=True
                )
                if a is not None and b is not None
            )
            lines.append(f"{'':>7} headline values: largest relative difference {worst:.2g}")
        stages = sides["after"] or sides["before"]
        if stages:
            keys = stages[0]["timings_s"]
            text = ", ".join(
                f"{k} {statistics.median(r['timings_s'][k] for r in stages):.1f}" for k in keys
            )
            lines.append(f"{'':>7} stages ({'after' if sides['after'] else 'before'}): {text}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="commit of the 'before' side (none: after only)")
    parser.add_argument("--after", help="commit of the 'after' side (none: this working tree)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("/tmp/validate-speed"))
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS of the runs ('' unset)")
    parser.add_argument("--out", type=Path, help="write the runs and the table as JSON here")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    sides = {"after": worktree(args.data, args.after) / "src" if args.after else ROOT / "src"}
    if args.before:
        sides["before"] = worktree(args.data, args.before) / "src"
    files = {}
    for n in args.sizes:
        files[n] = (args.data / f"clic25-{n}-seed1.h5", args.data / f"clic25-{n}-seed2.h5")
        simulate(files[n][0], n, 1)
        simulate(files[n][1], n, 2)
    results: dict[int, dict[str, list[dict]]] = {n: {"before": [], "after": []} for n in args.sizes}
    for repeat in range(args.repeats):
        order = ["before", "after"] if repeat % 2 == 0 else ["after", "before"]
        for n in args.sizes:
            for side in order:
                if side not in sides:
                    continue
                run = run_validate(sides[side], *files[n], args.threads)
                results[n][side].append(run)
                print(
                    f"repeat {repeat} N={n} {side}: {run['wall_s']:.1f} s wall, "
                    f"{run['cpu_s']:.1f} s cpu, {run['max_rss_mb']:.0f} MB max RSS, "
                    f"{run['tree_rss_mb']:.0f} MB tree RSS",
                    flush=True,
                )
    lines = report(results)
    print("\n".join(lines))
    if args.out:
        load = os.getloadavg()
        doc = {"before": args.before, "after": args.after or "working tree"}
        doc |= {"threads": args.threads, "loadavg_at_end": load}
        doc |= {"runs": {str(n): r for n, r in results.items()}, "table": lines}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
