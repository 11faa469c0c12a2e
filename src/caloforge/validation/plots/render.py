"""Drawing every plot of the report as PNG, in this process or spread over worker processes.

Drawing is the report's longest step after the metrics, and nearly all of it is matplotlib's
own work per figure (laying out the axes, their ticks and labels, then drawing them; the PNG
encoding is a few per cent): the figures are independent, so with several workers each
process draws some of them. The workers receive the comparison once, without the feature
vectors, which no plot reads.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from caloforge._processes import signals_held, workers_within_descriptors
from caloforge.validation.plots import PLOTS, NotApplicableError, PlotSpec, png_bytes
from caloforge.validation.plots.base import Comparison

# What a plot came to: (spec, PNG bytes or None, the reason it does not apply or "").
Drawn = tuple[PlotSpec, bytes | None, str]

# The comparison a worker process draws from, set once by `_receive`.
_COMPARISON: Comparison | None = None


def draw_png(spec: PlotSpec, comparison: Comparison) -> tuple[bytes | None, str]:
    """One plot as PNG bytes, or None and the reason it does not apply."""
    try:
        figure = spec.draw(comparison)
    except NotApplicableError as exc:
        return None, str(exc)
    return png_bytes(figure), ""


def _receive(comparison: Comparison) -> None:
    global _COMPARISON
    _COMPARISON = comparison


def _draw_by_name(name: str) -> tuple[bytes | None, str]:
    assert _COMPARISON is not None
    spec = next(s for s in PLOTS if s.name == name)
    return draw_png(spec, _COMPARISON)


def _for_plots(comparison: Comparison) -> Comparison:
    """The comparison less what no plot reads: the feature vectors (about 0.6 kB a shower),
    where the scalar features the plots take from them are already at hand."""
    if comparison.scalars is None:
        return comparison

    def without(table: dict) -> dict:
        return {k: v for k, v in table.items() if k != "feature_vector"}

    return dataclasses.replace(
        comparison,
        reference=without(dict(comparison.reference)),
        generated=without(dict(comparison.generated)),
    )


def draw_all(
    comparison: Comparison, workers: int = 1, on_drawn: Callable[[], object] | None = None
) -> list[Drawn]:
    """Every plot of `PLOTS`, in order: drawn by `workers` processes (at most one per plot),
    or in this process when `workers` is 1; `on_drawn()` is called as each one is ready."""
    # Under a low `ulimit -n`, fewer workers or none (a pool that cannot open its pipes
    # fails inside the forkserver, which prints a traceback of its own).
    workers = workers_within_descriptors(min(workers, len(PLOTS)))
    done = on_drawn or (lambda: None)
    if workers <= 1:
        drawn = []
        for spec in PLOTS:
            drawn.append((spec, *draw_png(spec, comparison)))
            done()
        return drawn
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_receive,
        initargs=(_for_plots(comparison),),
    ) as pool:
        with signals_held():  # a submit may start a worker; see `signals_held`
            futures = [pool.submit(_draw_by_name, spec.name) for spec in PLOTS]
        drawn = []
        for spec, future in zip(PLOTS, futures, strict=True):
            drawn.append((spec, *future.result()))
            done()
        return drawn
