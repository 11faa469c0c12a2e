"""What a shower file holds, at a glance: `caloforge inspect`.

>>> print_summary(summarize("showers.h5"))
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from caloforge.data.canonical import units_of
from caloforge.data.convert import input_format
from caloforge.data.io import expand_paths, open_showers
from caloforge.data.source import ShowerSource, iter_batches
from caloforge.validation.features import response

BATCH_SIZE = 1000


@dataclass(frozen=True)
class Summary:
    """A shower file's layout and a few numbers computed from its first showers.

    condition_ranges: name -> one (min, max) per component, in the condition's unit (one
        pair for scalars such as energy, three for momentum); empty ranges when N = 0.
    energy_ratio: mean over the showers used of visible energy / primary energy.
    occupancy: mean over the showers used of the fraction of cells with energy > 0.
    n_used: how many showers (the first ones) the two means use; NaN means when 0.
    """

    path: str
    format: str
    geometry: str
    n_showers: int
    shower_shape: tuple[int, ...]
    units: Mapping[str, str]
    condition_ranges: Mapping[str, tuple[tuple[float, float], ...]]
    energy_ratio: float
    occupancy: float
    n_used: int


def summarize(
    path: str | os.PathLike[str],
    format: str | None = None,
    max_showers: int = 10000,
    progress: bool = False,
    **options: Any,
) -> Summary:
    """Summarise a shower file (or a glob of files of one geometry) in any readable format.

    The ratio and the occupancy read the first `max_showers` showers in batches; the rest of
    the file is not read. `progress`: a bar while they are read (it goes when done).
    """
    files = expand_paths(path)
    format = input_format(files[0], format)
    source = open_showers(files, format, **options)
    try:
        ratio, occupancy, n_used = _shower_means(
            source, max(0, max_showers), f"reading {path}" if progress else None
        )
        return Summary(
            path=str(path),
            format=format,
            geometry=source.geometry.name,
            n_showers=len(source),
            shower_shape=tuple(source.geometry.shape),
            units=units_of(source.geometry),
            condition_ranges={name: _ranges(values) for name, values in source.conditions.items()},
            energy_ratio=ratio,
            occupancy=occupancy,
            n_used=n_used,
        )
    finally:
        source.close()


def _shower_means(
    source: ShowerSource, max_showers: int, bar_title: str | None = None
) -> tuple[float, float, int]:
    """Mean visible/primary energy ratio and mean occupancy of the first showers, with a
    progress bar titled `bar_title` where one is given."""
    ratio_sum = occupancy_sum = 0.0
    n_used = 0
    bar = None
    if bar_title is not None:
        from tqdm import tqdm

        total = min(len(source), max_showers)
        bar = tqdm(total=total, unit="shower", desc=bar_title, leave=False, mininterval=0.5)
    try:
        for batch in iter_batches(source, BATCH_SIZE, stop=max_showers):
            cells = batch.showers.reshape(len(batch), -1)
            ratio_sum += float(response(batch.showers, batch.energy).sum())
            occupancy_sum += float((cells > 0).mean(axis=1).sum())
            n_used += len(batch)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    if n_used == 0:
        return float("nan"), float("nan"), 0
    return ratio_sum / n_used, occupancy_sum / n_used, n_used


def _ranges(values: np.ndarray) -> tuple[tuple[float, float], ...]:
    if len(values) == 0:
        return ()
    columns = values.reshape(len(values), -1)
    return tuple(
        (float(low), float(high))
        for low, high in zip(columns.min(axis=0), columns.max(axis=0), strict=True)
    )


def print_summary(summary: Summary, file: TextIO | None = None) -> None:
    """Print `summary` as a readable block."""
    out = sys.stdout if file is None else file
    shape = " x ".join(str(s) for s in summary.shower_shape)
    lines = [
        summary.path,
        f"  format        {summary.format}",
        f"  geometry      {summary.geometry}",
        f"  showers       {summary.n_showers} of {shape} cells, "
        f"{summary.units.get('showers', '?')}",
    ]
    for name, ranges in summary.condition_ranges.items():
        unit = summary.units.get(name, "")
        text = ", ".join(f"{low:.4g} : {high:.4g}" for low, high in ranges) or "n/a"
        lines.append(f"  {name:<13} {text} {unit}".rstrip())
    if summary.n_used == 0:  # the means of no showers are undefined: say so, not 'nan'
        lines += ["  E_vis/E       n/a (no showers read)", "  occupancy     n/a"]
    else:
        lines += [
            f"  E_vis/E       {summary.energy_ratio:.4g} (mean of the first {summary.n_used} "
            "showers)",
            f"  occupancy     {100 * summary.occupancy:.3g} % of cells > 0",
        ]
    print("\n".join(lines), file=out)
