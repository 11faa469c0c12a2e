"""The help of every command: every option and positional says what it does and, where it has
one, its default; the commands that run a model name the model families."""

from __future__ import annotations

import argparse

import pytest

from caloforge.cli import build_parser
from caloforge.models import MODEL_FAMILIES

COMMANDS = (
    "simulate",
    "convert",
    "inspect",
    "train",
    "generate",
    "validate",
    "export",
    "bench",
    "tune",
)


def _command(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices[name]
    return parser


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_shows_its_default(command):
    parser = _command(command)
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.dest in ("help", "handler"):
            continue
        assert action.help, f"{command} {action.option_strings}: no help"
        shown = parser._get_formatter()._get_help_string(action) or ""  # type: ignore[attr-defined]
        if action.default is not None and action.default is not False and action.default != []:
            assert "default" in shown, f"{command} {action.option_strings}: default not shown"
        else:
            assert "(default: None)" not in shown and "(default: False)" not in shown
    assert "(default: None)" not in text
    assert "(none: " not in text  # a YAML setting's None, not what a command line reads


def test_every_command_is_checked():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize("command", ["generate", "bench"])
def test_generate_and_bench_list_the_families(command):
    text = " ".join(_command(command).format_help().split())
    for family in MODEL_FAMILIES:
        assert family in text, f"{command} --help does not name {family}"


def test_the_backend_defaults_to_auto_and_says_what_it_chooses():
    generate = {a.dest: a for a in _command("generate")._actions}
    bench = {a.dest: a for a in _command("bench")._actions}
    assert generate["backend"].default == "auto"
    assert bench["backend"].default == ["eager", "auto"]
    for action in (generate["backend"], bench["backend"]):
        assert "auto: the fastest that holds accuracy" in (action.help or "")
    formatter = _command("generate")._get_formatter()
    for dest in ("seed", "batch_size"):
        shown = formatter._get_help_string(generate[dest])  # type: ignore[attr-defined]
        assert generate[dest].help and shown.endswith("(default: %(default)s)")
