r"""Building blocks shared by the networks of the course: the U-Net denoiser (notebook 04) and the
autoencoder of latent diffusion (notebook 08) are made of the same pieces.

    ResBlock     x + conv(SiLU(GN(conv(SiLU(GN(x)))))), optionally modulated by an embedding e (FiLM)
    Attention    x + W_o softmax(QKᵀ/√d) V over the H·W positions
    CrossAttention  the same, with K and V from a caption's tokens instead of the image (notebook 08)
    Downsample   stride-2 3×3 conv              Upsample   nearest ×2, then a 3×3 conv
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, or the largest power of two that divides ``channels``."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's weights so the residual branch it ends starts as the identity (and the output as 0)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def film(h: Tensor, emb: Tensor, emb_layer: nn.Linear) -> Tensor:
    r"""Feature-wise linear modulation: $[\gamma, \beta] = W\,\mathrm{SiLU}(e) + b$, then
    $h \odot (1 + \gamma) + \beta$, with $\gamma, \beta$ of shape (B, C) broadcast over H and W."""
    scale, shift = rearrange(emb_layer(F.silu(emb)), "b (two c) -> two b c 1 1", two=2)
    return h * (1 + scale) + shift


class ResBlock(nn.Module):
    r"""$h = \mathrm{conv}(\mathrm{SiLU}(\mathrm{GN}(x)))$; $h = \mathrm{GN}(h)\,(1 + \gamma(e)) + \beta(e)$;
    $\text{out} = x' + \mathrm{conv}(\mathrm{dropout}(\mathrm{SiLU}(h)))$, where $(\gamma, \beta)$ come from the
    time/class embedding $e$ (FiLM, "scale-shift") and $x'$ is $x$, 1×1-projected if the width changes.
    With ``emb_dim=None`` (an autoencoder's blocks) there is no embedding and $h = \mathrm{GN}(h)$."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: Optional[int] = None, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch) if emb_dim is not None else None
        self.norm2, self.dropout = group_norm(out_ch), nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Optional[Tensor] = None) -> Tensor:
        if (emb is None) != (self.emb is None):
            raise ValueError(f"emb must be {'given' if self.emb is not None else 'None'} for this ResBlock "
                             f"(built with emb_dim={None if self.emb is None else self.emb.in_features}); "
                             f"got {'None' if emb is None else 'a tensor'}")
        h = self.conv1(F.silu(self.norm1(x)))
        h = film(self.norm2(h), emb, self.emb) if self.emb is not None else self.norm2(h)
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


def multi_head_attention(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    r"""$\mathrm{softmax}(QK^\top/\sqrt d)\,V$ in ``heads`` heads of $d = C/\text{heads}$ features each:
    q (B, S, C) attends over k, v (B, S', C); returns (B, S, C)."""
    # each head's d features stay adjacent in memory (stride 1), as SDPA's fused kernels need
    q, k, v = (rearrange(part, "b s (n d) -> b n s d", n=heads) for part in (q, k, v))
    return rearrange(F.scaled_dot_product_attention(q, k, v), "b n s d -> b s (n d)")


class Attention(nn.Module):
    r"""Multi-head self-attention with the $H \times W$ positions as tokens, residual:
    $x + W_o\,\mathrm{softmax}(QK^\top/\sqrt{d})\,V$, where $[Q, K, V] = W_{qkv}\,\mathrm{GN}(x)$ at each position."""

    def __init__(self, channels: int, head_dim: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor, emb: Optional[Tensor] = None) -> Tensor:
        height = x.shape[2]
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        attended = multi_head_attention(*self.qkv(tokens).chunk(3, dim=-1), heads=self.heads)
        return x + rearrange(self.out(attended), "b (h w) c -> b c h w", h=height)


class CrossAttention(nn.Module):
    r"""Each image position attends to the tokens of a caption (Rombach et al. 2022, §3.3), residual:
    $x + W_o\,\mathrm{softmax}(QK^\top/\sqrt{d})\,V$ with $Q = W_q\,\mathrm{GN}(x)$ from the image and
    $K = W_k\,c$, $V = W_v\,c$ from the context $c$ (B, L, ``context_dim``), the text encoder's output.
    This is how *where* a word applies is learned: position (h, w) picks the tokens it needs."""

    def __init__(self, channels: int, context_dim: int, head_dim: int):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = group_norm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.out = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        height = x.shape[2]
        q = self.q(rearrange(self.norm(x), "b c h w -> b (h w) c"))
        attended = multi_head_attention(q, *self.kv(context).chunk(2, dim=-1), heads=self.heads)
        return x + rearrange(self.out(attended), "b (h w) c -> b c h w", h=height)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3×3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3×3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Pooled(nn.Module):
    r"""The caption as one vector for the U-Net's embedding $e$: $W\,\overline{c}$, the mean over the tokens,
    projected to the embedding width (zero-initialised, so it starts as no change to $e$)."""

    def __init__(self, dim: int, emb_dim: int):
        super().__init__()
        self.proj = zero_init(nn.Linear(dim, emb_dim))

    def forward(self, context: Tensor) -> Tensor:
        return self.proj(context.mean(dim=1))
