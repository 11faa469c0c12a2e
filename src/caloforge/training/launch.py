"""`caloforge train --processes N`: the data-parallel path on one machine, without torchrun.

On a CPU, one process whose operators each spread over every core pays a synchronisation
at every operator, and loses most of its speed as soon as anything else wants a core; N
ranks of one thread each, averaging gradients once per step, do not. This starts the N
ranks as torchrun would (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT in their
environment, the cores shared out by OMP_NUM_THREADS), so the trainer runs exactly its
torchrun path, and looks after them: an interrupt reaches every rank, and when one rank
fails the others are ended at once instead of waiting on it in a collective.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO

from caloforge._processes import default_workers, die_with_parent, max_workers
from caloforge.errors import CaloforgeError

_POLL_S = 0.2
_GRACE_S = 10.0
_SETTLE_S = 5.0  # how long the other ranks may take to fail by themselves


def resolve_processes(value: str) -> int:
    """`--processes`: a positive count, or 'auto' (one rank per core, at most 8)."""
    if value == "auto":
        return default_workers()
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise CaloforgeError(f"--processes must be a positive integer or 'auto', got '{value}'")
    if count > max_workers():  # 100000 ranks: the machine's file and process limits first
        raise CaloforgeError(
            f"--processes {count}: at most {max_workers()} (four per core of this machine)"
        )
    return count


def launch_ranks(argv: Sequence[str], processes: int) -> int:
    """Run `python -m caloforge train ARGV` as `processes` ranks on this machine and return
    the exit code (the first failing rank's). Rank 0 writes to this terminal as a single
    process would; another rank's messages are shown only when that rank fails."""
    if "WORLD_SIZE" in os.environ:
        raise CaloforgeError(
            "--processes starts its own ranks: give it outside torchrun, or let torchrun "
            "start the ranks and leave --processes out"
        )
    threads = max(1, default_workers() // processes)
    base = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(processes),
        "LOCAL_WORLD_SIZE": str(processes),
        # the cores shared out, unless the user chose the threads per rank
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(threads),
    }
    if sys.platform == "linux":  # gloo on the loopback, not on the interface of the host name
        base.setdefault("GLOO_SOCKET_IFNAME", "lo")
    command = [sys.executable, "-m", "caloforge", "train", *argv]
    ranks: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        logs: list[IO[bytes] | None] = [None]  # rank 0 writes to the terminal
        logs += [stack.enter_context(tempfile.TemporaryFile()) for _ in range(1, processes)]
        try:
            for rank, log in enumerate(logs):
                env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
                ranks.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,  # interrupts reach the ranks through us
                        preexec_fn=die_with_parent,  # and a killed launcher takes them along
                    )
                )
            return _wait(ranks, logs)
        except BaseException:
            _end(ranks)
            raise


def _wait(ranks: list[subprocess.Popen[bytes]], logs: list[IO[bytes] | None]) -> int:
    """Until every rank has ended; the first failure ends the others."""
    while True:
        codes = [rank.poll() for rank in ranks]
        failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            first = failed[0]
            # A mistake in the settings or the data fails every rank at once: let the others
            # end by themselves for a moment, so that rank 0 (on the terminal) is not cut off
            # halfway through its own message.
            _settle(ranks, _SETTLE_S)
            rank0_code = ranks[0].returncode
            _end(ranks)
            # Rank 0 writes to the terminal: when it failed by itself as the other rank did
            # (the same exit code: the same mistake), its error is shown already. When we
            # ended it, or it failed otherwise (a collective broken by the other rank's
            # end), the failing rank's messages are what the user needs.
            same_failure = rank0_code == ranks[first].returncode
            if first != 0 and not same_failure:
                log = logs[first]
                if log is not None:
                    log.seek(0)
                    sys.stderr.write(log.read().decode(errors="replace"))
            code = ranks[first].returncode
            return code if code > 0 else 128 - code
        if all(code == 0 for code in codes):
            return 0
        time.sleep(_POLL_S)


def _settle(ranks: list[subprocess.Popen[bytes]], seconds: float) -> None:
    """Wait up to `seconds` for the ranks still running to end by themselves."""
    deadline = time.monotonic() + seconds
    while any(rank.poll() is None for rank in ranks) and time.monotonic() < deadline:
        time.sleep(_POLL_S / 4)


def _end(ranks: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to the ranks still running (each cleans up as on Ctrl-C), SIGKILL after a
    grace period."""
    for rank in ranks:
        if rank.poll() is None:
            rank.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_S
    for rank in ranks:
        try:
            rank.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            rank.kill()
            rank.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
