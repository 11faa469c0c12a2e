"""Worker processes that never outlive the process that started them."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

__all__ = ["die_with_parent"]

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
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGKILL)
            except PermissionError:  # the pid was reused by another user's process
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="caloforge-owner-watch", daemon=True).start()
