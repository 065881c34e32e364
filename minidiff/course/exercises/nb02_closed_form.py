"""Notebook 02's exercises: ᾱ_t, the closed-form jump q(x_t | x_0) and the posterior mean μ̃_t."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ... import diffusion, schedules
from .core import (_ABAR, _ALPHA, _BETA, IMAGE_TOLERANCE, Case, Exercise, Mistake, _at,
                   _first_hint, _flat, check, image_cases, register)

__all__ = ["HINT_ALPHAS_CUMPROD", "HINT_POSTERIOR_MEAN", "HINT_Q_SAMPLE", "check_alphas_cumprod", "check_posterior_mean", "check_q_sample"]   # what md.exercises exports from here


def _schedule_betas_cases(hidden: bool = False) -> list[Case]:
    """β tables of several schedules and lengths, plus a tiny hand-made one."""
    if hidden:
        tables = [schedules.NoiseSchedule.linear(1), schedules.NoiseSchedule.cosine(2),
                  schedules.NoiseSchedule.cosine(1000), schedules.NoiseSchedule.sigmoid(7)]
        hand_made = torch.tensor([0.9, 0.01, 0.3, 0.999], dtype=torch.float64)
    else:
        tables = [schedules.NoiseSchedule.linear(10), schedules.NoiseSchedule.cosine(10),
                  schedules.NoiseSchedule.linear(1000), schedules.NoiseSchedule.sigmoid(20)]
        hand_made = torch.tensor([0.5, 0.25, 0.1], dtype=torch.float64)
    cases = [Case(f"betas of the {s.name} schedule, T={s.num_steps} (float64)", (s.betas,))
             for s in tables]
    return cases + [Case(f"betas={hand_made!r}", (hand_made,))]


HINT_ALPHAS_CUMPROD = ("ᾱ_t = ∏_{s≤t} (1 − β_s): a running *product* (torch.cumprod(..., dim=0)) of"
                       " α = 1 − β, including step t itself, so ᾱ_0 = 1 − β_0. Return one value per β,"
                       " in float64.")

HINT_Q_SAMPLE = ("x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·noise with ᾱ_t = s.alphas_cumprod[t] (the running product,"
                 " not α_t = s.alphas[t]) at exactly t (0-indexed: no t − 1 or t + 1). Use the noise you are given;"
                 " for t of shape (B,) use md.extract(s.alphas_cumprod, t, x0), which gives ᾱ_t shaped"
                 " (B, 1, 1, 1) in x0's dtype.")

HINT_POSTERIOR_MEAN = ("μ̃_t = √ᾱ_{t−1}·β_t/(1 − ᾱ_t)·x0 + √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)·x_t — x0 takes"
                       " the β_t coefficient, x_t the √α_t one. ᾱ_{t−1} is s.alphas_cumprod_prev[t],"
                       " which is 1 at t = 0 (s.alphas_cumprod[t − 1] wraps around to the last entry there);"
                       " ᾱ_t = s.alphas_cumprod[t], β_t = s.betas[t], α_t = s.alphas[t].")


def check_alphas_cumprod(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(betas) -> alphas_cumprod`` (1-D float64, same length) against ``cumprod(1 - betas)``."""
    return check("alphas_cumprod", fn, _reference_alphas_cumprod, _schedule_betas_cases(hidden),
                 _first_hint("alphas_cumprod"), hidden=hidden)


def _reference_alphas_cumprod(betas: Tensor) -> Tensor:
    return torch.cumprod(1.0 - betas, dim=0)


def check_q_sample(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x0, t, s, noise) -> x_t``, the closed-form jump, against ``minidiff.q_sample``."""
    cases = image_cases(("x0", "t", "schedule", "noise"), hidden)
    return check("q_sample", fn, diffusion.q_sample, cases, _first_hint("q_sample"), **IMAGE_TOLERANCE,
                 hidden=hidden)


def check_posterior_mean(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x0, x_t, t, s) -> mean of q(x_{t−1} | x_t, x_0)`` against ``minidiff.q_posterior``."""
    cases = image_cases(("x0", "x_t", "t", "schedule"), hidden)
    return check("posterior_mean", fn, _reference_posterior_mean, cases, _first_hint("posterior_mean"),
                 **IMAGE_TOLERANCE, hidden=hidden)


_q_posterior = diffusion.q_posterior            # bound here: the check blocks diffusion.q_posterior itself


def _reference_posterior_mean(x0: Tensor, x_t: Tensor, t: schedules.Timesteps,
                              s: schedules.NoiseSchedule) -> Tensor:
    return _q_posterior(x0, x_t, t, s)[0]


def _q_sample_with(abar: Callable, x0_coef: Callable = torch.sqrt,
                   noise_coef: Callable = lambda a: (1 - a).sqrt()) -> Callable:
    """q_sample with ᾱ_t read by ``abar(s, t, x0)`` and the two coefficients made from it."""
    def wrong(x0: Tensor, t: Any, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        a = abar(s, t, x0)
        return x0_coef(a) * x0 + noise_coef(a) * noise
    return wrong


Q_SAMPLE_MISTAKES = (
    Mistake("you used s.alphas[t] (α_t, one step) where the jump needs ᾱ_t = s.alphas_cumprod[t], the running "
            "product", _q_sample_with(lambda s, t, x: _at(s.alphas, t, x))),
    Mistake("the square roots are missing: the coefficients are √ᾱ_t and √(1 − ᾱ_t), not ᾱ_t and 1 − ᾱ_t",
            _q_sample_with(_ABAR, lambda a: a, lambda a: 1 - a)),
    Mistake("the noise term is missing: add √(1 − ᾱ_t)·noise", _q_sample_with(_ABAR, noise_coef=lambda a: 0 * a)),
    Mistake("x0's coefficient lacks its square root: it is √ᾱ_t", _q_sample_with(_ABAR, lambda a: a)),
    Mistake("the noise's coefficient lacks its square root: it is √(1 − ᾱ_t)",
            _q_sample_with(_ABAR, noise_coef=lambda a: 1 - a)),
    Mistake("you wrote 1 − √ᾱ_t for the noise's coefficient; it is √(1 − ᾱ_t)",
            _q_sample_with(_ABAR, noise_coef=lambda a: 1 - a.sqrt())),
    Mistake("the coefficients are swapped: x0 takes √ᾱ_t and the noise √(1 − ᾱ_t)",
            _q_sample_with(_ABAR, lambda a: (1 - a).sqrt(), lambda a: a.sqrt())),
    Mistake("you indexed at t − 1: t is 0-indexed, so ᾱ_t is s.alphas_cumprod[t] itself (at t = 0, t − 1 wraps "
            "around to the last step)", _q_sample_with(lambda s, t, x: _at(s.alphas_cumprod, t - 1, x))),
    Mistake("you indexed at t + 1: t is 0-indexed, so ᾱ_t is s.alphas_cumprod[t] itself",
            _q_sample_with(lambda s, t, x: _at(s.alphas_cumprod, t + 1, x))),
    Mistake("the coefficient was not shaped per image: s.alphas_cumprod[t] has shape (B,) and lines up with the "
            "images' columns; md.extract(s.alphas_cumprod, t, x0) gives it shape (B, 1, 1, 1)",
            _q_sample_with(lambda s, t, x: _flat(s.alphas_cumprod, t, x))),
)


ALPHAS_CUMPROD_MISTAKES = (
    Mistake("you added (a running sum, torch.cumsum); ᾱ is a running product, torch.cumprod",
            lambda betas: torch.cumsum(1 - betas, dim=0)),
    Mistake("you multiplied the β's themselves; ᾱ multiplies α = 1 − β", lambda betas: torch.cumprod(betas, dim=0)),
    Mistake("your product leaves out step t itself (that is alphas_cumprod_prev); ᾱ_t includes α_t, so ᾱ_0 = 1 − β_0",
            lambda betas: torch.cat([betas.new_ones(1), torch.cumprod(1 - betas, dim=0)[:-1]])),
    Mistake("you returned 1 − ᾱ", lambda betas: 1 - torch.cumprod(1 - betas, dim=0)),
)


def _posterior_with(abar_prev: Callable = lambda s, t, x: _at(s.alphas_cumprod_prev, t, x),
                    alpha: Callable = _ALPHA, swap: bool = False, root_prev: bool = True,
                    divide: bool = True) -> Callable:
    def wrong(x0: Tensor, x_t: Tensor, t: Any, s: schedules.NoiseSchedule) -> Tensor:
        abar, prev, beta, a = _ABAR(s, t, x0), abar_prev(s, t, x0), _BETA(s, t, x0), alpha(s, t, x0)
        denominator = (1 - abar) if divide else 1
        c0 = (prev.sqrt() if root_prev else prev) * beta / denominator
        ct = a.sqrt() * (1 - prev) / denominator
        return ct * x0 + c0 * x_t if swap else c0 * x0 + ct * x_t
    return wrong


POSTERIOR_MEAN_MISTAKES = (
    Mistake("the coefficients are swapped: x0 takes the one with β_t, x_t the one with √α_t", _posterior_with(swap=True)),
    Mistake("you used s.alphas_cumprod[t − 1] for ᾱ_{t−1}: at t = 0 it wraps around to the last step; "
            "s.alphas_cumprod_prev[t] is 1 there", _posterior_with(lambda s, t, x: _at(s.alphas_cumprod, t - 1, x))),
    Mistake("you used ᾱ_t = s.alphas_cumprod[t] where the formula needs ᾱ_{t−1} = s.alphas_cumprod_prev[t]",
            _posterior_with(_ABAR)),
    Mistake("x_t's coefficient has √ᾱ_t where it is √α_t = s.alphas[t].sqrt()", _posterior_with(alpha=_ABAR)),
    Mistake("x0's coefficient lacks the square root of ᾱ_{t−1}", _posterior_with(root_prev=False)),
    Mistake("the division by 1 − ᾱ_t is missing (both coefficients have it)", _posterior_with(divide=False)),
)


register(
    Exercise("alphas_cumprod", "alphas_cumprod", _reference_alphas_cumprod, (
        "ᾱ_t is the share of the clean image's variance left after steps 0 … t: each step keeps α = 1 − β of "
        "it, so ᾱ accumulates those factors — a running product, not a sum — including step t itself.",
        HINT_ALPHAS_CUMPROD,
        "One line: torch.cumprod over 1 − betas along dim 0; no loop, and keep betas' float64."),
        ALPHAS_CUMPROD_MISTAKES),
    Exercise("q_sample", "q_sample", diffusion.q_sample, (
        "Jump from x0 to step t in one go: scale x0 by the square root of the signal left after step t (the "
        "running product ᾱ_t, not one step's α_t) and the noise you are given by the square root of the rest.",
        HINT_Q_SAMPLE,
        "abar_t = md.extract(s.alphas_cumprod, t, x0); then abar_t.sqrt() multiplies x0 and (1 − abar_t).sqrt() "
        "multiplies noise."),
        Q_SAMPLE_MISTAKES, ("minidiff.diffusion.q_sample",), per_image_t=True),
    Exercise("posterior_mean", "posterior_mean", _reference_posterior_mean, (
        "Knowing both ends, the step back is a weighted mix of x0 and x_t: x0 weighted by the noise step t "
        "added (β_t), x_t by the signal step t kept (√α_t); both weights use ᾱ_{t−1}, the product up to the step "
        "before, which is 1 at t = 0.",
        HINT_POSTERIOR_MEAN,
        "abar_t = md.extract(s.alphas_cumprod, t, x0), abar_prev = md.extract(s.alphas_cumprod_prev, t, x0), "
        "beta_t and alpha_t likewise from s.betas and s.alphas; return (abar_prev.sqrt() * beta_t * x0 + "
        "alpha_t.sqrt() * (1 − abar_prev) * x_t) / (1 − abar_t)."),
        POSTERIOR_MEAN_MISTAKES, ("minidiff.diffusion.q_posterior",), per_image_t=True),
)
