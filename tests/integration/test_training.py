"""`caloforge train` end to end on tiny simulated data: resume, collapse guard, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from caloforge.cli import main
from caloforge.data.canonical import ShowerWriter
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError
from caloforge.geometry import PRESETS
from caloforge.models.checkpoint import load_checkpoint
from caloforge.simulation.run import simulate_to_file
from caloforge.training.config import load_config
from caloforge.training.trainer import NoValidationShowersWarning, Trainer, TrainingCollapsedError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAST = ["training.check_showers=8", "training.window=8", "training.log_every=1"]


@pytest.fixture(scope="module")
def clic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clic.h5"
    simulate_to_file(path, geometry="clic-25", n=40, energy=(10.0, 100.0), seed=1, workers=1)
    return path


@pytest.fixture(scope="module")
def lhcb_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lhcb.h5"
    simulate_to_file(path, geometry="lhcb-30", n=80, seed=2, workers=1)
    return path


def step_losses(run: Path) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss_d"], r.get("loss_g", 0.0)) for r in records if r["event"] == "step"]


def resume_matches_uninterrupted(family: str, data: Path, tmp_path: Path, extra: list[str]) -> None:
    common = [*FAST, "training.batch_size=4", "training.checkpoint_every=3", *extra]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    six = load_config(CONFIGS / f"{family}.yaml", [*common, "training.max_steps=6"])
    three = load_config(CONFIGS / f"{family}.yaml", [*common, "training.max_steps=3"])
    Trainer(six, data, whole).fit()
    Trainer(three, data, parts).fit()
    Trainer(six, data, parts, resume=True).fit()
    expected, resumed = step_losses(whole), step_losses(parts)
    assert [s for s, *_ in expected] == list(range(1, 7))
    assert resumed == expected  # bit for bit on CPU


def test_resumed_wgan_run_gives_the_same_losses(lhcb_data, tmp_path):
    # Covers the regressor pretraining, the gradient penalty and a fitted Box-Cox.
    resume_matches_uninterrupted(
        "wgan-lhcb", lhcb_data, tmp_path, ["training.regressor_epochs=1", "training.critic_steps=2"]
    )


@pytest.mark.slow
def test_resumed_gan3d_run_gives_the_same_losses(clic_data, tmp_path):
    # BatchNorm, dropout, RMSprop and label flips all carry state across the interruption.
    resume_matches_uninterrupted("gan3d", clic_data, tmp_path, [])


def test_collapse_stops_training_and_keeps_the_last_good_checkpoint(clic_data, tmp_path):
    overrides = [
        *FAST,
        "training.batch_size=4",
        "training.check_every=1",
        "training.collapse_patience=2",
        # The guard is under test, not the recipe: with the full physics weights one RMSprop
        # step on 4 showers can leave the generator briefly empty, and there would be no good
        # checkpoint to keep.
        "training.loss.energy=0.001",
        "training.loss.ecal=0.001",
    ]
    run = tmp_path / "run"
    Trainer(
        load_config(CONFIGS / "gan3d.yaml", [*overrides, "training.max_steps=1"]), clic_data, run
    ).fit()
    good = json.loads((run / "best.json").read_text())["checkpoint"]
    trainer = Trainer(
        load_config(CONFIGS / "gan3d.yaml", [*overrides, "training.max_steps=10"]),
        clic_data,
        run,
        resume=True,
    )
    last_conv = [m for m in trainer.bundle.generator.modules() if isinstance(m, torch.nn.Conv3d)][
        -1
    ]
    with torch.no_grad():
        last_conv.weight.zero_()  # the final ReLU now emits exact zeros, with zero gradient
    with pytest.raises(TrainingCollapsedError, match="only empty showers at 2 consecutive checks"):
        trainer.fit()
    assert json.loads((run / "best.json").read_text())["checkpoint"] == good
    kept = load_checkpoint(run)  # a run folder resolves to its best checkpoint
    assert kept.folder.name == Path(good).name
    noise = kept.bundle.generator.sample_noise(2, torch.Generator().manual_seed(0))
    kept.bundle.generator.eval()
    assert kept.bundle.generator(noise, {"energy": torch.tensor([50.0, 50.0])}).sum() > 0


def test_train_then_generate_from_the_command_line(clic_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(CONFIGS / "conv2d-g1.yaml"),
            "--data",
            str(clic_data),
            "--out",
            str(run),
            "training.batch_size=4",
            "training.max_steps=2",
            *FAST,
        ]
    )
    assert code == 0
    printed, shown = capsys.readouterr()
    assert "trained 2 steps" in printed and "best checkpoint" in printed
    # The bar says when the physics check runs between steps (it was still meanwhile).
    assert "physics check ..." in shown
    assert (run / "best.json").exists() and (run / "metrics.jsonl").exists()
    out = tmp_path / "gen.h5"
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(run),
                "--conditions-from",
                str(clic_data),
                "--n",
                "6",
                "--seed",
                "3",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    with h5py.File(out) as f, h5py.File(clic_data) as ref:
        assert f["showers"].shape == (6, 25, 25, 25)
        np.testing.assert_array_equal(f["energy"][:], ref["energy"][:6])
        assert np.isfinite(f["showers"][:]).all() and (f["showers"][:] >= 0).all()


def test_training_refuses_data_of_another_geometry(lhcb_data, tmp_path):
    config = load_config(CONFIGS / "gan3d.yaml", ["training.batch_size=4"])
    with pytest.raises(CaloforgeError, match=r"geometry 'lhcb-30'.*needs 'clic-25'"):
        Trainer(config, lhcb_data, tmp_path / "run")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["training.nope=1"], "unknown key 'training.nope'"),
        (["--resume"], "no checkpoint found"),
        (["model.latent_sise=10"], "unknown key 'latent_sise' (did you mean 'latent_size'?)"),
    ],
)
def test_bad_training_input_exits_2_with_a_message(clic_data, tmp_path, capsys, args, message):
    argv = [
        "train",
        "--config",
        str(CONFIGS / "gan3d.yaml"),
        "--data",
        str(clic_data),
        "--out",
        str(tmp_path / "run"),
        *args,
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_resuming_with_another_family_is_refused(clic_data, tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--data", str(clic_data), "--out", str(run), "training.batch_size=4", *FAST]
    assert (
        main(
            ["train", "--config", str(CONFIGS / "conv2d-g1.yaml"), *common, "training.max_steps=1"]
        )
        == 0
    )
    assert main(["train", "--config", str(CONFIGS / "gan3d.yaml"), "--resume", *common]) == 2
    assert "is a gan3d config but" in capsys.readouterr().err
    assert main(["train", "--config", str(CONFIGS / "conv2d-g1.yaml"), *common]) == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_resume_continues_the_run_as_it_was_configured(clic_data, tmp_path, capsys):
    """`train --out RUN --resume` needs neither the config nor the overrides nor the data of
    the first run again; KEY=VALUE changes only what it names."""
    run = tmp_path / "run"
    first = ["--config", "conv2d-g1", "--data", str(clic_data), "--out", str(run)]
    assert main(["train", *first, "training.batch_size=4", "training.max_steps=2", *FAST]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "training.max_steps=4"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "trained 2 steps, from step 2 to 4" in out
    saved = json.loads((run / "checkpoints" / "step-00000004" / "config.json").read_text())
    assert saved["training"]["batch_size"] == 4 and saved["training"]["max_steps"] == 4
    assert saved["training"]["check_showers"] == 8  # the first run's override, kept
    assert saved["training"]["data"] == [str(clic_data.resolve())]
    # a finished run resumed as it is: nothing to train, and it says so (it said "trained 4
    # steps", the README's `--resume` after a complete run)
    assert main(["train", "--out", str(run), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "at step 4" in out and "trained" not in out
    # a change of what orders the data is refused, and says what changed
    assert main(["train", "--out", str(run), "--resume", "training.batch_size=8"]) == 2
    assert "changed: training.batch_size=8 (the run used 4)" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["gan3d", "gan3d-angle", "conv2d-g1", "wgan-lhcb"])
def test_training_on_a_gpu_in_bf16_gives_a_checkpoint_the_cpu_loads(family, tmp_path):
    geometry = {"gan3d-angle": "clic-angle-51", "wgan-lhcb": "lhcb-30"}.get(family, "clic-25")
    data = tmp_path / "data.h5"
    simulate_to_file(data, geometry=geometry, n=24, seed=3, workers=1)
    extra = ["training.regressor_epochs=1"] if family == "wgan-lhcb" else []
    config = load_config(
        CONFIGS / f"{family}.yaml",
        [
            *FAST,
            "training.batch_size=4",
            "training.max_steps=3",
            "training.device=cuda",
            "training.precision=bf16",
            *extra,
        ],
    )
    Trainer(config, data, tmp_path / "run").fit()
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_d"] for r in records if r["event"] == "step"]
    assert len(losses) == 3 and all(np.isfinite(losses))
    checkpoint = load_checkpoint(tmp_path / "run", device="cpu")
    weights = [p for p in checkpoint.bundle.generator.parameters()]
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in weights)


def test_learning_rate_warms_up_then_follows_the_schedule(clic_data, tmp_path):
    overrides = [
        *FAST,
        "training.batch_size=4",
        "training.max_steps=6",
        "training.optimizer.warmup_steps=4",
        "training.optimizer.schedule=cosine",
    ]
    trainer = Trainer(load_config(CONFIGS / "gan3d.yaml", overrides), clic_data, tmp_path / "r")
    cosine = [0.5 * (1 + np.cos(np.pi * step / 6)) for step in range(6)]
    expected = [min(1.0, (step + 1) / 4) * cosine[step] for step in range(6)]
    assert [trainer.lr_factor(step) for step in range(6)] == pytest.approx(expected)
    trainer.fit()  # its last steps are past the warm-up: the cosine alone sets their rate
    lr = trainer.models.optimizer_g.param_groups[0]["lr"]
    assert lr == pytest.approx(1e-3 * trainer.lr_factor(trainer.state.step - 1))


def test_no_validation_split_is_said_when_the_check_falls_back_to_training(clic_data, tmp_path):
    config = load_config(
        CONFIGS / "gan3d.yaml",
        [*FAST, "training.batch_size=4", "training.max_steps=1", "training.fractions=[1,0,0]"],
    )
    # caloforge's own class: the CLI shows it as one line, without Python's file:line
    with pytest.warns(
        NoValidationShowersWarning, match=r"fractions \[1.0, 0.0, 0.0\] leave no validation"
    ):
        Trainer(config, clic_data, tmp_path / "run").close()


def test_validation_showers_without_energy_are_said(tmp_path):
    # All-zero showers: training runs, but the check can judge nothing (no best.json).
    path = tmp_path / "zero.h5"
    with ShowerWriter(path, PRESETS["clic-25"]) as writer:
        writer.write(Batch(np.zeros((20, 25, 25, 25), np.float32), {"energy": np.full(20, 50.0)}))
    config = load_config(CONFIGS / "gan3d.yaml", [*FAST, "training.batch_size=4"])
    with pytest.warns(
        NoValidationShowersWarning, match=r"hold no energy \(every cell 0; .*zero.h5"
    ):
        Trainer(config, path, tmp_path / "run").close()


def test_each_epoch_records_its_wall_and_cpu_seconds(clic_data, tmp_path):
    config = load_config(
        CONFIGS / "gan3d.yaml", [*FAST, "training.batch_size=16", "training.max_steps=2"]
    )  # 32 training showers: one epoch
    Trainer(config, clic_data, tmp_path / "run").fit()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    epochs = [r for r in map(json.loads, lines) if r["event"] == "epoch"]
    assert epochs and all(e["seconds"] > 0 and e["cpu_seconds"] > 0 for e in epochs)
    # CPU time of this process: at most its threads' share of the wall time
    assert all(e["cpu_seconds"] <= e["seconds"] * torch.get_num_threads() * 1.5 for e in epochs)
