r"""Classifier-free guidance (Ho & Salimans 2022): one network, conditional and unconditional.

Training: each label is replaced by the **null label** (the model's ``null_label``, which for the
U-Net is ``num_classes``) with probability ``p_uncond``, so the same network learns
$\varepsilon_\theta(x_t, t, y)$ and $\varepsilon_\theta(x_t, t, \varnothing)$ (``drop_labels``).

Sampling: the two predictions are mixed with a guidance scale $w$ (``cfg_mix``),

    ε̃ = ε_u + w (ε_c − ε_u)          w = 0: unconditional, w = 1: conditional, w > 1: guided,

computed in one batched forward pass (``guided_output``). The mix is linear, so it may be taken in
whatever the network predicts (ε, x_0 or v): the conversions between them are affine in the output.

A **guidance** is any function ``(cond, uncond, t, x_t) -> guided output``; samplers take either a
scale $w$ (which becomes ``ClassifierFree(w)``) or such a function, so a variant is one small class
here, not a new argument of every sampler:

    ClassifierFree(w)                  the plain mix, at every t
    Rescaled(w, phi)                   the mix with its standard deviation brought back to the
                                       conditional output's (Lin et al. 2024, §3.4)
    Interval(w, t_low, t_high)         guidance only for t in [t_low, t_high], conditional elsewhere
                                       (Kynkäänniemi et al. 2024)
    Thresholded(w, s, target, p)       dynamic thresholding of the guided x̂_0 (Saharia et al. 2022)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from .diffusion import Target, eps_and_x0, predict_eps_from_x0, training_target, unwrap
from .schedules import NoiseSchedule

Guidance = Callable[[Tensor, Tensor, int, Tensor], Tensor]     # (conditional, unconditional, t, x_t) -> guided


def null_label(model: Any) -> int:
    """The label that means "no class" for ``model`` (its ``null_label``); ValueError if it has none."""
    label = getattr(unwrap(model), "null_label", None)
    if label is None:
        raise ValueError("guidance needs a class-conditional model (one with a null_label, e.g. a UNet "
                         "with config.num_classes set); this model is unconditional")
    return label


def drop_labels(y: Tensor, p_uncond: float, null: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Replace each label by the null label ``null`` with probability ``p_uncond`` (training for CFG)."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1]; got {p_uncond}")
    drop = torch.rand(y.shape, device=y.device, generator=generator) < p_uncond
    return torch.where(drop, torch.full_like(y, null), y)


def cfg_mix(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    r"""$\tilde\varepsilon = \varepsilon_u + w\,(\varepsilon_c - \varepsilon_u)$ with $w$ = ``scale``."""
    return uncond + scale * (cond - uncond)


@dataclass(frozen=True)
class ClassifierFree:
    """Plain classifier-free guidance with scale ``scale`` (w), at every t."""
    scale: float

    def __post_init__(self) -> None:
        check_scale(self.scale)

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        return cfg_mix(cond, uncond, self.scale)


def per_image_std(x: Tensor) -> Tensor:
    """The standard deviation of each image's values, shaped (B, 1, 1, …) to broadcast against ``x``."""
    return x.flatten(1).std(dim=1).reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class Rescaled:
    r"""The guided output rescaled towards the conditional output's standard deviation (Lin et al. 2024,
    "Common diffusion noise schedules and sample steps are flawed", §3.4, eqs. 15–17):

    $x_{cfg} = x_u + w(x_c - x_u)$, $x_{re} = x_{cfg}\,\sigma(x_c)/\sigma(x_{cfg})$,
    $x = \phi\,x_{re} + (1 - \phi)\,x_{cfg}$, per image. A large $w$ inflates $\sigma(x_{cfg})$, which is
    what over-exposes guided samples; $\phi = 0$ is plain CFG."""
    scale: float
    phi: float = 0.7

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if not 0.0 <= check_scale(self.phi, "phi") <= 1.0:
            raise ValueError(f"phi must be in [0, 1] (0: plain CFG, 1: fully rescaled); got {self.phi}")

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        guided = cfg_mix(cond, uncond, self.scale)
        rescaled = guided * per_image_std(cond) / per_image_std(guided).clamp(min=1e-12)
        return self.phi * rescaled + (1 - self.phi) * guided


@dataclass(frozen=True)
class Interval:
    """Guidance with scale ``scale`` only while ``t_low`` ≤ t ≤ ``t_high``; the conditional output
    (w = 1) elsewhere (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves
    sample and distribution quality": guidance at high noise mostly removes diversity, at low noise
    it does little)."""
    scale: float
    t_low: int
    t_high: int

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if not 0 <= self.t_low <= self.t_high:
            raise ValueError(f"the interval must have 0 <= t_low <= t_high; got t_low={self.t_low}, t_high={self.t_high}")

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        return cfg_mix(cond, uncond, self.scale if self.t_low <= t <= self.t_high else 1.0)


@dataclass(frozen=True)
class Thresholded:
    r"""Plain CFG, then dynamic thresholding of the guided $\hat x_0$ (Saharia et al. 2022, Imagen, §2.3):
    per image $q$ = the ``percentile`` quantile of $|\hat x_0|$, $q \leftarrow \max(q, 1)$,
    $\hat x_0 \leftarrow \mathrm{clip}(\hat x_0, -q, q)/q$; the output is rebuilt from $x_t$ and that $\hat x_0$
    ($\hat\varepsilon = (x_t - \sqrt{\bar\alpha_t}\hat x_0)/\sqrt{1-\bar\alpha_t}$), in the model's own ``target``."""
    scale: float
    schedule: NoiseSchedule
    target: Target
    percentile: float = 0.995

    def __post_init__(self) -> None:
        check_scale(self.scale)
        if not 0.0 < self.percentile <= 1.0:
            raise ValueError(f"percentile must be in (0, 1]; got {self.percentile}")

    def __call__(self, cond: Tensor, uncond: Tensor, t: int, x_t: Tensor) -> Tensor:
        s = self.schedule
        guided = cfg_mix(cond, uncond, self.scale)
        _, x0 = eps_and_x0(guided.float(), x_t.float(), t, s, self.target)
        q = x0.abs().flatten(1).quantile(self.percentile, dim=1).clamp(min=1.0)
        q = q.reshape(-1, *([1] * (x0.ndim - 1)))
        x0 = x0.clamp(-q, q) / q
        out = training_target(self.target, x0, predict_eps_from_x0(x_t.float(), t, x0, s), t, s)
        return out.to(guided.dtype)


def check_scale(scale: float, name: str = "guidance_scale") -> float:
    """A finite real ``scale``; NaN or ±inf would make every image NaN, so they are a ValueError."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"{name} must be a finite number (0: unconditional, 1: conditional, > 1: guided); "
                         f"got {scale!r}")
    return float(scale)


def as_guidance(guidance: Union[float, Guidance, None]) -> Optional[Guidance]:
    """None, a scale w (-> ``ClassifierFree(w)``) or a guidance function, as a guidance function or None."""
    if guidance is None or callable(guidance):
        return guidance
    return ClassifierFree(check_scale(guidance))


def guided_output(model: Callable[..., Tensor], x_t: Tensor, t: int, y: Optional[Tensor],
                  guidance: Optional[Guidance]) -> Tensor:
    r"""The model's output at $(x_t, t, y)$ for one timestep ``t`` shared by the batch; with a
    ``guidance``, the conditional and the unconditional (null-label) outputs come from one batched
    pass over $[x_t; x_t]$ and are mixed by it."""
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    if guidance is None:
        return model(x_t, t_batch, y) if y is not None else model(x_t, t_batch)
    if y is None:
        raise ValueError("guidance needs labels y (it mixes the conditional and unconditional model)")
    null = torch.full_like(y, null_label(model))
    both = model(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([y, null]))
    cond, uncond = both.chunk(2)
    return guidance(cond, uncond, t, x_t)
