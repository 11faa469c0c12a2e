"""`caloforge generate`: conditions in batches, through the pipeline, streamed to a file.

Conditions come from one of two places:
  - drawn from ranges (the geometry's defaults for what is not given) exactly as `simulate`
    draws them: batch `[start, start + size)` uses `numpy.random.default_rng([seed, start])`,
    so `generate` and `simulate` with the same seed and batch size ask for the same conditions;
  - read one to one from a reference shower file (`conditions_from`), to compare a model
    with the showers it imitates condition by condition.

The noise of the same batch comes from a `torch.Generator` seeded from `(seed, start)` too
(an independent stream of the same seed sequence), on the CPU whatever the device: the same
seed and batch size give the same file.

Under torchrun (`torchrun --nproc-per-node N -m caloforge generate ...`) each rank takes every
N-th batch (batch i on rank i mod N), on its own GPU with `--device cuda`, and writes its own
file `OUT.rankR-of-N.h5`; rank 0 then merges them, batch by batch in order, into `OUT` (or
leaves them, `merge=False`). Since a batch depends only on the seed and its first index, the
merged file is the file one process would have written.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from caloforge._files import check_output
from caloforge.data.canonical import ShowerWriter
from caloforge.data.io import expand_paths, open_showers
from caloforge.data.source import Batch
from caloforge.devices import init_distributed
from caloforge.errors import CaloforgeError, ConditionError, InputFileError
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.geometry import Geometry
from caloforge.models.checkpoint import resolve_checkpoint
from caloforge.simulation.conditions import ConditionRanges, sample_conditions

__all__ = [
    "OutsideTrainingRangeWarning",
    "generate_to_file",
    "merge_shards",
    "noise_generator",
    "shard_path",
]

# The noise stream of a batch: child 1 of the batch's seed sequence, which the condition
# stream (`default_rng([seed, start])`, the sequence itself) never uses.
_NOISE_STREAM = 1


class OutsideTrainingRangeWarning(UserWarning):
    """Showers asked for with conditions outside the range the model was trained on."""


def noise_generator(seed: int, start: int) -> torch.Generator:
    """The CPU `torch.Generator` of the batch whose first shower has index `start`."""
    sequence = np.random.SeedSequence([seed, start], spawn_key=(_NOISE_STREAM,))
    return torch.Generator().manual_seed(int(sequence.generate_state(1, np.uint64)[0]))


def _drawn(
    geometry: Geometry, ranges: ConditionRanges, n: int, batch_size: int, seed: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    for start in range(0, n, batch_size):
        rng = np.random.default_rng([seed, start])
        yield start, sample_conditions(geometry, ranges, min(batch_size, n - start), rng)


def _sliced(
    conditions: Mapping[str, np.ndarray], n: int, batch_size: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield start, {name: values[start:stop] for name, values in conditions.items()}


def _reference_conditions(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    geometry: Geometry,
    n: int | None,
    checkpoint: str,
) -> dict[str, np.ndarray]:
    """The first `n` (default: all) conditions of a reference file of `geometry`."""
    source = open_showers(paths)
    try:
        if source.geometry.to_dict() != geometry.to_dict():
            same_name = source.geometry.name == geometry.name
            raise InputFileError(
                source.path,
                "the reference showers are of another geometry than the checkpoint's",
                key="geometry",
                expected=f"'{geometry.name}' (the geometry of {checkpoint})",
                found=f"'{source.geometry.name}'"
                + (" with a different description" if same_name else ""),
            )
        total = len(source)
        if total == 0:
            raise InputFileError(
                source.path, "the reference holds no showers to take conditions from"
            )
        n = total if n is None else n
        if not 0 < n <= total:
            raise CaloforgeError(
                f"--n {n}: the reference {source.path} has {total} showers; ask for 1 to "
                f"{total} (default: all of them)"
            )
        conditions = {
            name: np.array(source.conditions[name][:n], dtype=np.float64)
            for name in geometry.condition_names
        }
        for c in geometry.conditions:
            if c.derived or c.valid is None:
                continue
            values = conditions[c.name]
            c.check(float(values.min()), float(values.max()), source=f"{source.path}: range")
        return conditions
    finally:
        source.close()


def _check_training_range(
    pipeline: ShowerPipeline,
    batches: Iterator[tuple[int, dict[str, np.ndarray]]],
    n: int,
    strict: bool,
) -> None:
    """Warn once (or raise with `strict`) when showers are asked for outside the training range."""
    if not pipeline.training_ranges:
        return
    n_outside = 0
    per_name: dict[str, int] = {}
    for _, conditions in batches:
        masks = pipeline.outside_training_range(conditions)
        if masks:
            n_outside += int(np.logical_or.reduce(list(masks.values())).sum())
            for name, mask in masks.items():
                per_name[name] = per_name.get(name, 0) + int(mask.sum())
    if n_outside == 0:
        return
    details = "; ".join(
        f"{name}: {count} outside the training range "
        + ", ".join(f"{lo:g}:{hi:g}" for lo, hi in pipeline.training_ranges[name])
        + f" {pipeline.geometry.condition(name).unit}".rstrip()
        for name, count in per_name.items()
        if count
    )
    message = (
        f"{n_outside} of {n} showers have conditions outside the range the checkpoint "
        f"{pipeline.source} was trained on ({details}); the model extrapolates there"
    )
    if strict:
        raise ConditionError(f"{message} (strict mode refuses them)")
    warnings.warn(message, OutsideTrainingRangeWarning, stacklevel=3)


def generate_to_file(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    n: int | None = None,
    energy: tuple[float, float] | None = None,
    theta_deg: tuple[float, float] | None = None,
    point: tuple[float, float] | None = None,
    spectrum: str | None = None,
    conditions_from: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    batch_size: int = 512,
    seed: int = 0,
    device: str = "cpu",
    backend: str = "eager",
    strict: bool = False,
    progress: bool = False,
    merge: bool = True,
) -> Path:
    """Generate `n` showers with a checkpoint into a canonical file; returns its path.

    checkpoint: a checkpoint folder, or a run folder (its best, else latest checkpoint).
    n: number of showers; required for drawn conditions, defaults to the whole reference
        with `conditions_from` (which may be asked for fewer, its first `n`).
    energy (GeV), theta_deg (degrees), point (mm), spectrum ("uniform" or "inverse"): the
        ranges to draw conditions from; what is left out takes the geometry's defaults.
    conditions_from: a shower file (any format `open_showers` reads, or several / a glob) of
        the checkpoint's geometry whose conditions are used one to one, in order.
    batch_size, seed: the showers depend only on these (and the checkpoint), not on `device`
        beyond floating-point differences.
    backend: how the generator runs (`caloforge.generation.backends`: eager, compiled, bf16,
        int8); the same seed gives the same showers up to the backend's precision.
    strict: refuse conditions outside the training range the checkpoint records, instead
        of warning (`OutsideTrainingRangeWarning`) with the number of such showers.

    merge: under torchrun, rank 0 merges the ranks' files into `output` (and removes them);
        without, each rank's file is left as `shard_path(output, rank, world_size)`.

    All checks (device, checkpoint, ranges, reference) happen before anything is written;
    the file appears under its name only once complete. Returns the merged file, or this
    rank's file when not merged.
    """
    if batch_size <= 0:
        raise CaloforgeError(f"--batch-size must be positive, got {batch_size}")
    if seed < 0:
        raise CaloforgeError(f"--seed must be a non-negative integer, got {seed}")
    if n is not None and n <= 0:
        raise CaloforgeError(f"--n must be a positive number of showers, got {n}")
    ranges_given = {
        "--energy": energy,
        "--theta": theta_deg,
        "--point": point,
        "--spectrum": spectrum,
    }
    if conditions_from is not None:
        clash = [option for option, value in ranges_given.items() if value is not None]
        if clash:
            raise CaloforgeError(
                f"{', '.join(clash)} cannot be combined with --conditions-from: the conditions "
                "are read from the reference file"
            )
    elif n is None:
        raise CaloforgeError(
            "--n is required unless the conditions come from a reference file (--conditions-from)"
        )
    # Before any work: an output that cannot be written, or that is the reference itself.
    references = [] if conditions_from is None else expand_paths(conditions_from)
    checkpoint_files = [p for p in resolve_checkpoint(checkpoint).iterdir() if p.is_file()]
    check_output(output, inputs=[*references, *checkpoint_files], option="-o")

    context = init_distributed(device)  # torchrun: this rank's slice of batches and device
    pipeline = ShowerPipeline.from_checkpoint(checkpoint, device=context.device)
    if backend != "eager":
        pipeline.set_backend(backend, seed=seed, progress=progress)
    geometry = pipeline.geometry
    reference: dict[str, np.ndarray] | None = None
    ranges: ConditionRanges | None = None
    if conditions_from is not None:
        reference = _reference_conditions(conditions_from, geometry, n, pipeline.source)
        n = len(reference["energy"])
    else:
        theta = None
        if theta_deg is not None:
            theta = (math.radians(theta_deg[0]), math.radians(theta_deg[1]))
        ranges = ConditionRanges.for_geometry(geometry, energy, spectrum, theta, point)
    assert n is not None

    def batches() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        # Called twice: once to check the ranges before writing, once to generate. Drawing
        # conditions again is cheap next to the model, and memory stays one batch.
        if reference is not None:
            return _sliced(reference, n, batch_size)
        assert ranges is not None
        return _drawn(geometry, ranges, n, batch_size, seed)

    rank, world = context.rank, context.world_size
    if rank == 0 or strict:  # every rank refuses alike; one warns
        _check_training_range(pipeline, batches(), n, strict)

    def mine() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for i, item in enumerate(batches()):
            if i % world == rank:
                yield item

    target = Path(output) if world == 1 else shard_path(output, rank, world)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        share = sum(min(batch_size, n - s) for s in range(0, n, batch_size)[rank::world])
        label = f"generate {geometry.name}" + (f" (rank 0 of {world})" if world > 1 else "")
        bar = tqdm(total=share, unit="shower", desc=label, mininterval=0.5)
    family = pipeline.generator.config.family
    producer = (
        f"caloforge generate ({family} checkpoint {Path(pipeline.source).resolve()}, "
        f"seed {seed}, batch size {batch_size}, backend {backend} ({pipeline.engine}))"
    )
    try:
        with ShowerWriter(target, geometry, producer=producer) as writer:
            for start, conditions in mine():
                out = pipeline(conditions, generator=noise_generator(seed, start))
                writer.write(Batch(out.showers, out.conditions))
                if bar is not None:
                    bar.update(len(out))
    finally:
        if bar is not None:
            bar.close()
    if world == 1:
        return target
    context.barrier("generate: every rank's file written")
    if merge and rank == 0:
        parts = [shard_path(output, r, world) for r in range(world)]
        merge_shards(parts, output, batch_size, producer=producer)
        for part in parts:
            part.unlink()
    context.barrier("generate: merged")
    return Path(output) if merge else target


def shard_path(output: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """The file rank `rank` of `world_size` writes: `OUT.rankR-of-N.h5` beside `OUT.h5`."""
    path = Path(output)
    return path.with_name(f"{path.stem}.rank{rank:03d}-of-{world_size:03d}{path.suffix}")


def merge_shards(
    parts: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    batch_size: int,
    *,
    producer: str = "caloforge generate (merged)",
) -> Path:
    """Interleave the files of a sharded `generate` back into one, batch by batch.

    Batch i of the whole run is batch i // N of part i mod N (N = len(parts)). Streams one
    batch at a time; the merged file appears only once complete.
    """
    sources = [open_showers(p) for p in parts]
    try:
        geometry = sources[0].geometry
        total = sum(len(s) for s in sources)
        with ShowerWriter(output, geometry, producer=producer) as writer:
            for i in range(math.ceil(total / batch_size)):
                source, local = sources[i % len(sources)], i // len(sources)
                rows = np.arange(local * batch_size, min((local + 1) * batch_size, len(source)))
                if len(rows) == 0:
                    raise CaloforgeError(
                        f"{parts[i % len(sources)]}: holds too few showers for batch {i} of a "
                        f"merge of {len(parts)} parts with batch size {batch_size}"
                    )
                writer.write(source.take(rows))
    finally:
        for source in sources:
            source.close()
    return Path(output)
