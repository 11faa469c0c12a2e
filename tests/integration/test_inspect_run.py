"""`caloforge inspect RUN`: a run or checkpoint folder summarised from its config and pointers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caloforge.cli import main
from caloforge.models import build_model, parameter_counts
from caloforge.models.checkpoint import BEST, summarize_checkpoint
from caloforge.training.checkpoint import save_checkpoint, write_pointer

CHECK = {"response_error": 0.0421, "profile_error": 0.0137, "score": 0.0558}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A gan3d run folder with checkpoints at steps 10 and 20; the best is step 10."""
    from caloforge.data.transforms import Power

    run = tmp_path / "run"
    bundle = build_model("gan3d", seed=1)
    training = {
        "batch_size": 32,
        "epochs": 60,
        "max_steps": 180,
        "condition_ranges": {"energy": [10.04, 199.95]},
        "data": [str(tmp_path / "showers.h5")],
        "family": "gan3d",
    }
    folders = []
    for step in (10, 20):
        folders.append(
            save_checkpoint(
                run,
                step=step,
                epoch=step // 10,
                bundle=bundle,
                transform=Power(0.85, scale=100.0),
                geometry=bundle.config.resolved_geometry,
                training=training,
                trainer_state={},
            )
        )
    write_pointer(run / BEST, folders[0], {"step": 10, "check": CHECK})
    return run


def test_a_run_folder_is_summarised(run, tmp_path, capsys):
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"{run} (run folder)" in out
    assert "family        gan3d" in out
    assert "geometry      clic-25, showers 25 x 25 x 25, conditions energy" in out
    assert "checkpoints/step-00000010 (the best): step 10, epoch 1" in out
    assert "latest 20; checkpoints kept at 10, 20" in out
    assert "max_steps 180, epochs 60, batch_size 32" in out
    assert "best check    step 10: score 0.0558, response error 0.0421" in out
    assert f"data          {tmp_path / 'showers.h5'}" in out
    assert "energy        10.04 : 199.95 GeV (training data)" in out
    counts = parameter_counts(build_model("gan3d"))
    assert f"generator {counts['generator']:,}, discriminator {counts['discriminator']:,}" in out


def test_a_resumed_run_shows_the_length_it_now_trains_to(run, capsys):
    """The README's first hour: 300 steps, then `--resume training.max_steps=400`; the best
    checkpoint may be one of the first 300, the run's planned length is 400."""
    latest = run / "checkpoints" / "step-00000020" / "config.json"
    config = json.loads(latest.read_text())
    config["training"]["max_steps"] = 400
    latest.write_text(json.dumps(config))
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "(the best): step 10" in out and "max_steps 400, epochs 60" in out


def test_a_checkpoint_folder_names_its_run_and_its_own_step(run, capsys):
    checkpoint = run / "checkpoints" / "step-00000020"
    summary = summarize_checkpoint(checkpoint)
    assert summary.run == run and summary.step == 20 and summary.steps == (10, 20)
    assert main(["inspect", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert f"(checkpoint of the run {run})" in out
    assert "step-00000020 (the latest; no best.json)" not in out  # the run has a best.json
    assert "step-00000020 (the run's best is step 10): step 20, epoch 2" in out


def test_a_run_without_a_best_check_or_recorded_data_says_so(run, capsys):
    (run / BEST).unlink()
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "step-00000020 (the latest; no best.json): step 20" in out
    assert "best check    none yet (no best.json)" in out


def test_a_folder_that_is_neither_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["inspect", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "empty: not a checkpoint (no config.json) nor a run folder" in err
    assert "Traceback" not in err
