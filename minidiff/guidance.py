r"""Classifier-free guidance (Ho & Salimans 2022): one network, conditional and unconditional.

Training: each label is replaced by the **null label** (the model's ``null_label``, which for the
U-Net is ``num_classes``) with probability ``p_uncond``, so the same network learns
$\varepsilon_\theta(x_t, t, y)$ and $\varepsilon_\theta(x_t, t, \varnothing)$ (``drop_labels``).

Sampling: the two predictions are mixed with a guidance scale $w$ (``cfg_mix``),

    ε̃ = ε_u + w (ε_c − ε_u)          w = 0: unconditional, w = 1: conditional, w > 1: guided,

computed in one batched forward pass (``guided_output``). The mix is linear, so it may be taken in
whatever the network predicts (ε, x_0 or v): the conversions between them are affine in the output.

A **guidance** is any function ``(cond, uncond, t) -> guided output``; samplers take either a scale
$w$ (which becomes ``ClassifierFree(w)``) or such a function, so a variant (a rescaled mix, guidance
only on an interval of t) is one small function here, not a new argument of every sampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from .diffusion import unwrap

Guidance = Callable[[Tensor, Tensor, int], Tensor]        # (conditional, unconditional, t) -> guided


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

    def __call__(self, cond: Tensor, uncond: Tensor, t: int) -> Tensor:
        return cfg_mix(cond, uncond, self.scale)


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
    return guidance(cond, uncond, t)
