"""Shower sets as PyTorch datasets: seeded splits, a streaming loader for training, a map view.

`split_indices` cuts a set into train / validation / test once, from a seed, so every run and
every rank agrees on which shower belongs where. `ShowerStream` is what training iterates: it
reads a split in windows of neighbouring showers (one HDF5 access each), shuffles per epoch
and deals the work to DDP ranks and DataLoader workers so that each shower is seen once per
epoch and every rank takes the same number of steps. `ShowerDataset` is the map-style view of
a split, one shower per index, for users who bring their own sampler.

Both yield `(showers, conditions)` as float32 tensors: showers `(*geometry.shape)` in GeV per
cell, conditions `(n_condition_values,)`, the geometry's conditions in their order, each
flattened (lhcb-30: energy GeV, px py pz GeV, x y mm). Files are opened lazily in the process
that reads them: h5py handles must not cross a fork into DataLoader workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from caloforge.data.io import expand_paths, open_showers
from caloforge.data.source import Batch, ShowerSource
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)

Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def split_indices(
    n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, np.ndarray]:
    """Cut `range(n)` into train / validation / test, each part sorted.

    A permutation drawn from `seed` is cut at the cumulative `fractions` (rounded to whole
    showers), so the parts are disjoint, together hold every index, and depend only on
    `(n, fractions, seed)`.
    """
    fractions = _check_fractions(fractions)
    if n < 0:
        raise CaloforgeError(f"cannot split {n} showers; expected n >= 0")
    permutation = np.random.default_rng(seed).permutation(n)
    bounds = np.rint(np.cumsum(fractions) * n).astype(np.int64)
    bounds[-1] = n  # the sum is 1 only to rounding: the last part takes the rest
    starts = np.concatenate([[0], bounds[:-1]])
    return {
        name: np.sort(permutation[lo:hi])
        for name, lo, hi in zip(SPLITS, starts, bounds, strict=True)
    }


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) != len(SPLITS):
        raise CaloforgeError(
            f"split fractions must be 3 values for {', '.join(SPLITS)}, got {list(fractions)}"
        )
    if not all(math.isfinite(f) and f >= 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise CaloforgeError(
            f"split fractions must be non-negative and sum to 1, got {list(values)} "
            f"(sum {sum(values):g})"
        )
    return values[0], values[1], values[2]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise CaloforgeError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")


def condition_matrix(conditions: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Conditions as one float32 `(n, n_condition_values)` array, in the order of `names`."""
    columns = [np.asarray(conditions[name]) for name in names]
    n = len(columns[0]) if columns else 0
    return np.concatenate([c.reshape(n, -1) for c in columns], axis=1).astype(np.float32)


class _LazySplit:
    """The part of a dataset shared by the stream and the map view: the files, the split and a
    source opened on first use in the process that reads."""

    def __init__(
        self,
        paths: Paths,
        split: str,
        fractions: Sequence[float],
        split_seed: int,
        format: str | None,
    ) -> None:
        _check_split(split)
        self.paths = expand_paths(paths)  # expanded once: every worker reads the same files
        self.split = split
        self.fractions = _check_fractions(fractions)
        self.split_seed = split_seed
        self.format = format
        # Opened and closed here to learn the size and geometry (and to fail early on a bad
        # file); nothing is left open to be inherited by forked workers.
        with closing(open_showers(self.paths, format)) as source:
            self.geometry: Geometry = source.geometry
            self.n_total = len(source)
        self.indices = split_indices(self.n_total, self.fractions, split_seed)[split]
        self._source: ShowerSource | None = None
        self._pid = -1

    @property
    def condition_names(self) -> tuple[str, ...]:
        return self.geometry.condition_names

    @property
    def condition_columns(self) -> tuple[str, ...]:
        """One name per column of the conditions tensor, e.g. `momentum[2]`."""
        return tuple(
            c.name if c.size == 1 else f"{c.name}[{i}]"
            for c in self.geometry.conditions
            for i in range(c.size)
        )

    @property
    def source(self) -> ShowerSource:
        # A handle opened by another process (the parent before a fork) is not ours to use.
        if self._source is None or self._pid != os.getpid():
            self._source = open_showers(self.paths, self.format)
            self._pid = os.getpid()
        return self._source

    def _read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Showers and condition rows at `indices` (any order, repeats allowed), one read."""
        unique, inverse = np.unique(indices, return_inverse=True)
        batch: Batch = self.source.take(unique)
        conditions = condition_matrix(batch.conditions, self.condition_names)
        return batch.showers[inverse], conditions[inverse]

    def close(self) -> None:
        if self._source is not None and self._pid == os.getpid():
            self._source.close()
        self._source = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_source"], state["_pid"] = None, -1
        return state


class ShowerStream(_LazySplit, IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """One split of a shower set, streamed as shuffled batches; the dataset training iterates.

    Yields `(showers, conditions)`: float32 tensors `(B, *geometry.shape)` (GeV per cell) and
    `(B, n_condition_values)` (see `condition_columns`). Use it with
    `DataLoader(stream, batch_size=None)`, or `make_loader`.

    Each epoch (call `set_epoch(e)` before iterating, as with `DistributedSampler`; the value
    reaches persistent workers) the split's sorted indices, cut into windows of `window`
    showers, are put in an order drawn from `(seed, epoch)`: the windows are shuffled, then
    the showers within each window. Neighbouring showers are read together, so one HDF5
    access serves about `window` showers while the batches still mix many windows per epoch.

    The epoch order is dealt to the ranks by global batch (rank r takes the r-th slice of
    each `world_size * batch_size` showers), dropping at most `world_size - 1` showers (the
    tail of that epoch's order, so a different few each epoch) so that every rank takes the
    same number of steps, as DDP needs, and a step on several ranks sees the showers one
    process with the global batch would. A rank's batches (`drop_last` drops its last short
    one) are grouped into reads of about `window` showers, dealt round-robin to the
    DataLoader workers. Without DDP and with `drop_last=False`, every shower of the split is yielded
    exactly once per epoch.

    `rank` and `world_size` default to those of `torch.distributed` if it is initialised when
    the stream is built (build it after `init_process_group`), else 0 and 1. `split_seed`
    chooses the split and is kept apart from `seed`, so changing the training seed does not
    move showers between train and test.
    """

    def __init__(
        self,
        paths: Paths,
        split: str = "train",
        *,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        seed: int = 0,
        split_seed: int = 0,
        batch_size: int = 64,
        window: int = 256,
        shuffle: bool = True,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        format: str | None = None,
    ) -> None:
        if batch_size < 1 or window < 1:
            raise CaloforgeError(
                f"batch_size and window must be >= 1, got batch_size={batch_size}, window={window}"
            )
        if rank is None or world_size is None:
            default_rank, default_world = _distributed_rank()
            rank = default_rank if rank is None else rank
            world_size = default_world if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise CaloforgeError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        super().__init__(paths, split, fractions, split_seed, format)
        self.seed = seed
        self.batch_size = batch_size
        self.window = window
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        # Shared memory, so that set_epoch in the main process reaches persistent workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._skip = torch.zeros((), dtype=torch.int64).share_memory_()
        if len(self) == 0:
            raise CaloforgeError(
                f"split '{split}' of {', '.join(map(str, self.paths))} has "
                f"{len(self.indices)} showers: not enough for one batch of {batch_size} on "
                f"each of {world_size} rank(s) (fractions {list(self.fractions)})"
            )

    # --- epoch plan (the same on every rank and worker) -----------------------------------
    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` from its first batch."""
        self._epoch.fill_(int(epoch))
        self._skip.fill_(0)

    @property
    def showers_per_rank(self) -> int:
        """Showers one rank yields per epoch."""
        n = len(self.indices) // self.world_size
        return n - n % self.batch_size if self.drop_last else n

    def __len__(self) -> int:
        """Batches one rank yields per epoch (the number of DDP steps)."""
        return -(-self.showers_per_rank // self.batch_size)

    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """The split's indices in the order of `epoch` (default: the current one)."""
        if not self.shuffle:
            return self.indices.copy()
        epoch = self.epoch if epoch is None else epoch
        windows = [
            self.indices[lo : lo + self.window] for lo in range(0, len(self.indices), self.window)
        ]
        rng = np.random.default_rng((self.seed, epoch))
        return np.concatenate([rng.permutation(windows[w]) for w in rng.permutation(len(windows))])

    def rank_order(self, epoch: int | None = None) -> np.ndarray:
        """The indices this rank yields in `epoch`, in batch order.

        The epoch order is cut into global batches of `world_size * batch_size` showers and
        rank r takes the r-th slice of each, so that a step on `world_size` ranks sees the
        same showers as one process with the global batch would (a short last global batch
        is shared equally).
        """
        order = self.epoch_order(epoch)
        B, W = self.batch_size, self.world_size
        per_rank = len(self.indices) // W
        n_full = per_rank // B
        full = order[: n_full * B * W].reshape(n_full, W, B)[:, self.rank, :].reshape(-1)
        tail = order[n_full * B * W : per_rank * W]
        share = len(tail) // W
        rest = tail[self.rank * share : (self.rank + 1) * share]
        return np.concatenate([full, rest])[: self.showers_per_rank]

    def set_skip(self, batches: int) -> None:
        """Skip the first `batches` batches of the current epoch (resuming mid-epoch); the
        batches that follow are exactly those an uninterrupted epoch would have yielded."""
        self._skip.fill_(int(batches))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.rank_order()
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        # The DataLoader takes batches from its workers in turn, starting with worker 0: its
        # j-th batch is worker (j % n_workers)'s (j // n_workers)-th. To yield the batches k,
        # k+1, ... of an uninterrupted epoch, worker w plays the part of worker
        # (w + k) % n_workers and skips the first (w + k) // n_workers batches of that part.
        k = int(self._skip.item())
        role, skip = (worker + k) % n_workers, (worker + k) // n_workers
        per_read = max(1, self.window // self.batch_size) * self.batch_size
        seen = 0
        for lo in range(role * per_read, len(order), n_workers * per_read):
            group = order[lo : lo + per_read]
            n_batches = -(-len(group) // self.batch_size)
            if seen + n_batches <= skip:
                seen += n_batches
                continue
            showers, conditions = self._read(group)
            for b in range(0, len(showers), self.batch_size):
                seen += 1
                if seen <= skip:
                    continue
                yield (
                    torch.from_numpy(showers[b : b + self.batch_size]),
                    torch.from_numpy(conditions[b : b + self.batch_size]),
                )


class ShowerDataset(_LazySplit, Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """One split of a shower set, one shower per index, for use with any sampler.

    `dataset[i]` is `(shower, conditions)`: float32 tensors `(*geometry.shape)` (GeV per cell)
    and `(n_condition_values,)` of the i-th shower of the split (in file order). A DataLoader
    with automatic batching fetches a whole batch with one read (`__getitems__`). Prefer
    `ShowerStream` for training: random single-shower reads are slow on compressed files.
    """

    def __init__(
        self,
        paths: Paths,
        split: str = "train",
        *,
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        split_seed: int = 0,
        format: str | None = None,
    ) -> None:
        super().__init__(paths, split, fractions, split_seed, format)

    def __len__(self) -> int:
        return len(self.indices)

    def _positions(self, items: Sequence[int]) -> np.ndarray:
        items_array = np.asarray(items, dtype=np.int64)
        n = len(self.indices)
        if ((items_array < -n) | (items_array >= n)).any():
            raise IndexError(f"index out of range for split '{self.split}' of {n} showers")
        return self.indices[items_array]

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        showers, conditions = self._read(self._positions([item]))
        return torch.from_numpy(showers[0]), torch.from_numpy(conditions[0])

    def __getitems__(self, items: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        showers, conditions = self._read(self._positions(items))
        return [
            (torch.from_numpy(s), torch.from_numpy(c))
            for s, c in zip(showers, conditions, strict=True)
        ]


def make_loader(
    paths: Paths,
    split: str = "train",
    batch_size: int = 64,
    seed: int = 0,
    num_workers: int = 0,
    *,
    pin_memory: bool = False,
    **kwargs: Any,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """A DataLoader over a `ShowerStream` of one split; `kwargs` go to `ShowerStream`.

    Call `loader.dataset.set_epoch(epoch)` before each epoch. Workers persist across epochs
    (they keep their open files); validation and test splits are not shuffled unless
    `shuffle=True` is given.
    """
    kwargs.setdefault("shuffle", split == "train")
    stream = ShowerStream(paths, split, batch_size=batch_size, seed=seed, **kwargs)
    return DataLoader(
        stream,
        batch_size=None,  # the stream yields whole batches
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


def _distributed_rank() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
