"""Which int8 library for the `int8` generation backend: speed and accuracy, measured.

Candidates, each an fp32 variant and an int8 variant of the same generator graph (the
generator alone, output in preprocessed units; the GeV inverse is applied after, in numpy):

- `onnxruntime`: the ONNX export (`caloforge.export.onnx.module_to_onnx`), static QDQ
  quantization per channel (`onnxruntime.quantization.quantize_static`, u8 activations, s8
  weights, MinMax calibration), run by ONNX Runtime's CPU provider;
- `openvino`: the same ONNX file read by OpenVINO, int8 by NNCF post-training quantization
  (`nncf.quantize`, its default preset), compiled for the CPU at a static batch;
- `pt2e`: PyTorch 2 export quantization (`torchao.quantization.pt2e`, X86InductorQuantizer:
  conv2d / linear, not conv3d nor transposed convolutions), run through `torch.compile`
  (inductor, freezing on), fp32 compiled the same way;
- `torch`: eager PyTorch fp32, the reference every accuracy number compares with.

Speed: showers/s at `--batch-size` (64) with `--threads` (2) threads; each sample times
`--calls` calls; all variants of a model are timed alternately `--repeats` times after a
warm-up, so a change of machine load hits them alike; the median is reported, with min-max.

Accuracy (the int8 guard's three numbers, `caloforge.generation.int8`), on `--eval` showers
(conditions as `caloforge simulate` draws them, noise set B), GeV:
- projection MSE (`caloforge.validation.metrics.projection_mse`): the shift int8 causes,
  `mse(fp32 B, int8 B)`, over the metric's noise floor, `mse(fp32 A, fp32 B)` with an
  independent noise set A: the expected relative increase of the Conv2D paper's number when
  int8 replaces fp32 (the guard wants <= 10 %; see `caloforge.generation.int8`);
- response: `|mean(sum/E) int8 / mean(sum/E) fp32 - 1|` on the same noise B (<= 1 %);
- profile: L1 distance of the normalised mean longitudinal profiles, int8 vs fp32, same noise.
Plus the relative L2 error of the int8 showers against fp32 showers of the same noise.

Run (about 10 minutes on 2 cores):

    python benchmarks/int8_libraries.py --json benchmarks/int8_libraries.json
    python benchmarks/int8_libraries.py --models gan3d --libraries onnxruntime openvino
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloforge.data.transforms import Identity, Power
from caloforge.generation.onnx_graph import GeVGenerator, module_to_onnx
from caloforge.generation.pipeline import ShowerPipeline
from caloforge.models import build_model
from caloforge.simulation.conditions import ConditionRanges, sample_conditions
from caloforge.validation.features import normalised_mean_profile, response
from caloforge.validation.metrics.images import projection_mse

ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = ROOT / "demo-output" / "run"
LIBRARIES = ("onnxruntime", "openvino", "pt2e")
Runner = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # inputs by name -> showers
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # ONNX ops quantized
INTEGER_OPS = ("QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger")
OV_LAYER_OPS = {
    "Convolution",
    "GroupConvolution",
    "ConvolutionBackpropData",
    "GroupConvolutionBackpropData",
    "MatMul",
}


@dataclass
class Row:
    library: str
    model: str
    fp32_showers_per_s: float
    int8_showers_per_s: float
    fp32_spread: tuple[float, float]
    int8_spread: tuple[float, float]
    speedup: float
    proj_degradation: float
    response_error: float
    profile_l1: float
    rel_l2: float
    int8_layers: str  # what the library actually ran in int8
    notes: str = ""
    setup_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


# --- the models -------------------------------------------------------------------------------
def load_pipeline(family: str, checkpoint: Path | None) -> ShowerPipeline:
    if checkpoint is not None and checkpoint.exists():
        pipeline = ShowerPipeline.from_checkpoint(checkpoint)
        if pipeline.generator.config.family == family:
            return pipeline
    bundle = build_model(family, seed=7)
    geometry = bundle.config.resolved_geometry
    return ShowerPipeline(bundle.generator, Power(0.85, scale=100.0), geometry, source=family)


def draw_inputs(pipeline: ShowerPipeline, n: int, seed: int) -> dict[str, np.ndarray]:
    """Float32 graph inputs: noise, then the generator's conditions in order."""
    geometry = pipeline.geometry
    rng = np.random.default_rng(seed)
    drawn = sample_conditions(geometry, ConditionRanges.for_geometry(geometry), n, rng)
    noise = pipeline.generator.sample_noise(n, torch.Generator().manual_seed(seed))
    out = {"noise": noise.numpy()}
    for name in pipeline.condition_names:
        out[name] = np.asarray(drawn[name], dtype=np.float32)
    return out


def batches(inputs: Mapping[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    n = len(inputs["noise"])
    return [{k: v[i : i + size] for k, v in inputs.items()} for i in range(0, n - size + 1, size)]


def run_all(runner: Runner, inputs: Mapping[str, np.ndarray], size: int) -> np.ndarray:
    return np.concatenate([runner(b) for b in batches(inputs, size)])


# --- candidates -------------------------------------------------------------------------------
def torch_runner(module: torch.nn.Module) -> Runner:
    def run(feed: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return module(*(torch.from_numpy(v) for v in feed.values())).numpy()

    return run


def onnxruntime_pair(
    onnx_path: Path, calibration: list[dict[str, np.ndarray]], threads: int, work: Path
) -> tuple[Runner, Runner, str, dict[str, Any]]:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    pre = work / "pre.onnx"
    quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
    q_path = work / "int8.onnx"
    quantize_static(
        str(pre),
        str(q_path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(LAYER_OPS),  # the layers; element-wise ops stay fp32
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=True,  # u8 x s8 on AVX2 without VNNI saturates the 16-bit sums otherwise
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # what ORT actually runs after fusing the QDQ pairs into integer kernels
    options.optimized_model_filepath = str(work / "int8.optimized.onnx")
    q_session = ort.InferenceSession(str(q_path), options, providers=["CPUExecutionProvider"])
    options.optimized_model_filepath = ""
    f_session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(work / "int8.optimized.onnx"))
    ops: dict[str, int] = {}
    for node in optimized.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    fp32_model = onnx.load(str(onnx_path))
    layers = sum(n.op_type in LAYER_OPS for n in fp32_model.graph.node)
    integer = {k: v for k, v in ops.items() if k in INTEGER_OPS}
    still_float = {k: v for k, v in ops.items() if k in LAYER_OPS}
    summary = f"{sum(integer.values())} of {layers} layers in integer kernels {integer}"
    if still_float:
        summary += f", fp32: {still_float}"

    def runner(session: Any) -> Runner:
        return lambda feed: session.run(None, dict(feed))[0]

    size = {"fp32_bytes": onnx_path.stat().st_size, "int8_bytes": q_path.stat().st_size}
    return runner(f_session), runner(q_session), summary, {"ops": ops, **size}


def openvino_pair(
    onnx_path: Path, calibration: list[dict[str, np.ndarray]], threads: int, batch: int
) -> tuple[Runner, Runner, str, dict[str, Any]]:
    import nncf
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }

    def static(model: Any) -> Any:
        model.reshape({i.get_any_name(): [batch, *i.get_partial_shape()[1:]] for i in model.inputs})
        return model

    fp32 = static(core.read_model(str(onnx_path)))
    quantized = nncf.quantize(
        static(core.read_model(str(onnx_path))),
        nncf.Dataset(calibration),
        subset_size=len(calibration),  # dataset items (batches)
        # only the layers (convolutions, matrix products) in int8; NNCF would otherwise also
        # quantize the conditioning product and the model's output
        ignored_scope=nncf.IgnoredScope(
            types=sorted({op.get_type_name() for op in fp32.get_ordered_ops()} - OV_LAYER_OPS),
            validate=False,
        ),
    )
    f_compiled = core.compile_model(fp32, "CPU", config)
    q_compiled = core.compile_model(quantized, "CPU", config)
    precisions: dict[str, int] = {}
    n_conv = 0
    for op in q_compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else ""
        if layer in ("Convolution", "Deconvolution", "FullyConnected"):
            n_conv += 1
            precision = info["runtimePrecision"].astype(str)
            key = f"{layer}:{precision}"
            precisions[key] = precisions.get(key, 0) + 1
    summary = f"runtime precision of the {n_conv} layers: {precisions}"

    def runner(compiled: Any) -> Runner:
        request = compiled.create_infer_request()
        return lambda feed: next(iter(request.infer(dict(feed)).values())).copy()

    return runner(f_compiled), runner(q_compiled), summary, {"precisions": precisions}


def pt2e_pair(
    module: torch.nn.Module,
    calibration: list[dict[str, np.ndarray]],
    example: dict[str, np.ndarray],
) -> tuple[Runner, Runner, str, dict[str, Any]]:
    import torch._inductor.config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    inductor_config.freezing = True  # conv weights packed only with freezing (systems.md 8)
    args = tuple(torch.from_numpy(v) for v in example.values())
    exported = torch.export.export(module.eval(), args).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)  # type: ignore[arg-type]
    with torch.no_grad():
        for feed in calibration:
            prepared(*(torch.from_numpy(v) for v in feed.values()))
    converted = convert_pt2e(prepared)
    code = str(converted.graph)
    n_q = code.count("dequantize_per_channel")
    summary = f"{n_q} weights quantized per channel (conv2d/linear only)"
    f_compiled = torch.compile(module, dynamic=False)
    q_compiled = torch.compile(converted, dynamic=False)
    return torch_runner(f_compiled), torch_runner(q_compiled), summary, {}


# --- measuring --------------------------------------------------------------------------------
def timed(runners: dict[str, Runner], feed: dict[str, np.ndarray], repeats: int, calls: int):
    """name -> list of showers/s samples, the runners timed alternately."""
    n = len(feed["noise"])
    for runner in runners.values():  # warm-up (and compilation)
        runner(feed)
        runner(feed)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            start = time.perf_counter()
            for _ in range(calls):
                runner(feed)
            samples[name].append(n * calls / (time.perf_counter() - start))
    return samples


def accuracy(
    pipeline: ShowerPipeline,
    reference_a: np.ndarray,
    fp32_b: np.ndarray,
    int8_b: np.ndarray,
    energy: np.ndarray,
) -> dict[str, float]:
    """The guard's numbers on showers in GeV (see the module docstring)."""
    base = projection_mse(reference_a, fp32_b, n_bootstrap=2)[0]
    shift = projection_mse(fp32_b, int8_b, n_bootstrap=2)[0]
    r_fp32 = response(fp32_b, energy).mean()
    r_int8 = response(int8_b, energy).mean()
    geometry = pipeline.geometry
    return {
        "proj_degradation": float(shift / base),
        "response_error": float(abs(r_int8 / r_fp32 - 1.0)),
        "profile_l1": float(
            np.abs(
                normalised_mean_profile(int8_b, geometry)
                - normalised_mean_profile(fp32_b, geometry)
            ).sum()
        ),
        "rel_l2": float(np.linalg.norm(int8_b - fp32_b) / np.linalg.norm(fp32_b)),
    }


def measure_model(family: str, args: argparse.Namespace) -> list[Row]:
    pipeline = load_pipeline(family, args.checkpoint if family == "gan3d" else None)
    module = GeVGenerator(pipeline.generator, Identity(), pipeline.condition_names).eval()
    b = args.batch_size
    calibration = batches(draw_inputs(pipeline, args.calibration, seed=1), b)
    eval_b = draw_inputs(pipeline, args.eval, seed=2)
    eval_a = draw_inputs(pipeline, args.eval, seed=3)
    eval_a = {**eval_a, **{k: v for k, v in eval_b.items() if k != "noise"}}  # same conditions
    energy = eval_b["energy"].astype(np.float64)

    def gev(x: np.ndarray) -> np.ndarray:
        return np.asarray(pipeline.transform.to_gev(x), dtype=np.float32)

    reference = torch_runner(module)
    ref_a = gev(run_all(reference, eval_a, b))
    ref_b = gev(run_all(reference, eval_b, b))
    feed = batches(eval_b, b)[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_path = work / "fp32.onnx"
        example = {k: torch.from_numpy(v[:2]) for k, v in eval_b.items()}
        import onnx

        onnx.save_model(module_to_onnx(module, example, output_name="showers"), str(onnx_path))
        for library in args.libraries:
            print(f"[{family}] {library}: quantizing ...", flush=True)
            start = time.perf_counter()
            try:
                if library == "onnxruntime":
                    pair = onnxruntime_pair(onnx_path, calibration, args.threads, work)
                elif library == "openvino":
                    pair = openvino_pair(onnx_path, calibration, args.threads, b)
                else:
                    pair = pt2e_pair(module, calibration, feed)
                fp32_run, int8_run, summary, extra = pair
                int8_b = gev(run_all(int8_run, eval_b, b))  # compiles, where the library does
                fp32_lib_b = gev(run_all(fp32_run, eval_b, b))
            except Exception as exc:  # a candidate that cannot quantize or run this model
                print(f"[{family}] {library}: FAILED {type(exc).__name__}: {exc}", flush=True)
                rows.append(
                    Row(
                        library,
                        family,
                        *(float("nan"),) * 2,
                        (0, 0),
                        (0, 0),
                        *(float("nan"),) * 5,
                        int8_layers="-",
                        notes=f"failed: {type(exc).__name__}: {str(exc)[:200]}",
                    )
                )
                continue
            setup = time.perf_counter() - start
            acc = accuracy(pipeline, ref_a, ref_b, int8_b, energy)
            fp32_err = float(np.linalg.norm(fp32_lib_b - ref_b) / np.linalg.norm(ref_b))
            samples = timed(
                {"torch": reference, "fp32": fp32_run, "int8": int8_run},
                feed,
                args.repeats,
                args.calls,
            )
            med = {k: statistics.median(v) for k, v in samples.items()}
            row = Row(
                library,
                family,
                med["fp32"],
                med["int8"],
                (min(samples["fp32"]), max(samples["fp32"])),
                (min(samples["int8"]), max(samples["int8"])),
                med["int8"] / med["fp32"],
                **acc,
                int8_layers=summary,
                setup_s=setup,
                extra={**extra, "torch_eager_showers_per_s": med["torch"], "fp32_rel_l2": fp32_err},
            )
            print(json.dumps(asdict(row), default=str), flush=True)
            rows.append(row)
    return rows


def measure_guarded(family: str, args: argparse.Namespace) -> dict[str, Any]:
    """The chosen backend as shipped: `quantize_int8` (guard + fallback) on `--calibration`
    showers, then timed against OpenVINO fp32 and eager torch at `--batch-size`."""
    import openvino as ov

    from caloforge.generation.int8 import calibration_conditions, quantize_int8
    from caloforge.generation.openvino import OpenVinoRunner

    pipeline = load_pipeline(family, args.checkpoint if family == "gan3d" else None)
    calibration = calibration_conditions(pipeline, args.calibration, seed=1)
    start = time.perf_counter()
    quantized = quantize_int8(
        pipeline.generator,
        pipeline.transform,
        pipeline.geometry,
        calibration,
        seed=2,
        progress=True,
        threads=args.threads,
        source=pipeline.source,
    )
    seconds = time.perf_counter() - start
    module = GeVGenerator(pipeline.generator, Identity(), pipeline.condition_names).eval()
    feed = batches(draw_inputs(pipeline, args.batch_size, seed=2), args.batch_size)[0]
    with tempfile.TemporaryDirectory() as tmp:
        import onnx

        path = Path(tmp) / "fp32.onnx"
        example = {k: torch.from_numpy(v[:2]) for k, v in feed.items()}
        onnx.save_model(module_to_onnx(module, example, output_name="showers"), str(path))
        fp32_ov = OpenVinoRunner(ov, ov.convert_model(str(path)), args.threads)
        int8_ov = OpenVinoRunner(ov, quantized.model, args.threads)
        samples = timed(
            {"torch": torch_runner(module), "openvino fp32": fp32_ov, "int8 guarded": int8_ov},
            feed,
            args.repeats,
            args.calls,
        )
    med = {k: statistics.median(v) for k, v in samples.items()}
    out = {
        "model": family,
        "showers_per_s": med,
        "spread": {k: (min(v), max(v)) for k, v in samples.items()},
        "speedup_vs_openvino_fp32": med["int8 guarded"] / med["openvino fp32"],
        "quantize_seconds": seconds,
        "report": quantized.report.to_dict(),
    }
    print(json.dumps(out, default=str), flush=True)
    return out


def markdown(rows: list[Row]) -> str:
    lines = [
        "| library | model | fp32 showers/s | int8 showers/s | int8/fp32 | proj. MSE degr. | "
        "response err. | profile L1 | rel. L2 | eager torch fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.library} | {r.model} | {r.fp32_showers_per_s:.0f} | "
            f"{r.int8_showers_per_s:.0f} | {r.speedup:.2f} | {r.proj_degradation:.1%} | "
            f"{r.response_error:.2%} | {r.profile_l1:.4f} | {r.rel_l2:.3f} | "
            f"{r.extra.get('torch_eager_showers_per_s', float('nan')):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["gan3d", "conv2d-g1"])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument(
        "--checkpoint", type=Path, default=DEMO_CHECKPOINT, help="gan3d weights (default: demo)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--eval", type=int, default=512)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--guarded", action="store_true", help="also time the shipped int8 backend (guarded)"
    )
    parser.add_argument("--guarded-only", action="store_true", help="only the shipped backend")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # third-party deprecation chatter; results are what count
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    rows: list[Row] = []
    guarded = []
    for family in args.models:
        if not args.guarded_only:
            rows += measure_model(family, args)
        if args.guarded or args.guarded_only:
            guarded.append(measure_guarded(family, args))
    load_end = os.getloadavg()
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    print(markdown(rows))
    for r in rows:
        print(f"{r.library} {r.model}: {r.int8_layers} {r.notes}")
    if args.json:
        versions = {}
        for name in ("torch", "onnxruntime", "openvino", "nncf", "torchao"):
            with contextlib.suppress(Exception):
                versions[name] = __import__(name).__version__
        payload = {
            "machine": platform.processor() or platform.machine(),
            "load_start": load,
            "load_end": load_end,
            "versions": versions,
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": [asdict(r) for r in rows],
            "guarded": guarded,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
