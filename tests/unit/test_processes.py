"""Worker processes end with the process that made them."""

from __future__ import annotations

import signal
import subprocess
import sys


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
