"""Worker processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["default_workers", "die_with_parent", "max_workers", "signals_held"]

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.5


def die_with_parent(owner: int | None = None) -> None:
    """End this process when its parent dies, even by SIGKILL (a pool's initializer: workers
    left waiting on a queue nobody feeds would otherwise run on).

    Linux's parent-death signal covers a direct child. A worker of a forkserver pool is the
    forkserver's child, which outlives a killed owner; with `owner` (the pid of the process
    that made the pool) a thread checks twice a second that the owner still runs.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the owner's clean-up still ends us
        pass
    if owner is None or owner == os.getppid():
        return

    def watch() -> None:
        while True:
            time.sleep(_POLL_S)
            if not running(owner):
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="caloforge-owner-watch", daemon=True).start()


def running(pid: int) -> bool:
    """Whether process `pid` still runs. A dead process its parent has not yet reaped (a
    zombie: a Python driver blocked in `subprocess.run(..., capture_output=True)` reaps only
    once the output pipes close, and the workers hold them) answers signal 0 like a live
    one; /proc tells them apart."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the pid was reused by another user's process
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (not Linux): signal 0 is all there is
        return True
    return state not in (b"Z", b"X")


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends, then act on them: an interrupt
    in the middle of a worker's start leaves a worker its pool does not know, which outlives
    the pool's clean-up and fails loudly. (Python runs handlers in the main thread whichever
    thread the signal reaches, so the handlers are swapped, not the thread's signal mask.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {number: signal.getsignal(number) for number in held}
    for number in held:
        signal.signal(number, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for signum in caught:
            signal.raise_signal(signum)


def max_workers() -> int:
    """The most worker processes a command accepts: four per core this process may use.
    More cannot go faster, and each holds its own copy of the work's memory: 100000 of
    them would bring the machine down."""
    return 4 * _cores()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Worker processes for parallel work (simulation, validation features): the cores this
    process may use, at most 8."""
    return max(1, min(_cores(), 8))


# A pool's descriptors in this process: the forkserver's socket and pipes, the queues', and
# a sentinel and pipes per worker (measured: validate's plot pool of two ran at `ulimit -n`
# 24 and failed at 20).
POOL_DESCRIPTORS = 8
WORKER_DESCRIPTORS = 4


def workers_within_descriptors(workers: int) -> int:
    """`workers`, or fewer where this process's open-file limit (`ulimit -n`) leaves too few
    descriptors for a pool of them; 1 (work in this process) where none fits. Unchanged where
    the limit or the open count cannot be read."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        open_now = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError):
        return workers
    if soft == resource.RLIM_INFINITY:
        return workers
    fits = (soft - open_now - POOL_DESCRIPTORS) // WORKER_DESCRIPTORS
    return workers if fits >= workers else max(1, fits)
