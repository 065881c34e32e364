"""Notebook 06's exercises: one DDPM step and one DDIM step."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ... import schedules
from .core import (_ABAR, _ALPHA, _BETA, IMAGE_TOLERANCE, Case, Exercise, Mistake, _at,
                   _first_hint, check, describe, register,
                   t_labels)

__all__ = ["HINT_DDIM_STEP", "HINT_DDPM_STEP", "check_ddim_step", "check_ddpm_step"]   # what md.exercises exports from here


HINT_DDPM_STEP = ("mean = (x_t − β_t/√(1 − ᾱ_t)·eps)/√α_t, then add √β_t·noise — except at t = 0, where the "
                  "step returns the mean alone (DDPM Algorithm 2). β_t = s.betas[t], α_t = s.alphas[t], "
                  "ᾱ_t = s.alphas_cumprod[t]; md.extract(table, t, x_t) casts them to x_t's dtype.")

HINT_DDIM_STEP = ("x̂_0 = (x_t − √(1 − ᾱ_t)·eps)/√ᾱ_t; σ = eta·√((1 − ᾱ')/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ') with ᾱ' = "
                  "ᾱ_{t_prev} = s.alphas_cumprod[t_prev], or 1 when t_prev = −1; return "
                  "√ᾱ'·x̂_0 + √(1 − ᾱ' − σ²)·eps + σ·noise.")


def _sampler_cases(with_prev: bool, hidden: bool = False) -> list[Case]:
    if hidden:
        settings = [(998, 0, 0.3, "sigmoid"), (2, -1, 1.0, "linear"), (999, -1, 0.0, "cosine"), (3, 2, 0.0, "sigmoid")]
        shape, first_seed = (2, 3, 5, 5), 100
    else:
        settings = [(999, 899, 0.0, "linear"), (500, -1, 0.0, "cosine"), (10, 9, 1.0, "linear"),
                    (700, 300, 0.5, "cosine"), (1, 0, 0.0, "linear"), (0, -1, 0.0, "cosine")]
        shape, first_seed = (3, 1, 6, 6), 0
    cases = []
    for seed, (t, t_prev, eta, kind) in enumerate(settings, start=first_seed):
        g = torch.Generator().manual_seed(seed)
        x_t, eps, noise = (torch.randn(shape, generator=g) for _ in range(3))
        s = schedules.make_schedule(kind, 1000)
        if with_prev:
            inputs = dict(x_t=x_t, eps=eps, t=t, t_prev=t_prev, schedule=s, eta=eta, noise=noise)
        else:
            inputs = dict(x_t=x_t, eps=eps, t=t, schedule=s, noise=noise)
        cases.append(Case(describe(**inputs), tuple(inputs.values()), batch_labels=t_labels(t, shape[0])))
    return cases


def check_ddpm_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_t, eps, t, s, noise) -> x_{t-1}`` against ``minidiff.ddpm_step`` (variance β_t, no clipping)."""
    return check("ddpm_step", fn, _reference_ddpm_step, _sampler_cases(with_prev=False, hidden=hidden),
                 _first_hint("ddpm_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _reference_ddpm_step(x_t: Tensor, eps: Tensor, t: int, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
    from ...samplers import ddpm_step
    return ddpm_step(x_t, eps, t, s, noise=noise)


def check_ddim_step(fn: Callable, hidden: bool = False) -> Callable:
    """Check ``fn(x_t, eps, t, t_prev, s, eta, noise) -> x_{t_prev}`` against ``minidiff.ddim_step``."""
    return check("ddim_step", fn, _reference_ddim_step, _sampler_cases(with_prev=True, hidden=hidden),
                 _first_hint("ddim_step"), **IMAGE_TOLERANCE, hidden=hidden)


def _reference_ddim_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: schedules.NoiseSchedule, eta: float,
                         noise: Tensor) -> Tensor:
    from ...samplers import ddim_step
    return ddim_step(x_t, eps, t, t_prev, s, eta=eta, noise=noise)


def _ddpm_with(noise_at_0: bool = False, no_noise: bool = False, divide_by: Callable = _ALPHA,
               eps_root: bool = True, sigma: Callable = lambda s, t, x: _at(s.betas, t, x).sqrt()) -> Callable:
    def wrong(x_t: Tensor, eps: Tensor, t: int, s: schedules.NoiseSchedule, noise: Tensor) -> Tensor:
        beta, one_minus = _BETA(s, t, x_t), 1 - _ABAR(s, t, x_t)
        mean = (x_t - beta / (one_minus.sqrt() if eps_root else one_minus) * eps) / divide_by(s, t, x_t).sqrt()
        if no_noise or (t == 0 and not noise_at_0):
            return mean
        return mean + sigma(s, t, x_t) * noise
    return wrong


DDPM_STEP_MISTAKES = (
    Mistake("noise was added at t = 0 too; the last step returns the mean alone (DDPM Algorithm 2)",
            _ddpm_with(noise_at_0=True)),
    Mistake("no noise was added: for t > 0 the step adds √β_t·noise to the mean", _ddpm_with(no_noise=True)),
    Mistake("the mean divides by √ᾱ_t; it divides by √α_t = s.alphas[t].sqrt()", _ddpm_with(divide_by=_ABAR)),
    Mistake("eps's coefficient is β_t/(1 − ᾱ_t); it is β_t/√(1 − ᾱ_t)", _ddpm_with(eps_root=False)),
    Mistake("the noise is scaled by β_t; it is scaled by √β_t", _ddpm_with(sigma=_BETA)),
    Mistake("the noise is scaled by the posterior's √β̃_t; this step uses √β_t",
            _ddpm_with(sigma=lambda s, t, x: _at(s.posterior_variance, t, x).sqrt())),
)


def _ddim_with(prev_at_minus_one: Optional[Callable] = None, table: str = "alphas_cumprod", use_eta: bool = True,
               add_noise: bool = True, minus_sigma2: bool = True) -> Callable:
    def wrong(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: schedules.NoiseSchedule, eta: float,
              noise: Tensor) -> Tensor:
        abar = getattr(s, table)
        abar_t = _at(abar, t, x_t)
        if t_prev >= 0:
            abar_prev = _at(abar, t_prev, x_t)
        else:
            abar_prev = torch.ones_like(abar_t) if prev_at_minus_one is None else prev_at_minus_one(abar, x_t)
        x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
        sigma = (eta if use_eta else 0.0) * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
        rest = (1 - abar_prev - (sigma ** 2 if minus_sigma2 else 0)).clamp(min=0).sqrt()
        return abar_prev.sqrt() * x0 + rest * eps + (sigma * noise if add_noise else 0)
    return wrong


DDIM_STEP_MISTAKES = (
    Mistake("at t_prev = −1 you indexed s.alphas_cumprod[−1], the last step; ᾱ' = 1 there (the clean image)",
            _ddim_with(prev_at_minus_one=lambda abar, x: _at(abar, -1, x))),
    Mistake("at t_prev = −1 you used ᾱ_0; ᾱ' = 1 there (the clean image)",
            _ddim_with(prev_at_minus_one=lambda abar, x: _at(abar, 0, x))),
    Mistake("eta was ignored: σ = eta·√((1 − ᾱ')/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ')", _ddim_with(use_eta=False)),
    Mistake("the fresh-noise term σ·noise is missing", _ddim_with(add_noise=False)),
    Mistake("eps's coefficient lacks the − σ²: it is √(1 − ᾱ' − σ²)", _ddim_with(minus_sigma2=False)),
    Mistake("you used s.alphas (α) where DDIM uses ᾱ = s.alphas_cumprod", _ddim_with(table="alphas")),
)


register(
    Exercise("ddpm_step", "ddpm_step", _reference_ddpm_step, (
        "Take the model's predicted noise out of x_t to get the mean of x_{t−1}, then add fresh noise of step "
        "t's size — at every step but the last (t = 0), which returns the mean alone.",
        HINT_DDPM_STEP,
        "beta_t, alpha_t = md.extract(s.betas, t, x_t), md.extract(s.alphas, t, x_t); mean = (x_t − beta_t / "
        "md.extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / alpha_t.sqrt(); at t == 0 return mean, "
        "else mean + beta_t.sqrt() * noise."),
        DDPM_STEP_MISTAKES, ("minidiff.samplers.ddpm_step",)),
    Exercise("ddim_step", "ddim_step", _reference_ddim_step, (
        "Predict the clean image x̂_0 from x_t and eps, then re-noise it to level t_prev: part of the rest is the "
        "predicted noise, part (σ, set by eta) fresh noise. t_prev = −1 means the clean image itself.",
        HINT_DDIM_STEP,
        "abar_t = md.extract(s.alphas_cumprod, t, x_t); abar_prev likewise at t_prev, or torch.ones_like(abar_t) "
        "when t_prev < 0; x0_hat = (x_t − (1 − abar_t).sqrt() * eps) / abar_t.sqrt(); sigma from eta; return "
        "abar_prev.sqrt() * x0_hat + (1 − abar_prev − sigma**2).clamp(min=0).sqrt() * eps + sigma * noise."),
        DDIM_STEP_MISTAKES, ("minidiff.samplers.ddim_step",)),
)
