"""What the step functions cost beyond their equation: ``md.ddim_step``, ``md.ddpm_step`` and
``md.dpm_solver_step`` against the bare update written inline (the same tensor arithmetic, its scalars
read straight from the schedule's tables), on the CPU, batch 16×1×28×28 (issue 36: within 1.5×).

    python benchmarks/step_overhead.py [--batch 16] [--calls 2000] [--threads 1] [--repeats 5]
"""
from __future__ import annotations

import argparse
import math
import platform
import time
from typing import Callable

import torch

import minidiff as md


def per_call_us(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """The best, over ``repeats`` runs, of the mean time of one call in µs."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def bare_ddim(x_t, eps, t, t_prev, abar):
    """x_j = √ᾱ_j x̂_0 + √(1 − ᾱ_j) ε̂, x̂_0 = (x_k − √(1 − ᾱ_k) ε̂)/√ᾱ_k (η = 0), ᾱ from a Python list."""
    a_t, a_prev = abar[t + 1], abar[t_prev + 1]
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    return math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps


def bare_ddpm(x_t, eps, t, betas, abar, noise):
    """x_{k−1} = (x_k − β_k/√(1 − ᾱ_k) ε̂)/√α_k + √β_k z."""
    beta, a_t = betas[t], abar[t + 1]
    return (x_t - beta / math.sqrt(1 - a_t) * eps) / math.sqrt(1 - beta) + math.sqrt(beta) * noise


def bare_dpm(x_t, x0, x0_last, t, t_next, t_last, lam, abar):
    """x_j = σ_j/σ_k x_k − α_j (e^{−h} − 1) D, D = (1 + 1/2r) x̂_0 − 1/2r x̂_0^last."""
    h = lam[t_next] - lam[t]
    r = (lam[t] - lam[t_last]) / h
    d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_last
    sigma = lambda k: math.sqrt(1 - abar[k + 1])
    return sigma(t_next) / sigma(t) * x_t - math.sqrt(abar[t_next + 1]) * math.expm1(-h) * d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = md.NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x_t, eps, x0, x0_last, noise = torch.randn(5, args.batch, 1, 28, 28, generator=g).unbind(0)
    abar = [1.0] + s.alphas_cumprod.tolist()
    betas, lam = s.betas.tolist(), (0.5 * s.log_snr).tolist()
    rows = [
        ("ddim_step", lambda: md.ddim_step(x_t, eps, 500, 450, s), lambda: bare_ddim(x_t, eps, 500, 450, abar)),
        ("ddpm_step", lambda: md.ddpm_step(x_t, eps, 500, s, noise=noise),
         lambda: bare_ddpm(x_t, eps, 500, betas, abar, noise)),
        ("dpm_solver_step", lambda: md.dpm_solver_step(x_t, x0, 500, 450, s, x0_last, 550),
         lambda: bare_dpm(x_t, x0, x0_last, 500, 450, 550, lam, abar)),
    ]
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
          f"torch {torch.__version__}, batch {args.batch}×1×28×28, best of {args.repeats} × {args.calls} calls")
    for name, ours, bare in rows:
        torch.testing.assert_close(ours(), bare())          # the same update, or the figure means nothing
        t_ours, t_bare = per_call_us(ours, args.calls, args.repeats), per_call_us(bare, args.calls, args.repeats)
        print(f"{name:>16}: {t_ours:7.1f} µs per call, bare formula {t_bare:6.1f} µs: {t_ours / t_bare:.2f}×")


if __name__ == "__main__":
    main()
