"""GPU layouts of the generators, side by side: which form of the same network runs fastest.

For `gan3d-angle` (3D convolutions on 6-8 channels) and `conv2d-g1` (three branches as grouped
2D convolutions), each variant is the same function as the generator (checked against the fp32
generator on the same inputs: relative L2 error) in another layout or precision:

- `plain`: the generator as it is (NCDHW / NCHW), `frozen("cpu")`;
- `channels-last` (conv2d-g1): activations channels-last (NHWC);
- `padded8` (gan3d-angle): every convolution's channels padded to a multiple of 8 with zero
  weights (exact), channels-last: tensor-core convolution kernels want 16-byte channel rows;
- `depth-as-channels` (gan3d-angle) and `split` (conv2d-g1): the package's GPU forms,
  `frozen("cuda")`: the depth axis folded into the channels after the first convolution
  (banded 2D kernels), and the three branches as three ungrouped channels-last stacks;
- `... +compile`: torch.compile (Inductor, frozen weights, CUDA graphs) of the variant, as the
  `compiled` and `bf16` backends run it.

Results on an H100 (torch 2.11, cuDNN 9.19, batch 512 / 2048, bf16): gan3d-angle plain 2 600
showers/s, padded8 2 593 (fp16 6 202), depth-as-channels 13 201, compiled 22 344;
conv2d-g1 plain 68 017, compiled 77 957, channels-last 70 982, split 85 672, compiled
109 410 (`results/gpu-variants-h100.json`, with prototypes of the two forms that the package's
match to 1e-12 in float64).

Eager variants are timed as CUDA-graph replays (launch gaps removed), compiled ones as calls;
both with CUDA events, the median of several timed runs. A profile of the eager variants'
kernels (top by GPU time) is written beside the table.

    python benchmarks/gpu_variants.py --out results/ [--models gan3d-angle conv2d-g1]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from caloforge.models import build_model
from caloforge.models.gan3d import FastConv3dSequential

Fn = Callable[[Tensor, dict[str, Tensor]], Tensor]


def _roundup(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _randomise_batchnorm(module: nn.Module, seed: int) -> None:
    """Trained-looking BatchNorm statistics, so that no layer is an identity."""
    rng = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=rng) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=rng) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=rng) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=rng) * 0.2)


class PaddedAngle(nn.Module):
    """gan3d-angle's generator with every convolution's channels padded to `multiple`."""

    def __init__(self, gen: nn.Module, multiple: int = 8) -> None:
        super().__init__()
        self.gen = copy.deepcopy(gen)
        layers: list[nn.Module] = []
        for layer in gen.convs:
            if isinstance(layer, nn.Conv3d):
                c_in, c_out = (
                    _roundup(c, multiple) for c in (layer.in_channels, layer.out_channels)
                )
                conv = nn.Conv3d(c_in, c_out, layer.kernel_size, bias=layer.bias is not None)
                with torch.no_grad():
                    conv.weight.zero_()
                    conv.weight[: layer.out_channels, : layer.in_channels] = layer.weight
                    if layer.bias is not None:
                        conv.bias.zero_()
                        conv.bias[: layer.out_channels] = layer.bias
                layers.append(conv)
            elif isinstance(layer, nn.BatchNorm3d):
                n = _roundup(layer.num_features, multiple)
                bn = nn.BatchNorm3d(n, eps=layer.eps)
                with torch.no_grad():
                    k = layer.num_features
                    bn.running_mean.zero_()
                    bn.running_var.fill_(1.0)
                    bn.weight.zero_()
                    bn.bias.zero_()
                    bn.running_mean[:k] = layer.running_mean
                    bn.running_var[:k] = layer.running_var
                    bn.weight[:k] = layer.weight
                    bn.bias[:k] = layer.bias
                layers.append(bn)
            else:
                layers.append(copy.deepcopy(layer))
        self.gen.convs = FastConv3dSequential(*layers, upsample=True, channels_last=True)
        self.to(next(gen.parameters()).device).eval()

    def forward(self, noise: Tensor, conditions: dict[str, Tensor]) -> Tensor:
        g = self.gen
        n = noise.shape[0]
        x = g.dense(
            torch.cat(
                [
                    conditions["energy"].view(n, 1) / g.config.energy_scale,
                    conditions["theta"].view(n, 1),
                    noise,
                ],
                dim=1,
            )
        )
        return g.convs(x.view(-1, 8, 9, 9, 8))[:, 0]


class ChannelsLast(nn.Module):
    """Generator run with channels-last activations (2D or 3D)."""

    def __init__(self, gen: nn.Module) -> None:
        super().__init__()
        self.gen = copy.deepcopy(gen)
        if hasattr(self.gen, "convs"):
            self.gen.convs.channels_last = True
        else:  # conv2d: convert every 4D activation at the module boundaries
            for m in self.gen.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    m.register_forward_pre_hook(
                        lambda _m, args: (args[0].contiguous(memory_format=torch.channels_last),)
                    )
        self.eval()

    def forward(self, noise: Tensor, conditions: dict[str, Tensor]) -> Tensor:
        return self.gen(noise, conditions)


def _graph(fn: Fn, noise: Tensor, conditions: dict[str, Tensor]) -> Callable[[], Tensor]:
    """A CUDA graph of `fn` on these (static) inputs; returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(noise, conditions)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(noise, conditions)

    def replay() -> Tensor:
        graph.replay()
        return out

    return replay


def _time(call: Callable[[], Tensor], calls: int = 10, runs: int = 7) -> float:
    """Median seconds per call over `runs` timed runs of `calls` calls (CUDA events)."""
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            call()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    return statistics.median(times)


def _profile(fn: Fn, noise: Tensor, conditions: dict[str, Tensor], top: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        fn(noise, conditions)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            fn(noise, conditions)
        torch.cuda.synchronize()
    return prof.key_averages().table(
        sort_by="cuda_time_total", row_limit=top, max_name_column_width=90
    )


def _inputs(gen: nn.Module, family: str, n: int, dtype: torch.dtype) -> tuple[Tensor, dict]:
    g = torch.Generator(device="cuda").manual_seed(n)
    noise = torch.randn(n, gen.noise_size, device="cuda", generator=g)
    cond = {"energy": 100 + 100 * torch.rand(n, device="cuda", generator=g)}
    if family == "gan3d-angle":
        cond["theta"] = 1.05 + 1.05 * torch.rand(n, device="cuda", generator=g)
    return noise.to(dtype), {k: v.to(dtype) for k, v in cond.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gan3d-angle", "conv2d-g1"])
    parser.add_argument("--batch", nargs="+", type=int, default=None)
    parser.add_argument("--compile", nargs="*", default=None, help="variants to also compile")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    profiles = []
    for family in args.models:
        gen = build_model(family, seed=0).modules["generator"]
        _randomise_batchnorm(gen, 1)
        gen = gen.cuda()
        on_gpu = gen.frozen()  # the package's GPU form
        gen = gen.frozen("cpu")  # the plain copy
        if family == "gan3d-angle":
            variants = {"plain": gen, "padded8": PaddedAngle(gen), "depth-as-channels": on_gpu}
            batches = args.batch or [512]
            compiled = args.compile if args.compile is not None else ["depth-as-channels"]
        else:
            variants = {"plain": gen, "channels-last": ChannelsLast(gen), "split": on_gpu}
            batches = args.batch or [2048, 8192]
            compiled = args.compile if args.compile is not None else ["plain", "split"]
        for n in batches:
            noise32, cond32 = _inputs(gen, family, n, torch.float32)
            with torch.no_grad(), torch.backends.cudnn.flags(allow_tf32=False):
                reference = gen(noise32, cond32).float()
            for name, module in variants.items():
                for dtype in (torch.bfloat16, torch.float16):
                    m = copy.deepcopy(module).to(dtype).eval().requires_grad_(False)
                    noise, cond = _inputs(gen, family, n, dtype)
                    with torch.no_grad():
                        out = m(noise, cond).float()
                        err = float((out - reference).norm() / reference.norm())
                        replay = _graph(m, noise, cond)
                        seconds = _time(replay)
                        if dtype == torch.bfloat16 and n == batches[0]:
                            profiles.append(
                                f"## {family} {name} bf16 batch {n}\n" + _profile(m, noise, cond)
                            )
                            (args.out / "gpu-variants-profiles.txt").write_text(
                                "\n\n".join(profiles)
                            )
                    rows.append(
                        dict(
                            model=family,
                            variant=name,
                            dtype=str(dtype)[6:],
                            batch=n,
                            showers_per_s=n / seconds,
                            rel_error=err,
                        )
                    )
                    print(json.dumps(rows[-1]), flush=True)
                    del m, replay
                if name in compiled and n == batches[0]:
                    m = copy.deepcopy(module).to(torch.bfloat16).eval().requires_grad_(False)
                    noise, cond = _inputs(gen, family, n, torch.bfloat16)
                    t0 = time.perf_counter()
                    fn = torch.compile(
                        m, dynamic=False, options={"freezing": True, "triton.cudagraphs": True}
                    )
                    with torch.no_grad():
                        out = fn(noise, cond).float()
                        build = time.perf_counter() - t0
                        err = float((out - reference).norm() / reference.norm())
                        seconds = _time(lambda: fn(noise, cond))  # noqa: B023
                    rows.append(
                        dict(
                            model=family,
                            variant=name + " +compile",
                            dtype="bfloat16",
                            batch=n,
                            showers_per_s=n / seconds,
                            rel_error=err,
                            compile_s=build,
                        )
                    )
                    print(json.dumps(rows[-1]), flush=True)
                    torch._dynamo.reset()
            torch.cuda.empty_cache()
    (args.out / "gpu-variants.json").write_text(
        json.dumps(
            dict(
                device=torch.cuda.get_device_name(),
                torch=torch.__version__,
                cudnn=torch.backends.cudnn.version(),
                rows=rows,
            ),
            indent=1,
        )
    )
    (args.out / "gpu-variants-profiles.txt").write_text("\n\n".join(profiles))
    print(
        f"\n{'model':12} {'variant':22} {'dtype':9} {'batch':>6} {'showers/s':>10} {'rel err':>9}"
    )
    for r in rows:
        print(
            f"{r['model']:12} {r['variant']:22} {r['dtype']:9} {r['batch']:6d} "
            f"{r['showers_per_s']:10.0f} {r['rel_error']:9.2e}"
        )


if __name__ == "__main__":
    main()
