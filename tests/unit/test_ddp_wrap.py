"""`wrap_ddp`: DDP that leaves buffers alone at each forward, without torch's deprecation
warning (a user saw it in every `train --processes` run)."""

from __future__ import annotations

import socket
import warnings

import pytest
import torch
import torch.distributed as dist
from torch import nn

from caloforge.devices import Distributed
from caloforge.training.distributed import wrap_ddp


@pytest.fixture
def one_rank_group(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_skips_the_buffer_sync_at_forward_and_warns_nothing(one_rank_group) -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = wrap_ddp(model, Distributed(world_size=2))
        wrapped(torch.randn(8, 3))
    assert isinstance(wrapped, nn.parallel.DistributedDataParallel)
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    syncs = getattr(wrapped, "forward_sync_buffers", None)
    assert (syncs if syncs is not None else wrapped.broadcast_buffers) is False


def test_one_process_is_left_unwrapped() -> None:
    model = nn.Linear(3, 4)
    assert wrap_ddp(model, Distributed()) is model
