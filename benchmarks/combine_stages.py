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
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from caloforge.models.checkpoint import CHECKSUM, CONFIG, WEIGHTS, weights_checksum

ENERGY = ("generator.energy_net.", "generator.ema.energy_net.", "generator.ema_updates")
SHAPE = ("generator.shape_net.", "generator.ema.shape_net.")
SHARED = ("generator.prep.",)


def combine(energy: Path, shape: Path, out: Path) -> dict:
    config = json.loads((energy / CONFIG).read_text())
    other = json.loads((shape / CONFIG).read_text())
    if config["model"] != other["model"] or config.get("model", {}).get("family") != "flow-match":
        raise SystemExit(f"{energy} and {shape}: not two flow-match checkpoints of one model")
    first, second = load_file(str(energy / WEIGHTS)), load_file(str(shape / WEIGHTS))
    if set(first) != set(second):
        raise SystemExit(f"{energy} and {shape}: different weight names")
    weights = {}
    for key, value in first.items():
        if key.startswith(SHARED):
            if not torch.equal(value, second[key]):
                raise SystemExit(f"{key} differs: the checkpoints are not of one run")
            weights[key] = value
        elif key.startswith(SHAPE):
            weights[key] = second[key]
        elif key.startswith(ENERGY):
            weights[key] = value
        else:
            raise SystemExit(f"{key}: neither stage's; update combine_stages.py")
    config["stages"] = {"energy": str(energy), "shape": str(shape)}
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    save_file(weights, str(staging / WEIGHTS))
    config[CHECKSUM] = weights_checksum(staging / WEIGHTS)
    (staging / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for path in (staging / WEIGHTS, staging / CONFIG):
        path.chmod(0o644)
    staging.chmod(0o755)  # mkdtemp's folder is private
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return config["stages"]


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
