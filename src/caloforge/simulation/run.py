"""`caloforge simulate`: draw conditions, simulate in batches, stream to a canonical file."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from caloforge.data.canonical import ShowerWriter
from caloforge.data.source import Batch
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry, load_geometry
from caloforge.simulation.conditions import ConditionRanges, sample_conditions
from caloforge.simulation.simulator import ShowerSimulator


def simulate_batches(
    geometry: Geometry,
    ranges: ConditionRanges,
    n: int,
    *,
    seed: int,
    batch_size: int = 256,
    particle: str = "electron",
    first_index: int = 0,
) -> Iterator[Batch]:
    """Yield `n` simulated showers in batches. Reproducible: a batch depends only on the
    seed and the index of its first shower (counted from `first_index`), so appending 1000
    showers to a file of 1000 gives the same file as simulating 2000 at once."""
    if n < 0 or batch_size <= 0:
        raise CaloforgeError(f"need n >= 0 and batch_size > 0, got n={n}, batch_size={batch_size}")
    simulator = ShowerSimulator(geometry, particle=particle)
    for start in range(0, n, batch_size):
        rng = np.random.default_rng([seed, first_index + start])
        size = min(batch_size, n - start)
        conditions = sample_conditions(geometry, ranges, size, rng)
        yield Batch(simulator.simulate(conditions, rng), conditions)


def simulate_to_file(
    output: str | os.PathLike[str],
    *,
    geometry: str | Geometry = "clic-25",
    n: int,
    energy: tuple[float, float] | None = None,
    spectrum: str | None = None,
    theta_deg: tuple[float, float] | None = None,
    point: tuple[float, float] | None = None,
    particle: str = "electron",
    seed: int = 0,
    batch_size: int = 256,
    compression: str = "gzip",
    append: bool = False,
    progress: bool = False,
) -> Path:
    """Simulate `n` showers into a canonical file; returns its path.

    All checks (geometry, ranges) happen before anything is written; the file appears under
    its name only once complete (or, with `append`, grows batch by batch).
    """
    if n <= 0:
        raise CaloforgeError(f"--n must be a positive number of showers, got {n}")
    geo = geometry if isinstance(geometry, Geometry) else load_geometry(geometry)
    theta = None if theta_deg is None else (math.radians(theta_deg[0]), math.radians(theta_deg[1]))
    ranges = ConditionRanges.for_geometry(geo, energy, spectrum, theta, point)
    ShowerSimulator(geo, particle=particle)  # fail on an unsimulable geometry before writing
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="shower", desc=f"simulate {geo.name}", mininterval=0.5)
    producer = f"caloforge simulate (GFlash-style, {particle}, seed {seed})"
    with ShowerWriter(
        output, geo, producer=producer, append=append, compression=compression
    ) as writer:
        # Appending continues the seed's sequence after the showers already in the file.
        for batch in simulate_batches(
            geo, ranges, n, seed=seed, batch_size=batch_size, particle=particle,
            first_index=writer.n,
        ):
            writer.write(batch)
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return Path(output)
