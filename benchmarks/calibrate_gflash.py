"""Calibrate the parametrized (gflash) engine to the Geant4 engine, per material family.

    python benchmarks/calibrate_gflash.py sample clic-25      # Geant4 showers at fixed energies
    python benchmarks/calibrate_gflash.py fit clic-25         # fit, write the package's table
    python benchmarks/calibrate_gflash.py compare clic-25     # before/after, per energy
    python benchmarks/calibrate_gflash.py taper clic-angle-51 --reference 'G4A/part-*.h5'
                                                              # the far halo, on a wide grid
    python benchmarks/calibrate_gflash.py validate clic-25 --reference 'G4/part-000[4-9].h5' \
        --energy 10:200 --calibration none --label bare      # `caloforge validate` + targets

`sample` makes Geant4 showers at a ladder of fixed energies (the geometry's other conditions
drawn as `simulate` draws them) into `$CALOFORGE_DATA/geant4/calibration/` (default
~/caloforge-data), one file per energy, each made once. `fit` adjusts the correction factors
of `caloforge.simulation.calibration` so that the parametrized showers match the first half
of those samples in the quantities the issue names (longitudinal profile and its
fluctuations, transverse width per layer, response, resolution; `caloforge.simulation.
calibrate`), and writes the fitted table into the package. `compare` holds the bare and the
calibrated engine to the second half. `validate` holds the engine to a Geant4 reference set
of its own (showers of a spectrum of energies) as the issue's targets are stated: it draws as
many parametrized showers with `caloforge simulate` (the same energy range and spectrum, a
fixed seed: `simulate` cannot take the conditions of a file), runs `caloforge validate` and
adds what its report leaves out, the mean share of the visible energy and the transverse
second moment in each layer holding over 1 % of it, overall and in the report's energy bins;
it writes `metrics.json`, `targets.json` and `summary.txt` into
`benchmarks/results/calibration-<geometry>-validate-<label>/`.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from caloforge.data.canonical import open_canonical
from caloforge.geometry import load_geometry
from caloforge.simulation import calibrate
from caloforge.simulation.calibration import TABLES, Calibration, family_of, for_geometry
from caloforge.simulation.run import simulate_to_file
from caloforge.validation.features.one_pass import compute_features

RESULTS = Path(__file__).resolve().parent / "results"

LADDERS = {
    "clic-25": (2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0),
    "lhcb-30": (2.0, 5.0, 10.0, 20.0, 50.0, 100.0),
}
SAMPLE_SEED = 2001
# Held to Geant4 by `validate` (and its wide grid fits `taper`): the table of its material
# family acts along the track.
VALIDATE_ONLY = ("clic-angle-51",)


def data_folder() -> Path:
    root = Path(os.environ.get("CALOFORGE_DATA", "~/caloforge-data")).expanduser()
    return root / "geant4" / "calibration"


def sample_path(geometry: str, energy: float) -> Path:
    return data_folder() / f"{geometry}-{energy:g}GeV.h5"


def sample(geometry: str, n: int, workers: int) -> None:
    for energy in LADDERS[geometry]:
        path = sample_path(geometry, energy)
        if path.exists():
            continue
        simulate_to_file(
            path,
            geometry=geometry,
            n=n,
            energy=(energy, energy),
            seed=SAMPLE_SEED,
            workers=workers,
            engine="geant4",
            progress=True,
        )
        print(f"wrote {path}", flush=True)


def references(geometry: str, fold: str) -> dict[float, calibrate.Reference]:
    """The Geant4 samples: the first half of each file (`fit`) or the second (`held-out`)."""
    out = {}
    for energy in LADDERS[geometry]:
        path = sample_path(geometry, energy)
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `sample {geometry}` first")
        with open_canonical(path) as source:
            batch = source.read(0, len(source))
        half = len(batch) // 2
        part = batch.subset(slice(0, half) if fold == "fit" else slice(half, None))
        out[energy] = calibrate.Reference(part.showers, dict(part.conditions))
    return out


def matching(patterns: list[str]) -> list[str]:
    """The files the paths or globs name, sorted; exits where none matches."""
    files = sorted(p for pattern in patterns for p in glob.glob(os.path.expanduser(pattern)))
    if not files:
        raise SystemExit(f"no file matches {patterns}")
    return files


def bands(patterns: list[str], n_bands: int) -> dict[float, calibrate.Reference]:
    """Reference showers of a spectrum of energies (files or globs) in `n_bands` log-spaced
    bands of energy (as `caloforge validate` bins them), keyed by each band's geometric mean
    energy."""
    files = matching(patterns)
    showers, energy = [], []
    for path in files:
        with open_canonical(path) as source:
            batch = source.read(0, len(source))
        showers.append(batch.showers)
        energy.append(np.asarray(batch.conditions["energy"], dtype=np.float64))
    cells, e = np.concatenate(showers), np.concatenate(energy)
    edges = np.geomspace(e.min(), e.max() * (1 + 1e-9), n_bands + 1)
    out = {}
    for lo, hi in itertools.pairwise(edges):
        keep = (e >= lo) & (e < hi)
        key = round(float(np.exp(np.log(e[keep]).mean())), 3)
        out[key] = calibrate.Reference(cells[keep], {"energy": e[keep]})
    return out


def fit(
    geometry_name: str,
    n: int,
    rounds: int,
    out: Path | None,
    resume: bool,
    spectrum_sets: list[str],
    n_bands: int,
    evaluations: int,
    only: list[str] | None = None,
    start_with: dict[str, float] | None = None,
    start_table: Path | None = None,
) -> Calibration:
    geometry = load_geometry(geometry_name)
    refs = references(geometry_name, "fit")
    described = (
        f"{geometry_name}, energies {', '.join(f'{e:g}' for e in refs)} GeV,"
        f" {len(next(iter(refs.values())).showers)} showers each; seed {SAMPLE_SEED}"
    )
    if spectrum_sets:
        spectrum = bands(spectrum_sets, n_bands)
        refs.update(spectrum)
        names = ", ".join(Path(p).name for p in spectrum_sets)
        total = sum(len(r.showers) for r in spectrum.values())
        described += f"; {names}: {total} showers in {n_bands} bands"
    if only:
        kept = "the package's table" if resume else "the fit's start"
        described += f"; only {', '.join(only)} fitted, the rest from {kept}"
    first = for_geometry(geometry) if resume else calibrate.FIT_START
    if start_table is not None:  # a table fitted before, not yet the package's
        first = Calibration.from_dict(json.loads(start_table.read_text()), str(start_table))
        described += f"; started from {start_table.name}"
    if start_with:  # a new factor at zero may sit where it has no gradient: move it inside
        first = replace(first, **start_with)
        described += "; started at " + ", ".join(f"{k}={v:g}" for k, v in start_with.items())
    start = time.perf_counter()
    result, report = calibrate.fit(
        geometry,
        refs,
        n=n,
        rounds=rounds,
        evaluations=evaluations,
        start=first,
        only=only,
        fitted_on=f"Geant4 engine ({described})",
    )
    report["seconds"] = time.perf_counter() - start
    print(json.dumps(report, indent=1))
    path = out or TABLES / f"{family_of(geometry)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace(result, family=family_of(geometry)).to_json())
    print(f"wrote {path}:\n{result.to_json()}")
    return result


def compare(geometry_name: str, n: int) -> None:
    geometry = load_geometry(geometry_name)
    held_out = references(geometry_name, "held-out")
    rows = {
        "bare": calibrate.compare(geometry, Calibration(), held_out, n=n),
        "calibrated": calibrate.compare(geometry, for_geometry(geometry), held_out, n=n),
    }
    print(f"{geometry_name}: the parametrized engine against held-out Geant4 showers")
    print("(relative differences; share and width over the layers above 1 %: RMS, max, in tol.)")
    columns = (
        "response",
        "resolution",
        "share_rms",
        "share_max",
        "share_within",
        "width_rms",
        "width_max",
        "width_within",
    )
    print(f"{'E GeV':>6} {'engine':>10} " + " ".join(f"{c:>12}" for c in columns))
    for label, table in rows.items():
        for row in table:
            print(
                f"{row['energy']:6g} {label:>10} " + " ".join(f"{row[c]:+12.3f}" for c in columns)
            )


def taper(geometry_name: str, reference: list[str], n: int, evaluations: int, out: Path | None):
    """Fit the far halo's taper of the family's table on a wide grid's Geant4 showers (the
    first `n` of the files), keep the rest of the table, and write it."""
    from caloforge.simulation import calibrate_taper

    geometry = load_geometry(geometry_name)
    files = matching(reference)
    showers, conditions, left = [], {}, n
    for path in files:
        if left <= 0:
            break
        with open_canonical(path) as source:  # the first `n` showers, no more read
            batch = source.read(0, min(left, len(source)))
        left -= len(batch)
        showers.append(batch.showers)
        for key, value in batch.conditions.items():
            conditions.setdefault(key, []).append(np.asarray(value))
    all_showers = np.concatenate(showers)
    joined = {k: np.concatenate(v) for k, v in conditions.items()}
    shares = calibrate_taper.ring_shares(all_showers, geometry)
    start = for_geometry(geometry)
    began = time.perf_counter()
    fitted, report = calibrate_taper.fit_taper(
        geometry, shares, joined, start, evaluations=evaluations
    )
    report["seconds"] = time.perf_counter() - began
    report["reference"] = files
    report["showers"] = len(all_showers)
    print(json.dumps(report, indent=1))
    names = ", ".join(Path(f).name for f in files)
    fitted = replace(
        fitted,
        fitted_on=f"{start.fitted_on}; taper on {geometry_name} ({names}: "
        f"{len(all_showers)} showers)",
    )
    path = out or TABLES / f"{family_of(geometry)}.json"
    path.write_text(replace(fitted, family=family_of(geometry)).to_json())
    result = RESULTS / f"calibration-{geometry_name.replace('-', '')}-taper.json"
    result.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path} and {result}")


def layer_features(paths: list[str]) -> dict[str, np.ndarray]:
    """Per shower: primary energy (GeV), visible energy per layer (GeV) and the transverse
    second moment per layer (mm^2, the mean of x and y about the layer's own centre). A
    summed readout (lhcb-30) is one layer."""
    parts: dict[str, list[np.ndarray]] = {}
    for path in paths:
        with open_canonical(path) as source:
            f = compute_features(source, batch_size=250)
        layers = f.get("longitudinal_profile")
        columns = {
            "energy": f["condition/energy"],
            "layers": f["total_energy"][:, None] if layers is None else layers,
            "m2": 0.5 * (f["width_x_layer"] ** 2 + f["width_y_layer"] ** 2),
        }
        if "condition/theta" in f:  # inclined tracks: the direction and each axis apart
            columns |= {  # degrees (the geometry's unit is the radian)
                "theta": np.degrees(f["condition/theta"]),
                "measured_theta": np.degrees(f["measured_theta"]),
                "m2_x": f["width_x_layer"] ** 2,
                "m2_y": f["width_y_layer"] ** 2,
            }
        for key, value in columns.items():
            parts.setdefault(key, []).append(value)
    return {k: np.concatenate(v) for k, v in parts.items()}


THETA_BINS = (60.0, 75.0, 90.0, 105.0, 120.0)


def inclined_targets(
    reference: dict[str, np.ndarray], generated: dict[str, np.ndarray]
) -> list[dict[str, object]]:
    """Inclined incidence, per bin of the track's theta (degrees): the direction measured from
    the layers' barycentres (mean and spread, both sets), and, per layer over 1 % of the
    reference's visible energy, generated / reference - 1 of the mean share and of the mean
    second moment along x (across the tilt) and along y (in the plane of the tilt)."""
    rows: list[dict[str, object]] = []
    for low, high in itertools.pairwise(THETA_BINS):
        row: dict[str, object] = {"low": low, "high": high}
        means = []
        for label, f in (("reference", reference), ("generated", generated)):
            keep = (f["theta"] >= low) & (f["theta"] < high + 1e-9)
            residual = f["measured_theta"][keep] - f["theta"][keep]
            residual = residual[np.isfinite(residual)]
            row[f"n_{label}"] = int(keep.sum())
            row[f"theta_residual_{label}"] = float(residual.mean())
            row[f"theta_spread_{label}"] = float(residual.std(ddof=1))
            layers = f["layers"][keep]
            share = layers / np.maximum(layers.sum(axis=1, keepdims=True), 1e-30)
            means.append((share.mean(0), f["m2_x"][keep].mean(0), f["m2_y"][keep].mean(0)))
        (s_r, x_r, y_r), (s_g, x_g, y_g) = means
        used = np.flatnonzero(s_r > calibrate.MIN_SHARE)
        row["layers"] = used.tolist()
        for key, g, r in (("share", s_g, s_r), ("m2_x", x_g, x_r), ("m2_y", y_g, y_r)):
            deviation = g[used] / r[used] - 1.0
            row[key] = deviation.tolist()
            row[f"{key}_max"] = float(np.abs(deviation).max())
            # weighted by the layers' shares: the deep, sparse layers' noisy means count less
            row[f"{key}_mean"] = float(np.average(np.abs(deviation), weights=s_r[used]))
        rows.append(row)
    return rows


def layer_targets(
    reference: dict[str, np.ndarray], generated: dict[str, np.ndarray], low: float, high: float
) -> dict[str, object]:
    """Per layer holding over 1 % of the reference's visible energy (in [low, high) GeV):
    generated / reference - 1 of the mean share of the visible energy and of the mean
    transverse second moment, with standard errors of both sets' means."""
    out: dict[str, object] = {"low": low, "high": high}
    stats = []
    for f in (reference, generated):
        keep = (f["energy"] >= low) & (f["energy"] < high)
        layers = f["layers"][keep]
        share = layers / np.maximum(layers.sum(axis=1, keepdims=True), 1e-30)
        m2 = f["m2"][keep]
        n = max(int(keep.sum()), 1)
        stats.append(
            (
                share.mean(axis=0),
                share.std(axis=0) / np.sqrt(n),
                m2.mean(axis=0),
                m2.std(axis=0) / np.sqrt(n),
                int(keep.sum()),
            )
        )
    (s_r, e_r, m_r, em_r, n_r), (s_g, e_g, m_g, em_g, n_g) = stats
    used = np.flatnonzero(s_r > calibrate.MIN_SHARE)
    share = s_g[used] / s_r[used] - 1.0
    share_err = (s_g[used] / s_r[used]) * np.hypot(e_r[used] / s_r[used], e_g[used] / s_g[used])
    m2 = m_g[used] / m_r[used] - 1.0
    m2_err = (m_g[used] / m_r[used]) * np.hypot(em_r[used] / m_r[used], em_g[used] / m_g[used])
    out.update(
        n_reference=n_r,
        n_generated=n_g,
        layers=used.tolist(),
        share=share.tolist(),
        share_error=share_err.tolist(),
        second_moment=m2.tolist(),
        second_moment_error=m2_err.tolist(),
        share_max=float(np.abs(share).max()),
        share_within=int((np.abs(share) <= calibrate.TOLERANCE["share"]).sum()),
        second_moment_max=float(np.abs(m2).max()),
        second_moment_within=int((np.abs(m2) <= calibrate.TOLERANCE["width"]).sum()),
    )
    return out


def validate(
    geometry_name: str,
    reference: list[str],
    energy: str,
    calibration: str,
    label: str,
    seed: int,
    spectrum: str | None,
    given: tuple[Path, str] | None = None,
) -> None:
    """`given`: a file of parametrized showers made beforehand and how it was made, used
    instead of simulating (an earlier version of the engine, say)."""
    files = matching(reference)
    n = 0
    for path in files:
        with open_canonical(path) as source:
            n += len(source)
    out = RESULTS / f"calibration-{geometry_name.replace('-', '')}-validate-{label}"
    cli = [sys.executable, "-m", "caloforge"]
    with tempfile.TemporaryDirectory(prefix="calibrate-validate-") as tmp:
        generated = str(Path(tmp) / "gflash.h5")
        simulate = [
            *cli, "simulate", "--engine", "gflash", "--calibration", calibration,
            "--geometry", geometry_name, "--n", str(n), "--energy", energy,
            *(["--spectrum", spectrum] if spectrum else []),
            "--seed", str(seed), "--workers", "1", "-o", generated,
        ]  # fmt: skip
        made_by = " ".join(["caloforge", *simulate[len(cli) :]])
        if given is None:
            subprocess.run(simulate, check=True, stderr=subprocess.DEVNULL)
        else:
            generated, made_by = str(given[0]), given[1]
        report = Path(tmp) / "report"
        command = [
            *cli, "validate", "--reference", *files, "--generated", generated,
            "--out", str(report), "--workers", "1", "--seed", "0",
            "--labels", f"Geant4,gflash-{label}",
        ]  # fmt: skip
        run = subprocess.run(command, check=True, capture_output=True, text=True)
        metrics = json.loads((report / "metrics.json").read_text())
        ref, gen = layer_features(files), layer_features([generated])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(report / "metrics.json", out / "metrics.json")
    edges = metrics["bins"]["energy"]
    lo, hi = edges[0], edges[-1] * (1 + 1e-9)
    bins = [layer_targets(ref, gen, lo, hi)]
    bins += [layer_targets(ref, gen, a, b * (1 + 1e-9)) for a, b in itertools.pairwise(edges)]
    targets: dict[str, object] = {
        "reference": files,
        "generated": made_by.replace(str(Path(tempfile.gettempdir())), "$TMP"),
        "layers": bins,
    }
    inclined = inclined_targets(ref, gen) if "theta" in ref else []
    if inclined:
        targets["inclined"] = inclined
    (out / "targets.json").write_text(json.dumps(targets, indent=1) + "\n")
    lines = [f"{geometry_name}, gflash ({label}, --calibration {calibration}) against Geant4:"]
    lines += [f"  reference: {len(files)} files, {n} showers; generated: {targets['generated']}"]
    lines += [line for line in run.stdout.splitlines() if line.startswith(("verdict", "  "))]
    lines.append("energy bin (GeV)   n ref/gen | response  resolution (mu90, sigma90/mu90)")
    for b in metrics["response"]["energy"]:
        lines.append(
            f"  {b['low']:6.1f}-{b['high']:6.1f} {b['n_reference']:5d}/{b['n_generated']:<5d}"
            f" | {100 * b['response_deviation']:+5.1f} +- "
            f"{100 * b['response_deviation_error']:.1f} %  "
            f"{100 * b['resolution_deviation']:+5.1f} +- "
            f"{100 * b['resolution_deviation_error']:.1f} %"
        )
    lines.append("per layer over 1 % (first-last): share and second moment, max |dev|, within tol")
    for b in bins:
        layers = b["layers"]
        assert isinstance(layers, list)
        lines.append(
            f"  {b['low']:6.1f}-{b['high']:6.1f} layers {layers[0]}-{layers[-1]}: "
            f"share max {100 * float(b['share_max']):5.1f} % ({b['share_within']}/{len(layers)})"
            f", second moment max {100 * float(b['second_moment_max']):5.1f} % "
            f"({b['second_moment_within']}/{len(layers)})"
        )
    for b in bins[:1]:
        for key in ("share", "second_moment"):
            values = b[key]
            assert isinstance(values, list)
            lines.append(f"  {key} % by layer: " + " ".join(f"{100 * v:+.0f}" for v in values))
    if inclined:
        lines.append(
            "theta bin (deg)  n ref/gen | measured - true theta, mean (spread) ref, gen | "
            "per layer over 1 %, |dev| weighted by share (max): share, x and y second moments"
        )
    for row in inclined:
        lines.append(
            f"  {row['low']:5.0f}-{row['high']:5.0f} {row['n_reference']:5d}/"
            f"{row['n_generated']:<5d} | {row['theta_residual_reference']:+5.2f} "
            f"({row['theta_spread_reference']:.2f}), {row['theta_residual_generated']:+5.2f} "
            f"({row['theta_spread_generated']:.2f}) deg | "
            + ", ".join(
                f"{name} {100 * float(row[f'{key}_mean']):4.1f} "
                f"({100 * float(row[f'{key}_max']):4.1f}) %"
                for name, key in (("share", "share"), ("x", "m2_x"), ("y", "m2_y"))
            )
        )
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("sample", "fit", "compare", "validate", "taper"))
    parser.add_argument(
        "geometry",
        choices=sorted([*LADDERS, *VALIDATE_ONLY]),
        help=f"(validate only: {', '.join(VALIDATE_ONLY)}, calibrated by its family's table)",
    )
    parser.add_argument(
        "--n",
        type=int,
        help="showers per energy (sample: Geant4, 300; "
        "fit: parametrized per evaluation, 150; compare: 400)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="fit: passes over the stages")
    parser.add_argument(
        "--evaluations",
        type=int,
        default=100,
        help="fit: simulations per Nelder-Mead stage (the lateral factors)",
    )
    parser.add_argument("--out", type=Path, help="fit: write the table here, not into the package")
    parser.add_argument(
        "--resume", action="store_true", help="fit: start from the package's table, not bare"
    )
    parser.add_argument(
        "--spectrum-set",
        nargs="+",
        help="fit: Geant4 files or globs of a spectrum of energies, fitted in bands besides "
        "the ladder (e.g. the training parts of clic25-10-200)",
    )
    parser.add_argument("--bands", type=int, default=5, help="fit: bands of --spectrum-set")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="FACTOR",
        choices=sorted(calibrate.BOUNDS),
        help="fit: vary these factors alone, the others held (with --resume: the table's)",
    )
    parser.add_argument(
        "--start-table", type=Path, help="fit: start from this table (instead of --resume's)"
    )
    parser.add_argument(
        "--start-with",
        nargs="+",
        metavar="FACTOR=VALUE",
        default=[],
        help="fit: these factors of the start (the package's table with --resume) set so",
    )
    parser.add_argument("--reference", nargs="+", help="validate: Geant4 files or globs")
    parser.add_argument("--energy", default="10:200", help="validate: energy range, GeV")
    parser.add_argument(
        "--spectrum",
        help="validate: energy spectrum (default: simulate's for the geometry, as the "
        "reference sets draw theirs: uniform for clic-25, 1/E for lhcb-30)",
    )
    parser.add_argument("--calibration", default="auto", help="validate: auto or none")
    parser.add_argument("--label", default="calibrated", help="validate: name of the results")
    parser.add_argument("--seed", type=int, default=4004, help="validate: simulate's seed")
    parser.add_argument(
        "--generated",
        nargs=2,
        metavar=("FILE", "HOW"),
        help="validate: use these parametrized showers (and say how they were made)",
    )
    args = parser.parse_args(argv)
    if args.command not in ("validate", "taper") and args.geometry in VALIDATE_ONLY:
        parser.error(f"{args.geometry}: no ladder of Geant4 samples to {args.command} with")
    if args.command == "sample":
        sample(args.geometry, args.n or 300, args.workers)
    elif args.command == "fit":
        start_with = {}
        for item in args.start_with:
            name, sep, value = item.partition("=")
            if not sep or name not in calibrate.BOUNDS:
                parser.error(f"--start-with takes FACTOR=VALUE of {sorted(calibrate.BOUNDS)}")
            try:
                start_with[name] = float(value)
            except ValueError:
                parser.error(f"--start-with {item}: {value!r} is not a number")
        fit(
            args.geometry,
            args.n or 150,
            args.rounds,
            args.out,
            args.resume,
            args.spectrum_set or [],
            args.bands,
            args.evaluations,
            args.only,
            start_with,
            args.start_table,
        )
    elif args.command == "compare":
        compare(args.geometry, args.n or 400)
    elif args.command == "taper":
        if not args.reference:
            parser.error("taper needs --reference (Geant4 showers on a wide grid)")
        taper(args.geometry, args.reference, args.n or 1000, args.evaluations, args.out)
    else:
        if not args.reference:
            parser.error("validate needs --reference")
        validate(
            args.geometry,
            args.reference,
            args.energy,
            args.calibration,
            args.label,
            args.seed,
            args.spectrum,
            None if args.generated is None else (Path(args.generated[0]), args.generated[1]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
