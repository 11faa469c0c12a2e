"""The generation pipeline: a trained generator, its preprocessing and geometry, as one object.

>>> pipeline = ShowerPipeline.from_checkpoint("runs/gan3d", device="auto")
>>> out = pipeline({"energy": np.full(8, 100.0)}, generator=torch.Generator().manual_seed(0))
>>> out.showers.shape                                   # (8, 25, 25, 25), GeV

`ShowerPipeline` is the one way caloforge turns conditions into showers: it draws the noise
from the explicit `torch.Generator` it is given (never the global RNG), runs the generator
in eval mode without autograd, undoes the training preprocessing (`transform.to_gev`) and
returns showers in GeV, checked to be finite. Which conditions to ask for (drawn from ranges,
or read from a reference file) is decided outside it, by `caloforge.generation.run`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloforge.data.transforms import Transform
from caloforge.devices import full_fp32, resolve_device, tune_for_fixed_shapes
from caloforge.errors import CaloforgeError
from caloforge.generation.auto import AUTO, BackendChoice, choose_backend
from caloforge.generation.backends import BACKENDS, Backend, build_backend
from caloforge.generation.conditions import check_conditions, draw_conditions
from caloforge.geometry import Geometry
from caloforge.models import ShowerGenerator
from caloforge.models.checkpoint import CheckpointError, load_checkpoint

__all__ = ["EDGE_MARGIN", "GeneratedShowers", "ShowerPipeline", "training_ranges"]

# A training range is the smallest and largest condition of the training showers: a sample's
# edges, which fall short of the range the showers were drawn from by about width / n (a
# model trained on 10-200 GeV has seen 199.95 at most). Conditions within this fraction of the
# width beyond an edge are inside: only extrapolation worth the name is reported.
EDGE_MARGIN = 0.01


@dataclass(frozen=True)
class GeneratedShowers:
    """Showers made by a `ShowerPipeline`, with the conditions they were made for.

    showers: (n, *geometry.shape) float32 numpy array, visible cell energy in GeV, >= 0.
    conditions: name -> (n,) or (n, size) float64 numpy array in the geometry's units
        (energy GeV, theta rad, momentum GeV, point mm), as given to the pipeline.
    """

    showers: np.ndarray
    conditions: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.showers.shape[0])


def training_ranges(
    config: Mapping[str, Any], source: str = "checkpoint config"
) -> dict[str, tuple[tuple[float, float], ...]]:
    """The condition ranges of the training data a checkpoint config records.

    Read from `config["training"]["condition_ranges"]`: name -> `[min, max]` (applies to
    every component) or `[[min, max], ...]` (one pair per component, as `caloforge inspect`
    reports them). Returns name -> one or more `(min, max)` pairs; `{}` when none recorded.
    """
    training = config.get("training") or {}
    raw = training.get("condition_ranges") if isinstance(training, Mapping) else None
    if raw is None:
        return {}
    where = f"{source}, key 'training.condition_ranges'"
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{where}: expected name -> [min, max], found {raw!r}")
    out: dict[str, tuple[tuple[float, float], ...]] = {}
    for name, value in raw.items():
        try:
            pairs = np.asarray(value, dtype=np.float64).reshape(-1, 2)
            if pairs.size == 0 or not np.isfinite(pairs).all():
                raise ValueError
        except (TypeError, ValueError):
            raise CheckpointError(
                f"{where}: '{name}' must be [min, max] or [[min, max], ...], found {value!r}"
            ) from None
        out[str(name)] = tuple((float(lo), float(hi)) for lo, hi in pairs)
    return out


class ShowerPipeline:
    """Turns conditions into showers in GeV with a trained generator.

    generator: the `ShowerGenerator` (moved to `device`, put in eval mode).
    transform: the preprocessing the model was trained in; its inverse gives GeV.
    geometry: the detector of the showers, `(n, *geometry.shape)`.
    device: where the generator runs (`resolve_device` names).
    training_ranges: name -> `(min, max)` per component of the training data's conditions
        (see `training_ranges`); empty when the checkpoint records none.
    source: where the model came from (the checkpoint folder), for messages and provenance.
    """

    def __init__(
        self,
        generator: ShowerGenerator,
        transform: Transform,
        geometry: Geometry,
        device: str | torch.device = "cpu",
        *,
        training_ranges: Mapping[str, tuple[tuple[float, float], ...]] | None = None,
        source: str = "generator",
        backend: str = "eager",
    ) -> None:
        self.device = resolve_device(device)
        self.generator = generator.to(self.device).eval()
        tune_for_fixed_shapes(self.device)
        self.transform = transform
        self.geometry = geometry
        self.training_ranges = dict(training_ranges or {})
        self.source = source
        self.backend = "eager"
        self.choice: BackendChoice | None = None  # what `auto` chose, when it was asked for
        self.forward: Backend = build_backend("eager", self.generator)
        if backend != "eager":
            self.set_backend(backend)

    def set_backend(
        self,
        name: str,
        *,
        seed: int = 0,
        progress: bool = False,
        showers: int | None = None,
    ) -> None:
        """Run the generator through backend `name` (`caloforge.generation.backends`), or
        the one `auto` chooses (`caloforge.generation.auto`; then `self.choice` says which
        and why, and `self.backend` names it).

        `int8` quantizes on the CPU with an accuracy guard, calibrated on showers of
        conditions drawn (with `seed`) from the training ranges the checkpoint records, else
        the geometry's defaults; its report is `self.forward.report`. The guard's choice of
        layers and its verdict are kept in `caloforge.generation.int8.default_cache()` for
        the next run (and for `auto`). `showers`: how many the run will make, where known:
        `auto` keeps a short run eager.
        """
        self.choice = None
        if name == AUTO:
            choice = choose_backend(self, showers)
            self.set_backend(
                choice.backend,
                seed=seed if choice.seed is None else choice.seed,
                progress=progress,
            )
            self.choice = choice
            return
        if name == "int8":
            if self.device.type != "cpu":
                raise CaloforgeError(
                    f"backend 'int8' runs on the CPU; got device '{self.device}' (use "
                    "--device cpu, or --backend bf16 on a GPU)"
                )
            self.forward = self._int8(seed, progress)
        else:
            self.forward = build_backend(name, self.generator)
        self.backend = name

    def _int8(self, seed: int, progress: bool) -> Backend:
        """The int8 generator (`quantize_int8` with the default cache), its verdict kept."""
        from caloforge.generation.int8 import default_cache, quantize_int8
        from caloforge.generation.int8_verdict import Verdict, verdict_key, write_verdict

        cache = default_cache()
        calibration = self.calibration_conditions(seed=seed)
        quantized = quantize_int8(
            self.generator,
            self.transform,
            self.geometry,
            calibration,
            seed=seed,
            progress=progress,
            cache=cache,
            source=self.source,
        )
        key = verdict_key(self.generator, self.transform)
        if key is not None:
            report = quantized.report
            verdict = Verdict(
                holds=report.holds,
                int8_layers=len(report.int8_layers),
                layers=len(report.layers),
                speedup=quantized.speedup,
                seed=seed,
                calibration_showers=len(next(iter(calibration.values()))),
                library=report.library,
                fp32_seconds_per_shower=quantized.fp32_seconds_per_shower,
                setup_seconds=quantized.setup_seconds,
            )
            write_verdict(cache, key, verdict, lambda line: None)
        return quantized

    @property
    def engine(self) -> str:
        """What runs the backend: "pytorch", "inductor", "openvino 2026.4.1", the int8
        library, ..."""
        return str(getattr(self.forward, "engine", self.backend))

    def calibration_conditions(self, n: int = 512, *, seed: int = 0) -> dict[str, np.ndarray]:
        """`n` conditions drawn as `caloforge simulate` draws them (with `seed`), in the
        checkpoint's training energy (and angle) range where it records one, else the
        geometry's default ranges: for calibrating and for timing."""
        return draw_conditions(self.geometry, n, seed=seed, training_ranges=self.training_ranges)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        backend: str = "eager",
    ) -> ShowerPipeline:
        """The pipeline of a checkpoint folder (or a run folder: its best, else latest)."""
        if backend not in (AUTO, *BACKENDS):
            raise CaloforgeError(
                f"unknown backend '{backend}'; choose one of {AUTO}, {', '.join(BACKENDS)}"
            )
        target = resolve_device(device)  # before the (slow) load: a bad device fails at once
        checkpoint = load_checkpoint(path, device="cpu")  # only the generator goes to `device`
        folder = Path(checkpoint.folder)
        return cls(
            checkpoint.bundle.generator,
            checkpoint.transform,
            checkpoint.geometry,
            target,
            training_ranges=training_ranges(checkpoint.config, source=str(folder)),
            source=str(folder),
            backend=backend,
        )

    @classmethod
    def random_weights(
        cls, family: str, device: str | torch.device = "cpu", seed: int = 0
    ) -> ShowerPipeline:
        """A pipeline of an untrained `family` generator (its preset architecture, random
        weights, no preprocessing): for measuring speed, not for physics."""
        from caloforge.data.transforms import Identity
        from caloforge.models import MODEL_FAMILIES, build_model

        if family not in MODEL_FAMILIES:
            known = ", ".join(sorted(MODEL_FAMILIES))
            raise CaloforgeError(f"unknown model family '{family}'; choose one of {known}")
        bundle = build_model(family, {}, seed=seed)
        geometry = bundle.config.resolved_geometry
        return cls(
            bundle.generator, Identity(), geometry, device, source=f"{family} (random weights)"
        )

    @property
    def condition_names(self) -> tuple[str, ...]:
        """The conditions the generator reads."""
        return tuple(self.generator.condition_names)

    def outside_training_range(self, conditions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """name -> `(n,)` bool: which showers have that condition outside the training range.

        Only the conditions both recorded in the checkpoint and given are checked; derived
        conditions (the LHCb momentum, whose angles are drawn from unbounded Gaussians) are
        not, as their sampled tails would always poke out of a finite sample's range. Each
        range is widened by `EDGE_MARGIN` of its width on either side.
        """
        out: dict[str, np.ndarray] = {}
        for name, pairs in self.training_ranges.items():
            if name not in conditions or not self.geometry.has_condition(name):
                continue
            if self.geometry.condition(name).derived:
                continue
            values = np.asarray(conditions[name], dtype=np.float64)
            columns = values.reshape(len(values), -1)
            if len(pairs) not in (1, columns.shape[1]):
                raise CheckpointError(
                    f"{self.source}: training range of '{name}' has {len(pairs)} (min, max) "
                    f"pairs; the condition has {columns.shape[1]} component(s)"
                )
            bounds = np.asarray(pairs, dtype=np.float64)
            margin = EDGE_MARGIN * (bounds[:, 1] - bounds[:, 0])
            outside = (columns < bounds[:, 0] - margin) | (columns > bounds[:, 1] + margin)
            out[name] = np.asarray(outside.any(axis=1), dtype=bool)
        return out

    def __call__(
        self, conditions: Mapping[str, np.ndarray], generator: torch.Generator
    ) -> GeneratedShowers:
        """Showers for `conditions` (name -> (n,) or (n, size), the geometry's units).

        The noise is `self.generator.sample_noise(n, generator)`: the same conditions and
        the same generator state give the same showers. Raises `ConditionError` for missing
        or malformed conditions or values outside the range where the geometry is valid, and
        `CaloforgeError` for a `generator` that is not a `torch.Generator` or if the model
        produces NaN or inf.
        """
        if not isinstance(generator, torch.Generator):
            raise CaloforgeError(
                f"{self.source}: the noise needs a torch.Generator (seeded: "
                f"torch.Generator().manual_seed(seed)), got {type(generator).__name__}"
            )
        arrays = check_conditions(conditions, self.condition_names, self.source, self.geometry)
        n = len(next(iter(arrays.values())))
        shape = (n, *self.geometry.shape)
        if n == 0:
            return GeneratedShowers(np.zeros(shape, dtype=np.float32), arrays)
        reference = next(self.generator.parameters())
        self.generator.eval()
        with torch.inference_mode(), full_fp32():
            tensors = {
                name: torch.as_tensor(values, dtype=reference.dtype, device=reference.device)
                for name, values in arrays.items()
            }
            noise = self.generator.sample_noise(n, generator)
            showers = self.transform.to_gev(self.forward(noise, tensors))
            bad = ~torch.isfinite(showers).reshape(n, -1).all(dim=1)
            if bool(bad.any()):
                first = int(torch.nonzero(bad)[0, 0])
                raise CaloforgeError(
                    f"{self.source}: the model produced NaN or infinite cell energies in "
                    f"{int(bad.sum())} of {n} showers (first at row {first} of this batch, "
                    f"conditions { {k: v[first].tolist() for k, v in arrays.items()} }); "
                    "the weights may have diverged in training"
                )
            showers = showers.to(device="cpu", dtype=torch.float32)
        out = showers.numpy()
        if out.shape != shape:
            raise CaloforgeError(
                f"{self.source}: the model produced showers of shape {out.shape[1:]}, the "
                f"geometry '{self.geometry.name}' has {tuple(self.geometry.shape)}"
            )
        return GeneratedShowers(out, arrays)
