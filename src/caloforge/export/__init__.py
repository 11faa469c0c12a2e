"""Export: a checkpoint turned into a self-contained model file for other runtimes.

`export_onnx` writes the generator, its preprocessing inverse and the clamp to GeV as one ONNX
graph (`noise` and one input per condition in, `showers` in GeV out, any batch size), with the
model's provenance in the ONNX metadata, for ONNX Runtime in C++ (e.g. a Geant4 fast-simulation
model) or Python. Needs the `onnx` extra: `pip install caloforge[onnx]`.
"""

from caloforge._optional import MissingDependencyError
from caloforge.export.onnx import OnnxExportError, export_onnx

__all__ = ["MissingDependencyError", "OnnxExportError", "export_onnx"]
