"""Splits, the streaming loader and the map-style dataset, on tiny synthetic files.

Every shower's cells all hold its primary energy, and its `point` condition is
(energy, -energy); energies are the global index + 1. So a batch shows at once which showers
it holds and whether their conditions travelled with them.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from caloforge.data.canonical import ShowerWriter
from caloforge.data.dataset import (
    ShowerDataset,
    ShowerStream,
    make_loader,
    split_indices,
)
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError
from caloforge.geometry import Condition, Geometry, Layer

TINY = Geometry(
    name="tiny",
    shape=(2, 2, 2),
    readout="layers",
    cell_size_mm=(5.0, 5.0),
    layers=(Layer("W", 2.4, "Si", 0.5),) * 2,
    conditions=(Condition("energy", "GeV"), Condition("point", "mm", size=2)),
)
N_FILES = (30, 23)  # 53 showers over two files
N_TOTAL = sum(N_FILES)


def labelled_batch(energies: np.ndarray) -> Batch:
    showers = np.broadcast_to(
        energies.astype(np.float32)[:, None, None, None], (len(energies), *TINY.shape)
    ).copy()
    return Batch(showers, {"energy": energies, "point": np.stack([energies, -energies], axis=1)})


@pytest.fixture
def files(tmp_path: Path) -> str:
    """Two files of the tiny geometry; returns a glob matching both."""
    start = 0
    for i, n in enumerate(N_FILES):
        with ShowerWriter(tmp_path / f"part{i}.h5", TINY, compression="none") as w:
            w.write(labelled_batch(np.arange(start + 1, start + n + 1, dtype=np.float64)))
        start += n
    return str(tmp_path / "part*.h5")


def expected_energies(split: str) -> np.ndarray:
    return split_indices(N_TOTAL)[split] + 1.0


def energies_of(batches: object) -> list[np.ndarray]:
    """The energies of each batch, after checking shapes, dtypes and alignment."""
    out = []
    for showers, conditions in batches:  # type: ignore[attr-defined]
        assert showers.dtype == torch.float32 and conditions.dtype == torch.float32
        assert showers.shape[1:] == TINY.shape and conditions.shape[1:] == (3,)
        assert showers.shape[0] == conditions.shape[0] > 0
        energy = conditions[:, 0]
        # every cell of a shower holds its own energy: any misalignment shows here
        torch.testing.assert_close(showers, energy[:, None, None, None].expand_as(showers))
        torch.testing.assert_close(conditions[:, 1], energy)
        torch.testing.assert_close(conditions[:, 2], -energy)
        out.append(energy.numpy().copy())
    return out


# --- split_indices ----------------------------------------------------------------------


def test_split_is_deterministic() -> None:
    a, b = split_indices(1000, seed=3), split_indices(1000, seed=3)
    assert a.keys() == b.keys() == {"train", "validation", "test"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_split_is_disjoint_complete_and_sorted() -> None:
    parts = split_indices(1001, fractions=(0.7, 0.2, 0.1), seed=5)
    assert [len(parts[k]) for k in ("train", "validation", "test")] == [701, 200, 100]
    for part in parts.values():
        assert (np.diff(part) > 0).all()
    together = np.concatenate(list(parts.values()))
    np.testing.assert_array_equal(np.sort(together), np.arange(1001))


def test_split_depends_on_seed() -> None:
    assert not np.array_equal(
        split_indices(100, seed=0)["test"], split_indices(100, seed=1)["test"]
    )


def test_split_allows_empty_parts() -> None:
    parts = split_indices(10, fractions=(1.0, 0.0, 0.0))
    np.testing.assert_array_equal(parts["train"], np.arange(10))
    assert len(parts["validation"]) == len(parts["test"]) == 0


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.3, 0.1), (1.2, -0.1, -0.1), (0.8, 0.2), (float("nan"), 0.5, 0.5)]
)
def test_split_rejects_bad_fractions(fractions: tuple[float, ...]) -> None:
    with pytest.raises(CaloforgeError, match="fractions"):
        split_indices(10, fractions=fractions)


# --- ShowerStream -----------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("split", ["train", "test"])
def test_stream_yields_each_shower_of_the_split_once(
    files: str, num_workers: int, split: str
) -> None:
    loader = make_loader(
        files, split, batch_size=4, window=8, shuffle=True, num_workers=num_workers
    )
    batches = energies_of(loader)
    assert len(batches) == len(loader)
    seen = np.concatenate(batches)
    assert len(seen) == len(expected_energies(split))
    np.testing.assert_array_equal(np.sort(seen), expected_energies(split))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_are_disjoint_with_equal_steps(files: str, num_workers: int) -> None:
    # train has 42 showers: 21 per rank, batches of 4 -> 6 steps each, the last one short
    per_rank = []
    for rank in (0, 1):
        loader = make_loader(
            files, batch_size=4, window=8, num_workers=num_workers, rank=rank, world_size=2
        )
        batches = energies_of(loader)
        assert len(batches) == len(loader) == 6
        per_rank.append(np.concatenate(batches))
    assert len(per_rank[0]) == len(per_rank[1]) == 21
    assert not set(per_rank[0]) & set(per_rank[1])
    np.testing.assert_array_equal(np.sort(np.concatenate(per_rank)), expected_energies("train"))


def test_uneven_split_drops_the_same_remainder_on_every_rank(files: str) -> None:
    # test has 5 showers: 2 per rank, one left out; 3 ranks would leave out 2
    for world_size in (2, 3):
        seen = [
            np.concatenate(
                energies_of(
                    ShowerStream(files, "test", batch_size=1, rank=r, world_size=world_size)
                )
            )
            for r in range(world_size)
        ]
        assert {len(s) for s in seen} == {5 // world_size}
        together = np.concatenate(seen)
        assert len(set(together)) == len(together) == world_size * (5 // world_size)
        assert set(together) <= set(expected_energies("test"))


def test_drop_last_gives_full_batches_of_equal_count(files: str) -> None:
    counts = []
    for rank in (0, 1):
        stream = ShowerStream(
            files, batch_size=4, window=8, drop_last=True, rank=rank, world_size=2
        )
        batches = energies_of(stream)
        assert all(len(b) == 4 for b in batches)
        assert len(batches) == len(stream) == 5
        counts.append(len(batches))
    assert counts[0] == counts[1]


def test_epochs_differ_and_repeat_from_the_seed(files: str) -> None:
    stream = ShowerStream(files, batch_size=4, window=8, seed=7)
    orders = {}
    for epoch in (0, 1, 0):
        stream.set_epoch(epoch)
        order = np.concatenate(energies_of(stream))
        np.testing.assert_array_equal(np.sort(order), expected_energies("train"))
        if epoch in orders:
            np.testing.assert_array_equal(order, orders[epoch])
        orders[epoch] = order
    assert not np.array_equal(orders[0], orders[1])
    other_seed = ShowerStream(files, batch_size=4, window=8, seed=8)
    assert not np.array_equal(np.concatenate(energies_of(other_seed)), orders[0])


def test_set_epoch_reaches_persistent_workers(files: str) -> None:
    loader = make_loader(files, batch_size=4, window=8, num_workers=2)
    assert loader.persistent_workers
    first = np.concatenate(energies_of(loader))
    loader.dataset.set_epoch(1)  # type: ignore[attr-defined]
    second = np.concatenate(energies_of(loader))
    fresh = make_loader(files, batch_size=4, window=8, num_workers=2)
    fresh.dataset.set_epoch(1)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(second, np.concatenate(energies_of(fresh)))
    assert not np.array_equal(first, second)


def test_shuffle_moves_whole_windows(files: str) -> None:
    stream = ShowerStream(files, batch_size=4, window=8)
    indices = split_indices(N_TOTAL)["train"]
    for epoch in range(3):
        order = stream.epoch_order(epoch)
        window_of = np.searchsorted(indices, order) // 8
        # each window is contiguous in the epoch order: the window id changes once per window
        assert np.count_nonzero(np.diff(window_of)) == len(np.unique(window_of)) - 1
        # the windows come in a shuffled order, and so do the showers within them
        windows = window_of[np.r_[True, np.diff(window_of) != 0]]
        assert not np.array_equal(windows, np.sort(windows))
        assert any((np.diff(order[window_of == w]) < 0).any() for w in windows)


def test_no_shuffle_keeps_file_order(files: str) -> None:
    stream = ShowerStream(files, "validation", batch_size=2, shuffle=False)
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        np.testing.assert_array_equal(
            np.concatenate(energies_of(stream)), expected_energies("validation")
        )


def test_stream_describes_its_conditions(files: str) -> None:
    stream = ShowerStream(files, batch_size=4)
    assert stream.condition_columns == ("energy", "point[0]", "point[1]")
    assert stream.geometry == TINY


def test_stream_opens_files_only_where_it_reads(files: str) -> None:
    stream = ShowerStream(files, batch_size=4)
    assert stream._source is None  # nothing open to be inherited by forked workers
    before = np.concatenate(energies_of(stream))
    assert stream._source is not None
    copy = pickle.loads(pickle.dumps(stream))
    assert copy._source is None
    np.testing.assert_array_equal(np.concatenate(energies_of(copy)), before)
    stream.close()
    copy.close()


def test_stream_rejects_bad_arguments(files: str) -> None:
    with pytest.raises(CaloforgeError, match="unknown split 'training'"):
        ShowerStream(files, "training")
    with pytest.raises(CaloforgeError, match="rank"):
        ShowerStream(files, rank=2, world_size=2)
    with pytest.raises(CaloforgeError, match="batch_size"):
        ShowerStream(files, batch_size=0)
    with pytest.raises(CaloforgeError, match=r"split 'test' .* 0 showers"):
        ShowerStream(files, "test", fractions=(1.0, 0.0, 0.0))
    with pytest.raises(CaloforgeError, match="not enough for one batch"):
        ShowerStream(files, "validation", batch_size=8, drop_last=True)


# --- ShowerDataset ----------------------------------------------------------------------


def test_map_dataset_indexes_the_split(files: str) -> None:
    dataset = ShowerDataset(files, "validation")
    expected = expected_energies("validation")
    assert len(dataset) == len(expected)
    for i in (0, len(dataset) - 1, -1):
        shower, conditions = dataset[i]
        assert shower.shape == TINY.shape and conditions.shape == (3,)
        assert float(conditions[0]) == expected[i]
        assert torch.all(shower == conditions[0])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_map_dataset_with_a_sampler_covers_the_split(files: str, num_workers: int) -> None:
    dataset = ShowerDataset(files, "train")
    loader = DataLoader(
        dataset,
        batch_size=5,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(0)),
        num_workers=num_workers,
    )
    seen = np.concatenate(energies_of(loader))
    np.testing.assert_array_equal(np.sort(seen), expected_energies("train"))
    assert not np.array_equal(seen, expected_energies("train"))


def test_map_dataset_batch_read_keeps_order_and_repeats(files: str) -> None:
    dataset = ShowerDataset(files, "train")
    items = [7, 2, 7, 40]
    got = [float(c[0]) for _, c in dataset.__getitems__(items)]
    assert got == list(expected_energies("train")[items])


def test_ranks_take_slices_of_the_single_process_global_batch(files: str) -> None:
    single = ShowerStream(files, batch_size=8, rank=0, world_size=1, drop_last=True)
    ranks = [
        ShowerStream(files, batch_size=4, rank=r, world_size=2, drop_last=True) for r in (0, 1)
    ]
    global_batches = energies_of(single)
    per_rank = [energies_of(r) for r in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(global_batches)
    for g, a, b in zip(global_batches, *per_rank, strict=True):
        np.testing.assert_array_equal(g, np.concatenate([a, b]))


@pytest.mark.parametrize("workers", [0, 2])
def test_skipping_batches_resumes_the_epoch_exactly(files: str, workers: int) -> None:
    def epoch_batches(skip: int) -> list[np.ndarray]:
        loader = make_loader(files, batch_size=4, seed=3, window=8, num_workers=workers)
        stream = loader.dataset
        stream.set_epoch(2)  # type: ignore[attr-defined]
        stream.set_skip(skip)  # type: ignore[attr-defined]
        return energies_of(loader)

    whole = epoch_batches(0)
    for skip in (1, 3, 4):
        resumed = epoch_batches(skip)
        assert len(resumed) == len(whole) - skip
        for a, b in zip(whole[skip:], resumed, strict=True):
            np.testing.assert_array_equal(a, b)
