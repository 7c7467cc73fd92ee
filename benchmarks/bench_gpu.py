#!/usr/bin/env python3
"""GPU throughput of the SRCNN: a bare PyTorch forward against mrisr's own inference path.

    python benchmarks/bench_gpu.py [--arch srcnn|espcn] [--slices 256] [--size 256] [--device cuda] [--repeat 20]

For each mode (fp32, tf32, bf16, fp16, each with and without channels_last, and torch.compile of the
fastest) it times a bare forward of the shipped network over ``--slices`` slices of ``--size``²
(the output size; SRCNN's input is already bicubic-upsampled, ESPCN's is the ``size/4`` coarse
slice), the relative error against fp32, and then the tool's path in its default mode and with ``--amp``
(:class:`mrisr.inference.SliceRunner` on the same batch: device copy, autocast, channels_last, copy
back). Prints a Markdown table. Runs on the CPU too (``--device cpu``) as a smoke test.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator

import torch

from mrisr.checkpoint import load_checkpoint, shipped_checkpoint
from mrisr.inference import RunOptions, SliceRunner


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time(fn: Callable[[], torch.Tensor], dev: torch.device, repeat: int) -> float:
    for _ in range(3):
        fn()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / repeat


@contextlib.contextmanager
def _tf32(on: bool) -> Iterator[None]:
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=256)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--arch", default="srcnn", choices=["srcnn", "espcn"])
    a = ap.parse_args()
    dev = torch.device(a.device)
    path = shipped_checkpoint((4, 4, 1), arch=a.arch)
    assert path is not None, "no shipped weights"
    ckpt = load_checkpoint(path)
    model = ckpt.build().to(dev)
    side = a.size // 4 if getattr(model, "input_space", "hr") == "lr" else a.size
    x = torch.rand(a.slices, 1, side, side, generator=torch.Generator().manual_seed(0)).to(dev)
    with torch.inference_mode(), _tf32(False):
        ref = model(x).float()
    rows = []
    modes: list[tuple[str, torch.dtype | None, bool, bool]] = [
        ("fp32", None, False, False),
        ("tf32", None, True, False),
        ("bf16", torch.bfloat16, False, False),
        ("fp16", torch.float16, False, False),
    ]
    for name, dtype, tf32, _ in modes:
        for cl in (False, True):
            if dev.type == "cpu" and dtype is torch.float16:
                continue
            net = model.to(memory_format=torch.channels_last) if cl else model.to(memory_format=torch.contiguous_format)
            xin = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()

            def fwd(
                net: torch.nn.Module = net, xin: torch.Tensor = xin, dtype: torch.dtype | None = dtype
            ) -> torch.Tensor:
                with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                    return net(xin)

            with _tf32(tf32):
                secs = _time(fwd, dev, a.repeat)
                err = float((fwd().float() - ref).abs().max() / ref.abs().max())
            rows.append((f"{name}{' channels_last' if cl else ''}", secs, err))
    if not a.no_compile:
        best = min((r for r in rows if r[2] < 1e-3), key=lambda r: r[1])
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(best[0].split()[0])
        compiled = torch.compile(model)

        def cfwd() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                return compiled(x)

        secs = _time(cfwd, dev, a.repeat)
        rows.append((f"{best[0]} + torch.compile", secs, float((cfwd().float() - ref).abs().max() / ref.abs().max())))
    xc = x.cpu()
    tools = []
    for label, amp in (("default", False), ("--amp", True)):
        runner = SliceRunner(ckpt.build(), RunOptions(device=dev, amp=amp and dev.type == "cuda"))
        out = runner(xc).to(dev).float()
        tools.append((label, _time(lambda runner=runner: runner(xc), dev, a.repeat), out))
    print(f"device: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}; torch {torch.__version__}")
    print(f"\n{a.slices} slices of {a.size}×{a.size} out, shipped {a.arch} ({ckpt.arch['kernel_sizes']})\n")
    print("| mode | ms per batch | slices/s | max rel. error vs fp32 |\n| --- | --- | --- | --- |")
    for name, secs, err in rows:
        print(f"| {name} | {secs * 1e3:.1f} | {a.slices / secs:,.0f} | {err:.1e} |")
    fastest = min((r for r in rows if r[2] < 1e-3), key=lambda r: r[1])
    for label, secs, out in tools:
        err = float((out - ref).abs().max() / ref.abs().max())
        print(f"| mrisr SliceRunner {label} (host↔device) | {secs * 1e3:.1f} | {a.slices / secs:,.0f} | {err:.1e} |")
    for label, secs, _ in tools:
        print(f"\ntool path ({label}) / fastest accurate bare forward ({fastest[0]}): {fastest[1] / secs:.0%}")


if __name__ == "__main__":
    main()
