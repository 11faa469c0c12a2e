"""The run log: records in metrics.jsonl, cut back on resume, TensorBoard named when absent."""

from __future__ import annotations

import builtins
import json

import pytest

from caloforge.training.run_log import METRICS, RunLog


@pytest.fixture
def no_tensorboard(monkeypatch):
    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)


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


def test_a_disabled_log_writes_nothing(tmp_path):
    log = RunLog(tmp_path / "run", enabled=False)
    log.write({"event": "step", "step": 1})
    log.truncate(0)
    assert not (tmp_path / "run").exists()
