"""The training loop: data, models, optimizers, checkpoints, logs, the physics check.

    trainer = Trainer(load_config("configs/gan3d.yaml"), "showers.h5", "runs/first")
    result = trainer.fit()

The same code runs in one process or under `torchrun` (see `distributed.py`): every rank
streams its own slice of each global batch, rank 0 alone logs and writes checkpoints.
`resume=True` continues from the run folder's latest checkpoint exactly: weights, optimizer
and scheduler states, the random streams and the position in the epoch are restored, so on CPU
a resumed run gives the same losses as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from caloforge._files import (
    FolderLock,
    check_output,
)
from caloforge.data.dataset import ShowerStream, split_indices
from caloforge.data.io import open_showers
from caloforge.data.transforms import BoxCox, Transform, transform_from_dict
from caloforge.devices import Distributed, init_distributed, tune_for_fixed_shapes
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.models import ModelBundle, build_model, parameter_counts
from caloforge.models.checkpoint import (
    BEST,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
)
from caloforge.training.checkpoint import (
    RESUME_STATE,
    TRAINER_STATE,
    TrainState,
    check_resumable,
    load_trainer_state,
    save_checkpoint,
    write_pointer,
)
from caloforge.training.config import RunConfig, TrainConfig
from caloforge.training.distributed import synchronise_batchnorm, wrap_ddp
from caloforge.training.physics_check import PhysicsCheck, run_check
from caloforge.training.run_log import RunLog
from caloforge.training.steps import Step, StepContext, StepModels, make_step


class TrainingCollapsedError(CaloforgeError):
    """The generator emitted only empty showers for `collapse_patience` checks in a row."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    epochs_completed: int
    best_checkpoint: Path | None
    last_check: PhysicsCheck | None
    history: list[dict[str, Any]]


class NoValidationShowersWarning(UserWarning):
    """The physics check has no validation showers to judge by: the split leaves none (it
    uses training showers), or they hold no energy (caloforge's own class: the CLI shows it
    as one line, not with Python's file:line)."""


def make_optimizer(cfg: TrainConfig, module: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer for `module`'s trainable parameters at learning rate `lr`."""
    o = cfg.optimizer
    params = [p for p in module.parameters() if p.requires_grad]
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=o.betas)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum)
    # Keras' RMSprop (the 3DGAN code): rho 0.9, epsilon 1e-7.
    return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast when asked for, or on a GPU with precision "auto"; else nothing."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def step_models(bundle: ModelBundle, cfg: TrainConfig, ctx: Distributed) -> StepModels:
    """The networks a step trains, wrapped for data parallelism when `ctx` has several ranks,
    with their optimizers."""
    g_plain, d_plain = bundle.generator, bundle.adversary  # d: None for flow-match
    lr = cfg.optimizer
    return StepModels(
        generator=wrap_ddp(g_plain, ctx),
        discriminator=None if d_plain is None else wrap_ddp(d_plain, ctx),
        generator_plain=g_plain,
        discriminator_plain=d_plain,
        optimizer_g=make_optimizer(cfg, g_plain, lr.lr_generator),
        optimizer_d=None if d_plain is None else make_optimizer(cfg, d_plain, lr.lr_discriminator),
        regressor=bundle.regressor,
    )


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        data: str | os.PathLike[str] | list[str],
        run_dir: str | os.PathLike[str],
        *,
        resume: bool = False,
        progress: bool = False,
        data_format: str | None = None,
    ) -> None:
        self.config = config
        self.cfg = config.training
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.context = init_distributed(self.cfg.device)
        ctx, cfg = self.context, self.cfg
        if cfg.batch_size % ctx.world_size:
            raise CaloforgeError(
                f"training.batch_size={cfg.batch_size} must be divisible by the number of "
                f"ranks ({ctx.world_size})"
            )
        self._check_run_dir(resume)
        # One training at a time in a run folder: a second is refused with the holder's pid,
        # before it reads any data when the folder exists (a new folder is made, and locked,
        # only once the data and settings have been accepted).
        self._lock = FolderLock(self.run_dir, "training") if ctx.is_main else None
        if self._lock is not None and self.run_dir.is_dir():
            self._lock.acquire()
        try:
            self._set_up(config, data, data_format, resume)
        except BaseException:
            self.close()
            raise

    def _set_up(
        self,
        config: RunConfig,
        data: str | os.PathLike[str] | list[str],
        data_format: str | None,
        resume: bool,
    ) -> None:
        ctx, cfg = self.context, self.cfg
        self.state = TrainState()

        self.stream = ShowerStream(
            data,
            "train",
            fractions=cfg.fractions,
            seed=cfg.seed,
            split_seed=cfg.split_seed,
            batch_size=cfg.batch_size // ctx.world_size,
            window=cfg.window,
            drop_last=True,
            rank=ctx.rank,
            world_size=ctx.world_size,
            format=data_format,
        )
        self.geometry: Geometry = self.stream.geometry
        self.bundle: ModelBundle = build_model(config.family, config.model, seed=cfg.seed)
        self._check_geometry()
        # Its own generator: a DataLoader iterator otherwise draws its worker seed from the
        # global RNG, which dropout uses, and a resumed run would see other dropout masks.
        self.loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        self.transform = self._make_transform()
        self.condition_ranges = self._condition_ranges()

        if ctx.enabled and cfg.sync_batchnorm:
            for role, module in self.bundle.modules.items():
                self.bundle.modules[role] = synchronise_batchnorm(module, ctx.device)
        self.bundle.to(ctx.device)
        tune_for_fixed_shapes(ctx.device)
        torch.manual_seed(cfg.seed + 7919 * ctx.rank)  # dropout masks: independent per rank
        self.rng = torch.Generator(device=ctx.device).manual_seed(cfg.seed)  # shared by ranks

        self.models = step_models(self.bundle, cfg, ctx)
        self.steps_per_epoch = len(self.stream)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        step_context = StepContext(self.models, cfg, ctx, self.rng, self._autocast)
        self.step_fn: Step = make_step(step_context, self.bundle, self.transform)
        self._check_data = self._validation_slice(data_format)
        self.log = RunLog(self.run_dir, enabled=ctx.is_main)
        self._last_check: PhysicsCheck | None = None
        self._bar: Any = None  # the steps' progress bar while they run
        if self._lock is not None:
            self._lock.acquire()
        if resume:
            self._resume()

    def close(self) -> None:
        """Let another process use the run folder and the data files (`fit` does this when
        it ends; the data stay open otherwise, and HDF5's lock refuses an append to them)."""
        if self._lock is not None:
            self._lock.release()
        stream = getattr(self, "stream", None)  # None: set-up failed before it was made
        if stream is not None:
            stream.close()  # reopened by a second `fit`

    # --- set-up ------------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool) -> None:
        check_output(self.run_dir, folder=True, option="--out")
        if resume:
            if latest_checkpoint(self.run_dir) is None:
                raise CaloforgeError(f"{self.run_dir}: --resume given but no checkpoint found")
        elif latest_checkpoint(self.run_dir) is not None:
            raise CaloforgeError(
                f"{self.run_dir} already holds a training run; use --resume to continue it or "
                "choose another --out"
            )

    def _check_geometry(self) -> None:
        model_geo = self.bundle.config.resolved_geometry
        data_geo = self.geometry
        if tuple(model_geo.shape) != tuple(data_geo.shape) or not all(
            data_geo.has_condition(c) for c in self.bundle.config.required_conditions
        ):
            raise CaloforgeError(
                f"the data ({', '.join(map(str, self.stream.paths))}) has geometry "
                f"'{data_geo.name}' with showers {tuple(data_geo.shape)} and conditions "
                f"{list(data_geo.condition_names)}; model '{self.config.family}' needs "
                f"'{model_geo.name}' with showers {tuple(model_geo.shape)} and conditions "
                f"{list(self.bundle.config.required_conditions)}"
            )

    def _make_transform(self) -> Transform:
        spec = dict(self.config.transform)
        if spec.get("name") == "boxcox" and spec.get("lmbda", "fit") == "fit":
            # Fitted on the training split's first showers (the same on every rank).
            source = self.stream.source
            sample = source.take(self.stream.indices[:2000]).showers
            return BoxCox.fit(sample, shift=float(spec.get("shift", 1e-6)), seed=self.cfg.seed)
        return transform_from_dict(spec)

    def _condition_ranges(self) -> dict[str, list[float]]:
        conditions = self.stream.source.conditions
        idx = self.stream.indices
        return {
            name: [float(conditions[name][idx].min()), float(conditions[name][idx].max())]
            for name in self.geometry.condition_names
        }

    def lr_factor(self, step: int) -> float:
        """The learning-rate schedule: a factor of the base rates, a pure function of the step
        (so a resumed run needs no scheduler state)."""
        o = self.cfg.optimizer
        warmup = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
        if o.schedule == "exponential":
            return warmup * float(o.gamma ** (step // max(1, self.steps_per_epoch)))
        if o.schedule == "cosine":
            total = max(1, self.total_steps)
            return warmup * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        return warmup

    def _set_learning_rates(self) -> None:
        factor = self.lr_factor(self.state.step)
        o = self.cfg.optimizer
        for optimizer, base in (
            (self.models.optimizer_g, o.lr_generator),
            (self.models.optimizer_d, o.lr_discriminator),
        ):
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = base * factor

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        return autocast_for(self.cfg.precision, self.context.device)

    def _validation_slice(
        self, data_format: str | None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        if not self.context.is_main:
            return None
        with contextlib.closing(open_showers(self.stream.paths, data_format)) as source:
            idx = split_indices(len(source), self.cfg.fractions, self.cfg.split_seed)["validation"]
            none_held_out = len(idx) == 0
            if none_held_out:  # no validation split asked for: check on training showers
                idx = self.stream.indices
            batch = source.take(idx[: self.cfg.check_showers])  # refuses bad cells first
        if none_held_out:
            warnings.warn(
                f"training.fractions {list(self.cfg.fractions)} leave no validation showers: "
                "the physics check (and best.json) use training showers",
                NoValidationShowersWarning,
                stacklevel=3,
            )
        if len(batch.showers) and not batch.showers.any():
            warnings.warn(
                f"the {len(batch.showers)} showers the physics check compares with hold no "
                f"energy (every cell 0; {', '.join(map(str, self.stream.paths))}): it cannot "
                "judge the model, and no best.json will be written",
                NoValidationShowersWarning,
                stacklevel=3,
            )
        return batch.showers, dict(batch.conditions)

    # --- resume --------------------------------------------------------------------------------
    def _resume(self) -> None:
        folder = latest_checkpoint(self.run_dir)
        assert folder is not None
        checkpoint = load_checkpoint(folder, family=self.config.family, device=self.context.device)
        saved = checkpoint.config.get("training", {})
        check_resumable(
            saved,
            self.cfg,
            len(self.stream.indices),
            self.run_dir,
            folder,
            total=self.stream.n_total,
        )
        for role, module in self.bundle.modules.items():
            module.load_state_dict(checkpoint.bundle.modules[role].state_dict())
        self.transform = checkpoint.transform
        state = load_trainer_state(checkpoint.folder, self.context.device, RESUME_STATE)
        try:
            self.models.optimizer_g.load_state_dict(state["optimizer_g"])
            if self.models.optimizer_d is not None:
                self.models.optimizer_d.load_state_dict(state["optimizer_d"])
            self.rng.set_state(state["rng"].to(self.rng.get_state().device))
            torch.set_rng_state(state["torch_rng"][self.context.rank % len(state["torch_rng"])])
            self.step_fn.load_state_dict(state)
            self.state = TrainState(**state["train_state"])
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(
                f"{checkpoint.folder / TRAINER_STATE}: a trainer state that does not fit this "
                f"run ({exc!r}): resume from an earlier checkpoint (remove this one)"
            ) from None
        if self.context.is_main:  # the steps after the checkpoint run again: log them once
            self.log.truncate(self.state.step)

    def _trainer_state(self) -> dict[str, Any]:
        """What an exact resume needs beyond the weights; every rank's global RNG (dropout)."""
        torch_rng = [torch.get_rng_state()]
        if self.context.enabled:  # a collective: every rank calls save()
            device = self.context.device if self.context.device.type == "cuda" else None
            mine = torch_rng[0].to(device)
            gathered = [torch.empty_like(mine) for _ in range(self.context.world_size)]
            torch.distributed.all_gather(gathered, mine)
            torch_rng = [t.cpu() for t in gathered]
        return {
            "optimizer_g": self.models.optimizer_g.state_dict(),
            "optimizer_d": (
                None if self.models.optimizer_d is None else self.models.optimizer_d.state_dict()
            ),
            "rng": self.rng.get_state(),
            "torch_rng": torch_rng,
            **self.step_fn.state_dict(),  # step_count, last_g
            "train_state": self.state.__dict__.copy(),
        }

    # --- checkpoints and logs ----------------------------------------------------------------
    def save(self) -> Path | None:
        """Checkpoint now (all ranks gather their RNG state; rank 0 writes)."""
        state = self._trainer_state()
        if not self.context.is_main:
            return None
        training = {
            **self.config.to_dict()["training"],
            "condition_ranges": self.condition_ranges,
            "family": self.config.family,
            "data": [str(Path(p).resolve()) for p in self.stream.paths],
            "data_showers": len(self.stream.indices),  # the training split's, to resume
            "data_total": self.stream.n_total,  # all of it: the split drawn from it
        }
        return save_checkpoint(
            self.run_dir,
            step=self.state.step,
            epoch=self.state.epoch,
            bundle=self.bundle,
            transform=self.transform,
            geometry=self.geometry,
            training=training,
            trainer_state=state,
            keep=self.cfg.keep_checkpoints,
            keep_every=self.cfg.keep_every,
        )

    def physics_check(self) -> PhysicsCheck | None:
        """Run the check on rank 0; every rank learns whether the generator collapsed."""
        check = None
        if self.context.is_main:
            assert self._check_data is not None
            real, conditions = self._check_data
            check = run_check(
                self.bundle.generator,
                self.transform,
                real,
                conditions,
                self.geometry,
                seed=self.cfg.seed + 1,
                device=self.context.device,
            )
        return check

    def _after_check(self, check: PhysicsCheck | None, changed: bool) -> bool:
        """Count collapsed checks (on every rank); True if rank 0's check is the best yet,
        unless the step `changed` the weights after it (its numbers no longer hold)."""
        collapsed = self.context.broadcast_flag(check is not None and check.collapsed)
        self.state.collapse_count = self.state.collapse_count + 1 if collapsed else 0
        if check is None or changed or check.collapsed:
            return False
        if check.score < self.state.best_score:
            self.state.best_score = check.score
            return True
        return False

    def _stop_if_collapsed(self) -> None:
        if self.state.collapse_count < self.cfg.collapse_patience:
            return
        best = self.run_dir / BEST
        kept = (
            f"the best checkpoint so far is named in {best}"
            if best.exists()
            else "no checkpoint was good enough to keep"
        )
        raise TrainingCollapsedError(
            f"the generator emitted only empty showers at {self.state.collapse_count} "
            f"consecutive checks (step {self.state.step}); training stopped, {kept}. Try a "
            "lower learning rate, fewer generator steps per discriminator step or another seed."
        )

    # --- the loop ------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train until `epochs` or `max_steps`: the pretraining the step needs, then epoch
        after epoch of steps, each followed by its check and checkpoint (`_after_step`)."""
        try:
            if self._lock is not None:
                self._lock.acquire()  # again, for a second fit of the same trainer
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> TrainResult:
        st = self.state
        if self.context.is_main and st.step == 0:
            counts = parameter_counts(self.bundle)
            print(
                f"caloforge train: {self.config.family} on {self.context.world_size} rank(s), "
                f"device {self.context.device}; parameters: "
                + ", ".join(f"{k} {v:,}" for k, v in counts.items())
            )
        status = None if st.regressor_done else self.step_fn.pretrain_status()
        if status is not None and self.progress and self.context.is_main:
            print(f"caloforge train: {status} ...", flush=True)  # before the steps' bar
        if not st.regressor_done and self.step_fn.pretrain(self._epoch_batches, self.log.write):
            st.regressor_done = True
        bar = self._bar = self._progress_bar()
        try:
            while st.epoch < self.cfg.epochs and st.step < self.total_steps:
                if self._run_epoch(bar) == 0:
                    break
        finally:
            if bar is not None:
                bar.close()
            self.log.close()
        best = self.run_dir / BEST
        return TrainResult(
            run_dir=self.run_dir,
            steps=st.step,
            epochs_completed=st.epoch,
            best_checkpoint=resolve_checkpoint(self.run_dir) if best.exists() else None,
            last_check=self._last_check,
            history=list(st.history),
        )

    def _run_epoch(self, bar: Any) -> int:
        """The steps left in the current epoch (or until `max_steps`); returns how many ran."""
        st, cfg = self.state, self.cfg
        self.stream.set_epoch(st.epoch)
        self.stream.set_skip(st.batch_in_epoch)
        # The epoch's sums so far: a resumed run goes on from those its checkpoint carried.
        sums: dict[str, float] = defaultdict(float, st.epoch_sums)
        n_steps, start, seconds_before = 0, time.perf_counter(), st.epoch_seconds
        cpu_start, cpu_before = time.process_time(), st.epoch_cpu_seconds
        summary: tuple[dict[str, float], int, float, float] | None = None
        for showers, cond in self._batches():
            self._set_learning_rates()
            values = self.step_fn(showers, cond)
            for k, v in values.items():
                sums[k] += v
            n_steps += 1
            st.step += 1
            st.batch_in_epoch += 1
            st.epoch_sums, st.epoch_steps = dict(sums), st.epoch_steps + 1
            st.epoch_seconds = seconds_before + time.perf_counter() - start
            st.epoch_cpu_seconds = cpu_before + time.process_time() - cpu_start
            if bar is not None:
                bar.update(1)
                if st.step % cfg.log_every == 0:
                    losses = {k: f"{v:.3g}" for k, v in values.items() if k.startswith("loss")}
                    bar.set_postfix(losses)
            if self.context.is_main and st.step % cfg.log_every == 0:
                self.log.write({"event": "step", "step": st.step, "epoch": st.epoch, **values})
            end_of_epoch = st.batch_in_epoch >= self.steps_per_epoch
            finished = st.step >= self.total_steps
            if end_of_epoch or finished:
                summary = (dict(sums), st.epoch_steps, st.epoch_seconds, st.epoch_cpu_seconds)
            if end_of_epoch:  # the next epoch counts from zero, in the checkpoint too
                st.epoch_sums, st.epoch_steps = {}, 0
                st.epoch_seconds, st.epoch_cpu_seconds = 0.0, 0.0
            self._after_step(end_of_epoch, finished)
            if end_of_epoch or finished:
                break
        if summary is None and n_steps:
            summary = (dict(sums), st.epoch_steps, st.epoch_seconds, st.epoch_cpu_seconds)
        if summary is not None and self.context.is_main:
            totals, steps, seconds, cpu_seconds = summary
            self.log.write(
                {
                    "event": "epoch",
                    "step": st.step,
                    "epoch": st.epoch,
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                    "showers_per_s": steps * cfg.batch_size / seconds,
                    **{k: v / steps for k, v in totals.items()},
                }
            )
        return n_steps

    def _after_step(self, end_of_epoch: bool, finished: bool) -> None:
        """The physics check when due (every `check_every` steps, else at each epoch's end,
        and at the last step), the epoch count, a checkpoint when due (with the check, every
        `checkpoint_every` steps and at each epoch's end; `best.json` moves to it when the
        check improved), and the stop of a collapsed run."""
        st, cfg = self.state, self.cfg
        check_now = (
            (cfg.check_every > 0 and st.step % cfg.check_every == 0)
            or (cfg.check_every == 0 and end_of_epoch)
            or finished
        )
        if check_now:
            with self._status("physics check"):
                self._last_check = self.physics_check()
        if end_of_epoch:  # before the check is recorded: its record names the epoch reached
            st.epoch += 1
            st.batch_in_epoch = 0
        improved = self._record_check() if check_now else False
        if check_now or st.step % cfg.checkpoint_every == 0 or end_of_epoch:
            folder = self.save()
            check = self._last_check
            if improved and folder is not None and check is not None:
                extra = {"step": st.step, "check": check.to_dict()}
                write_pointer(self.run_dir / BEST, folder, extra)
        self._stop_if_collapsed()

    def _record_check(self) -> bool:
        """Count and log the check just made; True if it is the best yet."""
        check = self._last_check
        event = self.step_fn.after_check(check, self.state.step)  # e.g. stage 2 frozen
        improved = self._after_check(check, changed=event is not None)
        if check is not None:
            record = {"event": "check", "step": self.state.step, "epoch": self.state.epoch}
            record.update(check.to_dict())
            self.state.history.append(record)
            for item in (record,) if event is None else (record, event):
                self.log.write(item)
        return improved

    @contextlib.contextmanager
    def _status(self, what: str) -> Iterator[None]:
        """`what` on the steps' bar while a phase between steps runs (the physics check)."""
        bar, before = self._bar, getattr(self._bar, "postfix", None) or ""
        if bar is not None:
            bar.set_postfix_str(", ".join(filter(None, (before, f"{what} ..."))), refresh=True)
        try:
            yield
        finally:
            if bar is not None:
                bar.set_postfix_str(before, refresh=True)

    def _progress_bar(self) -> Any:
        """A tqdm bar of the steps on rank 0 with `progress`, else None."""
        if not (self.progress and self.context.is_main):
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.total_steps,
            initial=self.state.step,
            unit="step",
            mininterval=1.0,
            desc=f"train {self.config.family}",
        )

    def _epoch_batches(self, epoch: int) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        """The batches of one pass over the training data, shuffled for `epoch`."""
        self.stream.set_epoch(epoch)
        return self._batches()

    def _batches(self) -> Iterator[tuple[Tensor, dict[str, Tensor]]]:
        """(preprocessed showers, conditions by name) on the device, from the loader."""
        device = self.context.device
        dtype = next(self.bundle.generator.parameters()).dtype  # the models' precision
        columns = self.geometry.conditions
        for showers, cond in self.loader:
            showers = self.transform.forward(showers.to(device, dtype, non_blocking=True))
            cond = cond.to(device, dtype)
            named, col = {}, 0
            for c in columns:
                named[c.name] = cond[:, col] if c.size == 1 else cond[:, col : col + c.size]
                col += c.size
            yield showers, named
