"""The Makefile's demo: part 2 (Geant4) runs where Geant4 can, and is skipped with a word
where it cannot, instead of failing the demo after part 1. Dry runs (`make -n`) only."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(include: str) -> list[str]:
    """The lines of `make -n demo` (recipe lines printed; the line that starts the sub-make
    for part 2 is run, as make runs $(MAKE) lines even under -n, and prints its output)."""
    # a PATH without geant4-config: only the headers variable decides
    env = {**os.environ, "PATH": "/usr/bin:/bin", "CALOFORGE_GEANT4_INCLUDE": include}
    result = subprocess.run(
        ["make", "-n", "demo", "DEMO_DIR=/nonexistent/demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.splitlines()


def test_demo_part_two_is_skipped_with_a_message_without_geant4() -> None:
    out = dry_run("")
    assert any(line.startswith("part 2 skipped: no Geant4 here") for line in out)
    assert not any("--engine geant4" in line for line in out)
    part_one = "caloforge validate --reference /nonexistent/demo/reference.h5"
    assert any(part_one in line for line in out)
    # the closing list of outputs names no file of the part that did not run
    assert not any("report-pretrained/index.html (part 2)" in line for line in out)


def test_demo_part_two_runs_where_geant4_headers_are_named(tmp_path: Path) -> None:
    out = dry_run(str(tmp_path / "geant4-11.4.0-include.tgz"))
    assert not any(line.startswith("part 2 skipped") for line in out)
    assert any("simulate --engine geant4 --geometry clic-25" in line for line in out)
    assert any("--checkpoint pretrained:clic25-geant4" in line for line in out)
    assert any("report-pretrained/index.html (part 2)" in line for line in out)
