"""Loss terms of the seed studies, as small functions the training steps compose.

- adversarial BCE with soft labels and label flips (3DGAN, Conv2D GAN);
- MAPE of the primary-energy regression and of the total deposited energy, MAE of the angle
  (3DGAN);
- the cell-intensity spectrum term (3DGAN, variable angle): counts of cells in intensity bins,
  compared by MAPE. Counting is not differentiable, so the counts here are soft: a cell
  belongs to a bin through sigmoids of its distance to the bin edges, which tend to the hard
  counts as the temperature falls and give the generator a gradient;
- the Wasserstein critic loss with gradient penalty (Gulrajani et al. 2017) and the
  regressor term that makes the WGAN conditional (LHCb GAN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional

_EPS = 1e-7

# 3DGAN (variable angle) intensity-bin edges, in the LCD files' cell units (x50 GeV).
BIN_EDGES_LCD = (0.003, 0.008, 0.0125, 0.02, 0.03, 0.05)
LCD_UNITS_PER_GEV = 50.0


def labels(
    n: int,
    real: bool,
    *,
    soft: tuple[float, float] | None,
    flip: float,
    generator: torch.Generator,
    like: Tensor,
) -> Tensor:
    """Discriminator targets: 1/0 (or the soft pair) with a fraction `flip` swapped."""
    high, low = soft if soft is not None else (1.0, 0.0)
    target = torch.full((n,), high if real else low, dtype=like.dtype, device=like.device)
    if flip > 0:
        u = torch.rand(n, generator=generator, device=generator.device).to(like.device)
        target = torch.where(u < flip, (low if real else high) * torch.ones_like(target), target)
    return target


def bce(logits: Tensor, target: Tensor) -> Tensor:
    return functional.binary_cross_entropy_with_logits(logits.float(), target.float())


def mape(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean absolute percentage error, in percent (100 x mean |p - t| / |t|).

    In percent as Keras' `mean_absolute_percentage_error`, the loss the 3DGAN and Conv2D
    recipes were tuned with: their published weights (0.1 on the energy and ECAL terms next
    to 2 on the BCE) assume it. As a fraction, the physics terms would weigh 100x less and
    the generator would barely learn the energy response.
    """
    relative = (prediction.float() - target.float()).abs() / (target.float().abs() + _EPS)
    return 100.0 * relative.mean()


def mae(prediction: Tensor, target: Tensor) -> Tensor:
    return (prediction.float() - target.float()).abs().mean()


def soft_bin_counts(showers: Tensor, edges: Sequence[float], temperature: float = 0.1) -> Tensor:
    """(n, len(edges) + 2) soft counts of cells per intensity bin: exactly zero, (0, e1),
    [e1, e2), ..., [e_last, inf). `edges` are ascending, in the showers' (preprocessed) units;
    each sigmoid's width is `temperature` times its edge."""
    x = showers.float().reshape(len(showers), -1)
    above = [torch.sigmoid((x - e) / (temperature * e)).sum(dim=1) for e in edges]
    # "Exactly zero" made soft: within a hundredth of the lowest edge.
    e0 = edges[0] / 100.0
    nonzero = torch.sigmoid((x - e0) / (temperature * e0)).sum(dim=1)
    n = torch.full_like(nonzero, x.shape[1])
    cumulative = torch.stack([n, nonzero, *above], dim=1)  # cells above each threshold
    return torch.cat([cumulative[:, :-1] - cumulative[:, 1:], cumulative[:, -1:]], dim=1)


def wasserstein_critic_loss(real_score: Tensor, fake_score: Tensor) -> Tensor:
    return fake_score.float().mean() - real_score.float().mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator: torch.Generator
) -> Tensor:
    """E[(||grad critic(x_hat)|| - 1)^2] on random interpolates of real and fake showers.

    `torch.autograd.grad(create_graph=True)` keeps the penalty differentiable; the caller's
    ordinary backward then reaches the parameters once (as DDP requires).
    """
    shape = (len(real),) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=generator, device=generator.device).to(real)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(x_hat)
    (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    return ((grad.reshape(len(grad), -1).norm(dim=1) - 1.0) ** 2).mean()
