"""The int8 runtime of `caloforge export --int8`: ONNX Runtime's static QDQ quantization, a
portable file for ONNX Runtime in C++."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from caloforge._optional import import_optional
from caloforge.generation.int8.graph import ONNX_LAYER_OPS, labelled, layer_labels, multiply_adds
from caloforge.generation.int8.search import QuantizerDefaults
from caloforge.generation.openvino import Feed, Runner

if TYPE_CHECKING:
    import onnx

__all__ = ["OnnxRuntimeQuantizer"]


class OnnxRuntimeQuantizer(QuantizerDefaults):
    """`caloforge.generation.int8.search.Quantizer` for ONNX Runtime (static QDQ, per channel)
    on an exported GeV graph; not timed, no output threshold. `close()` removes its files."""

    output: Literal["preprocessed", "gev"] = "gev"

    def __init__(self, model: onnx.ModelProto, feeds: list[Feed], threads: int) -> None:
        self.ort = import_optional(
            "onnxruntime", package="onnxruntime", extra="onnx", purpose="int8 ONNX export"
        )
        self.quantization = import_optional(
            "onnxruntime.quantization", package="onnxruntime", extra="onnx", purpose="int8 export"
        )
        self.library = f"onnxruntime {self.ort.__version__} (static QDQ)"
        self.feeds, self.threads = feeds, threads
        self.tmp = tempfile.TemporaryDirectory(prefix="caloforge-int8-")
        exported = Path(self.tmp.name) / "exported.onnx"
        exported.write_bytes(model.SerializeToString())
        # ONNX Runtime's recommended pre-processing (shape inference, graph clean-up)
        self.source = Path(self.tmp.name) / "fp32.onnx"
        self.quantization.quant_pre_process(
            str(exported), str(self.source), skip_symbolic_shape=True
        )
        self.labels = layer_labels(model)
        self._multiply_adds = multiply_adds(model)

    def layers(self) -> dict[str, tuple[str, ...]]:
        return dict(self.labels)

    def multiply_adds(self) -> Mapping[str, float]:
        return labelled(self.labels, self._multiply_adds)

    def quantize(self, fp32_nodes: frozenset[str]) -> Any:
        import onnx

        q = self.quantization
        feeds = iter(self.feeds)

        class Reader(q.CalibrationDataReader):  # type: ignore[name-defined]
            def get_next(self) -> Feed | None:
                return next(feeds, None)

        target = Path(self.tmp.name) / "int8.onnx"
        q.quantize_static(
            str(self.source),
            str(target),
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(ONNX_LAYER_OPS),
            nodes_to_exclude=sorted(fp32_nodes),
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            # u8 x s8 products summed in 16 bits saturate on AVX2 without VNNI: 7-bit weights
            reduce_range=True,
        )
        return onnx.load(str(target))

    def runner(self, model: Any) -> Runner:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        session = self.ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return lambda feed: session.run(None, feed)[0]

    def close(self) -> None:
        self.tmp.cleanup()
