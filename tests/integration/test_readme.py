"""The README's commands run as written, in order, on the files the earlier ones made.

Every bash block of README.md marked `<!-- readme-test -->` is run here, top to bottom, in
one empty folder, each `caloforge ...` command as a process of its own, as a reader would.
Only the sizes shrink (`SMALLER`: each replacement must find its text, so a changed README
command fails here until the table follows it). The blocks left unmarked need what a test
cannot have: a GPU (`--device cuda`), several processes or machines (`torchrun`), or minutes
of int8 search (`bench ... int8`, run by tests/unit/test_int8.py on its own models).
The foreign files the examples convert are made here as tiny stand-ins of their formats.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from geant4_env import use_shared_headers
from shower_files import make_calochallenge, make_lcd_fixed

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- readme-test -->"
# Training: batches of 2 and one step a command (gan3d's step is most of a command's time), the
# physics check after every step, so that each run folder has a checked best checkpoint.
TINY_TRAINING = "training.check_showers=8 training.window=8 training.check_every=1"

# README text -> what runs here. Sizes only: the commands, options and files stay the same.
SMALLER = [
    ("--n 5000 ", "--n 48 "),
    ("--n 2000 ", "--n 24 "),
    ("--n 10000 ", "--n 12 "),
    ("--n 200 --energy 10:200", "--n 2 --energy 10:200"),
    ("--n 100000 ", "--n 8 "),
    (
        "training.batch_size=32 training.max_steps=300",
        f"training.batch_size=2 training.max_steps=1 {TINY_TRAINING}",
    ),
    ("--resume training.max_steps=400", "--resume training.max_steps=2"),
    (
        "--out runs/full",
        f"--out runs/full training.batch_size=2 training.max_steps=1 {TINY_TRAINING}",
    ),
    (
        "training.batch_size=64 training.loss.energy=0.2 training.max_steps=2000",
        f"training.batch_size=2 training.loss.energy=0.2 training.max_steps=1 {TINY_TRAINING}",
    ),
]


def readme_commands() -> list[str]:
    """The `caloforge` commands of the marked blocks, continuation lines joined."""
    text = README.read_text()
    blocks = re.findall(re.escape(MARK) + r"\s*```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", "", block)
        commands += [line.strip() for line in joined.splitlines() if line.startswith("caloforge ")]
    return commands


def smaller(command: str) -> str:
    for big, small in SMALLER:
        command = command.replace(big, small)
    return command


def test_the_size_table_follows_the_readme():
    commands = readme_commands()
    assert len(commands) >= 15  # the marked blocks were found
    for big, _ in SMALLER:
        assert any(big in c for c in commands), f"README no longer has '{big}': update SMALLER"


def test_the_readme_commands_run_in_order(tmp_path):
    make_lcd_fixed(tmp_path / "EleEscan_1_1.h5", n=4)
    make_calochallenge(tmp_path / "dataset_2_1.hdf5", tmp_path / "binning_dataset_2.xml")
    use_shared_headers()
    for command in readme_commands():
        run = smaller(command)
        if "--engine geant4" in run and not _geant4_available():
            continue  # as the Geant4 tests: skipped where it cannot be had (said below)
        done = subprocess.run(
            [sys.executable, "-m", "caloforge", *shlex.split(run)[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"README command failed: {command}\n{done.stderr[-3000:]}"
        # and says nothing a reader would take for trouble
        assert "warning" not in done.stderr.lower(), f"{command} warned:\n{done.stderr[-3000:]}"


def _geant4_available() -> bool:
    from caloforge.simulation.geant4 import build

    try:
        build.find_geant4()
    except build.Geant4NotFoundError as exc:
        print(f"the README's Geant4 command is not run: {exc}")
        return False
    return True


def test_the_dev_extra_holds_what_the_readme_says():
    """The README: `[dev]` has every extra but `[tensorboard]`; `train` names that extra."""
    import tomllib

    text = " ".join(README.read_text().split())
    assert "`[dev]` has them all but `[tensorboard]`" in text
    extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    dev = set(extras["dev"])
    for name, packages in extras.items():
        if name in ("dev", "tensorboard"):
            continue
        assert set(packages) <= dev, f"[dev] lacks [{name}]: {set(packages) - dev}"
    assert not set(extras["tensorboard"]) & dev, "[dev] has tensorboard: say so in the README"
