"""A generator traced to an ONNX graph: what OpenVINO compiles, what the int8 quantizers start
from and what `caloforge export` writes.

How: torch's `torch.export`-based exporter (`torch.onnx.export(..., dynamo=True)`, which needs
`onnxscript`; the TorchScript exporter is deprecated in torch >= 2.9), then constant folding
with no size limit, so that the sub-pixel kernels the 3DGAN generators build from their
weights in the graph (`caloforge.models.gan3d.upsample_conv3d`) become plain `Conv`
initializers (which int8 quantization needs). The batch axis is dynamic.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from caloforge._optional import import_optional
from caloforge.data.transforms import Transform
from caloforge.errors import CaloforgeError
from caloforge.models import ShowerGenerator

if TYPE_CHECKING:
    import onnx

__all__ = ["GeVGenerator", "OnnxExportError", "module_to_onnx", "require_onnx"]


class OnnxExportError(CaloforgeError):
    """The model could not be exported to ONNX, or the exported graph is wrong."""


def require_onnx(purpose: str) -> tuple[Any, Any]:
    """(onnx, onnxruntime), each imported or a `MissingDependencyError` (onnxscript too)."""
    onnx_module = import_optional("onnx", package="onnx", extra="onnx", purpose=purpose)
    import_optional("onnxscript", package="onnxscript", extra="onnx", purpose=purpose)
    ort = import_optional("onnxruntime", package="onnxruntime", extra="onnx", purpose=purpose)
    return onnx_module, ort


class GeVGenerator(nn.Module):
    """`module(noise, *conditions) -> showers` in GeV: the generator and `transform.to_gev`
    as one module with positional inputs (what the exporter traces).

    conditions: in `condition_names` order, each `(batch,)` or `(batch, size)`.
    """

    def __init__(
        self, generator: ShowerGenerator, transform: Transform, condition_names: tuple[str, ...]
    ) -> None:
        super().__init__()
        self.generator = generator
        self.transform = transform
        self.condition_names = tuple(condition_names)

    def forward(self, noise: Tensor, *conditions: Tensor) -> Tensor:
        named = dict(zip(self.condition_names, conditions, strict=True))
        return self.transform.to_gev(self.generator(noise, named))


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter that says nothing about the model: the log lines about
    torchvision ops it skips, torch-internal deprecation warnings, and its note that the batch
    axis name is shared by several inputs (which it is, on purpose)."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"# The axis name: .* will not be used", category=UserWarning
            )
            warnings.filterwarnings(
                "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
            )
            yield
    finally:
        logger.setLevel(level)


def module_to_onnx(
    module: nn.Module,
    inputs: Mapping[str, Tensor],
    *,
    output_name: str,
    opset: int | None = None,
    what: str = "model",
) -> onnx.ModelProto:
    """`module(*inputs.values())` as an ONNX model with named inputs and a dynamic batch axis
    (axis 0 of every input and of the output), constants folded without size limit.

    module: `forward(noise, *conditions)`, as `GeVGenerator`; inputs: the noise first.
    """
    require_onnx("ONNX export")
    import onnxscript.optimizer

    batch = torch.export.Dim("batch")
    names = list(inputs)
    dynamic = {"noise": {0: batch}, "conditions": tuple({0: batch} for _ in names[1:])}
    module = module.eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module,
                tuple(inputs.values()),
                None,
                dynamo=True,
                input_names=names,
                output_names=[output_name],
                dynamic_shapes=dynamic,
                opset_version=opset,
                verbose=False,
                external_data=False,
            )
            assert program is not None
            onnxscript.optimizer.optimize(
                program.model, input_size_limit=2**62, output_size_limit=2**62
            )
            proto: onnx.ModelProto = program.model_proto
    except Exception as exc:
        opset_text = f"opset {opset}" if opset is not None else "the default opset"
        raise OnnxExportError(
            f"{what}: torch.onnx.export ({opset_text}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    return proto
