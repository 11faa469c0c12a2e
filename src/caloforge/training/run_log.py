"""A run's log: one JSON record a line in `metrics.jsonl`, mirrored to TensorBoard when
it is installed (the `caloforge[tensorboard]` extra)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from caloforge._files import atomic_output, is_write_failure, os_error_text
from caloforge.errors import OutputError

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
# Whether this process has said that TensorBoard is missing: once, not once per run (a tune
# study trains a run per trial).
_missing_said = False


class RunLog:
    """The records of one run folder. Only rank 0 writes: on other ranks `enabled` is False
    and every method does nothing."""

    def __init__(self, run_dir: Path, *, enabled: bool = True) -> None:
        self.path = run_dir / METRICS
        self.run_dir = run_dir
        self.enabled = enabled
        self._writer: Any = None  # None: not opened yet; False: TensorBoard is not installed

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            if not is_write_failure(exc):
                raise
            raise OutputError(
                f"{self.path}: the log could not be written ({os_error_text(exc)})"
            ) from None
        with self._mirroring():
            writer = self._tensorboard()
            if writer is not None:
                event = record.get("event", "train")
                for key, value in record.items():
                    if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                        writer.add_scalar(f"{event}/{key}", value, record["step"])
                writer.flush()

    @contextmanager
    def _mirroring(self) -> Iterator[None]:
        """A write to TensorBoard that the file system refuses (a full disk) gives up the
        mirror, without another write, and stops the run with one line: the checkpoints
        written so far are whole (each is written aside and renamed) and resume."""
        try:
            yield
        except OSError as exc:
            if not is_write_failure(exc):
                raise
            writer, self._writer = self._writer, False
            if writer:
                with suppress(OSError, RuntimeError):
                    writer.close()
            raise OutputError(
                f"{self.run_dir / TENSORBOARD}: the TensorBoard log could not be written "
                f"({os_error_text(exc)}); the checkpoints written so far are kept"
            ) from None

    def truncate(self, step: int) -> None:
        """Keep the records up to `step` (the checkpoint a run resumes from): the steps after
        it run again and are logged again. A line cut by a kill is dropped."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                record_step = int(record.get("step", 0))
            except (ValueError, TypeError, AttributeError):
                continue
            if record_step <= step:
                kept.append(line + "\n")
        with atomic_output(self.path) as partial:
            partial.write_text("".join(kept))

    def close(self) -> None:
        with self._mirroring():
            if self._writer:
                self._writer.close()
            self._writer = None

    def _tensorboard(self) -> Any:
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                global _missing_said
                self._writer = False
                if not _missing_said:
                    _missing_said = True
                    print(
                        f"caloforge train: {self.path.name} only; for {TENSORBOARD}/ install the "
                        "tensorboard package (pip install 'caloforge[tensorboard]')",
                        file=sys.stderr,
                    )
            else:
                self._writer = SummaryWriter(str(self.run_dir / TENSORBOARD))
        return self._writer or None
