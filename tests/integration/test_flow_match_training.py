"""flow-match in the trainer and the CLI: exact resume, train then `caloforge generate`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloforge.cli import main
from caloforge.simulation.run import simulate_to_file
from caloforge.training.config import load_config
from caloforge.training.trainer import Trainer

TINY = {
    "energy_hidden": 16,
    "energy_blocks": 1,
    "shape_hidden": 32,
    "shape_blocks": 1,
    "energy_steps": 3,
    "shape_steps": 2,
    "fit_showers": 32,
}
TINY_OVERRIDES = [f"model.{k}={v}" for k, v in TINY.items()]
FAST = ["training.check_showers=8", "training.window=8", "training.log_every=1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clic.h5"
    simulate_to_file(path, geometry="clic-25", n=48, energy=(10.0, 200.0), seed=3, workers=1)
    return path


def step_records(run: Path) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["fm_energy"], r["fm_shape"]) for r in records if r["event"] == "step"]


def test_resumed_run_gives_the_same_losses(clic_file: Path, tmp_path: Path) -> None:
    # A constant rate: the preset's cosine schedule depends on max_steps, which the
    # interrupted run has shorter.
    common = [*FAST, *TINY_OVERRIDES, "training.batch_size=8", "training.checkpoint_every=3"]
    common.append("training.optimizer.schedule=constant")
    six = load_config("flow-match", [*common, "training.max_steps=6"])
    three = load_config("flow-match", [*common, "training.max_steps=3"])
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    Trainer(six, clic_file, whole).fit()
    Trainer(three, clic_file, parts).fit()
    Trainer(six, clic_file, parts, resume=True).fit()
    expected = step_records(whole)
    assert [s for s, *_ in expected] == list(range(1, 7))
    assert step_records(parts) == expected  # bit for bit on CPU


def test_train_then_generate_from_the_command_line(
    clic_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, out = tmp_path / "run", tmp_path / "gen.h5"
    overrides = [*FAST, *TINY_OVERRIDES, "training.batch_size=8", "training.max_steps=4"]
    args = ["train", "--config", "flow-match", "--data", str(clic_file), "--out", str(run)]
    assert main([*args, *overrides]) == 0
    # the pass over the data before the first step says so (24 s of silence on the README's
    # first-hour data, in `tune`'s trials too)
    assert "caloforge train: fitting the preprocessing" in capsys.readouterr().out
    generate = ["generate", "--checkpoint", str(run), "--conditions-from", str(clic_file)]
    assert main([*generate, "--n", "5", "--seed", "3", "-o", str(out)]) == 0
    with h5py.File(out) as f, h5py.File(clic_file) as ref:
        showers = f["showers"][:]
        assert showers.shape == (5, 25, 25, 25)
        np.testing.assert_array_equal(f["energy"][:], ref["energy"][:5])
    assert (
        np.isfinite(showers).all()
        and (showers >= 0).all()
        and (showers.sum(axis=(1, 2, 3)) > 0).all()
    )


# --- training.shape_patience: stage 2 stops at its best check -------------------------------
# The physics checks' layer-width errors are scripted (the real ones of a few tiny steps are
# noise): best at the second check, then two worse ones, so patience 2 freezes stage 2 at
# step 4 with the weights of step 2.
WIDTHS = [0.9, 0.4, 0.5, 0.6, 0.3, 0.2]
PROFILES = [0.0] * 6  # the checks' profile errors (their score adds the width's)


@pytest.fixture
def scripted_widths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from caloforge.training import trainer as trainer_module
    from caloforge.training.physics_check import PhysicsCheck

    calls: list[int] = []

    def check(*args: object, **kwargs: object) -> PhysicsCheck:
        calls.append(1)
        i = len(calls) - 1
        return PhysicsCheck(0.02, 0.02, 0.0, PROFILES[i], 0.0, width_error=WIDTHS[i])

    monkeypatch.setattr(trainer_module, "run_check", check)
    return calls


def stopping_config(max_steps: int, patience: int = 2) -> object:
    overrides = [*FAST, *TINY_OVERRIDES, "training.batch_size=8", "training.check_every=1"]
    overrides += [f"training.shape_patience={patience}", "training.optimizer.schedule=constant"]
    overrides += ["training.keep_checkpoints=10", f"training.max_steps={max_steps}"]
    return load_config("flow-match", overrides)


def weights(folder: Path, prefix: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    found = load_file(str(folder / "model.safetensors"))
    chosen = {k: v for k, v in found.items() if prefix in k}
    assert chosen, f"no {prefix} weights in {folder}"
    return chosen


def assert_same_weights(a: Path, b: Path, prefix: str) -> None:
    """The weights whose names contain `prefix` are identical in checkpoints `a` and `b`."""
    expected = weights(b, prefix)
    for key, value in weights(a, prefix).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_shape_patience_freezes_stage_2_at_its_best_check(
    clic_file: Path, tmp_path: Path, scripted_widths: list[int]
) -> None:
    run = tmp_path / "run"
    Trainer(stopping_config(6), clic_file, run).fit()  # type: ignore[arg-type]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    frozen = [r for r in records if r["event"] == "shape_frozen"]
    assert frozen == [{"event": "shape_frozen", "step": 4, "best_step": 2, "width_error": 0.4}]
    from caloforge.models.checkpoint import summarize_checkpoint

    expected = "stage 2 frozen at step 4 with the weights of step 2 (width error 0.4"
    assert any(note.startswith(expected) for note in summarize_checkpoint(run).notes)
    # The later, smaller widths (steps 5, 6) change nothing: stage 2 no longer trains.
    assert [s for s, _, shape in step_records(run) if shape == 0.0] == [5, 6]
    steps = run / "checkpoints"
    for prefix in ("shape_net.", "ema.shape_net."):
        assert_same_weights(steps / "step-00000006", steps / "step-00000002", prefix)
        best = weights(steps / "step-00000002", prefix)
        moved = weights(steps / "step-00000003", prefix)  # trained on after the best check
        assert any(not np.array_equal(moved[k], v) for k, v in best.items())
    energy_best = weights(steps / "step-00000002", "energy_net.")
    energy_last = weights(steps / "step-00000006", "energy_net.")
    assert any(not np.array_equal(energy_last[k], v) for k, v in energy_best.items())


def test_a_frozen_stage_2_leaves_stage_1_as_training_both_would(
    clic_file: Path, tmp_path: Path, scripted_widths: list[int]
) -> None:
    # The stages share no weight, no gradient clipping and no random draw that the freeze
    # skips: the frozen run's weights are the unfrozen run's stage 1 at its end and stage 2
    # at its best check, bit for bit (what benchmarks/combine_stages.py makes by hand).
    frozen, both = tmp_path / "frozen", tmp_path / "both"
    Trainer(stopping_config(6), clic_file, frozen).fit()  # type: ignore[arg-type]
    scripted_widths.clear()
    Trainer(stopping_config(6, patience=0), clic_file, both).fit()  # type: ignore[arg-type]
    assert "shape_frozen" not in (both / "metrics.jsonl").read_text()
    last = frozen / "checkpoints/step-00000006"
    for prefix, step in (("energy_net.", 6), ("shape_net.", 2)):
        assert_same_weights(last, both / f"checkpoints/step-{step:08d}", prefix)


def test_the_check_that_froze_stage_2_names_no_best_checkpoint(
    clic_file: Path, tmp_path: Path, scripted_widths: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scores 1.9, 1.4, 1.0, 0.6: step 4's is the lowest, but its numbers are those of the
    # stage 2 that the freeze then replaced: best.json stays at step 3.
    monkeypatch.setattr(sys.modules[__name__], "PROFILES", [1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    run = tmp_path / "run"
    Trainer(stopping_config(4), clic_file, run).fit()  # type: ignore[arg-type]
    assert "shape_frozen" in (run / "metrics.jsonl").read_text()
    assert json.loads((run / "best.json").read_text())["step"] == 3


def test_shape_patience_resumes_as_the_uninterrupted_run(
    clic_file: Path, tmp_path: Path, scripted_widths: list[int]
) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    Trainer(stopping_config(6), clic_file, whole).fit()  # type: ignore[arg-type]
    scripted_widths.clear()
    Trainer(stopping_config(3), clic_file, parts).fit()  # type: ignore[arg-type]
    Trainer(stopping_config(6), clic_file, parts, resume=True).fit()  # type: ignore[arg-type]
    assert step_records(parts) == step_records(whole)  # stopped at the same step, bit for bit
    end = "checkpoints/step-00000006"
    for prefix in ("shape_net.", "energy_net."):
        assert_same_weights(parts / end, whole / end, prefix)


def test_shape_patience_is_refused_for_a_family_without_stages(
    clic_file: Path, tmp_path: Path
) -> None:
    from caloforge.training.config import TrainConfigError

    overrides = ["training.shape_patience=2", "training.max_steps=1", "training.batch_size=8"]
    config = load_config("gan3d", overrides)
    with pytest.raises(TrainConfigError, match="shape_patience=2: only flow-match"):
        Trainer(config, clic_file, tmp_path / "run")
