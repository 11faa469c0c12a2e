"""Optional dependencies: imported when a feature needs them, with a message that says what to
install when they are missing.

The heavy runtimes (onnx, onnxscript, onnxruntime, openvino, nncf) are extras of the package
(`pip install 'caloforge[onnx]'`, `'caloforge[int8]'`); nothing imports them at import time.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from caloforge.errors import CaloforgeError

__all__ = ["MissingDependencyError", "import_optional"]


class MissingDependencyError(CaloforgeError):
    """An optional package a feature needs is not installed."""


def import_optional(module: str, *, package: str, extra: str, purpose: str) -> ModuleType:
    """`importlib.import_module(module)`, or a `MissingDependencyError` naming the package to
    install and the caloforge extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{package}', which is not installed "
            f"({exc}); install it with: pip install 'caloforge[{extra}]' (or pip install {package})"
        ) from None
