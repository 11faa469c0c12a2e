"""A set's mean and spread of a per-shower quantity, gathered chunk by chunk.

The report reads some per-shower vectors (the shower shapes, the cell spectrum, the LHCb
sparsity levels) only as their mean over a set and its spread. `Moments` holds exactly that,
merged from one chunk of showers to the next, so that a pass over a set of any size keeps a
few numbers per bin instead of every shower's vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Count `n`, mean and sum of squared deviations from the mean (`m2`) of per-shower
    values (n, ...) along the showers; `mean` and `m2` have the values' shape less the
    first axis, in float64.

    Chunks combine with `merge` (Chan, Golub and LeVeque's pairwise update), which keeps the
    precision of a two-pass variance where sums of squares would cancel."""

    n: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """The moments of `values` (n, ...), each row one shower."""
        v = np.asarray(values, dtype=np.float64)
        if len(v) == 0:
            return cls(0, np.zeros(v.shape[1:]), np.zeros(v.shape[1:]))
        mean = v.mean(axis=0)
        return cls(len(v), mean, ((v - mean) ** 2).sum(axis=0))

    def merge(self, other: Moments) -> Moments:
        """The moments of both chunks' showers together."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        return Moments(n, mean, m2)

    @property
    def total(self) -> np.ndarray:
        """The sum of the values over the showers."""
        return self.mean * self.n

    def std(self, ddof: int = 0) -> np.ndarray:
        """The standard deviation over the showers (`ddof` as numpy's; 0 with too few)."""
        if self.n - ddof <= 0:
            return np.zeros_like(self.m2)
        return np.sqrt(self.m2 / (self.n - ddof))

    def standard_error(self) -> np.ndarray:
        """The standard error of the mean: std (ddof 1) / sqrt(n)."""
        return self.std(ddof=1) / np.sqrt(max(self.n, 1))
