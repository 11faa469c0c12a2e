"""The file formats caloforge reads, detected automatically or named by the user.

Each format registers a `FileFormat`: a cheap `sniff(path)` that says whether a file looks like
this format, and `open(path, **options)` that returns a `ShowerSource` in canonical units.
Detection tries the formats in registration order, the canonical format first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caloforge.data.source import ShowerSource
from caloforge.errors import CaloforgeError, InputFileError


@dataclass(frozen=True)
class FileFormat:
    name: str
    description: str
    sniff: Callable[[Path], bool]
    open: Callable[..., ShowerSource]


FORMATS: dict[str, FileFormat] = {}


def register(fmt: FileFormat) -> None:
    FORMATS[fmt.name] = fmt


def _load_builtin() -> None:
    if FORMATS:
        return
    # Imported here so that importing caloforge.data stays cheap; each module registers itself.
    from caloforge.data.formats import canonical_format  # noqa: F401

    for module in ("lcd", "calochallenge", "calogan", "lhcb"):
        try:
            __import__(f"caloforge.data.formats.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"caloforge.data.formats.{module}":
                raise


def format_names() -> list[str]:
    _load_builtin()
    return list(FORMATS)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The name of the first registered format whose sniff accepts `path`."""
    _load_builtin()
    p = Path(path)
    if not p.exists():
        raise InputFileError(p, "file not found")
    if p.is_dir():
        raise InputFileError(p, "is a folder, not a file")
    if p.stat().st_size == 0:
        raise InputFileError(p, "file is empty")
    for fmt in FORMATS.values():
        if fmt.sniff(p):
            return fmt.name
    raise InputFileError(
        p,
        "unrecognised shower file format",
        expected=f"one of: {', '.join(FORMATS)}",
        found="none matched (name one with --format if the detection is wrong)",
    )


def open_source(
    path: str | os.PathLike[str], format: str | None = None, **options: Any
) -> ShowerSource:
    """Open one file as a `ShowerSource`, detecting the format unless `format` is given."""
    _load_builtin()
    if format is None:
        format = detect_format(path)
    elif format not in FORMATS:
        raise CaloforgeError(f"unknown format '{format}'; known formats: {', '.join(FORMATS)}")
    return FORMATS[format].open(Path(path), **options)
