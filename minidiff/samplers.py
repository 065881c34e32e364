r"""Samplers: run the learned reverse process from pure noise $x_T \sim \mathcal N(0, I)$ to $x_0$.

Formulas count the papers' steps $1, \dots, T$; every ``t`` argument here is minidiff's 0-indexed
*position*: position ``t`` is step $t + 1$ (``s.alphas_cumprod[t]`` is its $\bar\alpha$), and position
$-1$, where a step function accepts it, is step 0, the clean image ($\bar\alpha_0 = 1$).

A sampler needs, at each step, the network's noise estimate $\hat\varepsilon$ (and from it
$\hat x_0$). ``predict_eps`` gets both, reading the output as what the model says it predicts
(``model.target``: ε, x_0 or v), with classifier-free guidance from ``minidiff.guidance`` when asked.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .diffusion import Target, _check_float, _check_same_shape, eps_and_x0, predict_x0_from_eps, q_posterior, resolve_target, unwrap
from .guidance import Guidance, as_guidance, check_labels, guided_output
from .schedules import NoiseSchedule, Timesteps, check_timesteps, extract, same_device

Model = Callable[..., Tensor]
Spacing = Literal["trailing", "leading", "linspace"]
SamplerName = Literal["ddim", "dpm++", "ddpm"]
GuidanceArg = Union[float, Guidance, None]      # a scale w, a guidance function, or None (no guidance)


# -- one step each --------------------------------------------------------------------------------
def ddpm_step(x_t: Tensor, eps: Tensor, t: int, s: NoiseSchedule, noise: Optional[Tensor] = None,
              variance: Literal["beta", "posterior"] = "beta", clip_x0: bool = False,
              x0: Optional[Tensor] = None) -> Tensor:
    r"""One ancestral step (DDPM, Ho et al. 2020, Algorithm 2) at position ``t``, i.e. from step $k = t + 1$
    to step $k - 1$ (``x_t`` is $x_k$; the tables are read at ``[t]``, so ``s.betas[t]`` is $\beta_k$):
    $x_{k-1} = \frac{1}{\sqrt{\alpha_k}}\big(x_k - \frac{\beta_k}{\sqrt{1-\bar\alpha_k}}\hat\varepsilon\big) + \sigma_k z$,
    with $\sigma_k^2 = \beta_k$ or $\tilde\beta_k$ (``variance``). With ``clip_x0`` the mean is instead the
    posterior mean $\tilde\mu_k(x_k, \mathrm{clip}(\hat x_0))$. At position 0 (step 1, the last) no noise is
    added: Algorithm 2's "$z = 0$ if $t = 1$".
    ``x0`` is the network's $\hat x_0$ (optional): used by ``clip_x0``, and needed where $\beta_k = 1$ (a
    zero-terminal-SNR schedule's last step), where $\sqrt{\alpha_k} = 0$ and the mean is
    $\tilde\mu_k(x_k, \hat x_0) = \sqrt{\bar\alpha_{k-1}}\,\hat x_0$."""
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior'; got {variance!r}")
    t = _one_timestep(t, s, "t")
    _check_like(x_t, eps, "eps", noise)
    if x0 is not None:
        _check_like(x_t, x0, "x0")
    at_zero_snr = s.zero_terminal_snr and t == s.num_steps - 1          # α_t = 0 there
    if x0 is None and at_zero_snr:
        raise ValueError(f"at t={t} β_t = 1 (zero terminal SNR): x̂_0 cannot be recovered from ε̂ there; pass the "
                         f"network's x̂_0 as x0 (predict_eps returns it)")
    if clip_x0 or at_zero_snr:
        x0 = predict_x0_from_eps(x_t, t, eps, s) if x0 is None else x0
        mean = q_posterior(x0.clamp(-1, 1) if clip_x0 else x0, x_t, t, s)[0]
    else:
        # μ = (x_k − β_k / √(1 − ᾱ_k) · ε̂) / √α_k, step k read at [t]   (DDPM eq. 11)
        mean = (x_t - extract(s.betas / s.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / extract(s.alphas.sqrt(), t, x_t)
    if t == 0:                                          # position 0 = step 1, the last: Algorithm 2 adds no noise
        return mean
    sigma2 = s.betas if variance == "beta" else s.posterior_variance
    noise = torch.randn_like(x_t) if noise is None else noise
    return mean + extract(sigma2.sqrt(), t, x_t) * noise


def ddim_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: NoiseSchedule, eta: float = 0.0,
              noise: Optional[Tensor] = None, x0: Optional[Tensor] = None, clip_x0: bool = False) -> Tensor:
    r"""One DDIM step (Song et al. 2021, eq. 12) from position ``t`` to position ``t_prev`` < ``t``, i.e.
    from step $k = t + 1$ to step $j$ = ``t_prev`` $+ 1 < k$; ``t_prev = -1`` is step 0, "to $x_0$"
    ($\bar\alpha_0 = 1$):

    $x_j = \sqrt{\bar\alpha_j}\,\hat x_0 + \sqrt{1 - \bar\alpha_j - \sigma^2}\,\hat\varepsilon + \sigma z$,
    $\sigma = \eta\sqrt{\frac{1-\bar\alpha_j}{1-\bar\alpha_k}}\sqrt{1 - \frac{\bar\alpha_k}{\bar\alpha_j}}$.
    $\eta = 0$ is deterministic; $\eta = 1$ with $j = k - 1$ is DDPM with variance $\tilde\beta_k$.
    ``x0`` is the network's $\hat x_0$ (optional; computed from ``eps`` when None); it is needed where
    $\bar\alpha_k = 0$ (zero terminal SNR), where $\hat\varepsilon$ does not determine $\hat x_0$.
    With ``clip_x0``, $\hat x_0$ is clamped to $[-1, 1]$ and $\hat\varepsilon$ re-derived from it,
    $\hat\varepsilon = (x_k - \sqrt{\bar\alpha_k}\,\mathrm{clip}(\hat x_0))/\sqrt{1-\bar\alpha_k}$, so that
    $\eta = 1$, $j = k - 1$ is still DDPM's step with ``clip_x0`` (and variance $\tilde\beta_k$)."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0 (0: deterministic DDIM, 1: DDPM-like); got {eta!r}")
    _check_like(x_t, eps, "eps", noise)
    if x0 is not None:
        _check_like(x_t, x0, "x0")
    t, t_prev = _check_step_pair(t, t_prev, s)
    # ᾱ_0 = 1 prepended, so this table's index is the step: [t + 1] is ᾱ_k of position t, [0] is ᾱ_0 (x_0)
    abar = torch.cat([s.alphas_cumprod.new_ones(1), s.alphas_cumprod])
    abar_t, abar_prev = extract(abar, t + 1, x_t), extract(abar, t_prev + 1, x_t)
    if x0 is None:
        if s.zero_terminal_snr and bool((t == s.num_steps - 1).any()):
            raise ValueError(f"at t={t.tolist()} ᾱ_t = 0 (zero terminal SNR): x̂_0 cannot be recovered from ε̂ "
                             f"there; pass the network's x̂_0 as x0 (predict_eps returns it)")
        x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
    if clip_x0:                     # keep (x̂_0, ε̂) a consistent pair: x_k = √ᾱ_k x̂_0 + √(1 − ᾱ_k) ε̂
        x0 = x0.clamp(-1, 1)
        eps = (x_t - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
    sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
    # √ᾱ_j x̂_0 + √(1 − ᾱ_j − σ²) ε̂: the predicted x_0, re-noised to step j with the predicted ε
    x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    if eta == 0:
        return x_prev
    noise = torch.randn_like(x_t) if noise is None else noise
    return x_prev + sigma * noise


def dpm_solver_step(x_t: Tensor, x0: Tensor, t: int, t_next: int, s: NoiseSchedule,
                    x0_last: Optional[Tensor] = None, t_last: Optional[int] = None) -> Tensor:
    r"""One DPM-Solver++(2M) step (Lu et al. 2022, Algorithm 2) from position ``t`` to position ``t_next``,
    i.e. from step $k = t + 1$ to step $j$ = ``t_next`` $+ 1$, in the data-prediction form. With Lu et al.'s
    signal scale $\alpha_k = \sqrt{\bar\alpha_k}$ (``s.sqrt_alphas_cumprod``; not the course's one-step
    $\alpha_t = 1 - \beta_t$), $\sigma_k = \sqrt{1-\bar\alpha_k}$, $\lambda_k = \log(\alpha_k/\sigma_k)$ and
    $h = \lambda_j - \lambda_k$:

    $x_j = \frac{\sigma_j}{\sigma_k}\,x_k - \alpha_j\,(e^{-h} - 1)\,D$, where $D = \hat x_0$ (first order) or,
    given $\hat x_0$ at the previously visited position ``t_last`` (``x0_last``),
    $D = (1 + \tfrac{1}{2r})\,\hat x_0 - \tfrac{1}{2r}\,\hat x_0^{\text{last}}$ with $r = h_{\text{last}}/h$ (second order).
    ``t_next = -1`` (step 0: $\sigma = 0$, $\lambda = \infty$) returns $\hat x_0$: the last step is first order."""
    t, t_next = _one_timestep(t, s, "t"), _one_timestep(t_next, s, "t_next", allow_minus_one=True)
    _check_step_pair(t, t_next, s)
    _check_like(x_t, x0, "x0")
    if (x0_last is None) != (t_last is None):
        raise ValueError("x0_last and t_last go together (the previous step's x̂_0 and its timestep); got "
                         f"x0_last={'a tensor' if x0_last is not None else None} and t_last={t_last!r}")
    if x0_last is not None:
        t_last = _one_timestep(t_last, s, "t_last")
        _check_like(x_t, x0_last, "x0_last")
        if t_last <= t:
            raise ValueError(f"t_last must be larger than t (the step visited before it); got t_last={t_last}, t={t}")
    if t_next == -1:
        return x0
    lam = 0.5 * s.log_snr                                    # λ = log(α / σ) = ½ log SNR, one per position
    h = lam[t_next] - lam[t]
    alpha_next = s.sqrt_alphas_cumprod[t_next]
    ratio = s.sqrt_one_minus_alphas_cumprod[t_next] / s.sqrt_one_minus_alphas_cumprod[t]
    d = x0
    if x0_last is not None:
        r = (lam[t] - lam[t_last]) / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_last
    # σ_j/σ_k · x_k − α_j (e^{−h} − 1) D
    return ratio.to(x_t.dtype) * x_t - (alpha_next * torch.expm1(-h)).to(x_t.dtype) * d


# -- the model, guided ----------------------------------------------------------------------------
def predict_eps(model: Model, x_t: Tensor, t: int, s: NoiseSchedule, y: Optional[Tensor] = None,
                guidance_scale: GuidanceArg = None, target: Optional[Target] = None) -> tuple[Tensor, Tensor]:
    r"""$(\hat\varepsilon, \hat x_0)$ at ``x_t`` and position ``t`` (step $t + 1$), the output read as the
    model's own ``target`` (or the ``target`` given, which must agree with it). With labels ``y`` and a
    guidance scale $w$ (or a ``minidiff.guidance`` function),
    $\hat\varepsilon = \varepsilon_u + w(\varepsilon_c - \varepsilon_u)$ from one batched pass; $w = 1$ is plain
    conditional, $w = 0$ unconditional. On CUDA the network runs in bf16."""
    target, guidance = resolve_target(model, target), as_guidance(guidance_scale)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x_t.is_cuda):
        out = guided_output(model, x_t, t, y, guidance).float()
    return eps_and_x0(out, x_t, t, s, target)


def _prepare(model: Model, s: NoiseSchedule, shape: tuple[int, ...], y: Optional[Tensor],
             guidance_scale: GuidanceArg, target: Optional[Target]) -> tuple[Target, Optional[Guidance]]:
    """Check a sampling call once, before its loop: the target to read, the guidance, the labels."""
    target, guidance = resolve_target(model, target), as_guidance(guidance_scale)
    if guidance is not None and y is None:
        raise ValueError("guidance_scale needs labels y (guidance mixes the conditional and unconditional model)")
    if y is not None:
        _check_labels(model, y, shape)
    return target, guidance


# -- full loops ------------------------------------------------------------------------------------
def ddpm_sample(model: Model, s: NoiseSchedule, shape: tuple[int, ...], y: Optional[Tensor] = None,
                guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
                variance: Literal["beta", "posterior"] = "beta", clip_x0: bool = False,
                generator: Optional[torch.Generator] = None, return_trajectory: bool = False,
                progress: bool = False) -> Union[Tensor, tuple[Tensor, dict]]:
    r"""Ancestral sampling through all $T$ steps: $x_T \sim \mathcal N(0, I)$, then ``ddpm_step`` at positions
    $T-1, \dots, 0$ (steps $T, \dots, 1$). Returns $x_0$ (and, with ``return_trajectory``, the image entering
    each step and its $\hat x_0$; the trajectory's ``"t"`` lists positions)."""
    target, guidance_scale = _prepare(model, s, shape, y, guidance_scale, target)
    _check_target_at_zero_snr(target, s, s.num_steps - 1)
    x = _initial_noise(shape, s, generator)
    trajectory = {"t": [], "x_t": [], "x0": []}
    for t in tqdm(range(s.num_steps - 1, -1, -1), disable=not progress, desc="DDPM"):
        eps, x0 = predict_eps(model, x, t, s, y, guidance_scale, target)
        _record(trajectory, return_trajectory, t, x, x0)
        noise = torch.randn(x.shape, device=x.device, generator=generator) if t > 0 else None
        x = ddpm_step(x, eps, t, s, noise, variance, clip_x0, x0=x0)
    return (x, trajectory) if return_trajectory else x


def ddim_timesteps(num_steps: int, steps: int, spacing: Spacing = "trailing") -> list[int]:
    """The ``steps`` positions a DDIM run visits, largest first. "trailing" starts at position T−1 (step T,
    pure noise); "leading" (the spacing of early DDIM code) starts at position (steps−1)·⌊T/steps⌋ and so
    begins sampling from an image that is *not* pure noise, a classic source of washed-out samples."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_steps:
        raise ValueError(f"steps must be an int in [1, {num_steps}]; got {steps!r}")
    if spacing == "trailing":
        ts = torch.arange(num_steps, 0, -num_steps / steps).round().long() - 1
    elif spacing == "leading":
        ts = (torch.arange(steps) * (num_steps // steps)).flip(0)
    elif spacing == "linspace":
        ts = torch.linspace(0, num_steps - 1, steps).round().long().flip(0)
    else:
        raise ValueError(f"spacing must be one of ('trailing', 'leading', 'linspace'); got {spacing!r}")
    return ts.tolist()


def ddim_sample(model: Model, s: NoiseSchedule, shape: tuple[int, ...], steps: int = 50, eta: float = 0.0,
                y: Optional[Tensor] = None, guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
                spacing: Spacing = "trailing", generator: Optional[torch.Generator] = None,
                x_T: Optional[Tensor] = None, return_trajectory: bool = False,
                progress: bool = False, clip_x0: bool = False) -> Union[Tensor, tuple[Tensor, dict]]:
    r"""DDIM sampling over a subsequence of ``steps`` positions (``ddim_timesteps``), deterministic at
    $\eta = 0$: the same starting noise ``x_T`` always gives the same image. ``eta=1`` gives DDPM's ancestral
    steps over the subsequence; ``clip_x0`` clamps each $\hat x_0$ to $[-1, 1]$ (see ``ddim_step``), which keeps
    briefly trained models from drifting out of range."""
    ts = ddim_timesteps(s.num_steps, steps, spacing)
    target, guidance_scale = _prepare(model, s, shape if x_T is None else tuple(x_T.shape), y, guidance_scale, target)
    _check_target_at_zero_snr(target, s, ts[0])
    x = _initial_noise(shape, s, generator) if x_T is None else _check_start(x_T, s, model)
    trajectory = {"t": [], "x_t": [], "x0": []}
    for t, t_prev in tqdm(list(zip(ts, ts[1:] + [-1])), disable=not progress, desc="DDIM"):
        eps, x0 = predict_eps(model, x, t, s, y, guidance_scale, target)
        _record(trajectory, return_trajectory, t, x, x0)
        noise = torch.randn(x.shape, device=x.device, generator=generator) if eta > 0 else None
        x = ddim_step(x, eps, t, t_prev, s, eta, noise, x0=x0, clip_x0=clip_x0)
    return (x, trajectory) if return_trajectory else x


def dpm_solver_sample(model: Model, s: NoiseSchedule, shape: tuple[int, ...], steps: int = 20,
                      y: Optional[Tensor] = None, guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
                      spacing: Spacing = "trailing", generator: Optional[torch.Generator] = None,
                      x_T: Optional[Tensor] = None, return_trajectory: bool = False,
                      progress: bool = False) -> Union[Tensor, tuple[Tensor, dict]]:
    r"""DPM-Solver++(2M): solve the probability-flow ODE in $\lambda$ with ``steps`` network calls,
    second order from the second step on, first order at the first and the last step."""
    ts = ddim_timesteps(s.num_steps, steps, spacing)
    target, guidance_scale = _prepare(model, s, shape if x_T is None else tuple(x_T.shape), y, guidance_scale, target)
    _check_target_at_zero_snr(target, s, ts[0])
    x = _initial_noise(shape, s, generator) if x_T is None else _check_start(x_T, s, model)
    trajectory = {"t": [], "x_t": [], "x0": []}
    x0_last, t_last = None, None
    for t, t_next in tqdm(list(zip(ts, ts[1:] + [-1])), disable=not progress, desc="DPM-Solver++"):
        _, x0 = predict_eps(model, x, t, s, y, guidance_scale, target)
        _record(trajectory, return_trajectory, t, x, x0)
        x = dpm_solver_step(x, x0, t, t_next, s, x0_last, t_last)
        x0_last, t_last = x0, t
    return (x, trajectory) if return_trajectory else x


SAMPLERS = ("ddim", "dpm++", "ddpm")


def sample(sampler: SamplerName, model: Model, s: NoiseSchedule, shape: tuple[int, ...], steps: int = 50,
           y: Optional[Tensor] = None, guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
           generator: Optional[torch.Generator] = None, batch_size: int = 500) -> Tensor:
    """``shape[0]`` samples from the sampler named ``sampler`` ("ddim", "dpm++" or "ddpm"), with ``steps``
    network calls (DDPM always takes all T), drawn ``batch_size`` at a time to bound memory, one
    ``generator`` for all batches, so a seed gives the same images on every run."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    batches = []
    for start in range(0, shape[0], batch_size):
        part = (min(batch_size, shape[0] - start), *shape[1:])
        y_part = y[start:start + batch_size] if y is not None else None
        if sampler == "ddpm":
            x = ddpm_sample(model, s, part, y=y_part, guidance_scale=guidance_scale, target=target, generator=generator)
        else:
            solver = ddim_sample if sampler == "ddim" else dpm_solver_sample
            x = solver(model, s, part, steps=steps, y=y_part, guidance_scale=guidance_scale, target=target,
                       generator=generator)
        batches.append(x)
    return torch.cat(batches)


def ddim_invert(model: Model, s: NoiseSchedule, x0: Tensor, steps: int = 50, y: Optional[Tensor] = None,
                guidance_scale: GuidanceArg = None, target: Optional[Target] = None) -> Tensor:
    r"""Run deterministic DDIM *upwards*, from the image to $x_T$, over the "linspace" positions
    $0 = i_1 < \dots < i_n = T-1$ (steps $1, \dots, T$). From step $k$ to the next visited step $j > k$:
    $x_j = \sqrt{\bar\alpha_j}\,\hat x_0 + \sqrt{1-\bar\alpha_j}\,\hat\varepsilon$ with $\hat\varepsilon = \varepsilon_\theta(x_k, k)$,
    the prediction at the level just below. The image itself is taken as $x_1$, the image after step 1
    (position 0, whose $\bar\alpha_1 = 1 - \beta_1$ is nearly 1).
    ``ddim_sample(..., spacing="linspace", x_T=ddim_invert(...))`` maps it back to (nearly) the image."""
    ts = ddim_timesteps(s.num_steps, steps, "linspace")[::-1]        # positions 0 … T−1, ascending
    target, guidance_scale = _prepare(model, s, tuple(x0.shape), y, guidance_scale, target)
    x = _check_start(x0, s, model, "x0")
    for t, t_next in zip(ts, ts[1:]):
        eps, x0_hat = predict_eps(model, x, t, s, y, guidance_scale, target)
        abar_next = extract(s.alphas_cumprod, t_next, x)
        x = abar_next.sqrt() * x0_hat + (1 - abar_next).sqrt() * eps
    return x


def slerp(z0: Tensor, z1: Tensor, alpha: Union[float, Tensor]) -> Tensor:
    r"""Spherical interpolation between two noises, per image:
    $\frac{\sin((1-a)\theta)}{\sin\theta} z_0 + \frac{\sin(a\theta)}{\sin\theta} z_1$, $\cos\theta = \frac{\langle z_0, z_1\rangle}{|z_0||z_1|}$.
    Unlike a straight line, it keeps the norm of Gaussian noise (~√d), so every point is a plausible $x_T$."""
    if z0.shape != z1.shape:
        raise ValueError(f"z1 must have the shape of z0, {tuple(z0.shape)}; got {tuple(z1.shape)}")
    a = torch.as_tensor(alpha, dtype=z0.dtype, device=z0.device).reshape(-1, *([1] * (z0.ndim - 1)))
    flat0, flat1 = z0.flatten(1), z1.flatten(1)
    cos = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1)).reshape(-1, *([1] * (z0.ndim - 1)))
    return (torch.sin((1 - a) * theta) * z0 + torch.sin(a * theta) * z1) / torch.sin(theta)


# -- helpers ----------------------------------------------------------------------------------------
def _check_step_pair(t: Timesteps, t_prev: Timesteps, s: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """Positions ``t`` in [0, T−1] and ``t_prev`` in [−1, T−1] (−1: step 0, "to x_0"), with ``t_prev`` < ``t``."""
    t = check_timesteps(t, s.num_steps, device=s.device)
    if isinstance(t_prev, int) and not isinstance(t_prev, bool) and not -1 <= t_prev < s.num_steps:
        raise ValueError(f"t_prev must be in [-1, {s.num_steps - 1}] (-1 means 'to x_0'; T={s.num_steps}); got {t_prev}")
    t_prev = check_timesteps(torch.as_tensor(t_prev, device=s.device) + 1, s.num_steps + 1, device=s.device) - 1
    if (t_prev >= t).any():
        raise ValueError(f"t_prev must be smaller than t (−1 means 'to x_0'); got t={t.tolist()}, t_prev={t_prev.tolist()}")
    return t, t_prev


def _check_target_at_zero_snr(target: Target, s: NoiseSchedule, first_t: int) -> None:
    """An ε-model cannot start where ᾱ = 0: there x_t = ε exactly, so ε̂ says nothing about x̂_0."""
    if target == "eps" and s.zero_terminal_snr and first_t == s.num_steps - 1:
        raise ValueError(f"an ε-prediction model cannot be sampled from t={first_t} of a zero-terminal-SNR schedule: "
                         f"there ᾱ_t = 0 and x_t = ε, so x̂_0 = (x_t − ε̂)/0 (Lin et al. 2024, §3.2); train it with "
                         f"target='v' (or 'x0')")


def _one_timestep(t: Timesteps, s: NoiseSchedule, name: str, allow_minus_one: bool = False) -> int:
    """One position shared by the batch, as an int (a 0-d tensor is read; a (B,) tensor is a TypeError)."""
    if isinstance(t, Tensor) and t.ndim == 0 and not t.is_floating_point():
        t = int(t)
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"{name} must be an int (one timestep for the whole batch); got "
                        f"{type(t).__name__}{tuple(t.shape) if isinstance(t, Tensor) else ''}")
    low = -1 if allow_minus_one else 0
    if not low <= t < s.num_steps:
        raise ValueError(f"{name} must be in [{low}, {s.num_steps - 1}] (T={s.num_steps}); got {t}")
    return t


def _check_like(x_t: Tensor, other: Tensor, name: str, noise: Optional[Tensor] = None) -> None:
    """``other`` (ε̂ or x̂_0) and ``noise`` must be float tensors shaped exactly like the float ``x_t``:
    broadcasting a batch of 1 against a batch of 4 would silently give wrong images."""
    _check_float(x_t, "x_t")
    _check_same_shape(other, x_t, name, "x_t")
    if noise is not None:
        _check_same_shape(noise, x_t, "noise", "x_t")


def _check_labels(model: Model, y: Tensor, shape: tuple[int, ...]) -> None:
    """Labels for a conditional model: int64 (B,) in [0, num_classes], num_classes being the null label;
    (B, K) for a model conditioned on K attributes (``guidance.check_labels``)."""
    null = getattr(unwrap(model), "null_label", None)
    if null is None:          # a plain function: only the form can be checked
        null = 2**62
    check_labels(y, null, shape[0])


def _check_start(x: Tensor, s: NoiseSchedule, model: Model, name: str = "x_T") -> Tensor:
    """A starting image for a loop: a float tensor on the schedule's device, in the model's dtype."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor; got {getattr(x, 'dtype', type(x).__name__)}")
    weights = next(unwrap(model).parameters(), None) if isinstance(unwrap(model), torch.nn.Module) else None
    if weights is not None and x.dtype != weights.dtype:
        raise TypeError(f"{name} is {x.dtype} but the model's weights are {weights.dtype}; cast one of them "
                        f"({name}.to({weights.dtype}) or model.to({x.dtype}))")
    if not same_device(x.device, s.device):
        raise ValueError(f"{name} is on {x.device} but the schedule is on {s.device}; use one device")
    return x


def _initial_noise(shape: tuple[int, ...], s: NoiseSchedule, generator: Optional[torch.Generator]) -> Tensor:
    device = generator.device if generator is not None else s.device
    if not same_device(device, s.device):
        raise ValueError(f"generator is on {device} but the schedule is on {s.device}; use one device")
    return torch.randn(shape, device=device, generator=generator)


def _record(trajectory: dict, enabled: bool, t: int, x_t: Tensor, x0: Tensor) -> None:
    if enabled:
        trajectory["t"].append(t)
        trajectory["x_t"].append(x_t.detach().cpu())
        trajectory["x0"].append(x0.detach().cpu())
