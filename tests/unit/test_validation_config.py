"""The validation settings are declared once: every `ValidationConfig` field has its
`caloforge validate` flag, a file and the flags read values alike, and a bad value is named by
its dotted key."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from caloforge.errors import CaloforgeError
from caloforge.validation.config import (
    Tolerances,
    ValidationConfig,
    add_cli_options,
    config_from_cli,
    load_config,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_cli_options(p)
    return p


def test_every_setting_has_a_flag_with_its_help():
    flags = {a.dest: a for a in parser()._actions if a.dest != "help"}
    assert set(flags) == {f.name for f in dataclasses.fields(ValidationConfig)}
    for f in dataclasses.fields(ValidationConfig):
        assert f.metadata["help"], f.name
        assert flags[f.name].default in (None, []), f.name  # only a given flag overrides


def test_flags_and_a_file_give_the_same_settings(tmp_path: Path):
    args = parser().parse_args(
        [
            "--energy-bins",
            "100,150,200",
            "--subsample",
            "300",
            "--labels",
            "Geant4, GAN",
            "--no-plots",
            "--tolerance",
            "kpd=none",
            "--tolerance",
            "fpd=0.1",
        ]
    )
    from_flags = config_from_cli(args)
    path = tmp_path / "validate.yaml"
    path.write_text(
        "energy_bins: [100, 150, 200]\nsubsample: 300\nlabels: [Geant4, GAN]\nplots: false\n"
        "tolerances: {kpd: none, fpd: 0.1}\n"
    )
    assert from_flags == load_config(path)
    assert from_flags.energy_bins == (100.0, 150.0, 200.0)
    assert from_flags.tolerances == Tolerances(kpd=None, fpd=0.1)
    # Flags override the file, key by key.
    on_top = config_from_cli(parser().parse_args(["--subsample", "7"]), str(path))
    assert on_top.subsample == 7 and on_top.energy_bins == (100.0, 150.0, 200.0)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--subsample", "-1"], "validation.subsample: expected an integer >= 0, got -1"),
        (["--subsample", "many"], "validation.subsample: expected an integer, got 'many'"),
        (["--energy-bins", "20,ten"], "validation.energy_bins: expected an integer or numbers"),
        (["--theta-bins", "90,60"], "validation.theta_bins: expected at least two increasing"),
        (["--tolerance", "fpd=-1"], "validation.tolerances.fpd: expected a number >= 0"),
        (["--labels", "one"], "validation.labels: expected 2 names separated by commas"),
    ],
)
def test_a_bad_value_names_its_dotted_key(flags, message):
    with pytest.raises(CaloforgeError, match=message.replace("(", r"\(")):
        config_from_cli(parser().parse_args(flags))


def test_a_file_with_an_unknown_key_names_the_file_and_the_key(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("subsampel: 10\n")
    with pytest.raises(CaloforgeError, match=r"bad\.yaml: validation\.subsampel: unknown setting"):
        load_config(path)
