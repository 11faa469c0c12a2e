"""The calibration of the parametrized engine: its factors act where they should, and a fit
finds factors it is shown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from caloforge.errors import CaloforgeError
from caloforge.geometry import PRESETS
from caloforge.simulation import calibrate, gflash
from caloforge.simulation.calibration import Calibration, family_of, for_geometry, load
from caloforge.simulation.simulator import ShowerSimulator

CLIC = PRESETS["clic-25"]


def test_the_default_calibration_changes_nothing():
    energy = np.array([5.0, 50.0])
    material = CLIC.front
    fluct = gflash.profile_fluctuation(energy, material)
    same = Calibration().profile(fluct, energy)
    for name in ("mean_ln_T", "sigma_ln_T", "mean_ln_alpha", "sigma_ln_alpha", "rho"):
        np.testing.assert_allclose(getattr(same, name), getattr(fluct, name), rtol=1e-12)
    tau = np.array([0.2, 1.0, 3.0])
    radial = gflash.radial_parameters(np.full(3, 10.0), tau, material)
    again = Calibration().radial(radial, tau)
    np.testing.assert_allclose(again.Rc, radial.Rc)
    np.testing.assert_allclose(again.Rt, radial.Rt)
    np.testing.assert_allclose(again.p, radial.p)
    np.testing.assert_allclose(Calibration().response(energy), 1.0)
    assert Calibration().is_identity and Calibration().label == "bare parametrization"


def test_each_factor_moves_its_quantity():
    rng_seed, n = 3, 300
    conditions = {"energy": np.full(n, 20.0)}
    bare = calibrate.summarize(
        calibrate.simulate(CLIC, Calibration(), conditions, rng_seed), conditions["energy"], CLIC
    )

    def summary(**factors: float) -> calibrate.Summary:
        cal = Calibration(**factors)
        return calibrate.summarize(
            calibrate.simulate(CLIC, cal, conditions, rng_seed), conditions["energy"], CLIC
        )

    layers = np.arange(25)
    depth = lambda s: float((s.share * layers).sum())  # noqa: E731
    assert summary(response_scale=1.2).response == pytest.approx(1.2 * bare.response, rel=1e-6)
    assert depth(summary(T_shift=1.0)) > depth(bare) + 0.5  # about one X0 deeper
    assert summary(Rt_scale=1.5).width[8] > 1.1 * bare.width[8]
    assert summary(p_shift=-0.2).peak[8] < 0.95 * bare.peak[8]
    # The raw sum's resolution is dominated by the thin/thick layers' fluctuations; the
    # sampling term shows in the sum weighted by the layers' sampling fractions.
    assert summary(stochastic_scale=1.5).weighted_resolution > 1.3 * bare.weighted_resolution
    assert summary(sigma_T_scale=2.0).spread[12] > 1.2 * bare.spread[12]


def test_tables_round_trip_and_bad_tables_are_refused(tmp_path, monkeypatch):
    cal = Calibration(family="W-Si", Rt_scale=1.3, response_scale=1.17, fitted_on="a test")
    assert Calibration.from_dict(json.loads(cal.to_json()), "x") == cal
    assert "W-Si" in cal.label and "calibrated" in cal.label
    with pytest.raises(CaloforgeError, match="unknown calibration key"):
        Calibration.from_dict({"Rt_scale": 1.0, "R_scale": 2.0}, "bad.json")
    with pytest.raises(CaloforgeError, match="invalid calibration"):
        Calibration.from_dict({"Rt_scale": "wide"}, "bad.json")
    monkeypatch.setattr("caloforge.simulation.calibration.TABLES", tmp_path)
    (tmp_path / "W-Si.json").write_text("{not json")
    with pytest.raises(CaloforgeError, match="not valid JSON"):
        load("W-Si")
    (tmp_path / "W-Si.json").write_text(cal.to_json())
    assert for_geometry(CLIC) == cal
    assert ShowerSimulator(CLIC).calibration == cal
    assert family_of(PRESETS["lhcb-30"]) == "Pb-polystyrene"
    assert for_geometry(PRESETS["lhcb-30"]).is_identity  # no table for that family here


def test_a_fit_finds_the_factors_it_is_shown():
    # Reference showers from known factors; a fit from the bare parametrization finds them.
    truth = Calibration(Rt_scale=1.4, T_shift=0.6, stochastic_scale=1.2, response_scale=1.15)
    energies = (5.0, 20.0)
    references = {}
    for k, energy in enumerate(energies):
        conditions = {"energy": np.full(400, energy)}
        references[energy] = calibrate.Reference(
            calibrate.simulate(CLIC, truth, conditions, 100 + k), conditions
        )
    fitted, report = calibrate.fit(CLIC, references, n=200, rounds=1, evaluations=25)
    assert report["cost_after"] < 0.5 * report["cost_before"]
    assert fitted.response_scale == pytest.approx(1.15, rel=0.02)
    assert fitted.Rt_scale == pytest.approx(1.4, rel=0.2)
    assert fitted.T_shift == pytest.approx(0.6, abs=0.3)
    assert fitted.stochastic_scale == pytest.approx(1.2, rel=0.15)
