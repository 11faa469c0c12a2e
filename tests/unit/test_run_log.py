"""The run log: records in metrics.jsonl, cut back on resume, TensorBoard named when absent."""

from __future__ import annotations

import builtins
import errno
import json

import pytest

from caloforge.errors import OutputError
from caloforge.training import run_log
from caloforge.training.run_log import METRICS, RunLog


@pytest.fixture
def no_tensorboard(monkeypatch):
    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    monkeypatch.setattr(run_log, "_missing_said", False)  # as in a new process


def test_records_are_kept_and_cut_back_to_a_step(tmp_path, no_tensorboard, capsys):
    log = RunLog(tmp_path)
    for step in (1, 2, 3, 4):
        log.write({"event": "step", "step": step, "loss": 0.5 / step})
    with open(tmp_path / METRICS, "a") as f:
        f.write('{"event": "step", "st')  # a line cut by a kill
    log.truncate(2)
    lines = (tmp_path / METRICS).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    log.close()
    # the missing TensorBoard is named once, with the extra that brings it
    err = capsys.readouterr().err
    assert err.count("caloforge[tensorboard]") == 1


def test_the_missing_tensorboard_is_named_once_a_process(tmp_path, no_tensorboard, capsys):
    """A tune study trains one run per trial in one process: the note comes once."""
    for trial in ("0000", "0001"):
        log = RunLog(tmp_path / trial)
        log.write({"event": "step", "step": 1})
        log.close()
    assert capsys.readouterr().err.count("caloforge[tensorboard]") == 1


def test_a_disabled_log_writes_nothing(tmp_path):
    log = RunLog(tmp_path / "run", enabled=False)
    log.write({"event": "step", "step": 1})
    log.truncate(0)
    assert not (tmp_path / "run").exists()


class _FullDisk:
    """A stand-in TensorBoard writer on a full disk."""

    def __init__(self) -> None:
        self.calls = 0

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.calls += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_tensorboard_on_a_full_disk_is_one_line_and_given_up(tmp_path):
    log = RunLog(tmp_path)
    writer = _FullDisk()
    log._writer = writer  # as if SummaryWriter had opened
    with pytest.raises(OutputError) as caught:
        log.write({"event": "step", "step": 1, "loss": 0.5})
    message = str(caught.value)
    assert "\n" not in message and "tensorboard" in message
    assert "No space left on device (disk full)" in message
    # metrics.jsonl has the record; the mirror is given up: no second failure, none at close
    assert json.loads((tmp_path / METRICS).read_text())["step"] == 1
    log.write({"event": "step", "step": 2, "loss": 0.25})
    log.close()
    assert writer.calls == 1


def test_other_errors_of_the_mirror_are_not_hidden(tmp_path):
    class Broken(_FullDisk):
        def add_scalar(self, tag: str, value: float, step: int) -> None:
            raise OSError(errno.EBADF, "Bad file descriptor")  # a bug, not the disk

    log = RunLog(tmp_path)
    log._writer = Broken()
    with pytest.raises(OSError, match="Bad file descriptor"):
        log.write({"event": "step", "step": 1, "loss": 0.5})
