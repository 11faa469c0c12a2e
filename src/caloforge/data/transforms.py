"""Invertible transforms of cell energies, applied before learning and undone at generation.

Each transform maps visible cell energies in GeV (x >= 0) to the space a model learns in and
back: `t.forward(x)`, `t.inverse(y)`. They work on numpy arrays and torch tensors alike, keep
zero at zero, and serialise to a small dict stored with every checkpoint
(`transform_from_dict(t.to_dict())` rebuilds an equal transform). `t.to_gev(y)` turns a
model's output into showers: the inverse, clamped at zero (a cell's energy is never negative,
whatever the model's output).

- `power`: y = (scale x)^p. The 3DGAN preprocessing (p = 0.85; cells x100 for the fixed-angle
  model, x50 as stored for the angle model) compresses the dynamic range.
- `boxcox`: y = ((x + s)^l - s^l) / l, with l fitted by maximum likelihood on the non-zero
  cells of the training data (the LHCb GAN); the shift s keeps zeros finite and at zero.
- `log`: y = log(1 + x / eps).
- `identity`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from caloforge.errors import CaloforgeError

Array = TypeVar("Array", np.ndarray, torch.Tensor)


class Transform(Protocol):
    name: str

    def forward(self, x: Array) -> Array: ...

    def inverse(self, y: Array) -> Array: ...

    def to_dict(self) -> dict[str, Any]: ...

    def to_gev(self, y: Array) -> Array: ...


def _clamp_min(x: Array, low: float) -> Array:
    if isinstance(x, torch.Tensor):
        return x.clamp_min(low)
    return np.maximum(x, low)


class _Invertible:
    """What every transform derives from its `inverse`."""

    def inverse(self, y: Array) -> Array:
        raise NotImplementedError

    def to_gev(self, y: Array) -> Array:
        """Model outputs (preprocessed units) as cell energies in GeV, >= 0: the inverse,
        clamped at zero. The one way generation, export, the int8 guard and the physics check
        turn outputs into showers."""
        return _clamp_min(self.inverse(y), 0.0)


@dataclass(frozen=True)
class Identity(_Invertible):
    name = "identity"

    def forward(self, x: Array) -> Array:
        return x

    def inverse(self, y: Array) -> Array:
        return y

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


@dataclass(frozen=True)
class Power(_Invertible):
    """y = (scale x)^power; inverse x = y^(1/power) / scale."""

    power: float = 0.85
    scale: float = 1.0
    name = "power"

    def __post_init__(self) -> None:
        for key in ("power", "scale"):  # named as transform_from_dict names its checks
            if not getattr(self, key) > 0:
                raise CaloforgeError(
                    f"transform 'power': parameter '{key}' must be > 0, got {getattr(self, key)!r}"
                )

    def forward(self, x: Array) -> Array:
        return _clamp_min(x * self.scale, 0.0) ** self.power

    def inverse(self, y: Array) -> Array:
        return _clamp_min(y, 0.0) ** (1.0 / self.power) / self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class Log(_Invertible):
    """y = log(1 + x / eps); inverse x = eps (exp(y) - 1)."""

    eps: float = 1e-5
    name = "log"

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise CaloforgeError(f"transform 'log': parameter 'eps' must be > 0, got {self.eps!r}")

    def forward(self, x: Array) -> Array:
        z = _clamp_min(x, 0.0) / self.eps
        return torch.log1p(z) if isinstance(z, torch.Tensor) else np.log1p(z)

    def inverse(self, y: Array) -> Array:
        z = torch.expm1(y) if isinstance(y, torch.Tensor) else np.expm1(y)
        return _clamp_min(z * self.eps, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class BoxCox(_Invertible):
    """y = ((x + shift)^lmbda - shift^lmbda) / lmbda (the log form where lmbda = 0)."""

    lmbda: float
    shift: float = 1e-6
    name = "boxcox"

    def __post_init__(self) -> None:
        if not (self.shift > 0 and math.isfinite(self.lmbda)):
            raise CaloforgeError(
                f"boxcox transform needs shift > 0 and a finite lambda, got {self}"
            )

    def forward(self, x: Array) -> Array:
        z = _clamp_min(x, 0.0) + self.shift
        if abs(self.lmbda) < 1e-12:
            log = torch.log(z) if isinstance(z, torch.Tensor) else np.log(z)
            return log - math.log(self.shift)
        return (z**self.lmbda - self.shift**self.lmbda) / self.lmbda

    def inverse(self, y: Array) -> Array:
        if abs(self.lmbda) < 1e-12:
            z = torch.exp(y) if isinstance(y, torch.Tensor) else np.exp(y)
            return _clamp_min(z * self.shift - self.shift, 0.0)
        base = _clamp_min(y * self.lmbda + self.shift**self.lmbda, 0.0)
        return _clamp_min(base ** (1.0 / self.lmbda) - self.shift, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def fit(
        cls, cells: np.ndarray, shift: float = 1e-6, max_cells: int = 1_000_000, seed: int = 0
    ) -> BoxCox:
        """Fit lambda by maximum likelihood on the non-zero cells (at most `max_cells` of them,
        drawn with `seed`)."""
        from scipy.stats import boxcox_normmax

        values = np.asarray(cells, dtype=np.float64).ravel()
        values = values[values > 0]
        if len(values) < 10:
            raise CaloforgeError(
                f"cannot fit a Box-Cox transform on {len(values)} non-zero cells; need at least 10"
            )
        if len(values) > max_cells:
            values = np.random.default_rng(seed).choice(values, max_cells, replace=False)
        return cls(lmbda=float(boxcox_normmax(values + shift, method="mle")), shift=shift)


TRANSFORMS: dict[str, type] = {t.name: t for t in (Identity, Power, Log, BoxCox)}


def transform_from_dict(d: dict[str, Any]) -> Transform:
    """Rebuild a transform from `to_dict()` output (as stored in a checkpoint)."""
    d = dict(d)
    name = d.pop("name", None)
    if name not in TRANSFORMS:
        raise CaloforgeError(
            f"unknown transform '{name}'; known transforms: {', '.join(TRANSFORMS)}"
        )
    # Every parameter of every transform is a number: a text or a flag (a hand-edited
    # config.json) would fail later inside a comparison or a power.
    for key, value in d.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CaloforgeError(
                f"transform '{name}': parameter '{key}' must be a number, got {value!r}"
            )
        if not math.isfinite(value):
            raise CaloforgeError(
                f"transform '{name}': parameter '{key}' must be finite, got {value!r}"
            )
    try:
        transform: Transform = TRANSFORMS[name](**d)
    except TypeError as exc:
        raise CaloforgeError(f"transform '{name}': bad parameters {d} ({exc})") from None
    return transform
