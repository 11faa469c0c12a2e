"""Errors a user can act on.

Every error raised for a user's mistake (a bad file, a bad option, a bad config) is a
`CaloforgeError`. The CLI prints its message and exits with a non-zero code instead of a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike
from typing import Any


class CaloforgeError(Exception):
    """A problem with the user's input, named precisely enough to fix it."""

    exit_code = 2


class InputFileError(CaloforgeError):
    """A file that is missing, unreadable, of the wrong format or with bad contents.

    The message always names the file and, where one is involved, the key (dataset) and what
    was expected and found.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        problem: str,
        *,
        key: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        self.expected = expected
        self.found = found
        where = f"{self.path}" + (f", key '{key}'" if key is not None else "")
        message = f"{where}: {problem}"
        if expected is not None:
            message += f"; expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)


class GeometryError(CaloforgeError):
    """An unknown geometry name or an invalid geometry description."""


class ConditionError(CaloforgeError):
    """A requested condition (energy, angle, ...) outside what a geometry supports."""


class OutputError(CaloforgeError):
    """An output that cannot be written where asked: a folder or a file in the way, no
    permission, a full disk, an input it would overwrite, or a run folder in use."""


def yaml_problem(exc: Any) -> str:
    """A YAML parser's error (PyYAML's `MarkedYAMLError`, several lines with the text quoted)
    as one line: "expected ',' or ']', but got '<stream end>' at line 2, column 4"."""
    problem = getattr(exc, "problem", None)
    if not problem:
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def one_line(text: str) -> str:
    """`text` with its line breaks written as \\n: a message stays one line whatever a
    value or a file name in it holds."""
    return text.replace("\r", "\\r").replace("\n", "\\n")
