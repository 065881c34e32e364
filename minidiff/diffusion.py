r"""The forward (noising) process and the identities between $x_0$, $x_t$ and $\varepsilon$.

Symbols as in the notebooks and the papers: steps t = 1, …, T, x_0 the clean image, ᾱ_0 = 1. Every
``t`` argument below is a position, 0-indexed: position t holds step t + 1, so a function called with
``t`` works with β_{t+1} = ``s.betas[t]`` and ᾱ_{t+1} = ``s.alphas_cumprod[t]`` and returns x_{t+1}
(or, for the posterior, x_t given x_{t+1}). In step numbers:

    q(x_t | x_{t−1}) = N(√α_t x_{t−1}, β_t I)                       one step        (q_step)
    q(x_t | x_0)     = N(√ᾱ_t x_0, (1 − ᾱ_t) I)                     closed form     (q_sample)
    q(x_{t−1} | x_t, x_0) = N(μ̃_t(x_t, x_0), β̃_t I)                 the posterior   (q_posterior)
"""
from __future__ import annotations

import operator
from typing import Optional, Sequence

import torch
from torch import Tensor

from .conditioning import TARGETS, Target, check_float, check_same_shape
from .schedules import NoiseSchedule, Timesteps, extract


def q_step(x_prev: Tensor, t: Timesteps, s: NoiseSchedule, noise: Optional[Tensor] = None) -> Tensor:
    r"""One forward step, $x_t = \sqrt{\alpha_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon$,
    $\varepsilon \sim \mathcal N(0, I)$ (DDPM eq. 2). ``t`` is a position: ``q_step(x, i, s)`` takes
    $x_i$ to $x_{i+1}$ with $\beta_{i+1}$ = ``s.betas[i]``. ``noise`` is ε; drawn when None."""
    noise = _noise_for(x_prev, noise, "x_prev")
    # √α_t x_{t−1} + √β_t ε
    return extract(s.alphas.sqrt(), t, x_prev) * x_prev + extract(s.betas.sqrt(), t, x_prev) * noise


def q_sample(x0: Tensor, t: Timesteps, s: NoiseSchedule, noise: Optional[Tensor] = None) -> Tensor:
    r"""Jump straight from $x_0$ to $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon$
    (DDPM eq. 4, reparameterised). ``t`` is a position: ``q_sample(x0, i, s)`` returns $x_{i+1}$, with
    $\bar\alpha_{i+1}$ = ``s.alphas_cumprod[i]``. ``noise`` is ε; drawn when None."""
    noise = _noise_for(x0, noise, "x0")
    # √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    return extract(s.sqrt_alphas_cumprod, t, x0) * x0 + extract(s.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def q_chain(x0: Tensor, s: NoiseSchedule, steps: Sequence[int], noise: Optional[Tensor] = None) -> Tensor:
    r"""Run the forward chain $x_0 \to x_1 \to \dots$ one ``q_step`` at a time and record $x_k$ after
    each number of steps $k$ in ``steps`` (0 records $x_0$ itself; at most T).

    Returns a tensor of shape ``(len(steps), *x0.shape)``: entry j is the image after ``steps[j]`` steps,
    so a figure labels it "t = steps[j]". ``noise[i]`` is the ε of position i (step i + 1), shape
    ``(≥ max(steps), *x0.shape)``; fresh ε is drawn at every step when None.
    """
    check_float(x0, "x0")
    steps = _check_steps(steps, s.num_steps)
    last = max(steps)
    if noise is not None:
        check_float(noise, "noise")
        if noise.ndim != x0.ndim + 1 or noise.shape[1:] != x0.shape or noise.shape[0] < last:
            raise ValueError(f"noise must have shape (≥ {last}, {', '.join(map(str, x0.shape))}): one ε per step "
                             f"up to step {last}; got {tuple(noise.shape)}")
    recorded, x = {0: x0}, x0
    for i in range(last):               # position i takes x_i to x_{i+1}
        x = q_step(x, i, s, None if noise is None else noise[i])
        recorded[i + 1] = x
    return torch.stack([recorded[k] for k in steps])


def _check_steps(steps: Sequence[int], num_steps: int) -> list[int]:
    """``steps`` as a list of step counts in [0, T]."""
    if not isinstance(steps, (list, tuple, range, Tensor)) or (isinstance(steps, Tensor) and steps.ndim != 1):
        raise TypeError(f"steps must be a list of ints (numbers of steps); got {type(steps).__name__}")
    if len(steps) == 0:
        raise ValueError("steps must hold at least one number of steps; got an empty sequence")
    try:
        if any(isinstance(k, bool) for k in steps):
            raise TypeError
        steps = [operator.index(k) for k in steps]
    except TypeError:
        raise TypeError(f"steps must hold ints (numbers of steps); got {list(steps)!r}") from None
    bad = [k for k in steps if not 0 <= k <= num_steps]
    if bad:
        raise ValueError(f"steps must be numbers of steps in [0, {num_steps}] (0 is x_0, T={num_steps}); got {bad}")
    return steps


def q_posterior(x0: Tensor, x_t: Tensor, t: Timesteps, s: NoiseSchedule) -> tuple[Tensor, Tensor]:
    r"""Mean and variance of $q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)$ (DDPM eq. 7):

    $\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t} x_0
                 + \frac{\sqrt{\alpha_t}\,(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t$,
    $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$.

    ``t`` is a position: ``q_posterior(x0, x_t, i, s)`` is the step from $x_{i+1}$ back to $x_i$, with
    $\bar\alpha_{i}$ = ``s.alphas_cumprod_prev[i]`` ($\bar\alpha_0 = 1$ at position 0).
    The variance comes shaped to broadcast against x (B, 1, 1, …). At position 0 (step 1) it is exactly 0
    and the mean is x_0; samplers use ``s.posterior_log_variance_clipped`` where they need its log.
    The derivation (completing the square) and the ε-form of the mean are in notebook 02.
    """
    check_float(x0, "x0")
    check_same_shape(x_t, x0, "x_t", "x0")
    one_minus_abar = 1.0 - s.alphas_cumprod
    # coefficient of x_0:  √ᾱ_{t−1} β_t / (1 − ᾱ_t)   (every table at position t − 1; alphas_cumprod_prev holds ᾱ_{t−1})
    coef_x0 = s.alphas_cumprod_prev.sqrt() * s.betas / one_minus_abar
    # coefficient of x_t:  √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
    coef_xt = s.alphas.sqrt() * (1.0 - s.alphas_cumprod_prev) / one_minus_abar
    mean = extract(coef_x0, t, x0) * x0 + extract(coef_xt, t, x_t) * x_t
    return mean, extract(s.posterior_variance, t, x0)


def predict_x0_from_eps(x_t: Tensor, t: Timesteps, eps: Tensor, s: NoiseSchedule) -> Tensor:
    r"""Invert q_sample for $x_0$: $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\varepsilon) / \sqrt{\bar\alpha_t}$."""
    check_float(x_t, "x_t")
    check_same_shape(eps, x_t, "eps", "x_t")
    return (x_t - extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / extract(s.sqrt_alphas_cumprod, t, x_t)


def predict_eps_from_x0(x_t: Tensor, t: Timesteps, x0: Tensor, s: NoiseSchedule) -> Tensor:
    r"""Invert q_sample for $\varepsilon$: $\varepsilon = (x_t - \sqrt{\bar\alpha_t}\,x_0) / \sqrt{1-\bar\alpha_t}$."""
    check_float(x_t, "x_t")
    check_same_shape(x0, x_t, "x0", "x_t")
    return (x_t - extract(s.sqrt_alphas_cumprod, t, x_t) * x0) / extract(s.sqrt_one_minus_alphas_cumprod, t, x_t)


def _noise_for(x: Tensor, noise: Optional[Tensor], x_name: str) -> Tensor:
    """ε for ``x``: the given ``noise`` after checking it matches, or a fresh draw ~ N(0, I)."""
    check_float(x, x_name)
    if noise is None:
        return torch.randn_like(x)
    check_same_shape(noise, x, "noise", x_name)
    return noise


# -- the v parameterisation (Salimans & Ho 2022) ------------------------------------------------
def predict_v(x0: Tensor, eps: Tensor, t: Timesteps, s: NoiseSchedule) -> Tensor:
    r"""The velocity $v = \sqrt{\bar\alpha_t}\,\varepsilon - \sqrt{1-\bar\alpha_t}\,x_0$."""
    check_float(x0, "x0")
    check_same_shape(eps, x0, "eps", "x0")
    return extract(s.sqrt_alphas_cumprod, t, x0) * eps - extract(s.sqrt_one_minus_alphas_cumprod, t, x0) * x0


def predict_x0_from_v(x_t: Tensor, t: Timesteps, v: Tensor, s: NoiseSchedule) -> Tensor:
    r"""$\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1-\bar\alpha_t}\,v$."""
    check_float(x_t, "x_t")
    check_same_shape(v, x_t, "v", "x_t")
    return extract(s.sqrt_alphas_cumprod, t, x_t) * x_t - extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * v


def predict_eps_from_v(x_t: Tensor, t: Timesteps, v: Tensor, s: NoiseSchedule) -> Tensor:
    r"""$\hat\varepsilon = \sqrt{1-\bar\alpha_t}\,x_t + \sqrt{\bar\alpha_t}\,v$."""
    check_float(x_t, "x_t")
    check_same_shape(v, x_t, "v", "x_t")
    return extract(s.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t + extract(s.sqrt_alphas_cumprod, t, x_t) * v


def training_target(target: Target, x0: Tensor, eps: Tensor, t: Timesteps, s: NoiseSchedule) -> Tensor:
    """What a network of ``target`` should output for (x_0, ε): ε, x_0, or v = √ᾱ_t ε − √(1 − ᾱ_t) x_0
    (the inverse of ``eps_and_x0``)."""
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    return predict_v(x0, eps, t, s)


def eps_and_x0(output: Tensor, x_t: Tensor, t: Timesteps, s: NoiseSchedule,
               target: Target = "eps") -> tuple[Tensor, Tensor]:
    r"""Turn a network's output (a prediction of ``target``) into the pair $(\hat\varepsilon, \hat x_0)$
    samplers need."""
    if target == "eps":
        return output, predict_x0_from_eps(x_t, t, output, s)
    if target == "x0":
        return predict_eps_from_x0(x_t, t, output, s), output
    if target == "v":
        return predict_eps_from_v(x_t, t, output, s), predict_x0_from_v(x_t, t, output, s)
    raise ValueError(f"target must be one of {TARGETS}; got {target!r}")
