"""The parametrized simulator against the implementation it replaced, in distribution.

The simulator was restructured for speed (issue 21: float32 spots placed in chunks, one
binomial core/tail split per step, one Gamma draw per cell instead of per spot); its showers
are not the same numbers as before, but they must follow the same distributions. The
reference figures in `simulator_reference.json` are summary statistics of the previous
implementation (git commit 36fc763, before the restructuring) on the same conditions, with
their standard errors, made by running this file as a script against that version:

    git archive 36fc763 src | tar -x -C /tmp/reference
    PYTHONPATH=/tmp/reference/src python tests/integration/test_simulator_reference.py \
        --made-by "caloforge at git commit 36fc763 (before issue 21)" \
        > tests/integration/simulator_reference.json

Each statistic of the current implementation (fewer showers, another seed) must agree with
the reference within `Z_MAX` combined standard errors. The calibrated cases run with the
calibration tables the reference was made with (`REFERENCE_TABLES`): the implementation is
compared here, not the tables, which are refitted as the calibration improves.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from caloforge.geometry import PRESETS
from caloforge.simulation.calibration import Calibration, family_of
from caloforge.simulation.conditions import ConditionRanges, sample_conditions
from caloforge.simulation.simulator import ShowerSimulator
from caloforge.validation.features import centre_and_width, longitudinal_profile, total_energy

REFERENCE = Path(__file__).with_name("simulator_reference.json")
# About 130 statistics are compared: at 4.5 standard errors a correct implementation fails
# one of them about once in a thousand seeds. A response 2 % higher stands out by 4.1 to 21
# errors (four cases of five fail), a tail radius 5 % wider by 4.6 to 12 (all five).
Z_MAX = 4.5
SHOWERS = 400
# Layers below this mean share of the visible energy are left out of the profile.
MIN_SHARE = 0.01

# The tables of commit e793cb1, in the package when the reference was made (each refitted
# since).
REFERENCE_TABLES = {
    "Pb-polystyrene": {
        "Rt_front": 0.22730722168079942,
        "Rt_scale": 0.826686845179361,
        "constant_scale": 0.3986654281616211,
        "p_shift": -0.14930388573617437,
        "response_scale": 1.0694421207942677,
        "response_slope": 0.00019750409804674088,
        "stochastic_scale": 0.681440601348877,
    },
    "W-Si": {
        "Rt_front": -0.15983336296238693,
        "Rt_scale": 1.0645511930535374,
        "T_shift": 0.2558012329901598,
        "T_slope": 0.023876521271991802,
        "alpha_scale": 1.092597071439577,
        "constant_scale": 0.753173828125,
        "p_shift": -0.08117850835245138,
        "response_scale": 1.1860558061821016,
        "response_slope": -0.006505268860743034,
        "sigma_T_scale": 1.0938345336914064,
        "sigma_alpha_scale": 1.4888957214355467,
        "stochastic_scale": 1.04673583984375,
    },
}

# name: geometry, calibrated or bare, particle, energy range (GeV), theta range (deg).
CASES: dict[str, tuple[str, bool, str, tuple[float, float], tuple[float, float] | None]] = {
    "clic-25 bare 10 GeV": ("clic-25", False, "electron", (10.0, 10.0), None),
    "clic-25 calibrated 100 GeV": ("clic-25", True, "electron", (100.0, 100.0), None),
    "clic-25 bare photon 50 GeV": ("clic-25", False, "photon", (50.0, 50.0), None),
    "clic-angle-51 calibrated 150 GeV": (
        "clic-angle-51",
        True,
        "electron",
        (150.0, 150.0),
        (60, 120),
    ),
    "lhcb-30 20 GeV": ("lhcb-30", True, "electron", (20.0, 20.0), None),
}


def simulate_case(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Showers and primary energies of a case; the conditions depend on the seed alone."""
    geometry_name, calibrated, particle, energy, theta = CASES[name]
    geometry = PRESETS[geometry_name]
    theta_rad = None if theta is None else (math.radians(theta[0]), math.radians(theta[1]))
    ranges = ConditionRanges.for_geometry(geometry, energy=energy, theta=theta_rad)
    conditions = sample_conditions(geometry, ranges, n, np.random.default_rng([seed, 0]))
    calibration: Calibration | str = Calibration()
    if calibrated:
        table = REFERENCE_TABLES.get(family_of(geometry))
        calibration = "auto" if table is None else Calibration.from_dict(table, "reference")
    simulator = ShowerSimulator(geometry, particle=particle, calibration=calibration)
    showers = [
        simulator.simulate(
            {k: v[lo : lo + 256] for k, v in conditions.items()},
            np.random.default_rng([seed, 1, lo]),
        )
        for lo in range(0, n, 256)
    ]
    return np.concatenate(showers), conditions["energy"]


def _mean(values: np.ndarray) -> list[list[float]]:
    """Mean over showers (axis 0) and its standard error, as [[means], [errors]]."""
    mean = np.atleast_1d(values.mean(axis=0))
    error = np.atleast_1d(values.std(axis=0, ddof=1)) / math.sqrt(len(values))
    return [mean.tolist(), error.tolist()]


def summary(name: str, showers: np.ndarray, energy: np.ndarray) -> dict[str, list[list[float]]]:
    """Per statistic: [values], [standard errors]."""
    geometry = PRESETS[CASES[name][0]]
    visible = total_energy(showers)
    response = visible / energy
    n = len(response)
    centred = response - response.mean()
    sd = response.std(ddof=1)
    # Standard error of the standard deviation from the sample's fourth moment (the
    # response has a leakage tail: the Gaussian formula would understate it).
    sd_error = math.sqrt(max(np.mean(centred**4) - sd**4, 0.0) / n) / (2.0 * sd)
    out = {
        "response": [[float(response.mean())], [float(sd / math.sqrt(n))]],
        "resolution": [[float(sd / response.mean())], [float(sd_error / response.mean())]],
        "hits": _mean((showers > 0).reshape(n, -1).sum(axis=1).astype(np.float64)),
        "width_x": _mean(centre_and_width(showers, geometry, 0)[1]),
        "width_y": _mean(centre_and_width(showers, geometry, 1)[1]),
    }
    if geometry.readout == "layers":
        share = longitudinal_profile(showers) / visible[:, None]
        out["share"] = _mean(share)
    return out


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("name", list(CASES))
def test_summary_statistics_agree_with_the_previous_implementation(name, reference):
    showers, energy = simulate_case(name, SHOWERS, seed=7)
    current = summary(name, showers, energy)
    expected = reference["cases"][name]
    assert set(current) == set(expected)
    for statistic, (values, errors) in current.items():
        ref_values, ref_errors = (np.array(v) for v in expected[statistic])
        z = (np.array(values) - ref_values) / np.hypot(errors, ref_errors)
        if statistic == "share":
            z = z[ref_values >= MIN_SHARE]
        worst = int(np.argmax(np.abs(z)))
        assert abs(z[worst]) < Z_MAX, (
            f"{name}: {statistic}[{worst}] is {np.array(values)[worst]:.5g}, the previous "
            f"implementation's {ref_values[worst]:.5g} ({z[worst]:+.1f} standard errors)"
        )


def main() -> None:
    """Print the reference statistics (JSON) of the caloforge that Python imports."""
    import caloforge

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--showers", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--made-by", default=f"caloforge {caloforge.__version__}")
    args = parser.parse_args()
    lines = [f' "made_by": {json.dumps(args.made_by)},', f' "showers": {args.showers},']
    lines += [f' "seed": {args.seed},', ' "cases": {']
    for i, name in enumerate(CASES):
        showers, energy = simulate_case(name, args.showers, args.seed)
        stats = [
            f"   {json.dumps(k)}: {json.dumps([[float(f'{x:.6g}') for x in row] for row in v])}"
            for k, v in summary(name, showers, energy).items()
        ]
        end = "," if i < len(CASES) - 1 else ""
        lines += [f"  {json.dumps(name)}: {{", ",\n".join(stats), f"  }}{end}"]
        print(name, file=sys.stderr)
    print("\n".join(["{", *lines, " }", "}"]))


if __name__ == "__main__":
    main()
