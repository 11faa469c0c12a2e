"""What a quantization did, and the guard's verdict on it (stored with cached choices and in
the int8 ONNX export's metadata)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from caloforge.generation.int8.guard import GuardMetrics, Int8Tolerance

__all__ = ["Int8Report"]


@dataclass(frozen=True)
class Int8Report:
    """What `quantize_int8` / `quantize_onnx_model` did, and the guard's verdict.

    layers: every quantizable layer (label -> its graph nodes), in graph order;
    int8_layers / fp32_layers: the labels left int8 / fallen back to fp32 (the most sensitive
        first);
    faster_in_fp32: labels the guard allowed in int8 but that made the generator slower there,
        so they run fp32 too (OpenVINO only, see `caloforge.generation.int8.search`);
    sensitivity: label -> `GuardMetrics.score` with that layer alone int8 (measured only when
        the all-int8 model fails the guard);
    multiply_adds: label -> multiply-adds per shower (1 each where the backend cannot count
        them), for `int8_share`;
    before: the guard with every layer int8; after: with the final choice.
    """

    library: str
    layers: Mapping[str, tuple[str, ...]]
    int8_layers: tuple[str, ...]
    fp32_layers: tuple[str, ...]
    sensitivity: Mapping[str, float]
    before: GuardMetrics
    after: GuardMetrics
    tolerance: Int8Tolerance
    holds: bool
    calibration_showers: int
    seconds: float = 0.0  # time the search took
    faster_in_fp32: tuple[str, ...] = ()
    scheme: str = ""  # the activation quantization chosen, where the library offers several
    multiply_adds: Mapping[str, float] = field(default_factory=dict)
    from_cache: bool = False  # the layer choice came from the cache (the guard checked it again)
    # subtracted before the output's clamp at zero (`search.output_threshold`), preprocessed
    # units, and the cell energy that is in GeV; 0: none
    threshold: float = 0.0
    threshold_gev: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Int8Report:
        """The report `to_dict` wrote."""
        fields = dict(data)
        fields.pop("int8_share", None)
        for key in ("before", "after"):
            fields[key] = GuardMetrics(**fields[key])
        fields["tolerance"] = Int8Tolerance(**fields["tolerance"])
        for key in ("int8_layers", "fp32_layers", "faster_in_fp32"):
            fields[key] = tuple(fields[key])
        # (a node name alone: written before layers grouped the nodes of shared weights)
        fields["layers"] = {
            label: (nodes,) if isinstance(nodes, str) else tuple(nodes)
            for label, nodes in fields["layers"].items()
        }
        return cls(**fields)

    @property
    def int8_share(self) -> float | None:
        """Fraction of the layers' multiply-adds that run int8 (None without them)."""
        total = sum(self.multiply_adds.values())
        if not self.multiply_adds or total <= 0:
            return None
        return sum(self.multiply_adds.get(label, 0.0) for label in self.int8_layers) / total

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = dict(self.layers)
        out["sensitivity"] = dict(self.sensitivity)
        out["multiply_adds"] = dict(self.multiply_adds)
        out["int8_share"] = self.int8_share
        out["int8_layers"], out["fp32_layers"] = list(self.int8_layers), list(self.fp32_layers)
        out["faster_in_fp32"] = list(self.faster_in_fp32)
        return out

    def summary(self) -> str:
        kept = f"{len(self.int8_layers)} of {len(self.layers)} layers int8"
        if self.int8_share is not None:
            kept += f", {self.int8_share:.0%} of the multiply-adds"
        if self.scheme:
            kept += f" ({self.scheme})"
        if self.from_cache:
            kept += " [the choice cached, checked again]"
        fallen = f"; fp32: {', '.join(self.fp32_layers)}" if self.fp32_layers else ""
        if self.faster_in_fp32:
            fallen += f"; fp32 as faster: {', '.join(self.faster_in_fp32)}"
        if self.threshold > 0:
            fallen += (
                f"; output threshold {self.threshold:.3g} ({self.threshold_gev:.2g} GeV a cell)"
            )
        a = self.after
        return (
            f"int8 ({self.library}): {kept}{fallen}; projection MSE "
            f"{a.projection_mse_degradation:.1%}, response {a.response_error:.2%} +- "
            f"{a.response_standard_error:.2%}, profile L1 {a.profile_l1:.4f} "
            f"({'within' if self.holds else 'OUTSIDE'} tolerance)"
        )
