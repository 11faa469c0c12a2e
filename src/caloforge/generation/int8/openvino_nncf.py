"""The int8 runtime of `--backend int8`: NNCF quantizes for OpenVINO.

Static post-training quantization: activation ranges from the calibration batches, weights
int8 symmetric per channel, activations per tensor, asymmetric (NNCF's MIXED preset) or
symmetric (PERFORMANCE), whichever scores better with every layer int8, with NNCF's full bias
correction. Only the layers are int8 (convolutions, transposed convolutions, dense layers);
the conditioning arithmetic and the output stay fp32. Chosen by measurement against ONNX
Runtime QDQ and PyTorch PT2E (benchmarks/int8_libraries.md): the only one running 3DGAN's 3D
convolutions in int8 with a real speed-up on this project's CPUs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import statistics
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from caloforge._optional import import_optional
from caloforge.generation.int8.graph import labelled, layer_labels, multiply_adds
from caloforge.generation.openvino import Feed, OpenVinoRunner, Runner, openvino_model

if TYPE_CHECKING:
    import onnx

__all__ = ["OPENVINO_LAYER_OPS", "OpenVinoQuantizer"]

OPENVINO_LAYER_OPS = frozenset(
    {
        "Convolution",
        "GroupConvolution",
        "ConvolutionBackpropData",
        "GroupConvolutionBackpropData",
        "MatMul",
    }
)


@contextlib.contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs each step and draws progress bars; the guard's log says what matters."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


class OpenVinoQuantizer:
    """`caloforge.generation.int8.search.Quantizer` for OpenVINO + NNCF: counts the layers'
    multiply-adds, times models, and fits an output threshold (unless `output_threshold` is
    off)."""

    output: Literal["preprocessed", "gev"] = "preprocessed"
    # NNCF's presets: weights symmetric per channel either way; activations asymmetric
    # (MIXED) or symmetric (PERFORMANCE) per tensor. Asymmetric suits activations after a
    # LeakyReLU or BatchNorm, far from symmetric about zero; on some generators the guard
    # keeps more layers int8 with symmetric ones. So the search tries both.
    schemes: ClassVar[tuple[str, ...]] = ("asymmetric activations", "symmetric activations")

    def __init__(
        self,
        model: onnx.ModelProto,
        feeds: list[Feed],
        threads: int,
        output_threshold: bool = True,
    ) -> None:
        self.ov = import_optional(
            "openvino", package="openvino", extra="int8", purpose="the int8 backend"
        )
        self.nncf = import_optional(
            "nncf", package="nncf", extra="int8", purpose="the int8 backend"
        )
        self.scheme = self.schemes[0]
        self.output_threshold = output_threshold
        version = self.ov.__version__.split("-")[0]
        self.library = f"openvino {version} + nncf {self.nncf.__version__}"
        self.feeds, self.threads = feeds, threads
        self.model = openvino_model(self.ov, model)
        self.labels = layer_labels(model)
        self._multiply_adds = multiply_adds(model)
        # ONNX node name -> the OpenVINO ops made from it ("node_Gemm_7/WithoutBiases", ...)
        types = {op.get_type_name() for op in self.model.get_ordered_ops()}
        self.other_types = sorted(types - OPENVINO_LAYER_OPS)

    def layers(self) -> dict[str, tuple[str, ...]]:
        names = {op.get_friendly_name().split("/")[0] for op in self.model.get_ordered_ops()}
        return {
            label: nodes
            for label, nodes in self.labels.items()
            if all(node in names for node in nodes)
        }

    def multiply_adds(self) -> Mapping[str, float]:
        return labelled(self.labels, self._multiply_adds)

    def quantize(self, fp32_nodes: frozenset[str]) -> Any:
        nncf = self.nncf
        scope = nncf.IgnoredScope(
            types=self.other_types,
            patterns=[rf"^{re.escape(node)}(/.*)?$" for node in sorted(fp32_nodes)],
            validate=False,
        )
        with _quiet_nncf():
            return nncf.quantize(
                self.model.clone(),
                nncf.Dataset(self.feeds),
                subset_size=len(self.feeds),  # dataset items (batches), not showers
                ignored_scope=scope,
                preset=(
                    nncf.QuantizationPreset.MIXED
                    if self.scheme == self.schemes[0]
                    else nncf.QuantizationPreset.PERFORMANCE
                ),
                fast_bias_correction=False,  # the full correction: better, and ~20 % slower
            )

    def runner(self, model: Any) -> Runner:
        return OpenVinoRunner(self.ov, model, self.threads)

    @staticmethod
    def _output_clamp(model: Any) -> Any:
        """The op clamping the output at zero (the exported `clamp_min(0)`), or None."""
        op = model.get_results()[0].input_value(0).get_node()
        if op.get_type_name() != "Clamp" or op.get_attributes().get("min") != 0:
            return None
        return op

    def before_clamp(self, model: Any, feeds: list[Feed]) -> np.ndarray | None:
        if not self.output_threshold or self._output_clamp(model) is None:
            return None
        probe = model.clone()
        probe.get_results()[0].input(0).replace_source_output(
            self._output_clamp(probe).input_value(0)
        )
        run = self.runner(probe)
        return np.concatenate([run(feed) for feed in feeds])

    def thresholded(self, model: Any, threshold: float) -> Any:
        ops = import_optional(
            "openvino.opset13", package="openvino", extra="int8", purpose="the int8 backend"
        )
        out = model.clone()
        clamp = self._output_clamp(out)
        lowered = ops.subtract(clamp.input_value(0), ops.constant(np.float32(threshold)))
        clamp.input(0).replace_source_output(lowered.output(0))
        out.validate_nodes_and_infer_types()
        return out

    def compare_speed(self, model: Any, rounds: int = 5) -> tuple[float, float, int]:
        """(fp32 graph's seconds, `model`'s seconds, showers) on the largest calibration
        batch: the two compiled once, warmed up, then timed in turn (`rounds` each), medians."""
        feed = max(self.feeds, key=lambda f: len(f["noise"]))
        runners = [self.runner(self.model), self.runner(model)]
        times: list[list[float]] = [[], []]
        for run in runners:
            run(feed)
        for _ in range(rounds):
            for run, kept in zip(runners, times, strict=True):
                start = time.perf_counter()
                run(feed)
                kept.append(time.perf_counter() - start)
        fp32, int8 = (statistics.median(kept) for kept in times)
        return fp32, int8, len(feed["noise"])

    def seconds(self, model: Any, repeats: int = 5) -> float | None:
        """Median time of `model` on the largest calibration batch (after one warm-up call)."""
        run, feed = self.runner(model), max(self.feeds, key=lambda f: len(f["noise"]))
        run(feed)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(feed)
            times.append(time.perf_counter() - start)
        return statistics.median(times)
