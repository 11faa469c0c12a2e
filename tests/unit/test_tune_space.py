"""The search space of `caloforge tune`: what it reads, and every bad space refused with a
message naming the file and the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from caloforge.tune.space import SearchSpaceError, load_space, parse_space, with_values
from caloforge.tune.trial import read_recipe

SOURCE = "space.yaml"


@pytest.fixture(scope="module")
def base() -> dict:
    return read_recipe("flow-match", ["training.batch_size=64"])


def test_a_space_is_read_with_kinds_bounds_and_choices(base: dict) -> None:
    space = parse_space(
        {
            "parameters": {
                "training.optimizer.lr_generator": {"low": 1e-4, "high": 3e-3, "log": True},
                "training.batch_size": {"low": 32, "high": 256, "step": 32},
                "transform.name": {"choices": ["identity"]},
                "model.shape_steps": {"type": "int", "low": 1.0, "high": 6.0},
                "model.shape_hidden": {"low": 64, "high": 256, "type": "float"},
                "training.optimizer.betas": {"choices": [[0.5, 0.999], [0.9, 0.999]]},
            }
        },
        base,
        source=SOURCE,
    )
    kinds = {p.path: (p.kind, p.low, p.high, p.log, p.step) for p in space.parameters}
    assert kinds["training.optimizer.lr_generator"] == ("float", 1e-4, 3e-3, True, None)
    assert kinds["training.batch_size"] == ("int", 32, 256, False, 32)
    assert kinds["model.shape_steps"] == ("int", 1, 6, False, None)
    assert kinds["model.shape_hidden"][0] == "float"
    betas = space.parameters[-1]
    # lists become their JSON text for the optimiser, and map back to the values
    assert betas.labels == ("[0.5, 0.999]", "[0.9, 0.999]")
    assert betas.value_of("[0.9, 0.999]") == [0.9, 0.999]
    assert space.paths[0] == "training.optimizer.lr_generator"


def test_values_are_set_by_dotted_path_as_train_overrides_set_them(base: dict) -> None:
    raw = with_values(base, {"training.optimizer.lr_generator": 5e-4, "model.shape_steps": 2})
    assert raw["training"]["optimizer"]["lr_generator"] == 5e-4
    assert raw["model"]["shape_steps"] == 2
    assert base["model"]["shape_steps"] == 3  # the base is left as it was
    assert raw["training"]["batch_size"] == 64  # the command line's override kept


@pytest.mark.parametrize(
    ("entry", "spec", "words"),
    [
        ("training.batch_sise", {"low": 32, "high": 64}, "unknown setting"),
        ("model.shape_widht", {"choices": [1, 2]}, "unknown"),
        ("transform.powr", {"low": 0.5, "high": 1.0}, "bad parameters"),
        ("training.optimizer.lr_generator", {"low": 1e-3, "high": 1e-3}, "low must be below high"),
        ("training.optimizer.lr_generator", {"low": 1e-2, "high": 1e-3}, "low must be below high"),
        ("training.optimizer.lr_generator", {"low": 0.0, "high": 1e-3, "log": True}, "log range"),
        ("training.optimizer.lr_generator", {"low": -1.0, "high": 1e-3}, "must be > 0"),
        ("model.shape_steps", {"choices": []}, "non-empty list"),
        ("model.shape_steps", {"choices": [1, 1]}, "repeat"),
        ("model.shape_steps", {"low": 1, "high": 4, "hihg": 5}, "unknown key(s) hihg"),
        ("model.shape_steps", {"low": 1}, "needs both low and high"),
        ("model.shape_steps", {"type": "int", "low": 1.5, "high": 4}, "integer bounds"),
        ("model.shape_steps", {"low": 1, "high": 4, "step": 0}, "step must be"),
        ("model.shape_steps", {"low": 1, "high": 4, "step": 2, "log": True}, "step cannot"),
        ("model.shape_steps", {"type": "str", "low": 1, "high": 4}, "type must be int or float"),
        ("model.shape_steps", {"low": "one", "high": 4}, "finite numbers"),
        ("model.shape_steps", 3, "expected a mapping"),
        ("training.fractions", {"choices": [[0.8, 0.1, 0.1]]}, "held-out showers"),
        ("training.max_steps", {"low": 10, "high": 20}, "budget"),
        ("model.family", {"choices": ["gan3d"]}, "one family"),
        ("optimizer.lr", {"low": 1e-4, "high": 1e-3}, "must start with model."),
    ],
)
def test_a_bad_entry_is_refused_naming_the_file_and_entry(
    base: dict, entry: str, spec: object, words: str
) -> None:
    with pytest.raises(SearchSpaceError) as error:
        parse_space({"parameters": {entry: spec}}, base, source=SOURCE)
    message = str(error.value)
    assert message.startswith(f"{SOURCE}: parameter '{entry}'"), message
    assert words in message, message


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({}, "expected one key, 'parameters'"),
        ({"params": {}}, "expected one key, 'parameters'"),
        ({"parameters": {}}, "at least one dotted path"),
        ([1, 2], "expected one key"),
    ],
)
def test_a_bad_file_is_refused(base: dict, spec: object, words: str) -> None:
    with pytest.raises(SearchSpaceError, match=words):
        parse_space(spec, base, source=SOURCE)


def test_files_that_are_missing_or_not_yaml_are_named(base: dict, tmp_path: Path) -> None:
    with pytest.raises(SearchSpaceError, match=r"missing\.yaml: search space file not found"):
        load_space(tmp_path / "missing.yaml", base)
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters: {a: [\n")
    with pytest.raises(SearchSpaceError, match=r"bad\.yaml: not valid YAML"):
        load_space(bad, base)
    good = tmp_path / "good.yaml"
    good.write_text("parameters:\n  transform.name: {choices: [identity]}\n")
    assert load_space(good, base).source == str(good)
