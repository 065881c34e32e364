"""How far two correct first-order samplers drift apart when the network runs in bf16 (as on CUDA): the
DPM-Solver++ step without history (notebook 06's exercise) against ``md.ddim_sample`` (η = 0), the same
arithmetic in a different order. The shipped model under bf16 autocast on the CPU, 300 images, 20 steps.
Notebook 06 (cell d02) quotes its figures.

    python benchmarks/bf16_loop_agreement.py [--n 300] [--steps 20]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

import minidiff as md


class InBF16(nn.Module):
    """The model under bf16 autocast on the CPU, as ``predict_eps(..., dtype=torch.bfloat16)`` runs it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.target = model, model.target

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x, t, y).float()


def first_order_loop(net: nn.Module, s: md.NoiseSchedule, x_T: Tensor, y: Tensor, steps: int) -> Tensor:
    """DPM-Solver++ with no history, x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'}(e^{−h} − 1) x̂_0: DDIM (η = 0) reordered."""
    positions = md.samplers.ddim_timesteps(s.num_steps, steps, "trailing")
    x = x_T
    for t, t_next in zip(positions, positions[1:] + [-1]):
        _, x0 = md.samplers.predict_eps(net, x, t, s, y)
        x = md.samplers.dpm_solver_step(x, x0, t, t_next, s)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="images")
    parser.add_argument("--steps", type=int, default=20, help="network calls per sampler")
    args = parser.parse_args()
    model, s, _ = md.load_diffusion("mnist_cond", device="cpu")
    net = InBF16(model).eval().requires_grad_(False)
    y = torch.arange(args.n) % 10
    x_T = torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(8))
    start = time.perf_counter()
    with torch.no_grad():
        ours = first_order_loop(net, s, x_T, y, args.steps)
        ddim = md.ddim_sample(net, s, x_T.shape, steps=args.steps, y=y, x_T=x_T)
    gap = (ours - ddim).abs().flatten(1)                   # |ours − DDIM| per image, per pixel
    print(f"{args.n} images, {args.steps} steps, {time.perf_counter() - start:.0f} s: largest pixel difference "
          f"{gap.max():.3e}, mean {gap.mean():.3e}, largest mean of one image {gap.mean(1).max():.3e}, "
          f"99.9th percentile pixel {gap.flatten().quantile(0.999):.3e}")
    print("largest pixel difference of the ten worst images:",
          [round(v, 4) for v in gap.max(1).values.sort(descending=True).values[:10].tolist()])


if __name__ == "__main__":
    main()
