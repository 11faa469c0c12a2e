"""The CaloChallenge's classifier test, by its reference recipe (`evaluate.py` of
github.com/CaloChallenge/homepage, code/; Krause et al. 2024).

Recipe: generated showers labelled 0, reference 1, the same number of each; each class split
into a training, a "test" and a "validation" part, in that order: 60 / 20 / 20 %, or, for sets
of at least the size of a challenge data set, the reference's fixed counts (`DATASET_SPLITS`:
the training and test parts, the validation part the rest). A network of three hidden layers
of 2048 LeakyReLU (slope 0.01) units and one output logit, PyTorch's default initialisation,
no dropout and no input scaling, is trained with Adam (lr 2e-4) on the BCE in shuffled
batches of 1000 for 50 epochs; after each epoch the accuracy on the test part
is measured (output rounded at 0.5) and the weights of the best epoch are kept (training stops
early only if it reaches 1). The output on the test part calibrates the network (isotonic
regression of the labels on sigmoid(output), clipped to [1e-6, 1 - 1e-6]); on the validation
part the calibrated output gives the AUC and the JSD = (ln 2 - BCE) / ln 2, the numbers the
challenge publishes.

Differences, chosen for speed and reproducibility: seeded (one `torch.Generator`, one numpy
generator) where the reference uses the global RNGs; float32 by default (the reference sets
float64 globally; `dtype` restores it). Inputs come from `features` (low level, low level
normalised per layer, high level).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from caloforge.validation.classifier import (
    calibrated_jsd,
    calibration,
    reset_linear_layers,
    roc_auc,
    torch_threads,
)

RECIPE = {
    "hidden_layers": 3,
    "hidden_units": 2048,
    "activation": "LeakyReLU(0.01)",
    "optimiser": "Adam",
    "lr": 2e-4,
    "batch_size": 1000,
    "epochs": 50,
    "split": "per class: the first 60 % training, 20 % test, the rest validation; for a "
    "challenge data set of at least its size, the reference's counts (training, test, "
    "validation the rest): 1-photons 80 000 / 20 000, 1-pions 80 000 / 20 000, 2 and 3 "
    "60 000 / 20 000",
    "selection": "best epoch by accuracy on the test part",
    "calibration": "isotonic on the test part, clipped to [1e-6, 1 - 1e-6]",
    "evaluation": "AUC and JSD of the calibrated output on the validation part",
}


@dataclass(frozen=True)
class RecipeResult:
    """AUC and JSD (bits) of the calibrated output on the validation part, with bootstrap
    errors over its showers; `auc_raw`: the AUC of the uncalibrated output; the best epoch
    (of `epochs` run) and its test accuracy; showers per class in each part."""

    auc: float
    auc_error: float
    jsd: float
    jsd_error: float
    auc_raw: float
    accuracy_test: float
    best_epoch: int
    epochs: int
    n_train: int
    n_test: int
    n_validation: int


class RecipeNetwork(nn.Module):
    """The reference's DNN: `hidden_layers` Linear + LeakyReLU layers of `hidden_units`,
    then one output logit."""

    def __init__(self, n_in: int, hidden_units: int = 2048, hidden_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(hidden_layers):
            layers += [nn.Linear(n_in, hidden_units), nn.LeakyReLU()]
            n_in = hidden_units
        layers.append(nn.Linear(n_in, 1))
        self.layers = nn.Sequential(*layers)

    def reset(self, generator: torch.Generator) -> None:
        reset_linear_layers(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


# The reference's showers per class in the training, test and validation parts of each data
# set (its `ttv_split` given the data set, as `evaluate.py` always calls it).
DATASET_SPLITS = {
    "1-photons": (80_000, 20_000, 21_000),
    "1-pions": (80_000, 20_000, 20_800),
    "2": (60_000, 20_000, 20_000),
    "3": (60_000, 20_000, 20_000),
}


def split_counts(
    n: int, split: tuple[float, float, float], dataset: str | None = None
) -> tuple[int, int, int]:
    """Showers per class in the training, test and validation parts: for a challenge
    `dataset` and n at least its size, the reference's training and test counts and the rest
    (as its `ttv_split` splits the data set's files); otherwise the first two int(n x
    fraction), the last the rest (its `ttv_split` by fractions, for which the fixed counts
    would leave the validation part short or empty)."""
    fixed = DATASET_SPLITS.get(dataset or "")
    if fixed is not None and n >= sum(fixed):
        return fixed[0], fixed[1], n - fixed[0] - fixed[1]
    n_train, n_test = int(n * split[0]), int(n * split[1])
    return n_train, n_test, n - n_train - n_test


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        parts = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).double().numpy()


def recipe_classifier_test(
    reference: np.ndarray,
    generated: np.ndarray,
    *,
    epochs: int = 50,
    hidden_units: int = 2048,
    hidden_layers: int = 3,
    lr: float = 2e-4,
    batch_size: int = 1000,
    split: tuple[float, float, float] = (0.6, 0.2, 0.2),
    dataset: str | None = None,
    n_bootstrap: int = 100,
    seed: int = 0,
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> RecipeResult:
    """The reference's classifier test of `generated` against `reference` inputs (n, d)
    (module docstring); the larger set is subsampled (seeded) to the smaller. `dataset`
    (a challenge data set's name) selects the reference's fixed split for sets of its size
    (`split_counts`)."""
    r, g = np.asarray(reference), np.asarray(generated)
    if r.ndim != 2 or g.ndim != 2 or r.shape[1] != g.shape[1]:
        raise ValueError(f"need two (n, d) input sets of the same d, got {r.shape} and {g.shape}")
    if not (np.isfinite(r).all() and np.isfinite(g).all()):
        raise ValueError("classifier inputs contain NaN or infinite values")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    rng = np.random.default_rng(seed)
    n = min(len(r), len(g))
    counts = split_counts(n, split, dataset)
    if min(counts) < 10:
        raise ValueError(f"{n} showers per class are too few for the split {split}")
    ig, ir = rng.permutation(len(g))[:n], rng.permutation(len(r))[:n]
    bounds = np.cumsum((0, *counts))
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        x = np.concatenate([g[ig[lo:hi]], r[ir[lo:hi]]])
        y = np.concatenate([np.zeros(hi - lo), np.ones(hi - lo)])
        order = rng.permutation(len(x))
        parts.append((torch.from_numpy(x[order]).to(dtype), y[order]))
    (x_train, y_train), (x_test, y_test), (x_val, y_val) = parts
    target = torch.from_numpy(y_train).to(dtype)

    with torch_threads(threads):
        generator = torch.Generator().manual_seed(seed)
        model = RecipeNetwork(r.shape[1], hidden_units, hidden_layers).to(dtype)
        model.reset(generator)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        best_accuracy, best_epoch, best_state = -math.inf, 0, None
        for epoch in range(1, epochs + 1):
            model.train()
            shuffled = torch.randperm(len(x_train), generator=generator)
            for start in range(0, len(shuffled), batch_size):
                idx = shuffled[start : start + batch_size]
                loss = loss_fn(model(x_train[idx]), target[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            model.eval()
            probability = expit(_logits(model, x_test, batch_size))
            accuracy = float(np.mean(np.round(probability) == y_test))
            if accuracy > best_accuracy:
                best_accuracy, best_epoch = accuracy, epoch
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            if accuracy == 1.0:
                break
        assert best_state is not None
        model.load_state_dict(best_state)
        model.eval()
        test_logits = _logits(model, x_test, batch_size)
        val_logits = _logits(model, x_val, batch_size)
    calibrated = calibration(y_test, test_logits)(val_logits)
    auc, jsd = roc_auc(y_val, calibrated), calibrated_jsd(y_val, calibrated)
    neg, pos = np.flatnonzero(y_val == 0), np.flatnonzero(y_val == 1)
    draws = []
    for _ in range(n_bootstrap):
        pick = np.concatenate([rng.choice(neg, len(neg)), rng.choice(pos, len(pos))])
        y, p = y_val[pick], calibrated[pick]
        draws.append((roc_auc(y, p), calibrated_jsd(y, p)))
    errors = np.std(np.asarray(draws), axis=0, ddof=1) if n_bootstrap > 1 else np.zeros(2)
    return RecipeResult(
        auc=auc,
        auc_error=float(errors[0]),
        jsd=jsd,
        jsd_error=float(errors[1]),
        auc_raw=roc_auc(y_val, val_logits),
        accuracy_test=best_accuracy,
        best_epoch=best_epoch,
        epochs=epochs,
        n_train=counts[0],
        n_test=counts[1],
        n_validation=counts[2],
    )
