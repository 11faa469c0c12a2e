"""Bad inputs and faults against every command, as a careful user would try them.

Each case of the table builds its inputs in `tmp_path`, runs the CLI in this process and
asserts what issue 18 asks of every failure: exit code 2, one line `caloforge ...: error:`
naming the file, key or option with what was expected and found, no traceback, nothing
written (no output, no partial) and nothing lost (every file there before is unchanged).
Faults (a full disk, also under TensorBoard, a file size limit, no permission, a file locked
by a writer, a second training in one folder, SIGTERM, SIGKILL, an append interrupted or
killed at random moments) have tests of their own below the table.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from caloforge.cli import main
from caloforge.data.canonical import ShowerWriter
from caloforge.data.convert import convert
from caloforge.data.io import open_showers
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError
from caloforge.export import export_onnx
from caloforge.generation import ShowerPipeline, generate_to_file
from caloforge.geometry import PRESETS
from caloforge.simulation.run import simulate_to_file
from caloforge.validation import compare
from model_files import random_checkpoint
from shower_files import (
    make_calochallenge,
    make_calogan,
    make_lcd_angle,
    make_lcd_fixed,
    make_lhcb,
    sparse_cells,
    truncate,
)

REPO = Path(__file__).resolve().parents[2]
CALOFORGE = [sys.executable, "-m", "caloforge"]


# --- inputs ------------------------------------------------------------------------------------
def canonical(
    path: Path,
    n: int = 6,
    *,
    energy: object = None,
    edit: Callable[[h5py.File], None] | None = None,
) -> Path:
    """A clic-25 canonical file of `n` showers, then changed by `edit` (an open h5py file)."""
    geometry = PRESETS["clic-25"]
    rng = np.random.default_rng(0)
    showers = sparse_cells(rng, (n, *geometry.shape), 0.01)
    values = rng.uniform(10, 100, n) if energy is None else np.asarray(energy, dtype=np.float64)
    with ShowerWriter(path, geometry) as writer:
        writer.write(Batch(showers, {"energy": values}))
    if edit is not None:
        with h5py.File(path, "a") as f:
            edit(f)
    return path


def replace(key: str, value: Callable[[np.ndarray], object]) -> Callable[[h5py.File], None]:
    """An edit putting `value(old data)` in place of dataset `key` (fixed size)."""

    def edit(f: h5py.File) -> None:
        old = f[key][()]
        del f[key]
        f[key] = value(old)

    return edit


def as_group(key: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[key]
        f.create_group(key).create_dataset("x", data=np.zeros(3))

    return edit


def geometry_json(change: Callable[[dict], object]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        d = json.loads(f.attrs["geometry_json"])
        change(d)
        f.attrs["geometry_json"] = json.dumps(d)

    return edit


def attribute(name: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f.attrs[name] = value

    return edit


def fixed_size(f: h5py.File) -> None:
    """Datasets rewritten without maxshape: a valid file that cannot grow."""
    for key in ("showers", "energy"):
        replace(key, lambda old: old)(f)


def foreign(tmp: Path, fmt: str, key: str, value: object) -> list[str]:
    """`inspect` of a file of a foreign format whose `key` holds `value` ("group": a group;
    a function: of the array that was there)."""
    if fmt == "lhcb":
        path = tmp / "ch.npz"
        make_lhcb(path)
        arrays = dict(np.load(path))
        arrays[key] = value(arrays[key]) if callable(value) else value
        np.savez(path, **arrays)
        return ["inspect", str(path)]
    path, options = tmp / f"{fmt}.h5", []
    if fmt == "lcd":
        make_lcd_fixed(path)
    elif fmt == "lcd-angle":
        make_lcd_angle(path)
    elif fmt == "calogan":
        make_calogan(path)
    else:
        make_calochallenge(path, tmp / "binning.xml")
        options = ["--binning", str(tmp / "binning.xml")]
    with h5py.File(path, "a") as f:
        old = f[key][()]
        del f[key]
        if isinstance(value, str) and value == "group":
            f.create_group(key)
        else:
            f[key] = value(old) if callable(value) else value
    return ["inspect", str(path), *options]


def as_type(dtype: object) -> Callable[[np.ndarray], np.ndarray]:
    """The array scaled into integers' range and cast to `dtype` (integer or bool cells)."""
    return lambda old: (old * 1000).astype(dtype)


def yaml_geometry(tmp: Path, cell: str = "[-5, 5]", *, change: tuple[str, str] = ("", "")) -> Path:
    """A YAML geometry (cell size `cell`), with the text `change[0]` replaced by `change[1]`."""
    path = tmp / "mine.yaml"
    path.write_text(
        (
            "name: mine\nshape: [5, 5, 2]\nreadout: layers\n"
            f"cell_size_mm: {cell}\n"
            "layers:\n  - {absorber: W, absorber_mm: 3.5, sensor: Si, sensor_mm: 0.3, repeat: 2}\n"
            "conditions:\n  - {name: energy, unit: GeV, default: [10, 100], valid: [1, 1000]}\n"
        ).replace(*change)
    )
    return path


def simulate_with(tmp: Path, old: str, new: str) -> list[str]:
    """`simulate` with a YAML geometry whose text `old` is replaced by `new`."""
    geometry = yaml_geometry(tmp, "[5, 5]", change=(old, new))
    return ["simulate", "--n", "2", "--workers", "1", "--geometry", str(geometry), "-o", "s.h5"]


def named_pipe(tmp: Path, name: str = "pipe.h5") -> str:
    """A FIFO: opening it to read blocks; renaming a file onto it replaces it."""
    os.mkfifo(tmp / name)
    return str(tmp / name)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gan3d checkpoint folder with random weights (its run folder is its parent's parent)."""
    return random_checkpoint(tmp_path_factory.mktemp("run"), "gan3d")


def corrupt_weights(folder: Path) -> None:
    """A few KB of the weights overwritten, past the safetensors header: loads, but wrong."""
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start : start + 4096] = np.full(1024, 1e30, dtype=np.float32).tobytes()
    path.write_bytes(bytes(data))


def nan_weights(folder: Path) -> None:
    """One weight NaN, with a checksum that matches (as if saved from a diverged run)."""
    from safetensors.torch import load_file, save_file

    from caloforge.models.checkpoint import CHECKSUM, weights_checksum

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(path))
    config = json.loads((folder / "config.json").read_text())
    config[CHECKSUM] = weights_checksum(path)
    (folder / "config.json").write_text(json.dumps(config))


# --- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """`build(tmp, checkpoint)` makes the inputs and returns the command line; every string
    of `expect` must be in the error line."""

    id: str
    build: Callable[[Path, Path], list[str]]
    expect: tuple[str, ...]


def inspect_of(edit: Callable[[h5py.File], None] | None = None, **kw: object) -> Callable:
    return lambda tmp, ck: ["inspect", str(canonical(tmp / "in.h5", edit=edit, **kw))]  # type: ignore[arg-type]


def convert_of(edit: Callable[[h5py.File], None] | None = None, **kw: object) -> Callable:
    return lambda tmp, ck: [
        "convert",
        str(canonical(tmp / "in.h5", edit=edit, **kw)),  # type: ignore[arg-type]
        str(tmp / "out.h5"),
    ]


def copy_checkpoint(tmp: Path, ck: Path, spoil: Callable[[Path], None]) -> str:
    folder = tmp / "ck"
    shutil.copytree(ck, folder)
    spoil(folder)
    return str(folder)


def lcd(tmp: Path) -> str:
    path = tmp / "Ele.h5"
    make_lcd_fixed(path)
    return str(path)


def generate(tmp: Path, ck: Path, *extra: str) -> list[str]:
    return ["generate", "--checkpoint", str(ck), *extra]


def ref(tmp: Path, **kw: object) -> str:
    return str(canonical(tmp / "ref.h5", **kw))  # type: ignore[arg-type]


def link(tmp: Path, target: str, name: str = "alias.h5", hard: bool = False) -> str:
    path = tmp / name
    (os.link if hard else os.symlink)(target, path)
    return str(path)


def a_file(tmp: Path, name: str = "afile", text: str = "not a folder\n") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def a_folder(tmp: Path, name: str = "afolder") -> Path:
    path = tmp / name
    path.mkdir()
    (path / "keep.txt").write_text("mine\n")
    return path


CASES = [
    # Readers: a canonical file with bad contents, through inspect and convert.
    Case("energy-group", inspect_of(as_group("energy")), ("in.h5", "'energy'", "a group")),
    Case("showers-group", inspect_of(as_group("showers")), ("'showers'", "a group")),
    Case(
        "energy-strings",
        inspect_of(replace("energy", lambda old: np.array([b"e"] * len(old)))),
        ("'energy'", "wrong data type", "dtype |S1"),
    ),
    Case(
        "showers-strings",
        convert_of(replace("showers", lambda old: np.array([b"s"] * len(old)))),
        ("'showers'", "wrong data type"),
    ),
    Case(
        "showers-integer",
        convert_of(replace("showers", lambda old: old.astype(np.int32))),
        ("'showers'", "float32 cell energies", "int32"),
    ),
    Case(
        "energy-longer",
        convert_of(replace("energy", lambda old: np.concatenate([old, old]))),
        ("'energy'", "wrong shape", "expected (6)", "(12,)"),
    ),
    Case(
        "energy-shorter",
        convert_of(replace("energy", lambda old: old[:3])),
        ("'energy'", "wrong shape", "(3,)"),
    ),
    Case("energy-scalar", inspect_of(replace("energy", lambda old: 5.0)), ("'energy'",)),
    Case(
        "energy-1e9",
        convert_of(energy=[1e9] * 6),
        ("in.h5", "'energy'", "1e+09", "valid for 1:1000 GeV"),
    ),
    Case("energy-nan", convert_of(energy=[np.nan] + [50.0] * 5), ("'energy'", "NaN")),
    Case("energy-negative", convert_of(energy=[-5.0] + [50.0] * 5), ("'energy'", "positive")),
    Case(
        "showers-nan",
        convert_of(replace("showers", lambda old: np.where(old > 0, np.nan, old))),
        ("'showers'", "NaN or infinite"),
    ),
    Case(
        "showers-negative",
        convert_of(replace("showers", lambda old: old - 1.0)),
        ("'showers'", "negative cell energies"),
    ),
    Case(
        "showers-3e38",
        convert_of(replace("showers", lambda old: np.where(old > 0, np.float32(3e38), old))),
        ("in.h5", "'showers'", "far above the primary energy", "first at row 0", "3e+38 GeV"),
    ),
    Case(
        "format-version-negative",
        convert_of(attribute("format_version", -1)),
        ("in.h5", "'format_version'", "an integer from 1 to 1", "found -1"),
    ),
    Case(
        "format-version-fractional",
        inspect_of(attribute("format_version", 0.5)),
        ("'format_version'", "an integer from 1 to 1", "found 0.5"),
    ),
    Case(
        "showers-wrong-shape",
        inspect_of(replace("showers", lambda old: old[:, :5])),
        ("'showers'", "(N, 25, 25, 25)", "(6, 5, 25, 25)"),
    ),
    Case(
        "geometry-negative-cell",
        inspect_of(geometry_json(lambda d: d.update(cell_size_mm=[-5.1, 5.1]))),
        ("'geometry_json'", "cell_size_mm must be two positive", "-5.1"),
    ),
    Case(
        "geometry-nan-cell",
        inspect_of(geometry_json(lambda d: d.update(cell_size_mm=[float("nan"), 5.1]))),
        ("'geometry_json'", "cell_size_mm"),
    ),
    Case(
        "geometry-not-json",
        inspect_of(attribute("geometry_json", "{not json")),
        ("'geometry_json'", "not valid JSON"),
    ),
    Case(
        "geometry-missing-key",
        inspect_of(geometry_json(lambda d: d.pop("shape"))),
        ("'geometry_json'", "shape"),
    ),
    Case(
        "format-version-text",
        inspect_of(attribute("format_version", "one")),
        ("'format_version'", "an integer", "'one'"),
    ),
    Case(
        "format-version-newer",
        inspect_of(attribute("format_version", 99)),
        ("'format_version'", "newer caloforge", "99"),
    ),
    Case(
        "energy-missing",
        inspect_of(lambda f: f.__delitem__("energy")),
        ("'energy'", "missing condition dataset"),
    ),
    Case(
        "empty-file",
        lambda tmp, ck: ["inspect", str(a_file(tmp, "e.h5", ""))],
        ("e.h5", "file is empty"),
    ),
    Case(
        "truncated",
        lambda tmp, ck: ["convert", str(_truncated(tmp)), str(tmp / "out.h5")],
        ("in.h5", "truncated or corrupt"),
    ),
    Case(
        "text-file",
        lambda tmp, ck: ["inspect", str(a_file(tmp, "t.h5"))],
        ("t.h5", "unrecognised shower file format"),
    ),
    Case(
        "input-is-folder",
        lambda tmp, ck: ["inspect", str(a_folder(tmp))],
        ("afolder", "not a checkpoint", "nor a run folder"),  # inspect reads runs too
    ),
    Case("input-missing", lambda tmp, ck: ["inspect", str(tmp / "no.h5")], ("no.h5", "not found")),
    Case(
        "glob-no-match",
        lambda tmp, ck: ["inspect", str(tmp / "none-*.h5")],
        ("none-*.h5", "no file matches"),
    ),
    Case(
        "inspect-max-showers-negative",
        lambda tmp, ck: ["inspect", ref(tmp), "--max-showers", "-1"],
        ("--max-showers", "-1"),
    ),
    Case(
        "inspect-unknown-format",
        lambda tmp, ck: ["inspect", ref(tmp), "--format", "root"],
        ("unknown format 'root'",),
    ),
    # Readers of the foreign formats: groups, strings, values outside the geometry.
    Case(
        "lcd-ecal-group",
        lambda tmp, ck: foreign(tmp, "lcd", "ECAL", "group"),
        ("lcd.h5", "'ECAL'", "not a dataset", "a group"),
    ),
    Case(
        "lcd-ecal-strings",
        lambda tmp, ck: foreign(tmp, "lcd", "ECAL", np.array([b"x"] * 3)),
        ("lcd.h5", "'ECAL'", "wrong data type", "|S1"),
    ),
    Case(
        "lcd-target-strings",
        lambda tmp, ck: foreign(tmp, "lcd", "target", np.array([[b"e", b"11"]] * 3)),
        ("'target'", "wrong data type"),
    ),
    Case(
        "lcd-energy-1e9",
        lambda tmp, ck: foreign(tmp, "lcd", "target", np.array([[11.0, 1e9]] * 3)),
        ("lcd.h5", "'energy'", "valid for 1:1000 GeV"),
    ),
    Case(
        "lcd-theta-strings",
        lambda tmp, ck: foreign(tmp, "lcd-angle", "theta", np.array([b"t"] * 4)),
        ("'theta'", "wrong data type"),
    ),
    Case(
        "lcd-theta-outside",
        lambda tmp, ck: foreign(tmp, "lcd-angle", "theta", np.full(4, 3.0)),
        ("lcd-angle.h5", "'theta'", "valid for"),
    ),
    Case(
        "calochallenge-energies-strings",
        lambda tmp, ck: foreign(tmp, "calochallenge", "incident_energies", np.array([[b"e"]] * 5)),
        ("'incident_energies'", "wrong data type"),
    ),
    Case(
        "calochallenge-showers-group",
        lambda tmp, ck: foreign(tmp, "calochallenge", "showers", "group"),
        ("'showers'", "not a dataset"),
    ),
    Case(
        "calogan-layer-group",
        lambda tmp, ck: foreign(tmp, "calogan", "layer_0", "group"),
        ("'layer_0'", "not a dataset"),
    ),
    Case(
        "calogan-energy-strings",
        lambda tmp, ck: foreign(tmp, "calogan", "energy", np.array([[b"e"]] * 3)),
        ("'energy'", "wrong data type"),
    ),
    Case(
        "lhcb-point-strings",
        lambda tmp, ck: foreign(tmp, "lhcb", "ParticlePoint", np.array([["a", "b", "c"]] * 4)),
        ("ch.npz", "'ParticlePoint'", "wrong data type", "<U1"),
    ),
    Case(
        "lhcb-images-wrong-shape",
        lambda tmp, ck: foreign(tmp, "lhcb", "EnergyDeposit", np.zeros((4, 7))),
        ("'EnergyDeposit'", "wrong shape"),
    ),
    # convert: outputs that must not be written, and its options.
    Case(
        "convert-zero-showers",
        lambda tmp, ck: ["convert", _zero_showers(tmp), str(tmp / "out.h5")],
        ("zero.h5", "holds no showers"),
    ),
    Case(
        "convert-onto-input",
        lambda tmp, ck: ["convert", ref(tmp), str(tmp / "ref.h5")],
        ("overwrite an input",),
    ),
    Case(
        "convert-onto-symlink-of-input",
        lambda tmp, ck: ["convert", ref(tmp), link(tmp, str(tmp / "ref.h5"))],
        ("alias.h5", "overwrite an input"),
    ),
    Case(
        "convert-onto-hardlink-of-input",
        lambda tmp, ck: ["convert", ref(tmp), link(tmp, str(tmp / "ref.h5"), hard=True)],
        ("alias.h5", "overwrite an input"),
    ),
    Case(
        "convert-to-folder",
        lambda tmp, ck: ["convert", ref(tmp), str(a_folder(tmp))],
        ("afolder", "is a folder"),
    ),
    Case(
        "convert-below-a-file",
        lambda tmp, ck: ["convert", ref(tmp), str(a_file(tmp) / "out.h5")],
        ("afile", "is a file, not a folder"),
    ),
    Case(
        "convert-mixed-formats",
        lambda tmp, ck: ["convert", lcd(tmp), ref(tmp), str(tmp / "out.h5")],
        ("ref.h5", "different formats", "'lcd'", "'caloforge'"),
    ),
    Case(
        "convert-batch-size-0",
        lambda tmp, ck: ["convert", ref(tmp), str(tmp / "out.h5"), "--batch-size", "0"],
        ("batch_size", "0"),
    ),
    Case(
        "convert-to-unknown",
        lambda tmp, ck: ["convert", ref(tmp), str(tmp / "out.h5"), "--to", "root"],
        ("unknown output format 'root'",),
    ),
    Case(
        "convert-one-path",
        lambda tmp, ck: ["convert", ref(tmp)],
        ("at least one input and an output",),
    ),
    Case(
        "convert-unknown-option",
        lambda tmp, ck: ["convert", ref(tmp), "--bogus", str(tmp / "out.h5")],
        ("unrecognized arguments", "--bogus"),
    ),
    Case(
        "convert-binning-for-canonical",
        lambda tmp, ck: ["convert", ref(tmp), "--binning", "b.xml", str(tmp / "out.h5")],
        ("--binning",),
    ),
    # simulate
    Case(
        "simulate-to-folder",
        lambda tmp, ck: ["simulate", "--n", "2", "-o", str(a_folder(tmp))],
        ("-o", "afolder", "is a folder"),
    ),
    Case(
        "simulate-below-a-file",
        lambda tmp, ck: ["simulate", "--n", "2", "-o", str(a_file(tmp) / "x" / "s.h5")],
        ("afile", "is a file, not a folder"),
    ),
    Case("simulate-n-0", lambda tmp, ck: ["simulate", "--n", "0", "-o", "s.h5"], ("--n", "0")),
    Case("simulate-n-text", lambda tmp, ck: ["simulate", "--n", "ten", "-o", "s.h5"], ("--n",)),
    Case(
        "simulate-negative-energy",
        lambda tmp, ck: ["simulate", "--n", "2", "--energy", "-5:10", "-o", "s.h5"],
        ("'energy'", "-5:10", "valid for 1:1000"),
    ),
    Case(
        "simulate-energy-reversed",
        lambda tmp, ck: ["simulate", "--n", "2", "--energy", "100:10", "-o", "s.h5"],
        ("'energy'", "100.0:10.0", "low <= high"),
    ),
    Case(
        "simulate-energy-text",
        lambda tmp, ck: ["simulate", "--n", "2", "--energy", "a:b", "-o", "s.h5"],
        ("--energy", "LOW:HIGH"),
    ),
    Case(
        "simulate-energy-1e9",
        lambda tmp, ck: ["simulate", "--n", "2", "--energy", "1e9", "-o", "s.h5"],
        ("'energy'", "valid for 1:1000"),
    ),
    Case(
        "simulate-theta-on-clic-25",
        lambda tmp, ck: ["simulate", "--n", "2", "--theta", "60:90", "-o", "s.h5"],
        ("theta",),
    ),
    Case(
        "simulate-workers-0",
        lambda tmp, ck: ["simulate", "--n", "2", "--workers", "0", "-o", "s.h5"],
        ("workers", "0"),
    ),
    Case(
        "simulate-batch-size-0",
        lambda tmp, ck: ["simulate", "--n", "2", "--batch-size", "0", "-o", "s.h5"],
        ("--batch-size", "0"),
    ),
    Case(
        "simulate-geometry-missing",
        lambda tmp, ck: ["simulate", "--n", "2", "--geometry", "nope.yaml", "-o", "s.h5"],
        ("nope",),
    ),
    Case(
        "simulate-geometry-negative-cell",
        lambda tmp, ck: ["simulate", "--n", "2", "--geometry", str(yaml_geometry(tmp)), "-o", "s"],
        ("mine", "cell_size_mm must be two positive", "-5"),
    ),
    Case(
        "simulate-append-fixed-size",
        lambda tmp, ck: ["simulate", "--n", "2", "--append", "-o", ref(tmp, edit=fixed_size)],
        ("ref.h5", "'showers'", "fixed number of rows", "maxshape (6, 25, 25, 25)"),
    ),
    Case(
        "simulate-append-other-geometry",
        lambda tmp, ck: [
            "simulate",
            "--n",
            "2",
            "--geometry",
            "lhcb-30",
            "--append",
            "-o",
            ref(tmp),
        ],
        ("ref.h5", "another geometry"),
    ),
    Case(
        "simulate-append-text-file",
        lambda tmp, ck: ["simulate", "--n", "2", "--append", "-o", str(a_file(tmp, "t.h5"))],
        ("t.h5",),
    ),
    Case(
        "simulate-seed-negative",
        lambda tmp, ck: ["simulate", "--n", "2", "--seed", "-1", "-o", "s.h5"],
        ("--seed", "-1"),
    ),
    Case(
        "simulate-point-on-clic-25",
        lambda tmp, ck: ["simulate", "--n", "2", "--point", "1:2", "-o", "s.h5"],
        ("no 'point' condition",),
    ),
    Case(
        "simulate-point-outside-lhcb",
        lambda tmp, ck: [
            *("simulate", "--n", "2", "--geometry", "lhcb-30"),
            *("--point", "-500:500", "-o", "s.h5"),
        ],
        ("'point'", "-500:500", "valid for -100:100 mm"),
    ),
    Case(
        "simulate-energy-nan",
        lambda tmp, ck: ["simulate", "--n", "2", "--energy", "nan", "-o", "s.h5"],
        ("'energy'", "finite"),
    ),
    Case(
        "simulate-energy-three-parts",
        lambda tmp, ck: ["simulate", "--n", "2", "--energy", "1:2:3", "-o", "s.h5"],
        ("--energy", "1:2:3"),
    ),
    Case(
        "simulate-positron-gflash",
        lambda tmp, ck: ["simulate", "--n", "2", "--particle", "positron", "-o", "s.h5"],
        ("positron",),
    ),
    Case(
        "simulate-range-cut-gflash",
        lambda tmp, ck: ["simulate", "--n", "2", "--range-cut", "0.7", "-o", "s.h5"],
        ("--range-cut", "geant4 only"),
    ),
    Case(
        "simulate-compression-unknown",
        lambda tmp, ck: ["simulate", "--n", "2", "--compression", "zip", "-o", "s.h5"],
        ("--compression", "zip"),
    ),
    # generate
    Case(
        "generate-onto-its-reference",
        lambda tmp, ck: generate(tmp, ck, "--conditions-from", ref(tmp), "-o", ref(tmp)),
        ("-o", "ref.h5", "overwrite an input"),
    ),
    Case(
        "generate-onto-a-link-of-its-reference",
        lambda tmp, ck: generate(
            tmp, ck, "--conditions-from", ref(tmp), "-o", link(tmp, str(tmp / "ref.h5"))
        ),
        ("alias.h5", "overwrite an input"),
    ),
    Case(
        "generate-onto-its-checkpoint-weights",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "-o", str(ck / "model.safetensors")),
        ("model.safetensors", "overwrite an input"),
    ),
    Case(
        "export-onto-its-checkpoint-config",
        lambda tmp, ck: ["export", "--checkpoint", str(ck), "-o", str(ck / "config.json")],
        ("config.json", "overwrite an input"),
    ),
    Case(
        "simulate-onto-its-geometry-yaml",
        lambda tmp, ck: [
            *("simulate", "--n", "2", "--geometry", str(yaml_geometry(tmp, "[5, 5]"))),
            *("-o", str(tmp / "mine.yaml")),
        ],
        ("mine.yaml", "overwrite an input"),
    ),
    Case(
        "generate-to-folder",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "-o", str(a_folder(tmp))),
        ("afolder", "is a folder"),
    ),
    Case(
        "generate-below-a-file",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "-o", str(a_file(tmp) / "g.h5")),
        ("afile", "is a file, not a folder"),
    ),
    Case(
        "generate-corrupt-weights",
        lambda tmp, ck: [
            "generate",
            "--checkpoint",
            copy_checkpoint(tmp, ck, corrupt_weights),
            "--n",
            "2",
            "-o",
            str(tmp / "g.h5"),
        ],
        ("model.safetensors", "corrupt weights", "SHA-256"),
    ),
    Case(
        "generate-nan-weights",
        lambda tmp, ck: [
            "generate",
            "--checkpoint",
            copy_checkpoint(tmp, ck, nan_weights),
            "--n",
            "2",
            "-o",
            str(tmp / "g.h5"),
        ],
        ("model.safetensors", "NaN or infinite"),
    ),
    Case(
        "generate-missing-weights",
        lambda tmp, ck: [
            "generate",
            "--checkpoint",
            copy_checkpoint(tmp, ck, lambda f: (f / "model.safetensors").unlink()),
            "--n",
            "2",
            "-o",
            str(tmp / "g.h5"),
        ],
        ("model.safetensors", "unreadable weights"),
    ),
    Case(
        "generate-checkpoint-missing",
        lambda tmp, ck: ["generate", "--checkpoint", str(tmp / "none"), "--n", "2", "-o", "g.h5"],
        ("none", "checkpoint not found"),
    ),
    Case(
        "generate-checkpoint-empty-folder",
        lambda tmp, ck: ["generate", "--checkpoint", str(a_folder(tmp)), "--n", "2", "-o", "g.h5"],
        ("afolder", "not a checkpoint"),
    ),
    Case("generate-n-0", lambda tmp, ck: generate(tmp, ck, "--n", "0", "-o", "g.h5"), ("--n",)),
    Case(
        "generate-no-n",
        lambda tmp, ck: generate(tmp, ck, "-o", "g.h5"),
        ("--n is required",),
    ),
    Case(
        "generate-batch-size-0",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--batch-size", "0", "-o", "g.h5"),
        ("--batch-size", "0"),
    ),
    Case(
        "generate-seed-negative",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--seed", "-1", "-o", "g.h5"),
        ("--seed", "-1"),
    ),
    Case(
        "generate-energy-1e9",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--energy", "1e9", "-o", "g.h5"),
        ("'energy'", "valid for 1:1000"),
    ),
    Case(
        "generate-negative-energy-range",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--energy", "-5:10", "-o", "g.h5"),
        ("'energy'", "-5:10"),
    ),
    Case(
        "generate-reference-energy-1e9",
        lambda tmp, ck: generate(
            tmp, ck, "--conditions-from", ref(tmp, energy=[1e9] * 6), "-o", "g.h5"
        ),
        ("ref.h5", "'energy'", "valid for 1:1000"),
    ),
    Case(
        "generate-reference-energy-group",
        lambda tmp, ck: generate(
            tmp, ck, "--conditions-from", ref(tmp, edit=as_group("energy")), "-o", "g.h5"
        ),
        ("ref.h5", "'energy'", "a group"),
    ),
    Case(
        "generate-conditions-and-ranges",
        lambda tmp, ck: generate(
            tmp, ck, "--conditions-from", ref(tmp), "--energy", "10:20", "-o", "g.h5"
        ),
        ("--energy", "cannot be combined"),
    ),
    Case(
        "generate-device-unknown",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--device", "tpu", "-o", "g.h5"),
        ("tpu",),
    ),
    Case(
        "generate-device-cuda-without-gpu",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--device", "cuda:7", "-o", "g.h5"),
        ("cuda:7",),
    ),
    Case(
        "generate-theta-on-clic-25",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--theta", "60:90", "-o", "g.h5"),
        ("no 'theta' condition",),
    ),
    Case(
        "generate-backend-unknown",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--backend", "fp4", "-o", "g.h5"),
        ("--backend", "fp4"),
    ),
    # train: everything refused before a step runs.
    Case(
        "train-out-is-a-file",
        lambda tmp, ck: ["train", "--config", "gan3d", "--data", ref(tmp), "--out", ref(tmp)],
        ("--out", "ref.h5", "is a file; expected a folder"),
    ),
    Case(
        "train-out-below-a-file",
        lambda tmp, ck: [
            "train",
            "--config",
            "gan3d",
            "--data",
            ref(tmp),
            "--out",
            str(a_file(tmp) / "run"),
        ],
        ("afile", "is a file, not a folder"),
    ),
    Case(
        "train-data-energy-1e9",
        lambda tmp, ck: [
            "train",
            "--config",
            "gan3d",
            "--data",
            ref(tmp, energy=[1e9] * 6),
            "--out",
            str(tmp / "run"),
            "training.batch_size=2",
        ],
        ("ref.h5", "'energy'", "valid for 1:1000"),
    ),
    Case(
        "train-data-cells-far-above-the-primary",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data"),
            ref(tmp, edit=replace("showers", lambda old: old + (old > 0) * np.float32(1e4))),
            *("--out", str(tmp / "run"), "training.batch_size=2"),
        ],
        ("ref.h5", "'showers'", "far above the primary energy", "GeV, primary energy"),
    ),
    Case(
        "train-data-missing",
        lambda tmp, ck: ["train", "--config", "gan3d", "--data", "no.h5", "--out", "run"],
        ("no.h5", "not found"),
    ),
    Case(
        "train-override-unknown-key",
        lambda tmp, ck: [
            "train",
            "--config",
            "gan3d",
            "--data",
            ref(tmp),
            "--out",
            str(tmp / "run"),
            "training.bogus=1",
        ],
        ("bogus",),
    ),
    Case(
        "train-override-bad-value",
        lambda tmp, ck: [
            "train",
            "--config",
            "gan3d",
            "--data",
            ref(tmp),
            "--out",
            str(tmp / "run"),
            "training.batch_size=many",
        ],
        ("training.batch_size",),
    ),
    Case(
        "train-override-not-key-value",
        lambda tmp, ck: [
            "train",
            "--config",
            "gan3d",
            "--data",
            ref(tmp),
            "--out",
            str(tmp / "run"),
            "batch_size",
        ],
        ("batch_size",),
    ),
    Case(
        "train-config-missing",
        lambda tmp, ck: ["train", "--config", "nope", "--data", ref(tmp), "--out", "run"],
        ("nope", "config file not found"),
    ),
    Case(
        "train-config-binary",
        lambda tmp, ck: ["train", "--config", ref(tmp), "--data", ref(tmp), "--out", "run"],
        ("--config", "ref.h5", "not a YAML text file"),
    ),
    Case(
        "train-max-steps-0",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "--out", "run"),
            "training.max_steps=0",
        ],
        ("training.max_steps", "0"),
    ),
    Case(
        "train-format-wrong",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "--out", "run"),
            *("--format", "lcd"),
        ],
        ("ref.h5", "'ECAL'"),
    ),
    Case(
        "train-resume-without-run",
        lambda tmp, ck: [
            "train",
            "--config",
            "gan3d",
            "--data",
            ref(tmp),
            "--out",
            str(tmp / "run"),
            "--resume",
        ],
        ("run", "no checkpoint found"),
    ),
    # validate and bench: their inputs and outputs.
    Case(
        "validate-reference-missing",
        lambda tmp, ck: [
            "validate",
            "--reference",
            "no.h5",
            "--generated",
            ref(tmp),
            "--out",
            str(tmp / "rep"),
        ],
        ("no.h5", "not found"),
    ),
    Case(
        "validate-generated-cells-3e38",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--out", str(tmp / "rep"), "--generated"),
            str(canonical(tmp / "gen.h5", edit=replace("showers", lambda old: old * 1e36))),
        ],
        ("gen.h5", "'showers'", "far above the primary energy", "e+3"),
    ),
    Case(
        "validate-subsample-negative",
        lambda tmp, ck: [
            "validate",
            "--reference",
            ref(tmp),
            "--generated",
            ref(tmp),
            "--out",
            str(tmp / "rep"),
            "--subsample",
            "-1",
        ],
        ("subsample", "-1"),
    ),
    Case(
        "validate-out-below-a-file",
        lambda tmp, ck: [
            "validate",
            "--reference",
            ref(tmp),
            "--generated",
            ref(tmp),
            "--out",
            str(a_file(tmp) / "rep"),
        ],
        ("--out", "afile", "is a file, not a folder"),
    ),
    Case(
        "convert-binning-xml-onto-input",
        lambda tmp, ck: [
            "convert",
            ref(tmp),
            "--to",
            "calochallenge",
            "--binning",
            ref(tmp),
            str(tmp / "cc.h5"),
        ],
        ("--binning", "overwrite an input"),
    ),
    Case(
        "validate-config-binary",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--config", ref(tmp)),
        ],
        ("--config", "ref.h5", "not a YAML text file"),
    ),
    Case(
        "validate-energy-bins-text",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--energy-bins", "a"),
        ],
        ("energy_bins", "'a'"),
    ),
    Case(
        "bench-threads-0",
        lambda tmp, ck: ["bench", "--model", "gan3d", "--threads", "0"],
        ("--threads", "0"),
    ),
    Case(
        "bench-repeats-0",
        lambda tmp, ck: ["bench", "--model", "gan3d", "--repeats", "0"],
        ("--repeats", ">= 1", "0"),
    ),
    Case(
        "bench-warmup-negative",
        lambda tmp, ck: ["bench", "--model", "gan3d", "--warmup", "-1"],
        ("--warmup", "-1"),
    ),
    Case(
        "bench-time-budget-negative",
        lambda tmp, ck: ["bench", "--model", "gan3d", "--time-budget", "-1"],
        ("--time-budget", "positive"),
    ),
    Case(
        "bench-peak-nan",
        lambda tmp, ck: ["bench", "--model", "gan3d", "--peak-gflops", "nan"],
        ("--peak-gflops", "positive"),
    ),
    Case(
        "bench-simulator-showers-negative",
        lambda tmp, ck: ["bench", "--model", "gan3d", "--simulator-showers", "-1"],
        ("--simulator-showers", "-1"),
    ),
    Case(
        "bench-batch-sizes-0",
        lambda tmp, ck: ["bench", "--model", "gan3d", "--batch-sizes", "0"],
        ("--batch-sizes: batch sizes must be positive",),
    ),
    Case(
        "bench-model-unknown",
        lambda tmp, ck: ["bench", "--model", "nope"],
        ("unknown model family 'nope'",),
    ),
    Case(
        "bench-json-to-folder",
        lambda tmp, ck: ["bench", "--model", "gan3d", "--json", str(a_folder(tmp))],
        ("--json", "afolder", "is a folder"),
    ),
    Case(
        "export-to-folder",
        lambda tmp, ck: ["export", "--checkpoint", str(ck), "-o", str(a_folder(tmp))],
        ("-o", "afolder", "is a folder"),
    ),
    Case(
        "no-command",
        lambda tmp, ck: [],
        ("COMMAND",),
    ),
    # --- a second round: inputs the first table had not tried ---------------------------------
    # Shower arrays of integers (counts, or energies cut to whole MeV) and booleans, refused by
    # every reader as the canonical one refuses them; booleans are not numbers of a condition.
    Case(
        "lcd-ecal-integer",
        lambda tmp, ck: foreign(tmp, "lcd", "ECAL", as_type(np.int16)),
        ("lcd.h5", "'ECAL'", "floating-point cell energies", "dtype int16"),
    ),
    Case(
        "lcd-ecal-boolean",
        lambda tmp, ck: foreign(tmp, "lcd", "ECAL", as_type(bool)),
        ("'ECAL'", "floating-point cell energies", "dtype bool"),
    ),
    Case(
        "lcd-target-boolean",
        lambda tmp, ck: foreign(tmp, "lcd", "target", np.ones((3, 2), dtype=bool)),
        ("'target'", "wrong data type", "dtype bool"),
    ),
    Case(
        "calochallenge-showers-integer",
        lambda tmp, ck: foreign(tmp, "calochallenge", "showers", as_type(np.int32)),
        ("calochallenge.h5", "'showers'", "floating-point cell energies", "dtype int32"),
    ),
    Case(
        "calogan-layer-integer",
        lambda tmp, ck: foreign(tmp, "calogan", "layer_1", as_type(np.int64)),
        ("calogan.h5", "'layer_1'", "floating-point cell energies", "dtype int64"),
    ),
    Case(
        "lhcb-images-integer",
        lambda tmp, ck: foreign(tmp, "lhcb", "EnergyDeposit", as_type(np.int32)),
        ("ch.npz", "'EnergyDeposit'", "floating-point cell energies", "dtype int32"),
    ),
    # Files cut short, of no known layout, or not files at all.
    Case(
        "lhcb-truncated",
        lambda tmp, ck: ["inspect", str(_truncated_npz(tmp))],
        ("ch.npz", "not a readable .npz archive", "truncated or corrupt"),
    ),
    Case(
        "hdf5-of-no-known-layout",
        lambda tmp, ck: ["inspect", _hdf5_with(tmp, "x")],
        ("other.h5", "unrecognised shower file format", "an HDF5 file holding [x]"),
    ),
    Case(
        "input-symlink-loop",
        lambda tmp, ck: ["inspect", _link_loop(tmp)],
        ("a.h5", "a symbolic link loop"),
    ),
    Case(
        "input-broken-link",
        lambda tmp, ck: ["inspect", link(tmp, str(tmp / "gone.h5"))],
        ("alias.h5", "a broken link (to", "gone.h5"),
    ),
    Case(
        "input-named-pipe",
        lambda tmp, ck: ["inspect", named_pipe(tmp)],
        ("pipe.h5", "is a named pipe, not a regular file"),
    ),
    Case(
        "input-name-with-a-line-break",
        lambda tmp, ck: ["inspect", str(canonical(tmp / "in\nput.h5", energy=[1e9] * 6))],
        ("in\\nput.h5", "'energy'", "valid for 1:1000 GeV"),
    ),
    Case(
        "calochallenge-binning-nan-edges",
        lambda tmp, ck: _binning(tmp, "r_edges='0,nan,inf' n_bin_alpha='5'"),
        ("binning.xml", "Layer id=0", "increasing finite r_edges", "nan"),
    ),
    Case(
        "calochallenge-binning-is-a-folder",
        lambda tmp, ck: [
            *foreign(tmp, "calochallenge", "showers", lambda old: old)[:2],
            "--binning",
            str(tmp),
        ],
        ("binning XML: is a folder",),
    ),
    Case(
        "geometry-json-valid-range-reversed",
        inspect_of(geometry_json(lambda d: d["conditions"][0].update(valid=[1000, 1]))),
        ("'geometry_json'", "valid must be a finite range", "[1000.0, 1.0]"),
    ),
    Case(
        "geometry-json-huge-shape",
        inspect_of(geometry_json(lambda d: d.update(shape=[100000, 100000, 25]))),
        ("'geometry_json'", "cells per shower; at most"),
    ),
    # Outputs that are not files: renaming the result onto them would replace them (as
    # `convert in.h5 /dev/null` once replaced the machine's /dev/null with an HDF5 file).
    Case(
        "convert-onto-a-named-pipe",
        lambda tmp, ck: ["convert", ref(tmp), named_pipe(tmp)],
        ("pipe.h5", "not a regular file"),
    ),
    Case(
        "generate-onto-a-named-pipe",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "-o", named_pipe(tmp)),
        ("-o", "pipe.h5", "not a regular file"),
    ),
    Case(
        "simulate-onto-a-named-pipe",
        lambda tmp, ck: ["simulate", "--n", "2", "-o", named_pipe(tmp)],
        ("-o", "pipe.h5", "not a regular file"),
    ),
    Case(
        "convert-where-files-cannot-be-created",
        lambda tmp, ck: ["convert", ref(tmp), "/proc/caloforge-fuzz.h5"],
        ("/proc/caloforge-fuzz.h5", "cannot be created (No such file or directory)"),
    ),
    # Options naming what the data do not have, and values too large to be meant.
    Case(
        "validate-theta-bins-without-theta",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--theta-bins", "60,90"),
        ],
        ("validation.theta_bins", "--theta-bins 60,90", "no theta condition", "energy"),
    ),
    Case(
        "validate-calochallenge-protocol-with-caloforge-options",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--protocol", "calochallenge"),
            *("--energy-bins", "3", "--no-plots"),
        ],
        ("validation.energy_bins", "--energy-bins, --no-plots", "not read by --protocol"),
    ),
    Case(
        "validate-calochallenge-protocol-with-check",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--protocol", "calochallenge", "--check"),
        ],
        ("--check judges caloforge's protocol", "without verdicts"),
    ),
    Case(
        "validate-challenge-option-without-its-protocol",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--challenge-epochs", "1"),
        ],
        ("validation.challenge_epochs", "--challenge-epochs", "--protocol calochallenge only"),
    ),
    Case(
        "validate-energy-bins-1e8",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--energy-bins", "100000000"),
        ],
        ("validation.energy_bins", "at most 1000 bins"),
    ),
    Case(
        "validate-energy-bins-infinite-edge",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--energy-bins", "1,2,inf"),
        ],
        ("validation.energy_bins", "'1,2,inf'"),
    ),
    Case(
        "validate-workers-100000",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--workers", "100000"),
        ],
        ("validation.workers", "at most", "per core"),
    ),
    Case(
        "simulate-workers-100000",
        lambda tmp, ck: ["simulate", "--n", "2", "--workers", "100000", "-o", "s.h5"],
        ("--workers 100000", "at most", "per core"),
    ),
    Case(
        "simulate-more-memory-than-exists",
        lambda tmp, ck: [
            # 10^8 showers: their conditions fit on disk (800 MB), a batch of them not in memory
            *("simulate", "--n", "100000000", "--batch-size", "100000000"),
            *("--workers", "1", "-o", "s.h5"),
        ],
        ("out of memory", "--batch-size"),
    ),
    Case(
        "simulate-more-disk-than-exists",
        lambda tmp, ck: ["simulate", "--n", "100000000000000", "-o", "s.h5"],
        ("conditions of 100,000,000,000,000 showers alone take 800 TB", "free on its disk"),
    ),
    Case(
        "generate-more-memory-than-exists",
        lambda tmp, ck: generate(
            tmp,
            ck,
            *("--n", "100000000", "--batch-size", "100000000"),
            *("--backend", "eager", "-o", "g.h5"),
        ),
        ("out of memory", "--batch-size"),
    ),
    Case(
        "generate-more-disk-than-exists",
        lambda tmp, ck: generate(tmp, ck, *("--n", "100000000000000", "-o", "g.h5")),
        ("conditions of 100,000,000,000,000 showers alone take 800 TB", "free on its disk"),
    ),
    # YAML and JSON that do not parse: one line with where, not the parser's paragraph.
    Case(
        "validate-config-yaml-error",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", ref(tmp)),
            *("--out", str(tmp / "rep"), "--config"),
            str(a_file(tmp, "v.yaml", "subsample: [1,\n  ssim_pairs: 3\n")),
        ],
        ("v.yaml", "not valid YAML", "at line 3, column 1"),
    ),
    Case(
        "train-config-yaml-tab",
        lambda tmp, ck: [
            *("train", "--config", str(a_file(tmp, "c.yaml", "model:\n\tfamily: gan3d\n"))),
            *("--data", ref(tmp), "--out", str(tmp / "run")),
        ],
        ("c.yaml", "not valid YAML", "'\\t'", "at line 2, column 1"),
    ),
    Case(
        "train-override-key-with-a-line-break",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "--out", str(tmp / "run")),
            "training.batch\nsize=2",
        ],
        ("training.batch\\nsize", "not a dotted name"),
    ),
    Case(
        "train-override-value-not-yaml",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "--out", str(tmp / "run")),
            "training.fractions=[0.8,\n0.1",
        ],
        ("training.fractions", "not valid YAML", "at line 2, column 4"),
    ),
    Case(
        "simulate-geometry-yaml-binary",
        lambda tmp, ck: [
            *("simulate", "--n", "2", "--geometry"),
            *(str(_binary(tmp, "g.yaml")), "-o", "s.h5"),
        ],
        ("g.yaml", "not a YAML text file"),
    ),
    Case(
        "simulate-geometry-yaml-tab",
        lambda tmp, ck: simulate_with(tmp, "readout: layers\n", "readout: layers\n\tx: 1\n"),
        ("mine.yaml", "not valid YAML", "at line 4, column 1"),
    ),
    Case(
        "simulate-geometry-condition-not-drawn",
        lambda tmp, ck: simulate_with(
            tmp,
            "valid: [1, 1000]}\n",
            "valid: [1, 1000]}\n  - {name: spin, unit: '', default: [0, 1], valid: [0, 1]}\n",
        ),
        ("mine.yaml", "cannot draw", "'spin'"),
    ),
    Case(
        "simulate-geometry-shape-text",
        lambda tmp, ck: simulate_with(tmp, "shape: [5, 5, 2]", "shape: [a, b, c]"),
        ("mine.yaml", "key 'shape'", "'a'"),
    ),
    Case(
        "simulate-geometry-huge-shape",
        lambda tmp, ck: simulate_with(tmp, "shape: [5, 5, 2]", "shape: [100000, 100000, 2]"),
        ("mine.yaml", "20,000,000,000 cells per shower; at most"),
    ),
    Case(
        "simulate-geometry-without-layers",
        lambda tmp, ck: simulate_with(tmp, "layers:\n", "nolayers: 1\nx:\n"),
        ("mine.yaml", "unknown key(s)", "nolayers"),
    ),
    Case(
        "simulate-geometry-layers-fewer-than-shape",
        lambda tmp, ck: simulate_with(tmp, "repeat: 2", "repeat: 1"),
        ("mine.yaml", "n_layers = 1 layers", "(5, 5, 2)"),
    ),
    Case(
        "simulate-geometry-valid-range-reversed",
        lambda tmp, ck: simulate_with(tmp, "valid: [1, 1000]", "valid: [1000, 1]"),
        ("mine.yaml", "valid must be a finite range", "[1000.0, 1.0]"),
    ),
    Case(
        "simulate-geometry-default-outside-valid",
        lambda tmp, ck: simulate_with(tmp, "default: [10, 100]", "default: [10, 5000]"),
        ("mine.yaml", "default [10.0, 5000.0] must lie inside valid"),
    ),
    Case(
        "simulate-geometry-repeat-1e8",
        lambda tmp, ck: simulate_with(tmp, "repeat: 2", "repeat: 100000000"),
        ("mine.yaml", "more than 10000 layers"),
    ),
    Case(
        "generate-checkpoint-config-not-json",
        lambda tmp, ck: [
            *("generate", "--checkpoint"),
            copy_checkpoint(tmp, ck, lambda f: (f / "config.json").write_text("{oops")),
            *("--n", "2", "-o", str(tmp / "g.h5")),
        ],
        ("config.json", "not valid JSON", "at line 1, column 2"),
    ),
    Case(
        "generate-checkpoint-config-a-list",
        lambda tmp, ck: [
            *("generate", "--checkpoint"),
            copy_checkpoint(tmp, ck, lambda f: (f / "config.json").write_text("[1, 2]")),
            *("--n", "2", "-o", str(tmp / "g.h5")),
        ],
        ("config.json", "expected a JSON object"),
    ),
    Case(
        "generate-checkpoint-config-without-family",
        lambda tmp, ck: [
            *("generate", "--checkpoint"),
            copy_checkpoint(tmp, ck, _without_family),
            *("--n", "2", "-o", str(tmp / "g.h5")),
        ],
        ("config.json", "'model.family'", "None"),
    ),
    # Fourth round (issue 18): inputs no earlier round tried.
    # A checkpoint's config.json edited by hand: named with the file and the key.
    Case(
        "checkpoint-config-latent-size-changed",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, "model", "latent_size", 100)),
        ("model.safetensors", "do not fit", "'dense.weight'", "(3136, 100) by the config"),
    ),
    Case(
        "checkpoint-config-latent-size-text",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, "model", "latent_size", "200")),
        ("config.json", "key 'model'", "'latent_size'", "'200'"),
    ),
    Case(
        "checkpoint-config-family-of-other-weights",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, "model", "family", "flow-match")),
        ("config.json", "key 'model'", "'flow-match'", "'batchnorm_eps'"),
    ),
    Case(
        "checkpoint-config-unknown-model-key",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, "model", "wings", 3)),
        ("config.json", "key 'model'", "'wings'"),
    ),
    Case(
        "checkpoint-config-dropout-nan",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, "model", "dropout", np.nan)),
        ("config.json", "key 'model'", "'dropout'", "nan"),
    ),
    Case(
        "checkpoint-config-transform-parameter-text",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, "transform", "power", "x")),
        ("config.json", "key 'transform'", "parameter 'power'", "'x'"),
    ),
    Case(
        "checkpoint-config-transform-parameter-flag",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, "transform", "scale", True)),
        ("config.json", "key 'transform'", "parameter 'scale'", "True"),
    ),
    Case(
        "checkpoint-config-transform-unknown",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, "transform", "name", "log9")),
        ("config.json", "key 'transform'", "'log9'"),
    ),
    Case(
        "checkpoint-config-step-text",
        lambda tmp, ck: ["inspect", edited_checkpoint(tmp, ck, None, "step", "ten")],
        ("config.json", "key 'step'", "whole number", "'ten'"),
    ),
    Case(
        "checkpoint-config-epoch-negative",
        lambda tmp, ck: ["inspect", edited_checkpoint(tmp, ck, None, "epoch", -3)],
        ("config.json", "key 'epoch'", "-3"),
    ),
    # Names longer than the file system allows, given as outputs and as inputs.
    Case(
        "generate-output-name-too-long",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "-o", "x" * 300 + ".h5"),
        ("-o xxx", "303 bytes long", "allows 238", "temporary name"),
    ),
    Case(
        "simulate-output-name-too-long",
        lambda tmp, ck: ["simulate", "--n", "2", "--workers", "1", "-o", "y" * 250 + ".h5"],
        ("-o yyy", "253 bytes long", "allows 238"),
    ),
    Case(
        "convert-output-name-too-long",
        lambda tmp, ck: ["convert", ref(tmp), "z" * 300],
        ("300 bytes long",),
    ),
    Case(
        "export-output-name-too-long",
        lambda tmp, ck: ["export", "--checkpoint", str(ck), "-o", "q" * 300 + ".onnx"],
        ("-o qqq", "305 bytes long"),
    ),
    Case(
        "train-out-name-too-long",
        lambda tmp, ck: ["train", "--config", "gan3d", "--data", ref(tmp), "--out", "w" * 300],
        ("--out www", "300 bytes long"),
    ),
    Case(
        "inspect-input-name-too-long",
        lambda tmp, ck: ["inspect", "n" * 300 + ".h5"],
        ("nnn", "too long for the file system", "303 bytes"),
    ),
    Case(
        "generate-checkpoint-name-too-long",
        lambda tmp, ck: ["generate", "--checkpoint", "c" * 300, "--n", "2", "-o", "g.h5"],
        ("ccc", "too long for the file system"),
    ),
    Case(
        "simulate-geometry-name-too-long",
        lambda tmp, ck: ["simulate", "--n", "2", "--geometry", "g" * 300 + ".yaml", "-o", "s.h5"],
        ("ggg", "too long for the file system"),
    ),
    # Empty values: '' is the current folder to every path function.
    Case(
        "train-out-empty",
        lambda tmp, ck: ["train", "--config", "gan3d", "--data", ref(tmp), "--out", ""],
        ("argument --out", "empty string"),
    ),
    Case(
        "generate-output-empty",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "-o", ""),
        ("argument -o", "empty string"),
    ),
    Case(
        "generate-output-equals-empty",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--output="),
        ("argument --output", "empty string"),
    ),
    Case(
        "validate-out-empty",
        lambda tmp, ck: [*validate_of(tmp), "--out", ""],
        ("argument --out", "empty string"),
    ),
    Case(
        "bench-json-empty",
        lambda tmp, ck: ["bench", "--checkpoint", str(ck), "--json", ""],
        ("argument --json", "empty string"),
    ),
    Case(
        "tune-study-name-empty",
        lambda tmp, ck: tune_of(tmp, "--study-name", ""),
        ("argument --study-name", "empty string"),
    ),
    Case(
        "inspect-empty-path",
        lambda tmp, ck: ["inspect", ""],
        ("an empty string given as an argument",),
    ),
    # YAML files: a key given twice (PyYAML took its last value), folders, lists, tabs.
    Case(
        "simulate-geometry-key-twice",
        lambda tmp, ck: simulate_with(
            tmp, "readout: layers\n", "readout: layers\nshape: [6, 6, 2]\n"
        ),
        ("mine.yaml", "'shape' given twice", "line 2, column 1", "line 4, column 1"),
    ),
    Case(
        "simulate-geometry-is-a-folder",
        lambda tmp, ck: [
            "simulate",
            "--n",
            "2",
            "--geometry",
            str(a_folder(tmp, "g.yaml")),
            "-o",
            "s.h5",
        ],
        ("g.yaml", "is a folder", "geometry file"),
    ),
    Case(
        "simulate-geometry-repeat-fraction",
        lambda tmp, ck: simulate_with(tmp, "repeat: 2", "repeat: 1.5"),
        ("mine.yaml", "'layers'", "whole number", "1.5"),
    ),
    Case(
        "train-config-key-twice",
        lambda tmp, ck: train_with_config(tmp, "model:\n  family: gan3d\nmodel:\n  family: x\n"),
        ("--config", "c.yaml", "'model' given twice"),
    ),
    Case(
        "train-config-a-list",
        lambda tmp, ck: train_with_config(tmp, "- model\n"),
        ("--config", "c.yaml", "mapping of sections", "found a list"),
    ),
    Case(
        "train-config-is-a-folder",
        lambda tmp, ck: train_with_config(tmp, None),
        ("--config", "c.yaml", "is a folder"),
    ),
    Case(
        "validate-config-key-twice",
        lambda tmp, ck: [
            *validate_of(tmp, "--out", str(tmp / "rep")),
            *("--config", str(a_file(tmp, "v.yaml", "subsample: 10\nsubsample: 20\n"))),
        ],
        ("--config", "v.yaml", "'subsample' given twice"),
    ),
    Case(
        "tune-space-key-twice",
        lambda tmp, ck: tune_of(tmp, space=f"parameters:\n{SHAPE_STEPS}{SHAPE_STEPS}"),
        ("space.yaml", "'model.shape_steps' given twice"),
    ),
    Case(
        "tune-space-tab",
        lambda tmp, ck: tune_of(tmp, space=f"parameters:\n\t{SHAPE_STEPS.strip()}\n"),
        ("space.yaml", "not valid YAML", "'\\t'", "at line 2, column 1"),
    ),
    Case(
        "tune-config-a-list",
        lambda tmp, ck: tune_of(tmp, config="- 1\n"),
        ("c.yaml", "mapping of sections", "found a list"),
    ),
    Case(
        "tune-validation-key-twice",
        lambda tmp, ck: tune_of(
            tmp, "--validation", str(a_file(tmp, "v.yaml", "subsample: 1\nsubsample: 2\n"))
        ),
        ("v.yaml", "'subsample' given twice"),
    ),
    Case(
        "tune-storage-unknown-leaves-no-folder",
        lambda tmp, ck: tune_of(tmp, "--storage", "bogus://x"),
        ("--storage bogus://x", "cannot open"),
    ),
    # Readers: links inside HDF5 files that lead nowhere; counts that are not whole.
    Case(
        "showers-external-link-to-a-missing-file",
        inspect_of(lambda f: relink(f, "showers", h5py.ExternalLink("gone.h5", "/showers"))),
        ("in.h5", "'showers'", "cannot be opened", "external link to gone.h5:/showers"),
    ),
    Case(
        "energy-soft-link-loop",
        inspect_of(lambda f: relink(f, "energy", h5py.SoftLink("/energy"))),
        ("in.h5", "'energy'", "too many links"),
    ),
    Case(
        "lcd-ecal-external-link-to-a-missing-file",
        lambda tmp, ck: foreign(tmp, "lcd", "ECAL", h5py.ExternalLink("gone.h5", "/ECAL")),
        ("lcd.h5", "'ECAL'", "external link to gone.h5:/ECAL"),
    ),
    Case(
        "geometry-json-shape-fraction",
        inspect_of(geometry_json(lambda d: d.update(shape=[25.5, 25, 25]))),
        ("'geometry_json'", "'shape'", "whole number", "25.5"),
    ),
    # One file given twice: its showers would count twice.
    Case(
        "convert-one-input-twice",
        lambda tmp, ck: ["convert", ref(tmp), str(tmp / "ref.h5"), str(tmp / "out.h5")],
        ("ref.h5", "given twice"),
    ),
    Case(
        "convert-a-pattern-and-a-name-of-one-file",
        lambda tmp, ck: ["convert", str(tmp / "re*.h5"), ref(tmp), str(tmp / "out.h5")],
        ("ref.h5", "given twice"),
    ),
    Case(
        "train-data-a-file-and-its-link",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp)),
            *(link(tmp, str(tmp / "ref.h5")), "--out", str(tmp / "run")),
        ],
        ("alias.h5", "given twice", "the same file as"),
    ),
    Case(
        "validate-generated-twice",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp), "--generated", str(canonical(tmp / "g.h5"))),
            *(str(tmp / "g.h5"), "--out", str(tmp / "rep")),
        ],
        ("g.h5", "given twice"),
    ),
    # Options: ranges from -inf, outputs over other files, numbers a library cannot take.
    Case(
        "simulate-point-from-minus-inf",
        lambda tmp, ck: [
            *("simulate", "--geometry", "lhcb-30", "--n", "2", "--point", "-inf:0", "-o", "s.h5")
        ],
        ("--point", "-inf:0.0", "finite"),
    ),
    Case(
        "generate-energy-from-minus-inf",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "--energy", "-inf:5", "-o", "g.h5"),
        ("--energy", "-inf:5.0", "finite"),
    ),
    Case(
        "convert-binning-xml-onto-a-showers-file",
        lambda tmp, ck: [
            *("convert", ref(tmp), "--to", "calochallenge"),
            *("--binning", str(canonical(tmp / "other.h5")), str(tmp / "cc.h5")),
        ],
        ("--binning", "other.h5", "not a CaloChallenge binning XML"),
    ),
    Case(
        "convert-binning-xml-beside-the-output-onto-a-text",
        lambda tmp, ck: [
            *("convert", ref(tmp), "--to", "calochallenge"),
            *(str(a_file(tmp, "cc.xml", "notes\n").with_suffix(".h5")),),
        ],
        ("cc.xml", "beside the output", "not a CaloChallenge binning XML"),
    ),
    Case(
        "bench-json-onto-its-checkpoint-config",
        lambda tmp, ck: [
            *("bench", "--checkpoint", copy_checkpoint(tmp, ck, lambda f: None)),
            *("--json", str(tmp / "ck" / "config.json")),
        ],
        ("--json", "config.json", "would overwrite an input"),
    ),
    Case(
        "bench-threads-100000",
        lambda tmp, ck: ["bench", "--checkpoint", str(ck), "--threads", "100000"],
        ("--threads 100000", "at most", "per core"),
    ),
    Case(
        "export-opset-0",
        lambda tmp, ck: ["export", "--checkpoint", str(ck), "--opset", "0", "-o", "m.onnx"],
        ("--opset 0", "expected 18 to"),
    ),
    Case(
        "export-opset-17",
        lambda tmp, ck: ["export", "--checkpoint", str(ck), "--opset", "17", "-o", "m.onnx"],
        ("--opset 17", "expected 18 to"),
    ),
    Case(
        "export-opset-9999",
        lambda tmp, ck: ["export", "--checkpoint", str(ck), "--opset", "9999", "-o", "m.onnx"],
        ("--opset 9999",),
    ),
]


# --- fourth round's inputs ---------------------------------------------------------------------
SHAPE_STEPS = "  model.shape_steps: {low: 1, high: 3}\n"


def edited_checkpoint(tmp: Path, ck: Path, section: str | None, key: str, value: object) -> str:
    """A copy of the checkpoint whose config.json has `key` of `section` (None: the top
    level) set to `value`, as a hand edit would."""

    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (config if section is None else config[section])[key] = value
        (folder / "config.json").write_text(json.dumps(config))

    return copy_checkpoint(tmp, ck, edit)


def two_showers(checkpoint: str) -> list[str]:
    return ["generate", "--checkpoint", checkpoint, "--n", "2", "-o", "g.h5"]


def relink(f: h5py.File, key: str, target: object) -> None:
    """Dataset `key` replaced by a link (external or soft)."""
    del f[key]
    f[key] = target


def validate_of(tmp: Path, *extra: str) -> list[str]:
    return [
        *("validate", "--reference", ref(tmp), "--generated", str(canonical(tmp / "g.h5"))),
        *extra,
    ]


def train_with_config(tmp: Path, text: str | None) -> list[str]:
    """`train` with a config c.yaml holding `text` (None: c.yaml is a folder)."""
    config = a_folder(tmp, "c.yaml") if text is None else a_file(tmp, "c.yaml", text)
    return ["train", "--config", str(config), "--data", ref(tmp), "--out", str(tmp / "run")]


def tune_of(
    tmp: Path, *extra: str, space: str = f"parameters:\n{SHAPE_STEPS}", config: str | None = None
) -> list[str]:
    """`tune` of the flow-match recipe (or a c.yaml holding `config`) over `space`."""
    recipe = "flow-match" if config is None else str(a_file(tmp, "c.yaml", config))
    return [
        *("tune", "--config", recipe, "--data", ref(tmp)),
        *("--space", str(a_file(tmp, "space.yaml", space)), "--out", str(tmp / "study")),
        *("--trials", "2", "--budget-steps", "2", *extra),
    ]


def _link_loop(tmp: Path) -> str:
    link(tmp, str(tmp / "b.h5"), "a.h5")
    link(tmp, str(tmp / "a.h5"), "b.h5")
    return str(tmp / "a.h5")


def _truncated_npz(tmp: Path) -> Path:
    path = tmp / "ch.npz"
    make_lhcb(path)
    truncate(path)
    return path


def _hdf5_with(tmp: Path, key: str) -> str:
    with h5py.File(tmp / "other.h5", "w") as f:
        f[key] = np.zeros(3)
    return str(tmp / "other.h5")


def _binning(tmp: Path, layer: str) -> list[str]:
    argv = foreign(tmp, "calochallenge", "showers", lambda old: old)
    (tmp / "binning.xml").write_text(f"<Bins><Bin name='e'><Layer id='0' {layer}/></Bin></Bins>")
    return argv


def _binary(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.write_bytes(b"\xff\xfe\x00binary")
    return path


def _without_family(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    del config["model"]["family"]
    (folder / "config.json").write_text(json.dumps(config))


def _truncated(tmp: Path) -> Path:
    path = canonical(tmp / "in.h5")
    truncate(path)
    return path


# --- fifth round's inputs ----------------------------------------------------------------------
def _virtual_showers(f: h5py.File) -> None:
    """'showers' made a virtual dataset of a file that is not there (HDF5 reads zeros)."""
    shape = f["showers"].shape
    del f["showers"]
    layout = h5py.VirtualLayout(shape=shape, dtype="f4")
    layout[:] = h5py.VirtualSource("gone.h5", "showers", shape=shape)
    f.create_virtual_dataset("showers", layout, fillvalue=0)


def _blosc_showers(f: h5py.File) -> None:
    """'showers' compressed with filter 32001 (Blosc, a plugin h5py does not bring)."""
    old = f["showers"][()]
    del f["showers"]
    ds = f.create_dataset(
        "showers",
        shape=old.shape,
        dtype="f4",
        chunks=(1, *old.shape[1:]),
        compression=32001,
        allow_unknown_filter=True,
    )
    for i, shower in enumerate(old):
        ds.id.write_direct_chunk((i, 0, 0, 0), shower.tobytes())


def _momentum_nan(arrays: np.ndarray) -> np.ndarray:
    arrays = arrays.copy()
    arrays[1, 2] = np.nan
    return arrays


def _weights_a_folder(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").mkdir()


def _run_at_step_5(tmp: Path, ck: Path) -> str:
    """A run folder whose latest checkpoint is step 5 (a copy of the module's checkpoint)."""
    run = tmp / "run"
    shutil.copytree(ck, run / "checkpoints" / "step-00000005")
    (run / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/step-00000005"}))
    return str(run)


CASES += [
    Case(
        "showers-virtual-of-a-missing-file",
        convert_of(_virtual_showers),
        ("in.h5", "'showers'", "virtual dataset whose source is missing", "gone.h5"),
    ),
    Case(
        "showers-compressed-with-a-missing-filter",
        convert_of(_blosc_showers),
        ("in.h5", "'showers'", "HDF5 filter this installation does not have", "filter 32001"),
    ),
    Case(
        "units-say-showers-in-mev",
        convert_of(attribute("units", json.dumps({"showers": "MeV", "energy": "GeV"}))),
        ("in.h5", "'units'", "'showers' in GeV", "'MeV'"),
    ),
    Case(
        "units-not-json",
        inspect_of(attribute("units", "{{")),
        ("in.h5", "'units'", "bad units attribute", "'{{'"),
    ),
    Case(
        "geometry-json-shape-a-text",
        inspect_of(geometry_json(lambda d: d.__setitem__("shape", "25x25x25"))),
        ("'geometry_json'", "key 'shape'", "expected a list", "'25x25x25'"),
    ),
    Case(
        "simulate-geometry-stochastic-term-negative",
        lambda tmp, ck: simulate_with(tmp, "conditions:", "stochastic_term: -0.1\nconditions:"),
        ("mine.yaml", "stochastic_term must be a finite number >= 0", "got -0.1"),
    ),
    Case(
        "simulate-geometry-stochastic-term-text",
        lambda tmp, ck: simulate_with(tmp, "conditions:", "stochastic_term: big\nconditions:"),
        ("mine.yaml", "key 'stochastic_term'", "expected a number", "'big'"),
    ),
    Case(
        "simulate-geometry-cell-size-of-three",
        lambda tmp, ck: simulate_with(tmp, "cell_size_mm: [5, 5]", "cell_size_mm: [5, 5, 5]"),
        ("mine.yaml", "key 'cell_size_mm'", "two numbers (x, y)", "[5, 5, 5]"),
    ),
    Case(
        "simulate-geometry-energy-in-mev",
        lambda tmp, ck: simulate_with(tmp, "unit: GeV", "unit: MeV"),
        ("mine.yaml", "condition 'energy' is in GeV", "unit 'MeV'"),
    ),
    Case(
        "simulate-geometry-extra-a-list",
        lambda tmp, ck: simulate_with(tmp, "conditions:", "extra: [5, 5]\nconditions:"),
        ("mine.yaml", "key 'extra'", "expected a mapping", "[5, 5]"),
    ),
    Case(
        "lhcb-momentum-nan",
        lambda tmp, ck: (
            ["convert", *foreign(tmp, "lhcb", "ParticleMomentum", _momentum_nan)[1:], "out.h5"]
        ),
        ("ch.npz", "'ParticleMomentum'", "NaN or infinite", "first at row 1"),
    ),
    Case(
        "calochallenge-binning-alpha-text",
        lambda tmp, ck: _binning(tmp, "r_edges='0,1' n_bin_alpha='x'"),
        ("binning.xml", "Layer id=0", "bad attribute n_bin_alpha", "an integer", "'x'"),
    ),
    Case(
        "train-data-given-twice",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "--data", _zero_showers(tmp)),
            *("--out", str(tmp / "run")),
        ],
        ("argument --data", "given twice", "ref.h5, then", "zero.h5", "with all its values"),
    ),
    Case(
        "validate-reference-given-twice",
        lambda tmp, ck: validate_of(tmp, "--reference", _zero_showers(tmp), "--out", "rep"),
        ("argument --reference", "given twice", "ref.h5, then", "zero.h5"),
    ),
    Case(
        "simulate-output-with-a-trailing-slash",
        lambda tmp, ck: ["simulate", "--n", "2", "--workers", "1", "-o", "s.h5/"],
        ("-o/--output", "'s.h5/' ends with '/'", "the path of a file"),
    ),
    Case(
        "train-seed-beyond-64-bits",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "--out", str(tmp / "run")),
            f"training.seed={2**70}",
        ],
        ("training.seed", "from 0 to 2**63 - 1", str(2**70)),
    ),
    Case(
        "bench-seed-beyond-64-bits",
        lambda tmp, ck: ["bench", "--checkpoint", str(ck), "--seed", str(2**70)],
        ("argument --seed", "from 0 to 2**63 - 1", str(2**70)),
    ),
    Case(
        "export-seed-of-2-to-the-64",
        lambda tmp, ck: ["export", "--checkpoint", str(ck), "--seed", str(2**64), "-o", "m.onnx"],
        ("argument --seed", "from 0 to 2**63 - 1", str(2**64)),
    ),
    Case(
        "train-override-after-data",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "training.max_steps=x"),
            *("--out", str(tmp / "run")),
        ],
        ("training.max_steps", "expected an integer", "'x'"),
    ),
    Case(
        "checkpoint-config-geometry-a-name",
        lambda tmp, ck: two_showers(edited_checkpoint(tmp, ck, None, "geometry", "lhcb-30")),
        ("config.json", "expected a mapping of geometry keys", "found str 'lhcb-30'"),
    ),
    Case(
        "generate-weights-a-folder",
        lambda tmp, ck: two_showers(copy_checkpoint(tmp, ck, _weights_a_folder)),
        ("model.safetensors", "is a folder", "expected the file of the weights"),
    ),
    Case(
        "train-resume-max-steps-below-the-runs-step",
        lambda tmp, ck: (
            ["train", "--out", _run_at_step_5(tmp, ck), "--resume", "training.max_steps=2"]
        ),
        ("training.max_steps=2", "already at step 5", "a larger training.max_steps"),
    ),
    # Round six (a blind check): options the table had not tried.
    Case(
        "export-int8-calibration-size-1",
        lambda tmp, ck: [
            *("export", "--checkpoint", str(ck), "--int8", "--calibration-size", "1"),
            *("-o", "m.onnx"),
        ],
        ("--calibration-size", "at least 2", "got 1"),
    ),
    Case(
        "export-calibration-size-without-int8",
        lambda tmp, ck: [
            *("export", "--checkpoint", str(ck), "--calibration-size", "5", "-o", "m.onnx"),
        ],
        ("--calibration-size", "--int8 only"),
    ),
    Case(
        "export-seed-without-int8",
        lambda tmp, ck: ["export", "--checkpoint", str(ck), "--seed", "5", "-o", "m.onnx"],
        ("--seed", "--int8 only"),
    ),
    Case(
        "tune-population-1",
        lambda tmp, ck: tune_of(tmp, "--population", "1"),
        ("--population", "at least 2", "got 1"),
    ),
    Case(
        "tune-workers-100000",
        lambda tmp, ck: tune_of(tmp, "--workers", "100000"),
        ("--workers 100000", "at most", "per core"),
    ),
    Case(
        "train-processes-100000",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "--out", str(tmp / "run")),
            *("--processes", "100000"),
        ],
        ("--processes 100000", "at most", "per core"),
    ),
    # Round eight: an output that is a symbolic link loop was replaced by a file; one set
    # with no shower in the overlap of the conditions was a ValueError traceback.
    Case(
        "generate-onto-a-symbolic-link-loop",
        lambda tmp, ck: generate(tmp, ck, "--n", "2", "-o", _link_loop(tmp)),
        ("-o", "a.h5", "symbolic link that loops"),
    ),
    Case(
        "convert-onto-a-symbolic-link-loop",
        lambda tmp, ck: ["convert", ref(tmp), _link_loop(tmp)],
        ("a.h5", "symbolic link that loops"),
    ),
    Case(
        "generate-below-a-symbolic-link-to-nothing",
        lambda tmp, ck: generate(
            tmp, ck, "--n", "2", "-o", str(Path(link(tmp, str(tmp / "gone"), "d")) / "g.h5")
        ),
        ("-o", "d/g.h5", "is a symbolic link to nothing", "gone"),
    ),
    Case(
        "validate-no-generated-shower-in-the-overlap",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp, n=1, energy=[50.0]), "--generated"),
            str(canonical(tmp / "g.h5", energy=[10.0, 20.0, 30.0, 70.0, 80.0, 90.0])),
            *("--out", str(tmp / "rep")),
        ],
        ("g.h5 (generated)", "none of its 6 showers lies inside", "energy 50:50 GeV"),
    ),
    Case(
        "validate-max-showers-leaves-none-in-the-overlap",
        lambda tmp, ck: [
            *("validate", "--reference", ref(tmp, n=1, energy=[50.0]), "--generated"),
            str(canonical(tmp / "g.h5", energy=[10.0, 20.0, 30.0, 70.0, 80.0, 50.0])),
            *("--max-showers", "1", "--out", str(tmp / "rep")),
        ],
        ("g.h5 (generated)", "none of the first 1 of its 6 showers (--max-showers)"),
    ),
    Case(
        "tune-too-few-held-out-showers-to-judge-a-trial",
        lambda tmp, ck: tune_of(tmp),
        ("ref.h5, 6 showers", "leaves 1 test showers", "fewer than 50 (validation.min_showers)"),
    ),
    Case(
        "train-override-transform-power-0",
        lambda tmp, ck: [
            *("train", "--config", "gan3d", "--data", ref(tmp), "--out", str(tmp / "run")),
            *("training.batch_size=2", "transform.power=0"),
        ],
        ("transform 'power': parameter 'power' must be > 0, got 0",),
    ),
]


def _linked_reference(tmp: Path, kind: str) -> str:
    """ref.h5 (a canonical file) and in.h5, whose datasets read ref.h5's through an HDF5
    external link ("external") or a virtual dataset ("virtual"); returns in.h5."""
    target = canonical(tmp / "ref.h5")
    with h5py.File(target) as f:
        attrs, shapes = dict(f.attrs), {k: (f[k].shape, f[k].dtype) for k in f}
    with h5py.File(tmp / "in.h5", "w") as f:
        for key, (shape, dtype) in shapes.items():
            if kind == "external":
                f[key] = h5py.ExternalLink("ref.h5", key)
            else:
                layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
                layout[:] = h5py.VirtualSource("ref.h5", key, shape=shape)
                f.create_virtual_dataset(key, layout)
        f.attrs.update(attrs)
    return str(tmp / "in.h5")


def _checkpoints_removed(tmp: Path, ck: Path) -> str:
    """A run folder whose latest.json names a checkpoint removed by hand (none left)."""
    run = Path(_run_at_step_5(tmp, ck))
    shutil.rmtree(run / "checkpoints" / "step-00000005")
    return str(run)


CASES += [
    # Round seven (a blind check): files reached through HDF5 links, names and options.
    Case(
        "generate-onto-the-target-of-its-references-external-link",
        lambda tmp, ck: [
            *("generate", "--checkpoint", str(ck)),
            *("--conditions-from", _linked_reference(tmp, "external"), "-o", "ref.h5"),
        ],
        ("-o ref.h5", "would overwrite", "ref.h5", "in.h5", "external link"),
    ),
    Case(
        "generate-onto-the-source-of-its-references-virtual-dataset",
        lambda tmp, ck: [
            *("generate", "--checkpoint", str(ck)),
            *("--conditions-from", _linked_reference(tmp, "virtual"), "-o", "ref.h5"),
        ],
        ("-o ref.h5", "would overwrite", "in.h5", "virtual dataset"),
    ),
    Case(
        "convert-onto-the-target-of-its-inputs-external-link",
        lambda tmp, ck: ["convert", _linked_reference(tmp, "external"), str(tmp / "ref.h5")],
        ("would overwrite", "ref.h5", "in.h5"),
    ),
    Case(
        "convert-a-file-and-the-file-its-external-link-reads",
        lambda tmp, ck: [
            *("convert", _linked_reference(tmp, "external"), str(tmp / "ref.h5")),
            str(tmp / "out.h5"),
        ],
        ("in.h5", "reads data from", "ref.h5", "given too"),
    ),
    Case(
        "inspect-pretrained-unknown",
        lambda tmp, ck: ["inspect", "pretrained:nope"],
        ("pretrained:nope", "no such pretrained model", "pretrained:clic25-geant4"),
    ),
    Case(
        "generate-run-whose-checkpoints-were-removed",
        lambda tmp, ck: two_showers(_checkpoints_removed(tmp, ck)),
        ("latest.json", "step-00000005", "no config.json", "no other checkpoints"),
    ),
    Case(
        "simulate-output-a-dash",
        lambda tmp, ck: ["simulate", "--n", "2", "--workers", "1", "-o", "-"],
        ("-o -", "standard output", "expected the path of a file"),
    ),
    Case(
        "validate-binning-for-no-set-of-that-format",
        lambda tmp, ck: [*validate_of(tmp, "--binning", str(a_file(tmp, "b.xml"))), "--out", "r"],
        ("--binning", "no set is of a format that takes it", "ref.h5 (caloforge)"),
    ),
    Case(
        "geometry-name-disagrees-with-its-description",
        inspect_of(attribute("geometry", "lhcb-30")),
        ("in.h5", "key 'geometry'", "disagree", "'clic-25'", "'lhcb-30'"),
    ),
]


def _zero_showers(tmp: Path) -> str:
    return str(canonical(tmp / "zero.h5", n=0, energy=np.zeros(0)))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` (hidden ones too) -> a hash of its bytes; links by target."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_file():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[name] = "folder"
    return found


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)


def error_lines(err: str) -> list[str]:
    lines = [line.split("\r")[-1] for line in err.splitlines()]
    return [line for line in lines if line.startswith("caloforge") and ": error: " in line]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_leaving_nothing(
    case: Case,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # relative outputs ("s.h5") land where they are watched
    argv = case.build(tmp_path, checkpoint)
    before, checkpoint_before = snapshot(tmp_path), snapshot(checkpoint)
    capsys.readouterr()
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    for text in case.expect:
        assert text in lines[0], lines[0]
    assert snapshot(tmp_path) == before  # nothing written, nothing lost, no partial
    assert snapshot(checkpoint) == checkpoint_before


# --- what should work: the README's own command lines ------------------------------------------
def test_readme_convert_lines_with_options_between_paths(tmp_path: Path) -> None:
    source = canonical(tmp_path / "showers.h5")
    cc, xml = tmp_path / "showers_cc.h5", tmp_path / "showers_binning.xml"
    assert (
        run_cli(["convert", str(source), "--to", "calochallenge", "--binning", str(xml), str(cc)])
        == 0
    )
    assert cc.is_file() and xml.is_file()
    back = tmp_path / "back.h5"
    assert run_cli(["convert", str(cc), "--binning", str(xml), str(back)]) == 0
    assert back.is_file()


def test_a_fortran_ordered_npz_is_read_as_written(tmp_path: Path) -> None:
    """np.save of a transposed array stores it in Fortran order: valid, and was refused."""
    make_lhcb(tmp_path / "c.npz")
    arrays = dict(np.load(tmp_path / "c.npz"))
    np.savez(tmp_path / "f.npz", **{k: np.asfortranarray(v) for k, v in arrays.items()})
    for name in ("c", "f"):
        assert (
            run_cli(["convert", str(tmp_path / f"{name}.npz"), str(tmp_path / f"{name}.h5")]) == 0
        )
    with h5py.File(tmp_path / "c.h5") as c, h5py.File(tmp_path / "f.h5") as f:
        for key in ("showers", "energy", "momentum", "point"):
            np.testing.assert_array_equal(c[key][()], f[key][()])


def test_an_output_through_a_symbolic_link_replaces_the_file_linked_to(tmp_path: Path) -> None:
    """The rename into place put a file in the link's place (the link lost, the file linked
    to left with its old contents); a dangling link gets its file made where it points."""
    source = canonical(tmp_path / "in.h5")
    disk = tmp_path / "disk"
    disk.mkdir()
    (disk / "old.h5").write_text("old contents\n")
    os.symlink(disk / "old.h5", tmp_path / "out.h5")
    os.symlink("disk/new/made.h5", tmp_path / "dangling.h5")
    for name in ("out.h5", "dangling.h5"):
        assert run_cli(["convert", str(source), str(tmp_path / name)]) == 0
        assert (tmp_path / name).is_symlink()
    assert h5py.is_hdf5(disk / "old.h5") and h5py.is_hdf5(disk / "new" / "made.h5")
    assert sorted(p.name for p in disk.iterdir()) == ["new", "old.h5"]  # no partial left


def test_a_report_through_a_symbolic_link_replaces_the_folder_linked_to(
    tmp_path: Path,
) -> None:
    """The report folder was put in the link's place, the link left as `.rep.old-PID`."""
    (tmp_path / "reports").mkdir()
    os.symlink("reports", tmp_path / "rep")
    argv = validate_of(tmp_path, "--out", str(tmp_path / "rep"), "--no-plots")
    assert run_cli(argv) == 0
    assert (tmp_path / "rep").is_symlink()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "index.html",
        "metrics.json",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.h5", "ref.h5", "rep", "reports"]


def test_convert_to_calochallenge_says_which_conditions_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_lcd_angle(tmp_path / "Ang.h5")
    xml, out = tmp_path / "b.xml", tmp_path / "cc.h5"
    argv = ["convert", str(tmp_path / "Ang.h5"), "--to", "calochallenge", "--binning", str(xml)]
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as outside pytest, which turns warnings into errors
        assert run_cli([*argv, str(out)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("caloforge: warning: ")
    assert "holds the primary energy alone; theta of" in warning[0]


def test_inspect_of_zero_showers_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["inspect", _zero_showers(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "showers       0 of" in out
    assert "nan" not in out and "n/a" in out


def test_stale_partials_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = tmp_path / f".out.h5.partial-{dead}"
    stale.write_bytes(b"x" * 100)
    stale_folder = tmp_path / f".step-00000003.partial-{dead}"
    stale_folder.mkdir()
    alive = tmp_path / f".other.h5.partial-{os.getppid()}"  # a live process: kept
    alive.write_bytes(b"y")
    assert run_cli(["convert", str(canonical(tmp_path / "in.h5")), str(tmp_path / "out.h5")]) == 0
    assert not stale.exists() and not stale_folder.exists()
    assert alive.exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- faults at the write -------------------------------------------------------------------------
def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("command", ["simulate", "convert", "generate"])
def test_disk_full_at_the_write_is_one_line_and_leaves_nothing(
    command: str,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = canonical(tmp_path / "in.h5")
    before = snapshot(tmp_path)
    out = tmp_path / "out.h5"
    argv = {
        "simulate": ["simulate", "--n", "3", "--workers", "1", "-o", str(out)],
        "convert": ["convert", str(source), str(out)],
        "generate": ["generate", "--checkpoint", str(checkpoint), "--n", "3", "-o", str(out)],
    }[command]
    monkeypatch.setattr(h5py.File, "flush", _enospc)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert "out.h5" in line and "No space left on device (disk full)" in line
    assert snapshot(tmp_path) == before


def test_permission_denied_at_creation_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = h5py.File

    def refuse(name: object, mode: str = "r", *args: object, **kwargs: object) -> h5py.File:
        if mode == "w":
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", refuse)
    assert run_cli(["simulate", "--n", "2", "--workers", "1", "-o", str(tmp_path / "s.h5")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "s.h5" in line and "Permission denied" in line
    assert list(tmp_path.iterdir()) == []


def test_appending_keeps_the_file_when_the_disk_fills(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.h5"
    assert run_cli(["simulate", "--n", "4", "--workers", "1", "-o", str(path)]) == 0
    before = snapshot(tmp_path)
    monkeypatch.setattr(h5py.File, "flush", _enospc)
    assert run_cli(["simulate", "--n", "4", "--append", "--workers", "1", "-o", str(path)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "disk full" in line and "keeps the 4 showers it had, none were appended" in line
    assert snapshot(tmp_path) == before  # the file as it was, no partial beside it


def test_an_interrupted_append_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appending grows a copy that replaces the file once complete: Ctrl-C after a batch
    (before: those rows stayed, and one between the conditions' and the showers' resize left
    a file the reader refuses) leaves the file byte for byte as it was."""
    path = tmp_path / "s.h5"
    assert run_cli(["simulate", "--n", "4", "--workers", "1", "-o", str(path)]) == 0
    before = snapshot(tmp_path)
    write = ShowerWriter.write

    def interrupted(self: ShowerWriter, batch: Batch) -> None:
        write(self, batch)
        raise KeyboardInterrupt

    monkeypatch.setattr(ShowerWriter, "write", interrupted)
    argv = ["simulate", "--n", "6", "--batch-size", "2", "--append", "--workers", "1"]
    assert run_cli([*argv, "-o", str(path)]) == 130
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    assert run_cli([*argv, "-o", str(path)]) == 0  # and the append runs again, whole
    with h5py.File(path) as f:
        assert f["showers"].shape[0] == 10 and f["energy"].shape[0] == 10


def test_appending_through_links(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The copy replaces the file a symbolic link points to (the link stays a link); a file
    with other hard links is refused, as they would keep the showers before."""
    real, soft, hard = tmp_path / "real.h5", tmp_path / "soft.h5", tmp_path / "hard.h5"
    assert run_cli(["simulate", "--n", "3", "--workers", "1", "-o", str(real)]) == 0
    soft.symlink_to(real)
    append = ["simulate", "--n", "2", "--append", "--workers", "1", "-o"]
    assert run_cli([*append, str(soft)]) == 0
    assert soft.is_symlink() and os.readlink(soft) == str(real)
    with h5py.File(real) as f:
        assert f["showers"].shape[0] == 5
    os.link(real, hard)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert run_cli([*append, str(hard)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "cannot append to a file with other hard links" in line and "found 2 links" in line
    assert snapshot(tmp_path) == before


def _showers_digest(path: Path, n: int) -> str:
    with h5py.File(path, "r") as f:
        data = f["showers"][:n].tobytes() + f["energy"][:n].tobytes()
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_sigkill_at_a_random_moment_of_an_append_never_damages_the_file(tmp_path: Path) -> None:
    """kill -9 of `simulate --append` at a random moment, four times: the file opens with its
    showers before the append (or, had the append finished, those and the new ones), the
    first ones unchanged; the next append removes the partial and succeeds."""
    path = tmp_path / "s.h5"
    assert run_cli(["simulate", "--n", "200", "--workers", "1", "-o", str(path)]) == 0
    rng = np.random.default_rng(18)
    argv = [*CALOFORGE, "simulate", "--n", "3000", "--batch-size", "50", "--append"]
    argv += ["--workers", "1", "-o", str(path)]
    for _ in range(4):
        with h5py.File(path, "r") as f:
            n = f["showers"].shape[0]
        digest = _showers_digest(path, n)
        proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        _wait_for(lambda p=proc: bool(_partials(tmp_path)) or p.poll() is not None)
        time.sleep(rng.uniform(0.0, 4.0))  # somewhere in the copy, a batch or the rename
        proc.kill()
        proc.wait()
        with h5py.File(path, "r") as f:
            showers, energy = f["showers"].shape[0], f["energy"].shape[0]
        assert showers == energy and showers in (n, n + 3000)
        assert _showers_digest(path, n) == digest
    assert run_cli(["simulate", "--n", "10", "--append", "--workers", "1", "-o", str(path)]) == 0
    assert _partials(tmp_path) == []


def _limited(limit_bytes: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail, EFBIG

    return preexec


@pytest.mark.parametrize(
    "command",
    ["simulate", "convert", "to-calochallenge", pytest.param("generate", marks=pytest.mark.slow)],
)
def test_a_real_file_size_limit_is_one_line_no_crash_no_partial(
    command: str, checkpoint: Path, tmp_path: Path
) -> None:
    """The file system really refuses (RLIMIT_FSIZE: the kernel's EFBIG, met inside HDF5 as a
    full disk is): before, a segmentation fault (exit 139) and a partial file."""
    source = tmp_path / "in.h5"
    assert (
        run_cli(
            ["simulate", "--n", "60", "--workers", "1", "--compression", "none", "-o", str(source)]
        )
        == 0
    )
    out = tmp_path / "out.h5"
    argv = {
        "simulate": ["simulate", "--n", "200", "--workers", "1", "--compression", "none"],
        "convert": ["convert", str(source), "--batch-size", "10"],
        "to-calochallenge": ["convert", str(source), "--to", "calochallenge", "--batch-size", "5"],
        "generate": [
            "generate",
            "--checkpoint",
            str(checkpoint),
            "--n",
            "200",
            "--batch-size",
            "20",
        ],
    }[command]
    argv = argv + (["-o", str(out)] if "convert" not in argv else [str(out)])
    before = snapshot(tmp_path)
    proc = subprocess.run(
        [*CALOFORGE, *argv],
        capture_output=True,
        text=True,
        preexec_fn=_limited(1 << 20 if command in ("simulate", "generate") else 100_000),
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "out.h5" in line and "file size limit" in line
    assert snapshot(tmp_path) == before


# --- files and folders in use ------------------------------------------------------------------
def _holder(code: str, *args: str) -> subprocess.Popen[str]:
    """A process that runs `code` and prints 'ready' once it holds what it takes."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_a_file_being_written_is_reported_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = canonical(tmp_path / "busy.h5")
    writer = _holder(
        "import h5py, sys, time; f = h5py.File(sys.argv[1], 'a'); print('ready', flush=True); "
        "time.sleep(60)",
        str(path),
    )
    try:
        before = snapshot(tmp_path)
        assert run_cli(["inspect", str(path)]) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert "busy.h5" in line and "in use" in line and "corrupt" not in line
        argv = ["simulate", "--n", "2", "--workers", "1", "--append", "-o", str(path)]
        assert run_cli(argv) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert "busy.h5" in line and "in use" in line
        assert snapshot(tmp_path) == before
    finally:
        _end(writer)


def test_a_second_training_in_a_run_folder_is_refused_with_the_holders_pid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    holder = _holder(
        "import sys, time; from caloforge._files import FolderLock; "
        "lock = FolderLock(sys.argv[1], 'training'); lock.acquire(); print('ready', flush=True); "
        "time.sleep(60)",
        str(run),
    )
    try:
        data = canonical(tmp_path / "in.h5")
        argv = ["train", "--config", "gan3d", "--data", str(data), "--out", str(run)]
        argv += ["training.batch_size=2", "training.max_steps=1"]
        assert run_cli(argv) == 2
        (line,) = error_lines(capsys.readouterr().err)
        assert str(run) in line and f"in use by another training (process {holder.pid})" in line
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        _end(holder)


# --- resume ------------------------------------------------------------------------------------
FAST_TRAIN = [
    "training.batch_size=2",
    "training.check_showers=4",
    "training.window=8",
    "training.log_every=1",
    "training.check_every=0",
    "training.checkpoint_every=2",
    "training.max_steps=3",
]
TIMING = ("seconds", "cpu_seconds", "showers_per_s")


def _train(data: Path, run: Path, *extra: str) -> int:
    argv = ["train", "--config", "gan3d", "--data", str(data), "--out", str(run)]
    return run_cli([*argv, *FAST_TRAIN, *extra])


def _records(run: Path) -> list[dict[str, object]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def test_resume_logs_each_step_once_refuses_another_batch_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from caloforge.training.checkpoint import write_pointer

    data, run = canonical(tmp_path / "in.h5", n=10), tmp_path / "run"
    assert _train(data, run) == 0
    whole = _records(run)
    # Killed after step 3 but before its checkpoint: the run folder as it would be left.
    shutil.rmtree(run / "checkpoints" / "step-00000003")
    write_pointer(run / "latest.json", run / "checkpoints" / "step-00000002", {"step": 2})
    (run / "best.json").unlink(missing_ok=True)
    before = snapshot(run)
    capsys.readouterr()
    assert _train(data, run, "training.batch_size=4", "--resume") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "changed: training.batch_size=4 (the run used 2)" in line
    assert snapshot(run) == before
    # Another data file under the run's name: the split, and so the order, would differ.
    other = canonical(tmp_path / "other.h5", n=14)
    assert _train(other, run, "--resume") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "--data: 11 training showers (the run had 8)" in line
    assert snapshot(run) == before
    # Showers appended that leave the training split as large (10 -> 11 showers: 8 and 9
    # would differ; 12 -> 13 both give 10): the split is drawn anew all the same.
    grown, grown_run = canonical(tmp_path / "grown.h5", n=12), tmp_path / "grown-run"
    assert _train(grown, grown_run) == 0
    with ShowerWriter(grown, PRESETS["clic-25"], append=True) as writer:
        one = sparse_cells(np.random.default_rng(1), (1, 25, 25, 25), 0.01)
        writer.write(Batch(one, {"energy": np.array([50.0])}))
    kept = snapshot(grown_run)
    assert _train(grown, grown_run, "--resume") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "--data: 13 showers in all (the run had 12)" in line
    assert snapshot(grown_run) == kept
    assert _train(data, run, "--resume") == 0
    resumed = _records(run)
    assert [r["step"] for r in resumed if r["event"] == "step"] == [1, 2, 3]
    # The epoch summary covers the steps before the interruption too: the same numbers.
    assert [r for r in resumed if r["event"] == "epoch"] == [
        r for r in whole if r["event"] == "epoch"
    ]


@pytest.mark.parametrize("damage", ["no-optimizer", "foreign-optimizer", "not-a-dict"])
def test_resume_from_a_damaged_trainer_state_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    import torch

    data, run = canonical(tmp_path / "in.h5", n=10), tmp_path / "run"
    assert _train(data, run) == 0
    path = run / "checkpoints" / "step-00000003" / "trainer_state.pt"
    state = torch.load(path, weights_only=False)
    if damage == "no-optimizer":
        del state["optimizer_g"]
    elif damage == "foreign-optimizer":  # another model's: one parameter group of one tensor
        other = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])
        state["optimizer_g"] = other.state_dict()
    else:
        state = [1, 2, 3]
    torch.save(state, path)
    before = snapshot(run)
    capsys.readouterr()
    assert _train(data, run, "training.max_steps=5", "--resume") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert str(path) in line and "earlier checkpoint" in line, line
    assert snapshot(run) == before


class FullDiskWriter:
    """A stand-in for TensorBoard's SummaryWriter (which need not be installed) on a disk that
    fills at step `full_at`: add_scalar and flush raise ENOSPC from then on."""

    def __init__(self, full_at: int) -> None:
        self.full_at, self.step, self.closed = full_at, 0, False

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.step = step
        if step >= self.full_at:
            _enospc()

    def flush(self) -> None:
        if self.step >= self.full_at:
            _enospc()

    def close(self) -> None:
        self.closed = True
        self.flush()


def test_tensorboard_on_a_full_disk_is_one_line_and_keeps_the_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from caloforge.models.checkpoint import latest_checkpoint, load_checkpoint
    from caloforge.training.run_log import RunLog

    writer = FullDiskWriter(full_at=3)

    def opened(self: RunLog) -> FullDiskWriter:
        self._writer = writer
        return writer

    monkeypatch.setattr(RunLog, "_tensorboard", opened)
    data, run = canonical(tmp_path / "in.h5", n=10), tmp_path / "run"
    assert _train(data, run) == 2  # checkpoint at step 2, the disk full at step 3's record
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert f"{run / 'tensorboard'}: the TensorBoard log could not be written" in line
    assert "(No space left on device (disk full)); the checkpoints written so far are kept" in line
    assert writer.closed
    folder = latest_checkpoint(run)
    assert folder is not None and folder.name == "step-00000002"
    load_checkpoint(folder)  # whole: its weights match their recorded SHA-256
    assert _partials(tmp_path) == []


# --- signals -----------------------------------------------------------------------------------
def _descendants(pid: int) -> set[int]:
    """The processes below `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        children = {p for p, parent in parents.items() if parent in frontier}
        found |= children
        frontier = children
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition: Callable[[], bool], seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".partial-" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["simulate", "convert", "generate", "train"])
def test_sigterm_is_handled_as_ctrl_c(command: str, checkpoint: Path, tmp_path: Path) -> None:
    # convert reads its input one shower at a time: enough of them to be caught in the act.
    source = canonical(tmp_path / "in.h5", n=800 if command == "convert" else 10)
    out = tmp_path / "out"
    argv = {
        "simulate": ["simulate", "--n", "100000", "--workers", "2", "-o", f"{out}.h5"],
        "convert": ["convert", str(source), "--batch-size", "1", f"{out}.h5"],
        "generate": [
            *("generate", "--checkpoint", str(checkpoint), "--n", "100000"),
            *("--batch-size", "8", "-o", f"{out}.h5"),
        ],
        "train": [
            *("train", "--config", "gan3d", "--data", str(source), "--out", str(out)),
            *FAST_TRAIN[:-1],
            *("training.max_steps=100000", "training.checkpoint_every=1"),
        ],
    }[command]
    before = snapshot(tmp_path)
    proc = subprocess.Popen([*CALOFORGE, *argv], stderr=subprocess.PIPE, text=True)
    if command == "train":
        _wait_for(lambda: (out / "latest.json").exists())
    else:
        _wait_for(lambda: bool(_partials(tmp_path)) or proc.poll() is not None)
    children = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    assert _partials(tmp_path) == []
    _wait_for(lambda: not any(_running(p) for p in children), 10)
    if command == "train":  # complete checkpoints stay, and resume
        assert (out / "latest.json").exists()
    else:
        assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_sigkill_leaves_no_worker_and_the_next_run_removes_the_partial(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    argv = ["simulate", "--n", "100000", "--workers", "2", "-o", str(out)]
    proc = subprocess.Popen([*CALOFORGE, *argv], stderr=subprocess.DEVNULL)
    _wait_for(lambda: bool(_partials(tmp_path)))
    _wait_for(lambda: len(_descendants(proc.pid)) >= 3)  # forkserver and two workers
    children = _descendants(proc.pid)
    proc.kill()
    proc.wait()
    _wait_for(lambda: not any(_running(p) for p in children), 10)
    assert _partials(tmp_path)  # what SIGKILL leaves: nothing can remove it then
    assert run_cli(["simulate", "--n", "3", "--workers", "1", "-o", str(out)]) == 0
    assert _partials(tmp_path) == []


@pytest.mark.slow
def test_a_file_size_limit_while_training_is_one_line_and_leaves_no_partial(
    tmp_path: Path,
) -> None:
    data, run = canonical(tmp_path / "in.h5", n=10), tmp_path / "run"
    argv = ["train", "--config", "gan3d", "--data", str(data), "--out", str(run), *FAST_TRAIN]
    proc = subprocess.run(
        [*CALOFORGE, *argv],
        capture_output=True,
        text=True,
        preexec_fn=_limited(3_000_000),  # the weights (3.8 MB) do not fit
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "step-00000002: the checkpoint could not be written (File too large" in line
    assert _partials(tmp_path) == []
    assert not (run / "latest.json").exists()


def test_validate_says_when_subsample_0_switches_the_cell_metrics_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = ref(tmp_path)
    argv = ["validate", "--reference", source, "--generated", source, "--out", str(tmp_path / "r")]
    assert run_cli([*argv, "--subsample", "0", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "warning: the cell-level metrics" in out and "switched off (subsample 0)" in out
    # 6 showers a set: too few for FPD, KPD or the projection MSE, which then have no
    # verdict instead of a pass (KPD and the projection MSE passed with 6 showers before).
    assert "verdict: N/A" in out
    for name in ("FPD", "KPD", "Projection MSE"):
        (row,) = [line for line in out.splitlines() if line.strip().startswith(name)]
        assert row.split()[-1] == "n/a", row
    headline = json.loads((tmp_path / "r" / "metrics.json").read_text())["headline"]
    assert "6 showers per set: too few for a verdict" in headline["kpd"]["detail"]
    assert run_cli([*argv[:-1], str(tmp_path / "r2"), "--no-plots"]) == 0  # cells measured
    headline = json.loads((tmp_path / "r2" / "metrics.json").read_text())["headline"]
    projection = headline["projection_mse"]
    assert projection["verdict"] == "n/a" and "too few for a verdict" in projection["detail"]


def _no_cells(f: h5py.File) -> None:
    f["showers"][...] = 0


def test_validate_of_empty_showers_draws_its_plots_without_library_warnings(
    tmp_path: Path,
) -> None:
    """Showers without a lit cell (a dead generator): the log axes of the plots had nothing
    positive to show and matplotlib's UserWarning, with its source line, reached stderr."""
    source = str(canonical(tmp_path / "zero.h5", edit=_no_cells))
    argv = ["validate", "--reference", source, "--generated", source, "--out", "r"]
    done = subprocess.run(
        [*CALOFORGE, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    assert (tmp_path / "r" / "plots" / "cell_spectrum.png").is_file()


def test_validate_check_does_not_pass_a_comparison_it_could_not_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 6 showers a set and the cell metrics off: no headline row has a verdict (overall
    # n/a), which --check used to pass with exit 0.
    source = ref(tmp_path)
    argv = ["validate", "--reference", source, "--generated", source, "--subsample", "0"]
    out = tmp_path / "r"
    assert run_cli([*argv, "--no-plots", "--check", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "verdict: N/A" in captured.out and (out / "metrics.json").exists()
    (line,) = [x for x in captured.err.splitlines() if "check not passed" in x]
    assert line.startswith("caloforge: check not passed: no verdict could be made; ")
    assert "7 of 7 headline metrics have no value" in line and "switched off" in line


def test_a_full_disk_while_validate_writes_its_report_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = ref(tmp_path)
    before = snapshot(tmp_path)
    monkeypatch.setattr(Path, "write_text", _enospc)
    argv = ["validate", "--reference", source, "--generated", source, "--no-plots"]
    assert run_cli([*argv, "--out", str(tmp_path / "report")]) == 2
    monkeypatch.undo()
    (line,) = error_lines(capsys.readouterr().err)
    assert "--out" in line and "report could not be written (No space left" in line
    assert snapshot(tmp_path) == before


def test_validate_check_does_not_pass_a_comparison_it_could_not_decide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file against itself at 60 showers: every judged row is within its tolerance but
    # with an error too large to show it (overall unclear), which --check used to pass.
    source = str(canonical(tmp_path / "ref.h5", n=60))
    argv = ["validate", "--reference", source, "--generated", source, "--subsample", "0"]
    assert run_cli([*argv, "--no-plots", "--check", "--out", str(tmp_path / "r")]) == 1
    captured = capsys.readouterr()
    assert "verdict: UNCLEAR" in captured.out
    (line,) = [x for x in captured.err.splitlines() if "check not passed" in x]
    assert line.startswith("caloforge: check not passed: verdict unclear; ")
    assert "Response deviation +0 ± 16 % (tolerance 2 %)" in line


# --- round six: standard output, file limits, one-column grids -----------------------------------
def test_a_closed_pipe_on_standard_output_ends_quietly(tmp_path: Path) -> None:
    """`caloforge inspect f.h5 | head -1`: no BrokenPipeError traceback, the code of SIGPIPE."""
    path = canonical(tmp_path / "in.h5")
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*CALOFORGE, "inspect", str(path)], stdout=subprocess.PIPE, stderr=err, cwd=tmp_path
        )
        assert proc.stdout is not None
        proc.stdout.close()  # the reader is gone before a line is written
        assert proc.wait(timeout=120) == 128 + signal.SIGPIPE
    text = log.read_text()
    assert "Traceback" not in text and "Exception ignored" not in text, text


def test_a_full_standard_output_is_one_line(tmp_path: Path) -> None:
    path = canonical(tmp_path / "in.h5")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [*CALOFORGE, "inspect", str(path)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        "caloforge: error: cannot write to standard output: No space left on device"
    ]


def test_too_many_open_files_is_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ulimit -n` below what a command needs (validate's plot workers at `ulimit -n 16`)."""
    from caloforge.data import canonical as module

    def no_descriptor(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    path = canonical(tmp_path / "in.h5")
    monkeypatch.setattr(module.ShowerWriter, "write", no_descriptor)
    before = snapshot(tmp_path)
    assert run_cli(["convert", str(path), str(tmp_path / "out.h5")]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "too many open files" in lines[0] and "ulimit -n" in lines[0]
    assert snapshot(tmp_path) == before


def _under_16_open_files(*args: str) -> subprocess.CompletedProcess[str]:
    """`caloforge ARGS` in a process that may open 16 files (`ulimit -n 16`)."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))

    command = [sys.executable, "-m", "caloforge", *args]
    return subprocess.run(
        command, preexec_fn=low_limit, capture_output=True, text=True, timeout=300
    )


def test_validate_under_a_low_open_file_limit_draws_its_plots_itself(tmp_path: Path) -> None:
    """At `ulimit -n 16` the plot pool's forkserver could not open its pipes and printed an
    EOFError traceback of its own; validate now draws in its process where a pool does not
    fit, and completes."""
    files = []
    for seed in (1, 2):
        files.append(tmp_path / f"{seed}.h5")
        simulate = ["simulate", "--n", "200", "--seed", str(seed), "--workers", "1"]
        assert run_cli([*simulate, "-o", str(files[-1])]) == 0
    done = _under_16_open_files(
        *("validate", "--reference", str(files[0]), "--generated", str(files[1])),
        *("--out", str(tmp_path / "report")),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert (tmp_path / "report" / "index.html").is_file()


def test_simulate_under_a_low_open_file_limit_makes_its_showers_in_fewer_processes(
    tmp_path: Path,
) -> None:
    """`simulate --workers 2` at `ulimit -n 16` stopped at its pool with "too many open
    files"; it now makes the showers with the workers the limit leaves room for."""
    out = tmp_path / "s.h5"
    done = _under_16_open_files(
        *("simulate", "--geometry", "clic-angle-51", "--n", "4000", "--workers", "2"),
        *("-o", str(out)),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with h5py.File(out) as f:
        assert len(f["showers"]) == 4000


def test_a_one_column_grid_converts_to_calochallenge(tmp_path: Path) -> None:
    """A 1 x 1 summed geometry (its one cell at r = 0) has one radial bin (IndexError before)."""
    yaml = a_file(
        tmp_path,
        "one.yaml",
        "name: one-cell\nshape: [1, 1]\nreadout: summed\ncell_size_mm: [20, 20]\n"
        "layers:\n  - {absorber: Pb, absorber_mm: 2, sensor: polystyrene, sensor_mm: 4, "
        "repeat: 3}\nconditions:\n  - {name: energy, unit: GeV, default: [10, 100], "
        "valid: [1, 1000]}\nstochastic_term: 0.1\nconstant_term: 0.01\n",
    )
    showers = tmp_path / "one.h5"
    assert run_cli(["simulate", "--geometry", str(yaml), "--n", "3", "-o", str(showers)]) == 0
    out, binning = tmp_path / "cc.h5", tmp_path / "cc.xml"
    argv = ["convert", str(showers), "--to", "calochallenge", "--binning", str(binning), str(out)]
    assert run_cli(argv) == 0
    assert run_cli(["inspect", str(out), "--binning", str(binning)]) == 0


API_CASES = {
    # name: (call of (tmp, checkpoint), words of the message)
    "open_showers-an-int": (lambda tmp, ck: open_showers(5), ("expected a path", "got int")),
    "open_showers-none": (lambda tmp, ck: open_showers(None), ("got NoneType",)),
    "simulate_to_file-seed-negative": (
        lambda tmp, ck: simulate_to_file(tmp / "s.h5", n=2, seed=-1),
        ("--seed", ">= 0", "got -1"),
    ),
    "simulate_to_file-batch-size-0": (
        lambda tmp, ck: simulate_to_file(tmp / "s.h5", n=2, batch_size=0),
        ("--batch-size", ">= 1", "got 0"),
    ),
    "simulate_to_file-n-fractional": (
        lambda tmp, ck: simulate_to_file(tmp / "s.h5", n=2.5),
        ("--n", "positive number", "2.5"),
    ),
    "simulate_to_file-energy-one-value": (
        lambda tmp, ck: simulate_to_file(tmp / "s.h5", n=2, energy=(10,)),
        ("--energy", "pair (low, high)", "(10,)"),
    ),
    "simulate_to_file-energy-text": (
        lambda tmp, ck: simulate_to_file(tmp / "s.h5", n=2, energy="10:20"),
        ("--energy", "pair (low, high)", "'10:20'"),
    ),
    "pipeline-energy-negative": (
        lambda tmp, ck: _pipeline(ck)({"energy": np.array([-5.0])}, _noise()),
        ("conditions for 'energy'", "-5:-5 GeV", "valid for"),
    ),
    "pipeline-energy-1e9": (
        lambda tmp, ck: _pipeline(ck)({"energy": np.array([1e9])}, _noise()),
        ("conditions for 'energy'", "1e+09", "valid for"),
    ),
    "pipeline-energy-text": (
        lambda tmp, ck: _pipeline(ck)({"energy": np.array(["a"])}, _noise()),
        ("condition 'energy'", "must hold numbers"),
    ),
    "pipeline-conditions-a-list": (
        lambda tmp, ck: _pipeline(ck)([10.0], _noise()),  # type: ignore[arg-type]
        ("conditions must be a mapping", "got list"),
    ),
    "pipeline-generator-none": (
        lambda tmp, ck: _pipeline(ck)({"energy": np.array([10.0])}, None),  # type: ignore[arg-type]
        ("torch.Generator", "got NoneType"),
    ),
    # Round seven: wrong types met a bare TypeError ('<=' not supported between ...).
    "generate_to_file-n-text": (
        lambda tmp, ck: generate_to_file(ck, tmp / "g.h5", n="5"),  # type: ignore[arg-type]
        ("--n", "positive number", "'5'"),
    ),
    "generate_to_file-seed-fractional": (
        lambda tmp, ck: generate_to_file(ck, tmp / "g.h5", n=2, seed=1.5),  # type: ignore[arg-type]
        ("--seed", "integer", "1.5"),
    ),
    "generate_to_file-batch-size-text": (
        lambda tmp, ck: generate_to_file(ck, tmp / "g.h5", n=2, batch_size="8"),  # type: ignore[arg-type]
        ("--batch-size", "integer", "'8'"),
    ),
    "generate_to_file-energy-text": (
        lambda tmp, ck: generate_to_file(ck, tmp / "g.h5", n=2, energy="10:20"),  # type: ignore[arg-type]
        ("--energy", "pair (low, high)", "'10:20'"),
    ),
    "generate_to_file-output-none": (
        lambda tmp, ck: generate_to_file(ck, None, n=2),  # type: ignore[arg-type]
        ("-o", "expected a path", "NoneType"),
    ),
    "convert-batch-size-text": (
        lambda tmp, ck: convert(canonical(tmp / "in.h5"), tmp / "o.h5", batch_size="10"),  # type: ignore[arg-type]
        ("batch_size", "integer", "'10'"),
    ),
    "export_onnx-opset-text": (
        lambda tmp, ck: export_onnx(ck, tmp / "m.onnx", opset="18"),  # type: ignore[arg-type]
        ("--opset", "integer", "'18'"),
    ),
    "pipeline-energy-a-number": (
        lambda tmp, ck: _pipeline(ck)({"energy": 50.0}, _noise()),  # type: ignore[dict-item]
        ("condition 'energy' is one number", "[50.0] for one shower"),
    ),
    "pipeline-theta-for-clic-25": (
        lambda tmp, ck: _pipeline(ck)(
            {"energy": np.array([50.0]), "theta": np.array([1.5])}, _noise()
        ),
        ("['theta']", "not conditions of geometry 'clic-25'", "['energy']"),
    ),
    "compare-paths": (
        lambda tmp, ck: compare(ref(tmp), ref(tmp)),  # type: ignore[arg-type]
        ("compare: reference", "open shower set", "got str", "validate() takes paths"),
    ),
}


def _pipeline(ck: Path) -> ShowerPipeline:
    return ShowerPipeline.from_checkpoint(ck)


def _noise() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("name", list(API_CASES))
def test_the_python_api_refuses_bad_arguments_with_its_own_errors(
    name: str, checkpoint: Path, tmp_path: Path
) -> None:
    """The API the README documents, given what the command line would refuse: caloforge's
    own error naming the argument (not a bare TypeError, AttributeError or numpy's words),
    and nothing written."""
    call, expect = API_CASES[name]
    before = snapshot(tmp_path)
    with pytest.raises(CaloforgeError) as caught:
        call(tmp_path, checkpoint)
    message = str(caught.value)
    assert all(word in message for word in expect), message
    if name == "compare-paths" or name.startswith("convert-"):  # their inputs, made here
        after = {k: v for k, v in snapshot(tmp_path).items() if k not in ("ref.h5", "in.h5")}
        assert after == {k: v for k, v in before.items() if k not in ("ref.h5", "in.h5")}
    else:
        assert list(tmp_path.iterdir()) == []


def test_the_python_api_takes_numpy_integers_and_one_shower(
    checkpoint: Path, tmp_path: Path
) -> None:
    path = simulate_to_file(tmp_path / "s.h5", n=np.int64(1), seed=np.int64(3), workers=1)
    with open_showers([path]) as source:
        assert len(source) == 1
    showers = _pipeline(checkpoint)({"energy": [10.0]}, _noise()).showers
    assert showers.shape == (1, *PRESETS["clic-25"].shape)
    # A bytes path, as os functions take one (its bytes were taken for paths: "got 47").
    with open_showers(os.fsencode(path)) as source:
        assert len(source) == 1


# --- round seven: what should work, and faults ---------------------------------------------------
@pytest.mark.slow
def test_a_killed_simulate_under_a_driver_that_reads_its_output_leaves_no_worker(
    tmp_path: Path,
) -> None:
    """`simulate --workers 2` killed (SIGKILL, or SIGHUP when the terminal goes) under a
    Python driver reading its stderr: the driver reaps it only once the pipe closes, and the
    workers, holding the pipe, took the unreaped owner for alive, so the driver hung."""
    command = [*CALOFORGE, "simulate", "--n", "20000", "--workers", "2", "-o", "s.h5"]
    started = subprocess.Popen(
        command, cwd=tmp_path, stderr=subprocess.PIPE, start_new_session=True
    )
    time.sleep(6)
    started.kill()
    try:
        started.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(started.pid, signal.SIGKILL)
        started.communicate()
        pytest.fail("the workers outlived their killed owner")


def test_inspect_of_a_shipped_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    """`pretrained:NAME` works where generate, export and bench take it, inspect included
    (it said "file not found")."""
    assert run_cli(["inspect", "pretrained:clic25-geant4"]) == 0
    out = capsys.readouterr().out
    assert "family        flow-match" in out and "clic-25" in out


def test_validate_a_calochallenge_reference_against_a_grid_set_with_one_binning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CaloChallenge reference (read with --binning) and caloforge showers of the grid it
    was made from: the binning goes to the set that takes it (the canonical reader refused
    it: "format 'caloforge' takes no options"), and the grid set is rebinned with its own
    geometry's rebinning (the reference's was applied to it: ValueError, a traceback)."""
    grid = simulate_to_file(tmp_path / "grid.h5", n=120, seed=1, workers=1)
    cc, xml = tmp_path / "cc.h5", tmp_path / "cc.xml"
    assert (
        run_cli(["convert", str(grid), "--to", "calochallenge", "--binning", str(xml), str(cc)])
        == 0
    )
    generated = simulate_to_file(tmp_path / "gen.h5", n=120, seed=2, workers=1)
    argv = [
        *("validate", "--protocol", "calochallenge", "--reference", str(cc)),
        *("--binning", str(xml), "--generated", str(generated), "--out", str(tmp_path / "r")),
        *("--challenge-epochs", "1", "--challenge-classifiers", "high"),
    ]
    capsys.readouterr()
    assert run_cli(argv) == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["protocol"] == "calochallenge"


def test_an_int8_choice_that_cannot_be_kept_is_caloforges_own_one_line_warning(
    tmp_path: Path,
) -> None:
    """A cache path below a file: the warning came out as a plain UserWarning, printed with
    Python's file:line and source line instead of `caloforge: warning: ...`."""
    from caloforge.generation.int8.cache import CacheNotKeptWarning, store

    blocked = a_file(tmp_path, "cache") / "int8" / "choice.json"
    with pytest.warns(CacheNotKeptWarning, match="could not keep the int8 choice"):
        store(blocked, None, print)  # type: ignore[arg-type]  # never read: the write fails
    assert CacheNotKeptWarning.__module__.split(".")[0] == "caloforge"
    assert not blocked.exists()


@pytest.mark.slow
def test_sighup_is_handled_as_ctrl_c(tmp_path: Path) -> None:
    """The terminal or the ssh session closed (SIGHUP) during `simulate --workers 2`: the
    process died with its partial left for the next run to remove; it now ends as on Ctrl-C."""
    out = tmp_path / "out.h5"
    argv = ["simulate", "--n", "100000", "--workers", "2", "-o", str(out)]
    proc = subprocess.Popen([*CALOFORGE, *argv], stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: bool(_partials(tmp_path)) or proc.poll() is not None)
    children = _descendants(proc.pid)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    assert _partials(tmp_path) == []
    _wait_for(lambda: not any(_running(p) for p in children), 10)


def test_the_calochallenge_protocol_refuses_its_out_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --out folder of other files was refused only when the report was written, after the
    classifiers' training (an hour on a CPU)."""
    import caloforge.validation.challenge.protocol as protocol

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the evaluation ran before --out was checked")

    monkeypatch.setattr(protocol, "run_calochallenge", never)
    argv = [*validate_of(tmp_path), "--protocol", "calochallenge"]
    argv += ["--out", str(a_folder(tmp_path, "mine"))]
    assert run_cli(argv) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "does not hold a caloforge report" in lines[0]
