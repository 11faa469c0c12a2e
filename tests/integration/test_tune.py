"""`caloforge tune` end to end on tiny data: a study of three trials of a tiny flow-match on a
6x6x5 calorimeter, its page and the chosen preset (which `caloforge train` accepts); a study
killed in the middle of a trial and resumed; a bad space refused before anything is written.

The data (600 showers) is made with `caloforge simulate` in the module's temporary folder;
the recipe's test split (60 showers) is what every trial is judged on.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caloforge.cli import main
from caloforge.training.config import load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GEOMETRY = """\
name: tune-test
shape: [6, 6, 5]
readout: layers
cell_size_mm: [5, 5]
layers:
  - {absorber: W, absorber_mm: 3.5, sensor: Si, sensor_mm: 0.5, repeat: 5}
conditions:
  - {name: energy, unit: GeV, default: [10, 100], valid: [1, 500]}
"""
SPACE = """\
parameters:
  training.optimizer.lr_generator: {low: 1.0e-4, high: 1.0e-2, log: true}
  model.shape_steps: {low: 1, high: 3}
  model.shape_hidden: {choices: [16, 32]}
"""
# Enough for the metrics that 60 held-out showers allow (the response and resolution over
# all showers, KPD, the projection MSE); the classifiers and FPD need more and say so.
VALIDATION = "subsample: 60\nssim_pairs: 20\nmin_showers: 20\nclassifier_showers: 200\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tune")
    geometry = folder / "geometry.yaml"
    geometry.write_text(GEOMETRY)
    data = folder / "showers.h5"
    simulate = ["simulate", "--geometry", str(geometry), "--n", "600", "--energy", "10:100"]
    assert main([*simulate, "--seed", "1", "--workers", "1", "-o", str(data)]) == 0
    (folder / "space.yaml").write_text(SPACE)
    (folder / "validation.yaml").write_text(VALIDATION)
    return {
        "folder": folder,
        "geometry": geometry,
        "data": data,
        "space": folder / "space.yaml",
        "validation": folder / "validation.yaml",
    }


def tiny_model(inputs: dict[str, Path]) -> list[str]:
    return [
        f"model.geometry={inputs['geometry']}",
        "model.energy_hidden=16",
        "model.energy_blocks=1",
        "model.shape_blocks=1",
        "model.energy_steps=3",
        "model.fit_showers=64",
        "model.ema_decay=0",  # the raw weights: a few steps already tell trials apart
        "training.batch_size=32",
        "training.check_showers=32",
        "training.optimizer.warmup_steps=0",
    ]


def tune_args(inputs: dict[str, Path], out: Path, *options: str) -> list[str]:
    return [
        "tune",
        "--config",
        "flow-match",
        "--data",
        str(inputs["data"]),
        "--space",
        str(inputs["space"]),
        "--out",
        str(out),
        "--validation",
        str(inputs["validation"]),
        "--reports",
        "none",
        *options,
        *tiny_model(inputs),
    ]


def summary(out: Path) -> dict:
    return json.loads((out / "trials.json").read_text())


def test_a_tiny_study_end_to_end(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "study"
    args = tune_args(inputs, out, "--trials", "3", "--budget-steps", "12")
    args[args.index("none")] = "chosen"  # the chosen trial's full report, announced
    assert main(args) == 0
    # after each trial's training (a minute of silence on 2 cores before): its stages said
    captured = capsys.readouterr()
    for doing in ("showers for the held-out", "validating them", "the generator's cost"):
        assert f"caloforge tune: trial 0: {doing}" in captured.out, doing
    assert "caloforge tune: the full validation report of trial" in captured.err
    doc = summary(out)
    assert len(doc["trials"]) == 3
    done = [t for t in doc["trials"] if t["state"] == "complete"]
    assert done, doc["trials"]
    for trial in done:
        fidelity, gflop = trial["objectives"]["fidelity"], trial["objectives"]["gflop_per_shower"]
        assert 0 < fidelity < math.inf and gflop > 0
        assert trial["steps"] == 12 and trial["gflop_per_shower"] > 0
        assert {h["key"] for h in trial["headline"]} >= {"response_deviation", "kpd"}
        assert set(trial["values"]) == {
            "training.optimizer.lr_generator",
            "model.shape_steps",
            "model.shape_hidden",
        }
    chosen = next(t for t in doc["trials"] if t["number"] == doc["chosen"])
    assert chosen["pareto"]
    # the best fidelity of the completed trials (the default rule)
    assert chosen["objectives"]["fidelity"] == min(t["objectives"]["fidelity"] for t in done)

    page = (out / "report.html").read_text()
    assert "Pareto front" in page and "Parameter importance" in page
    assert page.count("data:image/png;base64,") >= 1 + len(done)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing from outside

    # The chosen preset: the trial's values at their paths, the budget left out, and
    # `caloforge train --config` trains it.
    preset = out / "chosen.yaml"
    config = load_config(preset)
    values = chosen["values"]
    assert config.model["shape_hidden"] == values["model.shape_hidden"]
    assert config.model["shape_steps"] == values["model.shape_steps"]
    assert config.training.optimizer.lr_generator == values["training.optimizer.lr_generator"]
    assert config.training.max_steps is None and config.training.epochs == 40
    run = tmp_path / "run"
    train = ["train", "--config", str(preset), "--data", str(inputs["data"]), "--out", str(run)]
    assert main([*train, "training.max_steps=2"]) == 0
    assert (run / "latest.json").is_file()


def trial_rows(out: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(out / "study.db") as db:
        return list(db.execute("select number, state from trials order by number"))


def test_a_killed_study_resumes_and_runs_the_interrupted_trial_again(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "study"
    args = tune_args(inputs, out, "--trials", "3", "--budget-steps", "20", "--no-prune")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "caloforge", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        # Killed while its second trial trains (its first is finished).
        while not (out / "trials" / "0001" / "metrics.jsonl").is_file():
            assert child.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the second trial never started"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    rows = trial_rows(out)
    assert "RUNNING" in {state for _, state in rows}, rows
    interrupted = next(number for number, state in rows if state == "RUNNING")

    # A second start without --resume is refused; with another space too.
    assert main(tune_args(inputs, out, "--trials", "3", "--budget-steps", "20")) == 2
    other = tmp_path / "other.yaml"
    other.write_text("parameters:\n  model.shape_steps: {low: 1, high: 2}\n")
    changed = tune_args(inputs, out, "--trials", "3", "--budget-steps", "20", "--no-prune")
    changed[changed.index(str(inputs["space"]))] = str(other)
    assert main([*changed, "--resume"]) == 2

    assert main([*args, "--resume"]) == 0
    doc = summary(out)
    counted = doc["trials"]
    assert len(counted) == 3 and all(t["state"] == "complete" for t in counted)
    assert interrupted not in {t["number"] for t in counted}
    with sqlite3.connect(out / "study.db") as db:
        attrs = dict(
            ((number, key), value)
            for number, key, value in db.execute(
                "select t.number, a.key, a.value_json from trial_user_attributes a "
                "join trials t on t.trial_id = a.trial_id"
            )
        )
        params = {}
        for number, name, value in db.execute(
            "select t.number, p.param_name, p.param_value from trial_params p "
            "join trials t on t.trial_id = p.trial_id"
        ):
            params.setdefault(number, {})[name] = value
    assert attrs[(interrupted, "interrupted")] == "true"
    retry = next(n for (n, key), v in attrs.items() if key == "retry_of" and v == str(interrupted))
    assert params[retry] == params[interrupted]  # the same values, run again
    assert retry in {t["number"] for t in counted}


def test_a_bad_space_is_refused_before_anything_is_written(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters:\n  training.optimizer.lr_generator: {low: 0, high: 1, log: true}\n")
    out = tmp_path / "study"
    args = tune_args(inputs, out, "--trials", "2", "--budget-steps", "4")
    args[args.index(str(inputs["space"]))] = str(bad)
    assert main(args) == 2
    error = capsys.readouterr().err
    assert f"{bad}: parameter 'training.optimizer.lr_generator'" in error
    assert "log range needs bounds > 0" in error
    assert not out.exists()


@pytest.mark.slow
def test_two_workers_share_the_study_and_the_chosen_trial_is_validated_in_full(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "study"
    args = tune_args(inputs, out, "--trials", "4", "--budget-steps", "12", "--workers", "2")
    args[args.index("none")] = "chosen"
    assert main(args) == 0
    doc = summary(out)
    assert len(doc["trials"]) == 4
    with sqlite3.connect(out / "study.db") as db:
        pids = {
            v
            for (v,) in db.execute("select value_json from trial_user_attributes where key = 'pid'")
        }
    assert len(pids) == 2  # each worker ran trials
    report = out / "trials" / f"{doc['chosen']:04d}" / "validation"
    assert (report / "index.html").is_file() and (report / "metrics.json").is_file()
    page = (out / "report.html").read_text()
    assert f"trials/{doc['chosen']:04d}/validation/index.html" in page
    assert "against the held-out showers: response vs energy" in page
