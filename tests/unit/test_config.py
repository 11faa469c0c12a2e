"""One configuration mechanism (`caloforge.config`) for the model, training and validation
configs: one rule for values, errors naming the dotted path, and command-line options that
agree with what they set."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any

import pytest

from caloforge.cli import build_parser
from caloforge.config import ConfigError
from caloforge.errors import CaloforgeError
from caloforge.models import build_model
from caloforge.models.gan3d import Gan3dConfig
from caloforge.training.config import (
    LossConfig,
    OptimizerConfig,
    TrainConfig,
    TrainConfigError,
    load_config,
    preset_names,
)
from caloforge.validation.config import ValidationConfig, add_cli_options, config_from_cli


# --- one rule for values ------------------------------------------------------------------------
def _train(value: str) -> int:
    return load_config("gan3d", [f"training.batch_size={value}"]).training.batch_size


def _model(value: Any) -> int:
    config = build_model("gan3d", {"latent_size": value}).config
    assert isinstance(config, Gan3dConfig)
    return config.latent_size


def _validation(value: str) -> int:
    p = argparse.ArgumentParser()
    add_cli_options(p)
    return config_from_cli(p.parse_args(["--subsample", value])).subsample


@pytest.mark.parametrize(
    ("read", "value", "expected"),
    [
        (_train, "32", 32),
        (_train, "32.0", 32),  # YAML reads 32.0 as a float: an integer all the same
        (_model, 100, 100),
        (_model, 100.0, 100),
        (_validation, "300", 300),
        (_validation, "300.0", 300),
    ],
)
def test_an_integer_valued_number_is_an_integer_in_every_config(read, value, expected):
    got = read(value)
    assert got == expected and type(got) is int


@pytest.mark.parametrize(
    ("read", "value", "name"),
    [
        (_train, "32.5", "training.batch_size"),
        (_train, "true", "training.batch_size"),  # a boolean is not a number
        (_train, ".inf", "training.batch_size"),
        (_model, 100.5, "'latent_size'"),
        (_model, True, "'latent_size'"),
        (_model, "200", "'latent_size'"),  # a string in a file is not a number
        (_validation, "300.5", "validation.subsample"),
        (_validation, "inf", "validation.subsample"),
    ],
)
def test_a_fraction_boolean_or_infinity_is_not_an_integer(read, value, name):
    with pytest.raises(ConfigError) as error:
        read(value)
    message = str(error.value)
    assert name in message and "expected an integer, got" in message


def test_numbers_must_be_finite():
    with pytest.raises(TrainConfigError, match=r"training\.optimizer\.lr_generator: expected a"):
        load_config("gan3d", ["training.optimizer.lr_generator=.nan"])
    with pytest.raises(CaloforgeError, match="'energy_scale'"):
        build_model("gan3d", {"energy_scale": float("inf")})


def test_a_config_built_in_python_is_held_to_the_same_types():
    config = TrainConfig(batch_size=32.0, fractions=[0.8, 0.1, 0.1])  # type: ignore[arg-type]
    assert type(config.batch_size) is int and config.fractions == (0.8, 0.1, 0.1)
    with pytest.raises(TrainConfigError, match=r"training\.loss\.energy must be >= 0, got -1"):
        TrainConfig(loss=LossConfig(energy=-1))
    with pytest.raises(TrainConfigError, match=r"training\.epochs: expected an integer"):
        TrainConfig(epochs="many")  # type: ignore[arg-type]
    assert Gan3dConfig(latent_size=64.0).latent_size == 64  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.loss.bins=-2", "training.loss.bins must be >= 0, got -2"),
        ("training.optimizer.gamma=0", "training.optimizer.gamma must be > 0, got 0"),
        ("training.optimizer.betas=[0.9]", "training.optimizer.betas: expected 2 numbers"),
        ("training.loss.nope=1", "unknown key 'training.loss.nope'"),
        ("training.optimizer=adam", "training.optimizer: expected a mapping of settings"),
        ("training.precision=fp16", "training.precision must be one of auto, fp32, bf16"),
    ],
)
def test_training_errors_name_the_dotted_path_the_expected_and_the_found(override, message):
    with pytest.raises(TrainConfigError) as error:
        load_config("gan3d", [override])
    assert message in str(error.value)
    assert str(error.value).count("\n") == 0


def test_every_setting_is_declared_with_its_meaning():
    for cls in (TrainConfig, OptimizerConfig, LossConfig, ValidationConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name}"


# --- command-line options agree with what they set -----------------------------------------------
def _subcommand(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _options(name: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subcommand(name)._actions if a.dest not in ("help", "handler")}


def _defaults(*functions: Any) -> dict[str, inspect.Parameter]:
    out: dict[str, inspect.Parameter] = {}
    for function in functions:
        out.update(inspect.signature(function).parameters)
    return out


def _check_options(command: str, parameters: dict[str, inspect.Parameter], **special: Any) -> None:
    """Each option of `command` sets the parameter of its name (or `special`'s: a parameter
    name, ("not", name) for a switch that turns one off, or None for an option of the command
    line alone), with that parameter's default."""
    for dest, action in _options(command).items():
        target = special.get(dest, dest)
        if target is None:
            continue
        negated = isinstance(target, tuple)
        name = target[1] if negated else target
        assert name in parameters, f"{command} --{dest}: no parameter '{name}'"
        declared = parameters[name].default
        if action.required or declared is inspect.Parameter.empty:
            continue
        default = (not action.default) if negated else action.default
        if isinstance(declared, tuple):
            default = tuple(default)
        assert default == declared, f"{command} --{dest}: default {default!r} != {declared!r}"


def test_generate_options_agree_with_generate_to_file():
    from caloforge.generation.auto import AUTO
    from caloforge.generation.backends import BACKENDS
    from caloforge.generation.run import generate_to_file
    from caloforge.simulation.conditions import SPECTRA

    _check_options(
        "generate", _defaults(generate_to_file), theta="theta_deg", no_merge=("not", "merge")
    )
    options = _options("generate")
    assert tuple(options["backend"].choices) == (AUTO, *BACKENDS)
    assert tuple(options["spectrum"].choices) == SPECTRA


def test_export_options_agree_with_export_onnx():
    from caloforge.export import export_onnx

    parameters = _defaults(export_onnx)
    _check_options("export", parameters, format=None, calibration_size=None, seed=None)
    # The options of --int8 alone have no default on the command line (given without --int8
    # they are refused); their help names the function's.
    options = _options("export")
    for dest in ("calibration_size", "seed"):
        assert options[dest].default is None
        assert f"(default: {parameters[dest].default})" in options[dest].help


def test_bench_options_agree_with_bench_generation():
    from caloforge.bench import bench_generation
    from caloforge.generation.auto import AUTO
    from caloforge.generation.backends import BACKENDS
    from caloforge.generation.pipeline import ShowerPipeline

    parameters = _defaults(ShowerPipeline.random_weights, bench_generation)
    _check_options(
        "bench",
        parameters,
        model="family",
        backend="backends",
        peak_gflops="peak",
        threads=None,
        json=None,
        checkpoint=None,
    )
    assert tuple(_options("bench")["backend"].choices) == (AUTO, *BACKENDS)


def test_train_names_every_preset_and_reads_the_config_fields():
    options = _options("train")
    for preset in preset_names():
        assert preset in options["config"].help
    # The training settings are set by their dotted keys, never by flags of their own.
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not fields & set(options), "a training setting declared a second time as a flag"
