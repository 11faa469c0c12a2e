"""Benchmark of one training step per model family: showers/s, FLOPs and the fraction of peak.

A step is what `Trainer` runs per batch, built from the same pieces (`GanStep` / `WganStep`
from `caloforge.training.steps`, the family's preset recipe from `configs/<family>.yaml`, the
trainer's optimizer choice and autocast rule): one discriminator update on a real and a fake
batch, then `generator_steps` generator updates; for the WGAN a critic update with gradient
penalty every step and a generator update every `critic_steps`, so its timed unit is a cycle of
`critic_steps` steps. The real batch is synthetic (non-negative random showers): the data
loader is not part of the step.

Timing: warm-up cycles, then `--steps` timed cycles; the variants of a family are timed
alternately, so that a change of machine load hits both alike ("plain": every `fast_*` key of
the model config off, the literal layers; "fast": the defaults). Reported: the median and the
spread (min-max) of showers/s.

FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one cycle (2 FLOP per multiply-add;
convolutions forward and backward, matrix products; element-wise work not counted). "executed"
is the variant's own count; for a rewrite that lowers the count, "useful" divides the original
(plain) variant's count by the rewritten variant's time: the rate at which the original
computation's work gets done.

    python benchmarks/train_step.py                           # all families, 2 CPU threads
    python benchmarks/train_step.py --families gan3d --steps 10 --json out.json
    python benchmarks/train_step.py --device cuda --gpu-peak-tflops 67   # H100 SXM fp32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from caloforge.data.transforms import transform_from_dict
from caloforge.devices import Distributed, tune_for_fixed_shapes
from caloforge.models import MODEL_FAMILIES, build_model
from caloforge.training.config import RunConfig, load_config
from caloforge.training.steps import Step, StepContext, make_step
from caloforge.training.trainer import autocast_for, step_models

FAMILIES = ("gan3d", "gan3d-angle", "conv2d-g1", "conv2d-g2", "conv2d-g3", "wgan-lhcb")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CPU_PEAK_GFLOPS = 215.0  # this project's 2-core Zen 4, fp32 (systems.md, section 7)


@dataclass
class Row:
    family: str
    variant: str
    device: str
    precision: str
    batch_size: int
    steps_per_cycle: int
    seconds: list[float] = field(default_factory=list)  # per timed cycle
    gflop_per_cycle: float = 0.0  # executed
    useful_gflop_per_cycle: float = 0.0  # the plain variant's count

    @property
    def showers_per_s(self) -> list[float]:
        return [self.batch_size * self.steps_per_cycle / s for s in self.seconds]

    def summary(self, peak_gflops: float) -> dict[str, Any]:
        rates = self.showers_per_s
        median_s = statistics.median(self.seconds)
        executed = self.gflop_per_cycle / median_s
        useful = self.useful_gflop_per_cycle / median_s
        return {
            **{k: v for k, v in asdict(self).items() if k != "seconds"},
            "seconds_per_cycle": self.seconds,
            "showers_per_s_median": statistics.median(rates),
            "showers_per_s_min": min(rates),
            "showers_per_s_max": max(rates),
            "gflop_per_shower": self.gflop_per_cycle / (self.batch_size * self.steps_per_cycle),
            "gflops_executed": executed,
            "gflops_useful": useful,
            "peak_gflops": peak_gflops,
            "fraction_of_peak_executed": executed / peak_gflops,
            "fraction_of_peak_useful": useful / peak_gflops,
        }


# --- the step, as the trainer builds it -----------------------------------------------------
def synthetic_batch(
    config: RunConfig, shape: tuple[int, ...], n: int, device: torch.device, seed: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """Non-negative showers in preprocessed units and conditions in the geometries' ranges."""
    g = torch.Generator().manual_seed(seed)
    showers = torch.rand((n, *shape), generator=g) ** 4  # mostly small cells, some large
    energy = 10.0 + 190.0 * torch.rand(n, generator=g)
    conditions = {"energy": energy}
    if config.family == "gan3d-angle":
        conditions["theta"] = 1.05 + 1.04 * torch.rand(n, generator=g)
    if config.family == "wgan-lhcb":
        momentum = torch.stack([0.05 * energy, -0.03 * energy, energy], dim=1)
        conditions["momentum"] = momentum
        conditions["point"] = 40.0 * (torch.rand((n, 2), generator=g) - 0.5)
    return showers.to(device), {k: v.to(device) for k, v in conditions.items()}


def build_step(
    config: RunConfig,
    device: torch.device,
    precision: str,
    model_overrides: dict[str, Any],
) -> Step:
    """The step the trainer runs (`make_step`), on one process, models unwrapped."""
    cfg = config.training
    bundle = build_model(config.family, {**config.model, **model_overrides}, seed=cfg.seed)
    bundle.to(device)
    tune_for_fixed_shapes(device)  # as the trainer does
    context = Distributed(device=device)  # one process: the models are not wrapped
    models = step_models(bundle, cfg, context)
    rng = torch.Generator(device=device).manual_seed(cfg.seed)
    common = StepContext(models, cfg, context, rng, lambda: autocast_for(precision, device))
    return make_step(common, bundle, transform_from_dict(dict(config.transform)))


def steps_per_cycle(config: RunConfig) -> int:
    """Steps per generator update cycle of the family (`Step.cycle`)."""
    wgan = MODEL_FAMILIES[config.family].training_step == "wgan-gp"
    return config.training.critic_steps if wgan else 1


def run_cycle(step: Step, real: Tensor, conditions: dict[str, Tensor], k: int) -> None:
    for _ in range(k):
        step(real, conditions)  # returns floats: the step has synchronised with the device


def timed_cycle(step: Step, real: Tensor, conditions: dict[str, Tensor], k: int) -> float:
    if real.is_cuda:
        torch.cuda.synchronize(real.device)
    start = time.perf_counter()
    run_cycle(step, real, conditions, k)
    if real.is_cuda:
        torch.cuda.synchronize(real.device)
    return time.perf_counter() - start


class _NoModuleTracking(contextlib.nullcontext[None]):
    """Stands in for `FlopCounterMode`'s module tracker, whose backward hooks break
    `torch.autograd.grad(create_graph=True)` (the WGAN gradient penalty); all FLOPs are then
    counted under "Global", which is all we read."""

    parents = frozenset({"Global"})


def count_gflop(step: Step, real: Tensor, conditions: dict[str, Tensor], k: int) -> float:
    counter = FlopCounterMode(display=False)
    if hasattr(counter, "mod_tracker"):
        counter.mod_tracker = _NoModuleTracking()  # type: ignore[assignment]
    with counter:
        run_cycle(step, real, conditions, k)
    return counter.get_total_flops() / 1e9


# --- profile --------------------------------------------------------------------------------
def profile_step(
    step: Step, real: Tensor, conditions: dict[str, Tensor], label: str
) -> dict[str, float]:
    """Self time per operator over one step; conv3d forward vs backward, by input shape."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if real.is_cuda:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as prof:
        run_cycle(step, real, conditions, 1)
    use_cuda = real.is_cuda
    attr = "self_device_time_total" if use_cuda else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, attr) for e in events)
    print(f"\n-- where the time goes: {label}, 1 step, self {'GPU' if use_cuda else 'CPU'} time --")
    top = sorted(events, key=lambda e: getattr(e, attr), reverse=True)[:12]
    for e in top:
        print(f"  {getattr(e, attr) / total:6.1%}  {getattr(e, attr) / 1e3:8.1f} ms/step  {e.key}")

    # Forward convolutions run inside aten::convolution; backward in convolution_backward.
    by_shape = prof.key_averages(group_by_input_shape=True)
    print("  conv3d layers (inclusive time per step; input shape, weight shape):")
    groups: dict[str, float] = {"forward conv": 0.0, "backward conv": 0.0}
    rows = []
    for e in by_shape:
        if e.key not in ("aten::convolution", "aten::convolution_backward"):
            continue
        t = (e.device_time_total if use_cuda else e.cpu_time_total) / 1e3  # ms per step
        kind = "forward conv" if e.key == "aten::convolution" else "backward conv"
        groups[kind] += t
        shapes = e.input_shapes
        if e.key == "aten::convolution_backward":
            shapes = shapes[1:]  # (grad_output, input, weight, ...)
        rows.append((t, kind, shapes[0], shapes[1] if len(shapes) > 1 else None, e.count))
    for t, kind, x, w, count in sorted(rows, key=lambda r: r[0], reverse=True)[:12]:
        print(f"    {t:8.1f} ms  {kind:13s} x{count}  input {x}  weight {w}")
    total_ms = total / 1e3
    print(
        f"  total {total_ms:.0f} ms/step: forward conv {groups['forward conv']:.0f} ms, "
        f"backward conv {groups['backward conv']:.0f} ms (inclusive)"
    )
    return {
        "ms_per_step_total": total_ms,
        **{f"ms_{k.replace(' ', '_')}": v for k, v in groups.items()},
    }


# --- main -----------------------------------------------------------------------------------
def variants_for(family: str, choice: str) -> list[tuple[str, dict[str, Any]]]:
    """("plain", every `fast_*` model key off) and/or ("fast", the defaults: on)."""
    keys = [f.name for f in fields(MODEL_FAMILIES[family]) if f.name.startswith("fast_")]  # type: ignore[arg-type]
    if not keys:
        return [("-", {})]
    plain = ("plain", dict.fromkeys(keys, False))
    fast = ("fast", {})
    return {"plain": [plain], "fast": [fast], "both": [plain, fast]}[choice]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--batch-size", type=int, default=None, help="default: each preset's")
    parser.add_argument("--steps", type=int, default=5, help="timed cycles per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed cycles per variant")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument(
        "--variants",
        default="both",
        choices=("both", "plain", "fast"),
        help="plain: the models' fast_* rewrites off; fast: on (default: both, side by side)",
    )
    parser.add_argument("--peak-gflops", type=float, default=CPU_PEAK_GFLOPS, help="CPU fp32")
    parser.add_argument("--gpu-peak-tflops", type=float, default=None, help="GPU peak, TFLOP/s")
    parser.add_argument(
        "--profile",
        nargs="*",
        default=["gan3d"],
        choices=FAMILIES,
        help="families whose step is profiled (default gan3d; none: --profile)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: this PyTorch build sees no CUDA GPU")
        if args.gpu_peak_tflops is None:
            parser.error("--device cuda needs --gpu-peak-tflops (the GPU's peak, TFLOP/s)")
        peak = args.gpu_peak_tflops * 1e3
        hardware = torch.cuda.get_device_name(device)
    else:
        peak = args.peak_gflops
        hardware = f"{platform.processor() or platform.machine()}, {args.threads} threads"
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    load = os.getloadavg()
    print(
        f"torch {torch.__version__}, {hardware}, precision {precision}, "
        f"peak {peak:.0f} GFLOP/s, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    if device.type == "cuda":
        print(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")

    results: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    for family in args.families:
        overrides = [f"training.batch_size={args.batch_size}"] if args.batch_size else []
        config = load_config(CONFIGS / f"{family}.yaml", overrides)
        k = steps_per_cycle(config)
        n = config.training.batch_size
        built = []
        for variant, model_overrides in variants_for(family, args.variants):
            step = build_step(config, device, precision, model_overrides)
            shape = tuple(step.m.generator_plain.shower_shape)  # type: ignore[arg-type]
            real, conditions = synthetic_batch(config, shape, n, device, config.training.seed)
            row = Row(family, variant, str(device), precision, n, k)
            for _ in range(args.warmup):
                run_cycle(step, real, conditions, k)
            row.gflop_per_cycle = count_gflop(step, real, conditions, k)
            built.append((row, step, real, conditions))
        for _ in range(args.steps):  # variants alternate
            for row, step, real, conditions in built:
                row.seconds.append(timed_cycle(step, real, conditions, k))
        original = built[0][0].gflop_per_cycle  # plain first when both variants run
        for row, *_ in built:
            row.useful_gflop_per_cycle = original if len(built) > 1 else row.gflop_per_cycle
            results.append(row.summary(peak))
            s = results[-1]
            print(
                f"{family:12s} {row.variant:9s} batch {n:4d}: "
                f"{s['showers_per_s_median']:8.1f} showers/s "
                f"({s['showers_per_s_min']:.1f}-{s['showers_per_s_max']:.1f})",
                flush=True,
            )
        if family in args.profile:
            for row, step, real, conditions in built:
                label = f"{family} {row.variant}, batch {n}"
                profiles[label] = profile_step(step, real, conditions, label)
        del built

    print(
        f"\n{'family':12s} {'variant':9s} {'batch':>5s} {'showers/s':>10s} {'min-max':>15s} "
        f"{'GFLOP/shower':>12s} {'GFLOP/s':>8s} {'of peak':>8s} {'useful':>8s}"
    )
    for s in results:
        print(
            f"{s['family']:12s} {s['variant']:9s} {s['batch_size']:5d} "
            f"{s['showers_per_s_median']:10.1f} "
            f"{s['showers_per_s_min']:7.1f}-{s['showers_per_s_max']:<7.1f} "
            f"{s['gflop_per_shower']:12.2f} {s['gflops_executed']:8.1f} "
            f"{s['fraction_of_peak_executed']:8.1%} {s['fraction_of_peak_useful']:8.1%}"
        )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "hardware": hardware,
                    "peak_gflops": peak,
                    "threads": args.threads,
                    "results": results,
                    "profiles": profiles,
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
