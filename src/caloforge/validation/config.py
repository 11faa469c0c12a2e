"""The validation settings, each declared once: `ValidationConfig` and its `Tolerances`.

A field's type, default, meaning and check are written once, on the field. From that one
declaration come the check on construction, the reading of a YAML file (`load_config`), and
the `caloforge validate` flags (`add_cli_options`, `config_from_cli`): a new setting is a new
field, nothing more. Errors name the setting by its dotted path, e.g.
`validation.subsample: expected an integer >= 0, got -1`.

The declaration, reading and checking are `caloforge.config`'s, shared with the model and
training configs; the validation settings are read with `text=True` (strings stand for
numbers, lists and none), as their file and their flags share one syntax.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caloforge.config import Check, ConfigError, Root, check_fields, coerce, convert, setting
from caloforge.errors import CaloforgeError, InputFileError

ROOT = Root("validation")
TOLERANCES = ROOT.child("tolerances")


# --- checks -----------------------------------------------------------------------------------
def _integer_at_least(low: int) -> Check:
    def check(value: Any) -> str | None:
        if value is None or (isinstance(value, int) and value >= low):
            return None
        return f"expected an integer >= {low}"

    return check


def _number_at_least_zero(value: Any) -> str | None:
    if value is None or (math.isfinite(value) and value >= 0):
        return None
    return "expected a number >= 0"


MAX_BINS = 1000


def _bins(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int):
        if value > MAX_BINS:  # each bin is measured in turn: 1e8 of them would never end
            return f"expected at most {MAX_BINS} bins"
        return None if value >= 1 else "expected at least 1 bin"
    if len(value) > MAX_BINS + 1:
        return f"expected at most {MAX_BINS + 1} bin edges"
    if len(value) < 2 or any(b <= a for a, b in itertools.pairwise(value)):
        return "expected at least two increasing bin edges"
    if not all(math.isfinite(v) for v in value):
        return "expected finite bin edges"
    return None


def _workers(value: Any) -> str | None:
    from caloforge._processes import max_workers

    if value is not None and isinstance(value, int) and value > max_workers():
        return f"expected at most {max_workers()} (four per core of this machine)"
    return _integer_at_least(1)(value)


def _two_names(value: Any) -> str | None:
    return None if len(value) == 2 else "expected two names, REFERENCE,GENERATED"


# Angle bins where the files have a theta condition and no number or edges are given.
DEFAULT_THETA_BINS = 3
PROTOCOLS = ("caloforge", "calochallenge")
CHALLENGE_CLASSIFIERS = ("low", "low-normed", "high")
CHALLENGE_DATASETS = ("auto", "1-photons", "1-pions", "2", "3", "other")


def _one_of(choices: Sequence[str]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {', '.join(choices)}"

    return check


def _classifiers(value: Any) -> str | None:
    unknown = [v for v in value if v not in (*CHALLENGE_CLASSIFIERS, "none")]
    if unknown:
        return f"unknown classifier(s) {', '.join(map(str, unknown))}; choose among " + ", ".join(
            CHALLENGE_CLASSIFIERS
        )
    return None


# --- the settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerances:
    """The largest acceptable value of each headline metric; None gives no verdict.

    A verdict reads the value with its error: "pass" when the value (the absolute value of a
    deviation) is within the tolerance, "fail" when it exceeds the tolerance by more than
    `ValidationConfig.significance` errors, "unclear" in between (more showers would tell).
    The defaults were chosen on simulated showers against an independent sample and
    distorted copies of it (benchmarks/validation.md).
    """

    classifier_auc_low_level: float | None = setting(
        0.6, "AUC of the classifier on cells (0.5: indistinguishable)", check=_number_at_least_zero
    )
    classifier_auc_high_level: float | None = setting(
        0.6, "AUC of the classifier on the feature vectors", check=_number_at_least_zero
    )
    fpd: float | None = setting(0.02, "Frechet physics distance", check=_number_at_least_zero)
    kpd: float | None = setting(0.001, "kernel physics distance", check=_number_at_least_zero)
    projection_mse: float | None = setting(
        1e-4,
        "projection MSE less its chance floor, in units of the reference's peak squared",
        check=_number_at_least_zero,
    )
    response_deviation: float | None = setting(
        0.02,
        "|mu90 of E_vis/E_p, generated / reference - 1| in the worst bin",
        check=_number_at_least_zero,
    )
    resolution_deviation: float | None = setting(
        0.10, "the same for sigma90/mu90", check=_number_at_least_zero
    )

    def __post_init__(self) -> None:
        check_fields(self, TOLERANCES)


@dataclass(frozen=True)
class ValidationConfig:
    """Everything `validate` can be told; every field has a default, and its `help` says
    what it means (`dataclasses.fields(ValidationConfig)[i].metadata["help"]`)."""

    tolerances: Tolerances = field(
        default_factory=Tolerances,
        metadata={"help": "the largest acceptable value of each headline metric"},
    )
    energy_bins: int | tuple[float, ...] = setting(
        5,
        "energy bins: a number (log-spaced over a range wider than a factor 10) or edges in "
        "GeV, e.g. 100,150,200",
        check=_bins,
        metavar="N|EDGES",
    )
    theta_bins: int | tuple[float, ...] | None = setting(
        None,
        "angle bins, for files with a theta condition (refused for others): a number or "
        f"edges in degrees, e.g. 60,90,120 (default: {DEFAULT_THETA_BINS})",
        check=_bins,
        metavar="N|EDGES",
    )
    subsample: int = setting(
        2000,
        "showers per set for the cell-level metrics (cells classifier, projection MSE, SSIM, "
        "projections), held in memory; 0 skips them",
        check=_integer_at_least(0),
        metavar="N",
    )
    ssim_pairs: int = setting(
        100,
        "random pairs of showers per SSIM comparison (at most subsample / 2)",
        check=_integer_at_least(1),
        metavar="N",
    )
    max_showers: int | None = setting(
        None, "use only the first N showers of each set", check=_integer_at_least(1), metavar="N"
    )
    classifier_showers: int = setting(
        50_000,
        "showers per set for the feature classifier (a seeded subset)",
        check=_integer_at_least(0),
        metavar="N",
    )
    min_showers: int = setting(
        50,  # metrics.MIN_SHOWERS_PER_BIN, the metrics' own default
        "a bin with fewer showers than this in either set is reported as too few, not measured",
        check=_integer_at_least(2),
        metavar="N",
    )
    significance: float = setting(
        2.0, "errors beyond its tolerance a value must be to fail", check=_number_at_least_zero
    )
    seed: int = setting(0, "seed of every random draw", check=_integer_at_least(0))
    plots: bool = setting(True, "the plots (without them: metrics and tables only)")
    labels: tuple[str, str] = setting(
        ("Reference", "Generated"),
        "names of the two sets in the plots and the report",
        check=_two_names,
        metavar="REFERENCE,GENERATED",
    )
    workers: int | None = setting(
        None,
        "processes computing features and drawing the plots (default: one per core, at most 8)",
        check=_workers,
        metavar="N",
    )
    batch_size: int | None = setting(
        None,
        "showers per feature batch (default: about 128 MB of cells)",
        check=_integer_at_least(1),
        metavar="N",
    )
    protocol: str = setting(
        "caloforge",
        "caloforge (this tool's metrics, verdicts and report) or calochallenge (the "
        "CaloChallenge evaluation's features, binning, FPD/KPD and classifier recipe)",
        check=_one_of(PROTOCOLS),
        metavar="NAME",
    )
    challenge_epochs: int = setting(
        50,
        "calochallenge protocol: classifier epochs (the recipe's 50; fewer for a quick look)",
        check=_integer_at_least(1),
        metavar="N",
    )
    challenge_classifiers: tuple[str, ...] = setting(
        CHALLENGE_CLASSIFIERS,
        "calochallenge protocol: the classifiers to train (low, low-normed, high; none: no "
        "classifier)",
        check=_classifiers,
        metavar="LIST",
    )
    challenge_dataset: str = setting(
        "auto",
        "calochallenge protocol: whose histogram ranges and threshold (1-photons, 1-pions, 2, "
        "3, other; auto: from the number of voxels)",
        check=_one_of(CHALLENGE_DATASETS),
        metavar="NAME",
    )
    challenge_min_energy: float | None = setting(
        None,
        "calochallenge protocol: readout threshold per voxel in MeV (default: the data set's; "
        "0.5 keV / 0.033 for other binnings)",
        check=_number_at_least_zero,
        metavar="MEV",
    )

    def __post_init__(self) -> None:
        check_fields(self, ROOT)


TOLERANCE_NAMES = tuple(f.name for f in dataclasses.fields(Tolerances))
SETTING_NAMES = tuple(f.name for f in dataclasses.fields(ValidationConfig))


def parse_tolerances(items: Sequence[str]) -> dict[str, float | None]:
    """['fpd=0.1', 'kpd=none'] -> {'fpd': 0.1, 'kpd': None} (none: no verdict)."""
    out: dict[str, float | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in TOLERANCE_NAMES:
            raise ConfigError(
                f"{TOLERANCES.path}: expected NAME=VALUE with NAME one of "
                f"{', '.join(TOLERANCE_NAMES)}; got '{item}'",
                path=TOLERANCES.path,
            )
        out[name] = convert(value.strip(), float | None, TOLERANCES, name, text=True)
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    tolerances: Mapping[str, float | None] | None = None,
    **overrides: Any,
) -> ValidationConfig:
    """A `ValidationConfig` from a YAML file (keys as the fields of `ValidationConfig`, with
    `tolerances` a mapping of `Tolerances` fields and theta_bins in degrees), then
    `overrides` (None values are ignored) and `tolerances` on top.

    Example file:
        tolerances: {response_deviation: 0.03, fpd: 0.1, kpd: none}
        energy_bins: [100, 125, 150, 175, 200]
        theta_bins: 4
        subsample: 1000
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml(Path(path))
    file_tolerances = values.pop("tolerances", None) or {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    merged = {**_as_mapping(file_tolerances, path), **(tolerances or {})}
    try:
        config = coerce(ValidationConfig, {**values, "tolerances": merged}, ROOT, text=True)
        _check_protocol(config, {*values, *(["tolerances"] if merged else [])})
    except CaloforgeError as exc:
        if path is not None:
            raise InputFileError(path, str(exc)) from None
        raise
    return config


# The settings the calochallenge protocol reads; it bins, judges and plots as the
# challenge's code does, so that any other setting given would be silently ignored.
CHALLENGE_SETTINGS = frozenset(
    {"protocol", "labels", "max_showers", "seed"}
    | {f.name for f in dataclasses.fields(ValidationConfig) if f.name.startswith("challenge_")}
)


def _flag(name: str) -> str:
    """The `caloforge validate` flag of a setting (`add_cli_options`)."""
    if name == "tolerances":
        return "--tolerance"
    default = next(f.default for f in dataclasses.fields(ValidationConfig) if f.name == name)
    return f"--{'no-' if default is True else ''}{name.replace('_', '-')}"


def _check_protocol(config: ValidationConfig, given: set[str]) -> None:
    """Refuse settings given for the other protocol: ignored, they would look applied."""
    challenge = config.protocol == "calochallenge"
    unused = sorted(
        name
        for name in given
        if (name not in CHALLENGE_SETTINGS if challenge else name.startswith("challenge_"))
    )
    if not unused:
        return
    flags = ", ".join(_flag(name) for name in unused)
    where = (
        "not read by --protocol calochallenge, which bins, judges and plots as the "
        "challenge's code does"
        if challenge
        else "read by --protocol calochallenge only"
    )
    raise ConfigError(
        f"validation.{unused[0]} ({flags}): {where}; leave {'them' if len(unused) > 1 else 'it'} "
        "out",
        path=ROOT.dotted(unused[0]),
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    from caloforge.config import read_yaml

    def error(message: str) -> InputFileError:  # "PATH: problem", as that file's error
        return InputFileError(path, message.removeprefix(f"{path}: "))

    data = read_yaml(path, "validation config", error) or {}
    if not isinstance(data, Mapping):
        raise InputFileError(path, "expected a mapping of settings at the top level")
    return dict(data)


def _as_mapping(value: Any, path: str | os.PathLike[str] | None) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    problem = f"{TOLERANCES.path}: expected a mapping with keys among {list(TOLERANCE_NAMES)}"
    if path is not None:
        raise InputFileError(path, problem, found=repr(value))
    raise CaloforgeError(f"{problem}, got {value!r}")


# --- the command line ---------------------------------------------------------------------------
def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """One `caloforge validate` flag per setting, from its declaration: `--energy-bins`,
    `--subsample`, ... (values read as `load_config` reads a file), `--no-plots` for the
    switch, and `--tolerance NAME=VALUE` (repeatable) for the tolerances. Every flag
    defaults to None, so that only what is given overrides the --config file."""
    for f in dataclasses.fields(ValidationConfig):
        help = f.metadata["help"]
        if f.name == "tolerances":
            parser.add_argument(
                "--tolerance",
                dest="tolerances",
                action="append",
                default=[],
                metavar="NAME=VALUE",
                help=f"tolerance of a headline metric (repeatable; VALUE none for no verdict): "
                f"{', '.join(TOLERANCE_NAMES)}",
            )
        elif f.default is True:
            parser.add_argument(
                f"--no-{f.name.replace('_', '-')}",
                dest=f.name,
                action="store_const",
                const=False,
                default=None,
                help=f"switch off {help}",
            )
        else:
            parser.add_argument(
                f"--{f.name.replace('_', '-')}",
                dest=f.name,
                metavar=f.metadata["metavar"],
                help=help if f.default is None else f"{help} (default: {_default_text(f)})",
            )


def _default_text(f: dataclasses.Field[Any]) -> str:
    default = f.default
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default)
    return str(default)


def config_from_cli(args: argparse.Namespace, path: str | None = None) -> ValidationConfig:
    """The `ValidationConfig` of parsed `caloforge validate` arguments (`add_cli_options`),
    on top of the YAML file `path` when given."""
    overrides = {name: getattr(args, name) for name in SETTING_NAMES if name != "tolerances"}
    return load_config(path, tolerances=parse_tolerances(args.tolerances), **overrides)


def settings_json(config: ValidationConfig) -> dict[str, Any]:
    """The settings as metrics.json records them (theta_bins in degrees, as given)."""
    d = dataclasses.asdict(config)
    d["theta_bins_unit"] = "deg"
    return d
