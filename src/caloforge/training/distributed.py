"""Data parallelism, applied from outside the models (they stay single-device code).

The same `caloforge train` runs as one process or under `torchrun`
(`caloforge.devices.init_distributed` joins the process group); each model is wrapped in DDP
here. Rank 0 alone writes logs and checkpoints.

BatchNorm statistics can be synchronised over the ranks so that a step on N ranks equals a
step of one process with the global batch: torch's SyncBatchNorm on GPUs, and on CPUs (where
torch's refuses to run) `SyncedBatchNorm` here, which all-reduces the sums with autograd.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from caloforge.devices import Distributed


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient is summed over the ranks too."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    result: Tensor = _AllReduceSum.apply(tensor)
    return result


class SyncedBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch over all ranks.

    Mean and variance come from all-reduced sums (differentiable: the backward pass is
    synchronised too),
    in two passes: the mean first, then the sum of squared deviations from it, which keeps the
    variance exact where E[x^2] - E[x]^2 would cancel in float32.
    Outside training, or in a single process, it is an ordinary BatchNorm.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        if not (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size() > 1
        ):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        c = input.shape[1]
        shape = [1, c] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() / c], dtype=input.dtype, device=input.device)
        sums = all_reduce_sum(torch.cat([input.sum(dims), count]))
        n = sums[-1]
        mean = sums[:c] / n
        centred = input - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                unbiased = var * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * unbiased)
                self.num_batches_tracked.add_(1)
        out = centred / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def synchronise_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of `module` by its synchronised version (weights kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncedBatchNorm):
        new = SyncedBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module


def wrap_ddp(module: nn.Module, context: Distributed) -> nn.Module:
    """DDP around one model (the generator and the discriminator are wrapped separately).

    No buffer broadcast at each forward: the discriminator runs twice (real, fake) before
    one backward, and a broadcast between the two would overwrite BatchNorm statistics in
    place. torch 2.13 names that `forward_sync_buffers=False` (and warns at the older
    `broadcast_buffers=False`, which also skipped the sync at construction; every rank
    builds the same buffers, so that sync changes nothing).
    """
    if not context.enabled:
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    accepted = inspect.signature(DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in accepted:
        return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)
