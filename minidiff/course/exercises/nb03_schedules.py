"""Notebook 03's exercise: the cosine schedule of Nichol & Dhariwal (2021)."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from ... import schedules
from .core import (Case, Exercise, Mistake, _first_hint, check, describe, register)

__all__ = ["HINT_COSINE", "check_cosine_schedule"]   # what md.exercises exports from here


HINT_COSINE = ("ᾱ(u) = cos²((u + s)/(1 + s)·π/2) at the T + 1 points u = t/T, t = 0 … T; then "
               "β_t = 1 − ᾱ((t+1)/T)/ᾱ(t/T) for t = 0 … T−1, clipped to at most max_beta "
               "(.clamp(max=max_beta)). Keep the offset s, compute in float64, return T values.")


def check_cosine_schedule(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(num_steps, s=0.008, max_beta=0.999) -> betas`` against ``NoiseSchedule.cosine().betas``."""
    settings = ([(1, {}), (2, {}), (50, {"max_beta": 0.2}), (7, {"s": 0.1})] if hidden else
                [(10, {}), (100, {}), (1000, {}), (100, {"s": 0.02}), (20, {"s": 0.0, "max_beta": 0.5})])
    cases = [Case(describe(num_steps=n, **kwargs), (n,), kwargs) for n, kwargs in settings]
    return check("cosine_schedule", fn, _reference_cosine_betas, cases, _first_hint("cosine_schedule"), hidden=hidden)


_cosine = schedules.NoiseSchedule.cosine        # bound here: the check blocks NoiseSchedule.cosine itself


def _reference_cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    return _cosine(num_steps, s=s, max_beta=max_beta).betas


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


COSINE_MISTAKES = (
    Mistake("the offset s is missing (the + s and the 1 + s)", _cosine_with(offset=0.0)),
    Mistake("β was not clipped to max_beta (.clamp(max=max_beta))", _cosine_with(clip=False)),
    Mistake("the cosine is not squared: ᾱ(u) = cos²(…)", _cosine_with(square=False)),
    Mistake("β_t = 1 − ᾱ((t+1)/T) leaves out the division: β_t = 1 − ᾱ((t+1)/T)/ᾱ(t/T)", _cosine_with(ratio=False)),
    Mistake("the arguments s and max_beta were ignored (their defaults used instead)", _cosine_with(use_arguments=False)),
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
