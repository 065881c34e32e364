"""Training throughput (images/s) of minidiff's U-Net against diffusers' UNet2DModel at the same
widths, levels and attention, batch 256, 28×28, one GPU: eager fp32, bf16 autocast, bf16 with the
forward and backward recorded as CUDA graphs (no compilation), bf16 + torch.compile, and bf16 +
torch.compile with CUDA graphs (mode reduce-overhead), and optionally bf16 + torch.compile mode
max-autotune (Triton kernels tuned for these shapes, with CUDA graphs; compiling takes minutes).

    python benchmarks/train_throughput.py [--batch 256] [--iters 50] [--only minidiff] [--channels-last]
        [--cudnn-benchmark]

Each configuration runs the same step: ε-prediction loss on random digits-shaped data, backward,
fused AdamW. Prints images/s, the model FLOPs per image (forward + backward, counted by
torch.utils.flop_counter) and MFU against the GPU's dense bf16 peak. Ends with two ratios: our best
against the peer's best of the three configurations issue 4 names (eager fp32, bf16, bf16 + compile),
and against the peer's best of every mode that ran (CUDA graphs included).
"""
from __future__ import annotations

import argparse
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import minidiff as md

# torch.compile's mode for each of our modes that compiles, and every mode
COMPILE_MODES = {"compile": None, "compile-cudagraphs": "reduce-overhead", "compile-max-autotune": "max-autotune"}
MODES = ("fp32", "bf16", "cuda-graph", *COMPILE_MODES)
NAMED_PEER_MODES = ("fp32", "bf16", "compile")       # the peer's configurations that issue 4 names
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}          # dense bf16 tensor-core peak, SXM parts


def minidiff_model() -> torch.nn.Module:
    cfg = md.UNetConfig(image_size=28, base_channels=64, channel_mults=(1, 2, 2), blocks_per_level=2,
                        attention_resolutions=(14, 7), dropout=0.0, num_classes=10)
    return md.UNet(cfg)


def diffusers_model() -> torch.nn.Module:
    from diffusers import UNet2DModel
    return UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(64, 128, 128),
                       layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), num_class_embeds=11,
                       attention_head_dim=32)


def forward(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x, t, y)
    return out.sample if hasattr(out, "sample") else out


class TensorOut(torch.nn.Module):
    """The model with a plain tensor output (diffusers returns a dataclass), as CUDA graphs need."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model

    def forward(self, x, t, y):
        return forward(self.inner, x, t, y)


def make_step(model, opt, bf16: bool, cache_casts: bool = True):
    def step(x, t, y, eps):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=cache_casts):
            loss = F.mse_loss(forward(model, x, t, y).float(), eps)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    return step


def flops_per_image(model, batch: int = 8) -> float:
    x = torch.randn(batch, 1, 28, 28, device="cuda")
    t, y = torch.randint(0, 1000, (batch,), device="cuda"), torch.randint(0, 10, (batch,), device="cuda")
    with FlopCounterMode(display=False) as counter:
        forward(model, x, t, y).float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def measure(name: str, build, mode: str, batch: int, iters: int, channels_last: bool = False) -> dict:
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build().cuda().train().to(memory_format=layout)
    flops = flops_per_image(model)
    x = torch.randn(batch, 1, 28, 28, device="cuda").contiguous(memory_format=layout)
    t = torch.randint(0, 1000, (batch,), device="cuda")
    y = torch.randint(0, 11, (batch,), device="cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    if mode in COMPILE_MODES:
        model = torch.compile(model, mode=COMPILE_MODES[mode])
    if mode == "cuda-graph":              # eager kernels, recorded once (torch.cuda.make_graphed_callables)
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            model = torch.cuda.make_graphed_callables(TensorOut(model), (x, t, y))
    step = make_step(model, opt, bf16=mode != "fp32", cache_casts=mode != "cuda-graph")
    eps = torch.randn_like(x)
    for _ in range(10):                                  # warm-up (and compilation)
        step(x, t, y, eps)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step(x, t, y, eps)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    ips = batch * iters / seconds
    params = sum(p.numel() for p in build().parameters())
    return {"model": name, "mode": mode + (" NHWC" if channels_last else ""), "params": params, "img_per_s": ips,
            "gflop_per_img": flops / 1e9, "tflops": ips * flops / 1e12}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--modes", default="fp32,bf16,cuda-graph,compile,compile-cudagraphs",
                        help=f"comma-separated, among {', '.join(MODES)}")
    parser.add_argument("--only", choices=["minidiff", "diffusers"], default=None)
    parser.add_argument("--channels-last", action="store_true", help="weights and images in NHWC layout")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time its convolution algorithms for these shapes first (both models)")
    args = parser.parse_args()
    unknown = sorted(set(args.modes.split(",")) - set(MODES))
    if unknown:
        parser.error(f"--modes must be among {list(MODES)}; got {unknown}")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    gpu = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in gpu), 989e12)
    print(f"{gpu}, torch {torch.__version__}, batch {args.batch}, 28×28, dense bf16 peak {peak / 1e12:.0f} TFLOP/s, "
          f"channels_last={args.channels_last}, cudnn.benchmark={args.cudnn_benchmark}")
    models = {"minidiff": minidiff_model, "diffusers": diffusers_model}
    results = []
    for name, build in models.items():
        if args.only and name != args.only:
            continue
        for mode in args.modes.split(","):
            r = measure(name, build, mode, args.batch, args.iters, args.channels_last)
            results.append(r)
            print(f"{r['model']:9s} {r['mode']:18s} {r['params'] / 1e6:5.2f}M params  {r['img_per_s']:8.0f} img/s  "
                  f"{r['gflop_per_img']:5.2f} GFLOP/img  {r['tflops']:6.1f} TFLOP/s  "
                  f"MFU {100 * r['tflops'] * 1e12 / peak:4.1f}%", flush=True)
    for label, peer_modes in (("the three named by issue 4 (eager fp32, bf16, bf16 + compile)", NAMED_PEER_MODES),
                              ("all it ran", MODES)):
        ours, peer = best(results, "minidiff", MODES), best(results, "diffusers", peer_modes)
        if ours and peer:
            print(f"best minidiff / best diffusers of {label}: {ours['img_per_s']:.0f} ({ours['mode']}) / "
                  f"{peer['img_per_s']:.0f} ({peer['mode']}) = {ours['img_per_s'] / peer['img_per_s']:.2f}×")


def best(results: list[dict], model: str, modes: tuple[str, ...]) -> Optional[dict]:
    """The fastest of ``model``'s results in ``modes`` (either layout), or None if none ran."""
    rows = [r for r in results if r["model"] == model and r["mode"].removesuffix(" NHWC") in modes]
    return max(rows, key=lambda r: r["img_per_s"], default=None)


if __name__ == "__main__":
    main()
