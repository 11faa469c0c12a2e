"""The metrics on simulated clic-25 showers (issue: physics validation): an independent sample
of the same simulation reads as the same, and each distortion a generator might make is
caught by the metric meant for it.

Sets (module fixture, 3000 showers each, electrons of 20-60 GeV, one shared list of energies
as a generator conditioned on the reference's energies would have):
- reference: simulated;
- same: simulated again with other seeds;
- scaled: `same` with every cell x 1.05 (a 5 % energy-scale error);
- deeper: `same` moved one layer deeper (the first layer empty, the last one's energy lost);
- wider: the energy spots of `same` moved 10 % further from the shower axis before they are
  binned into cells (a 10 % wider lateral profile).
The numbers quoted in comments are what these seeds give.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from caloforge.geometry import PRESETS
from caloforge.simulation.simulator import ShowerSimulator
from caloforge.validation.classifier import (
    ClassifierResult,
    classifier_test,
    high_level_classifier_test,
    low_level_inputs,
)
from caloforge.validation.features import centre_and_width, feature_vector, total_energy
from caloforge.validation.metrics import fpd, mu90, separation_power

CLIC = PRESETS["clic-25"]
N = 3000
# Separation power of two samples of one distribution, 50 bins, 3000 + 3000 showers:
# about 49 (2/3000) / 4 = 0.008. Twice that still reads as "the same".
SAME = 0.02


def one_layer_deeper(showers: np.ndarray) -> np.ndarray:
    out = np.zeros_like(showers)
    out[..., 1:] = showers[..., :-1]
    return out


def summarise(showers: np.ndarray, energy: np.ndarray) -> dict[str, np.ndarray]:
    """The features the tests read; the showers themselves are not kept (1 GB for five sets)."""
    features, _ = feature_vector(showers, {"energy": energy}, CLIC)
    return {
        "features": features,
        "response": total_energy(showers) / energy,
        "depth": centre_and_width(showers, CLIC, 2)[0],
        "width_x": centre_and_width(showers, CLIC, 0)[1],
        "width_y": centre_and_width(showers, CLIC, 1)[1],
    }


def simulate_sets(
    n: int, seed: int, *, cells: int = 0, chunk: int = 2500
) -> dict[str, dict[str, np.ndarray]]:
    """The five sets' summaries, simulated `chunk` showers at a time (memory stays bounded);
    with `cells`, the low-level classifier inputs of the first `cells` reference and scaled
    showers too."""
    sim = ShowerSimulator(CLIC)
    energy = np.random.default_rng(seed).uniform(20.0, 60.0, n)
    parts: dict[str, list[dict[str, np.ndarray]]] = {}
    low_level: dict[str, list[np.ndarray]] = {"reference": [], "scaled": []}
    for i, lo in enumerate(range(0, n, chunk)):
        e = energy[lo : lo + chunk]
        conditions = {"energy": e}
        rngs = [np.random.default_rng([seed, i, k]) for k in range(3)]
        reference = sim.simulate(conditions, rngs[0])
        spots = sim.spots(conditions, rngs[1])
        same = sim.deposit(spots, len(e), np.random.default_rng([seed, i, 3]))
        # Spots 10 % further from the axis (at x = y = 0), binned with the same jitter.
        wide = dataclasses.replace(spots, x=1.1 * spots.x, y=1.1 * spots.y)
        showers = {
            "reference": reference,
            "same": same,
            "scaled": 1.05 * same,
            "deeper": one_layer_deeper(same),
            "wider": sim.deposit(wide, len(e), np.random.default_rng([seed, i, 3])),
        }
        for name, s in showers.items():
            parts.setdefault(name, []).append(summarise(s, e))
            if name in low_level and lo < cells:
                low_level[name].append(low_level_inputs(s[: cells - lo], e[: cells - lo]))
    sets = {
        name: {key: np.concatenate([p[key] for p in chunks]) for key in chunks[0]}
        for name, chunks in parts.items()
    }
    for name, s in sets.items():
        s["energy"] = energy
        if cells:
            s["cells"] = np.concatenate(low_level[name]) if name in low_level else np.empty(0)
    return sets


@pytest.fixture(scope="module")
def sets() -> dict[str, dict[str, np.ndarray]]:
    return simulate_sets(N, seed=100, cells=N)


@pytest.fixture(scope="module")
def fpd_same(sets) -> tuple[float, float]:
    return fpd(sets["reference"]["features"], sets["same"]["features"])


def separation(sets: dict, other: str, feature: str) -> float:
    return separation_power(sets["reference"][feature], sets[other][feature])[0]


def high_level_classifier(sets: dict, other: str, **kwargs: object) -> ClassifierResult:
    ref, gen = sets["reference"], sets[other]
    return high_level_classifier_test(
        ref["features"], gen["features"], ref["energy"], gen["energy"], **kwargs
    )


def test_an_independent_sample_reads_as_the_same(sets, fpd_same):
    for feature in ("response", "depth", "width_x", "width_y"):
        assert separation(sets, "same", feature) < SAME, feature  # seen: 0.007-0.009
    value, error = fpd_same
    assert value <= 3 * error  # seen: 0.0 +- 0.003
    # Half the showers held out for the test: the AUC of a blind classifier scatters by 0.011.
    result = high_level_classifier(sets, "same", split=(0.4, 0.1, 0.5))
    assert abs(result.auc - 0.5) < 0.03  # seen: 0.485 +- 0.011
    # Calibrated on 300 showers per class, the JSD of a blind classifier lies a little below 0.
    assert abs(result.jsd) < max(3 * result.jsd_error, 0.02)  # seen: -0.021 +- 0.010


def test_a_5_percent_energy_scale_is_measured_by_mu90_and_seen_by_the_classifier(sets):
    mu_ref, err_ref = mu90(sets["reference"]["response"])
    mu_gen, err_gen = mu90(sets["scaled"]["response"])
    shift = mu_gen / mu_ref - 1.0
    shift_error = (1 + shift) * np.hypot(err_ref / mu_ref, err_gen / mu_gen)
    assert shift == pytest.approx(0.05, abs=0.01)  # seen: 0.0520 +- 0.0014
    assert shift == pytest.approx(0.05, abs=3 * shift_error)
    result = high_level_classifier(sets, "scaled", split=(0.4, 0.1, 0.5))
    assert result.auc > 0.7  # seen: 0.834 +- 0.007
    # On the cells ([log10 E_inc, cells / E_inc]) too.
    cells = classifier_test(
        sets["reference"]["cells"], sets["scaled"]["cells"], standardise="cells", epochs=10
    )
    assert cells.auc > 0.7  # seen: 0.825 +- 0.012
    assert separation(sets, "scaled", "response") > 5 * SAME  # seen: 0.19
    # The shapes did not change.
    assert separation(sets, "scaled", "depth") < SAME
    assert separation(sets, "scaled", "width_x") < SAME


def test_showers_one_layer_deeper_move_the_longitudinal_barycentre(sets):
    value, error = separation_power(sets["reference"]["depth"], sets["deeper"]["depth"])
    assert value > 0.1 and value > 10 * error  # seen: 0.194 +- 0.010
    mean_shift = sets["deeper"]["depth"].mean() - sets["reference"]["depth"].mean()
    assert 2.5 < mean_shift < 5.5  # mm; one layer is 2.9 mm in front, 5.3 mm behind; seen: 3.0
    # The lateral width of the shower as a whole did not change.
    assert separation(sets, "deeper", "width_x") < SAME
    assert separation(sets, "deeper", "width_y") < SAME


def test_a_10_percent_wider_shower_moves_the_width_features(sets):
    for feature in ("width_x", "width_y"):
        value, error = separation_power(sets["reference"][feature], sets["wider"][feature])
        assert value > 4 * SAME and value > 8 * error, feature  # seen: 0.141, 0.134 +- 0.008
    ratio = sets["wider"]["width_x"].mean() / sets["reference"]["width_x"].mean()
    # Cells (5.1 mm) and the sub-cell position of the entry point dilute the 10 %:
    # seen 1.074 in x, 1.069 in y.
    assert 1.05 < ratio < 1.11
    # The longitudinal profile and the energy did not change.
    assert separation(sets, "wider", "depth") < SAME
    assert separation(sets, "wider", "response") < SAME


def test_fpd_ranks_the_distortions_above_the_independent_sample(sets, fpd_same):
    ref = sets["reference"]["features"]
    same, same_error = fpd_same
    for other in ("deeper", "wider"):
        value, error = fpd(ref, sets[other]["features"])
        # seen: 0.56 +- 0.03 (deeper), 0.052 +- 0.004 (wider), against 0.0 +- 0.003
        assert value > same + 5 * np.hypot(error, same_error), other


@pytest.mark.slow
def test_with_many_showers_the_classifiers_are_blind_to_a_fresh_sample_only():
    """20000 showers a set (10000 for the cell-level classifier): the high-level AUC of an
    independent sample within 0.5 +- 0.01; both classifiers see the energy scale. About two
    minutes on two cores."""
    big = simulate_sets(20000, seed=200, cells=10000)
    result = high_level_classifier(big, "same", split=(0.4, 0.1, 0.5))
    assert abs(result.auc - 0.5) < 0.01  # seen: 0.505 +- 0.005
    assert high_level_classifier(big, "scaled").auc > 0.8  # seen: 0.875 +- 0.003
    cells = classifier_test(
        big["reference"]["cells"], big["scaled"]["cells"], standardise="cells", epochs=10
    )
    assert cells.auc > 0.8  # seen: 0.829 +- 0.006
