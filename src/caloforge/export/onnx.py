"""ONNX export of a trained generator, showers in GeV, for ONNX Runtime in C++ or Python.

>>> export_onnx("runs/gan3d", "gan3d.onnx")                  # doctest: +SKIP

The graph (`pipeline_to_onnx`):

    inputs   noise      (batch, noise_size) float32, drawn by the caller from the
                        distribution the metadata names (`noise_distribution`: normal N(0, 1)
                        or uniform U[0, 1) per component)
             <name>     one per condition the generator reads, float32, in the geometry's
                        units: (batch,) for a scalar (energy GeV, theta rad), (batch, size)
                        otherwise (momentum GeV (batch, 3), point mm (batch, 2))
    output   showers    (batch, *geometry.shape) float32, visible cell energy in GeV, >= 0

The preprocessing inverse of the checkpoint and the clamp at zero (`transform.to_gev`) are
inside the graph, so the graph gives what `ShowerPipeline` gives for the same noise. What is
exported is the generator's `frozen()` copy: the same function, with the exact rewrites that
need fixed weights (gan3d: the dense layer and the first convolution as one matrix, half the
multiply-adds and a 20 MB file). The batch dimension is dynamic. The model's provenance is in
the ONNX `metadata_props` (`METADATA_KEYS`), read in C++ with
`Ort::Session::GetModelMetadata()` and in Python with
`onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`.

The graph is traced by `caloforge.generation.onnx_graph.module_to_onnx`. The written file is
self-contained (no external data file), written under a temporary name and checked against
the pipeline on a few showers in ONNX Runtime before it is renamed into place.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from caloforge import __version__
from caloforge._arguments import check_integer, check_path
from caloforge._files import atomic_output
from caloforge.errors import CaloforgeError, ConditionError
from caloforge.generation.onnx_graph import (
    GeVGenerator,
    OnnxExportError,
    module_to_onnx,
    require_onnx,
)
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.simulation.conditions import ConditionRanges, sample_conditions

if TYPE_CHECKING:
    import onnx

    from caloforge.generation.int8 import Int8Tolerance

__all__ = [
    "METADATA_KEYS",
    "OnnxExportError",
    "export_onnx",
    "pipeline_to_onnx",
    "read_metadata",
]

# The metadata_props the exported model carries (all strings; lists comma-separated).
METADATA_KEYS = (
    "family",  # model family, e.g. gan3d
    "geometry",  # geometry name, e.g. clic-25
    "shower_shape",  # e.g. "25,25,25": the output is (batch, 25, 25, 25)
    "units",  # unit of the output cells: GeV
    "noise_distribution",  # normal (N(0, 1)) or uniform (U[0, 1)), per component
    "noise_size",  # components of the noise input
    "condition_names",  # the condition inputs in order, e.g. "energy,theta"
    "condition_units",  # their units, e.g. "GeV,rad"
    "condition_sizes",  # components per condition: 1 means a (batch,) input, k (batch, k)
    "transform",  # JSON of the preprocessing whose inverse is in the graph
    "precision",  # fp32 or int8
    "caloforge_version",
    "source_checkpoint",  # the checkpoint folder exported
)

# Relative L2 error between the written fp32 graph and the pipeline above which the export is
# refused (float32 rounding of reordered sums is about 1e-6).
_FP32_PARITY = 1e-4
_CHECK_SHOWERS = 3


def example_inputs(pipeline: ShowerPipeline, n: int, seed: int = 0) -> dict[str, Tensor]:
    """`n` showers' worth of graph inputs, float32: noise from the generator's distribution,
    conditions drawn as `caloforge simulate` draws them in the geometry's default ranges (for
    a geometry the simulator cannot draw, uniform in each condition's default or valid range)."""
    noise = pipeline.generator.sample_noise(n, torch.Generator().manual_seed(seed))
    inputs = {"noise": noise.detach().to("cpu", torch.float32)}
    geometry, rng = pipeline.geometry, np.random.default_rng(seed)
    try:
        drawn = sample_conditions(geometry, ConditionRanges.for_geometry(geometry), n, rng)
    except ConditionError:
        drawn = {}
    for name in pipeline.condition_names:
        condition = geometry.condition(name)
        shape = (n,) if condition.size == 1 else (n, condition.size)
        if name in drawn:
            values = np.asarray(drawn[name]).reshape(shape)
        else:
            low, high = condition.default or condition.valid or (0.0, 1.0)
            values = rng.uniform(low, high, shape)
        inputs[name] = torch.as_tensor(values, dtype=torch.float32)
    return inputs


def pipeline_metadata(pipeline: ShowerPipeline, precision: str = "fp32") -> dict[str, str]:
    """The `metadata_props` of an exported pipeline (`METADATA_KEYS`)."""
    generator, geometry = pipeline.generator, pipeline.geometry
    conditions = [geometry.condition(name) for name in pipeline.condition_names]
    return {
        "family": generator.config.family,
        "geometry": geometry.name,
        "shower_shape": ",".join(str(s) for s in geometry.shape),
        "units": "GeV",
        "noise_distribution": generator.noise_distribution,
        "noise_size": str(generator.noise_size),
        "condition_names": ",".join(c.name for c in conditions),
        "condition_units": ",".join(c.unit for c in conditions),
        "condition_sizes": ",".join(str(c.size) for c in conditions),
        "transform": json.dumps(pipeline.transform.to_dict(), sort_keys=True),
        "precision": precision,
        "caloforge_version": __version__,
        "source_checkpoint": str(Path(pipeline.source).resolve()),
    }


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Replace `model`'s metadata_props entries named in `metadata`, keep the others."""
    keep = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata_props of an ONNX file, as a dict (without loading its weights)."""
    onnx_module, _ = require_onnx("reading ONNX metadata")
    model = onnx_module.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def pipeline_to_onnx(pipeline: ShowerPipeline, *, opset: int | None = None) -> onnx.ModelProto:
    """The pipeline's generator, preprocessing inverse and clamp as one fp32 ONNX model with
    metadata (see the module docstring for inputs and outputs)."""
    if pipeline.device.type != "cpu":
        raise OnnxExportError(
            f"{pipeline.source}: export a pipeline on the CPU, not {pipeline.device}"
        )
    # The frozen() copy: exact rewrites that need fixed weights (gan3d: its first two linear
    # layers as one matrix, half the multiply-adds).
    generator = pipeline.generator.frozen()
    module = GeVGenerator(generator, pipeline.transform, pipeline.condition_names)
    model = module_to_onnx(
        module,
        example_inputs(pipeline, 2),
        output_name="showers",
        opset=opset,
        what=f"{pipeline.source} ({pipeline.generator.config.family})",
    )
    model.doc_string = (
        f"caloforge {pipeline.generator.config.family} generator: noise and conditions in, "
        f"showers {tuple(pipeline.geometry.shape)} of geometry '{pipeline.geometry.name}' in "
        "GeV out (preprocessing inverse inside)"
    )
    set_metadata(model, pipeline_metadata(pipeline))
    return model


def run_onnx(session: Any, inputs: Mapping[str, Tensor | np.ndarray]) -> np.ndarray:
    """The first output of an `onnxruntime.InferenceSession` for float32 inputs by name."""
    feed = {
        name: np.ascontiguousarray(np.asarray(value, dtype=np.float32))
        for name, value in inputs.items()
    }
    out: np.ndarray = session.run(None, feed)[0]
    return out


def check_parity(path: Path, pipeline: ShowerPipeline, *, tolerance: float = _FP32_PARITY) -> float:
    """Relative L2 error of the ONNX file at `path` against the pipeline on a few showers;
    raises `OnnxExportError` above `tolerance`."""
    _, ort = require_onnx("checking an ONNX export")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = example_inputs(pipeline, _CHECK_SHOWERS, seed=1)
    module = GeVGenerator(pipeline.generator, pipeline.transform, pipeline.condition_names)
    with torch.inference_mode():
        expected = module.eval()(*inputs.values()).numpy()
    found = run_onnx(session, inputs)
    norm = float(np.linalg.norm(expected))
    error = float(np.linalg.norm(found - expected)) / (norm if norm > 0 else 1.0)
    if found.shape != expected.shape or not error <= tolerance:
        raise OnnxExportError(
            f"{pipeline.source}: the exported graph disagrees with the model: output shape "
            f"{found.shape} (expected {expected.shape}), relative L2 error {error:.2e} "
            f"(tolerance {tolerance:.0e})"
        )
    return error


def _status(enabled: bool) -> Callable[[str], None]:
    """Status lines on stderr with the seconds since the start (`caloforge export [12 s]: ...`)
    where `enabled`: the export's phases take seconds to minutes each, with no bar."""
    start = time.perf_counter()

    def say(line: str) -> None:
        if enabled:
            elapsed = time.perf_counter() - start
            print(f"caloforge export [{elapsed:4.0f} s]: {line}", file=sys.stderr, flush=True)

    return say


def _check_output(output: Path) -> None:
    """Fail before the (slow) export for an output path that cannot be written."""
    if output.is_dir():
        raise CaloforgeError(f"{output}: is a directory; give the ONNX file to write")
    parent = next((p for p in (output.parent, *output.parent.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CaloforgeError(f"{output}: cannot create the folder, {parent} is a file")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise CaloforgeError(f"{output}: folder {parent} is not writable")


# The oldest opset torch's exporter writes: below it, it writes this one and converts down,
# which fails for these graphs (no adapter for Pad) and then keeps this one.
FIRST_OPSET = 18


def _check_opset(opset: int | None, newest: int) -> None:
    """Refuse an opset the export cannot write, before the (slow) export."""
    if opset is not None and not FIRST_OPSET <= opset <= newest:
        raise CaloforgeError(
            f"--opset {opset}: expected {FIRST_OPSET} to {newest} (the exporter writes opsets "
            f"from {FIRST_OPSET}; the installed onnx knows them up to {newest})"
        )


def export_onnx(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    int8: bool = False,
    opset: int | None = None,
    calibration_size: int = 512,
    tolerance: Int8Tolerance | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Export a checkpoint (or run folder: its best checkpoint) to an ONNX file; returns it.

    int8: write the int8 model (ONNX Runtime static QDQ quantization with the accuracy guard
        of `caloforge.generation.int8`, calibrated on `calibration_size` showers with
        conditions drawn from the geometry's default ranges and noise from `seed`); the
        guard's report is stored in the metadata key `int8_report`.
    opset: ONNX opset (default: the exporter's).
    progress: a status line on stderr as each phase starts (and the int8 search's lines).

    Raises `CheckpointError` for a missing or corrupt checkpoint, `MissingDependencyError`
    without onnx / onnxscript / onnxruntime, `OnnxExportError` if the export fails or the
    graph disagrees with the model, `CaloforgeError` for an output that cannot be written.
    No file is left under `output` (nor a partial one beside it) unless the export succeeds.
    """
    check_path("--checkpoint", checkpoint)
    check_path("-o", output)
    if opset is not None:  # its range: `_check_opset`, with the installed onnx's newest
        check_integer("--opset", opset)
    onnx_module, _ = require_onnx("caloforge export --format onnx")
    output = Path(output)
    _check_output(output)
    _check_opset(opset, onnx_module.defs.onnx_opset_version())
    say = _status(progress)
    pipeline = ShowerPipeline.from_checkpoint(checkpoint, device="cpu")
    say(
        f"tracing the {pipeline.generator.config.family} generator to ONNX (torch.export; "
        "seconds, minutes for a large generator) ..."
    )
    model = pipeline_to_onnx(pipeline, opset=opset)
    written = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset is not None and written != opset:
        raise OnnxExportError(f"--opset {opset}: the exporter wrote opset {written} instead")
    if int8:
        say(f"quantizing to int8 under the accuracy guard ({calibration_size} showers) ...")
        from caloforge.generation.int8 import calibration_conditions, quantize_onnx_model

        calibration = calibration_conditions(pipeline, calibration_size, seed=seed)
        model, report = quantize_onnx_model(
            model,
            pipeline.generator,
            pipeline.transform,
            pipeline.geometry,
            calibration,
            seed=seed,
            tolerance=tolerance,
            progress=progress,
            source=pipeline.source,
        )
        set_metadata(
            model,
            {**pipeline_metadata(pipeline, "int8"), "int8_report": json.dumps(report.to_dict())},
        )
    try:
        with atomic_output(output) as partial:
            say(f"writing {output} ...")
            onnx_module.save_model(model, str(partial), save_as_external_data=False)
            if not int8:
                say("checking the written graph in ONNX Runtime against PyTorch ...")
                check_parity(partial, pipeline)
    except OSError as exc:
        raise CaloforgeError(f"{output}: cannot write the ONNX file ({exc})") from None
    return output
