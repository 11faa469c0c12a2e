"""`validate --protocol calochallenge`: the CaloChallenge evaluation of two shower sets.

The flow: read each set's voxels in MeV (a CaloChallenge set as it is; a grid set rebinned
into polar voxels and calibrated as `convert --to calochallenge` would write it), apply the
readout threshold, compute the high-level features (`features`), the separation power of every
histogram of the reference (`histograms`), jetnet's FPD and KPD of the high-level vectors
(`distances`) and the recipe's classifiers (`classifier`). With a second reference sample the
same numbers are computed for the reference against it: the Geant4-vs-Geant4 floor.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from caloforge import __version__
from caloforge.data.formats.calochallenge import Calibration, challenge_voxels
from caloforge.data.source import ShowerSource, iter_batches
from caloforge.errors import CaloforgeError
from caloforge.validation.challenge import distances, histograms
from caloforge.validation.challenge.classifier import RECIPE, RecipeResult
from caloforge.validation.challenge.features import (
    ChallengeFeatures,
    ChallengeLayout,
    challenge_features,
    high_level_names,
    high_level_vector,
    low_level_inputs,
    low_level_normalised_inputs,
    threshold,
)
from caloforge.validation.config import CHALLENGE_CLASSIFIERS, ValidationConfig
from caloforge.validation.results import jsonable
from caloforge.validation.timing import StageTimer

MEV_PER_GEV = 1000.0
REFERENCE_CODE = {
    "features_and_histograms": "github.com/CaloChallenge/homepage code/HighLevelFeatures.py, "
    "code/evaluate_plotting_helper.py, code/evaluate.py (commit 9b41df7)",
    "fpd_kpd": "jetnet 0.2.5, jetnet/evaluation/gen_metrics.py (github.com/jet-net/JetNet)",
}


@dataclass
class ChallengeSet:
    """One set as the protocol sees it: the voxels as read (n, voxels) float32 MeV, before
    the readout threshold `min_energy` (`thresholded()` applies it), the incident energies
    (n,) MeV and the high-level features (of the thresholded voxels)."""

    label: str
    path: str
    voxels: np.ndarray
    energy: np.ndarray
    features: ChallengeFeatures
    min_energy: float

    def thresholded(self) -> np.ndarray:
        """The voxels after the readout threshold, as the reference's histograms see them."""
        return threshold(self.voxels, self.min_energy)


@dataclass(frozen=True)
class Comparison:
    """Every number of the evaluation for one pair (reference against `against`)."""

    against: str
    separation: list[histograms.Separation]
    fpd: tuple[float, float] | None
    kpd: tuple[float, float] | None
    classifiers: dict[str, RecipeResult | str]
    reasons: dict[str, str] = field(default_factory=dict)

    def separation_of(self, name: str) -> histograms.Separation | None:
        return next((s for s in self.separation if s.name == name), None)


@dataclass
class ChallengeResult:
    """The evaluation: generated vs reference (`main`) and, with a second reference sample,
    reference vs it (`floor`); the settings and what the inputs were."""

    dataset: str
    min_energy: float
    layout: ChallengeLayout
    calibration: dict[str, str]
    sets: list[dict[str, Any]]
    main: Comparison
    floor: Comparison | None
    settings: dict[str, Any]
    created: str
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        from caloforge.validation.challenge.tables import separation_table

        def comparison(c: Comparison) -> dict[str, Any]:
            return {
                "against": c.against,
                "fpd_x1e3": None if c.fpd is None else [v * 1e3 for v in c.fpd],
                "kpd_x1e3": None if c.kpd is None else [v * 1e3 for v in c.kpd],
                "reasons": c.reasons,
                "classifiers": {
                    k: (asdict(v) if isinstance(v, RecipeResult) else {"reason": v})
                    for k, v in c.classifiers.items()
                },
                "separation_power": separation_table(self.layout, c),
                "separation_power_details": [asdict(s) for s in c.separation],
            }

        return jsonable(
            {
                "protocol": "calochallenge",
                "caloforge_version": __version__,
                "created": self.created,
                "reference_code": REFERENCE_CODE,
                "dataset": self.dataset,
                "min_energy_mev": self.min_energy,
                "calibration": self.calibration,
                "sets": self.sets,
                "layers": list(self.layout.layers),
                "alpha_layers": list(self.layout.alpha_layers),
                "high_level_features": high_level_names(self.layout),
                "definitions": definitions(self.settings),
                "generated_vs_reference": comparison(self.main),
                "reference_vs_second_reference": None
                if self.floor is None
                else comparison(self.floor),
                "settings": self.settings,
                "timings_s": self.timings_s,
            }
        )


def definitions(settings: dict[str, Any]) -> dict[str, Any]:
    """What each number is, as metrics.json records it."""
    return {
        "separation_power": "1/2 sum (p - q)^2 / (p + q + 1e-16) of histograms normalised over "
        "the values inside the reference's edges; values outside are left out",
        "fpd": {
            "features": "the high-level vector, each feature divided by its largest magnitude "
            "in the reference",
            "sizes": "10 sizes evenly spaced in 1/N from 10 000 to 50 000, 20 draws each, with "
            "replacement",
            "extrapolation": "straight line in 1/N, intercept and slope >= 0; value: intercept; "
            "error: its standard error",
            "seed": distances.JETNET_SEED,
        },
        "kpd": {
            "kernel": "polynomial (x.y / d + 1)^4 (gamma 1/d, coef0 1, degree 4)",
            "estimator": "unbiased squared MMD",
            "batches": "10 batches of 10 000 drawn with replacement (batch i seeded 42 + 1000 i)",
            "value": "median over batches",
            "error": "half the 16.275-83.725 % interquantile range",
        },
        "classifier": RECIPE | {"epochs": settings["epochs"]},
        "labels": "generated 0, reference 1",
    }


# --- reading the sets ----------------------------------------------------------------------------
def _read_set(
    source: ShowerSource,
    label: str,
    to_voxels: Callable[[np.ndarray], np.ndarray],
    layout: ChallengeLayout,
    min_energy: float,
    max_showers: int | None,
    batch_size: int = 500,
) -> ChallengeSet:
    n = len(source) if max_showers is None else min(len(source), max_showers)
    showers = np.empty((n, layout.n_voxels), dtype=np.float32)
    energy = np.empty(n, dtype=np.float64)
    parts = []
    start = 0
    for batch in iter_batches(source, batch_size, stop=n):
        stop = start + len(batch)
        showers[start:stop] = to_voxels(batch.showers).reshape(len(batch), -1) * np.float32(
            MEV_PER_GEV
        )
        energy[start:stop] = np.asarray(batch.energy, dtype=np.float64).reshape(-1) * MEV_PER_GEV
        cut = threshold(showers[start:stop], min_energy)
        parts.append(challenge_features(cut, energy[start:stop], layout))
        start = stop
    features = ChallengeFeatures.concatenate(parts)
    return ChallengeSet(label, source.path, showers, energy, features, min_energy)


# --- the evaluation ------------------------------------------------------------------------------
def _separations(
    specs: Sequence[histograms.HistogramSpec],
    layout: ChallengeLayout,
    reference: ChallengeSet,
    other: ChallengeSet,
    n_bootstrap: int,
    seed: int,
) -> list[histograms.Separation]:
    rng = np.random.default_rng(seed)
    out = []
    for spec in specs:
        if spec.family == "voxels":  # 10^8 values: no bootstrap
            out.append(
                histograms.separation(
                    spec,
                    reference.thresholded().ravel(),
                    other.thresholded().ravel(),
                    n_bootstrap=0,
                )
            )
            continue
        out.append(
            histograms.separation(
                spec,
                histograms.spec_values(spec, reference.features, layout),
                histograms.spec_values(spec, other.features, layout),
                n_bootstrap=n_bootstrap,
                rng=rng,
            )
        )
    return out


def _classifier_inputs(which: str, s: ChallengeSet, layout: ChallengeLayout) -> np.ndarray:
    """The reference's inputs: "low" of the thresholded voxels, "low-normed" of the voxels
    as read over the thresholded layer energies (as its evaluate.py builds them)."""
    if which == "low":
        return low_level_inputs(s.voxels, s.energy, s.min_energy)
    if which == "low-normed":
        return low_level_normalised_inputs(s.voxels, s.energy, layout, s.features.e_layer)
    return high_level_vector(s.features).astype(np.float32)


def _compare(
    reference: ChallengeSet,
    other: ChallengeSet,
    layout: ChallengeLayout,
    specs: Sequence[histograms.HistogramSpec],
    config: ValidationConfig,
    dataset: str,
    lap: Callable[[str], None],
    tag: str,
) -> Comparison:
    """Every number of the evaluation for `other` against `reference`."""
    from caloforge.validation.challenge.classifier import recipe_classifier_test

    separation = _separations(specs, layout, reference, other, 10, config.seed)
    lap(f"{tag}separation")
    ref_hl, other_hl = high_level_vector(reference.features), high_level_vector(other.features)
    reasons: dict[str, str] = {}
    values: dict[str, tuple[float, float] | None] = {}
    for name, metric in (("fpd", distances.jetnet_fpd), ("kpd", distances.jetnet_kpd)):
        try:
            values[name] = metric(ref_hl, other_hl)
        except ValueError as exc:
            values[name], reasons[name] = None, str(exc)
        lap(f"{tag}{name}")
    classifiers: dict[str, RecipeResult | str] = {}
    for which in CHALLENGE_CLASSIFIERS:
        if which not in config.challenge_classifiers:
            continue
        try:
            classifiers[which] = recipe_classifier_test(
                _classifier_inputs(which, reference, layout),
                _classifier_inputs(which, other, layout),
                epochs=config.challenge_epochs,
                dataset=dataset,
                seed=config.seed,
            )
        except ValueError as exc:
            classifiers[which] = str(exc)
        lap(f"{tag}classifier_{which}")
    return Comparison(other.label, separation, values["fpd"], values["kpd"], classifiers, reasons)


def run_calochallenge(
    reference: ShowerSource,
    generated: ShowerSource,
    config: ValidationConfig | None = None,
    *,
    second_reference: ShowerSource | None = None,
    calibration: str | float | None = "auto",
    progress: bool = False,
) -> ChallengeResult:
    """The CaloChallenge evaluation of `generated` against `reference` (module docstring),
    and of `second_reference` against `reference` when given (the floor)."""
    config = config or ValidationConfig()
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    timer = StageTimer(progress)
    lap = timer.lap
    sources = [reference, generated] + ([second_reference] if second_reference else [])
    binning, to_voxels, scale = challenge_voxels(reference.geometry, calibration)
    # Each set's own way to the voxels: a CaloChallenge reference keeps its voxels while a
    # grid generated set is rebinned (the reference's function on a grid: ValueError).
    converters = [to_voxels]
    for s in sources[1:]:
        other, other_to_voxels, _ = challenge_voxels(s.geometry, calibration)
        converters.append(other_to_voxels)
        if other != binning:
            raise CaloforgeError(
                f"{s.path}: its voxels do not match those of the reference {reference.path} "
                f"({other.n_voxels} against {binning.n_voxels} voxels); showers of one "
                "binning are needed"
            )
    layout = ChallengeLayout.from_binning(binning)
    dataset = config.challenge_dataset
    if dataset == "auto":
        dataset = histograms.dataset_of(layout.n_voxels)
    min_energy = config.challenge_min_energy
    if min_energy is None:
        min_energy = histograms.DATASET_MIN_ENERGY.get(dataset, histograms.DATASET_MIN_ENERGY["2"])
    radius = max(max(layer.r_edges) for layer in binning.layers)
    labels = (*config.labels, "Second reference")
    sets = [
        _read_set(s, label, convert, layout, min_energy, config.max_showers)
        for s, label, convert in zip(sources, labels, converters, strict=False)
    ]
    lap("read_and_features")
    specs = histograms.histogram_specs(layout, dataset, min_energy, radius)
    main = _compare(sets[0], sets[1], layout, specs, config, dataset, lap, "")
    floor = None
    if len(sets) == 3:
        floor = _compare(sets[0], sets[2], layout, specs, config, dataset, lap, "floor_")
    settings = {
        "epochs": config.challenge_epochs,
        "classifiers": list(config.challenge_classifiers),
        "seed": config.seed,
        "max_showers": config.max_showers,
        "labels": list(config.labels),
    }
    return ChallengeResult(
        dataset=dataset,
        min_energy=float(min_energy),
        layout=layout,
        calibration=_calibration_json(scale, reference),
        sets=[{"label": s.label, "path": s.path, "n_showers": len(s.energy)} for s in sets],
        main=main,
        floor=floor,
        settings=settings,
        created=created,
        timings_s=timer.timings,
    )


def _calibration_json(scale: Calibration, reference: ShowerSource) -> dict[str, str]:
    if reference.geometry.extra.get("format") == "calochallenge" and scale.name == "none":
        return {"name": "none", "what": "CaloChallenge voxels as read"}
    return {"name": scale.name, "what": scale.describe()}
