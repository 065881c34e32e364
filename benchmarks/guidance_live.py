"""Why notebook 07's live guidance sweep (``default``: n = 30 samples, DDIM 10 steps, on a CPU) puts its lowest
FD / floor at another w than the H200 table (n = 1,000, DDIM 50 steps, where w = 1 is lowest). Two things differ,
and this separates them: the number of samples n (the Fréchet distance's small-sample bias and its draw-to-draw
noise) and the number of sampler steps. For each (n, steps, w) it draws ``--draws`` sets exactly as the notebook's
``draw`` does (labels 0-9 in turn, generator seeds 0, 1, …), and prints FD / floor (the floor: n real training
digits against the held-out ones, as in the notebook) as mean ± std over the draws, with the accuracy.

    python benchmarks/guidance_live.py [--n 30 300] [--steps 10 50] [--scales 1,1.5,2,3] [--draws 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import minidiff as md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[30])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--scales", default="1,1.5,2,3")
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model, s, _ = md.load_diffusion("mnist_cond", device=args.device)
    scales = [float(w) for w in args.scales.split(",")]
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {args.device}, {date}")
    for n in args.n:
        floor = md.frechet_distance(md.mnist("train").images[:n])
        labels = torch.arange(n, device=args.device) % 10
        for steps in args.steps:
            start = time.perf_counter()
            row = []
            for w in scales:
                ratios, accuracies = [], []
                for seed in range(args.draws):
                    with torch.no_grad():
                        x = md.ddim_sample(model, s, (n, 1, 28, 28), steps=steps, y=labels, guidance_scale=w,
                                           generator=torch.Generator(args.device).manual_seed(seed),
                                           progress=False).clamp(-1, 1).cpu()
                    ratios.append(md.frechet_distance(x) / floor)
                    accuracies.append(md.class_accuracy(x, labels.cpu()))
                spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
                row.append(f"w={w:g}: {statistics.mean(ratios):.2f} ± {spread:.2f} "
                           f"[{', '.join(f'{r:.2f}' for r in ratios)}] acc {statistics.mean(accuracies):.0%}")
            seconds = time.perf_counter() - start
            print(f"n = {n}, floor FD {floor:.2f}, DDIM {steps} steps ({seconds:.0f} s):", flush=True)
            for line in row:
                print("   ", line, flush=True)


if __name__ == "__main__":
    main()
