"""Ways to run a generator: the same function, different speed and precision.

A backend is built from a `ShowerGenerator` and stands in for its forward:
`backend(noise, conditions) -> showers` in the model's preprocessed units, float32, on the
backend's device. `ShowerPipeline` calls it in place of the generator, so the noise, the
inverse preprocessing and the checks are the same whatever the backend. Its `module` is the
generator whose arithmetic it runs: the generator itself for `eager`, its `frozen()` copy for
the others (exact rewrites that need fixed weights, e.g. gan3d's folded first layers; on a
GPU the forms that pay there, e.g. gan3d-angle's depth axis folded into the channels), which
`caloforge bench` counts the executed FLOPs of; `engine` says what runs it.

- `eager`: the PyTorch module as trained, fp32 (cuDNN without TF32): the reference.
- `compiled`: the fastest fp32 path, chosen by measurement. On a GPU, `torch.compile` with
  static shapes and frozen weights (Inductor folds the BatchNorms and constants into the
  convolutions) and CUDA graphs, which remove the launch gaps of the many small kernels. On
  the CPU, OpenVINO where it is installed (the `int8` extra; `caloforge.generation.openvino`:
  on the same graph 1.5-2x eager for gan3d on an AVX2 CPU, where Inductor, calling the same
  oneDNN convolutions as eager, gained 1.0-1.4x; with gan3d's frozen() rewrites 2.8x), else
  Inductor as on the GPU. `engine` says which.
  A batch smaller than the first one seen is padded up to it, so one compiled graph serves
  a whole `generate` run.
- `bf16`: the compiled path with weights and activations in bfloat16 (fp32 in, fp32 out).
  Fast on GPUs and on CPUs with native bf16 (AVX-512 BF16, AMX); where the CPU has none,
  oneDNN emulates it and it can be slower than fp32: `caloforge bench` measures it.
- `int8`: CPU only; the generator quantized with an accuracy guard
  (`caloforge.generation.int8`), built by `ShowerPipeline` since it needs calibration showers.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from caloforge.errors import CaloforgeError
from caloforge.generation.compile_record import record_compile
from caloforge.models import ShowerGenerator

__all__ = [
    "BACKENDS",
    "Backend",
    "CompiledBackend",
    "EagerBackend",
    "OpenVinoBackend",
    "SlowBackendWarning",
    "build_backend",
    "native_bf16",
]

BACKENDS = ("eager", "compiled", "bf16", "int8")

Backend = Callable[[Tensor, Mapping[str, Tensor]], Tensor]


class SlowBackendWarning(UserWarning):
    """A backend that runs here, but emulated: expect it slower than eager."""


def native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (AVX-512 BF16 or AMX), per oneDNN."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


class EagerBackend:
    """The generator module itself, in eval mode."""

    name = "eager"
    engine = "pytorch"

    def __init__(self, generator: ShowerGenerator) -> None:
        self.module = generator.eval()

    def __call__(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        return self.module(noise, conditions)


def _pad(x: Tensor, size: int) -> Tensor:
    """`x` with its first dimension padded to `size` by repeating its last row."""
    missing = size - x.shape[0]
    return torch.cat([x, x[-1:].expand(missing, *x.shape[1:])]) if missing > 0 else x


class CompiledBackend:
    """`torch.compile`d generator (a copy), fp32 or bf16, one static batch size.

    The first call fixes the batch size; smaller batches are padded to it (a batch's rows
    are independent in eval mode, so padding changes nothing of the rows asked for), larger
    ones compile again. Compilation happens on the first call (seconds to minutes).
    """

    def __init__(self, generator: ShowerGenerator, dtype: torch.dtype = torch.float32) -> None:
        _check_compiler()
        self.name = "compiled" if dtype == torch.float32 else "bf16"
        self.engine = "inductor"
        self.dtype = dtype
        module = generator.frozen().to(dtype=dtype)
        self.device = next(module.parameters()).device
        cuda = self.device.type == "cuda"
        options: dict[str, str | int | bool | Callable[..., Any]] = {
            "freezing": True,
            "triton.cudagraphs": cuda,
        }
        self.module = module
        _allow_recompiles(64)
        self.compiled = torch.compile(module, dynamic=False, options=options)
        self.batch_size = 0
        self.source = generator  # what `auto` looks the compilation's time up by
        self.timed = False  # the first call (the compilation) timed for `auto`

    def __call__(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        n = noise.shape[0]
        if n > self.batch_size:
            self.batch_size = n
        size = self.batch_size
        inputs = {name: _pad(value.to(self.dtype), size) for name, value in conditions.items()}
        first = not self.timed
        start = time.perf_counter()
        out = self.compiled(_pad(noise.to(self.dtype), size), inputs)
        if first and self.device.type == "cpu" and self.name == "compiled":
            record_compile(self.source, self.engine, time.perf_counter() - start)
        self.timed = True
        # CUDA graphs reuse their output buffer at the next replay: copy out before returning.
        return out[:n].to(torch.float32, copy=True)


class OpenVinoBackend:
    """The generator exported to ONNX and compiled by OpenVINO for the CPU, fp32.

    Exported and compiled at the first call, for that batch size (seconds); smaller batches
    are padded to it, larger ones compile again, as `CompiledBackend`. Outputs on the
    inputs' device.
    """

    name = "compiled"

    def __init__(self, generator: ShowerGenerator, threads: int | None = None) -> None:
        from caloforge._optional import import_optional

        ov = import_optional("openvino", package="openvino", extra="int8", purpose="OpenVINO")
        self.engine = f"openvino {ov.__version__.split('-')[0]}"
        self.module = generator.frozen()
        self.source = generator  # what `auto` looks the compilation's time up by
        self.threads = threads or torch.get_num_threads()
        self.compiled: ShowerGenerator | None = None
        self.batch_size = 0

    def __call__(self, noise: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        from caloforge.generation.openvino import compile_openvino, make_feed

        n = noise.shape[0]
        self.batch_size = max(self.batch_size, n)
        size = self.batch_size
        padded = {name: _pad(torch.as_tensor(v), size) for name, v in conditions.items()}
        noise_padded = _pad(noise, size)
        if self.compiled is None and size > 0:
            start = time.perf_counter()
            example = make_feed(
                self.module, noise_padded[:2], {k: v[:2] for k, v in padded.items()}
            )
            self.compiled = compile_openvino(self.module, example, self.threads)
            out = self.compiled(noise_padded, padded)[:n]  # OpenVINO compiles at its first
            record_compile(self.source, self.engine, time.perf_counter() - start)
            return out
        if self.compiled is None:  # an empty first batch
            return self.module(noise, conditions)
        return self.compiled(noise_padded, padded)[:n]


def openvino_available() -> bool:
    """Whether OpenVINO and the ONNX exporter it is fed from are installed."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("openvino", "onnx", "onnxscript", "onnxruntime")
    )


def _allow_recompiles(limit: int) -> None:
    """One graph per (model class, batch size, precision) is what static shapes mean; dynamo
    keeps 8 per function by default and silently runs eager beyond (a `bench` scan of two
    compiled backends has 14). Process-wide; named `cache_size_limit` before torch 2.6."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(int(getattr(config, name)), limit))


def _check_compiler() -> None:
    """`torch.compile` on the CPU generates C++: say so if no compiler is there."""
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        raise CaloforgeError(
            "backends 'compiled' and 'bf16' need a C++ compiler (torch.compile builds its CPU "
            "kernels with it) and none was found (g++, c++ or clang++ on PATH); install one "
            "(e.g. apt-get install g++) or use --backend eager"
        )


def build_backend(name: str, generator: ShowerGenerator, *, engine: str = "auto") -> Backend:
    """The backend `name` for `generator` (already on its device). `int8` is built by
    `ShowerPipeline.set_backend`, which has the calibration data it needs.

    engine (`compiled` only): "auto" (OpenVINO on the CPU where installed, else Inductor),
    "openvino" (CPU only) or "inductor".
    """
    if name == "eager":
        return EagerBackend(generator)
    if name == "compiled":
        cpu = next(generator.parameters()).device.type == "cpu"
        if engine not in ("auto", "openvino", "inductor"):
            raise CaloforgeError(
                f"unknown engine '{engine}' for backend 'compiled'; choose auto, openvino or "
                "inductor"
            )
        if engine == "openvino" and not cpu:
            raise CaloforgeError("engine 'openvino' runs on the CPU; use inductor on a GPU")
        if engine == "openvino" or (engine == "auto" and cpu and openvino_available()):
            return OpenVinoBackend(generator)
        return CompiledBackend(generator, torch.float32)
    if name == "bf16":
        device = next(generator.parameters()).device
        if device.type == "cpu" and not torch.backends.mkldnn.is_available():
            raise CaloforgeError(
                "backend 'bf16' on the CPU needs PyTorch built with oneDNN (mkldnn), which "
                "this build lacks; use --backend eager or compiled"
            )
        if device.type == "cpu" and not native_bf16():
            warnings.warn(
                "backend 'bf16': this CPU has no native bfloat16 arithmetic (AVX-512 BF16 or "
                "AMX); oneDNN emulates it and it runs slower than fp32 (gan3d: 0.05x eager on "
                "an AVX2 CPU). Use --backend compiled or int8 here, bf16 on a GPU",
                SlowBackendWarning,
                stacklevel=2,
            )
        return CompiledBackend(generator, torch.bfloat16)
    if name == "int8":
        raise CaloforgeError("backend 'int8' is built through ShowerPipeline.set_backend")
    raise CaloforgeError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
