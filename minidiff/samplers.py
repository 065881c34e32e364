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
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Union

import torch
from torch import Tensor

from .conditioning import (
    Guidance,
    Target,
    as_guidance,
    check_float,
    check_model_labels,
    check_position,
    check_same_shape,
    guided_output,
    resolve_target,
    same_device,
    unwrap,
)
from .diffusion import eps_and_x0, q_posterior
from .progress import progress_bar
from .schedules import NoiseSchedule

Model = Callable[..., Tensor]
Spacing = Literal["trailing", "leading", "linspace"]
SamplerName = Literal["ddim", "dpm++", "ddpm"]
GuidanceArg = Union[float, Guidance, None]      # a scale w, a guidance function, or None (no guidance)


# -- one step each --------------------------------------------------------------------------------
# The step functions are the equations: their scalars come from the schedule's host tables
# (``s.alpha_sigma``, ``s.host``), and they check only what would otherwise give a silently wrong image
# (a position out of range, a tensor that would broadcast), all on the host. The loops below check the
# rest once, at their door.
def ddpm_step(x_t: Tensor, eps: Tensor, t: int, s: NoiseSchedule, noise: Optional[Tensor] = None,
              variance: Literal["beta", "posterior"] = "beta", clip_x0: bool = False,
              x0: Optional[Tensor] = None) -> Tensor:
    r"""One ancestral step (DDPM, Ho et al. 2020, Algorithm 2) at position ``t``, i.e. from step $k = t + 1$
    to step $k - 1$ (``x_t`` is $x_k$; the tables are read at ``[t]``, so ``s.betas[t]`` is $\beta_k$):
    $x_{k-1} = \frac{1}{\sqrt{\alpha_k}}\big(x_k - \frac{\beta_k}{\sqrt{1-\bar\alpha_k}}\hat\varepsilon\big) +
    \sigma_k z$,
    with $\sigma_k^2 = \beta_k$ or $\tilde\beta_k$ (``variance``). With ``clip_x0`` the mean is instead the
    posterior mean $\tilde\mu_k(x_k, \mathrm{clip}(\hat x_0))$. At position 0 (step 1, the last) no noise is
    added: Algorithm 2's "$z = 0$ if $t = 1$".
    ``x0`` is the network's $\hat x_0$ (optional): used by ``clip_x0``, and needed where $\beta_k = 1$ (a
    zero-terminal-SNR schedule's last step), where $\sqrt{\alpha_k} = 0$ and the mean is
    $\tilde\mu_k(x_k, \hat x_0) = \sqrt{\bar\alpha_{k-1}}\,\hat x_0$."""
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior'; got {variance!r}")
    t = _check_step(x_t, eps, t, s, noise=noise, x0=x0)
    beta, (_, sigma_t) = s.host["beta"][t + 1], s.alpha_sigma(t)
    if clip_x0 or beta == 1:                           # β_k = 1: √α_k = 0, only the posterior form is finite
        x0 = _x0_given(x_t, eps, t, s, x0, "β_t = 1")
        mean = q_posterior(x0.clamp(-1, 1) if clip_x0 else x0, x_t, t, s)[0]
    else:
        # μ = (x_k − β_k / √(1 − ᾱ_k) · ε̂) / √α_k   (DDPM eq. 11)
        mean = (x_t - beta / sigma_t * eps) / math.sqrt(1 - beta)
    if t == 0:                                          # position 0 = step 1, the last: Algorithm 2 adds no noise
        return mean
    sigma2 = beta if variance == "beta" else s.host["posterior_variance"][t + 1]
    return mean + math.sqrt(sigma2) * (torch.randn_like(x_t) if noise is None else noise)


def ddim_step(x_t: Tensor, eps: Tensor, t: int, t_prev: int, s: NoiseSchedule, eta: float = 0.0,
              noise: Optional[Tensor] = None, x0: Optional[Tensor] = None, clip_x0: bool = False) -> Tensor:
    r"""One DDIM step (Song et al. 2021, eq. 12) from position ``t`` to position ``t_prev`` < ``t``, i.e.
    from step $k = t + 1$ to step $j$ = ``t_prev`` $+ 1 < k$; ``t_prev = -1`` is step 0, "to $x_0$"
    ($\bar\alpha_0 = 1$). In the path's terms $\alpha = \sqrt{\bar\alpha}$, $\sigma = \sqrt{1 - \bar\alpha}$
    (``s.alpha_sigma``):

    $x_j = \alpha_j\,\hat x_0 + \sqrt{\sigma_j^2 - \sigma^2}\,\hat\varepsilon + \sigma z$,
    $\sigma = \eta\,\frac{\sigma_j}{\sigma_k}\sqrt{1 - \frac{\alpha_k^2}{\alpha_j^2}}$,
    $\hat x_0 = (x_k - \sigma_k\hat\varepsilon)/\alpha_k$.
    $\eta = 0$ is deterministic; $\eta = 1$ with $j = k - 1$ is DDPM with variance $\tilde\beta_k$.
    ``x0`` is the network's $\hat x_0$ (optional; computed from ``eps`` when None); it is needed where
    $\bar\alpha_k = 0$ (zero terminal SNR), where $\hat\varepsilon$ does not determine $\hat x_0$.
    With ``clip_x0``, $\hat x_0$ is clamped to $[-1, 1]$ and $\hat\varepsilon$ re-derived from it,
    $\hat\varepsilon = (x_k - \alpha_k\,\mathrm{clip}(\hat x_0))/\sigma_k$, so that
    $\eta = 1$, $j = k - 1$ is still DDPM's step with ``clip_x0`` (and variance $\tilde\beta_k$)."""
    t, t_prev = _check_step(x_t, eps, t, s, t_prev, "t_prev", noise, x0, eta)
    (alpha_t, sigma_t), (alpha_prev, sigma_prev) = s.alpha_sigma(t), s.alpha_sigma(t_prev)
    x0 = _x0_given(x_t, eps, t, s, x0)
    if clip_x0:                     # keep (x̂_0, ε̂) a consistent pair: x_k = α_k x̂_0 + σ_k ε̂
        x0 = x0.clamp(-1, 1)
        eps = (x_t - alpha_t * x0) / sigma_t
    sigma = eta * sigma_prev / sigma_t * math.sqrt(1 - alpha_t ** 2 / alpha_prev ** 2)
    # α_j x̂_0 + √(σ_j² − σ²) ε̂: the predicted x_0, re-noised to step j with the predicted ε
    x_prev = alpha_prev * x0 + math.sqrt(max(sigma_prev ** 2 - sigma ** 2, 0.0)) * eps
    if eta == 0:
        return x_prev
    return x_prev + sigma * (torch.randn_like(x_t) if noise is None else noise)


def dpm_solver_step(x_t: Tensor, x0: Tensor, t: int, t_next: int, s: NoiseSchedule,
                    x0_last: Optional[Tensor] = None, t_last: Optional[int] = None) -> Tensor:
    r"""One DPM-Solver++(2M) step (Lu et al. 2022, Algorithm 2) from position ``t`` to position ``t_next``,
    i.e. from step $k = t + 1$ to step $j$ = ``t_next`` $+ 1$, in the data-prediction form. With Lu et al.'s
    signal scale $\alpha_k = \sqrt{\bar\alpha_k}$ (``s.sqrt_alphas_cumprod``; not the course's one-step
    $\alpha_t = 1 - \beta_t$), $\sigma_k = \sqrt{1-\bar\alpha_k}$, $\lambda_k = \log(\alpha_k/\sigma_k)$ and
    $h = \lambda_j - \lambda_k$:

    $x_j = \frac{\sigma_j}{\sigma_k}\,x_k - \alpha_j\,(e^{-h} - 1)\,D$, where $D = \hat x_0$ (first order) or,
    given $\hat x_0$ at the previously visited position ``t_last`` (``x0_last``),
    $D = (1 + \tfrac{1}{2r})\,\hat x_0 - \tfrac{1}{2r}\,\hat x_0^{\text{last}}$ with $r = h_{\text{last}}/h$
    (second order). ``t_next = -1`` (step 0: $\sigma = 0$, $\lambda = \infty$) returns $\hat x_0$: the last
    step is first order."""
    t, t_next = _check_step(x_t, x0, t, s, t_next, "t_next", other_name="x0")
    t_last = _check_last(x_t, x0_last, t_last, t, s)
    if t_next == -1:
        return x0
    lam = s.host["half_log_snr"]                           # λ = log(α / σ) = ½ log SNR, at index t + 1
    h = lam[t_next + 1] - lam[t + 1]
    (_, sigma_t), (alpha_next, sigma_next) = s.alpha_sigma(t), s.alpha_sigma(t_next)
    d = x0
    if x0_last is not None:
        r = (lam[t + 1] - lam[t_last + 1]) / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_last
    # σ_j/σ_k · x_k − α_j (e^{−h} − 1) D
    return sigma_next / sigma_t * x_t - alpha_next * math.expm1(-h) * d


def _check_step(x_t: Tensor, other: Tensor, t: Any, s: NoiseSchedule, t_to: Any = None, to_name: str = "t_prev",
                noise: Optional[Tensor] = None, x0: Optional[Tensor] = None, eta: float = 0.0,
                other_name: str = "eps") -> Any:
    """The host-side checks of a step: ``eta`` a number in [0, 1], every tensor shaped like ``x_t``, positions in
    range (``t_to`` < ``t``, −1 meaning step 0). Returns ``t`` (and ``t_to``) as ints."""
    eta = check_eta(eta)
    check_float(x_t, "x_t")
    for tensor, name in ((other, other_name), (noise, "noise"), (x0, "x0")):
        if tensor is not None:
            check_same_shape(tensor, x_t, name, "x_t")
    t = check_position(t, s.num_steps, "t")
    if t_to is None:
        return t
    t_to = check_position(t_to, s.num_steps, to_name, allow_minus_one=True)
    if t_to >= t:
        raise ValueError(f"{to_name} must be smaller than t (−1 means 'to x_0'); got t={t}, {to_name}={t_to}")
    return t, t_to


def _check_last(x_t: Tensor, x0_last: Optional[Tensor], t_last: Any, t: int, s: NoiseSchedule) -> Optional[int]:
    """DPM-Solver++'s history: x̂_0 and the position of the step visited before ``t``, both or neither."""
    if (x0_last is None) != (t_last is None):
        raise ValueError("x0_last and t_last go together (the previous step's x̂_0 and its timestep); got "
                         f"x0_last={'a tensor' if x0_last is not None else None} and t_last={t_last!r}")
    if x0_last is None:
        return None
    t_last = check_position(t_last, s.num_steps, "t_last")
    check_same_shape(x0_last, x_t, "x0_last", "x_t")
    if t_last <= t:
        raise ValueError(f"t_last must be larger than t (the step visited before it); got t_last={t_last}, t={t}")
    return t_last


def _x0_given(x_t: Tensor, eps: Tensor, t: int, s: NoiseSchedule, x0: Optional[Tensor],
              where: str = "ᾱ_t = 0") -> Tensor:
    r"""$\hat x_0$: the one given, else $(x_t - \sigma_t\hat\varepsilon)/\alpha_t$, which needs $\alpha_t > 0$."""
    if x0 is not None:
        return x0
    alpha_t, sigma_t = s.alpha_sigma(t)
    if alpha_t == 0:
        raise ValueError(f"at t={t} {where} (zero terminal SNR): x̂_0 cannot be recovered from ε̂ there; pass the "
                         f"network's x̂_0 as x0 (predict_eps returns it)")
    return (x_t - sigma_t * eps) / alpha_t


# -- the model, guided ----------------------------------------------------------------------------
DTYPES = (None, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Denoiser:
    r"""A model made ready for one sampling run: its labels ``y`` (checked), its guidance, the target its
    output is read as and the ``dtype`` it runs in (None: its own; ``torch.bfloat16``: under autocast), all
    settled once, before the loop (``prepare``). Calling it at $(x_t, t)$ gives $(\hat\varepsilon, \hat x_0)$."""
    model: Model
    y: Optional[Tensor]
    guidance: Optional[Guidance]
    target: Target
    dtype: Optional[torch.dtype] = None

    def __call__(self, x_t: Tensor, t: int, s: NoiseSchedule) -> tuple[Tensor, Tensor]:
        with torch.autocast(x_t.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            out = guided_output(self.model, x_t, t, self.y, self.guidance)
        return eps_and_x0(out.to(x_t.dtype), x_t, t, s, self.target)


def prepare(model: Model, s: NoiseSchedule, shape: tuple[int, ...], y: Optional[Tensor] = None,
            guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
            dtype: Optional[torch.dtype] = None) -> Denoiser:
    """Check a sampling call once, at its door: the target to read, the guidance, the labels, the dtype."""
    target, guidance = resolve_target(model, target), as_guidance(guidance_scale)
    if guidance is not None and y is None:
        raise ValueError("guidance_scale needs labels y (guidance mixes the conditional and unconditional model)")
    if y is not None:
        check_model_labels(model, y, shape[0])
    trained_on = getattr(unwrap(model), "num_steps", None)
    if trained_on is not None and trained_on != s.num_steps:
        raise ValueError(f"the model was trained on a schedule of T={trained_on} steps, but s has T={s.num_steps}: "
                         f"its t would mean other noise levels; sample it with its own schedule (load_diffusion "
                         f"returns it)")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (None: the model's own dtype, no autocast); got {dtype!r}")
    return Denoiser(model, y, guidance, target, dtype)


def predict_eps(model: Model, x_t: Tensor, t: int, s: NoiseSchedule, y: Optional[Tensor] = None,
                guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
                dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor]:
    r"""$(\hat\varepsilon, \hat x_0)$ at ``x_t`` and position ``t`` (step $t + 1$), the output read as the
    model's own ``target`` (or the ``target`` given, which must agree with it). With labels ``y`` and a
    guidance scale $w$ (or a ``minidiff.guidance`` function),
    $\hat\varepsilon = \varepsilon_u + w(\varepsilon_c - \varepsilon_u)$ from one batched pass; $w = 1$ is plain
    conditional, $w = 0$ unconditional. ``dtype=torch.bfloat16`` runs the network under autocast (only
    when asked). One call; a loop prepares once (``prepare``) and calls the ``Denoiser`` it returns."""
    return prepare(model, s, tuple(x_t.shape), y, guidance_scale, target, dtype)(x_t, t, s)


# -- full loops ------------------------------------------------------------------------------------
def ddpm_sample(model: Model, s: NoiseSchedule, shape: tuple[int, ...], y: Optional[Tensor] = None,
                guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
                variance: Literal["beta", "posterior"] = "beta", clip_x0: bool = False,
                generator: Optional[torch.Generator] = None, return_trajectory: bool = False,
                progress: Optional[bool] = None,
                dtype: Optional[torch.dtype] = None) -> Union[Tensor, tuple[Tensor, dict]]:
    r"""Ancestral sampling through all $T$ steps: $x_T \sim \mathcal N(0, I)$, then ``ddpm_step`` at positions
    $T-1, \dots, 0$ (steps $T, \dots, 1$). Returns $x_0$ (and, with ``return_trajectory``, the image entering
    each step and its $\hat x_0$; the trajectory's ``"t"`` lists positions). ``dtype=torch.bfloat16`` runs the
    network under autocast (as every loop here: only when asked)."""
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior'; got {variance!r}")
    denoise = prepare(model, s, _check_shape(shape), y, guidance_scale, target, dtype)
    _check_target_at_zero_snr(denoise.target, s, s.num_steps - 1)
    x = _initial_noise(shape, s, generator)
    trajectory = {"t": [], "x_t": [], "x0": []}
    for t in progress_bar(range(s.num_steps - 1, -1, -1), progress, "DDPM", leave=False):
        eps, x0 = denoise(x, t, s)
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
                progress: Optional[bool] = None, clip_x0: bool = False,
                dtype: Optional[torch.dtype] = None) -> Union[Tensor, tuple[Tensor, dict]]:
    r"""DDIM sampling over a subsequence of ``steps`` positions (``ddim_timesteps``), deterministic at
    $\eta = 0$: the same starting noise ``x_T`` always gives the same image. ``eta=1`` gives DDPM's ancestral
    steps over the subsequence; ``clip_x0`` clamps each $\hat x_0$ to $[-1, 1]$ (see ``ddim_step``), which keeps
    briefly trained models from drifting out of range."""
    ts, eta = ddim_timesteps(s.num_steps, steps, spacing), check_eta(eta)
    denoise = prepare(model, s, _check_shape(shape if x_T is None else tuple(x_T.shape)), y, guidance_scale, target,
                      dtype)
    _check_target_at_zero_snr(denoise.target, s, ts[0])
    x = _initial_noise(shape, s, generator) if x_T is None else _check_start(x_T, s, model)
    trajectory = {"t": [], "x_t": [], "x0": []}
    for t, t_prev in progress_bar(list(zip(ts, ts[1:] + [-1])), progress, "DDIM", leave=False):
        eps, x0 = denoise(x, t, s)
        _record(trajectory, return_trajectory, t, x, x0)
        noise = torch.randn(x.shape, device=x.device, generator=generator) if eta > 0 else None
        x = ddim_step(x, eps, t, t_prev, s, eta, noise, x0=x0, clip_x0=clip_x0)
    return (x, trajectory) if return_trajectory else x


def dpm_solver_sample(model: Model, s: NoiseSchedule, shape: tuple[int, ...], steps: int = 20,
                      y: Optional[Tensor] = None, guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
                      spacing: Spacing = "trailing", generator: Optional[torch.Generator] = None,
                      x_T: Optional[Tensor] = None, return_trajectory: bool = False,
                      progress: Optional[bool] = None,
                      dtype: Optional[torch.dtype] = None) -> Union[Tensor, tuple[Tensor, dict]]:
    r"""DPM-Solver++(2M): solve the probability-flow ODE in $\lambda$ with ``steps`` network calls,
    second order from the second step on, first order at the first and the last step."""
    ts = ddim_timesteps(s.num_steps, steps, spacing)
    denoise = prepare(model, s, _check_shape(shape if x_T is None else tuple(x_T.shape)), y, guidance_scale, target,
                      dtype)
    _check_target_at_zero_snr(denoise.target, s, ts[0])
    x = _initial_noise(shape, s, generator) if x_T is None else _check_start(x_T, s, model)
    trajectory = {"t": [], "x_t": [], "x0": []}
    x0_last, t_last = None, None
    for t, t_next in progress_bar(list(zip(ts, ts[1:] + [-1])), progress, "DPM-Solver++", leave=False):
        _, x0 = denoise(x, t, s)
        _record(trajectory, return_trajectory, t, x, x0)
        x = dpm_solver_step(x, x0, t, t_next, s, x0_last, t_last)
        x0_last, t_last = x0, t
    return (x, trajectory) if return_trajectory else x


SAMPLERS = ("ddim", "dpm++", "ddpm")


def sample(sampler: SamplerName, model: Model, s: NoiseSchedule, shape: tuple[int, ...], steps: int = 50,
           y: Optional[Tensor] = None, guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
           generator: Optional[torch.Generator] = None, batch_size: int = 500,
           dtype: Optional[torch.dtype] = None, progress: Optional[bool] = None) -> Tensor:
    """``shape[0]`` samples from the sampler named ``sampler`` ("ddim", "dpm++" or "ddpm"), with ``steps``
    network calls (DDPM always takes all T), drawn ``batch_size`` at a time to bound memory, one
    ``generator`` for all batches, so a seed gives the same images on every run.

    ``progress`` (every sampling loop takes it): a bar over the steps; None draws one in a notebook or on a
    terminal, for a loop that runs over 2 s (``minidiff.progress``), False never."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    batches = []
    for start in range(0, shape[0], batch_size):
        part = (min(batch_size, shape[0] - start), *shape[1:])
        y_part = y[start:start + batch_size] if y is not None else None
        if sampler == "ddpm":
            x = ddpm_sample(model, s, part, y=y_part, guidance_scale=guidance_scale, target=target, generator=generator,
                            dtype=dtype, progress=progress)
        else:
            solver = ddim_sample if sampler == "ddim" else dpm_solver_sample
            x = solver(model, s, part, steps=steps, y=y_part, guidance_scale=guidance_scale, target=target,
                       generator=generator, dtype=dtype, progress=progress)
        batches.append(x)
    return torch.cat(batches)


def ddim_invert(model: Model, s: NoiseSchedule, x0: Tensor, steps: int = 50, y: Optional[Tensor] = None,
                guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
                dtype: Optional[torch.dtype] = None, progress: Optional[bool] = None) -> Tensor:
    r"""Run deterministic DDIM *upwards*, from the image to $x_T$, over the "linspace" positions
    $0 = i_1 < \dots < i_n = T-1$ (steps $1, \dots, T$). From step $k$ to the next visited step $j > k$:
    $x_j = \sqrt{\bar\alpha_j}\,\hat x_0 + \sqrt{1-\bar\alpha_j}\,\hat\varepsilon$ with
    $\hat\varepsilon = \varepsilon_\theta(x_k, k)$, the prediction at the level just below. The image itself
    is taken as $x_1$, the image after step 1 (position 0, whose $\bar\alpha_1 = 1 - \beta_1$ is nearly 1).
    ``ddim_sample(..., spacing="linspace", x_T=ddim_invert(...))`` maps it back to (nearly) the image."""
    ts = ddim_timesteps(s.num_steps, steps, "linspace")[::-1]        # positions 0 … T−1, ascending
    x = _check_start(x0, s, model, "x0")
    denoise = prepare(model, s, _check_shape(tuple(x0.shape)), y, guidance_scale, target, dtype)
    for t, t_next in progress_bar(list(zip(ts, ts[1:])), progress, "DDIM inversion", leave=False):
        eps, x0_hat = denoise(x, t, s)
        alpha_next, sigma_next = s.alpha_sigma(t_next)
        x = alpha_next * x0_hat + sigma_next * eps
    return x


def slerp(z0: Tensor, z1: Tensor, alpha: Union[float, Tensor]) -> Tensor:
    r"""Spherical interpolation between two noises, per image:
    $\frac{\sin((1-a)\theta)}{\sin\theta} z_0 + \frac{\sin(a\theta)}{\sin\theta} z_1$,
    $\cos\theta = \frac{\langle z_0, z_1\rangle}{|z_0||z_1|}$.
    Unlike a straight line, it keeps the norm of Gaussian noise (~√d), so every point is a plausible $x_T$."""
    if z0.shape != z1.shape:
        raise ValueError(f"z1 must have the shape of z0, {tuple(z0.shape)}; got {tuple(z1.shape)}")
    a = torch.as_tensor(alpha, dtype=z0.dtype, device=z0.device).reshape(-1, *([1] * (z0.ndim - 1)))
    flat0, flat1 = z0.flatten(1), z1.flatten(1)
    cos = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1, 1)).reshape(-1, *([1] * (z0.ndim - 1)))
    spherical = (torch.sin((1 - a) * theta) * z0 + torch.sin(a * theta) * z1) / torch.sin(theta)
    # θ → 0 (the same noise twice): sin((1−a)θ)/sin θ → 1 − a and sin(aθ)/sin θ → a, the straight line
    return torch.where(theta.abs() < 1e-4, (1 - a) * z0 + a * z1, spherical)


# -- samples during training -----------------------------------------------------------------------------------
def ddim_sample_fn(s: NoiseSchedule, shape: tuple[int, ...], labels: Optional[Tensor] = None,
                   steps: int = 50, guidance_scale: GuidanceArg = None, target: Optional[Target] = None,
                   seed: int = 0,
                   dtype: Optional[torch.dtype] = None) -> Callable[[torch.torch.nn.Module, int], Tensor]:
    """A ``sample_fn`` for the Trainer: DDIM from the same seeded noise every time, so successive
    grids show the same samples improving. Its own generator leaves the training RNG untouched.
    It runs on the device of the model it is given, and reads the model's own target."""
    def sample(model: torch.nn.Module, step: int) -> Tensor:
        device = next(model.parameters()).device
        s_here = s if s.device == device else s.to(device)
        y = labels.to(device) if labels is not None else None
        return ddim_sample(model, s_here, shape, steps=steps, y=y, guidance_scale=guidance_scale, target=target,
                           generator=torch.Generator(device).manual_seed(seed), dtype=dtype)
    return sample


# -- helpers ----------------------------------------------------------------------------------------
def check_eta(eta: Any) -> float:
    """η of DDIM, checked at the door: a number (TypeError otherwise) in [0, 1] (ValueError)."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)):
        raise TypeError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM-like); got "
                        f"{type(eta).__name__} {eta!r}")
    if not math.isfinite(eta) or not 0 <= eta <= 1:
        raise ValueError(f"eta must be a finite number >= 0 and <= 1 (0: deterministic DDIM, 1: DDPM-like; above 1, "
                         f"σ exceeds σ_j and the ε̂ term √(σ_j² − σ²) is undefined); got {eta!r}")
    return float(eta)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a batch to sample, (B, …) with B >= 1."""
    if not isinstance(shape, (tuple, list, torch.Size)) or not shape or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"shape must be a tuple of ints >= 1, (B, C, H, W) with a batch B >= 1; got {shape!r}")
    return tuple(shape)


def _check_target_at_zero_snr(target: Target, s: NoiseSchedule, first_t: int) -> None:
    """An ε-model cannot start where ᾱ = 0: there x_t = ε exactly, so ε̂ says nothing about x̂_0."""
    if target == "eps" and s.zero_terminal_snr and first_t == s.num_steps - 1:
        raise ValueError(f"an ε-prediction model cannot be sampled from t={first_t} of a zero-terminal-SNR schedule: "
                         f"there ᾱ_t = 0 and x_t = ε, so x̂_0 = (x_t − ε̂)/0 (Lin et al. 2024, §3.2); train it with "
                         f"target='v' (or 'x0')")


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


# A loop starts from x_T ~ N(0, I), which is q(x_T) only when ᾱ_T ≈ 0. Above this ᾱ_T (x_T keeps √0.05 ≈ 22%
# of the image's amplitude) the samples come from a start the model never saw, and a warning says so (issue 28).
TERMINAL_SIGNAL_WARNING = 0.05


def _initial_noise(shape: tuple[int, ...], s: NoiseSchedule, generator: Optional[torch.Generator]) -> Tensor:
    device = generator.device if generator is not None else s.device
    if not same_device(device, s.device):
        raise ValueError(f"generator is on {device} but the schedule is on {s.device}; use one device")
    abar_T = s.host["sqrt_abar"][-1] ** 2
    if abar_T > TERMINAL_SIGNAL_WARNING:
        warnings.warn(f"s ends at ᾱ_T = {abar_T:.4g} (T = {s.num_steps}): x_T still holds {abar_T ** 0.5:.0%} of the "
                      f"image, so starting from pure noise N(0, I) is not q(x_T) and the samples will be off; use a "
                      f"schedule that ends near ᾱ_T = 0 (more steps, a larger beta_end, or the cosine schedule)",
                      stacklevel=3)
    return torch.randn(shape, device=device, generator=generator)


def _record(trajectory: dict, enabled: bool, t: int, x_t: Tensor, x0: Tensor) -> None:
    if enabled:
        trajectory["t"].append(t)
        trajectory["x_t"].append(x_t.detach().cpu())
        trajectory["x0"].append(x0.detach().cpu())
