"""Generators run by OpenVINO on the CPU: the `compiled` backend's engine there (fp32), and
the runtime of the `int8` backend (`caloforge.generation.int8`).

OpenVINO compiles the exported graph (`caloforge.generation.onnx_graph.module_to_onnx`) for
one static batch size, keeps activations in oneDNN's blocked layouts from layer to layer and
fuses the element-wise work into the convolutions; for the 3DGAN generator on an AVX2 CPU that ran
1.5-2x faster than eager PyTorch, where Inductor (whose CPU graphs call the same oneDNN
convolutions as eager, converting layouts at each) gained 1.0-1.4x. fp32 is asked for
explicitly: on CPUs with bf16 OpenVINO would otherwise pick it.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from caloforge._optional import import_optional
from caloforge.errors import ConditionError
from caloforge.generation.onnx_graph import module_to_onnx
from caloforge.models import ShowerGenerator

if TYPE_CHECKING:
    import onnx

__all__ = [
    "Feed",
    "OpenVinoGenerator",
    "OpenVinoRunner",
    "Runner",
    "compile_openvino",
    "make_feed",
    "openvino_model",
]

Feed = dict[str, np.ndarray]  # graph inputs by name: noise, then the conditions, float32
Runner = Callable[[Feed], np.ndarray]


def openvino_model(ov: Any, model: onnx.ModelProto) -> Any:
    """The ONNX `model` as an `openvino.Model` (dynamic batch, as exported)."""
    with tempfile.TemporaryDirectory(prefix="caloforge-openvino-") as tmp:
        path = Path(tmp) / "fp32.onnx"
        path.write_bytes(model.SerializeToString())
        return ov.convert_model(str(path))


class OpenVinoRunner:
    """An OpenVINO model compiled for the CPU, one static-shape compilation per batch size
    (OpenVINO's CPU kernels are faster at static shapes; generation uses one or two sizes).
    Arithmetic in fp32 (int8 where the model is quantized)."""

    _CACHE = 4

    def __init__(self, ov: Any, model: Any, threads: int) -> None:
        self.ov, self.model, self.threads = ov, model, threads
        self.compiled: dict[int, Any] = {}

    def __call__(self, feed: Feed) -> np.ndarray:
        n = len(feed["noise"])
        request = self.compiled.get(n)
        if request is None:
            model = self.model.clone()
            model.reshape({i.get_any_name(): [n, *i.get_partial_shape()[1:]] for i in model.inputs})
            config = {
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",
            }
            compiled = self.ov.Core().compile_model(model, "CPU", config)
            if len(self.compiled) >= self._CACHE:
                self.compiled.pop(next(iter(self.compiled)))
            request = self.compiled[n] = compiled.create_infer_request()
        result = request.infer(feed)
        out: np.ndarray = next(iter(result.values())).copy()
        return out


class OpenVinoGenerator(ShowerGenerator):
    """`generator(noise, conditions) -> showers` like `reference`, run by OpenVINO.

    Runs on the CPU whatever the device of its inputs (the output goes back to the noise's
    device); preprocessed units, float32, `(N, *shower_shape)`. Noise size and distribution,
    conditions and config are the reference's (kept for them and for `sample_noise`; it is
    not run). `model` is the `openvino.Model` that `runner` runs.
    """

    def __init__(self, reference: ShowerGenerator, model: Any, runner: Runner) -> None:
        super().__init__(reference.config)
        self.reference = reference
        self.model = model
        self._runner = runner

    @property
    def module(self) -> ShowerGenerator:
        """The fp32 generator the graph was exported from (`caloforge bench` counts its FLOPs)."""
        return self.reference

    @property
    def noise_distribution(self) -> Literal["normal", "uniform"]:
        return self.reference.noise_distribution

    @property
    def noise_size(self) -> int:
        return self.reference.noise_size

    @property
    def condition_names(self) -> tuple[str, ...]:
        return self.reference.condition_names

    def forward(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        feed = make_feed(self.reference, noise, conditions)
        if noise.shape[0] == 0:
            return torch.zeros((0, *self.shower_shape), device=noise.device)
        return torch.from_numpy(self._runner(feed)).to(noise.device)


def make_feed(generator: ShowerGenerator, noise: Tensor, conditions: Mapping[str, Tensor]) -> Feed:
    """The exported graph's inputs: float32 arrays, the conditions checked against the
    generator's geometry."""
    n = noise.shape[0]
    geometry = generator.config.resolved_geometry
    feed = {"noise": np.ascontiguousarray(noise.detach().float().cpu().numpy())}
    for name in generator.condition_names:
        size = geometry.condition(name).size
        if name not in conditions:
            raise ConditionError(
                f"the model needs condition '{name}'; got conditions {sorted(conditions)}"
            )
        value = torch.as_tensor(conditions[name]).detach().float().cpu().numpy()
        if value.size != n * size:
            expected = f"({n},)" if size == 1 else f"({n}, {size})"
            raise ConditionError(f"condition '{name}' has shape {value.shape}; expected {expected}")
        feed[name] = np.ascontiguousarray(value.reshape((n,) if size == 1 else (n, size)))
    return feed


class _Positional(nn.Module):
    """`module(noise, *conditions) -> generator(noise, conditions)`: what the exporter traces."""

    def __init__(self, generator: ShowerGenerator) -> None:
        super().__init__()
        self.generator = generator
        self.names = generator.condition_names

    def forward(self, noise: Tensor, *conditions: Tensor) -> Tensor:
        return self.generator(noise, dict(zip(self.names, conditions, strict=True)))


def compile_openvino(
    generator: ShowerGenerator, example: Feed, threads: int | None = None
) -> OpenVinoGenerator:
    """`generator` (fp32, preprocessed units) exported and compiled by OpenVINO for the CPU.

    example: graph inputs to trace the export with (a couple of showers' noise and
    conditions, as `make_feed` makes them); threads: default
    `torch.get_num_threads()`. Needs the `int8` extra (openvino) and the `onnx` one.
    """
    ov = import_optional("openvino", package="openvino", extra="int8", purpose="OpenVINO")
    cpu = _Positional(copy.deepcopy(generator).cpu()).eval()
    inputs = {name: torch.from_numpy(value) for name, value in example.items()}
    exported = module_to_onnx(cpu, inputs, output_name="showers", what=generator.config.family)
    model = openvino_model(ov, exported)
    runner = OpenVinoRunner(ov, model, threads or torch.get_num_threads())
    return OpenVinoGenerator(generator, model, runner)
