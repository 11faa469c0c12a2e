"""The canonical shower file: writing, appending, reading, and errors that name file and key."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloforge import __version__
from caloforge.data.canonical import ShowerWriter, open_canonical
from caloforge.data.io import ShowerCollection, expand_paths, open_showers
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError, InputFileError
from caloforge.geometry import Condition, Geometry, Layer

TINY = Geometry(
    name="tiny",
    shape=(2, 3, 2),
    readout="layers",
    cell_size_mm=(5.0, 5.0),
    layers=(Layer("W", 2.4, "Si", 0.5),) * 2,
    conditions=(Condition("energy", "GeV"), Condition("point", "mm", size=2)),
)


def make_batch(n: int, first_energy: float = 1.0, seed: int = 0) -> Batch:
    """Random showers; energies first_energy, first_energy + 1, ...; point (e, -e)."""
    rng = np.random.default_rng(seed)
    energy = first_energy + np.arange(n, dtype=np.float64)
    showers = rng.exponential(1.0, size=(n, *TINY.shape)).astype(np.float32)
    return Batch(showers, {"energy": energy, "point": np.stack([energy, -energy], axis=1)})


def write(path: Path, batch: Batch, geometry: Geometry = TINY, **options: object) -> Path:
    with ShowerWriter(path, geometry, **options) as w:  # type: ignore[arg-type]
        w.write(batch)
    return path


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    return write(tmp_path / "good.h5", make_batch(40))


def assert_names(error: pytest.ExceptionInfo[InputFileError], path: Path, key: str | None) -> None:
    message = str(error.value)
    assert str(path) in message
    assert error.value.path == str(path)
    if key is not None:
        assert f"key '{key}'" in message
        assert error.value.key == key


# --- writing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "stored"), [("gzip", "gzip"), ("lzf", "lzf"), ("none", None)]
)
def test_round_trip(tmp_path: Path, compression: str, stored: str | None) -> None:
    a, b = make_batch(5, 1.0, seed=1), make_batch(7, 6.0, seed=2)
    path = tmp_path / "out.h5"
    with ShowerWriter(path, TINY, producer="unit test", compression=compression) as w:
        w.write(a)
        w.write(b)
        w.write(make_batch(0))
    with open_showers(path) as f:
        assert f.format == "caloforge"
        assert len(f) == 12
        assert f.geometry == TINY
        whole = f.read(0, 12)
        np.testing.assert_array_equal(whole.showers, np.concatenate([a.showers, b.showers]))
        assert whole.showers.dtype == np.float32
        for name in ("energy", "point"):
            expected = np.concatenate([a.conditions[name], b.conditions[name]])
            np.testing.assert_array_equal(f.conditions[name], expected)
            np.testing.assert_array_equal(whole.conditions[name], expected)
    with h5py.File(path, "r") as h5:
        attrs = h5.attrs
        assert attrs["geometry"] == "tiny"
        assert Geometry.from_json(str(attrs["geometry_json"])) == TINY
        assert json.loads(attrs["units"]) == {"showers": "GeV", "energy": "GeV", "point": "mm"}
        assert int(attrs["format_version"]) == 1
        assert attrs["producer"] == f"unit test (caloforge {__version__})"
        showers = h5["showers"]
        assert showers.chunks == (1, *TINY.shape)  # one chunk per shower: cheap random access
        assert showers.compression == stored
        assert showers.maxshape == (None, *TINY.shape)
        assert h5["point"].shape == (12, 2)


def test_unknown_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CaloforgeError, match="unknown compression 'zstd'"):
        ShowerWriter(tmp_path / "x.h5", TINY, compression="zstd")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_batches_of_another_layout(tmp_path: Path) -> None:
    with ShowerWriter(tmp_path / "x.h5", TINY) as w:
        with pytest.raises(ValueError, match="shape"):
            w.write(Batch(np.zeros((2, 3, 3, 2), np.float32), make_batch(2).conditions))
        with pytest.raises(ValueError, match="conditions"):
            w.write(Batch(make_batch(2).showers, {"energy": np.ones(2)}))


def test_append_adds_rows(good_file: Path) -> None:
    extra = make_batch(10, 41.0, seed=3)
    with ShowerWriter(good_file, TINY, append=True) as w:
        assert w.n == 40
        w.write(extra)
    with open_canonical(good_file) as f:
        assert len(f) == 50
        np.testing.assert_array_equal(f.conditions["energy"], np.arange(1.0, 51.0))
        np.testing.assert_array_equal(f.read(40, 50).showers, extra.showers)
        np.testing.assert_array_equal(f.read(0, 40).showers, make_batch(40).showers)
        across = f.read(38, 42)
        np.testing.assert_array_equal(across.energy, [39.0, 40.0, 41.0, 42.0])


def test_append_to_a_new_path_creates_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "new.h5", make_batch(3), append=True)
    with open_canonical(path) as f:
        assert len(f) == 3


def test_append_of_another_geometry_is_refused(good_file: Path) -> None:
    other = Geometry.from_dict({**TINY.to_dict(), "name": "other"})
    with pytest.raises(InputFileError, match="another geometry") as error:
        ShowerWriter(good_file, other, append=True)
    assert_names(error, good_file, "geometry")
    with open_canonical(good_file) as f:
        assert len(f) == 40


def test_error_inside_the_writer_leaves_no_file(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    path = folder / "showers.h5"
    with pytest.raises(RuntimeError, match="boom"), ShowerWriter(path, TINY) as w:
        w.write(make_batch(10))
        assert not path.exists()  # nothing under the final name until the writer closes
        raise RuntimeError("boom")
    assert not path.exists()
    assert list(folder.iterdir()) == []


def test_abort_discards_a_new_file(tmp_path: Path) -> None:
    w = ShowerWriter(tmp_path / "x.h5", TINY)
    w.write(make_batch(3))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def _free_bytes(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """The writer's disk has `free` bytes free (shutil.disk_usage as the module sees it)."""
    from caloforge.data import canonical

    usage = shutil.disk_usage("/")._replace(free=free)
    monkeypatch.setattr(canonical.shutil, "disk_usage", lambda path: usage)


def test_more_showers_than_their_conditions_fit_on_disk_are_refused_before_any_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _free_bytes(monkeypatch, 10_000)  # 3 conditions of 8 bytes a shower: 417 showers fit
    with pytest.raises(CaloforgeError, match=r"of 1,000 showers alone take 24 kB and 10 kB"):
        ShowerWriter(tmp_path / "x.h5", TINY, expected=1000)
    assert list(tmp_path.iterdir()) == []
    ShowerWriter(tmp_path / "y.h5", TINY, expected=400).abort()  # these fit


@pytest.mark.parametrize("append", [False, True])
def test_showers_projected_past_the_free_disk_stop_after_the_first_batch(
    good_file: Path, monkeypatch: pytest.MonkeyPatch, append: bool
) -> None:
    # Conditions fit (24 kB), the showers do not: 12 floats each, ~50 bytes compressed.
    target = good_file if append else good_file.with_name("new.h5")
    before = sorted(good_file.parent.iterdir())
    kept = good_file.read_bytes()
    _free_bytes(monkeypatch, 30_000)
    w = ShowerWriter(target, TINY, append=append, expected=1000)
    with pytest.raises(CaloforgeError, match=r"1,000 showers need about .* more on disk") as err:
        w.write(make_batch(50))
    assert "nothing was written" in str(err.value)
    assert ("keeps its" in str(err.value)) == append
    assert sorted(good_file.parent.iterdir()) == before  # no partial, no new file
    assert good_file.read_bytes() == kept
    _free_bytes(monkeypatch, 10**9)  # with room, the same writes go through
    write(target, make_batch(50), append=append, expected=1000)


def _interrupt_once_the_partial_exists(folder: Path) -> Callable[..., None]:
    """A stand-in for a step of the writer's construction: checks that the partial is
    there, then raises what the CLI's SIGTERM handler and Ctrl-C raise."""

    def interrupt(*args: object, **kwargs: object) -> None:
        assert [p for p in folder.iterdir() if ".partial-" in p.name], "no partial yet"
        raise KeyboardInterrupt

    return interrupt


def test_an_interrupt_while_the_writer_is_created_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Right after HDF5 created the partial (the descriptor is looked up next), and later,
    # among the attributes: SIGTERM at either moment used to leave .x.h5.partial-PID.
    import caloforge.data.canonical as canonical

    for step in ("_descriptor", "units_of"):
        with monkeypatch.context() as patch:
            patch.setattr(canonical, step, _interrupt_once_the_partial_exists(tmp_path))
            with pytest.raises(KeyboardInterrupt):
                ShowerWriter(tmp_path / "x.h5", TINY)
        assert list(tmp_path.iterdir()) == [], step
    write(tmp_path / "x.h5", make_batch(2))  # nothing held: the name is free to write


def test_an_interrupt_while_an_append_is_set_up_keeps_the_file(
    good_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import caloforge.data.canonical as canonical

    before = good_file.read_bytes()
    interrupt = _interrupt_once_the_partial_exists(good_file.parent)

    def copy_then_interrupt(source: Path, target: Path) -> None:
        shutil.copyfile(source, target)
        interrupt()

    with monkeypatch.context() as patch:
        patch.setattr(canonical, "copy_file", copy_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            ShowerWriter(good_file, TINY, append=True)
    assert list(good_file.parent.iterdir()) == [good_file]
    assert good_file.read_bytes() == before
    with ShowerWriter(good_file, TINY, append=True) as w:  # the lock was given back
        w.write(make_batch(1, 41.0))
    with open_canonical(good_file) as f:
        assert len(f) == 41


# --- reading errors ---------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.h5"
    for opener in (open_showers, open_canonical):
        with pytest.raises(InputFileError, match="file not found") as error:
            opener(path)
        assert_names(error, path, None)


def test_folder(tmp_path: Path) -> None:
    path = tmp_path / "folder.h5"
    path.mkdir()
    with pytest.raises(InputFileError, match="is a folder") as error:
        open_canonical(path)
    assert_names(error, path, None)
    with pytest.raises(InputFileError) as error:
        open_showers(path)
    assert_names(error, path, None)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    path.touch()
    for opener in (open_showers, open_canonical):
        with pytest.raises(InputFileError, match="file is empty") as error:
            opener(path)
        assert_names(error, path, None)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.h5"
    path.write_text("energy,showers\n1,2\n")
    with pytest.raises(InputFileError, match="unrecognised shower file format") as error:
        open_showers(path)
    assert_names(error, path, None)
    with pytest.raises(InputFileError, match="not a readable HDF5 file") as error:
        open_canonical(path)
    assert_names(error, path, None)


def truncate(good_file: Path) -> Path:
    data = good_file.read_bytes()
    path = good_file.with_name("truncated.h5")
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_file(good_file: Path) -> None:
    path = truncate(good_file)
    with pytest.raises(InputFileError, match="truncated") as error:
        open_canonical(path)
    assert_names(error, path, None)


def test_truncated_file_through_detection(good_file: Path) -> None:
    path = truncate(good_file)
    with pytest.raises(InputFileError) as error:
        open_showers(path)
    assert_names(error, path, None)


def test_hdf5_file_of_another_kind(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["table"] = np.zeros((3, 4))  # HDF5, but no shower format's layout
    with pytest.raises(InputFileError, match="not a caloforge shower file") as error:
        open_canonical(path)
    assert_names(error, path, "geometry_json")
    with pytest.raises(InputFileError, match="unrecognised shower file format") as error:
        open_showers(path)
    assert_names(error, path, None)


def _edit(good_file: Path, change: Callable[[h5py.File], None]) -> Path:
    path = good_file.with_name("edited.h5")
    shutil.copy(good_file, path)
    with h5py.File(path, "a") as h5:
        change(h5)
    return path


def _drop_showers(h5: h5py.File) -> None:
    del h5["showers"]


def _reshape_showers(h5: h5py.File) -> None:
    del h5["showers"]
    h5["showers"] = np.zeros((40, 3, 3, 2), np.float32)


def _drop_point(h5: h5py.File) -> None:
    del h5["point"]


def _reshape_point(h5: h5py.File) -> None:
    del h5["point"]
    h5["point"] = np.zeros((40, 3))


def _short_point(h5: h5py.File) -> None:
    del h5["point"]
    h5["point"] = np.zeros((39, 2))


def _newer_version(h5: h5py.File) -> None:
    h5.attrs["format_version"] = 99


def _bad_geometry(h5: h5py.File) -> None:
    h5.attrs["geometry_json"] = '{"name": "x"'


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (_drop_showers, "showers", "missing dataset; expected (N, 2, 3, 2) float32"),
        (_reshape_showers, "showers", "expected (N, 2, 3, 2), found (40, 3, 3, 2)"),
        (_drop_point, "point", "missing condition dataset; expected (40, 2) in mm"),
        (_reshape_point, "point", "wrong shape; expected (40, 2), found (40, 3)"),
        (_short_point, "point", "wrong shape; expected (40, 2), found (39, 2)"),
        (_newer_version, "format_version", "newer caloforge; expected <= 1, found 99"),
        (_bad_geometry, "geometry_json", "bad geometry description"),
    ],
)
def test_layout_errors_name_file_and_key(
    good_file: Path, change: Callable[[h5py.File], None], key: str, message: str
) -> None:
    path = _edit(good_file, change)
    for opener in (open_showers, open_canonical):
        with pytest.raises(InputFileError) as error:
            opener(path)
        assert_names(error, path, key)
        assert message in str(error.value)


@pytest.mark.parametrize(
    ("version", "found"),
    [
        (0, "found 0"),
        (-1, "found -1"),
        (1.5, "found 1.5"),
        (np.True_, "found True"),
        ("1", "found '1'"),
        (np.array([1, 1]), "found array([1, 1])"),
    ],
)
def test_a_format_version_that_is_no_version_is_refused(
    good_file: Path, version: object, found: str
) -> None:
    path = _edit(good_file, lambda h5: h5.attrs.__setitem__("format_version", version))
    for opener in (open_showers, open_canonical):
        with pytest.raises(InputFileError, match="bad format version") as error:
            opener(path)
        assert_names(error, path, "format_version")
        assert f"expected an integer from 1 to 1, {found}" in str(error.value)


@pytest.mark.parametrize("version", [1, 1.0, np.int32(1), None])
def test_format_version_one_or_none_is_read(good_file: Path, version: object) -> None:
    def change(h5: h5py.File) -> None:
        if version is None:
            del h5.attrs["format_version"]
        else:
            h5.attrs["format_version"] = version

    with open_showers(_edit(good_file, change)) as f:
        assert len(f.read(0, 40)) == 40


@pytest.mark.parametrize(
    ("value", "problem"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-1e-3, "negative")],
)
def test_bad_cells_name_file_key_and_first_row(tmp_path: Path, value: float, problem: str) -> None:
    batch = make_batch(40)
    batch.showers[7, 1, 2, 0] = value
    batch.showers[30, 0, 0, 1] = value
    path = write(tmp_path / "bad.h5", batch)
    with open_showers(path) as f:
        with pytest.raises(InputFileError, match=problem) as error:
            f.read(0, 40)
        assert_names(error, path, "showers")
        assert "2 bad shower(s) in rows 0:40, first at row 7" in str(error.value)
        with pytest.raises(InputFileError) as error:
            f.read(10, 40)
        assert "first at row 30" in str(error.value)
        np.testing.assert_array_equal(f.read(8, 30).showers, batch.showers[8:30])


@pytest.mark.parametrize(
    ("value", "shown"), [(3e38, "a cell of 3e+38 GeV"), (11 * 8.0, "a cell of 88 GeV")]
)
def test_absurd_finite_cells_name_file_key_row_and_value(
    tmp_path: Path, value: float, shown: str
) -> None:
    # Row 7's primary energy is 8 GeV: no cell may hold more than 10 x 8 GeV.
    batch = make_batch(40)
    batch.showers[7, 1, 2, 0] = value
    path = write(tmp_path / "bad.h5", batch)
    for opener in (open_showers, open_canonical):
        with opener(path) as f:
            with pytest.raises(InputFileError, match="far above the primary energy") as error:
                f.read(0, 40)
            assert_names(error, path, "showers")
            assert f"first at row 7: {shown}, primary energy 8 GeV" in str(error.value)
            with pytest.raises(InputFileError, match="first at row 7"):
                f.take(np.array([2, 7]))
            np.testing.assert_array_equal(f.read(8, 40).showers, batch.showers[8:])


def test_cells_up_to_ten_times_the_primary_energy_are_read(tmp_path: Path) -> None:
    batch = make_batch(10)
    batch.showers[3, 0, 0, 0] = 9.99 * 4.0  # row 3: 4 GeV
    path = write(tmp_path / "hot.h5", batch)
    with open_showers(path) as f:
        np.testing.assert_array_equal(f.read(0, 10).showers, batch.showers)


def test_bad_cells_found_by_take_name_the_file_row(tmp_path: Path) -> None:
    batch = make_batch(40)
    batch.showers[30, 0, 0, 0] = np.nan
    path = write(tmp_path / "bad.h5", batch)
    with open_showers(path) as f, pytest.raises(InputFileError) as error:
        f.take(np.array([3, 30]))
    assert "first at row 30" in str(error.value)


@pytest.mark.parametrize("energy", [0.0, -5.0])
def test_non_positive_energy(tmp_path: Path, energy: float) -> None:
    batch = make_batch(10)
    batch.conditions["energy"][4] = energy
    path = write(tmp_path / "bad.h5", batch)
    with open_showers(path) as f, pytest.raises(InputFileError, match="must be positive") as error:
        f.conditions  # noqa: B018
    assert_names(error, path, "energy")
    assert "1 value(s) <= 0" in str(error.value)


def test_non_finite_condition(tmp_path: Path) -> None:
    batch = make_batch(10)
    batch.conditions["point"][4, 1] = np.inf
    path = write(tmp_path / "bad.h5", batch)
    with open_showers(path) as f, pytest.raises(InputFileError, match="NaN or infinite") as error:
        f.read(0, 2)
    assert_names(error, path, "point")


# --- several files ----------------------------------------------------------------------


@pytest.fixture
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    # written in reverse order: the glob must still read them in sorted order
    b = write(tmp_path / "run_b.h5", make_batch(12, 31.0, seed=2))
    a = write(tmp_path / "run_a.h5", make_batch(30, 1.0, seed=1))
    return a, b


def test_collection_over_a_glob(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    assert expand_paths(str(tmp_path / "run_*.h5")) == list(two_files)
    energies = np.arange(1.0, 43.0)
    all_showers = np.concatenate([make_batch(30, seed=1).showers, make_batch(12, seed=2).showers])
    with open_showers(str(tmp_path / "run_*.h5")) as showers:
        assert isinstance(showers, ShowerCollection)
        assert len(showers) == 42
        assert showers.geometry == TINY
        np.testing.assert_array_equal(showers.conditions["energy"], energies)
        np.testing.assert_array_equal(showers.conditions["point"][:, 1], -energies)
        across = showers.read(27, 34)
        np.testing.assert_array_equal(across.energy, energies[27:34])
        np.testing.assert_array_equal(across.showers, all_showers[27:34])
        np.testing.assert_array_equal(across.conditions["point"][:, 0], energies[27:34])
        rows = np.array([0, 29, 30, 41])
        taken = showers.take(rows)
        np.testing.assert_array_equal(taken.energy, energies[rows])
        np.testing.assert_array_equal(taken.showers, all_showers[rows])
        assert len(showers.read(40, 100)) == 2


def test_collection_refuses_mixed_geometries(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    other = Geometry.from_dict({**TINY.to_dict(), "name": "other"})
    odd = write(tmp_path / "run_c.h5", make_batch(3), other)
    with pytest.raises(InputFileError, match="different geometries") as error:
        open_showers(str(tmp_path / "run_*.h5"))
    assert_names(error, odd, "geometry")
    assert "'tiny'" in str(error.value) and "'other'" in str(error.value)


def test_glob_without_match(tmp_path: Path) -> None:
    pattern = str(tmp_path / "none_*.h5")
    with pytest.raises(InputFileError, match="no file matches") as error:
        open_showers(pattern)
    assert pattern in str(error.value)
