"""`caloforge generate`: conditions in batches, through the pipeline, streamed to a file.

Conditions come from one of two places:
  - drawn from ranges (for what is not given: the checkpoint's training ranges where it
    records them, else the geometry's defaults) exactly as `simulate` draws them: batch
    `[start, start + size)` uses `numpy.random.default_rng([seed, start])`, so `generate`
    and `simulate` with the same seed, batch size and ranges ask for the same conditions;
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

import dataclasses
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from caloforge._arguments import check_integer, check_pair, check_path
from caloforge._files import check_output
from caloforge.data.canonical import ShowerWriter, check_batch_memory, check_room
from caloforge.data.io import expand_paths, open_showers
from caloforge.data.source import Batch
from caloforge.devices import init_distributed
from caloforge.errors import CaloforgeError, ConditionError, InputFileError
from caloforge.generation.auto import AUTO
from caloforge.generation.conditions import training_defaults
from caloforge.generation.pipeline import GeneratedShowers, ShowerPipeline
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
    backend: str = AUTO,
    strict: bool = False,
    progress: bool = False,
    merge: bool = True,
) -> Path:
    """Generate `n` showers with a checkpoint into a canonical file; returns its path.

    checkpoint: a checkpoint folder, or a run folder (its best, else latest checkpoint).
    n: number of showers; required for drawn conditions, defaults to the whole reference
        with `conditions_from` (which may be asked for fewer, its first `n`).
    energy (GeV), theta_deg (degrees), point (mm), spectrum ("uniform" or "inverse"): the
        ranges to draw conditions from; what is left out takes the checkpoint's training
        range where its config records one (`training.condition_ranges`), else the
        geometry's default.
    conditions_from: a shower file (any format `open_showers` reads, or several / a glob) of
        the checkpoint's geometry whose conditions are used one to one, in order.
    batch_size, seed: the showers depend only on these (and the checkpoint), not on `device`
        beyond floating-point differences.
    backend: how the generator runs (`caloforge.generation.backends`: eager, compiled, bf16,
        int8), or "auto" (`caloforge.generation.auto`: the fastest that holds accuracy here,
        said on stderr with `progress` and written in the file's `producer`; should it fail
        on the first batch, eager is used and that said too); the same seed gives the same
        showers up to the backend's precision.
    strict: refuse conditions outside the training range the checkpoint records, instead
        of warning (`OutsideTrainingRangeWarning`) with the number of such showers.

    merge: under torchrun, rank 0 merges the ranks' files into `output` (and removes them);
        without, each rank's file is left as `shard_path(output, rank, world_size)`.

    All checks (device, checkpoint, ranges, reference) happen before anything is written;
    the file appears under its name only once complete. Returns the merged file, or this
    rank's file when not merged.
    """
    check_path("--checkpoint", checkpoint)
    check_path("-o", output)
    batch_size = check_integer("--batch-size", batch_size)
    seed = check_integer("--seed", seed)
    if batch_size <= 0:
        raise CaloforgeError(f"--batch-size must be positive, got {batch_size}")
    if seed < 0:
        raise CaloforgeError(f"--seed must be a non-negative integer, got {seed}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0):
        raise CaloforgeError(f"--n must be a positive number of showers, got {n!r}")
    for option, pair in (("--energy", energy), ("--theta", theta_deg), ("--point", point)):
        check_pair(option, pair)
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
    say = _status(progress and context.rank == 0)
    pipeline = ShowerPipeline.from_checkpoint(checkpoint, device=context.device)
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
        trained = training_defaults(geometry, pipeline.training_ranges)
        given = {"energy": energy, "theta": theta, "point": point}
        taken = [name for name in trained if given[name] is None]
        ranges = ConditionRanges.for_geometry(
            geometry,
            energy if energy is not None else trained.get("energy"),
            spectrum,
            theta if theta is not None else trained.get("theta"),
            point if point is not None else trained.get("point"),
        )
        if taken:
            say(
                "conditions not given, drawn in the checkpoint's training range: "
                + _describe(ranges, taken, geometry)
            )
    assert n is not None
    if backend != "eager":
        if backend == "int8":
            say("backend int8: quantizing with the accuracy guard (status lines follow)")
        share = math.ceil(n / context.world_size)  # this rank's showers, about
        pipeline.set_backend(backend, seed=seed, progress=progress, showers=share)
        if pipeline.choice is not None:
            say(f"backend {pipeline.choice.describe()}")

    def batches() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        # Called twice: once to check the ranges before writing, once to generate. Drawing
        # conditions again is cheap next to the model, and memory stays one batch.
        if reference is not None:
            return _sliced(reference, n, batch_size)
        assert ranges is not None
        return _drawn(geometry, ranges, n, batch_size, seed)

    rank, world = context.rank, context.world_size
    check_batch_memory(geometry, min(n, batch_size))
    check_room(output, geometry, n)  # before the range check below, which goes over all n
    if rank == 0 or strict:  # every rank refuses alike; one warns
        _check_training_range(pipeline, batches(), n, strict)

    def mine() -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        for i, item in enumerate(batches()):
            if i % world == rank:
                yield item

    target = Path(output) if world == 1 else shard_path(output, rank, world)
    if pipeline.backend != "eager":
        say(
            f"backend {pipeline.backend} ({pipeline.engine}): the first batch compiles its graph "
            "(seconds; a minute or more for a large generator)"
        )
    bar = None
    share = _share(n, batch_size, rank, world)
    if progress and rank == 0:
        from tqdm import tqdm

        label = f"generate {geometry.name}" + (f" (rank 0 of {world})" if world > 1 else "")
        bar = tqdm(total=share, unit="shower", desc=label, mininterval=0.5)

    def producer() -> str:  # read after the first batch: a fallback to eager is named
        family = pipeline.generator.config.family
        used = f"{pipeline.backend} ({pipeline.engine})"
        if pipeline.choice is not None:
            used += f", chosen by --backend auto: {pipeline.choice.reason}"
        return (
            f"caloforge generate ({family} checkpoint {Path(pipeline.source).resolve()}, "
            f"seed {seed}, batch size {batch_size}, backend {used})"
        )

    try:
        todo = mine()
        first = next(todo, None)
        done = None
        if first is not None:  # before the file: `auto` may fall back to eager on it
            start, conditions = first
            noise = noise_generator(seed, start)
            if pipeline.choice is not None and pipeline.backend != "eager":
                done = _first_batch(pipeline, conditions, noise, seed, say)
            else:
                done = pipeline(conditions, generator=noise)
        with ShowerWriter(target, geometry, producer=producer(), expected=share) as writer:
            if done is not None:
                writer.write(Batch(done.showers, done.conditions))
                if bar is not None:
                    bar.update(len(done))
            for start, conditions in todo:
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
        merge_shards(parts, output, batch_size, producer=producer())
        for part in parts:
            part.unlink()
    context.barrier("generate: merged")
    return Path(output) if merge else target


def _status(enabled: bool) -> Callable[[str], None]:
    """A status line on stderr (`caloforge generate: ...`) where `enabled`, else nothing."""

    def say(line: str) -> None:
        if enabled:
            print(f"caloforge generate: {line}", file=sys.stderr, flush=True)

    return say


def _describe(ranges: ConditionRanges, names: Sequence[str], geometry: Geometry) -> str:
    """The drawn ranges of `names`, in the units the options take (theta in degrees)."""
    parts = []
    for name in names:
        low, high = getattr(ranges, name)
        unit = geometry.condition(name).unit
        if name == "theta":
            low, high, unit = math.degrees(low), math.degrees(high), "degrees"
        parts.append(f"{name} {low:.4g}:{high:.4g} {unit}".rstrip())
    return ", ".join(parts)


def _first_batch(
    pipeline: ShowerPipeline,
    conditions: dict[str, np.ndarray],
    noise: torch.Generator,
    seed: int,
    say: Callable[[str], None],
) -> GeneratedShowers:
    """The first batch through the backend `auto` chose; should that backend fail to build
    or run here (an export the model does not support, a compiler error), eager instead, said
    on stderr and in the file's producer. Nothing is written before this batch."""
    state = noise.get_state()
    try:
        return pipeline(conditions, generator=noise)
    except (ConditionError, InputFileError):
        raise  # the request's fault, not the backend's: eager would refuse it as well
    except Exception as error:  # any failure of an optional backend
        choice = pipeline.choice
        assert choice is not None
        say(
            f"backend {pipeline.backend} ({pipeline.engine}) failed here "
            f"({type(error).__name__}: {str(error)[:300]}); using eager"
        )
        pipeline.set_backend("eager", seed=seed)
        pipeline.choice = dataclasses.replace(
            choice,
            backend="eager",
            reason=f"{choice.backend} failed here ({type(error).__name__}); {choice.reason}",
        )
        return pipeline(conditions, generator=noise.set_state(state))


def shard_path(output: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """The file rank `rank` of `world_size` writes: `OUT.rankR-of-N.h5` beside `OUT.h5`."""
    path = Path(output)
    return path.with_name(f"{path.stem}.rank{rank:03d}-of-{world_size:03d}{path.suffix}")


def _share(n: int, batch_size: int, rank: int, world: int) -> int:
    """The showers of `rank` when batch i of n showers goes to rank i mod `world` (counted,
    not summed: n may be huge)."""
    batches = -(-n // batch_size)
    mine = len(range(rank, batches, world))
    short = batches * batch_size - n  # the last batch's missing showers
    return mine * batch_size - (short if batches and (batches - 1) % world == rank else 0)


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
        with ShowerWriter(output, geometry, producer=producer, expected=total) as writer:
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
