"""How far two correct first-order samplers drift apart when the network runs in bf16 (as on CUDA): your
DPM-Solver++ step without history against ``md.ddim_sample`` (η = 0), the same arithmetic reordered, the shipped
model under bf16 autocast on the CPU, 300 images, 20 steps. Notebook 06 (cell d02) quotes its figures.

    python benchmarks/bf16_loop_agreement.py [--n 300] [--steps 20]
"""
import argparse
import time

import torch

import minidiff as md

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--n", type=int, default=300, help="images")
parser.add_argument("--steps", type=int, default=20, help="network calls per sampler")
args = parser.parse_args()
model, s, _ = md.load_diffusion("mnist_cond", device="cpu")
class BF16(torch.nn.Module):
    """The model under bf16 autocast on the CPU, as predict_eps runs it on CUDA."""
    def __init__(self, m): super().__init__(); self.m = m; self.target = m.target
    def forward(self, x, t, y=None):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.m(x, t, y).float()
net = BF16(model).eval()
for p in net.parameters(): p.requires_grad_(False)
N = args.n
y = torch.arange(N) % 10
x_T = torch.randn(N, 1, 28, 28, generator=torch.Generator().manual_seed(8))
def loop(x, second):
    pos = md.samplers.ddim_timesteps(s.num_steps, args.steps, "trailing"); x0l = tl = None
    for t, tn in zip(pos, pos[1:] + [-1]):
        _, x0 = md.samplers.predict_eps(net, x, t, s, y)
        x = md.samplers.dpm_solver_step(x, x0, t, tn, s, x0l, tl)
        if second: x0l, tl = x0, t
    return x
t0 = time.time()
with torch.no_grad():
    ours = loop(x_T, False)
    ref = md.ddim_sample(net, s, x_T.shape, steps=args.steps, y=y, x_T=x_T)
d = (ours - ref).abs()
per_img = d.flatten(1).mean(1)
print(f"{time.time()-t0:.0f}s  max {d.max():.3e}  mean {d.mean():.3e}  per-image mean max {per_img.max():.3e}  99.9% pixel {d.flatten().quantile(0.999):.3e}")
print("per-image max:", d.flatten(1).max(1).values.sort(descending=True).values[:10])
