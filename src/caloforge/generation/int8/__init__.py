"""int8 generation: a generator quantized to int8, kept only where an accuracy guard allows.

>>> quantized = quantize_int8(pipeline.generator, pipeline.transform, pipeline.geometry,
...                           calibration_conditions(pipeline, 512))  # doctest: +SKIP
>>> pipeline_int8 = ShowerPipeline(quantized, pipeline.transform, pipeline.geometry)
>>> quantized.report.to_dict()                       # which layers stayed int8, the guard's numbers

In the spirit of the accuracy-driven int8 tool of the Conv2D GAN study (Intel LPOT; systems.md,
section 3): post-training static quantization, then a guard that compares the int8 showers with
the fp32 ones, and a layer-by-layer fallback to fp32 until the guard holds.

1. Calibrate and quantize (`openvino_nncf`): the generator's `frozen()` copy, exported to
   ONNX (`caloforge.generation.onnx_graph`), quantized statically by NNCF for OpenVINO on the
   calibration conditions with noise drawn from `seed`.
2. Guard (`guard`): projection MSE, response and longitudinal profile of the int8 showers
   against fp32 showers of the same noise, in GeV, each within its `Int8Tolerance`.
3. Search (`search`): where the guard fails, each layer's error alone decides the order in
   which layers go back to int8, least error per multiply-add (`graph`) first; layers that are
   slower in int8 go back to fp32; an output threshold takes back the energy that rectified
   rounding noise adds before a final clamp at zero.
4. Cache (`cache`): the choice is kept per generator, calibration set, tolerance, libraries
   and CPU, and checked by the guard again on reuse.

`caloforge export --int8` writes an ONNX Runtime QDQ model instead (`onnxruntime_qdq`, a
portable file for ONNX Runtime in C++), made by the same guard and search
(`quantize_onnx_model`). How the libraries and the guard's choices were measured:
benchmarks/int8_libraries.md and benchmarks/int8_guard.md.

Dependencies: `pip install caloforge[int8]` (openvino, nncf) for `quantize_int8`;
`caloforge[onnx]` for the export either way.
"""

from caloforge.generation.int8.cache import default_cache
from caloforge.generation.int8.guard import GuardMetrics, Int8Error, Int8Tolerance
from caloforge.generation.int8.quantize import (
    QuantizedGenerator,
    calibration_conditions,
    held_out_metrics,
    quantize_int8,
    quantize_onnx_model,
)
from caloforge.generation.int8.report import Int8Report

__all__ = [
    "GuardMetrics",
    "Int8Error",
    "Int8Report",
    "Int8Tolerance",
    "QuantizedGenerator",
    "calibration_conditions",
    "default_cache",
    "held_out_metrics",
    "quantize_int8",
    "quantize_onnx_model",
]
