r"""The training objective: noise an image to a random step $t$, ask the network to undo it.

    t ~ U{1, …, T},  ε ~ N(0, I),  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    L = E_t [ w(t) · ‖f_θ(x_t, t, y) − target‖² ],  target ∈ {ε, x_0, v}

With target ε and w = 1 this is DDPM's "simple" loss (Ho et al. 2020, eq. 14). The variational bound
gives each step t the weight λ_t = β_t² / (2σ_t² α_t (1 − ᾱ_t)) instead (eq. 12, ``vlb_weight``), because
each of its terms is a KL divergence between two Gaussians of equal variance (``gaussian_kl``). The three targets
differ only by a t-dependent factor: for a fixed x_t, ‖x̂_0 − x_0‖² = ‖ε̂ − ε‖² / SNR(t) and
‖v̂ − v‖² = ‖ε̂ − ε‖² (1 + SNR(t)) / SNR(t). Weightings are defined on the ε scale and converted.
In code ``t`` holds minidiff's positions, step − 1: drawn from {0, …, T−1}, tables read at ``[t]``.
"""
from __future__ import annotations

from typing import Callable, Literal, Optional

import torch
from torch import Tensor

from .conditioning import Null, Target, check_float, check_labels, check_target, drop_labels, unwrap
from .diffusion import q_sample, training_target
from .schedules import NoiseSchedule

Weighting = Optional[Literal["p2", "min_snr"]]
WEIGHTINGS = (None, "p2", "min_snr")


def loss_weight(weighting: Weighting, target: Target, snr: Tensor, gamma: float = 5.0) -> Tensor:
    r"""Per-sample weight $w(t)$ in the target's own units.

    On the ε scale: none → $1$ (for ε; for x_0 and v "none" means their own plain MSE),
    ``"p2"`` (Choi et al. 2022, k = 1, γ = 1) → $1/(1 + \mathrm{SNR})$,
    ``"min_snr"`` (Hang et al. 2023, γ = 5) → $\min(\mathrm{SNR}, \gamma)/\mathrm{SNR}$.
    A weight on the ε scale becomes one on the x_0 scale times SNR, on the v scale times SNR/(1 + SNR).
    """
    if weighting is None:
        return torch.ones_like(snr)
    # min(SNR, γ)/SNR written as min(1, γ/SNR): 1, not 0/0, at SNR = 0 (a zero-terminal-SNR schedule's last step)
    eps_scale = 1 / (1 + snr) if weighting == "p2" else (gamma / snr).clamp(max=1.0)
    to_target = {"eps": torch.ones_like(snr), "x0": snr, "v": snr / (1 + snr)}[target]
    return eps_scale * to_target


def gaussian_kl(mean_q: Tensor, var_q: Tensor, mean_p: Tensor, var_p: Tensor) -> Tensor:
    r"""$D_{KL}\big(\mathcal N(\mu_q, \sigma_q^2)\,\|\,\mathcal N(\mu_p, \sigma_p^2)\big)$ per element:

    $$\tfrac12\Big(\log\frac{\sigma_p^2}{\sigma_q^2} + \frac{\sigma_q^2 + (\mu_q - \mu_p)^2}{\sigma_p^2} - 1\Big),$$

    which for equal variances $\sigma_q^2 = \sigma_p^2 = \sigma^2$ is $(\mu_q - \mu_p)^2 / (2\sigma^2)$ (Ho et al.
    2020, eq. 8). Sum it over an image's elements for the KL of the whole image (diagonal covariances)."""
    var_q, var_p = torch.as_tensor(var_q, dtype=mean_q.dtype), torch.as_tensor(var_p, dtype=mean_q.dtype)
    if not (var_q > 0).all() or not (var_p > 0).all():
        raise ValueError("var_q and var_p must be > 0 (variances); got a value <= 0")
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1)


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    r"""$\mathrm{KL}(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, 1))
    = \tfrac12 \sum (\mu^2 + \sigma^2 - 1 - \log\sigma^2)$ per image: summed over every latent element,
    all C·H·W of them (dims 1, 2, …), not averaged. mean, logvar (B, …) -> (B,). It is 0 exactly when
    μ = 0 and log σ² = 0, and positive otherwise."""
    if mean.shape != logvar.shape or mean.ndim < 2:
        raise ValueError(f"mean and logvar must have the same shape (B, …) with at least 2 dims; got "
                         f"{tuple(mean.shape)} and {tuple(logvar.shape)}")
    per_element = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return per_element.flatten(1).sum(dim=1)


def vlb_weight(s: NoiseSchedule, sigma2: Optional[Tensor] = None) -> Tensor:
    r"""$\lambda_t = \dfrac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1 - \bar\alpha_t)}$ at every position (step t at
    position t − 1): the weight of $\|\varepsilon - \varepsilon_\theta\|^2$ in the bound's term $L_{t-1}$ (Ho et al.
    2020, eq. 12). ``sigma2`` is the reverse process's variance $\sigma_t^2$ (default $\beta_t$, float64)."""
    sigma2 = s.betas if sigma2 is None else sigma2
    if not isinstance(sigma2, Tensor) or sigma2.shape != s.betas.shape:
        raise ValueError(f"sigma2 must be a tensor of shape {tuple(s.betas.shape)}, one variance per step; "
                         f"got {getattr(sigma2, 'shape', type(sigma2).__name__)}")
    return s.betas ** 2 / (2 * sigma2 * s.alphas * (1 - s.alphas_cumprod))


def per_sample_loss(model: Callable[..., Tensor], x0: Tensor, t: Tensor, s: NoiseSchedule,
                    target: Target = "eps", weighting: Weighting = None, y: Optional[Tensor] = None,
                    noise: Optional[Tensor] = None) -> Tensor:
    r"""$w(t_b)\,\mathrm{mean}\big((f_\theta(x_{t_b}, t_b, y_b) - \text{target}_b)^2\big)$ for each image $b$,
    shape (B,): the loss before its mean over the batch, kept per image to see which $t$ are hard.
    ``t`` holds positions (B,): image $b$ is noised to step ``t[b]`` + 1."""
    eps = torch.randn_like(x0) if noise is None else noise
    x_t = q_sample(x0, t, s, eps)
    prediction = model(x_t, t, y) if y is not None else model(x_t, t)
    error = (prediction.float() - training_target(target, x0, eps, t, s).float()).pow(2)
    error = error.flatten(1).mean(1)
    return loss_weight(weighting, target, s.snr(t).to(error.dtype)) * error


def diffusion_loss(model: Callable[..., Tensor], x0: Tensor, s: NoiseSchedule, target: Target = "eps",
                   weighting: Weighting = None, p_uncond: float = 0.0, y: Optional[Tensor] = None,
                   null_label: Optional[Null] = None, t: Optional[Tensor] = None,
                   noise: Optional[Tensor] = None) -> Tensor:
    r"""$\frac{1}{B}\sum_b w(t_b)\,\mathrm{mean}\big((f_\theta(x_{t_b}, t_b, y_b) - \text{target}_b)^2\big)$,
    with the step uniform on $1, \dots, T$ (positions ``t`` drawn from 0 … T−1) and
    $\varepsilon \sim \mathcal N(0, I)$ unless given. With ``p_uncond`` > 0, labels
    are dropped to ``null_label`` (default: the model's own, ``num_classes`` for the U-Net) at that rate
    (``conditioning.drop_labels``). The inputs are checked here, once."""
    null_label = getattr(unwrap(model), "null_label", None) if null_label is None else null_label
    _check_loss_args(x0, target, weighting, p_uncond, y, null_label)
    t = torch.randint(0, s.num_steps, (x0.shape[0],), device=x0.device) if t is None else t
    if y is not None and p_uncond > 0:
        y = drop_labels(y, p_uncond, null_label)
    return per_sample_loss(model, x0, t, s, target, weighting, y, noise).mean()


def _check_loss_args(x0: Tensor, target: str, weighting: Optional[str], p_uncond: float,
                     y: Optional[Tensor], null_label: Optional[Null]) -> None:
    check_float(x0, "x0")
    check_target(target)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}; got {weighting!r}")
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1]; got {p_uncond}")
    if p_uncond > 0 and (y is None or null_label is None):
        raise ValueError("p_uncond > 0 needs labels y and the model's null_label (= num_classes)")
    if y is not None:
        check_labels(y, null_label, x0.shape[0])
