"""Chunks compressed by caloforge (ISA-L) read back by HDF5's own filters, bit for bit."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from caloforge.data import deflate
from caloforge.data.canonical import ShowerWriter, open_canonical
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError
from caloforge.geometry import load_geometry

isal_zlib = pytest.importorskip("isal.isal_zlib")


def _batch(n: int, seed: int) -> Batch:
    geometry = load_geometry("clic-25")
    rng = np.random.default_rng(seed)
    showers = np.zeros((n, *geometry.shape), dtype=np.float32)
    hit = rng.random(showers.shape) < 0.05
    # Every exponent a shower can hold, from the 10 keV threshold to the primary's GeV.
    showers[hit] = (10.0 ** rng.uniform(-8, 2, int(hit.sum()))).astype(np.float32)
    return Batch(showers, {"energy": rng.uniform(10, 100, n)})


def _write(path, batches, **kwargs) -> None:
    geometry = load_geometry("clic-25")
    with ShowerWriter(path, geometry, **kwargs) as writer:
        for batch in batches:
            writer.write(batch)


def test_chunks_made_here_read_back_exactly_through_hdf5s_filters(tmp_path):
    path = tmp_path / "s.h5"
    batches = [_batch(5, 1), _batch(3, 2)]
    _write(path, batches)
    expected = np.concatenate([b.showers for b in batches])
    with h5py.File(path) as f:
        showers = f["showers"]
        assert np.array_equal(showers[:], expected)
        # The chunks are ISA-L's, not HDF5's zlib's: the fast path was taken.
        mask, chunk = showers.id.read_direct_chunk((6, 0, 0, 0))
        assert mask == 0
        row = expected[6].reshape(-1).view(np.uint8).reshape(-1, 4).T.tobytes()
        assert chunk == isal_zlib.compress(row, deflate.ISAL_LEVEL)
    with open_canonical(path) as source:
        assert len(source) == 8


def test_without_isal_hdf5_compresses_the_same_showers(tmp_path, monkeypatch):
    batch = _batch(4, 3)
    _write(tmp_path / "here.h5", [batch])
    monkeypatch.setattr(deflate, "_isal_zlib", None)
    _write(tmp_path / "hdf5.h5", [batch])
    with h5py.File(tmp_path / "here.h5") as a, h5py.File(tmp_path / "hdf5.h5") as b:
        assert np.array_equal(a["showers"][:], b["showers"][:])
        assert (
            a["showers"].id.read_direct_chunk((0, 0, 0, 0))[1]
            != (b["showers"].id.read_direct_chunk((0, 0, 0, 0))[1])
        )


@pytest.mark.parametrize("compression", ["lzf", "none"])
def test_other_filters_are_left_to_hdf5(tmp_path, compression):
    path = tmp_path / "s.h5"
    batch = _batch(3, 4)
    _write(path, [batch], compression=compression)
    with h5py.File(path) as f:
        assert not deflate.compresses_here(f["showers"])
        assert np.array_equal(f["showers"][:], batch.showers)


def test_append_across_the_two_writers(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    first, second = _batch(3, 5), _batch(2, 6)
    with monkeypatch.context() as m:
        m.setattr(deflate, "_isal_zlib", None)
        _write(path, [first])
    _write(path, [second], append=True)
    with h5py.File(path) as f:
        assert np.array_equal(f["showers"][:], np.concatenate([first.showers, second.showers]))


def test_a_dataset_of_several_showers_a_chunk_is_not_compressed_here(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        ds = f.create_dataset(
            "showers",
            shape=(4, 2, 2),
            maxshape=(None, 2, 2),
            chunks=(2, 2, 2),
            dtype="<f4",
            compression="gzip",
            shuffle=True,
        )
        assert not deflate.compresses_here(ds)
        one = f.create_dataset(
            "one", shape=(4, 2, 2), chunks=(1, 2, 2), dtype="<f4", compression="gzip"
        )
        assert not deflate.compresses_here(one)  # deflate without shuffle


# --- reading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("isal", [True, False])
def test_scattered_rows_read_here_as_hdf5_reads_them(tmp_path, monkeypatch, isal):
    path = tmp_path / "s.h5"
    batches = [_batch(6, 7), _batch(4, 8)]
    _write(path, batches)
    if not isal:  # Python's zlib inflates the same chunks
        monkeypatch.setattr(deflate, "_isal_zlib", None)
    rows = np.array([7, 2, 2, 9, 0])
    with h5py.File(path) as f:
        showers = f["showers"]
        assert deflate.reads_here(showers)
        got = deflate.read_chunks(showers, rows)
        assert got.dtype == np.float32 and got.shape == (5, 25, 25, 25)
        assert np.array_equal(got, showers[:][rows])


def test_rows_hdf5_stored_otherwise_are_read_through_hdf5(tmp_path):
    path = tmp_path / "s.h5"
    batch = _batch(3, 9)
    _write(path, [batch])
    row = batch.showers[1].reshape(-1).view(np.uint8).reshape(-1, 4).T.tobytes()
    with h5py.File(path, "a") as f:
        showers = f["showers"]
        # Row 1 shuffled but stored uninflated, HDF5's mask saying the deflate was skipped;
        # row 3 never written (HDF5 fills it with zeros).
        showers.id.write_direct_chunk((1, 0, 0, 0), row, filter_mask=0b10)
        showers.resize(4, axis=0)
    with h5py.File(path) as f:
        got = deflate.read_chunks(f["showers"], np.array([3, 1, 0]))
    assert np.array_equal(got[1], batch.showers[1])
    assert np.array_equal(got[2], batch.showers[0])
    assert not got[0].any()


def test_a_corrupt_chunk_is_an_unreadable_file_naming_the_row(tmp_path):
    path = tmp_path / "s.h5"
    _write(path, [_batch(3, 10)])
    with h5py.File(path, "a") as f:
        f["showers"].id.write_direct_chunk((2, 0, 0, 0), b"not a zlib stream at all")
    with h5py.File(path) as f, pytest.raises(OSError, match="row 2 does not inflate"):
        deflate.read_chunks(f["showers"], np.array([0, 2]))
    with open_canonical(path) as source, pytest.raises(CaloforgeError) as caught:
        source.take(np.array([1, 2]))
    assert str(path) in str(caught.value) and "showers" in str(caught.value)
