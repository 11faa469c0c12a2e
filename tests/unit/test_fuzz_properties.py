"""Property-based tests (Hypothesis): whatever a shower file or a config override holds, the
reader and the config either accept it or raise a `CaloforgeError` (a one-line message for the
CLI), never another exception."""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caloforge.cli import parse_range
from caloforge.data.io import open_showers
from caloforge.data.summary import summarize
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.training.config import load_config

# A tiny grid geometry: 3 x 3 cells, two layers, energy valid 1-1000 GeV.
TINY = {
    "name": "tiny",
    "shape": [3, 3, 2],
    "readout": "layers",
    "cell_size_mm": [5.0, 5.0],
    "layers": [{"absorber": "W", "absorber_mm": 3.5, "sensor": "Si", "sensor_mm": 0.3}] * 2,
    "conditions": [{"name": "energy", "unit": "GeV", "default": [10, 100], "valid": [1, 1000]}],
}
SHAPE = tuple(TINY["shape"])

SHOWERS = st.sampled_from(
    [
        "ok",
        "int32",
        "strings",
        "nan",
        "negative",
        "inf",
        "huge",
        "wrong-shape",
        "group",
        "missing",
        "scalar",
    ]
)
ENERGY = st.sampled_from(
    [
        "ok",
        "int64",
        "longer",
        "shorter",
        "strings",
        "group",
        "missing",
        "nan",
        "zero",
        "1e9",
        "column",
        "scalar",
    ]
)
GEOMETRY = st.sampled_from(
    [
        "ok",
        "not-json",
        "negative-cell",
        "nan-cell",
        "missing",
        "integer",
        "other-shape",
        "no-energy",
    ]
)
VERSION = st.sampled_from([1, 2, "one", None, 1.5, 0, -1, 1.0, True])


def _showers(kind: str, n: int, rng: np.random.Generator) -> object:
    cells = (rng.exponential(0.01, (n, *SHAPE)) * (rng.random((n, *SHAPE)) < 0.5)).astype(
        np.float32
    )
    if kind == "int32":
        return (cells * 1000).astype(np.int32)
    if kind == "strings":
        return np.array([b"shower"] * n)
    if kind == "nan" and n:
        cells[-1, 0, 0, 0] = np.nan
    if kind == "inf" and n:
        cells[0, 1, 1, 1] = np.inf
    if kind == "negative" and n:
        cells[0, 2, 2, 0] = -1.0
    if kind == "huge" and n:
        cells[-1, 1, 0, 1] = 3e38  # finite, and far above any primary energy
    if kind == "wrong-shape":
        return cells[:, :2]
    if kind == "scalar":
        return np.float32(1.0)
    return cells


def _energy(kind: str, n: int, rng: np.random.Generator) -> object:
    values = rng.uniform(10, 100, n)
    return {
        "int64": values.astype(np.int64),
        "longer": np.concatenate([values, [50.0]]),
        "shorter": values[:-1],
        "strings": np.array([b"GeV"] * n),
        "nan": np.where(np.arange(n) == 0, np.nan, values),
        "zero": np.where(np.arange(n) == n - 1, 0.0, values),
        "1e9": np.where(np.arange(n) == 0, 1e9, values),
        "column": values.reshape(n, 1),
        "scalar": np.float64(5.0),
    }.get(kind, values)


def _geometry_json(kind: str) -> object:
    d = json.loads(json.dumps(TINY))
    if kind == "not-json":
        return "{geometry"
    if kind == "integer":
        return 7
    if kind == "negative-cell":
        d["cell_size_mm"] = [-5.0, 5.0]
    if kind == "nan-cell":
        d["cell_size_mm"] = [math.nan, 5.0]
    if kind == "other-shape":
        d["shape"] = [4, 4, 2]
    if kind == "no-energy":
        d["conditions"] = [{"name": "theta", "unit": "rad"}]
    return json.dumps(d)


def _write(path: Path, n: int, showers: str, energy: str, geometry: str, version: object) -> None:
    rng = np.random.default_rng(n)
    with h5py.File(path, "w") as f:
        if geometry != "missing":
            f.attrs["geometry_json"] = _geometry_json(geometry)
        f.attrs["geometry"] = "tiny"
        if version is not None:
            f.attrs["format_version"] = version
        for key, kind, data in (
            ("showers", showers, _showers(showers, n, rng)),
            ("energy", energy, _energy(energy, n, rng)),
        ):
            if kind == "missing":
                continue
            if kind == "group":
                f.create_group(key)
            else:
                f[key] = data


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n=st.integers(0, 5),
    showers=SHOWERS,
    energy=ENERGY,
    geometry=GEOMETRY,
    version=VERSION,
)
def test_the_canonical_reader_accepts_or_names_the_problem(
    n: int, showers: str, energy: str, geometry: str, version: object
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.h5"
        _write(path, n, showers, energy, geometry, version)
        valid = (
            showers == "ok"
            and energy in ("ok", "int64")
            and geometry == "ok"
            and (version is None or (type(version) in (int, float) and version == 1))
        )
        try:
            with open_showers(path) as source:
                conditions = source.conditions
                batch = source.read(0, len(source))
                summary = summarize(path)
        except CaloforgeError as exc:
            assert str(path) in str(exc) or "fuzzed.h5" in str(exc)
            assert "\n" not in str(exc)
            assert not valid, f"a valid file was refused: {exc}"
            return
        assert valid or n == 0, "a bad file was accepted"
        assert len(batch) == n == summary.n_showers
        assert conditions["energy"].shape == (n,)
        assert np.isfinite(batch.showers).all() and (batch.showers >= 0).all()
        assert batch.showers.dtype == np.float32


def test_a_valid_tiny_file_is_read_back() -> None:
    """The property's notion of 'valid' is really valid (guards the test itself)."""
    Geometry.from_dict(TINY)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ok.h5"
        _write(path, 3, "ok", "ok", "ok", 1)
        with open_showers(path) as source:
            assert len(source) == 3


# --- config overrides -------------------------------------------------------------------------
KEYS = st.one_of(
    st.sampled_from(
        [
            "training.batch_size",
            "training.max_steps",
            "training.epochs",
            "training.seed",
            "training.fractions",
            "training.window",
            "training.optimizer.lr_generator",
            "training.optimizer.name",
            "training.loss.energy",
            "training.precision",
            "training.check_every",
            "model.latent_size",
            "model.family",
            "transform.name",
            "training",
            "model",
            "training.optimizer",
        ]
    ),
    st.text(st.characters(codec="ascii", exclude_characters="="), max_size=20),
)
VALUES = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["", "true", "null", "[1, 2]", "[0.8, 0.1, 0.1]", "{a: 1}", "adam", "~", "[0.8,\n0.1"]
    ),
    st.text(max_size=20),  # line breaks too: the message stays one line
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, value=VALUES)
def test_config_overrides_are_accepted_or_refused_by_name(key: str, value: str) -> None:
    try:
        config = load_config("gan3d", [f"{key}={value}"])
    except CaloforgeError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        return
    training = config.training
    assert training.batch_size >= 1
    assert all(0 <= f <= 1 for f in training.fractions)


@settings(max_examples=100, deadline=None)
@given(override=st.text(max_size=30))
def test_any_override_text_is_accepted_or_refused(override: str) -> None:
    try:
        config = load_config("gan3d", [override])
    except CaloforgeError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
        return
    assert config.training.batch_size >= 1


@pytest.mark.parametrize(
    ("override", "lr"),
    [("1e-3", 1e-3), ("5E-5", 5e-5), ("1.0e-4", 1e-4), ("0.0002", 2e-4), ("2e+1", 20.0)],
)
def test_exponents_without_a_dot_are_numbers(override: str, lr: float) -> None:
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; the override reads it as anyone would."""
    config = load_config("gan3d", [f"training.optimizer.lr_generator={override}"])
    assert config.training.optimizer.lr_generator == lr


# --- ranges on the command line ---------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=30))
def test_parse_range_returns_two_numbers_or_a_usage_error(text: str) -> None:
    try:
        low, high = parse_range(text)
    except argparse.ArgumentTypeError as exc:
        assert text in str(exc)
        return
    assert isinstance(low, float) and isinstance(high, float)


@given(low=st.floats(-1e6, 1e6), high=st.floats(-1e6, 1e6))
def test_parse_range_reads_what_it_is_given(low: float, high: float) -> None:
    assert parse_range(f"{low!r}:{high!r}") == (low, high)
    assert parse_range(repr(low)) == (low, low)


@pytest.mark.parametrize("text", ["-5:10", "-0.5", "-.5:-.1"])
def test_negative_ranges_reach_the_option(text: str) -> None:
    from caloforge.cli import _parse, build_parser

    args = _parse(build_parser(), ["simulate", "--n", "1", "--energy", text, "-o", "x.h5"])
    assert args.energy == parse_range(text)


# Any JSON value in any entry of a geometry description: a text shape ("25x25x25", iterated
# by letter), a cell size of three values, a text or negative resolution term were taken.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
GEOMETRY_KEYS = st.sampled_from(
    ["shape", "cell_size_mm", "stochastic_term", "constant_term", "extra", "readout", "name"]
)


@settings(max_examples=300, deadline=None)
@given(key=GEOMETRY_KEYS, value=JSON_VALUES)
def test_a_geometry_entry_of_any_value_is_read_as_meant_or_refused(key: str, value: object) -> None:
    try:
        geometry = Geometry.from_dict({**TINY, key: value})
    except CaloforgeError:
        return
    # Accepted: the entry means what it says.
    assert geometry.shape == SHAPE or list(geometry.shape) == value
    assert geometry.cell_size_mm is not None and len(geometry.cell_size_mm) == 2
    for term in (geometry.stochastic_term, geometry.constant_term):
        assert math.isfinite(term) and term >= 0
    if key in ("stochastic_term", "constant_term"):
        assert getattr(geometry, key) == value and not isinstance(value, bool)
    if key == "cell_size_mm":
        assert isinstance(value, list) and list(geometry.cell_size_mm) == value
