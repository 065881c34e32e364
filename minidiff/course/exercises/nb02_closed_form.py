"""Notebook 02's exercises: ᾱ_t, the closed-form jump q(x_t | x_0), the posterior mean μ̃_t, and the
conversions between a prediction of ε, x_0 or v."""
from __future__ import annotations

import random
from typing import Any, Callable

import torch
from torch import Tensor

from ... import diffusion, schedules
from .core import (
    _ABAR,
    _ALPHA,
    _BETA,
    IMAGE_TOLERANCE,
    Case,
    Exercise,
    Mistake,
    _at,
    _first_hint,
    _flat,
    check,
    describe,
    hidden_rng,
    image_cases,
    register,
)

__all__ = ["HINT_ALPHAS_CUMPROD", "HINT_CONVERT_PREDICTION", "HINT_POSTERIOR_MEAN", "HINT_Q_SAMPLE",
           "check_alphas_cumprod", "check_convert_prediction", "check_posterior_mean",
           "check_q_sample"]   # what mc.exercises exports from here


def _schedule_betas_cases(hidden: bool = False) -> list[Case]:
    """β tables of several schedules and lengths, plus a tiny hand-made one (hidden: drawn, ``_hidden_tables``)."""
    if hidden:
        tables, hand_made = _hidden_tables(hidden_rng("schedule_betas_cases"))
    else:
        tables = [schedules.NoiseSchedule.linear(10), schedules.NoiseSchedule.cosine(10),
                  schedules.NoiseSchedule.linear(1000), schedules.NoiseSchedule.sigmoid(20)]
        hand_made = torch.tensor([0.5, 0.25, 0.1], dtype=torch.float64)
    cases = [Case(f"betas of the {s.name} schedule, T={s.num_steps} (float64)", (s.betas,))
             for s in tables]
    return cases + [Case(f"betas={hand_made!r}", (hand_made,))]


def _hidden_tables(rng: random.Random) -> tuple[list[schedules.NoiseSchedule], Tensor]:
    """Drawn: schedules of length 1 and 2 (the shortest), 1000, and a short one; a hand-made β with one near 1."""
    kind = lambda: rng.choice(("linear", "cosine", "sigmoid"))
    tables = [schedules.make_schedule(kind(), n) for n in (1, 2, 1000, rng.randint(3, 9))]
    betas = [0.999, *(round(rng.uniform(0.001, 0.95), 3) for _ in range(rng.randint(2, 5)))]
    rng.shuffle(betas)
    return tables, torch.tensor(betas, dtype=torch.float64)


HINT_ALPHAS_CUMPROD = ("ᾱ_t = ∏_{s=1}^{t} (1 − β_s): a running *product* (torch.cumprod(..., dim=0)) of"
                       " α = 1 − β, including step t itself. Position 0 holds step 1, so the first entry is"
                       " ᾱ_1 = 1 − β_1 = 1 − betas[0] (ᾱ_0 = 1 is not stored). Return one value per β, in float64.")

HINT_Q_SAMPLE = ("t is a position (step t + 1): return √ᾱ·x0 + √(1 − ᾱ)·noise with ᾱ = s.alphas_cumprod[t],"
                 " the ᾱ of step t + 1 (the running product, not α = s.alphas[t]), at exactly position t: no"
                 " t − 1 or t + 1. Use the noise you are given; for t of shape (B,) use"
                 " md.extract(s.alphas_cumprod, t, x0), which gives ᾱ shaped (B, 1, 1, 1) in x0's dtype.")

HINT_POSTERIOR_MEAN = ("In step numbers μ̃_t = √ᾱ_{t−1}·β_t/(1 − ᾱ_t)·x0 + √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)·x_t —"
                       " x0 takes the β_t coefficient, x_t the √α_t one. The argument t is a position, so step"
                       " t + 1's tables are all at [t]: ᾱ = s.alphas_cumprod[t], the previous ᾱ ="
                       " s.alphas_cumprod_prev[t] (1 at position 0, since ᾱ_0 = 1; s.alphas_cumprod[t − 1]"
                       " wraps around to the last entry there), β = s.betas[t], α = s.alphas[t].")


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
    """Check ``fn(x0, x_t, t, s) -> mean of q(x_{t−1} | x_t, x_0)`` against ``minidiff.q_posterior``.

    Each case's x_t is drawn from q(x_t | x_0), as in the notebook: every form the notebook teaches
    (the x_0 form, the ε-form with ε = (x_t − √ᾱ_t·x_0)/√(1 − ᾱ_t)) then agrees to float32 rounding. An
    x_t drawn independently of x_0 would make that ε hundreds of times too large near t = 0, and the
    ε-form's float32 cancellation would exceed the tolerance although the algebra is right."""
    return check("posterior_mean", fn, _reference_posterior_mean, _posterior_cases(hidden),
                 _first_hint("posterior_mean"), **IMAGE_TOLERANCE, hidden=hidden)


def _posterior_cases(hidden: bool = False) -> list[Case]:
    """The image cases with x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε, a sample of q(x_t | x_0) at the case's t."""
    cases = []
    for case in image_cases(("x0", "t", "schedule", "noise"), hidden):
        x0, t, s, eps = case.args
        x_t = diffusion.q_sample(x0, t, s, eps)
        cases.append(Case(describe(x0=x0, x_t=x_t, t=t, schedule=s), (x0, x_t, t, s),
                          batch_labels=case.batch_labels))
    return cases




def _reference_posterior_mean(x0: Tensor, x_t: Tensor, t: schedules.Timesteps,
                              s: schedules.NoiseSchedule) -> Tensor:
    return diffusion.q_posterior(x0, x_t, t, s)[0]


def _q_sample_with(abar: Callable, x0_coef: Callable = torch.sqrt,
                   noise_coef: Callable = lambda a: (1 - a).sqrt()) -> Callable:
    """q_sample with ᾱ_t read by ``abar(s, t, x0)`` and the two coefficients made from it."""
    def wrong(x0: Tensor, t: Any, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        a = abar(s, t, x0)
        return x0_coef(a) * x0 + noise_coef(a) * noise
    return wrong


Q_SAMPLE_MISTAKES = (
    Mistake("you used s.alphas[t] (α, one step) where the jump needs ᾱ = s.alphas_cumprod[t], the running "
            "product", _q_sample_with(lambda s, t, x: _at(s.alphas, t, x))),
    Mistake("the square roots are missing: the coefficients are √ᾱ and √(1 − ᾱ), not ᾱ and 1 − ᾱ",
            _q_sample_with(_ABAR, lambda a: a, lambda a: 1 - a)),
    Mistake("the noise term is missing: add √(1 − ᾱ)·noise", _q_sample_with(_ABAR, noise_coef=lambda a: 0 * a)),
    Mistake("x0's coefficient lacks its square root: it is √ᾱ", _q_sample_with(_ABAR, lambda a: a)),
    Mistake("the noise's coefficient lacks its square root: it is √(1 − ᾱ)",
            _q_sample_with(_ABAR, noise_coef=lambda a: 1 - a)),
    Mistake("you wrote 1 − √ᾱ for the noise's coefficient; it is √(1 − ᾱ)",
            _q_sample_with(_ABAR, noise_coef=lambda a: 1 - a.sqrt())),
    Mistake("the coefficients are swapped: x0 takes √ᾱ and the noise √(1 − ᾱ)",
            _q_sample_with(_ABAR, lambda a: (1 - a).sqrt(), lambda a: a.sqrt())),
    Mistake("you indexed at t − 1: t is already a position (it holds step t + 1), so its ᾱ is s.alphas_cumprod[t] "
            "itself (at position 0, t − 1 wraps around to the last step)",
            _q_sample_with(lambda s, t, x: _at(s.alphas_cumprod, t - 1, x))),
    Mistake("you indexed at t + 1: t is already a position (it holds step t + 1), so its ᾱ is s.alphas_cumprod[t] "
            "itself",
            _q_sample_with(lambda s, t, x: _at(s.alphas_cumprod, t + 1, x))),
    Mistake("the coefficient was not shaped per image: s.alphas_cumprod[t] has shape (B,) and lines up with the "
            "images' columns; md.extract(s.alphas_cumprod, t, x0) gives it shape (B, 1, 1, 1)",
            _q_sample_with(lambda s, t, x: _flat(s.alphas_cumprod, t, x))),
)


ALPHAS_CUMPROD_MISTAKES = (
    Mistake("you added (a running sum, torch.cumsum); ᾱ is a running product, torch.cumprod",
            lambda betas: torch.cumsum(1 - betas, dim=0)),
    Mistake("you multiplied the β's themselves; ᾱ multiplies α = 1 − β", lambda betas: torch.cumprod(betas, dim=0)),
    Mistake("your product leaves out step t itself (that is alphas_cumprod_prev, which starts at ᾱ_0 = 1); ᾱ_t "
            "includes α_t, so the first entry is ᾱ_1 = 1 − β_1 = 1 − betas[0]",
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
    Mistake("the coefficients are swapped: x0 takes the one with β_t, x_t the one with √α_t",
            _posterior_with(swap=True)),
    Mistake("you used s.alphas_cumprod[t − 1] for the previous ᾱ: at position 0 it wraps around to the last "
            "step; s.alphas_cumprod_prev[t] is ᾱ_0 = 1 there",
            _posterior_with(lambda s, t, x: _at(s.alphas_cumprod, t - 1, x))),
    Mistake("you used this step's ᾱ = s.alphas_cumprod[t] where the formula needs the previous step's, "
            "s.alphas_cumprod_prev[t]", _posterior_with(_ABAR)),
    Mistake("x_t's coefficient has √ᾱ (s.alphas_cumprod[t]) where it is √α = s.alphas[t].sqrt()",
            _posterior_with(alpha=_ABAR)),
    Mistake("x0's coefficient lacks the square root of ᾱ_{t−1}", _posterior_with(root_prev=False)),
    Mistake("the division by 1 − ᾱ_t is missing (both coefficients have it)", _posterior_with(divide=False)),
)


# -- ε, x_0 and v: one prediction gives the other two -------------------------------------------------
HINT_CONVERT_PREDICTION = (
    "t is a position: a = md.extract(s.sqrt_alphas_cumprod, t, x_t) is √ᾱ and b = md.extract("
    "s.sqrt_one_minus_alphas_cumprod, t, x_t) is √(1 − ᾱ) of step t + 1, and x_t = a·x0 + b·ε. First get the"
    " pair (ε, x0): for target 'eps' x0 = (x_t − b·ε)/a; for 'x0' ε = (x_t − a·x0)/b; for 'v' x0 = a·x_t − b·v"
    " and ε = b·x_t + a·v. Then v = a·ε − b·x0 from the pair, and return (eps, x0, v).")


def check_convert_prediction(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(output, x_t, t, s, target) -> (eps, x0, v)`` against minidiff's conversions
    (``eps_and_x0`` and ``predict_v``) for each target "eps", "x0" and "v"."""
    return check("convert_prediction", fn, _reference_convert_prediction, _conversion_cases(hidden),
                 _first_hint("convert_prediction"), **IMAGE_TOLERANCE, output_names=("eps", "x0", "v"),
                 hidden=hidden)




def _reference_convert_prediction(output: Tensor, x_t: Tensor, t: schedules.Timesteps,
                                  s: schedules.NoiseSchedule, target: str) -> tuple[Tensor, Tensor, Tensor]:
    eps, x0 = diffusion.eps_and_x0(output, x_t, t, s, target)
    return eps, x0, diffusion.predict_v(x0, eps, t, s)


_TARGET_ORDER = ("eps", "x0", "v", "v", "x0")             # the visible cases'; hidden: each target, one twice


def _hidden_targets(rng: random.Random) -> list[str]:
    targets = ["eps", "x0", "v", rng.choice(("eps", "x0", "v"))]
    rng.shuffle(targets)
    return targets


def _conversion_cases(hidden: bool = False) -> list[Case]:
    """The image cases, each with a target; the output is a consistent one (made from x_0 and ε of x_t)."""
    cases = []
    for case, target in zip(image_cases(("x0", "t", "schedule", "noise"), hidden),
                              _hidden_targets(hidden_rng("conversion_targets")) if hidden else _TARGET_ORDER):
        x0, t, s, eps = case.args
        x_t = diffusion.q_sample(x0, t, s, eps)
        output = {"eps": eps, "x0": x0, "v": diffusion.predict_v(x0, eps, t, s)}[target]
        description = describe(output=output, x_t=x_t, t=t, schedule=s, target=target)
        cases.append(Case(description, (output, x_t, t, s, target), batch_labels=case.batch_labels))
    return cases


def _convert_with(x0_from_eps: Callable = lambda a, b, x, e: (x - b * e) / a,
                  eps_from_x0: Callable = lambda a, b, x, x0: (x - a * x0) / b,
                  from_v: Callable = lambda a, b, x, v: (b * x + a * v, a * x - b * v),
                  v_of: Callable = lambda a, b, e, x0: a * e - b * x0,
                  abar: Callable = lambda s, t, x: _at(s.alphas_cumprod, t, x)) -> Callable:
    """The conversions with one formula swapped for a wrong one; ``a``, ``b`` are √ᾱ and √(1 − ᾱ)."""
    def wrong(output: Tensor, x_t: Tensor, t: Any, s: schedules.NoiseSchedule, target: str) -> tuple:
        ab = abar(s, t, x_t)
        a, b = ab.sqrt(), (1 - ab).sqrt()
        if target == "eps":
            eps, x0 = output, x0_from_eps(a, b, x_t, output)
        elif target == "x0":
            eps, x0 = eps_from_x0(a, b, x_t, output), output
        else:
            eps, x0 = from_v(a, b, x_t, output)
        return eps, x0, v_of(a, b, eps, x0)
    return wrong


CONVERT_PREDICTION_MISTAKES = (
    Mistake("v has the wrong sign: v = √ᾱ·ε − √(1 − ᾱ)·x0 (Salimans & Ho 2022), not √(1 − ᾱ)·x0 − √ᾱ·ε",
            _convert_with(v_of=lambda a, b, e, x0: b * x0 - a * e)),
    Mistake("v's coefficients are swapped: v = √ᾱ·ε − √(1 − ᾱ)·x0",
            _convert_with(v_of=lambda a, b, e, x0: b * e - a * x0)),
    Mistake("from v, ε and x0 are swapped: x0 = √ᾱ·x_t − √(1 − ᾱ)·v and ε = √(1 − ᾱ)·x_t + √ᾱ·v",
            _convert_with(from_v=lambda a, b, x, v: (a * x - b * v, b * x + a * v))),
    Mistake("from v, the signs are flipped: x0 = √ᾱ·x_t − √(1 − ᾱ)·v and ε = √(1 − ᾱ)·x_t + √ᾱ·v",
            _convert_with(from_v=lambda a, b, x, v: (b * x - a * v, a * x + b * v))),
    Mistake("the square roots are missing: x_t = √ᾱ·x0 + √(1 − ᾱ)·ε, so each conversion divides or multiplies by "
            "√ᾱ and √(1 − ᾱ), not by ᾱ and 1 − ᾱ",
            _convert_with(abar=lambda s, t, x: _at(s.alphas_cumprod, t, x) ** 2)),
    Mistake("you used s.alphas[t] (α, one step) where x_t = √ᾱ·x0 + √(1 − ᾱ)·ε needs ᾱ = s.alphas_cumprod[t]",
            _convert_with(abar=_ALPHA)),
    Mistake("you indexed at t − 1: t is already a position (it holds step t + 1), so its ᾱ is s.alphas_cumprod[t]",
            _convert_with(abar=lambda s, t, x: _at(s.alphas_cumprod, t - 1, x))),
    Mistake("x0 from ε: subtract √(1 − ᾱ)·ε from x_t, then divide by √ᾱ; you divided by √(1 − ᾱ) or subtracted "
            "√ᾱ·ε", _convert_with(x0_from_eps=lambda a, b, x, e: (x - a * e) / b,
                                  eps_from_x0=lambda a, b, x, x0: (x - b * x0) / a)),
)


register(
    Exercise("alphas_cumprod", "alphas_cumprod", _reference_alphas_cumprod, (
        "ᾱ_t is the share of the clean image's variance left after steps 1 … t: each step keeps α = 1 − β of "
        "it, so ᾱ accumulates those factors — a running product, not a sum — including step t itself.",
        HINT_ALPHAS_CUMPROD,
        "One line: torch.cumprod over 1 − betas along dim 0; no loop, and keep betas' float64."),
        ALPHAS_CUMPROD_MISTAKES, ("minidiff.schedules.NoiseSchedule",)),   # a schedule built from betas holds ᾱ
    Exercise("q_sample", "q_sample", diffusion.q_sample, (
        "Jump from x0 to the image after step t + 1 (t is a position) in one go: scale x0 by the square root of "
        "the signal left after that step (the running product ᾱ, not one step's α) and the noise you are given "
        "by the square root of the rest.",
        HINT_Q_SAMPLE,
        "abar_t = md.extract(s.alphas_cumprod, t, x0); then abar_t.sqrt() multiplies x0 and (1 − abar_t).sqrt() "
        "multiplies noise."),
        Q_SAMPLE_MISTAKES, ("minidiff.diffusion.q_sample",), per_image_t=True),
    Exercise("posterior_mean", "posterior_mean", _reference_posterior_mean, (
        "Knowing both ends, the step back is a weighted mix of x0 and x_t: x0 weighted by the noise that step "
        "added (β), x_t by the signal it kept (√α); both weights use the ᾱ of the step before, which is ᾱ_0 = 1 "
        "at position 0.",
        HINT_POSTERIOR_MEAN,
        "abar_t = md.extract(s.alphas_cumprod, t, x0), abar_prev = md.extract(s.alphas_cumprod_prev, t, x0), "
        "beta_t and alpha_t likewise from s.betas and s.alphas; return (abar_prev.sqrt() * beta_t * x0 + "
        "alpha_t.sqrt() * (1 − abar_prev) * x_t) / (1 − abar_t)."),
        POSTERIOR_MEAN_MISTAKES, ("minidiff.diffusion.q_posterior",), per_image_t=True),
    Exercise("convert_prediction", "convert_prediction", _reference_convert_prediction, (
        "x_t is a known mix of x0 and ε, so knowing x_t and any one of ε, x0 or v pins down the other two: solve "
        "the mix for the missing one first, getting both ε and x0, then build v from the pair.",
        HINT_CONVERT_PREDICTION,
        "a, b = √ᾱ and √(1 − ᾱ) via md.extract; if target == 'eps': eps, x0 = output, (x_t − b·output)/a; elif 'x0': "
        "eps, x0 = (x_t − a·output)/b, output; else: x0, eps = a·x_t − b·output, b·x_t + a·output; then return "
        "eps, x0, a·eps − b·x0."),
        CONVERT_PREDICTION_MISTAKES, ("minidiff.diffusion.eps_and_x0", "minidiff.diffusion.predict_x0_from_eps",
                                      "minidiff.diffusion.predict_eps_from_x0", "minidiff.diffusion.predict_v",
                                      "minidiff.diffusion.predict_x0_from_v", "minidiff.diffusion.predict_eps_from_v"),
        per_image_t=True),
)
