"""Notebook 01's exercise: one step of the forward process, x_t ~ q(x_t | x_{t−1})."""
from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

from ... import diffusion, schedules
from .core import (_ABAR, _ALPHA, _BETA, IMAGE_TOLERANCE, Exercise, Mistake, _at,
                   _first_hint, _flat, check, image_cases, register)

__all__ = ["HINT_Q_STEP", "check_q_step"]   # what md.exercises exports from here


HINT_Q_STEP = ("x_t = √α_t·x_prev + √β_t·noise with α_t = 1 − β_t = s.alphas[t] and β_t = s.betas[t] (step t's"
               " own α_t, not ᾱ_t = s.alphas_cumprod[t]). Use the noise you are given; for t of shape (B,) each"
               " image needs its own coefficient: md.extract(s.betas, t, x_prev) gives β_t shaped (B, 1, 1, 1),"
               " in x_prev's dtype.")


def check_q_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_prev, t, s, noise) -> x_t``, one forward step, against ``minidiff.q_step``."""
    cases = image_cases(("x_prev", "t", "schedule", "noise"), hidden)
    return check("q_step", fn, diffusion.q_step, cases, _first_hint("q_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _q_step_with(alpha: Callable, beta: Callable, swap: bool = False, roots: bool = True) -> Callable:
    def wrong(x_prev: Tensor, t: Any, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        a, b = alpha(s, t, x_prev), beta(s, t, x_prev)
        a, b = (a.sqrt(), b.sqrt()) if roots else (a, b)
        return b * x_prev + a * noise if swap else a * x_prev + b * noise
    return wrong


Q_STEP_MISTAKES = (
    Mistake("you used s.alphas_cumprod[t] (ᾱ_t, the whole way from x_0) where one step needs α_t = s.alphas[t]",
            _q_step_with(_ABAR, _BETA)),
    Mistake("you wrote the closed-form jump from x_0 (ᾱ_t and 1 − ᾱ_t); one step uses step t's own α_t and β_t",
            _q_step_with(_ABAR, lambda s, t, x: 1 - _at(s.alphas_cumprod, t, x))),
    Mistake("the square roots are missing: the coefficients are √α_t and √β_t", _q_step_with(_ALPHA, _BETA, roots=False)),
    Mistake("the coefficients are swapped: x_prev takes √α_t and the noise √β_t", _q_step_with(_ALPHA, _BETA, swap=True)),
    Mistake("you indexed at t − 1: t is 0-indexed, so step t's β is s.betas[t]",
            _q_step_with(lambda s, t, x: _at(s.alphas, t - 1, x), lambda s, t, x: _at(s.betas, t - 1, x))),
    Mistake("the coefficient was not shaped per image: s.betas[t] has shape (B,) and lines up with the images' "
            "columns; md.extract(s.betas, t, x_prev) gives it shape (B, 1, 1, 1)",
            _q_step_with(lambda s, t, x: _flat(s.alphas, t, x), lambda s, t, x: _flat(s.betas, t, x))),
)


register(
    Exercise("q_step", "q_step", diffusion.q_step, (
        "One forward step keeps most of the previous image and adds a little of the noise you are given; both "
        "amounts come from step t's own β_t (not a product over steps), as square roots so that variances add up.",
        HINT_Q_STEP,
        "beta_t = md.extract(s.betas, t, x_prev); then (1 − beta_t).sqrt() multiplies x_prev and beta_t.sqrt() "
        "multiplies noise."),
        Q_STEP_MISTAKES, ("minidiff.diffusion.q_step",), per_image_t=True),
)
