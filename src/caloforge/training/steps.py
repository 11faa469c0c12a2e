"""One training step of each kind of model: the adversarial GANs with physics heads
(3DGAN, Conv2D GAN), the WGAN-GP with a condition regressor (LHCb GAN) and flow matching
(flow-match), whose generator is trained alone.

Each model family names its step (`ModelConfig.training_step`, a key of `STEPS`), and
`make_step` builds it for a model: the trainer never asks which family it trains. A step gets
a batch of real showers (already preprocessed, on the device) with their conditions, updates
the discriminator/critic and, as the recipe says, the generator, and returns the loss values
as floats; a step that needs a model trained first (the WGAN's condition regressor) does
that in `pretrain`. Noise and labels are drawn for the *global* batch from a
generator seeded alike on every rank, each rank taking its slice: a step on N ranks is then
the same computation as one process with the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from caloforge.data.transforms import Transform
from caloforge.devices import Distributed
from caloforge.models import ModelBundle
from caloforge.training import losses
from caloforge.training.config import TrainConfig, TrainConfigError
from caloforge.training.distributed import wrap_ddp

if TYPE_CHECKING:
    from caloforge.models.flow_match import FlowMatchGenerator
    from caloforge.training.physics_check import PhysicsCheck

__all__ = [
    "STEPS",
    "FlowMatchStep",
    "GanStep",
    "Step",
    "StepContext",
    "StepModels",
    "WganStep",
    "make_step",
]

Conditions = Mapping[str, Tensor]


@dataclass
class StepModels:
    """The modules a step updates: wrapped (DDP, for the update) and plain (as a fixed partner).
    A family trained without a discriminator or critic (flow matching) has None for it and
    its optimizer."""

    generator: nn.Module
    discriminator: nn.Module | None
    generator_plain: nn.Module
    discriminator_plain: nn.Module | None
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer | None
    regressor: nn.Module | None = None

    def adversary(self) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
        """(discriminator wrapped, plain, its optimizer) of an adversarial family."""
        d, d_plain, optimizer = self.discriminator, self.discriminator_plain, self.optimizer_d
        if d is None or d_plain is None or optimizer is None:
            raise ValueError("this step needs a discriminator or critic; the model has none")
        return d, d_plain, optimizer


@dataclass(frozen=True)
class StepContext:
    """What every step needs: the models, the recipe, the ranks, the shared random generator
    (noise, labels) and the autocast context of the run's precision."""

    models: StepModels
    config: TrainConfig
    distributed: Distributed
    rng: torch.Generator
    autocast: Callable[[], AbstractContextManager[None]]


class Step:
    """One training step of a model family: `step(real, conditions) -> losses`."""

    def __init__(self, ctx: StepContext) -> None:
        self.m = ctx.models
        self.config = ctx.config
        self.loss = ctx.config.loss
        self.context = ctx.distributed
        self.rng = ctx.rng
        self.autocast = ctx.autocast
        self.count = 0  # steps taken: decides which steps update the generator

    def _slice(self, n: int) -> slice:
        start = self.context.rank * n
        return slice(start, start + n)

    def noise(self, n: int) -> Tensor:
        """This rank's slice of noise drawn for the global batch."""
        g = self.m.generator_plain
        full = g.sample_noise(n * self.context.world_size, self.rng)  # type: ignore[operator]
        return full[self._slice(n)]

    def labels(self, n: int, real: bool, like: Tensor) -> Tensor:
        full = losses.labels(
            n * self.context.world_size,
            real,
            soft=self.loss.soft_labels,
            flip=self.loss.label_flip,
            generator=self.rng,
            like=like,
        )
        return full[self._slice(n)]

    @classmethod
    def for_model(cls, ctx: StepContext, bundle: ModelBundle, transform: Transform) -> Step:
        """The step for `bundle`'s model, trained on showers preprocessed by `transform`."""
        raise NotImplementedError

    @property
    def cycle(self) -> int:
        """Steps per generator update cycle (what a timing of whole cycles counts)."""
        return 1

    def pretrain(
        self,
        epoch_batches: Callable[[int], Iterable[tuple[Tensor, Conditions]]],
        log: Callable[[dict[str, Any]], None],
    ) -> bool:
        """Train what must be trained before the GAN (nothing here); True if something was.

        epoch_batches(epoch): the batches of one pass over the training data, shuffled for
        `epoch`; log: a record for the run's metrics."""
        return False

    def pretrain_status(self) -> str | None:
        """What `pretrain` will do, in a few words for a status line; None: nothing."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of the step (the trainer's checkpoint keeps it)."""
        return {"step_count": self.count, "last_g": {}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = state["step_count"]

    def after_check(self, check: PhysicsCheck | None, step: int) -> dict[str, Any] | None:
        """Act on the physics check just made at `step` (rank 0's; None on the others; every
        rank calls this). A record for the run's metrics if the step changed something."""
        return None

    def __call__(self, real: Tensor, conditions: Conditions) -> dict[str, float]:
        raise NotImplementedError


def _frozen(module: nn.Module) -> AbstractContextManager[None]:
    """Parameters of `module` excluded from autograd for the block (a fixed partner)."""

    class _Freeze(AbstractContextManager[None]):
        def __enter__(self) -> None:
            self.flags = [p.requires_grad for p in module.parameters()]
            for p in module.parameters():
                p.requires_grad_(False)

        def __exit__(self, *exc: object) -> None:
            for p, flag in zip(module.parameters(), self.flags, strict=True):
                p.requires_grad_(flag)

    return _Freeze()


class GanStep(Step):
    """3DGAN / Conv2D GAN: one discriminator update on a real and a fake batch, then
    `generator_steps` generator updates. Fakes reuse the real batch's conditions, and the
    measured heads (total energy, angle, intensity spectrum) take the real showers' values
    as their targets."""

    def __init__(
        self, ctx: StepContext, *, energy_scale: float, bin_edges: tuple[float, ...] | None
    ) -> None:
        super().__init__(ctx)
        self.energy_scale = energy_scale
        self.bin_edges = bin_edges

    @classmethod
    def for_model(cls, ctx: StepContext, bundle: ModelBundle, transform: Transform) -> GanStep:
        """The energy head's scale is the model's; the intensity-spectrum term's bin edges are
        the LCD edges in the preprocessed units `transform` gives."""
        edges = None
        if ctx.config.loss.bins > 0:
            gev = [e / losses.LCD_UNITS_PER_GEV for e in losses.BIN_EDGES_LCD]
            edges = tuple(float(transform.forward(np.array(e))) for e in gev)
        scale = float(getattr(bundle.config, "energy_scale", 100.0))
        return cls(ctx, energy_scale=scale, bin_edges=edges)

    def __call__(self, real: Tensor, conditions: Conditions) -> dict[str, float]:
        m, w = self.m, self.loss
        discriminator, discriminator_plain, optimizer_d = m.adversary()
        n = len(real)
        energy = conditions["energy"] / self.energy_scale
        with torch.no_grad(), self.autocast():
            fake = m.generator_plain(self.noise(n), conditions)
        with self.autocast():
            out_real = discriminator(real)
            out_fake = discriminator(fake.detach())
            adversarial = 0.5 * (
                losses.bce(out_real.logit, self.labels(n, True, real))
                + losses.bce(out_fake.logit, self.labels(n, False, real))
            )
            aux = 0.5 * (
                losses.mape(out_real.energy, energy) + losses.mape(out_fake.energy, energy)
            )
            loss_d = w.adversarial * adversarial + w.energy * aux
        optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer_d.step()

        ecal_target = out_real.ecal.detach().float()
        theta_target = getattr(out_real, "theta", None)
        bins_target = None
        if w.bins > 0 and self.bin_edges is not None:
            bins_target = losses.soft_bin_counts(real, self.bin_edges).detach()
        result = {
            "loss_d": float(loss_d.detach()),
            "d_adversarial": float(adversarial.detach()),
            "d_energy": float(aux.detach()),
        }
        with _frozen(discriminator_plain):
            for _ in range(self.config.generator_steps):
                with self.autocast():
                    fake = m.generator(self.noise(n), conditions)
                    out = discriminator_plain(fake)
                    ones = torch.ones(n, device=real.device)
                    terms = {
                        "g_adversarial": losses.bce(out.logit, ones),
                        "g_energy": losses.mape(out.energy, energy),
                        "g_ecal": losses.mape(out.ecal, ecal_target),
                    }
                    loss_g = (
                        w.adversarial * terms["g_adversarial"]
                        + w.energy * terms["g_energy"]
                        + w.ecal * terms["g_ecal"]
                    )
                    if w.angle > 0 and theta_target is not None:
                        terms["g_angle"] = losses.mae(out.theta, theta_target.detach())
                        loss_g = loss_g + w.angle * terms["g_angle"]
                    if bins_target is not None:
                        terms["g_bins"] = losses.mape(
                            losses.soft_bin_counts(fake, self.bin_edges or ()), bins_target
                        )
                        loss_g = loss_g + w.bins * terms["g_bins"]
                m.optimizer_g.zero_grad(set_to_none=True)
                loss_g.backward()
                m.optimizer_g.step()
        result["loss_g"] = float(loss_g.detach())
        result.update({k: float(v.detach()) for k, v in terms.items()})
        self.count += 1
        return result


class WganStep(Step):
    """WGAN-GP (LHCb GAN): a critic update every step, a generator update every
    `critic_steps` steps, whose loss adds the frozen pretrained regressor's error on the
    generated showers' conditions: what makes the Wasserstein GAN conditional."""

    def __init__(self, ctx: StepContext, *, encode: Callable[[Conditions, Tensor], Tensor]) -> None:
        super().__init__(ctx)
        self.encode = encode
        self.last_g: dict[str, float] = {}

    @classmethod
    def for_model(cls, ctx: StepContext, bundle: ModelBundle, transform: Transform) -> WganStep:
        """The regressor's targets are the model's encoding of the conditions."""
        from caloforge.models.wgan_lhcb import WganLhcbConfig, encode_conditions

        config = bundle.config
        assert isinstance(config, WganLhcbConfig)
        return cls(ctx, encode=lambda c, like: encode_conditions(c, config, like))

    @property
    def cycle(self) -> int:
        return self.config.critic_steps

    def pretrain_status(self) -> str | None:
        if self.m.regressor is None or self.config.regressor_epochs == 0:
            return None
        passes = self.config.regressor_epochs
        return f"training the condition regressor first ({passes} passes over the training data)"

    def pretrain(
        self,
        epoch_batches: Callable[[int], Iterable[tuple[Tensor, Conditions]]],
        log: Callable[[dict[str, Any]], None],
    ) -> bool:
        """The condition regressor learns the conditions from real showers first
        (`regressor_epochs` passes, mean squared error, Adam at the critic's rate)."""
        regressor = self.m.regressor
        if regressor is None or self.config.regressor_epochs == 0:
            return False
        wrapped = wrap_ddp(regressor, self.context)
        optimizer = torch.optim.Adam(
            regressor.parameters(), lr=self.config.optimizer.lr_discriminator
        )
        for epoch in range(self.config.regressor_epochs):
            total, count = 0.0, 0
            for showers, cond in epoch_batches(10_000 + epoch):
                target = self.encode(cond, showers)
                loss = functional.mse_loss(wrapped(showers).as_vector(), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + float(loss.detach()), count + 1
            log(
                {
                    "event": "regressor",
                    "step": 0,
                    "epoch": epoch,
                    "regressor_mse": self.context.mean(total / max(count, 1)),
                }
            )
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.count, "last_g": dict(self.last_g)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = state["step_count"]
        self.last_g = dict(state.get("last_g", {}))

    def __call__(self, real: Tensor, conditions: Conditions) -> dict[str, float]:
        m, w = self.m, self.loss
        critic, critic_plain, optimizer_d = m.adversary()
        n = len(real)
        with torch.no_grad(), self.autocast():
            fake = m.generator_plain(self.noise(n), conditions)
        with self.autocast():
            critic_loss = losses.wasserstein_critic_loss(critic(real).score, critic(fake).score)
        penalty = losses.gradient_penalty(lambda x: critic(x).score, real, fake, self._slice_rng(n))
        loss_d = w.adversarial * critic_loss + w.gradient_penalty * penalty
        optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer_d.step()
        result = {
            "loss_d": float(loss_d.detach()),
            "d_wasserstein": float(-critic_loss.detach()),
            "d_penalty": float(penalty.detach()),
        }
        self.count += 1
        if self.count % self.config.critic_steps == 0:
            assert m.regressor is not None
            with _frozen(critic_plain), _frozen(m.regressor), self.autocast():
                fake = m.generator(self.noise(n), conditions)
                score = critic_plain(fake).score.float().mean()
                target = self.encode(conditions, fake)
                regression = functional.mse_loss(
                    m.regressor(fake).as_vector().float(), target.float()
                )
                loss_g = -w.adversarial * score + w.regressor * regression
            m.optimizer_g.zero_grad(set_to_none=True)
            loss_g.backward()
            m.optimizer_g.step()
            self.last_g = {
                "loss_g": float(loss_g.detach()),
                "g_regression": float(regression.detach()),
            }
        result.update(self.last_g)
        return result

    def _slice_rng(self, n: int) -> torch.Generator:
        """The interpolation weights of the penalty, drawn for the global batch: advance the
        shared generator past the other ranks' share and return it for this rank's."""
        if self.context.world_size == 1:
            return self.rng
        before = self.context.rank * n
        after = (self.context.world_size - self.context.rank - 1) * n
        if before:
            torch.rand(before, generator=self.rng, device=self.rng.device)
        state = self.rng.get_state()
        torch.rand(n, generator=self.rng, device=self.rng.device)
        if after:
            torch.rand(after, generator=self.rng, device=self.rng.device)
        g = torch.Generator(device=self.rng.device)
        g.set_state(state)
        return g


class FlowMatchStep(Step):
    """Flow matching (flow-match): the generator alone, on the sum of its stages' losses.

    The generator's own `forward(noise, conditions, showers, draws)` returns the losses (so
    DDP sees the computation), noise and draws (flow times, dequantisation) made for the
    global batch; after each update the generator's EMA weights follow. `pretrain` fits the
    generator's preprocessing statistics on the first `fit_showers` training showers (summed
    over the ranks), once per run: a resumed run loads them with the weights.

    With `training.shape_patience` P > 0, stage 2 stops where its cells were best: the step
    keeps the stage-2 weights of the physics check with the smallest layer-width error so
    far, and after P checks in a row without a smaller one puts them back and freezes stage
    2 (`freeze_shape`); stage 1 trains on, alone. The two stages have disjoint weights and
    stage 2 trains on the true layer energies, so neither needs the other's best step; on
    Geant4 clic-25 the layer energies improved to the end while the cell shapes were best
    at a third of the run and narrowed after (benchmarks/flow_match.md). The kept weights
    travel in the trainer state, so a resumed run decides as the uninterrupted one.
    """

    def __init__(self, ctx: StepContext) -> None:
        super().__init__(ctx)
        self.patience = ctx.config.shape_patience
        self.best_width = math.inf
        self.best_step = 0
        self.misses = 0  # checks in a row without a better width
        self.frozen_at: int | None = None  # the check's step that froze stage 2
        self.best_shape: dict[str, dict[str, Tensor]] | None = None

    @classmethod
    def for_model(
        cls, ctx: StepContext, bundle: ModelBundle, transform: Transform
    ) -> FlowMatchStep:
        if transform.to_dict().get("name") != "identity":
            raise ValueError(
                "flow-match preprocesses the showers itself: use transform {name: identity}, "
                f"got {transform.to_dict()}"
            )
        return cls(ctx)

    def pretrain_status(self) -> str | None:
        if getattr(self.m.generator_plain, "fit_preprocessing", None) is None:
            return None
        return "fitting the preprocessing to the training data (one pass)"

    def pretrain(
        self,
        epoch_batches: Callable[[int], Iterable[tuple[Tensor, Conditions]]],
        log: Callable[[dict[str, Any]], None],
    ) -> bool:
        g = self.m.generator_plain
        fit = getattr(g, "fit_preprocessing", None)
        if fit is None:
            return False
        record = fit(epoch_batches(20_000), self.context)
        log({"event": "preprocessing", "step": 0, **record})
        return True

    def __call__(self, real: Tensor, conditions: Conditions) -> dict[str, float]:
        m = self.m
        n = len(real)
        world = self.context.world_size
        draws = m.generator_plain.sample_draws(n * world, self.rng)  # type: ignore[operator]
        draws = draws[self._slice(n)].to(real.device, real.dtype)
        with self.autocast():
            terms = m.generator(self.noise(n), conditions, real, draws).float()
            loss = terms.sum()
        m.optimizer_g.zero_grad(set_to_none=True)
        loss.backward()
        m.optimizer_g.step()
        m.generator_plain.update_ema()  # type: ignore[operator]
        self.count += 1
        return {
            "loss_g": float(loss.detach()),
            "fm_energy": float(terms[0].detach()),
            "fm_shape": float(terms[1].detach()),
        }

    def after_check(self, check: PhysicsCheck | None, step: int) -> dict[str, Any] | None:
        if self.patience == 0 or self.frozen_at is not None:
            return None
        better = check is not None and not check.collapsed and check.width_error < self.best_width
        if self.context.broadcast_flag(better):  # rank 0 checks; every rank keeps its weights
            self.best_width = math.inf if check is None else check.width_error
            self.best_step, self.misses = step, 0
            g = self._generator
            self.best_shape = {
                "net": _copy(g.shape_net.state_dict()),
                "ema": _copy(g.ema["shape_net"].state_dict()),
            }
            return None
        self.misses += 1
        if self.misses < self.patience or self.best_shape is None:
            return None
        self._freeze()
        self.frozen_at = step
        return {
            "event": "shape_frozen",
            "step": step,
            "best_step": self.best_step,
            "width_error": self.best_width,
        }

    @property
    def _generator(self) -> FlowMatchGenerator:
        return cast("FlowMatchGenerator", self.m.generator_plain)

    def _freeze(self) -> None:
        """Put the best stage-2 weights back, freeze stage 2 and wrap the generator anew for
        data parallelism (DDP expects a gradient for every weight it was built with)."""
        g = self._generator
        assert self.best_shape is not None
        g.shape_net.load_state_dict(self.best_shape["net"])
        g.ema["shape_net"].load_state_dict(self.best_shape["ema"])
        g.freeze_shape()
        self.best_shape = None  # the weights hold them now
        if self.context.enabled:
            self.m.generator = wrap_ddp(g, self.context)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "shape_stop": {
                "best_width": self.best_width,
                "best_step": self.best_step,
                "misses": self.misses,
                "frozen_at": self.frozen_at,
                "best_shape": self.best_shape,
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        stop = state.get("shape_stop")  # absent in the states of earlier versions
        if stop is None:
            return
        self.best_width, self.best_step = stop["best_width"], stop["best_step"]
        self.misses, self.frozen_at = stop["misses"], stop["frozen_at"]
        self.best_shape = stop["best_shape"]
        if self.frozen_at is not None:  # the checkpoint's weights are the frozen ones
            self._generator.freeze_shape()
            if self.context.enabled:
                self.m.generator = wrap_ddp(self.m.generator_plain, self.context)


def _copy(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in state.items()}


STEPS: dict[str, type[Step]] = {
    "gan": GanStep,
    "wgan-gp": WganStep,
    "flow-matching": FlowMatchStep,
}


def make_step(ctx: StepContext, bundle: ModelBundle, transform: Transform) -> Step:
    """The training step `bundle`'s family names (`ModelConfig.training_step`)."""
    kind = bundle.config.training_step
    if ctx.config.shape_patience and kind != "flow-matching":
        raise TrainConfigError(
            f"training.shape_patience={ctx.config.shape_patience}: only flow-match has a "
            f"stage 2 to stop (this model trains as {kind}); leave it at 0"
        )
    return STEPS[kind].for_model(ctx, bundle, transform)
