"""The accuracy guard: how far int8 showers may be from the fp32 ones, and how far they are.

On the calibration conditions, showers in GeV: the int8 showers against the fp32 showers of
the same noise B, with the fp32 showers of an independent noise A as the statistical
baseline.

- projection MSE (the Conv2D GAN paper's metric, `caloforge.validation.metrics`):
  `degradation = mse(fp32 B, int8 B) / floor`, the floor being the expected mse(fp32 A,
  fp32 B) (`paired_projection_mse_floor`, from the paired showers). This is the expected relative
  increase of the paper's number, fp32 A against the generator, when int8 replaces fp32:
  E[mse(A, int8 B)] = E[mse(A, fp32 B)] + mse(fp32 B, int8 B) up to a cross term that
  averages to zero over A. The floor falls as 1 / n: a tolerance of 10 % at 512 showers is
  10 % x N / 512 of the floor of an N-shower comparison.
- response: `|mean(sum / E) int8 / mean(sum / E) fp32 - 1|` (E: the primary energy, or
  |momentum|), held to that error plus two of its standard errors (from the paired per-shower
  differences): measured on a few hundred showers it is itself uncertain, and the tolerance
  is meant for showers the guard never saw.
- profile: L1 distance of the normalised mean longitudinal profiles (the x profile of
  depth-summed geometries).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from caloforge.data.transforms import Transform
from caloforge.errors import CaloforgeError, ConditionError
from caloforge.generation.conditions import check_conditions
from caloforge.generation.onnx_graph import GeVGenerator
from caloforge.generation.openvino import Feed
from caloforge.geometry import Geometry
from caloforge.models import ShowerGenerator
from caloforge.validation.features import normalised_mean_profile, response
from caloforge.validation.metrics.images import paired_projection_mse_floor, projection_mse

__all__ = [
    "BATCH",
    "Guard",
    "GuardMetrics",
    "Int8Error",
    "Int8Tolerance",
    "cell_energy",
    "cpu_generator",
    "in_gev",
    "make_feeds",
    "primary_energy",
]

BATCH = 64  # showers per calibration and guard batch


class Int8Error(CaloforgeError):
    """Quantization that cannot be done as asked (bad calibration set, failing library)."""


@dataclass(frozen=True)
class Int8Tolerance:
    """How far the int8 showers may be from the fp32 ones (see the module docstring)."""

    projection_mse: float = 0.10  # int8's projection MSE shift over fp32's noise floor
    response: float = 0.01  # relative difference of the mean visible / primary energy ratio
    profile: float = 0.02  # L1 distance of the normalised longitudinal profiles (in [0, 2])

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if not value > 0:
                raise Int8Error(f"int8 tolerance '{key}' must be positive, got {value}")


@dataclass(frozen=True)
class GuardMetrics:
    """The guard's numbers for one quantized generator (int8 vs fp32, showers in GeV)."""

    projection_mse_degradation: float  # mse(fp32 B, int8 B) / mse(fp32 A, fp32 B)
    response_error: float  # |ratio int8 / ratio fp32 - 1|, same noise
    profile_l1: float  # L1 of the normalised longitudinal profiles, same noise
    relative_l2: float  # ||int8 - fp32|| / ||fp32|| over all cells, same noise (not guarded)
    # statistical error of response_error: the per-shower ratio differences' standard error
    response_standard_error: float = 0.0

    @property
    def response_bound(self) -> float:
        """What the response is held to: its error plus two standard errors. A difference
        measured on a few hundred showers is itself uncertain (gan3d: 0.8 % +- 0.2 % on 512;
        0.4 % to 1.2 % on other draws of 512), and the tolerance is meant for any showers."""
        return self.response_error + 2.0 * self.response_standard_error

    def holds(self, tolerance: Int8Tolerance) -> bool:
        return (
            self.projection_mse_degradation <= tolerance.projection_mse
            and self.response_bound <= tolerance.response
            and self.profile_l1 <= tolerance.profile
        )

    def score(self, tolerance: Int8Tolerance) -> float:
        """Sum of each guarded number over its tolerance, where positive (ranks layers)."""
        return (
            self.projection_mse_degradation / tolerance.projection_mse
            + self.response_bound / tolerance.response
            + self.profile_l1 / tolerance.profile
        )

    def describe(self) -> str:
        return (
            f"projection MSE {self.projection_mse_degradation:.1%}, response "
            f"{self.response_error:.2%} +- {self.response_standard_error:.2%}, profile L1 "
            f"{self.profile_l1:.4f}, rel. L2 {self.relative_l2:.3f}"
        )


def primary_energy(conditions: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n,) primary energy, GeV: `energy`, or the norm of `momentum`."""
    if "energy" in conditions:
        return np.asarray(conditions["energy"], dtype=np.float64).reshape(-1)
    if "momentum" in conditions:
        momentum = np.asarray(conditions["momentum"], dtype=np.float64)
        return np.linalg.norm(momentum.reshape(len(momentum), -1), axis=1)
    raise ConditionError(
        f"the int8 guard needs an 'energy' or 'momentum' condition, got {sorted(conditions)}"
    )


def in_gev(transform: Transform, out: np.ndarray) -> np.ndarray:
    """Generator outputs in preprocessed units as float32 showers in GeV (`to_gev`)."""
    return np.asarray(transform.to_gev(out), dtype=np.float32)


def cell_energy(transform: Transform, value: float) -> float:
    """A cell's energy in GeV for `value` in preprocessed units (0 for 0)."""
    if value <= 0:
        return 0.0
    return float(transform.to_gev(np.array([value], dtype=np.float64))[0])


def cpu_generator(generator: ShowerGenerator) -> ShowerGenerator:
    """The generator in eval mode on the CPU (a copy if it is elsewhere: the original keeps
    working where it is): the guard's fp32 reference."""
    if next(generator.parameters()).device.type != "cpu":
        generator = copy.deepcopy(generator).to("cpu")
    return generator.eval()


def make_feeds(
    generator: ShowerGenerator,
    geometry: Geometry,
    calibration: Mapping[str, np.ndarray],
    seed: int,
    source: str = "generator",
) -> tuple[list[Feed], list[np.ndarray], np.ndarray]:
    """Calibration batches (noise B), the independent noise A per batch, primary energies."""
    arrays = check_conditions(calibration, generator.condition_names, source)
    n = len(next(iter(arrays.values())))
    if n < 2:
        raise Int8Error(f"the int8 calibration set needs at least 2 showers, got {n}")
    generator = cpu_generator(generator)
    noise_b = generator.sample_noise(n, torch.Generator().manual_seed(seed))
    noise_a = generator.sample_noise(n, torch.Generator().manual_seed(seed + 1_000_003))
    feeds, other = [], []
    for lo in range(0, n, BATCH):
        feed = {"noise": noise_b[lo : lo + BATCH].numpy()}
        for name in generator.condition_names:
            size = geometry.condition(name).size
            values = arrays[name][lo : lo + BATCH]
            shape = (len(values),) if size == 1 else (len(values), size)
            feed[name] = np.ascontiguousarray(values.reshape(shape), dtype=np.float32)
        feeds.append(feed)
        other.append(noise_a[lo : lo + BATCH].numpy())
    return feeds, other, primary_energy(arrays)


class Guard:
    """The fp32 references on the calibration set, and the guard's numbers for int8 showers.

    fp32_b / fp32_a: fp32 showers (GeV) of the noise B the int8 ones are compared on, and of
    the independent noise A (the baseline; the output threshold is fitted there).
    """

    def __init__(
        self,
        generator: ShowerGenerator,
        transform: Transform,
        geometry: Geometry,
        feeds: Sequence[Feed],
        noise_a: Sequence[np.ndarray],
        energy: np.ndarray,
    ) -> None:
        self.geometry = geometry
        self.energy = energy
        names = generator.condition_names
        module = GeVGenerator(cpu_generator(generator), transform, names).eval()

        def gev(feed: Feed) -> np.ndarray:
            with torch.inference_mode():
                return module(*(torch.from_numpy(v) for v in feed.values())).numpy()

        self.fp32_b = np.concatenate([gev(f) for f in feeds])
        self.feeds_a = [{**f, "noise": a} for f, a in zip(feeds, noise_a, strict=True)]
        self.fp32_a = np.concatenate([gev(f) for f in self.feeds_a])
        # what mse(fp32 A, fp32 B) is expected to be, from the paired showers (one draw of it
        # swung 6x on conv2d-g1, whose noise moves a shower's cells together)
        self.baseline = paired_projection_mse_floor(self.fp32_b, self.fp32_a)
        self.ratio = self.mean_ratio(self.fp32_b)
        self.ratio_a = self.mean_ratio(self.fp32_a)
        self.profile = normalised_mean_profile(self.fp32_b, self.geometry)

    def ratios(self, showers: np.ndarray) -> np.ndarray:
        """Visible over primary energy, per shower."""
        return response(showers, self.energy)

    def mean_ratio(self, showers: np.ndarray) -> float:
        return float(self.ratios(showers).mean())

    def metrics(self, int8_b: np.ndarray) -> GuardMetrics:
        """The guard's numbers for int8 showers (GeV) of the noise B."""
        shift = projection_mse(self.fp32_b, int8_b, n_bootstrap=2)[0]
        if self.baseline > 0:
            degradation = shift / self.baseline
        else:  # the generator ignores its noise: any change is a degradation
            degradation = 0.0 if shift == 0 else float("inf")
        ratio = self.mean_ratio(int8_b)
        norm = float(np.linalg.norm(self.fp32_b))
        # Paired: the same noise and conditions, so the per-shower differences carry the error.
        differences = self.ratios(int8_b) - self.ratios(self.fp32_b)
        spread = float(differences.std(ddof=1)) / np.sqrt(len(differences))
        profile_l1 = np.abs(normalised_mean_profile(int8_b, self.geometry) - self.profile).sum()
        return GuardMetrics(
            projection_mse_degradation=float(degradation),
            response_error=abs(ratio / self.ratio - 1.0) if self.ratio > 0 else float(ratio > 0),
            profile_l1=float(profile_l1),
            relative_l2=float(np.linalg.norm(int8_b - self.fp32_b)) / (norm if norm > 0 else 1.0),
            response_standard_error=float(spread / self.ratio) if self.ratio > 0 else 0.0,
        )
