r"""Scores: the view of diffusion that DDIM and DPM-Solver discretise (notebook 06).

Notation of this module (the score papers', and notebook 06's section on scores): step t has signal scale
$\alpha_t = \sqrt{\bar\alpha_t}$ and noise scale $\sigma_t = \sqrt{1-\bar\alpha_t}$, so
$x_t = \alpha_t x_0 + \sigma_t\varepsilon$. This $\alpha_t$ is *not* the course's one-step $\alpha_t = 1 - \beta_t$
(``s.alphas``): in code it is ``s.sqrt_alphas_cumprod``, and $\sigma_t$ is ``s.sqrt_one_minus_alphas_cumprod``.
Every function's ``t`` is a position (position t is step t + 1).

    score           ∇_x log p_t(x), p_t the density of x_t          (Hyvärinen 2005; Song & Ermon 2019)
    ε and score     E[ε | x_t] = −σ_t ∇ log p_t(x_t)                 (Vincent 2011; Song et al. 2021, ICLR)
    Tweedie         E[x_0 | x_t] = (x_t + σ_t² ∇ log p_t(x_t)) / α_t (Efron 2011)
    the PF-ODE      dx̄/dσ̄ = ε(x_t), with x̄ = x/α and σ̄ = σ/α      (Song, Meng & Ermon 2021, eq. 14)

DDIM with η = 0 is one Euler step of that ODE in (x̄, σ̄); ``pf_ode_euler_step`` writes it so, and a unit
test checks that it equals ``ddim_step`` exactly. ``GaussianMixture`` is 1-D toy data whose $p_t$ is a
Gaussian mixture again at every step, so its score, $E[x_0 \mid x_t]$ and the ideal ε are known in closed form.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .schedules import NoiseSchedule, Timesteps, extract


def score_from_eps(eps: Tensor, t: Timesteps, s: NoiseSchedule) -> Tensor:
    r"""$\nabla_x \log p_t(x_t) = -\hat\varepsilon / \sigma_t$, with $\sigma_t = \sqrt{1-\bar\alpha_t}$ at
    position ``t``."""
    return -eps / extract(s.sqrt_one_minus_alphas_cumprod, t, eps)


def eps_from_score(score: Tensor, t: Timesteps, s: NoiseSchedule) -> Tensor:
    r"""$\hat\varepsilon = -\sigma_t\,\nabla_x \log p_t(x_t)$: the noise predictor that minimises the ε-MSE."""
    return -extract(s.sqrt_one_minus_alphas_cumprod, t, score) * score


def tweedie_x0(x_t: Tensor, score: Tensor, t: Timesteps, s: NoiseSchedule) -> Tensor:
    r"""Tweedie's formula, $E[x_0 \mid x_t] = (x_t + \sigma_t^2\,\nabla\log p_t(x_t)) / \alpha_t$ (Efron 2011):
    the best guess of the clean data given only the noisy sample and the score of its density."""
    # σ_t² = 1 − ᾱ_t, α_t = √ᾱ_t
    return (x_t + extract(1 - s.alphas_cumprod, t, x_t) * score) / extract(s.sqrt_alphas_cumprod, t, x_t)


def pf_ode_euler_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: NoiseSchedule) -> Tensor:
    r"""One Euler step of the probability-flow ODE from position ``t`` to ``t_prev`` (−1: to $x_0$), in the
    variables $\bar x = x/\alpha$ and $\bar\sigma = \sigma/\alpha$ where it reads $d\bar x/d\bar\sigma = \varepsilon$:

    $\bar x_{t'} = \bar x_t + (\bar\sigma_{t'} - \bar\sigma_t)\,\hat\varepsilon$, $x_{t'} = \alpha_{t'}\,\bar x_{t'}$
    (Song, Meng & Ermon 2021, eq. 14). At $t' = -1$, $\alpha = 1$ and $\bar\sigma = 0$ (step 0: $\bar\alpha_0 = 1$)."""
    if not -1 <= t_prev < t < s.num_steps:
        raise ValueError(f"t and t_prev must satisfy -1 <= t_prev < t < {s.num_steps}; got t={t}, t_prev={t_prev}")
    # ᾱ with ᾱ_0 = 1 in front: index i + 1 is position i, index 0 is position −1 (step 0)
    abar = torch.cat([s.alphas_cumprod.new_ones(1), s.alphas_cumprod])
    alpha, alpha_prev = abar[t + 1].sqrt(), abar[t_prev + 1].sqrt()
    # σ̄ = σ/α = √((1 − ᾱ)/ᾱ) = 1/√SNR
    sigma_bar, sigma_bar_prev = (1 - abar[t + 1]).sqrt() / alpha, (1 - abar[t_prev + 1]).sqrt() / alpha_prev
    x_bar = x_t / alpha.to(x_t.dtype)
    return (alpha_prev * (x_bar + (sigma_bar_prev - sigma_bar) * eps)).to(x_t.dtype)


@dataclass(frozen=True)
class GaussianMixture:
    r"""1-D data $p_0(x) = \sum_k w_k\,\mathcal N(x; m_k, s_k^2)$. Noised by $q(x_t \mid x_0)$ it stays a mixture:
    $p_t(x) = \sum_k w_k\,\mathcal N(x; \alpha_t m_k, \alpha_t^2 s_k^2 + \sigma_t^2)$, so everything is exact."""
    weights: tuple[float, ...] = (0.3, 0.5, 0.2)
    means: tuple[float, ...] = (-2.0, 0.5, 2.5)
    stds: tuple[float, ...] = (0.3, 0.4, 0.2)

    def __post_init__(self) -> None:
        if not len(self.weights) == len(self.means) == len(self.stds) >= 1:
            raise ValueError(f"weights, means and stds must have one equal length >= 1; got "
                             f"{len(self.weights)}, {len(self.means)}, {len(self.stds)}")
        if min(self.weights) <= 0 or abs(sum(self.weights) - 1) > 1e-6 or min(self.stds) <= 0:
            raise ValueError(f"weights must be > 0 and sum to 1, stds > 0; got weights {self.weights}, "
                             f"stds {self.stds}")

    def _table(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(torch.tensor(v, dtype=x.dtype, device=x.device) for v in (self.weights, self.means, self.stds))

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` draws of $x_0$, shape (n,), float64."""
        w, m, sd = self._table(torch.zeros((), dtype=torch.float64))
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        return m[k] + sd[k] * torch.randn(n, dtype=torch.float64, generator=generator)

    def _components(self, x: Tensor, t: Optional[int], s: Optional[NoiseSchedule]) -> tuple[Tensor, ...]:
        """(log w_k + log N(x; α m_k, v_k), α m_k, v_k, α) per component (last axis), at position ``t``
        (None: the clean data, α = 1, σ = 0)."""
        w, m, sd = self._table(x)
        abar = torch.ones((), dtype=x.dtype) if t is None else s.alphas_cumprod[t].to(x.dtype)
        mean, var = abar.sqrt() * m, abar * sd ** 2 + (1 - abar)
        x = x.unsqueeze(-1)
        log_joint = w.log() - 0.5 * ((x - mean) ** 2 / var + var.log() + torch.log(torch.tensor(2 * torch.pi)))
        return log_joint, mean, var, abar.sqrt()

    def log_prob(self, x: Tensor, t: Optional[int] = None, s: Optional[NoiseSchedule] = None) -> Tensor:
        r"""$\log p_t(x)$ at position ``t`` (None: $\log p_0$, the data)."""
        return self._components(x, t, s)[0].logsumexp(-1)

    def score(self, x: Tensor, t: Optional[int] = None, s: Optional[NoiseSchedule] = None) -> Tensor:
        r"""$\nabla_x \log p_t(x) = \sum_k r_k(x)\,(\alpha_t m_k - x)/v_k$, $r_k$ the responsibilities."""
        log_joint, mean, var, _ = self._components(x, t, s)
        r = log_joint.softmax(-1)
        return (r * (mean - x.unsqueeze(-1)) / var).sum(-1)

    def posterior_mean(self, x: Tensor, t: int, s: NoiseSchedule) -> Tensor:
        r"""$E[x_0 \mid x_t = x]$ from Bayes' rule per component (no score involved): within component k,
        $E[x_0 \mid x_t] = m_k + \alpha_t s_k^2 (x - \alpha_t m_k)/v_k$; then weighted by $r_k(x)$."""
        log_joint, mean, var, alpha = self._components(x, t, s)
        _, m, sd = self._table(x)
        r = log_joint.softmax(-1)
        return (r * (m + alpha * sd ** 2 * (x.unsqueeze(-1) - mean) / var)).sum(-1)

    def eps_model(self, s: NoiseSchedule):
        r"""The ideal ε-prediction network of this data, $\varepsilon^*(x_t, t) = -\sigma_t\nabla\log p_t(x_t)$, as a
        ``model(x, t)`` that minidiff's samplers accept (x of any shape, t a (B,) tensor of positions)."""
        def model(x: Tensor, t: Tensor, y: Optional[Tensor] = None) -> Tensor:
            position = int(t.reshape(-1)[0])
            flat = x.double().reshape(-1)
            return eps_from_score(self.score(flat, position, s), position, s).reshape(x.shape).to(x.dtype)
        model.target = "eps"
        return model
