"""`caloforge generate` sharded over two CPU processes under torchrun: every rank takes every
second batch, and the merged file is the file one process writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caloforge.cli import main
from caloforge.data.io import open_showers
from caloforge.generation.run import shard_path
from model_files import random_checkpoint

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[2]
# --num-showers: torchrun would take --n for an abbreviation of its own options.
ARGS = ["--num-showers", "10", "--batch-size", "3", "--seed", "4"]  # batches of 3, 3, 3, 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("run"), "wgan-lhcb")


def torchrun(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env["PYTHONPATH"] = str(ROOT / "src")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    done = subprocess.run(
        [*cmd, "-m", "caloforge", "generate", *args], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open_showers(path) as source:
        batch = source.take(np.arange(len(source)))
        return batch.showers, np.asarray(batch.conditions["energy"])


def test_two_ranks_merge_into_the_single_process_file(checkpoint, tmp_path):
    assert (
        main(["generate", "--checkpoint", str(checkpoint), *ARGS, "-o", str(tmp_path / "one.h5")])
        == 0
    )
    torchrun("--checkpoint", str(checkpoint), *ARGS, "-o", str(tmp_path / "two.h5"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "two.h5"]  # parts removed
    (one, e_one), (two, e_two) = read(tmp_path / "one.h5"), read(tmp_path / "two.h5")
    np.testing.assert_array_equal(e_two, e_one)  # the same conditions, in the same order
    assert one.sum() > 0
    # Not bit for bit: the ranks run on one thread, this process on several, and oneDNN sums
    # in another order (cells near zero differ by ~1e-10 GeV, 1e-7 of the largest cell).
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6 * float(one.max()))


def test_without_merge_each_rank_keeps_its_batches(checkpoint, tmp_path):
    single = tmp_path / "single.h5"
    assert main(["generate", "--checkpoint", str(checkpoint), *ARGS, "-o", str(single)]) == 0
    out = tmp_path / "gen.h5"
    torchrun("--checkpoint", str(checkpoint), *ARGS, "--no-merge", "-o", str(out))
    assert not out.exists()
    _, energy = read(single)
    batches = [energy[i : i + 3] for i in range(0, 10, 3)]
    for rank in range(2):  # batches 0 and 2 on rank 0, 1 and 3 on rank 1
        _, part = read(shard_path(out, rank, 2))
        np.testing.assert_array_equal(part, np.concatenate(batches[rank::2]))


def test_each_ranks_share_is_counted_as_the_batches_fall():
    from caloforge.generation.run import _share

    for n in range(0, 30):
        for batch_size in range(1, 7):
            for world in range(1, 4):
                starts = range(0, n, batch_size)
                for rank in range(world):
                    dealt = sum(min(batch_size, n - s) for s in starts[rank::world])
                    assert _share(n, batch_size, rank, world) == dealt, (n, batch_size, rank)
    assert _share(10**14, 256, 1, 2) == 5 * 10**13  # counted, not summed
