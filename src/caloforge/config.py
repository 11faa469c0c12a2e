"""How caloforge's configs are declared, read and checked: one mechanism for all of them.

A config is a frozen dataclass. Each field declares its type and default once, and, with
`setting(default, help, check=...)`, its meaning (also the command line's help) and its check.
`coerce(cls, values, root)` makes one from plain values (YAML, JSON, a command line's words):
it refuses unknown keys, converts each value to the field's type and constructs the class,
whose `__post_init__` calls `check_fields(self, root)` to convert again (so a config built
directly in Python is held to the same types) and run the fields' checks. The model configs
(`models.base.ModelConfig`), the training config (`training.config.TrainConfig`) and the
validation settings (`validation.config.ValidationConfig`) all go through here.

One rule for values, whatever the config: an integer setting takes an integer or an
integer-valued number (`32.0` from YAML or an override is 32; `32.5` is refused); a number
setting takes any finite number; true/false are booleans only; a list is a tuple; `None` is
only accepted where the type allows it. Strings stand for numbers, booleans, none and lists
(`"1,2,3"`) only with `text=True`, i.e. for values that come from a command line.

Errors name the setting by its dotted path (`training.batch_size`), what was expected and
what was found:

    training.batch_size must be > 0, got -3
    training.batch_size: expected an integer, got 'two' (must be of type int)
    validation.subsample: expected an integer >= 0, got -1
    training.batch_sise: unknown setting; unknown key 'training.batch_sise' (did you mean
        'batch_size'?); known keys: batch_size, epochs, ...

A check words its problem as "must be ..." or "expected ..." (both read after the path, as
the messages users and tests already rely on did). A model config is also read alone (a
checkpoint's `config.json`), so its keys are named within it:
`model config 'gan3d': key 'latent_size' must be a positive integer, got 0`.

Why dataclasses and this module rather than pydantic v2: the configs already were frozen
dataclasses with commented defaults (and must stay importable without a new dependency, as
`import caloforge` must stay fast); the conversions needed are few (int, float, bool, str,
Literal, tuples, optional values, nested configs), so this module is smaller than the
adapters pydantic would need to word its errors our way (its texts, such as "Input should
be a valid integer, got a number with a fractional part", would have to be rewritten to
keep the messages users and tests rely on), and it adds no compiled dependency.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from caloforge.errors import CaloforgeError, yaml_problem

__all__ = [
    "Check",
    "ConfigError",
    "Root",
    "at_least",
    "check_fields",
    "coerce",
    "convert",
    "one_of",
    "positive",
    "read_yaml",
    "setting",
]

T = TypeVar("T")
# A field's check: the problem with a value of the right type ("must be > 0", "expected an
# integer >= 0"), or None when it is fine.
Check = Callable[[Any], str | None]
_NONE_WORDS = ("none", "null", "off")


class ConfigError(CaloforgeError):
    """A setting with a bad value or an unknown name. `path` is its dotted path ("" when the
    problem is not one setting's)."""

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(message)


@dataclass(frozen=True)
class Root:
    """Where a config's settings sit, for its errors: their dotted path (`training`,
    `training.optimizer`), or for a config also read alone, a label before the quoted key
    (`model config 'gan3d'`); and the `ConfigError` class raised."""

    path: str = ""
    label: str = ""
    error: type[ConfigError] = ConfigError

    def child(self, key: str) -> Root:
        return dataclasses.replace(self, path=self.dotted(key))

    def dotted(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def name(self, key: str) -> str:
        """How an error names the setting `key`."""
        return f"{self.label}: key '{self.dotted(key)}'" if self.label else self.dotted(key)

    def fail(self, key: str, problem: str) -> ConfigError:
        """The error of setting `key`: "NAME must be ..., got ..." or "NAME: expected ..."."""
        separator = " " if problem.startswith("must ") else ": "
        return self.error(f"{self.name(key)}{separator}{problem}", path=self.dotted(key))


def setting(
    default: Any,
    help: str,
    *,
    check: Check | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field with its meaning (`help`, also the command line's) and its `check`
    (a nested config: `field(default_factory=..., metadata={"help": ...})`)."""
    return field(default=default, metadata={"help": help, "check": check, "metavar": metavar})


def coerce(cls: type[T], values: Mapping[str, Any], root: Root, *, text: bool = False) -> T:
    """An instance of the config dataclass `cls` from plain `values` converted to the fields'
    declared types (nested configs from mappings). Unknown keys and values that cannot be
    converted raise `root.error` naming the dotted path. text: strings may stand for numbers,
    booleans, none and comma-separated lists (values from a command line)."""
    if not isinstance(values, Mapping):
        where = root.label or root.path or "config"
        raise root.error(f"{where}: expected a mapping of settings, got {values!r}", path=root.path)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in values:
        if key not in names:
            import difflib  # lazy: only a mistake pays for it

            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise root.error(
                f"{root.label or root.dotted(str(key))}: unknown setting; unknown key "
                f"'{root.dotted(str(key))}'{hint}; known keys: {', '.join(names)}",
                path=root.dotted(str(key)),
            )
    converted = {
        key: convert(value, hints[key], root, key, text=text) for key, value in values.items()
    }
    return cls(**converted)


def check_fields(obj: Any, root: Root) -> None:
    """For a config's `__post_init__`: convert each field's value to its declared type (a
    frozen instance is changed in place: lists become tuples, 32.0 becomes 32), then run each
    field's `check` (see `setting`); one error names every bad setting."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        object.__setattr__(obj, f.name, convert(getattr(obj, f.name), hints[f.name], root, f.name))
    problems = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        check = f.metadata.get("check")
        problem = check(value) if check is not None else None
        if problem:
            problems.append(root.fail(f.name, f"{problem}, got {value!r}"))
    if problems:
        raise root.error("; ".join(str(p) for p in problems), path=problems[0].path)


def convert(value: Any, hint: Any, root: Root, key: str, *, text: bool = False) -> Any:
    """`value` as the type `hint` of setting `key`, or `root.error` naming it."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else coerce(hint, value, root.child(key), text=text)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    problem = f"expected {_describe(hint)}, got {value!r}"
    if hint in (int, float, bool, str):
        problem += f" (must be of type {hint.__name__})"
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (text and _is_none_word(value))):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, root, key, text=text)
            except ConfigError:
                continue
        raise root.fail(key, problem)
    if origin is typing.Literal:
        if value in args:
            return value
        raise root.fail(key, problem)
    if origin is tuple:
        items = _items(value, text)
        if items is not None and len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(item, args[0], root, key, text=text) for item in items)
        if items is None or len(items) != len(args):
            raise root.fail(key, problem)
        return tuple(
            convert(item, arg, root, key, text=text) for item, arg in zip(items, args, strict=True)
        )
    converted = _scalar(value, hint, text)
    if converted is _INVALID:
        raise root.fail(key, problem)
    return converted


_INVALID = object()


def _scalar(value: Any, hint: Any, text: bool) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if text and isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return _INVALID
    if hint is str:
        return value if isinstance(value, str) else _INVALID
    if hint not in (int, float):
        raise TypeError(f"settings of type {hint} are not supported")
    if text and isinstance(value, str):
        try:
            value = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            return _INVALID
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return _INVALID
    if hint is float:
        return float(value)
    if isinstance(value, float):  # an integer setting: 32.0 is 32, 32.5 is refused
        return int(value) if value.is_integer() else _INVALID
    return value


def _is_none_word(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _NONE_WORDS


def _items(value: Any, text: bool) -> list[Any] | None:
    """A list's or tuple's items, or with `text` the comma-separated parts of a string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()] if text else None
    if isinstance(value, Sequence):
        return list(value)
    return None


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{_plural(args[0])} separated by commas"
        if len(set(args)) == 1:
            return f"{len(args)} {_plural(args[0])} separated by commas"
        return "a list of " + ", ".join(_describe(a) for a in args)
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a name"}
    return names.get(hint, "none" if hint is type(None) else str(hint))


def _plural(hint: Any) -> str:
    return _describe(hint).removeprefix("a ").removeprefix("an ") + "s"


# --- checks used by several configs -----------------------------------------------------------
def at_least(low: float, *, words: str | None = None) -> Check:
    """A check: the value (None passes) is >= `low`; the problem reads "must be >= low"
    (or `words`)."""

    def check(value: Any) -> str | None:
        if value is None or value >= low:
            return None
        return words or f"must be >= {low}"

    return check


def positive(value: Any) -> str | None:
    """A check: the value (None passes) is > 0."""
    return None if value is None or value > 0 else "must be > 0"


def one_of(*choices: str) -> Check:
    """A check: the value is one of `choices` (for names whose choices are not a Literal)."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


# --- YAML files -------------------------------------------------------------------------------
def read_yaml(
    path: str | os.PathLike[str],
    what: str,
    error: Callable[[str], Exception] = ConfigError,
) -> Any:
    """The document of a YAML file a user wrote (a config, a geometry, a search space).

    Refused, each in one line beginning with the path (`error(message)` is raised): a path
    that is missing or a folder ("{what} not found", "is a folder; expected a {what}"), a file
    that cannot be read or is not text, YAML that does not parse (line and column), and a key
    given twice in one mapping, which PyYAML would silently read as its last value. An empty
    file is None. Otherwise PyYAML's safe loader, unchanged.
    """
    import yaml  # lazy: only a user with a YAML file pays for it

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first is not key_node:
                    raise error(
                        f"{path}: key {key!r} given twice in one mapping (at {_mark(first)} "
                        f"and {_mark(key_node)}); expected each key once"
                    )
            return super().construct_mapping(node, deep=deep)

    p = Path(path)
    if p.is_dir():
        raise error(f"{p}: is a folder; expected a {what}")
    if not p.exists():
        raise error(f"{p}: {what} not found")
    try:
        text = p.read_text()
    except UnicodeDecodeError as exc:
        raise error(f"{p}: not a YAML text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{p}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        return yaml.load(text, Loader=UniqueKeys)
    except yaml.YAMLError as exc:
        raise error(f"{p}: not valid YAML ({yaml_problem(exc)})") from None


def _mark(node: Any) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"
