"""The Geant4 engine: physics at low energy against textbook facts, reproducibility, the
command line, errors and interruption. Heavier statistics are under `slow`.

Every expectation below comes from electromagnetic shower physics (energy conservation,
sampling, the logarithmic depth of the maximum, the Moliere radius, the 1/sqrt(E) stochastic
term); the measured values on this project's 2-core machine are given beside each bound.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloforge.cli import main
from caloforge.geometry import PRESETS, Geometry, load_geometry
from caloforge.simulation.conditions import ConditionRanges
from caloforge.simulation.geant4 import build, prepare, simulate_geant4
from caloforge.validation.features import measured_theta
from geant4_env import geant4_setup, use_shared_headers

CLIC = PRESETS["clic-25"]
ELECTRON_MASS_GEV = 0.51099895e-3


@pytest.fixture(scope="module")
def setup():
    return geant4_setup()


@cache
def _showers(geometry_json: str, energy: float, n: int, particle: str, theta_deg: float | None):
    geometry = Geometry.from_json(geometry_json)
    theta = None if theta_deg is None else (math.radians(theta_deg),) * 2
    ranges = ConditionRanges.for_geometry(geometry, (energy, energy), theta=theta)
    batches = list(
        simulate_geant4(
            geometry,
            ranges,
            n,
            setup=prepare(),
            seed=7,
            batch_size=50,
            particle=particle,
            workers=2,
        )
    )
    showers = np.concatenate([b.showers for b, _ in batches])
    bookkeeping = np.concatenate([book for _, book in batches])
    return showers, bookkeeping


def showers(
    setup,
    geometry: Geometry,
    energy: float,
    n: int,
    particle: str = "electron",
    theta_deg: float | None = None,
):
    """Showers at one energy (cached across the tests of this module)."""
    return _showers(geometry.to_json(), energy, n, particle, theta_deg)


def layer_centres_X0(geometry: Geometry) -> np.ndarray:
    x0 = np.array([layer.thickness_X0 for layer in geometry.layers])
    return np.cumsum(x0) - 0.5 * x0


def centre_of_gravity_X0(s: np.ndarray, geometry: Geometry) -> np.ndarray:
    profile = s.sum(axis=(1, 2))
    return (profile * layer_centres_X0(geometry)).sum(axis=1) / profile.sum(axis=1)


# --- physics ------------------------------------------------------------------------------
@pytest.mark.parametrize("particle", ["electron", "positron", "photon"])
def test_energy_is_accounted_for_sensor_absorber_and_leakage(setup, particle):
    _, book = showers(setup, CLIC, 5.0, 20, particle)
    # A positron's annihilation gives back its own mass and an electron's.
    expected = 5.0 + (2 * ELECTRON_MASS_GEV if particle == "positron" else 0.0)
    np.testing.assert_allclose(book.sum(axis=1), expected, rtol=1e-9)  # 1e-14 measured
    assert (book > 0).all()  # each part is there: sensor, absorber, leakage


def test_sampling_fraction_falls_with_energy(setup):
    # Soft photons deposit mostly in the tungsten: a larger share of them in deeper,
    # higher-energy showers lowers the silicon's share (2.81 % at 2 GeV, 2.52 % at 50).
    _, book_low = showers(setup, CLIC, 2.0, 200)
    _, book_high = showers(setup, CLIC, 50.0, 40)
    f_low, f_high = book_low[:, 0] / 2.0, book_high[:, 0] / 50.0
    error = math.hypot(f_low.std() / math.sqrt(len(f_low)), f_high.std() / math.sqrt(len(f_high)))
    assert f_low.mean() - f_high.mean() > 4 * error  # 8 standard errors measured
    assert 0.020 < f_high.mean() < f_low.mean() < 0.032  # the shared measurements: 2.3-2.7 %


def test_shower_maximum_deepens_as_log_energy(setup):
    # Rossi's approximation B: t_max = ln(E/E_c) + const, so the depth grows by ln(25) X0
    # from 2 to 50 GeV. In the sensors' sampled profile the slope reads 0.83.
    low, _ = showers(setup, CLIC, 2.0, 200)
    high, _ = showers(setup, CLIC, 50.0, 40)
    slope = (
        centre_of_gravity_X0(high, CLIC).mean() - centre_of_gravity_X0(low, CLIC).mean()
    ) / math.log(25.0)
    assert 0.7 < slope < 1.1


def robust_resolution(total: np.ndarray) -> float:
    """sigma/mean with sigma from the interquartile range (a Gaussian's IQR is 1.349 sigma):
    a few showers that scatter back out of the face do not dominate it."""
    q1, q3 = np.percentile(total, [25, 75])
    return float((q3 - q1) / 1.349 / np.median(total))


def test_stochastic_term_of_the_resolution(setup):
    # Thick layers weighted by their inverse mip sampling fraction (x1.96), as a calibrated
    # sum would be. sigma/E = a/sqrt(E) with a near the shared measurement (19.5 %; 16.7 %
    # and 15.1 % measured here). Pure stochastic scaling gives a ratio of 5 between 2 and
    # 50 GeV (5.5 measured); the interquartile sigma of 40 showers is good to about 17 %,
    # hence the band. A constant term alone would give 1, a 1/E law 25.
    weights = np.array([1.0 / layer.properties.f_mip for layer in CLIC.layers])
    resolution = {}
    for energy, n in ((2.0, 200), (50.0, 40)):
        s, _ = showers(setup, CLIC, energy, n)
        resolution[energy] = robust_resolution((s.sum(axis=(1, 2)) * weights).sum(axis=1))
    assert 0.12 < resolution[2.0] * math.sqrt(2.0) < 0.22
    assert 0.12 < resolution[50.0] * math.sqrt(50.0) < 0.24
    assert 3.5 < resolution[2.0] / resolution[50.0] < 6.5


def test_lateral_containment_follows_the_moliere_radius(setup):
    # About 90 % of the energy within one Moliere radius of the axis, 95 % within two.
    fine = Geometry.from_dict(
        {
            **CLIC.to_dict(),
            "name": "clic-fine",
            "shape": [121, 121],
            "readout": "summed",
            "cell_size_mm": [1.0, 1.0],
        }
    )
    s, _ = showers(setup, fine, 10.0, 30)
    rm = CLIC.front.RM_cm * 10.0  # 10.8 mm for 2.4 mm W + 0.5 mm Si
    x = np.arange(121) - 60.0
    fractions = {1.0: [], 2.0: []}
    for image in s:
        total = image.sum()
        xb = (image.sum(axis=1) * x).sum() / total
        yb = (image.sum(axis=0) * x).sum() / total
        r = np.hypot(x[:, None] - xb, x[None, :] - yb)
        for k in fractions:
            fractions[k].append(image[r < k * rm].sum() / total)
    assert 0.85 < np.mean(fractions[1.0]) < 0.93  # 0.89 measured
    assert 0.94 < np.mean(fractions[2.0]) < 0.98  # 0.96 measured


@pytest.mark.parametrize("theta_deg", [60.0, 120.0])
def test_inclined_showers_follow_their_angle(setup, theta_deg):
    # The layer barycentres' slope gives back theta. The planar layers cut the shower
    # obliquely, which pulls the fitted angle towards 90 deg, by about 1 deg at 50 GeV
    # (3 deg at 10 GeV; the parametrized engine shows the same pull).
    geometry = PRESETS["clic-angle-51"]
    s, _ = showers(setup, geometry, 50.0, 8, theta_deg=theta_deg)
    measured = np.degrees(measured_theta(s, geometry))
    assert abs(measured.mean() - theta_deg) < 2.5  # 1.3 and 1.0 deg measured
    assert abs(measured.mean() - 90.0) < abs(theta_deg - 90.0) + 0.5 * measured.std()


def test_lhcb_showers_land_at_their_entry_point(setup):
    geometry = PRESETS["lhcb-30"]
    ranges = ConditionRanges.for_geometry(geometry, (5.0, 5.0), point=(-60.0, 60.0))
    [(batch, _)] = list(simulate_geant4(geometry, ranges, 12, setup=setup, seed=3, batch_size=12))
    cell = geometry.cell_size_mm[0]
    x = (np.arange(30) - 14.5) * cell
    image = batch.showers
    total = image.sum(axis=(1, 2))
    xb = (image.sum(axis=2) * x).sum(axis=1) / total
    # The shower lies on its track: entry point + s * direction, s the distance along the
    # track to the shower's centre of gravity, a few radiation lengths for any angle.
    point, momentum = batch.conditions["point"], batch.conditions["momentum"]
    dx = momentum[:, 0] / np.linalg.norm(momentum, axis=1)
    shift = xb - point[:, 0]
    s = (shift * dx).sum() / (dx * dx).sum()
    x0_mm = geometry.front.X0_cm * 10.0
    assert 4.0 < s / x0_mm < 10.0  # 6.6 X0 of 16.4 mm measured at 5 GeV
    assert np.abs(shift - s * dx).max() < 0.5 * cell


# --- the parametrized engine, calibrated to this one ---------------------------------------
@pytest.mark.parametrize(("energy", "n"), [(2.0, 200), (50.0, 40)])
def test_the_calibrated_parametrization_is_closer_to_geant4(setup, energy, n):
    # The package's W-Si table (fitted on other Geant4 showers than these) brings the
    # parametrized engine's response from 15 % low to within 2 %, and its transverse widths
    # closer over the layers holding 1 % of the energy or more.
    from caloforge.simulation import calibrate
    from caloforge.simulation.calibration import Calibration, for_geometry

    calibration = for_geometry(CLIC)
    assert not calibration.is_identity
    g4, _ = showers(setup, CLIC, energy, n)
    conditions = {"energy": np.full(n, energy)}
    reference = calibrate.summarize(g4, conditions["energy"], CLIC)
    used = reference.share >= calibrate.MIN_SHARE

    def off(cal: Calibration) -> tuple[float, float]:
        model = calibrate.summarize(
            calibrate.simulate(CLIC, cal, conditions, 5), conditions["energy"], CLIC
        )
        width = model.width[used] / reference.width[used] - 1.0
        return model.response / reference.response - 1.0, float(np.sqrt(np.mean(width**2)))

    (bare_response, bare_width), (response, width) = off(Calibration()), off(calibration)
    assert bare_response < -0.1  # -15 % measured
    assert abs(response) < 0.02
    assert width < bare_width


def test_the_calibrated_parametrization_of_lhcb_30_is_closer_to_geant4(setup):
    # lhcb-30 (lead and scintillator, one summed readout): the package's Pb-polystyrene table
    # (fitted on other Geant4 showers) brings the response from 7 % low to within 2 % at 5
    # GeV, the transverse width closer, and the cells hit above 10 keV from half too few (the
    # tail's energy in too few spots) to within 10 %. The parametrized showers draw
    # their entry points and angles from the same ranges as Geant4's.
    from caloforge.simulation import calibrate
    from caloforge.simulation.calibration import Calibration, for_geometry
    from caloforge.simulation.conditions import sample_conditions

    lhcb, energy, n = PRESETS["lhcb-30"], 5.0, 150
    calibration = for_geometry(lhcb)
    assert not calibration.is_identity
    g4, _ = showers(setup, lhcb, energy, n)
    reference = calibrate.summarize(g4, np.full(n, energy), lhcb)
    ranges = ConditionRanges.for_geometry(lhcb, (energy, energy))
    conditions = sample_conditions(lhcb, ranges, 2000, np.random.default_rng(5))

    def off(cal: Calibration) -> tuple[float, float, float]:
        model = calibrate.summarize(
            calibrate.simulate(lhcb, cal, conditions, 5), conditions["energy"], lhcb
        )
        assert model.hits is not None and reference.hits is not None
        width = abs(float(model.width[0] / reference.width[0]) - 1.0)
        hits = float(model.hits[0] / reference.hits[0]) - 1.0
        return model.response / reference.response - 1.0, width, hits

    (bare_response, bare_width, bare_hits) = off(Calibration())
    (response, width, hits) = off(calibration)
    assert bare_response < -0.04  # -7 % measured
    assert abs(response) < 0.02
    assert width < bare_width
    assert bare_hits < -0.3  # -47 % measured
    assert abs(hits) < 0.1  # +4 %


def test_the_calibrated_parametrization_follows_inclined_geant4_showers_far_out(setup):
    # clic-angle-51 at 60 deg: the W-Si table acts along the track (response from 16 % low to
    # within 3 %), and its taper, fitted on clic-angle-51's wide grid at 100-200 GeV, holds
    # at 20 GeV too: beyond 4.5 Moliere radii the untapered profile puts 1.6x Geant4's
    # energy, the tapered one as much as Geant4. The direction measured from the layers'
    # barycentres is pulled towards 90 deg about 1 deg more than Geant4's (left open).
    from dataclasses import replace

    from caloforge.simulation import calibrate
    from caloforge.simulation.calibrate_taper import RING_EDGES_RM, ring_shares
    from caloforge.simulation.calibration import Calibration, for_geometry

    geometry, energy, n = PRESETS["clic-angle-51"], 20.0, 80
    calibration = for_geometry(geometry)
    assert calibration.taper() is not None
    g4, _ = showers(setup, geometry, energy, n, theta_deg=60.0)
    conditions = {"energy": np.full(400, energy), "theta": np.full(400, math.radians(60.0))}
    far = np.asarray(RING_EDGES_RM[:-1]) >= 4.5

    def measure(s: np.ndarray) -> tuple[float, float, float]:
        response = float(s.sum(axis=(1, 2, 3)).mean()) / energy
        halo = float(ring_shares(s, geometry).mean(axis=0)[far].sum())
        return response, halo, float(np.degrees(np.nanmean(measured_theta(s, geometry))))

    response, halo, theta = measure(g4)
    made = {
        name: measure(calibrate.simulate(geometry, cal, conditions, 5))
        for name, cal in (
            ("bare", Calibration()),
            ("untapered", replace(calibration, taper_radius=0.0)),
            ("calibrated", calibration),
        )
    }
    assert made["bare"][0] / response - 1 < -0.1  # -16 % measured
    assert abs(made["calibrated"][0] / response - 1) < 0.03  # -1.5 %
    assert made["untapered"][1] > 1.3 * halo  # 1.6x
    assert abs(made["calibrated"][1] / halo - 1) < 0.25  # -2 %
    assert abs(made["calibrated"][2] - theta) < 1.5  # 62.3 against 61.4 deg


# --- reproducibility --------------------------------------------------------------------
def test_same_seed_same_showers_whatever_the_workers_and_batches(setup):
    ranges = ConditionRanges.for_geometry(CLIC, (1.0, 3.0))

    def run(seed: int, batch_size: int, workers: int, first: int = 0, n: int = 6):
        return np.concatenate(
            [
                b.showers
                for b, _ in simulate_geant4(
                    CLIC,
                    ranges,
                    n,
                    setup=setup,
                    seed=seed,
                    batch_size=batch_size,
                    workers=workers,
                    first_index=first,
                )
            ]
        )

    reference = run(5, 6, 1)
    np.testing.assert_array_equal(run(5, 6, 1), reference)  # bit for bit
    np.testing.assert_array_equal(run(5, 2, 2), reference)
    np.testing.assert_array_equal(
        np.concatenate([run(5, 3, 1, 0, 4), run(5, 3, 1, 4, 2)]), reference
    )
    assert not np.array_equal(run(6, 6, 1), reference)


# --- command line -----------------------------------------------------------------------
def test_cli_writes_the_engine_into_the_file_and_appends_the_same_sequence(setup, tmp_path):
    out, whole = tmp_path / "g4.h5", tmp_path / "whole.h5"
    common = ["simulate", "--engine", "geant4", "--energy", "1:2", "--seed", "4", "--workers", "1"]
    assert main([*common, "--n", "3", "-o", str(out)]) == 0
    assert main([*common, "--n", "2", "--append", "-o", str(out)]) == 0
    assert main([*common, "--n", "5", "-o", str(whole)]) == 0
    with h5py.File(out) as f, h5py.File(whole) as g:
        np.testing.assert_array_equal(f["showers"][:], g["showers"][:])
        assert "Geant4 11.4.0" in f.attrs["producer"]
        assert "physics list data-free" in f.attrs["producer"]
        assert '"data_files": false' in f.attrs["simulation"]
        assert '"range_cut_mm": 0.7' in f.attrs["simulation"]
    # Showers of the parametrized engine are not appended to a Geant4 file.
    assert main(["simulate", "--n", "2", "--append", "-o", str(out)]) == 2


def test_cli_simulates_a_users_yaml_geometry(setup, tmp_path):
    geometry = tmp_path / "my-ecal.yaml"
    geometry.write_text(
        "name: my-ecal\nshape: [9, 9, 12]\nreadout: layers\ncell_size_mm: [10, 10]\n"
        "layers:\n  - {absorber: Pb, absorber_mm: 4, sensor: polystyrene, sensor_mm: 2,"
        " repeat: 12}\n"
        "conditions:\n  - {name: energy, unit: GeV, default: [1, 5], valid: [0.5, 50]}\n"
    )
    out = tmp_path / "mine.h5"
    assert (
        main(
            [
                "simulate",
                "--engine",
                "geant4",
                "--geometry",
                str(geometry),
                "--n",
                "4",
                "--workers",
                "1",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    with h5py.File(out) as f:
        showers, energy = f["showers"][:], f["energy"][:]
    assert showers.shape == (4, 9, 9, 12)
    # Scintillator between lead sees its mip fraction (7.9 %) times e/mip (about 0.6 for
    # Pb/plastic) times the containment of 8.5 X0 and a 9 cm grid: 0.40 f_mip measured.
    f_mip = load_geometry(str(geometry)).layers[0].properties.f_mip
    assert 0.3 * f_mip < (showers.sum(axis=(1, 2, 3)) / energy).mean() < 0.8 * f_mip
    assert (showers.sum(axis=(1, 2))[:, :3] > 0).all()  # the shower starts at the front


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--physics-list", "em-standard"], "reads Geant4's data files"),
        (["--range-cut", "-1"], "--range-cut must be a positive length"),
        (["--geometry", "calochallenge-nonexistent"], "unknown geometry"),
    ],
)
def test_cli_refuses_bad_geant4_options_clearly(setup, tmp_path, capsys, args, message):
    out = tmp_path / "x.h5"
    assert main(["simulate", "--engine", "geant4", "--n", "2", *args, "-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_options_of_one_engine_are_refused_by_the_other(tmp_path, capsys):
    assert main(["simulate", "--n", "2", "--range-cut", "1", "-o", str(tmp_path / "a.h5")]) == 2
    assert "geant4 only" in capsys.readouterr().err.lower()
    assert (
        main(["simulate", "--n", "2", "--particle", "positron", "-o", str(tmp_path / "b.h5")]) == 2
    )
    assert "positron" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_leaves_no_file_and_no_process(setup, tmp_path, how):
    out = tmp_path / "big.h5"
    command = [
        sys.executable,
        "-m",
        "caloforge",
        "simulate",
        "--engine",
        "geant4",
        "--n",
        "5000",
        "--energy",
        "50",
        "--workers",
        "2",
        "-o",
        str(out),
    ]
    # A user's Ctrl-C reaches a command whose SIGINT is not ignored; a test run started in
    # the background of a non-interactive shell ignores it, and children inherit that.
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 180  # a loaded machine starts processes slowly
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:  # both workers started
            workers = [
                p
                for p in _children(proc.pid)
                if "geant4.worker"
                in (Path("/proc") / str(p) / "cmdline").read_bytes().decode(errors="replace")
            ]
            time.sleep(0.2)
        time.sleep(1.0)
        assert len(workers) == 2
        proc.send_signal(how)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    if how == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert b"interrupted" in err
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers)
    if how != signal.SIGKILL:  # a killed process cannot tidy; the partial is hidden
        assert list(tmp_path.iterdir()) == []
    assert not out.exists()


# --- finding Geant4 -----------------------------------------------------------------------
def test_missing_headers_are_named(monkeypatch):
    use_shared_headers()
    if build.shutil.which("geant4-config"):
        pytest.skip("a geant4-config installation is used before calzone")
    monkeypatch.delenv("CALOFORGE_GEANT4_INCLUDE", raising=False)
    try:
        import calzone  # noqa: F401
    except ImportError:
        with pytest.raises(build.Geant4NotFoundError, match="caloforge\\[geant4\\]"):
            build.find_geant4()
        return
    with pytest.raises(build.Geant4NotFoundError, match="CALOFORGE_GEANT4_INCLUDE"):
        build.find_geant4()


def test_a_folder_without_geant4_headers_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("CALOFORGE_GEANT4_INCLUDE", str(tmp_path))
    if build.shutil.which("geant4-config"):
        pytest.skip("a geant4-config installation is used before calzone")
    pytest.importorskip("calzone")
    with pytest.raises(build.Geant4NotFoundError, match=r"G4Version\.hh"):
        build.find_geant4()


def test_a_missing_compiler_is_named(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(build.Geant4NotFoundError, match="C\\+\\+17 compiler"):
        build.compiler()


# --- slow: more statistics ----------------------------------------------------------------
@pytest.mark.slow
def test_resolution_has_the_measured_stochastic_and_constant_terms(setup):
    # The raw sum over 2-50 GeV: the stochastic term near the shared measurement (16 % with
    # a constant term from the thin/thick layers; 19.5 % with the thick layers weighted).
    weights = np.array([1.0 / layer.properties.f_mip for layer in CLIC.layers])
    energies = np.array([2.0, 5.0, 10.0, 25.0, 50.0])
    resolution = []
    for energy in energies:
        s, _ = showers(setup, CLIC, float(energy), 200)
        resolution.append(robust_resolution((s.sum(axis=(1, 2)) * weights).sum(axis=1)))
    # Fit sigma^2/E^2 = a^2/E + c^2 (linear in 1/E; polyfit gives the slope first).
    a2, c2 = np.polyfit(1.0 / energies, np.square(resolution), 1)
    assert 0.14 < math.sqrt(a2) < 0.23
    assert c2 < 0.03**2


@pytest.mark.slow
def test_photons_shower_deeper_than_electrons(setup):
    # A photon travels 9/7 X0 on average before converting.
    e, _ = showers(setup, CLIC, 10.0, 200)
    g, _ = showers(setup, CLIC, 10.0, 200, "photon")
    shift = centre_of_gravity_X0(g, CLIC).mean() - centre_of_gravity_X0(e, CLIC).mean()
    assert 0.6 < shift < 1.8


@pytest.mark.slow
def test_shower_maximum_deepens_as_log_energy_up_to_100_gev(setup):
    energies = np.array([5.0, 20.0, 100.0])
    depth = [
        centre_of_gravity_X0(showers(setup, CLIC, float(e), 100)[0], CLIC).mean() for e in energies
    ]
    slope = np.polyfit(np.log(energies), depth, 1)[0]
    assert 0.7 < slope < 1.1


@pytest.mark.slow
def test_a_geant4_config_installation_is_used_first(setup, tmp_path, monkeypatch):
    # A stand-in geant4-config that describes calzone's libraries as an installation would
    # (its datasets absent): the engine builds against it and runs the data-free list.
    libs = setup.installation.link_flags[0].rsplit("/", 1)[0]
    flags = " ".join(f for f in setup.installation.link_flags if not f.startswith("-Wl"))
    script = tmp_path / "bin" / "geant4-config"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  --version) echo 11.4.0 ;;\n"
        f"  --prefix) echo {tmp_path} ;;\n"
        f"  --cflags) echo -I{setup.installation.include_dir} -D_GLIBCXX_USE_CXX11_ABI=0 ;;\n"
        f"  --libs) echo -L{libs} {flags} ;;\n"
        f"  --datasets) echo G4EMLOW G4LEDATA {tmp_path}/missing/G4EMLOW8.6 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("CALOFORGE_CACHE_DIR", str(tmp_path / "cache"))
    mine = prepare()
    assert mine.installation.source == "geant4-config"
    assert not mine.installation.has_data and mine.physics_list == "data-free"
    ranges = ConditionRanges.for_geometry(CLIC, (2.0, 2.0))
    [(_, book)] = list(simulate_geant4(CLIC, ranges, 3, setup=mine, seed=1, batch_size=3))
    np.testing.assert_allclose(book.sum(axis=1), 2.0, rtol=1e-9)
