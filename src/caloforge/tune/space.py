"""The search space of `caloforge tune`: a small YAML file naming recipe entries by dotted path.

    parameters:
      training.optimizer.lr_generator: {low: 1.0e-4, high: 3.0e-3, log: true}
      training.batch_size: {low: 32, high: 256, log: true}      # integers: both bounds are
      transform.power: {low: 0.5, high: 1.0}
      model.shape_hidden: {choices: [64, 128, 256]}
      model.shape_steps: {type: int, low: 1, high: 6}
      training.optimizer.betas: {choices: [[0.5, 0.999], [0.9, 0.999]]}

Each entry is a dotted path into the run config, exactly as `caloforge train` overrides take
them (`model.`, `transform.`, `training.`), and one of three kinds:

- a range of numbers, `low` to `high` (`type: float`, or `int`, which is also what two
  integer bounds mean), optionally `log: true` (sampled evenly in the logarithm; both bounds
  must be > 0) or `step:` (a grid from `low`; not with `log`);
- a list of `choices` (any YAML values, lists included).

A space is checked whole before any trial: every entry must name a setting of the recipe and
each bound and choice must be a value the recipe accepts there (the config's own checks, so
`training.optimizer.lr_generator: {low: 0, ...}` is refused with the config's message). The
entries that decide which showers are held out for judging (`training.fractions`,
`training.split_seed`) and those `tune` sets for the budget cannot be searched.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caloforge.errors import CaloforgeError
from caloforge.training.config import RunConfig, parse_config

__all__ = [
    "FIXED_BY_TUNE",
    "Parameter",
    "SearchSpace",
    "SearchSpaceError",
    "load_space",
    "parse_space",
    "with_values",
]

# Entries a space may not search: the held-out split (the showers every trial is judged on
# must be the same) and what `tune` sets itself for the budget.
FIXED_BY_TUNE = {
    "training.fractions": "decides the held-out showers every trial is judged on",
    "training.split_seed": "decides the held-out showers every trial is judged on",
    "training.max_steps": "is the budget (--budget-steps)",
    "training.epochs": "is set by the budget (--budget-steps, --budget-minutes)",
}
_RANGE_KEYS = {"type", "low", "high", "log", "step"}
_CHOICE_KEYS = {"choices"}
_SECTIONS = ("model", "transform", "training")


class SearchSpaceError(CaloforgeError):
    """A search space that cannot be searched: the message names the file and the entry."""


@dataclass(frozen=True)
class Parameter:
    """One searched entry of the recipe.

    path: dotted path into the run config (`training.optimizer.lr_generator`).
    kind: "float", "int" or "choice".
    low, high: the range's bounds (inclusive), for "float" and "int".
    log: sampled evenly in log(value).
    step: the grid's spacing from `low` (None: continuous, or every integer).
    choices: the values of a "choice" entry (any YAML values).
    """

    path: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def labels(self) -> tuple[Any, ...]:
        """The choices as the optimiser sees them: the values themselves when they are plain
        numbers, strings, booleans or null; their JSON text when any is a list or a mapping
        (the optimiser's categories must be plain values)."""
        if all(c is None or isinstance(c, bool | int | float | str) for c in self.choices):
            return self.choices
        return tuple(json.dumps(c) for c in self.choices)

    def value_of(self, sampled: Any) -> Any:
        """The recipe's value for what the optimiser sampled (a label back to its choice)."""
        if self.kind != "choice":
            return sampled
        return self.choices[self.labels.index(sampled)]

    def bounds(self) -> list[Any]:
        """The extreme values a trial may give this entry (for checking them up front)."""
        if self.kind == "choice":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The searched entries, in the file's order; `source` names the file in messages."""

    parameters: tuple[Parameter, ...]
    source: str = "search space"

    def to_dict(self) -> dict[str, Any]:
        """The space as a plain mapping (stored with the study: a resume must search the same)."""
        return {"parameters": {p.path: p.to_dict() for p in self.parameters}}

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.parameters]


def with_values(raw: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of the raw config mapping with each dotted path set to its value, as
    `caloforge train`'s KEY=VALUE overrides set them (missing sections are created)."""
    out: dict[str, Any] = copy.deepcopy(dict(raw))
    for path, value in values.items():
        keys = path.split(".")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise SearchSpaceError(f"'{path}': '{key}' is not a section of the config")
        node[keys[-1]] = copy.deepcopy(value)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parameter(path: str, spec: Any, where: str) -> Parameter:
    """One entry read and checked on its own (its place in the recipe is checked later)."""
    name = f"{where}: parameter '{path}'"
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(
            f"{name}: expected a mapping such as {{low: 1, high: 10}} or {{choices: [a, b]}}, "
            f"got {spec!r}"
        )
    keys = set(spec)
    if "choices" in keys:
        extra = keys - _CHOICE_KEYS
        if extra:
            raise SearchSpaceError(
                f"{name}: 'choices' takes no {', '.join(sorted(map(str, extra)))}"
            )
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{name}: choices must be a non-empty list, got {choices!r}")
        texts = [json.dumps(c, sort_keys=True) for c in choices]
        if len(set(texts)) != len(texts):
            raise SearchSpaceError(f"{name}: choices repeat a value: {choices!r}")
        return Parameter(path, "choice", choices=tuple(choices))
    unknown = keys - _RANGE_KEYS
    if unknown:
        raise SearchSpaceError(
            f"{name}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; a range takes "
            "type, low, high, log, step; a list of values takes choices"
        )
    if "low" not in keys or "high" not in keys:
        raise SearchSpaceError(f"{name}: a range needs both low and high (or give choices)")
    low, high = spec["low"], spec["high"]
    if not (_number(low) and _number(high)):
        raise SearchSpaceError(
            f"{name}: low and high must be finite numbers, got {low!r}, {high!r}"
        )
    kind = spec.get("type", "int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise SearchSpaceError(f"{name}: type must be int or float, got {kind!r}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise SearchSpaceError(f"{name}: an int range needs integer bounds, got {low!r}, {high!r}")
    if low >= high:
        raise SearchSpaceError(f"{name}: low must be below high, got low {low!r}, high {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{name}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise SearchSpaceError(
            f"{name}: a log range needs bounds > 0, got low {low!r}, high {high!r}"
        )
    step = spec.get("step")
    if step is not None:
        if not _number(step) or step <= 0:
            raise SearchSpaceError(f"{name}: step must be a number > 0, got {step!r}")
        if log:
            raise SearchSpaceError(f"{name}: step cannot be combined with log")
        if kind == "int" and not float(step).is_integer():
            raise SearchSpaceError(f"{name}: an int range needs an integer step, got {step!r}")
        if step > high - low:
            raise SearchSpaceError(
                f"{name}: step {step!r} is wider than the range {low!r} to {high!r}"
            )
    cast = int if kind == "int" else float
    return Parameter(
        path,
        kind,
        low=cast(low),
        high=cast(high),
        log=log,
        step=None if step is None else cast(step),
    )


def parse_space(spec: Any, base: Mapping[str, Any], *, source: str = "search space") -> SearchSpace:
    """A checked `SearchSpace` from a parsed YAML mapping, against `base`, the raw config
    mapping the trials start from (a preset or file, with the command line's overrides).

    Raises `SearchSpaceError` naming `source` and the entry: not a mapping, an unknown key,
    low >= high, a log range with a bound <= 0, empty or repeated choices, a path that is not
    a setting of the recipe, a bound or choice the recipe refuses, an entry `tune` fixes."""
    if not isinstance(spec, Mapping) or set(spec) != {"parameters"}:
        found = sorted(map(str, spec)) if isinstance(spec, Mapping) else type(spec).__name__
        raise SearchSpaceError(
            f"{source}: expected one key, 'parameters', mapping dotted paths to ranges or "
            f"choices; found {found}"
        )
    entries = spec["parameters"]
    if not isinstance(entries, Mapping) or not entries:
        raise SearchSpaceError(f"{source}: 'parameters' must map at least one dotted path")
    params = []
    for path, item in entries.items():
        if not isinstance(path, str) or path.split(".")[0] not in _SECTIONS:
            raise SearchSpaceError(
                f"{source}: parameter '{path}': the path must start with model., transform. "
                "or training. (as caloforge train's overrides)"
            )
        if path == "model.family":
            raise SearchSpaceError(
                f"{source}: parameter 'model.family': a study searches one family (--config)"
            )
        if path in FIXED_BY_TUNE:
            raise SearchSpaceError(
                f"{source}: parameter '{path}' cannot be searched: it {FIXED_BY_TUNE[path]}"
            )
        params.append(_parameter(path, item, source))
    space = SearchSpace(tuple(params), source)
    check_against(space, base)
    return space


def check_against(space: SearchSpace, base: Mapping[str, Any]) -> None:
    """Check every entry's extreme values one at a time in the recipe `base`, with the
    recipe's own checks: an unknown path or a refused value is named."""
    for p in space.parameters:
        for value in p.bounds():
            try:
                config = parse_config(with_values(base, {p.path: value}), source=space.source)
                check_transform(config)
            except CaloforgeError as exc:
                role = "choice" if p.kind == "choice" else "bound"
                raise SearchSpaceError(
                    f"{space.source}: parameter '{p.path}': the {role} {value!r} is refused by "
                    f"the recipe: {exc}"
                ) from None


def check_transform(config: RunConfig) -> None:
    """The transform section must build (its keys are the transform's own): a fitted Box-Cox
    is checked with a placeholder lambda, as the trainer fits it on the data."""
    from caloforge.data.transforms import transform_from_dict

    spec = dict(config.transform)
    if spec.get("name") == "boxcox" and spec.get("lmbda", "fit") == "fit":
        spec["lmbda"] = 0.5
    transform_from_dict(spec)


def load_space(path: str | os.PathLike[str], base: Mapping[str, Any]) -> SearchSpace:
    """Read and check a search-space YAML file (see `parse_space`)."""
    from caloforge.config import read_yaml

    p = Path(path)
    spec = read_yaml(p, "search space file", SearchSpaceError)
    return parse_space(spec, base, source=str(p))
