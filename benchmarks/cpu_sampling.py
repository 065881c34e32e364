"""A learner's laptop: how long the shipped model takes to draw 64 digits with 20 deterministic
(DDIM, eta = 0) steps on the CPU.

    python benchmarks/cpu_sampling.py [--n 64] [--steps 20] [--threads N] [--repeats 3]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

import minidiff as md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, schedule, _ = md.load_diffusion("mnist_cond", device="cpu")      # the model knows its target (v)
    labels = torch.arange(args.n) % 10
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.no_grad():
            x = md.ddim_sample(model, schedule, (args.n, 1, 28, 28), steps=args.steps, y=labels,
                               generator=torch.Generator().manual_seed(0))
        times.append(time.perf_counter() - start)
    accuracy = md.class_accuracy(x.clamp(-1, 1), labels)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}: {args.n} samples × {args.steps} DDIM steps: best {min(times):.2f} s, "
          f"median {sorted(times)[len(times) // 2]:.2f} s over {args.repeats} runs; "
          f"classified as their label: {accuracy:.0%}")


if __name__ == "__main__":
    main()
