r"""Sinusoidal timestep embedding: how the network is told *which* noise level it is looking at."""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor


def timestep_embedding(t: Union[int, float, Tensor], dim: int, max_period: float = 10000.0) -> Tensor:
    r"""Embed timesteps as sines and cosines of geometrically spaced frequencies (Vaswani et al. 2017):

    $\omega_i = \text{max\_period}^{-i/h}$ for $i = 0, \dots, h-1$ with $h = \lfloor \text{dim}/2 \rfloor$,
    $e(t) = [\cos(t\,\omega_0), \dots, \cos(t\,\omega_{h-1}), \sin(t\,\omega_0), \dots, \sin(t\,\omega_{h-1})]$,
    plus a zero column when ``dim`` is odd. Low frequencies separate far-apart t, high ones neighbours.

    ``t``: an int/float, or a tensor of shape () or (B,), integer (discrete steps: minidiff's positions,
    step t + 1, which is what the U-Net embeds) or float (continuous time). Returns float32 of shape
    ``t.shape + (dim,)``, on ``t``'s device.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2; got {dim!r}")
    if max_period <= 1:
        raise ValueError(f"max_period must be > 1; got {max_period}")
    if isinstance(t, bool) or not isinstance(t, (int, float, Tensor)):
        raise TypeError(f"t must be an int, a float or a tensor; got {type(t).__name__}")
    t = torch.as_tensor(t)
    if t.ndim > 1 or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"t must be a scalar or a 1-D tensor of real timesteps; got shape {tuple(t.shape)}, "
                         f"dtype {t.dtype}")
    half = dim // 2
    # ω_i = max_period^(−i/h)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[..., None] * freqs                     # (…, h)
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)
    return emb
