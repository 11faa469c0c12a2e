"""Hyper-parameter and architecture search (`caloforge tune`): a study over entries of a
training recipe, declared in a small YAML search space, trading the fidelity on held-out
showers (the headline of `caloforge validate`) against the generator's cost, with Optuna.

    from caloforge.tune import TuneOptions, run_tune
    outcome = run_tune(TuneOptions(config="flow-match", data=["showers.h5"],
                                   space="space.yaml", trials=30, out="study",
                                   budget_steps=2000))

The modules, by role: `space` (the search space and its checks), `objectives` (fidelity and
cost), `trial` (one trial: train with pruning, judge, time), `study` (storage, resume, the
count of trials, the choice), `runner` (worker processes), `report` (the page and the preset),
`run` (the command). Optuna is an optional dependency: `pip install 'caloforge[tune]'`.

The names below are imported on first use, so that `import caloforge.tune` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caloforge.tune.run import TuneOptions, TuneOutcome, run_tune
    from caloforge.tune.space import SearchSpace, SearchSpaceError, load_space, parse_space

_WHERE = {
    "TuneOptions": "run",
    "TuneOutcome": "run",
    "run_tune": "run",
    "SearchSpace": "space",
    "SearchSpaceError": "space",
    "load_space": "space",
    "parse_space": "space",
}

__all__ = [
    "SearchSpace",
    "SearchSpaceError",
    "TuneOptions",
    "TuneOutcome",
    "load_space",
    "parse_space",
    "run_tune",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'caloforge.tune' has no attribute '{name}'")
    module = importlib.import_module(f"caloforge.tune.{_WHERE[name]}")
    return getattr(module, name)
