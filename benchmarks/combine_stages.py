"""A flow-match checkpoint whose stages come from two checkpoints of one run.

The two stages of flow-match have disjoint parameters and are trained side by side, stage 2
on the true layer energies: each is a separate model that happens to share the optimiser's
steps. They need not be best at the same step (a run on Geant4 clic-25: the layer energies
kept improving to step 6000, the cell shapes were best at step 2000 and grew too narrow
after), so the shipped weights may take each stage where it was best. Both checkpoints must
hold the same preprocessing (the same run: it is fitted once, before the first step).

    python benchmarks/combine_stages.py --energy RUN/checkpoints/step-00006000 \\
        --shape RUN/checkpoints/step-00002000 --out combined

The result is an ordinary checkpoint folder (config.json of the energy checkpoint, with
`stages` naming both sources; model.safetensors; no trainer state: it does not resume).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from caloforge.models.checkpoint import CHECKSUM, load_checkpoint, save_model

# config.json entries save_model writes itself; the rest (training, step, epoch) carry over
WRITTEN = ("model", "transform", "geometry", "caloforge_version", CHECKSUM)


def combine(energy: Path, shape: Path, out: Path) -> dict:
    first = load_checkpoint(energy, family="flow-match")  # checks each weights' checksum
    second = load_checkpoint(shape, family="flow-match")
    if first.config["model"] != second.config["model"]:
        raise SystemExit(f"{energy} and {shape}: not checkpoints of one model")
    target, source = first.bundle.generator, second.bundle.generator
    for (key, a), b in zip(
        target.prep.state_dict().items(), source.prep.state_dict().values(), strict=True
    ):
        if not torch.equal(a, b):
            raise SystemExit(f"prep.{key} differs: the checkpoints are not of one run")
    target.shape_net.load_state_dict(source.shape_net.state_dict())
    target.ema["shape_net"].load_state_dict(source.ema["shape_net"].state_dict())
    extra = {k: v for k, v in first.config.items() if k not in WRITTEN}
    extra["stages"] = {"energy": str(energy), "shape": str(shape)}
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    save_model(staging, first.bundle, first.transform, first.geometry, extra)
    for path in staging.iterdir():
        path.chmod(0o644)
    staging.chmod(0o755)  # mkdtemp's folder is private
    if out.exists():
        for path in out.iterdir():
            path.unlink()
        out.rmdir()
    staging.rename(out)
    return extra["stages"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--energy", type=Path, required=True, help="checkpoint of stage 1")
    parser.add_argument("--shape", type=Path, required=True, help="checkpoint of stage 2")
    parser.add_argument("--out", type=Path, required=True, help="the combined checkpoint")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(combine(args.energy, args.shape, args.out))


if __name__ == "__main__":
    main()
