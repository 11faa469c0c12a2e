"""Where the tests find Geant4: the calzone wheel's libraries with the headers archive that
caloforge's developers keep beside the repository (shared/geant4/), or the user's own
`geant4-config`. Without either, the Geant4 tests skip and say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HEADERS = (
    Path(__file__).resolve().parents[1].parent / "shared" / "geant4" / "geant4-11.4.0-include.tgz"
)


def use_shared_headers() -> None:
    """Point CALOFORGE_GEANT4_INCLUDE at the shared headers archive unless it is set."""
    if "CALOFORGE_GEANT4_INCLUDE" not in os.environ and HEADERS.is_file():
        os.environ["CALOFORGE_GEANT4_INCLUDE"] = str(HEADERS)


def geant4_setup():
    """The compiled application with the default physics list, or a skip naming what is
    missing (built once per test session; the compiler's cache makes later sessions fast)."""
    from caloforge.simulation.geant4 import build, prepare

    use_shared_headers()
    try:
        return prepare()
    except build.Geant4NotFoundError as exc:
        pytest.skip(f"no usable Geant4 here: {exc}")
