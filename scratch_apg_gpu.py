"""Scratch (not committed): APG and each fix's overshoot at the H200 table's protocol; FD's dependence on n and steps."""
import sys, time, argparse, warnings
sys.path.insert(0, "benchmarks")
import torch
import minidiff as md
import guidance_sweep as gs
from minidiff.guidance import ClassifierFree, Interval, Rescaled, Thresholded, Projected

dev = "cuda"
model, s, _ = md.load_diffusion("mnist_cond", device=dev)
real_div = md.metrics.within_class_diversity(*md.metrics.reference_images())
print(torch.cuda.get_device_name(), flush=True)
i_low, i_high = gs.sigma_interval(s, 0.28, 5.42)

class Overshoot:
    def __init__(self, g): self.g, self.v = g, []
    def __call__(self, c, u, i, x):
        out = self.g(c, u, i, x)
        x0 = md.eps_and_x0(out.float(), x.float(), i, s, model.target)[1]
        self.v.append((x0.abs() - 1).clamp(min=0).mean().item())
        return out

def fixes(w):
    return {"plain": ClassifierFree(w), "static clip": Thresholded(w, s, model.target, None),
            "dynamic": Thresholded(w, s, model.target), "rescaled": Rescaled(w, 0.7),
            "APG eta0 b-0.5": Projected(w, s, model.target, eta=0.0, momentum=-0.5),
            "APG eta0": Projected(w, s, model.target, eta=0.0),
            "interval": Interval(w, i_low, i_high)}

def run(name, g, n, steps, draws):
    args = argparse.Namespace(model="mnist_cond", n=n, draws=draws, sampler="ddim", steps=steps)
    rec = Overshoot(g)
    t0 = time.perf_counter()
    r = gs.measure(model, s, rec, args, real_div)
    print(f"{name:16s} n={n:5d} steps={steps:3d} draws={draws} FD/floor {r['fd_ratio']:7.2f} acc {r['accuracy']:6.1%} "
          f"div {r['diversity']:5.2f} overshoot {sum(rec.v)/len(rec.v):.4f}  ({time.perf_counter()-t0:.0f}s)", flush=True)

part = sys.argv[1]
if part == "fixes":
    for w in [1.5, 2.0, 3.0, 5.0, 8.0]:
        for name, g in fixes(w).items():
            run(f"{name} w={w:g}", g, 1000, 50, 3)
else:
    for w in [1.0, 1.5, 2.0, 3.0]:
        run(f"plain w={w:g}", ClassifierFree(w), 1000, 10, 3)
    for w in [1.0, 1.5, 2.0, 3.0]:
        run(f"plain w={w:g}", ClassifierFree(w), 30, 50, 10)
