"""One table, one held-out set: each model (or engine) against the same reference showers.

Issue 16 asks for the new family, gan3d and the parametrized engine side by side against
Geant4. Each `--model NAME=SOURCE` is either a checkpoint (a folder, a run, or
`pretrained:NAME`), which generates with the reference's own conditions on `--backend`, or
`file:PATH`, showers made beforehand (for the gflash engine: `caloforge simulate` with the
reference's energy range). Every entry goes through the same `caloforge validate` (all
showers in the cell-level subsample, seed 0, no plots) and the same shape deviations as
benchmarks/flow_match.py (mean longitudinal profile, transverse widths per energy bin), and
the training physics check's layer-width error (`layer widths`: 2 |Wg - Wr| / (Wg + Wr) of
each layer's mean width, weighted by the layer's energy share). A
markdown table goes to stdout, everything to --json.

    python benchmarks/compare_models.py --reference heldout.h5 \\
        --model flow-match=runs/fm --model gan3d=runs/gan3d --model gflash=file:gflash.h5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from caloforge.data.io import open_showers
from caloforge.training.physics_check import width_error
from flow_match import run_cli, shape_deviations


def _generate(source: str, reference: Path, n: int, backend: str, out: Path) -> dict:
    """Showers of one entry: generated from a checkpoint, or a file given as is."""
    if source.startswith("file:"):
        return {"file": Path(source[len("file:") :]), "generation_s": None}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    run_cli(
        [
            *("generate", "--checkpoint", source, "--conditions-from", str(reference)),
            *("--n", str(n), "--seed", "7", "--backend", backend, "-o", str(out)),
        ]
    )
    return {"file": out, "generation_s": time.perf_counter() - start}


def evaluate(name: str, source: str, reference: Path, n: int, args: argparse.Namespace) -> dict:
    made = _generate(source, reference, n, args.backend, args.out / name / "generated.h5")
    report = args.out / name / "report"
    run_cli(
        [
            *("validate", "--reference", str(reference), "--generated", str(made["file"])),
            *("--out", str(report), "--max-showers", str(n), "--subsample", str(n)),
            *("--no-plots", "--seed", "0", "--labels", f"{args.reference_label},{name}"),
        ]
    )
    metrics = json.loads((report / "metrics.json").read_text())
    with h5py.File(reference) as f:
        ref, ref_energy = f["showers"][:n], np.asarray(f["energy"][:n]).reshape(-1)
    with h5py.File(made["file"]) as f:
        gen, gen_energy = f["showers"][:n], np.asarray(f["energy"][:n]).reshape(-1)
    edges = np.array([b["low"] for b in metrics["response"]["energy"]])
    edges = np.append(edges, metrics["response"]["energy"][-1]["high"])
    headline = metrics["headline"]
    with open_showers(reference) as opened:  # the reference file's own geometry
        geometry = opened.geometry
    return {
        "source": source,
        "showers": len(gen),
        "generation_s": made["generation_s"],
        "auc_low_level": headline["classifier_auc_low_level"]["value"],
        "auc_high_level": headline["classifier_auc_high_level"]["value"],
        "fpd": headline["fpd"]["value"],  # the report shows it x1e3
        "verdict": metrics.get("verdict"),
        "response_bins": [
            (b.get("response_deviation"), b.get("resolution_deviation"))
            for b in metrics["response"]["energy"]
        ],
        "hits_per_shower": [
            float((ref > 1e-5).sum() / len(ref)),
            float((gen > 1e-5).sum() / len(gen)),
        ],
        "shapes": shape_deviations(ref, gen, ref_energy, edges, generated_energy=gen_energy),
        "layer_width_error": width_error(ref, gen, geometry),
    }


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _percent(values: list[float | None]) -> str:
    return ", ".join("n/a" if v is None else f"{100 * v:+.1f}" for v in values)


def table(results: dict[str, dict], label: str) -> list[str]:
    head = (
        f"| against {label} | AUC features | AUC cells | FPD x1e3 | response per bin % | "
        "resolution per bin % | profile max % | width x per bin % | layer widths | "
        "hits / shower |"
    )
    lines = [head, "|" + " --- |" * 10]
    for name, r in results.items():
        response = [b[0] for b in r["response_bins"]]
        resolution = [b[1] for b in r["response_bins"]]
        shapes = r["shapes"]
        width = [b["width_x"] for b in shapes["bins"]]
        hits = r["hits_per_shower"]
        fpd = None if r["fpd"] is None else 1e3 * r["fpd"]
        fpd_spec = ",.0f" if fpd is not None and fpd >= 100 else ".3g"
        lines.append(
            f"| {name} | {_number(r['auc_high_level'], '.3f')} | "
            f"{_number(r['auc_low_level'], '.3f')} | {_number(fpd, fpd_spec)} | "
            f"{_percent(response)} | {_percent(resolution)} | "
            f"{100 * shapes['all']['profile_max_abs']:.1f} | {_percent(width)} | "
            f"{_number(r.get('layer_width_error'), '.3f')} | {hits[1]:.0f} ({hits[0]:.0f}) |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="held-out showers")
    parser.add_argument("--reference-label", default="Geant4")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=SOURCE",
        help="checkpoint, run, pretrained:NAME, or file:PATH (repeat)",
    )
    parser.add_argument("--n", type=int, default=3000, help="showers of each side")
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--out", type=Path, default=Path("compare-models"))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--tables", type=Path, nargs="+", help="print one table of earlier --json files instead"
    )
    args = parser.parse_args()
    if args.tables:
        merged = {}
        for path in args.tables:
            merged |= json.loads(path.read_text())["results"]
        print("\n".join(table(merged, args.reference_label)))
        return
    results = {}
    for entry in args.model:
        name, sep, source = entry.partition("=")
        if not sep or not name or not source:
            parser.error(f"--model takes NAME=SOURCE, got '{entry}'")
        results[name] = evaluate(name, source, args.reference, args.n, args)
    lines = table(results, args.reference_label)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "table": lines}, indent=1) + "\n")


if __name__ == "__main__":
    main()
