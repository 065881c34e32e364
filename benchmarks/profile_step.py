"""Where a training step's GPU time goes: the top CUDA kernels of minidiff's U-Net and of diffusers'
UNet2DModel at the same widths (the models of train_throughput.py), bf16, batch 256, 28×28.

    python benchmarks/profile_step.py [--mode compile] [--steps 10] [--top 15] [--only minidiff]

``--mode``: "eager" (bf16 autocast) or "compile" (torch.compile, default mode, no CUDA graphs, so
each kernel shows up by name). Prints, per model, the kernels sorted by total GPU time, the number
of kernel launches per step and the GPU-busy time per step.
"""
from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile
from train_throughput import diffusers_model, make_step, minidiff_model


def profile_model(name: str, build, mode: str, batch: int, steps: int, top: int) -> None:
    torch.manual_seed(0)
    model = build().cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    if mode == "compile":
        model = torch.compile(model)
    step = make_step(model, opt, bf16=True)
    x = torch.randn(batch, 1, 28, 28, device="cuda")
    t = torch.randint(0, 1000, (batch,), device="cuda")
    y = torch.randint(0, 11, (batch,), device="cuda")
    eps = torch.randn_like(x)
    for _ in range(5):                                   # warm-up (and compilation)
        step(x, t, y, eps)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(x, t, y, eps)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_ms = sum(e.device_time for e in kernels) / 1e3 / steps
    print(f"\n== {name}, {mode}: {len(kernels) / steps:.0f} kernels per step, {busy_ms:.2f} ms of GPU time per step "
          f"({batch / busy_ms * 1e3:.0f} img/s if launches cost nothing)")
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=top, max_name_column_width=70))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["eager", "compile"], default="compile")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--only", choices=["minidiff", "diffusers"], default=None)
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name, build in (("minidiff", minidiff_model), ("diffusers", diffusers_model)):
        if args.only in (None, name):
            profile_model(name, build, args.mode, args.batch, args.steps, args.top)


if __name__ == "__main__":
    main()
