"""`compare`: every metric of the report for two open shower sets, as a `ValidationResult`.

The flow, top to bottom:
1. check that the sets can be compared: neither empty, one geometry, overlapping condition
   ranges (`sources.check_comparable`);
2. draw the seeded subsets (the feature classifier's showers, the cell-level subsample), then
   read each set once, a chunk at a time over worker processes (`sources.features_of_sets`):
   the features of the showers inside the overlap of the conditions, the mean and spread of
   the per-shower vectors the plots show, and a copy of the subsample's showers;
3. feature-level metrics: separation power, W1 and KS of the scalar features, overall and in
   bins of energy and angle; the response mu90 and resolution sigma90/mu90 of E_vis/E_p per
   bin; correlations; FPD, KPD and the feature classifier;
4. cell-level metrics (cells classifier, projection MSE, SSIM) on a seeded subsample;
5. a verdict per headline metric against its tolerance (`verdicts`).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from caloforge import __version__
from caloforge.data.source import Batch, ShowerSource
from caloforge.errors import CaloforgeError
from caloforge.geometry import Geometry
from caloforge.validation import metrics
from caloforge.validation.config import ValidationConfig
from caloforge.validation.features import (
    SCALAR_FEATURES,
    feature_names,
    scalar_features,
    voxel_feature_names,
)
from caloforge.validation.results import (
    CellLevel,
    CorrelationDifference,
    FeatureComparison,
    Measured,
    SetInfo,
    ValidationResult,
    VectorMetrics,
)
from caloforge.validation.sources import (
    SourceSpec,
    check_comparable,
    default_batch_size,
    features_of_sets,
    in_overlap,
    read_conditions,
    scalar_conditions,
    value_range,
)
from caloforge.validation.timing import StageTimer
from caloforge.validation.verdicts import (
    condition_edges,
    headline,
    overall_verdict,
    response_bins,
)


def compare(
    reference: ShowerSource,
    generated: ShowerSource,
    config: ValidationConfig | None = None,
    *,
    specs: tuple[SourceSpec, SourceSpec] | None = None,
    progress: bool = False,
) -> ValidationResult:
    """Compute every metric of the report for two open shower sets (`check_comparable` first).

    `specs` lets worker processes re-open the sets to compute features in parallel; without
    them everything runs in this process."""
    from caloforge._processes import default_workers

    for role, given in (("reference", reference), ("generated", generated)):
        if not isinstance(given, ShowerSource):  # a path: AttributeError on .geometry
            raise CaloforgeError(
                f"compare: {role} must be an open shower set (caloforge.data.open_showers), "
                f"got {type(given).__name__} {given!r}; validate() takes paths"
            )
    config = config or ValidationConfig()
    overlap = check_comparable(reference, generated)
    edges = condition_edges(overlap, config)  # bad bins refused before the features' work
    geometry = reference.geometry
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    timer = StageTimer(progress)  # with progress, each stage's end is a line: no long silence
    lap = timer.lap
    sources = (reference, generated)
    counts = [
        len(s) if config.max_showers is None else min(len(s), config.max_showers) for s in sources
    ]
    conditions = [read_conditions(s, n) for s, n in zip(sources, counts, strict=True)]
    masks = [in_overlap(c, overlap) for c in conditions]
    _check_overlap_holds_showers(sources, masks, overlap, geometry, config)
    rng = np.random.default_rng(config.seed)
    draws = _draws(masks, config, rng)
    sets = features_of_sets(
        sources,
        specs,
        masks,
        picks=draws.subsample,
        batch_size=config.batch_size or default_batch_size(geometry),
        workers=config.workers or default_workers(),
        progress=progress,
    )
    lap("features")
    infos = tuple(
        SetInfo(
            label=label,
            path=source.path,
            format=source.format,
            geometry=source.geometry.name,
            n_showers=len(source),
            n_read=n,
            n_used=int(mask.sum()),
            ranges={k: value_range(c[k]) for k in scalar_conditions(geometry)},
        )
        for label, source, c, mask, n in zip(
            config.labels, sources, conditions, masks, counts, strict=True
        )
    )
    del conditions
    ref_f, gen_f = sets[0].table, sets[1].table
    warnings = _input_warnings(infos, ref_f, gen_f, overlap, geometry, config)
    ref_s, gen_s = scalar_features(ref_f, geometry), scalar_features(gen_f, geometry)

    # Response and resolution over all showers ("all": one bin, the condition a dummy 0) and
    # in bins of each condition.
    common: dict[str, Any] = {
        "tolerances": config.tolerances,
        "min_showers": config.min_showers,
        "significance": config.significance,
        "seed": config.seed,
    }
    response = {
        "all": response_bins(
            "all",
            ref_s["response"],
            gen_s["response"],
            np.zeros(len(ref_s["response"])),
            np.zeros(len(gen_s["response"])),
            np.array([[-1.0, 1.0]]),
            **common,
        )
    }
    for name, e in edges.items():
        response[name] = response_bins(
            name,
            ref_s["response"],
            gen_s["response"],
            ref_f[f"condition/{name}"],
            gen_f[f"condition/{name}"],
            e,
            **common,
        )
    lap("response")
    features = _feature_comparisons(ref_s, gen_s, ref_f, gen_f, edges, config)
    correlation = _correlation_difference(ref_s, gen_s, config.seed)
    lap("scalar_features")
    vector = _vector_metrics(ref_f, gen_f, geometry, config, draws.classifier, lap)
    subsamples = [sets[0].subsample, sets[1].subsample]
    for one in sets:
        one.subsample = None  # handed over to the cell level, which lets go of them in turn
    cell = _cell_level(subsamples, draws.n_subsample, geometry, config, _spread_ratio(ref_s, gen_s))
    lap("cell_level")
    warnings += cell.warnings
    rows = headline(config, response, vector, cell)

    comparison = None
    if config.plots:
        from caloforge.validation.plots import Comparison

        comparison = Comparison(
            geometry=geometry,
            reference=ref_f,
            generated=gen_f,
            summaries=(sets[0].summaries, sets[1].summaries),
            labels=config.labels,
            scalars=(ref_s, gen_s),
            separation={k: f.separation_power for k, f in features.items() if f.separation_power},
            response=response,
            tolerances=config.tolerances,
            mean_images=cell.mean_images,
            radial_profiles=cell.radial_profiles,
            single_showers=cell.single_showers,
            single_conditions=cell.single_conditions,
            subsample=cell.n,
            ssim=cell.ssim,
            min_showers=config.min_showers,
        )
    return ValidationResult(
        config=config,
        geometry=geometry,
        sets=(infos[0], infos[1]),
        headline=rows,
        verdict=overall_verdict(rows),
        overlap=overlap,
        bins=edges,
        response=response,
        features=features,
        correlation=correlation,
        vector=vector,
        cell=cell,
        warnings=warnings,
        version=__version__,
        created=created,
        timings_s=timer.timings,
        comparison=comparison,
    )


def _check_overlap_holds_showers(
    sources: Sequence[ShowerSource],
    masks: Sequence[np.ndarray],
    overlap: Mapping[str, tuple[float, float]],
    geometry: Geometry,
    config: ValidationConfig,
) -> None:
    """Refuse, before the features' work, a comparison where one set has no shower inside the
    overlap of the two sets' conditions: each range overlaps, yet the showers of one set all
    lie outside the other's (one shower at 52.6 GeV against five at 50.9-58.0 GeV)."""
    for label, source, mask in zip(config.labels, sources, masks, strict=True):
        if not mask.any():
            ranges = ", ".join(
                f"{k} {lo:.4g}:{hi:.4g} {geometry.condition(k).unit}"
                for k, (lo, hi) in overlap.items()
            )
            read = (
                f"its {len(mask)} showers"
                if len(mask) == len(source)
                else f"the first {len(mask)} of its {len(source)} showers (--max-showers)"
            )
            raise CaloforgeError(
                f"{source.path} ({label.lower()}): none of {read} lies inside the overlap of "
                f"the two sets' conditions ({ranges}); nothing can be compared"
            )


def _input_warnings(
    infos: Sequence[SetInfo],
    ref_f: Mapping[str, np.ndarray],
    gen_f: Mapping[str, np.ndarray],
    overlap: Mapping[str, tuple[float, float]],
    geometry: Geometry,
    config: ValidationConfig,
) -> list[str]:
    """What a reader must know about the inputs: showers left out, different mixtures of
    conditions (which bias every overall metric)."""
    warnings = []
    for info in infos:
        left_out = info.n_read - info.n_used
        if left_out > 0.01 * info.n_read:
            ranges = ", ".join(
                f"{k} {lo:.4g}:{hi:.4g} {geometry.condition(k).unit}"
                for k, (lo, hi) in overlap.items()
            )
            warnings.append(
                f"{info.label}: {left_out} of {info.n_read} showers lie outside the overlap of "
                f"the two sets' conditions ({ranges}) and are left out"
            )
    if config.max_showers is not None and any(i.n_showers > config.max_showers for i in infos):
        warnings.append(f"only the first {config.max_showers} showers of each set are used")
    if config.subsample == 0:  # said aloud: the verdict then rests on the other metrics
        warnings.append(
            "the cell-level metrics (cells classifier, projection MSE, SSIM) are switched off "
            "(subsample 0); the verdict judges the other metrics alone"
        )
    for name in scalar_conditions(geometry):
        value, _ = metrics.separation_power(
            ref_f[f"condition/{name}"], gen_f[f"condition/{name}"], n_bootstrap=2
        )
        # Two samples of one distribution: about 49 (1/n1 + 1/n2) / 4 for 50 bins.
        floor = 49 * (1 / len(ref_f[f"condition/{name}"]) + 1 / len(gen_f[f"condition/{name}"]))
        if value > max(0.05, 2 * floor / 4):
            warnings.append(
                f"the {name} distributions of the two sets differ (separation power "
                f"{value:.2f}): overall metrics mix different populations; read the binned ones"
            )
    return warnings


def _feature_comparisons(
    ref_s: Mapping[str, np.ndarray],
    gen_s: Mapping[str, np.ndarray],
    ref_f: Mapping[str, np.ndarray],
    gen_f: Mapping[str, np.ndarray],
    edges: Mapping[str, np.ndarray],
    config: ValidationConfig,
) -> dict[str, FeatureComparison]:
    """Separation power, W1 and KS of each scalar feature overall, and its separation power
    in the bins of each condition (fewer bootstraps: 20)."""
    seed = config.seed
    out: dict[str, FeatureComparison] = {}
    for feature in SCALAR_FEATURES:
        if feature.key not in ref_s:
            continue
        rm, gm = np.isfinite(ref_s[feature.key]), np.isfinite(gen_s[feature.key])
        r, g = ref_s[feature.key][rm], gen_s[feature.key][gm]
        if min(len(r), len(g)) < 2:
            out[feature.key] = FeatureComparison(
                feature.key,
                feature.label,
                feature.unit,
                reason="fewer than two finite values in a set",
            )
            continue
        out[feature.key] = FeatureComparison(
            feature.key,
            feature.label,
            feature.unit,
            separation_power=metrics.separation_power(r, g, seed=seed),
            wasserstein=metrics.wasserstein(r, g, seed=seed, n_bootstrap=20),
            ks=metrics.ks_test(r, g),
            binned={
                name: metrics.binned(
                    metrics.separation_power,
                    r,
                    g,
                    ref_f[f"condition/{name}"][rm],
                    gen_f[f"condition/{name}"][gm],
                    e,
                    min_showers=config.min_showers,
                    n_bootstrap=20,
                    seed=seed,
                )
                for name, e in edges.items()
            },
        )
    return out


def _correlation_difference(
    ref_s: Mapping[str, np.ndarray], gen_s: Mapping[str, np.ndarray], seed: int
) -> CorrelationDifference | None:
    """Reference minus generated correlation matrix of the scalar features (the 3DGAN's
    "Geant4 minus GAN"), over the features finite for every shower."""
    keys = [k for k in ref_s if np.isfinite(ref_s[k]).all() and np.isfinite(gen_s[k]).all()]
    if len(keys) < 2 or min(len(ref_s[keys[0]]), len(gen_s[keys[0]])) < 3:
        return None
    diff, error = metrics.correlation_difference(
        np.stack([ref_s[k] for k in keys], axis=1),
        np.stack([gen_s[k] for k in keys], axis=1),
        seed=seed,
        n_bootstrap=20,
    )
    return CorrelationDifference(keys, diff, error)


def _attempt(fn: Callable[[], tuple[float, float]]) -> Measured:
    """Run a metric; a ValueError (too few showers, say) becomes a reason instead of a value."""
    try:
        value, error = fn()
    except ValueError as exc:
        return Measured(None, None, str(exc))
    return Measured(float(value), float(error))


def _vector_metrics(
    ref_f: Mapping[str, np.ndarray],
    gen_f: Mapping[str, np.ndarray],
    geometry: Geometry,
    config: ValidationConfig,
    rows: tuple[np.ndarray, np.ndarray] | None,
    lap: Callable[[str], None] = lambda stage: None,
) -> VectorMetrics:
    """FPD, KPD and the feature classifier (on the showers at `rows` of each set, drawn by
    `_draws`; None: too few showers); `lap(stage)` is called after each."""
    seed = config.seed
    ref_fv, gen_fv = ref_f["feature_vector"], gen_f["feature_vector"]
    names = (
        voxel_feature_names(geometry) if geometry.readout == "voxels" else feature_names(geometry)
    )
    # metrics.fpd extrapolates in 1/N over sizes spanning a factor 5 above 2 x features + 2:
    # with fewer showers it would still return a value, with an error too wide to fail.
    n_features = ref_fv.shape[1] if ref_fv.ndim == 2 else 0
    fpd_minimum, n_sets = 5 * (2 * n_features + 2), min(len(ref_fv), len(gen_fv))
    if n_sets < fpd_minimum:
        fpd = Measured(
            None,
            None,
            f"{n_sets} showers per set; FPD needs at least {fpd_minimum} for {n_features} features",
        )
    else:
        fpd = _attempt(lambda: metrics.fpd(ref_fv, gen_fv, seed=seed))
    lap("fpd")
    kpd = _attempt(lambda: metrics.kpd(ref_fv, gen_fv, seed=seed))
    lap("kpd")
    n = min(config.classifier_showers, len(ref_fv), len(gen_fv))
    result, reason = None, ""
    if n < 100:
        reason = f"{n} showers per set; the classifier needs at least 100"
    else:
        from caloforge.validation.classifier import high_level_classifier_test

        assert rows is not None
        ir, ig = rows
        try:
            result = high_level_classifier_test(
                ref_fv[ir],
                gen_fv[ig],
                ref_f["condition/energy"][ir],
                gen_f["condition/energy"][ig],
                seed=seed,
            )
        except ValueError as exc:
            reason = str(exc)
    lap("classifier_high_level")
    return VectorMetrics(names, fpd, kpd, result, reason, n)


# --- the seeded draws, made before the pass over the showers ------------------------------------
@dataclass(frozen=True)
class _Draws:
    """Which showers (indices among those read) the feature classifier and the cell-level
    metrics use: `classifier` (indices into the kept showers of each set) and `subsample`
    (indices into the read showers, inside the overlap), each None when too few; and the
    subsample's size per set."""

    classifier: tuple[np.ndarray, np.ndarray] | None
    subsample: tuple[np.ndarray, np.ndarray] | None
    n_subsample: int


def _draws(
    masks: Sequence[np.ndarray], config: ValidationConfig, rng: np.random.Generator
) -> _Draws:
    """The classifier's showers, then the cell-level subsample, drawn from one seeded `rng`
    in this order: known before the showers are read, so that one pass over each set can
    copy the subsample out while it computes the features."""
    used = [int(m.sum()) for m in masks]
    n = min(config.classifier_showers, *used)
    classifier = None
    if n >= 100:
        classifier = (
            np.sort(rng.choice(used[0], n, replace=False)),
            np.sort(rng.choice(used[1], n, replace=False)),
        )
    n_subsample = int(min(config.subsample, *used))
    subsample = None
    if config.subsample != 0 and n_subsample >= 2:
        subsample = (
            _draw_subsample(masks[0], n_subsample, rng),
            _draw_subsample(masks[1], n_subsample, rng),
        )
    return _Draws(classifier, subsample, n_subsample)


# --- cell-level metrics on a subsample --------------------------------------------------------
def _draw_subsample(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.flatnonzero(mask)
    return np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))


def _low_level_inputs(showers: np.ndarray, energy: np.ndarray, chunk: int = 256) -> np.ndarray:
    """`classifier.low_level_inputs` built a chunk at a time, so that no float64 copy of all
    cells is ever held."""
    from caloforge.validation.classifier import low_level_inputs

    out = np.empty((len(showers), 1 + showers[0].size), dtype=np.float32)
    for lo in range(0, len(showers), chunk):
        out[lo : lo + chunk] = low_level_inputs(showers[lo : lo + chunk], energy[lo : lo + chunk])
    return out


def _conditions_of(batch: Batch, i: int, names: Sequence[str]) -> dict[str, float]:
    return {name: float(batch.conditions[name][i]) for name in names}


def _matching_pair(ref: Batch, gen: Batch, names: Sequence[str]) -> tuple[int, int]:
    """A reference shower near the median energy and the generated shower closest to it in
    the scalar conditions (each scaled by the reference's spread)."""
    e = ref.conditions["energy"]
    i = int(np.argmin(np.abs(e - np.median(e))))
    distance = np.zeros(len(gen))
    for name in names:
        spread = float(np.std(ref.conditions[name])) or 1.0
        distance += ((gen.conditions[name] - ref.conditions[name][i]) / spread) ** 2
    return i, int(np.argmin(distance))


def _cell_level(
    subsamples: list[Batch | None],
    n: int,
    geometry: Geometry,
    config: ValidationConfig,
    spread_ratio: float = math.nan,
) -> CellLevel:
    """The cell-level metrics of the seeded subsample of each set inside the overlap (`n`
    showers per set, copied out by the pass over the showers; None for both when none was
    drawn); `spread_ratio` (`_spread_ratio`) decides with the SSIM whether diversity is
    lacking. The list `subsamples` is emptied: each set's showers are let go once its
    classifier inputs are built."""
    ref, gen = subsamples
    subsamples.clear()
    if ref is None or gen is None:
        reason = (
            "switched off (subsample 0)"
            if config.subsample == 0
            else f"{n} shower(s) per set in the overlap of the conditions"
        )
        return CellLevel(
            n,
            skipped=reason,
            projection_mse=Measured(None, None, reason),
            classifier_reason=reason,
        )
    seed = config.seed
    names = scalar_conditions(geometry)
    cell = CellLevel(n)
    if geometry.readout != "voxels":
        try:
            value, error, floor = metrics.projection_mse_and_floor(
                ref.showers, gen.showers, seed=seed
            )
        except ValueError as exc:
            cell.projection_mse = Measured(None, None, str(exc))
        else:
            cell.projection_mse = Measured(value - floor, error)
            cell.projection_mse_raw = value
            cell.projection_mse_floor = floor
            depth = ref.showers.ndim == 4
            cell.projections = "xy, xz, yz projections" if depth else "image"
        n_pairs = min(config.ssim_pairs, n // 2)
        if n_pairs >= 10:
            cell.ssim = metrics.ssim_scan(ref.showers, gen.showers, n_pairs=n_pairs, seed=seed)
            cell.ssim_pairs = n_pairs
            cell.warnings += _diversity_warning(cell.ssim, config.labels, spread_ratio)
        else:
            cell.ssim_reason = f"{n} showers per set; SSIM needs at least 20"
        cell.mean_images = (
            ref.showers.mean(axis=0, dtype=np.float64),
            gen.showers.mean(axis=0, dtype=np.float64),
        )
        if config.plots and geometry.cell_size_mm is not None and geometry.layers:
            from caloforge.validation.plots.shapes import radial_edges, radial_profiles

            edges = radial_edges(geometry)
            cell.radial_profiles = (
                radial_profiles(ref.showers, geometry, edges),
                radial_profiles(gen.showers, geometry, edges),
            )
        i, j = _matching_pair(ref, gen, names)
        cell.single_showers = (ref.showers[i].copy(), gen.showers[j].copy())
        cell.single_conditions = (_conditions_of(ref, i, names), _conditions_of(gen, j, names))
    else:
        reason = "needs a cell grid; voxel geometries have none"
        cell.projection_mse = Measured(None, None, reason)
        cell.ssim_reason = reason

    # The cells classifier last: its inputs replace the showers, one set at a time.
    if n < 100:
        cell.classifier_reason = f"{n} showers per set; the classifier needs at least 100"
    else:
        from caloforge.validation.classifier import classifier_test

        x_ref = _low_level_inputs(ref.showers, ref.conditions["energy"])
        del ref
        x_gen = _low_level_inputs(gen.showers, gen.conditions["energy"])
        del gen
        try:
            cell.classifier = classifier_test(x_ref, x_gen, standardise="cells", seed=seed)
        except ValueError as exc:
            cell.classifier_reason = str(exc)
    return cell


# Below this median ratio of the generated to the reference spread of the scalar features,
# the generated showers vary too little from one to the next.
SPREAD_RATIO_LOW = 0.8


def _spread_ratio(ref_s: Mapping[str, np.ndarray], gen_s: Mapping[str, np.ndarray]) -> float:
    """Median over the scalar features of the generated over the reference standard
    deviation: how much the generated showers vary from one to the next (energy, position,
    shape) against the reference's; NaN without a feature to measure it."""
    ratios = []
    for key in ref_s:
        r, g = ref_s[key][np.isfinite(ref_s[key])], gen_s[key][np.isfinite(gen_s[key])]
        if min(len(r), len(g)) > 2 and np.std(r) > 0:
            ratios.append(float(np.std(g) / np.std(r)))
    return float(np.median(ratios)) if ratios else math.nan


def _diversity_warning(
    scan: metrics.SSIMScan, labels: Sequence[str], spread_ratio: float = math.nan
) -> list[str]:
    """A warning when the generated showers are more alike than the reference's (SSIM at
    L = 1e-4 GeV, the Conv2D paper's stable region) and also vary less in their features.

    SSIM between random pairs of showers is dominated by the cell-to-cell fluctuations, the
    finest structure of each image; a transverse blur removes them, so blurred showers look
    alike pixel by pixel though they vary as much as the reference in energy, position and
    shape. Too little diversity shows in both: the SSIM excess, and a median spread of the
    scalar features (`_spread_ratio`) below SPREAD_RATIO_LOW of the reference's."""
    i = int(np.argmin(np.abs(np.log10(scan.data_ranges) + 4.0)))
    excess = scan.gen_gen[i] - scan.ref_ref[i]
    error = math.hypot(scan.gen_gen_error[i], scan.ref_ref_error[i])
    varies_less = math.isnan(spread_ratio) or spread_ratio < SPREAD_RATIO_LOW
    if excess > 3 * error and excess > 0.02 and varies_less:
        spread = (
            ""
            if math.isnan(spread_ratio)
            else (f"; their features spread {spread_ratio:.2f} times the {labels[0]} ones")
        )
        return [
            f"{labels[1]} showers are more alike than the {labels[0]} ones (SSIM at "
            f"L = {scan.data_ranges[i]:.0e} GeV: {scan.gen_gen[i]:.3f} within {labels[1]}, "
            f"{scan.ref_ref[i]:.3f} within {labels[0]}{spread}): too little diversity?"
        ]
    return []
