"""`generate_to_file` end to end: a checkpoint on disk to a canonical shower file."""

from __future__ import annotations

import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from caloforge.data.canonical import ShowerWriter
from caloforge.data.io import open_showers
from caloforge.data.source import Batch
from caloforge.data.transforms import Power
from caloforge.errors import CaloforgeError, ConditionError, InputFileError
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.generation.run import (
    OutsideTrainingRangeWarning,
    generate_to_file,
    noise_generator,
)
from caloforge.geometry import PRESETS
from caloforge.models import build_model
from caloforge.models.checkpoint import WEIGHTS, CheckpointError
from caloforge.simulation.conditions import ConditionRanges, sample_conditions
from caloforge.training.checkpoint import save_checkpoint
from shower_files import make_lcd_fixed, make_lhcb

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_checkpoint(run_dir: Path, family: str, training: dict[str, Any] | None = None) -> Path:
    """A checkpoint of `family` with random (seeded) weights; returns its folder."""
    bundle = build_model(family, seed=7)
    return save_checkpoint(
        run_dir,
        step=1,
        epoch=0,
        bundle=bundle,
        transform=Power(0.85, scale=100.0),
        geometry=bundle.config.resolved_geometry,
        training=training or {},
        trainer_state={},
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run folders (not checkpoint folders: generate resolves them) of both families."""
    root = tmp_path_factory.mktemp("runs")
    for family in ("gan3d", "wgan-lhcb"):
        make_checkpoint(root / family, family)
    return {family: root / family for family in ("gan3d", "wgan-lhcb")}


def read(path: Path) -> Batch:
    with closing(open_showers(path)) as source:
        return source.read(0, len(source))


def outputs(folder: Path) -> list[Path]:
    """Everything in `folder`, partial files included."""
    return sorted(folder.iterdir()) if folder.exists() else []


def test_file_holds_the_pipelines_showers_in_gev_batch_by_batch(runs, tmp_path):
    out = generate_to_file(
        runs["gan3d"], tmp_path / "gen.h5", n=10, energy=(10.0, 50.0), batch_size=4, seed=3
    )
    assert out == tmp_path / "gen.h5"
    with h5py.File(out) as f:
        assert f["showers"].shape == (10, 25, 25, 25) and f["showers"].dtype == np.float32
        assert f.attrs["geometry"] == "clic-25"
        assert '"showers": "GeV"' in f.attrs["units"]
        producer = str(f.attrs["producer"])
    assert "caloforge generate (gan3d checkpoint" in producer
    assert str((runs["gan3d"] / "checkpoints" / "step-00000001").resolve()) in producer
    assert "seed 3" in producer and "backend eager (pytorch)" in producer

    batch = read(out)
    assert np.isfinite(batch.showers).all() and (batch.showers >= 0).all()
    assert batch.showers.sum() > 0
    # Conditions drawn as simulate draws them, noise from (seed, first index): by hand.
    geometry = PRESETS["clic-25"]
    ranges = ConditionRanges.for_geometry(geometry, energy=(10.0, 50.0))
    pipeline = ShowerPipeline.from_checkpoint(runs["gan3d"])
    for start in (0, 4, 8):
        size = min(4, 10 - start)
        conditions = sample_conditions(geometry, ranges, size, np.random.default_rng([3, start]))
        expected = pipeline(conditions, generator=noise_generator(3, start))
        rows = slice(start, start + size)
        np.testing.assert_array_equal(batch.energy[rows], conditions["energy"])
        np.testing.assert_array_equal(batch.showers[rows], expected.showers)


def test_same_seed_same_file_other_seed_other_showers(runs, tmp_path):
    def generate(name: str, seed: int) -> Batch:
        path = generate_to_file(runs["wgan-lhcb"], tmp_path / name, n=12, batch_size=5, seed=seed)
        return read(path)

    a, b, c = generate("a.h5", 1), generate("b.h5", 1), generate("c.h5", 2)
    np.testing.assert_array_equal(a.showers, b.showers)
    for name in ("energy", "momentum", "point"):
        np.testing.assert_array_equal(a.conditions[name], b.conditions[name])
    assert not np.allclose(a.showers, c.showers)
    assert not np.allclose(a.conditions["point"], c.conditions["point"])
    # The geometry's defaults: lhcb-30 draws energy 1:100 GeV, points -5:5 mm.
    assert a.energy.min() >= 1 and a.energy.max() <= 100
    assert np.abs(a.conditions["point"]).max() <= 5


@pytest.mark.parametrize(
    ("family", "make", "suffix"),
    [("gan3d", make_lcd_fixed, ".h5"), ("wgan-lhcb", make_lhcb, ".npz")],
)
def test_conditions_from_a_reference_are_reproduced_exactly(runs, tmp_path, family, make, suffix):
    reference = tmp_path / f"reference{suffix}"
    make(reference, 5)
    with closing(open_showers(reference)) as source:
        truth = {name: np.array(values) for name, values in source.conditions.items()}

    whole = read(
        generate_to_file(runs[family], tmp_path / "all.h5", conditions_from=reference, batch_size=2)
    )
    assert len(whole) == 5
    for name, values in truth.items():
        np.testing.assert_array_equal(whole.conditions[name], values)

    first = read(
        generate_to_file(runs[family], tmp_path / "first.h5", conditions_from=reference, n=3)
    )
    assert len(first) == 3
    for name, values in truth.items():
        np.testing.assert_array_equal(first.conditions[name], values[:3])

    with pytest.raises(CaloforgeError, match="has 5 showers; ask for 1 to 5"):
        generate_to_file(runs[family], tmp_path / "more.h5", conditions_from=reference, n=6)
    assert not (tmp_path / "more.h5").exists()


def test_a_reference_of_another_geometry_is_refused(runs, tmp_path):
    reference = tmp_path / "lhcb.npz"
    make_lhcb(reference, 3)
    out = tmp_path / "out" / "gen.h5"
    with pytest.raises(InputFileError, match="another geometry") as info:
        generate_to_file(runs["gan3d"], out, conditions_from=reference)
    message = str(info.value)
    assert "'clic-25'" in message and "'lhcb-30'" in message and "lhcb.npz" in message
    assert outputs(out.parent) == []


def test_a_reference_outside_the_geometrys_valid_range_is_refused(runs, tmp_path):
    reference = tmp_path / "far.h5"
    geometry = PRESETS["clic-25"]
    with ShowerWriter(reference, geometry) as writer:
        showers = np.zeros((2, *geometry.shape), dtype=np.float32)
        writer.write(Batch(showers, {"energy": np.array([100.0, 2000.0])}))
    with pytest.raises(ConditionError, match="valid for 1:1000 GeV"):
        generate_to_file(runs["gan3d"], tmp_path / "gen.h5", conditions_from=reference)
    assert not (tmp_path / "gen.h5").exists()


def test_requested_ranges_outside_the_geometry_are_refused(runs, tmp_path):
    with pytest.raises(ConditionError, match="valid for 1:1000 GeV"):
        generate_to_file(runs["gan3d"], tmp_path / "gen.h5", n=4, energy=(0.1, 5.0))
    with pytest.raises(ConditionError, match="no 'theta' condition"):
        generate_to_file(runs["gan3d"], tmp_path / "gen.h5", n=4, theta_deg=(60.0, 120.0))
    assert outputs(tmp_path) == []


@pytest.fixture(scope="module")
def narrow_run(tmp_path_factory) -> Path:
    """A wgan-lhcb checkpoint trained on energies 1:50 GeV and points within 2 mm."""
    run = tmp_path_factory.mktemp("narrow") / "run"
    ranges = {"energy": [1.0, 50.0], "point": [[-2.0, 2.0], [-2.0, 2.0]], "momentum": [0, 1]}
    make_checkpoint(run, "wgan-lhcb", training={"condition_ranges": ranges})
    return run


def test_outside_the_training_range_warns_once_with_the_count(narrow_run, tmp_path):
    out = tmp_path / "gen.h5"
    with pytest.warns(OutsideTrainingRangeWarning) as records:
        generate_to_file(
            narrow_run, out, n=16, energy=(10.0, 100.0), point=(-2.0, 2.0), batch_size=5, seed=2
        )
    assert len(records) == 1
    energy = read(out).energy
    count = int((energy > 50).sum())
    assert 0 < count < 16
    message = str(records[0].message)
    assert f"{count} of 16 showers" in message
    assert "energy: " in message and "1:50 GeV" in message and "point:" not in message


def test_outside_the_training_range_counts_showers_not_conditions(narrow_run, tmp_path):
    out = tmp_path / "gen.h5"
    with pytest.warns(OutsideTrainingRangeWarning) as records:
        generate_to_file(narrow_run, out, n=16, energy=(40.0, 60.0), point=(-3.0, 3.0), seed=5)
    batch = read(out)
    outside = (batch.energy > 50) | (np.abs(batch.conditions["point"]) > 2).any(axis=1)
    assert f"{int(outside.sum())} of 16 showers" in str(records[0].message)


def test_strict_refuses_outside_the_training_range_and_writes_nothing(narrow_run, tmp_path):
    with pytest.raises(CaloforgeError, match=r"of 8 showers .*\(strict mode refuses them\)"):
        generate_to_file(narrow_run, tmp_path / "gen.h5", n=8, energy=(10.0, 100.0), strict=True)
    assert outputs(tmp_path) == []


def test_inside_the_training_range_nothing_is_said(narrow_run, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate_to_file(
            narrow_run,
            tmp_path / "gen.h5",
            n=8,
            energy=(5.0, 50.0),
            point=(-2.0, 2.0),
            strict=True,
        )


def test_a_model_failing_mid_file_leaves_no_file(tmp_path, monkeypatch):
    folder = make_checkpoint(tmp_path / "run", "wgan-lhcb")
    from safetensors.torch import load_file, save_file

    # Loading refuses NaN weights (and changed bytes) now; the check of the generated
    # showers is under test here, so the model is let through to produce NaN cells.
    monkeypatch.setattr("caloforge.models.checkpoint._check_weights", lambda *args: None)

    tensors = load_file(str(folder / WEIGHTS))
    tensors["generator.dense.bias"] = torch.full_like(tensors["generator.dense.bias"], np.nan)
    save_file(tensors, str(folder / WEIGHTS))
    out = tmp_path / "out" / "gen.h5"
    with pytest.raises(CaloforgeError, match="NaN or infinite cell energies"):
        generate_to_file(folder, out, n=8, batch_size=4)
    assert outputs(out.parent) == []  # neither gen.h5 nor its partial file


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    folder = make_checkpoint(tmp_path / "run", "gan3d")
    (folder / WEIGHTS).write_bytes(b"\x00" * 64)
    out = tmp_path / "out" / "gen.h5"
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS}: unreadable weights"):
        generate_to_file(tmp_path / "run", out, n=4)
    assert outputs(out.parent) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "--n is required unless"),
        ({"n": 0}, "--n must be a positive"),
        ({"n": 4, "batch_size": 0}, "--batch-size must be positive"),
        ({"n": 4, "seed": -1}, "--seed must be a non-negative"),
        ({"conditions_from": "ref.h5", "energy": (1.0, 2.0)}, "--energy cannot be combined"),
        ({"n": 4, "device": "gpu0"}, "unknown device 'gpu0'"),
    ],
)
def test_bad_options_fail_clearly_and_write_nothing(runs, tmp_path, options, message):
    out = tmp_path / "out" / "gen.h5"
    with pytest.raises(CaloforgeError, match=message):
        generate_to_file(runs["wgan-lhcb"], out, **options)
    assert outputs(out.parent) == []


def test_progress_bar(runs, tmp_path, capsys):
    generate_to_file(runs["wgan-lhcb"], tmp_path / "gen.h5", n=6, batch_size=4, progress=True)
    assert "generate lhcb-30" in capsys.readouterr().err


def test_the_command_line_prints_the_warning_as_one_line(narrow_run, tmp_path, capsys):
    from caloforge.cli import main

    argv = ["generate", "--checkpoint", str(narrow_run), "--n", "8", "--energy", "10:100"]
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as outside pytest, which turns warnings into errors
        assert main([*argv, "--seed", "2", "-o", str(tmp_path / "gen.h5")]) == 0
    err = capsys.readouterr().err
    outside = [line for line in err.splitlines() if "outside" in line]
    assert len(outside) == 1 and outside[0].startswith("caloforge: warning: ")
    assert "of 8 showers" in outside[0] and "warnings.warn" not in err  # no stray source line


def test_without_ranges_the_training_range_is_drawn_and_nothing_is_said(narrow_run, tmp_path):
    # The geometry's defaults (1-100 GeV, points within 5 mm) lie outside the 1-50 GeV and
    # 2 mm the run was trained on: the defaults must be the run's own ranges.
    geometry = PRESETS["lhcb-30"]
    assert geometry.condition("energy").default[1] > 50
    out = tmp_path / "gen.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an OutsideTrainingRangeWarning fails the test
        generate_to_file(narrow_run, out, n=64, batch_size=16, seed=4, strict=True)
    batch = read(out)
    assert batch.energy.min() >= 1.0 and batch.energy.max() <= 50.0
    assert batch.energy.max() > 25.0  # the whole range, not a corner of it
    assert np.abs(batch.conditions["point"]).max() <= 2.0
    # What is given is kept; what is not still comes from the training range.
    generate_to_file(narrow_run, tmp_path / "e.h5", n=16, energy=(20.0, 30.0), seed=4)
    given = read(tmp_path / "e.h5")
    assert given.energy.min() >= 20.0 and given.energy.max() <= 30.0
    assert np.abs(given.conditions["point"]).max() <= 2.0


def test_a_checkpoint_without_training_ranges_draws_the_geometrys(runs, tmp_path):
    out = generate_to_file(runs["wgan-lhcb"], tmp_path / "gen.h5", n=64, seed=4)
    low, high = PRESETS["lhcb-30"].condition("energy").default
    energy = read(out).energy
    assert energy.min() >= low and energy.max() <= high and energy.max() > 50.0


def test_the_command_says_which_ranges_it_took_from_the_training(narrow_run, tmp_path, capsys):
    from caloforge.cli import main

    argv = ["generate", "--checkpoint", str(narrow_run), "--n", "8", "--energy", "5:10"]
    assert main([*argv, "-o", str(tmp_path / "gen.h5")]) == 0
    err = capsys.readouterr().err
    assert "drawn in the checkpoint's training range: point -2:2 mm" in err
    assert "energy 1:50" not in err  # given, so not taken from the training range


def test_auto_keeps_a_short_run_eager_and_records_why(runs, tmp_path, capsys):
    out = generate_to_file(runs["wgan-lhcb"], tmp_path / "gen.h5", n=6, seed=1, progress=True)
    err = capsys.readouterr().err
    assert "backend auto -> eager: 6 showers take about" in err
    with h5py.File(out) as f:
        producer = str(f.attrs["producer"])
    assert "backend eager (pytorch), chosen by --backend auto: 6 showers take" in producer
    eager = generate_to_file(runs["wgan-lhcb"], tmp_path / "eager.h5", n=6, seed=1, backend="eager")
    np.testing.assert_array_equal(read(out).showers, read(eager).showers)


class _Failing:
    """A backend that fails on its first call, as an export a model does not support."""

    name, engine = "compiled", "failing"

    def __init__(self, generator: Any) -> None:
        self.module = generator

    def __call__(self, noise: torch.Tensor, conditions: Any) -> torch.Tensor:
        raise RuntimeError("no kernel for this layer")


def test_auto_falls_back_to_eager_when_its_choice_fails_here(runs, tmp_path, capsys, monkeypatch):
    from caloforge.generation import pipeline as pipeline_module
    from caloforge.generation.auto import BackendChoice
    from caloforge.generation.backends import build_backend

    monkeypatch.setattr(
        pipeline_module, "choose_backend", lambda *_: BackendChoice("compiled", "stand-in")
    )
    monkeypatch.setattr(
        pipeline_module,
        "build_backend",
        lambda name, g, **kw: _Failing(g) if name == "compiled" else build_backend(name, g),
    )
    out = generate_to_file(
        runs["wgan-lhcb"], tmp_path / "gen.h5", n=10, batch_size=4, seed=2, progress=True
    )
    assert "failed here (RuntimeError: no kernel for this layer); using eager" in (
        capsys.readouterr().err
    )
    with h5py.File(out) as f:
        producer = str(f.attrs["producer"])
    assert "backend eager (pytorch), chosen by --backend auto: compiled failed here" in producer
    eager = generate_to_file(
        runs["wgan-lhcb"], tmp_path / "eager.h5", n=10, batch_size=4, seed=2, backend="eager"
    )
    np.testing.assert_array_equal(read(out).showers, read(eager).showers)  # first batch too
    # A backend named by the user is not replaced: its failure is the command's.
    with pytest.raises(RuntimeError, match="no kernel"):
        generate_to_file(runs["wgan-lhcb"], tmp_path / "c.h5", n=4, backend="compiled")
    assert not (tmp_path / "c.h5").exists()
