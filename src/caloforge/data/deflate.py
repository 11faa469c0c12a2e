"""Showers compressed in caloforge and written to HDF5 as finished chunks.

A canonical file stores each shower as one chunk through HDF5's shuffle and deflate filters.
HDF5 deflates with zlib: at level 1, 0.72 ms of CPU a clic-angle-51 shower, half of what
simulating it costs. Where the `isal` package (Intel's ISA-L deflate) is installed, the
writer does the same two steps itself, byte shuffle in numpy and deflate with ISA-L (0.25
ms, and files about 10 % smaller), and hands HDF5 each finished chunk
(`write_direct_chunk`). The bytes are a standard zlib stream: any HDF5
reader inflates them with its own zlib, and the showers read back bit for bit.

Reading goes the other way (`read_chunks`): each shower's chunk is fetched raw
(`read_direct_chunk`), inflated (ISA-L, else Python's zlib) and unshuffled here. HDF5's own
path selects a batch of scattered rows, as a training batch is, 5-8 times slower than this
(a hyperslab union built row by row): 128 clic-25 showers of a shuffled batch took 135 ms,
as long as the training step they feed.

Used only where a dataset's filters are exactly shuffle then deflate, one shower a chunk, as
caloforge creates them; anything else (lzf, no compression, a file another program made, no
`isal` for writing) goes through HDF5's own filters.
"""

from __future__ import annotations

import zlib
from types import ModuleType

import h5py
import numpy as np

_isal_zlib: ModuleType | None
try:  # optional: a wheel for x86-64 and ARM64 (see pyproject.toml)
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - exercised where isal is absent
    _isal_zlib = None

# HDF5's filter identifiers (H5Zpublic.h).
_SHUFFLE, _DEFLATE = 2, 1
# ISA-L's level 1: about zlib's level 1 in ratio (the files' gzip level).
ISAL_LEVEL = 1


def deflater() -> ModuleType | None:
    """The ISA-L zlib module, or None where `isal` is not installed."""
    return _isal_zlib


def _shuffled_deflate_rows(dataset: h5py.Dataset) -> bool:
    """Whether `dataset` holds little-endian float32 showers in chunks of one shower through
    exactly the shuffle then the deflate filter (as caloforge writes them)."""
    if dataset.dtype != np.dtype("<f4") or dataset.chunks != (1, *dataset.shape[1:]):
        return False
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    return filters == [_SHUFFLE, _DEFLATE]


def compresses_here(dataset: h5py.Dataset) -> bool:
    """Whether the showers of `dataset` can be compressed here: `isal` is installed and the
    dataset is laid out as caloforge writes it (float32, one shower a chunk, shuffle then
    deflate)."""
    return deflater() is not None and _shuffled_deflate_rows(dataset)


def reads_here(dataset: h5py.Dataset) -> bool:
    """Whether `read_chunks` can read `dataset`: laid out as caloforge writes it. Inflating
    needs no `isal` (Python's zlib does it, at half the speed)."""
    return _shuffled_deflate_rows(dataset)


def read_chunks(dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Showers at `rows` (any order, repeats allowed) of `dataset` (`reads_here` is true):
    float32 `(len(rows), *shape)`, bit for bit what HDF5's filters give.

    A row whose chunk HDF5 stored differently (a filter skipped, never written) is read
    through HDF5. Raises OSError naming the row where a chunk does not inflate to a shower.
    """
    inflate = (deflater() or zlib).decompress
    shape = dataset.shape[1:]
    size = int(np.prod(shape))
    out = np.empty((len(rows), size, 4), dtype=np.uint8)
    zeros = (0,) * (dataset.ndim - 1)
    for k, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
        try:
            mask, chunk = dataset.id.read_direct_chunk((row, *zeros))
        except (OSError, RuntimeError, ValueError):  # an unallocated chunk: HDF5 fills it
            mask, chunk = -1, b""
        if mask != 0:
            out[k] = np.asarray(dataset[row], dtype="<f4").reshape(size, 1).view(np.uint8)
            continue
        try:
            raw = inflate(chunk)
        except Exception as exc:  # zlib.error, isal's error: a corrupt chunk
            raise OSError(f"the chunk of row {row} does not inflate ({exc})") from None
        if len(raw) != 4 * size:
            raise OSError(f"the chunk of row {row} holds {len(raw)} bytes, not {4 * size}")
        out[k] = np.frombuffer(raw, dtype=np.uint8).reshape(4, size).T
    return out.view("<f4").reshape(len(rows), *shape)


def write_chunks(dataset: h5py.Dataset, first: int, showers: np.ndarray) -> None:
    """Write `showers` (n, *shape) as rows first..first+n of `dataset`, which already has
    them (resized), each one chunk shuffled and deflated here (`compresses_here` is true)."""
    module = deflater()
    assert module is not None
    n = len(showers)
    data = np.ascontiguousarray(showers, dtype="<f4").reshape(n, -1, 1).view(np.uint8)
    # HDF5's shuffle: the first bytes of every value, then the second bytes, and so on; one
    # shower at a time into a buffer that stays in the cache (a whole batch's transposed copy
    # costs more in fresh pages than the transpose itself).
    shuffled = np.empty((4, data.shape[1]), dtype=np.uint8)
    zeros = (0,) * (dataset.ndim - 1)
    for i in range(n):
        np.copyto(shuffled, data[i].T)
        dataset.id.write_direct_chunk((first + i, *zeros), module.compress(shuffled, ISAL_LEVEL))
