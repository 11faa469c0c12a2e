"""Worker processes end with the process that made them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_a_worker_whose_owner_died_before_it_armed_its_signal_ends():
    """A parent that dies while its worker is still starting (spawn's imports: seconds, more
    on a loaded machine) is gone before the worker's parent-death signal is armed; with the
    owner's pid the worker sees that and ends (tune's workers outlived a killed study)."""
    dead = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from caloforge._processes import die_with_parent; "
            f"die_with_parent({dead}); time.sleep(60)",
        ]
    )
    try:
        code = worker.wait(timeout=30)
    finally:
        worker.kill()
    assert code == -signal.SIGKILL


def test_an_owner_dead_but_not_yet_reaped_counts_as_gone():
    """A killed owner whose parent has not reaped it (a zombie) still answers signal 0: its
    workers ran on, holding its output pipes, and a driver in `subprocess.run(...,
    capture_output=True)` waited for them for ever (it reaps only once the pipes close)."""
    from caloforge._processes import running

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(100):  # exited, not reaped: a zombie
            with open(f"/proc/{child.pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.05)
        assert not running(child.pid)
    finally:
        child.wait()
    assert running(os.getpid())
