r"""Noise schedules: the variances $\beta_t$ of the forward process and everything derived from them.

The math numbers the steps as the papers do, $t = 1, \dots, T$, with $x_0$ the clean image and
$\bar\alpha_0 = 1$. The tables are 0-indexed: step $t$ sits at position $t - 1$, and every ``t``
argument in minidiff is a position. Every table is computed once, in float64, from ``betas``:

    betas[t-1]                 β_t
    alphas[t-1]                α_t = 1 − β_t
    alphas_cumprod[t-1]        ᾱ_t = ∏_{s=1}^{t} α_s      (how much of x_0's variance survives to x_t)
    alphas_cumprod_prev[t-1]   ᾱ_{t−1}, so alphas_cumprod_prev[0] = ᾱ_0 = 1
    log_snr[t-1]               log SNR(t) = log ᾱ_t − log(1 − ᾱ_t)

Formulas cast a table to the dtype of the image they meet (float32, bfloat16), via ``extract``.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Literal, Union

import torch
from torch import Tensor

from .conditioning import Timesteps, check_timesteps, same_device  # noqa: F401  (same_device: kept importable here)

ScheduleName = Literal["linear", "cosine", "sigmoid"]


class NoiseSchedule:
    r"""The tables of a discrete schedule $\beta_1, \dots, \beta_T$ (at positions 0 … T−1), all float64 on one device.

    Build one with ``NoiseSchedule.linear / cosine / sigmoid`` or ``NoiseSchedule(betas)``.
    ``schedule.to(device)`` returns a copy on another device; nothing moves by itself.
    """

    def __init__(self, betas: Tensor, name: str = "custom"):
        self.name = name
        self.betas = _validated_betas(betas)
        # α_t = 1 − β_t
        self.alphas = 1.0 - self.betas
        # ᾱ_t = ∏_{s=1}^{t} α_s
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # ᾱ_{t−1} at position t − 1; ᾱ_0 = 1 (the empty product): before step 1 nothing is destroyed
        self.alphas_cumprod_prev = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])
        # √ᾱ_t and √(1 − ᾱ_t): the signal and noise scales of q(x_t | x_0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(x_{t−1} | x_t, x_0)  (DDPM eq. 7)
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # log β̃_t, with β̃_1 = 0 (position 0) replaced by β̃_2 so the log stays finite (as in the DDPM code)
        self.posterior_log_variance_clipped = _clipped_log(self.posterior_variance)
        # log SNR(t) = log(ᾱ_t / (1 − ᾱ_t))
        self.log_snr = self.alphas_cumprod.log() - torch.log1p(-self.alphas_cumprod)
        # β_T = 1: ᾱ_T = 0, SNR(T) = 0 and log SNR(T) = −∞ (Lin et al. 2024); kept on the host, read per step
        self.zero_terminal_snr = bool(self.betas[-1] == 1)
        # the same numbers as Python floats, read once here: the step functions take their scalars from these
        # lists (index t + 1, with step 0 first: ᾱ_0 = 1), so a sampling step never waits on the device
        self.host = {"sqrt_abar": [1.0] + self.sqrt_alphas_cumprod.tolist(),
                     "sqrt_one_minus_abar": [0.0] + self.sqrt_one_minus_alphas_cumprod.tolist(),
                     "beta": [0.0] + self.betas.tolist(),
                     "posterior_variance": [0.0] + self.posterior_variance.tolist(),
                     "half_log_snr": [math.inf] + (0.5 * self.log_snr).tolist()}
        _warn_if_underflowing(self.sqrt_alphas_cumprod)

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        r"""DDPM's schedule (Ho et al. 2020): $\beta_t$ evenly spaced from ``beta_start`` to ``beta_end``."""
        _check_num_steps(num_steps)
        for arg, value in (("beta_start", beta_start), ("beta_end", beta_end)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"{arg} must be in (0, 1); got {value}")
        return cls(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64), name="linear")

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        r"""Nichol & Dhariwal (2021), eq. 17: $\bar\alpha_t = f(t/T)/f(0)$ with
        $f(u) = \cos^2\!\big(\tfrac{u + s}{1 + s}\cdot\tfrac{\pi}{2}\big)$, and
        $\beta_t = \min\big(1 - \bar\alpha_t / \bar\alpha_{t-1},\ \text{max\_beta}\big)$ for $t = 1, \dots, T$.
        The offset ``s`` keeps $\beta$ from being tiny near $t = 1$; the clip avoids $\beta = 1$ at $t = T$.
        """
        _check_num_steps(num_steps)
        if s < 0:
            raise ValueError(f"s must be >= 0; got {s}")

        def alpha_bar(u: Tensor) -> Tensor:
            return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

        return cls(_betas_from_alpha_bar(alpha_bar, num_steps, max_beta), name="cosine")

    @classmethod
    def sigmoid(cls, num_steps: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                max_beta: float = 0.999) -> "NoiseSchedule":
        r"""Sigmoid schedule (Jabri et al. 2022): $\bar\alpha(u) \propto \sigma(\text{end}/\tau) -
        \sigma\big((u(\text{end} - \text{start}) + \text{start})/\tau\big)$, rescaled so
        $\bar\alpha(0) = 1$, $\bar\alpha(1) = 0$. Larger ``tau`` is closer to linear in ᾱ.
        """
        _check_num_steps(num_steps)
        if not start < end:
            raise ValueError(f"start must be < end; got start={start}, end={end}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0; got {tau}")
        v_start, v_end = torch.sigmoid(torch.tensor([start / tau, end / tau], dtype=torch.float64))

        def alpha_bar(u: Tensor) -> Tensor:
            return (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)

        return cls(_betas_from_alpha_bar(alpha_bar, num_steps, max_beta), name="sigmoid")

    def rescaled_zero_terminal_snr(self) -> "NoiseSchedule":
        r"""This schedule with $\sqrt{\bar\alpha_t}$ shifted and scaled so that $\bar\alpha_T = 0$ exactly
        and $\sqrt{\bar\alpha_1}$ is kept (Lin et al. 2024, Algorithm 1; ``rescale_zero_terminal_snr``).
        Its last $\beta$ is 1: train it with ``target="v"`` (ε carries no information about $x_0$ at SNR = 0)."""
        return NoiseSchedule(rescale_zero_terminal_snr(self.betas), name=f"{self.name}, zero terminal SNR")

    # -- queries --------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps."""
        return self.betas.shape[0]

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        r"""$(\alpha_t, \sigma_t) = (\sqrt{\bar\alpha}, \sqrt{1 - \bar\alpha})$ at position ``t`` (step t + 1), as
        Python floats, so that $x_t = \alpha_t x_0 + \sigma_t \varepsilon$; ``t = -1`` is step 0, the data: (1, 0).
        This is the question every Gaussian path answers (see the package docstring): a continuous path
        answers it for $t \in [0, 1]$, a discrete schedule for its positions. ``t`` is not checked here:
        the sampler loops check it at their door, the step functions with ``check_position``."""
        return self.host["sqrt_abar"][t + 1], self.host["sqrt_one_minus_abar"][t + 1]

    def snr(self, t: Timesteps) -> Tensor:
        r"""Signal-to-noise ratio $\mathrm{SNR} = \bar\alpha / (1 - \bar\alpha)$ at position ``t`` (step t + 1),
        float64."""
        t = check_timesteps(t, self.num_steps, device=self.device)
        return (self.alphas_cumprod / (1.0 - self.alphas_cumprod))[t]

    def to(self, device: Union[str, torch.device]) -> "NoiseSchedule":
        """A copy of this schedule whose tables live on ``device`` (recomputed there in float64)."""
        return NoiseSchedule(self.betas.to(device), name=self.name)

    def __len__(self) -> int:
        return self.num_steps

    def __repr__(self) -> str:
        return (f"NoiseSchedule({self.name}, T={self.num_steps}, β∈[{self.betas.min():.2e}, "
                f"{self.betas.max():.2e}], ᾱ_T={self.alphas_cumprod[-1]:.2e}, device={self.device})")


SCHEDULES: dict[str, Callable[..., NoiseSchedule]] = {
    "linear": NoiseSchedule.linear,
    "cosine": NoiseSchedule.cosine,
    "sigmoid": NoiseSchedule.sigmoid,
}


def make_schedule(name: ScheduleName, num_steps: int = 1000, **kwargs: float) -> NoiseSchedule:
    """The schedule called ``name`` ("linear", "cosine" or "sigmoid") with ``num_steps`` steps."""
    if name not in SCHEDULES:
        raise ValueError(f"name must be one of {sorted(SCHEDULES)}; got {name!r}")
    return SCHEDULES[name](num_steps, **kwargs)


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    r"""Lin et al. (2024), "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1.

    With $a_t = \sqrt{\bar\alpha_t}$ of the given schedule, the new one is the straight line through
    $(a_1, a_1)$ and $(a_T, 0)$:

    $\sqrt{\bar\alpha'_t} = \sqrt{\bar\alpha_1}\,\dfrac{a_t - a_T}{a_1 - a_T}$,
    $\qquad \beta'_1 = 1 - \bar\alpha'_1, \quad \beta'_t = 1 - \bar\alpha'_t / \bar\alpha'_{t-1}$.

    So $\bar\alpha'_T = 0$ (zero terminal SNR: $x_T$ holds no trace of $x_0$), $\bar\alpha'_1 = \bar\alpha_1$, and
    $\beta'_T = 1$. Returns the new $\beta$ (float64, same length); needs $T \ge 2$ and a strictly
    decreasing $\bar\alpha$.
    """
    betas = _validated_betas(betas)
    if betas.numel() < 2:
        raise ValueError(f"betas must hold at least 2 steps to rescale (T = 1 would leave no signal at all); "
                         f"got {betas.numel()}")
    # a_t = √ᾱ_t of the given schedule
    sqrt_abar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0], sqrt_abar[-1]
    # shift so that a_T ↦ 0, scale so that a_1 ↦ a_1
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar ** 2
    # β'_t = 1 − ᾱ'_t / ᾱ'_{t−1}, with ᾱ'_0 = 1
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return 1.0 - abar / abar_prev


# -- helpers ------------------------------------------------------------------------------------
def _check_num_steps(num_steps: int) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int):
        raise TypeError(f"num_steps must be an int; got {type(num_steps).__name__}")
    if num_steps < 1:
        raise ValueError(f"num_steps (T) must be >= 1; got {num_steps}")


def _betas_from_alpha_bar(alpha_bar: Callable[[Tensor], Tensor], num_steps: int, max_beta: float) -> Tensor:
    r"""$\beta_t = 1 - \bar\alpha(t/T) / \bar\alpha((t-1)/T)$, clipped to ``max_beta``, for steps t = 1 … T
    (positions 0 … T−1)."""
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must be in (0, 1); got {max_beta}")
    u = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    a = alpha_bar(u)
    return (1.0 - a[1:] / a[:-1]).clamp(min=0.0, max=max_beta)


def _validated_betas(betas: Tensor) -> Tensor:
    if not isinstance(betas, Tensor):
        raise TypeError(f"betas must be a torch.Tensor; got {type(betas).__name__}")
    if betas.ndim != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be a non-empty 1-D tensor; got shape {tuple(betas.shape)}")
    if not betas.is_floating_point():
        raise TypeError(f"betas must be a floating tensor; got dtype {betas.dtype}")
    betas = betas.to(torch.float64)
    if not torch.isfinite(betas).all():
        raise ValueError("betas must be finite; got NaN or inf")
    # β_T = 1 is allowed at the last step only: ᾱ_T = 0, zero terminal SNR (Lin et al. 2024);
    # a β = 1 earlier would leave ᾱ = 0 for several steps and β = 0/0 after it
    inner = betas[:-1]
    last_ok = 0 < betas[-1].item() <= 1
    if not (((inner > 0) & (inner < 1)).all() and last_ok):
        raise ValueError(f"every beta must be in (0, 1), except the last, which may be exactly 1 (zero terminal "
                         f"SNR); got min {betas.min().item():.3g}, max {betas.max().item():.3g}")
    return betas


def _warn_if_underflowing(sqrt_abar: Tensor) -> None:
    """√ᾱ_t that rounds to 0 in float32 makes x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t infinite: say so when the table is built."""
    # a deliberate ᾱ_T = 0 (β_T = 1, zero terminal SNR) is not an underflow
    underflow = (sqrt_abar.float() == 0) & (sqrt_abar != 0)
    zero = underflow.nonzero()
    if len(zero):
        warnings.warn(f"ᾱ_t underflows: √ᾱ_t is 0 in float32 from position {int(zero[0])} (step "
                      f"{int(zero[0]) + 1}) on (ᾱ_T = "
                      f"{sqrt_abar[-1].item() ** 2:.3g}), so x̂_0 and the samplers give inf/NaN there; use fewer "
                      f"steps, a smaller beta_end, or the cosine schedule", RuntimeWarning, stacklevel=3)


def _clipped_log(posterior_variance: Tensor) -> Tensor:
    """log β̃_t with β̃_1 (position 0, which is 0) replaced by β̃_2; for T = 1 by a tiny floor."""
    if posterior_variance.numel() == 1:
        return posterior_variance.clamp(min=1e-20).log()
    return torch.cat([posterior_variance[1:2], posterior_variance[1:]]).log()


def extract(a: Tensor, t: Timesteps, x: Tensor) -> Tensor:
    r"""$a[t]$ (position t, step t + 1) in ``x``'s dtype, shaped to broadcast against ``x``: (B, 1, 1, …)
    for a batch of t."""
    if a.device != x.device:
        raise ValueError(f"the schedule is on {a.device} but x is on {x.device}; nothing is moved "
                         f"silently: use schedule.to(x.device) (or move x)")
    t = check_timesteps(t, a.shape[0], batch=x.shape[0] if x.ndim else None, device=a.device)
    out = a[t].to(x.dtype)
    return out.reshape(out.shape + (1,) * (x.ndim - t.ndim))
