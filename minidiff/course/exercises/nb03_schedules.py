"""Notebook 03's exercises: the cosine schedule of Nichol & Dhariwal (2021), and the rescaling to zero
terminal SNR of Lin et al. (2024), Algorithm 1."""
from __future__ import annotations

import math
import random
from typing import Callable, Optional

import torch
from torch import Tensor

from ... import schedules
from .core import Case, Exercise, Mistake, _first_hint, check, describe, hidden_rng, register

__all__ = ["HINT_COSINE", "HINT_ZERO_TERMINAL_SNR", "check_cosine_schedule",
           "check_zero_terminal_snr"]   # what mc.exercises exports from here


HINT_COSINE = ("ᾱ(u) = cos²((u + s)/(1 + s)·π/2) at the T + 1 points u = k/T, k = 0 … T; then "
               "β_t = 1 − ᾱ(t/T)/ᾱ((t−1)/T) for the steps t = 1 … T (positions 0 … T−1), clipped to at most "
               "max_beta (.clamp(max=max_beta)). Keep the offset s, compute in float64, return T values.")

HINT_ZERO_TERMINAL_SNR = ("With a_t = √ᾱ_t = √(∏_{s≤t}(1 − β_s)) (torch.cumprod, then .sqrt()): "
                          "a'_t = (a_t − a_T)·a_1/(a_1 − a_T), a straight line in a_t through (a_T, 0) and "
                          "(a_1, a_1); then ᾱ'_t = a'_t², β'_1 = 1 − ᾱ'_1 and β'_t = 1 − ᾱ'_t/ᾱ'_{t−1}. In code, "
                          "a[0] is a_1 and a[-1] is a_T; keep copies of both before changing a.")


def _hidden_cosine_settings(rng: random.Random) -> list[tuple[int, dict]]:
    """Drawn (num_steps, keywords): the shortest schedules (T = 1, 2), a low max_beta that clips many steps, and
    another offset s on a short schedule."""
    return [(1, {}), (2, {}), (rng.randint(20, 80), {"max_beta": round(rng.uniform(0.1, 0.3), 2)}),
            (rng.randint(4, 12), {"s": round(rng.uniform(0.05, 0.2), 3)})]


def check_cosine_schedule(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(num_steps, s=0.008, max_beta=0.999) -> betas`` against ``NoiseSchedule.cosine().betas``."""
    settings = (_hidden_cosine_settings(hidden_rng("cosine_schedule")) if hidden else
                [(10, {}), (100, {}), (1000, {}), (100, {"s": 0.02}), (20, {"s": 0.0, "max_beta": 0.5})])
    cases = [Case(describe(num_steps=n, **kwargs), (n,), kwargs) for n, kwargs in settings]
    return check("cosine_schedule", fn, _reference_cosine_betas, cases, _first_hint("cosine_schedule"), hidden=hidden)




def _reference_cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    return schedules.NoiseSchedule.cosine(num_steps, s=s, max_beta=max_beta).betas


def _cosine_with(offset: Optional[float] = None, clip: bool = True, square: bool = True, ratio: bool = True,
                 use_arguments: bool = True) -> Callable:
    def wrong(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
        if not use_arguments:
            s, max_beta = 0.008, 0.999
        s = s if offset is None else offset
        u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** (2 if square else 1)
        betas = 1 - f[1:] / f[:-1] if ratio else 1 - f[1:]
        return betas.clamp(max=max_beta) if clip else betas
    return wrong


def _cosine_u_off_by_one(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """ᾱ_t = f((t − 1)/T)/f(0): the T points u = 0 … (T − 1)/T, so ᾱ_1 = 1 and β_1 = 0."""
    u = torch.arange(num_steps, dtype=torch.float64) / num_steps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])).clamp(max=max_beta)


COSINE_MISTAKES = (
    Mistake("the offset s is missing (the + s and the 1 + s)", _cosine_with(offset=0.0)),
    Mistake("β was not clipped to max_beta (.clamp(max=max_beta))", _cosine_with(clip=False)),
    Mistake("the cosine is not squared: ᾱ(u) = cos²(…)", _cosine_with(square=False)),
    Mistake("β_t = 1 − ᾱ(t/T) leaves out the division: β_t = 1 − ᾱ(t/T)/ᾱ((t−1)/T)", _cosine_with(ratio=False)),
    Mistake("the arguments s and max_beta were ignored (their defaults used instead)",
            _cosine_with(use_arguments=False)),
    Mistake("u is off by one: step t maps to u = t/T; with u = (t − 1)/T, ᾱ_1 = f(0)/f(0) = 1 and the first step "
            "adds no noise at all (β_1 = 0)", _cosine_u_off_by_one),
)


register(
    Exercise("cosine_schedule", "cosine_betas", _reference_cosine_betas, (
        "Define ᾱ directly as a smooth curve falling from 1 to 0 (a squared cosine with a small offset s), "
        "sample it at T + 1 evenly spaced points, read each β_t off the ratio of neighbouring values, and clip "
        "β so the last step is not 1.",
        HINT_COSINE,
        "u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps; f = torch.cos((u + s) / (1 + s) * "
        "math.pi / 2) ** 2; then 1 − f[1:] / f[:-1], clamped to max_beta."),
        COSINE_MISTAKES, ("minidiff.schedules.NoiseSchedule.cosine",)),
)


# -- rescaling to zero terminal SNR (Lin et al. 2024, Algorithm 1) --------------------------------


def _sd_betas(num_steps: int) -> Tensor:
    """Stable Diffusion's "scaled linear" β: √β evenly spaced from √0.00085 to √0.012."""
    return torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, num_steps, dtype=torch.float64) ** 2


def _hidden_zero_snr_settings(rng: random.Random) -> list[tuple[str, int]]:
    """Drawn (kind, T): the shortest schedule (T = 2), a short one, and Stable Diffusion's of another length."""
    settings = [(rng.choice(("linear", "sigmoid")), 2),
                (rng.choice(("linear", "cosine", "sigmoid")), rng.randint(5, 12)),
                ("scaled linear", rng.randint(100, 500))]
    rng.shuffle(settings)
    return settings


def _zero_snr_cases(hidden: bool) -> list[Case]:
    settings = (_hidden_zero_snr_settings(hidden_rng("zero_snr_cases")) if hidden else
                [("linear", 10), ("linear", 1000), ("cosine", 100), ("sigmoid", 50), ("scaled linear", 1000)])
    cases = []
    for kind, num_steps in settings:
        betas = _sd_betas(num_steps) if kind == "scaled linear" else schedules.make_schedule(kind, num_steps).betas
        cases.append(Case(f"betas of the {kind} schedule, T={num_steps}", (betas,)))
    return cases


def check_zero_terminal_snr(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(betas) -> betas`` against ``minidiff.schedules.rescale_zero_terminal_snr`` (Lin et al. 2024)."""
    return check("zero_terminal_snr", fn, schedules.rescale_zero_terminal_snr, _zero_snr_cases(hidden),
                 _first_hint("zero_terminal_snr"), atol=1e-7, rtol=1e-5, hidden=hidden)


def _rescale_with(root: bool = True, scale: bool = True, keep_first: bool = True, first_beta: bool = True,
                  square: bool = True, output: str = "betas") -> Callable:
    def wrong(betas: Tensor) -> Tensor:
        abar = torch.cumprod(1 - betas, dim=0)
        a = abar.sqrt() if root else abar
        first, last = a[0].clone(), a[-1].clone()
        a = a - last
        if scale:
            a = a * (first if keep_first else 1.0) / (first - last)
        abar = a ** 2 if (root and square) else a
        if output == "alphas_cumprod":
            return abar
        ratios = abar[1:] / abar[:-1]
        alphas = torch.cat([abar[:1], ratios]) if first_beta else ratios
        return 1 - alphas
    return wrong


def _last_beta_one(betas: Tensor) -> Tensor:
    return torch.cat([betas[:-1], betas.new_ones(1)])


ZERO_TERMINAL_SNR_MISTAKES = (
    Mistake("ᾱ was shifted and scaled instead of √ᾱ: Algorithm 1 makes √ᾱ_t a straight line in the old √ᾱ_t",
            _rescale_with(root=False)),
    Mistake("√ᾱ was shifted but not scaled (or √ᾱ_1 was read after an in-place shift): multiply by "
            "√ᾱ_1/(√ᾱ_1 − √ᾱ_T), with copies of √ᾱ_1 and √ᾱ_T taken before a changes", _rescale_with(scale=False)),
    Mistake("√ᾱ_1 is not kept: the scale is √ᾱ_1/(√ᾱ_1 − √ᾱ_T), not 1/(√ᾱ_1 − √ᾱ_T), which makes ᾱ_1 = 1 and β_1 = 0",
            _rescale_with(keep_first=False)),
    Mistake("β_1 is missing: the first step's β'_1 = 1 − ᾱ'_1 (with ᾱ'_0 = 1) comes before the ratios",
            _rescale_with(first_beta=False)),
    Mistake("√ᾱ' was not squared back: ᾱ'_t = (√ᾱ'_t)² before taking the ratios", _rescale_with(square=False)),
    Mistake("that is ᾱ'_t; the function returns β'_t = 1 − ᾱ'_t/ᾱ'_{t−1}", _rescale_with(output="alphas_cumprod")),
    Mistake("you set β_T = 1 and left the other steps alone: that does make ᾱ_T = 0, but Algorithm 1 rescales √ᾱ_t "
            "at every step (shifted so that the last is 0, scaled so that the first is unchanged), so every β'_t "
            "changes", _last_beta_one),
)


register(
    Exercise("zero_terminal_snr", "rescale_zero_terminal_snr", schedules.rescale_zero_terminal_snr, (
        "Work with √ᾱ_t, the amplitude of x_0 left after step t: compute it from β, move the whole curve down so "
        "that its last value is exactly 0, stretch it so that its first value is what it was, and turn the new "
        "curve back into β.",
        HINT_ZERO_TERMINAL_SNR,
        "a = torch.cumprod(1 - betas, 0).sqrt(); first, last = a[0].clone(), a[-1].clone(); a = (a - last) * "
        "first / (first - last); abar = a ** 2; then 1 − abar divided by abar shifted one step right with a 1 in "
        "front (torch.cat)."),
        ZERO_TERMINAL_SNR_MISTAKES,
        ("minidiff.schedules.rescale_zero_terminal_snr",
         "minidiff.schedules.NoiseSchedule.rescaled_zero_terminal_snr")),
)
