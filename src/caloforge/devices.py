"""Which device to run on: names users type, checked with errors that say what is missing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

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
