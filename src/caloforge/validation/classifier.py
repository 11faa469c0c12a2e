"""Classifier two-sample test: can a small network tell generated showers from the reference?

The CaloChallenge's headline metric (Krause et al. 2024; systems.md 6): a classifier is trained
to separate reference (label 0) from generated (label 1) showers, on the cells
([log10 E_inc, cells / E_inc], "low level") or on the high-level feature vector
([log10 E_inc, features], "high level"), and evaluated on showers it never saw:
ROC AUC (0.5 = indistinguishable, 1 = fully separable) and the Jensen-Shannon divergence
JSD = (ln 2 - BCE) / ln 2 in bits (0 = indistinguishable, 1 = disjoint), with the BCE of the
classifier's output calibrated on the validation showers, as the CaloChallenge computes it.

Everything runs on the CPU by default and is seeded through one `torch.Generator` (weights,
shuffling) and one `numpy.random.Generator` (the split and the bootstrap); no global RNG.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with `threads` torch CPU threads (None: unchanged), restored afterwards."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def low_level_inputs(showers: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """[log10(E_inc / GeV), cells / E_inc] per shower, (n, 1 + cells) float32: the
    CaloChallenge's low-level classifier input (train it with standardise="cells")."""
    e = np.asarray(energy, dtype=np.float64).reshape(-1)
    cells = showers.reshape(len(showers), -1) / e[:, None]
    return np.concatenate([np.log10(e)[:, None], cells], axis=1).astype(np.float32)


def high_level_inputs(features: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """[log10(E_inc / GeV), features] per shower, (n, 1 + k) float32 (written straight into
    float32: no float64 copy of the features)."""
    e = np.asarray(energy, dtype=np.float64).reshape(-1)
    f = np.asarray(features)
    if f.ndim != 2 or len(f) != len(e):
        raise ValueError(f"need (n, k) features and n energies, got {f.shape} and {e.shape}")
    out = np.empty((len(f), 1 + f.shape[1]), dtype=np.float32)
    out[:, 0] = np.log10(e)
    out[:, 1:] = f
    return out


@dataclass(frozen=True)
class ClassifierResult:
    """Held-out test of a classifier two-sample test.

    auc: ROC AUC of the network's output on the test part; jsd: Jensen-Shannon divergence in
    bits from the calibrated output (`calibrated_jsd`); auc_error, jsd_error: their bootstrap
    standard deviations over the test showers (the spread from retraining and from the
    calibration is not included). n_train, n_validation,
    n_test: showers per class in each part; epochs: the epoch of the lowest validation loss,
    whose weights were tested (training stops `patience` epochs after it)."""

    auc: float
    auc_error: float
    jsd: float
    jsd_error: float
    n_train: int
    n_validation: int
    n_test: int
    epochs: int


def low_level_classifier_test(
    reference: np.ndarray,
    generated: np.ndarray,
    reference_energy: np.ndarray,
    generated_energy: np.ndarray,
    **kwargs: Any,
) -> ClassifierResult:
    """The CaloChallenge's low-level classifier test: `classifier_test` on
    [log10 E_inc, cells / E_inc] of the showers (n, ...) with E_inc in GeV, cells scaled
    together (standardise="cells"). Keyword arguments go to `classifier_test`."""
    kwargs.setdefault("standardise", "cells")
    return classifier_test(
        low_level_inputs(reference, reference_energy),
        low_level_inputs(generated, generated_energy),
        **kwargs,
    )


def high_level_classifier_test(
    reference: np.ndarray,
    generated: np.ndarray,
    reference_energy: np.ndarray,
    generated_energy: np.ndarray,
    **kwargs: Any,
) -> ClassifierResult:
    """The CaloChallenge's high-level classifier test: `classifier_test` on
    [log10 E_inc, features] of the feature vectors (n, k) (`features.feature_vector`), each
    column standardised. Keyword arguments go to `classifier_test`."""
    return classifier_test(
        high_level_inputs(reference, reference_energy),
        high_level_inputs(generated, generated_energy),
        **kwargs,
    )


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count one half), from the Mann-Whitney rank sum."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the AUC needs both classes among the labels")
    ranks = _rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    from scipy.stats import rankdata

    return np.asarray(rankdata(x), dtype=np.float64)


# The CaloChallenge's calibration keeps probabilities within [1e-6, 1 - 1e-6]: a BCE of at most
# -ln(1e-6) = 13.8 nats per shower.
CALIBRATION_CLIP = 1e-6


def calibration(labels: np.ndarray, logits: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The CaloChallenge's calibration of a classifier's output, fitted on labelled showers
    (the validation part): the isotonic (non-decreasing) regression of the labels on the
    probabilities sigmoid(logits), clipped to [CALIBRATION_CLIP, 1 - CALIBRATION_CLIP];
    returns logits -> calibrated probabilities, interpolated linearly between the fitted
    points and constant beyond them (sklearn's IsotonicRegression(out_of_bounds="clip",
    y_min=1e-6, y_max=1 - 1e-6), as in the challenge's evaluation code).

    Calibrated, the output estimates P(generated | x), so that its BCE estimates
    ln 2 - JSD for balanced classes; an uncalibrated, overconfident network overstates the
    BCE and can give a JSD below 0."""
    from scipy.optimize import isotonic_regression
    from scipy.special import expit

    p = expit(np.asarray(logits, dtype=np.float64))
    points, index, counts = np.unique(p, return_inverse=True, return_counts=True)
    mean_label = np.bincount(index, weights=np.asarray(labels, dtype=np.float64)) / counts
    fitted = isotonic_regression(mean_label, weights=counts, increasing=True).x
    fitted = np.clip(fitted, CALIBRATION_CLIP, 1.0 - CALIBRATION_CLIP)

    def calibrated(new_logits: np.ndarray) -> np.ndarray:
        return np.interp(expit(np.asarray(new_logits, dtype=np.float64)), points, fitted)

    return calibrated


def _bce(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of probabilities in (0, 1)."""
    y, p = labels, probabilities
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def calibrated_jsd(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits, (ln 2 - BCE) / ln 2, from balanced labelled showers
    and a calibrated classifier's P(label 1 | x) (`calibration`): 0 for indistinguishable
    sets, 1 for disjoint ones (the CaloChallenge's JSD)."""
    return (math.log(2.0) - _bce(labels, probabilities)) / math.log(2.0)


def _scaling(x: np.ndarray, standardise: str) -> tuple[np.ndarray, np.ndarray]:
    """Offset and scale of each input column, from the training part `x`."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    if standardise == "columns":
        return mean, np.where(std > 1e-12 * (np.abs(mean) + 1.0), std, 1.0)
    if standardise == "cells":
        # Column 0 (log10 E_inc) on its own; the cells share one scale, so that a rarely hit
        # cell is not blown up to the size of the shower's core.
        scale = np.full_like(std, np.sqrt((std[1:] ** 2).mean()) or 1.0)
        scale[0] = std[0] if std[0] > 0 else 1.0
        return mean, scale
    if standardise == "none":
        return np.zeros_like(mean), np.ones_like(std)
    raise ValueError(f"unknown standardise '{standardise}'; choose columns, cells or none")


def reset_linear_layers(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation of every Linear layer in `module`, drawn from
    `generator` (so a classifier's start is reproducible without the global RNG)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5.0), generator=generator)
            bound = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.bias, -bound, bound, generator=generator)


class _MLP(nn.Module):
    def __init__(self, n_in: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(n_in, width), nn.LeakyReLU(0.2)]
            n_in = width
        layers.append(nn.Linear(n_in, 1))
        self.net = nn.Sequential(*layers)

    def reset(self, generator: torch.Generator) -> None:
        reset_linear_layers(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def classifier_test(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    hidden: tuple[int, ...] = (64, 64),
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 5,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    n_bootstrap: int = 200,
    seed: int = 0,
    device: str | torch.device = "cpu",
    threads: int | None = 1,
    standardise: Literal["columns", "cells", "none"] = "columns",
) -> ClassifierResult:
    """Train an MLP to tell `generated` (label 1) from `reference` (label 0) and measure it on
    held-out showers: ROC AUC and JSD = (ln 2 - BCE) / ln 2 in bits (CaloChallenge; systems.md 6).

    Inputs are per-shower vectors (n, d), from `low_level_inputs` or `high_level_inputs`.
    The larger set is subsampled to the smaller, so 0.5 and ln 2 are the baselines. Each class
    is split train / validation / test by `split`; inputs are shifted by the training part's
    mean and scaled (`standardise`): "columns" by each column's standard deviation (feature
    vectors), "cells" column 0 by its own and all others by one common scale (cell inputs:
    a rarely hit outer cell scaled to unit variance becomes noise the network overfits at
    once), "none" not at all. The network (LeakyReLU MLP, `hidden` widths) is trained with
    Adam on the BCE and stopped when the validation loss has not improved for `patience`
    epochs; the best epoch's weights are tested. The AUC is that of the network's output; the
    JSD that of its output calibrated on the validation showers (`calibration`, the
    CaloChallenge's isotonic regression), whose flat steps would only add ties to the AUC.
    Fitted on few validation showers the calibration follows their noise, which puts the JSD
    of indistinguishable sets a little below 0. Errors: bootstrap over the test showers.

    `threads`: torch CPU threads while this runs (restored afterwards; None leaves torch's
    setting). Networks this small train fastest on one: the small matrix products do not pay
    for the threads' synchronisation (measurements: benchmarks/validation.md).
    """
    with torch_threads(threads):
        return _classifier_test(
            reference,
            generated,
            hidden=hidden,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            patience=patience,
            split=split,
            n_bootstrap=n_bootstrap,
            seed=seed,
            device=device,
            standardise=standardise,
        )


def _classifier_test(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    hidden: tuple[int, ...],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    split: tuple[float, float, float],
    n_bootstrap: int,
    seed: int,
    device: str | torch.device,
    standardise: str,
) -> ClassifierResult:
    r = np.asarray(reference, dtype=np.float32)
    g = np.asarray(generated, dtype=np.float32)
    if r.ndim != 2 or g.ndim != 2 or r.shape[1] != g.shape[1]:
        raise ValueError(f"need two (n, d) input sets of the same d, got {r.shape} and {g.shape}")
    if not (np.isfinite(r).all() and np.isfinite(g).all()):
        raise ValueError("classifier inputs contain NaN or infinite values")
    if len(split) != 3 or min(split) <= 0:
        raise ValueError(f"split must be three positive fractions, got {split}")
    rng = np.random.default_rng(seed)
    n = min(len(r), len(g))
    fractions = np.asarray(split, dtype=np.float64) / sum(split)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    n_test = n - n_train - n_val
    if min(n_train, n_val, n_test) < 10:
        raise ValueError(f"{n} showers per class are too few for the split {split}")
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    ir, ig = rng.permutation(len(r))[:n], rng.permutation(len(g))[:n]
    for lo, hi in ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, n)):
        x = np.concatenate([r[ir[lo:hi]], g[ig[lo:hi]]])
        y = np.concatenate([np.zeros(hi - lo), np.ones(hi - lo)]).astype(np.float32)
        parts.append((x, y))
    mean, std = _scaling(parts[0][0], standardise)
    dev = torch.device(device)
    for x, _ in parts:  # in place: the parts are this function's own copies
        x -= mean
        x /= std
    tensors = [(torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)) for x, y in parts]
    (x_train, y_train), (x_val, y_val), (x_test, _) = tensors

    generator = torch.Generator().manual_seed(seed)
    model = _MLP(r.shape[1], tuple(hidden))
    model.reset(generator)
    model.to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best_loss, best_state, best_epoch, waited = math.inf, copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(dev)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.binary_cross_entropy_with_logits(model(x_train[idx]), y_train[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(nn.functional.binary_cross_entropy_with_logits(model(x_val), y_val))
        if val_loss < best_loss - 1e-6:
            best_loss, best_state, best_epoch, waited = (
                val_loss,
                copy.deepcopy(model.state_dict()),
                epoch,
                0,
            )
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        val_logits = model(x_val).cpu().numpy().astype(np.float64)
        logits = model(x_test).cpu().numpy().astype(np.float64)
    labels = parts[2][1].astype(np.float64)
    probabilities = calibration(parts[1][1], val_logits)(logits)

    auc, jsd = roc_auc(labels, logits), calibrated_jsd(labels, probabilities)
    # Bootstrap each class separately, so every resample keeps both classes, balanced.
    neg, pos = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    draws = []
    for _ in range(n_bootstrap):
        pick = np.concatenate([rng.choice(neg, len(neg)), rng.choice(pos, len(pos))])
        draws.append(
            (roc_auc(labels[pick], logits[pick]), calibrated_jsd(labels[pick], probabilities[pick]))
        )
    errors = np.std(np.asarray(draws), axis=0, ddof=1) if n_bootstrap > 1 else np.zeros(2)
    return ClassifierResult(
        auc=auc,
        auc_error=float(errors[0]),
        jsd=jsd,
        jsd_error=float(errors[1]),
        n_train=n_train,
        n_validation=n_val,
        n_test=n_test,
        epochs=best_epoch,
    )
