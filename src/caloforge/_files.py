"""Output files that never look complete before they are.

Everything caloforge writes goes to a temporary name beside the final one and is renamed
into place only when it is whole; a crash or an error leaves no file under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(final: str | os.PathLike[str]) -> Path:
    """The temporary name for `final` (same folder, so the rename is atomic)."""
    final = Path(final)
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def commit(partial: Path, final: str | os.PathLike[str]) -> None:
    """Move a finished temporary file into place, atomically."""
    os.replace(partial, final)


def discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)


@contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(final)
    try:
        yield partial
    except BaseException:
        discard(partial)
        raise
    commit(partial, final)
