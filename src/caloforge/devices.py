"""Where a process runs: the device names users type (checked with errors that say what is
missing), and its place among the processes `torchrun` started.

The same `caloforge train` and `caloforge generate` run as one process or under `torchrun`,
which sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR/PORT, or a rendezvous for several
nodes): `init_distributed` joins the process group (nccl on GPUs, gloo on CPUs) and says which
rank this process is and which device it uses.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from caloforge.errors import CaloforgeError

DEVICES = "cpu, cuda, cuda:N or auto"


def resolve_device(device: str | torch.device = "cpu", local_rank: int = 0) -> torch.device:
    """`device` as a `torch.device`: "cpu", "cuda", "cuda:N", or "auto" (cuda if available).

    Raises `CaloforgeError` for an unknown name, or a CUDA device this machine lacks,
    saying what is missing (a CUDA build of PyTorch, a visible GPU, or the N-th GPU).
    A bare "cuda" (or "auto" on a GPU machine) under torchrun means this process's GPU,
    `local_rank` modulo the number of visible GPUs.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        raise CaloforgeError(f"unknown device '{device}'; use {DEVICES}") from None
    if found.type == "cpu":
        return torch.device("cpu")
    if found.type != "cuda":
        raise CaloforgeError(f"unsupported device '{device}'; use {DEVICES}")
    if torch.version.cuda is None:
        raise CaloforgeError(
            f"device '{device}' requested, but this PyTorch ({torch.__version__}) is built "
            "without CUDA support; install a CUDA build of PyTorch or use --device cpu"
        )
    if not torch.cuda.is_available():
        raise CaloforgeError(
            f"device '{device}' requested, but no CUDA GPU is visible (no GPU, no driver, or "
            "CUDA_VISIBLE_DEVICES hides them); use --device cpu"
        )
    count = torch.cuda.device_count()
    if found.index is None:
        return torch.device("cuda", local_rank % count)
    if found.index >= count:
        raise CaloforgeError(
            f"device '{device}' requested, but only {count} CUDA GPU(s) are visible "
            f"(cuda:0 to cuda:{count - 1})"
        )
    return found


def tune_for_fixed_shapes(device: torch.device) -> None:
    """On a GPU, let cuDNN time its algorithms once per convolution shape and keep the fastest.

    Training and generation repeat the same shapes batch after batch, so the one-off search
    pays back at once; without it cuDNN's heuristics pick kernels several times slower for
    some of the 3DGAN's odd-sized 3D kernels. Process-wide (a cuDNN setting), no-op on CPU.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """cuDNN convolutions in full fp32 inside the block (PyTorch lets them use TF32, whose
    10-bit mantissa moves cell energies by ~1e-3, by default); the other flags are kept."""
    cudnn = torch.backends.cudnn
    with cudnn.flags(
        enabled=cudnn.enabled,
        benchmark=cudnn.benchmark,
        deterministic=cudnn.deterministic,
        allow_tf32=False,
    ):
        yield


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: rank, world size and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self, name: str) -> None:
        """Wait for every rank (`name` says what for, for whoever reads a hang's stack)."""
        if self.enabled:
            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, known to every rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.broadcast(t, src=0)
        return bool(t.item() > 0.5)

    def mean(self, value: float) -> float:
        """The mean of a number over the ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


def init_distributed(device: str = "auto") -> Distributed:
    """Join the process group if launched by torchrun, else a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return Distributed(rank, local_rank, world_size, resolved)


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
